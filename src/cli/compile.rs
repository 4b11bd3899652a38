//! `kiln compile`: a model into an ahead-of-time artifact directory that
//! `kiln-run` runs without a compiler.

use super::model::load_runnable;
use super::progress::Progress;
use anyhow::Context;
use kiln::aot::{compile_artifact, AotOptions, AotTarget};
use kiln_codegen::GpuArch;
use kiln_passes::{CostTarget, PassOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// `default` (the embedded trained model), a built-in model or a Hugging Face directory.
    #[arg(long, default_value = kiln::model::DEFAULT_MODEL)]
    model: String,
    /// The artifact directory to write (replaced if it is an earlier artifact).
    #[arg(long)]
    out: PathBuf,
    /// GPU architecture for `--target cuda`: sm_80 (A100) or sm_90 (H100/H200).
    #[arg(long, default_value = "sm_90", value_parser = parse_arch)]
    arch: GpuArch,
    /// CPU model for `--target cpu` (an LLVM CPU name: `x86-64-v3`,
    /// `x86-64-v4`, `skylake-avx512`, …). Default: this machine's CPU and
    /// features, which runs fastest here but only on CPUs that have them.
    #[arg(long)]
    cpu: Option<String>,
    /// Seed of a built-in model's random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn parse_arch(s: &str) -> Result<GpuArch, String> {
    GpuArch::parse(s).ok_or_else(|| format!("unknown GPU architecture `{s}` (sm_80 or sm_90)"))
}

pub fn run(args: Args, passes: PassOptions) -> anyhow::Result<()> {
    let target = match passes.target {
        CostTarget::Cpu => AotTarget::Cpu {
            cpu: args.cpu.clone(),
        },
        CostTarget::Gpu => AotTarget::Cuda { arch: args.arch },
    };
    let mut progress = Progress::new(&format!("compiling {}", args.model));
    progress.stage("loading");
    let model = load_runnable(&args.model, args.seed)?;
    let opts = AotOptions { passes, target };
    let report = compile_artifact(&model, &args.model, &opts, &args.out, &mut |s| {
        progress.stage(s)
    })
    .with_context(|| format!("compiling {} into {}", args.model, args.out.display()))?;
    progress.done();
    let m = &report.manifest;
    eprintln!(
        "wrote {} ({}, {} kernels, {} files, {:.1} MB; optimize {} ms, codegen {} ms)",
        report.dir.display(),
        m.target,
        report.kernels,
        m.files.len() + 1,
        report.bytes() as f64 / 1e6,
        report.optimize.as_millis(),
        report.codegen.as_millis(),
    );
    eprintln!("run it: kiln-run {} --prompt \"...\"", report.dir.display());
    Ok(())
}
