//! `kiln logits`: the logits of a token sequence, from one prefill or token
//! by token through the decode path, written as safetensors (`logits`, f32
//! `[seq, vocab]`).

use super::generate::compile;
use anyhow::{bail, Context};
use kiln::lm::Feed;
use kiln_passes::PassOptions;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// `default`, a built-in model or a Hugging Face model directory.
    #[arg(long)]
    model: String,
    /// Token ids, separated by commas.
    #[arg(long, value_delimiter = ',', required = true)]
    tokens: Vec<u32>,
    /// Output file (safetensors with one tensor, `logits`).
    #[arg(long)]
    out: PathBuf,
    /// Feed the tokens one at a time through the decode path instead of one prefill.
    #[arg(long)]
    decode: bool,
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// KV-cache capacity (default: the model's maximum context).
    #[arg(long)]
    ctx: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args, passes: PassOptions) -> anyhow::Result<()> {
    if args.tokens.is_empty() {
        bail!("--tokens is empty");
    }
    let (_, mut lm, _) = compile(&args.model, args.seed, args.threads, args.ctx, passes)?;
    let vocab = kiln_runtime::generate::LanguageModel::vocab_size(&lm);
    if let Some(&t) = args.tokens.iter().find(|&&t| t as usize >= vocab) {
        bail!("token {t} is outside the vocabulary of {vocab}");
    }
    let feed = if args.decode {
        Feed::Decode
    } else {
        Feed::Prefill
    };
    let logits = lm.sequence_logits(&args.tokens, feed)?;
    kiln_models::hf::save_safetensors(&args.out, &BTreeMap::from([("logits".to_string(), logits)]))
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}
