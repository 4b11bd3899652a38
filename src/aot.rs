//! Ahead-of-time compilation: a model into an artifact directory that
//! `kiln-run` (the runtime alone, no compiler) loads and runs.
//!
//! The stages are those of [`crate::jit`] — optimize, plan, generate code —
//! followed by writing the files the runtime's
//! [`artifact`](kiln_runtime::artifact) module documents and reads: the
//! plan, the kernels (a shared library linked by the system linker for the
//! CPU, PTX for CUDA), the weights the plan reads, the tokenizer, and a
//! manifest with a sha256 of every file.

use crate::jit::{kernel_specs, KilnError};
use crate::model::{LoadedModel, TextCodec};
use kiln_codegen::GpuArch;
use kiln_ir::interp::ParamSource;
use kiln_ir::Tensor;
use kiln_passes::{CostTarget, PassManager, PassOptions};
use kiln_runtime::artifact::{self, Codec, GenerationInfo, Manifest, TargetSpec};
use kiln_runtime::plan::Storage;
use kiln_runtime::Plan;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What an artifact is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AotTarget {
    /// A CPU: this machine's (its model and features) when `cpu` is
    /// `None`, else the LLVM CPU name given (`x86-64-v3`, `skylake-avx512`).
    Cpu { cpu: Option<String> },
    /// NVIDIA GPUs of compute capability `arch` or newer.
    Cuda { arch: GpuArch },
}

/// How to compile an artifact.
#[derive(Clone, Debug)]
pub struct AotOptions {
    /// Optimizer options; the cost target is set from [`AotOptions::target`].
    pub passes: PassOptions,
    pub target: AotTarget,
}

/// What [`compile_artifact`] did.
#[derive(Clone, Debug)]
pub struct AotReport {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub kernels: usize,
    pub optimize: Duration,
    pub plan: Duration,
    pub codegen: Duration,
    pub write: Duration,
}

impl AotReport {
    /// The artifact's total size in bytes.
    pub fn bytes(&self) -> u64 {
        self.manifest.files.values().map(|f| f.bytes).sum()
    }
}

/// Compiles `model` (named `spec` in the manifest) into the artifact
/// directory `out`, calling `progress` with each stage's name.
///
/// `out` must not exist, be empty, or be an earlier artifact (it is
/// replaced only once the new one is complete; anything else is refused).
pub fn compile_artifact(
    model: &LoadedModel,
    spec: &str,
    opts: &AotOptions,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<AotReport, KilnError> {
    check_destination(out)?;
    let mut passes = opts.passes.clone();
    passes.target = match opts.target {
        AotTarget::Cpu { .. } => CostTarget::Cpu,
        AotTarget::Cuda { .. } => CostTarget::Gpu,
    };

    progress("optimize");
    let t = Instant::now();
    let (kernel_graph, _) = PassManager::for_options(&passes).run(model.graph.clone(), &passes)?;
    let optimize = t.elapsed();

    progress("plan");
    let t = Instant::now();
    let mut plan: Plan = kiln_runtime::plan(&kernel_graph)?;
    let plan_time = t.elapsed();

    let staging = staging_dir(out);
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let result = (|| {
        progress("codegen");
        let t = Instant::now();
        let specs = kernel_specs(&plan);
        let (target, launches) = match opts.target {
            AotTarget::Cpu { ref cpu } => {
                let obj = kiln_codegen::compile_cpu_object(&specs, &plan.symbols, cpu.as_deref())?;
                progress("link");
                kiln_codegen::link_shared_library(
                    &obj.object.object,
                    &staging.join(artifact::KERNELS_SO),
                )?;
                let features = match cpu {
                    None => obj.object.features,
                    Some(name) => named_cpu_features(name).to_string(),
                };
                let target = TargetSpec::Cpu {
                    triple: obj.object.triple,
                    cpu: obj.object.cpu,
                    features,
                };
                (target, obj.launches)
            }
            AotTarget::Cuda { arch } => {
                let m = kiln_codegen::compile_ptx(&specs, &plan.symbols, arch)?;
                write(&staging.join(artifact::KERNELS_PTX), m.ptx.as_bytes())?;
                (
                    TargetSpec::Cuda {
                        arch: arch.name().to_string(),
                    },
                    m.launches,
                )
            }
        };
        for (k, launch) in plan.kernels.iter_mut().zip(launches) {
            k.launch = Some(launch);
        }
        let codegen = t.elapsed();

        progress("write");
        let t = Instant::now();
        let rounded = passes
            .weights
            .map(|to| crate::NarrowWeights::new(&model.weights, &kernel_graph, to));
        write_model_files(model, &plan, rounded.as_ref(), &staging)?;
        let manifest = artifact::write_manifest(
            &staging,
            target,
            kiln_codegen::llvm_version(),
            spec.to_string(),
            options_text(&passes),
        )?;
        Ok::<_, KilnError>((manifest, codegen, t.elapsed()))
    })();
    let (manifest, codegen, write_time) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    std::fs::rename(&staging, out).map_err(io(out))?;
    Ok(AotReport {
        dir: out.to_path_buf(),
        kernels: plan.kernels.len(),
        manifest,
        optimize,
        plan: plan_time,
        codegen,
        write: write_time,
    })
}

/// Plan, weights (those declared narrow by `--weights`, rounded: the file
/// holds what the plan reads), generation info, tokenizer and HF config.
fn write_model_files(
    model: &LoadedModel,
    plan: &Plan,
    rounded: Option<&crate::NarrowWeights>,
    dir: &Path,
) -> Result<(), KilnError> {
    let plan_json = serde_json::to_vec(plan)
        .map_err(|e| KilnError::Model(format!("serializing the plan: {e}")))?;
    write(&dir.join(artifact::PLAN), &plan_json)?;

    // Borrowed: the weights are written where they lie, not copied first
    // (but for the rounded ones).
    let mut weights: BTreeMap<String, &Tensor> = BTreeMap::new();
    for b in &plan.buffers {
        if let Storage::Param(name) = &b.storage {
            let t = match rounded {
                Some(r) if r.rounds(name) => r.param(name).ok_or_else(|| {
                    KilnError::Model(format!("weight {name} ({}) is missing", b.ty))
                })?,
                _ => model.weights.get(name)?,
            };
            weights.insert(name.clone(), t);
        }
    }
    kiln_models::hf::save_safetensors(dir.join(artifact::WEIGHTS), &weights)?;

    let codec = match &model.codec {
        Some(TextCodec::Hf(_)) if model.source.tokenizer_json.is_some() => Codec::Hf,
        Some(TextCodec::Bytes) => Codec::Bytes,
        _ => Codec::None,
    };
    let info = GenerationInfo {
        codec,
        bos_token_id: model.bos_token_id,
        eos_token_ids: model.eos_token_ids.clone(),
        max_context: model.max_context,
        sampling: (&model.sampling).into(),
    };
    let info = serde_json::to_vec_pretty(&info).expect("generation info serializes");
    write(&dir.join(artifact::GENERATION), &info)?;
    if codec == Codec::Hf {
        if let Some(t) = &model.source.tokenizer_json {
            write(&dir.join(artifact::TOKENIZER), t)?;
        }
    }
    if let Some(c) = &model.source.hf_config {
        let c = serde_json::to_vec_pretty(c).expect("a JSON value serializes");
        write(&dir.join(artifact::HF_CONFIG), &c)?;
    }
    Ok(())
}

/// The features a named CPU is known to have, which the runtime checks the
/// host for: its x86-64 psABI level's (a model such as `sapphirerapids`
/// has more — AVX512-VNNI, BF16 — that go unchecked; the level's set is
/// what the generated code leans on).
fn named_cpu_features(cpu: &str) -> &'static str {
    const V2: &str = "+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt";
    const V3: &str =
        "+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+avx,+avx2,+fma,+f16c,+bmi1,+bmi2,+lzcnt,+movbe";
    const V4: &str = "+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+avx,+avx2,+fma,+f16c,+bmi1,+bmi2,+lzcnt,+movbe,+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl";
    match cpu {
        "x86-64-v2" => V2,
        "x86-64-v3" | "haswell" | "broadwell" | "skylake" | "alderlake" | "znver2" | "znver3" => V3,
        "x86-64-v4" | "skylake-avx512" | "cascadelake" | "icelake-server" | "sapphirerapids"
        | "znver4" => V4,
        _ => "",
    }
}

/// The options that change what runs, as command-line text.
fn options_text(passes: &PassOptions) -> BTreeMap<String, String> {
    let mut o = BTreeMap::new();
    let attention = match &passes.prflash {
        None => "exact".to_string(),
        Some(c) => c.to_string(),
    };
    o.insert("attention".into(), attention);
    let kv = match &passes.kv_cache {
        None => "f32".to_string(),
        Some(s) => s.to_string(),
    };
    o.insert("kv_cache".into(), kv);
    let weights = passes.weights.map_or("f32".to_string(), |d| d.to_string());
    o.insert("weights".into(), weights);
    let target = match passes.target {
        CostTarget::Cpu => "cpu",
        CostTarget::Gpu => "gpu",
    };
    o.insert("optimizer_target".into(), target.into());
    o.insert(
        "layers".into(),
        format!("{:?}", passes.layers).to_lowercase(),
    );
    o
}

/// Refuses to replace anything but an empty directory or an artifact.
fn check_destination(out: &Path) -> Result<(), KilnError> {
    if !out.exists() {
        return Ok(());
    }
    let refuse = |why: &str| {
        KilnError::Model(format!(
            "{}: {why}; refusing to overwrite it (choose another --out)",
            out.display()
        ))
    };
    if !out.is_dir() {
        return Err(refuse("it exists and is not a directory"));
    }
    let empty = std::fs::read_dir(out).map_err(io(out))?.next().is_none();
    if empty || out.join(artifact::MANIFEST).is_file() {
        Ok(())
    } else {
        Err(refuse("it is a directory that is not a Kiln artifact"))
    }
}

fn staging_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artifact".into());
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), KilnError> {
    std::fs::write(path, bytes).map_err(io(path))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KilnError + '_ {
    move |source| KilnError::Io {
        path: path.to_path_buf(),
        source,
    }
}
