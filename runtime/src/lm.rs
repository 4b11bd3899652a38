//! A compiled decoder as a [`LanguageModel`], over any [`Executor`]: the
//! executor keeps the KV cache or recurrent state; this adapter tracks the
//! position and feeds tokens. `kiln generate` (JIT), `kiln-run` (an
//! artifact) and the JIT API all drive models through it.
//!
//! Conventions of Kiln's decoder graphs, read from the plan:
//! - the input `tokens: i32[seq]` and the output `logits: f32[seq, vocab]`;
//! - state inputs aliased by outputs (kept by the executor between calls);
//! - the size `past` (tokens already in the state, given by the caller) and,
//!   for a fixed-capacity KV cache, `ctx` (its capacity, bound when the
//!   state is allocated);
//! - a graph without state sees the whole sequence every call.
//!
//! [`text`] turns the generated tokens back into text as they stream.

pub mod text;

use crate::error::RuntimeError;
use crate::executor::Executor;
use crate::generate::{GenerateError, LanguageModel};
use kiln_ir::{Bindings, DType, Tensor};
use std::collections::BTreeMap;
use std::ops::DerefMut;

/// The KV-cache capacity when neither the caller nor the model says.
pub const DEFAULT_CONTEXT: usize = 2048;

/// Why a plan cannot serve as a language model, or a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LmError {
    /// The plan does not follow the decoder conventions (module docs).
    #[error("plan `{plan}` is not a decoder: {message}")]
    NotADecoder { plan: String, message: String },
    #[error("{tokens} tokens after {past} exceed the context of {ctx}")]
    ContextFull {
        tokens: usize,
        past: usize,
        ctx: usize,
    },
    #[error("the token list is empty")]
    NoTokens,
    #[error("token {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { token: u32, vocab: usize },
    #[error("the model returned no `logits`")]
    NoLogits,
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// How [`ExecutorLm::sequence_logits`] feeds a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    /// One call over the whole sequence (prefill).
    Prefill,
    /// One call per token, through the decode path.
    Decode,
}

/// A decoder plan bound to an executor, ready to continue sequences.
///
/// `X` owns or borrows the executor: `Box<dyn Executor>` (an artifact
/// loaded onto a device), `Box<E>` or `&mut E` for a concrete executor.
pub struct ExecutorLm<X = Box<dyn Executor>>
where
    X: DerefMut,
    X::Target: Executor,
{
    exec: X,
    /// Graphs without state see the whole sequence every call.
    stateless: bool,
    /// The plan has `last_logits: f32[1, vocab]`.
    has_last: bool,
    history: Vec<u32>,
    vocab: usize,
    /// The capacity of the cache, for plans with a `ctx` size.
    ctx: Option<usize>,
    uses_past: bool,
    past: usize,
}

impl<X> ExecutorLm<X>
where
    X: DerefMut,
    X::Target: Executor,
{
    /// Wraps an executor whose plan follows the decoder conventions, and
    /// allocates its state. `ctx` is the KV-cache capacity for plans that
    /// have one (ignored otherwise).
    pub fn new(exec: X, ctx: usize) -> Result<Self, LmError> {
        let plan = exec.plan();
        let bad = |message: String| LmError::NotADecoder {
            plan: plan.name.clone(),
            message,
        };
        let tokens = plan
            .inputs
            .iter()
            .find(|i| i.name == "tokens")
            .ok_or_else(|| bad("it has no `tokens` input".into()))?;
        if tokens.ty.rank() != 1 || tokens.ty.dtype != DType::I32 {
            return Err(bad(format!(
                "`tokens` must be i32[seq], it is {}",
                tokens.ty
            )));
        }
        let logits = plan
            .outputs
            .iter()
            .find(|o| o.name == "logits")
            .and_then(|o| plan.buffers.get(o.buffer))
            .map(|b| &b.ty)
            .ok_or_else(|| bad("it has no `logits` output".into()))?;
        let vocab = match (logits.dtype, logits.shape.as_slice()) {
            (DType::F32, [_, v]) => v.as_const().filter(|&v| v > 0).map(|v| v as usize),
            _ => None,
        }
        .ok_or_else(|| bad(format!("`logits` must be f32[seq, vocab], it is {logits}")))?;
        // `last_logits: f32[1, vocab]`, when the model has it, is what
        // generation asks for (the built-in models all have it).
        let has_last = plan
            .outputs
            .iter()
            .find(|o| o.name == "last_logits")
            .and_then(|o| plan.buffers.get(o.buffer))
            .is_some_and(|b| {
                b.ty.dtype == DType::F32
                    && b.ty.shape.len() == 2
                    && b.ty.shape[0].as_const() == Some(1)
                    && b.ty.shape[1].as_const() == Some(vocab as i64)
            });
        let has = |s: &str| plan.symbols.iter().any(|x| x == s);
        let (uses_past, ctx) = (has("past"), has("ctx").then_some(ctx));
        let stateless = exec.state_names().is_empty();
        let mut lm = ExecutorLm {
            exec,
            stateless,
            has_last,
            history: Vec::new(),
            vocab,
            ctx,
            uses_past,
            past: 0,
        };
        lm.reset_state()?;
        Ok(lm)
    }

    /// Forgets the sequence: zero-filled state, position 0.
    pub fn reset_state(&mut self) -> Result<(), LmError> {
        if !self.stateless {
            let sizes = self.sizes();
            self.exec.init_state(&sizes)?;
        }
        self.history.clear();
        self.past = 0;
        Ok(())
    }

    /// The sizes every call binds besides those the inputs determine.
    fn sizes(&self) -> Bindings {
        let mut sizes = Bindings::new();
        if self.uses_past {
            sizes.insert("past".into(), self.past as i64);
        }
        if let Some(c) = self.ctx {
            sizes.insert("ctx".into(), c as i64);
        }
        sizes
    }

    /// Runs `tokens` after those already seen; returns the logits of the
    /// last (`vocab` values): what generation needs. A stateful model with a
    /// `last_logits` output is asked for that alone, which skips the LM
    /// head on every other position.
    pub fn forward_last(&mut self, tokens: &[u32]) -> Result<Vec<f32>, LmError> {
        if !self.has_last || self.stateless {
            let mut v = self.forward_all(tokens)?.to_f32_vec();
            return Ok(v.split_off(v.len() - self.vocab));
        }
        let mut out = self.call(tokens, Some("last_logits"))?;
        let logits = out.remove("last_logits").ok_or(LmError::NoLogits)?;
        Ok(logits.to_f32_vec())
    }

    /// Runs `tokens` after those already seen; returns all their logits
    /// (`[tokens.len(), vocab]`, row-major).
    pub fn forward_all(&mut self, tokens: &[u32]) -> Result<Tensor, LmError> {
        let mut out = self.call(tokens, None)?;
        let logits = out.remove("logits").ok_or(LmError::NoLogits)?;
        if !self.stateless {
            return Ok(logits);
        }
        let all = logits.to_f32_vec();
        let keep = tokens.len() * self.vocab;
        let rows = all[all.len().saturating_sub(keep)..].to_vec();
        Tensor::f32(vec![tokens.len(), self.vocab], rows).map_err(|e| LmError::NotADecoder {
            plan: self.exec.plan().name.clone(),
            message: format!("its `logits` have the wrong size: {e}"),
        })
    }

    /// Checks and feeds `tokens`; returns the outputs (only `only`, when
    /// given, on a stateful model).
    fn call(
        &mut self,
        tokens: &[u32],
        only: Option<&str>,
    ) -> Result<BTreeMap<String, Tensor>, LmError> {
        if tokens.is_empty() {
            return Err(LmError::NoTokens);
        }
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(LmError::TokenOutOfRange {
                token,
                vocab: self.vocab,
            });
        }
        if let Some(ctx) = self.ctx {
            if self.past + tokens.len() > ctx {
                return Err(LmError::ContextFull {
                    tokens: tokens.len(),
                    past: self.past,
                    ctx,
                });
            }
        }
        let sizes = self.sizes();
        // A stateless graph reruns the whole sequence and keeps the new rows.
        let feed: &[u32] = if self.stateless {
            self.history.extend_from_slice(tokens);
            &self.history
        } else {
            tokens
        };
        let ids: Vec<i32> = feed.iter().map(|&t| t as i32).collect();
        let input = Tensor::i32(vec![ids.len()], ids).expect("one id per element");
        let inputs = BTreeMap::from([("tokens".to_string(), input)]);
        let result = match (self.stateless, only) {
            (true, _) => self.exec.run_with(&inputs, &sizes),
            (false, None) => self.exec.step(&inputs, &sizes),
            (false, Some(name)) => self.exec.step_only(&inputs, &sizes, &[name]),
        };
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                // The history must not hold tokens the model never saw.
                if self.stateless {
                    self.history.truncate(self.history.len() - tokens.len());
                }
                return Err(e.into());
            }
        };
        self.past += tokens.len();
        Ok(out)
    }

    /// The logits of every token of `tokens` (`[len, vocab]`) from an empty
    /// state, fed as one prefill or token by token.
    pub fn sequence_logits(&mut self, tokens: &[u32], feed: Feed) -> Result<Tensor, LmError> {
        self.reset_state()?;
        match feed {
            Feed::Prefill => self.forward_all(tokens),
            Feed::Decode => {
                if tokens.is_empty() {
                    return Err(LmError::NoTokens);
                }
                let mut rows = Vec::with_capacity(tokens.len() * self.vocab);
                for &t in tokens {
                    rows.extend(self.forward_all(&[t])?.to_f32_vec());
                }
                Ok(Tensor::f32(vec![tokens.len(), self.vocab], rows).expect("one row per token"))
            }
        }
    }

    /// Tokens seen since the last reset.
    pub fn position(&self) -> usize {
        self.past
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// The KV-cache capacity, for plans that have one.
    pub fn context(&self) -> Option<usize> {
        self.ctx
    }

    pub fn executor(&self) -> &X::Target {
        &self.exec
    }

    /// The executor, e.g. to read a state. Changing its state behind the
    /// adapter's back desynchronizes the position: reset afterwards.
    pub fn executor_mut(&mut self) -> &mut X::Target {
        &mut self.exec
    }

    pub fn into_executor(self) -> X {
        self.exec
    }
}

impl<X> LanguageModel for ExecutorLm<X>
where
    X: DerefMut,
    X::Target: Executor,
{
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_context(&self) -> Option<usize> {
        self.ctx
    }

    fn reset(&mut self) -> Result<(), GenerateError> {
        self.reset_state()
            .map_err(|e| GenerateError::Model(e.to_string()))
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
        self.forward_last(tokens)
            .map_err(|e| GenerateError::Model(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
