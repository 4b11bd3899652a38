//! Element-wise ops against hand-written f64 formulas: unary functions,
//! broadcasting binary ops, integer wrapping, comparisons, select and cast.

mod interp_common;
use interp_common::*;

use kiln_ir::interp::{round_bf16, round_f16, InterpError};
use kiln_ir::{BinaryOp, CmpOp, DType, Op, Tensor, TensorData, UnaryOp};
use std::f64::consts::{PI, SQRT_2};

fn unary_formula(u: UnaryOp, x: f64) -> f64 {
    match u {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::Gelu => 0.5 * x * (1.0 + erf_series(x / SQRT_2)),
        UnaryOp::GeluTanh => {
            0.5 * x * (1.0 + ((2.0 / PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        }
        UnaryOp::Softplus => (1.0 + x.exp()).ln(),
        UnaryOp::Floor => x.floor(),
        UnaryOp::Not => unreachable!("not a float op"),
    }
}

/// Input range where the f64 formula above is itself accurate.
fn unary_range(u: UnaryOp) -> (f64, f64) {
    match u {
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => (0.01, 10.0),
        UnaryOp::Recip => (0.1, 5.0),
        // 1+erf(z) cancels for very negative z; keep the formula accurate.
        UnaryOp::Gelu => (-3.0, 6.0),
        _ => (-6.0, 6.0),
    }
}

fn float_unaries() -> Vec<UnaryOp> {
    UnaryOp::ALL
        .iter()
        .copied()
        .filter(|u| *u != UnaryOp::Not)
        .collect()
}

#[test]
fn unary_float_ops_match_f64_formulas_at_several_sizes() {
    let mut r = rng(1);
    for u in float_unaries() {
        let mut b = B::new("un");
        let x = b.input("x", f32t(&["seq", "5"]));
        let y = b.un(u, x);
        b.out("y", y);
        for seq in [1usize, 3, 7] {
            let (lo, hi) = unary_range(u);
            let (t, v) = rand_f32(&mut r, &[seq, 5], lo, hi);
            let v: Vec<f64> = if u == UnaryOp::Recip {
                v.iter()
                    .enumerate()
                    .map(|(i, &a)| if i % 2 == 0 { a } else { -a })
                    .collect()
            } else {
                v
            };
            let t = if u == UnaryOp::Recip {
                f32_tensor(&[seq, 5], &v)
            } else {
                t
            };
            let want: Vec<f64> = v.iter().map(|&a| unary_formula(u, a)).collect();
            let got = run(&b.g, vec![("x", t.clone())]);
            assert_eq!(got.shape, vec![seq, 5]);
            assert_f32_ulp(&got, &want, u.name());
            let got64 = run64(&b.g, vec![("x", t)]);
            assert!(matches!(got64.data, TensorData::F64(_)), "F64 storage");
            assert_close(&got64.to_f64_vec(), &want, 1e-12, 1e-300, u.name());
        }
    }
}

#[test]
fn unary_f16_and_bf16_round_the_result_to_the_type() {
    let mut r = rng(2);
    for (dtype, rel) in [(DType::F16, 2f64.powi(-11)), (DType::BF16, 2f64.powi(-8))] {
        for u in float_unaries() {
            let mut b = B::new("un");
            let x = b.input("x", ty(dtype, &["8"]));
            let y = b.un(u, x);
            b.out("y", y);
            let (lo, hi) = unary_range(u);
            let v: Vec<f64> = rand_vals(&mut r, 8, lo, hi)
                .into_iter()
                .map(|a| {
                    if dtype == DType::F16 {
                        round_f16(a).to_f64()
                    } else {
                        round_bf16(a).to_f64()
                    }
                })
                .collect();
            let t = Tensor::from_f64(dtype, vec![8], &v).unwrap();
            let got = run(&b.g, vec![("x", t)]);
            assert_eq!(got.dtype(), dtype);
            let want: Vec<f64> = v.iter().map(|&a| unary_formula(u, a)).collect();
            // Within half a unit in the last place (+ the smallest subnormal).
            assert_close(&got.to_f64_vec(), &want, rel * 1.0001, 6e-8, u.name());
        }
    }
}

/// Binary ops with numpy broadcasting, in f32: `+ - * /` must be exactly the
/// f32 operation (one rounding from f64 equals IEEE f32 arithmetic).
#[test]
fn binary_float_ops_broadcast_and_round_like_f32() {
    let mut r = rng(3);
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![3, 1, 5], vec![4, 1]),
        (vec![], vec![2, 3]),
        (vec![2, 3], vec![2, 3]),
        (vec![1], vec![0, 4]),
        (vec![4, 1, 2], vec![1, 3, 1]),
    ];
    for (sa, sb) in cases {
        let out: Vec<usize> = {
            let rank = sa.len().max(sb.len());
            (0..rank)
                .map(|i| {
                    let da = (i + sa.len()).checked_sub(rank).map_or(1, |j| sa[j]);
                    let db = (i + sb.len()).checked_sub(rank).map_or(1, |j| sb[j]);
                    if da == 1 {
                        db
                    } else {
                        da
                    }
                })
                .collect()
        };
        let dims = |s: &[usize]| s.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        let (da, db) = (dims(&sa), dims(&sb));
        let (ta, va) = rand_f32(&mut r, &sa, -4.0, 4.0);
        let (tb, vb) = rand_f32(&mut r, &sb, 0.25, 4.0);
        for op in [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Max,
            BinaryOp::Min,
            BinaryOp::Pow,
        ] {
            let mut b = B::new("bin");
            let x = b.input(
                "a",
                f32t(&da.iter().map(String::as_str).collect::<Vec<_>>()),
            );
            let y = b.input(
                "b",
                f32t(&db.iter().map(String::as_str).collect::<Vec<_>>()),
            );
            // pow needs a positive base: swap the operands.
            let z = if op == BinaryOp::Pow {
                b.bin(op, y, x)
            } else {
                b.bin(op, x, y)
            };
            b.out("y", z);
            let got = run(&b.g, vec![("a", ta.clone()), ("b", tb.clone())]);
            assert_eq!(got.shape, out, "{op:?} shape");
            let n: usize = out.iter().product();
            let got = got.to_f64_vec();
            assert_eq!(got.len(), n);
            for (i, &g) in got.iter().enumerate() {
                let idx = unravel(i, &out);
                let (a, c) = (bcast_get(&va, &sa, &idx), bcast_get(&vb, &sb, &idx));
                let (fa, fc) = (a as f32, c as f32);
                let want = match op {
                    BinaryOp::Add => (fa + fc) as f64,
                    BinaryOp::Sub => (fa - fc) as f64,
                    BinaryOp::Mul => (fa * fc) as f64,
                    BinaryOp::Div => (fa / fc) as f64,
                    BinaryOp::Max => {
                        if a > c {
                            a
                        } else {
                            c
                        }
                    }
                    BinaryOp::Min => {
                        if a < c {
                            a
                        } else {
                            c
                        }
                    }
                    BinaryOp::Pow => c.powf(a),
                    _ => unreachable!(),
                };
                if op == BinaryOp::Pow {
                    assert!(
                        (g - want).abs() <= want.abs() * f32::EPSILON as f64,
                        "pow {c}^{a}"
                    );
                } else {
                    assert_eq!(g, want, "{op:?} at {idx:?}: {a} {c}");
                }
            }
        }
    }
}

#[test]
fn max_min_propagate_nan_and_handle_infinities() {
    let mut b = B::new("mm");
    let x = b.input("a", f32t(&["4"]));
    let y = b.input("b", f32t(&["4"]));
    let mx = b.bin(BinaryOp::Max, x, y);
    let mn = b.bin(BinaryOp::Min, x, y);
    b.out("max", mx);
    b.out("min", mn);
    let a = f32_tensor(&[4], &[f64::NAN, 1.0, f64::NEG_INFINITY, 2.0]);
    let c = f32_tensor(&[4], &[1.0, f64::NAN, -3.0, f64::NEG_INFINITY]);
    let outs = kiln_ir::interp::eval(&b.g, &named(vec![("a", a), ("b", c)]), &no_params()).unwrap();
    let mx = outs["max"].to_f64_vec();
    let mn = outs["min"].to_f64_vec();
    assert!(mx[0].is_nan() && mx[1].is_nan() && mn[0].is_nan() && mn[1].is_nan());
    assert_eq!(&mx[2..], &[-3.0, 2.0]);
    assert_eq!(&mn[2..], &[f64::NEG_INFINITY, f64::NEG_INFINITY]);
}

fn int_binary(dtype: DType, op: BinaryOp, a: &[i64], c: &[i64]) -> Result<Vec<i64>, InterpError> {
    let mut b = B::new("ib");
    let n = a.len().to_string();
    let x = b.input("a", ty(dtype, &[&n]));
    let y = b.input("b", ty(dtype, &[&n]));
    let z = b.bin(op, x, y);
    b.out("y", z);
    let mk = |v: &[i64]| {
        Tensor::from_f64(
            dtype,
            vec![v.len()],
            &v.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        )
        .unwrap()
    };
    let mk = |v: &[i64]| match dtype {
        DType::I64 => Tensor::i64(vec![v.len()], v.to_vec()).unwrap(),
        _ => mk(v),
    };
    let outs = kiln_ir::interp::eval(&b.g, &named(vec![("a", mk(a)), ("b", mk(c))]), &no_params())?;
    let t = &outs["y"];
    assert_eq!(t.dtype(), dtype);
    Ok(t.to_i64_vec().unwrap())
}

#[test]
fn integer_arithmetic_wraps_in_its_width_and_divides_toward_zero() {
    let (mx, mn) = (i32::MAX as i64, i32::MIN as i64);
    let a = [mx, mn, -7, 7, 100_000];
    let c = [1, -1, 2, -2, 100_000];
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ] {
        let got = int_binary(DType::I32, op, &a, &c).unwrap();
        let want: Vec<i64> = a
            .iter()
            .zip(&c)
            .map(|(&x, &y)| {
                let (x, y) = (x as i32, y as i32);
                (match op {
                    BinaryOp::Add => x.wrapping_add(y),
                    BinaryOp::Sub => x.wrapping_sub(y),
                    BinaryOp::Mul => x.wrapping_mul(y),
                    BinaryOp::Div => x.wrapping_div(y),
                    BinaryOp::Max => x.max(y),
                    BinaryOp::Min => x.min(y),
                    _ => unreachable!(),
                }) as i64
            })
            .collect();
        assert_eq!(got, want, "{op:?}");
    }
    // Spelled out: overflow wraps, division truncates toward zero.
    assert_eq!(
        int_binary(DType::I32, BinaryOp::Add, &[mx], &[1]).unwrap(),
        vec![mn]
    );
    assert_eq!(
        int_binary(DType::I32, BinaryOp::Div, &[-7, 7, mn], &[2, -2, -1]).unwrap(),
        vec![-3, -3, mn]
    );
    assert_eq!(
        int_binary(DType::I8, BinaryOp::Add, &[127, -128], &[1, -1]).unwrap(),
        vec![-128, 127]
    );
    assert_eq!(
        int_binary(DType::U8, BinaryOp::Sub, &[3], &[5]).unwrap(),
        vec![254]
    );
    assert_eq!(
        int_binary(DType::U8, BinaryOp::Mul, &[16], &[16]).unwrap(),
        vec![0]
    );
    assert_eq!(
        int_binary(DType::I64, BinaryOp::Mul, &[i64::MAX, i64::MIN], &[2, -1]).unwrap(),
        vec![-2, i64::MIN]
    );
    let e = int_binary(DType::I32, BinaryOp::Div, &[1, 2], &[1, 0]).unwrap_err();
    assert!(matches!(e, InterpError::DivisionByZero { .. }), "{e}");
    assert!(
        e.to_string().contains("`div`") && e.to_string().contains("division by zero"),
        "{e}"
    );
}

#[test]
fn integer_neg_and_abs_wrap_at_the_minimum() {
    for (dtype, min) in [(DType::I32, i32::MIN as i64), (DType::I8, i8::MIN as i64)] {
        for u in [UnaryOp::Neg, UnaryOp::Abs] {
            let mut b = B::new("iu");
            let x = b.input("x", ty(dtype, &["3"]));
            let y = b.un(u, x);
            b.out("y", y);
            let t = Tensor::from_f64(dtype, vec![3], &[min as f64, -5.0, 6.0]).unwrap();
            let got = run(&b.g, vec![("x", t)]).to_i64_vec().unwrap();
            let want = match u {
                UnaryOp::Neg => vec![min, 5, -6],
                _ => vec![min, 5, 6],
            };
            assert_eq!(got, want, "{dtype} {u:?}");
        }
    }
}

#[test]
fn comparisons_follow_ieee_and_broadcast() {
    let nan = f64::NAN;
    let mut b = B::new("cmp");
    let x = b.input("a", f32t(&["4", "1"]));
    let y = b.input("b", f32t(&["3"]));
    let av = [1.0, nan, -0.0, f64::INFINITY];
    let bv = [1.0, 0.0, nan];
    for c in CmpOp::ALL {
        let z = b.cmp(*c, x, y);
        b.out(c.name(), z);
    }
    let outs = kiln_ir::interp::eval(
        &b.g,
        &named(vec![
            ("a", f32_tensor(&[4, 1], &av)),
            ("b", f32_tensor(&[3], &bv)),
        ]),
        &no_params(),
    )
    .unwrap();
    for c in CmpOp::ALL {
        let t = &outs[c.name()];
        assert_eq!(t.shape, vec![4, 3]);
        let TensorData::Bool(got) = &t.data else {
            panic!("bool result")
        };
        for i in 0..4 {
            for j in 0..3 {
                let (p, q) = (av[i], bv[j]);
                let want = match c {
                    CmpOp::Eq => p == q,
                    CmpOp::Ne => p != q,
                    CmpOp::Lt => p < q,
                    CmpOp::Le => p <= q,
                    CmpOp::Gt => p > q,
                    CmpOp::Ge => p >= q,
                };
                assert_eq!(got[i * 3 + j], want, "{c:?} {p} {q}");
            }
        }
    }
    // -0 == 0, NaN != NaN.
    let TensorData::Bool(eq) = &outs["eq"].data else {
        unreachable!()
    };
    assert!(!eq[3] && eq[0]);
}

#[test]
fn bool_ops_and_integer_compare() {
    let mut b = B::new("bools");
    let x = b.input("a", ty(DType::Bool, &["2", "1"]));
    let y = b.input("b", ty(DType::Bool, &["2"]));
    let and = b.bin(BinaryOp::And, x, y);
    let or = b.bin(BinaryOp::Or, x, y);
    let not = b.un(UnaryOp::Not, and);
    b.out("and", and);
    b.out("or", or);
    b.out("not", not);
    let p = b.input("p", ty(DType::I64, &["3"]));
    let q = b.input("q", ty(DType::I64, &["3"]));
    let lt = b.cmp(CmpOp::Lt, p, q);
    b.out("lt", lt);
    let bools =
        |v: &[bool], s: &[usize]| Tensor::new(s.to_vec(), TensorData::Bool(v.to_vec())).unwrap();
    let outs = kiln_ir::interp::eval(
        &b.g,
        &named(vec![
            ("a", bools(&[true, false], &[2, 1])),
            ("b", bools(&[true, false], &[2])),
            ("p", Tensor::i64(vec![3], vec![i64::MIN, 5, 7]).unwrap()),
            ("q", Tensor::i64(vec![3], vec![i64::MAX, 5, -7]).unwrap()),
        ]),
        &no_params(),
    )
    .unwrap();
    let get = |n: &str| match &outs[n].data {
        TensorData::Bool(v) => v.clone(),
        _ => panic!("{n} is not bool"),
    };
    assert_eq!(get("and"), vec![true, false, false, false]);
    assert_eq!(get("or"), vec![true, true, true, false]);
    assert_eq!(get("not"), vec![false, true, true, true]);
    assert_eq!(get("lt"), vec![true, false, false]);
}

#[test]
fn select_broadcasts_all_three_operands() {
    let mut r = rng(4);
    for dtype in [DType::F32, DType::I32, DType::F16] {
        let mut b = B::new("sel");
        let c = b.input("c", ty(DType::Bool, &["2", "1", "1"]));
        let x = b.input("a", ty(dtype, &["1", "3", "1"]));
        let y = b.input("b", ty(dtype, &["4"]));
        let z = b.select(c, x, y);
        b.out("y", z);
        let cv = [true, false];
        let av: Vec<f64> = (0..3).map(|_| r.random_range(-9..9) as f64).collect();
        let bv: Vec<f64> = (0..4).map(|_| r.random_range(-9..9) as f64).collect();
        let got = run(
            &b.g,
            vec![
                (
                    "c",
                    Tensor::new(vec![2, 1, 1], TensorData::Bool(cv.to_vec())).unwrap(),
                ),
                ("a", Tensor::from_f64(dtype, vec![1, 3, 1], &av).unwrap()),
                ("b", Tensor::from_f64(dtype, vec![4], &bv).unwrap()),
            ],
        );
        assert_eq!(got.shape, vec![2, 3, 4]);
        assert_eq!(got.dtype(), dtype);
        let got = got.to_f64_vec();
        assert_eq!(got.len(), 24);
        for (i, &g) in got.iter().enumerate() {
            let idx = unravel(i, &[2, 3, 4]);
            let want = if cv[idx[0]] { av[idx[1]] } else { bv[idx[2]] };
            assert_eq!(g, want, "{dtype} at {idx:?}");
        }
    }
}

use rand::Rng;

fn cast1(from: DType, to: DType, t: Tensor) -> Tensor {
    let mut b = B::new("cast");
    let n = t.shape[0].to_string();
    let x = b.input("x", ty(from, &[&n]));
    let y = b.op(Op::Cast(to), &[x]);
    b.out("y", y);
    let out = run(&b.g, vec![("x", t)]);
    assert_eq!(out.dtype(), to);
    out
}

#[test]
fn cast_float_to_int_truncates_saturates_and_maps_nan_to_zero() {
    let v = [
        2.7,
        -2.7,
        1e10,
        -1e10,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.5,
    ];
    let got = cast1(DType::F32, DType::I32, f32_tensor(&[8], &v));
    let (mx, mn) = (i32::MAX as i64, i32::MIN as i64);
    assert_eq!(got.to_i64_vec().unwrap(), vec![2, -2, mx, mn, 0, mx, mn, 0]);
    let got = cast1(
        DType::F32,
        DType::U8,
        f32_tensor(&[3], &[-1.5, 300.0, 255.9]),
    );
    assert_eq!(got.to_i64_vec().unwrap(), vec![0, 255, 255]);
    let got = cast1(DType::F32, DType::I8, f32_tensor(&[2], &[127.9, -200.0]));
    assert_eq!(got.to_i64_vec().unwrap(), vec![127, -128]);
}

#[test]
fn cast_between_integers_wraps_and_to_bool_tests_nonzero() {
    let t = Tensor::i32(vec![3], vec![200, -129, 255]).unwrap();
    assert_eq!(
        cast1(DType::I32, DType::I8, t).to_i64_vec().unwrap(),
        vec![-56, 127, -1]
    );
    let t = Tensor::new(vec![1], TensorData::I8(vec![-1])).unwrap();
    assert_eq!(
        cast1(DType::I8, DType::U8, t).to_i64_vec().unwrap(),
        vec![255]
    );
    let t = Tensor::i64(vec![2], vec![1 << 32, (1 << 31) + 5]).unwrap();
    assert_eq!(
        cast1(DType::I64, DType::I32, t).to_i64_vec().unwrap(),
        vec![0, -(1 << 31) + 5]
    );
    let t = Tensor::i32(vec![3], vec![0, 3, -1]).unwrap();
    assert_eq!(
        bools_of(&cast1(DType::I32, DType::Bool, t)),
        vec![false, true, true]
    );
    let t = f32_tensor(&[4], &[0.0, -0.0, 0.1, f64::NAN]);
    assert_eq!(
        bools_of(&cast1(DType::F32, DType::Bool, t)),
        vec![false, false, true, true]
    );
    let t = Tensor::new(vec![2], TensorData::Bool(vec![true, false])).unwrap();
    assert_eq!(
        cast1(DType::Bool, DType::F32, t.clone()).to_f64_vec(),
        vec![1.0, 0.0]
    );
    assert_eq!(
        cast1(DType::Bool, DType::I64, t).to_i64_vec().unwrap(),
        vec![1, 0]
    );
}

#[test]
fn cast_to_half_types_rounds_to_nearest_even() {
    let e = |k: i32| 2f64.powi(k);
    let v = [
        1.0 + e(-11),
        1.0 + 3.0 * e(-11),
        65519.0,
        65520.0,
        e(-25),
        1.5 * e(-25),
        -(1.0 + e(-11)),
    ];
    let got = cast1(DType::F32, DType::F16, f32_tensor(&[7], &v)).to_f64_vec();
    assert_eq!(
        got,
        vec![1.0, 1.0 + e(-9), 65504.0, f64::INFINITY, 0.0, e(-24), -1.0]
    );
    let v = [
        1.0 + e(-8),
        1.0 + 3.0 * e(-8),
        1.0 + e(-8) + e(-20),
        f32::MAX as f64,
        e(-134),
    ];
    let got = cast1(DType::F32, DType::BF16, f32_tensor(&[5], &v)).to_f64_vec();
    // f32::MAX is above the midpoint between bf16's largest finite value and 2^128.
    assert_eq!(got, vec![1.0, 1.0 + e(-6), 1.0 + e(-7), f64::INFINITY, 0.0]);
}

#[test]
fn cast_int_to_float_rounds_once_from_the_exact_integer() {
    // 2^60 + 2^36 + 1 is just above an f32 tie: through f64 it would land on
    // the tie and round to even (down); exactly it rounds up.
    let big = (1i64 << 60) + (1i64 << 36) + 1;
    let t = Tensor::i64(vec![3], vec![big, 16_777_217, -16_777_219]).unwrap();
    let got = cast1(DType::I64, DType::F32, t).to_f64_vec();
    assert_eq!(
        got,
        vec![2f64.powi(60) + 2f64.powi(37), 16_777_216.0, -16_777_220.0]
    );
    let t = Tensor::i32(vec![3], vec![2049, 2051, 70000]).unwrap();
    let got = cast1(DType::I32, DType::F16, t).to_f64_vec();
    assert_eq!(got, vec![2048.0, 2052.0, f64::INFINITY]);
}

#[test]
fn f64_precision_does_not_round_casts() {
    let mut b = B::new("cast64");
    let x = b.input("x", f32t(&["1"]));
    let y = b.op(Op::Cast(DType::F16), &[x]);
    b.out("y", y);
    let v = 1.0 + 2f64.powi(-11);
    let got = run64(&b.g, vec![("x", f32_tensor(&[1], &[v]))]);
    assert_eq!(f64s_of(&got), vec![v]);
    assert_eq!(
        run(&b.g, vec![("x", f32_tensor(&[1], &[v]))]).to_f64_vec(),
        vec![1.0]
    );
}
