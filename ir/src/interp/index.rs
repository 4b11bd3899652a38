//! Index arithmetic on concrete row-major shapes: strides, strided walks and
//! numpy broadcasting.

use super::error::InterpError;
use std::borrow::Cow;

/// Element count of `shape`, or an error when it could never be allocated.
/// Every partial product of the non-zero dims must fit too, so that index
/// arithmetic on a shape with a zero dim cannot overflow either.
pub(crate) fn numel(shape: &[usize]) -> Result<usize, InterpError> {
    let limit = isize::MAX as usize / 16;
    let too_big = || InterpError::operands(format!("shape {shape:?} has too many elements"));
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)))
        .filter(|&n| n <= limit)
        .ok_or_else(too_big)?;
    Ok(shape.iter().product())
}

/// Row-major strides (in elements) of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Product of a range of dims (`outer`/`inner` block sizes around an axis).
pub(crate) fn prod(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// Calls `f(offset)` for every index of `shape` in row-major order, where
/// `offset = Σ index[i] · strides[i]`. With the strides of another layout
/// this walks a permuted, broadcast (stride 0) or reduced view.
pub(crate) fn for_each_offset(shape: &[usize], strides: &[usize], mut f: impl FnMut(usize)) {
    if shape.contains(&0) {
        return;
    }
    let rank = shape.len();
    if rank == 0 {
        f(0);
        return;
    }
    let (inner, inner_stride) = (shape[rank - 1], strides[rank - 1]);
    let mut idx = vec![0usize; rank - 1];
    let mut base = 0usize;
    loop {
        let mut off = base;
        for _ in 0..inner {
            f(off);
            off += inner_stride;
        }
        // Odometer step over the outer axes.
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            base += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            base -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
}

/// The elements of `data` (layout `strides`) read in row-major order of `shape`.
pub(crate) fn gather_strided<T: Copy>(data: &[T], shape: &[usize], strides: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(prod(shape));
    for_each_offset(shape, strides, |o| out.push(data[o]));
    out
}

/// Numpy broadcast of two concrete shapes (right-aligned; dims equal or 1).
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = (i + a.len()).checked_sub(rank).map_or(1, |j| a[j]);
            let db = (i + b.len()).checked_sub(rank).map_or(1, |j| b[j]);
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// Strides that read a tensor of shape `from` as if broadcast to `to`
/// (0 on broadcast axes), or `None` when `from` does not broadcast to `to`.
pub(crate) fn broadcast_strides(from: &[usize], to: &[usize]) -> Option<Vec<usize>> {
    if from.len() > to.len() {
        return None;
    }
    let off = to.len() - from.len();
    let fs = strides(from);
    (0..to.len())
        .map(|i| {
            if i < off {
                return Some(0);
            }
            match (from[i - off], to[i]) {
                (x, y) if x == y => Some(if x == 1 { 0 } else { fs[i - off] }),
                (1, _) => Some(0),
                _ => None,
            }
        })
        .collect()
}

/// `data` (shape `from`) broadcast to `to`: borrowed when the shapes are
/// equal, materialized otherwise.
pub(crate) fn broadcast_to<'a, T: Copy>(
    data: &'a [T],
    from: &[usize],
    to: &[usize],
) -> Result<Cow<'a, [T]>, InterpError> {
    if from == to {
        return Ok(Cow::Borrowed(data));
    }
    let s = broadcast_strides(from, to).ok_or_else(|| {
        InterpError::operands(format!("shape {from:?} does not broadcast to {to:?}"))
    })?;
    Ok(Cow::Owned(gather_strided(data, to, &s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_walk_permutes_and_broadcasts() {
        // A [2,3] tensor read transposed.
        let data = [0, 1, 2, 3, 4, 5];
        assert_eq!(
            gather_strided(&data, &[3, 2], &[1, 3]),
            vec![0, 3, 1, 4, 2, 5]
        );
        // [3] broadcast to [2,3].
        let s = broadcast_strides(&[3], &[2, 3]).unwrap();
        assert_eq!(
            gather_strided(&[7, 8, 9], &[2, 3], &s),
            vec![7, 8, 9, 7, 8, 9]
        );
        assert_eq!(broadcast_shape(&[4, 1, 3], &[5, 1]), Some(vec![4, 5, 3]));
        assert_eq!(broadcast_shape(&[2], &[3]), None);
        assert!(gather_strided(&[1], &[0, 3], &[0, 0]).is_empty());
        assert_eq!(gather_strided(&[42], &[], &[]), vec![42]);
    }
}
