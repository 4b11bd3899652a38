//! The text form round-trips: `parse(print(g)) == g` for every verified graph,
//! and `print(parse(t)) == t` for printed text.

use kiln_ir::testing::{arb_graph, graph_from_entropy, op_names, GraphConfig};
use kiln_ir::text::{parse, print};
use kiln_ir::{verify, BinaryOp, CmpOp, Op, ReduceOp, UnaryOp};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use std::collections::BTreeSet;

const TINY: &str = r#"graph @tiny(%tokens: i32[seq], %k_cache: f32[past,4,16], %h: f32[64]) {
  %0 = param "embed.weight" : f32[256,64]
  %1 = gather(%0, %tokens) {axis=0} : f32[seq,64] loc("embed")
  %2 = const 0.125 : f32[]
  %3 = mul(%1, %2) : f32[seq,64]
  %4:2 = scan(%h, %3) {num_carry=1, num_xs=1, axis=0, reverse=false} : (f32[64], f32[seq,64]) body
    graph @step(%c: f32[64], %x: f32[64]) {
      %0 = add(%c, %x) : f32[64]
      %1 = tanh(%0) : f32[64]
      return %1 as "c", %0 as "y"
    }
  %5 = slice(%k_cache) {axis=0, start=0, end=past} : f32[past,4,16]
  %6 = const [1, -2, 3] : i32[3]
  return %4#1 as "logits", %5 as "k_cache_out" alias %k_cache, %6 as "ints"
}
"#;

#[test]
fn documented_example_round_trips() {
    let g = parse(TINY).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(print(&g), TINY);
    assert_eq!(g.output_types()[0].to_string(), "f32[seq,64]");
    assert_eq!(g.params().len(), 1);
}

#[test]
fn any_names_and_layout_parse_to_the_canonical_text() {
    // Names other than numbers, odd spacing, comments, attributes out of order.
    let text = r#"
graph @tiny ( %tokens : i32[seq] , %k_cache: f32[past,4,16], %h: f32[64] ) {  // header
  %w = param "embed.weight" : f32[256, 64]
  %e = gather(%w, %tokens) {axis=0} : f32[seq,64] loc("embed")
  %s = const 0.125 : f32[]
  %m = mul(%e,%s) : f32[seq,64]
  %sc:2 = scan(%h, %m) {reverse=false, axis=0, num_xs=1, num_carry=1}
       : (f32[64], f32[seq,64]) body
    graph @step(%c: f32[64], %x: f32[64]) {
      %sum = add(%c, %x) : f32[64]
      %t = tanh(%sum) : f32[64]
      return %t as "c", %sum as "y"
    }
  %kc = slice(%k_cache) {axis=0, start=0, end=past} : f32[past,4,16]
  %i = const [1, -2, 3] : i32[3]
  return %sc#1 as "logits", %kc as "k_cache_out" alias %k_cache, %i as "ints"
}"#;
    let g = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(print(&g), TINY);
}

#[test]
fn special_floats_and_escapes_round_trip() {
    let text = "graph @g(%x: f32[2] loc(\"in\\tput\")) {\n  \
        %0 = pad(%x) {axis=0, low=1, high=seq, value=-0} : f32[seq+3]\n  \
        %1 = pad(%x) {axis=0, low=0, high=0, value=0xfff8000000000000} : f32[2]\n  \
        %2 = const [inf, -inf, nan, -0, 0x7ff8000000000001, 1e-30, 3.4028235e38, 0.1] : f32[8]\n  \
        %3 = const [65504, -0, 0.099975586] : f16[3]\n  \
        %4 = const [-128, 127] : i8[2]\n  \
        %5 = const [true, false] : bool[2]\n  \
        %6 = const [] : bf16[0,3]\n  \
        %7 = const -9223372036854775808 : i64[]\n  \
        return %0 as \"a \\\"b\\\"\\n\\u{1}\", %1 as \"\u{fc}\"\n}\n";
    let g = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(print(&g), text);
    let again = parse(&print(&g)).unwrap();
    assert_eq!(again, g);
}

#[test]
fn an_empty_return_round_trips() {
    let text = "graph @g(%x: f32[]) {\n  return\n}\n";
    assert_eq!(print(&parse(text).unwrap()), text);
}

fn round_trip(g: &kiln_ir::Graph) -> Result<(), TestCaseError> {
    verify(g)
        .map_err(|e| TestCaseError::fail(format!("generator made an invalid graph: {e}\n{g}")))?;
    let text = print(g);
    let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    prop_assert_eq!(&back, g, "{}", text);
    prop_assert_eq!(print(&back), text);
    Ok(())
}

proptest! {
    #![proptest_config(kiln_ir::testing::config(256))]

    #[test]
    fn random_graphs_round_trip(g in arb_graph()) {
        round_trip(&g)?;
    }

    #[test]
    fn random_static_graphs_without_bodies_round_trip(g in kiln_ir::testing::arb_graph_with(GraphConfig {
        symbolic: false, scan: false, fused: false, ..GraphConfig::default()
    })) {
        round_trip(&g)?;
    }
}

/// The generator covers every op kind (so the round trip above tests them all).
#[test]
fn the_generator_covers_every_op() {
    let mut runner = TestRunner::deterministic();
    let cfg = GraphConfig::default();
    let mut seen: BTreeSet<&'static str> = BTreeSet::new();
    let (mut multi_scan, mut batch_mm, mut sym_slice, mut alias, mut loc) =
        (false, false, false, false, false);
    let strategy = prop::collection::vec(any::<u32>(), cfg.entropy_len());
    for _ in 0..300 {
        let e = strategy.new_tree(&mut runner).unwrap().current();
        let g = graph_from_entropy(&e, &cfg);
        seen.extend(op_names(&g));
        alias |= g.outputs().iter().any(|o| o.alias.is_some());
        for n in g.node_ids() {
            let node = g.node(n);
            loc |= node.loc.is_some();
            match &node.op {
                Op::Scan(_) => multi_scan |= node.outputs.len() >= 2,
                Op::MatMul => {
                    let ops = g.operands(n);
                    batch_mm |= g.ty(ops[0]).rank() != g.ty(ops[1]).rank();
                }
                Op::Slice { start, end, .. } => sym_slice |= !start.is_const() && !end.is_const(),
                _ => {}
            }
        }
    }
    let mut want: Vec<&str> = vec![
        "input",
        "param",
        "const",
        "iota",
        "select",
        "cast",
        "reshape",
        "permute",
        "broadcast",
        "slice",
        "concat",
        "pad",
        "gather",
        "matmul",
        "update_slice",
        "scan",
        "fused",
    ];
    want.extend(UnaryOp::ALL.iter().map(|o| o.name()));
    want.extend(BinaryOp::ALL.iter().map(|o| o.name()));
    want.extend(CmpOp::ALL.iter().map(|o| o.name()));
    want.extend(ReduceOp::ALL.iter().map(|o| o.name()));
    let missing: Vec<&&str> = want.iter().filter(|w| !seen.contains(**w)).collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
    assert!(multi_scan && batch_mm && sym_slice && alias && loc);
}

/// A decoder-layer-like graph written with the DSL: attention with a causal
/// mask over a KV cache (aliased output), RMS norm, SwiGLU, and a scan.
fn dsl_layer() -> kiln_ir::Graph {
    use kiln_ir::dsl::ModelBuilder;
    use kiln_ir::{shape, DType};
    let b = ModelBuilder::new("layer");
    let x = b.input("x", DType::F32, shape!["seq", 8]);
    let k_cache = b.input("k_cache", DType::F32, shape!["past", 8]);
    let h0 = b.input("h0", DType::F32, shape![8]);
    let (g, wq, wk) = (
        b.param("norm.g", DType::F32, shape![8]),
        b.param("wq", DType::F32, shape![8, 8]),
        b.param("wk", DType::F32, shape![8, 8]),
    );
    let w1 = b.param("w1", DType::F32, shape![8, 16]);
    let w2 = b.param("w2", DType::F32, shape![16, 8]);
    let h = {
        let _s = b.scope("layers.0.attn");
        let n = x.rms_norm(&g, 1e-5);
        let q = n.matmul(&wq);
        let k = k_cache.concat(&[&n.matmul(&wk)], 0);
        let scores = q.matmul(&k.transpose(0, 1)) * 0.125;
        let qi = b.arange(DType::I32, "seq", "past");
        let ki = b.arange(DType::I32, "past+seq", 0);
        let mask = qi
            .reshape(shape!["seq", 1])
            .ge(&ki.reshape(shape![1, "past+seq"]));
        let p = mask.select_scalar(&scores, f64::NEG_INFINITY).softmax(-1);
        b.output_alias("k_cache_out", &k.slice(0, 0, "past"), "k_cache");
        &x + &p.matmul(&k)
    };
    let ff = {
        let _s = b.scope("layers.0.mlp");
        (h.matmul(&w1).silu() * h.matmul(&w1)).matmul(&w2)
    };
    let (finals, ys) = b.scan(&[&h0], &[&ff], &[], 0, true, |_, c, x, _| {
        let s = (&c[0] + &x[0]).tanh();
        (vec![s.clone()], vec![s])
    });
    b.output("y", &ys[0]);
    b.output("h", &finals[0]);
    b.finish().unwrap()
}

#[test]
fn dsl_built_graphs_round_trip() {
    let g = dsl_layer();
    round_trip(&g).unwrap();
    let text = print(&g);
    assert!(text.contains("loc(\"layers.0.attn\")"), "{text}");
    assert!(text.contains("alias %k_cache"), "{text}");
    assert!(
        text.contains("value=-inf") || text.contains("-inf"),
        "{text}"
    );
    let json = kiln_ir::json::to_json(&g);
    assert_eq!(kiln_ir::json::from_json(&json).unwrap(), g);
}
