//! One op on concrete operands: the op's dims are evaluated under the
//! bindings, the operands are checked with the shared type rule
//! ([`crate::infer::infer`]) so the interpreter and the type checker cannot
//! disagree, then the op family computes, and the result is checked against
//! the inferred type.

use super::error::{dim_err, InterpError};
use super::index::numel;
use super::value::{describe, storage_is, storage_name_for, Out};
use super::{attention, elementwise, matmul, reduce, saq, scan, shape_ops, EvalOptions, Precision};
use crate::dim::{Bindings, Dim};
use crate::infer::infer;
use crate::op::Op;
use crate::tensor::{Tensor, TensorData};
use crate::types::TensorType;
use std::borrow::Cow;

/// Evaluates `op` on `args`. Errors carry an empty place, which the caller
/// fills in (see [`InterpError::within`]).
pub(crate) fn apply(
    op: &Op,
    args: &[&Tensor],
    b: &Bindings,
    opts: &EvalOptions,
) -> Result<Vec<Tensor>, InterpError> {
    if opts.precision == Precision::Declared {
        if let Some(i) = args
            .iter()
            .position(|a| matches!(a.data, TensorData::F64(_)))
        {
            return Err(InterpError::operands(format!(
                "operand {i} has f64 storage, which only F64 precision accepts"
            )));
        }
    }
    match op {
        Op::Input { name, .. } | Op::Param { name, .. } => Err(InterpError::operands(format!(
            "`{name}` is bound by `eval` from the graph's inputs and parameters, not computed"
        ))),
        Op::Scan(s) => scan::scan(s, args, b, opts),
        Op::Fused(f) => scan::fused(f, args, b, opts),
        Op::LinearScan(l) => super::linear_scan::linear_scan(l, args, opts.precision),
        _ => apply_simple(op, args, b, opts.precision).map(|t| vec![t]),
    }
}

/// `d` evaluated under `b`, as a constant dim.
fn eval_dim(d: &Dim, b: &Bindings) -> Result<Dim, InterpError> {
    d.eval(b).map(Dim::constant).map_err(dim_err)
}

fn eval_shape(s: &[Dim], b: &Bindings) -> Result<Vec<Dim>, InterpError> {
    s.iter().map(|d| eval_dim(d, b)).collect()
}

/// The op with every symbolic attribute evaluated (borrowed when it has none).
fn concretize<'o>(op: &'o Op, b: &Bindings) -> Result<Cow<'o, Op>, InterpError> {
    Ok(match op {
        Op::Iota { ty, axis } => Cow::Owned(Op::Iota {
            ty: ty.with_shape(eval_shape(&ty.shape, b)?),
            axis: *axis,
        }),
        Op::Reshape { shape } => Cow::Owned(Op::Reshape {
            shape: eval_shape(shape, b)?,
        }),
        Op::Broadcast { shape } => Cow::Owned(Op::Broadcast {
            shape: eval_shape(shape, b)?,
        }),
        Op::UpdateSlice { axis, start } => Cow::Owned(Op::UpdateSlice {
            axis: *axis,
            start: eval_dim(start, b)?,
        }),
        Op::Slice { axis, start, end } => Cow::Owned(Op::Slice {
            axis: *axis,
            start: eval_dim(start, b)?,
            end: eval_dim(end, b)?,
        }),
        Op::Pad {
            axis,
            low,
            high,
            value,
        } => Cow::Owned(Op::Pad {
            axis: *axis,
            low: eval_dim(low, b)?,
            high: eval_dim(high, b)?,
            value: *value,
        }),
        Op::Attention(a) => Cow::Owned(Op::Attention(crate::attention::AttentionOp {
            offset: eval_dim(&a.offset, b)?,
            kv_len: a.kv_len.as_ref().map(|l| eval_dim(l, b)).transpose()?,
            ..a.clone()
        })),
        Op::PrFlash(a) => Cow::Owned(Op::PrFlash(crate::attention::PrFlashOp {
            offset: eval_dim(&a.offset, b)?,
            ..a.clone()
        })),
        Op::SaqAppend(a) => Cow::Owned(Op::SaqAppend(crate::saq::SaqAppendOp {
            start: eval_dim(&a.start, b)?,
            ..a.clone()
        })),
        Op::SaqAttention(a) => Cow::Owned(Op::SaqAttention(crate::saq::SaqAttentionOp {
            offset: eval_dim(&a.offset, b)?,
            ..a.clone()
        })),
        op => Cow::Borrowed(op),
    })
}

/// A constant dim as a size.
fn size(d: &Dim) -> Result<usize, InterpError> {
    match d.as_const() {
        Some(v) if v >= 0 => Ok(v as usize),
        _ => Err(InterpError::operands(format!(
            "dimension `{d}` is not a size"
        ))),
    }
}

/// The concrete type of a tensor (f64 storage reads as f32: a float).
fn type_of(t: &Tensor) -> TensorType {
    TensorType::new(t.dtype(), t.shape.iter().map(|&d| Dim::from(d)).collect())
}

fn apply_simple(
    op: &Op,
    args: &[&Tensor],
    b: &Bindings,
    p: Precision,
) -> Result<Tensor, InterpError> {
    let op = concretize(op, b)?;
    let tys: Vec<TensorType> = args.iter().map(|t| type_of(t)).collect();
    let refs: Vec<&TensorType> = tys.iter().collect();
    let out_ty = infer(&op, &refs)
        .map_err(|e| InterpError::operands(e.message))?
        .into_iter()
        .next()
        .ok_or_else(|| InterpError::operands("the op has no result"))?;
    let out = Out {
        dtype: out_ty.dtype,
        shape: out_ty.shape.iter().map(size).collect::<Result<_, _>>()?,
    };
    // Refuse impossible sizes before allocating.
    numel(&out.shape)?;
    let a = |i: usize| args[i];
    let r = match &*op {
        Op::Const(lit) => shape_ops::constant(lit, p)?,
        Op::Iota { axis, .. } => shape_ops::iota(&out, *axis, p)?,
        Op::Unary(u) => elementwise::unary(*u, a(0), &out, p)?,
        Op::Binary(op) => elementwise::binary(*op, a(0), a(1), &out, p)?,
        Op::Compare(c) => elementwise::compare(*c, a(0), a(1), &out.shape)?,
        Op::Select => elementwise::select(a(0), a(1), a(2), &out.shape)?,
        Op::Cast(to) => elementwise::cast(a(0), *to, p)?,
        Op::Reduce { op, axes, .. } => reduce::reduce(*op, axes, a(0), &out, p)?,
        Op::Reshape { .. } => shape_ops::reshape(a(0), &out)?,
        Op::Permute { perm } => shape_ops::permute(a(0), perm)?,
        Op::Broadcast { .. } => shape_ops::broadcast(a(0), &out)?,
        Op::Slice { axis, start, end } => shape_ops::slice(a(0), *axis, size(start)?, size(end)?)?,
        Op::Concat { axis } => shape_ops::concat(args, *axis)?,
        Op::UpdateSlice { axis, start } => {
            shape_ops::update_slice(a(0), a(1), *axis, size(start)?)?
        }
        Op::Pad {
            axis,
            low,
            high,
            value,
        } => shape_ops::pad(a(0), *axis, size(low)?, size(high)?, value.0, p)?,
        Op::Gather { axis } => shape_ops::gather(a(0), a(1), *axis)?,
        Op::MatMul => matmul::matmul(a(0), a(1), &out, p)?,
        Op::MatMulT => matmul::matmul_t(a(0), a(1), &out, p)?,
        Op::Attention(at) => attention::flash_attention(at, size(&at.offset)?, args, &out, p)?,
        Op::PrFlash(at) => attention::prflash_attention(at, size(&at.offset)?, args, &out, p)?,
        Op::SaqAppend(s) => saq::append(s, size(&s.start)?, args)?,
        Op::SaqAttention(s) => saq::attention(s, size(&s.offset)?, args, &out, p)?,
        Op::Input { .. } | Op::Param { .. } | Op::Scan(_) | Op::Fused(_) | Op::LinearScan(_) => {
            return Err(InterpError::operands("not a simple op"))
        }
    };
    // The family's result must have the type the type rule promised.
    if !storage_is(&r.data, out.dtype, p)
        || r.shape != out.shape
        || r.data.len() != r.shape.iter().product::<usize>()
    {
        return Err(InterpError::ResultMismatch {
            place: String::new(),
            expected: format!("{}{:?}", storage_name_for(out.dtype, p), out.shape),
            got: describe(&r),
        });
    }
    Ok(r)
}
