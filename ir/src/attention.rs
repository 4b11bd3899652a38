//! Attention as kernel-level ops: [`AttentionOp`] (`flash_attention`, exact)
//! and [`PrFlashOp`] (`prflash_attention`, the opt-in probabilistic
//! block-sparse variant). The optimizer introduces them (see the attention
//! rules in `kiln-passes`); models may also write them directly.
//!
//! Both take `q: [B.., Tq, D]`, `k: [Bk.., Tk, D]`, `v: [Bk.., Tk, Dv]` of one
//! float dtype and equal rank; `k` and `v` have the same batch dims, which
//! broadcast against `q`'s (numpy rules: equal or 1 — grouped-query attention
//! is `q: [kv_heads, group, T, D]` against `k: [kv_heads, 1, T, D]`). The
//! result is `[B.., Tq, Dv]` with `B` the broadcast batch dims. For every
//! batch index and query row `i`:
//!
//! ```text
//! s_j   = scale · q_i·k_j  (+ bias[.., i, j])  (- slope_h · H(i + offset - j))
//! out_i = Σ_j softmax(s)_j · v_j     over the visible keys j
//! ```
//!
//! With `causal`, key `j` is visible to query `i` iff `j <= i + offset` (a KV
//! cache holding `offset` = `past` earlier tokens). A row with no visible key
//! (or only `-inf` scores) is `NaN`, as the written-out softmax gives.
//! `H(n) = 1 + 1/2 + … + 1/n` is the harmonic number (DESIGN.md §4, RoPE ×
//! ALiBi), `h` the row-major index over the result's batch dims (the head).

use crate::dim::Dim;
use crate::op::F64Bits;
use crate::types::{Shape, TensorType};
use serde::{Deserialize, Serialize};

/// `flash_attention`: exact attention with online softmax (see the module docs).
///
/// Operands: `q`, `k`, `v`, then — when `bias` — an additive score bias of
/// the dtype of `q` that broadcasts to `[B.., Tq, Tk]` (a mask is a bias of
/// `0` and `-inf`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttentionOp {
    /// Multiplies `q·k` before the bias is added.
    pub scale: F64Bits,
    /// Causal masking (`j <= i + offset`).
    pub causal: bool,
    /// The causal offset; `0` when not causal.
    pub offset: Dim,
    /// Whether a fourth operand, an additive score bias, is present.
    pub bias: bool,
    /// Harmonic position-bias slopes `m_h`, one per head (empty: none). Only
    /// with `causal`.
    pub slopes: Vec<F64Bits>,
    /// `Some(L)`: `k` and `v` are token-major `[T, Bk.., D]` and keys
    /// `0..L` are attended (`L <= T`); `None`: head-major (module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_len: Option<Dim>,
}

/// `prflash_attention`: probabilistic block-sparse causal attention
/// (DESIGN.md §4). Lossy; never introduced by an exact rule.
///
/// Query row `i` sits at absolute position `p = i + offset`, in query block
/// `p / block`; key `j` is in key block `j / block`. Key `j` is visible iff
/// `j <= p` and its block is kept for the query block: the diagonal block
/// always, block distance `d > 0` with probability `min(1, c / (d + 1))`,
/// decided by [`prflash_keep`] (seeded, reproducible; per head or shared).
/// Within the kept keys it is exact softmax attention.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PrFlashOp {
    pub scale: F64Bits,
    pub offset: Dim,
    /// Block size `Bs` (queries and keys).
    pub block: usize,
    /// The harmonic keep constant `c` (`c >= 1`; larger keeps more).
    pub c: F64Bits,
    pub seed: u64,
    /// Sample each head's blocks independently (else one pattern for all heads).
    pub per_head: bool,
}

/// splitmix64's finalizer: a bijective mix of 64 bits (wrapping arithmetic,
/// so kernels reproduce it with plain integer ops).
pub fn mix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` for block `(qb, kb)` of head `head` under
/// `seed` — a pure function, so the interpreter and every kernel agree.
pub fn prflash_uniform(seed: u64, head: u64, qb: u64, kb: u64) -> f64 {
    let h = mix64(mix64(mix64(mix64(seed) ^ head) ^ qb) ^ kb);
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The keep probability of a block at distance `d`: `min(1, c / (d + 1))`.
pub fn prflash_probability(c: f64, d: u64) -> f64 {
    (c / (d as f64 + 1.0)).min(1.0)
}

/// Whether key block `kb` is kept for query block `qb` (`kb > qb`: never).
/// The comparison is done in `f32`, as the kernels do.
pub fn prflash_keep(op: &PrFlashOp, head: u64, qb: u64, kb: u64) -> bool {
    if kb > qb {
        return false;
    }
    if kb == qb {
        return true;
    }
    let h = if op.per_head { head } else { 0 };
    let u = prflash_uniform(op.seed, h, qb, kb) as f32;
    u < prflash_probability(op.c.0, qb - kb) as f32
}

/// The harmonic number `H(n) = 1 + 1/2 + … + 1/n` (`H(0) = 0`), summed
/// exactly up to 64 and by its asymptotic series beyond (error below 1e-15),
/// which is how the kernels compute it too.
pub fn harmonic(n: u64) -> f64 {
    if n <= 64 {
        return (1..=n).map(|k| 1.0 / k as f64).sum();
    }
    let x = n as f64;
    let x2 = x * x;
    const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
    x.ln() + EULER_GAMMA + 0.5 / x - 1.0 / (12.0 * x2) + 1.0 / (120.0 * x2 * x2)
}

/// The head-major types `[Bk.., L, D]` of token-major `k: [T, Bk.., D]`
/// and `v` read to length `len` (see the module docs), checking `L <= T`
/// where both are known.
pub fn head_major_kv(
    k: &TensorType,
    v: &TensorType,
    len: &Dim,
) -> Result<(TensorType, TensorType), String> {
    let r = k.rank();
    if r < 2 || v.rank() != r {
        return Err(format!(
            "token-major k and v must have one rank >= 2, got {k} and {v}"
        ));
    }
    if k.shape[0] != v.shape[0] {
        return Err(format!(
            "token-major k and v disagree on the token axis: {k} and {v}"
        ));
    }
    if let Some(l) = len.as_const() {
        if l < 0 {
            return Err(format!("negative kv_len {len}"));
        }
        if let Some(t) = k.shape[0].as_const() {
            if l > t {
                return Err(format!("kv_len {len} exceeds the {t} rows of k {k}"));
            }
        }
    }
    let view = |t: &TensorType| {
        let mut shape: Shape = t.shape[1..r - 1].to_vec();
        shape.push(len.clone());
        shape.push(t.shape[r - 1].clone());
        t.with_shape(shape)
    };
    Ok((view(k), view(v)))
}

/// The type rule shared by both ops: operand checks and the result type.
/// `bias` says whether a fourth operand is expected; `heads` is the number of
/// slopes (checked against the batch size when it is constant).
pub(crate) fn infer_attention(
    inputs: &[&TensorType],
    bias: bool,
    heads: usize,
) -> Result<TensorType, String> {
    let want = 3 + bias as usize;
    if inputs.len() != want {
        return Err(format!(
            "expects {want} operands (q, k, v{}), got {}",
            if bias { ", bias" } else { "" },
            inputs.len()
        ));
    }
    let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
    if !q.dtype.is_float() {
        return Err(format!("q must be a float tensor, got {q}"));
    }
    if k.dtype != q.dtype || v.dtype != q.dtype {
        return Err(format!("q, k, v dtypes differ: {q}, {k}, {v}"));
    }
    let r = q.rank();
    if r < 2 || k.rank() != r || v.rank() != r {
        return Err(format!(
            "q, k, v must have one rank >= 2, got {q}, {k}, {v}"
        ));
    }
    let (tq, d) = (&q.shape[r - 2], &q.shape[r - 1]);
    let (tk, dk) = (&k.shape[r - 2], &k.shape[r - 1]);
    if d != dk {
        return Err(format!("q and k head sizes differ: {q} and {k}"));
    }
    if k.shape[..r - 1] != v.shape[..r - 1] {
        return Err(format!(
            "k and v disagree on batch dims or length: {k} and {v}"
        ));
    }
    let Some(mut shape) =
        crate::infer::broadcast_shapes(&[&q.shape[..r - 2].to_vec(), &k.shape[..r - 2].to_vec()])
    else {
        return Err(format!(
            "batch dims of q and k do not broadcast: {q} and {k}"
        ));
    };
    if heads > 0 {
        let n: Option<i64> = shape.iter().map(|d| d.as_const()).product();
        if let Some(n) = n {
            if n != heads as i64 {
                return Err(format!(
                    "{heads} slopes for {n} heads (the batch dims {})",
                    fmt_shape(&shape)
                ));
            }
        }
    }
    if bias {
        let b = inputs[3];
        if b.dtype != q.dtype {
            return Err(format!("bias dtype differs from q: {b}"));
        }
        let mut scores = shape.clone();
        scores.extend([tq.clone(), tk.clone()]);
        match crate::infer::broadcast_shapes(&[&b.shape, &scores]) {
            Some(s) if s == scores => {}
            _ => {
                return Err(format!(
                    "bias {b} does not broadcast to the scores {}",
                    fmt_shape(&scores)
                ))
            }
        }
    }
    shape.extend([tq.clone(), v.shape[r - 1].clone()]);
    Ok(q.with_shape(shape))
}

fn fmt_shape(s: &Shape) -> String {
    let v: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", v.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmonic_series_is_continuous_at_the_switch() {
        let exact: f64 = (1..=65).map(|k| 1.0 / k as f64).sum();
        assert!((harmonic(65) - exact).abs() < 1e-13);
        assert_eq!(harmonic(0), 0.0);
        assert_eq!(harmonic(1), 1.0);
        let exact: f64 = (1..=5000).map(|k| 1.0 / k as f64).sum();
        assert!((harmonic(5000) - exact).abs() < 1e-12);
    }

    #[test]
    fn uniforms_are_in_range_and_spread() {
        let n = 20000;
        let mean: f64 = (0..n)
            .map(|i| {
                let u = prflash_uniform(7, 0, i, i / 3);
                assert!((0.0..1.0).contains(&u));
                u
            })
            .sum::<f64>()
            / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
    }
}
