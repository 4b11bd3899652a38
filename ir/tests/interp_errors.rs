//! Every way evaluation can fail gives a typed error whose message names the
//! problem and the place.

mod interp_common;
use interp_common::*;

use kiln_ir::interp::{eval, eval_op, eval_positional, EvalOptions, InterpError};
use kiln_ir::op::ScanOp;
use kiln_ir::{BinaryOp, Bindings, DType, Op, Tensor, TensorData, Value};
use std::collections::HashMap;
use std::sync::Arc;

fn msg(e: &InterpError) -> String {
    e.to_string()
}

fn assert_has(e: &InterpError, parts: &[&str]) {
    let m = msg(e);
    for p in parts {
        assert!(m.contains(p), "`{m}` should mention `{p}`");
    }
}

/// `y = x + bias` with `x: f32[seq,4]`, a second input `m: f32[seq]` and a param.
fn small_graph() -> kiln_ir::Graph {
    let mut b = B::new("small");
    let x = b.input("x", f32t(&["seq", "4"]));
    let m = b.input("m", f32t(&["seq"]));
    let bias = b.param("bias", f32t(&["4"]));
    let y = b.add(x, bias);
    b.out("y", y);
    b.out("m", m);
    b.g
}

fn bias() -> HashMap<String, Tensor> {
    [("bias".to_string(), f32_tensor(&[4], &[1.0; 4]))].into()
}

fn ok_inputs(seq: usize) -> Vec<(&'static str, Tensor)> {
    vec![
        ("x", f32_tensor(&[seq, 4], &vec![0.0; seq * 4])),
        ("m", f32_tensor(&[seq], &vec![0.0; seq])),
    ]
}

#[test]
fn the_happy_path_works() {
    let outs = eval(&small_graph(), &named(ok_inputs(2)), &bias()).unwrap();
    assert_eq!(outs["y"].to_f64_vec(), vec![1.0; 8]);
}

#[test]
fn a_malformed_graph_is_rejected_by_the_verifier() {
    let mut g = small_graph();
    g.name = "not an identifier".into();
    let e = eval(&g, &named(ok_inputs(2)), &bias()).unwrap_err();
    assert!(matches!(e, InterpError::Verify(_)), "{e}");
    assert_has(&e, &["not well-formed", "not an identifier"]);
}

#[test]
fn missing_unexpected_and_miscounted_inputs() {
    let g = small_graph();
    let mut inputs = named(ok_inputs(2));
    inputs.remove("m");
    let e = eval(&g, &inputs, &bias()).unwrap_err();
    assert!(
        matches!(&e, InterpError::MissingInput { name, .. } if name == "m"),
        "{e}"
    );
    assert_has(&e, &["missing input `m`", "f32[seq]"]);

    let mut inputs = named(ok_inputs(2));
    inputs.insert("z".into(), f32_tensor(&[1], &[0.0]));
    let e = eval(&g, &inputs, &bias()).unwrap_err();
    assert!(
        matches!(&e, InterpError::UnexpectedInput { name, .. } if name == "z"),
        "{e}"
    );
    assert_has(&e, &["unexpected input `z`", "@small"]);

    let e = eval_positional(
        &g,
        &[f32_tensor(&[1, 4], &[0.0; 4])],
        &bias(),
        &EvalOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            InterpError::InputCount {
                expected: 2,
                got: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_has(&e, &["takes 2 input(s), got 1"]);
}

fn input_error(inputs: Vec<(&str, Tensor)>) -> InterpError {
    eval(&small_graph(), &named(inputs), &bias()).unwrap_err()
}

#[test]
fn inputs_of_the_wrong_dtype_rank_or_shape() {
    let e = input_error(vec![
        ("x", Tensor::i32(vec![2, 4], vec![0; 8]).unwrap()),
        ok_inputs(2).remove(1),
    ]);
    assert!(
        matches!(&e, InterpError::InputType { name, .. } if name == "x"),
        "{e}"
    );
    assert_has(&e, &["input `x`", "f32[seq,4]", "i32[2,4]", "dtype is i32"]);

    let e = input_error(vec![
        ("x", f32_tensor(&[8], &[0.0; 8])),
        ok_inputs(2).remove(1),
    ]);
    assert_has(&e, &["input `x`", "rank is 1, not 2"]);

    let e = input_error(vec![
        ("x", f32_tensor(&[2, 5], &[0.0; 10])),
        ok_inputs(2).remove(1),
    ]);
    assert!(matches!(e, InterpError::InputType { .. }), "{e}");
    assert_has(&e, &["input `x`", "axis 1", "should be 4", "has 5"]);

    // `seq` is 2 from `x` and 3 from `m`: the conflict names the later input.
    let e = input_error(vec![
        ok_inputs(2).remove(0),
        ("m", f32_tensor(&[3], &[0.0; 3])),
    ]);
    assert!(
        matches!(&e, InterpError::InputType { name, .. } if name == "m"),
        "{e}"
    );
    assert_has(&e, &["input `m`", "axis 0", "`seq`"]);

    // Data that does not fill its shape.
    let bad = Tensor {
        shape: vec![2, 4],
        data: TensorData::F32(vec![0.0; 7]),
    };
    let e = input_error(vec![("x", bad), ok_inputs(2).remove(1)]);
    assert_has(&e, &["input `x`", "holds 7 elements", "needs 8"]);

    // f64 storage is for F64 precision only.
    let f64x = Tensor::new(vec![2, 4], TensorData::F64(vec![0.0; 8])).unwrap();
    let e = input_error(vec![("x", f64x.clone()), ok_inputs(2).remove(1)]);
    assert_has(&e, &["input `x`", "f64[2,4]", "F64 precision"]);
    let mut inputs = ok_inputs(2);
    inputs[0].1 = f64x;
    let outs =
        kiln_ir::interp::eval_with(&small_graph(), &named(inputs), &bias(), &EvalOptions::f64())
            .unwrap();
    assert_eq!(f64s_of(&outs["y"]), vec![1.0; 8]);
}

#[test]
fn a_dim_that_cannot_be_solved_names_the_input() {
    let mut b = B::new("even");
    let x = b.input("x", f32t(&["2*n"]));
    b.out("y", x);
    let e = eval(
        &b.g,
        &named(vec![("x", f32_tensor(&[7], &[0.0; 7]))]),
        &no_params(),
    )
    .unwrap_err();
    assert!(matches!(e, InterpError::InputType { .. }), "{e}");
    assert_has(&e, &["input `x`", "f32[2*n]", "cannot solve"]);
}

#[test]
fn missing_and_mistyped_params() {
    let g = small_graph();
    let e = eval(&g, &named(ok_inputs(2)), &HashMap::new()).unwrap_err();
    assert!(
        matches!(&e, InterpError::MissingParam { name, .. } if name == "bias"),
        "{e}"
    );
    assert_has(&e, &["missing parameter `bias`", "f32[4]"]);

    let wrong: HashMap<String, Tensor> = [("bias".to_string(), f32_tensor(&[3], &[0.0; 3]))].into();
    let e = eval(&g, &named(ok_inputs(2)), &wrong).unwrap_err();
    assert!(
        matches!(&e, InterpError::ParamType { name, .. } if name == "bias"),
        "{e}"
    );
    assert_has(&e, &["parameter `bias`", "f32[4]", "f32[3]", "axis 0"]);

    let wrong: HashMap<String, Tensor> =
        [("bias".to_string(), Tensor::zeros(DType::F16, vec![4]))].into();
    let e = eval(&g, &named(ok_inputs(2)), &wrong).unwrap_err();
    assert_has(&e, &["parameter `bias`", "dtype is f16, not f32"]);
}

fn gather_graph() -> kiln_ir::Graph {
    let mut b = B::new("lookup");
    let t = b.input("table", f32t(&["5", "2"]));
    let i = b.input("ids", ty(DType::I64, &["n"]));
    let y = b.op(Op::Gather { axis: 0 }, &[t, i]);
    b.g.set_loc(y.node, Some("embed".into()));
    b.out("y", y);
    b.g
}

#[test]
fn out_of_range_gather_names_the_op_index_and_size() {
    let g = gather_graph();
    for bad in [5i64, -1, i64::MAX] {
        let inputs = named(vec![
            ("table", f32_tensor(&[5, 2], &[0.0; 10])),
            ("ids", Tensor::i64(vec![3], vec![0, bad, 1]).unwrap()),
        ]);
        let e = eval(&g, &inputs, &no_params()).unwrap_err();
        assert!(
            matches!(e, InterpError::IndexOutOfRange { index, size: 5, .. } if index == bad),
            "{e}"
        );
        assert_has(
            &e,
            &["`gather` at embed", &format!("index {bad}"), "size 5"],
        );
    }
}

#[test]
fn errors_inside_bodies_name_the_outer_node_and_the_step() {
    // A scan whose body divides by the step's x: zero at step 2.
    let mut body = B::new("body");
    let c = body.input("c", ty(DType::I32, &[]));
    let x = body.input("x", ty(DType::I32, &[]));
    let q = body.bin(BinaryOp::Div, c, x);
    body.out("c_next", q);
    let mut b = B::new("outer");
    let c0 = b.input("c0", ty(DType::I32, &[]));
    let xs = b.input("xs", ty(DType::I32, &["n"]));
    let op = Op::Scan(ScanOp {
        body: Arc::new(body.g),
        num_carry: 1,
        num_xs: 1,
        axis: 0,
        reverse: false,
    });
    let n = b.g.add_node(op, &[c0, xs]).unwrap();
    b.out("y", Value::new(n, 0));
    let inputs = named(vec![
        ("c0", Tensor::i32(vec![], vec![100]).unwrap()),
        ("xs", Tensor::i32(vec![4], vec![2, 5, 0, 1]).unwrap()),
    ]);
    let e = eval(&b.g, &inputs, &no_params()).unwrap_err();
    assert!(matches!(e, InterpError::DivisionByZero { .. }), "{e}");
    assert_has(&e, &["`scan`", "step 2", "`div`", "division by zero"]);
}

#[test]
fn an_unbound_size_is_a_dim_error_at_the_node() {
    let mut b = B::new("unbound");
    let y = b.op(
        Op::Iota {
            ty: ty(DType::I32, &["n"]),
            axis: 0,
        },
        &[],
    );
    b.out("y", y);
    let e = eval(&b.g, &named(vec![]), &no_params()).unwrap_err();
    assert!(matches!(e, InterpError::Dim { .. }), "{e}");
    assert_has(&e, &["`iota`", "`n` is not bound"]);
}

#[test]
fn eval_op_checks_its_operands() {
    let none = Bindings::new();
    let opts = EvalOptions::default();
    let add = Op::Binary(BinaryOp::Add);
    let e = eval_op(
        &add,
        &[f32_tensor(&[2], &[1.0, 2.0]), f32_tensor(&[3], &[0.0; 3])],
        &none,
        &opts,
    )
    .unwrap_err();
    assert!(matches!(e, InterpError::InvalidOperands { .. }), "{e}");
    assert_has(&e, &["`add`", "do not broadcast"]);

    let e = eval_op(&add, &[f32_tensor(&[2], &[1.0, 2.0])], &none, &opts).unwrap_err();
    assert_has(&e, &["`add`", "expects 2 operand(s), got 1"]);

    let e = eval_op(
        &add,
        &[
            f32_tensor(&[1], &[1.0]),
            Tensor::i32(vec![1], vec![1]).unwrap(),
        ],
        &none,
        &opts,
    )
    .unwrap_err();
    assert_has(&e, &["`add`", "dtypes differ"]);

    let f64t = Tensor::new(vec![1], TensorData::F64(vec![1.0])).unwrap();
    let e = eval_op(&add, &[f64t.clone(), f64t.clone()], &none, &opts).unwrap_err();
    assert_has(&e, &["`add`", "f64 storage"]);
    let ok = eval_op(
        &add,
        &[f64t.clone(), f32_tensor(&[1], &[2.0])],
        &none,
        &EvalOptions::f64(),
    )
    .unwrap();
    assert_eq!(f64s_of(&ok[0]), vec![3.0]);

    let input = Op::Input {
        name: "x".into(),
        ty: f32t(&["1"]),
    };
    let e = eval_op(&input, &[], &none, &opts).unwrap_err();
    assert_has(&e, &["`input`", "`x`", "bound by `eval`"]);

    let bad = Tensor {
        shape: vec![3],
        data: TensorData::F32(vec![1.0]),
    };
    let e = eval_op(&Op::Unary(kiln_ir::UnaryOp::Neg), &[bad], &none, &opts).unwrap_err();
    assert_has(&e, &["`neg`", "holds 1 elements"]);

    // Symbolic attributes need their sizes.
    let slice = Op::Slice {
        axis: 0,
        start: kiln_ir::Dim::from(0),
        end: kiln_ir::Dim::from("n"),
    };
    let e = eval_op(&slice, &[f32_tensor(&[4], &[0.0; 4])], &none, &opts).unwrap_err();
    assert!(matches!(e, InterpError::Dim { .. }), "{e}");
    let mut b = Bindings::new();
    b.insert("n".into(), 5);
    let e = eval_op(&slice, &[f32_tensor(&[4], &[0.0; 4])], &b, &opts).unwrap_err();
    assert_has(&e, &["`slice`", "exceeds the axis size"]);
    b.insert("n".into(), 3);
    let ok = eval_op(
        &slice,
        &[f32_tensor(&[4], &[1.0, 2.0, 3.0, 4.0])],
        &b,
        &opts,
    )
    .unwrap();
    assert_eq!(ok[0].to_f64_vec(), vec![1.0, 2.0, 3.0]);
}
