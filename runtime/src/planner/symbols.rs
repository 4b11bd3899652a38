//! The size symbols a plan needs: those of every type in the graph and its
//! bodies, and those only op attributes mention (an `update_slice` start
//! `past`, slice bounds, pad amounts, an attention's causal offset), which
//! no type carries.

use kiln_ir::{Dim, Graph, Op};
use std::collections::BTreeSet;

/// The sorted symbols of `g` (types, attributes, bodies).
pub(crate) fn of_graph(g: &Graph) -> Vec<String> {
    let mut out = BTreeSet::new();
    collect(g, &mut out);
    out.into_iter().collect()
}

fn add<'a>(out: &mut BTreeSet<String>, dims: impl IntoIterator<Item = &'a Dim>) {
    for d in dims {
        out.extend(d.symbols().into_iter().map(String::from));
    }
}

fn collect(g: &Graph, out: &mut BTreeSet<String>) {
    for n in g.node_ids() {
        let node = g.node(n);
        for t in &node.outputs {
            add(out, &t.shape);
        }
        match &node.op {
            Op::Slice { start, end, .. } => add(out, [start, end]),
            Op::Pad { low, high, .. } => add(out, [low, high]),
            Op::UpdateSlice { start, .. } => add(out, [start]),
            Op::SaqAppend(a) => add(out, [&a.start]),
            Op::SaqAttention(a) => add(out, [&a.offset]),
            Op::Attention(a) => {
                add(out, [&a.offset]);
                add(out, a.kv_len.iter());
            }
            Op::PrFlash(a) => add(out, [&a.offset]),
            Op::Reshape { shape } | Op::Broadcast { shape } => add(out, shape),
            Op::Input { ty, .. } | Op::Param { ty, .. } | Op::Iota { ty, .. } => {
                add(out, &ty.shape)
            }
            _ => {}
        }
        if let Some(body) = node.op.body() {
            collect(body, out);
        }
    }
}

/// True when a kernel op mentions no size symbol (in its body's types or
/// attributes), so on static operands it computes the same on every run.
pub(crate) fn op_is_static(op: &Op) -> bool {
    match op {
        Op::MatMul | Op::MatMulT | Op::LinearScan(_) => true,
        Op::Fused(f) => of_graph(&f.body).is_empty(),
        Op::Attention(a) => {
            a.offset.symbols().is_empty() && a.kv_len.iter().all(|l| l.symbols().is_empty())
        }
        Op::PrFlash(a) => a.offset.symbols().is_empty(),
        _ => false,
    }
}
