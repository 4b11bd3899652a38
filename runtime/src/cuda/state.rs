//! State kept on the device between calls: KV caches and recurrent states,
//! the inputs that an output aliases. Same contract as the CPU executor's
//! (`cpu/state.rs`): a step reads each state from its device buffer; an
//! aliased output the planner made in place (an `update_slice` chain on the
//! cache) already lives there, any other is copied into it, device to
//! device, once every step has run.

use super::device::{self, DevBuf};
use super::{grow, CudaExecutor, Mode};
use crate::cpu::call;
use crate::error::RuntimeError;
use crate::plan::Storage;
use kiln_ir::{Bindings, Tensor};
use std::collections::BTreeMap;

/// One state's device buffer and concrete shape.
pub(crate) struct DevState {
    pub shape: Vec<usize>,
    pub bytes: usize,
    pub buf: DevBuf,
}

impl CudaExecutor {
    /// The names of the state inputs (inputs some output aliases), in
    /// input order.
    pub fn state_names(&self) -> Vec<String> {
        call::state_names(&self.plan, &self.is_state)
    }

    fn state_index(&self, name: &str) -> Result<usize, RuntimeError> {
        call::state_index(&self.plan, &self.is_state, name)
    }

    /// Allocates every state zero-filled at its declared shape under
    /// `sizes`; replaces any state held. A symbol of a state's shape
    /// missing from `sizes` is [`RuntimeError::StateShape`].
    pub fn init_state(&mut self, sizes: &Bindings) -> Result<(), RuntimeError> {
        let shapes = call::state_shapes(&self.plan, &self.is_state, sizes)?;
        self.ctx.bind()?;
        for (i, shape, bytes) in shapes {
            let name = &self.plan.inputs[i].name;
            let old = self.states[i].take().map(|s| s.buf);
            let buf = grow(&self.ctx, old, bytes, || format!("state `{name}`"))?;
            device::zero(buf.ptr(), bytes, || format!("zeroing state `{name}`"))?;
            self.states[i] = Some(DevState { shape, bytes, buf });
        }
        self.ctx.synchronize(|| "initializing the state".into())
    }

    /// Sets state `name` to a copy of `value` (checked against the state's
    /// dtype, rank and constant dims).
    pub fn set_state(&mut self, name: &str, value: &Tensor) -> Result<(), RuntimeError> {
        let i = self.state_index(name)?;
        let bytes = call::check_state_value(&self.plan, i, name, value)?;
        let mut host = vec![0u8; bytes];
        crate::memory::write_tensor(value, &mut host);
        self.ctx.bind()?;
        let old = self.states[i].take().map(|s| s.buf);
        let buf = grow(&self.ctx, old, bytes, || format!("state `{name}`"))?;
        buf.upload(&host, || format!("state `{name}`"))?;
        self.states[i] = Some(DevState {
            shape: value.shape.clone(),
            bytes,
            buf,
        });
        Ok(())
    }

    /// A copy of state `name`, on the host.
    pub fn state(&self, name: &str) -> Result<Tensor, RuntimeError> {
        let i = self.state_index(name)?;
        let s = self.states[i]
            .as_ref()
            .ok_or_else(|| RuntimeError::StateNotInitialized {
                name: name.to_string(),
            })?;
        self.ctx.bind()?;
        let mut host = vec![0u8; s.bytes];
        device::download(&mut host, s.buf.ptr(), || format!("state `{name}`"))?;
        Tensor::from_bytes(self.plan.inputs[i].ty.dtype, s.shape.clone(), &host)
            .map_err(|e| RuntimeError::BadPlan(format!("state `{name}`: {e}")))
    }

    /// Runs one call on the kept state: `inputs` are the non-state inputs;
    /// each state input reads the executor's device buffer, and each
    /// aliased output is written back into it (in place when the planner
    /// could). Returns the non-aliased outputs. `sizes` as in
    /// [`CudaExecutor::run_with`].
    pub fn step(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        self.execute(Mode::Step, inputs, sizes, None)
    }

    /// [`CudaExecutor::step`] returning only `outputs`, queuing only the
    /// steps they and the state updates need (see
    /// `CpuExecutor::step_only`).
    pub fn step_only(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
        outputs: &[&str],
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        self.execute(Mode::Step, inputs, sizes, Some(outputs))
    }

    /// After a step: queues a device copy of each aliased output that does
    /// not already live in its state's buffer into it. Its source is
    /// scratch or a weight (the planner copies values living in other
    /// inputs out first), never another state, so the order does not
    /// matter. Later calls and reads are ordered after these copies.
    pub(super) fn write_back(&mut self) -> Result<(), RuntimeError> {
        for o in &self.plan.outputs {
            let Some(x) = self.plan.aliased_input(o) else {
                continue;
            };
            let root = self.plan.root(o.buffer);
            let src = match &self.plan.buffers[root].storage {
                Storage::Temp { .. } | Storage::Param(_) | Storage::Const(_) | Storage::Derived => {
                    self.machine.ptrs[o.buffer]
                }
                // Its own buffer: updated in place (or unchanged).
                _ => continue,
            };
            let n = self.machine.bytes[o.buffer];
            if let Some(s) = &self.states[x] {
                device::copy(s.buf.ptr(), src, n, || {
                    format!(
                        "writing output `{}` back into state `{}`",
                        o.name, self.plan.inputs[x].name
                    )
                })?;
            }
        }
        Ok(())
    }
}
