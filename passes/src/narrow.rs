//! Narrow weight storage (opt-in, lossy; part of the `lossy` pass): the
//! weight matrices of linear layers and embeddings are kept as `f16` or
//! `bf16`; matmuls read them with `f32` accumulation.
//!
//! A `matmul`/`matmul_t` with an `f32` left operand whose right operand is
//! an `f32` weight, seen through any chain of single-operand moves
//! (`reshape`, `permute`, `broadcast`, `slice`), reads instead the same
//! chain over `cast(weight, narrow)`. The matmul's type rule widens a
//! narrow right operand exactly (`kiln_ir::Op::MatMul`), so the only change
//! in value is the weight's one rounding, which the graph states and the
//! interpreter reproduces.
//!
//! A weight that nothing else reads is then declared narrow outright: the
//! cast becomes `param name : f16[..]`, and whoever supplies the weights
//! rounds the stored f32 tensor once (`kiln::NarrowWeights`; an artifact
//! stores the rounded tensor, half the bytes). A weight with other readers
//! keeps its cast, which depends on the weight alone: the runtime computes
//! it once at load. Either way decode streams half the bytes per token.
//!
//! An embedding, `gather(weight, ids)` with the weight (through moves) as
//! the table, becomes `cast(gather(narrow table, ids), f32)`: the rows read
//! are the rounded ones, widened exactly. A head tied to its embedding then
//! reads one narrow table. Weights read by anything else (a norm's scale, a
//! convolution, a bias: small, and element-wise) stay `f32`; a weight read
//! both ways is held in both precisions.

use crate::error::PassError;
use kiln_ir::{DType, Graph, NodeId, Op, Value};
use std::collections::HashMap;

/// The dtypes weights may be stored in, besides `f32`.
pub const NARROW: [DType; 2] = [DType::F16, DType::BF16];

/// What [`narrow_weights`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Narrowed {
    /// Each reader replaced, and the node that stands for it now (the new
    /// matmul; the widening cast after a gather).
    pub replaced: Vec<(NodeId, NodeId)>,
    /// Matmuls that now read a narrow weight.
    pub matmuls: usize,
    /// Gathers (embeddings) that now read a narrow table.
    pub gathers: usize,
    /// Distinct weights cast.
    pub weights: usize,
    /// Of those, the ones declared narrow (nothing else reads them).
    pub declared: usize,
}

/// Rewrites every matmul of an `f32` weight, and every gather from one, to
/// read it stored as `to` (`f16` or `bf16`; any other dtype is an error
/// naming it).
pub fn narrow_weights(g: &mut Graph, to: DType) -> Result<Narrowed, PassError> {
    if !NARROW.contains(&to) {
        return Err(PassError::BadOption {
            pass: "lossy",
            problem: format!("weights can be stored as f16 or bf16, not {to}"),
        });
    }
    let readers: Vec<NodeId> = g
        .node_ids()
        .filter(|&n| matches!(g.node(n).op, Op::MatMul | Op::MatMulT | Op::Gather { .. }))
        .collect();
    let mut narrow = Narrower {
        to,
        casts: HashMap::new(),
        moved: HashMap::new(),
    };
    let mut done = Narrowed::default();
    for n in readers {
        let operands = g.operands(n);
        let op = g.node(n).op.clone();
        let loc = g.node(n).loc.clone();
        match op {
            Op::MatMul | Op::MatMulT => {
                let [a, b] = operands[..] else { continue };
                if g.ty(a).dtype != DType::F32 {
                    continue;
                }
                let Some(b) = narrow.weight(g, b)? else {
                    continue;
                };
                let new = g.add(op, &[a, b]).map_err(rebuild)?;
                replace(g, n, new, loc)?;
                done.replaced.push((n, new.node));
                done.matmuls += 1;
            }
            Op::Gather { .. } => {
                let [table, ids] = operands[..] else { continue };
                let Some(table) = narrow.weight(g, table)? else {
                    continue;
                };
                let rows = g.add(op, &[table, ids]).map_err(rebuild)?;
                g.set_loc(rows.node, loc.clone());
                let wide = g.add(Op::Cast(DType::F32), &[rows]).map_err(rebuild)?;
                replace(g, n, wide, loc)?;
                done.replaced.push((n, wide.node));
                done.gathers += 1;
            }
            _ => {}
        }
    }
    done.weights = narrow.casts.len();
    // The replaced readers and the moves they read leave dead nodes behind,
    // which would count as other readers of their weights.
    g.remove_dead();
    // In node order, so that the graph (and kernel names) are the same every run.
    let mut casts: Vec<(NodeId, Value)> = narrow.casts.iter().map(|(&w, &c)| (w, c)).collect();
    casts.sort_by_key(|&(w, _)| w);
    for (weight, cast) in casts {
        let only_cast = g.users(weight).iter().all(|u| u.0 == cast.node)
            && !g.outputs().iter().any(|o| o.value.node == weight);
        let Op::Param { name, ty } = g.node(weight).op.clone() else {
            continue;
        };
        if !only_cast {
            continue;
        }
        let declared = g
            .add(
                Op::Param {
                    name,
                    ty: ty.with_dtype(to),
                },
                &[],
            )
            .map_err(rebuild)?;
        replace(g, cast.node, declared, g.node(weight).loc.clone())?;
        g.remove_node(weight).map_err(rebuild)?;
        done.declared += 1;
    }
    Ok(done)
}

/// Casts made so far: each weight's, and each moved view's over it.
struct Narrower {
    to: DType,
    casts: HashMap<NodeId, Value>,
    moved: HashMap<Value, Value>,
}

impl Narrower {
    /// `v` over the narrow weight, if `v` is an f32 weight seen through
    /// moves: the same moves over `cast(weight, to)`, each made once.
    fn weight(&mut self, g: &mut Graph, v: Value) -> Result<Option<Value>, PassError> {
        let Some((weight, chain)) = weight_through_moves(g, v) else {
            return Ok(None);
        };
        if let Some(&m) = self.moved.get(&v) {
            return Ok(Some(m));
        }
        let mut moved = match self.casts.get(&weight) {
            Some(&c) => c,
            None => {
                let c = g
                    .add(Op::Cast(self.to), &[Value::new(weight, 0)])
                    .map_err(rebuild)?;
                g.set_loc(c.node, g.node(weight).loc.clone());
                self.casts.insert(weight, c);
                c
            }
        };
        // The same moves, now over the narrow weight (each is dtype-blind).
        for &m in chain.iter().rev() {
            moved = g.add(g.node(m).op.clone(), &[moved]).map_err(rebuild)?;
            g.set_loc(moved.node, g.node(m).loc.clone());
        }
        self.moved.insert(v, moved);
        Ok(Some(moved))
    }
}

/// Node `n`'s only result replaced by `by` (which takes its location), and
/// `n` removed.
fn replace(g: &mut Graph, n: NodeId, by: Value, loc: Option<String>) -> Result<(), PassError> {
    g.set_loc(by.node, loc);
    g.replace_uses(Value::new(n, 0), by).map_err(rebuild)?;
    g.remove_node(n).map_err(rebuild)?;
    Ok(())
}

fn rebuild(source: kiln_ir::GraphError) -> PassError {
    PassError::Rebuild {
        pass: "lossy",
        source,
    }
}

/// The `f32` weight `v` is read from through single-operand moves, and
/// those moves, outermost first.
fn weight_through_moves(g: &Graph, mut v: Value) -> Option<(NodeId, Vec<NodeId>)> {
    let mut chain = Vec::new();
    loop {
        let node = g.node(v.node);
        match &node.op {
            Op::Param { ty, .. } if ty.dtype == DType::F32 => return Some((v.node, chain)),
            Op::Reshape { .. } | Op::Permute { .. } | Op::Broadcast { .. } | Op::Slice { .. } => {
                chain.push(v.node);
                v = g.operands(v.node)[0];
            }
            _ => return None,
        }
    }
}
