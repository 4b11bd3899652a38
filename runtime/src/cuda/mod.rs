//! The CUDA executor: runs a [`Plan`] whose kernels were compiled to PTX,
//! on an NVIDIA GPU through the driver API (cudarc, loaded at run time).
//!
//! It is the CPU executor with device memory: the same compiled program
//! (`cpu::program`: validation, per-buffer sizes, grids, range guards,
//! scan bodies), the same size binding and input checks (`cpu::call`), so
//! the same calls succeed and fail with the same errors.
//!
//! - **Creation** loads the PTX module once and looks up every kernel (a
//!   missing one is [`RuntimeError::MissingKernel`]), uploads weights and
//!   constants once, and runs the plan's load steps on the device.
//! - **A call** uploads the inputs, points every buffer at its device
//!   memory (arena slots and input buffers grow to the largest size seen
//!   and are reused), queues the steps (launches with grid = blocks of the
//!   kernel's grid, block = its `gpu_threads`; copies device to device;
//!   scans by re-pointing the body's buffers), synchronizes once, and
//!   reads the outputs back.
//! - **State** (KV caches, recurrent states; see `state.rs`) stays on the
//!   device between [`CudaExecutor::step`] calls and is updated in place
//!   exactly where the CPU executor updates it in place.
//!
//! No driver or no device is [`RuntimeError::NoCudaDevice`] from every
//! entry point, never a panic. Set `KILN_CUDA_SYNC=1` to synchronize after
//! every launch and copy, so a kernel that faults is named in the error.

mod device;
mod exec;
mod load;
mod state;

pub use device::{device_info, DeviceInfo};

use crate::cpu::call;
use crate::cpu::program::Program;
use crate::error::RuntimeError;
use crate::plan::{BufferId, Plan, Storage};
use device::{Context, DevBuf, Function, Module};
use exec::{DevMachine, Launcher};
use kiln_ir::interp::ParamSource;
use kiln_ir::kernel::KernelLaunch;
use kiln_ir::{Bindings, Tensor};
use state::DevState;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Executor settings.
#[derive(Clone, Debug, Default)]
pub struct CudaOptions {
    /// The device ordinal (`cuda:N`).
    pub device: usize,
}

/// Runs a compiled plan on an NVIDIA GPU.
pub struct CudaExecutor {
    plan: Plan,
    program: Program,
    // Device memory; dropped before the module and the context (fields drop
    // in order), and each buffer keeps the context alive anyway.
    resident: HashMap<BufferId, DevBuf>,
    arena: Vec<Option<DevBuf>>,
    /// The callers' inputs, uploaded per call.
    inputs: Vec<Option<DevBuf>>,
    /// State kept between [`CudaExecutor::step`] calls, per input.
    states: Vec<Option<DevState>>,
    is_state: Vec<bool>,
    machine: DevMachine,
    /// Host bytes of one input on its way to the device.
    staging: Vec<u8>,
    funcs: Vec<Function>,
    threads: Vec<u32>,
    sync_each: bool,
    /// Steps needed per set of requested outputs (`select.rs`).
    selections: crate::select::Selections,
    _module: Option<Module>,
    ctx: Arc<Context>,
}

/// Whether a call reads state inputs from the caller or from the executor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    Step,
}

/// `old` if it holds at least `bytes`, else a new buffer (contents not
/// kept). Waits for the device before freeing a buffer queued work may
/// still use.
fn grow(
    ctx: &Arc<Context>,
    old: Option<DevBuf>,
    bytes: usize,
    what: impl FnOnce() -> String,
) -> Result<DevBuf, RuntimeError> {
    match old {
        Some(b) if b.capacity() >= bytes => Ok(b),
        old => {
            let what = what();
            if let Some(b) = old {
                ctx.synchronize(|| format!("before growing {what}"))?;
                drop(b);
            }
            DevBuf::alloc(ctx, bytes, &what)
        }
    }
}

/// [`grow`] in place.
fn ensure(
    ctx: &Arc<Context>,
    buf: &mut Option<DevBuf>,
    bytes: usize,
    what: impl FnOnce() -> String,
) -> Result<(), RuntimeError> {
    *buf = Some(grow(ctx, buf.take(), bytes, what)?);
    Ok(())
}

impl CudaExecutor {
    /// Binds a plan to device `opts.device`: loads `ptx` (the module of
    /// every kernel of the plan; each kernel's launch information comes
    /// from the plan's [`crate::plan::PlanKernel::launch`]), uploads the
    /// weights from `params` and runs the load steps.
    pub fn new(
        plan: Plan,
        ptx: &str,
        params: &dyn ParamSource,
        opts: &CudaOptions,
    ) -> Result<CudaExecutor, RuntimeError> {
        let ctx = Context::new(opts.device)?;
        let mut launches: Vec<KernelLaunch> = Vec::with_capacity(plan.kernels.len());
        for k in &plan.kernels {
            let launch = k.launch.clone().ok_or_else(|| {
                RuntimeError::BadPlan(format!(
                    "kernel `{}` has no launch information (the plan's kernels were not compiled)",
                    k.name
                ))
            })?;
            if launch.symbols != plan.symbols {
                return Err(RuntimeError::SymbolOrder {
                    name: k.name.clone(),
                    compiled: launch.symbols,
                    plan: plan.symbols.clone(),
                });
            }
            launches.push(launch);
        }
        let program = Program::compile(&plan, &launches)?;
        // A plan of copies alone needs no module (and may come with no PTX).
        let module = match plan.kernels.is_empty() {
            true => None,
            false => Some(Module::load(&ctx, ptx)?),
        };
        let mut funcs = Vec::with_capacity(plan.kernels.len());
        let mut threads = Vec::with_capacity(plan.kernels.len());
        for (k, launch) in plan.kernels.iter().zip(&launches) {
            let Some(module) = &module else { break };
            let f = module.function(&k.name)?;
            if launch.gpu_threads == 0 || launch.gpu_threads > f.max_threads {
                return Err(RuntimeError::BadPlan(format!(
                    "kernel `{}` launches {} threads per block; on {} ({}) it can take at most {} ({} registers per thread)",
                    k.name,
                    launch.gpu_threads,
                    ctx.info.name,
                    ctx.info.sm(),
                    f.max_threads,
                    f.registers
                )));
            }
            funcs.push(f);
            threads.push(launch.gpu_threads);
        }
        let mut resident = load::resident(&ctx, &plan, params)?;
        let mut machine = DevMachine::new(
            plan.buffers.len(),
            plan.symbols.len(),
            plan.kernels.len(),
            plan.num_slots,
        );
        let sync_each = std::env::var("KILN_CUDA_SYNC").is_ok_and(|v| v == "1");
        let launcher = Launcher {
            plan: &plan,
            ctx: &ctx,
            funcs: &funcs,
            threads: &threads,
            sync_each,
        };
        load::run_load_steps(&plan, &program, &resident, &mut machine, &launcher)?;
        load::drop_unused(&plan, &mut resident);
        let mut is_state = vec![false; plan.inputs.len()];
        for i in plan.state_inputs() {
            is_state[i] = true;
        }
        Ok(CudaExecutor {
            arena: (0..plan.num_slots).map(|_| None).collect(),
            inputs: (0..plan.inputs.len()).map(|_| None).collect(),
            states: (0..plan.inputs.len()).map(|_| None).collect(),
            is_state,
            machine,
            staging: Vec::new(),
            funcs,
            threads,
            sync_each,
            selections: Default::default(),
            resident,
            program,
            plan,
            _module: module,
            ctx,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The device this executor runs on.
    pub fn device_info(&self) -> &DeviceInfo {
        &self.ctx.info
    }

    /// Runs the plan on `inputs` (by name, every input of the plan) and
    /// returns the outputs by name; sizes are bound from the inputs' shapes.
    pub fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        self.run_with(inputs, &Bindings::new())
    }

    /// [`CudaExecutor::run`] with sizes given explicitly, as
    /// [`crate::CpuExecutor::run_with`]: state inputs are taken from
    /// `inputs` like any other (the kept state is neither read nor changed).
    pub fn run_with(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        self.execute(Mode::Run, inputs, sizes, None)
    }

    /// Checks the inputs, binds the sizes, sizes every buffer and grid
    /// (with the range guards), and grows the arena.
    fn prepare(
        &mut self,
        mode: Mode,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<(), RuntimeError> {
        let m = &mut self.machine;
        let states = &self.states;
        call::prepare(
            &self.plan,
            &self.program,
            &self.is_state,
            mode == Mode::Step,
            |i| states[i].as_ref().map(|s| s.shape.as_slice()),
            inputs,
            sizes,
            call::CallSizes {
                sizes: &mut m.sizes,
                known: &mut m.known,
                bytes: &mut m.bytes,
                blocks: &mut m.blocks,
                slot_bytes: &mut m.slot_bytes,
            },
        )?;
        for (slot, &bytes) in m.slot_bytes.iter().enumerate() {
            ensure(&self.ctx, &mut self.arena[slot], bytes, || {
                format!("arena slot {slot}")
            })?;
        }
        Ok(())
    }

    /// Copies the caller's inputs (all of them in run mode; the non-state
    /// ones in step mode) to the device.
    fn upload_inputs(
        &mut self,
        mode: Mode,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<(), RuntimeError> {
        for (i, pi) in self.plan.inputs.iter().enumerate() {
            if mode == Mode::Step && self.is_state[i] {
                continue;
            }
            let n = self.machine.bytes[self.program.input_buf[i]];
            let name = &pi.name;
            ensure(&self.ctx, &mut self.inputs[i], n, || {
                format!("input `{name}`")
            })?;
            self.staging.clear();
            self.staging.resize(n, 0);
            crate::memory::write_tensor(&inputs[name], &mut self.staging);
            if let Some(buf) = &self.inputs[i] {
                buf.upload(&self.staging, || format!("input `{name}`"))?;
            }
        }
        Ok(())
    }

    /// One call: check and bind, upload the inputs, point every buffer at
    /// its memory, queue the steps, wait, read the outputs (all of them in
    /// run mode; the non-aliased ones in step mode, after which the
    /// aliased ones are written back into the state).
    fn execute(
        &mut self,
        mode: Mode,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
        only: Option<&[&str]>,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        if let Some(names) = only {
            crate::select::check_outputs(&self.plan, names)?;
        }
        self.ctx.bind()?;
        self.prepare(mode, inputs, sizes)?;
        self.upload_inputs(mode, inputs)?;
        self.point_buffers(mode);
        let mask = only.map(|names| self.selections.get(&self.plan, mode == Mode::Step, names));
        let launcher = Launcher {
            plan: &self.plan,
            ctx: &self.ctx,
            funcs: &self.funcs,
            threads: &self.threads,
            sync_each: self.sync_each,
        };
        let ran = exec::run_steps(
            &self.program.steps,
            mask.as_ref().map(|m| m.as_slice()),
            &mut self.machine,
            &launcher,
        );
        // Wait even when queuing failed part-way, so nothing queued still
        // runs on memory a later call may reallocate.
        let waited = self
            .ctx
            .synchronize(|| format!("running plan @{}", self.plan.name));
        ran?;
        waited?;
        let mut out = BTreeMap::new();
        for (o, dims) in self.plan.outputs.iter().zip(&self.program.output_dims) {
            if mode == Mode::Step && o.alias.is_some() {
                continue;
            }
            if only.is_some_and(|names| !names.iter().any(|n| *n == o.name)) {
                continue;
            }
            let shape = call::eval_shape(dims, &self.machine.sizes)?;
            let mut bytes = vec![0u8; self.machine.bytes[o.buffer]];
            device::download(&mut bytes, self.machine.ptrs[o.buffer], || {
                format!("output `{}`", o.name)
            })?;
            let t = Tensor::from_bytes(self.plan.buffers[o.buffer].ty.dtype, shape, &bytes)
                .map_err(|e| RuntimeError::BadPlan(format!("output `{}`: {e}", o.name)))?;
            out.insert(o.name.clone(), t);
        }
        if mode == Mode::Step {
            self.write_back()?;
        }
        Ok(out)
    }

    /// Fills the address table: every buffer at its root's memory (bound
    /// buffers are pointed by their scan).
    fn point_buffers(&mut self, mode: Mode) {
        for id in 0..self.plan.buffers.len() {
            let root = self.plan.root(id);
            let p = match &self.plan.buffers[root].storage {
                Storage::Input(i) => match (&self.states[*i], mode) {
                    (Some(s), Mode::Step) if self.is_state[*i] => s.buf.ptr(),
                    _ => self.inputs[*i].as_ref().map_or(0, |b| b.ptr()),
                },
                // A weight freed after the load steps is read by no step.
                Storage::Param(_) | Storage::Const(_) | Storage::Derived => {
                    self.resident.get(&root).map_or(0, |b| b.ptr())
                }
                Storage::Temp { slot } => self.arena[*slot].as_ref().map_or(0, |b| b.ptr()),
                Storage::Bound | Storage::View { .. } => 0,
            };
            self.machine.ptrs[id] = p;
        }
    }
}

impl Drop for CudaExecutor {
    fn drop(&mut self) {
        // Queued work (a step's write-back) must finish before its memory
        // is freed; errors cannot be reported from here.
        if self.ctx.bind().is_ok() {
            let _ = self.ctx.synchronize(String::new);
        }
    }
}

impl crate::executor::Executor for CudaExecutor {
    fn plan(&self) -> &Plan {
        CudaExecutor::plan(self)
    }
    fn run_with(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        CudaExecutor::run_with(self, inputs, sizes)
    }
    fn state_names(&self) -> Vec<String> {
        CudaExecutor::state_names(self)
    }
    fn init_state(&mut self, sizes: &Bindings) -> Result<(), RuntimeError> {
        CudaExecutor::init_state(self, sizes)
    }
    fn set_state(&mut self, name: &str, value: &Tensor) -> Result<(), RuntimeError> {
        CudaExecutor::set_state(self, name, value)
    }
    fn state(&self, name: &str) -> Result<Tensor, RuntimeError> {
        CudaExecutor::state(self, name)
    }
    fn step(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        CudaExecutor::step(self, inputs, sizes)
    }
    fn step_only(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
        outputs: &[&str],
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        CudaExecutor::step_only(self, inputs, sizes, outputs)
    }
    fn device(&self) -> String {
        let i = &self.ctx.info;
        format!("cuda:{} {} ({})", i.ordinal, i.name, i.sm())
    }
}
