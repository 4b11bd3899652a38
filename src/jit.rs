//! In-process compilation: graph → optimizer → plan → kernels (JIT) → executor.

use kiln_codegen::{CpuModule, KernelSpec};
use kiln_ir::interp::ParamSource;
use kiln_ir::kernel::KernelLaunch;
use kiln_ir::{Bindings, Graph, Tensor};
use kiln_passes::{PassManager, PassOptions, PassReport};
use kiln_runtime::{CpuExecutor, CpuKernelFn, ExecOptions, KernelTable, Plan};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Any failure along the pipeline, by stage.
#[derive(Debug, thiserror::Error)]
pub enum KilnError {
    #[error("building the model: {0}")]
    Build(#[from] kiln_ir::dsl::BuildError),
    #[error("optimizing: {0}")]
    Pass(#[from] kiln_passes::PassError),
    #[error("planning: {0}")]
    Plan(#[from] kiln_runtime::PlanError),
    #[error("generating code: {0}")]
    Codegen(#[from] kiln_codegen::CodegenError),
    #[error("running: {0}")]
    Runtime(#[from] kiln_runtime::RuntimeError),
    #[error("loading the model: {0}")]
    Load(#[from] kiln_models::hf::LoadError),
    #[error("artifact: {0}")]
    Artifact(#[from] kiln_runtime::artifact::ArtifactError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Model(String),
}

/// How to compile and run.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    pub passes: PassOptions,
    pub exec: ExecOptions,
}

/// What compilation did and how long each stage took.
#[derive(Clone, Debug, Default)]
pub struct CompileReport {
    pub passes: Vec<PassReport>,
    pub optimize: Duration,
    pub plan: Duration,
    pub codegen: Duration,
    pub load: Duration,
    pub kernels: usize,
    pub steps: usize,
}

/// A compiled model, ready to run on the CPU.
pub struct Executable {
    kernel_graph: Graph,
    executor: CpuExecutor,
    report: CompileReport,
}

/// Codegen's JIT module as the runtime's kernel table.
struct JitKernels(CpuModule);

impl KernelTable for JitKernels {
    fn lookup(&self, name: &str) -> Option<CpuKernelFn> {
        self.0.lookup(name)
    }
    fn launches(&self) -> Vec<KernelLaunch> {
        self.0.launches().to_vec()
    }
}

/// Compiles `graph` for the CPU, in-process, with `params` as its weights.
pub fn jit(
    graph: &Graph,
    params: &dyn ParamSource,
    opts: &CompileOptions,
) -> Result<Executable, KilnError> {
    jit_with_progress(graph, params, opts, &mut |_| {})
}

/// [`jit`], calling `progress` with the name of each stage as it starts.
pub fn jit_with_progress(
    graph: &Graph,
    params: &dyn ParamSource,
    opts: &CompileOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Executable, KilnError> {
    let mut report = CompileReport::default();
    progress("optimize");
    let t = Instant::now();
    let (kernel_graph, passes) =
        PassManager::for_options(&opts.passes).run(graph.clone(), &opts.passes)?;
    report.optimize = t.elapsed();
    report.passes = passes;

    progress("plan");
    let t = Instant::now();
    let mut plan: Plan = kiln_runtime::plan(&kernel_graph)?;
    report.plan = t.elapsed();

    progress("codegen");
    let t = Instant::now();
    let module = kiln_codegen::compile_cpu(&kernel_specs(&plan), &plan.symbols)?;
    for (k, launch) in plan.kernels.iter_mut().zip(module.launches()) {
        k.launch = Some(launch.clone());
    }
    report.codegen = t.elapsed();
    report.kernels = plan.kernels.len();
    report.steps = plan.steps.len();

    progress("load");
    let t = Instant::now();
    let narrow;
    let params = match opts.passes.weights {
        Some(to) => {
            narrow = crate::NarrowWeights::new(params, &kernel_graph, to);
            &narrow as &dyn ParamSource
        }
        None => params,
    };
    let executor = CpuExecutor::new(plan, Arc::new(JitKernels(module)), params, &opts.exec)?;
    report.load = t.elapsed();
    Ok(Executable {
        kernel_graph,
        executor,
        report,
    })
}

impl Executable {
    /// Runs the model on named inputs (every input, state included); returns
    /// every named output. Sizes are bound from the inputs' shapes.
    pub fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, KilnError> {
        Ok(self.executor.run(inputs)?)
    }

    /// [`Executable::run`] with explicit sizes for the symbols no input
    /// determines (`past` with a fixed-capacity KV cache); see
    /// [`CpuExecutor::run_with`].
    pub fn run_with(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, KilnError> {
        Ok(self.executor.run_with(inputs, sizes)?)
    }

    /// The model's state inputs (KV caches, recurrent states): the inputs
    /// an output aliases.
    pub fn state_names(&self) -> Vec<String> {
        self.executor.state_names()
    }

    /// Allocates every state zero-filled at its shape under `sizes`
    /// (e.g. `ctx = 256`).
    pub fn init_state(&mut self, sizes: &Bindings) -> Result<(), KilnError> {
        Ok(self.executor.init_state(sizes)?)
    }

    /// Sets one state to a copy of `value`.
    pub fn set_state(&mut self, name: &str, value: &Tensor) -> Result<(), KilnError> {
        Ok(self.executor.set_state(name, value)?)
    }

    /// A copy of one state.
    pub fn state(&self, name: &str) -> Result<Tensor, KilnError> {
        Ok(self.executor.state(name)?)
    }

    /// One call on the kept state: `inputs` are the non-state inputs, the
    /// states are read and updated in place; returns the non-aliased
    /// outputs. See [`CpuExecutor::step`].
    pub fn step(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, KilnError> {
        Ok(self.executor.step(inputs, sizes)?)
    }

    /// The optimized, kernel-level graph.
    pub fn kernel_graph(&self) -> &Graph {
        &self.kernel_graph
    }

    pub fn plan(&self) -> &Plan {
        self.executor.plan()
    }

    pub fn report(&self) -> &CompileReport {
        &self.report
    }
}

/// The kernels of a plan as code generation takes them.
pub fn kernel_specs(plan: &Plan) -> Vec<KernelSpec> {
    plan.kernels
        .iter()
        .map(|k| KernelSpec {
            name: k.name.clone(),
            op: k.op.clone(),
            operand_types: k.operand_types.clone(),
            result_types: k.result_types.clone(),
        })
        .collect()
}

/// Optimizes and plans `graph`, then emits PTX for every kernel of the plan.
pub fn compile_ptx(
    graph: &Graph,
    arch: kiln_codegen::GpuArch,
    opts: &PassOptions,
) -> Result<(Plan, kiln_codegen::PtxModule), KilnError> {
    let (kernel_graph, _) = PassManager::for_options(opts).run(graph.clone(), opts)?;
    let plan = kiln_runtime::plan(&kernel_graph)?;
    let module = kiln_codegen::compile_ptx(&kernel_specs(&plan), &plan.symbols, arch)?;
    Ok((plan, module))
}

/// The JIT-compiled model as the runtime's [`kiln_runtime::Executor`], so the
/// runtime's language-model adapter ([`kiln_runtime::lm::ExecutorLm`]) and
/// generation loop drive it as they drive a loaded artifact.
impl kiln_runtime::Executor for Executable {
    fn plan(&self) -> &Plan {
        self.executor.plan()
    }
    fn run_with(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, kiln_runtime::RuntimeError> {
        self.executor.run_with(inputs, sizes)
    }
    fn state_names(&self) -> Vec<String> {
        self.executor.state_names()
    }
    fn init_state(&mut self, sizes: &Bindings) -> Result<(), kiln_runtime::RuntimeError> {
        self.executor.init_state(sizes)
    }
    fn set_state(&mut self, name: &str, value: &Tensor) -> Result<(), kiln_runtime::RuntimeError> {
        self.executor.set_state(name, value)
    }
    fn state(&self, name: &str) -> Result<Tensor, kiln_runtime::RuntimeError> {
        self.executor.state(name)
    }
    fn step(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
    ) -> Result<BTreeMap<String, Tensor>, kiln_runtime::RuntimeError> {
        self.executor.step(inputs, sizes)
    }
    fn step_only(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        sizes: &Bindings,
        outputs: &[&str],
    ) -> Result<BTreeMap<String, Tensor>, kiln_runtime::RuntimeError> {
        self.executor.step_only(inputs, sizes, outputs)
    }
    fn device(&self) -> String {
        kiln_runtime::Executor::device(&self.executor)
    }
    fn set_profiler(
        &mut self,
        profiler: Option<kiln_runtime::profile::Profiler>,
    ) -> Result<(), kiln_runtime::RuntimeError> {
        kiln_runtime::Executor::set_profiler(&mut self.executor, profiler)
    }
}
