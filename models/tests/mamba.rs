//! Mamba: the graph against a plain Rust transcription of Hugging Face's
//! `MambaMixer.slow_forward` (f64), prefill against token-by-token decode
//! with carried conv/SSM state, Hugging Face's own outputs
//! (`tests/golden/mamba-*`), and the typed config errors.

use kiln_ir::interp::{eval_with, EvalOptions, ParamSource};
use kiln_ir::{Graph, Tensor};
use kiln_models::mamba::{self, MambaConfig, MambaError, TimeStepRank};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn cfg(hidden: usize, state: usize, kernel: usize, rank: TimeStepRank, tied: bool) -> MambaConfig {
    MambaConfig {
        vocab_size: 29,
        hidden_size: hidden,
        state_size: state,
        num_hidden_layers: 2,
        conv_kernel: kernel,
        time_step_rank: rank,
        tie_word_embeddings: tied,
        ..MambaConfig::default()
    }
}

fn configs() -> Vec<(&'static str, MambaConfig)> {
    let auto = || TimeStepRank::Named("auto".into());
    let mut biased = cfg(16, 4, 3, TimeStepRank::Fixed(3), true);
    biased.use_bias = true;
    biased.use_conv_bias = false;
    biased.expand = 3;
    vec![
        ("tied-auto-rank", cfg(16, 8, 4, auto(), true)),
        ("untied-odd", cfg(20, 5, 4, TimeStepRank::Fixed(3), false)),
        ("kernel-2", cfg(24, 6, 2, auto(), true)),
        ("biases-expand-3", biased),
    ]
}

// ---- the plain reference: slow_forward with HF's [d_inner, L] layout ------

struct Ref<'a> {
    cfg: &'a MambaConfig,
    w: BTreeMap<String, Vec<f64>>,
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn softplus(x: f64) -> f64 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

impl Ref<'_> {
    fn new<'a>(cfg: &'a MambaConfig, weights: &BTreeMap<String, Tensor>) -> Ref<'a> {
        let w = weights
            .iter()
            .map(|(k, t)| (k.clone(), t.to_f64_vec()))
            .collect();
        Ref { cfg, w }
    }

    fn get(&self, name: &str) -> &[f64] {
        &self.w[name]
    }

    fn linear(&self, x: &[f64], w: &str, b: Option<&str>) -> Vec<f64> {
        let w = self.get(w);
        let n_in = x.len();
        (0..w.len() / n_in)
            .map(|o| {
                (0..n_in).map(|i| w[o * n_in + i] * x[i]).sum::<f64>()
                    + b.map_or(0.0, |b| self.get(b)[o])
            })
            .collect()
    }

    fn rms_norm(&self, x: &[f64], w: &str) -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let inv = 1.0 / (ms + self.cfg.layer_norm_epsilon).sqrt();
        x.iter()
            .zip(self.get(w))
            .map(|(v, g)| v * inv * g)
            .collect()
    }

    /// One mixer over the whole sequence from zero state (`hs: [L][hidden]`).
    fn mixer(&self, l: usize, hs: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let c = self.cfg;
        let (di, n, r, k) = (c.d_inner(), c.state_size, c.dt_rank(), c.conv_kernel);
        let p = |s: &str| format!("backbone.layers.{l}.mixer.{s}");
        let bias = |s: &str| c.use_bias.then(|| p(s));
        let len = hs.len();
        // in_proj, then hidden_states / gate as [d_inner][L].
        let proj: Vec<Vec<f64>> = hs
            .iter()
            .map(|x| self.linear(x, &p("in_proj.weight"), bias("in_proj.bias").as_deref()))
            .collect();
        let xs: Vec<Vec<f64>> = (0..di)
            .map(|ch| (0..len).map(|t| proj[t][ch]).collect())
            .collect();
        let gate: Vec<Vec<f64>> = (0..di)
            .map(|ch| (0..len).map(|t| proj[t][di + ch]).collect())
            .collect();
        // conv1d(groups=d_inner, padding=K-1)[..., :L]: output t reads inputs t-K+1..=t.
        let cw = self.get(&p("conv1d.weight"));
        let u: Vec<Vec<f64>> = (0..di)
            .map(|ch| {
                (0..len)
                    .map(|t| {
                        let mut s = if c.use_conv_bias {
                            self.get(&p("conv1d.bias"))[ch]
                        } else {
                            0.0
                        };
                        for j in 0..k {
                            let src = t as isize + j as isize - (k as isize - 1);
                            if src >= 0 {
                                s += cw[ch * k + j] * xs[ch][src as usize];
                            }
                        }
                        silu(s)
                    })
                    .collect()
            })
            .collect();
        let a: Vec<f64> = self.get(&p("A_log")).iter().map(|v| -v.exp()).collect();
        let d = self.get(&p("D"));
        let mut state = vec![0.0; di * n];
        let mut out = Vec::with_capacity(len);
        for t in 0..len {
            let ut: Vec<f64> = (0..di).map(|ch| u[ch][t]).collect();
            let ssm_p = self.linear(&ut, &p("x_proj.weight"), None);
            let (ts, rest) = ssm_p.split_at(r);
            let (bm, cm) = rest.split_at(n);
            let dt: Vec<f64> = self
                .linear(ts, &p("dt_proj.weight"), Some(&p("dt_proj.bias")))
                .into_iter()
                .map(softplus)
                .collect();
            let mut y = vec![0.0; di];
            for ch in 0..di {
                for s in 0..n {
                    let da = (a[ch * n + s] * dt[ch]).exp();
                    let db_u = dt[ch] * bm[s] * ut[ch];
                    state[ch * n + s] = da * state[ch * n + s] + db_u;
                    y[ch] += state[ch * n + s] * cm[s];
                }
                y[ch] = (y[ch] + ut[ch] * d[ch]) * silu(gate[ch][t]);
            }
            out.push(self.linear(&y, &p("out_proj.weight"), bias("out_proj.bias").as_deref()));
        }
        out
    }

    fn logits(&self, tokens: &[i32]) -> Vec<Vec<f64>> {
        let c = self.cfg;
        let h = c.hidden_size;
        let e = self.get("backbone.embeddings.weight");
        let mut xs: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&t| e[t as usize * h..(t as usize + 1) * h].to_vec())
            .collect();
        for l in 0..c.num_hidden_layers {
            let normed: Vec<Vec<f64>> = xs
                .iter()
                .map(|x| self.rms_norm(x, &format!("backbone.layers.{l}.norm.weight")))
                .collect();
            for (x, m) in xs.iter_mut().zip(self.mixer(l, &normed)) {
                for (a, b) in x.iter_mut().zip(m) {
                    *a += b;
                }
            }
        }
        let head = if c.tie_word_embeddings {
            "backbone.embeddings.weight"
        } else {
            "lm_head.weight"
        };
        xs.iter()
            .map(|x| self.linear(&self.rms_norm(x, "backbone.norm_f.weight"), head, None))
            .collect()
    }
}

// ---- running the graph -----------------------------------------------------

fn step(
    g: &Graph,
    params: &dyn ParamSource,
    tokens: &[i32],
    states: BTreeMap<String, Tensor>,
) -> (Vec<f32>, BTreeMap<String, Tensor>) {
    let mut inputs = states;
    inputs.insert(
        "tokens".into(),
        Tensor::i32(vec![tokens.len()], tokens.to_vec()).unwrap(),
    );
    let mut out = eval_with(g, &inputs, params, &EvalOptions::default()).unwrap();
    let logits = out.remove("logits").unwrap();
    // `last_logits` is the last row of `logits`, computed on its own.
    let last = out.remove("last_logits").unwrap();
    let all = logits.as_f32().unwrap();
    assert_eq!(last.shape[0], 1);
    assert_eq!(last.as_f32().unwrap(), &all[all.len() - last.shape[1]..]);
    for name in out.keys() {
        assert_eq!(
            g.output(name).unwrap().alias.as_deref(),
            Some(name.as_str())
        );
    }
    (logits.as_f32().unwrap().to_vec(), out)
}

/// `random_weights`, made livelier so the recurrence shows in the logits:
/// projections ×3 (as the golden models) and time steps around 0.3–1.
fn weights(c: &MambaConfig, seed: u64) -> BTreeMap<String, Tensor> {
    let mut w = mamba::random_weights(c, seed);
    for (name, t) in w.iter_mut() {
        let f = |x: f32| {
            if name.ends_with("proj.weight") {
                3.0 * x
            } else if name.ends_with("dt_proj.bias") {
                x + 4.0
            } else {
                x
            }
        };
        let data = t.as_f32().unwrap().iter().map(|&x| f(x)).collect();
        *t = Tensor::f32(t.shape.clone(), data).unwrap();
    }
    w
}

fn tokens(n: usize, vocab: usize, salt: usize) -> Vec<i32> {
    (0..n)
        .map(|i| ((i * 11 + salt * 5 + 1) % vocab) as i32)
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
fn prefill_matches_slow_forward() {
    for (seed, (name, c)) in configs().into_iter().enumerate() {
        let g = mamba::build(&c).unwrap();
        let w = weights(&c, seed as u64);
        let toks = tokens(7, c.vocab_size, seed);
        let (logits, _) = step(&g, &w, &toks, c.zero_states());
        let want: Vec<f64> = Ref::new(&c, &w).logits(&toks).concat();
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
        let g = mamba::build(&c).unwrap();
        let w = weights(&c, 50 + seed as u64);
        let toks = tokens(6, c.vocab_size, seed + 2);
        let v = c.vocab_size;
        let (prefill, prefill_states) = step(&g, &w, &toks, c.zero_states());
        let mut states = c.zero_states();
        for (t, &tok) in toks.iter().enumerate() {
            let (logits, next) = step(&g, &w, &[tok], states);
            let d = max_abs_diff(&logits, &prefill[t * v..(t + 1) * v]);
            assert!(d <= 1e-5, "{name}: position {t} differs by {d}");
            states = next;
        }
        for (k, s) in &states {
            let d = max_abs_diff(s.as_f32().unwrap(), prefill_states[k].as_f32().unwrap());
            assert!(d <= 1e-5, "{name}: {k} differs by {d}");
        }
        // The conv state holds the last K-1 conv inputs; nonzero after a prefill.
        let conv = &states["backbone.layers.0.conv_state"];
        assert_eq!(conv.shape, vec![c.conv_kernel - 1, c.d_inner()]);
        assert!(conv.as_f32().unwrap().iter().any(|&x| x != 0.0));
        // Chunked: 4 tokens, then 2 more from the carried state.
        let (first, st) = step(&g, &w, &toks[..4], c.zero_states());
        let (second, _) = step(&g, &w, &toks[4..], st);
        let d = max_abs_diff(&[first, second].concat(), &prefill);
        assert!(d <= 1e-5, "{name}: chunked prefill differs by {d}");
    }
}

#[test]
fn signature_is_tokens_and_states_in_logits_and_aliased_states_out() {
    let c = cfg(16, 8, 4, TimeStepRank::Named("auto".into()), true);
    let g = mamba::build(&c).unwrap();
    let inputs: Vec<String> = g
        .input_names()
        .zip(g.input_types())
        .map(|(n, t)| format!("{n}: {t}"))
        .collect();
    assert_eq!(
        inputs,
        [
            "tokens: i32[seq]",
            "backbone.layers.0.conv_state: f32[3,32]",
            "backbone.layers.0.ssm_state: f32[32,8]",
            "backbone.layers.1.conv_state: f32[3,32]",
            "backbone.layers.1.ssm_state: f32[32,8]",
        ]
    );
    let outs: Vec<(String, Option<String>)> = g
        .outputs()
        .iter()
        .map(|o| (format!("{}: {}", o.name, g.ty(o.value)), o.alias.clone()))
        .collect();
    assert_eq!(outs[0], ("logits: f32[seq,29]".into(), None));
    assert_eq!(outs[1], ("last_logits: f32[1,29]".into(), None));
    assert_eq!(
        outs[3],
        (
            "backbone.layers.0.ssm_state: f32[32,8]".into(),
            Some("backbone.layers.0.ssm_state".into())
        )
    );
    assert_eq!(outs.len(), 6);
    // One scan per layer carries the SSM state.
    let scans = g
        .node_ids()
        .filter(|&n| g.node(n).op.name() == "scan")
        .count();
    assert_eq!(scans, 2);
    let text = kiln_ir::text::print(&g);
    assert_eq!(kiln_ir::text::parse(&text).unwrap(), g);
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
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden");
    for name in ["mamba-auto-rank", "mamba-explicit-rank"] {
        let dir = root.join(name);
        let m = kiln_models::hf::load_dir(&dir).unwrap();
        let c = MambaConfig::from_json(&m.config).unwrap();
        let g = mamba::build(&c).unwrap();
        let golden = kiln_models::weights::Weights::open(dir.join("golden.safetensors")).unwrap();

        let toks = golden_i32(&golden, "tokens");
        let (logits, _) = step(&g, &m.weights, &toks, c.zero_states());
        let want = golden.get("logits").unwrap().as_f32().unwrap().to_vec();
        let d = max_abs_diff(&logits, &want);
        assert!(d <= 1e-4, "{name}: logits differ from transformers by {d}");

        let prompt = golden_i32(&golden, "greedy_prompt");
        let want_ids = golden_i32(&golden, "greedy_ids");
        let v = c.vocab_size;
        let argmax = |row: &[f32]| {
            (0..row.len())
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap() as i32
        };
        let (logits, mut states) = step(&g, &m.weights, &prompt, c.zero_states());
        let mut next = argmax(&logits[(prompt.len() - 1) * v..]);
        let mut got = vec![next];
        while got.len() < want_ids.len() {
            let (logits, st) = step(&g, &m.weights, &[next], states);
            states = st;
            next = argmax(&logits);
            got.push(next);
        }
        assert_eq!(got, want_ids, "{name}: greedy ids");
    }
}

#[test]
fn config_defaults_follow_hugging_face() {
    let c = MambaConfig::from_json_str("{}").unwrap();
    assert_eq!(c, MambaConfig::default());
    assert_eq!(
        (c.vocab_size, c.hidden_size, c.state_size),
        (50280, 768, 16)
    );
    assert_eq!((c.d_inner(), c.dt_rank(), c.conv_kernel), (1536, 48, 4));
    assert!(c.tie_word_embeddings && c.use_conv_bias && !c.use_bias);
    let c = MambaConfig::from_json_str(r#"{"hidden_size": 33, "time_step_rank": "auto"}"#).unwrap();
    assert_eq!(c.dt_rank(), 3);
    let c = MambaConfig::from_json_str(
        r#"{"hidden_size": 32, "time_step_rank": 5, "intermediate_size": 64}"#,
    )
    .unwrap();
    assert_eq!(c.dt_rank(), 5);
    c.validate().unwrap();
}

#[test]
fn bad_configs_are_typed_errors() {
    let err = |json: &str| {
        let c = MambaConfig::from_json_str(json).unwrap();
        let e = mamba::build(&c).unwrap_err();
        assert!(matches!(
            e,
            MambaError::Invalid { .. } | MambaError::Unsupported { .. }
        ));
        e.to_string()
    };
    assert_eq!(
        err(r#"{"hidden_size": 32, "hidden_act": "gelu"}"#),
        "mamba config: hidden_act = `gelu` is not supported (only `silu`)"
    );
    assert_eq!(
        err(r#"{"hidden_size": 32, "intermediate_size": 48}"#),
        "mamba config: `intermediate_size` (48) disagrees with expand * hidden_size (2 * 32 = 64)"
    );
    assert_eq!(
        err(r#"{"time_step_rank": "big"}"#),
        "mamba config: `time_step_rank` must be a number or \"auto\", got \"big\""
    );
    assert_eq!(
        err(r#"{"conv_kernel": 0}"#),
        "mamba config: `conv_kernel` must be positive, got 0"
    );
    let e = MambaConfig::from_json_str(r#"{"state_size": -1}"#).unwrap_err();
    assert!(matches!(e, MambaError::Parse(_)), "{e}");
}

#[test]
fn builtin_mamba_tiny_runs() {
    let m = kiln_models::builtin("mamba-tiny").unwrap();
    let g = (m.build)().unwrap();
    let w = (m.weights)(1);
    let c = mamba::tiny_config();
    let (logits, _) = step(&g, &w, &[72, 105, 33], c.zero_states());
    assert_eq!(logits.len(), 3 * 256);
    assert!(logits.iter().all(|x| x.is_finite()));
}
