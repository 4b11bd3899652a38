//! Command-line flags: those of `kiln generate` and `kiln logits`, with an
//! artifact in place of `--model` and a device to run on.

use clap::{Args, Parser, Subcommand};
use kiln_runtime::artifact::{Device, KILN_VERSION};
use kiln_runtime::sampler::SamplingFlags;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "kiln-run",
    version = KILN_VERSION,
    about = "Run a Kiln artifact (made by `kiln compile`): stream generated text, or write logits",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand)]
pub enum Command {
    /// Write a token sequence's logits (prefill, or token by token) as
    /// safetensors (`logits`, f32 [seq, vocab]), like `kiln logits`.
    Logits(LogitsArgs),
    /// Verify an artifact and show what it holds: target, versions,
    /// options, inputs, states and outputs, files.
    Info {
        /// The artifact directory.
        artifact: PathBuf,
    },
}

/// Where and how to load the artifact.
#[derive(Args)]
pub struct Target {
    /// `cpu`, `cuda` (device 0) or `cuda:N`.
    #[arg(long, default_value = "cpu", value_parser = Device::parse)]
    pub device: Device,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// KV-cache capacity in tokens (default: the model's maximum context).
    #[arg(long)]
    pub ctx: Option<usize>,
}

impl Target {
    /// The device with `--threads` applied.
    pub fn device(&self) -> Device {
        match self.device {
            Device::Cpu { .. } => Device::Cpu {
                threads: self.threads,
            },
            d => d,
        }
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// The artifact directory (`kiln compile --out`).
    #[arg(required = true)]
    pub artifact: Option<PathBuf>,
    /// Text to continue (needs a tokenizer).
    #[arg(long, conflicts_with = "tokens")]
    pub prompt: Option<String>,
    /// Token ids to continue, separated by commas.
    #[arg(long, value_delimiter = ',')]
    pub tokens: Option<Vec<u32>>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingFlags,
    /// Print token ids instead of text.
    #[arg(long)]
    pub ids: bool,
    /// Print prefill milliseconds and decode tokens/s to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Also write the statistics as JSON: device, prompt_tokens,
    /// new_tokens, prefill_ms, decode_tokens_per_s, decode_step_ms (each
    /// decode step's forward).
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Generate this many times, output discarded, before the generation
    /// that is shown and timed (first-call costs out of the statistics).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub warmup: usize,
    /// Print each token id on its own line as it is chosen, then wait for a
    /// line on standard input before the next decode step (end of input
    /// stops generation): for a driver that runs something between steps,
    /// such as the benchmark's memory-bandwidth probe. Implies `--ids`.
    /// The statistics' decode rate then includes the waits; their
    /// `decode_step_ms` do not.
    #[arg(long)]
    pub lockstep: bool,
    /// Print to stderr where the timed generation's time went, kernel by
    /// kernel (launches, milliseconds, share, operand bytes and rate), its
    /// prefill and its decode apart. CPU only.
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args)]
pub struct LogitsArgs {
    /// The artifact directory (`kiln compile --out`).
    pub artifact: PathBuf,
    /// Token ids, separated by commas.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tokens: Vec<u32>,
    /// Output file (safetensors with one tensor, `logits`).
    #[arg(long)]
    pub out: PathBuf,
    /// Feed the tokens one at a time through the decode path instead of one prefill.
    #[arg(long)]
    pub decode: bool,
    #[command(flatten)]
    pub target: Target,
}
