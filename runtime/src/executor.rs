//! What every executor offers, so the generation loop, `kiln-run` and the
//! JIT API drive a CPU or a CUDA executor the same way.

use crate::error::RuntimeError;
use crate::plan::Plan;
use crate::profile::Profiler;
use kiln_ir::{Bindings, Tensor};
use std::collections::BTreeMap;

/// A compiled plan bound to a device, with its weights loaded and, between
/// [`Executor::step`] calls, its state (KV caches, recurrent states) kept.
///
/// Inputs and outputs are host tensors; where they live while the plan runs
/// is the executor's business.
pub trait Executor: Send {
    /// The plan being run.
    fn plan(&self) -> &Plan;

    /// Runs the plan on every input by name (state included); returns every
    /// output. `sizes` binds the symbols no input shape determines.
    fn run_with(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError>;

    /// The state inputs: the inputs an output aliases.
    fn state_names(&self) -> Vec<String>;

    /// Allocates every state zero-filled at its shape under `sizes`.
    fn init_state(&mut self, sizes: &Bindings) -> Result<(), RuntimeError>;

    /// Sets one state to a copy of `value`.
    fn set_state(&mut self, name: &str, value: &Tensor) -> Result<(), RuntimeError>;

    /// A copy of one state, on the host.
    fn state(&self, name: &str) -> Result<Tensor, RuntimeError>;

    /// One call on the kept state: `inputs` are the non-state inputs; the
    /// states are read and updated in place; returns the non-aliased outputs.
    fn step(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError>;

    /// [`Executor::step`] returning only `outputs`; an executor may skip
    /// the work no requested output or state update needs. The default checks
    /// the names (before any state changes), runs everything and drops the
    /// rest.
    fn step_only(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
        outputs: &[&str],
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        crate::select::check_outputs(self.plan(), outputs)?;
        let mut all = self.step(inputs, sizes)?;
        all.retain(|k, _| outputs.contains(&k.as_str()));
        Ok(all)
    }

    /// Where it runs, for messages (`cpu (2 threads)`, `cuda:0 NVIDIA H100 (sm_90)`).
    fn device(&self) -> String;

    /// Times each kernel of the calls that follow into `profiler` (`None`
    /// stops). An executor that cannot says so
    /// ([`RuntimeError::Unsupported`]); the default.
    fn set_profiler(&mut self, profiler: Option<Profiler>) -> Result<(), RuntimeError> {
        let _ = profiler;
        Err(RuntimeError::Unsupported(format!(
            "per-kernel profiling on {}",
            self.device()
        )))
    }
}

impl Executor for crate::cpu::CpuExecutor {
    fn plan(&self) -> &Plan {
        crate::cpu::CpuExecutor::plan(self)
    }
    fn run_with(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        crate::cpu::CpuExecutor::run_with(self, inputs, sizes)
    }
    fn state_names(&self) -> Vec<String> {
        crate::cpu::CpuExecutor::state_names(self)
    }
    fn init_state(&mut self, sizes: &Bindings) -> Result<(), RuntimeError> {
        crate::cpu::CpuExecutor::init_state(self, sizes)
    }
    fn set_state(&mut self, name: &str, value: &Tensor) -> Result<(), RuntimeError> {
        crate::cpu::CpuExecutor::set_state(self, name, value)
    }
    fn state(&self, name: &str) -> Result<Tensor, RuntimeError> {
        crate::cpu::CpuExecutor::state(self, name)
    }
    fn step(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        crate::cpu::CpuExecutor::step(self, inputs, sizes)
    }
    fn step_only(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
        outputs: &[&str],
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        crate::cpu::CpuExecutor::step_only(self, inputs, sizes, outputs)
    }
    fn device(&self) -> String {
        format!("cpu ({} threads)", self.threads())
    }
    fn set_profiler(&mut self, profiler: Option<Profiler>) -> Result<(), RuntimeError> {
        crate::cpu::CpuExecutor::set_profiler(self, profiler);
        Ok(())
    }
}
