//! Loading Hugging Face model directories: `config.json`, safetensors
//! weights (one file or sharded), `tokenizer.json`.
//!
//! | module | what it holds |
//! |---|---|
//! | [`safetensors`] | the validating, memory-mapping safetensors reader |
//! | [`writer`] | the safetensors writer |
//! | [`dtype`] | safetensors dtypes and their conversion to Kiln tensors |
//! | [`index`] | sharded checkpoints (`model.safetensors.index.json`) |
//! | [`config`] | `config.json` and the architecture it names |
//! | `build` | [`build_graph`]: architecture + config → graph, by the model's builder |
//! | [`tokenizer`] | tokenizers, BOS/EOS ids, streaming decode |
//! | [`error`] | the typed errors |
//!
//! The weight store itself is [`crate::weights::Weights`].

mod build;
pub mod config;
pub mod dtype;
pub mod error;
pub mod index;
mod json;
pub mod safetensors;
mod special;
pub mod tokenizer;
pub mod writer;

pub use build::build_graph;
pub use config::{Architecture, ModelConfig};
pub use dtype::Dtype;
pub use error::{
    ConfigError, ConfigProblem, IndexError, IndexProblem, LoadError, SafetensorsError,
    SafetensorsProblem, TokenizerError,
};
pub use index::ShardIndex;
pub use safetensors::SafetensorsFile;
pub use tokenizer::{StreamDecoder, Tokenizer};
pub use writer::{save_safetensors, save_safetensors_with_metadata, serialize_safetensors};

use crate::weights::Weights;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A loaded model directory.
#[derive(Debug)]
pub struct HfModel {
    pub dir: PathBuf,
    pub architecture: Architecture,
    /// `config.json` as parsed JSON, for the architecture's typed config.
    pub config: Value,
    pub weights: Weights,
    /// `tokenizer.json`, when the directory has one.
    pub tokenizer: Option<Tokenizer>,
    /// BOS id from `generation_config.json`, `config.json`, or the tokenizer.
    pub bos_token_id: Option<u32>,
    /// The ids that end generation, from the same sources (may be several).
    pub eos_token_ids: Vec<u32>,
}

impl HfModel {
    /// The model's graph, built by its architecture's builder from the
    /// config ([`build_graph`]).
    pub fn build_graph(&self) -> Result<kiln_ir::Graph, LoadError> {
        build_graph(self.architecture, &self.config)
    }

    /// Checks the weights against a graph's parameters
    /// ([`Weights::check_against`]).
    pub fn check(&self, graph: &kiln_ir::Graph) -> Result<crate::weights::CheckReport, LoadError> {
        self.weights.check_against(&graph.params())
    }
}

/// Loads a model directory: `config.json` (required; its architecture must
/// be supported), the weights (`model.safetensors.index.json` and its
/// shards, else `model.safetensors`) and `tokenizer.json` if present (a
/// present but malformed tokenizer is an error, not skipped).
pub fn load_dir(dir: impl AsRef<Path>) -> Result<HfModel, LoadError> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(LoadError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let config_path = dir.join("config.json");
    if !config_path.exists() {
        return Err(LoadError::MissingFile {
            path: config_path,
            what: "the model config (config.json)",
        });
    }
    let config = ModelConfig::read(&config_path)?;
    let weights = load_weights(dir)?;
    let (tokenizer, ids) = if dir.join("tokenizer.json").exists() {
        let t = Tokenizer::from_dir(dir)?;
        let ids = special::SpecialIds {
            bos: t.bos_token_id(),
            eos: t.eos_token_ids().to_vec(),
        };
        (Some(t), ids)
    } else {
        // Without a tokenizer, the configs alone say which ids are special.
        let mut ids = special::SpecialIds::default();
        for file in ["generation_config.json", "config.json"] {
            let path = dir.join(file);
            if let Some(json) = special::read_json(&path)? {
                ids = ids.or(special::from_id_fields(&path, &json)?);
            }
        }
        (None, ids)
    };
    Ok(HfModel {
        dir: dir.to_path_buf(),
        architecture: config.architecture,
        config: config.raw,
        weights,
        tokenizer,
        bos_token_id: ids.bos,
        eos_token_ids: ids.eos,
    })
}

/// The weights of a model directory: the sharded index if there is one,
/// else `model.safetensors`.
pub fn load_weights(dir: impl AsRef<Path>) -> Result<Weights, LoadError> {
    let dir = dir.as_ref();
    let index = dir.join(index::INDEX_FILE);
    if index.exists() {
        return Weights::open_sharded(index);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Weights::open(single);
    }
    let pickles = ["pytorch_model.bin", "pytorch_model.bin.index.json"];
    let hint = match pickles.iter().find(|p| dir.join(p).exists()) {
        Some(p) => format!(
            "; found {p}, a PyTorch pickle, which is not loaded (convert it to safetensors)"
        ),
        None => String::new(),
    };
    Err(LoadError::NoWeights {
        dir: dir.to_path_buf(),
        looked_for: format!("{}, model.safetensors", index::INDEX_FILE),
        hint,
    })
}
