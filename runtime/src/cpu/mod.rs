//! The CPU executor: runs a [`Plan`]'s steps in order, each kernel's grid of
//! blocks split over a thread pool. Weights and constants are loaded once,
//! and what the plan derives from them alone is computed then (`load.rs`);
//! scratch memory lives in arena slots, and inputs in buffers, that grow to
//! the largest size seen and are reused across calls, so steady-state runs
//! allocate nothing but their outputs.
//!
//! **Sizes.** The size symbols are bound from the inputs' shapes, starting
//! from the sizes the caller gives ([`CpuExecutor::run_with`]): a symbol no
//! input determines (`past`, when a KV cache is a fixed-capacity buffer) must
//! be given; one an input determines must agree with it.
//!
//! **State** (see `state.rs`): inputs aliased by an output — KV caches,
//! recurrent states — can be kept by the executor between calls of
//! [`CpuExecutor::step`], which updates them in place.

pub(crate) mod call;
pub(crate) mod dims;
mod exec;
mod ffi;
pub(crate) mod load;
mod pool;
pub(crate) mod program;
mod split;
mod state;
mod written;

pub use ffi::{CpuKernelFn, KernelTable};

use crate::error::RuntimeError;
use crate::memory::AlignedBuf;
use crate::plan::{BufferId, Plan, Storage};
use crate::profile::Profiler;
use exec::{Kernels, Machine};
use kiln_ir::interp::ParamSource;
use kiln_ir::kernel::KernelLaunch;
use kiln_ir::{Bindings, Tensor};
use program::Program;
use state::StateBuf;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// Executor settings.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
}

/// Runs a compiled plan on the CPU.
pub struct CpuExecutor {
    plan: Plan,
    funcs: Vec<CpuKernelFn>,
    // Owns the compiled code the function pointers point into.
    _kernels: Arc<dyn KernelTable>,
    resident: HashMap<BufferId, AlignedBuf>,
    arena: Vec<AlignedBuf>,
    /// The callers' inputs, copied into aligned memory (kernels may use
    /// vector loads) that the plan may also update in place.
    inputs: Vec<AlignedBuf>,
    /// State kept between [`CpuExecutor::step`] calls, per input (`None`
    /// for inputs that are not state, or not yet initialized).
    states: Vec<Option<StateBuf>>,
    is_state: Vec<bool>,
    /// Where calls write each state (see `written.rs`).
    writes: Vec<written::Writes>,
    program: Program,
    machine: Machine,
    pool: pool::Pool,
    /// Steps needed per set of requested outputs (`select.rs`).
    selections: crate::select::Selections,
    /// Where each call's kernel times go, while profiling.
    profiler: Option<Profiler>,
}

/// Whether a call reads state inputs from the caller or from the executor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    Step,
}

impl CpuExecutor {
    /// Binds compiled kernels and weights to a plan. Every kernel must be in
    /// `kernels` with the plan's symbol order; every parameter must be in
    /// `params` with its declared dtype and shape.
    pub fn new(
        plan: Plan,
        kernels: Arc<dyn KernelTable>,
        params: &dyn ParamSource,
        opts: &ExecOptions,
    ) -> Result<CpuExecutor, RuntimeError> {
        let launches_by_name: HashMap<String, KernelLaunch> = kernels
            .launches()
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect();
        let mut funcs = Vec::with_capacity(plan.kernels.len());
        let mut launches = Vec::with_capacity(plan.kernels.len());
        for k in &plan.kernels {
            let f = kernels
                .lookup(&k.name)
                .ok_or_else(|| RuntimeError::MissingKernel(k.name.clone()))?;
            let launch = launches_by_name
                .get(&k.name)
                .cloned()
                .ok_or_else(|| RuntimeError::MissingKernel(k.name.clone()))?;
            if launch.symbols != plan.symbols {
                return Err(RuntimeError::SymbolOrder {
                    name: k.name.clone(),
                    compiled: launch.symbols,
                    plan: plan.symbols.clone(),
                });
            }
            funcs.push(f);
            launches.push(launch);
        }
        let mut program = Program::compile(&plan, &launches)?;
        let mut resident = load::resident(&plan, &program, params)?;
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            opts.threads
        };
        let pool = pool::Pool::new(threads).map_err(|e| RuntimeError::ThreadPool(e.to_string()))?;
        let mut is_state = vec![false; plan.inputs.len()];
        for i in plan.state_inputs() {
            is_state[i] = true;
        }
        let writes = written::state_writes(&plan, &is_state)?;
        let mut machine = Machine::new(
            plan.buffers.len(),
            plan.symbols.len(),
            plan.kernels.len(),
            plan.num_slots,
        );
        let kernels_ref = Kernels {
            funcs: &funcs,
            pool: &pool,
        };
        load::run_load_steps(
            &plan,
            &mut program,
            &mut resident,
            params,
            &mut machine,
            &kernels_ref,
        )?;
        load::drop_unused(&plan, &mut resident);
        Ok(CpuExecutor {
            arena: vec![AlignedBuf::default(); plan.num_slots],
            inputs: vec![AlignedBuf::default(); plan.inputs.len()],
            states: (0..plan.inputs.len()).map(|_| None).collect(),
            is_state,
            writes,
            machine,
            program,
            plan,
            funcs,
            _kernels: kernels,
            resident,
            pool,
            selections: Default::default(),
            profiler: None,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Times every kernel launch and copy of the calls that follow into
    /// `profiler`, one tally per call; `None` stops. Timing costs two clock
    /// reads a launch.
    pub fn set_profiler(&mut self, profiler: Option<Profiler>) {
        self.machine.profiling = profiler.is_some();
        self.profiler = profiler;
    }

    /// Runs the plan on `inputs` (by name, every input of the plan) and
    /// returns the outputs by name. The sizes are bound from the inputs'
    /// shapes alone.
    pub fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        self.run_with(inputs, &Bindings::new())
    }

    /// [`CpuExecutor::run`] with sizes given explicitly: `sizes` binds the
    /// symbols no input shape determines (`past` for a fixed-capacity KV
    /// cache) and must agree with those the inputs do determine. A size
    /// that is neither given nor determined is
    /// [`RuntimeError::MissingSize`]. Names in `sizes` the plan does not
    /// use are ignored. State inputs are taken from `inputs` like any other
    /// (the executor's kept state is neither read nor changed).
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
            self.arena[slot].ensure(bytes);
        }
        Ok(())
    }

    /// One call: check and bind, copy the caller's inputs in, point every
    /// buffer at its memory, run the steps, read the outputs (all of them
    /// in run mode; the non-aliased ones in step mode, after which the
    /// aliased ones are written back into the state).
    fn execute(
        &mut self,
        mode: Mode,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
        only: Option<&[&str]>,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        let start = Instant::now();
        // This call's tally starts from zero (a call that failed part way
        // left its launches counted: they are dropped).
        if self.machine.profiling {
            self.machine.tally.fill(Default::default());
        }
        if let Some(names) = only {
            crate::select::check_outputs(&self.plan, names)?;
        }
        self.prepare(mode, inputs, sizes)?;
        for (i, pi) in self.plan.inputs.iter().enumerate() {
            if mode == Mode::Step && self.is_state[i] {
                continue;
            }
            let n = self.machine.bytes[self.program.input_buf[i]];
            let buf = &mut self.inputs[i];
            buf.ensure(n);
            crate::memory::write_tensor(&inputs[&pi.name], &mut buf.as_bytes_mut()[..n]);
        }
        self.point_buffers(mode);
        let mask = only.map(|names| self.selections.get(&self.plan, mode == Mode::Step, names));
        let kernels = Kernels {
            funcs: &self.funcs,
            pool: &self.pool,
        };
        exec::run_steps(
            &mut self.program.steps,
            mask.as_ref().map(|m| m.as_slice()),
            &mut self.machine,
            &kernels,
        )?;
        let mut out = BTreeMap::new();
        for (o, dims) in self.plan.outputs.iter().zip(&self.program.output_dims) {
            if mode == Mode::Step && o.alias.is_some() {
                continue;
            }
            if only.is_some_and(|names| !names.iter().any(|n| *n == o.name)) {
                continue;
            }
            let shape = call::eval_shape(dims, &self.machine.sizes)?;
            let bytes = self.buffer_bytes(mode, o.buffer);
            let t = Tensor::from_bytes(self.plan.buffers[o.buffer].ty.dtype, shape, bytes)
                .map_err(|e| RuntimeError::BadPlan(format!("output `{}`: {e}", o.name)))?;
            out.insert(o.name.clone(), t);
        }
        if mode == Mode::Step {
            self.write_back();
            self.note_writes();
        }
        if let Some(p) = &self.profiler {
            record(p, &self.plan, &self.machine, start);
        }
        Ok(out)
    }

    /// Fills the pointer table: every buffer at its root's memory (bound
    /// buffers are pointed by their scan).
    fn point_buffers(&mut self, mode: Mode) {
        for id in 0..self.plan.buffers.len() {
            let root = self.plan.root(id);
            let p = match &self.plan.buffers[root].storage {
                Storage::Input(i) => match (&mut self.states[*i], mode) {
                    (Some(s), Mode::Step) if self.is_state[*i] => s.buf.as_mut_ptr(),
                    _ => self.inputs[*i].as_mut_ptr(),
                },
                // A weight dropped after the load steps is read by no step.
                Storage::Param(_) | Storage::Const(_) | Storage::Derived => self
                    .resident
                    .get_mut(&root)
                    .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr()),
                Storage::Temp { slot } => self.arena[*slot].as_mut_ptr(),
                Storage::Bound => std::ptr::null_mut(),
                Storage::View { .. } => unreachable!("root() follows views"),
            };
            self.machine.ptrs.0[id] = p;
        }
    }

    /// The bytes of a top-level buffer after a run.
    fn buffer_bytes(&self, mode: Mode, id: BufferId) -> &[u8] {
        let len = self.machine.bytes[id];
        let root = self.plan.root(id);
        let all = match &self.plan.buffers[root].storage {
            Storage::Input(i) => match &self.states[*i] {
                Some(s) if mode == Mode::Step && self.is_state[*i] => s.buf.as_bytes(),
                _ => self.inputs[*i].as_bytes(),
            },
            Storage::Param(_) | Storage::Const(_) | Storage::Derived => {
                self.resident[&root].as_bytes()
            }
            Storage::Temp { slot } => self.arena[*slot].as_bytes(),
            Storage::View { .. } | Storage::Bound => &[],
        };
        &all[..len]
    }
}

/// Hands one call's tally to the profiler.
fn record(p: &Profiler, plan: &Plan, m: &Machine, start: Instant) {
    p.record(|t| {
        t.calls += 1;
        t.total += start.elapsed();
        let names = plan.kernels.iter().map(|k| k.name.as_str()).chain(["copy"]);
        for (name, tally) in names.zip(&m.tally) {
            if tally.launches > 0 {
                t.add(name, tally.launches, tally.time, tally.bytes);
            }
        }
    });
}
