//! `linear_scan` against the same recurrence written as a `scan` whose body
//! is `h' = a ⊙ h + b`: diagonal (Mamba-like) and broadcast (RetNet-like
//! scalar decay per head) coefficients, a scalar state, forward and reverse,
//! empty and one-step sequences, f32 and f16; `chunk` never changes the
//! result; the text and JSON forms round-trip; bad operands are typed errors.

use kiln_ir::interp::{eval_op, eval_with, EvalOptions, InterpError};
use kiln_ir::linear_scan::LinearScanOp;
use kiln_ir::tensor::rel_l2;
use kiln_ir::{BinaryOp, Bindings, DType, Dim, Graph, Op, ScanOp, Tensor, TensorType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;

fn ty(d: DType, s: &[usize]) -> TensorType {
    TensorType::new(d, s.iter().map(|&x| Dim::from(x)).collect())
}

/// `(state, a per step, b per step)` shapes.
struct Case {
    state: Vec<usize>,
    a: Vec<usize>,
    b: Vec<usize>,
}

fn seq(t: usize, s: &[usize]) -> Vec<usize> {
    let mut v = vec![t];
    v.extend_from_slice(s);
    v
}

/// The recurrence as a `linear_scan` graph and as a `scan` graph.
fn graphs(c: &Case, t: usize, d: DType, reverse: bool, chunk: usize) -> (Graph, Graph) {
    let mut lin = Graph::new("lin");
    let h0 = lin.add_input("h0", ty(d, &c.state)).unwrap();
    let a = lin.add_input("a", ty(d, &seq(t, &c.a))).unwrap();
    let b = lin.add_input("b", ty(d, &seq(t, &c.b))).unwrap();
    let n = lin
        .add_node(Op::LinearScan(LinearScanOp { reverse, chunk }), &[h0, a, b])
        .unwrap();
    lin.add_output("final", kiln_ir::Value::new(n, 0)).unwrap();
    lin.add_output("states", kiln_ir::Value::new(n, 1)).unwrap();

    let mut body = Graph::new("step");
    let h = body.add_input("h", ty(d, &c.state)).unwrap();
    let at = body.add_input("a", ty(d, &c.a)).unwrap();
    let bt = body.add_input("b", ty(d, &c.b)).unwrap();
    let m = body.add(Op::Binary(BinaryOp::Mul), &[at, h]).unwrap();
    let h1 = body.add(Op::Binary(BinaryOp::Add), &[m, bt]).unwrap();
    body.add_output("h", h1).unwrap();
    body.add_output("y", h1).unwrap();
    let mut sc = Graph::new("lin");
    let h0 = sc.add_input("h0", ty(d, &c.state)).unwrap();
    let a = sc.add_input("a", ty(d, &seq(t, &c.a))).unwrap();
    let b = sc.add_input("b", ty(d, &seq(t, &c.b))).unwrap();
    let n = sc
        .add_node(
            Op::Scan(ScanOp {
                body: Arc::new(body),
                num_carry: 1,
                num_xs: 2,
                axis: 0,
                reverse,
            }),
            &[h0, a, b],
        )
        .unwrap();
    sc.add_output("final", kiln_ir::Value::new(n, 0)).unwrap();
    sc.add_output("states", kiln_ir::Value::new(n, 1)).unwrap();
    (lin, sc)
}

fn random(rng: &mut StdRng, d: DType, shape: Vec<usize>, lo: f64, hi: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_f64(d, shape, &v).unwrap()
}

fn run(g: &Graph, inputs: &BTreeMap<String, Tensor>, opts: &EvalOptions) -> Vec<Vec<f64>> {
    let none: BTreeMap<String, Tensor> = BTreeMap::new();
    let out = eval_with(g, inputs, &none, opts).unwrap();
    ["final", "states"]
        .iter()
        .map(|k| out[*k].to_f64_vec())
        .collect()
}

fn cases() -> Vec<Case> {
    vec![
        // Mamba: decay [d, N], input [d, N].
        Case {
            state: vec![3, 4],
            a: vec![3, 4],
            b: vec![3, 4],
        },
        // Decay shared across the state axis N.
        Case {
            state: vec![3, 4],
            a: vec![3, 1],
            b: vec![3, 4],
        },
        // RetNet: scalar decay per head against a matrix state per head.
        Case {
            state: vec![2, 3, 3],
            a: vec![2, 1, 1],
            b: vec![2, 3, 3],
        },
        // One decay for everything, input broadcast along a row.
        Case {
            state: vec![2, 5],
            a: vec![1, 1],
            b: vec![1, 5],
        },
        // A scalar state.
        Case {
            state: vec![],
            a: vec![],
            b: vec![],
        },
    ]
}

#[test]
fn equals_the_scan_it_replaces() {
    let mut rng = StdRng::seed_from_u64(11);
    for (ci, c) in cases().iter().enumerate() {
        for t in [0usize, 1, 2, 7, 33] {
            for reverse in [false, true] {
                let (lin, sc) = graphs(c, t, DType::F32, reverse, 0);
                let mut inputs = BTreeMap::new();
                inputs.insert(
                    "h0".to_string(),
                    random(&mut rng, DType::F32, c.state.clone(), -1.0, 1.0),
                );
                inputs.insert(
                    "a".to_string(),
                    random(&mut rng, DType::F32, seq(t, &c.a), 0.5, 1.0),
                );
                inputs.insert(
                    "b".to_string(),
                    random(&mut rng, DType::F32, seq(t, &c.b), -1.0, 1.0),
                );
                // In f64 both compute the same products and sums: equal to rounding.
                let want = run(&sc, &inputs, &EvalOptions::f64());
                let got = run(&lin, &inputs, &EvalOptions::f64());
                for k in 0..2 {
                    assert_eq!(got[k].len(), want[k].len());
                    assert!(
                        rel_l2(&got[k], &want[k]) < 1e-14,
                        "case {ci} t={t} reverse={reverse} result {k}"
                    );
                }
                // Declared f32: the scan rounds the carry each step, linear_scan once.
                let want = run(&sc, &inputs, &EvalOptions::default());
                let got = run(&lin, &inputs, &EvalOptions::default());
                for k in 0..2 {
                    assert!(
                        rel_l2(&got[k], &want[k]) < 1e-6,
                        "f32: case {ci} t={t} reverse={reverse} result {k}"
                    );
                }
            }
        }
    }
}

#[test]
fn reverse_runs_from_the_end_and_empty_sequences_keep_h0() {
    let c = &cases()[4];
    let (lin, _) = graphs(c, 3, DType::F32, true, 0);
    let mut inputs = BTreeMap::new();
    inputs.insert("h0".into(), Tensor::f32(vec![], vec![1.0]).unwrap());
    inputs.insert(
        "a".into(),
        Tensor::f32(vec![3], vec![2.0, 3.0, 4.0]).unwrap(),
    );
    inputs.insert(
        "b".into(),
        Tensor::f32(vec![3], vec![1.0, 0.0, -1.0]).unwrap(),
    );
    // h2 = 4·1 - 1 = 3, h1 = 3·3 + 0 = 9, h0 = 2·9 + 1 = 19.
    let out = run(&lin, &inputs, &EvalOptions::default());
    assert_eq!(out[0], vec![19.0]);
    assert_eq!(out[1], vec![19.0, 9.0, 3.0]);
    let (empty, _) = graphs(c, 0, DType::F32, false, 0);
    inputs.insert("a".into(), Tensor::f32(vec![0], vec![]).unwrap());
    inputs.insert("b".into(), Tensor::f32(vec![0], vec![]).unwrap());
    let out = run(&empty, &inputs, &EvalOptions::default());
    assert_eq!(out[0], vec![1.0]);
    assert!(out[1].is_empty());
}

#[test]
fn chunk_is_only_a_schedule_and_f16_rounds_once() {
    let mut rng = StdRng::seed_from_u64(5);
    let c = &cases()[1];
    let mut inputs = BTreeMap::new();
    for d in [DType::F32, DType::F16] {
        inputs.insert("h0".into(), random(&mut rng, d, c.state.clone(), -1.0, 1.0));
        inputs.insert("a".into(), random(&mut rng, d, seq(9, &c.a), 0.5, 1.0));
        inputs.insert("b".into(), random(&mut rng, d, seq(9, &c.b), -1.0, 1.0));
        let base = run(
            &graphs(c, 9, d, false, 0).0,
            &inputs,
            &EvalOptions::default(),
        );
        for chunk in [2, 4, 64] {
            let got = run(
                &graphs(c, 9, d, false, chunk).0,
                &inputs,
                &EvalOptions::default(),
            );
            assert_eq!(got, base, "chunk {chunk} {d}");
        }
        if d == DType::F16 {
            // Each element is the f64 result rounded once to f16.
            let exact = run(&graphs(c, 9, d, false, 0).0, &inputs, &EvalOptions::f64());
            for (g, e) in base[1].iter().zip(&exact[1]) {
                assert_eq!(*g, kiln_ir::interp::round_f16(*e).to_f64());
            }
        }
    }
}

#[test]
fn text_form_round_trips() {
    for reverse in [false, true] {
        let (lin, _) = graphs(&cases()[2], 4, DType::BF16, reverse, 16);
        let text = kiln_ir::text::print(&lin);
        assert!(
            text.contains(&format!("{{reverse={reverse}, chunk=16}}")),
            "{text}"
        );
        let back = kiln_ir::text::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, lin, "{text}");
        let json = kiln_ir::json::to_json(&lin);
        let back = kiln_ir::json::from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
        assert_eq!(back, lin, "{json}");
    }
}

#[test]
fn bad_operands_are_typed_errors() {
    let op = Op::LinearScan(LinearScanOp {
        reverse: false,
        chunk: 0,
    });
    let h = Tensor::zeros(DType::F32, vec![3, 4]);
    let a = Tensor::zeros(DType::F32, vec![5, 2, 4]);
    let b = Tensor::zeros(DType::F32, vec![5, 3, 4]);
    let e = eval_op(
        &op,
        &[h.clone(), a, b.clone()],
        &Bindings::new(),
        &EvalOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, InterpError::InvalidOperands { .. }), "{e}");
    assert!(e.to_string().contains("linear_scan"), "{e}");
    let ints = Tensor::zeros(DType::I32, vec![5, 3, 4]);
    assert!(eval_op(
        &op,
        &[h, ints, b],
        &Bindings::new(),
        &EvalOptions::default()
    )
    .is_err());
    let mut g = Graph::new("g");
    let x = g.add_input("x", ty(DType::F32, &[3])).unwrap();
    assert!(g.add_node(op, &[x, x, x]).is_err());
}
