//! DAG-aware extraction: pick one e-node per e-class so that the *graph* the
//! choices form — each shared sub-term counted once — is cheap.
//!
//! egg's `Extractor` minimizes tree cost, which counts a sub-term once per
//! use: on a DAG it prefers recomputing to sharing, and on deep DAGs (a
//! residual stream used twice per layer) the costs grow exponentially until
//! comparisons are meaningless. This extractor works in three phases:
//!
//! 1. *Height*: every class gets the e-node of least height (then least own
//!    cost). Heights strictly grow from children to parents, so the choice
//!    is acyclic and every class with a finite term has one.
//! 2. *Greedy DAG*: bottom-up, each class with alternatives picks the e-node
//!    whose cone — the set of classes it needs under the current choices,
//!    each priced once — is cheapest; repeated until stable (bounded rounds).
//! 3. *Global*: for classes the roots reach, an alternative is kept only when
//!    it lowers the cost of the whole extracted graph (sharing with the rest
//!    of the graph counts too), within a work budget.
//!
//! Switching a class to an e-node whose cone contains the class itself is
//! never done, so the choice stays acyclic throughout.

use crate::analysis::KEGraph;
use crate::cost::CostModel;
use crate::lang::{Head, KNode};
use egg::Id;
use std::collections::{HashMap, VecDeque};

/// The chosen e-node of each class that has a finite, acyclic term.
pub type Selection = HashMap<Id, KNode>;

/// Price of one e-node of class `class`.
pub fn node_cost(eg: &KEGraph, model: &CostModel, node: &KNode, class: Id) -> f64 {
    match &node.head {
        Head::Get(_) => 0.0,
        Head::Op(k) => {
            let mut seen = Vec::with_capacity(node.children.len());
            let mut inputs = Vec::with_capacity(node.children.len());
            let mut reads = Vec::with_capacity(node.children.len());
            for &c in &node.children {
                let Some(t) = eg[c].data.ty() else { continue };
                inputs.push(t);
                let c = eg.find(c);
                if !seen.contains(&c) {
                    seen.push(c);
                    reads.push(t);
                }
            }
            model.op_cost_reading(k.op(), &inputs, &reads, &eg[class].data.types)
        }
    }
}

/// Dense view of the e-graph for extraction.
struct Dense {
    ids: Vec<Id>,
    /// Per class: its nodes as (children as dense indices, own cost).
    nodes: Vec<Vec<(Vec<usize>, f64)>>,
    parents: Vec<Vec<usize>>,
}

impl Dense {
    fn new(eg: &KEGraph, model: &CostModel) -> Dense {
        let mut ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
        ids.sort();
        let index: HashMap<Id, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut nodes = Vec::with_capacity(ids.len());
        let mut parents = vec![Vec::new(); ids.len()];
        for (ci, &id) in ids.iter().enumerate() {
            let class_nodes: Vec<(Vec<usize>, f64)> = eg[id]
                .nodes
                .iter()
                .map(|n| {
                    let kids = n.children.iter().map(|&c| index[&eg.find(c)]).collect();
                    (kids, node_cost(eg, model, n, id))
                })
                .collect();
            for (kids, _) in &class_nodes {
                for &k in kids {
                    parents[k].push(ci);
                }
            }
            nodes.push(class_nodes);
        }
        for p in &mut parents {
            p.sort_unstable();
            p.dedup();
        }
        Dense {
            ids,
            nodes,
            parents,
        }
    }
}

/// The extractor's state: the current choice per class.
struct State<'a> {
    d: &'a Dense,
    choice: Vec<Option<usize>>,
    /// Generation-stamped visited marks for cone walks.
    mark: Vec<u32>,
    gen: u32,
    stack: Vec<usize>,
    /// Classes visited by cone walks so far (the work budget).
    work: usize,
}

impl State<'_> {
    /// Sum of own costs over the classes `starts` need (each once), or `None`
    /// when `forbidden` is among them (a cycle) or one has no choice.
    fn cone_cost(&mut self, starts: &[usize], forbidden: Option<usize>) -> Option<f64> {
        self.gen = self.gen.wrapping_add(1);
        if self.gen == 0 {
            self.mark.iter_mut().for_each(|m| *m = 0);
            self.gen = 1;
        }
        let gen = self.gen;
        let mut total = 0.0;
        self.stack.clear();
        self.stack.extend_from_slice(starts);
        while let Some(c) = self.stack.pop() {
            if self.mark[c] == gen {
                continue;
            }
            self.mark[c] = gen;
            self.work += 1;
            if Some(c) == forbidden {
                return None;
            }
            let n = self.choice[c]?;
            let (kids, cost) = &self.d.nodes[c][n];
            total += cost;
            for &k in kids {
                if self.mark[k] != gen {
                    self.stack.push(k);
                }
            }
        }
        Some(total)
    }
}

/// Extracts the cheapest DAG for `roots` (see the module docs). Classes the
/// roots need but that have no finite acyclic term are an error.
pub fn extract_dag(eg: &KEGraph, roots: &[Id], model: &CostModel) -> Result<Selection, String> {
    let d = Dense::new(eg, model);
    let n = d.ids.len();
    let index: HashMap<Id, usize> = d.ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let roots: Vec<usize> = roots.iter().map(|r| index[&eg.find(*r)]).collect();

    // Phase 1: least height.
    let mut height = vec![usize::MAX; n];
    let mut choice: Vec<Option<usize>> = vec![None; n];
    let mut queue: VecDeque<usize> = (0..n)
        .filter(|&c| d.nodes[c].iter().any(|(k, _)| k.is_empty()))
        .collect();
    let mut queued = vec![false; n];
    queue.iter().for_each(|&c| queued[c] = true);
    while let Some(c) = queue.pop_front() {
        queued[c] = false;
        let mut best: Option<(usize, f64, usize)> = None;
        for (i, (kids, cost)) in d.nodes[c].iter().enumerate() {
            if kids.iter().any(|&k| height[k] == usize::MAX) {
                continue;
            }
            let h = kids.iter().map(|&k| height[k] + 1).max().unwrap_or(0);
            if best.is_none_or(|(bh, bc, _)| (h, *cost) < (bh, bc)) {
                best = Some((h, *cost, i));
            }
        }
        if let Some((h, _, i)) = best {
            if h < height[c] {
                height[c] = h;
                choice[c] = Some(i);
                for &p in &d.parents[c] {
                    if !queued[p] {
                        queued[p] = true;
                        queue.push_back(p);
                    }
                }
            }
        }
    }
    for &r in &roots {
        if choice[r].is_none() {
            return Err(format!("e-class {} has no finite acyclic term", d.ids[r]));
        }
    }

    let mut st = State {
        d: &d,
        choice,
        mark: vec![0; n],
        gen: 0,
        stack: Vec::new(),
        work: 0,
    };
    let mut order: Vec<usize> = (0..n)
        .filter(|&c| d.nodes[c].len() > 1 && height[c] != usize::MAX)
        .collect();
    order.sort_by_key(|&c| (height[c], c));

    // Phase 2: greedy DAG over cones, bottom-up, until stable.
    const ROUNDS: usize = 4;
    const EPS: f64 = 1e-9;
    for _ in 0..ROUNDS {
        let mut changed = false;
        for &c in &order {
            let current = match st.choice[c] {
                Some(i) => {
                    let kids = d.nodes[c][i].0.clone();
                    st.cone_cost(&kids, Some(c)).map(|k| k + d.nodes[c][i].1)
                }
                None => None,
            };
            let mut best = (current.unwrap_or(f64::INFINITY), st.choice[c]);
            for (i, (kids, cost)) in d.nodes[c].iter().enumerate() {
                if Some(i) == st.choice[c] {
                    continue;
                }
                if let Some(k) = st.cone_cost(kids, Some(c)) {
                    let total = k + cost;
                    if total < best.0 * (1.0 - EPS) - EPS {
                        best = (total, Some(i));
                    }
                }
            }
            if best.1 != st.choice[c] {
                st.choice[c] = best.1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }

    // Phase 3: whole-graph improvement for reachable classes, within a budget.
    let budget = 20_000_000usize.max(50 * n);
    st.work = 0;
    let mut total = st.cone_cost(&roots, None).unwrap_or(f64::INFINITY);
    for &c in &order {
        if st.work > budget {
            break;
        }
        let Some(cur) = st.choice[c] else { continue };
        // Unreachable from the roots: its choice does not matter here.
        let reachable = {
            let before = st.choice[c];
            st.choice[c] = None;
            let r = st.cone_cost(&roots, None).is_none();
            st.choice[c] = before;
            r
        };
        if !reachable {
            continue;
        }
        let mut cur = cur;
        for i in 0..d.nodes[c].len() {
            if i == cur {
                continue;
            }
            let kids = d.nodes[c][i].0.clone();
            if st.cone_cost(&kids, Some(c)).is_none() {
                continue; // would close a cycle or needs an unextractable class
            }
            st.choice[c] = Some(i);
            match st.cone_cost(&roots, None) {
                Some(t) if t < total * (1.0 - EPS) - EPS => {
                    total = t;
                    cur = i;
                }
                _ => st.choice[c] = Some(cur),
            }
        }
    }

    Ok((0..n)
        .filter_map(|c| {
            let i = st.choice[c]?;
            let mut node = eg[d.ids[c]].nodes[i].clone();
            node.children.iter_mut().for_each(|k| *k = eg.find(*k));
            Some((d.ids[c], node))
        })
        .collect())
}

/// The cost of the graph a selection extracts for `roots`, each class once.
pub fn selection_cost(eg: &KEGraph, sel: &Selection, roots: &[Id], model: &CostModel) -> f64 {
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<Id> = roots.iter().map(|&r| eg.find(r)).collect();
    let mut total = 0.0;
    while let Some(c) = stack.pop() {
        if !seen.insert(c) {
            continue;
        }
        let Some(node) = sel.get(&c) else {
            return f64::INFINITY;
        };
        total += node_cost(eg, model, node, c);
        stack.extend(node.children.iter().map(|&k| eg.find(k)));
    }
    total
}

/// Tree-cost extraction, as egg's `Extractor` does it: each use of a
/// sub-term is priced again. Kept for comparison with [`extract_dag`]; on deep
/// DAGs its costs grow exponentially, so the passes never use it.
pub fn extract_tree(eg: &KEGraph, model: &CostModel) -> Selection {
    let d = Dense::new(eg, model);
    let n = d.ids.len();
    let mut cost = vec![f64::INFINITY; n];
    let mut choice: Vec<Option<usize>> = vec![None; n];
    let mut changed = true;
    while changed {
        changed = false;
        for c in 0..n {
            for (i, (kids, own)) in d.nodes[c].iter().enumerate() {
                let total = kids.iter().fold(*own, |acc, &k| acc + cost[k]);
                if total < cost[c] {
                    cost[c] = total;
                    choice[c] = Some(i);
                    changed = true;
                }
            }
        }
    }
    (0..n)
        .filter_map(|c| {
            let mut node = eg[d.ids[c]].nodes[choice[c]?].clone();
            node.children.iter_mut().for_each(|k| *k = eg.find(*k));
            Some((d.ids[c], node))
        })
        .collect()
}
