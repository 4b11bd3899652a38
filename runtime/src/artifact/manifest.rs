//! `manifest.json`: what an artifact was built for and from, and a sha256
//! of every other file in it. The manifest is what loading checks first.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The layout version of artifact directories this runtime reads.
pub const FORMAT_VERSION: u32 = 1;

/// The Kiln version that built (and that may run) an artifact.
pub const KILN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The machine the kernels were compiled for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetSpec {
    /// Host code in a shared library, for `triple` on a `cpu` with
    /// `features` (LLVM's `+feature,-feature` list).
    Cpu {
        triple: String,
        cpu: String,
        features: String,
    },
    /// PTX for an NVIDIA GPU of compute capability `arch` (`sm_90`) or newer.
    Cuda { arch: String },
}

impl TargetSpec {
    /// `cpu` or `cuda`.
    pub fn kind(&self) -> &'static str {
        match self {
            TargetSpec::Cpu { .. } => "cpu",
            TargetSpec::Cuda { .. } => "cuda",
        }
    }
}

impl std::fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSpec::Cpu { triple, cpu, .. } => write!(f, "cpu ({triple}, {cpu})"),
            TargetSpec::Cuda { arch } => write!(f, "cuda ({arch})"),
        }
    }
}

/// One file of the artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub kiln_version: String,
    pub target: TargetSpec,
    /// The LLVM that generated the kernels (`22.1.0`).
    pub llvm_version: String,
    /// The model it was compiled from, as given to `kiln compile`.
    pub model: String,
    /// The compile options that change what runs (attention, KV cache,
    /// optimizer target), as their command-line text.
    pub options: BTreeMap<String, String>,
    /// Every other file of the artifact by name (relative path).
    pub files: BTreeMap<String, FileEntry>,
}

/// The sha256 of a file and its length, streamed.
pub fn hash_file(path: &Path) -> std::io::Result<FileEntry> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileEntry {
        bytes,
        sha256: hex(&h.finalize()),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
