//! Sharded checkpoints: `model.safetensors.index.json`, whose `weight_map`
//! maps each tensor name to the shard file (next to the index) holding it.
//!
//! Shard names must be plain relative paths: an absolute path, a drive
//! prefix or a `..` component is rejected before any file is opened, so an
//! index cannot make the loader read outside the model directory. (Symbolic
//! links inside the directory are followed: the Hugging Face cache is made
//! of them.)

use super::error::{IndexError, IndexProblem, LoadError};
use super::json::{kind, OrderedEntries};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The file name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A validated shard index.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardIndex {
    /// The index file.
    pub path: PathBuf,
    /// Tensor name → shard file name (relative to the index's directory).
    pub weight_map: BTreeMap<String, String>,
    /// The index's `metadata` object (e.g. `total_size`), `Null` when absent.
    pub metadata: Value,
}

#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    metadata: Value,
    weight_map: Option<OrderedEntries>,
}

impl ShardIndex {
    /// Reads and validates the index at `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<ShardIndex, LoadError> {
        let path = path.as_ref();
        let text = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(ShardIndex::from_json(path, &text)?)
    }

    /// Validates index JSON; `path` names the file in messages and its
    /// directory is where the shards are looked for.
    pub fn from_json(path: impl Into<PathBuf>, text: &[u8]) -> Result<ShardIndex, IndexError> {
        let path = path.into();
        let err = |problem| IndexError {
            file: path.clone(),
            problem,
        };
        let raw: RawIndex = serde_json::from_slice(text).map_err(|e| {
            err(match e.classify() {
                serde_json::error::Category::Data => IndexProblem::Malformed {
                    message: e.to_string(),
                },
                _ => IndexProblem::NotJson {
                    message: e.to_string(),
                },
            })
        })?;
        let entries = raw.weight_map.ok_or_else(|| {
            err(IndexProblem::Malformed {
                message: "missing `weight_map`".into(),
            })
        })?;
        if let Some(dup) = entries.first_duplicate() {
            return Err(err(IndexProblem::Malformed {
                message: format!("tensor `{dup}` is listed twice in `weight_map`"),
            }));
        }
        let mut weight_map = BTreeMap::new();
        for (tensor, shard) in entries.0 {
            let Value::String(shard) = shard else {
                return Err(err(IndexProblem::Malformed {
                    message: format!(
                        "`weight_map` entry `{tensor}` must name a shard file, found {}",
                        kind(&shard)
                    ),
                }));
            };
            if !is_plain_relative(&shard) {
                return Err(err(IndexProblem::UnsafeShardName { tensor, shard }));
            }
            weight_map.insert(tensor, shard);
        }
        if weight_map.is_empty() {
            return Err(err(IndexProblem::Empty));
        }
        Ok(ShardIndex {
            path,
            weight_map,
            metadata: raw.metadata,
        })
    }

    /// The directory the shards live in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Shard file name → the tensors the index places in it, both sorted.
    pub fn shards(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (tensor, shard) in &self.weight_map {
            out.entry(shard.as_str()).or_default().push(tensor.as_str());
        }
        out
    }

    pub(crate) fn error(&self, problem: IndexProblem) -> IndexError {
        IndexError {
            file: self.path.clone(),
            problem,
        }
    }
}

/// True for a non-empty relative path made only of normal components (and
/// `.`), in either separator style.
pub fn is_plain_relative(name: &str) -> bool {
    if name.is_empty() || name.starts_with(['/', '\\']) || name.contains('\0') {
        return false;
    }
    // Backslashes are separators on Windows; treat them so everywhere so that
    // `..\x` is rejected on every host.
    let unified = name.replace('\\', "/");
    let mut normal = false;
    for c in Path::new(&unified).components() {
        match c {
            Component::Normal(_) => normal = true,
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    // `C:x` style drive prefixes only parse as prefixes on Windows.
    let drive = unified.as_bytes().get(1) == Some(&b':');
    normal && !drive
}
