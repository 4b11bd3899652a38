//! The kernel-level ops of the SAQ cache, introduced by the opt-in `saq`
//! pass (never by an exact rule):
//!
//! - `saq_append(state: u8[N], k: f[seq,H,D], v: f[seq,H,D]) -> u8[N]`
//!   appends `seq` tokens to a state holding `start` (= `past`) tokens
//!   ([`super::append`]). Its result replaces the state (an in-place output
//!   alias, as `update_slice` does for an f32 cache).
//! - `saq_attention(q: f[H,g,seq,D], state: u8[N], k, v) -> f[H,g,seq,D]`
//!   attends from the `seq` queries at positions `offset..offset+seq` over
//!   the `offset` cached tokens, read from the quantized state directly, and
//!   the new `k`, `v` ([`super::attention`]); `state` is `saq_append`'s
//!   result, so it holds `offset + seq` tokens.
//!
//! `N` is the layout's length for some capacity (`base + per·ctx`, see
//! [`SaqLayout::state_len`]); `H` and `D` are constants.

use super::{SaqLayout, SaqSpec};
use crate::dim::Dim;
use crate::op::F64Bits;
use crate::types::{DType, TensorType};
use serde::{Deserialize, Serialize};

/// `saq_append`: see the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SaqAppendOp {
    pub spec: SaqSpec,
    /// Tokens already in the state (`past`).
    pub start: Dim,
}

/// `saq_attention`: see the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SaqAttentionOp {
    pub spec: SaqSpec,
    /// Multiplies `q·k`.
    pub scale: F64Bits,
    /// Tokens cached before the new ones (`past`); query `i` sees positions
    /// `0..=offset+i`.
    pub offset: Dim,
}

fn non_negative(what: &str, d: &Dim) -> Result<(), String> {
    match d.as_const() {
        Some(v) if v < 0 => Err(format!("negative {what} {d}")),
        _ => Ok(()),
    }
}

/// The layout of a state of type `state` holding keys and values of type
/// `k`, `v` (`[seq, H, D]`, constant `H` and `D`), checked.
pub fn layout_of(
    spec: &SaqSpec,
    state: &TensorType,
    k: &TensorType,
    v: &TensorType,
) -> Result<SaqLayout, String> {
    if !k.dtype.is_float() || k.rank() != 3 {
        return Err(format!(
            "new keys must be a float [seq, heads, dim] tensor, got {k}"
        ));
    }
    if v != k {
        return Err(format!("new keys and values differ: {k} and {v}"));
    }
    let (Some(h), Some(d)) = (k.shape[1].as_const(), k.shape[2].as_const()) else {
        return Err(format!("heads and head size must be constants, got {k}"));
    };
    let layout = SaqLayout::new(spec, h as usize, d as usize).map_err(|e| e.to_string())?;
    if state.dtype != DType::U8 || state.rank() != 1 {
        return Err(format!("the state must be u8[N], got {state}"));
    }
    if layout.capacity_dim(&state.shape[0]).is_none() {
        return Err(format!(
            "state {state} does not have the layout's length {}",
            layout.describe_len()
        ));
    }
    Ok(layout)
}

/// The type rule of `saq_append`: operands `(state, k, v)`; the result has
/// the state's type.
pub(crate) fn infer_append(op: &SaqAppendOp, inputs: &[&TensorType]) -> Result<TensorType, String> {
    if inputs.len() != 3 {
        return Err(format!(
            "expects 3 operands (state, k, v), got {}",
            inputs.len()
        ));
    }
    non_negative("start", &op.start)?;
    layout_of(&op.spec, inputs[0], inputs[1], inputs[2])?;
    Ok(inputs[0].clone())
}

/// The type rule of `saq_attention`: operands `(q, state, k, v)` with `q`
/// `[H, g, seq, D]` of `k`'s dtype; the result has `q`'s type.
pub(crate) fn infer_attention(
    op: &SaqAttentionOp,
    inputs: &[&TensorType],
) -> Result<TensorType, String> {
    if inputs.len() != 4 {
        return Err(format!(
            "expects 4 operands (q, state, k, v), got {}",
            inputs.len()
        ));
    }
    non_negative("offset", &op.offset)?;
    let (q, k) = (inputs[0], inputs[2]);
    layout_of(&op.spec, inputs[1], k, inputs[3])?;
    if q.dtype != k.dtype || q.rank() != 4 {
        return Err(format!(
            "queries must be [heads, group, seq, dim] of the keys' dtype, got {q} for keys {k}"
        ));
    }
    if q.shape[0] != k.shape[1] || q.shape[2] != k.shape[0] || q.shape[3] != k.shape[2] {
        return Err(format!(
            "queries {q} do not match keys {k} ([heads, group, seq, dim] against [seq, heads, dim])"
        ));
    }
    Ok(q.clone())
}
