//! `generation.json`: what turning text into tokens and back needs, beside
//! the plan (which has no notion of text).

use crate::sampler::SamplingConfig;
use serde::{Deserialize, Serialize};

/// How the model's text is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// `tokenizer.json` (a Hugging Face tokenizer) is in the artifact.
    Hf,
    /// Bytes are tokens (Kiln's byte-vocabulary built-ins).
    Bytes,
    /// No text: token ids only.
    None,
}

/// Sampling defaults (`generation_config.json`'s, greedy when it had none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingDefaults {
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
}

impl From<&SamplingConfig> for SamplingDefaults {
    fn from(s: &SamplingConfig) -> Self {
        SamplingDefaults {
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
        }
    }
}

impl SamplingDefaults {
    pub fn to_config(&self, seed: u64) -> SamplingConfig {
        SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationInfo {
    pub codec: Codec,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The longest sequence the model supports (the default KV-cache capacity).
    pub max_context: Option<usize>,
    pub sampling: SamplingDefaults,
}
