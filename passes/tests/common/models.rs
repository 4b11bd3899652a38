//! Transformer-shaped test graphs written with the DSL: embeddings, RMS or
//! layer norm, causal attention over a KV cache (iota/compare/select mask,
//! softmax), SwiGLU MLP, residuals; caches are inputs, the grown caches outputs.
#![allow(dead_code)]

use kiln_ir::dsl::{ModelBuilder, Var};
use kiln_ir::{shape, DType, Graph};

/// Sizes and spellings of a test decoder.
#[derive(Clone, Debug)]
pub struct Decoder {
    pub layers: usize,
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub ffn: usize,
    /// Layer norm (with bias) instead of RMS norm.
    pub layer_norm: bool,
    /// Mask with a large negative constant instead of `-inf`.
    pub mask_large_negative: bool,
    /// Scale the queries instead of the scores.
    pub scale_queries: bool,
    /// Read and extend a KV cache (`past` positions).
    pub kv_cache: bool,
    /// Write it the way a naive exporter would: `pow(x, 2)`, division by
    /// `sqrt`, division by constants, double transposes, `* 1`, `+ 0`,
    /// identity casts — what canonicalization must clean up.
    pub naive: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            layers: 2,
            vocab: 32,
            hidden: 16,
            heads: 2,
            ffn: 24,
            layer_norm: false,
            mask_large_negative: false,
            scale_queries: false,
            kv_cache: true,
            naive: false,
        }
    }
}

impl Decoder {
    pub fn build(&self) -> Graph {
        let b = ModelBuilder::new("decoder");
        let (h, nh) = (self.hidden, self.heads);
        let hd = h / nh;
        let p = |name: &str, dims: Vec<usize>| {
            b.param(
                name,
                DType::F32,
                dims.into_iter().map(kiln_ir::Dim::from).collect(),
            )
        };
        let tokens = b.input("tokens", DType::I32, shape!["seq"]);
        let naive = self.naive;
        let norm = |x: &Var, name: &str| -> Var {
            if naive && !self.layer_norm {
                let ms = x.powf(2.0).mean(&[-1], true) + 1e-5;
                return (x / ms.sqrt()) * p(name, vec![h]);
            }
            if self.layer_norm {
                x.layer_norm(
                    &p(&format!("{name}.g"), vec![h]),
                    &p(&format!("{name}.b"), vec![h]),
                    1e-5,
                )
            } else {
                x.rms_norm(&p(name, vec![h]), 1e-5)
            }
        };
        let mut x = {
            let _s = b.scope("embed");
            p("embed", vec![self.vocab, h]).gather(&tokens, 0)
        };
        let mut caches = Vec::new();
        for l in 0..self.layers {
            let _layer = b.scope(format!("layers.{l}"));
            let w = |n: &str, dims: Vec<usize>| p(&format!("layers.{l}.{n}"), dims);
            let attn = {
                let _s = b.scope("attn");
                let xn = norm(&x, &format!("layers.{l}.attn_norm"));
                let split = |t: Var| t.reshape(shape!["seq", nh, hd]).permute(&[1, 0, 2]);
                let q = split(xn.matmul(&w("wq", vec![h, h])));
                let mut k = split(xn.matmul(&w("wk", vec![h, h])));
                let mut v = split(xn.matmul(&w("wv", vec![h, h])));
                let (kv_len, offset) = if self.kv_cache {
                    let kc = b.input(&format!("k_cache_{l}"), DType::F32, shape![nh, "past", hd]);
                    let vc = b.input(&format!("v_cache_{l}"), DType::F32, shape![nh, "past", hd]);
                    k = kc.concat(&[&k], 1);
                    v = vc.concat(&[&v], 1);
                    caches.push((format!("k_cache_{l}"), k.clone()));
                    caches.push((format!("v_cache_{l}"), v.clone()));
                    ("past+seq", "past")
                } else {
                    ("seq", "0")
                };
                let scale = 1.0 / (hd as f64).sqrt();
                let scores = if naive {
                    let kt = k.transpose(0, 1).transpose(0, 1).transpose(-1, -2);
                    (q.cast(DType::F32) * 1.0).matmul(&kt) / (hd as f64).sqrt()
                } else if self.scale_queries {
                    (q * scale).matmul(&k.transpose(-1, -2))
                } else {
                    q.matmul(&k.transpose(-1, -2)) * scale
                };
                // Query i sits at absolute position offset+i and sees keys j <= offset+i.
                let pos = b
                    .arange(DType::I32, "seq", offset)
                    .reshape(shape!["seq", 1]);
                let j = b.iota(DType::I32, shape![1, kv_len], 1);
                let fill = if self.mask_large_negative {
                    -1e9
                } else {
                    f64::NEG_INFINITY
                };
                let probs = j.le(&pos).select_scalar(&scores, fill).softmax(-1);
                let o = probs
                    .matmul(&v)
                    .permute(&[1, 0, 2])
                    .reshape(shape!["seq", h]);
                o.matmul(&w("wo", vec![h, h]))
            };
            x = if naive { (x + attn) + 0.0 } else { x + attn };
            let mlp = {
                let _s = b.scope("mlp");
                let xn = norm(&x, &format!("layers.{l}.mlp_norm"));
                let gate = xn.matmul(&w("w_gate", vec![h, self.ffn])).silu();
                let up = xn.matmul(&w("w_up", vec![h, self.ffn]));
                (gate * up).matmul(&w("w_down", vec![self.ffn, h]))
            };
            x = x + mlp;
        }
        let logits = {
            let _s = b.scope("head");
            norm(&x, "final_norm").matmul(&p("lm_head", vec![h, self.vocab]))
        };
        b.output("logits", &logits);
        for (name, c) in &caches {
            b.output(&format!("{name}_out"), c);
        }
        b.finish().expect("the test decoder builds")
    }
}
