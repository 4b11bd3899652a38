//! `kiln-run logits`: the logits of a token sequence, from one prefill or
//! token by token through the decode path, written as safetensors
//! (`logits`, f32 `[seq, vocab]`) — the file `kiln logits` writes.

use crate::args::LogitsArgs;
use anyhow::{bail, Context};
use kiln_runtime::lm::Feed;
use std::collections::BTreeMap;

pub fn run(args: LogitsArgs) -> anyhow::Result<()> {
    if args.tokens.is_empty() {
        bail!("--tokens is empty");
    }
    let (artifact, mut lm) = crate::load::load(&args.artifact, &args.target)?;
    let feed = if args.decode {
        Feed::Decode
    } else {
        Feed::Prefill
    };
    let logits = lm
        .sequence_logits(&args.tokens, feed)
        .with_context(|| artifact.dir().display().to_string())?;
    let tensors = BTreeMap::from([("logits".to_string(), logits)]);
    kiln_models::hf::save_safetensors(&args.out, &tensors)
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}
