//! Compile a model in-process and use it: a forward pass, then text
//! generation, with timings.
//!
//! ```sh
//! cargo run --release --example jit
//! cargo run --release --example jit -- "In the beginning" 48
//! ```
//!
//! The model is the trained default embedded in Kiln (a small Llama with a
//! byte-level BPE tokenizer); `kiln::model::load` also takes a built-in
//! name (`llama-tiny`) or a Hugging Face model directory.

use kiln::runtime::generate::GenerateOptions;
use kiln::runtime::sampler::SamplingConfig;
use std::time::Instant;

fn main() -> Result<(), kiln::KilnError> {
    let mut args = std::env::args().skip(1);
    let prompt = args.next().unwrap_or_else(|| "And God said".into());
    let max_new_tokens: usize = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|e| kiln::KilnError::Model(format!("max new tokens `{n}`: {e}")))?,
        None => 32,
    };

    // Load: graph, weights, tokenizer, special tokens, sampling defaults.
    let t = Instant::now();
    let model = kiln::model::load(kiln::model::DEFAULT_MODEL, 0)?;
    println!("loaded `{}` in {:.0} ms", model.name, ms(t));

    // Compile: optimize, plan, generate every kernel through MLIR/LLVM, load.
    let t = Instant::now();
    let mut compiled = kiln::jit_model(&model, &kiln::CompileOptions::default())?;
    let r = compiled.executable().report();
    println!(
        "compiled in {:.0} ms: {} kernels, {} steps (optimize {:.0} ms, codegen {:.0} ms)",
        ms(t),
        r.kernels,
        r.steps,
        r.optimize.as_secs_f64() * 1e3,
        r.codegen.as_secs_f64() * 1e3
    );

    // A forward pass: the logits of every prompt token.
    let ids = compiled.encode(&prompt)?;
    let t = Instant::now();
    let logits = compiled.logits(&ids)?;
    let vocab = logits.shape[1];
    let last = &logits.to_f32_vec()[(ids.len() - 1) * vocab..];
    let next = (0..vocab)
        .max_by(|&a, &b| last[a].total_cmp(&last[b]))
        .unwrap();
    println!(
        "forward: {} tokens -> logits {:?} in {:.2} ms; most likely next token: {next} {:?}",
        ids.len(),
        logits.shape,
        ms(t),
        compiled.decode(&[next as u32])?
    );

    // Text in, text out, with the model's sampling defaults.
    let t = Instant::now();
    let text = compiled.generate_text(&prompt, max_new_tokens)?;
    println!("generate_text ({:.0} ms): {prompt}{text}", ms(t));

    // Token ids in, with explicit options and statistics.
    let opts = GenerateOptions {
        max_new_tokens,
        sampling: SamplingConfig {
            temperature: 0.8,
            top_k: Some(40),
            top_p: None,
            seed: 7,
        },
        ..compiled.default_options(max_new_tokens)
    };
    let (tokens, stats) = compiled.generate(&ids, &opts)?;
    println!(
        "sampled (temperature 0.8, top-k 40, seed 7): {prompt}{}",
        compiled.decode(&tokens)?
    );
    println!(
        "prefill {:.2} ms for {} tokens; decode {:.1} tokens/s over {} tokens ({:?})",
        stats.prefill.as_secs_f64() * 1e3,
        stats.prompt_tokens,
        stats.decode_tokens_per_sec(),
        stats.new_tokens,
        stats.stop
    );
    Ok(())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
