//! Putting optimized pieces back together into one graph.
//!
//! The new graph is built on demand from the graph outputs backwards: an
//! outer value is the output of the piece that computes it, a piece's input
//! is the outer value bound to it. A shared piece (one optimized graph for
//! several identical layers) is instantiated per layer with the layer's
//! names. Equal nodes of the same scope are built once (hash-consing, as
//! the e-graph does within a piece): the shared context each layer copied
//! in comes back to one node. Only what the outputs need is built.

use super::names::{scope_of, Rename};
use crate::provenance::Provenance;
use kiln_ir::{Graph, NodeId, Op, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One piece to instantiate: its optimized graph and history, and how it is
/// bound to the outer graph.
pub(crate) struct Placed<'a> {
    pub graph: &'a Graph,
    pub prov: &'a Provenance,
    pub inputs: &'a [Value],
    pub outputs: &'a [Value],
    pub rename_back: Option<&'a Rename>,
}

/// Why stitching failed (the caller then optimizes the graph whole).
#[derive(Debug)]
pub(crate) enum StitchError {
    /// The optimized pieces depend on each other in a cycle.
    Cycle,
    Graph(kiln_ir::GraphError),
    Missing(String),
}

impl From<kiln_ir::GraphError> for StitchError {
    fn from(e: kiln_ir::GraphError) -> Self {
        StitchError::Graph(e)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Item {
    /// An outer value (of the original graph).
    Outer(Value),
    /// A node of piece `usize`'s optimized graph.
    Node(usize, NodeId),
}

/// Builds the graph `original` becomes with each piece replaced by its
/// optimized graph. `prefixes` are the layer prefixes (scopes within which
/// equal nodes merge).
pub(crate) fn stitch(
    original: &Graph,
    placed: &[Placed<'_>],
    prefixes: &BTreeMap<String, usize>,
) -> Result<(Graph, Provenance), StitchError> {
    let mut h = Graph::new(original.name.clone());
    let mut prov = Provenance::default();
    let mut outer: HashMap<Value, Value> = HashMap::new();
    for &i in original.inputs() {
        let node = original.node(i);
        let Op::Input { name, ty } = &node.op else {
            return Err(StitchError::Missing(
                "an input that is not an input node".into(),
            ));
        };
        let v = h.add_input(name.clone(), ty.clone())?;
        h.set_loc(v.node, node.loc.clone());
        outer.insert(Value::new(i, 0), v);
    }
    let mut producer: HashMap<Value, (usize, usize)> = HashMap::new();
    for (u, p) in placed.iter().enumerate() {
        for (m, &v) in p.outputs.iter().enumerate() {
            producer.insert(v, (u, m));
        }
    }
    // Per piece: its input nodes by position.
    let input_index: Vec<HashMap<NodeId, usize>> = placed
        .iter()
        .map(|p| {
            p.graph
                .inputs()
                .iter()
                .enumerate()
                .map(|(k, &n)| (n, k))
                .collect()
        })
        .collect();
    let mut built: HashMap<(usize, NodeId), NodeId> = HashMap::new();
    let mut consed: HashMap<(Op, Vec<Value>), NodeId> = HashMap::new();
    let scope_tag = |loc: Option<&str>| -> Option<String> {
        let (p, i) = scope_of(loc?)?;
        prefixes.contains_key(p).then(|| format!("{p}.{i}"))
    };

    // What an item needs before it can be built.
    let deps = |item: Item| -> Result<Vec<Item>, StitchError> {
        Ok(match item {
            Item::Outer(v) => {
                let &(u, m) = producer
                    .get(&v)
                    .ok_or_else(|| StitchError::Missing(format!("no piece computes {v:?}")))?;
                let o = placed[u].graph.outputs()[m].value;
                vec![piece_value(placed, &input_index, u, o)]
            }
            Item::Node(u, t) => placed[u]
                .graph
                .operands(t)
                .into_iter()
                .map(|o| piece_value(placed, &input_index, u, o))
                .collect(),
        })
    };
    let mut on_path: HashSet<Item> = HashSet::new();
    let mut done: HashSet<Item> = HashSet::new();
    for o in original.outputs() {
        let root = Item::Outer(o.value);
        let mut stack = vec![(root, false)];
        while let Some((item, expanded)) = stack.pop() {
            let ready = match item {
                Item::Outer(v) => outer.contains_key(&v),
                _ => done.contains(&item),
            };
            if ready {
                continue;
            }
            if !expanded {
                if !on_path.insert(item) {
                    return Err(StitchError::Cycle);
                }
                stack.push((item, true));
                for d in deps(item)? {
                    if on_path.contains(&d) {
                        return Err(StitchError::Cycle);
                    }
                    stack.push((d, false));
                }
                continue;
            }
            on_path.remove(&item);
            match item {
                Item::Outer(v) => {
                    let (u, m) = producer[&v];
                    let o = placed[u].graph.outputs()[m].value;
                    let nv = resolve(placed, &input_index, &built, &outer, u, o)?;
                    outer.insert(v, nv);
                }
                Item::Node(u, t) => {
                    let p = &placed[u];
                    let node = p.graph.node(t);
                    let operands = p
                        .graph
                        .operands(t)
                        .into_iter()
                        .map(|o| resolve(placed, &input_index, &built, &outer, u, o))
                        .collect::<Result<Vec<_>, _>>()?;
                    let (op, loc) = match p.rename_back {
                        Some(r) => (
                            r.op(&node.op)?.unwrap_or_else(|| node.op.clone()),
                            node.loc
                                .as_deref()
                                .map(|l| r.apply(l).unwrap_or_else(|| l.to_string())),
                        ),
                        None => (node.op.clone(), node.loc.clone()),
                    };
                    // Within a layer the e-graph merged equal nodes already;
                    // the rest and the context copies merge here.
                    let id = match scope_tag(loc.as_deref()) {
                        Some(_) => {
                            let id = h.add_node(op, &operands)?;
                            h.set_loc(id, loc);
                            id
                        }
                        None => {
                            let key = (op, operands);
                            match consed.get(&key) {
                                Some(&id) => id,
                                None => {
                                    let id = h.add_node(key.0.clone(), &key.1)?;
                                    h.set_loc(id, loc);
                                    consed.insert(key, id);
                                    id
                                }
                            }
                        }
                    };
                    prov.add(id, p.prov.steps(t));
                    built.insert((u, t), id);
                    done.insert(item);
                }
            }
        }
    }
    for o in original.outputs() {
        let v = outer[&o.value];
        match &o.alias {
            Some(a) => h.add_output_alias(o.name.clone(), v, a.clone()),
            None => h.add_output(o.name.clone(), v),
        }?;
    }
    Ok((h, prov))
}

/// The item a piece value stands for: an input is the outer value bound to
/// it, anything else the piece's node.
fn piece_value(
    placed: &[Placed<'_>],
    input_index: &[HashMap<NodeId, usize>],
    u: usize,
    v: Value,
) -> Item {
    match input_index[u].get(&v.node) {
        Some(&k) => Item::Outer(placed[u].inputs[k]),
        None => Item::Node(u, v.node),
    }
}

/// The new graph's value for piece `u`'s value `v` (built already).
fn resolve(
    placed: &[Placed<'_>],
    input_index: &[HashMap<NodeId, usize>],
    built: &HashMap<(usize, NodeId), NodeId>,
    outer: &HashMap<Value, Value>,
    u: usize,
    v: Value,
) -> Result<Value, StitchError> {
    match piece_value(placed, input_index, u, v) {
        Item::Outer(o) => outer
            .get(&o)
            .copied()
            .ok_or_else(|| StitchError::Missing(format!("outer value {o:?} not built"))),
        Item::Node(u, t) => built
            .get(&(u, t))
            .map(|&id| Value::new(id, v.port))
            .ok_or_else(|| StitchError::Missing(format!("piece node {t:?} not built"))),
    }
}
