//! Building blocks the models share, with Hugging Face's conventions.

use kiln_ir::dsl::{ModelBuilder, Var};
use kiln_ir::{DType, Dim};

/// `x · wᵀ (+ b)`: a Hugging Face linear layer with weight `[out, in]`.
pub(crate) fn linear(x: &Var, w: &Var, bias: Option<&Var>) -> Var {
    let y = x.matmul(&w.transpose(0, 1));
    match bias {
        Some(b) => y + b,
        None => y,
    }
}

/// An f32 parameter with constant dims.
pub(crate) fn param(b: &ModelBuilder, name: &str, dims: &[usize]) -> Var {
    b.param(
        name,
        DType::F32,
        dims.iter().map(|&d| Dim::from(d)).collect(),
    )
}

/// The final RMS norm (weight `norm`) and the LM head: `lm_head.weight`
/// `[vocab, hidden]`, or the token embedding `embed` when tied. Returns the
/// logits of every position (`[seq, vocab]`) and of the last one alone
/// (`[1, vocab]`): a model outputs both, as `logits` and `last_logits`, so
/// that generation can ask for the next token's logits without paying for
/// the LM head on a whole prompt.
pub(crate) fn lm_head(
    b: &ModelBuilder,
    x: &Var,
    norm: &str,
    embed: &Var,
    tied: bool,
    eps: f64,
) -> (Var, Var) {
    let _s = b.scope("lm_head");
    let shape = embed.shape();
    let (vocab, hidden) = (shape[0].clone(), shape[1].clone());
    let norm_w = b.param(norm, DType::F32, vec![hidden.clone()]);
    let head = if tied {
        embed.clone()
    } else {
        b.param("lm_head.weight", DType::F32, vec![vocab, hidden])
    };
    let seq = x.shape()[0].clone();
    let last = x.slice(0, &seq - &Dim::constant(1), seq);
    let all = linear(&x.rms_norm(&norm_w, eps), &head, None);
    let next = linear(&last.rms_norm(&norm_w, eps), &head, None);
    (all, next)
}
