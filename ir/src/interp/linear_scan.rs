//! `linear_scan` (see [`crate::linear_scan`]): the recurrence
//! `h_t = a_t ⊙ h_{t-1} + b_t` run sequentially in f64 for every state
//! element, each result element rounded once to the declared dtype. `chunk`
//! is a scheduling hint for kernels and does not change the result.

use super::error::InterpError;
use super::index::{broadcast_strides, for_each_offset, prod};
use super::value::{floats, kind, Kind};
use super::Precision;
use crate::dim::Dim;
use crate::infer::infer;
use crate::linear_scan::LinearScanOp;
use crate::op::Op;
use crate::tensor::Tensor;
use crate::types::TensorType;

/// Offsets into a per-step coefficient slice (shape `from`, broadcast to
/// the state shape `to`) for every state element in row-major order.
fn offsets(from: &[usize], to: &[usize]) -> Result<Vec<usize>, InterpError> {
    let s = broadcast_strides(from, to).ok_or_else(|| {
        InterpError::operands(format!(
            "coefficients {from:?} do not broadcast to the state {to:?}"
        ))
    })?;
    let mut out = Vec::with_capacity(prod(to));
    for_each_offset(to, &s, |o| out.push(o));
    Ok(out)
}

pub(crate) fn linear_scan(
    op: &LinearScanOp,
    args: &[&Tensor],
    p: Precision,
) -> Result<Vec<Tensor>, InterpError> {
    let tys: Vec<TensorType> = args
        .iter()
        .map(|t| TensorType::new(t.dtype(), t.shape.iter().map(|&d| Dim::from(d)).collect()))
        .collect();
    let refs: Vec<&TensorType> = tys.iter().collect();
    infer(&Op::LinearScan(op.clone()), &refs).map_err(|e| InterpError::operands(e.message))?;
    if args.iter().any(|a| kind(&a.data) != Kind::Float) {
        return Err(InterpError::operands("linear_scan needs float operands"));
    }
    let (h0, a, b) = (args[0], args[1], args[2]);
    let state = h0.shape.clone();
    let n = prod(&state);
    let steps = a.shape[0];
    let (a_step, b_step) = (prod(&a.shape[1..]), prod(&b.shape[1..]));
    let ao = offsets(&a.shape[1..], &state)?;
    let bo = offsets(&b.shape[1..], &state)?;
    let (hf, af, bf) = (floats(h0), floats(a), floats(b));
    let mut h: Vec<f64> = hf.to_vec();
    let mut all = vec![0.0f64; steps * n];
    for step in 0..steps {
        let t = if op.reverse { steps - 1 - step } else { step };
        let (ar, br) = (&af[t * a_step..], &bf[t * b_step..]);
        let row = &mut all[t * n..(t + 1) * n];
        for e in 0..n {
            h[e] = ar[ao[e]] * h[e] + br[bo[e]];
            row[e] = h[e];
        }
    }
    let dtype = h0.dtype();
    let mut all_shape = state.clone();
    all_shape.insert(0, steps);
    Ok(vec![
        super::value::float_tensor(dtype, state, h, p),
        super::value::float_tensor(dtype, all_shape, all, p),
    ])
}
