//! `matmul` against a triple loop in f64: plain, batched with broadcast batch
//! dims, symbolic sizes, empty contraction, integers; and its speed.

mod interp_common;
use interp_common::*;

use kiln_ir::interp::{eval_positional, EvalOptions};
use kiln_ir::{DType, Tensor};
use std::time::Instant;

/// `a @ b` for shapes `[.., m, k]`, `[.., k, n]` by the definition, with the
/// batch dims broadcast by `bcast_get`.
fn reference(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize]) -> (Vec<usize>, Vec<f64>) {
    let (ra, rb) = (sa.len(), sb.len());
    let (m, k, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 1]);
    let (ba, bb) = (&sa[..ra - 2], &sb[..rb - 2]);
    let rank = ba.len().max(bb.len());
    let batch: Vec<usize> = (0..rank)
        .map(|i| {
            let x = (i + ba.len()).checked_sub(rank).map_or(1, |j| ba[j]);
            let y = (i + bb.len()).checked_sub(rank).map_or(1, |j| bb[j]);
            if x == 1 {
                y
            } else {
                x
            }
        })
        .collect();
    let nb: usize = batch.iter().product();
    let mut out = Vec::new();
    for bi in 0..nb {
        let idx = unravel(bi, &batch);
        // The batch offset of each operand, through its own (broadcast) batch dims.
        let pick = |bd: &[usize]| -> usize {
            let off = idx.len() - bd.len();
            let src: Vec<usize> = bd
                .iter()
                .enumerate()
                .map(|(a, &d)| if d == 1 { 0 } else { idx[off + a] })
                .collect();
            ravel(&src, bd)
        };
        let (oa, ob) = (pick(ba) * m * k, pick(bb) * k * n);
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    s += a[oa + i * k + p] * b[ob + p * n + j];
                }
                out.push(s);
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    (shape, out)
}

fn check(sa: &[&str], sb: &[&str], bind: &[(&str, usize)], seed: u64) {
    let mut r = rng(seed);
    let mut b = B::new("mm");
    let x = b.input("a", f32t(sa));
    let y = b.input("b", f32t(sb));
    let z = b.matmul(x, y);
    b.out("y", z);
    let eval = |d: &&str| -> usize {
        bind.iter()
            .find(|(s, _)| s == d)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| d.parse().unwrap())
    };
    let da: Vec<usize> = sa.iter().map(eval).collect();
    let db: Vec<usize> = sb.iter().map(eval).collect();
    let (ta, va) = rand_f32(&mut r, &da, -1.0, 1.0);
    let (tb, vb) = rand_f32(&mut r, &db, -1.0, 1.0);
    let (shape, want) = reference(&va, &da, &vb, &db);
    let got = run(&b.g, vec![("a", ta.clone()), ("b", tb.clone())]);
    assert_eq!(got.shape, shape, "{sa:?} x {sb:?}");
    // One rounding of an f64-accurate sum: within an f32 ulp of the f64 loop.
    assert_f32_ulp(&got, &want, &format!("{sa:?} x {sb:?} {bind:?}"));
    let got = run64(&b.g, vec![("a", ta), ("b", tb)]);
    assert_close(&f64s_of(&got), &want, 1e-14, 1e-14, "f64 matmul");
}

#[test]
fn plain_matmul_matches_the_triple_loop() {
    check(&["3", "4"], &["4", "5"], &[], 30);
    check(&["1", "7"], &["7", "1"], &[], 31);
    for (m, k) in [(1usize, 1usize), (5, 3), (8, 16)] {
        check(
            &["m", "k"],
            &["k", "6"],
            &[("m", m), ("k", k)],
            32 + m as u64,
        );
    }
}

#[test]
fn batch_dims_broadcast() {
    check(&["2", "1", "3", "4"], &["5", "4", "6"], &[], 40);
    check(&["3", "4"], &["2", "4", "2"], &[], 41);
    check(
        &["b", "h", "seq", "8"],
        &["b", "h", "8", "seq"],
        &[("b", 2), ("h", 3), ("seq", 5)],
        42,
    );
    check(&["2", "3", "4"], &["1", "4", "3"], &[], 43);
}

#[test]
fn empty_dims_and_empty_contraction() {
    // k = 0: every result element is an empty sum, 0.
    let mut b = B::new("k0");
    let x = b.input("a", f32t(&["2", "k"]));
    let y = b.input("b", f32t(&["k", "3"]));
    let z = b.matmul(x, y);
    b.out("y", z);
    let got = run(
        &b.g,
        vec![
            ("a", f32_tensor(&[2, 0], &[])),
            ("b", f32_tensor(&[0, 3], &[])),
        ],
    );
    assert_eq!(got.shape, vec![2, 3]);
    assert_eq!(got.to_f64_vec(), vec![0.0; 6]);
    check(&["0", "4"], &["4", "3"], &[], 50);
    check(&["0", "2", "4"], &["4", "3"], &[], 51);
}

#[test]
fn integer_matmul_wraps() {
    let mut b = B::new("imm");
    let x = b.input("a", ty(DType::I32, &["1", "2"]));
    let y = b.input("b", ty(DType::I32, &["2", "2"]));
    let z = b.matmul(x, y);
    b.out("y", z);
    let a = Tensor::i32(vec![1, 2], vec![i32::MAX, 2]).unwrap();
    let c = Tensor::i32(vec![2, 2], vec![1, 3, 1, -4]).unwrap();
    let got = eval_positional(&b.g, &[a, c], &no_params(), &EvalOptions::default()).unwrap();
    let want = vec![
        (i32::MAX).wrapping_add(2) as i64,
        (i32::MAX).wrapping_mul(3).wrapping_sub(8) as i64,
    ];
    assert_eq!(got[0].to_i64_vec().unwrap(), want);
}

/// The size the task names: [128,256] x [256,1024] must take well under a
/// second in the dev profile. The bound here is loose (a loaded 2-core
/// machine runs tests in parallel); the measured time is printed.
#[test]
fn matmul_of_a_small_model_layer_is_fast() {
    let mut r = rng(60);
    let mut b = B::new("big");
    let x = b.input("a", f32t(&["128", "256"]));
    let y = b.input("b", f32t(&["256", "1024"]));
    let z = b.matmul(x, y);
    b.out("y", z);
    let (ta, va) = rand_f32(&mut r, &[128, 256], -1.0, 1.0);
    let (tb, vb) = rand_f32(&mut r, &[256, 1024], -1.0, 1.0);
    let start = Instant::now();
    let got = run(&b.g, vec![("a", ta), ("b", tb)]);
    let secs = start.elapsed().as_secs_f64();
    eprintln!("matmul [128,256]x[256,1024]: {:.3} s", secs);
    assert!(secs < 2.0, "took {secs:.3} s");
    // Spot-check a few elements against the definition.
    let g = got.to_f64_vec();
    for &(i, j) in &[(0usize, 0usize), (127, 1023), (64, 500)] {
        let want: f64 = (0..256).map(|p| va[i * 256 + p] * vb[p * 1024 + j]).sum();
        assert!((g[i * 1024 + j] - want).abs() <= want.abs() * 1.2e-7 + 1e-30);
    }
}

/// A weight stored narrow (`f16`/`bf16` right operand, `f32` left): the
/// product is f32 and equals the matmul of the widened weight bit for bit,
/// for `matmul` and `matmul_t`. Other mixed pairs stay type errors.
#[test]
fn narrow_right_operand_is_widened_exactly() {
    use kiln_ir::Op;
    for narrow in [DType::F16, DType::BF16] {
        for op in [Op::MatMul, Op::MatMulT] {
            let mut r = rng(70);
            let mut b = B::new("mixed");
            let x = b.input("a", f32t(&["3", "8"]));
            let w = b.input("w", ty(narrow, &["8", "8"]));
            let mixed = b.op(op.clone(), &[x, w]);
            let wide = b.op(Op::Cast(DType::F32), &[w]);
            let plain = b.op(op.clone(), &[x, wide]);
            b.out("mixed", mixed);
            b.out("plain", plain);
            let (ta, _) = rand_f32(&mut r, &[3, 8], -1.0, 1.0);
            let tw =
                Tensor::from_f64(narrow, vec![8, 8], &rand_vals(&mut r, 64, -1.0, 1.0)).unwrap();
            let got =
                eval_positional(&b.g, &[ta, tw], &no_params(), &EvalOptions::default()).unwrap();
            assert_eq!(got[0].dtype(), DType::F32, "{narrow} {op:?}");
            assert_eq!(got[0], got[1], "{narrow} {op:?}");
        }
    }
    for (a, w) in [
        (DType::F16, DType::F32),
        (DType::BF16, DType::F16),
        (DType::F32, DType::I32),
    ] {
        let mut b = B::new("bad");
        let x = b.input("a", ty(a, &["2", "2"]));
        let y = b.input("w", ty(w, &["2", "2"]));
        let e = b.g.add(Op::MatMul, &[x, y]).unwrap_err();
        assert!(
            e.to_string().contains("operand dtypes differ"),
            "{a} x {w}: {e}"
        );
    }
}
