//! The dataflow graph: nodes are ops, edges carry values from a producer's
//! result port to a consumer's operand slot. Stored in a petgraph
//! `StableDiGraph` so node ids survive rewrites.
//!
//! A graph is built in dependency order (an op's operands must exist when it
//! is added), which keeps it acyclic by construction; [`Graph::replace_uses`]
//! checks that a rewrite does not close a cycle.

use crate::infer::{infer, TypeError};
use crate::op::Op;
use crate::types::TensorType;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};

/// A node in canonical order: the node and its operands as (position, port).
type CanonicalNode<'a> = (&'a Node, Vec<(usize, u32)>);
/// An output in canonical order: name, position, port, alias.
type CanonicalOutput<'a> = (&'a str, usize, u32, Option<&'a str>);

/// Identifies a node; stable across removals.
pub type NodeId = NodeIndex<u32>;

/// One result of a node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Value {
    pub node: NodeId,
    pub port: u32,
}

impl Value {
    pub fn new(node: NodeId, port: u32) -> Value {
        Value { node, port }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}#{}", self.node.index(), self.port)
    }
}

/// An op with its (cached, inferred) result types and an optional source
/// location such as `layers.3.attn` for readable dumps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub outputs: Vec<TensorType>,
    pub loc: Option<String>,
}

/// Edge weight: which operand slot of the consumer, which result port of the producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operand {
    pub index: u32,
    pub port: u32,
}

/// A named graph result. `alias` names the input whose buffer this output
/// updates in place (KV caches, recurrent state).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GraphOutput {
    pub name: String,
    pub value: Value,
    pub alias: Option<String>,
}

/// Errors from building or editing a graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("value {0:?} does not exist in the graph")]
    UnknownValue(Value),
    #[error("{0}")]
    Type(#[from] TypeError),
    #[error("input `{0}` is declared twice")]
    DuplicateInput(String),
    #[error("output `{0}` is declared twice")]
    DuplicateOutput(String),
    #[error("output `{output}` aliases `{alias}`: {reason}")]
    BadAlias {
        output: String,
        alias: String,
        reason: String,
    },
    #[error("replacing {old:?} by {new:?} would create a cycle")]
    Cycle { old: Value, new: Value },
    #[error("node {0:?} still has users")]
    HasUsers(NodeId),
}

/// A dataflow graph with named inputs, parameters and outputs.
#[derive(Clone, Serialize, Deserialize)]
pub struct Graph {
    pub name: String,
    dag: StableDiGraph<Node, Operand>,
    inputs: Vec<NodeId>,
    outputs: Vec<GraphOutput>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            dag: StableDiGraph::default(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Declares the next graph input.
    pub fn add_input(
        &mut self,
        name: impl Into<String>,
        ty: TensorType,
    ) -> Result<Value, GraphError> {
        let name = name.into();
        if self.input_names().any(|n| n == name) {
            return Err(GraphError::DuplicateInput(name));
        }
        let id = self.dag.add_node(Node {
            op: Op::Input {
                name,
                ty: ty.clone(),
            },
            outputs: vec![ty],
            loc: None,
        });
        self.inputs.push(id);
        Ok(Value::new(id, 0))
    }

    /// Adds an op on existing values; infers and checks its result types.
    /// Inputs must go through [`Graph::add_input`].
    pub fn add_node(&mut self, op: Op, operands: &[Value]) -> Result<NodeId, GraphError> {
        if let Op::Input { name, ty } = op {
            return self.add_input(name, ty).map(|v| v.node);
        }
        let tys = operands
            .iter()
            .map(|v| self.try_ty(*v).ok_or(GraphError::UnknownValue(*v)))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = infer(&op, &tys)?;
        let id = self.dag.add_node(Node {
            op,
            outputs,
            loc: None,
        });
        for (i, v) in operands.iter().enumerate() {
            self.dag.add_edge(
                v.node,
                id,
                Operand {
                    index: i as u32,
                    port: v.port,
                },
            );
        }
        Ok(id)
    }

    /// [`Graph::add_node`] for single-result ops: returns result 0.
    pub fn add(&mut self, op: Op, operands: &[Value]) -> Result<Value, GraphError> {
        self.add_node(op, operands).map(|n| Value::new(n, 0))
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.dag[id]
    }

    pub fn try_node(&self, id: NodeId) -> Option<&Node> {
        self.dag.node_weight(id)
    }

    pub fn set_loc(&mut self, id: NodeId, loc: Option<String>) {
        if let Some(n) = self.dag.node_weight_mut(id) {
            n.loc = loc;
        }
    }

    pub fn contains(&self, v: Value) -> bool {
        self.try_ty(v).is_some()
    }

    /// The type of a value; panics if it does not exist (use [`Graph::try_ty`]).
    pub fn ty(&self, v: Value) -> &TensorType {
        &self.dag[v.node].outputs[v.port as usize]
    }

    pub fn try_ty(&self, v: Value) -> Option<&TensorType> {
        self.dag
            .node_weight(v.node)
            .and_then(|n| n.outputs.get(v.port as usize))
    }

    /// Operands of a node, in slot order.
    pub fn operands(&self, id: NodeId) -> Vec<Value> {
        let mut edges: Vec<(u32, Value)> = self
            .dag
            .edges_directed(id, Direction::Incoming)
            .map(|e| (e.weight().index, Value::new(e.source(), e.weight().port)))
            .collect();
        edges.sort_by_key(|(i, _)| *i);
        edges.into_iter().map(|(_, v)| v).collect()
    }

    /// The operand slot numbers of a node's incoming edges, sorted (the verifier
    /// checks they are `0..k`).
    pub fn operand_slots(&self, id: NodeId) -> Vec<u32> {
        let mut s: Vec<u32> = self
            .dag
            .edges_directed(id, Direction::Incoming)
            .map(|e| e.weight().index)
            .collect();
        s.sort_unstable();
        s
    }

    /// Every use of a node's results: (consumer, operand slot, port used).
    pub fn users(&self, id: NodeId) -> Vec<(NodeId, u32, u32)> {
        let mut out: Vec<_> = self
            .dag
            .edges_directed(id, Direction::Outgoing)
            .map(|e| (e.target(), e.weight().index, e.weight().port))
            .collect();
        out.sort();
        out
    }

    /// Number of uses of a value, counting graph outputs.
    pub fn use_count(&self, v: Value) -> usize {
        self.users(v.node).iter().filter(|u| u.2 == v.port).count()
            + self.outputs.iter().filter(|o| o.value == v).count()
    }

    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.dag.node_indices()
    }

    pub fn node_count(&self) -> usize {
        self.dag.node_count()
    }

    /// Input nodes in signature order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    pub fn input_values(&self) -> Vec<Value> {
        self.inputs.iter().map(|&n| Value::new(n, 0)).collect()
    }

    pub fn input_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.inputs.iter().map(|&n| match &self.dag[n].op {
            Op::Input { name, .. } => name.as_str(),
            _ => unreachable!("inputs holds only input nodes"),
        })
    }

    pub fn input_types(&self) -> Vec<TensorType> {
        self.inputs
            .iter()
            .map(|&n| self.dag[n].outputs[0].clone())
            .collect()
    }

    /// The input named `name`.
    pub fn input(&self, name: &str) -> Option<Value> {
        self.inputs
            .iter()
            .zip(self.input_names())
            .find(|(_, n)| *n == name)
            .map(|(&id, _)| Value::new(id, 0))
    }

    pub fn outputs(&self) -> &[GraphOutput] {
        &self.outputs
    }

    pub fn output_types(&self) -> Vec<TensorType> {
        self.outputs
            .iter()
            .map(|o| self.ty(o.value).clone())
            .collect()
    }

    pub fn output(&self, name: &str) -> Option<&GraphOutput> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// Declares a named result.
    pub fn add_output(&mut self, name: impl Into<String>, value: Value) -> Result<(), GraphError> {
        self.push_output(GraphOutput {
            name: name.into(),
            value,
            alias: None,
        })
    }

    /// Declares a named result that updates the input `alias` in place.
    pub fn add_output_alias(
        &mut self,
        name: impl Into<String>,
        value: Value,
        alias: impl Into<String>,
    ) -> Result<(), GraphError> {
        self.push_output(GraphOutput {
            name: name.into(),
            value,
            alias: Some(alias.into()),
        })
    }

    fn push_output(&mut self, out: GraphOutput) -> Result<(), GraphError> {
        if !self.contains(out.value) {
            return Err(GraphError::UnknownValue(out.value));
        }
        if self.outputs.iter().any(|o| o.name == out.name) {
            return Err(GraphError::DuplicateOutput(out.name));
        }
        if let Some(alias) = &out.alias {
            let bad = |reason: &str| GraphError::BadAlias {
                output: out.name.clone(),
                alias: alias.clone(),
                reason: reason.into(),
            };
            let input = self.input(alias).ok_or_else(|| bad("no such input"))?;
            if self.ty(input) != self.ty(out.value) {
                return Err(bad(&format!(
                    "types differ ({} vs {})",
                    self.ty(input),
                    self.ty(out.value)
                )));
            }
            if self
                .outputs
                .iter()
                .any(|o| o.alias.as_deref() == Some(alias))
            {
                return Err(bad("another output already aliases it"));
            }
        }
        self.outputs.push(out);
        Ok(())
    }

    /// Replaces the value of an existing output (used by rewrites).
    pub fn set_output_value(&mut self, index: usize, value: Value) {
        self.outputs[index].value = value;
    }

    /// Parameters (weights) by name, with their types, sorted by name.
    pub fn params(&self) -> BTreeMap<String, TensorType> {
        self.dag
            .node_weights()
            .filter_map(|n| match &n.op {
                Op::Param { name, ty } => Some((name.clone(), ty.clone())),
                _ => None,
            })
            .collect()
    }

    /// All size symbols that appear in the graph's types, sorted.
    pub fn symbols(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .dag
            .node_weights()
            .flat_map(|n| n.outputs.iter())
            .flat_map(|t| t.shape.iter())
            .flat_map(|d| d.symbols().into_iter().map(String::from))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Redirects every use of `old` (operands and outputs) to `new`.
    pub fn replace_uses(&mut self, old: Value, new: Value) -> Result<(), GraphError> {
        if old == new {
            return Ok(());
        }
        for v in [old, new] {
            if !self.contains(v) {
                return Err(GraphError::UnknownValue(v));
            }
        }
        if self.ty(old) != self.ty(new) {
            return Err(GraphError::Type(TypeError {
                op: self.dag[new.node].op.name().into(),
                message: format!("cannot replace a {} by a {}", self.ty(old), self.ty(new)),
            }));
        }
        if self.depends_on(new.node, old.node) {
            return Err(GraphError::Cycle { old, new });
        }
        let edges: Vec<_> = self
            .dag
            .edges_directed(old.node, Direction::Outgoing)
            .filter(|e| e.weight().port == old.port)
            .map(|e| (e.id(), e.target(), e.weight().index))
            .collect();
        for (eid, target, index) in edges {
            self.dag.remove_edge(eid);
            self.dag.add_edge(
                new.node,
                target,
                Operand {
                    index,
                    port: new.port,
                },
            );
        }
        for o in &mut self.outputs {
            if o.value == old {
                o.value = new;
            }
        }
        Ok(())
    }

    /// True when `node` transitively uses `target` (or is it).
    pub fn depends_on(&self, node: NodeId, target: NodeId) -> bool {
        let mut stack = vec![node];
        let mut seen = HashSet::new();
        while let Some(n) = stack.pop() {
            if n == target {
                return true;
            }
            if seen.insert(n) {
                stack.extend(self.dag.neighbors_directed(n, Direction::Incoming));
            }
        }
        false
    }

    /// Removes a node that has no users and is not an output.
    pub fn remove_node(&mut self, id: NodeId) -> Result<Node, GraphError> {
        if self
            .dag
            .edges_directed(id, Direction::Outgoing)
            .next()
            .is_some()
            || self.outputs.iter().any(|o| o.value.node == id)
        {
            return Err(GraphError::HasUsers(id));
        }
        self.inputs.retain(|&n| n != id);
        self.dag
            .remove_node(id)
            .ok_or(GraphError::UnknownValue(Value::new(id, 0)))
    }

    /// Removes every node that no output depends on (inputs are kept: they are
    /// the signature). Returns how many were removed.
    pub fn remove_dead(&mut self) -> usize {
        let live: HashSet<NodeId> = self.reachable_from_outputs();
        let dead: Vec<NodeId> = self
            .dag
            .node_indices()
            .filter(|n| !live.contains(n) && !self.inputs.contains(n))
            .collect();
        for &n in &dead {
            self.dag.remove_node(n);
        }
        dead.len()
    }

    fn reachable_from_outputs(&self) -> HashSet<NodeId> {
        let mut stack: Vec<NodeId> = self.outputs.iter().map(|o| o.value.node).collect();
        let mut seen = HashSet::new();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(self.dag.neighbors_directed(n, Direction::Incoming));
            }
        }
        seen
    }

    /// The canonical node order: inputs in signature order, then a post-order
    /// walk from the outputs (in order; operands in slot order), then nodes no
    /// output uses, in id order. It depends only on the graph's structure, not on
    /// the order nodes were added, so it is what the printer and structural
    /// equality use.
    pub fn topo_order(&self) -> Vec<NodeId> {
        let mut order = Vec::with_capacity(self.dag.node_count());
        let mut seen: HashSet<NodeId> = HashSet::new();
        for &n in &self.inputs {
            seen.insert(n);
            order.push(n);
        }
        let roots: Vec<NodeId> = self
            .outputs
            .iter()
            .map(|o| o.value.node)
            .chain(self.dag.node_indices())
            .collect();
        for root in roots {
            if seen.contains(&root) {
                continue;
            }
            // Iterative post-order: (node, operands already pushed?).
            let mut stack = vec![(root, false)];
            while let Some((n, expanded)) = stack.pop() {
                if expanded {
                    if seen.insert(n) {
                        order.push(n);
                    }
                    continue;
                }
                if seen.contains(&n) {
                    continue;
                }
                stack.push((n, true));
                for v in self.operands(n).into_iter().rev() {
                    if !seen.contains(&v.node) {
                        stack.push((v.node, false));
                    }
                }
            }
        }
        order
    }

    /// Structure in canonical order: for each node, its op, result types, loc and
    /// operands as (position in the order, port). Two graphs are equal exactly
    /// when these (with name and outputs) are.
    fn canonical(&self) -> (Vec<CanonicalNode<'_>>, Vec<CanonicalOutput<'_>>) {
        let order = self.topo_order();
        let pos: std::collections::HashMap<NodeId, usize> =
            order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let nodes = order
            .iter()
            .map(|&n| {
                let ops = self
                    .operands(n)
                    .into_iter()
                    .map(|v| (pos[&v.node], v.port))
                    .collect();
                (&self.dag[n], ops)
            })
            .collect();
        let outs = self
            .outputs
            .iter()
            .map(|o| {
                (
                    o.name.as_str(),
                    pos[&o.value.node],
                    o.value.port,
                    o.alias.as_deref(),
                )
            })
            .collect();
        (nodes, outs)
    }
}

impl PartialEq for Graph {
    /// Structural equality: same name, same ops (with types and locations) wired
    /// the same way, same outputs — regardless of node ids or insertion order.
    fn eq(&self, other: &Graph) -> bool {
        if self.name != other.name || self.dag.node_count() != other.dag.node_count() {
            return false;
        }
        let (na, oa) = self.canonical();
        let (nb, ob) = other.canonical();
        oa == ob
            && na.len() == nb.len()
            && na.iter().zip(&nb).all(|((x, xo), (y, yo))| {
                xo == yo && x.op == y.op && x.outputs == y.outputs && x.loc == y.loc
            })
    }
}
impl Eq for Graph {}

impl Hash for Graph {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        let (nodes, outs) = self.canonical();
        for (n, ops) in nodes {
            n.op.hash(state);
            n.outputs.hash(state);
            n.loc.hash(state);
            ops.hash(state);
        }
        outs.hash(state);
    }
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", crate::text::print(self))
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", crate::text::print(self))
    }
}
