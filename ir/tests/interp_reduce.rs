//! Reductions against explicit loops: every axis subset, keep_dims, symbolic
//! sizes (including empty), NaN and infinities, integer wrapping.

mod interp_common;
use interp_common::*;

use kiln_ir::interp::{round_f16, Precision};
use kiln_ir::{DType, ReduceOp, Tensor, TensorData};

/// The reduction of `v` (shape `shape`) over `axes`, written as a loop over
/// every input element per output element.
fn reference(op: ReduceOp, v: &[f64], shape: &[usize], axes: &[usize]) -> (Vec<usize>, Vec<f64>) {
    let kept: Vec<usize> = (0..shape.len())
        .map(|a| if axes.contains(&a) { 1 } else { shape[a] })
        .collect();
    let n_out: usize = kept.iter().product();
    let mut out = Vec::with_capacity(n_out);
    for o in 0..n_out {
        let oi = unravel(o, &kept);
        let mut vals = Vec::new();
        for (i, &x) in v.iter().enumerate() {
            let ii = unravel(i, shape);
            if (0..shape.len()).all(|a| axes.contains(&a) || ii[a] == oi[a]) {
                vals.push(x);
            }
        }
        let r = match op {
            ReduceOp::Sum => vals.iter().sum(),
            ReduceOp::Mean => vals.iter().sum::<f64>() / vals.len() as f64,
            ReduceOp::Max => {
                if vals.iter().any(|x| x.is_nan()) {
                    f64::NAN
                } else {
                    vals.iter()
                        .fold(f64::NEG_INFINITY, |a, &b| if b > a { b } else { a })
                }
            }
            ReduceOp::Min => {
                if vals.iter().any(|x| x.is_nan()) {
                    f64::NAN
                } else {
                    vals.iter()
                        .fold(f64::INFINITY, |a, &b| if b < a { b } else { a })
                }
            }
        };
        out.push(r);
    }
    (kept, out)
}

fn subsets(rank: usize) -> Vec<Vec<usize>> {
    (0..1usize << rank)
        .map(|m| (0..rank).filter(|a| m >> a & 1 == 1).collect())
        .collect()
}

#[test]
fn float_reductions_over_every_axis_subset_match_loops() {
    let mut r = rng(10);
    for sizes in [[2usize, 3, 4], [1, 5, 2], [3, 0, 2]] {
        let (t, v) = rand_f32(&mut r, &sizes, -3.0, 3.0);
        for axes in subsets(3) {
            for op in ReduceOp::ALL {
                for keep_dims in [false, true] {
                    let mut b = B::new("red");
                    let x = b.input("x", f32t(&["p", "q", "r"]));
                    let y = b.reduce(*op, &axes, keep_dims, x);
                    b.out("y", y);
                    let (kept, want) = reference(*op, &v, &sizes, &axes);
                    let shape: Vec<usize> = if keep_dims {
                        kept
                    } else {
                        (0..3)
                            .filter(|a| !axes.contains(a))
                            .map(|a| sizes[a])
                            .collect()
                    };
                    let what = format!("{op:?} over {axes:?} of {sizes:?} keep={keep_dims}");
                    let got = run(&b.g, vec![("x", t.clone())]);
                    assert_eq!(got.shape, shape, "{what}");
                    assert_f32_ulp(&got, &want, &what);
                    let got = run64(&b.g, vec![("x", t.clone())]);
                    assert_close(&f64s_of(&got), &want, 1e-13, 1e-13, &what);
                }
            }
        }
    }
}

#[test]
fn empty_reductions_give_the_identities() {
    let mut b = B::new("empty");
    let x = b.input("x", f32t(&["2", "n"]));
    for op in ReduceOp::ALL {
        let y = b.reduce(*op, &[1], false, x);
        b.out(op.name(), y);
    }
    let outs = kiln_ir::interp::eval(
        &b.g,
        &named(vec![("x", f32_tensor(&[2, 0], &[]))]),
        &no_params(),
    )
    .unwrap();
    assert_eq!(outs["reduce_sum"].to_f64_vec(), vec![0.0, 0.0]);
    assert!(outs["reduce_mean"].to_f64_vec().iter().all(|x| x.is_nan()));
    assert_eq!(outs["reduce_max"].to_f64_vec(), vec![f64::NEG_INFINITY; 2]);
    assert_eq!(outs["reduce_min"].to_f64_vec(), vec![f64::INFINITY; 2]);

    // Integers: max of nothing is the type's minimum, min its maximum.
    let mut b = B::new("iempty");
    let x = b.input("x", ty(DType::I8, &["n"]));
    let mx = b.reduce(ReduceOp::Max, &[0], false, x);
    let mn = b.reduce(ReduceOp::Min, &[0], false, x);
    let s = b.reduce(ReduceOp::Sum, &[0], false, x);
    b.out("max", mx);
    b.out("min", mn);
    b.out("sum", s);
    let t = Tensor::new(vec![0], TensorData::I8(vec![])).unwrap();
    let outs = kiln_ir::interp::eval(&b.g, &named(vec![("x", t)]), &no_params()).unwrap();
    assert_eq!(outs["max"].to_i64_vec().unwrap(), vec![-128]);
    assert_eq!(outs["min"].to_i64_vec().unwrap(), vec![127]);
    assert_eq!(outs["sum"].to_i64_vec().unwrap(), vec![0]);
}

#[test]
fn nan_propagates_and_infinities_order_in_max_min() {
    let nan = f64::NAN;
    let ninf = f64::NEG_INFINITY;
    let v = [1.0, nan, 2.0, ninf, ninf, ninf, ninf, 3.0, -1.0];
    let mut b = B::new("nan");
    let x = b.input("x", f32t(&["3", "3"]));
    for op in ReduceOp::ALL {
        let y = b.reduce(*op, &[1], false, x);
        b.out(op.name(), y);
    }
    let outs = kiln_ir::interp::eval(
        &b.g,
        &named(vec![("x", f32_tensor(&[3, 3], &v))]),
        &no_params(),
    )
    .unwrap();
    let get = |n: &str| outs[n].to_f64_vec();
    for n in ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min"] {
        assert!(get(n)[0].is_nan(), "{n} of a row with NaN");
    }
    assert_eq!(get("reduce_max")[1..], [ninf, 3.0]);
    assert_eq!(get("reduce_min")[1..], [ninf, ninf]);
    assert_eq!(get("reduce_sum")[1..], [ninf, ninf]);
}

#[test]
fn integer_sums_wrap_and_extremes_are_exact() {
    let mut b = B::new("ints");
    let x = b.input("x", ty(DType::I32, &["2", "3"]));
    let s = b.reduce(ReduceOp::Sum, &[1], true, x);
    let m = b.reduce(ReduceOp::Max, &[0, 1], false, x);
    b.out("sum", s);
    b.out("max", m);
    let t = Tensor::i32(vec![2, 3], vec![i32::MAX, 1, 0, -5, 7, 9]).unwrap();
    let outs = kiln_ir::interp::eval(&b.g, &named(vec![("x", t)]), &no_params()).unwrap();
    assert_eq!(outs["sum"].shape, vec![2, 1]);
    assert_eq!(outs["sum"].to_i64_vec().unwrap(), vec![i32::MIN as i64, 11]);
    assert_eq!(outs["max"].shape, Vec::<usize>::new());
    assert_eq!(outs["max"].to_i64_vec().unwrap(), vec![i32::MAX as i64]);
}

/// A reduction over f16 accumulates in f64 and rounds once: 2048 + 1 + 1 is
/// 2050 (representable), where an f16 accumulator would stay at 2048.
#[test]
fn half_precision_reductions_round_once() {
    let mut b = B::new("h");
    let x = b.input("x", ty(DType::F16, &["3"]));
    let s = b.reduce(ReduceOp::Sum, &[0], false, x);
    let m = b.reduce(ReduceOp::Mean, &[0], false, x);
    b.out("sum", s);
    b.out("mean", m);
    let t = Tensor::from_f64(DType::F16, vec![3], &[2048.0, 1.0, 1.0]).unwrap();
    let outs = kiln_ir::interp::eval(&b.g, &named(vec![("x", t.clone())]), &no_params()).unwrap();
    assert_eq!(outs["sum"].dtype(), DType::F16);
    assert_eq!(outs["sum"].to_f64_vec(), vec![2050.0]);
    assert_eq!(
        outs["mean"].to_f64_vec(),
        vec![round_f16(2050.0 / 3.0).to_f64()]
    );
    let out = run_out(&b.g, vec![("x", t)], &no_params(), Precision::F64, "mean");
    assert_eq!(f64s_of(&out), vec![2050.0 / 3.0]);
}
