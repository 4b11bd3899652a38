//! The pass manager end to end: the default pipeline on transformer-shaped
//! graphs, reports, dumps, pass selection and its errors.

mod common;

use common::models::Decoder;
use common::*;
use kiln_ir::{shape, BinaryOp, DType, Graph, Op, Tensor, TensorType, UnaryOp};
use kiln_passes::fuse::check_kernel_level;
use kiln_passes::{optimize, DumpConfig, PassError, PassManager, PassOptions};
use rand::Rng;
use std::collections::BTreeMap;
use std::time::Instant;

fn decoder_env(
    g: &Graph,
    vocab: usize,
    seed: u64,
) -> (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) {
    let mut r = rng(seed);
    let (mut inputs, params) = random_env(g, &mut r);
    let seq = inputs["tokens"].shape[0];
    let ids: Vec<i32> = (0..seq).map(|_| r.random_range(0..vocab as i32)).collect();
    inputs.insert("tokens".into(), Tensor::i32(vec![seq], ids).unwrap());
    (inputs, params)
}

#[test]
fn four_layer_decoder_runs_through_the_pipeline() {
    let cfg = Decoder {
        layers: 4,
        ..Decoder::default()
    };
    let g = cfg.build();
    let pm = PassManager::default_pipeline();
    assert_eq!(
        pm.names(),
        vec![
            "canonicalize",
            "recognize",
            "lossy",
            "layout",
            "dce",
            "fuse"
        ]
    );
    let (out, reports) = pm.run(g.clone(), &PassOptions::default()).unwrap();
    kiln_ir::verify(&out).unwrap();
    check_kernel_level(&out).unwrap();
    assert_eq!(reports.len(), 6);
    assert!(reports[0].detail.contains("stop:"), "{}", reports[0]);
    // This decoder stores its weights `[in, out]`: no transpose to fold.
    assert_eq!(reports[3].pass, "layout");
    assert!(
        reports[3].detail.starts_with("0 matmul(s)"),
        "{}",
        reports[3]
    );
    assert!(reports[5].detail.contains("kernel"), "{}", reports[5]);
    assert!(reports[5].nodes_after < reports[5].nodes_before);
    for t in 0..2 {
        let (inputs, params) = decoder_env(&g, cfg.vocab, 40 + t);
        let want = run(&g, &inputs, &params).unwrap();
        let got = run(&out, &inputs, &params).unwrap();
        for (name, w) in &want {
            compare(&got[name], w, false).unwrap_or_else(|m| panic!("{name}: {m}"));
        }
    }
}

#[test]
fn naive_decoder_is_canonicalized_and_sound() {
    let cfg = Decoder {
        layers: 2,
        naive: true,
        ..Decoder::default()
    };
    let g = cfg.build();
    let (canon, reports) = PassManager::default_pipeline()
        .run_until(g.clone(), "canonicalize", &PassOptions::default())
        .unwrap();
    let detail = &reports[0].detail;
    for rule in [
        "pow-to-mul",
        "div-sqrt",
        "div-const",
        "permute-permute",
        "mul-one",
        "add-zero",
        "cast-identity",
    ] {
        assert!(detail.contains(rule), "{rule} did not fire: {detail}");
    }
    let count = |g: &Graph, name: &str| {
        g.node_ids()
            .filter(|&n| g.node(n).op.name() == name)
            .count()
    };
    assert_eq!(count(&canon, "pow"), 0, "{canon}");
    assert_eq!(count(&canon, "cast"), 0, "{canon}");
    let (out, _) = PassManager::default_pipeline()
        .run(g.clone(), &PassOptions::default())
        .unwrap();
    for t in 0..2 {
        let (inputs, params) = decoder_env(&g, cfg.vocab, 70 + t);
        let want = run(&g, &inputs, &params).unwrap();
        for after in [&canon, &out] {
            let got = run(after, &inputs, &params).unwrap();
            for (name, w) in &want {
                compare(&got[name], w, false).unwrap_or_else(|m| panic!("{name}: {m}"));
            }
        }
    }
}

#[test]
fn canonicalize_folds_transposes_and_identities() {
    // k^T of a head split is permute(permute(reshape(..))): one permute remains.
    let g = Decoder {
        layers: 1,
        kv_cache: false,
        ..Decoder::default()
    }
    .build();
    let count = |g: &Graph, name: &str| {
        g.node_ids()
            .filter(|&n| g.node(n).op.name() == name)
            .count()
    };
    let (canon, _) = PassManager::default_pipeline()
        .run_until(g.clone(), "canonicalize", &PassOptions::default())
        .unwrap();
    assert!(count(&canon, "permute") < count(&g, "permute"), "{canon}");
    // Algebra and folding: (x * 1 + 0) / 4 -> x * 0.25, written with f16 constants.
    let mut h = Graph::new("alg");
    let x = h
        .add_input("x", TensorType::new(DType::F16, shape!["seq", 8]))
        .unwrap();
    let one = h
        .add(Op::Const(kiln_ir::Literal::scalar(DType::F16, 1.0)), &[])
        .unwrap();
    let zero = h
        .add(
            Op::Const(kiln_ir::Literal::filled(DType::F16, vec![8], 0.0)),
            &[],
        )
        .unwrap();
    let four = h
        .add(Op::Const(kiln_ir::Literal::scalar(DType::F16, 4.0)), &[])
        .unwrap();
    let a = h.add(Op::Binary(BinaryOp::Mul), &[x, one]).unwrap();
    let b = h.add(Op::Binary(BinaryOp::Add), &[zero, a]).unwrap();
    let c = h.add(Op::Binary(BinaryOp::Div), &[b, four]).unwrap();
    h.add_output("y", c).unwrap();
    let (canon, _) = PassManager::from_names(&["canonicalize"])
        .unwrap()
        .run(h.clone(), &PassOptions::default())
        .unwrap();
    assert_eq!(canon.node_count(), 3, "x, 0.25, mul:\n{canon}");
    check_same(&h, &canon, false, 9, 3).unwrap();
    // A tensor constant whose elements are all equal becomes a scalar that
    // fuses into kernel bodies.
    let mut k = Graph::new("splat");
    let x = k
        .add_input("x", TensorType::new(DType::F32, shape!["seq", 4]))
        .unwrap();
    let three = k
        .add(
            Op::Const(kiln_ir::Literal::filled(DType::F32, vec![4], 3.0)),
            &[],
        )
        .unwrap();
    let m = k.add(Op::Binary(BinaryOp::Mul), &[x, three]).unwrap();
    k.add_output("y", m).unwrap();
    let (canon, _) = PassManager::from_names(&["canonicalize"])
        .unwrap()
        .run(k.clone(), &PassOptions::default())
        .unwrap();
    let tensor_consts = canon
        .node_ids()
        .filter(|&n| matches!(&canon.node(n).op, Op::Const(l) if !l.shape.is_empty()))
        .count();
    assert_eq!(tensor_consts, 0, "{canon}");
    check_same(&k, &canon, true, 10, 2).unwrap();
}

#[test]
fn pass_selection_and_errors() {
    let names = ["canonicalize", "cse", "dce", "fuse"];
    let pm = PassManager::from_names(&names).unwrap();
    assert_eq!(pm.names(), names);
    match PassManager::from_names(&["canonicalize", "nope"]) {
        Err(e @ PassError::UnknownPass { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("nope") && msg.contains("canonicalize") && msg.contains("fuse"),
                "{msg}"
            );
        }
        other => panic!(
            "expected an unknown-pass error, got {:?}",
            other.map(|p| p.names())
        ),
    }
    let g = Decoder {
        layers: 1,
        ..Decoder::default()
    }
    .build();
    let dce = PassManager::from_names(&["dce"]).unwrap();
    assert!(matches!(
        dce.run_until(g.clone(), "fuse", &PassOptions::default()),
        Err(PassError::NotInPipeline { .. })
    ));
    assert!(matches!(
        dce.run_until(g.clone(), "zzz", &PassOptions::default()),
        Err(PassError::UnknownPass { .. })
    ));
    // Until canonicalize: still logical (element-wise ops at the top level).
    let (canon, reports) = PassManager::default_pipeline()
        .run_until(g, "canonicalize", &PassOptions::default())
        .unwrap();
    assert_eq!(reports.len(), 1);
    assert!(check_kernel_level(&canon).is_err());
}

#[test]
fn cse_merges_equal_sub_terms_and_dce_drops_dead_ones() {
    let mut g = Graph::new("dup");
    let x = g
        .add_input("x", TensorType::new(DType::F32, shape!["seq", 4]))
        .unwrap();
    let a = g.add(Op::Unary(UnaryOp::Exp), &[x]).unwrap();
    let b = g.add(Op::Unary(UnaryOp::Exp), &[x]).unwrap();
    let _dead = g.add(Op::Unary(UnaryOp::Tanh), &[x]).unwrap();
    let s = g.add(Op::Binary(BinaryOp::Add), &[a, b]).unwrap();
    g.add_output("y", s).unwrap();
    let (d, _) = PassManager::from_names(&["dce"])
        .unwrap()
        .run(g.clone(), &PassOptions::default())
        .unwrap();
    assert_eq!(d.node_count(), 4);
    let (c, _) = PassManager::from_names(&["cse"])
        .unwrap()
        .run(g.clone(), &PassOptions::default())
        .unwrap();
    assert_eq!(c.node_count(), 3, "{c}");
    check_same(&g, &c, true, 1, 2).unwrap();
}

#[test]
fn dumps_after_each_pass() {
    let dir = std::env::temp_dir().join(format!("kiln-passes-dump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = PassOptions {
        dump: DumpConfig {
            dir: Some(dir.clone()),
            print_after: vec![],
        },
        ..PassOptions::default()
    };
    let g = Decoder {
        layers: 1,
        ..Decoder::default()
    }
    .build();
    let (out, _) = PassManager::default_pipeline().run(g, &opts).unwrap();
    for (i, pass) in [
        "input",
        "canonicalize",
        "recognize",
        "lossy",
        "layout",
        "dce",
        "fuse",
    ]
    .iter()
    .enumerate()
    {
        let path = DumpConfig::file_for(&dir, "decoder", i, pass);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.starts_with("graph @decoder"), "{}", path.display());
        if *pass == "fuse" {
            assert_eq!(text, kiln_ir::text::print(&out));
            let back = kiln_ir::text::parse(&text).unwrap();
            assert_eq!(back, out, "the fused dump parses back to the same graph");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn optimize_is_the_default_pipeline() {
    let g = Decoder {
        layers: 1,
        ..Decoder::default()
    }
    .build();
    let a = optimize(g.clone(), &PassOptions::default()).unwrap();
    let (b, _) = PassManager::default_pipeline()
        .run(g, &PassOptions::default())
        .unwrap();
    assert_eq!(a, b);
}

/// `cargo test --release -p kiln-passes --test pipeline -- --ignored`:
/// a decoder written naively with ~3000 nodes (a 32-layer transformer's
/// size; these test layers are lean, so it takes 42 of them) through the
/// whole pipeline.
#[test]
#[ignore = "timing: run in release"]
fn three_thousand_nodes_in_release_under_two_seconds() {
    let g = Decoder {
        layers: 42,
        hidden: 64,
        heads: 4,
        ffn: 128,
        naive: true,
        ..Decoder::default()
    }
    .build();
    let nodes = g.node_count();
    let start = Instant::now();
    let (out, reports) = PassManager::default_pipeline()
        .run(g, &PassOptions::default())
        .unwrap();
    let t = start.elapsed();
    for r in &reports {
        eprintln!("{r}");
    }
    eprintln!(
        "{nodes} nodes -> {} in {:.3} s",
        out.node_count(),
        t.as_secs_f64()
    );
    assert!(nodes > 2800, "{nodes}");
    assert!(
        reports[0].detail.contains("rules applied"),
        "{}",
        reports[0]
    );
    assert!(t.as_secs_f64() < 2.0, "{t:?}");
}

/// Random graphs (scan and fused bodies, symbolic shapes, aliases, odd
/// constants) through the e-graph with every bit-exact rule, then `fuse`:
/// results must match the interpreter's on the original. (The other rules
/// reassociate floats or flip zeros' signs, which odd constants such as 1e30
/// or a later division turn into inf/NaN differences; each has its own
/// soundness test on ordinary values.)
#[test]
fn random_graphs_through_exact_rules_and_fuse() {
    use kiln_ir::testing::{arb_graph_with, GraphConfig};
    use kiln_passes::canonicalize::rewrite_graph;
    use kiln_passes::rules::{registry, Exactness};
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let exact: Vec<_> = registry()
        .iter()
        .filter(|r| r.exactness == Exactness::Exact)
        .collect();
    let stages = [("exact", exact)];
    let opts = PassOptions::default();
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 512,
            failure_persistence: None,
            ..Config::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let compared = std::cell::Cell::new(0usize);
    runner
        .run(&arb_graph_with(GraphConfig::default()), |g| {
            let fail = |e: String| TestCaseError::fail(format!("{e}\n{g}"));
            let (canon, _, _) =
                rewrite_graph(&g, &stages, &opts, "test").map_err(|e| fail(e.to_string()))?;
            kiln_ir::verify(&canon).map_err(|e| fail(format!("{e}\n{canon}")))?;
            let n = check_same(&g, &canon, true, 11, 2).map_err(fail)?;
            let (fused, _) =
                kiln_passes::fuse::fuse(canon.clone()).map_err(|e| fail(e.to_string()))?;
            kiln_ir::verify(&fused).map_err(|e| fail(format!("{e}\n{fused}")))?;
            check_same(&g, &fused, false, 12, 2).map_err(fail)?;
            compared.set(compared.get() + n);
            Ok(())
        })
        .unwrap();
    assert!(
        compared.get() >= 512,
        "only {} evaluations compared",
        compared.get()
    );
}
