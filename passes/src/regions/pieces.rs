//! Cutting a graph into pieces: one per layer (the nodes whose location is
//! in scope `prefix.i` of a prefix with several indices) and one for the
//! rest, each a graph of its own whose inputs are the values it reads from
//! outside and whose outputs are the values others read from it.

use super::names::{mentions, scope_of, Rename, PLACEHOLDER};
use crate::provenance::Provenance;
use kiln_ir::{Graph, GraphError, NodeId, Op, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Shared context copied into a layer's piece is at most this many nodes.
const CONTEXT_LIMIT: usize = 256;

/// One piece of the partition.
pub(crate) struct Unit {
    /// `(prefix, index)` for a layer; `None` for the rest.
    pub scope: Option<(String, String)>,
    /// The nodes it computes, in topological order.
    pub nodes: Vec<NodeId>,
    /// Shared nodes of the rest copied in (a layer's view of the causal mask,
    /// the rotary tables): rules see through them, and every layer's piece
    /// stays the same.
    pub context: Vec<NodeId>,
}

/// A graph cut into units.
pub(crate) struct Partition {
    /// `units[0]` is the rest.
    pub units: Vec<Unit>,
    /// Layer prefixes and how many layers each has.
    pub prefixes: BTreeMap<String, usize>,
}

/// The layer scopes of `g`, or `None` when no prefix repeats (no layers).
pub(crate) fn partition(g: &Graph, order: &[NodeId]) -> Option<Partition> {
    let mut indices: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    for &n in order {
        if let Some((p, i)) = g.node(n).loc.as_deref().and_then(scope_of) {
            indices.entry(p).or_default().insert(i);
        }
    }
    indices.retain(|_, is| is.len() >= 2);
    if indices.is_empty() {
        return None;
    }
    let mut units = vec![Unit {
        scope: None,
        nodes: Vec::new(),
        context: Vec::new(),
    }];
    let mut by_scope: HashMap<(&str, &str), usize> = HashMap::new();
    let mut unit_of: HashMap<NodeId, usize> = HashMap::new();
    for &n in order {
        let node = g.node(n);
        if matches!(node.op, Op::Input { .. }) {
            continue;
        }
        let u = match node.loc.as_deref().and_then(scope_of) {
            Some((p, i)) if indices.contains_key(p) => {
                *by_scope.entry((p, i)).or_insert_with(|| {
                    units.push(Unit {
                        scope: Some((p.to_string(), i.to_string())),
                        nodes: Vec::new(),
                        context: Vec::new(),
                    });
                    units.len() - 1
                })
            }
            _ => 0,
        };
        units[u].nodes.push(n);
        unit_of.insert(n, u);
    }
    add_context(g, order, &mut units, &unit_of);
    let prefixes = indices
        .iter()
        .map(|(p, is)| (p.to_string(), is.len()))
        .collect();
    Some(Partition { units, prefixes })
}

/// Gives each layer the shared, layer-invariant nodes of the rest it reads:
/// values of the rest computed from inputs, parameters and constants alone
/// that at least two layers read, with everything they are computed from.
fn add_context(g: &Graph, order: &[NodeId], units: &mut [Unit], unit_of: &HashMap<NodeId, usize>) {
    // Rest nodes that depend on no layer.
    let mut invariant: HashSet<NodeId> = HashSet::new();
    for &n in order {
        if unit_of.get(&n) == Some(&0)
            && g.operands(n).iter().all(|v| {
                matches!(g.node(v.node).op, Op::Input { .. }) || invariant.contains(&v.node)
            })
        {
            invariant.insert(n);
        }
    }
    let mut readers: HashMap<NodeId, HashSet<usize>> = HashMap::new();
    for (u, unit) in units.iter().enumerate().skip(1) {
        for &n in &unit.nodes {
            for v in g.operands(n) {
                if invariant.contains(&v.node) {
                    readers.entry(v.node).or_default().insert(u);
                }
            }
        }
    }
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    for unit in units.iter_mut().skip(1) {
        let mut ctx: HashSet<NodeId> = HashSet::new();
        let mut stack: Vec<NodeId> = Vec::new();
        for &n in &unit.nodes {
            for v in g.operands(n) {
                if readers.get(&v.node).is_some_and(|r| r.len() >= 2) {
                    stack.push(v.node);
                }
            }
        }
        while let Some(n) = stack.pop() {
            if ctx.len() > CONTEXT_LIMIT {
                break;
            }
            if ctx.insert(n) {
                stack.extend(
                    g.operands(n)
                        .into_iter()
                        .map(|v| v.node)
                        .filter(|m| invariant.contains(m)),
                );
            }
        }
        if ctx.len() > CONTEXT_LIMIT {
            continue; // too much to copy into every layer: read it as an input
        }
        let mut ctx: Vec<NodeId> = ctx.into_iter().collect();
        ctx.sort_by_key(|n| pos[n]);
        unit.context = ctx;
    }
}

/// Where a unit reads a value from: one of its members (index, port) or
/// one of its inputs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ref {
    Member(usize, u32),
    Input(usize),
}

/// A unit's layout: what it computes and how it is wired, without building
/// its graph (only one layer of each distinct kind is built).
pub(crate) struct Layout {
    /// Own nodes and copied context, in topological order.
    pub members: Vec<NodeId>,
    index: HashMap<NodeId, usize>,
    /// The outer value bound to input `k`, in order of first use.
    pub inputs: Vec<Value>,
    input_index: HashMap<Value, usize>,
    /// The outer values others read from it (graph outputs, other units' inputs).
    pub outputs: Vec<Value>,
    /// For a layer whose names can be abstracted: names to the placeholder
    /// and back.
    pub rename: Option<(Rename, Rename)>,
}

impl Layout {
    fn reference(&self, v: Value) -> Ref {
        match self.index.get(&v.node) {
            Some(&i) => Ref::Member(i, v.port),
            None => Ref::Input(self.input_index[&v]),
        }
    }

    /// True when this layer is `other` up to its index: the same ops (names
    /// compared after abstraction), types, locations, wiring and history, so
    /// their pieces are the same graph. Compared member by member (both are
    /// in topological order, as the DSL built them).
    pub fn same_layer(&self, other: &Layout, g: &Graph, prov: &Provenance) -> bool {
        let (Some((ra, _)), Some((rb, _))) = (&self.rename, &other.rename) else {
            return false;
        };
        if self.members.len() != other.members.len()
            || self.inputs.len() != other.inputs.len()
            || self.outputs.len() != other.outputs.len()
            || self
                .inputs
                .iter()
                .zip(&other.inputs)
                .any(|(a, b)| g.ty(*a) != g.ty(*b))
        {
            return false;
        }
        let renamed =
            |r: &Rename, s: Option<&str>| s.map(|s| r.apply(s).unwrap_or_else(|| s.to_string()));
        for (&x, &y) in self.members.iter().zip(&other.members) {
            let (a, b) = (g.node(x), g.node(y));
            if a.outputs != b.outputs
                || a.op.name() != b.op.name()
                || prov.steps(x) != prov.steps(y)
                || renamed(ra, a.loc.as_deref()) != renamed(rb, b.loc.as_deref())
            {
                return false;
            }
            let same_op = match (&a.op, &b.op) {
                (Op::Param { name: p, .. }, Op::Param { name: q, .. }) => {
                    renamed(ra, Some(p)) == renamed(rb, Some(q))
                }
                (oa, ob) if oa.body().is_some() => match (ra.op(oa), rb.op(ob)) {
                    (Ok(x), Ok(y)) => x.as_ref().unwrap_or(oa) == y.as_ref().unwrap_or(ob),
                    _ => false,
                },
                (oa, ob) => oa == ob,
            };
            if !same_op {
                return false;
            }
            let (oa, ob) = (g.operands(x), g.operands(y));
            if oa.len() != ob.len()
                || oa
                    .iter()
                    .zip(&ob)
                    .any(|(&v, &w)| self.reference(v) != other.reference(w))
            {
                return false;
            }
        }
        self.outputs
            .iter()
            .zip(&other.outputs)
            .all(|(&v, &w)| self.reference(v) == other.reference(w))
    }
}

/// The layouts of every unit (`share`: abstract layer names where possible).
pub(crate) fn layouts(
    g: &Graph,
    p: &Partition,
    pos: &HashMap<NodeId, usize>,
    share: bool,
) -> Vec<Layout> {
    let mut out: Vec<Layout> = p
        .units
        .iter()
        .map(|u| {
            // Context first: it depends on no member, and where the graph's
            // order first reaches it differs between layers (the first
            // layer's walk meets it; later layers find it done).
            let mut members: Vec<NodeId> = u.context.clone();
            members.sort_by_key(|n| pos[n]);
            members.extend(u.nodes.iter().copied());
            let index: HashMap<NodeId, usize> =
                members.iter().enumerate().map(|(i, &n)| (n, i)).collect();
            let mut input_index: HashMap<Value, usize> = HashMap::new();
            let mut inputs = Vec::new();
            for &n in &members {
                for v in g.operands(n) {
                    if !index.contains_key(&v.node) && !input_index.contains_key(&v) {
                        input_index.insert(v, inputs.len());
                        inputs.push(v);
                    }
                }
            }
            // A name that already holds the placeholder would be renamed
            // back wrongly: such a layer stays concrete (optimized alone).
            let rename = match &u.scope {
                Some((prefix, index)) if share && !mentions_placeholder(g, &members) => Some((
                    Rename {
                        from: format!("{prefix}.{index}"),
                        to: format!("{prefix}.{PLACEHOLDER}"),
                    },
                    Rename {
                        from: format!("{prefix}.{PLACEHOLDER}"),
                        to: format!("{prefix}.{index}"),
                    },
                )),
                _ => None,
            };
            Layout {
                members,
                index,
                inputs,
                input_index,
                outputs: Vec::new(),
                rename,
            }
        })
        .collect();
    let mut demanded: HashSet<Value> = out.iter().flat_map(|l| l.inputs.iter().copied()).collect();
    demanded.extend(g.outputs().iter().map(|o| o.value));
    for (l, u) in out.iter_mut().zip(&p.units) {
        for &n in &u.nodes {
            for port in 0..g.node(n).outputs.len() as u32 {
                let v = Value::new(n, port);
                if demanded.contains(&v) {
                    l.outputs.push(v);
                }
            }
        }
    }
    out
}

/// A unit as a graph of its own: inputs `in{k}`, outputs `out{m}`, layer
/// names abstracted when the layout says so.
pub(crate) fn build_piece(
    g: &Graph,
    prov: &Provenance,
    layout: &Layout,
) -> Result<(Graph, Provenance), GraphError> {
    let mut sg = Graph::new(g.name.clone());
    let mut map: HashMap<Value, Value> = HashMap::new();
    for (k, &v) in layout.inputs.iter().enumerate() {
        map.insert(v, sg.add_input(format!("in{k}"), g.ty(v).clone())?);
    }
    let mut piece_prov = Provenance::default();
    let forward = layout.rename.as_ref().map(|(f, _)| f);
    for &n in &layout.members {
        let node = g.node(n);
        let operands: Vec<Value> = g
            .operands(n)
            .into_iter()
            .map(|v| map.get(&v).copied().ok_or(GraphError::UnknownValue(v)))
            .collect::<Result<_, _>>()?;
        let op = match forward {
            Some(r) => r.op(&node.op)?.unwrap_or_else(|| node.op.clone()),
            None => node.op.clone(),
        };
        let id = sg.add_node(op, &operands)?;
        let loc = match (forward, node.loc.as_deref()) {
            (Some(r), Some(l)) => Some(r.apply(l).unwrap_or_else(|| l.to_string())),
            (_, l) => l.map(str::to_string),
        };
        sg.set_loc(id, loc);
        piece_prov.add(id, prov.steps(n));
        for port in 0..node.outputs.len() as u32 {
            map.insert(Value::new(n, port), Value::new(id, port));
        }
    }
    for (m, v) in layout.outputs.iter().enumerate() {
        sg.add_output(format!("out{m}"), map[v])?;
    }
    Ok((sg, piece_prov))
}

/// True when a member's names already contain the placeholder text.
fn mentions_placeholder(g: &Graph, members: &[NodeId]) -> bool {
    members.iter().any(|&n| {
        let node = g.node(n);
        node.loc.as_deref().is_some_and(|l| l.contains(PLACEHOLDER))
            || match &node.op {
                Op::Param { name, .. } => name.contains(PLACEHOLDER),
                op => op.body().is_some_and(|b| mentions(b, PLACEHOLDER)),
            }
    })
}
