//! A store of named weight tensors: memory-mapped safetensors (one file or a
//! sharded checkpoint) and/or in-memory tensors.
//!
//! A mapped tensor is converted to an owned f32 (or integer) [`Tensor`] on
//! its first access and kept, so [`ParamSource::param`] can hand out
//! `&Tensor` while tensors the graph never reads are never converted. The
//! store is `Send + Sync`; concurrent first accesses convert once.
//!
//! [`Weights::check_against`] compares the store with a graph's parameters
//! and reports every problem at once.

use crate::hf::dtype::Dtype;
use crate::hf::error::{IndexProblem, LoadError};
use crate::hf::index::ShardIndex;
use crate::hf::safetensors::SafetensorsFile;
use kiln_ir::interp::ParamSource;
use kiln_ir::{Bindings, DType, Dim, Tensor, TensorType};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    /// The mapped file holding the stored bytes; `None` for in-memory tensors.
    file: Option<Arc<SafetensorsFile>>,
    loaded: OnceLock<Tensor>,
}

/// Named weights; see the module docs.
#[derive(Default)]
pub struct Weights {
    entries: BTreeMap<String, Entry>,
    /// Extra names for stored tensors (e.g. a tied LM head), alias → name.
    aliases: BTreeMap<String, String>,
}

impl fmt::Debug for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Weights")
            .field("tensors", &self.entries.len())
            .field("aliases", &self.aliases)
            .finish()
    }
}

impl Weights {
    /// In-memory weights, kept as they are (no conversion).
    pub fn from_tensors(tensors: BTreeMap<String, Tensor>) -> Weights {
        let mut w = Weights::default();
        for (name, t) in tensors {
            w.insert(name, t);
        }
        w
    }

    /// Memory-maps one safetensors file.
    pub fn open(path: impl AsRef<Path>) -> Result<Weights, LoadError> {
        let mut w = Weights::default();
        w.add_file(Arc::new(SafetensorsFile::open(path)?))?;
        Ok(w)
    }

    /// Memory-maps every shard of a sharded checkpoint, given its index
    /// (`model.safetensors.index.json`). Every indexed tensor must be in the
    /// shard the index names; tensors a shard holds beyond the index are
    /// loaded too, and a name in two shards is an error.
    pub fn open_sharded(index_path: impl AsRef<Path>) -> Result<Weights, LoadError> {
        let index = ShardIndex::read(index_path)?;
        let mut w = Weights::default();
        for (shard, tensors) in index.shards() {
            let path = index.dir().join(shard);
            if !path.exists() {
                return Err(index
                    .error(IndexProblem::MissingShard {
                        shard: shard.to_string(),
                        count: tensors.len(),
                        tensor: tensors.first().map(|t| t.to_string()).unwrap_or_default(),
                    })
                    .into());
            }
            let file = SafetensorsFile::open(&path)?;
            if let Some(t) = tensors.iter().find(|t| file.info(t).is_none()) {
                return Err(index
                    .error(IndexProblem::MissingFromShard {
                        tensor: t.to_string(),
                        shard: shard.to_string(),
                    })
                    .into());
            }
            w.add_file(Arc::new(file))?;
        }
        Ok(w)
    }

    /// Adds every tensor of an open file; a name already present is an error.
    pub fn add_file(&mut self, file: Arc<SafetensorsFile>) -> Result<(), LoadError> {
        for (name, info) in file.tensors() {
            if let Some(prev) = self.entries.get(name) {
                return Err(LoadError::DuplicateTensor {
                    tensor: name.clone(),
                    first: prev
                        .file
                        .as_ref()
                        .map(|f| f.path().to_path_buf())
                        .unwrap_or_else(|| "<memory>".into()),
                    second: file.path().to_path_buf(),
                });
            }
            self.entries.insert(
                name.clone(),
                Entry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    file: Some(file.clone()),
                    loaded: OnceLock::new(),
                },
            );
        }
        Ok(())
    }

    /// Adds or replaces an in-memory tensor (removing an alias of that name).
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        let name = name.into();
        self.aliases.remove(&name);
        let loaded = OnceLock::new();
        let entry = Entry {
            dtype: Dtype::of_data(&tensor.data),
            shape: tensor.shape.clone(),
            file: None,
            loaded,
        };
        let _ = entry.loaded.set(tensor);
        self.entries.insert(name, entry);
    }

    /// Makes `alias` another name for the stored tensor `target` (e.g. a tied
    /// `lm_head.weight` for `model.embed_tokens.weight`).
    pub fn alias(
        &mut self,
        alias: impl Into<String>,
        target: impl Into<String>,
    ) -> Result<(), LoadError> {
        let target = target.into();
        let target = self
            .resolve(&target)
            .map(str::to_string)
            .ok_or(LoadError::UnknownTensor(target))?;
        let alias = alias.into();
        if alias != target && self.entries.contains_key(&alias) {
            return Err(LoadError::BadTensor {
                tensor: alias,
                message: format!("cannot alias it to `{target}`: it names a stored tensor"),
            });
        }
        if alias != target {
            self.aliases.insert(alias, target);
        }
        Ok(())
    }

    fn resolve<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        if self.entries.contains_key(name) {
            return Some(name);
        }
        self.aliases.get(name).map(String::as_str)
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.get(self.resolve(name)?)
    }

    /// Stored tensor names, sorted (aliases excluded).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Alias → stored name.
    pub fn aliases(&self) -> &BTreeMap<String, String> {
        &self.aliases
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True for a stored name or an alias.
    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entry(name).map(|e| e.shape.as_slice())
    }

    /// The dtype as stored (in the file, or of the in-memory data).
    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        self.entry(name).map(|e| e.dtype)
    }

    /// The dtype the tensor has once loaded: f32 for every mapped float
    /// type; an in-memory tensor keeps its own.
    pub fn loaded_dtype(&self, name: &str) -> Option<DType> {
        let e = self.entry(name)?;
        Some(match (&e.file, e.loaded.get()) {
            (None, Some(t)) => t.dtype(),
            _ => e.dtype.loaded(),
        })
    }

    /// The file a mapped tensor comes from.
    pub fn file(&self, name: &str) -> Option<&Path> {
        self.entry(name)?.file.as_ref().map(|f| f.path())
    }

    /// The stored little-endian bytes of a mapped tensor (no conversion),
    /// e.g. to upload bf16 weights as they are.
    pub fn stored_bytes(&self, name: &str) -> Option<&[u8]> {
        let stored = self.resolve(name)?;
        self.entries.get(stored)?.file.as_ref()?.bytes(stored)
    }

    /// The tensor `name`, converting it on first access.
    pub fn get(&self, name: &str) -> Result<&Tensor, LoadError> {
        let stored = self
            .resolve(name)
            .ok_or_else(|| LoadError::UnknownTensor(name.to_string()))?;
        let e = &self.entries[stored];
        if let Some(t) = e.loaded.get() {
            return Ok(t);
        }
        let file = e
            .file
            .as_ref()
            .ok_or_else(|| LoadError::UnknownTensor(name.to_string()))?;
        // Validation proved the range and size; a failure here is a bug, but
        // it is reported rather than panicking.
        let t = file.tensor(stored).ok_or_else(|| LoadError::BadTensor {
            tensor: stored.to_string(),
            message: format!("could not convert its data in {}", file.path().display()),
        })?;
        Ok(e.loaded.get_or_init(|| t))
    }

    /// Every stored tensor, converted and cloned.
    pub fn to_tensors(&self) -> Result<BTreeMap<String, Tensor>, LoadError> {
        self.names()
            .map(|n| Ok((n.to_string(), self.get(n)?.clone())))
            .collect()
    }

    /// Checks the store against a graph's parameters (`graph.params()`):
    /// every parameter present with its declared shape (symbolic dims must
    /// bind consistently across parameters) and loaded dtype. Reports every
    /// problem at once; tensors the graph does not use are a warning in the
    /// returned report (and listed in the error, for context).
    pub fn check_against(
        &self,
        params: &BTreeMap<String, TensorType>,
    ) -> Result<CheckReport, LoadError> {
        let mut missing = Vec::new();
        let mut wrong = Vec::new();
        let mut used = BTreeSet::new();
        let mut present = Vec::new();
        for (name, ty) in params {
            match self.resolve(name) {
                Some(stored) => {
                    used.insert(stored.to_string());
                    present.push((name, ty, &self.entries[stored]));
                }
                None => missing.push((name.clone(), ty.clone())),
            }
        }
        let (bindings, bound_by) = vote_symbols(
            present
                .iter()
                .map(|(n, ty, e)| (n.as_str(), *ty, e.shape.as_slice())),
        );
        for (name, ty, e) in present {
            let dtype = self.loaded_dtype(name).unwrap_or(e.dtype.loaded());
            let shape = match_shape(&ty.shape, &e.shape, &bindings);
            if shape.is_ok() && dtype == ty.dtype {
                continue;
            }
            let note = match &shape {
                Err(sym) if !sym.is_empty() => bindings.get(sym).map(|value| {
                    let from = bound_by
                        .get(sym)
                        .map(|p| format!(" by `{p}`"))
                        .unwrap_or_default();
                    format!("`{sym}` was bound to {value}{from}")
                }),
                _ => None,
            };
            wrong.push(WrongTensor {
                name: name.clone(),
                expected: ty.clone(),
                found_shape: e.shape.clone(),
                shape_matches: shape.is_ok(),
                found_dtype: dtype,
                stored: e.dtype,
                note,
            });
        }
        let unused: Vec<String> = self
            .entries
            .keys()
            .filter(|n| !used.contains(*n))
            .cloned()
            .collect();
        if missing.is_empty() && wrong.is_empty() {
            Ok(CheckReport { unused })
        } else {
            Err(WeightsMismatch {
                missing,
                wrong,
                unused,
            }
            .into())
        }
    }
}

/// Values for the size symbols of parameter shapes: each symbol that is a
/// whole dim takes the value most parameters agree on (ties: the first
/// parameter by name), so a conflict blames the odd one out. Returns the
/// bindings and, per symbol, the first parameter that gave its value.
fn vote_symbols<'a>(
    params: impl Iterator<Item = (&'a str, &'a TensorType, &'a [usize])>,
) -> (Bindings, BTreeMap<String, String>) {
    // symbol -> value -> parameters giving it, in name order
    let mut votes: BTreeMap<&str, BTreeMap<i64, Vec<&str>>> = BTreeMap::new();
    for (name, ty, found) in params {
        if ty.shape.len() != found.len() {
            continue;
        }
        for (d, &n) in ty.shape.iter().zip(found) {
            if let (Some(sym), Ok(n)) = (d.as_sym(), i64::try_from(n)) {
                let voters = votes.entry(sym).or_default().entry(n).or_default();
                if voters.last() != Some(&name) {
                    voters.push(name);
                }
            }
        }
    }
    let mut bindings = Bindings::new();
    let mut bound_by = BTreeMap::new();
    for (sym, values) in votes {
        let best = values
            .iter()
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.1[0].cmp(a.1[0])));
        if let Some((&value, voters)) = best {
            bindings.insert(sym.to_string(), value);
            bound_by.insert(sym.to_string(), voters[0].to_string());
        }
    }
    (bindings, bound_by)
}

/// Matches a declared shape against a stored one under fixed bindings
/// (dims whose symbols are unbound are not checked). On a mismatch, the
/// symbol at fault, or an empty string when a constant or the rank differs.
fn match_shape(declared: &[Dim], found: &[usize], bindings: &Bindings) -> Result<(), String> {
    if declared.len() != found.len() {
        return Err(String::new());
    }
    for (d, &n) in declared.iter().zip(found) {
        match (d.eval(bindings), i64::try_from(n)) {
            (Ok(v), Ok(n)) if v == n => {}
            (Ok(_), _) => {
                return Err(d
                    .symbols()
                    .first()
                    .map(|s| s.to_string())
                    .unwrap_or_default())
            }
            // An expression over symbols no dim binds cannot be checked.
            (Err(_), _) => {}
        }
    }
    Ok(())
}

/// What [`Weights::check_against`] found acceptable but worth a warning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Stored tensors no parameter uses, sorted.
    pub unused: Vec<String>,
}

/// A parameter whose stored tensor has the wrong shape or dtype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrongTensor {
    pub name: String,
    pub expected: TensorType,
    pub found_shape: Vec<usize>,
    pub shape_matches: bool,
    /// The dtype the tensor loads as.
    pub found_dtype: DType,
    /// The dtype in the file.
    pub stored: Dtype,
    /// For a symbolic dim, where its size came from.
    pub note: Option<String>,
}

impl fmt::Display for WrongTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape_ok = self.shape_matches;
        let dtype_ok = self.expected.dtype == self.found_dtype;
        let found = format!("{:?}", self.found_shape);
        let expected = format!("{:?}", self.expected.shape);
        match (shape_ok, dtype_ok) {
            (false, true) => write!(f, "{}: expected {expected}, found {found}", self.name)?,
            (true, false) => write!(
                f,
                "{}: expected dtype {}, found {} (stored as {})",
                self.name, self.expected.dtype, self.found_dtype, self.stored
            )?,
            _ => write!(
                f,
                "{}: expected {}{expected}, found {}{found} (stored as {})",
                self.name, self.expected.dtype, self.found_dtype, self.stored
            )?,
        }
        if let Some(note) = &self.note {
            write!(f, " ({note})")?;
        }
        Ok(())
    }
}

/// Every way the weights fail to match a graph's parameters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct WeightsMismatch {
    /// Parameters with no tensor, with their declared types.
    pub missing: Vec<(String, TensorType)>,
    pub wrong: Vec<WrongTensor>,
    /// Stored tensors no parameter uses (context, not a problem by itself).
    pub unused: Vec<String>,
}

impl fmt::Display for WeightsMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the weights do not match the graph's parameters ({} missing, {} with the wrong shape or dtype)",
            self.missing.len(),
            self.wrong.len()
        )?;
        for (name, ty) in &self.missing {
            write!(f, "\n  {name}: missing (expected {ty})")?;
        }
        for w in &self.wrong {
            write!(f, "\n  {w}")?;
        }
        if !self.unused.is_empty() {
            const SHOWN: usize = 10;
            let shown: Vec<&str> = self.unused.iter().take(SHOWN).map(String::as_str).collect();
            let more = self.unused.len().saturating_sub(SHOWN);
            write!(f, "\n  unused tensors in the weights: {}", shown.join(", "))?;
            if more > 0 {
                write!(f, " and {more} more")?;
            }
        }
        Ok(())
    }
}

impl ParamSource for Weights {
    fn param(&self, name: &str) -> Option<&Tensor> {
        self.get(name).ok()
    }

    /// Drops the mapped pages of `name` (see [`SafetensorsFile::release`]).
    fn release(&self, name: &str) {
        if let Some(stored) = self.resolve(name) {
            if let Some(file) = &self.entries[stored].file {
                file.release(stored);
            }
        }
    }

    /// The mapped bytes themselves when the stored type loads unchanged
    /// (f32 and the integer types), or is the f16/bf16 the buffer is
    /// `declared` as (an artifact compiled with `--weights` stores its
    /// matrices so; otherwise a mapped half is widened to f32): no converted
    /// tensor is made or kept.
    fn param_bytes(&self, name: &str, declared: DType) -> Option<kiln_ir::interp::ParamBytes<'_>> {
        let stored = self.resolve(name)?;
        let e = &self.entries[stored];
        let as_declared = matches!(
            (e.dtype, declared),
            (Dtype::F16, DType::F16) | (Dtype::BF16, DType::BF16)
        );
        let unchanged = matches!(
            e.dtype,
            Dtype::F32 | Dtype::I32 | Dtype::I64 | Dtype::U8 | Dtype::I8
        );
        match (&e.file, e.loaded.get()) {
            (Some(file), loaded) if as_declared || (unchanged && loaded.is_none()) => {
                Some(kiln_ir::interp::ParamBytes {
                    dtype: if as_declared {
                        declared
                    } else {
                        e.dtype.loaded()
                    },
                    shape: e.shape.clone(),
                    bytes: std::borrow::Cow::Borrowed(file.bytes(stored)?),
                })
            }
            _ => {
                let t = self.get(name).ok()?;
                Some(kiln_ir::interp::ParamBytes {
                    dtype: t.dtype(),
                    shape: t.shape.clone(),
                    bytes: std::borrow::Cow::Owned(t.to_bytes()),
                })
            }
        }
    }
}
