//! `matmul`: `[.., m, k] x [.., k, n] -> [.., m, n]`, batch dims broadcast
//! with numpy rules; `matmul_t` takes its right operand as `[.., n, k]`.
//!
//! Floats accumulate **in f64 per output element**, summing `p = 0..k` in
//! order, and each result is rounded once to the declared dtype (Declared
//! precision) — so the oracle's own error is one rounding, far below what
//! any f32 kernel achieves. Integers accumulate with wrapping arithmetic and
//! wrap to their width.
//!
//! Loops run `i, p, j` (a row of the result is updated with a row of the right
//! operand), which reads both operands and writes the result contiguously.

use super::error::InterpError;
use super::index::{broadcast_shape, broadcast_strides, for_each_offset, prod};
use super::value::{float_tensor, floats, int_tensor, ints, kind, Kind, Out};
use super::Precision;
use crate::tensor::Tensor;

/// The offsets (in whole matrices) of each batch of an operand, in the
/// row-major order of the broadcast batch shape.
fn batch_offsets(batch: &[usize], of: &[usize]) -> Result<Vec<usize>, InterpError> {
    let s = broadcast_strides(of, batch)
        .ok_or_else(|| InterpError::operands(format!("batch dims {of:?} do not broadcast")))?;
    let mut out = Vec::with_capacity(prod(batch));
    for_each_offset(batch, &s, |o| out.push(o));
    Ok(out)
}

/// One `m x k` by `k x n` product accumulated into `acc` (`m x n`, zeroed).
fn gemm<T: Copy>(
    a: &[T],
    b: &[T],
    acc: &mut [T],
    (m, k, n): (usize, usize, usize),
    mul_add: impl Fn(T, T, T) -> T,
) {
    for i in 0..m {
        let row = &mut acc[i * n..(i + 1) * n];
        for p in 0..k {
            let aip = a[i * k + p];
            let brow = &b[p * n..(p + 1) * n];
            for (c, &bpj) in row.iter_mut().zip(brow) {
                *c = mul_add(aip, bpj, *c);
            }
        }
    }
}

/// `x @ yᵀ` (`matmul_t`): `y`'s last two axes swapped, then [`matmul`] —
/// the same accumulation order, so both ops agree bit for bit.
pub(crate) fn matmul_t(
    x: &Tensor,
    y: &Tensor,
    out: &Out,
    p: Precision,
) -> Result<Tensor, InterpError> {
    let r = y.rank();
    if r < 2 {
        return Err(InterpError::operands("operands must have rank >= 2"));
    }
    let mut perm: Vec<usize> = (0..r).collect();
    perm.swap(r - 2, r - 1);
    matmul(x, &super::shape_ops::permute(y, &perm)?, out, p)
}

/// `x @ y` with result type `out`.
pub(crate) fn matmul(
    x: &Tensor,
    y: &Tensor,
    out: &Out,
    p: Precision,
) -> Result<Tensor, InterpError> {
    let (ra, rb) = (x.rank(), y.rank());
    if ra < 2 || rb < 2 {
        return Err(InterpError::operands("operands must have rank >= 2"));
    }
    let (m, k) = (x.shape[ra - 2], x.shape[ra - 1]);
    let (k2, n) = (y.shape[rb - 2], y.shape[rb - 1]);
    if k != k2 {
        return Err(InterpError::operands(format!(
            "contraction sizes differ: {k} and {k2}"
        )));
    }
    let (ba, bb) = (&x.shape[..ra - 2], &y.shape[..rb - 2]);
    let batch = broadcast_shape(ba, bb).ok_or_else(|| {
        InterpError::operands(format!("batch dims {ba:?} and {bb:?} do not broadcast"))
    })?;
    let (oa, ob) = (batch_offsets(&batch, ba)?, batch_offsets(&batch, bb)?);
    let mut shape = batch.clone();
    shape.extend([m, n]);
    let (sa, sb, sc) = (m * k, k * n, m * n);
    match (kind(&x.data), kind(&y.data)) {
        (Kind::Float, Kind::Float) => {
            let (a, b) = (floats(x), floats(y));
            let mut c = vec![0.0f64; oa.len() * sc];
            for (bi, (&ia, &ib)) in oa.iter().zip(&ob).enumerate() {
                gemm(
                    &a[ia * sa..(ia + 1) * sa],
                    &b[ib * sb..(ib + 1) * sb],
                    &mut c[bi * sc..(bi + 1) * sc],
                    (m, k, n),
                    |x, y, acc| acc + x * y,
                );
            }
            Ok(float_tensor(out.dtype, shape, c, p))
        }
        (Kind::Int, Kind::Int) => {
            let (a, b) = (ints(x), ints(y));
            let mut c = vec![0i64; oa.len() * sc];
            for (bi, (&ia, &ib)) in oa.iter().zip(&ob).enumerate() {
                gemm(
                    &a[ia * sa..(ia + 1) * sa],
                    &b[ib * sb..(ib + 1) * sb],
                    &mut c[bi * sc..(bi + 1) * sc],
                    (m, k, n),
                    |x, y, acc| acc.wrapping_add(x.wrapping_mul(y)),
                );
            }
            Ok(int_tensor(out.dtype, shape, c))
        }
        _ => Err(InterpError::operands(
            "matmul needs two float or two integer operands",
        )),
    }
}
