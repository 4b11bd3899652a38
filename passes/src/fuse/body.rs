//! Building the body graph of a kernel from a set of member nodes.

use kiln_ir::kernel::{check_fused, FusionError};
use kiln_ir::{FusedOp, FusionKind, Graph, GraphError, NodeId, Op, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A kernel's body and the outer values its inputs are bound to.
pub(super) struct Body {
    pub op: FusedOp,
    /// One outer value per body input, in order.
    pub operands: Vec<Value>,
}

/// Builds the body of a kernel computing `members` (in topological order)
/// and returning the values of `results`. Operands of members that are not
/// members become body inputs, in order of first use.
pub(super) fn build(
    g: &Graph,
    name: &str,
    members: &[NodeId],
    results: &[NodeId],
) -> Result<Body, GraphError> {
    let set: HashSet<NodeId> = members.iter().copied().collect();
    let mut body = Graph::new(name);
    let mut map: HashMap<Value, Value> = HashMap::new();
    let mut operands = Vec::new();
    for &m in members {
        for v in g.operands(m) {
            if !set.contains(&v.node) && !map.contains_key(&v) {
                let i = body.add_input(format!("in{}", operands.len()), g.ty(v).clone())?;
                map.insert(v, i);
                operands.push(v);
            }
        }
    }
    let mut kind = FusionKind::Loop;
    for &m in members {
        let node = g.node(m);
        if matches!(node.op, Op::Reduce { .. }) {
            kind = FusionKind::Row;
        }
        let ops: Vec<Value> = g
            .operands(m)
            .iter()
            .map(|v| map.get(v).copied().ok_or(GraphError::UnknownValue(*v)))
            .collect::<Result<_, _>>()?;
        let id = body.add_node(node.op.clone(), &ops)?;
        body.set_loc(id, node.loc.clone());
        map.insert(Value::new(m, 0), Value::new(id, 0));
    }
    for (i, &r) in results.iter().enumerate() {
        let v = Value::new(r, 0);
        let bv = map.get(&v).copied().ok_or(GraphError::UnknownValue(v))?;
        body.add_output(format!("out{i}"), bv)?;
    }
    Ok(Body {
        op: FusedOp {
            kind,
            body: Arc::new(body),
        },
        operands,
    })
}

/// Builds and checks against the fusion contract.
pub(super) fn build_checked(
    g: &Graph,
    name: &str,
    members: &[NodeId],
    results: &[NodeId],
) -> Result<Body, FusionError> {
    let body = build(g, name, members, results).map_err(|e| FusionError {
        kind: "body",
        message: e.to_string(),
    })?;
    check_fused(&body.op)?;
    Ok(body)
}
