//! `kiln run`: compile a decoder model for the CPU and generate from a prompt.
//!
//! The built-in model has a byte-level vocabulary (token = byte) and seeded
//! random weights, so its text is noise — what this shows is the whole
//! pipeline running, one compiled model serving every sequence length.

use super::model;
use super::progress::Progress;
use anyhow::{anyhow, bail};
use kiln_ir::{DType, Tensor};
use kiln_passes::PassOptions;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// A built-in model (see `kiln models`).
    #[arg(long, default_value = "tiny-decoder")]
    model: String,
    #[arg(long, default_value = "Kiln compiles models.")]
    prompt: String,
    #[arg(long, default_value_t = 24)]
    max_new_tokens: usize,
    /// Seed of the built-in model's weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Also run the reference interpreter on the prompt and print the relative
    /// L2 difference of the logits.
    #[arg(long)]
    check: bool,
}

fn tokens_tensor(tokens: &[i32]) -> BTreeMap<String, Tensor> {
    let t = Tensor::i32(vec![tokens.len()], tokens.to_vec()).expect("length matches");
    BTreeMap::from([("tokens".to_string(), t)])
}

/// Printable text of byte tokens, escaping what a terminal should not see.
fn show(tokens: &[i32]) -> String {
    let bytes: Vec<u8> = tokens.iter().map(|&t| t as u8).collect();
    String::from_utf8_lossy(&bytes).escape_debug().to_string()
}

pub fn run(args: Args, passes: PassOptions) -> anyhow::Result<()> {
    let m = model::load(&args.model, args.seed)?;
    let weights = m.weights.ok_or_else(|| {
        anyhow!(
            "`{}` has no weights; `kiln run` needs a built-in model",
            args.model
        )
    })?;
    let graph = m.graph;
    let tokens_ty = graph
        .input("tokens")
        .map(|v| graph.ty(v).clone())
        .ok_or_else(|| anyhow!("the model has no `tokens` input"))?;
    let logits_ty = graph
        .output("logits")
        .map(|o| graph.ty(o.value).clone())
        .ok_or_else(|| anyhow!("the model has no `logits` output"))?;
    if tokens_ty.dtype != DType::I32 || tokens_ty.rank() != 1 || logits_ty.rank() != 2 {
        bail!("`kiln run` expects tokens: i32[seq] -> logits: f32[seq, vocab], got {tokens_ty} -> {logits_ty}");
    }
    let vocab = logits_ty.shape[1]
        .as_const()
        .ok_or_else(|| anyhow!("the vocabulary size must be a constant"))? as usize;
    if vocab < 256 {
        bail!("`kiln run` feeds bytes as tokens and needs a vocabulary of at least 256, the model has {vocab}");
    }
    let mut tokens: Vec<i32> = args.prompt.bytes().map(i32::from).collect();
    if tokens.is_empty() {
        bail!("the prompt is empty");
    }

    let mut progress = Progress::new(&format!("compiling {}", args.model));
    let opts = kiln::CompileOptions {
        passes,
        exec: kiln_runtime::ExecOptions {
            threads: args.threads,
        },
    };
    let t = Instant::now();
    let mut exe = kiln::jit_with_progress(&graph, &weights, &opts, &mut |s| progress.stage(s))?;
    progress.done();
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let r = exe.report();
    println!(
        "model    {} (seeded random weights, seed {}): {} kernels, {} steps, compiled in {:.0} ms ({} threads)",
        args.model,
        args.seed,
        r.kernels,
        r.steps,
        compile_ms,
        exe_threads(&opts)
    );
    println!("prompt   \"{}\" ({} tokens)", show(&tokens), tokens.len());

    let prompt_len = tokens.len();
    let t = Instant::now();
    let mut prefill_ms = 0.0;
    for step in 0..args.max_new_tokens {
        let out = exe.run(&tokens_tensor(&tokens))?;
        if step == 0 {
            prefill_ms = t.elapsed().as_secs_f64() * 1e3;
        }
        let logits = out["logits"].to_f32_vec();
        let last = &logits[(tokens.len() - 1) * vocab..tokens.len() * vocab];
        let next = last
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0;
        tokens.push(next as i32);
    }
    let total_ms = t.elapsed().as_secs_f64() * 1e3;
    println!("output   \"{}\"", show(&tokens[prompt_len..]));
    println!(
        "time     first pass over {prompt_len} tokens {prefill_ms:.2} ms; {} tokens in {total_ms:.1} ms (greedy; each step reruns the whole sequence)",
        args.max_new_tokens
    );
    if args.check {
        let prompt = &tokens[..prompt_len];
        let compiled = exe.run(&tokens_tensor(prompt))?["logits"].to_f64_vec();
        let reference =
            kiln_ir::interp::eval(&graph, &tokens_tensor(prompt), &weights)?["logits"].to_f64_vec();
        let err = kiln_ir::tensor::rel_l2(&compiled, &reference);
        println!("check    compiled vs reference interpreter at seq={prompt_len}: relative L2 error {err:.2e}");
        // NaN counts as a failure too.
        if err.is_nan() || err > 1e-4 {
            bail!("compiled output differs from the reference interpreter (relative L2 {err:.2e} > 1e-4)");
        }
    }
    Ok(())
}

fn exe_threads(opts: &kiln::CompileOptions) -> usize {
    if opts.exec.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.exec.threads
    }
}
