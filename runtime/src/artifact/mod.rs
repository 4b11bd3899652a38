//! Ahead-of-time artifacts: a directory that holds everything needed to run
//! a compiled model without a compiler.
//!
//! | file | what it holds |
//! |---|---|
//! | `manifest.json` | format and Kiln version, target (CPU triple and features, or GPU arch), LLVM version, options, sha256 of every other file ([`Manifest`]) |
//! | `plan.json` | the execution plan, kernels' launch information included |
//! | `kernels.so` / `kernels.ptx` | the kernels: a shared library for the CPU (linked by the system linker), PTX for CUDA |
//! | `weights.safetensors` | the weights the plan reads, by name |
//! | `generation.json` | text codec, special tokens, context, sampling defaults ([`GenerationInfo`]) |
//! | `tokenizer.json` | the Hugging Face tokenizer, when the model has one |
//! | `config.json` | the Hugging Face config the model was built from, when there was one (for peers to rebuild the model) |
//!
//! [`Artifact::open`] checks the manifest before anything else is read: the
//! format and Kiln version must be this runtime's, every listed file must be
//! there with its recorded length and sha256. Loading onto a device then
//! checks the target: architecture and CPU features for the CPU
//! ([`Artifact::load_cpu`]), compute capability for CUDA ([`Artifact::load`]).

mod dylib;
mod info;
mod manifest;

pub use info::{Codec, GenerationInfo, SamplingDefaults};
pub use manifest::{hash_file, FileEntry, Manifest, TargetSpec, FORMAT_VERSION, KILN_VERSION};

use crate::cpu::{CpuExecutor, ExecOptions};
use crate::error::RuntimeError;
use crate::executor::Executor;
use crate::plan::Plan;
pub use dylib::{LibraryError, SharedLibrary};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const MANIFEST: &str = "manifest.json";
pub const PLAN: &str = "plan.json";
pub const KERNELS_SO: &str = "kernels.so";
pub const KERNELS_PTX: &str = "kernels.ptx";
pub const WEIGHTS: &str = "weights.safetensors";
pub const GENERATION: &str = "generation.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const HF_CONFIG: &str = "config.json";

/// Why an artifact cannot be used. Each names the artifact and the file.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{dir}: not an artifact directory ({message})")]
    NotFound { dir: PathBuf, message: String },
    #[error("{dir}: `{file}` is missing")]
    MissingFile { dir: PathBuf, file: String },
    #[error("{dir}: `{file}` is corrupted: {what} is {found}, the manifest says {expected}")]
    Corrupted {
        dir: PathBuf,
        file: String,
        what: &'static str,
        found: String,
        expected: String,
    },
    #[error("{dir}: `{file}` is malformed: {message}")]
    Malformed {
        dir: PathBuf,
        file: String,
        message: String,
    },
    #[error("{dir}: built by Kiln {found} (artifact format {found_format}); this runtime is Kiln {expected} (format {expected_format}); recompile it with `kiln compile`")]
    Version {
        dir: PathBuf,
        found: String,
        found_format: u32,
        expected: String,
        expected_format: u32,
    },
    #[error("{dir}: built for {built}, cannot run on {wanted}{hint}")]
    WrongTarget {
        dir: PathBuf,
        built: String,
        wanted: String,
        hint: String,
    },
    #[error("{dir}: {source}")]
    Library { dir: PathBuf, source: LibraryError },
    #[error("{dir}: weights: {message}")]
    Weights { dir: PathBuf, message: String },
    #[error("{dir}: {source}")]
    Runtime { dir: PathBuf, source: RuntimeError },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An opened, verified artifact.
#[derive(Debug)]
pub struct Artifact {
    dir: PathBuf,
    manifest: Manifest,
    plan: Plan,
    generation: GenerationInfo,
}

impl Artifact {
    /// Opens `dir`: reads the manifest, checks the version and every file's
    /// length and sha256, then reads the plan and the generation info.
    pub fn open(dir: impl AsRef<Path>) -> Result<Artifact, ArtifactError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(ArtifactError::NotFound {
                message: if dir.exists() {
                    "it is not a directory".into()
                } else {
                    "no such directory".into()
                },
                dir,
            });
        }
        let manifest = read_manifest(&dir)?;
        if manifest.format != FORMAT_VERSION || manifest.kiln_version != KILN_VERSION {
            return Err(ArtifactError::Version {
                dir,
                found: manifest.kiln_version,
                found_format: manifest.format,
                expected: KILN_VERSION.into(),
                expected_format: FORMAT_VERSION,
            });
        }
        let kernels = match manifest.target {
            TargetSpec::Cpu { .. } => KERNELS_SO,
            TargetSpec::Cuda { .. } => KERNELS_PTX,
        };
        for required in [PLAN, kernels, WEIGHTS, GENERATION] {
            if !manifest.files.contains_key(required) {
                return Err(ArtifactError::Malformed {
                    dir,
                    file: MANIFEST.into(),
                    message: format!("it does not list `{required}`"),
                });
            }
        }
        for (name, entry) in &manifest.files {
            verify_file(&dir, name, entry)?;
        }
        let plan: Plan = read_json(&dir, PLAN)?;
        if let Some(k) = plan.kernels.iter().find(|k| k.launch.is_none()) {
            return Err(ArtifactError::Malformed {
                dir,
                file: PLAN.into(),
                message: format!("kernel `{}` has no launch information", k.name),
            });
        }
        let generation: GenerationInfo = read_json(&dir, GENERATION)?;
        if generation.codec == Codec::Hf && !manifest.files.contains_key(TOKENIZER) {
            return Err(ArtifactError::MissingFile {
                dir,
                file: TOKENIZER.into(),
            });
        }
        Ok(Artifact {
            dir,
            manifest,
            plan,
            generation,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn generation(&self) -> &GenerationInfo {
        &self.generation
    }

    /// The path of one of the artifact's files.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The kernels' launch information, from the plan.
    pub fn launches(&self) -> Vec<kiln_ir::kernel::KernelLaunch> {
        self.plan
            .kernels
            .iter()
            .filter_map(|k| k.launch.clone())
            .collect()
    }

    /// The weights, memory-mapped.
    pub fn weights(&self) -> Result<kiln_models::weights::Weights, ArtifactError> {
        kiln_models::weights::Weights::open(self.path(WEIGHTS)).map_err(|e| {
            ArtifactError::Weights {
                dir: self.dir.clone(),
                message: e.to_string(),
            }
        })
    }

    /// The tokenizer, when the codec is [`Codec::Hf`].
    pub fn tokenizer(&self) -> Result<Option<kiln_models::hf::Tokenizer>, ArtifactError> {
        if self.generation.codec != Codec::Hf {
            return Ok(None);
        }
        let mut t = kiln_models::hf::Tokenizer::from_file(self.path(TOKENIZER)).map_err(|e| {
            ArtifactError::Malformed {
                dir: self.dir.clone(),
                file: TOKENIZER.into(),
                message: e.to_string(),
            }
        })?;
        if self.generation.bos_token_id.is_some() {
            t.set_bos_token_id(self.generation.bos_token_id);
        }
        if !self.generation.eos_token_ids.is_empty() {
            t.set_eos_token_ids(self.generation.eos_token_ids.clone());
        }
        Ok(Some(t))
    }

    /// Checks the artifact can run on this machine's CPU: built for the
    /// CPU, for this architecture and OS, and for features this CPU has.
    pub fn check_cpu_host(&self) -> Result<(), ArtifactError> {
        let wrong = |wanted: String, hint: String| ArtifactError::WrongTarget {
            dir: self.dir.clone(),
            built: self.manifest.target.to_string(),
            wanted,
            hint,
        };
        let (triple, features) = match &self.manifest.target {
            TargetSpec::Cpu {
                triple, features, ..
            } => (triple, features),
            TargetSpec::Cuda { .. } => {
                return Err(wrong(
                    "the CPU".into(),
                    "; run it with `--device cuda`, or compile with `--target cpu`".into(),
                ))
            }
        };
        let host = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
        let arch_ok = triple.starts_with(std::env::consts::ARCH);
        let os_ok = triple.contains(std::env::consts::OS);
        if !arch_ok || !os_ok {
            return Err(wrong(
                format!("this {host} machine"),
                "; compile it on (or for) this machine".into(),
            ));
        }
        let missing = missing_cpu_features(features);
        if !missing.is_empty() {
            return Err(wrong(
                format!("this CPU, which lacks {}", missing.join(", ")),
                "; compile it on a machine like this one".into(),
            ));
        }
        Ok(())
    }

    /// Loads the artifact onto `device`: the CPU (its kernels must be a
    /// shared library) or a CUDA GPU (PTX).
    pub fn load(&self, device: &Device) -> Result<Box<dyn Executor>, ArtifactError> {
        match device {
            Device::Cpu { threads } => {
                Ok(Box::new(self.load_cpu(&ExecOptions { threads: *threads })?))
            }
            Device::Cuda { ordinal } => self.load_cuda(*ordinal),
        }
    }

    /// Loads the kernels and weights for the CPU.
    pub fn load_cpu(&self, opts: &ExecOptions) -> Result<CpuExecutor, ArtifactError> {
        self.check_cpu_host()?;
        let lib = SharedLibrary::open(&self.path(KERNELS_SO), self.launches()).map_err(|e| {
            ArtifactError::Library {
                dir: self.dir.clone(),
                source: e,
            }
        })?;
        let weights = self.weights()?;
        CpuExecutor::new(self.plan.clone(), Arc::new(lib), &weights, opts).map_err(|e| {
            ArtifactError::Runtime {
                dir: self.dir.clone(),
                source: e,
            }
        })
    }
}

/// Where to run an artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The host CPU with this many threads (0: one per core).
    Cpu { threads: usize },
    /// CUDA device `ordinal`.
    Cuda { ordinal: usize },
}

impl Device {
    /// `cpu`, `cuda` (device 0) or `cuda:N`.
    pub fn parse(s: &str) -> Result<Device, String> {
        match s {
            "cpu" => Ok(Device::Cpu { threads: 0 }),
            "cuda" => Ok(Device::Cuda { ordinal: 0 }),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|ordinal| Device::Cuda { ordinal })
                .ok_or_else(|| format!("unknown device `{s}` (cpu, cuda or cuda:N)")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu { .. } => write!(f, "cpu"),
            Device::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl Artifact {
    /// Loads the PTX kernels and the weights onto CUDA device `ordinal`,
    /// after checking the device's compute capability reaches the
    /// artifact's architecture (PTX runs on its own and newer GPUs).
    fn load_cuda(&self, ordinal: usize) -> Result<Box<dyn Executor>, ArtifactError> {
        let TargetSpec::Cuda { arch } = &self.manifest.target else {
            return Err(ArtifactError::WrongTarget {
                dir: self.dir.clone(),
                built: self.manifest.target.to_string(),
                wanted: format!("cuda:{ordinal}"),
                hint: "; run it on the CPU, or compile with `--target cuda`".into(),
            });
        };
        self.load_cuda_arch(arch, ordinal)
    }

    #[cfg(feature = "cuda")]
    fn load_cuda_arch(
        &self,
        arch: &str,
        ordinal: usize,
    ) -> Result<Box<dyn Executor>, ArtifactError> {
        use crate::cuda::{device_info, CudaExecutor, CudaOptions};
        let runtime = |source| ArtifactError::Runtime {
            dir: self.dir.clone(),
            source,
        };
        let needed = parse_sm(arch).ok_or_else(|| ArtifactError::Malformed {
            dir: self.dir.clone(),
            file: MANIFEST.into(),
            message: format!("unknown GPU architecture `{arch}`"),
        })?;
        let info = device_info(ordinal).map_err(runtime)?;
        if info.compute_capability < needed {
            let (major, minor) = info.compute_capability;
            return Err(ArtifactError::WrongTarget {
                dir: self.dir.clone(),
                built: self.manifest.target.to_string(),
                wanted: format!("cuda:{ordinal}, {} (sm_{major}{minor})", info.name),
                hint: format!("; compile with `--target cuda --arch sm_{major}{minor}`"),
            });
        }
        let path = self.path(KERNELS_PTX);
        let ptx = std::fs::read_to_string(&path).map_err(|source| ArtifactError::Io {
            path: path.clone(),
            source,
        })?;
        let weights = self.weights()?;
        let exe = CudaExecutor::new(
            self.plan.clone(),
            &ptx,
            &weights,
            &CudaOptions { device: ordinal },
        )
        .map_err(runtime)?;
        Ok(Box::new(exe))
    }

    #[cfg(not(feature = "cuda"))]
    fn load_cuda_arch(
        &self,
        _arch: &str,
        _ordinal: usize,
    ) -> Result<Box<dyn Executor>, ArtifactError> {
        Err(ArtifactError::Runtime {
            dir: self.dir.clone(),
            source: RuntimeError::NoCudaDevice(
                "this runtime was built without the `cuda` feature".into(),
            ),
        })
    }
}

/// `sm_90` → (9, 0).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn parse_sm(arch: &str) -> Option<(u32, u32)> {
    let digits = arch.strip_prefix("sm_")?;
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (major, minor) = digits.split_at(digits.len() - 1);
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn read_manifest(dir: &Path) -> Result<Manifest, ArtifactError> {
    let path = dir.join(MANIFEST);
    if !path.is_file() {
        return Err(ArtifactError::MissingFile {
            dir: dir.to_path_buf(),
            file: MANIFEST.into(),
        });
    }
    read_json(dir, MANIFEST)
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, file: &str) -> Result<T, ArtifactError> {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).map_err(|source| ArtifactError::Io { path, source })?;
    serde_json::from_slice(&bytes).map_err(|e| ArtifactError::Malformed {
        dir: dir.to_path_buf(),
        file: file.into(),
        message: e.to_string(),
    })
}

/// A listed file must be a plain file inside the artifact with the
/// recorded length and hash.
fn verify_file(dir: &Path, name: &str, entry: &FileEntry) -> Result<(), ArtifactError> {
    let inside = Path::new(name)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !inside || name == MANIFEST {
        return Err(ArtifactError::Malformed {
            dir: dir.to_path_buf(),
            file: MANIFEST.into(),
            message: format!("it lists `{name}`, which is not a file of the artifact"),
        });
    }
    let path = dir.join(name);
    if !path.is_file() {
        return Err(ArtifactError::MissingFile {
            dir: dir.to_path_buf(),
            file: name.into(),
        });
    }
    let corrupted = |what, found: String, expected: String| ArtifactError::Corrupted {
        dir: dir.to_path_buf(),
        file: name.into(),
        what,
        found,
        expected,
    };
    let len = std::fs::metadata(&path)
        .map_err(|source| ArtifactError::Io {
            path: path.clone(),
            source,
        })?
        .len();
    if len != entry.bytes {
        return Err(corrupted(
            "its length",
            format!("{len} bytes"),
            format!("{} bytes", entry.bytes),
        ));
    }
    let found = hash_file(&path).map_err(|source| ArtifactError::Io { path, source })?;
    if found.sha256 != entry.sha256 {
        return Err(corrupted("its sha256", found.sha256, entry.sha256.clone()));
    }
    Ok(())
}

/// Features the artifact's `+feature` list needs that this CPU lacks
/// (among those the standard library can detect; others are not checked).
fn missing_cpu_features(features: &str) -> Vec<String> {
    let needed = features
        .split(',')
        .filter_map(|f| f.strip_prefix('+'))
        .map(str::to_string);
    needed.filter(|f| host_lacks(f)).collect()
}

#[cfg(target_arch = "x86_64")]
fn host_lacks(feature: &str) -> bool {
    macro_rules! check {
        ($($name:tt),*) => {
            match feature {
                $($name => !std::arch::is_x86_feature_detected!($name),)*
                _ => false,
            }
        };
    }
    check!(
        "sse3",
        "ssse3",
        "sse4.1",
        "sse4.2",
        "popcnt",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "bmi1",
        "bmi2",
        "lzcnt",
        "movbe",
        "avx512f",
        "avx512bw",
        "avx512cd",
        "avx512dq",
        "avx512vl",
        "avx512vnni",
        "avx512bf16",
        "avx512fp16",
        "avx512vbmi",
        "avx512ifma",
        "gfni",
        "vaes",
        "vpclmulqdq",
        "sha",
        "adx"
    )
}

#[cfg(not(target_arch = "x86_64"))]
fn host_lacks(_feature: &str) -> bool {
    false
}

/// Writes `manifest.json` into `dir`, listing (with length and sha256)
/// every other regular file there; returns the manifest.
pub fn write_manifest(
    dir: &Path,
    target: TargetSpec,
    llvm_version: String,
    model: String,
    options: std::collections::BTreeMap<String, String>,
) -> Result<Manifest, ArtifactError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ArtifactError::Io { path, source }
    };
    let mut files = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == MANIFEST || !entry.file_type().map_err(io(dir))?.is_file() {
            continue;
        }
        files.insert(name, hash_file(&entry.path()).map_err(io(&entry.path()))?);
    }
    let manifest = Manifest {
        format: FORMAT_VERSION,
        kiln_version: KILN_VERSION.into(),
        target,
        llvm_version,
        model,
        options,
        files,
    };
    let text = serde_json::to_string_pretty(&manifest).expect("a manifest serializes");
    let path = dir.join(MANIFEST);
    std::fs::write(&path, text + "\n").map_err(io(&path))?;
    Ok(manifest)
}
