//! Typed errors of the Hugging Face loader. Every error names the file and,
//! where there is one, the tensor, then says what is wrong.

use std::fmt;
use std::path::PathBuf;

/// Anything that can go wrong loading a model directory or its parts.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// An I/O failure reading or writing `path`.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The weights do not match the parameters a graph declares.
    #[error(transparent)]
    Mismatch(#[from] crate::weights::WeightsMismatch),
    /// `path` is not a directory (or does not exist).
    #[error("{}: not a model directory (it does not exist or is not a directory)", path.display())]
    NotADirectory { path: PathBuf },
    /// A required file of the model directory is absent.
    #[error("{}: missing {what}", path.display())]
    MissingFile { path: PathBuf, what: &'static str },
    /// The directory holds no safetensors weights.
    #[error("{}: no safetensors weights (looked for {looked_for}){hint}", dir.display())]
    NoWeights {
        dir: PathBuf,
        looked_for: String,
        /// Extra advice, e.g. that a PyTorch pickle was found instead.
        hint: String,
    },
    /// The same tensor name in two files of one checkpoint.
    #[error("tensor `{tensor}` appears in both {} and {}", first.display(), second.display())]
    DuplicateTensor {
        tensor: String,
        first: PathBuf,
        second: PathBuf,
    },
    /// The architecture's config or graph builder rejected the model.
    #[error("building the {architecture} graph: {source}")]
    Build {
        architecture: super::config::Architecture,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A lookup of a tensor the store does not hold.
    #[error("no tensor named `{0}` in the weights")]
    UnknownTensor(String),
    /// A tensor whose data does not fit its shape, e.g. given to the writer.
    #[error("tensor `{tensor}`: {message}")]
    BadTensor { tensor: String, message: String },
}

/// A malformed or unsupported safetensors file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", file.display())]
pub struct SafetensorsError {
    pub file: PathBuf,
    /// Boxed: the problems carry names, shapes and offsets, and errors
    /// should stay small on the `Ok` path.
    pub problem: Box<SafetensorsProblem>,
}

/// What is wrong with a safetensors file. Offsets are relative to the start
/// of the data section (after the 8-byte length and the header), as in the
/// header's `data_offsets`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetensorsProblem {
    #[error("file is {len} bytes, too short to hold the 8-byte header length")]
    TooShort { len: u64 },
    #[error("header length {header_len} runs past the end of the file ({available} bytes after the length field); the file may be truncated")]
    HeaderPastEnd { header_len: u64, available: u64 },
    #[error("header length {header_len} exceeds the limit of {limit} bytes")]
    HeaderTooLarge { header_len: u64, limit: u64 },
    #[error("header is not valid UTF-8 (invalid byte at header offset {offset})")]
    HeaderNotUtf8 { offset: usize },
    #[error("header is not valid JSON: {message}")]
    HeaderNotJson { message: String },
    #[error("header is not a JSON object mapping tensor names to entries: {message}")]
    HeaderNotObject { message: String },
    #[error("tensor `{tensor}` is listed twice in the header")]
    DuplicateName { tensor: String },
    #[error("`__metadata__` must map strings to strings: {message}")]
    BadMetadata { message: String },
    #[error("tensor `{tensor}`: malformed entry: {message}")]
    BadEntry { tensor: String, message: String },
    #[error("tensor `{tensor}`: unknown dtype `{dtype}` (known: {known})")]
    UnknownDtype {
        tensor: String,
        dtype: String,
        known: String,
    },
    #[error("tensor `{tensor}`: dtype {dtype} is not supported (supported: {supported})")]
    UnsupportedDtype {
        tensor: String,
        dtype: String,
        supported: String,
    },
    #[error("tensor `{tensor}`: shape {shape:?} of {dtype} overflows the address space")]
    ShapeOverflow {
        tensor: String,
        dtype: String,
        shape: Vec<u64>,
    },
    #[error("tensor `{tensor}`: data_offsets [{begin}, {end}] end before they begin")]
    InvertedOffsets {
        tensor: String,
        begin: u64,
        end: u64,
    },
    #[error("tensor `{tensor}`: shape {shape:?} of {dtype} needs {expected} bytes but data_offsets [{begin}, {end}] hold {found}")]
    SizeMismatch {
        tensor: String,
        dtype: String,
        shape: Vec<usize>,
        begin: u64,
        end: u64,
        expected: u64,
        found: u64,
    },
    #[error("tensor `{tensor}`: data_offsets [{begin}, {end}] run past the end of the data section ({data_len} bytes); the file may be truncated")]
    OutOfBounds {
        tensor: String,
        begin: u64,
        end: u64,
        data_len: u64,
    },
    #[error("tensor `{tensor}`: data_offsets [{begin}, {end}] overlap tensor `{other}` [{other_begin}, {other_end}]")]
    Overlap {
        tensor: String,
        begin: u64,
        end: u64,
        other: String,
        other_begin: u64,
        other_end: u64,
    },
    #[error("tensor `{tensor}`: data begins at {begin} but the previous tensor ends at {expected}; the data section has a gap")]
    Gap {
        tensor: String,
        begin: u64,
        expected: u64,
    },
    #[error("{trailing} bytes after the last tensor's data (data section is {data_len} bytes, tensors cover {covered})")]
    TrailingBytes {
        trailing: u64,
        data_len: u64,
        covered: u64,
    },
}

/// A malformed sharded-checkpoint index (`model.safetensors.index.json`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", file.display())]
pub struct IndexError {
    pub file: PathBuf,
    pub problem: IndexProblem,
}

/// What is wrong with a sharded-checkpoint index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexProblem {
    #[error("not valid JSON: {message}")]
    NotJson { message: String },
    #[error("malformed index: {message}")]
    Malformed { message: String },
    #[error("`weight_map` lists no tensors")]
    Empty,
    #[error("tensor `{tensor}`: shard name `{shard}` is not a plain relative path inside the model directory (absolute paths and `..` are rejected)")]
    UnsafeShardName { tensor: String, shard: String },
    #[error("shard `{shard}` (holding {count} indexed tensors, e.g. `{tensor}`) does not exist")]
    MissingShard {
        shard: String,
        count: usize,
        tensor: String,
    },
    #[error("tensor `{tensor}` is indexed in shard `{shard}` but that shard does not contain it")]
    MissingFromShard { tensor: String, shard: String },
}

/// A malformed or unsupported `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    pub problem: ConfigProblem,
}

/// What is wrong with a model config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    #[error("not valid JSON: {message}")]
    NotJson { message: String },
    #[error("the config is not a JSON object")]
    NotObject,
    #[error("neither `architectures` nor `model_type` says which model this is (supported: {supported})")]
    NoArchitecture { supported: String },
    #[error("unsupported architecture `{found}` (supported: {supported})")]
    UnknownArchitecture { found: String, supported: String },
    #[error("field `{field}`: {message}")]
    BadField { field: String, message: String },
}

/// A tokenizer that could not be loaded or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerError {
    #[error("{}: tokenizer file not found", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: malformed tokenizer: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
    #[error("{}: not valid JSON: {message}", path.display())]
    NotJson { path: PathBuf, message: String },
    #[error("{}: malformed special-token field `{field}`: {message}", path.display())]
    BadSpecialToken {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("encoding failed: {message}")]
    Encode { message: String },
    #[error("decoding failed: {message}")]
    Decode { message: String },
    #[error("token id {id} is not in the vocabulary (size {vocab_size})")]
    UnknownTokenId { id: u32, vocab_size: usize },
}

/// Joins names for messages: `a, b, c`.
pub(crate) fn join<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
