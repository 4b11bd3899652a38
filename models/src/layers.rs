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
/// `[vocab, hidden]`, or the token embedding `embed` when tied.
pub(crate) fn lm_head(
    b: &ModelBuilder,
    x: &Var,
    norm: &str,
    embed: &Var,
    tied: bool,
    eps: f64,
) -> Var {
    let _s = b.scope("lm_head");
    let shape = embed.shape();
    let (vocab, hidden) = (shape[0].clone(), shape[1].clone());
    let xn = x.rms_norm(&b.param(norm, DType::F32, vec![hidden.clone()]), eps);
    let head = if tied {
        embed.clone()
    } else {
        b.param("lm_head.weight", DType::F32, vec![vocab, hidden])
    };
    linear(&xn, &head, None)
}
