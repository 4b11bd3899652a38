//! `kiln run`: the main job — compile a model (by default the trained model
//! embedded in the binary) for the CPU and generate text from a prompt.

use super::generate::{compile, stream, Common};
use anyhow::bail;
use kiln_ir::{tensor::rel_l2, Tensor};
use kiln_passes::PassOptions;

#[derive(clap::Args)]
pub struct Args {
    /// `default` (the embedded trained model), a built-in model or a Hugging Face directory.
    #[arg(long, default_value = kiln::model::DEFAULT_MODEL)]
    model: String,
    #[command(flatten)]
    common: Common,
    /// Also run the reference interpreter on the prompt and print the
    /// relative L2 difference of the logits (fails above 1e-4). With
    /// `--weights f16|bf16` the interpreter rounds the weights the same way.
    #[arg(long)]
    check: bool,
}

pub fn run(mut args: Args, passes: PassOptions) -> anyhow::Result<()> {
    let weights = passes.weights;
    let c = &mut args.common;
    if c.prompt.is_none() && c.tokens.is_none() {
        c.prompt = Some("And God said".into());
    }
    let (model, mut lm, compile_ms) =
        compile(&args.model, c.sampling.seed, c.threads, c.ctx, passes)?;
    let r = lm.executable().report();
    eprintln!(
        "kiln: {} — {} kernels, {} steps, compiled in {:.0} ms",
        model.name, r.kernels, r.steps, compile_ms
    );
    if let Some(p) = &c.prompt {
        print!("{p}");
    }
    stream(&model, &mut lm, c, 64)?;
    if args.check {
        let prompt: Vec<u32> = match (&c.tokens, &model.codec) {
            (Some(t), _) => t.clone(),
            (None, Some(codec)) => codec.encode(c.prompt.as_deref().unwrap_or_default())?,
            (None, None) => bail!("--check needs --tokens for a model without a tokenizer"),
        };
        kiln_runtime::generate::LanguageModel::reset(&mut lm).map_err(anyhow::Error::msg)?;
        let compiled = lm.forward_all(&prompt)?.to_f64_vec();
        // With narrow weights the oracle rounds them the same way.
        let reference: Tensor = match weights {
            Some(to) => kiln::model::reference_logits_narrow(&model, &prompt, to)?,
            None => kiln::model::reference_logits(&model, &prompt)?,
        };
        let err = rel_l2(&compiled, &reference.to_f64_vec());
        eprintln!(
            "check: compiled vs reference interpreter on the {}-token prompt: relative L2 error {err:.2e}",
            prompt.len()
        );
        if err.is_nan() || err > 1e-4 {
            bail!("compiled logits differ from the reference interpreter (relative L2 {err:.2e} > 1e-4)");
        }
    }
    Ok(())
}
