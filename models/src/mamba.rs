//! Mamba (Hugging Face `MambaForCausalLM`) in the DSL, following
//! `MambaMixer.slow_forward`: the selective scan is the IR's `scan`, and the
//! convolution and SSM states are graph inputs updated in place.
//!
//! Parameters carry Hugging Face's names and shapes (`d_inner = expand·hidden`,
//! `R = time_step_rank`, `N = state_size`, `K = conv_kernel`):
//!
//! | name | shape |
//! |---|---|
//! | `backbone.embeddings.weight` | `[vocab, hidden]` |
//! | `backbone.layers.{i}.norm.weight` | `[hidden]` |
//! | `backbone.layers.{i}.mixer.in_proj.weight` | `[2·d_inner, hidden]` (`.bias` with `use_bias`) |
//! | `backbone.layers.{i}.mixer.conv1d.weight` | `[d_inner, 1, K]` (`.bias` `[d_inner]` with `use_conv_bias`) |
//! | `backbone.layers.{i}.mixer.x_proj.weight` | `[R + 2N, d_inner]` |
//! | `backbone.layers.{i}.mixer.dt_proj.weight`, `.bias` | `[d_inner, R]`, `[d_inner]` |
//! | `backbone.layers.{i}.mixer.A_log` | `[d_inner, N]` |
//! | `backbone.layers.{i}.mixer.D` | `[d_inner]` |
//! | `backbone.layers.{i}.mixer.out_proj.weight` | `[hidden, d_inner]` (`.bias` with `use_bias`) |
//! | `backbone.norm_f.weight` | `[hidden]` |
//! | `lm_head.weight` | `[vocab, hidden]`, only when untied |
//!
//! # Signature
//!
//! - inputs: `tokens: i32[seq]`, then per layer
//!   `backbone.layers.{i}.conv_state: f32[K-1, d_inner]` (the last `K-1`
//!   inputs of the convolution, oldest first — the transpose of Hugging Face's
//!   `[d_inner, K]` cache without its newest column, so new rows concatenate
//!   along the sequence axis) and `backbone.layers.{i}.ssm_state:
//!   f32[d_inner, N]`;
//! - no explicit sizes;
//! - outputs: `logits: f32[seq, vocab]`, `last_logits: f32[1, vocab]` (the last
//!   position's, what generation asks for), then the new states under the input
//!   names, each an in-place alias of its input.
//!
//! Zero states start a sequence; prefill (`seq > 1`) and one-token decode
//! use the same graph.

use crate::layers::{linear, lm_head, param};
use kiln_ir::dsl::{BuildError, ModelBuilder, Var};
use kiln_ir::{shape, DType, Dim, Graph, Tensor};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Why a Mamba config cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum MambaError {
    #[error("mamba config: cannot parse: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("mamba config: `{field}` {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("mamba config: {feature} = {value} is not supported ({supported})")]
    Unsupported {
        feature: &'static str,
        value: String,
        supported: &'static str,
    },
    #[error("building the mamba graph: {0}")]
    Build(#[from] BuildError),
}

/// `time_step_rank`: a number, or `"auto"` (`ceil(hidden / 16)`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TimeStepRank {
    Fixed(usize),
    Named(String),
}

/// Hugging Face's `MambaConfig`: field names as in `config.json`, missing
/// fields take Hugging Face's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MambaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub state_size: usize,
    pub num_hidden_layers: usize,
    pub expand: usize,
    /// transformers 5 writes `expand · hidden_size` here; must agree when given.
    pub intermediate_size: Option<usize>,
    pub conv_kernel: usize,
    pub time_step_rank: TimeStepRank,
    pub use_bias: bool,
    pub use_conv_bias: bool,
    pub layer_norm_epsilon: f64,
    pub tie_word_embeddings: bool,
    /// Only `silu` is supported.
    pub hidden_act: String,
}

impl Default for MambaConfig {
    /// Hugging Face's defaults.
    fn default() -> Self {
        MambaConfig {
            vocab_size: 50280,
            hidden_size: 768,
            state_size: 16,
            num_hidden_layers: 32,
            expand: 2,
            intermediate_size: None,
            conv_kernel: 4,
            time_step_rank: TimeStepRank::Named("auto".into()),
            use_bias: false,
            use_conv_bias: true,
            layer_norm_epsilon: 1e-5,
            tie_word_embeddings: true,
            hidden_act: "silu".into(),
        }
    }
}

impl MambaConfig {
    /// Parses `config.json` text.
    pub fn from_json_str(text: &str) -> Result<MambaConfig, MambaError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Parses an already-read `config.json`.
    pub fn from_json(value: &Value) -> Result<MambaConfig, MambaError> {
        Ok(MambaConfig::deserialize(value)?)
    }

    /// `d_inner = expand · hidden_size`.
    pub fn d_inner(&self) -> usize {
        self.expand * self.hidden_size
    }

    /// The resolved time-step rank (`"auto"` = `ceil(hidden / 16)`).
    pub fn dt_rank(&self) -> usize {
        match &self.time_step_rank {
            TimeStepRank::Fixed(r) => *r,
            TimeStepRank::Named(_) => self.hidden_size.div_ceil(16),
        }
    }

    /// Checks that the graph can be built.
    pub fn validate(&self) -> Result<(), MambaError> {
        let invalid = |field, problem: String| Err(MambaError::Invalid { field, problem });
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("state_size", self.state_size),
            ("expand", self.expand),
            ("conv_kernel", self.conv_kernel),
        ] {
            if v == 0 {
                return invalid(field, "must be positive, got 0".into());
            }
        }
        match &self.time_step_rank {
            TimeStepRank::Fixed(0) => {
                return invalid("time_step_rank", "must be positive, got 0".into())
            }
            TimeStepRank::Named(s) if s != "auto" => {
                return invalid(
                    "time_step_rank",
                    format!("must be a number or \"auto\", got \"{s}\""),
                )
            }
            _ => {}
        }
        if let Some(n) = self.intermediate_size {
            if n != self.d_inner() {
                return invalid(
                    "intermediate_size",
                    format!(
                        "({n}) disagrees with expand * hidden_size ({} * {} = {})",
                        self.expand,
                        self.hidden_size,
                        self.d_inner()
                    ),
                );
            }
        }
        if self.hidden_act != "silu" {
            return Err(MambaError::Unsupported {
                feature: "hidden_act",
                value: format!("`{}`", self.hidden_act),
                supported: "only `silu`",
            });
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon >= 0.0) {
            return invalid(
                "layer_norm_epsilon",
                format!("must be finite and >= 0, got {}", self.layer_norm_epsilon),
            );
        }
        Ok(())
    }

    /// Every weight with its shape, in Hugging Face's names.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, di, n, r, k) = (
            self.hidden_size,
            self.d_inner(),
            self.state_size,
            self.dt_rank(),
            self.conv_kernel,
        );
        let mut out = vec![(
            "backbone.embeddings.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for i in 0..self.num_hidden_layers {
            let p = |s: &str| format!("backbone.layers.{i}.{s}");
            out.push((p("norm.weight"), vec![h]));
            out.push((p("mixer.in_proj.weight"), vec![2 * di, h]));
            if self.use_bias {
                out.push((p("mixer.in_proj.bias"), vec![2 * di]));
            }
            out.push((p("mixer.conv1d.weight"), vec![di, 1, k]));
            if self.use_conv_bias {
                out.push((p("mixer.conv1d.bias"), vec![di]));
            }
            out.push((p("mixer.x_proj.weight"), vec![r + 2 * n, di]));
            out.push((p("mixer.dt_proj.weight"), vec![di, r]));
            out.push((p("mixer.dt_proj.bias"), vec![di]));
            out.push((p("mixer.A_log"), vec![di, n]));
            out.push((p("mixer.D"), vec![di]));
            out.push((p("mixer.out_proj.weight"), vec![h, di]));
            if self.use_bias {
                out.push((p("mixer.out_proj.bias"), vec![h]));
            }
        }
        out.push(("backbone.norm_f.weight".into(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".into(), vec![self.vocab_size, h]));
        }
        out
    }

    /// The names of layer `i`'s state inputs (and aliased outputs): `(conv, ssm)`.
    pub fn state_names(layer: usize) -> (String, String) {
        (
            format!("backbone.layers.{layer}.conv_state"),
            format!("backbone.layers.{layer}.ssm_state"),
        )
    }

    /// Zero states for every layer (the start of a sequence), by input name.
    pub fn zero_states(&self) -> BTreeMap<String, Tensor> {
        let di = self.d_inner();
        (0..self.num_hidden_layers)
            .flat_map(|i| {
                let (conv, ssm) = MambaConfig::state_names(i);
                [
                    (
                        conv,
                        Tensor::zeros(DType::F32, vec![self.conv_kernel - 1, di]),
                    ),
                    (ssm, Tensor::zeros(DType::F32, vec![di, self.state_size])),
                ]
            })
            .collect()
    }
}

/// The selective scan over the sequence: `h' = exp(dt·A)·h + (dt·x)·B`,
/// `y = Σ_n h'·C`; returns the final state and `y: [seq, d_inner]`.
fn selective_scan(
    b: &ModelBuilder,
    h0: &Var,
    dt: &Var,
    x: &Var,
    bm: &Var,
    cm: &Var,
    a: &Var,
) -> (Var, Var) {
    // A: [d_inner, N]
    let dims = a.shape();
    let (di, n) = (dims[0].clone(), dims[1].clone());
    let (mut carries, mut ys) = b.scan(&[h0], &[dt, x, bm, cm], &[a], 0, false, |_, c, xs, k| {
        let (h, dt, x, bm, cm, a) = (&c[0], &xs[0], &xs[1], &xs[2], &xs[3], &k[0]);
        let decay = (dt.reshape(shape![di.clone(), 1]) * a).exp();
        let input = (dt * x).reshape(shape![di.clone(), 1]) * bm.reshape(shape![1, n.clone()]);
        let h = decay * h + input;
        let y = (&h * &cm.reshape(shape![1, n.clone()])).sum(&[-1], false);
        (vec![h], vec![y])
    });
    (carries.remove(0), ys.remove(0))
}

/// The Mamba graph (see the module docs for the signature).
pub fn build(cfg: &MambaConfig) -> Result<Graph, MambaError> {
    cfg.validate()?;
    let b = ModelBuilder::new("mamba");
    let (h, di, n, r, k) = (
        cfg.hidden_size,
        cfg.d_inner(),
        cfg.state_size,
        cfg.dt_rank(),
        cfg.conv_kernel,
    );
    let eps = cfg.layer_norm_epsilon;
    let seq = Dim::from("seq");

    let tokens = b.input("tokens", DType::I32, shape!["seq"]);
    let states: Vec<(Var, Var)> = (0..cfg.num_hidden_layers)
        .map(|i| {
            let (conv, ssm) = MambaConfig::state_names(i);
            (
                b.input(&conv, DType::F32, shape![k - 1, di]),
                b.input(&ssm, DType::F32, shape![di, n]),
            )
        })
        .collect();

    let embed = param(&b, "backbone.embeddings.weight", &[cfg.vocab_size, h]);
    let mut x = embed.gather(&tokens, 0);
    let mut new_states = Vec::new();
    for (i, (conv_state, ssm_state)) in states.iter().enumerate() {
        let _layer = b.scope(format!("backbone.layers.{i}"));
        let p = |s: &str, dims: &[usize]| param(&b, &format!("backbone.layers.{i}.{s}"), dims);
        let xn = x.rms_norm(&p("norm.weight", &[h]), eps);
        let _mixer = b.scope("mixer");
        let in_bias = cfg.use_bias.then(|| p("mixer.in_proj.bias", &[2 * di]));
        let proj = linear(
            &xn,
            &p("mixer.in_proj.weight", &[2 * di, h]),
            in_bias.as_ref(),
        );
        let (xs, z) = (proj.slice(-1, 0, di), proj.slice(-1, di, 2 * di));

        // Causal depthwise convolution over [previous K-1 inputs; this call's].
        let window = conv_state.concat(&[&xs], 0);
        let new_conv = window.slice(0, seq.clone(), &seq + &Dim::from(k - 1));
        let taps = p("mixer.conv1d.weight", &[di, 1, k])
            .reshape(shape![di, k])
            .transpose(0, 1);
        let mut conv = window.slice(0, 0, seq.clone()) * taps.slice(0, 0, 1);
        for j in 1..k {
            conv = conv + window.slice(0, j, &seq + &Dim::from(j)) * taps.slice(0, j, j + 1);
        }
        if cfg.use_conv_bias {
            conv = conv + p("mixer.conv1d.bias", &[di]);
        }
        let u = conv.silu();

        let ssm_p = linear(&u, &p("mixer.x_proj.weight", &[r + 2 * n, di]), None);
        let dt = ssm_p.slice(-1, 0, r);
        let bm = ssm_p.slice(-1, r, r + n);
        let cm = ssm_p.slice(-1, r + n, r + 2 * n);
        let dt = linear(
            &dt,
            &p("mixer.dt_proj.weight", &[di, r]),
            Some(&p("mixer.dt_proj.bias", &[di])),
        )
        .softplus();
        let a = -p("mixer.A_log", &[di, n]).exp();
        let (new_ssm, y) = selective_scan(&b, ssm_state, &dt, &u, &bm, &cm, &a);
        let y = (y + &u * &p("mixer.D", &[di])) * z.silu();
        let out_bias = cfg.use_bias.then(|| p("mixer.out_proj.bias", &[h]));
        let out = linear(&y, &p("mixer.out_proj.weight", &[h, di]), out_bias.as_ref());
        x = x + out;
        new_states.push((MambaConfig::state_names(i), new_conv, new_ssm));
    }

    let (logits, last_logits) = lm_head(
        &b,
        &x,
        "backbone.norm_f.weight",
        &embed,
        cfg.tie_word_embeddings,
        eps,
    );
    b.output("logits", &logits);
    b.output("last_logits", &last_logits);
    for ((conv_name, ssm_name), conv, ssm) in &new_states {
        b.output_alias(conv_name, conv, conv_name);
        b.output_alias(ssm_name, ssm, ssm_name);
    }
    Ok(b.finish()?)
}

/// Deterministic random weights shaped like a trained Mamba: `A_log[c, n] =
/// ln(n+1)` (S4D-real), `dt_proj.bias` the inverse softplus of time steps
/// log-uniform in [0.001, 0.1], `D` and norm gains 1 ± 0.1, projections
/// uniform in ±1/sqrt(fan_in), embeddings in ±0.5.
pub fn random_weights(cfg: &MambaConfig, seed: u64) -> BTreeMap<String, Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    cfg.param_shapes()
        .into_iter()
        .map(|(name, dims)| {
            let count: usize = dims.iter().product();
            let mut uniform = |center: f32, bound: f32| -> Vec<f32> {
                (0..count)
                    .map(|_| center + rng.random_range(-bound..bound))
                    .collect()
            };
            let data = if name.ends_with("A_log") {
                (0..count)
                    .map(|i| ((i % cfg.state_size) as f32 + 1.0).ln())
                    .collect()
            } else if name.ends_with("dt_proj.bias") {
                let (lo, hi) = (0.001f32.ln(), 0.1f32.ln());
                uniform(0.0, 1.0)
                    .into_iter()
                    .map(|s| {
                        let dt = (lo + (s + 1.0) / 2.0 * (hi - lo)).exp();
                        dt + (-(-dt).exp_m1()).ln()
                    })
                    .collect()
            } else if name.ends_with(".D")
                || name.ends_with("norm.weight")
                || name.ends_with("norm_f.weight")
            {
                uniform(1.0, 0.1)
            } else if name.contains("embeddings") || name == "lm_head.weight" {
                uniform(0.0, 0.5)
            } else if name.ends_with(".bias") {
                uniform(0.0, 0.1)
            } else {
                // Weights are [out, in(, K)]: fan-in is everything after `out`.
                let fan_in: usize = dims[1..].iter().product();
                uniform(0.0, 1.0 / (fan_in as f32).sqrt())
            };
            let t = Tensor::f32(dims, data).expect("data sized from the shape");
            (name, t)
        })
        .collect()
}

/// The built-in `mamba-tiny`: byte vocabulary, hidden 64, 2 layers, state 16.
pub fn tiny_config() -> MambaConfig {
    MambaConfig {
        vocab_size: 256,
        hidden_size: 64,
        num_hidden_layers: 2,
        ..MambaConfig::default()
    }
}

impl From<MambaError> for BuildError {
    /// For the model registry, whose builders report [`BuildError`]s.
    fn from(e: MambaError) -> BuildError {
        match e {
            MambaError::Build(b) => b,
            other => BuildError {
                message: other.to_string(),
                caller: "kiln_models::mamba::build".into(),
                scope: None,
            },
        }
    }
}
