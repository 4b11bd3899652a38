//! `config.json`: which architecture a model directory holds.
//!
//! The config is kept as raw JSON ([`ModelConfig::raw`]); the typed config
//! of each architecture (with Hugging Face field names and defaults) lives
//! with its graph builder. This module only decides the architecture: the
//! first entry of `architectures` (what `transformers` instantiates), or,
//! when that list is absent or empty, `model_type`.

use super::error::{join, ConfigError, ConfigProblem, LoadError};
use super::json::kind;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};

/// A model architecture Kiln can build from a Hugging Face checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Architecture {
    /// `LlamaForCausalLM` (`model_type` `llama`).
    Llama,
    /// `MambaForCausalLM` (`model_type` `mamba`).
    Mamba,
}

impl Architecture {
    pub const ALL: [Architecture; 2] = [Architecture::Llama, Architecture::Mamba];

    /// The class name in `architectures`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mamba => "MambaForCausalLM",
        }
    }

    /// The `model_type` value.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mamba => "mamba",
        }
    }

    pub fn from_hf_name(s: &str) -> Option<Architecture> {
        Architecture::ALL.into_iter().find(|a| a.hf_name() == s)
    }

    pub fn from_model_type(s: &str) -> Option<Architecture> {
        Architecture::ALL.into_iter().find(|a| a.model_type() == s)
    }

    /// `LlamaForCausalLM (llama), MambaForCausalLM (mamba)` for messages.
    pub fn supported() -> String {
        join(
            Architecture::ALL
                .iter()
                .map(|a| format!("{} (model_type `{}`)", a.hf_name(), a.model_type())),
        )
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hf_name())
    }
}

/// A parsed `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub path: PathBuf,
    pub architecture: Architecture,
    /// `model_type`, when present.
    pub model_type: Option<String>,
    /// The whole config, for the architecture's typed config to read.
    pub raw: Value,
}

impl ModelConfig {
    /// Reads and parses `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<ModelConfig, LoadError> {
        let path = path.as_ref();
        let text = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(ModelConfig::from_json(path, &text)?)
    }

    /// Parses config JSON; `path` names the file in messages.
    pub fn from_json(path: impl Into<PathBuf>, text: &[u8]) -> Result<ModelConfig, ConfigError> {
        let path = path.into();
        let raw: Value = match serde_json::from_slice(text) {
            Ok(v) => v,
            Err(e) => {
                return Err(ConfigError {
                    file: path,
                    problem: ConfigProblem::NotJson {
                        message: e.to_string(),
                    },
                })
            }
        };
        match architecture_of(&raw) {
            Ok(architecture) => Ok(ModelConfig {
                model_type: raw
                    .get("model_type")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                path,
                architecture,
                raw,
            }),
            Err(problem) => Err(ConfigError {
                file: path,
                problem,
            }),
        }
    }

    /// A config error about this file.
    pub fn error(&self, problem: ConfigProblem) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            problem,
        }
    }
}

/// The architecture a config describes.
pub fn architecture_of(config: &Value) -> Result<Architecture, ConfigProblem> {
    let Value::Object(obj) = config else {
        return Err(ConfigProblem::NotObject);
    };
    let bad = |field: &str, message: String| ConfigProblem::BadField {
        field: field.to_string(),
        message,
    };
    let model_type = match obj.get("model_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(bad(
                "model_type",
                format!("expected a string, found {}", kind(other)),
            ))
        }
    };
    let first = match obj.get("architectures") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => match items.first() {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(other) => {
                return Err(bad(
                    "architectures",
                    format!("expected a list of class names, found {}", kind(other)),
                ))
            }
        },
        Some(other) => {
            return Err(bad(
                "architectures",
                format!("expected a list of class names, found {}", kind(other)),
            ))
        }
    };
    let unknown = |found: String| ConfigProblem::UnknownArchitecture {
        found,
        supported: Architecture::supported(),
    };
    match (first, model_type) {
        (Some(name), mt) => {
            let arch = Architecture::from_hf_name(name).ok_or_else(|| unknown(name.to_string()))?;
            match mt {
                Some(mt) if mt != arch.model_type() => Err(bad(
                    "model_type",
                    format!(
                        "`{mt}` contradicts `architectures` [\"{name}\"] (expected `{}`)",
                        arch.model_type()
                    ),
                )),
                _ => Ok(arch),
            }
        }
        (None, Some(mt)) => {
            Architecture::from_model_type(mt).ok_or_else(|| unknown(format!("model_type `{mt}`")))
        }
        (None, None) => Err(ConfigProblem::NoArchitecture {
            supported: Architecture::supported(),
        }),
    }
}
