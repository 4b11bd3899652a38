//! State kept by the executor between calls: KV caches and recurrent
//! states, i.e. the inputs that an output aliases (`alias: Some(input)`).
//!
//! ```text
//! exe.init_state(&sizes)?;            // each state zero-filled at its shape (e.g. ctx = 256)
//! let out = exe.step(&prompt, &{past: 0})?;   // prefill
//! let out = exe.step(&token, &{past: n})?;    // decode, again and again
//! ```
//!
//! In [`CpuExecutor::step`] a state input is read from the executor's
//! buffer and its aliased output is written back into that buffer. When
//! the output is an `update_slice` chain on that same state (a KV cache
//! taking new entries), the planner has made it update the buffer in place:
//! no copy at all. Otherwise the output is copied into the buffer after
//! every step has run, when nothing reads the old state any more. Steady
//! state allocates nothing but the returned outputs.

use super::{call, CpuExecutor, Mode};
use crate::error::RuntimeError;
use crate::memory::{write_tensor, AlignedBuf};
use crate::plan::Storage;
use kiln_ir::{Bindings, Tensor};
use std::collections::BTreeMap;

/// One state's buffer and concrete shape.
pub(crate) struct StateBuf {
    pub shape: Vec<usize>,
    pub buf: AlignedBuf,
    /// Bytes from the start that may be non-zero.
    pub written: usize,
}

impl StateBuf {
    fn zeroed(shape: Vec<usize>, bytes: usize) -> StateBuf {
        StateBuf {
            shape,
            buf: AlignedBuf::zeroed_lazy(bytes),
            written: 0,
        }
    }

    /// This state, zero-filled again at `shape`: the memory is kept when
    /// the size is the same, and only what was written is cleared.
    fn cleared(self, shape: Vec<usize>, bytes: usize) -> StateBuf {
        if self.buf.len() != bytes {
            return StateBuf::zeroed(shape, bytes);
        }
        let mut s = self;
        s.buf.as_bytes_mut()[..s.written].fill(0);
        s.written = 0;
        s.shape = shape;
        s
    }
}

impl CpuExecutor {
    /// The names of the state inputs (inputs some output aliases), in
    /// input order.
    pub fn state_names(&self) -> Vec<String> {
        call::state_names(&self.plan, &self.is_state)
    }

    fn state_index(&self, name: &str) -> Result<usize, RuntimeError> {
        call::state_index(&self.plan, &self.is_state, name)
    }

    /// Sets every state zero-filled at its declared shape under `sizes`
    /// (e.g. `ctx = 256` for a cache `f32[ctx, heads, dim]`), replacing
    /// any state held. A state of the same size keeps its memory and has
    /// only the part calls may have written cleared (`written.rs`), so a
    /// new generation does not fault its cache's pages in again. A symbol
    /// of a state's shape missing from `sizes` is
    /// [`RuntimeError::StateShape`], and then no state changes.
    pub fn init_state(&mut self, sizes: &Bindings) -> Result<(), RuntimeError> {
        let shapes = call::state_shapes(&self.plan, &self.is_state, sizes)?;
        for (i, shape, bytes) in shapes {
            let state = match self.states[i].take() {
                Some(old) => old.cleared(shape, bytes),
                None => StateBuf::zeroed(shape, bytes),
            };
            self.states[i] = Some(state);
        }
        Ok(())
    }

    /// Sets state `name` to a copy of `value` (checked against the state's
    /// dtype, rank and constant dims).
    pub fn set_state(&mut self, name: &str, value: &Tensor) -> Result<(), RuntimeError> {
        let i = self.state_index(name)?;
        let bytes = call::check_state_value(&self.plan, i, name, value)?;
        let state = match self.states[i].take() {
            Some(s) if s.buf.len() == bytes => StateBuf {
                shape: value.shape.clone(),
                buf: s.buf,
                written: bytes,
            },
            _ => StateBuf {
                shape: value.shape.clone(),
                buf: AlignedBuf::zeroed(bytes),
                written: bytes,
            },
        };
        let state = self.states[i].insert(state);
        write_tensor(value, state.buf.as_bytes_mut());
        Ok(())
    }

    /// A copy of state `name`.
    pub fn state(&self, name: &str) -> Result<Tensor, RuntimeError> {
        let i = self.state_index(name)?;
        let s = self.states[i]
            .as_ref()
            .ok_or_else(|| RuntimeError::StateNotInitialized {
                name: name.to_string(),
            })?;
        Tensor::from_bytes(
            self.plan.inputs[i].ty.dtype,
            s.shape.clone(),
            s.buf.as_bytes(),
        )
        .map_err(|e| RuntimeError::BadPlan(format!("state `{name}`: {e}")))
    }

    /// Runs one call on the kept state: `inputs` are the non-state inputs;
    /// each state input reads the executor's buffer, and each aliased
    /// output is written back into it (in place when the planner could).
    /// Returns the non-aliased outputs. `sizes` as in
    /// [`CpuExecutor::run_with`] (e.g. `past`, the positions of a cache
    /// already filled); state shapes bind symbols like input shapes.
    pub fn step(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        self.execute(Mode::Step, inputs, sizes, None)
    }

    /// [`CpuExecutor::step`] returning only the outputs named in `outputs`,
    /// and running only the steps they and the state updates need (a
    /// prefill for generation asks for `last_logits`, not every position's
    /// `logits`). An unknown name is [`RuntimeError::UnknownOutput`].
    pub fn step_only(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
        outputs: &[&str],
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        self.execute(Mode::Step, inputs, sizes, Some(outputs))
    }

    /// After a step: extends each state's written part by what the step
    /// may have written.
    pub(super) fn note_writes(&mut self) {
        for (s, w) in self.states.iter_mut().zip(&self.writes) {
            if let Some(s) = s {
                let rows = s.shape.first().copied().unwrap_or(1);
                let extent = w.extent(&self.machine.sizes, s.buf.len(), rows);
                s.written = s.written.max(extent);
            }
        }
    }

    /// After a step: copies each aliased output that does not already live
    /// in its state's buffer into it. Its source is scratch or a weight
    /// (the planner copies values living in other inputs out first), never
    /// another state, so the order does not matter.
    pub(super) fn write_back(&mut self) {
        for o in &self.plan.outputs {
            let Some(x) = self.plan.aliased_input(o) else {
                continue;
            };
            let root = self.plan.root(o.buffer);
            let src = match &self.plan.buffers[root].storage {
                Storage::Temp { slot } => self.arena[*slot].as_bytes(),
                Storage::Param(_) | Storage::Const(_) | Storage::Derived => {
                    self.resident[&root].as_bytes()
                }
                // Its own buffer: updated in place (or unchanged).
                _ => continue,
            };
            let n = self.machine.bytes[o.buffer];
            if let Some(s) = &mut self.states[x] {
                s.buf.as_bytes_mut()[..n].copy_from_slice(&src[..n]);
            }
        }
    }
}
