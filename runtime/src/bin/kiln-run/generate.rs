//! `kiln-run ART --prompt TEXT`: stream generated text, as `kiln generate`.

use crate::args::RunArgs;
use anyhow::{anyhow, bail, Context};
use kiln_runtime::artifact::Codec;
use kiln_runtime::generate::{GenerateOptions, GenerationStats};
use kiln_runtime::lm::text::{stats_line, stream_generation, TextStream};
use kiln_runtime::Executor;

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let dir = args
        .artifact
        .clone()
        .ok_or_else(|| anyhow!("give the artifact directory"))?;
    let (artifact, mut lm) = crate::load::load(&dir, &args.target)?;
    let tokenizer = artifact.tokenizer()?;
    let generation = artifact.generation();
    let name = || dir.display().to_string();
    let prompt: Vec<u32> = match (&args.prompt, &args.tokens) {
        (_, Some(t)) => t.clone(),
        (Some(p), None) => match (generation.codec, &tokenizer) {
            (Codec::Hf, Some(t)) => t.encode(p).with_context(name)?,
            (Codec::Bytes, _) => p.bytes().map(u32::from).collect(),
            _ => bail!("{}: the model has no tokenizer: pass --tokens", name()),
        },
        (None, None) => bail!("give --prompt TEXT or --tokens IDS"),
    };
    let sampling = args.sampling.over(&generation.sampling.to_config(0));
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling,
        stop_tokens: generation.eos_token_ids.clone(),
    };
    let mut text = match (&tokenizer, generation.codec) {
        _ if args.ids => TextStream::Ids,
        (Some(t), Codec::Hf) => TextStream::hf(t),
        (_, Codec::Bytes) => TextStream::bytes(),
        _ => TextStream::Ids,
    };
    for _ in 0..args.warmup {
        kiln_runtime::generate::generate(&mut lm, &prompt, &opts, &mut |_| true)
            .with_context(name)?;
    }
    let mut out = std::io::stdout().lock();
    let (_, stats) =
        stream_generation(&mut lm, &prompt, &opts, &mut text, &mut out).with_context(name)?;
    if args.stats {
        eprintln!("{}", stats_line(&stats));
    }
    if let Some(path) = &args.stats_json {
        write_stats(path, lm.executor(), &stats)?;
    }
    Ok(())
}

/// `--stats-json`: what the GPU check script and benchmarks read.
fn write_stats(
    path: &std::path::Path,
    executor: &dyn Executor,
    stats: &GenerationStats,
) -> anyhow::Result<()> {
    let json = serde_json::json!({
        "device": executor.device(),
        "prompt_tokens": stats.prompt_tokens,
        "new_tokens": stats.new_tokens,
        "prefill_ms": stats.prefill.as_secs_f64() * 1e3,
        "decode_tokens_per_s": stats.decode_tokens_per_sec(),
    });
    let text = serde_json::to_string_pretty(&json).expect("JSON values serialize");
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
