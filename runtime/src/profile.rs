//! Where an executor's time goes, kernel by kernel: what `kiln-run
//! --profile` prints.
//!
//! A [`Profiler`] is handed to an executor ([`crate::Executor::set_profiler`]);
//! each call it runs then adds, per kernel, its launches, their time and the
//! bytes of their operands, and the call's whole time. The caller takes the
//! tally whenever it likes ([`Profiler::take`]), for example once after the
//! prefill and once after the decode, which is what [`Profiled`] does for a
//! generation (`kiln-run --profile`, `kiln generate --profile`).

use crate::generate::{GenerateError, LanguageModel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// One kernel's share of the profiled calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileRow {
    /// The kernel's name in the plan; `copy` for buffer copies.
    pub name: String,
    pub launches: u64,
    /// Wall time of its launches, from the calling thread (a launch split
    /// over threads counts once, start to end).
    pub time: Duration,
    /// The bytes of its operands' and results' buffers, summed over
    /// launches: whole buffers, so a kernel that reads part of one
    /// (attention over a KV cache's first tokens) counts all of it; an
    /// `update_slice` counts its update twice (read, written), not the
    /// buffer it updates.
    pub operand_bytes: u64,
}

/// A tally of executor calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// Kernels in the order they first ran.
    pub rows: Vec<ProfileRow>,
    /// Executor calls.
    pub calls: u64,
    /// Wall time inside those calls, the kernels' included.
    pub total: Duration,
}

impl Profile {
    /// Call time outside the kernels: binding sizes, copying inputs in and
    /// outputs out, a scan's gathers and scatters.
    pub fn other(&self) -> Duration {
        let kernels: Duration = self.rows.iter().map(|r| r.time).sum();
        self.total.saturating_sub(kernels)
    }

    /// Adds `launches` of `name` taking `time` over `operand_bytes`.
    pub fn add(&mut self, name: &str, launches: u64, time: Duration, operand_bytes: u64) {
        let row = match self.rows.iter().position(|r| r.name == name) {
            Some(i) => &mut self.rows[i],
            None => {
                self.rows.push(ProfileRow {
                    name: name.to_string(),
                    ..ProfileRow::default()
                });
                self.rows.last_mut().expect("just pushed")
            }
        };
        row.launches += launches;
        row.time += time;
        row.operand_bytes += operand_bytes;
    }

    /// A table, the slowest kernel first: launches, milliseconds in all
    /// and per call, share of the calls' time, operand bytes per launch
    /// and the rate they were gone through at.
    pub fn table(&self) -> String {
        let total = self.total.as_secs_f64();
        let per_call = |d: Duration| d.as_secs_f64() * 1e3 / self.calls.max(1) as f64;
        let share = |d: Duration| {
            if total > 0.0 {
                100.0 * d.as_secs_f64() / total
            } else {
                0.0
            }
        };
        let mut rows: Vec<&ProfileRow> = self.rows.iter().collect();
        rows.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.name.cmp(&b.name)));
        let mut out = format!(
            "{:<28} {:>9} {:>10} {:>9} {:>6} {:>12} {:>8}\n",
            "kernel", "launches", "ms", "ms/call", "%", "MB/launch", "GB/s"
        );
        for r in rows {
            let secs = r.time.as_secs_f64();
            let rate = if secs > 0.0 {
                format!("{:.1}", r.operand_bytes as f64 / secs / 1e9)
            } else {
                "-".into()
            };
            out += &format!(
                "{:<28} {:>9} {:>10.2} {:>9.3} {:>6.1} {:>12.3} {:>8}\n",
                r.name,
                r.launches,
                secs * 1e3,
                per_call(r.time),
                share(r.time),
                r.operand_bytes as f64 / r.launches.max(1) as f64 / 1e6,
                rate
            );
        }
        let other = self.other();
        out += &format!(
            "{:<28} {:>9} {:>10.2} {:>9.3} {:>6.1}\n",
            "(outside kernels)",
            "",
            other.as_secs_f64() * 1e3,
            per_call(other),
            share(other)
        );
        out += &format!(
            "{:<28} {:>9} {:>10.2} {:>9.3} {:>6.1}\n",
            format!("total, {} calls", self.calls),
            "",
            total * 1e3,
            per_call(self.total),
            100.0
        );
        out
    }
}

/// A shared tally that executors add to and callers take from.
#[derive(Clone, Debug, Default)]
pub struct Profiler(Arc<Mutex<Profile>>);

impl Profiler {
    pub fn new() -> Profiler {
        Profiler::default()
    }

    /// The tally so far; the profiler starts again from zero.
    pub fn take(&self) -> Profile {
        std::mem::take(&mut *self.lock())
    }

    /// Adds one executor call's tally.
    pub fn record(&self, f: impl FnOnce(&mut Profile)) {
        f(&mut self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Profile> {
        // A tally is plain counters: one left by a panicking thread is
        // still worth reading.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

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

    /// Both tables, each under a heading with its token count.
    pub fn report(self, prompt_tokens: usize) -> String {
        let (prefill, decode) = self.finish();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_merge_by_name_and_other_is_the_rest() {
        let p = Profiler::new();
        p.record(|t| {
            t.calls += 1;
            t.total += Duration::from_millis(10);
            t.add("matmul", 2, Duration::from_millis(6), 2_000_000);
            t.add("copy", 1, Duration::from_millis(1), 100);
        });
        p.record(|t| {
            t.calls += 1;
            t.total += Duration::from_millis(10);
            t.add("matmul", 2, Duration::from_millis(7), 2_000_000);
        });
        let t = p.take();
        assert_eq!(t.calls, 2);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].launches, 4);
        assert_eq!(t.rows[0].time, Duration::from_millis(13));
        assert_eq!(t.other(), Duration::from_millis(6));
        let table = t.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("matmul"), "{table}");
        assert!(lines[2].starts_with("copy"), "{table}");
        assert!(lines[3].starts_with("(outside kernels)"), "{table}");
        assert!(lines[4].starts_with("total, 2 calls"), "{table}");
        // matmul: 4 MB over 13 ms.
        assert!(lines[1].contains(" 0.3"), "{table}");
        assert_eq!(p.take(), Profile::default(), "take starts again");
    }

    #[test]
    fn an_empty_tally_prints_without_dividing_by_zero() {
        let t = Profile::default();
        assert_eq!(t.other(), Duration::ZERO);
        assert!(t.table().contains("total, 0 calls"));
    }
}
