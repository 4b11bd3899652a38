//! The generation loop: prefill the prompt, then pick and feed one token at a
//! time, streaming each as it is produced, until a stop token, the token
//! budget or the model's context runs out.

use crate::sampler::{Sampler, SamplingConfig, SamplingError};
use std::time::{Duration, Instant};

/// A model that continues a sequence: it keeps its own cache or recurrent
/// state between calls.
pub trait LanguageModel {
    fn vocab_size(&self) -> usize;
    /// Longest sequence the model can hold (`None`: unbounded, e.g. a recurrent model).
    fn max_context(&self) -> Option<usize>;
    /// Forgets the sequence so far.
    fn reset(&mut self) -> Result<(), GenerateError>;
    /// Feeds `tokens` after those already seen; returns the logits
    /// (`vocab_size` values) that follow the last one.
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError>;
}

/// Generation settings.
#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingConfig,
    /// Generation ends when one of these is produced (it is not emitted).
    pub stop_tokens: Vec<u32>,
}

/// Why generation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    MaxNewTokens,
    StopToken(u32),
    ContextFull,
    /// The token callback asked to stop.
    Stopped,
}

/// What a generation did and how fast.
#[derive(Clone, Debug)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// Time to process the prompt and produce the first logits.
    pub prefill: Duration,
    /// Time spent producing the tokens after the first.
    pub decode: Duration,
    /// The model's time for each decode step (one `forward` of one token),
    /// in order: `decode` less sampling and the token callback. What a
    /// latency percentile, or a driver that runs something between steps,
    /// reads.
    pub decode_steps: Vec<Duration>,
    pub stop: StopReason,
}

impl GenerationStats {
    /// Decode speed: tokens after the first over the time they took.
    pub fn decode_tokens_per_sec(&self) -> f64 {
        let n = self.new_tokens.saturating_sub(1) as f64;
        if n == 0.0 || self.decode.is_zero() {
            return 0.0;
        }
        n / self.decode.as_secs_f64()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {prompt} tokens but the model holds at most {max}")]
    PromptTooLong { prompt: usize, max: usize },
    #[error("token {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { token: u32, vocab: usize },
    #[error("the model returned {got} logits, expected {expected}")]
    LogitsSize { got: usize, expected: usize },
    #[error("sampling: {0}")]
    Sampling(#[from] SamplingError),
    #[error("the model failed: {0}")]
    Model(String),
}

/// Generates up to `opts.max_new_tokens` tokens after `prompt`, calling
/// `on_token` with each as soon as it is chosen (return `false` to stop).
/// Returns the new tokens and statistics. The model is reset first.
pub fn generate(
    model: &mut dyn LanguageModel,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<(Vec<u32>, GenerationStats), GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let vocab = model.vocab_size();
    if let Some(&token) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(GenerateError::TokenOutOfRange { token, vocab });
    }
    let max = model.max_context();
    if let Some(max) = max {
        if prompt.len() > max {
            return Err(GenerateError::PromptTooLong {
                prompt: prompt.len(),
                max,
            });
        }
    }
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    model.reset()?;
    let mut stats = GenerationStats {
        prompt_tokens: prompt.len(),
        new_tokens: 0,
        prefill: Duration::ZERO,
        decode: Duration::ZERO,
        // Sized up front: the decode loop does not allocate.
        decode_steps: Vec::with_capacity(opts.max_new_tokens),
        stop: StopReason::MaxNewTokens,
    };
    let mut out = Vec::with_capacity(opts.max_new_tokens);
    if opts.max_new_tokens == 0 {
        return Ok((out, stats));
    }
    let t = Instant::now();
    let mut logits = model.forward(prompt)?;
    stats.prefill = t.elapsed();
    let decode_start = Instant::now();
    let mut len = prompt.len();
    loop {
        if logits.len() != vocab {
            return Err(GenerateError::LogitsSize {
                got: logits.len(),
                expected: vocab,
            });
        }
        let token = sampler.sample(&logits)?;
        if opts.stop_tokens.contains(&token) {
            stats.stop = StopReason::StopToken(token);
            break;
        }
        out.push(token);
        stats.new_tokens += 1;
        if !on_token(token) {
            stats.stop = StopReason::Stopped;
            break;
        }
        if out.len() >= opts.max_new_tokens {
            break;
        }
        if max.is_some_and(|m| len >= m) {
            stats.stop = StopReason::ContextFull;
            break;
        }
        let step = Instant::now();
        logits = model.forward(&[token])?;
        stats.decode_steps.push(step.elapsed());
        len += 1;
    }
    stats.decode = decode_start.elapsed();
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bigram "model": the next token is (last + 1) mod vocab, certainly.
    struct Counter {
        vocab: usize,
        seen: Vec<u32>,
        max: Option<usize>,
    }

    impl LanguageModel for Counter {
        fn vocab_size(&self) -> usize {
            self.vocab
        }
        fn max_context(&self) -> Option<usize> {
            self.max
        }
        fn reset(&mut self) -> Result<(), GenerateError> {
            self.seen.clear();
            Ok(())
        }
        fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
            self.seen.extend_from_slice(tokens);
            let next = (*self.seen.last().unwrap() as usize + 1) % self.vocab;
            let mut l = vec![0.0; self.vocab];
            l[next] = 10.0;
            Ok(l)
        }
    }

    fn counter(max: Option<usize>) -> Counter {
        Counter {
            vocab: 10,
            seen: Vec::new(),
            max,
        }
    }

    #[test]
    fn greedy_streams_tokens_and_feeds_them_back() {
        let mut m = counter(None);
        let mut streamed = Vec::new();
        let opts = GenerateOptions {
            max_new_tokens: 5,
            ..Default::default()
        };
        let (out, stats) = generate(&mut m, &[3], &opts, &mut |t| {
            streamed.push(t);
            true
        })
        .unwrap();
        assert_eq!(out, vec![4, 5, 6, 7, 8]);
        assert_eq!(streamed, out);
        assert_eq!(m.seen, vec![3, 4, 5, 6, 7], "each token fed back once");
        assert_eq!(stats.stop, StopReason::MaxNewTokens);
        assert_eq!(
            stats.decode_steps.len(),
            4,
            "one forward per token after the first"
        );
        assert!(stats.decode_steps.iter().sum::<Duration>() <= stats.decode);
    }

    #[test]
    fn stop_tokens_context_and_callback_end_generation() {
        let opts = GenerateOptions {
            max_new_tokens: 20,
            stop_tokens: vec![6],
            ..Default::default()
        };
        let (out, stats) = generate(&mut counter(None), &[3], &opts, &mut |_| true).unwrap();
        assert_eq!((out, stats.stop), (vec![4, 5], StopReason::StopToken(6)));

        let opts = GenerateOptions {
            max_new_tokens: 20,
            ..Default::default()
        };
        let (out, stats) = generate(&mut counter(Some(4)), &[1, 2], &opts, &mut |_| true).unwrap();
        assert_eq!((out, stats.stop), (vec![3, 4, 5], StopReason::ContextFull));

        let (out, stats) = generate(&mut counter(None), &[1], &opts, &mut |t| t < 3).unwrap();
        assert_eq!((out, stats.stop), (vec![2, 3], StopReason::Stopped));
    }

    #[test]
    fn bad_prompts_are_errors() {
        let opts = GenerateOptions {
            max_new_tokens: 1,
            ..Default::default()
        };
        let mut m = counter(Some(2));
        assert_eq!(
            generate(&mut m, &[], &opts, &mut |_| true).unwrap_err(),
            GenerateError::EmptyPrompt
        );
        assert!(matches!(
            generate(&mut m, &[1, 2, 3], &opts, &mut |_| true),
            Err(GenerateError::PromptTooLong { .. })
        ));
        assert!(matches!(
            generate(&mut m, &[12], &opts, &mut |_| true),
            Err(GenerateError::TokenOutOfRange { token: 12, .. })
        ));
    }
}
