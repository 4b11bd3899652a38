//! The DSL builds verified graphs, names the failing call on errors, and
//! records scopes as node locations.

use kiln_ir::dsl::ModelBuilder;
use kiln_ir::{shape, DType, Op};

#[test]
fn builds_a_verified_mlp() {
    let b = ModelBuilder::new("mlp");
    let x = b.input("x", DType::F32, shape!["seq", 16]);
    let w1 = b.param("w1", DType::F32, shape![16, 32]);
    let w2 = b.param("w2", DType::F32, shape![32, 16]);
    let g = b.param("g", DType::F32, shape![16]);
    let h = x.matmul(&w1).silu().matmul(&w2) + &x;
    let y = h.rms_norm(&g, 1e-5);
    b.output("y", &y);
    let graph = b.finish().unwrap();
    kiln_ir::verify(&graph).unwrap();
    assert_eq!(graph.output_types()[0].to_string(), "f32[seq,16]");
    assert_eq!(graph.params().len(), 3);
}

#[test]
fn shape_error_names_the_caller_line_and_scope() {
    let b = ModelBuilder::new("bad");
    let x = b.input("x", DType::F32, shape!["seq", 16]);
    let w = b.param("w", DType::F32, shape![8, 4]);
    let line = line!() + 3;
    let y = {
        let _s = b.scope("layers.0");
        x.matmul(&w)
    };
    // Later ops keep working on placeholders; the first error wins.
    let z = y.exp() + 1.0;
    b.output("z", &z);
    let err = b.finish().unwrap_err();
    assert!(err.message.contains("contraction sizes differ"), "{err}");
    assert!(
        err.caller.ends_with(&format!("dsl.rs:{line}:11")),
        "{}",
        err.caller
    );
    assert_eq!(err.scope.as_deref(), Some("layers.0"));
}

#[test]
fn scopes_become_node_locations() {
    let b = ModelBuilder::new("scoped");
    let x = b.input("x", DType::F32, shape![4]);
    let y = {
        let _outer = b.scope("layers.3");
        let _inner = b.scope("attn");
        x.exp()
    };
    let z = y.tanh();
    b.output("z", &z);
    let g = b.finish().unwrap();
    let locs: Vec<Option<String>> = g.node_ids().map(|n| g.node(n).loc.clone()).collect();
    assert!(locs.contains(&Some("layers.3.attn".to_string())));
    // The tanh was created after both guards were dropped.
    let tanh = g
        .node_ids()
        .find(|&n| g.node(n).op.name() == "tanh")
        .unwrap();
    assert_eq!(g.node(tanh).loc, None);
}

#[test]
fn bad_axis_is_an_error_not_a_panic() {
    let b = ModelBuilder::new("axis");
    let x = b.input("x", DType::F32, shape![4, 4]);
    let y = x.softmax(2);
    b.output("y", &y);
    let err = b.finish().unwrap_err();
    assert!(err.message.contains("axis 2 out of range"), "{err}");
}

#[test]
fn scan_builds_a_body_with_carries_and_sequences() {
    let b = ModelBuilder::new("cumsum");
    let xs = b.input("xs", DType::F32, shape!["seq", 3]);
    let h0 = b.input("h0", DType::F32, shape![3]);
    let decay = b.param("decay", DType::F32, shape![3]);
    let (finals, ys) = b.scan(&[&h0], &[&xs], &[&decay], 0, false, |_, c, x, k| {
        let h = &c[0] * &k[0] + &x[0];
        (vec![h.clone()], vec![h])
    });
    b.output("h", &finals[0]);
    b.output("ys", &ys[0]);
    let g = b.finish().unwrap();
    assert_eq!(g.output_types()[0].to_string(), "f32[3]");
    assert_eq!(g.output_types()[1].to_string(), "f32[seq,3]");
    let scan = g
        .node_ids()
        .find(|&n| matches!(g.node(n).op, Op::Scan(_)))
        .unwrap();
    assert_eq!(g.operands(scan).len(), 3);
}

#[test]
fn scan_body_error_is_reported() {
    let b = ModelBuilder::new("badscan");
    let xs = b.input("xs", DType::F32, shape!["seq", 3]);
    let h0 = b.input("h0", DType::F32, shape![3]);
    let (_, ys) = b.scan(&[&h0], &[&xs], &[], 0, false, |_, c, x, _| {
        let h = c[0].matmul(&x[0]);
        (vec![h.clone()], vec![h])
    });
    b.output("ys", &ys[0]);
    let err = b.finish().unwrap_err();
    assert!(err.message.contains("in scan body"), "{err}");
}

#[test]
fn arange_with_symbolic_offset() {
    let b = ModelBuilder::new("pos");
    let t = b.input("tokens", DType::I32, shape!["seq"]);
    let pos = b.arange(DType::I32, "seq", "past");
    let y = &t + &pos;
    b.output("y", &y);
    let g = b.finish().unwrap();
    assert_eq!(g.output_types()[0].to_string(), "i32[seq]");
    assert_eq!(g.symbols(), vec!["past".to_string(), "seq".to_string()]);
}

#[test]
fn duplicate_input_and_bad_alias_are_errors() {
    let b = ModelBuilder::new("dup");
    let _ = b.input("x", DType::F32, shape![4]);
    let _ = b.input("x", DType::F32, shape![4]);
    assert!(b.finish().unwrap_err().message.contains("declared twice"));

    let b = ModelBuilder::new("alias");
    let x = b.input("x", DType::F32, shape![4]);
    let y = x.sum(&[0], false);
    b.output_alias("y", &y, "x");
    assert!(b.finish().unwrap_err().message.contains("types differ"));
}

#[test]
fn size_names_must_be_identifiers() {
    let b = ModelBuilder::new("names");
    let x = b.input("x", DType::F32, vec![kiln_ir::Dim::sym("a b")]);
    b.output("y", &x.exp());
    let err = b.finish().unwrap_err();
    assert!(err.message.contains("size name `a b`"), "{err}");
}
