//! The fusion pass: kernel shapes on hand-built graphs (softmax, norms,
//! attention, SwiGLU), the kernel-level invariant, and soundness against the
//! interpreter on transformer-like and random graphs.

mod common;

use common::models::Decoder;
use common::*;
use kiln_ir::dsl::ModelBuilder;
use kiln_ir::testing::{arb_graph_with, GraphConfig};
use kiln_ir::{shape, DType, FusionKind, Graph, Op, Tensor, UnaryOp};
use kiln_passes::fuse::{check_kernel_level, fuse};
use kiln_passes::{PassManager, PassOptions};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rand::Rng;
use std::collections::BTreeMap;

/// Fused kernels of a graph: (kind, body op names).
fn kernels(g: &Graph) -> Vec<(FusionKind, Vec<&'static str>)> {
    let mut out: Vec<_> = g
        .node_ids()
        .filter_map(|n| match &g.node(n).op {
            Op::Fused(f) => {
                let mut names: Vec<&'static str> = f
                    .body
                    .node_ids()
                    .map(|m| f.body.node(m).op.name())
                    .collect();
                names.sort();
                Some((f.kind, names))
            }
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

fn count_top(g: &Graph, name: &str) -> usize {
    g.node_ids()
        .filter(|&n| g.node(n).op.name() == name)
        .count()
}

fn optimized(g: &Graph) -> Graph {
    let (out, _) = PassManager::default_pipeline()
        .run(g.clone(), &PassOptions::default())
        .expect("pipeline");
    out
}

fn fused(g: &Graph) -> Graph {
    let (out, _) = fuse(g.clone()).expect("fuse");
    kiln_ir::verify(&out).expect("fused graph verifies");
    check_kernel_level(&out).expect("kernel level");
    out
}

#[test]
fn softmax_is_one_row_kernel() {
    let b = ModelBuilder::new("softmax");
    let x = b.input("x", DType::F32, shape!["seq", 8]);
    b.output("y", &x.softmax(-1));
    let g = b.finish().unwrap();
    for after in [fused(&g), optimized(&g)] {
        let ks = kernels(&after);
        assert_eq!(ks.len(), 1, "{after}");
        assert_eq!(ks[0].0, FusionKind::Row);
        assert_eq!(after.node_count(), 2, "input + one kernel:\n{after}");
        check_same(&g, &after, false, 1, 4).unwrap();
    }
}

#[test]
fn norms_are_one_row_kernel_each() {
    for layer in [false, true] {
        let b = ModelBuilder::new("norm");
        let x = b.input("x", DType::F32, shape!["seq", 16]);
        let gain = b.param("g", DType::F32, shape![16]);
        let y = if layer {
            let bias = b.param("b", DType::F32, shape![16]);
            x.layer_norm(&gain, &bias, 1e-5)
        } else {
            x.rms_norm(&gain, 1e-5)
        };
        b.output("y", &y);
        let g = b.finish().unwrap();
        for after in [fused(&g), optimized(&g)] {
            let ks = kernels(&after);
            assert_eq!(ks.len(), 1, "{after}");
            assert_eq!(ks[0].0, FusionKind::Row);
            assert_eq!(count_top(&after, "fused"), 1);
            check_same(&g, &after, false, 2, 4).unwrap();
        }
    }
}

/// Random inputs for a decoder: token ids in range, caches random.
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

fn assert_decoder_equal(before: &Graph, after: &Graph, vocab: usize, seed: u64) {
    for t in 0..3 {
        let (inputs, params) = decoder_env(before, vocab, seed + t);
        let want = run(before, &inputs, &params).expect("the original decoder runs");
        let got = run(after, &inputs, &params).unwrap_or_else(|e| panic!("{e}\n{after}"));
        for (name, w) in &want {
            compare(&got[name], w, false).unwrap_or_else(|m| panic!("{name}: {m}"));
        }
    }
}

#[test]
fn attention_layer_kernels() {
    let cfg = Decoder {
        layers: 1,
        kv_cache: false,
        ..Decoder::default()
    };
    let g = cfg.build();
    let after = optimized(&g);
    let ks = kernels(&after);
    let rows: Vec<_> = ks.iter().filter(|k| k.0 == FusionKind::Row).collect();
    // attention norm, MLP norm, final norm; the masked softmax between the
    // two attention matmuls is one causal flash_attention (the `recognize` pass).
    assert_eq!(rows.len(), 3, "{after}");
    assert!(
        rows.iter().all(|k| !k.1.contains(&"exp")),
        "a written-out softmax is left in\n{after}"
    );
    let flash: Vec<_> = after
        .node_ids()
        .filter_map(|n| match &after.node(n).op {
            Op::Attention(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(flash.len(), 1, "{after}");
    assert!(
        flash[0].causal && flash[0].offset == kiln_ir::Dim::from(0),
        "{after}"
    );
    // SwiGLU's silu and product share a loop kernel.
    assert!(
        ks.iter()
            .any(|k| k.0 == FusionKind::Loop && k.1.contains(&"silu") && k.1.contains(&"mul")),
        "{after}"
    );
    assert_eq!(count_top(&after, "matmul"), 8, "{after}");
    assert_decoder_equal(&g, &after, cfg.vocab, 10);
    if std::env::var_os("KILN_TEST_SHOW").is_some() {
        eprintln!("{after}");
    }
}

#[test]
fn decoders_in_several_spellings_are_sound() {
    let spellings = [
        Decoder::default(),
        Decoder {
            layer_norm: true,
            mask_large_negative: true,
            ..Decoder::default()
        },
        Decoder {
            scale_queries: true,
            kv_cache: false,
            ..Decoder::default()
        },
    ];
    for (i, cfg) in spellings.iter().enumerate() {
        let g = cfg.build();
        assert_decoder_equal(&g, &fused(&g), cfg.vocab, 100 + i as u64);
        let after = optimized(&g);
        check_kernel_level(&after).unwrap();
        assert_decoder_equal(&g, &after, cfg.vocab, 200 + i as u64);
    }
}

#[test]
fn non_trailing_reductions_become_row_kernels() {
    for keep in [false, true] {
        let b = ModelBuilder::new("colsum");
        let x = b.input("x", DType::F32, shape!["seq", 6, 4]);
        let y = (x.exp().sum(&[0, 2], keep) * 2.0).tanh();
        b.output("y", &y);
        let g = b.finish().unwrap();
        let after = fused(&g);
        assert!(
            kernels(&after).iter().any(|k| k.0 == FusionKind::Row),
            "{after}"
        );
        check_same(&g, &after, false, 3, 4).unwrap();
    }
}

#[test]
fn cheap_producers_are_recomputed_and_reductions_materialized() {
    let b = ModelBuilder::new("share");
    let x = b.input("x", DType::F32, shape!["seq", 8]);
    let e = x.exp();
    // `e` feeds a row kernel and a loop kernel of another shape: cloned into both.
    let s = e.sum(&[1], true);
    b.output("s", &s);
    b.output("t", &(e.clone() * 3.0).reshape(shape![8, "seq"]).tanh());
    // A reduction used by two kernels is computed once.
    let m = x.max(&[1], true);
    b.output("u", &(&x - &m).sigmoid());
    b.output(
        "v",
        &(m.clone() * 2.0)
            .broadcast_to(shape!["seq", 8])
            .reshape(shape![8, "seq"])
            .exp(),
    );
    let g = b.finish().unwrap();
    let after = fused(&g);
    let ks = kernels(&after);
    let exps = ks
        .iter()
        .map(|k| k.1.iter().filter(|n| **n == "exp").count())
        .sum::<usize>();
    assert!(
        exps >= 3,
        "exp(x) should be recomputed in its consumers:\n{after}"
    );
    let maxes = ks
        .iter()
        .map(|k| k.1.iter().filter(|n| **n == "reduce_max").count())
        .sum::<usize>();
    assert_eq!(maxes, 1, "the max is materialized once:\n{after}");
    check_same(&g, &after, false, 4, 4).unwrap();
}

#[test]
fn fuse_is_idempotent() {
    let g = Decoder::default().build();
    let once = fused(&g);
    let twice = fused(&once);
    assert_eq!(once.node_count(), twice.node_count());
    assert_eq!(kernels(&once).len(), kernels(&twice).len());
}

#[test]
fn random_graphs_fuse_soundly() {
    let cfg = GraphConfig {
        aliases: true,
        ..GraphConfig::default()
    };
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
    let kernels_seen = std::cell::Cell::new(0usize);
    runner
        .run(&arb_graph_with(cfg), |g| {
            let (after, _) =
                fuse(g.clone()).map_err(|e| TestCaseError::fail(format!("{e}\n{g}")))?;
            kiln_ir::verify(&after).map_err(|e| TestCaseError::fail(format!("{e}\n{after}")))?;
            check_kernel_level(&after).map_err(|e| TestCaseError::fail(format!("{e}\n{after}")))?;
            let n = check_same(&g, &after, false, 7, 2).map_err(TestCaseError::fail)?;
            compared.set(compared.get() + n);
            kernels_seen.set(kernels_seen.get() + kernels(&after).len());
            Ok(())
        })
        .unwrap();
    // Most random graphs evaluate (some gather out of range) and form kernels.
    assert!(
        compared.get() >= 512,
        "only {} evaluations compared",
        compared.get()
    );
    assert!(
        kernels_seen.get() >= 512,
        "only {} kernels formed",
        kernels_seen.get()
    );
}

#[test]
fn unary_only_graph_is_one_loop_kernel() {
    let b = ModelBuilder::new("chain");
    let x = b.input("x", DType::F32, shape!["seq", 4]);
    let y = x.exp().tanh().sigmoid() * 0.5;
    b.output("y", &y);
    let g = b.finish().unwrap();
    let after = fused(&g);
    let ks = kernels(&after);
    assert_eq!(ks.len(), 1);
    assert_eq!(ks[0].0, FusionKind::Loop);
    assert!(ks[0].1.contains(&UnaryOp::Sigmoid.name()));
    check_same(&g, &after, true, 5, 3).unwrap();
}

/// A scan's body is optimized and fused like a graph: Mamba's selective-scan
/// step (state update and readout) becomes one row kernel, the body keeps
/// its signature, and the result is sound.
#[test]
fn scan_bodies_become_kernel_level() {
    let b = ModelBuilder::new("mamba");
    let h0 = b.input("h0", DType::F32, shape![6, 4]);
    let dt = b.input("dt", DType::F32, shape!["seq", 6]);
    let bs = b.input("bs", DType::F32, shape!["seq", 4]);
    let cs = b.input("cs", DType::F32, shape!["seq", 4]);
    let xs = b.input("xs", DType::F32, shape!["seq", 6]);
    let a = b.input("a", DType::F32, shape![6, 4]);
    let dt = dt.exp();
    let (h, ys) = b.scan(
        &[&h0],
        &[&dt, &bs, &cs, &xs],
        &[&a],
        0,
        false,
        |_, c, x, k| {
            let (dt, bt, ct, xt) = (&x[0], &x[1], &x[2], &x[3]);
            let decay = (&dt.reshape(shape![6, 1]) * &k[0]).exp();
            let inject = (dt * xt).reshape(shape![6, 1]) * bt.reshape(shape![1, 4]);
            let h = &(&decay * &c[0]) + &inject;
            let y = (&h * &ct.reshape(shape![1, 4])).sum(&[1], false);
            (vec![h], vec![y])
        },
    );
    b.output("h", &h[0]);
    b.output("y", &ys[0]);
    let g = b.finish().unwrap();
    // Without `recognize`, which lowers this linear recurrence to
    // `linear_scan` (tests/linear_scan.rs).
    let (kept, _) = kiln_passes::PassManager::from_names(&["canonicalize", "dce", "fuse"])
        .unwrap()
        .run(g.clone(), &PassOptions::default())
        .expect("pipeline");
    for after in [fused(&g), kept] {
        let scan = after
            .node_ids()
            .find_map(|n| match &after.node(n).op {
                Op::Scan(s) => Some(s.clone()),
                _ => None,
            })
            .expect("the scan stays");
        let before = g
            .node_ids()
            .find_map(|n| match &g.node(n).op {
                Op::Scan(s) => Some(s.body.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(scan.body.input_types(), before.input_types());
        assert_eq!(scan.body.output_types(), before.output_types());
        let ks = kernels(&scan.body);
        assert_eq!(ks.len(), 1, "{}", scan.body);
        assert_eq!(ks[0].0, FusionKind::Row);
        check_same(&g, &after, false, 11, 3).unwrap();
    }
}
