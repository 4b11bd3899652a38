//! How much of each state the calls since its last initialization may have
//! written, so that initializing a state of the same size again zeroes only
//! that much and keeps the memory.
//!
//! Why: a KV cache is sized for the whole context and mostly untouched.
//! Mapped afresh for every generation, each decode step's few new rows land
//! on pages the OS has to fault in and zero (measured: `update_slice` of
//! the 134M Llama's caches took 0.16 ms of a 14.8 ms step, 24 launches of
//! ~7 µs writing 3 KB each). Kept, the next generation writes into pages
//! already there, after zeroing just the rows the last one filled.
//!
//! What counts as written is found in the plan once: an in-place
//! `update_slice` on axis 0 of a state writes rows `..start + len` (ends
//! kept as dims, evaluated after each call); any other write into a state
//! (another kernel, a copy, a scan, an aliased output copied back) may
//! write all of it.

use super::dims::SymDim;
use crate::error::RuntimeError;
use crate::plan::{BufferId, Plan, Step, Storage};
use kiln_ir::Op;

/// Where calls write one state.
#[derive(Clone, Debug, Default)]
pub(crate) enum Writes {
    /// Nowhere (a state no step changes).
    #[default]
    Nothing,
    /// Rows of axis 0 up to each of these ends.
    Rows(Vec<SymDim>),
    /// Anywhere.
    Whole,
}

impl Writes {
    fn whole(&mut self) {
        *self = Writes::Whole;
    }

    fn rows(&mut self, end: SymDim) {
        match self {
            Writes::Nothing => *self = Writes::Rows(vec![end]),
            Writes::Rows(ends) => ends.push(end),
            Writes::Whole => {}
        }
    }

    /// Bytes from the start of the state that the last call may have
    /// written, for a state of `bytes` bytes and `rows` rows on axis 0.
    pub fn extent(&self, sizes: &[i64], bytes: usize, rows: usize) -> usize {
        match self {
            Writes::Nothing => 0,
            Writes::Whole => bytes,
            Writes::Rows(ends) => {
                let row = bytes.checked_div(rows).unwrap_or(0);
                let end = ends
                    .iter()
                    .map(|e| e.eval_usize(sizes).unwrap_or(usize::MAX))
                    .max()
                    .unwrap_or(0);
                end.saturating_mul(row).min(bytes)
            }
        }
    }
}

/// Each input's writes (`Nothing` for inputs that are not state).
pub(crate) fn state_writes(plan: &Plan, is_state: &[bool]) -> Result<Vec<Writes>, RuntimeError> {
    let mut out = vec![Writes::Nothing; plan.inputs.len()];
    let state_of = |b: BufferId| match plan.buffers[plan.root(b)].storage {
        Storage::Input(i) if is_state[i] => Some(i),
        _ => None,
    };
    walk(plan, &plan.steps, &state_of, &mut out)?;
    for o in &plan.outputs {
        let Some(x) = plan.aliased_input(o) else {
            continue;
        };
        // An aliased output living elsewhere is copied back whole.
        if state_of(o.buffer) != Some(x) {
            out[x].whole();
        }
    }
    Ok(out)
}

fn walk(
    plan: &Plan,
    steps: &[Step],
    state_of: &dyn Fn(BufferId) -> Option<usize>,
    out: &mut [Writes],
) -> Result<(), RuntimeError> {
    for step in steps {
        match step {
            Step::Kernel { kernel, args } => {
                let k = &plan.kernels[*kernel];
                let results = &args[k.operand_types.len().min(args.len())..];
                for &r in results {
                    let Some(i) = state_of(r) else { continue };
                    match &k.op {
                        Op::UpdateSlice { axis: 0, start } => {
                            let end = start + &k.operand_types[1].shape[0];
                            out[i].rows(SymDim::new(&end, &plan.symbols)?);
                        }
                        _ => out[i].whole(),
                    }
                }
            }
            Step::Copy { to, .. } => {
                if let Some(i) = state_of(*to) {
                    out[i].whole();
                }
            }
            Step::Scan(s) => {
                let written = s
                    .carries
                    .iter()
                    .flat_map(|c| [c.result, c.spare])
                    .chain(s.ys.iter().map(|y| y.outer));
                for b in written {
                    if let Some(i) = state_of(b) {
                        out[i].whole();
                    }
                }
                walk(plan, &s.body, state_of, out)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::Dim;

    fn end(d: Dim) -> SymDim {
        let syms = vec!["past".to_string(), "seq".to_string()];
        SymDim::new(&d, &syms).unwrap()
    }

    #[test]
    fn extents_follow_the_furthest_end() {
        // 10 rows of 8 bytes; past = 3, seq = 2.
        let sizes = [3, 2];
        assert_eq!(Writes::Nothing.extent(&sizes, 80, 10), 0);
        assert_eq!(Writes::Whole.extent(&sizes, 80, 10), 80);
        let rows = Writes::Rows(vec![
            end(&Dim::sym("past") + &Dim::sym("seq")),
            end(Dim::sym("seq")),
        ]);
        assert_eq!(rows.extent(&sizes, 80, 10), 40);
        // Never past the buffer, even for an end that does not evaluate.
        assert_eq!(
            Writes::Rows(vec![end((&Dim::sym("past") + &Dim::sym("seq")).scale(100))])
                .extent(&sizes, 80, 10),
            80
        );
        let mut w = Writes::Nothing;
        w.rows(end(Dim::sym("seq")));
        w.whole();
        w.rows(end(Dim::sym("seq")));
        assert!(matches!(w, Writes::Whole));
    }
}
