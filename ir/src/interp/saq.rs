//! `saq_append` and `saq_attention` (see [`crate::saq::ops`]) on concrete
//! operands, through the SAQ core ([`crate::saq::append`],
//! [`crate::saq::attention`]). The operands were checked by the type rule,
//! so the layout builds; a state too small for `past + seq` tokens is an
//! error naming the sizes.

use super::error::InterpError;
use super::value::{float_tensor, floats, Out};
use super::Precision;
use crate::saq::{AttentionShape, SaqAppendOp, SaqAttentionOp, SaqLayout};
use crate::tensor::{Tensor, TensorData};

fn layout(spec: &crate::saq::SaqSpec, kv: &Tensor) -> Result<SaqLayout, InterpError> {
    SaqLayout::new(spec, kv.shape[1], kv.shape[2]).map_err(|e| InterpError::operands(e.to_string()))
}

fn state_bytes(t: &Tensor) -> Result<&[u8], InterpError> {
    match &t.data {
        TensorData::U8(b) => Ok(b),
        _ => Err(InterpError::operands("the SAQ state must be u8")),
    }
}

pub(crate) fn append(
    op: &SaqAppendOp,
    past: usize,
    args: &[&Tensor],
) -> Result<Tensor, InterpError> {
    let (state, k, v) = (args[0], args[1], args[2]);
    let l = layout(&op.spec, k)?;
    let mut bytes = state_bytes(state)?.to_vec();
    crate::saq::append(&l, &mut bytes, past, k.shape[0], &floats(k), &floats(v))
        .map_err(|e| InterpError::operands(e.to_string()))?;
    Ok(Tensor {
        shape: state.shape.clone(),
        data: TensorData::U8(bytes),
    })
}

pub(crate) fn attention(
    op: &SaqAttentionOp,
    past: usize,
    args: &[&Tensor],
    out: &Out,
    p: Precision,
) -> Result<Tensor, InterpError> {
    let (q, state, k, v) = (args[0], args[1], args[2], args[3]);
    let l = layout(&op.spec, k)?;
    let shape = AttentionShape {
        heads: q.shape[0],
        group: q.shape[1],
        seq: q.shape[2],
        dim: q.shape[3],
    };
    let res = crate::saq::attention(
        &l,
        state_bytes(state)?,
        past,
        shape,
        &floats(q),
        &floats(k),
        &floats(v),
        op.scale.0,
    )
    .map_err(|e| InterpError::operands(e.to_string()))?;
    Ok(float_tensor(out.dtype, out.shape.clone(), res, p))
}
