//! `scan` against explicit loops: cumulative sums (forward and reverse), a
//! linear recurrence `h = a·h + b` along an inner axis, carries of several
//! dtypes with invariants and several step outputs, empty sequences; and
//! `fused` against the same body unfused.

mod interp_common;
use interp_common::*;

use kiln_ir::interp::{eval_op, EvalOptions, Precision};
use kiln_ir::op::{FusedOp, FusionKind, ScanOp};
use kiln_ir::{BinaryOp, Bindings, DType, Graph, Op, ReduceOp, Tensor, UnaryOp, Value};
use std::sync::Arc;

fn scan_op(body: Graph, num_carry: usize, num_xs: usize, axis: usize, reverse: bool) -> Op {
    Op::Scan(ScanOp {
        body: Arc::new(body),
        num_carry,
        num_xs,
        axis,
        reverse,
    })
}

/// `(c, x) -> (c + x, c + x)` over `f32[d]`.
fn cumsum_body() -> Graph {
    let mut b = B::new("cumsum_body");
    let c = b.input("c", f32t(&["d"]));
    let x = b.input("x", f32t(&["d"]));
    let s = b.add(c, x);
    b.out("c_next", s);
    b.out("y", s);
    b.g
}

fn cumsum_graph(reverse: bool) -> Graph {
    let mut b = B::new("cumsum");
    let c0 = b.input("c0", f32t(&["d"]));
    let xs = b.input("xs", f32t(&["seq", "d"]));
    let n =
        b.g.add_node(scan_op(cumsum_body(), 1, 1, 0, reverse), &[c0, xs])
            .unwrap();
    b.out("total", Value::new(n, 0));
    b.out("y", Value::new(n, 1));
    b.g
}

#[test]
fn cumulative_sum_forward_and_reverse() {
    let mut r = rng(70);
    for reverse in [false, true] {
        let g = cumsum_graph(reverse);
        for (seq, d) in [(5usize, 3usize), (1, 2), (0, 4), (8, 1)] {
            let (c0, c0v) = rand_f32(&mut r, &[d], -1.0, 1.0);
            let (xs, xv) = rand_f32(&mut r, &[seq, d], -1.0, 1.0);
            // Reference: ys[t] = c0 + Σ x[s] over the steps run so far.
            let mut want = vec![0.0; seq * d];
            let mut acc = c0v.clone();
            let steps: Vec<usize> = if reverse {
                (0..seq).rev().collect()
            } else {
                (0..seq).collect()
            };
            for &t in &steps {
                for k in 0..d {
                    acc[k] += xv[t * d + k];
                    want[t * d + k] = acc[k];
                }
            }
            for precision in [Precision::Declared, Precision::F64] {
                let inputs = vec![("c0", c0.clone()), ("xs", xs.clone())];
                let y = run_out(&g, inputs.clone(), &no_params(), precision, "y");
                let total = run_out(&g, inputs, &no_params(), precision, "total");
                assert_eq!(y.shape, vec![seq, d]);
                assert_eq!(total.shape, vec![d]);
                let tol = if precision == Precision::F64 {
                    1e-14
                } else {
                    1e-6
                };
                assert_close(&y.to_f64_vec(), &want, tol, tol, "ys");
                assert_close(&total.to_f64_vec(), &acc, tol, tol, "final carry");
            }
        }
    }
}

/// `h_t = a_t·h_{t-1} + b_t` scanned along axis 1 of `[batch, seq, d]`.
fn recurrence_graph() -> Graph {
    let mut body = B::new("rec_body");
    let h = body.input("h", f32t(&["batch", "d"]));
    let a = body.input("a", f32t(&["batch", "d"]));
    let bb = body.input("b", f32t(&["batch", "d"]));
    let ah = body.mul(a, h);
    let h2 = body.add(ah, bb);
    body.out("h_next", h2);
    body.out("y", h2);
    let mut b = B::new("recurrence");
    let h0 = b.input("h0", f32t(&["batch", "d"]));
    let a = b.input("a", f32t(&["batch", "seq", "d"]));
    let x = b.input("b", f32t(&["batch", "seq", "d"]));
    let n =
        b.g.add_node(scan_op(body.g, 1, 2, 1, false), &[h0, a, x])
            .unwrap();
    b.out("h", Value::new(n, 0));
    b.out("y", Value::new(n, 1));
    b.g
}

#[test]
fn linear_recurrence_along_an_inner_axis() {
    let mut r = rng(71);
    let g = recurrence_graph();
    for (batch, seq, d) in [(2usize, 6usize, 3usize), (1, 1, 1), (3, 17, 2)] {
        let (h0, h0v) = rand_f32(&mut r, &[batch, d], -1.0, 1.0);
        let (a, av) = rand_f32(&mut r, &[batch, seq, d], 0.5, 1.0);
        let (x, xv) = rand_f32(&mut r, &[batch, seq, d], -1.0, 1.0);
        let mut want = vec![0.0; batch * seq * d];
        let mut h = h0v.clone();
        for t in 0..seq {
            for bi in 0..batch {
                for k in 0..d {
                    let i = (bi * seq + t) * d + k;
                    h[bi * d + k] = av[i] * h[bi * d + k] + xv[i];
                    want[i] = h[bi * d + k];
                }
            }
        }
        let inputs = vec![("h0", h0), ("a", a), ("b", x)];
        let y32 = run_out(&g, inputs.clone(), &no_params(), Precision::Declared, "y");
        let y64 = run_out(&g, inputs.clone(), &no_params(), Precision::F64, "y");
        let h64 = run_out(&g, inputs, &no_params(), Precision::F64, "h");
        assert_eq!(y32.shape, vec![batch, seq, d]);
        assert_close(&f64s_of(&y64), &want, 1e-14, 1e-14, "f64 ys");
        assert_close(&f64s_of(&h64), &h, 1e-14, 1e-14, "f64 final state");
        let err = rel_l2(&y32.to_f64_vec(), &f64s_of(&y64));
        assert!(err < 1e-5, "Declared vs F64: rel L2 {err}");
    }
}

/// Two carries of different dtypes, an invariant, two step outputs (one a
/// scalar per step), scanning a sequence along axis 0.
#[test]
fn several_carries_invariants_and_outputs() {
    let mut body = B::new("body");
    let s = body.input("s", f32t(&["d"]));
    let cnt = body.input("cnt", ty(DType::I32, &[]));
    let x = body.input("x", f32t(&["d"]));
    let w = body.input("w", f32t(&["d"]));
    let xw = body.mul(x, w);
    let s2 = body.add(s, xw);
    let one = body.scalar(DType::I32, 1.0);
    let cnt2 = body.add(cnt, one);
    let m = body.reduce(ReduceOp::Max, &[0], false, x);
    body.out("s_next", s2);
    body.out("cnt_next", cnt2);
    body.out("cnt_y", cnt2);
    body.out("max_y", m);
    let mut b = B::new("multi");
    let s0 = b.input("s0", f32t(&["d"]));
    let c0 = b.input("c0", ty(DType::I32, &[]));
    let xs = b.input("xs", f32t(&["seq", "d"]));
    let w = b.input("w", f32t(&["d"]));
    let n =
        b.g.add_node(scan_op(body.g, 2, 1, 0, false), &[s0, c0, xs, w])
            .unwrap();
    for (i, name) in ["s", "cnt", "cnts", "maxes"].iter().enumerate() {
        b.out(name, Value::new(n, i as u32));
    }
    let mut r = rng(72);
    let (seq, d) = (4, 3);
    let (xs, xv) = rand_f32(&mut r, &[seq, d], -2.0, 2.0);
    let (w, wv) = rand_f32(&mut r, &[d], -1.0, 1.0);
    let s0 = f32_tensor(&[d], &[0.5, 0.0, -0.5]);
    let outs = kiln_ir::interp::eval(
        &b.g,
        &named(vec![
            ("s0", s0),
            ("c0", Tensor::i32(vec![], vec![10]).unwrap()),
            ("xs", xs),
            ("w", w),
        ]),
        &no_params(),
    )
    .unwrap();
    let mut s = vec![0.5, 0.0, -0.5];
    let mut maxes = Vec::new();
    for t in 0..seq {
        for k in 0..d {
            s[k] += xv[t * d + k] * wv[k];
        }
        maxes.push(
            xv[t * d..(t + 1) * d]
                .iter()
                .cloned()
                .fold(f64::NEG_INFINITY, f64::max),
        );
    }
    assert_close(&outs["s"].to_f64_vec(), &s, 1e-6, 1e-6, "s");
    assert_eq!(outs["cnt"].to_i64_vec().unwrap(), vec![14]);
    assert_eq!(outs["cnts"].shape, vec![seq]);
    assert_eq!(outs["cnts"].to_i64_vec().unwrap(), vec![11, 12, 13, 14]);
    assert_eq!(outs["maxes"].to_f64_vec(), maxes);
}

#[test]
fn reverse_scan_stores_outputs_at_their_original_positions() {
    // Step outputs are the step index seen through the carry: with reverse,
    // position t holds the number of steps run when t was visited.
    let mut body = B::new("body");
    let c = body.input("c", ty(DType::I32, &[]));
    let x = body.input("x", ty(DType::I32, &[]));
    let one = body.scalar(DType::I32, 1.0);
    let c2 = body.add(c, one);
    let tag = body.bin(BinaryOp::Mul, c2, x);
    body.out("c_next", c2);
    body.out("y", tag);
    let mut b = B::new("rev");
    let c0 = b.input("c0", ty(DType::I32, &[]));
    let xs = b.input("xs", ty(DType::I32, &["n"]));
    let n =
        b.g.add_node(scan_op(body.g, 1, 1, 0, true), &[c0, xs])
            .unwrap();
    b.out("y", Value::new(n, 1));
    let got = run(
        &b.g,
        vec![
            ("c0", Tensor::i32(vec![], vec![0]).unwrap()),
            ("xs", Tensor::i32(vec![4], vec![1, 10, 100, 1000]).unwrap()),
        ],
    );
    assert_eq!(got.to_i64_vec().unwrap(), vec![4, 30, 200, 1000]);
}

/// A fused kernel computes exactly what its body computes unfused, here a
/// row softmax (a `row` kernel).
#[test]
fn fused_op_evaluates_its_body() {
    let mut body = B::new("softmax_body");
    let x = body.input("x", f32t(&["rows", "n"]));
    let m = body.reduce(ReduceOp::Max, &[1], true, x);
    let z = body.sub(x, m);
    let e = body.un(UnaryOp::Exp, z);
    let s = body.reduce(ReduceOp::Sum, &[1], true, e);
    let y = body.div(e, s);
    body.out("y", y);
    let body = body.g;
    let mut b = B::new("fused");
    let x = b.input("x", f32t(&["rows", "n"]));
    let f = b.op(
        Op::Fused(FusedOp {
            kind: FusionKind::Row,
            body: Arc::new(body.clone()),
        }),
        &[x],
    );
    b.out("y", f);
    let mut r = rng(73);
    let (t, _) = rand_f32(&mut r, &[3, 7], -5.0, 5.0);
    let fused = run(&b.g, vec![("x", t.clone())]);
    let plain = run(&body, vec![("x", t.clone())]);
    assert_eq!(fused.to_f64_vec(), plain.to_f64_vec());
    // eval_op on the fused op directly, as constant folding would.
    let mut bind = Bindings::new();
    bind.insert("rows".into(), 3);
    bind.insert("n".into(), 7);
    let op = b.g.node(f.node).op.clone();
    let direct = eval_op(&op, &[t], &bind, &EvalOptions::default()).unwrap();
    assert_eq!(direct[0].to_f64_vec(), plain.to_f64_vec());
}

#[test]
fn scan_with_eval_op_and_zero_steps() {
    let op = scan_op(cumsum_body(), 1, 1, 0, false);
    let c0 = f32_tensor(&[2], &[1.0, 2.0]);
    let xs = f32_tensor(&[0, 2], &[]);
    let outs = eval_op(&op, &[c0, xs], &Bindings::new(), &EvalOptions::f64()).unwrap();
    assert_eq!(f64s_of(&outs[0]), vec![1.0, 2.0]);
    assert_eq!(outs[1].shape, vec![0, 2]);
    assert_eq!(f64s_of(&outs[1]), Vec::<f64>::new());
}
