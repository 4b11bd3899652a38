//! Attention written out in logical ops -> `flash_attention`.
//!
//! The rule works by normalization, not by one pattern per spelling:
//!
//! 1. *Softmax* over the last axis is recognized in any form — max-subtracted
//!    or not, divided by the row sum or multiplied by its reciprocal, with
//!    the row reductions kept, broadcast or reshaped — down to its input, the
//!    scores ([`softmax_rows`]).
//! 2. The *scores* are peeled into a core `q·kᵀ` and what was done to it
//!    ([`decompose`]): scalar factors on `q`, on `k` or on the scores (a
//!    multiplication or a division) become one scale; a `select` with a
//!    `-inf` or large negative fill, or an added `0`/`-inf` pattern, becomes
//!    a causal offset when it is *proven* causal (`attention_mask`), else an
//!    additive bias; a harmonic position term becomes per-head slopes; any
//!    other added term becomes the bias operand.
//! 3. `k` is recovered from `kᵀ` by undoing the transpose through permutes,
//!    reshapes and broadcasts that keep the last two axes ([`transposed`]),
//!    ranks and batch dims are aligned, and the op is built and type-checked
//!    against the class.
//!
//! The rule is approximate: the kernel sums in another order, drops the
//! softmax's max subtraction where the model had none (equal in exact
//! arithmetic, but overflow differs) and treats a large negative finite fill
//! as masked (equal unless the scores are of that magnitude).

use super::attention_mask::{
    additive_causal, causal_cond, expand_slopes, harmonic_bias, is_mask_fill, HarmonicBias,
};
use super::{both_orders, op_nodes, scalar, splat, ty, Exactness, RuleDef, Stage, Term};
use crate::analysis::KEGraph;
use egg::Id;
use kiln_ir::attention::AttentionOp;
use kiln_ir::infer::broadcast_shapes;
use kiln_ir::op::F64Bits;
use kiln_ir::{BinaryOp, Dim, Op, ReduceOp, TensorType, UnaryOp};

/// How many ops deep the scores are peeled (adds, selects, scales).
const DEPTH: usize = 8;

pub(super) fn rules() -> Vec<RuleDef> {
    vec![RuleDef {
        name: "flash-attention",
        stage: Stage::Recognize,
        summary: "matmul(softmax(mask(scale·q·kᵀ) + bias), v) in any spelling (scale on q, k or the scores; softmax with or without max subtraction; causal mask as select or additive -inf/large negative, proven from iota positions; GQA broadcasting) -> flash_attention with scale, causal offset, bias operand, harmonic slopes",
        exactness: Exactness::Approximate,
        matcher: flash_attention,
    }]
}

// ---------------------------------------------------------------------------
// Softmax.

/// True when class `s` holds, for every row of `x`, `reduce(row)` over the
/// last axis: `reduce(x, [last], keep_dims=true)`, the same reduction without
/// kept dims reshaped back to `[.., 1]`, or either broadcast along the last
/// axis (`broadcast` allowed only at the top).
fn is_row_stat(eg: &KEGraph, s: Id, op: ReduceOp, x: Id, allow_broadcast: bool) -> bool {
    let Some(xt) = ty(eg, x) else { return false };
    let r = xt.rank();
    if r == 0 {
        return false;
    }
    let rows = &xt.shape[..r - 1];
    let x = eg.find(x);
    let reduces = |c: Id, keep: bool| {
        op_nodes(eg, c).any(|(o, kids)| {
            *o == Op::Reduce {
                op,
                axes: vec![r - 1],
                keep_dims: keep,
            } && eg.find(kids[0]) == x
        })
    };
    let kept = |shape: &[Dim]| shape.len() == r && shape[..r - 1] == *rows;
    op_nodes(eg, s).any(|(o, kids)| match o {
        Op::Reduce { .. } => reduces(s, true),
        Op::Reshape { shape } => {
            kept(shape) && shape[r - 1] == Dim::constant(1) && reduces(kids[0], false)
        }
        Op::Broadcast { shape } => {
            allow_broadcast && kept(shape) && is_row_stat(eg, kids[0], op, x, false)
        }
        _ => false,
    })
}

/// The exp argument of `e` when `e = exp(y)`: `x` when `y = x - rowmax(x)`,
/// then `y` itself (softmax is shift-invariant, so both are correct).
fn exp_args(eg: &KEGraph, e: Id, out: &mut Vec<Id>) {
    for (op, kids) in op_nodes(eg, e) {
        if *op != Op::Unary(UnaryOp::Exp) {
            continue;
        }
        let y = kids[0];
        for (op2, k2) in op_nodes(eg, y) {
            if *op2 == Op::Binary(BinaryOp::Sub)
                && is_row_stat(eg, k2[1], ReduceOp::Max, k2[0], true)
            {
                out.push(k2[0]);
            }
        }
        out.push(y);
    }
}

/// The inputs `x` such that class `p` is `softmax(x)` over the last axis.
fn softmax_rows(eg: &KEGraph, p: Id) -> Vec<Id> {
    let mut out = Vec::new();
    for (op, kids) in op_nodes(eg, p) {
        match op {
            Op::Binary(BinaryOp::Div) => {
                let (e, s) = (kids[0], kids[1]);
                if is_row_stat(eg, s, ReduceOp::Sum, e, true) {
                    exp_args(eg, e, &mut out);
                }
            }
            Op::Binary(BinaryOp::Mul) => {
                for (e, r) in both_orders(kids) {
                    for (rop, rk) in op_nodes(eg, r) {
                        if *rop == Op::Unary(UnaryOp::Recip)
                            && is_row_stat(eg, rk[0], ReduceOp::Sum, e, true)
                        {
                            exp_args(eg, e, &mut out);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Scores.

/// The scores `scale · q·kᵀ (+ bias) (causal) (harmonic)` taken apart.
#[derive(Clone, Debug)]
struct Scores {
    q: Id,
    kt: Id,
    scale: f64,
    causal: Option<Dim>,
    harmonic: Option<(HarmonicBias, Term)>,
    biases: Vec<Term>,
    /// The largest finite fill of an absorbed causal mask (`-inf`: none),
    /// in the units of the scores at this point.
    fill: f64,
}

impl Scores {
    fn is_core(&self) -> bool {
        self.causal.is_none() && self.harmonic.is_none() && self.biases.is_empty()
    }

    /// Adds a causal mask of `offset` and `fill`; one that disagrees with a
    /// mask already found becomes a bias (`fallback`), or fails without one.
    fn mask(mut self, offset: Dim, fill: f64, fallback: Option<Term>) -> Option<Scores> {
        match &self.causal {
            None => self.causal = Some(offset),
            Some(o) if *o == offset => {}
            Some(_) => {
                self.biases.push(fallback?);
                return Some(self);
            }
        }
        self.fill = self.fill.max(fill);
        Some(self)
    }

    /// The scores times `v`: the scale, the biases and the slopes scale; a
    /// causal mask stays one when `v > 0` keeps its fill masking.
    fn times(mut self, v: f64, dtype: kiln_ir::DType) -> Option<Scores> {
        if !self.is_core() {
            let fill = self.fill * v;
            if !(v > 0.0 && (fill == f64::NEG_INFINITY || is_mask_fill(fill))) {
                return None;
            }
            self.fill = fill;
            let by = |t: Term| Term::op(Op::Binary(BinaryOp::Mul), vec![t, scalar(dtype, v)]);
            self.biases = self.biases.into_iter().map(by).collect();
            self.harmonic = self.harmonic.map(|(mut h, t)| {
                h.slopes.iter_mut().for_each(|m| *m *= v);
                (h, by(t))
            });
        }
        self.scale *= v;
        Some(self)
    }
}

/// A float splat usable as a scale factor.
fn factor(eg: &KEGraph, c: Id) -> Option<f64> {
    let v = splat(eg, c)?;
    (ty(eg, c)?.dtype.is_float() && v.is_finite()).then_some(v)
}

/// The fill of a masking `select` operand: `-inf` or large negative.
fn mask_fill(eg: &KEGraph, c: Id) -> Option<f64> {
    splat(eg, c).filter(|&v| is_mask_fill(v))
}

/// The last two dims of a class.
fn tail(eg: &KEGraph, id: Id) -> Option<(Dim, Dim)> {
    let s = &ty(eg, id)?.shape;
    let r = s.len();
    (r >= 2).then(|| (s[r - 2].clone(), s[r - 1].clone()))
}

/// Takes the scores class `x` (of last dims `tq, tk`) apart; the first
/// decomposition found.
fn decompose(eg: &KEGraph, x: Id, tq: &Dim, tk: &Dim, depth: usize) -> Option<Scores> {
    if tail(eg, x)? != (tq.clone(), tk.clone()) || depth == 0 {
        return None;
    }
    let inner = |c: Id| decompose(eg, c, tq, tk, depth - 1);
    op_nodes(eg, x).find_map(|(op, kids)| match op {
        Op::MatMul => Some(Scores {
            q: kids[0],
            kt: kids[1],
            scale: 1.0,
            causal: None,
            harmonic: None,
            biases: Vec::new(),
            fill: f64::NEG_INFINITY,
        }),
        Op::Binary(BinaryOp::Mul) => both_orders(kids).into_iter().find_map(|(a, c)| {
            let v = factor(eg, c)?;
            inner(a)?.times(v, ty(eg, a)?.dtype)
        }),
        Op::Binary(BinaryOp::Div) => {
            let v = factor(eg, kids[1]).filter(|&v| v != 0.0)?;
            inner(kids[0])?.times(1.0 / v, ty(eg, kids[0])?.dtype)
        }
        Op::Select => {
            let (c, a, b) = (kids[0], kids[1], kids[2]);
            let (kept, fill, keep_when) = match (mask_fill(eg, b), mask_fill(eg, a)) {
                (Some(f), _) => (a, f, true),
                (None, Some(f)) => (b, f, false),
                _ => return None,
            };
            let s = inner(kept)?;
            let dt = ty(eg, kept)?.dtype;
            // The mask as a bias: exact only with -inf (a finite fill is
            // replaced by select, but added by a bias).
            let as_bias = (fill == f64::NEG_INFINITY).then(|| {
                let (t, f) = (scalar(dt, 0.0), scalar(dt, fill));
                let (x, y) = if keep_when { (t, f) } else { (f, t) };
                Term::op(Op::Select, vec![Term::Class(c), x, y])
            });
            match causal_cond(eg, c, tq, tk) {
                Some(m) if m.visible == keep_when => s.mask(m.offset, fill, as_bias),
                _ => {
                    let mut s = s;
                    s.biases.push(as_bias?);
                    Some(s)
                }
            }
        }
        Op::Binary(BinaryOp::Add) => both_orders(kids)
            .into_iter()
            .find_map(|(a, b)| Some(add_term(eg, inner(a)?, b, 1.0, tq, tk))),
        Op::Binary(BinaryOp::Sub) => Some(add_term(eg, inner(kids[0])?, kids[1], -1.0, tq, tk)),
        _ => None,
    })
}

/// `s ± b`: a zero, a causal mask, a harmonic position bias or a bias.
fn add_term(eg: &KEGraph, s: Scores, b: Id, sign: f64, tq: &Dim, tk: &Dim) -> Scores {
    let as_bias = || {
        if sign > 0.0 {
            Term::Class(b)
        } else {
            Term::op(Op::Unary(UnaryOp::Neg), vec![Term::Class(b)])
        }
    };
    if splat(eg, b) == Some(0.0) {
        return s;
    }
    if sign > 0.0 {
        if let Some((off, fill)) = additive_causal(eg, b, tq, tk) {
            if let Some(s) = s.clone().mask(off, fill, Some(as_bias())) {
                return s;
            }
        }
    }
    let mut s = s;
    match harmonic_bias(eg, b, sign, tq, tk) {
        Some(h) if s.harmonic.is_none() => s.harmonic = Some((h, as_bias())),
        _ => s.biases.push(as_bias()),
    }
    s
}

// ---------------------------------------------------------------------------
// Operands.

/// Peels scalar factors off class `id`: `(x, c)` with `id = c·x`.
fn peel(eg: &KEGraph, id: Id) -> (Id, f64) {
    let (mut cur, mut scale) = (id, 1.0);
    'outer: for _ in 0..4 {
        let want = ty(eg, cur).cloned();
        for (op, kids) in op_nodes(eg, cur) {
            let same = |x: Id| ty(eg, x).cloned() == want;
            match op {
                Op::Binary(BinaryOp::Mul) => {
                    for (x, c) in both_orders(kids) {
                        if let Some(v) = factor(eg, c).filter(|_| same(x)) {
                            (cur, scale) = (x, scale * v);
                            continue 'outer;
                        }
                    }
                }
                Op::Binary(BinaryOp::Div) => {
                    if let Some(v) = factor(eg, kids[1]).filter(|&v| v != 0.0 && same(kids[0])) {
                        (cur, scale) = (kids[0], scale / v);
                        continue 'outer;
                    }
                }
                Op::Unary(UnaryOp::Neg) => {
                    (cur, scale) = (kids[0], -scale);
                    continue 'outer;
                }
                _ => {}
            }
        }
        break;
    }
    (cur, scale)
}

fn swap_last_two<T: Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    let r = v.len();
    v.swap(r - 2, r - 1);
    v
}

/// `k` from class `kt = kᵀ` (last two axes swapped), undoing the transpose
/// through the data movement that produced `kt`; also the scalar factors
/// peeled off on the way.
fn transposed(eg: &KEGraph, kt: Id, depth: usize) -> Option<(Term, f64)> {
    let (kt, scale) = peel(eg, kt);
    let t = ty(eg, kt)?;
    let r = t.rank();
    if r < 2 {
        return None;
    }
    // A permute that put the last two axes in place: compose it away.
    for (op, kids) in op_nodes(eg, kt) {
        if let Op::Permute { perm } = op {
            let p = swap_last_two(perm);
            let (x, s) = peel(eg, kids[0]);
            if p.iter().enumerate().all(|(i, &a)| i == a) {
                return Some((Term::Class(x), scale * s));
            }
            return Some((
                Term::op(Op::Permute { perm: p }, vec![Term::Class(x)]),
                scale * s,
            ));
        }
    }
    // A reshape or broadcast of the leading axes commutes with the transpose.
    if depth > 0 {
        for (op, kids) in op_nodes(eg, kt) {
            let Some(inner) = kids.first().and_then(|&k| ty(eg, k)) else {
                continue;
            };
            let ir = inner.rank();
            if ir < 2 || inner.shape[ir - 2..] != t.shape[r - 2..] {
                continue;
            }
            let shape = swap_last_two(&t.shape);
            let op = match op {
                Op::Reshape { .. } => Op::Reshape { shape },
                Op::Broadcast { .. } => Op::Broadcast { shape },
                _ => continue,
            };
            if let Some((k, s)) = transposed(eg, kids[0], depth - 1) {
                return Some((Term::op(op, vec![k]), scale * s));
            }
        }
    }
    let perm = swap_last_two(&(0..r).collect::<Vec<_>>());
    Some((Term::op(Op::Permute { perm }, vec![Term::Class(kt)]), scale))
}

/// `term` of type `t` with leading unit axes up to rank `r`.
fn to_rank(term: Term, t: &TensorType, r: usize) -> Term {
    if t.rank() >= r {
        return term;
    }
    let mut shape = vec![Dim::constant(1); r - t.rank()];
    shape.extend(t.shape.iter().cloned());
    Term::op(Op::Reshape { shape }, vec![term])
}

/// `term` of type `t` broadcast to batch dims `batch` (its last two kept).
fn to_batch(term: Term, t: &TensorType, batch: &[Dim]) -> Term {
    let r = t.rank();
    if t.shape[..r - 2] == *batch {
        return term;
    }
    let mut shape = batch.to_vec();
    shape.extend(t.shape[r - 2..].iter().cloned());
    Term::op(Op::Broadcast { shape }, vec![term])
}

/// Builds `flash_attention(q, k, v[, bias])` for the class of type `want`.
fn build(eg: &KEGraph, s: Scores, v: Id, want: &TensorType) -> Option<Term> {
    let (q, qs) = peel(eg, s.q);
    let (k, ks) = transposed(eg, s.kt, 2)?;
    let scale = s.scale * qs * ks;
    if !scale.is_finite() {
        return None;
    }
    let (qt, kt, vt) = (ty(eg, q)?.clone(), k.ty(eg)?, ty(eg, v)?.clone());
    let r = want.rank();
    if qt.rank() > r || kt.rank() > r || vt.rank() > r {
        return None;
    }
    let fit = |term: Term, t: &TensorType| -> (Term, TensorType) {
        let term = to_rank(term, t, r);
        let mut shape = vec![Dim::constant(1); r - t.rank()];
        shape.extend(t.shape.iter().cloned());
        (term, t.with_shape(shape))
    };
    let (q, qt) = fit(Term::Class(q), &qt);
    let (k, kt) = fit(k, &kt);
    let (v, vt) = fit(Term::Class(v), &vt);
    // k and v share batch dims; q's broadcast against them gives the result's.
    let kv_batch = broadcast_shapes(&[&kt.shape[..r - 2].to_vec(), &vt.shape[..r - 2].to_vec()])?;
    let (k, v) = (to_batch(k, &kt, &kv_batch), to_batch(v, &vt, &kv_batch));
    let batch = want.shape[..r - 2].to_vec();
    let q = if broadcast_shapes(&[&qt.shape[..r - 2].to_vec(), &kv_batch]).as_ref() == Some(&batch)
    {
        q
    } else {
        to_batch(q, &qt, &batch)
    };
    let mut biases = s.biases;
    let (causal, slopes) = match (&s.causal, s.harmonic) {
        (Some(off), Some((h, term))) => match expand_slopes(&h, &batch) {
            Some(m) if h.offset == *off => (true, m),
            _ => {
                biases.push(term);
                (true, Vec::new())
            }
        },
        (c, h) => {
            biases.extend(h.map(|(_, term)| term));
            (c.is_some(), Vec::new())
        }
    };
    let bias = biases
        .into_iter()
        .reduce(|a, b| Term::op(Op::Binary(BinaryOp::Add), vec![a, b]));
    let op = AttentionOp {
        scale: F64Bits(scale),
        causal,
        offset: s.causal.unwrap_or_else(|| Dim::constant(0)),
        bias: bias.is_some(),
        slopes: slopes.into_iter().map(F64Bits).collect(),
        kv_len: None,
    };
    let mut operands = vec![q, k, v];
    operands.extend(bias);
    let term = Term::op(Op::Attention(op), operands);
    (term.ty(eg).as_ref() == Some(want)).then_some(term)
}

/// The rule's matcher: `matmul(softmax(scores), v)` -> `flash_attention`.
fn flash_attention(eg: &KEGraph, id: Id) -> Vec<Term> {
    let Some(want) = ty(eg, id) else {
        return Vec::new();
    };
    if !want.dtype.is_float() || want.rank() < 2 {
        return Vec::new();
    }
    if op_nodes(eg, id).any(|(op, _)| matches!(op, Op::Attention(_))) {
        return Vec::new();
    }
    for (op, kids) in op_nodes(eg, id) {
        if *op != Op::MatMul {
            continue;
        }
        let (p, v) = (kids[0], kids[1]);
        for x in softmax_rows(eg, p) {
            let Some((tq, tk)) = tail(eg, x) else {
                continue;
            };
            let Some(s) = decompose(eg, x, &tq, &tk, DEPTH) else {
                continue;
            };
            if let Some(t) = build(eg, s, v, want) {
                return vec![t];
            }
        }
    }
    Vec::new()
}
