//! Compiled decoders as language models, and generation in-process.
//!
//! - [`CompiledLm`]: a JIT-compiled [`Executable`] as a [`LanguageModel`],
//!   through the runtime's [`ExecutorLm`] (the adapter `kiln-run` uses on an
//!   artifact): the executor keeps the KV cache or recurrent state; the
//!   adapter tracks the position and feeds tokens.
//! - [`Executable::generate`]: generation from token ids on any compiled
//!   decoder.
//! - [`jit_model`] → [`CompiledModel`]: a loaded model (graph, weights,
//!   tokenizer, special tokens, sampling defaults) compiled in-process, with
//!   text in and text out.
//!
//! The decoder conventions (module docs of [`kiln_runtime::lm`]): the input
//! `tokens: i32[seq]`, the output `logits: f32[seq, vocab]`, state inputs
//! aliased by outputs, the sizes `past` and `ctx`.

use crate::jit::{jit, CompileOptions, Executable, KilnError};
use crate::model::{LoadedModel, TextCodec};
use kiln_ir::Tensor;
use kiln_runtime::generate::{
    generate, GenerateError, GenerateOptions, GenerationStats, LanguageModel,
};
use kiln_runtime::lm::{ExecutorLm, LmError};
pub use kiln_runtime::lm::{Feed, DEFAULT_CONTEXT};
use kiln_runtime::sampler::SamplingConfig;

impl From<LmError> for KilnError {
    fn from(e: LmError) -> KilnError {
        match e {
            LmError::Runtime(e) => KilnError::Runtime(e),
            e => KilnError::Model(e.to_string()),
        }
    }
}

fn generation_error(e: GenerateError) -> KilnError {
    KilnError::Model(format!("generation: {e}"))
}

/// A compiled model ready to continue sequences.
pub struct CompiledLm(ExecutorLm<Box<Executable>>);

impl CompiledLm {
    /// Wraps a compiled decoder and allocates its state. `ctx` is the
    /// KV-cache capacity for graphs that have one (ignored otherwise).
    pub fn new(exe: Executable, ctx: usize) -> Result<CompiledLm, KilnError> {
        Ok(CompiledLm(ExecutorLm::new(Box::new(exe), ctx)?))
    }

    /// Runs `tokens` after those already seen; returns all their logits
    /// (`[tokens.len(), vocab]`, row-major).
    pub fn forward_all(&mut self, tokens: &[u32]) -> Result<Tensor, KilnError> {
        Ok(self.0.forward_all(tokens)?)
    }

    /// The logits of every token of `tokens` from an empty state, fed as
    /// one prefill or token by token (`kiln logits`).
    pub fn sequence_logits(&mut self, tokens: &[u32], feed: Feed) -> Result<Tensor, KilnError> {
        Ok(self.0.sequence_logits(tokens, feed)?)
    }

    /// Tokens seen since the last reset.
    pub fn position(&self) -> usize {
        self.0.position()
    }

    pub fn executable(&self) -> &Executable {
        self.0.executor()
    }

    /// The runtime's adapter this wraps.
    pub fn adapter(&mut self) -> &mut ExecutorLm<Box<Executable>> {
        &mut self.0
    }
}

impl LanguageModel for CompiledLm {
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }

    fn max_context(&self) -> Option<usize> {
        self.0.max_context()
    }

    fn reset(&mut self) -> Result<(), GenerateError> {
        self.0.reset()
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
        self.0.forward(tokens)
    }
}

impl Executable {
    /// Generates up to `opts.max_new_tokens` tokens after `prompt` with this
    /// compiled decoder, from an empty state; returns the new tokens and
    /// timings. A KV cache is sized for exactly the prompt and the new
    /// tokens.
    ///
    /// ```no_run
    /// use kiln::runtime::generate::GenerateOptions;
    ///
    /// let model = kiln::models::builtin("llama-tiny").unwrap();
    /// let graph = (model.build)()?;
    /// let mut exe = kiln::jit(&graph, &(model.weights)(0), &Default::default())?;
    /// let opts = GenerateOptions { max_new_tokens: 8, ..Default::default() };
    /// let (tokens, stats) = exe.generate(&[1, 2, 3], &opts)?;
    /// println!("{tokens:?}: {:.0} tokens/s", stats.decode_tokens_per_sec());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<(Vec<u32>, GenerationStats), KilnError> {
        self.generate_streaming(prompt, opts, &mut |_| true)
    }

    /// [`Executable::generate`], calling `on_token` with each token as soon
    /// as it is chosen (return `false` to stop).
    pub fn generate_streaming(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<(Vec<u32>, GenerationStats), KilnError> {
        let ctx = (prompt.len() + opts.max_new_tokens).max(1);
        let mut lm = ExecutorLm::new(self, ctx)?;
        generate(&mut lm, prompt, opts, on_token).map_err(generation_error)
    }
}

/// Compiles a loaded model in-process: the graph for the CPU, with its
/// tokenizer, special tokens and sampling defaults, a KV cache of the
/// model's maximum context (or [`DEFAULT_CONTEXT`]).
///
/// ```no_run
/// let model = kiln::model::load("default", 0)?;
/// let mut compiled = kiln::jit_model(&model, &kiln::CompileOptions::default())?;
/// println!("{}", compiled.generate_text("And God said", 32)?);
/// # Ok::<(), kiln::KilnError>(())
/// ```
pub fn jit_model(model: &LoadedModel, opts: &CompileOptions) -> Result<CompiledModel, KilnError> {
    let ctx = model.max_context.unwrap_or(DEFAULT_CONTEXT);
    jit_model_with_context(model, opts, ctx)
}

/// [`jit_model`] with a KV cache of `ctx` tokens.
pub fn jit_model_with_context(
    model: &LoadedModel,
    opts: &CompileOptions,
    ctx: usize,
) -> Result<CompiledModel, KilnError> {
    let exe = jit(&model.graph, &model.weights, opts)?;
    Ok(CompiledModel {
        name: model.name.clone(),
        lm: CompiledLm::new(exe, ctx)?,
        codec: model.codec.as_ref().map(|c| match c {
            TextCodec::Hf(t) => TextCodec::Hf(t.clone()),
            TextCodec::Bytes => TextCodec::Bytes,
        }),
        eos_token_ids: model.eos_token_ids.clone(),
        sampling: model.sampling.clone(),
    })
}

/// A model compiled in-process with what text generation needs; see
/// [`jit_model`].
pub struct CompiledModel {
    name: String,
    lm: CompiledLm,
    codec: Option<TextCodec>,
    eos_token_ids: Vec<u32>,
    sampling: SamplingConfig,
}

impl CompiledModel {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text codec, `None` for a model that takes token ids only.
    pub fn codec(&self) -> Option<&TextCodec> {
        self.codec.as_ref()
    }

    fn text_codec(&self) -> Result<&TextCodec, KilnError> {
        self.codec
            .as_ref()
            .ok_or_else(|| KilnError::Model(format!("`{}` has no tokenizer", self.name)))
    }

    /// The token ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, KilnError> {
        self.text_codec()?.encode(text)
    }

    /// The text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String, KilnError> {
        self.text_codec()?.decode(ids)
    }

    /// The logits of `tokens` (`[len, vocab]`) from an empty state, in one
    /// prefill.
    pub fn logits(&mut self, tokens: &[u32]) -> Result<Tensor, KilnError> {
        self.lm.sequence_logits(tokens, Feed::Prefill)
    }

    /// Generation settings from the model: its sampling defaults
    /// (`generation_config.json`; greedy without one) and its end tokens.
    pub fn default_options(&self, max_new_tokens: usize) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens,
            sampling: self.sampling.clone(),
            stop_tokens: self.eos_token_ids.clone(),
        }
    }

    /// Generates after the token ids `prompt`, from an empty state.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<(Vec<u32>, GenerationStats), KilnError> {
        generate(&mut self.lm, prompt, opts, &mut |_| true).map_err(generation_error)
    }

    /// Continues `prompt` with up to `max_new_tokens` tokens (the model's
    /// sampling defaults, stopping at an end token); returns the new text.
    pub fn generate_text(
        &mut self,
        prompt: &str,
        max_new_tokens: usize,
    ) -> Result<String, KilnError> {
        let ids = self.encode(prompt)?;
        let opts = self.default_options(max_new_tokens);
        let (out, _) = self.generate(&ids, &opts)?;
        self.decode(&out)
    }

    /// The language model, for [`kiln_runtime::generate::generate`] with a
    /// streaming callback.
    pub fn lm(&mut self) -> &mut CompiledLm {
        &mut self.lm
    }

    pub fn executable(&self) -> &Executable {
        self.lm.executable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::load;

    fn greedy(n: usize) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: n,
            ..Default::default()
        }
    }

    /// `Executable::generate` (a cache sized for the request) produces what
    /// the generation loop produces on a `CompiledLm` with a large cache, and
    /// streams the same tokens.
    #[test]
    fn executable_generate_matches_the_adapter() {
        let model = load("llama-tiny", 0).unwrap();
        let mut exe = jit(&model.graph, &model.weights, &Default::default()).unwrap();
        let prompt = [5, 17, 3, 60, 2];
        let (ours, stats) = exe.generate(&prompt, &greedy(6)).unwrap();
        assert_eq!((stats.prompt_tokens, stats.new_tokens), (5, 6));
        let mut streamed = Vec::new();
        let (again, _) = exe
            .generate_streaming(&prompt, &greedy(6), &mut |t| {
                streamed.push(t);
                true
            })
            .unwrap();
        assert_eq!(
            (&again, &streamed),
            (&ours, &ours),
            "reproducible, streamed"
        );
        let other = jit(&model.graph, &model.weights, &Default::default()).unwrap();
        let mut lm = CompiledLm::new(other, 64).unwrap();
        let (theirs, _) = generate(&mut lm, &prompt, &greedy(6), &mut |_| true).unwrap();
        assert_eq!(ours, theirs);
        // A token outside the vocabulary: the loop's error, not a panic.
        let e = exe.generate(&[300], &greedy(2)).unwrap_err();
        assert!(e.to_string().contains("outside the vocabulary"), "{e}");
    }

    /// Text in and out on a byte-vocabulary model; logits are the
    /// executable's; no tokenizer is an error naming the model.
    #[test]
    fn compiled_model_text_and_logits() {
        let model = load("tiny-decoder", 0).unwrap();
        let mut m = jit_model(&model, &Default::default()).unwrap();
        assert_eq!(m.encode("Hi").unwrap(), [72, 105]);
        let text = m.generate_text("Hi", 8).unwrap();
        let (ids, _) = m.generate(&[72, 105], &m.default_options(8)).unwrap();
        assert_eq!(text, m.decode(&ids).unwrap());
        let logits = m.logits(&[72, 105, 33]).unwrap();
        assert_eq!(logits.shape, [3, 256]);
        let mut exe = jit(&model.graph, &model.weights, &Default::default()).unwrap();
        let tokens = Tensor::i32(vec![3], vec![72, 105, 33]).unwrap();
        let out = exe.run(&[("tokens".to_string(), tokens)].into()).unwrap();
        assert_eq!(logits, out["logits"]);

        let gqa = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/llama-gqa-tied");
        let model = load(gqa, 0).unwrap();
        let mut m = jit_model_with_context(&model, &Default::default(), 16).unwrap();
        let e = m.generate_text("Hi", 4).unwrap_err();
        assert!(e.to_string().contains("has no tokenizer"), "{e}");
        let e = m.generate(&[1; 17], &greedy(1)).unwrap_err();
        assert!(e.to_string().contains("at most 16"), "{e}");
    }
}
