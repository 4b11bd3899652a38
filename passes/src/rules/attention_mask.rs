//! Index arithmetic behind the attention rules: proving that a tensor's
//! values are an affine function of its indices, and from that recognizing
//! causal masks (`key j visible iff j <= i + offset`) and the RoPE × ALiBi
//! harmonic position bias (`slope_h · table[i + offset - j]` with a table of
//! `∓H(n)`). Nothing here guesses: a mask is causal only when its values are
//! proven to be the comparison of a query position with a key position.

use super::{op_nodes, splat, ty};
use crate::analysis::{literal_to_tensor, KEGraph};
use egg::Id;
use kiln_ir::attention::harmonic;
use kiln_ir::{BinaryOp, CmpOp, DType, Dim, Literal, Op, UnaryOp};

/// How deep the position recognizers look through ops.
const DEPTH: usize = 8;

/// A mask fill at or below this counts as "masked": `exp(fill - max)` is 0
/// in f64 unless the scores themselves are of the fill's magnitude.
pub(super) const MASK_FILL: f64 = -1.0e4;

/// `value[idx] = Σ coef · idx[axis] + c` over the tensor's own axes; every
/// listed axis has a size other than 1 and carries the index itself (it is
/// not broadcast from size 1).
#[derive(Clone, Debug, PartialEq)]
struct Affine {
    /// `(axis, coef)`, sorted by axis, no zero coefficient.
    terms: Vec<(usize, i64)>,
    c: Dim,
}

impl Affine {
    fn constant(c: Dim) -> Affine {
        Affine {
            terms: Vec::new(),
            c,
        }
    }

    fn scaled(mut self, k: i64) -> Affine {
        for t in &mut self.terms {
            t.1 *= k;
        }
        self.c = self.c.scale(k);
        self
    }

    fn coef(&self, axis: usize) -> i64 {
        self.terms.iter().find(|t| t.0 == axis).map_or(0, |t| t.1)
    }

    /// The sum of `self` (of shape `from`) and `other` (of shape `other_shape`),
    /// both right-aligned into a result of shape `to`.
    fn plus(
        &self,
        from: &[Dim],
        other: &Affine,
        other_shape: &[Dim],
        to: &[Dim],
    ) -> Option<Affine> {
        let a = self.aligned(from, to)?;
        let b = other.aligned(other_shape, to)?;
        let mut terms = a.terms;
        for (axis, k) in b.terms {
            match terms.iter_mut().find(|t| t.0 == axis) {
                Some(t) => t.1 += k,
                None => terms.push((axis, k)),
            }
        }
        terms.retain(|t| t.1 != 0);
        terms.sort_unstable();
        Some(Affine {
            terms,
            c: &a.c + &b.c,
        })
    }

    /// `self` (over shape `from`) seen in the right-aligned, broadcast shape
    /// `to`; `None` when an indexed axis would be expanded from size 1.
    fn aligned(&self, from: &[Dim], to: &[Dim]) -> Option<Affine> {
        let shift = to.len().checked_sub(from.len())?;
        let mut terms = Vec::with_capacity(self.terms.len());
        for &(axis, k) in &self.terms {
            if from[axis] != to[axis + shift] {
                return None;
            }
            terms.push((axis + shift, k));
        }
        Some(Affine {
            terms,
            c: self.c.clone(),
        })
    }
}

/// Dtypes in which small integer positions are exact.
fn exact_positions(d: DType) -> bool {
    matches!(d, DType::I32 | DType::I64 | DType::F32)
}

fn one() -> Dim {
    Dim::constant(1)
}

/// Proves `value[idx]` affine in the indices of class `id`.
fn affine(eg: &KEGraph, id: Id, depth: usize) -> Option<Affine> {
    let t = ty(eg, id)?;
    if !exact_positions(t.dtype) {
        return None;
    }
    if let Some(v) = splat(eg, id) {
        let ok = v.fract() == 0.0 && v.abs() < (1u64 << 24) as f64;
        return ok.then(|| Affine::constant(Dim::constant(v as i64)));
    }
    if depth == 0 {
        return None;
    }
    let shape = &t.shape;
    op_nodes(eg, id).find_map(|(op, kids)| {
        let kid_shape = |i: usize| ty(eg, kids[i]).map(|t| t.shape.clone());
        match op {
            Op::Iota { ty: it, axis } => {
                let mut a = Affine::constant(Dim::constant(0));
                if it.shape[*axis] != one() {
                    a.terms.push((*axis, 1));
                }
                Some(a)
            }
            Op::Binary(b @ (BinaryOp::Add | BinaryOp::Sub)) => {
                let x = affine(eg, kids[0], depth - 1)?;
                let mut y = affine(eg, kids[1], depth - 1)?;
                if *b == BinaryOp::Sub {
                    y = y.scaled(-1);
                }
                x.plus(&kid_shape(0)?, &y, &kid_shape(1)?, shape)
            }
            Op::Unary(UnaryOp::Neg) => Some(affine(eg, kids[0], depth - 1)?.scaled(-1)),
            Op::Cast(to) if exact_positions(*to) => affine(eg, kids[0], depth - 1),
            Op::Broadcast { .. } => affine(eg, kids[0], depth - 1)?.aligned(&kid_shape(0)?, shape),
            Op::Slice { axis, start, .. } => {
                let mut a = affine(eg, kids[0], depth - 1)?;
                let k = a.coef(*axis);
                a.c = &a.c + &start.scale(k);
                if shape[*axis] == one() {
                    a.terms.retain(|t| t.0 != *axis);
                }
                Some(a)
            }
            Op::Permute { perm } => {
                let a = affine(eg, kids[0], depth - 1)?;
                let mut terms: Vec<(usize, i64)> = a
                    .terms
                    .iter()
                    .map(|&(axis, k)| (perm.iter().position(|&p| p == axis).unwrap_or(0), k))
                    .collect();
                terms.sort_unstable();
                Some(Affine { terms, c: a.c })
            }
            Op::Reshape { .. } => {
                let a = affine(eg, kids[0], depth - 1)?;
                let from = kid_shape(0)?;
                // Only unit axes inserted or removed: the other axes keep
                // their order and their index.
                let big =
                    |s: &[Dim]| -> Vec<usize> { (0..s.len()).filter(|&i| s[i] != one()).collect() };
                let (fb, tb) = (big(&from), big(shape));
                if fb.len() != tb.len() || fb.iter().zip(&tb).any(|(&f, &t)| from[f] != shape[t]) {
                    return None;
                }
                let terms = a
                    .terms
                    .iter()
                    .map(|&(axis, k)| fb.iter().position(|&f| f == axis).map(|i| (tb[i], k)))
                    .collect::<Option<Vec<_>>>()?;
                Some(Affine { terms, c: a.c })
            }
            _ => None,
        }
    })
}

/// An offset that is a size for every binding (no negative coefficient).
fn non_negative(d: &Dim) -> bool {
    d.terms().all(|(c, _)| c >= 0)
}

/// Reads `a` (over `shape`, right-aligned against scores `[.., tq, tk]`) as
/// `s · (j - i) + c` for a sign `s`: returns `(s, c)`.
fn distance(a: &Affine, shape: &[Dim], tq: &Dim, tk: &Dim) -> Option<(i64, Dim)> {
    let r = shape.len();
    let (qa, ka) = (r.checked_sub(2), r.checked_sub(1));
    if a.terms
        .iter()
        .any(|&(axis, _)| Some(axis) != qa && Some(axis) != ka)
    {
        return None;
    }
    let mut qc = qa.map_or(0, |x| a.coef(x));
    let mut kc = ka.map_or(0, |x| a.coef(x));
    // An index of a size-1 axis is 0: its coefficient is free.
    if qc == 0 && kc == 0 && *tq == one() && *tk == one() {
        // One query, one key: read a constant as the distance `i - j + c`.
        kc = -1;
    }
    if qc == 0 && *tq == one() {
        qc = -kc;
    }
    if kc == 0 && *tk == one() {
        kc = -qc;
    }
    if !(kc == 1 || kc == -1) || qc != -kc {
        return None;
    }
    // An indexed axis must span the whole scores axis.
    if a.coef(qa.unwrap_or(usize::MAX)) != 0 && shape[qa?] != *tq {
        return None;
    }
    if a.coef(ka.unwrap_or(usize::MAX)) != 0 && shape[ka?] != *tk {
        return None;
    }
    Some((kc, a.c.clone()))
}

/// A causal visibility pattern: key `j` is visible to query `i` iff
/// `j <= i + offset`; `visible` says whether the tensor is true (or holds
/// the kept value) on the visible pairs or on the masked ones.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct CausalMask {
    pub offset: Dim,
    pub visible: bool,
}

/// Proves that the boolean class `cond`, broadcast to scores `[.., tq, tk]`,
/// is a causal pattern.
pub(super) fn causal_cond(eg: &KEGraph, cond: Id, tq: &Dim, tk: &Dim) -> Option<CausalMask> {
    causal_cond_at(eg, cond, tq, tk, 3)
}

fn causal_cond_at(eg: &KEGraph, cond: Id, tq: &Dim, tk: &Dim, depth: usize) -> Option<CausalMask> {
    let t = ty(eg, cond)?;
    if t.dtype != DType::Bool || depth == 0 {
        return None;
    }
    op_nodes(eg, cond).find_map(|(op, kids)| match op {
        Op::Compare(c) => {
            let (a, b) = (affine(eg, kids[0], DEPTH)?, affine(eg, kids[1], DEPTH)?);
            let (sa, sb) = (&ty(eg, kids[0])?.shape, &ty(eg, kids[1])?.shape);
            let diff = a.plus(sa, &b.scaled(-1), sb, &t.shape)?;
            if diff.terms.is_empty() && *tq == one() && *tk == one() {
                // One query and one key: a constant condition.
                let c0 = diff.c.as_const()?;
                let truth = match c {
                    CmpOp::Le => c0 <= 0,
                    CmpOp::Lt => c0 < 0,
                    CmpOp::Ge => c0 >= 0,
                    CmpOp::Gt => c0 > 0,
                    CmpOp::Eq => c0 == 0,
                    CmpOp::Ne => c0 != 0,
                };
                return Some(CausalMask {
                    offset: Dim::constant(0),
                    visible: truth,
                });
            }
            let (s, c0) = distance(&diff, &t.shape, tq, tk)?;
            // cond ⇔ s·(j - i) + c0 OP 0; with s = -1 flip to (j - i) - c0 OP' 0.
            let (cmp, c0) = if s == 1 {
                (*c, c0)
            } else {
                let flipped = match c {
                    CmpOp::Le => CmpOp::Ge,
                    CmpOp::Lt => CmpOp::Gt,
                    CmpOp::Ge => CmpOp::Le,
                    CmpOp::Gt => CmpOp::Lt,
                    _ => return None,
                };
                (flipped, c0.scale(-1))
            };
            // Now cond ⇔ j - i + c0 OP 0, i.e. j OP i - c0.
            let base = c0.scale(-1);
            let (offset, visible) = match cmp {
                CmpOp::Le => (base, true),
                CmpOp::Lt => (base - 1, true),
                CmpOp::Gt => (base, false),
                CmpOp::Ge => (base - 1, false),
                _ => return None,
            };
            non_negative(&offset).then_some(CausalMask { offset, visible })
        }
        Op::Unary(UnaryOp::Not) => {
            let m = causal_cond_at(eg, kids[0], tq, tk, depth - 1)?;
            Some(CausalMask {
                visible: !m.visible,
                ..m
            })
        }
        Op::Broadcast { .. } | Op::Reshape { .. } => {
            // Right-aligned and not expanded along the last two axes.
            let k = ty(eg, kids[0])?;
            let tail = |s: &[Dim]| s.iter().rev().take(2).cloned().collect::<Vec<_>>();
            (tail(&k.shape) == tail(&t.shape))
                .then(|| causal_cond_at(eg, kids[0], tq, tk, depth - 1))
                .flatten()
        }
        Op::Const(l) => literal_causal(l, tq, tk, |v| Some(v != 0.0)),
        _ => None,
    })
}

/// A constant whose every `[.., tq, tk]` matrix is one causal pattern, with
/// `class(v)` telling a visible value (`Some(true)`) from a masked one.
fn literal_causal(
    l: &Literal,
    tq: &Dim,
    tk: &Dim,
    class: impl Fn(f64) -> Option<bool>,
) -> Option<CausalMask> {
    let r = l.shape.len();
    if r < 2 {
        return None;
    }
    let (q, k) = (l.shape[r - 2], l.shape[r - 1]);
    if tq.as_const() != Some(q as i64) || tk.as_const() != Some(k as i64) || q == 0 || k == 0 {
        return None;
    }
    let values = literal_to_tensor(l).to_f64_vec();
    let kinds: Option<Vec<bool>> = values.iter().map(|&v| class(v)).collect();
    let kinds = kinds?;
    // Row 0 fixes the offset; every row of every matrix must follow it.
    let first_masked = kinds[..k].iter().position(|&v| !v).unwrap_or(k);
    if first_masked == 0 {
        // Maybe the pattern marks the masked pairs instead.
        let inverted: Vec<bool> = kinds.iter().map(|v| !v).collect();
        let first = inverted[..k].iter().position(|&v| !v).unwrap_or(k);
        return (first > 0 && follows(&inverted, q, k, first - 1)).then(|| CausalMask {
            offset: Dim::constant(first as i64 - 1),
            visible: false,
        });
    }
    follows(&kinds, q, k, first_masked - 1).then(|| CausalMask {
        offset: Dim::constant(first_masked as i64 - 1),
        visible: true,
    })
}

fn follows(kinds: &[bool], q: usize, k: usize, offset: usize) -> bool {
    kinds
        .chunks(q * k)
        .all(|m| (0..q).all(|i| (0..k).all(|j| m[i * k + j] == (j <= i + offset))))
}

/// True for a fill that masks: `-inf` or a large negative constant.
pub(super) fn is_mask_fill(v: f64) -> bool {
    v <= MASK_FILL
}

/// An additive causal mask: `0` on the visible pairs, a mask fill on the
/// others — `select(causal, 0, fill)` either way round, or a constant.
/// Returns the offset and the largest fill (`-inf` when every fill is).
pub(super) fn additive_causal(eg: &KEGraph, b: Id, tq: &Dim, tk: &Dim) -> Option<(Dim, f64)> {
    additive_causal_at(eg, b, tq, tk, 3)
}

fn additive_causal_at(eg: &KEGraph, b: Id, tq: &Dim, tk: &Dim, depth: usize) -> Option<(Dim, f64)> {
    if depth == 0 || !ty(eg, b)?.dtype.is_float() {
        return None;
    }
    let fill = |c: Id| splat(eg, c).filter(|&v| is_mask_fill(v));
    let zero = |c: Id| splat(eg, c) == Some(0.0);
    op_nodes(eg, b).find_map(|(op, kids)| match op {
        Op::Select => {
            let (want, f) = match (fill(kids[1]), fill(kids[2])) {
                (None, Some(f)) if zero(kids[1]) => (true, f),
                (Some(f), None) if zero(kids[2]) => (false, f),
                _ => return None,
            };
            let m = causal_cond(eg, kids[0], tq, tk)?;
            (m.visible == want).then_some((m.offset, f))
        }
        Op::Broadcast { .. } => additive_causal_at(eg, kids[0], tq, tk, depth - 1),
        Op::Const(l) => {
            let m = literal_causal(l, tq, tk, |v| {
                if v == 0.0 {
                    Some(true)
                } else if is_mask_fill(v) {
                    Some(false)
                } else {
                    None
                }
            })?;
            let worst = literal_to_tensor(l)
                .to_f64_vec()
                .into_iter()
                .filter(|&v| v != 0.0)
                .fold(f64::NEG_INFINITY, f64::max);
            m.visible.then_some((m.offset, worst))
        }
        _ => None,
    })
}

/// A recognized harmonic position bias `-slope_h · H(i + offset - j)`.
#[derive(Clone, Debug)]
pub(super) struct HarmonicBias {
    pub offset: Dim,
    /// The slope constant's values (already signed so that the term is
    /// `-slope · H`) and its shape, broadcast later against the heads.
    pub slopes: Vec<f64>,
    pub shape: Vec<usize>,
}

/// The values and shape of a constant class (a literal node, a small folded
/// value or a splat of rank 0).
fn constant_values(eg: &KEGraph, id: Id) -> Option<(Vec<f64>, Vec<usize>)> {
    let t = ty(eg, id)?;
    if let Some(v) = splat(eg, id) {
        if t.rank() == 0 {
            return Some((vec![v], Vec::new()));
        }
    }
    if let Some(v) = &eg[id].data.value {
        return Some((v.to_f64_vec(), v.shape.clone()));
    }
    op_nodes(eg, id).find_map(|(op, _)| match op {
        Op::Const(l) => Some((literal_to_tensor(l).to_f64_vec(), l.shape.clone())),
        _ => None,
    })
}

/// A constant table of `σ·H(n)` for `n = 0..len` (σ = ±1), within the
/// rounding of its dtype: returns σ.
fn harmonic_table(eg: &KEGraph, id: Id) -> Option<(f64, usize)> {
    let t = ty(eg, id)?;
    let tol = match t.dtype {
        DType::F32 => 1e-6,
        DType::F16 => 2e-3,
        DType::BF16 => 1e-2,
        _ => return None,
    };
    let (v, shape) = op_nodes(eg, id).find_map(|(op, _)| match op {
        Op::Const(l) => Some((literal_to_tensor(l).to_f64_vec(), l.shape.clone())),
        _ => None,
    })?;
    if shape.len() != 1 || v.len() < 2 {
        return None;
    }
    let sigma = if v[1] < 0.0 { -1.0 } else { 1.0 };
    let ok = v.iter().enumerate().all(|(n, &x)| {
        let h = harmonic(n as u64);
        (x - sigma * h).abs() <= tol * h.max(1.0)
    });
    ok.then_some((sigma, v.len()))
}

/// The gather index: `i + offset - j` (clamped below at or under 0, and
/// above at or beyond the table's end — neither changes a visible pair whose
/// distance the table covers). Returns `offset`.
fn distance_index(
    eg: &KEGraph,
    idx: Id,
    len: usize,
    tq: &Dim,
    tk: &Dim,
    depth: usize,
) -> Option<Dim> {
    if let Some(a) = affine(eg, idx, DEPTH) {
        let shape = &ty(eg, idx)?.shape;
        let (s, c) = distance(&a, shape, tq, tk)?;
        // value = s·(j - i) + c; a distance is -(j - i) + c.
        return (s == -1 && non_negative(&c)).then_some(c);
    }
    if depth == 0 {
        return None;
    }
    let idx_shape = &ty(eg, idx)?.shape;
    op_nodes(eg, idx).find_map(|(op, kids)| {
        let Op::Binary(b @ (BinaryOp::Max | BinaryOp::Min)) = op else {
            return None;
        };
        [(kids[0], kids[1]), (kids[1], kids[0])]
            .into_iter()
            .find_map(|(x, c)| {
                let v = splat(eg, c)?;
                let harmless = match b {
                    BinaryOp::Max => v <= 0.0,
                    _ => v >= (len - 1) as f64,
                };
                // The clamp must not change the index's shape.
                let same = ty(eg, x).is_some_and(|t| &t.shape == idx_shape);
                (harmless && same)
                    .then(|| distance_index(eg, x, len, tq, tk, depth - 1))
                    .flatten()
            })
    })
}

/// Recognizes `slopes · gather(table, distance)` (either order) with a
/// harmonic table, added with `sign` (`+1` for `+`, `-1` for `-`).
pub(super) fn harmonic_bias(
    eg: &KEGraph,
    b: Id,
    sign: f64,
    tq: &Dim,
    tk: &Dim,
) -> Option<HarmonicBias> {
    op_nodes(eg, b).find_map(|(op, kids)| {
        if *op != Op::Binary(BinaryOp::Mul) {
            return None;
        }
        [(kids[0], kids[1]), (kids[1], kids[0])]
            .into_iter()
            .find_map(|(s, g)| {
                let (slopes, shape) = constant_values(eg, s)?;
                let r = shape.len();
                if r >= 1 && shape[r - 1] != 1 || r >= 2 && shape[r - 2] != 1 {
                    return None;
                }
                op_nodes(eg, g).find_map(|(gop, gk)| {
                    let Op::Gather { axis: 0 } = gop else {
                        return None;
                    };
                    let (sigma, len) = harmonic_table(eg, gk[0])?;
                    let offset = distance_index(eg, gk[1], len, tq, tk, 3)?;
                    // term = sign · slope · σ · H = -m · H  ⇒  m = -sign·σ·slope.
                    let k = -sign * sigma;
                    Some(HarmonicBias {
                        offset,
                        slopes: slopes.iter().map(|&x| k * x).collect(),
                        shape: shape.clone(),
                    })
                })
            })
    })
}

/// The per-head slopes of `h` over the batch dims `batch` (row-major), the
/// slope constant right-aligned and broadcast against them.
pub(super) fn expand_slopes(h: &HarmonicBias, batch: &[Dim]) -> Option<Vec<f64>> {
    let dims: Vec<usize> = batch
        .iter()
        .map(|d| d.as_const().and_then(|c| usize::try_from(c).ok()))
        .collect::<Option<_>>()?;
    let sb: &[usize] = &h.shape[..h.shape.len().saturating_sub(2)];
    let shift = dims.len().checked_sub(sb.len())?;
    for (i, &s) in sb.iter().enumerate() {
        if s != 1 && s != dims[i + shift] {
            return None;
        }
    }
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    for flat in 0..n {
        let mut rem = flat;
        let mut at = 0usize;
        let mut stride = 1usize;
        for a in (0..dims.len()).rev() {
            let i = rem % dims[a];
            rem /= dims[a];
            if a >= shift {
                let s = sb[a - shift];
                if s != 1 {
                    at += i * stride;
                }
                stride *= s;
            }
        }
        out.push(*h.slopes.get(at)?);
    }
    // Slopes must be finite for the kernel's `-m·H` term to equal the table's.
    out.iter().all(|m| m.is_finite()).then_some(out)
}
