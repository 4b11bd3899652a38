//! f16 and bf16: rounding to nearest even from f64 in one step, and graphs
//! that round every op's result to its type.

mod interp_common;
use interp_common::*;

use half::{bf16, f16};
use kiln_ir::interp::{round_bf16, round_f16};
use kiln_ir::{DType, Tensor, UnaryOp};
use rand::Rng;

/// Random f32 bit patterns cover normals, subnormals, infinities and NaNs;
/// converting an f32 to f16/bf16 is a single rounding, which `half` does
/// correctly from f32, so the two must agree bit for bit.
#[test]
fn rounding_from_f32_values_agrees_with_half() {
    let mut r = rng(90);
    for _ in 0..200_000 {
        let x = f32::from_bits(r.random::<u32>());
        let (a, b) = (round_f16(x as f64), f16::from_f32(x));
        if x.is_nan() {
            assert!(a.is_nan() && b.is_nan());
        } else {
            assert_eq!(a.to_bits(), b.to_bits(), "f16 of {x:e}");
        }
        let (a, b) = (round_bf16(x as f64), bf16::from_f32(x));
        if x.is_nan() {
            assert!(a.is_nan() && b.is_nan());
        } else {
            assert_eq!(a.to_bits(), b.to_bits(), "bf16 of {x:e}");
        }
    }
}

#[test]
fn ties_go_to_even_and_just_above_a_tie_goes_up() {
    let e = |k: i32| 2f64.powi(k);
    // Exact ties.
    assert_eq!(round_f16(1.0 + e(-11)).to_f64(), 1.0);
    assert_eq!(round_f16(1.0 + 3.0 * e(-11)).to_f64(), 1.0 + e(-9));
    assert_eq!(round_bf16(1.0 + e(-8)).to_f64(), 1.0);
    assert_eq!(round_bf16(1.0 + 3.0 * e(-8)).to_f64(), 1.0 + e(-6));
    // Just above a tie by less than f32 can hold: a detour through f32 (or a
    // truncated f64) would see an exact tie and round down.
    assert_eq!(round_f16(1.0 + e(-11) + e(-40)).to_f64(), 1.0 + e(-10));
    assert_eq!(round_bf16(1.0 + e(-8) + e(-40)).to_f64(), 1.0 + e(-7));
    assert_eq!(
        round_f16(-(1.0 + e(-11) + e(-40))).to_f64(),
        -(1.0 + e(-10))
    );
    // Range ends: overflow, the largest finite, subnormals, signed zero.
    assert_eq!(round_f16(65519.99).to_f64(), 65504.0);
    assert_eq!(round_f16(65520.0).to_f64(), f64::INFINITY);
    assert_eq!(round_f16(-1e300).to_f64(), f64::NEG_INFINITY);
    assert_eq!(round_f16(e(-24)).to_f64(), e(-24));
    assert_eq!(round_f16(e(-25)).to_f64(), 0.0);
    assert_eq!(round_f16(e(-25) + e(-60)).to_f64(), e(-24));
    assert_eq!(round_f16(e(-14) - e(-25)).to_f64(), e(-14));
    assert!(round_f16(-0.0).is_sign_negative());
    assert!(round_f16(-e(-30)).is_sign_negative());
    assert_eq!(round_bf16(e(-133)).to_f64(), e(-133));
    assert_eq!(round_bf16(e(-134)).to_f64(), 0.0);
    assert_eq!(round_bf16(1e-320).to_f64(), 0.0);
    assert!(round_f16(f64::NAN).is_nan() && round_bf16(f64::NAN).is_nan());
}

#[test]
fn every_op_result_is_rounded_to_its_type() {
    for dtype in [DType::F16, DType::BF16] {
        let round = |x: f64| match dtype {
            DType::F16 => round_f16(x).to_f64(),
            _ => round_bf16(x).to_f64(),
        };
        // y = (x + x·c) · x, rounded after each op.
        let mut b = B::new("chain");
        let x = b.input("x", ty(dtype, &["n"]));
        let c = b.scalar(dtype, 1.0 / 3.0);
        let xc = b.mul(x, c);
        let s = b.add(x, xc);
        let y = b.mul(s, x);
        b.out("y", y);
        let mut r = rng(91);
        let v: Vec<f64> = rand_vals(&mut r, 50, -100.0, 100.0)
            .into_iter()
            .map(round)
            .collect();
        let got = run(
            &b.g,
            vec![("x", Tensor::from_f64(dtype, vec![50], &v).unwrap())],
        );
        assert_eq!(got.dtype(), dtype);
        let c = round(1.0 / 3.0);
        let want: Vec<f64> = v
            .iter()
            .map(|&x| round(round(x + round(x * c)) * x))
            .collect();
        assert_eq!(got.to_f64_vec(), want, "{dtype}");
    }
}

#[test]
fn half_precision_overflow_and_underflow_in_ops() {
    let mut b = B::new("exp16");
    let x = b.input("x", ty(DType::F16, &["3"]));
    let y = b.un(UnaryOp::Exp, x);
    b.out("y", y);
    let got = run(
        &b.g,
        vec![(
            "x",
            Tensor::from_f64(DType::F16, vec![3], &[12.0, -17.0, 0.0]).unwrap(),
        )],
    );
    let g = got.to_f64_vec();
    assert_eq!(g[0], f64::INFINITY, "e^12 > 65504");
    assert_eq!(g[1], round_f16((-17f64).exp()).to_f64());
    assert!(g[1] > 0.0 && g[1] < 6.1e-5, "a subnormal f16");
    assert_eq!(g[2], 1.0);
}
