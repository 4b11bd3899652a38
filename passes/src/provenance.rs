//! Provenance: which rewrites produced each node, carried from the e-graph
//! through extraction, `dce` and `fuse` to the kernels, so that
//! `kiln inspect --explain` can say how every kernel came to be.
//!
//! The record is cheap on purpose (no egg explanations, no proof terms):
//!
//! - In the e-graph, each class's analysis data holds a short list of
//!   `(e-node, steps)` for the e-nodes that came in with a history (from an
//!   earlier pass) or that a rule created. A rule applied at class `E`
//!   creating e-node `n` records on `n` the rule and the steps of what it
//!   replaced: the e-nodes between `E` and the classes the rule's result
//!   reuses (bounded), so a `flash_attention` node inherits the
//!   canonicalization steps of the softmax it absorbed. A rule whose result
//!   is an existing class (`x * 1 -> x`) records the rule on the users of
//!   the rewritten class (`exp(x * 1)` now reads `x`: the `exp` changed).
//!   Classes merge their lists when they merge.
//! - Extraction picks one e-node per class; the graph node built from it gets
//!   that e-node's steps ([`crate::translate::to_graph_traced`]).
//! - Graph passes map steps along: `dce` keeps node ids, `fuse` gives every
//!   kernel the union of its members' steps plus its own step.
//!
//! Steps are ordered by the pass's position in the pipeline, then by the
//! rule's position in the registry (stage order), so a node's steps read as
//! the chain of rewrites that produced it.

use crate::analysis::KEGraph;
use crate::lang::{Head, KNode};
use crate::rules::{registry, RuleDef, Term};
use egg::{Id, Symbol};
use kiln_ir::{Graph, NodeId, Op};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum What {
    /// A rewrite rule (`order`: its position in the registry). `made` is the
    /// op the rule created when this node is one it created; `None` when the
    /// node stands in for, or replaced, what the rule rewrote.
    Rule {
        order: u16,
        rule: &'static str,
        made: Option<&'static str>,
    },
    /// `fuse` formed a kernel (`kind`: `loop` or `row`) of `ops` ops.
    Kernel { kind: &'static str, ops: u32 },
}

/// One step of a node's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Step {
    /// The position of the pass in the pipeline run (orders the steps).
    pub seq: u16,
    pub pass: &'static str,
    pub what: What,
}

/// Sorted, duplicate-free steps.
pub type Steps = Vec<Step>;

/// Adds `more` to the sorted set `into`.
pub fn merge_steps(into: &mut Steps, more: &[Step]) {
    if more.is_empty() {
        return;
    }
    into.extend_from_slice(more);
    into.sort_unstable();
    into.dedup();
}

/// The steps behind every node of one graph (nodes without history are absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    nodes: HashMap<NodeId, Steps>,
}

impl Provenance {
    /// The steps of `n` (empty when it has no history).
    pub fn steps(&self, n: NodeId) -> &[Step] {
        self.nodes.get(&n).map_or(&[], Vec::as_slice)
    }

    /// Adds steps to `n`.
    pub fn add(&mut self, n: NodeId, steps: &[Step]) {
        if !steps.is_empty() {
            merge_steps(self.nodes.entry(n).or_default(), steps);
        }
    }

    /// Nodes with a history.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Drops the entries of nodes `g` no longer has.
    pub fn retain_in(&mut self, g: &Graph) {
        self.nodes.retain(|n, _| g.try_node(*n).is_some());
    }

    /// Every distinct step of any node.
    pub fn all_steps(&self) -> Steps {
        let mut all: Steps = self.nodes.values().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The op kind and location of every node with a history in `g`, for
    /// [`Provenance::carried`].
    pub fn marks(&self, g: &Graph) -> Vec<Mark> {
        self.nodes
            .keys()
            .filter_map(|&n| {
                let node = g.try_node(n)?;
                Some((n, node.op.name(), node.loc.clone()))
            })
            .collect()
    }

    /// The history carried across a pass that edited the graph in place
    /// without reporting provenance: a node keeps its steps when it is still
    /// there with the same op kind and location as in `marks` (node ids are
    /// stable under in-place edits; a rebuilt graph reuses ids for other
    /// nodes, which the check mostly rejects — the history is a report, not
    /// something a later pass relies on).
    pub fn carried(&self, marks: &[Mark], after: &Graph) -> Provenance {
        let nodes = marks
            .iter()
            .filter(|(n, name, loc)| {
                after
                    .try_node(*n)
                    .is_some_and(|b| b.op.name() == *name && b.loc == *loc)
            })
            .filter_map(|(n, _, _)| Some((*n, self.nodes.get(n)?.clone())))
            .collect();
        Provenance { nodes }
    }
}

/// A node's id, op kind and location (see [`Provenance::marks`]).
pub type Mark = (NodeId, &'static str, Option<String>);

/// Which pass is recording (set on the e-graph's analysis by the e-graph passes).
#[derive(Clone, Copy, Debug)]
pub struct Recorder {
    pub seq: u16,
    pub pass: &'static str,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            seq: 0,
            pass: "rules",
        }
    }
}

/// A rule's position in the registry (`u16::MAX` for a rule outside it).
fn rule_order(rule: &'static RuleDef) -> u16 {
    registry()
        .iter()
        .position(|r| std::ptr::eq(r, rule))
        .map_or(u16::MAX, |i| i as u16)
}

/// At most this many classes are walked to collect what a rewrite replaced.
const ABSORB_LIMIT: usize = 64;

/// Steps of the e-nodes between `root` and the classes `leaves` (what a
/// rewrite at `root` that reuses `leaves` replaced), over at most
/// [`ABSORB_LIMIT`] classes.
fn absorbed(eg: &KEGraph, root: Id, leaves: &HashSet<Id>) -> Steps {
    let mut out = Steps::new();
    let mut seen: HashSet<Id> = HashSet::new();
    let mut stack = vec![eg.find(root)];
    while let Some(c) = stack.pop() {
        if seen.len() >= ABSORB_LIMIT || leaves.contains(&c) || !seen.insert(c) {
            continue;
        }
        for (_, steps) in &eg[c].data.prov {
            merge_steps(&mut out, steps);
        }
        for n in &eg[c].nodes {
            stack.extend(n.children.iter().map(|&k| eg.find(k)));
        }
    }
    out
}

fn term_leaves(t: &Term, eg: &KEGraph, out: &mut HashSet<Id>) {
    match t {
        Term::Class(id) => {
            out.insert(eg.find(*id));
        }
        Term::Node(_, kids) => kids.iter().for_each(|k| term_leaves(k, eg, out)),
        Term::Get(_, t) => term_leaves(t, eg, out),
    }
}

/// Adds a type-checked term, returning its class and the e-nodes it created
/// (those not in the e-graph before).
fn add_term(t: &Term, eg: &mut KEGraph, created: &mut Vec<(Id, KNode)>) -> Id {
    let node = match t {
        Term::Class(id) => return *id,
        Term::Node(op, kids) => {
            let ids = kids.iter().map(|k| add_term(k, eg, created)).collect();
            KNode::op(op.clone(), ids)
        }
        Term::Get(i, tuple) => KNode::get(*i, add_term(tuple, eg, created)),
    };
    match eg.lookup(node.clone()) {
        Some(id) => id,
        None => {
            let id = eg.add(node.clone());
            created.push((id, node));
            id
        }
    }
}

/// Applies `rule` at `eclass` (the body of the rules' egg applier): re-runs
/// the matcher, adds each well-typed result, records provenance and unions
/// it with the class. Returns the classes that changed.
pub(crate) fn apply_rule(
    egraph: &mut KEGraph,
    eclass: Id,
    rule: &'static RuleDef,
    rule_name: Symbol,
) -> Vec<Id> {
    let mut changed = Vec::new();
    for term in (rule.matcher)(egraph, eclass) {
        if term.ty(egraph).is_none() {
            continue;
        }
        let mut created = Vec::new();
        let id = add_term(&term, egraph, &mut created);
        if egraph[id].data.types != egraph[eclass].data.types {
            let msg = format!(
                "rule `{}` produced {:?} for a class of type {:?}",
                rule.name, egraph[id].data.types, egraph[eclass].data.types
            );
            egraph.analysis.errors.push(msg);
            continue;
        }
        record(egraph, eclass, &term, id, &created, rule);
        if egraph.union_trusted(eclass, id, rule_name) {
            changed.push(id);
        }
    }
    changed
}

/// Records the steps of one rewrite (see the module docs).
fn record(
    eg: &mut KEGraph,
    eclass: Id,
    term: &Term,
    id: Id,
    created: &[(Id, KNode)],
    rule: &'static RuleDef,
) {
    if eg.find(id) == eg.find(eclass) {
        return; // nothing new: the class already held this term
    }
    let rec = eg.analysis.recorder;
    let order = rule_order(rule);
    let step = |made| Step {
        seq: rec.seq,
        pass: rec.pass,
        what: What::Rule {
            order,
            rule: rule.name,
            made,
        },
    };
    let mut leaves = HashSet::new();
    term_leaves(term, eg, &mut leaves);
    let mut base = absorbed(eg, eclass, &leaves);
    if created.is_empty() {
        // The result is an existing class (`x * 1 -> x`): what changed is
        // every user of the rewritten class, which now reads that class.
        merge_steps(&mut base, &[step(None)]);
        let e = eg.find(eclass);
        let mut users: Vec<(Id, KNode)> = Vec::new();
        for p in eg[e].parents() {
            let pc = eg.find(p);
            for n in &eg[pc].nodes {
                if n.children.iter().any(|&k| eg.find(k) == e)
                    && !users.iter().any(|(c, m)| *c == pc && m == n)
                {
                    users.push((pc, n.clone()));
                }
            }
        }
        if users.is_empty() {
            // A graph result: the class's own e-nodes stand in for the term.
            let target = eg.find(id);
            users = eg[target]
                .nodes
                .iter()
                .map(|n| (target, n.clone()))
                .collect();
        }
        for (c, n) in users {
            eg[c].data.prov.push((n, base.clone()));
        }
        return;
    }
    for (c, node) in created {
        let mut steps = base.clone();
        let made = match &node.head {
            Head::Op(k) => Some(k.op().name()),
            Head::Get(_) => None,
        };
        merge_steps(&mut steps, &[step(made)]);
        eg[*c].data.prov.push((node.clone(), steps));
    }
}

/// Seeds the history of a graph node onto the e-node it became.
pub(crate) fn seed(eg: &mut KEGraph, id: Id, node: KNode, steps: &[Step]) {
    if !steps.is_empty() {
        eg[id].data.prov.push((node, steps.to_vec()));
    }
}

/// The steps recorded for e-node `node` (children canonical) of class `class`.
pub fn node_steps(eg: &KEGraph, class: Id, node: &KNode) -> Steps {
    let mut out = Steps::new();
    for (n, steps) in &eg[class].data.prov {
        if n.head == node.head
            && n.children.len() == node.children.len()
            && n.children
                .iter()
                .zip(&node.children)
                .all(|(a, b)| eg.find(*a) == eg.find(*b))
        {
            merge_steps(&mut out, steps);
        }
    }
    out
}

/// True for the nodes `explain` lists: everything that computes (kernels
/// after `fuse`), not inputs, parameters, constants or views.
fn is_work(op: &Op) -> bool {
    !matches!(
        op,
        Op::Input { .. } | Op::Param { .. } | Op::Const(_) | Op::Reshape { .. }
    )
}

/// Formats steps as `pass: rule, rule -> op; pass: ...`.
pub fn format_steps(steps: &[Step]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < steps.len() {
        let (seq, pass) = (steps[i].seq, steps[i].pass);
        let mut items: Vec<String> = Vec::new();
        while i < steps.len() && steps[i].seq == seq {
            match steps[i].what {
                What::Rule { rule, .. } => {
                    // Collect every `made` of this rule (they sort together).
                    let mut made: Vec<&str> = Vec::new();
                    while i < steps.len()
                        && steps[i].seq == seq
                        && matches!(steps[i].what, What::Rule { rule: r, .. } if r == rule)
                    {
                        if let What::Rule { made: Some(m), .. } = steps[i].what {
                            made.push(m);
                        }
                        i += 1;
                    }
                    if made.is_empty() {
                        items.push(rule.to_string());
                    } else {
                        items.push(format!("{rule} -> {}", made.join(", ")));
                    }
                }
                What::Kernel { kind, ops } => {
                    items.push(format!("{kind} kernel of {ops} op(s)"));
                    i += 1;
                }
            }
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        let _ = write!(out, "{pass}: {}", items.join(", "));
    }
    out
}

/// One line per computing node of `g` (each kernel, after `fuse`) with the
/// chain of rewrites that produced it. Nodes are named as the text form
/// numbers them (`%7`). With `all` false, nodes without history are left
/// out and counted on the last line.
pub fn explain(g: &Graph, prov: &Provenance, all: bool) -> String {
    let mut out = String::new();
    let mut next = 0usize;
    let (mut shown, mut quiet) = (0usize, 0usize);
    for n in g.topo_order() {
        let node = g.node(n);
        if matches!(node.op, Op::Input { .. }) {
            continue;
        }
        let index = next;
        next += 1;
        if !is_work(&node.op) {
            continue;
        }
        let steps = prov.steps(n);
        if steps.is_empty() && !all {
            quiet += 1;
            continue;
        }
        shown += 1;
        let what = match &node.op {
            Op::Fused(f) => format!("fused {}", f.kind.name()),
            op => op.name().to_string(),
        };
        let at = node
            .loc
            .as_deref()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        let chain = if steps.is_empty() {
            "no rewrites".to_string()
        } else {
            format_steps(steps)
        };
        let _ = writeln!(out, "%{index} {what}{at}: {chain}");
    }
    if !all {
        let _ = writeln!(
            out,
            "{shown} node(s) with rewrites; {quiet} other computing node(s) unchanged"
        );
    }
    out
}
