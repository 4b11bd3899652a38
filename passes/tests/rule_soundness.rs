//! Soundness of every rewrite rule, one at a time: random graphs that contain
//! the rule's left-hand side (random shapes with symbolic dims, random
//! dtypes and constant spellings) are run through the e-graph with only that
//! rule, extracted, and interpreted before and after on random inputs.
//! Exact rules (data movement, folding, IEEE identities) must agree exactly
//! (as numbers: `NoSignedZeros` rules may flip a zero's sign, and random
//! inputs are never zero); approximate ones within rel L2 1e-5.

mod attention_support;
mod common;
mod linear_scan_support;

use common::*;
use kiln_ir::{BinaryOp, CmpOp, DType, Dim, Graph, Literal, Op, ReduceOp, UnaryOp};
use kiln_passes::canonicalize::run_rules;
use kiln_passes::rules::{registry, Exactness};
use kiln_passes::PassOptions;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rand::rngs::StdRng;
use rand::Rng;

type Gen = fn(&mut StdRng) -> Graph;

/// The generator of graphs containing each rule's left-hand side.
fn generator(rule: &str) -> Option<Gen> {
    let g: Gen = match rule {
        "permute-permute" => permute_permute,
        "permute-identity" => permute_identity,
        "permute-to-reshape" => permute_to_reshape,
        "reshape-reshape" => reshape_reshape,
        "reshape-identity" => reshape_identity,
        "broadcast-broadcast" => broadcast_broadcast,
        "broadcast-identity" => broadcast_identity,
        "broadcast-absorbs-reshape" => broadcast_absorbs_reshape,
        "slice-identity" => slice_identity,
        "slice-slice" => slice_slice,
        "pad-zero" => pad_zero,
        "concat-one" => concat_one,
        "unary-before-broadcast" => unary_before_broadcast,
        "binary-before-broadcast" => binary_before_broadcast,
        "reduce-keepdims" => reduce_keepdims,
        "add-zero" => |r| with_const(r, BinaryOp::Add, 0.0, true, true),
        "sub-zero" => |r| with_const(r, BinaryOp::Sub, 0.0, false, true),
        "zero-sub" => |r| with_const_left(r, BinaryOp::Sub, 0.0),
        "mul-one" => |r| with_const(r, BinaryOp::Mul, 1.0, true, true),
        "mul-neg-one" => |r| with_const(r, BinaryOp::Mul, -1.0, true, true),
        "div-one" => |r| with_const(r, BinaryOp::Div, 1.0, false, false),
        "div-const" => div_const,
        "one-div" => one_div,
        "neg-neg" => neg_neg,
        "add-neg" => add_neg,
        "sub-neg" => sub_neg,
        "mul-const-const" => |r| const_const(r, BinaryOp::Mul),
        "pow-to-mul" => pow_to_mul,
        "pow-to-root" => pow_to_root,
        "recip-sqrt" => recip_sqrt,
        "div-sqrt" => div_sqrt,
        "cast-identity" => cast_identity,
        "cast-cast" => cast_cast,
        "select-const" => select_const,
        "splat-fold" => splat_fold,
        "const-fold" => const_fold,
        "splat-operand" => splat_operand,
        "flash-attention" => |r| attention_support::Spelling::random(r).build(),
        "scan-linear-recurrence" => |r| {
            if r.random_bool(0.5) {
                linear_scan_support::mamba_like(r)
            } else {
                linear_scan_support::retnet_like(r)
            }
        },
        _ => return None,
    };
    Some(g)
}

#[test]
fn every_rule_has_a_soundness_generator() {
    let missing: Vec<&str> = registry()
        .iter()
        .map(|r| r.name)
        .filter(|n| generator(n).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "rules without a soundness test: {missing:?}"
    );
}

#[test]
fn every_rule_is_sound() {
    let opts = PassOptions::default();
    for rule in registry() {
        let gen = generator(rule.name).expect("checked by every_rule_has_a_soundness_generator");
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: 128,
                failure_persistence: None,
                ..Config::default()
            },
            proptest::test_runner::TestRng::deterministic_rng(
                proptest::test_runner::RngAlgorithm::ChaCha,
            ),
        );
        let compared = std::cell::Cell::new(0usize);
        let result = runner.run(&any::<u64>(), |seed| {
            let before = gen(&mut rng(seed));
            let (after, report) = run_rules(&before, &[rule], &opts)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{before}")))?;
            kiln_ir::verify(&after).map_err(|e| TestCaseError::fail(format!("{e}\n{after}")))?;
            if report.applied(rule.name) == 0 {
                return Err(TestCaseError::fail(format!(
                    "the rule did not fire on\n{before}"
                )));
            }
            let exact = rule.exactness != Exactness::Approximate;
            let n = check_same(&before, &after, exact, seed ^ 0x5eed, 3)
                .map_err(TestCaseError::fail)?;
            compared.set(compared.get() + n);
            Ok(())
        });
        if let Err(e) = result {
            panic!("rule `{}`: {e}", rule.name);
        }
        assert!(
            compared.get() > 0,
            "rule `{}`: no case could be evaluated",
            rule.name
        );
    }
}

// ---------------------------------------------------------------------------
// Generators.

fn unary(g: &mut G, u: UnaryOp, x: kiln_ir::Value) -> kiln_ir::Value {
    g.op(Op::Unary(u), &[x])
}

fn binary(g: &mut G, b: BinaryOp, x: kiln_ir::Value, y: kiln_ir::Value) -> kiln_ir::Value {
    g.op(Op::Binary(b), &[x, y])
}

/// A positive float input (`exp` of an input) for roots and reciprocals.
fn positive(g: &mut G, shape: Vec<Dim>) -> kiln_ir::Value {
    let x = g.input(DType::F32, shape);
    unary(g, UnaryOp::Exp, x)
}

fn permute_permute(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 2..=4);
    let x = g.input(any_dtype(r), s.clone());
    let p1 = perm(r, s.len());
    let p2 = perm(r, s.len());
    let a = g.op(Op::Permute { perm: p1 }, &[x]);
    let b = g.op(Op::Permute { perm: p2 }, &[a]);
    g.out(b);
    g.finish()
}

fn permute_identity(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 1..=4);
    let x = g.input(any_dtype(r), s.clone());
    let p = g.op(
        Op::Permute {
            perm: (0..s.len()).collect(),
        },
        &[x],
    );
    let y = g.op(Op::Cast(DType::F32), &[p]);
    g.out(y);
    g.finish()
}

fn permute_to_reshape(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    // Non-unit axes keep their order; unit axes move.
    let big: Vec<Dim> = (0..r.random_range(1..=3))
        .map(|_| {
            if r.random_bool(0.5) {
                Dim::sym("seq")
            } else {
                Dim::constant(r.random_range(2..5))
            }
        })
        .collect();
    let units = r.random_range(1..=2);
    let mut s = big.clone();
    for _ in 0..units {
        let at = r.random_range(0..=s.len());
        s.insert(at, Dim::constant(1));
    }
    let unit_axes: Vec<usize> = (0..s.len()).filter(|&i| s[i] == Dim::constant(1)).collect();
    let big_axes: Vec<usize> = (0..s.len()).filter(|&i| s[i] != Dim::constant(1)).collect();
    let mut p = big_axes.clone();
    loop {
        let mut q = p.clone();
        for &u in &unit_axes {
            let at = r.random_range(0..=q.len());
            q.insert(at, u);
        }
        if q.iter().enumerate().any(|(i, &a)| i != a) {
            p = q;
            break;
        }
    }
    let x = g.input(any_dtype(r), s);
    let y = g.op(Op::Permute { perm: p }, &[x]);
    g.out(y);
    g.finish()
}

/// A random grouping of `factors` into dims, with random unit dims inserted.
fn grouping(r: &mut StdRng, factors: &[Dim]) -> Vec<Dim> {
    let mut out = Vec::new();
    let mut cur = Dim::constant(1);
    for (i, f) in factors.iter().enumerate() {
        cur = &cur * f;
        if i + 1 == factors.len() || r.random_bool(0.5) {
            out.push(std::mem::replace(&mut cur, Dim::constant(1)));
        }
        if r.random_bool(0.2) {
            out.push(Dim::constant(1));
        }
    }
    out
}

fn factors(r: &mut StdRng) -> Vec<Dim> {
    (0..r.random_range(2..=4))
        .map(|_| match r.random_range(0..4) {
            0 => Dim::sym("seq"),
            1 => Dim::sym("n"),
            k => Dim::constant(k as i64),
        })
        .collect()
}

fn reshape_reshape(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let f = factors(r);
    let x = g.input(any_dtype(r), grouping(r, &f));
    let a = g.op(
        Op::Reshape {
            shape: grouping(r, &f),
        },
        &[x],
    );
    let b = g.op(
        Op::Reshape {
            shape: grouping(r, &f),
        },
        &[a],
    );
    g.out(b);
    g.finish()
}

fn reshape_identity(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 0..=3);
    let x = g.input(any_dtype(r), s.clone());
    let y = g.op(Op::Reshape { shape: s }, &[x]);
    let z = g.op(Op::Cast(DType::F32), &[y]);
    g.out(z);
    g.finish()
}

/// `s` with some unit dims and possibly fewer leading axes: a shape that broadcasts to `s`.
fn narrower(r: &mut StdRng, s: &[Dim]) -> Vec<Dim> {
    let drop = r.random_range(0..=s.len().min(1));
    s[drop..]
        .iter()
        .map(|d| {
            if r.random_bool(0.4) {
                Dim::constant(1)
            } else {
                d.clone()
            }
        })
        .collect()
}

fn broadcast_broadcast(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s2 = shape(r, 1..=4);
    let s1 = narrower(r, &s2);
    let s0 = narrower(r, &s1);
    let x = g.input(any_dtype(r), s0);
    let a = g.op(Op::Broadcast { shape: s1 }, &[x]);
    let b = g.op(Op::Broadcast { shape: s2 }, &[a]);
    g.out(b);
    g.finish()
}

fn broadcast_identity(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 0..=3);
    let x = g.input(any_dtype(r), s.clone());
    let y = g.op(Op::Broadcast { shape: s }, &[x]);
    let z = g.op(Op::Cast(DType::F32), &[y]);
    g.out(z);
    g.finish()
}

fn broadcast_absorbs_reshape(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let core = shape(r, 1..=2);
    let (xs, rs) = if r.random_bool(0.5) {
        let mut rs = vec![Dim::constant(1); r.random_range(1..=2)];
        rs.extend(core.iter().cloned());
        (core.clone(), rs)
    } else {
        let mut xs = vec![Dim::constant(1)];
        xs.extend(core.iter().cloned());
        (xs, core.clone())
    };
    let lead = (rs.len() - core.len()).max(1) + r.random_range(0..=1);
    let mut target: Vec<Dim> = (0..lead).map(|_| dim(r)).collect();
    target.extend(core.iter().cloned());
    let x = g.input(any_dtype(r), xs);
    let a = g.op(Op::Reshape { shape: rs }, &[x]);
    let b = g.op(Op::Broadcast { shape: target }, &[a]);
    g.out(b);
    g.finish()
}

fn slice_identity(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 1..=3);
    let axis = r.random_range(0..s.len());
    let x = g.input(any_dtype(r), s.clone());
    let y = g.op(
        Op::Slice {
            axis,
            start: Dim::constant(0),
            end: s[axis].clone(),
        },
        &[x],
    );
    let z = g.op(Op::Cast(DType::F32), &[y]);
    g.out(z);
    g.finish()
}

fn slice_slice(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let mut s = shape(r, 1..=3);
    let axis = r.random_range(0..s.len());
    let symbolic = r.random_bool(0.5);
    let n = r.random_range(4..9i64);
    s[axis] = if symbolic {
        &Dim::sym("seq") + &Dim::constant(n)
    } else {
        Dim::constant(n)
    };
    let x = g.input(any_dtype(r), s.clone());
    let s1 = r.random_range(0..3i64);
    let e1 = if symbolic {
        &Dim::sym("seq") + &Dim::constant(r.random_range(s1 + 2..=n))
    } else {
        Dim::constant(r.random_range(s1 + 2..=n))
    };
    let a = g.op(
        Op::Slice {
            axis,
            start: Dim::constant(s1),
            end: e1.clone(),
        },
        &[x],
    );
    let len = &e1 - &Dim::constant(s1);
    let s2 = r.random_range(0..2i64);
    let e2 = &len - &Dim::constant(r.random_range(0..2i64));
    let b = g.op(
        Op::Slice {
            axis,
            start: Dim::constant(s2),
            end: e2,
        },
        &[a],
    );
    g.out(b);
    g.finish()
}

fn pad_zero(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 1..=3);
    let axis = r.random_range(0..s.len());
    let x = g.input(DType::F32, s);
    let y = g.op(
        Op::Pad {
            axis,
            low: Dim::constant(0),
            high: Dim::constant(0),
            value: kiln_ir::op::F64Bits(r.random_range(-3.0..3.0)),
        },
        &[x],
    );
    let z = unary(&mut g, UnaryOp::Tanh, y);
    g.out(z);
    g.finish()
}

fn concat_one(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 1..=3);
    let axis = r.random_range(0..s.len());
    let x = g.input(any_dtype(r), s);
    let y = g.op(Op::Concat { axis }, &[x]);
    g.out(y);
    g.finish()
}

fn unary_before_broadcast(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let mut big = shape(r, 1..=3);
    big.insert(0, Dim::constant(r.random_range(2..4)));
    let small = narrower(r, &big[1..]);
    let x = g.input(float_dtype(r), small);
    let b = g.op(Op::Broadcast { shape: big }, &[x]);
    let op = [
        Op::Unary(UnaryOp::Exp),
        Op::Unary(UnaryOp::Neg),
        Op::Unary(UnaryOp::Tanh),
        Op::Unary(UnaryOp::Silu),
        Op::Cast(DType::F32),
        Op::Cast(DType::I32),
    ][r.random_range(0..6)]
    .clone();
    let y = g.op(op, &[b]);
    g.out(y);
    g.finish()
}

fn binary_before_broadcast(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let mut big = shape(r, 1..=3);
    big.insert(0, Dim::constant(r.random_range(2..4)));
    let small = narrower(r, &big[1..]);
    let d = float_dtype(r);
    let x = g.input(d, small.clone());
    let bx = g.op(Op::Broadcast { shape: big.clone() }, &[x]);
    let other = if r.random_bool(0.5) {
        let y = g.input(d, small);
        g.op(Op::Broadcast { shape: big }, &[y])
    } else if r.random_bool(0.5) {
        g.input(d, vec![])
    } else {
        g.scalar(d, r.random_range(-2.0..2.0))
    };
    let op = [
        Op::Binary(BinaryOp::Add),
        Op::Binary(BinaryOp::Mul),
        Op::Binary(BinaryOp::Max),
        Op::Binary(BinaryOp::Sub),
        Op::Compare(CmpOp::Lt),
    ][r.random_range(0..5)]
    .clone();
    let args = if r.random_bool(0.5) {
        [bx, other]
    } else {
        [other, bx]
    };
    let y = g.op(op, &args);
    g.out(y);
    g.finish()
}

fn reduce_keepdims(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 1..=3);
    let mut axes: Vec<usize> = (0..s.len()).filter(|_| r.random_bool(0.5)).collect();
    if axes.is_empty() {
        axes.push(s.len() - 1);
    }
    let x = g.input(DType::F32, s.clone());
    let op = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::Mean][r.random_range(0..4)];
    let red = g.op(
        Op::Reduce {
            op,
            axes: axes.clone(),
            keep_dims: false,
        },
        &[x],
    );
    let kept = (0..s.len())
        .map(|i| {
            if axes.contains(&i) {
                Dim::constant(1)
            } else {
                s[i].clone()
            }
        })
        .collect();
    let y = g.op(Op::Reshape { shape: kept }, &[red]);
    g.out(y);
    g.finish()
}

/// `x op c` (or `c op x` when `commutes`), `c` a splat of value `v` in a
/// random spelling, sometimes of a larger shape than `x`.
fn with_const(r: &mut StdRng, b: BinaryOp, v: f64, commutes: bool, ints: bool) -> Graph {
    let mut g = G::new("t");
    let d = if ints && r.random_bool(0.3) {
        DType::I32
    } else {
        float_dtype(r)
    };
    let s = shape(r, 0..=3);
    let x = g.input(d, s.clone());
    let mut cs = s.clone();
    if r.random_bool(0.3) {
        cs.insert(0, Dim::constant(2));
    }
    let c = g.splat(d, v, &cs, r);
    let y = if commutes && r.random_bool(0.5) {
        binary(&mut g, b, c, x)
    } else {
        binary(&mut g, b, x, c)
    };
    g.out(y);
    g.finish()
}

fn with_const_left(r: &mut StdRng, b: BinaryOp, v: f64) -> Graph {
    let mut g = G::new("t");
    let d = if r.random_bool(0.3) {
        DType::I32
    } else {
        float_dtype(r)
    };
    let s = shape(r, 0..=3);
    let x = g.input(d, s.clone());
    let c = g.splat(d, v, &s, r);
    let y = binary(&mut g, b, c, x);
    g.out(y);
    g.finish()
}

fn div_const(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 0..=3);
    let x = g.input(DType::F32, s.clone());
    let v = r.random_range(0.1..10.0) * if r.random_bool(0.5) { -1.0 } else { 1.0 };
    let c = g.splat(DType::F32, v, &s, r);
    let y = binary(&mut g, BinaryOp::Div, x, c);
    g.out(y);
    g.finish()
}

fn one_div(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 0..=3);
    let x = positive(&mut g, s.clone());
    let c = g.splat(DType::F32, 1.0, &s, r);
    let y = binary(&mut g, BinaryOp::Div, c, x);
    g.out(y);
    g.finish()
}

fn neg_neg(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let d = [DType::F32, DType::F16, DType::I32, DType::I8][r.random_range(0..4)];
    let x = g.input(d, shape(r, 0..=3));
    let a = unary(&mut g, UnaryOp::Neg, x);
    let b = unary(&mut g, UnaryOp::Neg, a);
    g.out(b);
    g.finish()
}

fn add_neg(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let d = [DType::F32, DType::F16, DType::I32][r.random_range(0..3)];
    let s = shape(r, 1..=3);
    let x = g.input(d, s.clone());
    let y = g.input(d, narrower(r, &s));
    let n = unary(&mut g, UnaryOp::Neg, y);
    let z = if r.random_bool(0.5) {
        binary(&mut g, BinaryOp::Add, x, n)
    } else {
        binary(&mut g, BinaryOp::Add, n, x)
    };
    g.out(z);
    g.finish()
}

fn sub_neg(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let d = [DType::F32, DType::F16, DType::I32][r.random_range(0..3)];
    let s = shape(r, 1..=3);
    let x = g.input(d, s.clone());
    let y = g.input(d, narrower(r, &s));
    let n = unary(&mut g, UnaryOp::Neg, y);
    let z = binary(&mut g, BinaryOp::Sub, x, n);
    g.out(z);
    g.finish()
}

fn const_const(r: &mut StdRng, b: BinaryOp) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 0..=3);
    let x = g.input(DType::F32, s.clone());
    let c1 = g.splat(DType::F32, r.random_range(-4.0..4.0), &s, r);
    let c2 = g.splat(DType::F32, r.random_range(-4.0..4.0), &s, r);
    let inner = if r.random_bool(0.5) {
        binary(&mut g, b, x, c1)
    } else {
        binary(&mut g, b, c1, x)
    };
    let y = if r.random_bool(0.5) {
        binary(&mut g, b, inner, c2)
    } else {
        binary(&mut g, b, c2, inner)
    };
    g.out(y);
    g.finish()
}

fn pow_to_mul(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 0..=3);
    let x = g.input(DType::F32, s.clone());
    let e = g.splat(
        DType::F32,
        if r.random_bool(0.5) { 1.0 } else { 2.0 },
        &s,
        r,
    );
    let y = binary(&mut g, BinaryOp::Pow, x, e);
    g.out(y);
    g.finish()
}

fn pow_to_root(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 0..=3);
    let x = positive(&mut g, s.clone());
    let e = g.splat(DType::F32, [0.5, -0.5, -1.0][r.random_range(0..3)], &s, r);
    let y = binary(&mut g, BinaryOp::Pow, x, e);
    g.out(y);
    g.finish()
}

fn recip_sqrt(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let x = positive(&mut g, shape(r, 0..=3));
    let s = unary(&mut g, UnaryOp::Sqrt, x);
    let y = unary(&mut g, UnaryOp::Recip, s);
    g.out(y);
    g.finish()
}

fn div_sqrt(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 1..=3);
    let x = g.input(DType::F32, s.clone());
    let y = positive(&mut g, narrower(r, &s));
    let q = unary(&mut g, UnaryOp::Sqrt, y);
    let z = binary(&mut g, BinaryOp::Div, x, q);
    g.out(z);
    g.finish()
}

fn cast_identity(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let d = any_dtype(r);
    let x = g.input(d, shape(r, 0..=3));
    let y = g.op(Op::Cast(d), &[x]);
    g.out(y);
    g.finish()
}

fn cast_cast(r: &mut StdRng) -> Graph {
    use DType::*;
    let mut g = G::new("t");
    // (source, a lossless intermediate)
    let pairs = [
        (F16, F32),
        (BF16, F32),
        (I8, I32),
        (U8, I64),
        (Bool, F32),
        (I32, I64),
        (U8, F16),
    ];
    let (x_ty, mid) = pairs[r.random_range(0..pairs.len())];
    let to = [F32, F16, BF16, I32, I64, U8, I8, Bool, x_ty][r.random_range(0..9)];
    let x = g.input(x_ty, shape(r, 0..=3));
    let a = g.op(Op::Cast(mid), &[x]);
    let b = g.op(Op::Cast(to), &[a]);
    g.out(b);
    g.finish()
}

fn select_const(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 0..=3);
    let d = float_dtype(r);
    let a = g.input(d, s.clone());
    let b = g.input(d, narrower(r, &s));
    let cond = if r.random_bool(0.5) {
        g.splat(
            DType::Bool,
            if r.random_bool(0.5) { 1.0 } else { 0.0 },
            &s,
            r,
        )
    } else {
        // A condition computed from constants: 1 < 2 or 2 < 1.
        let one = g.scalar(DType::F32, 1.0);
        let two = g.scalar(DType::F32, 2.0);
        let (p, q) = if r.random_bool(0.5) {
            (one, two)
        } else {
            (two, one)
        };
        g.op(Op::Compare(CmpOp::Lt), &[p, q])
    };
    let y = g.op(Op::Select, &[cond, a, b]);
    g.out(y);
    g.finish()
}

fn splat_fold(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 0..=3);
    let d = float_dtype(r);
    let a = g.splat(d, r.random_range(-2.0..2.0), &s, r);
    let b = g.splat(d, r.random_range(0.5..2.0), &s, r);
    let op = [
        Op::Binary(BinaryOp::Add),
        Op::Binary(BinaryOp::Mul),
        Op::Binary(BinaryOp::Div),
        Op::Binary(BinaryOp::Max),
    ][r.random_range(0..4)]
    .clone();
    let c = g.op(op, &[a, b]);
    let e = unary(
        &mut g,
        [UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Neg][r.random_range(0..3)],
        c,
    );
    // Combined with a real input so that the folded value feeds a computation.
    let x = g.input(d, s);
    let y = binary(&mut g, BinaryOp::Add, x, e);
    g.out(y);
    g.finish()
}

fn const_fold(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let n = r.random_range(2..8usize);
    let d = float_dtype(r);
    let iota = g.op(
        Op::Iota {
            ty: kiln_ir::TensorType::new(DType::I32, vec![Dim::from(n)]),
            axis: 0,
        },
        &[],
    );
    let f = g.op(Op::Cast(d), &[iota]);
    let values: Vec<f64> = (0..n).map(|_| r.random_range(-2.0..2.0)).collect();
    let c = g.op(Op::Const(Literal::floats(d, vec![n], &values)), &[]);
    let op = [BinaryOp::Add, BinaryOp::Mul, BinaryOp::Sub][r.random_range(0..3)];
    let k = binary(&mut g, op, f, c);
    let k = if r.random_bool(0.5) {
        unary(&mut g, UnaryOp::Sin, k)
    } else {
        k
    };
    let x = g.input(d, vec![Dim::sym("seq"), Dim::from(n)]);
    let y = binary(&mut g, BinaryOp::Mul, x, k);
    g.out(y);
    g.finish()
}

fn splat_operand(r: &mut StdRng) -> Graph {
    let mut g = G::new("t");
    let s = shape(r, 1..=3);
    let d = float_dtype(r);
    let x = g.input(d, narrower(r, &s));
    let v = r.random_range(-2.0..2.0);
    // A rank > 0 splat: a broadcast of a scalar or a filled tensor.
    let c = if r.random_bool(0.5) {
        let k = g.scalar(d, v);
        g.op(Op::Broadcast { shape: s.clone() }, &[k])
    } else {
        let k = g.op(Op::Const(Literal::filled(d, vec![1], v)), &[]);
        let units = vec![Dim::constant(1); s.len()];
        g.op(Op::Reshape { shape: units }, &[k])
    };
    let y = match r.random_range(0..3) {
        0 => binary(&mut g, BinaryOp::Mul, x, c),
        1 => binary(&mut g, BinaryOp::Sub, c, x),
        _ => {
            let cond = g.op(Op::Compare(CmpOp::Gt), &[x, c]);
            g.op(Op::Select, &[cond, x, c])
        }
    };
    g.out(y);
    g.finish()
}
