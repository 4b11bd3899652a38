//! A compiled decoder as a [`LanguageModel`]: the executor keeps the KV cache
//! or recurrent state; this adapter tracks the position and feeds tokens.
//!
//! Conventions of Kiln's decoder graphs: the input `tokens: i32[seq]`, the
//! output `logits: f32[seq, vocab]`, state inputs aliased by outputs, the
//! size `past` (tokens already in the state, given by the caller) and, for a
//! fixed-capacity KV cache, `ctx` (its capacity, bound when the state is
//! allocated).

use crate::jit::{Executable, KilnError};
use kiln_ir::{Bindings, Tensor};
use kiln_runtime::generate::{GenerateError, LanguageModel};
use std::collections::BTreeMap;

/// A compiled model ready to continue sequences.
pub struct CompiledLm {
    exe: Executable,
    /// Graphs without state see the whole sequence every call.
    stateless: bool,
    history: Vec<u32>,
    vocab: usize,
    /// The capacity of the cache, for graphs with a `ctx` size.
    ctx: Option<usize>,
    uses_past: bool,
    past: usize,
}

impl CompiledLm {
    /// Wraps a compiled decoder. `ctx` is the KV-cache capacity for graphs
    /// that have one (ignored otherwise).
    pub fn new(exe: Executable, ctx: usize) -> Result<CompiledLm, KilnError> {
        let graph = exe.kernel_graph();
        let bad = |m: String| KilnError::Model(m);
        let tokens = graph
            .input("tokens")
            .ok_or_else(|| bad("the model has no `tokens` input".into()))?;
        let tokens_ty = graph.ty(tokens);
        if tokens_ty.rank() != 1 || tokens_ty.dtype != kiln_ir::DType::I32 {
            return Err(bad(format!("`tokens` must be i32[seq], it is {tokens_ty}")));
        }
        let logits = graph
            .output("logits")
            .map(|o| graph.ty(o.value).clone())
            .ok_or_else(|| bad("the model has no `logits` output".into()))?;
        let vocab = match logits.shape.as_slice() {
            [_, v] => v.as_const().map(|v| v as usize),
            _ => None,
        }
        .ok_or_else(|| bad(format!("`logits` must be f32[seq, vocab], it is {logits}")))?;
        let symbols = &exe.plan().symbols;
        let has = |s: &str| symbols.iter().any(|x| x == s);
        let mut lm = CompiledLm {
            stateless: exe.state_names().is_empty(),
            history: Vec::new(),
            uses_past: has("past"),
            ctx: has("ctx").then_some(ctx),
            exe,
            vocab,
            past: 0,
        };
        lm.reset_state()?;
        Ok(lm)
    }

    fn reset_state(&mut self) -> Result<(), KilnError> {
        let mut sizes = Bindings::new();
        if let Some(c) = self.ctx {
            sizes.insert("ctx".into(), c as i64);
        }
        if !self.stateless {
            self.exe.init_state(&sizes)?;
        }
        self.history.clear();
        self.past = 0;
        Ok(())
    }

    /// Runs `tokens` after those already seen; returns all their logits
    /// (`[tokens.len(), vocab]`, row-major).
    pub fn forward_all(&mut self, tokens: &[u32]) -> Result<Tensor, KilnError> {
        if let Some(c) = self.ctx {
            if self.past + tokens.len() > c {
                return Err(KilnError::Model(format!(
                    "{} tokens after {} exceed the context of {c}",
                    tokens.len(),
                    self.past
                )));
            }
        }
        let mut sizes = Bindings::new();
        if self.uses_past {
            sizes.insert("past".into(), self.past as i64);
        }
        if let Some(c) = self.ctx {
            sizes.insert("ctx".into(), c as i64);
        }
        // A stateless graph reruns the whole sequence and keeps the new rows.
        let feed: &[u32] = if self.stateless {
            self.history.extend_from_slice(tokens);
            &self.history
        } else {
            tokens
        };
        let ids: Vec<i32> = feed.iter().map(|&t| t as i32).collect();
        let input = Tensor::i32(vec![ids.len()], ids).expect("length matches");
        let inputs = BTreeMap::from([("tokens".to_string(), input)]);
        let mut out = if self.stateless {
            self.exe.run_with(&inputs, &sizes)?
        } else {
            self.exe.step(&inputs, &sizes)?
        };
        self.past += tokens.len();
        let logits = out
            .remove("logits")
            .ok_or_else(|| KilnError::Model("the model returned no `logits`".into()))?;
        if !self.stateless {
            return Ok(logits);
        }
        let all = logits.to_f32_vec();
        let keep = tokens.len() * self.vocab;
        Ok(Tensor::f32(
            vec![tokens.len(), self.vocab],
            all[all.len() - keep..].to_vec(),
        )
        .expect("rows of the logits"))
    }

    /// Tokens seen since the last reset.
    pub fn position(&self) -> usize {
        self.past
    }

    pub fn executable(&self) -> &Executable {
        &self.exe
    }
}

impl LanguageModel for CompiledLm {
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
        let logits = self
            .forward_all(tokens)
            .map_err(|e| GenerateError::Model(e.to_string()))?;
        let v = logits.to_f32_vec();
        Ok(v[v.len() - self.vocab..].to_vec())
    }
}
