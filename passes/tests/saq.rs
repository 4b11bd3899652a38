//! The `saq` pass (`--kv-cache saq:...`): nothing unless asked; on Llama
//! (after `recognize`) every layer's K/V cache becomes one SAQ state read
//! by `saq_attention`; the rewritten graph gives the exact logits on a
//! prefill (new tokens are attended exactly) and close ones token by token
//! through the quantized cache; graphs it cannot rewrite get errors that
//! say why.

mod common;

use common::count;
use common::models::Decoder;
use kiln_ir::saq::{SaqLayout, SaqSpec};
use kiln_ir::tensor::rel_l2;
use kiln_ir::{DType, Graph, Tensor};
use kiln_models::llama;
use kiln_passes::saq::Saq;
use kiln_passes::{Pass, PassError, PassManager, PassOptions};
use std::collections::BTreeMap;

fn opts(spec: &str) -> PassOptions {
    PassOptions {
        kv_cache: Some(SaqSpec::parse(spec).unwrap()),
        ..PassOptions::default()
    }
}

/// Llama-tiny after `canonicalize`, `recognize` and `saq`.
fn saq_llama(spec: &str) -> (Graph, Graph, String) {
    let g = llama::build(&llama::tiny_config()).unwrap();
    let pm = PassManager::from_names(&["canonicalize", "recognize", "saq"]).unwrap();
    let (out, reports) = pm.run(g.clone(), &opts(spec)).unwrap();
    (g, out, reports[2].detail.clone())
}

#[test]
fn does_nothing_unless_requested() {
    let g = llama::build(&llama::tiny_config()).unwrap();
    let (out, detail) = Saq
        .run_with_detail(g.clone(), &PassOptions::default())
        .unwrap();
    assert_eq!(detail, "none requested");
    assert_eq!(kiln_ir::text::print(&out), kiln_ir::text::print(&g));
    // The pipeline for options without a kv cache is the default one.
    assert_eq!(
        PassManager::for_options(&PassOptions::default()).names(),
        PassManager::default_pipeline().names()
    );
    let names = PassManager::for_options(&opts("saq")).names();
    let at = names.iter().position(|n| *n == "recognize").unwrap();
    assert_eq!(names[at + 1], "saq");
}

#[test]
fn llama_caches_become_saq_states() {
    let (_, out, detail) = saq_llama("saq:16,8,4,2:S=4:G=4");
    assert_eq!(count(&out, "update_slice"), 0);
    assert_eq!(count(&out, "flash_attention"), 0);
    assert_eq!(count(&out, "saq_append"), 2);
    assert_eq!(count(&out, "saq_attention"), 2);
    let names: Vec<&str> = out.input_names().collect();
    assert_eq!(
        names,
        ["tokens", "model.layers.0.kv_saq", "model.layers.1.kv_saq"]
    );
    let cfg = llama::tiny_config();
    let layout = SaqLayout::new(
        &SaqSpec::parse("saq:16,8,4,2:S=4:G=4").unwrap(),
        cfg.num_kv_heads(),
        cfg.head_dim(),
    )
    .unwrap();
    let state = out.ty(out.input("model.layers.0.kv_saq").unwrap());
    assert_eq!(state.dtype, DType::U8);
    assert_eq!(state.shape, vec![layout.state_len(&"ctx".into())]);
    let aliased: Vec<_> = out
        .outputs()
        .iter()
        .filter_map(|o| o.alias.clone())
        .collect();
    assert_eq!(aliased, ["model.layers.0.kv_saq", "model.layers.1.kv_saq"]);
    assert!(
        detail.contains("2 K/V cache pair(s)") && detail.contains("smaller"),
        "{detail}"
    );
    // The rest of the pipeline takes it to kernels.
    let (kernels, _) = PassManager::from_names(&["dce", "fuse"])
        .unwrap()
        .run(out, &PassOptions::default())
        .unwrap();
    kiln_passes::fuse::check_kernel_level(&kernels).unwrap();
    assert_eq!(count(&kernels, "saq_attention"), 2);
}

/// Logits of `tokens`: one prefill of `prefill` tokens, then token by
/// token; the states kept between calls.
fn logits(
    g: &Graph,
    w: &BTreeMap<String, Tensor>,
    tokens: &[i32],
    prefill: usize,
    ctx: usize,
) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    for res in common::decode_calls(g, w, tokens, prefill, ctx) {
        let l = res["logits"].to_f64_vec();
        let vocab = res["logits"].shape[1];
        out.extend(l.chunks(vocab).map(|c| c.to_vec()));
    }
    out
}

#[test]
fn saq_llama_matches_exact_on_prefill_and_stays_close_decoding() {
    let cfg = llama::tiny_config();
    let w = llama::random_weights(&cfg, 3);
    let tokens: Vec<i32> = (0..26).map(|i| (i * 37 + 11) % 256).collect();
    let ctx = 32;
    // The f32 cache of the graph as built.
    let exact_g = llama::build(&cfg).unwrap();
    let exact = logits(&exact_g, &w, &tokens, 6, ctx);
    for (spec, bound) in [
        // Everything in the f16 residual (S = 128 > 26 tokens).
        ("saq", 1e-3),
        ("saq:16,8:S=4:G=4", 5e-3),
        ("saq:16,8,4,2:S=4:G=4", 0.06),
        ("saq:16,8,4,2:S=8:G=32", 0.06),
    ] {
        let (_, g, _) = saq_llama(spec);
        let got = logits(&g, &w, &tokens, 6, ctx);
        // The prefill attends its own tokens exactly.
        for i in 0..6 {
            let e = rel_l2(&got[i], &exact[i]);
            assert!(e < 1e-5, "{spec}: prefill row {i}: {e}");
        }
        let all_got: Vec<f64> = got[6..].concat();
        let all_exact: Vec<f64> = exact[6..].concat();
        let e = rel_l2(&all_got, &all_exact);
        eprintln!(
            "{spec}: decode logits rel L2 vs the f32 cache over {} tokens: {e:.2e}",
            tokens.len() - 6
        );
        assert!(e > 0.0 && e < bound, "{spec}: {e}");
    }
}

#[test]
fn graphs_without_a_recognizable_cache_are_errors() {
    let expect = |g: Graph, names: &[&str], needle: &str| {
        let pm = PassManager::from_names(names).unwrap();
        let e = pm.run(g, &opts("saq")).unwrap_err();
        assert!(matches!(e, PassError::Saq { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains(needle), "{e}");
    };
    // Attention written out (no `recognize`): no flash_attention reads the cache.
    let g = llama::build(&llama::tiny_config()).unwrap();
    expect(g, &["saq"], "run `saq` after `recognize`");
    // A decoder whose cache grows by concatenation: no fixed-capacity cache.
    let d = Decoder {
        kv_cache: true,
        layers: 1,
        ..Decoder::default()
    };
    expect(
        d.build(),
        &["canonicalize", "recognize", "saq"],
        "has no KV cache",
    );
    // Mamba: recurrent state, no attention.
    let m = kiln_models::mamba::build(&kiln_models::mamba::tiny_config()).unwrap();
    expect(m, &["saq"], "no KV cache");
    // A head size whose 2-bit codes do not fill whole bytes.
    let cfg = llama::LlamaConfig {
        hidden_size: 36,
        num_attention_heads: 6,
        num_key_value_heads: Some(3),
        ..llama::tiny_config()
    };
    let g = llama::build(&cfg).unwrap();
    expect(g, &["canonicalize", "recognize", "saq"], "whole bytes");
}
