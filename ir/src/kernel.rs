//! The kernel model shared by code generation and the runtime.
//!
//! A kernel is a function over a one-dimensional grid of blocks. The GPU
//! launches the grid; the CPU executor hands ranges of blocks to its threads.
//! Kernels never know which executor runs them.
//!
//! **CPU ABI** (host code, C calling convention):
//!
//! ```c
//! void kernel(void **args, const int64_t *sizes, int64_t block_begin, int64_t block_end);
//! ```
//!
//! - `args`: one pointer per operand of the kernel node, then one per result,
//!   each to a dense row-major buffer of the value's dtype (`bool` is one byte).
//! - `sizes`: the values of the compiled graph's size symbols, in the sorted
//!   order of [`KernelLaunch::symbols`] (the same list for every kernel of a module).
//! - The call computes blocks `block_begin..block_end` of the grid.
//!
//! **GPU ABI** (PTX `.entry`): parameters are the buffer pointers (operands,
//! then results) followed by the sizes as `i64`; the kernel is launched with
//! `grid = (num_blocks, 1, 1)` and `block = (gpu_threads, 1, 1)`, and block `b`
//! of the grid is `blockIdx.x`.

use crate::dim::{Bindings, Dim, DimError};
use serde::{Deserialize, Serialize};

/// One factor of a grid: `ceil(extent / tile)` blocks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GridDim {
    pub extent: Dim,
    pub tile: i64,
}

/// A grid of `Π ceil(extent_i / tile_i)` blocks. Block ids are row-major over
/// the factors (the last factor varies fastest), which is how kernels decode them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grid {
    pub dims: Vec<GridDim>,
}

impl Grid {
    /// A grid of `extent` blocks, one per element of `extent`.
    pub fn rows(extent: Dim) -> Grid {
        Grid {
            dims: vec![GridDim { extent, tile: 1 }],
        }
    }

    /// The number of blocks under `bindings`.
    pub fn num_blocks(&self, bindings: &Bindings) -> Result<usize, DimError> {
        let mut n: usize = 1;
        for d in &self.dims {
            let e = d.extent.eval_usize(bindings)?;
            let t = d.tile.max(1) as usize;
            n = n
                .checked_mul(e.div_ceil(t))
                .ok_or_else(|| DimError::Overflow(d.extent.to_string()))?;
        }
        Ok(n)
    }
}

/// What the runtime needs to launch a compiled kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelLaunch {
    /// Symbol name of the kernel function.
    pub name: String,
    pub grid: Grid,
    /// Size symbols passed in the `sizes` array, in order.
    pub symbols: Vec<String>,
    /// Threads per block on the GPU (ignored on the CPU).
    pub gpu_threads: u32,
}

use crate::graph::{Graph, NodeId};
use crate::op::{FusedOp, FusionKind, Op};
use crate::types::Shape;
use std::collections::HashSet;

/// A fused body that breaks the fusion contract, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fused {kind} kernel: {message}")]
pub struct FusionError {
    pub kind: &'static str,
    pub message: String,
}

/// How a fused kernel maps onto the grid: one block per index of `outer`
/// (the leading dims every result shares); inside a block the kernel loops
/// over the remaining dims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusionGeometry {
    pub outer: Shape,
}

/// Checks a fused op against the fusion contract, which is what code
/// generation relies on, and returns its geometry.
///
/// Both kinds:
/// - the body holds only inputs, scalar (`[]`) constants, `iota`, element-wise
///   ops and data-movement ops (reshape, permute, broadcast, slice, concat, pad,
///   gather) — plus, for `row`, reductions;
/// - every result is computed element by element with numpy semantics, so any
///   index mapping those ops express is allowed.
///
/// `loop`: all results have the same shape; `outer` is that shape without its
/// last axis.
///
/// `row`: every reduction reduces the trailing axes `r..` of its operand and
/// all agree on the leading dims `outer = operand[..r]`; every result shape
/// starts with `outer`; between a reduction and a result only element-wise
/// ops and broadcasts appear (so a reduced value only ever meets the row it
/// was computed for, and a block can compute it once).
pub fn check_fused(f: &FusedOp) -> Result<FusionGeometry, FusionError> {
    let kind = f.kind.name();
    let fail = |m: String| FusionError { kind, message: m };
    let g: &Graph = &f.body;
    if g.outputs().is_empty() {
        return Err(fail("body has no results".into()));
    }
    let mut reduces: Vec<NodeId> = Vec::new();
    for n in g.node_ids() {
        let op = &g.node(n).op;
        let ok = match op {
            Op::Input { .. } | Op::Iota { .. } => true,
            Op::Const(l) => l.shape.is_empty(),
            Op::Reduce { .. } => {
                reduces.push(n);
                f.kind == FusionKind::Row
            }
            _ => op.is_elementwise() || op.is_data_movement(),
        };
        if !ok {
            return Err(fail(format!(
                "`{}` is not allowed in the body{}",
                op.name(),
                if matches!(op, Op::Const(_)) {
                    " (only scalar constants are)"
                } else {
                    ""
                }
            )));
        }
    }
    let out_shapes: Vec<Shape> = g.output_types().into_iter().map(|t| t.shape).collect();
    match f.kind {
        FusionKind::Loop => {
            if out_shapes.iter().any(|s| *s != out_shapes[0]) {
                return Err(fail("results have different shapes".into()));
            }
            let s = &out_shapes[0];
            let outer = if s.is_empty() {
                Vec::new()
            } else {
                s[..s.len() - 1].to_vec()
            };
            Ok(FusionGeometry { outer })
        }
        FusionKind::Row => {
            if reduces.is_empty() {
                return Err(fail("a row kernel needs at least one reduction".into()));
            }
            let mut outer: Option<Shape> = None;
            for &n in &reduces {
                let Op::Reduce { axes, .. } = &g.node(n).op else {
                    unreachable!()
                };
                let operand = g.ty(g.operands(n)[0]).shape.clone();
                let r = operand.len() - axes.len();
                let mut sorted = axes.clone();
                sorted.sort_unstable();
                if sorted != (r..operand.len()).collect::<Vec<_>>() {
                    return Err(fail(format!(
                        "reduction over {axes:?} is not over the trailing axes"
                    )));
                }
                let o = operand[..r].to_vec();
                match &outer {
                    None => outer = Some(o),
                    Some(prev) if *prev != o => {
                        return Err(fail("reductions disagree on the outer dims".into()))
                    }
                    _ => {}
                }
            }
            let outer = outer.expect("at least one reduction");
            for s in &out_shapes {
                if s.len() < outer.len() || s[..outer.len()] != outer[..] {
                    return Err(fail(format!(
                        "result shape {s:?} does not start with the outer dims {outer:?}"
                    )));
                }
            }
            // Only element-wise ops and broadcasts may sit downstream of a reduction.
            let mut downstream: HashSet<NodeId> = HashSet::new();
            let mut stack: Vec<NodeId> = reduces.clone();
            while let Some(n) = stack.pop() {
                for (user, _, _) in g.users(n) {
                    let op = &g.node(user).op;
                    let ok = op.is_elementwise()
                        || matches!(op, Op::Broadcast { .. } | Op::Reduce { .. });
                    if !ok {
                        return Err(fail(format!(
                            "`{}` uses a reduced value; only element-wise ops and broadcasts may",
                            op.name()
                        )));
                    }
                    // Right-aligned broadcasting must not shift a row value onto other axes.
                    let (from, to) = (&g.node(n).outputs[0].shape, &g.node(user).outputs[0].shape);
                    let is_reduce = matches!(op, Op::Reduce { .. });
                    if !is_reduce
                        && (from.len() != to.len()
                            || from.len() < outer.len()
                            || from[..outer.len()] != outer[..])
                    {
                        return Err(fail(format!(
                            "a reduced value of shape {from:?} reaches `{}` of shape {to:?}; keep the outer dims {outer:?} leading and the rank unchanged",
                            op.name()
                        )));
                    }
                    if downstream.insert(user) {
                        stack.push(user);
                    }
                }
            }
            Ok(FusionGeometry { outer })
        }
    }
}
