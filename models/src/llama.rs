//! Llama (Hugging Face `LlamaForCausalLM`) in the DSL, with a fixed-capacity
//! KV cache updated in place.
//!
//! Parameters carry Hugging Face's names and shapes (`[out, in]` projections),
//! so a `model.safetensors` maps onto the graph as it is:
//!
//! | name | shape |
//! |---|---|
//! | `model.embed_tokens.weight` | `[vocab, hidden]` |
//! | `model.layers.{i}.input_layernorm.weight` | `[hidden]` |
//! | `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight` | `[heads·hd, hidden]`, `[kv·hd, hidden]` ×2, `[hidden, heads·hd]` |
//! | `model.layers.{i}.self_attn.{q,k,v,o}_proj.bias` | only with `attention_bias` |
//! | `model.layers.{i}.post_attention_layernorm.weight` | `[hidden]` |
//! | `model.layers.{i}.mlp.{gate,up,down}_proj.weight` | `[ffn, hidden]` ×2, `[hidden, ffn]` (`.bias` with `mlp_bias`) |
//! | `model.norm.weight` | `[hidden]` |
//! | `lm_head.weight` | `[vocab, hidden]`, absent when tied (the embedding is used) |
//!
//! # Signature
//!
//! - inputs: `tokens: i32[seq]`, then per layer `model.layers.{i}.k_cache` and
//!   `model.layers.{i}.v_cache`, both `f32[ctx, kv_heads, head_dim]` (fixed
//!   capacity `ctx`, bound from the cache's shape);
//! - explicit size `past`: how many cache rows are filled, given by the caller
//!   (`EvalOptions::sizes` in the interpreter); no shape determines it;
//! - outputs: `logits: f32[seq, vocab]`, `last_logits: f32[1, vocab]` (the last
//!   position's, what generation asks for), then the updated caches under the
//!   same names as the inputs, each an in-place alias of its input.
//!
//! The new keys/values go to rows `past..past+seq` (`update_slice`); attention
//! reads rows `0..past+seq`. One graph serves prefill (`past = 0`) and decode
//! (`seq = 1`); the caller must keep `past + seq <= ctx`.

use crate::layers::{linear, lm_head, param};
use kiln_ir::dsl::{BuildError, ModelBuilder, Var};
use kiln_ir::{shape, DType, Dim, Graph, Literal, Tensor};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Why a Llama config cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    #[error("llama config: cannot parse: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("llama config: `{field}` {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("llama config: {feature} = {value} is not supported ({supported})")]
    Unsupported {
        feature: &'static str,
        value: String,
        supported: &'static str,
    },
    #[error("building the llama graph: {0}")]
    Build(#[from] BuildError),
}

/// Hugging Face's `LlamaConfig`: field names as in `config.json`, missing
/// fields take Hugging Face's defaults (those of Llama 2 7B). Both the
/// transformers 4 layout (top-level `rope_theta`, `rope_scaling`) and the
/// transformers 5 layout (`rope_parameters: {rope_theta, rope_type}`) parse.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (plain multi-head attention).
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// Only `silu` (SwiGLU) is supported.
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    /// transformers 4 layout; `rope_parameters.rope_theta` wins when present.
    pub rope_theta: f64,
    /// Must be null (or of type `default`): scaled RoPE variants are not supported.
    pub rope_scaling: Option<Value>,
    /// transformers 5 layout: `{rope_theta, rope_type}`; `rope_type` must be `default`.
    pub rope_parameters: Option<Value>,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// Kiln's extension (`"kiln_harmonic_alibi": true` in `config.json`): add
    /// the RoPE × ALiBi harmonic position bias `-m_h · H(i - j)` to the
    /// attention scores (DESIGN.md §4), with ALiBi's head slopes `m_h`.
    pub kiln_harmonic_alibi: bool,
}

impl Default for LlamaConfig {
    /// Hugging Face's defaults.
    fn default() -> Self {
        LlamaConfig {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            hidden_act: "silu".into(),
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            rope_scaling: None,
            rope_parameters: None,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            kiln_harmonic_alibi: false,
        }
    }
}

/// A RoPE variant's `rope_type` (or legacy `type`), `default` when absent.
fn rope_type(v: &Value) -> Option<&str> {
    v.get("rope_type")
        .or_else(|| v.get("type"))
        .map(|t| t.as_str().unwrap_or("<not a string>"))
}

/// ALiBi's head slopes: for `n` a power of two, `2^(-8(h+1)/n)`; otherwise
/// those of the power of two below, then every other slope of the one above.
pub fn alibi_slopes(n: usize) -> Vec<f64> {
    let pow2 = |n: usize| -> Vec<f64> {
        let start = 2f64.powf(-8.0 / n as f64);
        (1..=n).map(|h| start.powi(h as i32)).collect()
    };
    if n.is_power_of_two() {
        return pow2(n);
    }
    let p = 1 << (usize::BITS - 1 - n.leading_zeros());
    let mut out = pow2(p);
    out.extend(pow2(2 * p).into_iter().step_by(2).take(n - p));
    out
}

impl LlamaConfig {
    /// Parses `config.json` text.
    pub fn from_json_str(text: &str) -> Result<LlamaConfig, LlamaError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Parses an already-read `config.json`.
    pub fn from_json(value: &Value) -> Result<LlamaConfig, LlamaError> {
        Ok(LlamaConfig::deserialize(value)?)
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The RoPE base: `rope_parameters.rope_theta`, else `rope_theta`.
    pub fn rope_base(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(self.rope_theta)
    }

    /// Checks that the graph can be built: sizes that divide, the supported
    /// activation and RoPE variant.
    pub fn validate(&self) -> Result<(), LlamaError> {
        let invalid = |field, problem: String| Err(LlamaError::Invalid { field, problem });
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_kv_heads()),
        ] {
            if v == 0 {
                return invalid(field, "must be positive, got 0".into());
            }
        }
        if self.hidden_act != "silu" {
            return Err(LlamaError::Unsupported {
                feature: "hidden_act",
                value: format!("`{}`", self.hidden_act),
                supported: "only `silu`",
            });
        }
        let (h, nh, kv) = (
            self.hidden_size,
            self.num_attention_heads,
            self.num_kv_heads(),
        );
        match self.head_dim {
            None if h % nh != 0 => {
                return invalid(
                    "num_attention_heads",
                    format!("({nh}) does not divide hidden_size ({h}) and no head_dim is given"),
                )
            }
            Some(0) => return invalid("head_dim", "must be positive, got 0".into()),
            _ => {}
        }
        if nh % kv != 0 {
            return invalid(
                "num_key_value_heads",
                format!("({kv}) does not divide num_attention_heads ({nh})"),
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            return invalid(
                "head_dim",
                format!(
                    "({}) must be even: rotary embeddings rotate pairs of channels",
                    self.head_dim()
                ),
            );
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return invalid(
                "rms_norm_eps",
                format!("must be finite and >= 0, got {}", self.rms_norm_eps),
            );
        }
        let theta = self.rope_base();
        if !(theta.is_finite() && theta > 0.0) {
            return invalid("rope_theta", format!("must be finite and > 0, got {theta}"));
        }
        for (feature, v) in [
            ("rope_scaling", &self.rope_scaling),
            ("rope_parameters", &self.rope_parameters),
        ] {
            let Some(v) = v.as_ref().filter(|v| !v.is_null()) else {
                continue;
            };
            if !v.is_object() || !matches!(rope_type(v), None | Some("default")) {
                return Err(LlamaError::Unsupported {
                    feature,
                    value: v.to_string(),
                    supported: "only the default RoPE: null, or rope_type `default`",
                });
            }
        }
        Ok(())
    }

    /// Every weight with its shape, in Hugging Face's names.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let (qd, kvd) = (
            self.num_attention_heads * self.head_dim(),
            self.num_kv_heads() * self.head_dim(),
        );
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
        for i in 0..self.num_hidden_layers {
            let p = |n: &str| format!("model.layers.{i}.{n}");
            out.push((p("input_layernorm.weight"), vec![h]));
            for (n, o, inp) in [
                ("q_proj", qd, h),
                ("k_proj", kvd, h),
                ("v_proj", kvd, h),
                ("o_proj", h, qd),
            ] {
                out.push((p(&format!("self_attn.{n}.weight")), vec![o, inp]));
                if self.attention_bias {
                    out.push((p(&format!("self_attn.{n}.bias")), vec![o]));
                }
            }
            out.push((p("post_attention_layernorm.weight"), vec![h]));
            for (n, o, inp) in [("gate_proj", f, h), ("up_proj", f, h), ("down_proj", h, f)] {
                out.push((p(&format!("mlp.{n}.weight")), vec![o, inp]));
                if self.mlp_bias {
                    out.push((p(&format!("mlp.{n}.bias")), vec![o]));
                }
            }
        }
        out.push(("model.norm.weight".into(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".into(), vec![v, h]));
        }
        out
    }

    /// The names of layer `i`'s cache inputs (and aliased outputs): `(k, v)`.
    pub fn cache_names(layer: usize) -> (String, String) {
        (
            format!("model.layers.{layer}.k_cache"),
            format!("model.layers.{layer}.v_cache"),
        )
    }

    /// Zeroed caches of capacity `ctx` for every layer, by input name.
    pub fn empty_caches(&self, ctx: usize) -> BTreeMap<String, Tensor> {
        let shape = vec![ctx, self.num_kv_heads(), self.head_dim()];
        (0..self.num_hidden_layers)
            .flat_map(|i| {
                let (k, v) = LlamaConfig::cache_names(i);
                [
                    (k, Tensor::zeros(DType::F32, shape.clone())),
                    (v, Tensor::zeros(DType::F32, shape.clone())),
                ]
            })
            .collect()
    }

    /// RoPE's inverse frequencies `1 / theta^(2i/d)`, computed in f32 as
    /// Hugging Face does.
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim();
        let theta = self.rope_base() as f32;
        (0..d / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / d as f32))
            .collect()
    }
}

/// `x·cos + rotate_half(x)·sin` on the last axis (`rotate_half(x) =
/// [-x2, x1]` with `x1, x2` its halves), as Hugging Face applies RoPE.
fn rope(x: &Var, cos: &Var, sin: &Var, hd: usize) -> Var {
    let x1 = x.slice(-1, 0, hd / 2);
    let x2 = x.slice(-1, hd / 2, hd);
    let rotated = (-x2).concat(&[&x1], -1);
    x * cos + rotated * sin
}

/// The Llama graph (see the module docs for the signature).
pub fn build(cfg: &LlamaConfig) -> Result<Graph, LlamaError> {
    cfg.validate()?;
    let b = ModelBuilder::new("llama");
    let (h, nh, kvh, hd) = (
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_kv_heads(),
        cfg.head_dim(),
    );
    let group = nh / kvh;
    let eps = cfg.rms_norm_eps;
    let total = Dim::from("past+seq");

    let tokens = b.input("tokens", DType::I32, shape!["seq"]);
    let caches: Vec<(Var, Var)> = (0..cfg.num_hidden_layers)
        .map(|i| {
            let (k, v) = LlamaConfig::cache_names(i);
            (
                b.input(&k, DType::F32, shape!["ctx", kvh, hd]),
                b.input(&v, DType::F32, shape!["ctx", kvh, hd]),
            )
        })
        .collect();

    let embed = param(&b, "model.embed_tokens.weight", &[cfg.vocab_size, h]);
    let mut x = embed.gather(&tokens, 0);

    // Shared by every layer: cos/sin of positions past..past+seq, and the
    // causal mask (key j visible to query i iff j <= past+i).
    let (cos, sin, visible) = {
        let _s = b.scope("rope");
        let pos = b
            .arange(DType::F32, "seq", "past")
            .reshape(shape!["seq", 1]);
        let inv: Vec<f64> = cfg.inv_freq().iter().map(|&f| f as f64).collect();
        let inv = b.constant(Literal::floats(DType::F32, vec![1, hd / 2], &inv));
        let freqs = pos * inv;
        let emb = freqs.concat(&[&freqs], -1).reshape(shape!["seq", 1, hd]);
        let qpos = b
            .arange(DType::I32, "seq", "past")
            .reshape(shape!["seq", 1]);
        let kpos = b.iota(DType::I32, vec![Dim::from(1), total.clone()], 1);
        (emb.cos(), emb.sin(), kpos.le(&qpos))
    };
    // RoPE × ALiBi: -m_h · H(i - j), from a table of -H(n) indexed by the
    // distance (clamped to the table; masked pairs are clamped to 0).
    let harmonic = cfg.kiln_harmonic_alibi.then(|| {
        let _s = b.scope("harmonic_alibi");
        let n = cfg.max_position_embeddings;
        let table: Vec<f64> = (0..=n)
            .map(|d| -kiln_ir::attention::harmonic(d as u64))
            .collect();
        let table = b.constant(Literal::floats(DType::F32, vec![n + 1], &table));
        let qpos = b
            .arange(DType::I32, "seq", "past")
            .reshape(shape!["seq", 1]);
        let kpos = b.iota(DType::I32, vec![Dim::from(1), total.clone()], 1);
        let zero = b.scalar(DType::I32, 0.0);
        let top = b.scalar(DType::I32, n as f64);
        let dist = (qpos - kpos).maximum(&zero).minimum(&top);
        let slopes = b.constant(Literal::floats(
            DType::F32,
            vec![kvh, group, 1, 1],
            &alibi_slopes(nh),
        ));
        slopes * table.gather(&dist, 0)
    });

    let mut new_caches = Vec::new();
    for (i, (k_cache, v_cache)) in caches.iter().enumerate() {
        let _layer = b.scope(format!("model.layers.{i}"));
        let p = |n: &str, dims: &[usize]| param(&b, &format!("model.layers.{i}.{n}"), dims);
        let bias = |n: &str, d: usize, on: bool| on.then(|| p(&format!("{n}.bias"), &[d]));
        let attn = {
            let _s = b.scope("self_attn");
            let xn = x.rms_norm(&p("input_layernorm.weight", &[h]), eps);
            let proj = |n: &str, out: usize| {
                let name = format!("self_attn.{n}");
                let w = p(&format!("{name}.weight"), &[out, h]);
                linear(&xn, &w, bias(&name, out, cfg.attention_bias).as_ref())
            };
            let q = proj("q_proj", nh * hd).reshape(shape!["seq", nh, hd]);
            let k = proj("k_proj", kvh * hd).reshape(shape!["seq", kvh, hd]);
            let v = proj("v_proj", kvh * hd).reshape(shape!["seq", kvh, hd]);
            let q = rope(&q, &cos, &sin, hd);
            let k = rope(&k, &cos, &sin, hd);
            let k_all = k_cache.update_slice(&k, 0, "past");
            let v_all = v_cache.update_slice(&v, 0, "past");
            let k_used = k_all.slice(0, 0, total.clone());
            let v_used = v_all.slice(0, 0, total.clone());
            new_caches.push((LlamaConfig::cache_names(i), k_all, v_all));
            // Query head kv·group + g reads kv head kv (Hugging Face's repeat_kv
            // order); the group axis broadcasts against K/V instead of copying them.
            let qg = q
                .reshape(shape!["seq", kvh, group, hd])
                .permute(&[1, 2, 0, 3]);
            let kt = k_used.permute(&[1, 2, 0]).reshape(vec![
                kvh.into(),
                1.into(),
                hd.into(),
                total.clone(),
            ]);
            let vv = v_used.permute(&[1, 0, 2]).reshape(vec![
                kvh.into(),
                1.into(),
                total.clone(),
                hd.into(),
            ]);
            let mut scores = qg.matmul(&kt) * (1.0 / (hd as f64).sqrt());
            if let Some(h) = &harmonic {
                scores = scores + h;
            }
            let probs = visible
                .select_scalar(&scores, f64::NEG_INFINITY)
                .softmax(-1);
            let o = probs
                .matmul(&vv)
                .permute(&[2, 0, 1, 3])
                .reshape(shape!["seq", nh * hd]);
            let wo = p("self_attn.o_proj.weight", &[h, nh * hd]);
            linear(
                &o,
                &wo,
                bias("self_attn.o_proj", h, cfg.attention_bias).as_ref(),
            )
        };
        x = x + attn;
        let mlp = {
            let _s = b.scope("mlp");
            let f = cfg.intermediate_size;
            let xn = x.rms_norm(&p("post_attention_layernorm.weight", &[h]), eps);
            let gate = linear(
                &xn,
                &p("mlp.gate_proj.weight", &[f, h]),
                bias("mlp.gate_proj", f, cfg.mlp_bias).as_ref(),
            );
            let up = linear(
                &xn,
                &p("mlp.up_proj.weight", &[f, h]),
                bias("mlp.up_proj", f, cfg.mlp_bias).as_ref(),
            );
            linear(
                &(gate.silu() * up),
                &p("mlp.down_proj.weight", &[h, f]),
                bias("mlp.down_proj", h, cfg.mlp_bias).as_ref(),
            )
        };
        x = x + mlp;
    }

    let (logits, last_logits) = lm_head(
        &b,
        &x,
        "model.norm.weight",
        &embed,
        cfg.tie_word_embeddings,
        eps,
    );
    b.output("logits", &logits);
    b.output("last_logits", &last_logits);
    for ((k_name, v_name), k_all, v_all) in &new_caches {
        b.output_alias(k_name, k_all, k_name);
        b.output_alias(v_name, v_all, v_name);
    }
    Ok(b.finish()?)
}

/// Deterministic random weights for `cfg`: projections uniform in
/// ±1/sqrt(fan_in), embeddings in ±1, norm gains 1 ± 0.1, biases ±0.1.
pub fn random_weights(cfg: &LlamaConfig, seed: u64) -> BTreeMap<String, Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    cfg.param_shapes()
        .into_iter()
        .map(|(name, dims)| {
            let n: usize = dims.iter().product();
            let (center, bound) = if name.contains("norm") {
                (1.0, 0.1)
            } else if name.contains("embed_tokens") {
                (0.0, 1.0)
            } else if name.ends_with(".bias") {
                (0.0, 0.1)
            } else {
                (0.0, 1.0 / (dims[1] as f32).sqrt())
            };
            let data = (0..n)
                .map(|_| center + rng.random_range(-bound..bound))
                .collect();
            let t = Tensor::f32(dims, data).expect("data sized from the shape");
            (name, t)
        })
        .collect()
}

/// The built-in `llama-tiny`: byte vocabulary, hidden 64, 4 heads over 2 KV
/// heads, 2 layers, untied head.
pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 256,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        max_position_embeddings: 512,
        rms_norm_eps: 1e-5,
        ..LlamaConfig::default()
    }
}

impl From<LlamaError> for BuildError {
    /// For the model registry, whose builders report [`BuildError`]s.
    fn from(e: LlamaError) -> BuildError {
        match e {
            LlamaError::Build(b) => b,
            other => BuildError {
                message: other.to_string(),
                caller: "kiln_models::llama::build".into(),
                scope: None,
            },
        }
    }
}
