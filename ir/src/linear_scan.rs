//! `linear_scan`: the first-order linear recurrence as a kernel-level op.
//!
//! ```text
//! linear_scan(h0: [S..], a: [T, A..], b: [T, B..]) -> (final: [S..], states: [T, S..])
//!
//! h_{-1} = h0
//! h_t    = a_t ⊙ h_{t-1} + b_t          (t = 0, 1, …, T-1)
//! states[t] = h_t,  final = h_{T-1}     (h0 when T = 0)
//! ```
//!
//! The time axis is axis 0 of `a` and `b` (the rewrite that introduces the
//! op permutes a scan over another axis). `a` and `b` have one dim per state
//! dim after the time axis, each equal to the state's or `1` (broadcast):
//! Mamba's decay is a full `[T, d_inner, N]`, a RetNet head's scalar decay
//! `γ` is `a: [T, heads, 1, 1]` against a matrix state `[heads, d, d]`, and a
//! cumulative sum is `a: [T, 1, ..]` of ones.
//!
//! With `reverse` the steps run `t = T-1, …, 0` (`h_t = a_t ⊙ h_{t+1} + b_t`,
//! `final = h_0`), and `states[t]` is still the state after step `t`.
//!
//! `chunk` only says how a kernel schedules the recurrence, never what it
//! computes: `0` lets the kernel choose per target; `L >= 2` asks for time
//! chunks of `L` steps — each chunk reduced on its own to the pair `(Π a,
//! scan of b from zero)`, the pairs combined in order with the associative
//! operator `(a1, b1) ∘ (a2, b2) = (a1·a2, a2·b1 + b2)`, then each chunk
//! rescanned from its true initial state. The two schedules agree up to
//! float rounding.
//!
//! The reference semantics ([`crate::interp`]) run the recurrence
//! sequentially in f64 and round each result element once to the dtype.

use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `linear_scan` (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LinearScanOp {
    /// Run the recurrence from the end of the sequence.
    pub reverse: bool,
    /// Time-chunk length of the kernel's schedule: `0` (the kernel's choice)
    /// or at least 2.
    pub chunk: usize,
}

/// The type rule: `(h0, a, b)` -> `(final, states)`.
pub(crate) fn infer_linear_scan(
    op: &LinearScanOp,
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>, String> {
    if op.chunk == 1 {
        return Err("chunk must be 0 (the kernel's choice) or at least 2, got 1".into());
    }
    if inputs.len() != 3 {
        return Err(format!(
            "expects 3 operands (h0, a, b), got {}",
            inputs.len()
        ));
    }
    let (h0, a, b) = (inputs[0], inputs[1], inputs[2]);
    if !h0.dtype.is_float() {
        return Err(format!("the state must be a float tensor, got {h0}"));
    }
    if a.dtype != h0.dtype || b.dtype != h0.dtype {
        return Err(format!("h0, a, b dtypes differ: {h0}, {a}, {b}"));
    }
    let r = h0.rank();
    for (name, t) in [("a", a), ("b", b)] {
        if t.rank() != r + 1 {
            return Err(format!(
                "{name} must be [T, ..] with one dim per state dim (rank {}), got {t} for the state {h0}",
                r + 1
            ));
        }
        for (i, (d, s)) in t.shape[1..].iter().zip(&h0.shape).enumerate() {
            if d != s && d.as_const() != Some(1) {
                return Err(format!(
                    "{name} dim {} is {d}: neither the state's {s} nor 1 ({t} against the state {h0})",
                    i + 1
                ));
            }
        }
    }
    if a.shape[0] != b.shape[0] {
        return Err(format!(
            "a and b disagree on the sequence length: {} and {}",
            a.shape[0], b.shape[0]
        ));
    }
    let mut states = h0.shape.clone();
    states.insert(0, a.shape[0].clone());
    Ok(vec![h0.clone(), h0.with_shape(states)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{shape, DType};

    fn t(d: DType, s: crate::types::Shape) -> TensorType {
        TensorType::new(d, s)
    }

    #[test]
    fn broadcast_coefficients_are_accepted_and_others_refused() {
        let op = LinearScanOp {
            reverse: false,
            chunk: 0,
        };
        let h = t(DType::F32, shape![4, 8]);
        let a = t(DType::F32, shape!["seq", 4, 1]);
        let b = t(DType::F32, shape!["seq", 4, 8]);
        let out = infer_linear_scan(&op, &[&h, &a, &b]).unwrap();
        assert_eq!(out[0], h);
        assert_eq!(out[1], t(DType::F32, shape!["seq", 4, 8]));
        let bad = t(DType::F32, shape!["seq", 2, 8]);
        assert!(infer_linear_scan(&op, &[&h, &bad, &b]).is_err());
        let short = t(DType::F32, shape!["seq", 8]);
        assert!(infer_linear_scan(&op, &[&h, &short, &b]).is_err());
        let other_len = t(DType::F32, shape!["past", 4, 8]);
        assert!(infer_linear_scan(&op, &[&h, &a, &other_len]).is_err());
        let ints = t(DType::I32, shape![4, 8]);
        assert!(infer_linear_scan(&op, &[&ints, &a, &b]).is_err());
        let one = LinearScanOp {
            reverse: false,
            chunk: 1,
        };
        assert!(infer_linear_scan(&one, &[&h, &a, &b]).is_err());
    }
}
