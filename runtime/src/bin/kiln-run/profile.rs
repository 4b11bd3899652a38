//! `--profile`: where the timed generation's time went, kernel by kernel,
//! the prefill and the decode apart (printed to standard error).

use kiln_runtime::generate::{GenerateError, LanguageModel};
use kiln_runtime::profile::{Profile, Profiler};

/// A model whose executor adds to `profiler`: the tally of its first
/// forward (the prefill) is set aside, the rest is the decode.
pub struct Profiled<'a> {
    inner: &'a mut dyn LanguageModel,
    profiler: Profiler,
    prefill: Option<Profile>,
}

impl<'a> Profiled<'a> {
    pub fn new(inner: &'a mut dyn LanguageModel, profiler: Profiler) -> Self {
        profiler.take();
        Profiled {
            inner,
            profiler,
            prefill: None,
        }
    }

    /// The prefill's tally and the decode's.
    pub fn finish(self) -> (Profile, Profile) {
        let rest = self.profiler.take();
        match self.prefill {
            Some(prefill) => (prefill, rest),
            None => (rest, Profile::default()),
        }
    }
}

impl LanguageModel for Profiled<'_> {
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn max_context(&self) -> Option<usize> {
        self.inner.max_context()
    }
    fn reset(&mut self) -> Result<(), GenerateError> {
        self.inner.reset()
    }
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
        let logits = self.inner.forward(tokens);
        if self.prefill.is_none() {
            self.prefill = Some(self.profiler.take());
        }
        logits
    }
}

/// Both tables, each under a heading with its token count.
pub fn report(prefill: &Profile, decode: &Profile, prompt_tokens: usize) -> String {
    let mut out = format!(
        "profile: prefill ({prompt_tokens} tokens)\n{}",
        prefill.table()
    );
    if decode.calls > 0 {
        out += &format!(
            "profile: decode ({} steps of one token)\n{}",
            decode.calls,
            decode.table()
        );
    }
    out
}
