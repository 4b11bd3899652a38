//! The CPU executor: runs a [`Plan`]'s steps in order, each kernel's grid of
//! blocks split over a thread pool. Weights and constants are loaded once;
//! scratch memory lives in arena slots that grow to the largest size seen and
//! are reused across calls, so steady-state runs allocate nothing but their
//! outputs.

mod ffi;

pub use ffi::{CpuKernelFn, KernelTable};

use crate::error::RuntimeError;
use crate::memory::AlignedBuf;
use crate::plan::{BufferId, Plan, Storage};
use ffi::LaunchArgs;
use kiln_ir::interp::ParamSource;
use kiln_ir::kernel::KernelLaunch;
use kiln_ir::{Bindings, Tensor, TensorType};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

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
    launches: Vec<KernelLaunch>,
    // Owns the compiled code the function pointers point into.
    _kernels: Arc<dyn KernelTable>,
    resident: HashMap<BufferId, AlignedBuf>,
    arena: Vec<AlignedBuf>,
    pool: rayon::ThreadPool,
}

fn check_type(t: &Tensor, expected: &TensorType) -> bool {
    t.dtype() == expected.dtype && t.rank() == expected.rank()
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
        let mut resident = HashMap::new();
        for (id, b) in plan.buffers.iter().enumerate() {
            match &b.storage {
                Storage::Param(name) => {
                    let t = params
                        .param(name)
                        .ok_or_else(|| RuntimeError::MissingParam {
                            name: name.clone(),
                            expected: b.ty.to_string(),
                        })?;
                    let want = b.ty.eval_shape(&Bindings::new());
                    if !check_type(t, &b.ty) || want.as_ref().ok() != Some(&t.shape) {
                        return Err(RuntimeError::ParamType {
                            name: name.clone(),
                            got: format!("{}{:?}", t.dtype(), t.shape),
                            expected: b.ty.to_string(),
                        });
                    }
                    resident.insert(id, AlignedBuf::from_bytes(&t.to_bytes()));
                }
                Storage::Const(lit) => {
                    let t = Tensor::from_f64(
                        lit.dtype,
                        lit.shape.clone(),
                        &(0..lit.numel()).map(|i| lit.get_f64(i)).collect::<Vec<_>>(),
                    )
                    .expect("a literal's data matches its shape");
                    resident.insert(id, AlignedBuf::from_bytes(&t.to_bytes()));
                }
                _ => {}
            }
        }
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            opts.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("kiln-cpu-{i}"))
            .build()
            .map_err(|e| RuntimeError::ThreadPool(e.to_string()))?;
        Ok(CpuExecutor {
            arena: vec![AlignedBuf::default(); plan.num_slots],
            plan,
            funcs,
            launches,
            _kernels: kernels,
            resident,
            pool,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Binds the size symbols from the inputs' shapes, checking dtypes and ranks.
    fn bind(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Bindings, RuntimeError> {
        for name in inputs.keys() {
            if !self.plan.inputs.iter().any(|i| &i.name == name) {
                let known: Vec<String> = self
                    .plan
                    .inputs
                    .iter()
                    .map(|i| format!("{}: {}", i.name, i.ty))
                    .collect();
                return Err(RuntimeError::UnknownInput {
                    name: name.clone(),
                    known: known.join(", "),
                });
            }
        }
        let mut bindings = Bindings::new();
        // Two rounds: single-symbol dims first, so `past+seq` can be solved after.
        for round in 0..2 {
            for pi in &self.plan.inputs {
                let t = inputs
                    .get(&pi.name)
                    .ok_or_else(|| RuntimeError::MissingInput {
                        name: pi.name.clone(),
                        expected: pi.ty.to_string(),
                    })?;
                if !check_type(t, &pi.ty) {
                    return Err(RuntimeError::InputType {
                        name: pi.name.clone(),
                        got: format!("{}{:?}", t.dtype(), t.shape),
                        expected: pi.ty.to_string(),
                    });
                }
                for (d, &actual) in pi.ty.shape.iter().zip(&t.shape) {
                    let simple = d.symbols().len() <= 1;
                    if (round == 0) != simple {
                        continue;
                    }
                    d.unify(actual as i64, &mut bindings).map_err(|source| {
                        RuntimeError::InputShape {
                            name: pi.name.clone(),
                            source,
                        }
                    })?;
                }
            }
        }
        Ok(bindings)
    }

    /// Runs the plan on `inputs` (by name) and returns the outputs by name.
    pub fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        let bindings = self.bind(inputs)?;
        let sizes = self.plan.sizes(&bindings)?;
        for (slot, bytes) in self.plan.slot_bytes(&bindings)?.into_iter().enumerate() {
            self.arena[slot].ensure(bytes);
        }
        // Inputs are copied into aligned memory: kernels may use aligned vector loads.
        let mut input_bufs: Vec<AlignedBuf> = self
            .plan
            .inputs
            .iter()
            .map(|pi| AlignedBuf::from_bytes(&inputs[&pi.name].to_bytes()))
            .collect();
        let ptrs = self.buffer_pointers(&mut input_bufs);
        for step in &self.plan.steps {
            let func = self.funcs[step.kernel];
            let launch = &self.launches[step.kernel];
            let blocks = launch.grid.num_blocks(&bindings)?;
            if blocks == 0 {
                continue;
            }
            let args: Vec<*mut u8> = step.args.iter().map(|&a| ptrs[a]).collect();
            let call = LaunchArgs {
                func,
                args: &args,
                sizes: &sizes,
            };
            let threads = self.pool.current_num_threads();
            if threads <= 1 || blocks == 1 {
                call.run_blocks(0, blocks);
            } else {
                // A few chunks per thread for balance; contiguous ranges for locality.
                let chunks = (threads * 4).min(blocks);
                self.pool.scope(|s| {
                    for c in 0..chunks {
                        let (b0, b1) = (blocks * c / chunks, blocks * (c + 1) / chunks);
                        let call = &call;
                        s.spawn(move |_| call.run_blocks(b0, b1));
                    }
                });
            }
        }
        let mut out = BTreeMap::new();
        for o in &self.plan.outputs {
            let ty = &self.plan.buffers[o.buffer].ty;
            let shape = ty.eval_shape(&bindings)?;
            let bytes = self.buffer_bytes(o.buffer, &input_bufs, &bindings)?;
            let t = Tensor::from_bytes(ty.dtype, shape, bytes).expect("buffer sized for its type");
            out.insert(o.name.clone(), t);
        }
        Ok(out)
    }

    /// A pointer per plan buffer (views share their root's pointer).
    fn buffer_pointers(&mut self, inputs: &mut [AlignedBuf]) -> Vec<*mut u8> {
        let n = self.plan.buffers.len();
        let mut ptrs = vec![std::ptr::null_mut(); n];
        for (id, ptr) in ptrs.iter_mut().enumerate() {
            let root = self.plan.root(id);
            *ptr = match &self.plan.buffers[root].storage {
                Storage::Input(i) => inputs[*i].as_mut_ptr(),
                Storage::Param(_) | Storage::Const(_) => self
                    .resident
                    .get_mut(&root)
                    .expect("resident buffers are loaded at construction")
                    .as_mut_ptr(),
                Storage::Temp { slot } => self.arena[*slot].as_mut_ptr(),
                Storage::View { .. } => unreachable!("root() follows views"),
            };
        }
        ptrs
    }

    fn buffer_bytes<'a>(
        &'a self,
        id: BufferId,
        inputs: &'a [AlignedBuf],
        bindings: &Bindings,
    ) -> Result<&'a [u8], RuntimeError> {
        let ty = &self.plan.buffers[id].ty;
        let len = ty.numel().eval_usize(bindings)? * ty.dtype.size_bytes();
        let root = self.plan.root(id);
        let all = match &self.plan.buffers[root].storage {
            Storage::Input(i) => inputs[*i].as_bytes(),
            Storage::Param(_) | Storage::Const(_) => self.resident[&root].as_bytes(),
            Storage::Temp { slot } => self.arena[*slot].as_bytes(),
            Storage::View { .. } => unreachable!("root() follows views"),
        };
        Ok(&all[..len])
    }
}
