//! Graph <-> e-graph.
//!
//! [`to_egraph`] adds every node of a graph as an e-node (hash-consing merges
//! identical sub-terms, which is common-subexpression elimination for free)
//! and remembers the signature, the outputs and the source locations.
//! [`to_graph`] rebuilds a graph from a [`Selection`], re-adding the inputs in
//! signature order first, then the chosen terms the outputs need.

use crate::analysis::{KAnalysis, KEGraph};
use crate::error::PassError;
use crate::extract::Selection;
use crate::lang::{is_tuple_op, Head, KNode};
use crate::provenance::{self, Provenance};
use egg::Id;
use kiln_ir::{Graph, NodeId, Op, TensorType, Value};
use std::collections::HashMap;

/// A graph's e-graph with what is needed to rebuild a graph from it.
pub struct Translated {
    pub egraph: KEGraph,
    pub name: String,
    /// Inputs in signature order: name, type, class.
    pub inputs: Vec<(String, TensorType, Id)>,
    /// Outputs in order: name, alias, class.
    pub outputs: Vec<(String, Option<String>, Id)>,
    /// Source locations by class, in the graph's canonical order (first wins).
    pub locs: Vec<(Id, String)>,
}

impl Translated {
    /// The classes of the outputs.
    pub fn roots(&self) -> Vec<Id> {
        self.outputs.iter().map(|o| self.egraph.find(o.2)).collect()
    }
}

/// Translates a graph into a fresh e-graph.
pub fn to_egraph(graph: &Graph) -> Translated {
    to_egraph_traced(graph, &Provenance::default())
}

/// Translates a graph into a fresh e-graph, seeding each e-node with the
/// history of the graph node it comes from.
pub fn to_egraph_traced(graph: &Graph, prov: &Provenance) -> Translated {
    let mut eg = KEGraph::new(KAnalysis::default());
    let mut class: HashMap<NodeId, Id> = HashMap::new();
    let mut locs = Vec::new();
    let value_class = |eg: &mut KEGraph, class: &HashMap<NodeId, Id>, v: Value| -> Id {
        let c = class[&v.node];
        if is_tuple_op(&graph.node(v.node).op) {
            eg.add(KNode::get(v.port, c))
        } else {
            c
        }
    };
    for n in graph.topo_order() {
        let node = graph.node(n);
        let kids: Vec<Id> = graph
            .operands(n)
            .into_iter()
            .map(|v| value_class(&mut eg, &class, v))
            .collect();
        let knode = KNode::op(node.op.clone(), kids);
        let steps = prov.steps(n);
        let id = if steps.is_empty() {
            eg.add(knode)
        } else {
            let id = eg.add(knode.clone());
            provenance::seed(&mut eg, id, knode, steps);
            id
        };
        class.insert(n, id);
        if let Some(loc) = &node.loc {
            locs.push((id, loc.clone()));
            // Results of a tuple are read through `get`: they have its place
            // too (terms a rewrite builds under them inherit it).
            if is_tuple_op(&node.op) {
                for port in 0..node.outputs.len() as u32 {
                    let g = eg.add(KNode::get(port, id));
                    locs.push((g, loc.clone()));
                }
            }
        }
    }
    let inputs = graph
        .inputs()
        .iter()
        .map(|&n| match &graph.node(n).op {
            Op::Input { name, ty } => (name.clone(), ty.clone(), class[&n]),
            _ => unreachable!("graph inputs are input nodes"),
        })
        .collect();
    let outputs = graph
        .outputs()
        .iter()
        .map(|o| {
            let id = value_class(&mut eg, &class, o.value);
            (o.name.clone(), o.alias.clone(), id)
        })
        .collect();
    eg.rebuild();
    Translated {
        egraph: eg,
        name: graph.name.clone(),
        inputs,
        outputs,
        locs,
    }
}

/// What a class became in the rebuilt graph.
#[derive(Clone, Copy)]
enum Built {
    Tensor(Value),
    Tuple(NodeId),
}

/// Rebuilds a graph from the e-graph and a selection; `pass` names the
/// caller in errors.
pub fn to_graph(t: &Translated, sel: &Selection, pass: &'static str) -> Result<Graph, PassError> {
    to_graph_traced(t, sel, pass).map(|(g, _)| g)
}

/// [`to_graph`], with the history of each rebuilt node (the steps recorded
/// on the e-node chosen for it).
///
/// A node that a rewrite created has no source location of its own; it
/// takes the location of the first node that uses it (the term it was
/// rewritten from), so rewritten layers keep their scopes.
pub fn to_graph_traced(
    t: &Translated,
    sel: &Selection,
    pass: &'static str,
) -> Result<(Graph, Provenance), PassError> {
    let eg = &t.egraph;
    let rebuild = |source| PassError::Rebuild { pass, source };
    let fail = |message: String| PassError::Extraction { pass, message };
    let mut g = Graph::new(t.name.clone());
    let mut built: HashMap<Id, Built> = HashMap::new();
    let mut inputs_by_name: HashMap<&str, Value> = HashMap::new();
    for (name, ty, id) in &t.inputs {
        let v = g.add_input(name.clone(), ty.clone()).map_err(rebuild)?;
        inputs_by_name.insert(name, v);
        built.entry(eg.find(*id)).or_insert(Built::Tensor(v));
    }
    let mut locs: HashMap<Id, &str> = HashMap::new();
    for (id, loc) in &t.locs {
        locs.entry(eg.find(*id)).or_insert(loc);
    }
    let mut prov = Provenance::default();
    for (_, _, root) in &t.outputs {
        build_class(
            eg,
            sel,
            eg.find(*root),
            &mut g,
            &mut built,
            &inputs_by_name,
            &locs,
            &mut prov,
        )
        .map_err(|e| match e {
            BuildError::Graph(source) => rebuild(source),
            BuildError::Message(m) => fail(m),
        })?;
    }
    for (name, alias, root) in &t.outputs {
        let v = match built.get(&eg.find(*root)) {
            Some(Built::Tensor(v)) => *v,
            _ => return Err(fail(format!("output `{name}` is not a tensor class"))),
        };
        match alias {
            Some(a) => g.add_output_alias(name.clone(), v, a.clone()),
            None => g.add_output(name.clone(), v),
        }
        .map_err(rebuild)?;
    }
    Ok((g, prov))
}

enum BuildError {
    Graph(kiln_ir::GraphError),
    Message(String),
}

/// Builds the chosen term of `root` (iteratively: graphs are deep).
#[allow(clippy::too_many_arguments)]
fn build_class<'l>(
    eg: &KEGraph,
    sel: &Selection,
    root: Id,
    g: &mut Graph,
    built: &mut HashMap<Id, Built>,
    inputs: &HashMap<&str, Value>,
    locs: &HashMap<Id, &'l str>,
    prov: &mut Provenance,
) -> Result<(), BuildError> {
    // (class, expanded?, location inherited from the user that asked for it)
    let mut stack: Vec<(Id, bool, Option<&'l str>)> = vec![(root, false, None)];
    let mut on_path: std::collections::HashSet<Id> = std::collections::HashSet::new();
    let mut loc_of: HashMap<Id, Option<&'l str>> = HashMap::new();
    while let Some((c, expanded, inherited)) = stack.pop() {
        if built.contains_key(&c) {
            continue;
        }
        let node = sel
            .get(&c)
            .ok_or_else(|| BuildError::Message(format!("no term chosen for e-class {c}")))?;
        if !expanded {
            if !on_path.insert(c) {
                return Err(BuildError::Message(format!(
                    "the chosen terms form a cycle through e-class {c}"
                )));
            }
            let loc = locs.get(&c).copied().or(inherited);
            loc_of.insert(c, loc);
            stack.push((c, true, None));
            for &k in node.children.iter().rev() {
                let k = eg.find(k);
                if !built.contains_key(&k) {
                    if on_path.contains(&k) {
                        return Err(BuildError::Message(format!(
                            "the chosen terms form a cycle through e-class {k}"
                        )));
                    }
                    stack.push((k, false, loc));
                }
            }
            continue;
        }
        on_path.remove(&c);
        let operand = |k: &Id| -> Result<Value, BuildError> {
            match built.get(&eg.find(*k)) {
                Some(Built::Tensor(v)) => Ok(*v),
                _ => Err(BuildError::Message(format!(
                    "e-class {k} is not a built tensor"
                ))),
            }
        };
        let b = match &node.head {
            Head::Get(i) => match built.get(&eg.find(node.children[0])) {
                Some(Built::Tuple(n)) => Built::Tensor(Value::new(*n, *i)),
                _ => {
                    return Err(BuildError::Message(format!(
                        "`get {i}` of a non-tuple e-class"
                    )))
                }
            },
            Head::Op(k) => {
                let op = k.op();
                if let Op::Input { name, .. } = op {
                    let v = inputs.get(name.as_str()).ok_or_else(|| {
                        BuildError::Message(format!("input `{name}` is not in the signature"))
                    })?;
                    Built::Tensor(*v)
                } else {
                    let operands = node
                        .children
                        .iter()
                        .map(operand)
                        .collect::<Result<Vec<_>, _>>()?;
                    let id = g
                        .add_node(op.clone(), &operands)
                        .map_err(BuildError::Graph)?;
                    let loc = loc_of.get(&c).copied().flatten();
                    g.set_loc(id, loc.map(str::to_string));
                    prov.add(id, &provenance::node_steps(eg, c, node));
                    if is_tuple_op(op) {
                        Built::Tuple(id)
                    } else {
                        Built::Tensor(Value::new(id, 0))
                    }
                }
            }
        };
        built.insert(c, b);
    }
    Ok(())
}
