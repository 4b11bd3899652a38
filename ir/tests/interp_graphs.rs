//! Whole small graphs — an MLP, softmax, layer norm, causal attention with a
//! cache offset — checked two ways: F64 precision against the same model
//! written by hand in f64, and Declared (f32) precision against F64 precision
//! ("the interpreter checked against f64", rel L2 < 1e-5).

mod interp_common;
use interp_common::*;

use kiln_ir::interp::{eval_with, EvalOptions};
use kiln_ir::{CmpOp, DType, Dim, Graph, Literal, Op, ReduceOp, Tensor, UnaryOp, Value};
use std::collections::{BTreeMap, HashMap};

/// Runs `g` in both precisions, checks F64 against `want` (hand-written f64)
/// and Declared against F64; returns the Declared result.
fn check_both(
    g: &Graph,
    inputs: Vec<(&str, Tensor)>,
    params: &HashMap<String, Tensor>,
    want: &[f64],
    what: &str,
) -> Tensor {
    let inputs = named(inputs);
    let lo = eval_with(g, &inputs, params, &EvalOptions::default())
        .unwrap()
        .remove("y")
        .unwrap();
    let hi = eval_with(g, &inputs, params, &EvalOptions::f64())
        .unwrap()
        .remove("y")
        .unwrap();
    let hi = f64s_of(&hi);
    let e64 = rel_l2(&hi, want);
    assert!(e64 < 1e-12, "{what}: F64 vs hand-written f64: rel L2 {e64}");
    let e32 = rel_l2(&lo.to_f64_vec(), &hi);
    assert!(e32 < 1e-5, "{what}: Declared vs F64: rel L2 {e32}");
    assert!(
        e32 > 0.0 || want.iter().all(|w| *w == (*w as f32) as f64),
        "{what}: f32 rounding must show"
    );
    lo
}

fn matmul_ref(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    c
}

#[test]
fn mlp_with_gelu_and_params() {
    let (din, dh, dout) = (16usize, 64usize, 8usize);
    let mut b = B::new("mlp");
    let x = b.input("x", f32t(&["batch", "16"]));
    let w1 = b.param("w1", f32t(&["16", "64"]));
    let b1 = b.param("b1", f32t(&["64"]));
    let w2 = b.param("w2", f32t(&["64", "8"]));
    let b2 = b.param("b2", f32t(&["8"]));
    let h = b.matmul(x, w1);
    let h = b.add(h, b1);
    let h = b.un(UnaryOp::Gelu, h);
    let y = b.matmul(h, w2);
    let y = b.add(y, b2);
    b.out("y", y);
    let mut r = rng(80);
    let mut params = HashMap::new();
    let mut pv = BTreeMap::new();
    for (name, shape) in [
        ("w1", vec![din, dh]),
        ("b1", vec![dh]),
        ("w2", vec![dh, dout]),
        ("b2", vec![dout]),
    ] {
        let (t, v) = rand_f32(&mut r, &shape, -0.5, 0.5);
        params.insert(name.to_string(), t);
        pv.insert(name, v);
    }
    for batch in [1usize, 4, 9] {
        let (xt, xv) = rand_f32(&mut r, &[batch, din], -2.0, 2.0);
        let mut h = matmul_ref(&xv, &pv["w1"], batch, din, dh);
        for (i, v) in h.iter_mut().enumerate() {
            let z = *v + pv["b1"][i % dh];
            *v = 0.5 * z * (1.0 + erf_series(z / std::f64::consts::SQRT_2));
        }
        let mut want = matmul_ref(&h, &pv["w2"], batch, dh, dout);
        for (i, v) in want.iter_mut().enumerate() {
            *v += pv["b2"][i % dout];
        }
        let got = check_both(&b.g, vec![("x", xt)], &params, &want, "mlp");
        assert_eq!(got.shape, vec![batch, dout]);
    }
}

/// Softmax over the last axis, written with max subtraction.
fn softmax(b: &mut B, x: Value, axis: usize) -> Value {
    let m = b.reduce(ReduceOp::Max, &[axis], true, x);
    let z = b.sub(x, m);
    let e = b.un(UnaryOp::Exp, z);
    let s = b.reduce(ReduceOp::Sum, &[axis], true, e);
    b.div(e, s)
}

fn softmax_ref(v: &mut [f64], n: usize) {
    for row in v.chunks_mut(n) {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|x| (x - m).exp()).sum();
        row.iter_mut().for_each(|x| *x = (*x - m).exp() / s);
    }
}

#[test]
fn softmax_from_primitives() {
    let mut b = B::new("softmax");
    let x = b.input("x", f32t(&["rows", "n"]));
    let y = softmax(&mut b, x, 1);
    b.out("y", y);
    let mut r = rng(81);
    for (rows, n) in [(1usize, 1usize), (3, 10), (5, 33)] {
        let (t, mut v) = rand_f32(&mut r, &[rows, n], -30.0, 30.0);
        softmax_ref(&mut v, n);
        check_both(&b.g, vec![("x", t)], &HashMap::new(), &v, "softmax");
    }
}

#[test]
fn layer_norm_from_primitives() {
    let d = 48usize;
    let mut b = B::new("layer_norm");
    let x = b.input("x", f32t(&["seq", "48"]));
    let gamma = b.param("gamma", f32t(&["48"]));
    let beta = b.param("beta", f32t(&["48"]));
    let mean = b.reduce(ReduceOp::Mean, &[1], true, x);
    let xc = b.sub(x, mean);
    let sq = b.mul(xc, xc);
    let var = b.reduce(ReduceOp::Mean, &[1], true, sq);
    let eps = b.scalar(DType::F32, 1e-5);
    let ve = b.add(var, eps);
    let inv = b.un(UnaryOp::Rsqrt, ve);
    let xn = b.mul(xc, inv);
    let y = b.mul(xn, gamma);
    let y = b.add(y, beta);
    b.out("y", y);
    let mut r = rng(82);
    let (gt, gv) = rand_f32(&mut r, &[d], 0.5, 1.5);
    let (bt, bv) = rand_f32(&mut r, &[d], -0.5, 0.5);
    let params: HashMap<String, Tensor> =
        [("gamma".to_string(), gt), ("beta".to_string(), bt)].into();
    let eps = 1e-5f32 as f64;
    for seq in [1usize, 7] {
        let (t, v) = rand_f32(&mut r, &[seq, d], -3.0, 5.0);
        let mut want = Vec::new();
        for row in v.chunks(d) {
            let m = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / d as f64;
            for (k, x) in row.iter().enumerate() {
                want.push((x - m) / (var + eps).sqrt() * gv[k] + bv[k]);
            }
        }
        check_both(&b.g, vec![("x", t)], &params, &want, "layer norm");
    }
}

/// Causal attention over `[heads, seq, dh]` queries and `[heads, past+seq, dh]`
/// keys/values: query `i` (absolute position `past+i`) sees keys `j ≤ past+i`.
/// The mask is built from `iota`, `slice`, `compare` and `select` with `-inf`.
fn attention_graph(dh: usize) -> Graph {
    let mut b = B::new("attention");
    let q = b.input("q", f32t(&["heads", "seq", &dh.to_string()]));
    let k = b.input("k", f32t(&["heads", "past+seq", &dh.to_string()]));
    let v = b.input("v", f32t(&["heads", "past+seq", &dh.to_string()]));
    let kt = b.permute(k, &[0, 2, 1]);
    let s = b.matmul(q, kt);
    let scale = b.scalar(DType::F32, 1.0 / (dh as f64).sqrt());
    let s = b.mul(s, scale);
    let pos = b.op(
        Op::Iota {
            ty: ty(DType::I32, &["past+seq"]),
            axis: 0,
        },
        &[],
    );
    let qpos = b.op(
        Op::Slice {
            axis: 0,
            start: Dim::from("past"),
            end: Dim::from("past+seq"),
        },
        &[pos],
    );
    let qpos = b.reshape(qpos, &["seq", "1"]);
    let kpos = b.reshape(pos, &["1", "past+seq"]);
    let mask = b.cmp(CmpOp::Le, kpos, qpos);
    let ninf = b.op(
        Op::Const(Literal::scalar(DType::F32, f64::NEG_INFINITY)),
        &[],
    );
    let s = b.select(mask, s, ninf);
    let p = softmax(&mut b, s, 2);
    let y = b.matmul(p, v);
    b.out("y", y);
    b.g
}

#[test]
fn causal_attention_with_a_cache_offset() {
    let (heads, dh) = (2usize, 8usize);
    let g = attention_graph(dh);
    let mut r = rng(83);
    for (past, seq) in [(0usize, 1usize), (0, 5), (3, 4), (6, 1)] {
        let kv = past + seq;
        let (qt, qv) = rand_f32(&mut r, &[heads, seq, dh], -2.0, 2.0);
        let (kt, kvv) = rand_f32(&mut r, &[heads, kv, dh], -2.0, 2.0);
        let (vt, vv) = rand_f32(&mut r, &[heads, kv, dh], -2.0, 2.0);
        let mut want = Vec::new();
        for h in 0..heads {
            for i in 0..seq {
                // Only the visible keys take part: an explicit masked softmax.
                let visible = past + i + 1;
                let mut w: Vec<f64> = (0..visible)
                    .map(|j| {
                        (0..dh)
                            .map(|c| qv[(h * seq + i) * dh + c] * kvv[(h * kv + j) * dh + c])
                            .sum::<f64>()
                            * ((1.0 / (dh as f64).sqrt()) as f32 as f64)
                    })
                    .collect();
                softmax_ref(&mut w, visible);
                for c in 0..dh {
                    want.push((0..visible).map(|j| w[j] * vv[(h * kv + j) * dh + c]).sum());
                }
            }
        }
        let got = check_both(
            &g,
            vec![("q", qt), ("k", kt), ("v", vt)],
            &HashMap::new(),
            &want,
            "attention",
        );
        assert_eq!(got.shape, vec![heads, seq, dh]);
    }
}

#[test]
fn f16_graph_tracks_f64_within_half_precision() {
    // The same softmax in f16: each op rounds to f16, so the error is ~1e-3.
    let mut b = B::new("softmax16");
    let x = b.input("x", ty(DType::F16, &["4", "16"]));
    let y = softmax(&mut b, x, 1);
    b.out("y", y);
    let mut r = rng(84);
    let v: Vec<f64> = rand_vals(&mut r, 64, -4.0, 4.0)
        .into_iter()
        .map(|a| kiln_ir::interp::round_f16(a).to_f64())
        .collect();
    let t = Tensor::from_f64(DType::F16, vec![4, 16], &v).unwrap();
    let lo = run(&b.g, vec![("x", t.clone())]);
    assert_eq!(lo.dtype(), DType::F16);
    let hi = f64s_of(&run64(&b.g, vec![("x", t)]));
    let e = rel_l2(&lo.to_f64_vec(), &hi);
    assert!(e > 1e-5 && e < 4e-3, "rel L2 {e}");
}

#[test]
fn outputs_may_repeat_values_and_dead_nodes_are_not_evaluated() {
    let mut b = B::new("plumbing");
    let x = b.input("x", f32t(&["2"]));
    let y = b.un(UnaryOp::Neg, x);
    // A parameter nothing uses: it need not be supplied.
    let dead = b.param("unused", f32t(&["3"]));
    let _ = b.un(UnaryOp::Exp, dead);
    b.out("y", y);
    b.out("y_again", y);
    b.out("x_through", x);
    let outs = kiln_ir::interp::eval(
        &b.g,
        &named(vec![("x", f32_tensor(&[2], &[1.0, -2.0]))]),
        &no_params(),
    )
    .unwrap();
    assert_eq!(outs.len(), 3);
    assert_eq!(outs["y"].to_f64_vec(), vec![-1.0, 2.0]);
    assert_eq!(outs["y_again"].to_f64_vec(), vec![-1.0, 2.0]);
    assert_eq!(outs["x_through"].to_f64_vec(), vec![1.0, -2.0]);
}
