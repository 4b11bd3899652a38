//! `kiln-run ART --prompt TEXT`: stream generated text, as `kiln generate`.

use crate::args::RunArgs;
use anyhow::{anyhow, bail, Context};
use kiln_runtime::artifact::Codec;
use kiln_runtime::generate::{GenerateOptions, GenerationStats, LanguageModel};
use kiln_runtime::lm::text::{stats_line, stream_generation, TextStream};
use kiln_runtime::profile::{Profiled, Profiler};
use kiln_runtime::Executor;
use std::io::{BufRead, Write};

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
    let profiler = Profiler::new();
    if args.profile {
        lm.executor_mut()
            .set_profiler(Some(profiler.clone()))
            .with_context(|| format!("{}: --profile", name()))?;
    }
    let mut profiled = Profiled::new(&mut lm, profiler);
    let model: &mut dyn LanguageModel = &mut profiled;
    let stats = if args.lockstep {
        lockstep(model, &prompt, &opts).with_context(name)?
    } else {
        let mut out = std::io::stdout().lock();
        stream_generation(model, &prompt, &opts, &mut text, &mut out)
            .with_context(name)?
            .1
    };
    if args.profile {
        eprint!("{}", profiled.report(stats.prompt_tokens));
    }
    if args.stats {
        eprintln!("{}", stats_line(&stats));
    }
    if let Some(path) = &args.stats_json {
        write_stats(path, lm.executor(), &stats)?;
    }
    Ok(())
}

/// `--lockstep`: each token id on its own line, flushed, then a line of
/// standard input before the model runs again. The driver's time between
/// steps is outside `decode_steps`, which time the forwards alone.
fn lockstep(
    lm: &mut dyn LanguageModel,
    prompt: &[u32],
    opts: &GenerateOptions,
) -> anyhow::Result<GenerationStats> {
    let (mut out, mut input) = (std::io::stdout().lock(), std::io::stdin().lock());
    let mut failed = None;
    let mut line = String::new();
    let mut on_token = |token: u32| {
        line.clear();
        let step = writeln!(out, "{token}")
            .and_then(|()| out.flush())
            .and_then(|()| input.read_line(&mut line));
        match step {
            Ok(n) => n > 0,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    };
    let (_, stats) = kiln_runtime::generate::generate(lm, prompt, opts, &mut on_token)?;
    match failed {
        Some(e) => Err(anyhow::Error::new(e).context("--lockstep: standard input/output")),
        None => Ok(stats),
    }
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
        "decode_step_ms": stats.decode_steps.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&json).expect("JSON values serialize");
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
