//! **`merge-sibling-matmul_t`** (CPU): `matmul_t`s that read the same left
//! operand, each with a weight of its own as B, become one `matmul_t` of
//! those weights concatenated along the output axis; each old result is a
//! slice of the new one's columns.
//!
//! Why: a decode step is a chain of GEMVs, each a weight streamed once, and
//! every launch pays a start (threads joining, each thread's prefetch
//! stream ramping up) and a tail (the last pieces shared out). On the 2-core
//! znver4 VM, with the memory system at ~55 GB/s, the 134M Llama's 2.4 MB
//! projections read 40 GB/s where its 6.3 MB ones read 50 (`kiln-run
//! --profile`). Concatenated, a layer's q, k and v projections are one
//! 7 MB stream, its gate and up projections one 12.6 MB stream.
//!
//! What qualifies: B is a `param` of rank 2 (`[n, k]`, `n` constant) read
//! by nothing else — the concatenation is then computed once at load (the
//! planner hoists launches on weights alone) and the originals are dropped,
//! so no weight is held twice — with the same dtype and `k` as its
//! siblings. Any spelling of the model that reads one normalized value
//! through several linear layers is found: the group is by the operand
//! value, not by names or by a pattern of the layer.

use super::{rebuild, replace, Rewrite};
use crate::error::PassError;
use kiln_ir::{DType, Dim, Graph, NodeId, Op, Value};

pub(super) const MERGE_SIBLINGS: &str = "merge-sibling-matmul_t";

/// One `matmul_t` that may join a group: its node, its weight and width.
struct Member {
    matmul: NodeId,
    weight: Value,
    width: i64,
}

/// What siblings share.
#[derive(PartialEq)]
struct Key {
    a: Value,
    dtype: DType,
    k: Dim,
}

/// Merges every group of two or more sibling `matmul_t`s (see the module
/// doc), members in node order.
pub(super) fn merge_siblings(g: &mut Graph, done: &mut Vec<Rewrite>) -> Result<(), PassError> {
    let mut groups: Vec<(Key, Vec<Member>)> = Vec::new();
    for n in g.node_ids() {
        if g.node(n).op != Op::MatMulT {
            continue;
        }
        let ops = g.operands(n);
        let (a, b) = (ops[0], ops[1]);
        let Some((key, width)) = own_weight(g, a, b) else {
            continue;
        };
        let member = Member {
            matmul: n,
            weight: b,
            width,
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(member),
            None => groups.push((key, vec![member])),
        }
    }
    for (key, members) in groups {
        if members.len() >= 2 {
            merge(g, key.a, &members, done)?;
        }
    }
    Ok(())
}

/// The group key and `n` of `matmul_t(a, b)` when `b` qualifies.
fn own_weight(g: &Graph, a: Value, b: Value) -> Option<(Key, i64)> {
    if !matches!(g.node(b.node).op, Op::Param { .. }) {
        return None;
    }
    let read_once = g.users(b.node).len() == 1 && !g.outputs().iter().any(|o| o.value == b);
    let ty = g.ty(b);
    if !read_once || ty.rank() != 2 {
        return None;
    }
    let width = ty.shape[0].as_const().filter(|&n| n > 0)?;
    let key = Key {
        a,
        dtype: ty.dtype,
        k: ty.shape[1].clone(),
    };
    Some((key, width))
}

fn merge(
    g: &mut Graph,
    a: Value,
    members: &[Member],
    done: &mut Vec<Rewrite>,
) -> Result<(), PassError> {
    let loc = g.node(members[0].matmul).loc.clone();
    let weights: Vec<Value> = members.iter().map(|m| m.weight).collect();
    let cat = g
        .add_node(Op::Concat { axis: 0 }, &weights)
        .map_err(rebuild)?;
    g.set_loc(cat, loc.clone());
    let merged = g
        .add_node(Op::MatMulT, &[a, Value::new(cat, 0)])
        .map_err(rebuild)?;
    g.set_loc(merged, loc);
    let axis = g.ty(Value::new(merged, 0)).rank() - 1;
    let mut start = 0;
    for m in members {
        let slice = Op::Slice {
            axis,
            start: Dim::constant(start),
            end: Dim::constant(start + m.width),
        };
        let s = g
            .add_node(slice, &[Value::new(merged, 0)])
            .map_err(rebuild)?;
        replace(g, m.matmul, s)?;
        done.push(Rewrite {
            from: m.matmul,
            to: merged,
            rule: MERGE_SIBLINGS,
            made: "matmul_t",
        });
        done.push(Rewrite {
            from: m.matmul,
            to: s,
            rule: MERGE_SIBLINGS,
            made: "slice",
        });
        start += m.width;
    }
    Ok(())
}
