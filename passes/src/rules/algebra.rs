//! Algebraic identities and strength reduction. Constants are matched by
//! value through the analysis (any dtype, any rank, broadcast or not), and
//! commutative ops are matched in both operand orders by the matchers
//! themselves, so no commutativity rewrite grows the e-graph.

use super::{
    both_orders, fit, is_splat, op_nodes, scalar, splat, ty, Exactness, RuleDef, Stage, Term,
};
use crate::analysis::KEGraph;
use egg::Id;
use kiln_ir::literal::{round_to, wrap_int};
use kiln_ir::{BinaryOp, DType, Op, UnaryOp};

pub(super) fn rules() -> Vec<RuleDef> {
    let r = |name, summary, exactness, matcher| RuleDef {
        name,
        stage: Stage::Algebra,
        summary,
        exactness,
        matcher,
    };
    use Exactness::{Approximate, Exact, NoSignedZeros};
    vec![
        r("add-zero", "x + 0 -> x (either order)", NoSignedZeros, add_zero),
        r("sub-zero", "x - 0 -> x", NoSignedZeros, sub_zero),
        r("zero-sub", "0 - x -> neg(x)", NoSignedZeros, zero_sub),
        r("mul-one", "x * 1 -> x (either order)", Exact, mul_one),
        r("mul-neg-one", "x * -1 -> neg(x) (either order)", Exact, mul_neg_one),
        r("div-one", "x / 1 -> x", Exact, div_one),
        r("div-const", "x / c -> x * (1/c) for a float constant c", Approximate, div_const),
        r("one-div", "1 / x -> recip(x)", Approximate, one_div),
        r("neg-neg", "neg(neg(x)) -> x", Exact, neg_neg),
        r("add-neg", "x + neg(y) -> x - y (either order)", Exact, add_neg),
        r("sub-neg", "x - neg(y) -> x + y", Exact, sub_neg),
        r("mul-const-const", "(x * c1) * c2 -> x * (c1*c2) (any order)", Approximate, mul_const_const),
        r("pow-to-mul", "pow(x, 1) -> x, pow(x, 2) -> x * x", Approximate, pow_to_mul),
        r(
            "pow-to-root",
            "pow(x, 0.5) -> sqrt(x), pow(x, -0.5) -> rsqrt(x), pow(x, -1) -> recip(x)",
            Approximate,
            pow_to_root,
        ),
        r("recip-sqrt", "recip(sqrt(x)) -> rsqrt(x)", Approximate, recip_sqrt),
        r("div-sqrt", "x / sqrt(y) -> x * rsqrt(y)", Approximate, div_sqrt),
        r("cast-identity", "cast(x: T, T) -> x", Exact, cast_identity),
        r(
            "cast-cast",
            "cast(cast(x, A), B) -> cast(x, B) when A holds every value of x's dtype (-> x when B is x's dtype)",
            Exact,
            cast_cast,
        ),
        r("select-const", "select(true, a, b) -> a, select(false, a, b) -> b", Exact, select_const),
    ]
}

fn binaries(eg: &KEGraph, id: Id, want: BinaryOp) -> Vec<(Id, Id)> {
    op_nodes(eg, id)
        .filter(|(op, _)| **op == Op::Binary(want))
        .map(|(_, kids)| (kids[0], kids[1]))
        .collect()
}

fn unaries(eg: &KEGraph, id: Id, want: UnaryOp) -> Vec<Id> {
    op_nodes(eg, id)
        .filter(|(op, _)| **op == Op::Unary(want))
        .map(|(_, kids)| kids[0])
        .collect()
}

fn dtype(eg: &KEGraph, id: Id) -> Option<DType> {
    ty(eg, id).map(|t| t.dtype)
}

/// `x` fitted to the type of class `id`.
fn keep(eg: &KEGraph, id: Id, x: Term) -> Option<Term> {
    fit(eg, x, ty(eg, id)?)
}

fn unary(u: UnaryOp, x: Term) -> Term {
    Term::op(Op::Unary(u), vec![x])
}

fn binary(b: BinaryOp, x: Term, y: Term) -> Term {
    Term::op(Op::Binary(b), vec![x, y])
}

fn add_zero(eg: &KEGraph, id: Id) -> Vec<Term> {
    binaries(eg, id, BinaryOp::Add)
        .into_iter()
        .flat_map(|(a, b)| both_orders(&[a, b]))
        .filter(|&(_, z)| is_splat(eg, z, 0.0))
        .filter_map(|(x, _)| keep(eg, id, Term::Class(x)))
        .collect()
}

fn sub_zero(eg: &KEGraph, id: Id) -> Vec<Term> {
    binaries(eg, id, BinaryOp::Sub)
        .into_iter()
        .filter(|&(_, z)| is_splat(eg, z, 0.0))
        .filter_map(|(x, _)| keep(eg, id, Term::Class(x)))
        .collect()
}

fn zero_sub(eg: &KEGraph, id: Id) -> Vec<Term> {
    binaries(eg, id, BinaryOp::Sub)
        .into_iter()
        .filter(|&(z, _)| is_splat(eg, z, 0.0))
        .filter_map(|(_, x)| keep(eg, id, unary(UnaryOp::Neg, Term::Class(x))))
        .collect()
}

fn mul_one(eg: &KEGraph, id: Id) -> Vec<Term> {
    binaries(eg, id, BinaryOp::Mul)
        .into_iter()
        .flat_map(|(a, b)| both_orders(&[a, b]))
        .filter(|&(_, c)| is_splat(eg, c, 1.0))
        .filter_map(|(x, _)| keep(eg, id, Term::Class(x)))
        .collect()
}

fn mul_neg_one(eg: &KEGraph, id: Id) -> Vec<Term> {
    binaries(eg, id, BinaryOp::Mul)
        .into_iter()
        .flat_map(|(a, b)| both_orders(&[a, b]))
        .filter(|&(_, c)| is_splat(eg, c, -1.0))
        .filter_map(|(x, _)| keep(eg, id, unary(UnaryOp::Neg, Term::Class(x))))
        .collect()
}

fn div_one(eg: &KEGraph, id: Id) -> Vec<Term> {
    binaries(eg, id, BinaryOp::Div)
        .into_iter()
        .filter(|&(_, c)| is_splat(eg, c, 1.0))
        .filter_map(|(x, _)| keep(eg, id, Term::Class(x)))
        .collect()
}

fn div_const(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (x, c) in binaries(eg, id, BinaryOp::Div) {
        let (Some(v), Some(d)) = (splat(eg, c), dtype(eg, c)) else {
            continue;
        };
        // x / 1 is div-one's; a zero or non-finite divisor keeps its IEEE meaning.
        if !d.is_float() || v == 0.0 || v == 1.0 || !v.is_finite() {
            continue;
        }
        let r = round_to(d, 1.0 / v);
        if r.is_finite() && r != 0.0 {
            out.extend(keep(
                eg,
                id,
                binary(BinaryOp::Mul, Term::Class(x), scalar(d, r)),
            ));
        }
    }
    out
}

fn one_div(eg: &KEGraph, id: Id) -> Vec<Term> {
    binaries(eg, id, BinaryOp::Div)
        .into_iter()
        .filter(|&(c, x)| is_splat(eg, c, 1.0) && dtype(eg, x).is_some_and(DType::is_float))
        .filter_map(|(_, x)| keep(eg, id, unary(UnaryOp::Recip, Term::Class(x))))
        .collect()
}

fn neg_neg(eg: &KEGraph, id: Id) -> Vec<Term> {
    unaries(eg, id, UnaryOp::Neg)
        .into_iter()
        .flat_map(|inner| unaries(eg, inner, UnaryOp::Neg))
        .map(Term::Class)
        .collect()
}

fn add_neg(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (a, b) in binaries(eg, id, BinaryOp::Add) {
        for (x, n) in both_orders(&[a, b]) {
            for y in unaries(eg, n, UnaryOp::Neg) {
                out.extend(keep(
                    eg,
                    id,
                    binary(BinaryOp::Sub, Term::Class(x), Term::Class(y)),
                ));
            }
        }
    }
    out
}

fn sub_neg(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (x, n) in binaries(eg, id, BinaryOp::Sub) {
        for y in unaries(eg, n, UnaryOp::Neg) {
            out.extend(keep(
                eg,
                id,
                binary(BinaryOp::Add, Term::Class(x), Term::Class(y)),
            ));
        }
    }
    out
}

/// Combines two constants of `d` with `f`, rounded or wrapped to the dtype.
fn combine(d: DType, a: f64, b: f64, f: fn(f64, f64) -> f64) -> Option<f64> {
    if d.is_float() {
        let v = round_to(d, f(a, b));
        v.is_finite().then_some(v)
    } else if d.is_int() {
        // Integer constants are exact in f64 for the magnitudes that occur;
        // the wrap is the op's two's-complement arithmetic.
        let v = f(a, b);
        (v.abs() < 9.0e15).then(|| wrap_int(d, v as i64) as f64)
    } else {
        None
    }
}

/// `(x op c1) op c2 -> x op (c1 op c2)` for an associative, commutative `op`.
/// Only used for `mul`: reassociating an addition can cancel catastrophically
/// (`(x + 1e8) - 1e8`), a product's rounding stays relative.
fn reassociate_consts(eg: &KEGraph, id: Id, b: BinaryOp, f: fn(f64, f64) -> f64) -> Vec<Term> {
    let mut out = Vec::new();
    for (p, q) in binaries(eg, id, b) {
        for (inner, c2) in both_orders(&[p, q]) {
            let Some(v2) = splat(eg, c2) else { continue };
            if splat(eg, inner).is_some() {
                continue; // a constant expression: folding's job
            }
            for (ip, iq) in binaries(eg, inner, b) {
                for (x, c1) in both_orders(&[ip, iq]) {
                    let (Some(v1), Some(d)) = (splat(eg, c1), dtype(eg, c1)) else {
                        continue;
                    };
                    if splat(eg, x).is_some() {
                        continue;
                    }
                    if let Some(v) = combine(d, v1, v2, f) {
                        out.extend(keep(eg, id, binary(b, Term::Class(x), scalar(d, v))));
                    }
                }
            }
        }
    }
    out
}

fn mul_const_const(eg: &KEGraph, id: Id) -> Vec<Term> {
    reassociate_consts(eg, id, BinaryOp::Mul, |a, b| a * b)
}

fn pow_to_mul(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (x, e) in binaries(eg, id, BinaryOp::Pow) {
        let t = match splat(eg, e) {
            Some(1.0) => Term::Class(x),
            Some(2.0) => binary(BinaryOp::Mul, Term::Class(x), Term::Class(x)),
            _ => continue,
        };
        out.extend(keep(eg, id, t));
    }
    out
}

fn pow_to_root(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (x, e) in binaries(eg, id, BinaryOp::Pow) {
        let u = match splat(eg, e) {
            Some(0.5) => UnaryOp::Sqrt,
            Some(-0.5) => UnaryOp::Rsqrt,
            Some(-1.0) => UnaryOp::Recip,
            _ => continue,
        };
        out.extend(keep(eg, id, unary(u, Term::Class(x))));
    }
    out
}

fn recip_sqrt(eg: &KEGraph, id: Id) -> Vec<Term> {
    unaries(eg, id, UnaryOp::Recip)
        .into_iter()
        .flat_map(|s| unaries(eg, s, UnaryOp::Sqrt))
        .map(|x| unary(UnaryOp::Rsqrt, Term::Class(x)))
        .collect()
}

fn div_sqrt(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (x, s) in binaries(eg, id, BinaryOp::Div) {
        for y in unaries(eg, s, UnaryOp::Sqrt) {
            let t = binary(
                BinaryOp::Mul,
                Term::Class(x),
                unary(UnaryOp::Rsqrt, Term::Class(y)),
            );
            out.extend(keep(eg, id, t));
        }
    }
    out
}

fn cast_identity(eg: &KEGraph, id: Id) -> Vec<Term> {
    op_nodes(eg, id)
        .filter_map(|(op, kids)| match op {
            Op::Cast(d) if dtype(eg, kids[0]) == Some(*d) => Some(Term::Class(kids[0])),
            _ => None,
        })
        .collect()
}

/// Whether every value of `from` is exactly representable in `to`.
pub(crate) fn lossless(from: DType, to: DType) -> bool {
    use DType::*;
    if from == to {
        return true;
    }
    match from {
        Bool => true,
        U8 => matches!(to, I32 | I64 | F32 | F16 | BF16),
        I8 => matches!(to, I32 | I64 | F32 | F16 | BF16),
        I32 => matches!(to, I64),
        F16 | BF16 => to == F32,
        I64 | F32 => false,
    }
}

fn cast_cast(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (op, kids) in op_nodes(eg, id) {
        let Op::Cast(b) = op else { continue };
        for (inner, ikids) in op_nodes(eg, kids[0]) {
            let Op::Cast(a) = inner else { continue };
            let Some(x) = dtype(eg, ikids[0]) else {
                continue;
            };
            if !lossless(x, *a) {
                continue;
            }
            out.push(if x == *b {
                Term::Class(ikids[0])
            } else {
                Term::op(Op::Cast(*b), vec![Term::Class(ikids[0])])
            });
        }
    }
    out
}

fn select_const(eg: &KEGraph, id: Id) -> Vec<Term> {
    op_nodes(eg, id)
        .filter_map(|(op, kids)| match op {
            Op::Select => {
                let pick = match splat(eg, kids[0])? {
                    v if v != 0.0 => kids[1],
                    _ => kids[2],
                };
                keep(eg, id, Term::Class(pick))
            }
            _ => None,
        })
        .collect()
}
