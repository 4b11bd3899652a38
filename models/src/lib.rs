//! # kiln-models
//!
//! Models written in Kiln's DSL, and the registry of built-in models the CLI
//! offers (`kiln models`).
//!
//! | module | model |
//! |---|---|
//! | [`tiny_decoder`] | a small decoder-only transformer (the default of `kiln run`) |
//! | [`llama`] | Llama (HF `LlamaForCausalLM` names), GQA, in-place KV cache |
//! | [`mamba`] | Mamba (HF `MambaForCausalLM` names), selective scan as `scan`, in-place conv/SSM state |
//! | [`lion`] | LION-style linear group RNN (window sort, Mamba or RetNet operator per group) |
//! | [`arnet`] | AR-Net: one linear layer over p lags, and an autoregressive forecaster |
//! | [`hf`] | loading Hugging Face directories: safetensors, shards, config, tokenizer |
//! | [`weights`] | the weight store (memory-mapped, lazily converted; a `ParamSource`) |

pub mod arnet;
pub mod hf;
mod layers;
pub mod lion;
pub mod llama;
pub mod mamba;
pub mod tiny_decoder;
pub mod weights;

use kiln_ir::dsl::BuildError;
use kiln_ir::{Graph, Tensor};
use std::collections::BTreeMap;

/// A model the CLI knows by name.
pub struct BuiltinModel {
    pub name: &'static str,
    pub description: &'static str,
    /// Builds the graph.
    pub build: fn() -> Result<Graph, BuildError>,
    /// Deterministic weights for a seed (empty for a shape-only model).
    pub weights: fn(u64) -> BTreeMap<String, Tensor>,
    /// The graph only, no weights (too large to make up): for `kiln inspect`
    /// and compile-time measurements; it cannot run.
    pub shape_only: bool,
}

/// Every built-in model.
pub fn builtin_models() -> Vec<BuiltinModel> {
    vec![
        BuiltinModel {
            name: "tiny-decoder",
            description: "2-layer decoder-only transformer (byte vocabulary, hidden 64, 4 heads, SwiGLU MLP), seeded random weights",
            build: || tiny_decoder::build(&tiny_decoder::TinyDecoderConfig::default()),
            weights: |seed| tiny_decoder::random_weights(&tiny_decoder::TinyDecoderConfig::default(), seed),
            shape_only: false,
        },
        BuiltinModel {
            name: "llama-tiny",
            description: "2-layer Llama (byte vocabulary, hidden 64, 4 heads / 2 KV heads, KV-cache inputs, explicit size `past`), seeded random weights",
            build: || Ok(llama::build(&llama::tiny_config())?),
            weights: |seed| llama::random_weights(&llama::tiny_config(), seed),
            shape_only: false,
        },
        BuiltinModel {
            name: "llama-tiny-harmonic",
            description: "llama-tiny with the RoPE × ALiBi harmonic position bias (-m_h·H(i-j) on the scores), seeded random weights",
            build: || Ok(llama::build(&harmonic_tiny_config())?),
            weights: |seed| llama::random_weights(&harmonic_tiny_config(), seed),
            shape_only: false,
        },
        BuiltinModel {
            name: "mamba-tiny",
            description: "2-layer Mamba (byte vocabulary, hidden 64, state 16, conv 4; conv/SSM state inputs), seeded random weights",
            build: || Ok(mamba::build(&mamba::tiny_config())?),
            weights: |seed| mamba::random_weights(&mamba::tiny_config(), seed),
            shape_only: false,
        },
        BuiltinModel {
            name: "lion-tiny",
            description: "4-layer LION linear group RNN (Mamba operator, width 32, groups of 8, 8x8 windows on a 32x32 grid; features f32[n,32], coords i32[n,2]), seeded random weights",
            build: || Ok(lion::build(&lion::tiny_config())?),
            weights: |seed| lion::random_weights(&lion::tiny_config(), seed),
            shape_only: false,
        },
        BuiltinModel {
            name: "arnet-tiny",
            description: "AR-Net over 8 lags (lags f32[batch,8] -> forecast f32[batch]), seeded random stable coefficients",
            build: || Ok(arnet::build(&arnet::ArNetConfig { lags: 8 })?),
            weights: |seed| arnet::random_weights(&arnet::ArNetConfig { lags: 8 }, seed),
            shape_only: false,
        },
        BuiltinModel {
            name: "llama-7b-shape",
            description: "Llama-7B-shaped graph (32 layers, hidden 4096, 32 heads, intermediate 11008, vocab 32000), no weights: for `kiln inspect` (compile time)",
            build: || Ok(llama::build(&llama_7b_shape())?),
            weights: |_| BTreeMap::new(),
            shape_only: true,
        },
    ]
}

/// `llama-tiny` with the harmonic position bias (the `llama-tiny-harmonic` built-in).
pub fn harmonic_tiny_config() -> llama::LlamaConfig {
    llama::LlamaConfig {
        kiln_harmonic_alibi: true,
        ..llama::tiny_config()
    }
}

/// The shape of Llama 2 7B (the `llama-7b-shape` built-in).
pub fn llama_7b_shape() -> llama::LlamaConfig {
    llama::LlamaConfig {
        vocab_size: 32000,
        hidden_size: 4096,
        intermediate_size: 11008,
        num_hidden_layers: 32,
        num_attention_heads: 32,
        num_key_value_heads: Some(32),
        ..llama::LlamaConfig::default()
    }
}

/// The built-in model called `name`.
pub fn builtin(name: &str) -> Option<BuiltinModel> {
    builtin_models().into_iter().find(|m| m.name == name)
}
