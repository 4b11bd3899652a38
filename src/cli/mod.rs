//! Subcommands of `kiln`, one file each.

mod compile;
mod generate;
mod inspect;
mod logits;
mod model;
mod opt;
mod progress;
mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Compile and run autoregressive models"
)]
struct Cli {
    /// Write the graph after every pass (and codegen's MLIR after every
    /// stage) into this directory (same as KILN_DUMP_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    dump_dir: Option<PathBuf>,
    /// Print the graph to stderr after these passes (`all`, or names separated
    /// by commas; same as KILN_PRINT_AFTER).
    #[arg(long, global = true, value_name = "PASSES")]
    print_after: Option<String>,
    /// Attention kernels: `exact` (flash attention), or the opt-in, lossy
    /// probabilistic block-sparse `prflash[:block=64,c=4,seed=0,shared]`
    /// (causal attention only; see DESIGN.md §4).
    #[arg(long, global = true, value_name = "MODE", default_value = "exact", value_parser = parse_attention)]
    attention: AttentionMode,
    /// KV cache: `f32` (exact), or the opt-in, lossy SAQ staircase-quantized
    /// cache `saq[:16,8,4,2][:S=128][:G=32]` (bit ladder newest first, chunk
    /// size S, group size G; omitted parts take these defaults; DESIGN.md §4).
    #[arg(long, global = true, value_name = "CACHE", default_value = "f32", value_parser = parse_kv_cache)]
    kv_cache: KvCacheMode,
    /// Weight matrices' storage (linear layers, embeddings): `f32` (as
    /// declared), or the opt-in, lossy `bf16` / `f16` (each rounded once at
    /// load, read with f32 activations and accumulation: half the bytes a
    /// decode step streams).
    #[arg(long, global = true, value_name = "DTYPE", default_value = "f32", value_parser = parse_weights)]
    weights: WeightsArg,
    /// The machine to compile for: `cpu`, or `gpu` (also spelled `cuda`;
    /// launches dear: long scans become `linear_scan`). It sets the
    /// optimizer's cost model, and what `kiln compile` emits (a CPU shared
    /// library, or PTX). JIT-compiled models run on the CPU either way;
    /// `inspect --format ptx` uses `gpu`.
    #[arg(long, global = true, value_name = "TARGET", default_value = "cpu", value_parser = parse_target)]
    target: CostTargetArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the built-in models.
    Models,
    /// Show a model's IR (text, JSON, DOT), after any pass, its plan or its MLIR.
    Inspect(inspect::Args),
    /// Read IR text, run passes, print the result (like mlir-opt).
    Opt(opt::Args),
    /// Compile a model for the CPU and generate from it (default: the embedded model).
    Run(run::Args),
    /// Stream tokens from a model for a prompt.
    Generate(generate::Args),
    /// Compile a model ahead of time into an artifact directory for `kiln-run`
    /// (`--target cpu`: a shared library for this machine; `--target cuda`: PTX).
    Compile(compile::Args),
    /// Write a token sequence's logits (prefill, or token by token) as safetensors.
    Logits(logits::Args),
}

#[derive(Clone, Debug)]
struct AttentionMode(Option<kiln_passes::lossy::PrFlashConfig>);

fn parse_attention(s: &str) -> Result<AttentionMode, String> {
    if s == "exact" {
        return Ok(AttentionMode(None));
    }
    kiln_passes::lossy::PrFlashConfig::parse(s).map(|c| AttentionMode(Some(c)))
}

#[derive(Clone, Copy, Debug)]
struct CostTargetArg(kiln_passes::CostTarget);

fn parse_target(s: &str) -> Result<CostTargetArg, String> {
    match s {
        "cpu" => Ok(CostTargetArg(kiln_passes::CostTarget::Cpu)),
        "gpu" | "cuda" => Ok(CostTargetArg(kiln_passes::CostTarget::Gpu)),
        _ => Err(format!("unknown target `{s}` (cpu, or gpu/cuda)")),
    }
}

#[derive(Clone, Copy, Debug)]
struct WeightsArg(Option<kiln_ir::DType>);

fn parse_weights(s: &str) -> Result<WeightsArg, String> {
    match s {
        "f32" => Ok(WeightsArg(None)),
        "bf16" => Ok(WeightsArg(Some(kiln_ir::DType::BF16))),
        "f16" => Ok(WeightsArg(Some(kiln_ir::DType::F16))),
        _ => Err(format!("unknown weight storage `{s}` (f32, bf16 or f16)")),
    }
}

#[derive(Clone, Debug)]
struct KvCacheMode(Option<kiln_ir::saq::SaqSpec>);

fn parse_kv_cache(s: &str) -> Result<KvCacheMode, String> {
    if s == "f32" {
        return Ok(KvCacheMode(None));
    }
    kiln_ir::saq::SaqSpec::parse(s)
        .map(|c| KvCacheMode(Some(c)))
        .map_err(|e| e.to_string())
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut passes = kiln_passes::PassOptions::from_env();
    if let Some(dir) = &cli.dump_dir {
        passes.dump.dir = Some(dir.clone());
        // Codegen reads its dump directory from the environment.
        std::env::set_var("KILN_DUMP_DIR", dir);
    }
    if let Some(p) = &cli.print_after {
        passes.dump.print_after = p.split(',').map(|s| s.trim().to_string()).collect();
    }
    passes.prflash = cli.attention.0.clone();
    passes.kv_cache = cli.kv_cache.0.clone();
    passes.weights = cli.weights.0;
    passes.target = cli.target.0;
    match cli.command {
        Command::Models => {
            println!(
                "{:<20} 4.7M-parameter Llama trained on the King James Bible, embedded in the binary (the default of `kiln run`)",
                kiln::model::DEFAULT_MODEL
            );
            for m in kiln_models::builtin_models() {
                println!("{:<20} {}", m.name, m.description);
            }
            Ok(())
        }
        Command::Inspect(args) => inspect::run(args, passes),
        Command::Opt(args) => opt::run(args, passes),
        Command::Run(args) => run::run(args, passes),
        Command::Generate(args) => generate::run(args, passes),
        Command::Logits(args) => logits::run(args, passes),
        Command::Compile(args) => compile::run(args, passes),
    }
}
