//! `kiln generate` (and `kiln run`, its defaults): compile a model for the CPU
//! and stream tokens from a prompt.

use super::model::load_runnable;
use super::progress::Progress;
use anyhow::bail;
use kiln::lm::CompiledLm;
use kiln::model::{LoadedModel, TextCodec};
use kiln_passes::PassOptions;
use kiln_runtime::generate::GenerateOptions;
use kiln_runtime::lm::text::{stats_line, stream_generation, TextStream};
use kiln_runtime::profile::{Profiled, Profiler};
use kiln_runtime::sampler::SamplingFlags;
use kiln_runtime::Executor;
use std::time::Instant;

/// Model, compilation and sampling flags shared by `generate` and `run`.
#[derive(clap::Args)]
pub struct Common {
    /// Text to continue (needs a tokenizer).
    #[arg(long, conflicts_with = "tokens")]
    pub prompt: Option<String>,
    /// Token ids to continue, separated by commas.
    #[arg(long, value_delimiter = ',')]
    pub tokens: Option<Vec<u32>>,
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Sampling; `--seed` also seeds a built-in model's random weights.
    #[command(flatten)]
    pub sampling: SamplingFlags,
    /// Print token ids instead of text.
    #[arg(long)]
    pub ids: bool,
    /// Print prefill milliseconds and decode tokens/s to stderr.
    #[arg(long)]
    pub stats: bool,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// KV-cache capacity in tokens (default: the model's maximum context).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Print to stderr where the generation's time went, kernel by kernel
    /// (launches, milliseconds, share, operand bytes and rate), its prefill
    /// and its decode apart.
    #[arg(long)]
    pub profile: bool,
}

#[derive(clap::Args)]
pub struct Args {
    /// `default`, a built-in model (see `kiln models`) or a Hugging Face model directory.
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub common: Common,
}

/// Loads and compiles `spec` into a language model, with progress.
pub fn compile(
    spec: &str,
    seed: u64,
    threads: usize,
    ctx: Option<usize>,
    passes: PassOptions,
) -> anyhow::Result<(LoadedModel, CompiledLm, f64)> {
    let mut progress = Progress::new(&format!("compiling {spec}"));
    progress.stage("loading");
    let t = Instant::now();
    let model = load_runnable(spec, seed)?;
    let opts = kiln::CompileOptions {
        passes,
        exec: kiln_runtime::ExecOptions { threads },
    };
    let exe = kiln::jit_with_progress(&model.graph, &model.weights, &opts, &mut |s| {
        progress.stage(s)
    })?;
    let ctx = ctx.or(model.max_context).unwrap_or(2048);
    let lm = CompiledLm::new(exe, ctx)?;
    progress.done();
    Ok((model, lm, t.elapsed().as_secs_f64() * 1e3))
}

/// Runs a generation and streams its output to stdout.
pub fn stream(
    model: &LoadedModel,
    lm: &mut CompiledLm,
    c: &Common,
    default_tokens: usize,
) -> anyhow::Result<()> {
    let prompt: Vec<u32> = match (&c.prompt, &c.tokens) {
        (_, Some(t)) => t.clone(),
        (Some(p), None) => match &model.codec {
            Some(codec) => codec.encode(p)?,
            None => bail!("`{}` has no tokenizer: pass --tokens", model.name),
        },
        (None, None) => bail!("give --prompt TEXT or --tokens IDS"),
    };
    let sampling = c.sampling.over(&model.sampling);
    let opts = GenerateOptions {
        max_new_tokens: c.max_new_tokens.unwrap_or(default_tokens),
        sampling,
        stop_tokens: model.eos_token_ids.clone(),
    };
    let mut text = match &model.codec {
        _ if c.ids => TextStream::Ids,
        Some(TextCodec::Hf(t)) => TextStream::hf(t),
        Some(TextCodec::Bytes) => TextStream::bytes(),
        None => TextStream::Ids,
    };
    let profiler = Profiler::new();
    if c.profile {
        lm.adapter()
            .executor_mut()
            .set_profiler(Some(profiler.clone()))?;
    }
    let mut profiled = Profiled::new(lm, profiler);
    let mut out = std::io::stdout().lock();
    let (_, stats) = stream_generation(&mut profiled, &prompt, &opts, &mut text, &mut out)?;
    if c.profile {
        eprint!("{}", profiled.report(stats.prompt_tokens));
    }
    if c.stats {
        eprintln!("{}", stats_line(&stats));
    }
    Ok(())
}

pub fn run(args: Args, passes: PassOptions) -> anyhow::Result<()> {
    let c = &args.common;
    let (model, mut lm, _) = compile(&args.model, c.sampling.seed, c.threads, c.ctx, passes)?;
    stream(&model, &mut lm, c, 64)
}
