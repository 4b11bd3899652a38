//! Reductions: `reduce_sum`, `reduce_max`, `reduce_min`, `reduce_mean` over
//! a set of axes, with or without keeping them as size-1 dims.
//!
//! - Floats accumulate in f64 in row-major order of the operand and are
//!   rounded once to the declared dtype (Declared precision) — a more
//!   accurate oracle than an f32 accumulator.
//! - `max`/`min` propagate NaN (and order -0 below +0).
//! - Empty reductions: `sum` = 0, `mean` = NaN (0/0), `max` = -inf, `min` =
//!   +inf; for integers `max` = the type's minimum, `min` = its maximum.
//! - Integer sums wrap in the type's width. `mean` is float-only.

use super::elementwise::{max_nan, min_nan};
use super::error::InterpError;
use super::index::{for_each_offset, prod, strides};
use super::value::{float_tensor, floats, int_range, int_tensor, ints, kind, Kind, Out};
use super::Precision;
use crate::op::ReduceOp;
use crate::tensor::Tensor;

/// Reduces `x` over `axes` into `out` (whose shape already reflects `keep_dims`).
pub(crate) fn reduce(
    op: ReduceOp,
    axes: &[usize],
    x: &Tensor,
    out: &Out,
    p: Precision,
) -> Result<Tensor, InterpError> {
    let rank = x.shape.len();
    if let Some(&a) = axes.iter().find(|&&a| a >= rank) {
        return Err(InterpError::operands(format!(
            "axis {a} out of range for rank {rank}"
        )));
    }
    // The result laid out with the reduced axes kept as size 1; the operand
    // is walked in its own order and each element lands on its output slot.
    let kept: Vec<usize> = (0..rank)
        .map(|i| if axes.contains(&i) { 1 } else { x.shape[i] })
        .collect();
    let out_strides: Vec<usize> = strides(&kept)
        .into_iter()
        .enumerate()
        .map(|(i, s)| if axes.contains(&i) { 0 } else { s })
        .collect();
    let n_out = prod(&kept);
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    let shape = out.shape.clone();
    match kind(&x.data) {
        Kind::Float => {
            let init = match op {
                ReduceOp::Sum | ReduceOp::Mean => 0.0,
                ReduceOp::Max => f64::NEG_INFINITY,
                ReduceOp::Min => f64::INFINITY,
            };
            let step: fn(f64, f64) -> f64 = match op {
                ReduceOp::Sum | ReduceOp::Mean => |a, b| a + b,
                ReduceOp::Max => max_nan,
                ReduceOp::Min => min_nan,
            };
            let src = floats(x);
            let mut acc = vec![init; n_out];
            let mut i = 0;
            for_each_offset(&x.shape, &out_strides, |o| {
                acc[o] = step(acc[o], src[i]);
                i += 1;
            });
            if op == ReduceOp::Mean {
                let n = count as f64;
                acc.iter_mut().for_each(|a| *a /= n);
            }
            Ok(float_tensor(out.dtype, shape, acc, p))
        }
        Kind::Int => {
            let (lo, hi) = int_range(out.dtype);
            let (init, step): (i64, fn(i64, i64) -> i64) = match op {
                ReduceOp::Sum => (0, i64::wrapping_add),
                ReduceOp::Max => (lo, std::cmp::max),
                ReduceOp::Min => (hi, std::cmp::min),
                ReduceOp::Mean => return Err(InterpError::operands("mean needs a float dtype")),
            };
            let src = ints(x);
            let mut acc = vec![init; n_out];
            let mut i = 0;
            for_each_offset(&x.shape, &out_strides, |o| {
                acc[o] = step(acc[o], src[i]);
                i += 1;
            });
            Ok(int_tensor(out.dtype, shape, acc))
        }
        Kind::Bool => Err(InterpError::operands("cannot reduce bool")),
    }
}
