//! `flash_attention` and `prflash_attention` (see [`crate::attention`]):
//! the written-out definition — scores, mask, max-subtracted softmax, weighted
//! sum — in f64 per query row, each result rounded once to the declared dtype.

use super::error::InterpError;
use super::index::{broadcast_strides, for_each_offset, prod};
use super::shape_ops;
use super::value::{float_tensor, floats, kind, Kind, Out};
use super::Precision;
use crate::attention::{harmonic, prflash_keep, AttentionOp, PrFlashOp};
use crate::tensor::Tensor;

/// Which keys a query row sees, and any extra score term.
enum Visibility<'a> {
    Exact(&'a AttentionOp, usize),
    Sparse(&'a PrFlashOp, usize),
}

impl Visibility<'_> {
    /// The score bias of key `j` for query row `i` of head `h`, `None` when
    /// the key is not visible.
    fn extra(&self, h: usize, i: usize, j: usize) -> Option<f64> {
        match *self {
            Visibility::Exact(a, offset) => {
                if !a.causal {
                    return Some(0.0);
                }
                let p = i + offset;
                if j > p {
                    return None;
                }
                Some(match a.slopes.get(h) {
                    Some(m) => -m.0 * harmonic((p - j) as u64),
                    None => 0.0,
                })
            }
            Visibility::Sparse(a, offset) => {
                let p = i + offset;
                let keep =
                    j <= p && prflash_keep(a, h as u64, (p / a.block) as u64, (j / a.block) as u64);
                keep.then_some(0.0)
            }
        }
    }
}

/// Offsets (in elements) of each batch index of an operand with batch dims
/// `of`, broadcast to `batch`, scaled by `per` elements per batch entry.
fn batch_offsets(of: &[usize], batch: &[usize], per: usize) -> Result<Vec<usize>, InterpError> {
    let s = broadcast_strides(of, batch)
        .ok_or_else(|| InterpError::operands(format!("batch dims {of:?} do not broadcast")))?;
    let mut out = Vec::with_capacity(prod(batch));
    for_each_offset(batch, &s, |o| out.push(o * per));
    Ok(out)
}

pub(crate) fn flash_attention(
    op: &AttentionOp,
    offset: usize,
    args: &[&Tensor],
    out: &Out,
    p: Precision,
) -> Result<Tensor, InterpError> {
    let Some(len) = &op.kv_len else {
        return attention(Visibility::Exact(op, offset), op.scale.0, args, out, p);
    };
    // Token-major k, v: the head-major operands they stand for, written out.
    let len = match len.as_const() {
        Some(l) if l >= 0 => l as usize,
        _ => {
            return Err(InterpError::operands(format!(
                "kv_len `{len}` is not a size"
            )))
        }
    };
    let head_major = |t: &Tensor| -> Result<Tensor, InterpError> {
        let r = t.rank();
        let mut perm: Vec<usize> = (1..r - 1).collect();
        perm.extend([0, r - 1]);
        shape_ops::permute(&shape_ops::slice(t, 0, 0, len)?, &perm)
    };
    let (k, v) = (head_major(args[1])?, head_major(args[2])?);
    let mut all: Vec<&Tensor> = args.to_vec();
    all[1] = &k;
    all[2] = &v;
    attention(Visibility::Exact(op, offset), op.scale.0, &all, out, p)
}

pub(crate) fn prflash_attention(
    op: &PrFlashOp,
    offset: usize,
    args: &[&Tensor],
    out: &Out,
    p: Precision,
) -> Result<Tensor, InterpError> {
    attention(Visibility::Sparse(op, offset), op.scale.0, args, out, p)
}

fn attention(
    vis: Visibility,
    scale: f64,
    args: &[&Tensor],
    out: &Out,
    p: Precision,
) -> Result<Tensor, InterpError> {
    if args.iter().any(|a| kind(&a.data) != Kind::Float) {
        return Err(InterpError::operands("attention needs float operands"));
    }
    let (q, k, v) = (args[0], args[1], args[2]);
    let r = q.rank();
    let (tq, d) = (q.shape[r - 2], q.shape[r - 1]);
    let (tk, dv) = (k.shape[r - 2], v.shape[r - 1]);
    let batch = &out.shape[..r - 2];
    let qo = batch_offsets(&q.shape[..r - 2], batch, tq * d)?;
    let ko = batch_offsets(&k.shape[..r - 2], batch, tk * d)?;
    let vo = batch_offsets(&v.shape[..r - 2], batch, tk * dv)?;
    // The bias, broadcast to the scores `[batch.., tq, tk]`, read by strides.
    let mut scores_shape = batch.to_vec();
    scores_shape.extend([tq, tk]);
    let bias = match args.get(3) {
        Some(b) => {
            let s = broadcast_strides(&b.shape, &scores_shape).ok_or_else(|| {
                InterpError::operands(format!("bias {:?} does not broadcast", b.shape))
            })?;
            Some((floats(b), s))
        }
        None => None,
    };
    let (qf, kf, vf) = (floats(q), floats(k), floats(v));
    let mut res = vec![0.0f64; prod(batch) * tq * dv];
    let mut scores = vec![0.0f64; tk];
    let mut bias_base = vec![0usize; prod(batch)];
    if let Some((_, s)) = &bias {
        let rb = batch.len();
        let mut i = 0;
        for_each_offset(batch, &s[..rb], |o| {
            bias_base[i] = o;
            i += 1;
        });
    }
    for h in 0..prod(batch) {
        for i in 0..tq {
            let qi = &qf[qo[h] + i * d..qo[h] + (i + 1) * d];
            let mut max = f64::NEG_INFINITY;
            for (j, sc) in scores.iter_mut().enumerate() {
                *sc = match vis.extra(h, i, j) {
                    None => f64::NEG_INFINITY,
                    Some(extra) => {
                        let kj = &kf[ko[h] + j * d..ko[h] + (j + 1) * d];
                        let dot: f64 = qi.iter().zip(kj).map(|(a, b)| a * b).sum();
                        let b = match &bias {
                            Some((bv, s)) => {
                                let rb = batch.len();
                                bv[bias_base[h] + i * s[rb] + j * s[rb + 1]]
                            }
                            None => 0.0,
                        };
                        scale * dot + b + extra
                    }
                };
                max = max.max(*sc);
            }
            // Max-subtracted softmax; a row with no finite score is NaN, as
            // `exp(-inf - -inf)` makes the written-out softmax.
            let mut denom = 0.0;
            for sc in scores.iter_mut() {
                *sc = (*sc - max).exp();
                denom += *sc;
            }
            let row = &mut res[(h * tq + i) * dv..(h * tq + i + 1) * dv];
            for (j, &w) in scores.iter().enumerate() {
                let vj = &vf[vo[h] + j * dv..vo[h] + (j + 1) * dv];
                for (o, &x) in row.iter_mut().zip(vj) {
                    *o += w * x;
                }
            }
            for o in row.iter_mut() {
                *o /= denom;
            }
            if max == f64::NEG_INFINITY || max.is_nan() {
                row.fill(f64::NAN);
            }
        }
    }
    Ok(float_tensor(out.dtype, out.shape.clone(), res, p))
}
