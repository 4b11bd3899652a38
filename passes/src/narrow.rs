//! Narrow weight storage (opt-in, lossy; part of the `lossy` pass): the
//! weights of linear layers are kept as `f16` or `bf16` and read by the
//! matmul with `f32` accumulation.
//!
//! A `matmul`/`matmul_t` with an `f32` left operand whose right operand is
//! an `f32` weight, seen through any chain of single-operand moves
//! (`reshape`, `permute`, `broadcast`, `slice`), reads instead the same
//! chain over `cast(weight, narrow)`. The matmul's type rule widens a
//! narrow right operand exactly (`kiln_ir::Op::MatMul`), so the only change
//! in value is the weight's one rounding, which the graph states and the
//! interpreter reproduces. The cast depends on the weight alone: the
//! runtime computes it once at load and drops the `f32` copy when nothing
//! else reads it, so decode streams half the bytes per token.
//!
//! Weights read by anything else (an embedding's gather, a norm's scale)
//! keep those reads in `f32`; a weight tied between an embedding and the
//! output head is then held twice, once per precision.

use crate::error::PassError;
use kiln_ir::{DType, Graph, NodeId, Op, Value};
use std::collections::HashMap;

/// The dtypes weights may be stored in, besides `f32`.
pub const NARROW: [DType; 2] = [DType::F16, DType::BF16];

/// What [`narrow_weights`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Narrowed {
    /// Matmuls that now read a narrow weight.
    pub matmuls: usize,
    /// Distinct weights cast.
    pub weights: usize,
}

/// Rewrites every matmul of an `f32` weight to read it stored as `to`
/// (`f16` or `bf16`; any other dtype is an error naming it).
pub fn narrow_weights(g: &mut Graph, to: DType) -> Result<Narrowed, PassError> {
    if !NARROW.contains(&to) {
        return Err(PassError::BadOption {
            pass: "lossy",
            problem: format!("weights can be stored as f16 or bf16, not {to}"),
        });
    }
    let matmuls: Vec<NodeId> = g
        .node_ids()
        .filter(|&n| matches!(g.node(n).op, Op::MatMul | Op::MatMulT))
        .collect();
    let mut casts: HashMap<NodeId, Value> = HashMap::new();
    let mut moved_of: HashMap<Value, Value> = HashMap::new();
    let mut done = Narrowed::default();
    for n in matmuls {
        let [a, b] = g.operands(n)[..] else {
            continue;
        };
        if g.ty(a).dtype != DType::F32 {
            continue;
        }
        let Some((weight, chain)) = weight_through_moves(g, b) else {
            continue;
        };
        if let Some(&moved) = moved_of.get(&b) {
            replace_matmul(g, n, a, moved)?;
            done.matmuls += 1;
            continue;
        }
        let narrow = match casts.get(&weight) {
            Some(&v) => v,
            None => {
                let v = g
                    .add(Op::Cast(to), &[Value::new(weight, 0)])
                    .map_err(rebuild)?;
                g.set_loc(v.node, g.node(weight).loc.clone());
                casts.insert(weight, v);
                v
            }
        };
        // The same moves, now over the narrow weight (each is dtype-blind).
        let mut moved = narrow;
        for &m in chain.iter().rev() {
            moved = g.add(g.node(m).op.clone(), &[moved]).map_err(rebuild)?;
            g.set_loc(moved.node, g.node(m).loc.clone());
        }
        moved_of.insert(b, moved);
        replace_matmul(g, n, a, moved)?;
        done.matmuls += 1;
    }
    done.weights = casts.len();
    Ok(done)
}

/// Matmul `n` replaced by the same op of `a` and `b`.
fn replace_matmul(g: &mut Graph, n: NodeId, a: Value, b: Value) -> Result<(), PassError> {
    let new = g.add_node(g.node(n).op.clone(), &[a, b]).map_err(rebuild)?;
    g.set_loc(new, g.node(n).loc.clone());
    g.replace_uses(Value::new(n, 0), Value::new(new, 0))
        .map_err(rebuild)?;
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
