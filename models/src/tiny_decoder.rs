//! A small decoder-only transformer, the built-in model of `kiln run`:
//! token and learned position embeddings, pre-norm blocks of causal
//! multi-head attention and a SwiGLU MLP, RMS norms, an untied LM head.
//! One graph serves every sequence length (`seq` is symbolic).

use kiln_ir::dsl::{BuildError, ModelBuilder, Var};
use kiln_ir::{shape, DType, Graph, Tensor};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Sizes of the tiny decoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TinyDecoderConfig {
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    pub ffn: usize,
    /// Longest sequence the position table covers.
    pub max_positions: usize,
}

impl Default for TinyDecoderConfig {
    /// Byte-level vocabulary, two layers of width 64.
    fn default() -> Self {
        TinyDecoderConfig {
            vocab: 256,
            hidden: 64,
            heads: 4,
            layers: 2,
            ffn: 128,
            max_positions: 512,
        }
    }
}

impl TinyDecoderConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Every weight with its shape.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, f) = (self.hidden, self.ffn);
        let mut out = vec![
            ("embed".to_string(), vec![self.vocab, h]),
            ("pos_embed".to_string(), vec![self.max_positions, h]),
        ];
        for l in 0..self.layers {
            let p = |n: &str| format!("layers.{l}.{n}");
            out.extend([
                (p("attn_norm"), vec![h]),
                (p("wq"), vec![h, h]),
                (p("wk"), vec![h, h]),
                (p("wv"), vec![h, h]),
                (p("wo"), vec![h, h]),
                (p("mlp_norm"), vec![h]),
                (p("w_gate"), vec![h, f]),
                (p("w_up"), vec![h, f]),
                (p("w_down"), vec![f, h]),
            ]);
        }
        out.push(("final_norm".into(), vec![h]));
        out.push(("lm_head".into(), vec![h, self.vocab]));
        out
    }
}

/// The decoder's graph: `tokens: i32[seq]` → `logits: f32[seq, vocab]`.
pub fn build(cfg: &TinyDecoderConfig) -> Result<Graph, BuildError> {
    let b = ModelBuilder::new("tiny_decoder");
    let (h, nh, hd) = (cfg.hidden, cfg.heads, cfg.head_dim());
    let p = |name: &str, dims: Vec<usize>| {
        b.param(
            name,
            DType::F32,
            dims.into_iter().map(kiln_ir::Dim::from).collect(),
        )
    };
    let tokens = b.input("tokens", DType::I32, shape!["seq"]);
    let mut x = {
        let _s = b.scope("embed");
        let positions = b.arange(DType::I32, "seq", 0);
        p("embed", vec![cfg.vocab, h]).gather(&tokens, 0)
            + p("pos_embed", vec![cfg.max_positions, h]).gather(&positions, 0)
    };
    for l in 0..cfg.layers {
        let _layer = b.scope(format!("layers.{l}"));
        let w = |n: &str, dims: Vec<usize>| p(&format!("layers.{l}.{n}"), dims);
        let attn = {
            let _s = b.scope("attn");
            let xn = x.rms_norm(&w("attn_norm", vec![h]), 1e-5);
            // [seq, hidden] -> [heads, seq, head_dim]
            let split = |t: Var| t.reshape(shape!["seq", nh, hd]).permute(&[1, 0, 2]);
            let q = split(xn.matmul(&w("wq", vec![h, h])));
            let k = split(xn.matmul(&w("wk", vec![h, h])));
            let v = split(xn.matmul(&w("wv", vec![h, h])));
            let scores = q.matmul(&k.transpose(-1, -2)) * (1.0 / (hd as f64).sqrt());
            let i = b.iota(DType::I32, shape!["seq", 1], 0);
            let j = b.iota(DType::I32, shape![1, "seq"], 1);
            let probs = j
                .le(&i)
                .select_scalar(&scores, f64::NEG_INFINITY)
                .softmax(-1);
            let o = probs
                .matmul(&v)
                .permute(&[1, 0, 2])
                .reshape(shape!["seq", h]);
            o.matmul(&w("wo", vec![h, h]))
        };
        x = x + attn;
        let mlp = {
            let _s = b.scope("mlp");
            let xn = x.rms_norm(&w("mlp_norm", vec![h]), 1e-5);
            let gate = xn.matmul(&w("w_gate", vec![h, cfg.ffn])).silu();
            let up = xn.matmul(&w("w_up", vec![h, cfg.ffn]));
            (gate * up).matmul(&w("w_down", vec![cfg.ffn, h]))
        };
        x = x + mlp;
    }
    let logits = {
        let _s = b.scope("head");
        x.rms_norm(&p("final_norm", vec![h]), 1e-5)
            .matmul(&p("lm_head", vec![h, cfg.vocab]))
    };
    b.output("logits", &logits);
    b.finish()
}

/// Deterministic random weights: projections uniform in ±1/sqrt(fan_in),
/// embeddings in ±1, norm gains around 1.
pub fn random_weights(cfg: &TinyDecoderConfig, seed: u64) -> BTreeMap<String, Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    cfg.param_shapes()
        .into_iter()
        .map(|(name, dims)| {
            let n: usize = dims.iter().product();
            let data: Vec<f32> = if name.ends_with("norm") {
                (0..n).map(|_| 1.0 + rng.random_range(-0.1..0.1)).collect()
            } else if name.contains("embed") {
                (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
            } else {
                let bound = 1.0 / (dims[0] as f32).sqrt();
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let t = Tensor::f32(dims, data).expect("data sized from the shape");
            (name, t)
        })
        .collect()
}
