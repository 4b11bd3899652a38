//! Data movement and index ops: `reshape`, `permute`, `broadcast`, `slice`,
//! `concat`, `pad`, `gather`, and the leaves `const` and `iota`.
//!
//! Data movement copies elements bit for bit (NaN payloads and -0 survive);
//! only `pad`'s fill value, `const` and `iota` create new values, converted
//! like `cast` to the result dtype.
//!
//! - `reshape`: row-major, same element count.
//! - `permute(perm)`: result axis `i` is operand axis `perm[i]`.
//! - `broadcast(shape)`: numpy rules, operand right-aligned.
//! - `slice(axis, start, end)`: `start ≤ end ≤ size` after evaluating the dims.
//! - `concat(axis)`: operands joined in order.
//! - `pad(axis, low, high, value)`: `low` fill elements before, `high` after.
//! - `gather(axis)`: `out[a.., i.., b..] = table[a.., idx[i..], b..]`; an index
//!   that is negative or `≥ size` is [`InterpError::IndexOutOfRange`].
//! - `iota(axis)`: element `[.., i, ..] = i` along `axis`.

use super::error::InterpError;
use super::index::{gather_strided, prod, strides};
use super::value::{
    dispatch, float_tensor, int_tensor, ints, scalar_like, view_as, with_slice, Elem, Out,
};
use super::Precision;
use crate::literal::{Literal, LiteralData};
use crate::tensor::{Tensor, TensorData};

/// `reshape` to `out.shape` (the element count was checked by the type rule).
pub(crate) fn reshape(x: &Tensor, out: &Out) -> Result<Tensor, InterpError> {
    if prod(&out.shape) != x.numel() {
        return Err(InterpError::operands(format!(
            "cannot reshape {:?} to {:?}",
            x.shape, out.shape
        )));
    }
    Ok(Tensor {
        shape: out.shape.clone(),
        data: x.data.clone(),
    })
}

/// `permute(perm)`.
pub(crate) fn permute(x: &Tensor, perm: &[usize]) -> Result<Tensor, InterpError> {
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if sorted != (0..x.rank()).collect::<Vec<_>>() {
        return Err(InterpError::operands(format!(
            "{perm:?} is not a permutation of {} axes",
            x.rank()
        )));
    }
    let s = strides(&x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let st: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    let data = with_slice!(&x.data, v => Elem::wrap(gather_strided(v, &shape, &st)));
    Ok(Tensor { shape, data })
}

/// `broadcast` to `out.shape`.
pub(crate) fn broadcast(x: &Tensor, out: &Out) -> Result<Tensor, InterpError> {
    let data = with_slice!(&x.data, v => Elem::wrap(
        super::index::broadcast_to(v, &x.shape, &out.shape)?.into_owned()
    ));
    Ok(Tensor {
        shape: out.shape.clone(),
        data,
    })
}

/// Splits `shape` around `axis`: (elements before, axis size, elements after).
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (prod(&shape[..axis]), shape[axis], prod(&shape[axis + 1..]))
}

/// `slice(axis, start..end)` with evaluated bounds.
pub(crate) fn slice(
    x: &Tensor,
    axis: usize,
    start: usize,
    end: usize,
) -> Result<Tensor, InterpError> {
    if axis >= x.rank() || start > end || end > x.shape[axis] {
        return Err(InterpError::operands(format!(
            "range {start}..{end} on axis {axis} of shape {:?}",
            x.shape
        )));
    }
    let (outer, n, inner) = around(&x.shape, axis);
    fn go<T: Copy>(v: &[T], outer: usize, n: usize, inner: usize, s: usize, e: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * (e - s) * inner);
        for o in 0..outer {
            out.extend_from_slice(&v[(o * n + s) * inner..(o * n + e) * inner]);
        }
        out
    }
    let data = with_slice!(&x.data, v => Elem::wrap(go(v, outer, n, inner, start, end)));
    let mut shape = x.shape.clone();
    shape[axis] = end - start;
    Ok(Tensor { shape, data })
}

/// `update_slice`: `base` with `start..start+len` along `axis` replaced by `update`.
pub(crate) fn update_slice(
    base: &Tensor,
    update: &Tensor,
    axis: usize,
    start: usize,
) -> Result<Tensor, InterpError> {
    let fits = axis < base.rank()
        && update.rank() == base.rank()
        && (0..base.rank()).all(|a| a == axis || base.shape[a] == update.shape[a])
        && start + update.shape[axis] <= base.shape[axis];
    if !fits {
        return Err(InterpError::operands(format!(
            "update {:?} at {start} on axis {axis} does not fit base {:?}",
            update.shape, base.shape
        )));
    }
    let (outer, n, inner) = around(&base.shape, axis);
    let len = update.shape[axis];
    fn go<T: Elem>(b: &[T], u: &TensorData, dims: [usize; 5]) -> Result<TensorData, InterpError> {
        let [outer, n, inner, start, len] = dims;
        let mut out = b.to_vec();
        let u = view_as::<T>(u, "update")?;
        for o in 0..outer {
            let dst = (o * n + start) * inner;
            out[dst..dst + len * inner].copy_from_slice(&u[o * len * inner..(o + 1) * len * inner]);
        }
        Ok(T::wrap(out))
    }
    let dims = [outer, n, inner, start, len];
    let data = with_slice!(&base.data, v => go(v, &update.data, dims)?);
    Ok(Tensor {
        shape: base.shape.clone(),
        data,
    })
}

/// The slice at position `i` of `axis`, with the axis removed (a scan step's `x`).
pub(crate) fn index_axis(x: &Tensor, axis: usize, i: usize) -> Result<Tensor, InterpError> {
    let mut t = slice(x, axis, i, i + 1)?;
    t.shape.remove(axis);
    Ok(t)
}

/// `concat(axis)` of `xs` (same storage, equal dims off the axis).
pub(crate) fn concat(xs: &[&Tensor], axis: usize) -> Result<Tensor, InterpError> {
    let first = xs
        .first()
        .ok_or_else(|| InterpError::operands("needs an operand"))?;
    if axis >= first.rank() {
        return Err(InterpError::operands(format!("axis {axis} out of range")));
    }
    let mut total = 0;
    for (i, x) in xs.iter().enumerate() {
        let same = x.rank() == first.rank()
            && (0..x.rank()).all(|a| a == axis || x.shape[a] == first.shape[a]);
        if !same {
            return Err(InterpError::operands(format!(
                "operand {i} has shape {:?}, the first {:?}",
                x.shape, first.shape
            )));
        }
        total += x.shape[axis];
    }
    let (outer, _, inner) = around(&first.shape, axis);
    fn go<T: Elem>(
        xs: &[&Tensor],
        axis: usize,
        outer: usize,
        inner: usize,
    ) -> Result<TensorData, InterpError> {
        let parts: Vec<(&[T], usize)> = xs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                Ok((
                    view_as::<T>(&x.data, &format!("operand {i}"))?,
                    x.shape[axis] * inner,
                ))
            })
            .collect::<Result<_, InterpError>>()?;
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.1).sum::<usize>() * outer);
        for o in 0..outer {
            for (v, block) in &parts {
                out.extend_from_slice(&v[o * block..(o + 1) * block]);
            }
        }
        Ok(T::wrap(out))
    }
    let data = dispatch!(&first.data, go(xs, axis, outer, inner))?;
    let mut shape = first.shape.clone();
    shape[axis] = total;
    Ok(Tensor { shape, data })
}

/// `pad(axis, low, high, value)` with evaluated amounts.
pub(crate) fn pad(
    x: &Tensor,
    axis: usize,
    low: usize,
    high: usize,
    value: f64,
    p: Precision,
) -> Result<Tensor, InterpError> {
    if axis >= x.rank() {
        return Err(InterpError::operands(format!("axis {axis} out of range")));
    }
    let fill = scalar_like(&x.data, value, p);
    let (outer, n, inner) = around(&x.shape, axis);
    fn go<T: Elem>(
        x: &TensorData,
        fill: &TensorData,
        dims: [usize; 5],
    ) -> Result<TensorData, InterpError> {
        let [outer, n, inner, low, high] = dims;
        let v = view_as::<T>(x, "operand")?;
        let f = view_as::<T>(fill, "the fill value")?[0];
        let mut out = Vec::with_capacity(outer * (low + n + high) * inner);
        for o in 0..outer {
            out.extend(std::iter::repeat_n(f, low * inner));
            out.extend_from_slice(&v[o * n * inner..(o + 1) * n * inner]);
            out.extend(std::iter::repeat_n(f, high * inner));
        }
        Ok(T::wrap(out))
    }
    let data = dispatch!(&x.data, go(&x.data, &fill, [outer, n, inner, low, high]))?;
    let mut shape = x.shape.clone();
    shape[axis] = low + n + high;
    Ok(Tensor { shape, data })
}

/// `gather(axis)`: rows of `table` along `axis` picked by the integer `idx`.
pub(crate) fn gather(table: &Tensor, idx: &Tensor, axis: usize) -> Result<Tensor, InterpError> {
    if axis >= table.rank() {
        return Err(InterpError::operands(format!("axis {axis} out of range")));
    }
    if !matches!(idx.data, TensorData::I32(_) | TensorData::I64(_)) {
        return Err(InterpError::operands("indices must be i32 or i64"));
    }
    let (outer, n, inner) = around(&table.shape, axis);
    let index = ints(idx);
    let mut rows = Vec::with_capacity(index.len());
    for &i in index.iter() {
        if i < 0 || i as u64 >= n as u64 {
            return Err(InterpError::IndexOutOfRange {
                place: String::new(),
                index: i,
                size: n,
            });
        }
        rows.push(i as usize);
    }
    fn go<T: Copy>(v: &[T], rows: &[usize], outer: usize, n: usize, inner: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * rows.len() * inner);
        for o in 0..outer {
            for &r in rows {
                out.extend_from_slice(&v[(o * n + r) * inner..(o * n + r + 1) * inner]);
            }
        }
        out
    }
    let data = with_slice!(&table.data, v => Elem::wrap(go(v, &rows, outer, n, inner)));
    let mut shape = table.shape[..axis].to_vec();
    shape.extend_from_slice(&idx.shape);
    shape.extend_from_slice(&table.shape[axis + 1..]);
    Ok(Tensor { shape, data })
}

/// `iota(axis)` of type `out`.
pub(crate) fn iota(out: &Out, axis: usize, p: Precision) -> Result<Tensor, InterpError> {
    if axis >= out.shape.len() {
        return Err(InterpError::operands(format!("axis {axis} out of range")));
    }
    let (_, n, inner) = around(&out.shape, axis);
    let len = prod(&out.shape);
    let pos = (0..len).map(|i| ((i / inner) % n) as i64);
    Ok(if out.dtype.is_float() {
        float_tensor(
            out.dtype,
            out.shape.clone(),
            pos.map(|i| i as f64).collect(),
            p,
        )
    } else {
        int_tensor(out.dtype, out.shape.clone(), pos.collect())
    })
}

/// A `const` literal as a tensor: floats rounded to the dtype (they already
/// are, in a well-formed literal) or kept in f64; integers wrapped.
pub(crate) fn constant(lit: &Literal, p: Precision) -> Result<Tensor, InterpError> {
    if !lit.is_well_formed() {
        return Err(InterpError::operands(
            "literal data does not match its dtype and shape",
        ));
    }
    let shape = lit.shape.clone();
    Ok(match &lit.data {
        LiteralData::Float(v) => float_tensor(lit.dtype, shape, v.clone(), p),
        LiteralData::Int(v) => int_tensor(lit.dtype, shape, v.clone()),
        LiteralData::Bool(v) => Tensor {
            shape,
            data: TensorData::Bool(v.clone()),
        },
    })
}
