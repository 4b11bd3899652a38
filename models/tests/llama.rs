//! Llama: the graph against a plain Rust reference (naive loops, f64), prefill
//! against token-by-token decode through the aliased KV cache, Hugging Face's
//! own outputs (`tests/golden/llama-*`), and the typed config errors.

use kiln_ir::interp::{eval_with, EvalOptions, ParamSource};
use kiln_ir::{Graph, Tensor};
use kiln_models::llama::{self, alibi_slopes, LlamaConfig, LlamaError};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn cfg(
    hidden: usize,
    heads: usize,
    kv: usize,
    head_dim: Option<usize>,
    tied: bool,
    vocab: usize,
) -> LlamaConfig {
    LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: hidden * 2 + 3,
        num_hidden_layers: 2,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv),
        head_dim,
        rms_norm_eps: 1e-5,
        rope_theta: 1000.0,
        tie_word_embeddings: tied,
        max_position_embeddings: 64,
        ..LlamaConfig::default()
    }
}

/// The configs the reference tests cover: MHA, GQA (kv 2 and 1), odd sizes,
/// an explicit head_dim, tied and untied heads, biases.
fn configs() -> Vec<(&'static str, LlamaConfig)> {
    let mut biased = cfg(32, 4, 2, None, false, 50);
    biased.attention_bias = true;
    biased.mlp_bias = true;
    let mut harmonic = cfg(32, 4, 2, None, false, 41);
    harmonic.kiln_harmonic_alibi = true;
    vec![
        ("mha", cfg(32, 4, 4, None, false, 40)),
        ("gqa-kv2-tied", cfg(32, 4, 2, None, true, 40)),
        ("mqa-kv1", cfg(32, 4, 1, None, false, 40)),
        ("odd", cfg(30, 3, 1, None, true, 37)),
        ("head-dim-6", cfg(20, 4, 2, Some(6), false, 23)),
        ("biases", biased),
        ("harmonic-alibi", harmonic),
    ]
}

// ---- the plain reference -------------------------------------------------

struct Ref<'a> {
    cfg: &'a LlamaConfig,
    w: BTreeMap<String, Vec<f64>>,
}

impl Ref<'_> {
    fn new<'a>(cfg: &'a LlamaConfig, weights: &BTreeMap<String, Tensor>) -> Ref<'a> {
        let w = weights
            .iter()
            .map(|(k, t)| (k.clone(), t.to_f64_vec()))
            .collect();
        Ref { cfg, w }
    }

    fn get(&self, name: &str) -> &[f64] {
        &self.w[name]
    }

    /// `W x (+ b)` with `W: [out, in]`.
    fn linear(&self, x: &[f64], w: &str, b: Option<String>) -> Vec<f64> {
        let w = self.get(w);
        let n_in = x.len();
        let n_out = w.len() / n_in;
        (0..n_out)
            .map(|o| {
                let s: f64 = (0..n_in).map(|i| w[o * n_in + i] * x[i]).sum();
                s + b.as_ref().map_or(0.0, |b| self.get(b)[o])
            })
            .collect()
    }

    fn rms_norm(&self, x: &[f64], w: &str) -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let inv = 1.0 / (ms + self.cfg.rms_norm_eps).sqrt();
        x.iter()
            .zip(self.get(w))
            .map(|(v, g)| v * inv * g)
            .collect()
    }

    /// Rotates each head of `x` (`n` heads of `hd`) to position `pos`.
    fn rope(&self, x: &mut [f64], pos: usize) {
        let hd = self.cfg.head_dim();
        let theta = self.cfg.rope_base();
        for head in x.chunks_mut(hd) {
            for i in 0..hd / 2 {
                let inv_freq = 1.0 / theta.powf((2 * i) as f64 / hd as f64);
                let (c, s) = ((pos as f64 * inv_freq).cos(), (pos as f64 * inv_freq).sin());
                let (a, b) = (head[i], head[i + hd / 2]);
                head[i] = a * c - b * s;
                head[i + hd / 2] = b * c + a * s;
            }
        }
    }

    fn bias(&self, on: bool, name: String) -> Option<String> {
        on.then_some(name)
    }

    /// Logits `[seq][vocab]` of one forward pass over `tokens` from position 0.
    fn logits(&self, tokens: &[i32]) -> Vec<Vec<f64>> {
        let c = self.cfg;
        let (h, nh, kvh, hd) = (
            c.hidden_size,
            c.num_attention_heads,
            c.num_kv_heads(),
            c.head_dim(),
        );
        let embed = self.get("model.embed_tokens.weight");
        let mut xs: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&t| embed[t as usize * h..(t as usize + 1) * h].to_vec())
            .collect();
        for l in 0..c.num_hidden_layers {
            let p = |n: &str| format!("model.layers.{l}.{n}");
            let ab = c.attention_bias;
            let mut qs = Vec::new();
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            for (t, x) in xs.iter().enumerate() {
                let xn = self.rms_norm(x, &p("input_layernorm.weight"));
                let lin = |n: &str| {
                    self.linear(
                        &xn,
                        &p(&format!("self_attn.{n}.weight")),
                        self.bias(ab, p(&format!("self_attn.{n}.bias"))),
                    )
                };
                let (mut q, mut k) = (lin("q_proj"), lin("k_proj"));
                self.rope(&mut q, t);
                self.rope(&mut k, t);
                qs.push(q);
                ks.push(k);
                vs.push(lin("v_proj"));
            }
            for t in 0..xs.len() {
                let mut o = vec![0.0; nh * hd];
                for head in 0..nh {
                    let kv = head / (nh / kvh);
                    let q = &qs[t][head * hd..(head + 1) * hd];
                    let scores: Vec<f64> = (0..=t)
                        .map(|j| {
                            let k = &ks[j][kv * hd..(kv + 1) * hd];
                            let s = q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>()
                                / (hd as f64).sqrt();
                            // RoPE × ALiBi: -m_h · H(t - j).
                            let h: f64 = (1..=t - j).map(|n| 1.0 / n as f64).sum();
                            if c.kiln_harmonic_alibi {
                                s - alibi_slopes(nh)[head] * h
                            } else {
                                s
                            }
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for (j, ej) in e.iter().enumerate() {
                        for d in 0..hd {
                            o[head * hd + d] += ej / z * vs[j][kv * hd + d];
                        }
                    }
                }
                let attn = self.linear(
                    &o,
                    &p("self_attn.o_proj.weight"),
                    self.bias(ab, p("self_attn.o_proj.bias")),
                );
                for (a, b) in xs[t].iter_mut().zip(attn) {
                    *a += b;
                }
                let xn = self.rms_norm(&xs[t], &p("post_attention_layernorm.weight"));
                let mb = c.mlp_bias;
                let lin = |n: &str, x: &[f64]| {
                    self.linear(
                        x,
                        &p(&format!("mlp.{n}.weight")),
                        self.bias(mb, p(&format!("mlp.{n}.bias"))),
                    )
                };
                let (g, u) = (lin("gate_proj", &xn), lin("up_proj", &xn));
                let act: Vec<f64> = g
                    .iter()
                    .zip(&u)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                let down = lin("down_proj", &act);
                for (a, b) in xs[t].iter_mut().zip(down) {
                    *a += b;
                }
            }
        }
        let head = if c.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        xs.iter()
            .map(|x| self.linear(&self.rms_norm(x, "model.norm.weight"), head, None))
            .collect()
    }
}

// ---- running the graph -----------------------------------------------------

/// One call: `tokens` at positions `past..`, the caches in; logits
/// `[seq*vocab]` and the updated caches out.
fn step(
    g: &Graph,
    params: &dyn ParamSource,
    tokens: &[i32],
    caches: BTreeMap<String, Tensor>,
    past: usize,
) -> (Vec<f32>, BTreeMap<String, Tensor>) {
    let mut inputs = caches;
    inputs.insert(
        "tokens".into(),
        Tensor::i32(vec![tokens.len()], tokens.to_vec()).unwrap(),
    );
    let opts = EvalOptions {
        sizes: BTreeMap::from([("past".to_string(), past as i64)]),
        ..EvalOptions::default()
    };
    let mut out = eval_with(g, &inputs, params, &opts).unwrap();
    let logits = out.remove("logits").unwrap();
    // `last_logits` is the last row of `logits`, computed on its own.
    let last = out.remove("last_logits").unwrap();
    let all = logits.as_f32().unwrap();
    assert_eq!(last.shape[0], 1);
    assert_eq!(last.as_f32().unwrap(), &all[all.len() - last.shape[1]..]);
    // Every other output is an aliased cache: it becomes the next call's input.
    for name in out.keys() {
        assert_eq!(
            g.output(name).unwrap().alias.as_deref(),
            Some(name.as_str())
        );
    }
    (logits.as_f32().unwrap().to_vec(), out)
}

fn tokens(n: usize, vocab: usize, salt: usize) -> Vec<i32> {
    (0..n)
        .map(|i| ((i * 7 + salt * 13 + 3) % vocab) as i32)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn prefill_matches_the_plain_reference() {
    for (seed, (name, c)) in configs().into_iter().enumerate() {
        let g = llama::build(&c).unwrap();
        let w = llama::random_weights(&c, seed as u64);
        let toks = tokens(7, c.vocab_size, seed);
        let (logits, _) = step(&g, &w, &toks, c.empty_caches(10), 0);
        let want: Vec<f64> = Ref::new(&c, &w).logits(&toks).concat();
        assert_eq!(logits.len(), want.len(), "{name}");
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (a, b)) in logits.iter().zip(&want).enumerate() {
            assert!(
                (*a as f64 - b).abs() <= 2e-5 * scale,
                "{name}: logit {i}: graph {a}, reference {b}"
            );
        }
    }
}

#[test]
fn token_by_token_decode_matches_prefill() {
    for (seed, (name, c)) in configs().into_iter().enumerate() {
        let g = llama::build(&c).unwrap();
        let w = llama::random_weights(&c, 100 + seed as u64);
        let toks = tokens(6, c.vocab_size, seed + 1);
        let v = c.vocab_size;
        let (prefill, prefill_caches) = step(&g, &w, &toks, c.empty_caches(9), 0);

        // One token per call, past = 0, 1, 2, …, carrying the aliased caches.
        let mut caches = c.empty_caches(9);
        for (t, &tok) in toks.iter().enumerate() {
            let (logits, next) = step(&g, &w, &[tok], caches, t);
            let d = max_abs_diff(&logits, &prefill[t * v..(t + 1) * v]);
            assert!(d <= 1e-5, "{name}: position {t} differs by {d}");
            caches = next;
        }
        // The caches end up holding the same rows either way.
        for (k, cache) in &caches {
            let d = max_abs_diff(cache.as_f32().unwrap(), prefill_caches[k].as_f32().unwrap());
            assert!(d <= 1e-5, "{name}: {k} differs by {d}");
        }

        // A chunked prefill (3 tokens, then 3 more at past = 3).
        let (first, caches) = step(&g, &w, &toks[..3], c.empty_caches(9), 0);
        let (second, _) = step(&g, &w, &toks[3..], caches, 3);
        let chunked = [first, second].concat();
        let d = max_abs_diff(&chunked, &prefill);
        assert!(d <= 1e-5, "{name}: chunked prefill differs by {d}");
    }
}

#[test]
fn cache_rows_beyond_past_plus_seq_are_ignored_and_kept() {
    let c = cfg(32, 4, 2, None, false, 40);
    let g = llama::build(&c).unwrap();
    let w = llama::random_weights(&c, 5);
    let toks = tokens(4, c.vocab_size, 0);
    let (clean, _) = step(&g, &w, &toks, c.empty_caches(8), 0);
    // Garbage in the unused rows 4..8 must not leak into attention, and the
    // update writes only rows 0..4.
    let mut dirty = c.empty_caches(8);
    for t in dirty.values_mut() {
        let n = t.numel();
        let row = n / 8;
        let mut data = vec![0f32; n];
        for (i, x) in data.iter_mut().enumerate().skip(4 * row) {
            *x = 1e3 + i as f32;
        }
        *t = Tensor::f32(t.shape.clone(), data).unwrap();
    }
    let (logits, out) = step(&g, &w, &toks, dirty.clone(), 0);
    assert_eq!(logits, clean);
    for (k, t) in &out {
        let row = t.numel() / 8;
        assert_eq!(
            t.as_f32().unwrap()[4 * row..],
            dirty[k].as_f32().unwrap()[4 * row..],
            "{k}"
        );
    }
}

#[test]
fn signature_is_tokens_and_caches_in_logits_and_aliased_caches_out() {
    let c = cfg(32, 4, 2, None, false, 40);
    let g = llama::build(&c).unwrap();
    let inputs: Vec<String> = g
        .input_names()
        .zip(g.input_types())
        .map(|(n, t)| format!("{n}: {t}"))
        .collect();
    assert_eq!(
        inputs,
        [
            "tokens: i32[seq]",
            "model.layers.0.k_cache: f32[ctx,2,8]",
            "model.layers.0.v_cache: f32[ctx,2,8]",
            "model.layers.1.k_cache: f32[ctx,2,8]",
            "model.layers.1.v_cache: f32[ctx,2,8]",
        ]
    );
    let outputs: Vec<String> = g
        .outputs()
        .iter()
        .map(|o| format!("{}: {} alias {:?}", o.name, g.ty(o.value), o.alias))
        .collect();
    assert_eq!(outputs[0], "logits: f32[seq,40] alias None");
    assert_eq!(outputs[1], "last_logits: f32[1,40] alias None");
    assert_eq!(
        outputs[2],
        "model.layers.0.k_cache: f32[ctx,2,8] alias Some(\"model.layers.0.k_cache\")"
    );
    assert_eq!(outputs.len(), 6);
    let params = g.params();
    let shapes = c.param_shapes();
    assert_eq!(params.len(), shapes.len());
    assert!(!params.contains_key("lm_head.weight") || !c.tie_word_embeddings);
    // Prints and parses back to the same graph.
    let text = kiln_ir::text::print(&g);
    assert_eq!(kiln_ir::text::parse(&text).unwrap(), g);
}

#[test]
fn past_is_required_and_overflowing_the_cache_is_an_error() {
    let c = cfg(32, 4, 2, None, false, 40);
    let g = llama::build(&c).unwrap();
    let w = llama::random_weights(&c, 0);
    let mut inputs = c.empty_caches(4);
    inputs.insert(
        "tokens".into(),
        Tensor::i32(vec![3], vec![1, 2, 3]).unwrap(),
    );
    let e = eval_with(&g, &inputs, &w, &EvalOptions::default()).unwrap_err();
    assert!(e.to_string().contains("past"), "{e}");
    let opts = EvalOptions {
        sizes: BTreeMap::from([("past".to_string(), 2)]),
        ..EvalOptions::default()
    };
    // 2 + 3 rows do not fit a cache of 4.
    assert!(eval_with(&g, &inputs, &w, &opts).is_err());
}

// ---- Hugging Face's own outputs --------------------------------------------

fn golden_dirs(prefix: &str) -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    dirs.sort();
    dirs
}

fn golden_i32(g: &kiln_models::weights::Weights, name: &str) -> Vec<i32> {
    let t = g.get(name).unwrap();
    t.to_i64_vec()
        .unwrap()
        .into_iter()
        .map(|v| v as i32)
        .collect()
}

#[test]
fn hf_golden_logits_and_greedy_decoding() {
    let dirs = golden_dirs("llama-");
    assert_eq!(dirs.len(), 7);
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let m = kiln_models::hf::load_dir(&dir).unwrap();
        let c = LlamaConfig::from_json(&m.config).unwrap();
        let g = llama::build(&c).unwrap();
        let golden = kiln_models::weights::Weights::open(dir.join("golden.safetensors")).unwrap();

        let toks = golden_i32(&golden, "tokens");
        let (logits, _) = step(&g, &m.weights, &toks, c.empty_caches(toks.len()), 0);
        let want = golden.get("logits").unwrap().as_f32().unwrap().to_vec();
        let d = max_abs_diff(&logits, &want);
        assert!(d <= 1e-4, "{name}: logits differ from transformers by {d}");

        // Greedy decoding with the cache: prefill the prompt, then one token a call.
        let prompt = golden_i32(&golden, "greedy_prompt");
        let want_ids = golden_i32(&golden, "greedy_ids");
        let v = c.vocab_size;
        let argmax = |row: &[f32]| {
            (0..row.len())
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap() as i32
        };
        let ctx = prompt.len() + want_ids.len();
        let (logits, mut caches) = step(&g, &m.weights, &prompt, c.empty_caches(ctx), 0);
        let mut next = argmax(&logits[(prompt.len() - 1) * v..]);
        let mut got = vec![next];
        for past in prompt.len()..ctx - 1 {
            let (logits, cc) = step(&g, &m.weights, &[next], caches, past);
            caches = cc;
            next = argmax(&logits);
            got.push(next);
        }
        assert_eq!(got, want_ids, "{name}: greedy ids");
    }
}

// ---- config parsing and typed errors ---------------------------------------

#[test]
fn config_defaults_and_layouts_follow_hugging_face() {
    let c = LlamaConfig::from_json_str("{}").unwrap();
    assert_eq!(c, LlamaConfig::default());
    assert_eq!(
        (c.vocab_size, c.hidden_size, c.intermediate_size),
        (32000, 4096, 11008)
    );
    assert_eq!((c.num_kv_heads(), c.head_dim()), (32, 128));
    assert_eq!((c.rope_base(), c.rms_norm_eps), (10000.0, 1e-6));
    assert!(!c.tie_word_embeddings);

    let v4 =
        LlamaConfig::from_json_str(r#"{"rope_theta": 500000.0, "rope_scaling": null}"#).unwrap();
    assert_eq!(v4.rope_base(), 500000.0);
    v4.validate().unwrap();
    let v5 = LlamaConfig::from_json_str(
        r#"{"rope_parameters": {"rope_theta": 123.0, "rope_type": "default"}, "num_key_value_heads": null, "head_dim": null}"#,
    )
    .unwrap();
    assert_eq!(v5.rope_base(), 123.0);
    assert_eq!(v5.num_kv_heads(), 32);
    v5.validate().unwrap();
}

fn build_err(json: &str) -> String {
    let c = LlamaConfig::from_json_str(json).unwrap();
    let e = llama::build(&c).unwrap_err();
    let s = e.to_string();
    assert!(
        matches!(
            e,
            LlamaError::Invalid { .. } | LlamaError::Unsupported { .. }
        ),
        "{s}"
    );
    s
}

#[test]
fn bad_configs_are_typed_errors_that_name_the_field() {
    let base =
        r#""hidden_size": 64, "intermediate_size": 8, "vocab_size": 8, "num_hidden_layers": 1"#;
    let e = build_err(&format!("{{{base}, \"num_attention_heads\": 3}}"));
    assert_eq!(
        e,
        "llama config: `num_attention_heads` (3) does not divide hidden_size (64) and no head_dim is given"
    );
    let e = build_err(&format!(
        "{{{base}, \"num_attention_heads\": 4, \"num_key_value_heads\": 3}}"
    ));
    assert_eq!(
        e,
        "llama config: `num_key_value_heads` (3) does not divide num_attention_heads (4)"
    );
    let e = build_err(&format!(
        "{{{base}, \"num_attention_heads\": 4, \"hidden_act\": \"gelu\"}}"
    ));
    assert_eq!(
        e,
        "llama config: hidden_act = `gelu` is not supported (only `silu`)"
    );
    let e = build_err(&format!(
        "{{{base}, \"num_attention_heads\": 4, \"rope_scaling\": {{\"type\": \"linear\", \"factor\": 2.0}}}}"
    ));
    assert!(e.starts_with("llama config: rope_scaling = "), "{e}");
    assert!(e.contains("linear") && e.contains("not supported"), "{e}");
    let e = build_err(&format!(
        "{{{base}, \"num_attention_heads\": 4, \"rope_parameters\": {{\"rope_type\": \"llama3\", \"rope_theta\": 5e5}}}}"
    ));
    assert!(e.starts_with("llama config: rope_parameters = "), "{e}");
    let e = build_err(&format!(
        "{{{base}, \"num_attention_heads\": 4, \"head_dim\": 5}}"
    ));
    assert!(e.contains("`head_dim` (5) must be even"), "{e}");
    let e = build_err(&format!("{{{base}, \"num_attention_heads\": 0}}"));
    assert!(e.contains("`num_attention_heads` must be positive"), "{e}");

    let e = LlamaConfig::from_json_str(r#"{"hidden_size": "big"}"#).unwrap_err();
    assert!(matches!(e, LlamaError::Parse(_)));
    assert!(
        e.to_string().contains("hidden_size") || e.to_string().contains("invalid type"),
        "{e}"
    );
}

#[test]
fn builtin_llama_tiny_runs() {
    let m = kiln_models::builtin("llama-tiny").unwrap();
    let g = (m.build)().unwrap();
    let w = (m.weights)(3);
    let c = llama::tiny_config();
    let (logits, _) = step(&g, &w, &[72, 105], c.empty_caches(8), 0);
    assert_eq!(logits.len(), 2 * 256);
    assert!(logits.iter().all(|x| x.is_finite()));
    assert_ne!((m.weights)(3), (m.weights)(4));
}

#[test]
fn alibi_slopes_follow_the_paper() {
    let s8 = alibi_slopes(8);
    let want: Vec<f64> = (1..=8).map(|h| 0.5f64.powi(h)).collect();
    assert_eq!(s8, want);
    // Non powers of two: those of 4, then every other slope of 8.
    let s6 = alibi_slopes(6);
    assert_eq!(&s6[..4], &alibi_slopes(4)[..]);
    assert_eq!(&s6[4..], &[alibi_slopes(8)[0], alibi_slopes(8)[2]]);
    let cfg = LlamaConfig::from_json_str(r#"{"kiln_harmonic_alibi": true}"#).unwrap();
    assert!(cfg.kiln_harmonic_alibi);
}
