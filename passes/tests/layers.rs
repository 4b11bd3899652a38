//! Identical layers optimized once: the result must be exactly what
//! optimizing every layer on its own gives (`LayerMode::Separate`), on the
//! built-in Llama and Mamba, on a test decoder whose layers the rules
//! rewrite, and on random graphs stacked into layers; and it must compute
//! what the input computes.

mod common;

use common::models::Decoder;
use common::*;
use kiln_ir::testing::{graph_from_entropy, GraphConfig};
use kiln_ir::{Graph, Op, Value};
use kiln_passes::provenance::explain;
use kiln_passes::{LayerMode, PassManager, PassOptions, Traced};
use rand::Rng;
use std::collections::HashMap;

fn opts(layers: LayerMode) -> PassOptions {
    PassOptions {
        layers,
        ..PassOptions::default()
    }
}

fn until(g: &Graph, last: &str, mode: LayerMode) -> Traced {
    PassManager::default_pipeline()
        .run_until_traced(g.clone(), last, &opts(mode))
        .unwrap_or_else(|e| panic!("{mode:?} up to {last}: {e}\n{g}"))
}

/// Shared and separate give the same graph and the same history after
/// every pass of the pipeline.
fn assert_shared_is_separate(g: &Graph, what: &str) -> Traced {
    let mut last = None;
    for pass in PassManager::default_pipeline().names() {
        let shared = until(g, pass, LayerMode::Shared);
        let separate = until(g, pass, LayerMode::Separate);
        assert!(
            shared.graph == separate.graph,
            "{what}: after {pass}, shared layers differ from separately optimized ones\nshared:\n{}\nseparate:\n{}",
            shared.graph,
            separate.graph
        );
        assert_eq!(
            explain(&shared.graph, &shared.provenance, true),
            explain(&separate.graph, &separate.provenance, true),
            "{what}: after {pass}, the histories differ"
        );
        last = Some(shared);
    }
    last.expect("the pipeline has passes")
}

fn builtin(name: &str) -> Graph {
    (kiln_models::builtin(name).expect("a built-in").build)().expect("it builds")
}

#[test]
fn llama_and_mamba_layers_are_optimized_once() {
    for (name, prefix) in [
        ("llama-tiny", "model.layers"),
        ("mamba-tiny", "backbone.layers"),
    ] {
        let g = builtin(name);
        let t = assert_shared_is_separate(&g, name);
        let canon = &t.reports[0];
        assert!(
            canon
                .detail
                .contains(&format!("layers 2 × {prefix}: 1 optimized, 1 replayed")),
            "{name}: {canon}"
        );
        kiln_passes::fuse::check_kernel_level(&t.graph).unwrap();
    }
}

#[test]
fn a_seven_b_shaped_llama_optimizes_one_layer_for_thirty_two() {
    let g = builtin("llama-7b-shape");
    let t = PassManager::default_pipeline()
        .run_traced(g, &PassOptions::default())
        .unwrap();
    for r in &t.reports[..2] {
        assert!(
            r.detail
                .contains("layers 32 × model.layers: 1 optimized, 31 replayed"),
            "{r}"
        );
        assert!(
            r.phases.iter().any(|(p, _)| p == "stitch"),
            "{:?}",
            r.phases
        );
    }
}

#[test]
fn rewritten_decoder_layers_match_and_stay_sound() {
    let cfg = Decoder {
        layers: 3,
        naive: true,
        ..Decoder::default()
    };
    let g = cfg.build();
    let t = assert_shared_is_separate(&g, "naive decoder");
    assert!(
        t.reports[0].detail.contains("1 optimized, 2 replayed"),
        "{}",
        t.reports[0]
    );
    assert!(t.reports[0].detail.contains("div-sqrt"), "{}", t.reports[0]);
    // Every layer's kernels carry the rewrites of their layer.
    let text = explain(&t.graph, &t.provenance, true);
    for l in 0..3 {
        assert!(
            text.lines()
                .any(|line| line.contains(&format!("at layers.{l}."))
                    && line.contains("canonicalize: ")),
            "layer {l} has no rewritten kernel:\n{text}"
        );
    }
    for trial in 0..2 {
        let mut r = rng(70 + trial);
        let (mut inputs, params) = random_env(&g, &mut r);
        let seq = inputs["tokens"].shape[0];
        let ids: Vec<i32> = (0..seq)
            .map(|_| r.random_range(0..cfg.vocab as i32))
            .collect();
        inputs.insert(
            "tokens".into(),
            kiln_ir::Tensor::i32(vec![seq], ids).unwrap(),
        );
        let want = run(&g, &inputs, &params).unwrap();
        let got = run(&t.graph, &inputs, &params).unwrap();
        for (name, w) in &want {
            compare(&got[name], w, false).unwrap_or_else(|m| panic!("{name}: {m}"));
        }
    }
}

#[test]
fn whole_graph_mode_still_works_and_agrees() {
    let cfg = Decoder {
        layers: 2,
        naive: true,
        ..Decoder::default()
    };
    let g = cfg.build();
    let whole = until(&g, "fuse", LayerMode::Whole);
    assert!(!whole.reports[0].detail.contains("layers "));
    let shared = until(&g, "fuse", LayerMode::Shared);
    let n = check_same(&whole.graph, &shared.graph, false, 5, 3).unwrap();
    assert!(n > 0);
}

/// `layers` copies of `r` in scopes `blocks.{l}`: parameters renamed per
/// layer, leaves without parameters (constants, iota) shared in the rest, the
/// first input whose type some output has fed by the previous layer's output.
fn stacked(r: &Graph, layers: usize) -> Graph {
    let mut g = Graph::new("stacked");
    let mut shared: HashMap<Value, Value> = HashMap::new();
    for &i in r.inputs() {
        let Op::Input { name, ty } = &r.node(i).op else {
            unreachable!()
        };
        shared.insert(
            Value::new(i, 0),
            g.add_input(name.clone(), ty.clone()).unwrap(),
        );
    }
    let chain = r.inputs().iter().find_map(|&i| {
        let ty = &r.node(i).outputs[0];
        r.outputs()
            .iter()
            .position(|o| r.ty(o.value) == ty)
            .map(|o| (Value::new(i, 0), o))
    });
    let order = r.topo_order();
    for &n in &order {
        let node = r.node(n);
        if matches!(node.op, Op::Const(_) | Op::Iota { .. }) {
            let v = g.add(node.op.clone(), &[]).unwrap();
            shared.insert(Value::new(n, 0), v);
        }
    }
    let mut prev: Option<Value> = None;
    for l in 0..layers {
        let mut map: HashMap<Value, Value> = shared.clone();
        if let (Some((i, _)), Some(p)) = (chain, prev) {
            map.insert(i, p);
        }
        for &n in &order {
            if map.contains_key(&Value::new(n, 0)) {
                continue;
            }
            let node = r.node(n);
            let op = match &node.op {
                Op::Param { name, ty } => Op::Param {
                    name: format!("blocks.{l}.{name}"),
                    ty: ty.clone(),
                },
                op => op.clone(),
            };
            let operands: Vec<Value> = r.operands(n).iter().map(|v| map[v]).collect();
            let id = g.add_node(op, &operands).unwrap();
            let loc = match &node.loc {
                Some(loc) => format!("blocks.{l}.{loc}"),
                None => format!("blocks.{l}"),
            };
            g.set_loc(id, Some(loc));
            for port in 0..node.outputs.len() as u32 {
                map.insert(Value::new(n, port), Value::new(id, port));
            }
        }
        for o in r.outputs() {
            g.add_output(format!("b{l}.{}", o.name), map[&o.value])
                .unwrap();
        }
        prev = chain.map(|(_, o)| map[&r.outputs()[o].value]);
    }
    kiln_ir::verify(&g).unwrap();
    g
}

#[test]
fn random_graphs_stacked_into_layers() {
    let cfg = GraphConfig {
        aliases: false,
        ..GraphConfig::default()
    };
    let mut r = rng(2024);
    let mut layered = 0;
    for case in 0..40 {
        let entropy: Vec<u32> = (0..cfg.entropy_len()).map(|_| r.random()).collect();
        let one = graph_from_entropy(&entropy, &cfg);
        if one.outputs().is_empty() {
            continue;
        }
        let g = stacked(&one, 3);
        let shared = until(&g, "canonicalize", LayerMode::Shared);
        let separate = until(&g, "canonicalize", LayerMode::Separate);
        assert!(
            shared.graph == separate.graph,
            "case {case}: shared layers differ\ninput:\n{g}\nshared:\n{}\nseparate:\n{}",
            shared.graph,
            separate.graph
        );
        kiln_ir::verify(&shared.graph).unwrap();
        if shared.reports[0].detail.contains("replayed") {
            layered += 1;
        }
    }
    assert!(layered >= 30, "only {layered} cases were cut into layers");
}

/// With bit-exact rules only, the layered result computes exactly what the
/// input does.
#[test]
fn random_layered_graphs_stay_exact() {
    use kiln_passes::canonicalize::rewrite_traced;
    use kiln_passes::rules::{registry, Exactness};
    let exact: Vec<_> = registry()
        .iter()
        .filter(|r| r.exactness == Exactness::Exact)
        .collect();
    let stages = [("exact", exact)];
    let cfg = GraphConfig {
        aliases: false,
        ..GraphConfig::default()
    };
    let mut r = rng(77);
    let mut compared = 0;
    for _ in 0..40 {
        let entropy: Vec<u32> = (0..cfg.entropy_len()).map(|_| r.random()).collect();
        let g = stacked(&graph_from_entropy(&entropy, &cfg), 2);
        let out = rewrite_traced(
            &g,
            &Default::default(),
            &stages,
            &opts(LayerMode::Shared),
            "test",
            1,
        )
        .unwrap();
        kiln_ir::verify(&out.graph).unwrap();
        compared += check_same(&g, &out.graph, true, 3, 2)
            .unwrap_or_else(|e| panic!("{e}\n{g}\n{}", out.graph));
    }
    assert!(compared >= 40, "only {compared} evaluations compared");
}
