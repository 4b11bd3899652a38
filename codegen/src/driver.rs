//! The backend driver: parse the emitted MLIR, run the stage list, and hand
//! the result to the JIT or read the PTX out of it. This is the FFI module of
//! the crate: every `unsafe` block lives here.
//!
//! The backend is a plain list of stages, each a pass pipeline (as Triton's
//! backends are): `(name, pipeline)`. With `KILN_DUMP_DIR` set, the module is
//! written before the first stage and after each one as
//! `<dir>/codegen.<NN>.<stage>.mlir`.

use crate::error::CodegenError;
use crate::target::GpuArch;
use melior::dialect::DialectRegistry;
use melior::ir::operation::OperationLike;
use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::{
    parse_pass_pipeline, register_all_dialects, register_all_llvm_translations, register_all_passes,
};
use melior::Context;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Once;

/// CPU stages: everything to the LLVM dialect in one pipeline.
pub const CPU_STAGES: &[(&str, &str)] = &[(
    "lower",
    "builtin.module(convert-scf-to-cf,convert-to-llvm,reconcile-unrealized-casts)",
)];

/// GPU stages; `{chip}` and `{features}` are filled from the [`GpuArch`].
pub const GPU_STAGES: &[(&str, &str)] = &[
    (
        "attach-target",
        "builtin.module(nvvm-attach-target{chip={chip} features={features} O=3})",
    ),
    (
        "nvvm",
        "builtin.module(gpu.module(convert-scf-to-cf,convert-gpu-to-nvvm,reconcile-unrealized-casts))",
    ),
    ("ptx", "builtin.module(gpu-module-to-binary{format=isa})"),
];

/// The GPU stage list for `arch`.
pub fn gpu_stages(arch: GpuArch) -> Vec<(&'static str, String)> {
    GPU_STAGES
        .iter()
        .map(|(n, p)| {
            (
                *n,
                p.replace("{chip}", arch.name())
                    .replace("{features}", arch.ptx_features()),
            )
        })
        .collect()
}

static PASSES: Once = Once::new();

/// An MLIR context with every dialect and translation, collecting diagnostics.
struct Session {
    context: Context,
    diags: Rc<RefCell<Vec<String>>>,
}

impl Session {
    fn new() -> Session {
        PASSES.call_once(register_all_passes);
        let registry = DialectRegistry::new();
        register_all_dialects(&registry);
        let context = Context::new();
        context.enable_multi_threading(false);
        context.append_dialect_registry(&registry);
        context.load_all_available_dialects();
        register_all_llvm_translations(&context);
        let diags = Rc::new(RefCell::new(Vec::new()));
        let sink = diags.clone();
        context.attach_diagnostic_handler(move |d| {
            sink.borrow_mut().push(format!("{}: {}", d.location(), d));
            true
        });
        Session { context, diags }
    }

    fn take_diags(&self) -> String {
        let d: Vec<String> = self.diags.borrow_mut().drain(..).collect();
        if d.is_empty() {
            "no diagnostic".to_string()
        } else {
            d.join("; ")
        }
    }

    fn parse<'c>(&'c self, text: &str) -> Result<Module<'c>, CodegenError> {
        match Module::parse(&self.context, text) {
            Some(m) if m.as_operation().verify() => Ok(m),
            _ => {
                let message = self.take_diags();
                let line = offending_line(&message, text);
                Err(CodegenError::Parse { message, line })
            }
        }
    }

    /// Runs the stages in order, dumping after each when asked.
    fn run_stages<S: AsRef<str>>(
        &self,
        module: &mut Module,
        stages: &[(&str, S)],
        dump: &mut Dumper,
    ) -> Result<(), CodegenError> {
        for (name, pipeline) in stages {
            let pm = PassManager::new(&self.context);
            parse_pass_pipeline(pm.as_operation_pass_manager(), pipeline.as_ref()).map_err(
                |e| CodegenError::Pass {
                    stage: name.to_string(),
                    message: format!("bad pipeline: {e}"),
                },
            )?;
            pm.run(module).map_err(|_| CodegenError::Pass {
                stage: name.to_string(),
                message: self.take_diags(),
            })?;
            dump.write(name, &module.as_operation().to_string())?;
        }
        Ok(())
    }
}

/// Finds `:LINE:COL` in a diagnostic location and returns that line of `text`.
fn offending_line(message: &str, text: &str) -> Option<String> {
    let bytes = message.as_bytes();
    for (i, _) in message.match_indices(':') {
        let rest = &message[i + 1..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() || !rest[digits.len()..].starts_with(':') {
            continue;
        }
        if i > 0 && bytes[i - 1].is_ascii_digit() {
            continue;
        }
        if let Ok(n) = digits.parse::<usize>() {
            if n >= 1 {
                return text
                    .lines()
                    .nth(n - 1)
                    .map(|l| format!("line {n}: {}", l.trim()));
            }
        }
    }
    None
}

/// Writes `codegen.<NN>.<stage>.mlir` files when `KILN_DUMP_DIR` is set.
struct Dumper {
    dir: Option<std::path::PathBuf>,
    n: usize,
}

impl Dumper {
    fn from_env() -> Dumper {
        Dumper {
            dir: std::env::var_os("KILN_DUMP_DIR").map(Into::into),
            n: 0,
        }
    }

    fn write(&mut self, stage: &str, text: &str) -> Result<(), CodegenError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join(format!("codegen.{:02}.{stage}.mlir", self.n));
        self.n += 1;
        std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&path, text))
            .map_err(|e| CodegenError::Dump {
                path: path.display().to_string(),
                message: e.to_string(),
            })
    }
}

/// A JIT-compiled module: the engine and the kernels' entry points.
pub struct Jit {
    engine: mlir_sys::MlirExecutionEngine,
    pub entries: HashMap<String, usize>,
    pub llvm_dialect: String,
}

// SAFETY: the engine is not mutated after creation (lookups happen in
// `jit_cpu` before the value is shared); compiled code is immutable and
// reentrant, and the engine is destroyed only in `Drop`, once.
unsafe impl Send for Jit {}
// SAFETY: as above; `&Jit` exposes only immutable data.
unsafe impl Sync for Jit {}

impl Drop for Jit {
    fn drop(&mut self) {
        // SAFETY: `engine` was created by `mlirExecutionEngineCreate`, checked
        // non-null, and is destroyed exactly once here.
        unsafe { mlir_sys::mlirExecutionEngineDestroy(self.engine) }
    }
}

/// Lowers CPU MLIR through [`CPU_STAGES`] and JIT-compiles it; looks up `names`.
pub fn jit_cpu(mlir: &str, names: &[String]) -> Result<Jit, CodegenError> {
    let s = Session::new();
    let mut dump = Dumper::from_env();
    dump.write("input", mlir)?;
    let mut module = s.parse(mlir)?;
    s.run_stages(&mut module, CPU_STAGES, &mut dump)?;
    let llvm_dialect = module.as_operation().to_string();
    // SAFETY: the module is a valid, verified LLVM-dialect module owned by
    // `s.context`, which outlives this call; the engine copies what it needs
    // (the C API lets the module be destroyed once the call returns).
    let engine = unsafe {
        mlir_sys::mlirExecutionEngineCreate(module.to_raw(), 3, 0, std::ptr::null(), false, false)
    };
    if engine.ptr.is_null() {
        return Err(CodegenError::Jit(format!(
            "could not create the execution engine: {}",
            s.take_diags()
        )));
    }
    let mut jit = Jit {
        engine,
        entries: HashMap::new(),
        llvm_dialect,
    };
    // SAFETY: `engine` is valid; the module has no global constructors that
    // need symbols we have not provided.
    unsafe { mlir_sys::mlirExecutionEngineInitialize(jit.engine) };
    for name in names {
        let sref = mlir_sys::MlirStringRef {
            data: name.as_ptr() as *const _,
            length: name.len(),
        };
        // SAFETY: `engine` is valid and `sref` points into `name`, alive for the call.
        let p = unsafe { mlir_sys::mlirExecutionEngineLookup(jit.engine, sref) };
        if p.is_null() {
            return Err(CodegenError::Jit(format!(
                "kernel `{name}` not found after compilation"
            )));
        }
        jit.entries.insert(name.clone(), p as usize);
    }
    Ok(jit)
}

/// Lowers GPU MLIR through the [`GPU_STAGES`] for `arch` and returns the PTX.
pub fn ptx_gpu(mlir: &str, arch: GpuArch) -> Result<String, CodegenError> {
    let s = Session::new();
    let mut dump = Dumper::from_env();
    dump.write("input", mlir)?;
    let mut module = s.parse(mlir)?;
    s.run_stages(&mut module, &gpu_stages(arch), &mut dump)?;
    extract_ptx(&module)
}

fn string_ref(r: mlir_sys::MlirStringRef) -> String {
    if r.data.is_null() {
        return String::new();
    }
    // SAFETY: MLIR string refs point at `length` valid bytes owned by the
    // context, which is alive while we copy them.
    let bytes = unsafe { std::slice::from_raw_parts(r.data as *const u8, r.length) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads the assembly of the first object of the module's `gpu.binary`.
fn extract_ptx(module: &Module) -> Result<String, CodegenError> {
    let name = "objects";
    // SAFETY: walks the ops of a valid module's body with the C API; every
    // handle comes from MLIR and is checked for null before use; the
    // attribute name is a valid string ref for the duration of the call.
    unsafe {
        let body = mlir_sys::mlirModuleGetBody(module.to_raw());
        let mut op = mlir_sys::mlirBlockGetFirstOperation(body);
        while !op.ptr.is_null() {
            let ident = mlir_sys::mlirOperationGetName(op);
            if string_ref(mlir_sys::mlirIdentifierStr(ident)) == "gpu.binary" {
                let attr = mlir_sys::mlirOperationGetAttributeByName(
                    op,
                    mlir_sys::MlirStringRef {
                        data: name.as_ptr() as *const _,
                        length: name.len(),
                    },
                );
                if attr.ptr.is_null() || mlir_sys::mlirArrayAttrGetNumElements(attr) < 1 {
                    return Err(CodegenError::Ptx("gpu.binary has no objects".into()));
                }
                let obj = mlir_sys::mlirArrayAttrGetElement(attr, 0);
                if !mlir_sys::mlirAttributeIsAGPUObjectAttr(obj) {
                    return Err(CodegenError::Ptx(
                        "gpu.binary object is not a #gpu.object".into(),
                    ));
                }
                let text = string_ref(mlir_sys::mlirGPUObjectAttrGetObject(obj));
                return Ok(text.trim_end_matches('\0').to_string());
            }
            op = mlir_sys::mlirOperationGetNextInBlock(op);
        }
    }
    Err(CodegenError::Ptx(
        "no gpu.binary in the lowered module".into(),
    ))
}

/// Host object code for an ahead-of-time artifact, and what it was built for.
pub struct HostObject {
    /// A relocatable ELF object (position-independent), ready to link into
    /// a shared library.
    pub object: Vec<u8>,
    pub triple: String,
    pub cpu: String,
    pub features: String,
}

/// The CPU names `--cpu` takes: the x86-64 psABI levels (portable) and
/// common server and desktop models. LLVM aborts the process on a name it
/// does not know, so names are checked against this list first.
pub const KNOWN_CPUS: &[&str] = &[
    "x86-64",
    "x86-64-v2",
    "x86-64-v3",
    "x86-64-v4",
    "haswell",
    "broadwell",
    "skylake",
    "skylake-avx512",
    "cascadelake",
    "icelake-server",
    "sapphirerapids",
    "alderlake",
    "znver2",
    "znver3",
    "znver4",
];

/// Lowers CPU MLIR through [`CPU_STAGES`], translates it to LLVM IR and
/// compiles it, position-independent, at `-O3`, for `cpu` (an LLVM CPU
/// name such as `x86-64-v3`, with that CPU's features) or, when `None`,
/// for this machine's CPU and features, as the JIT does.
pub fn object_cpu(mlir: &str, cpu: Option<&str>) -> Result<HostObject, CodegenError> {
    if let Some(name) = cpu.filter(|c| !KNOWN_CPUS.contains(c)) {
        return Err(CodegenError::Aot(format!(
            "unknown CPU `{name}`; use one of {} (or none for this machine's)",
            KNOWN_CPUS.join(", ")
        )));
    }
    use inkwell::targets::{
        CodeModel, FileType, InitializationConfig, RelocMode, Target as LlvmTarget, TargetMachine,
    };
    let s = Session::new();
    let mut dump = Dumper::from_env();
    dump.write("input", mlir)?;
    let mut module = s.parse(mlir)?;
    s.run_stages(&mut module, CPU_STAGES, &mut dump)?;
    let aot = |m: String| CodegenError::Aot(m);
    LlvmTarget::initialize_native(&InitializationConfig::default()).map_err(aot)?;
    let triple = TargetMachine::get_default_triple();
    let (cpu, features) = match cpu {
        None => (
            TargetMachine::get_host_cpu_name().to_string(),
            TargetMachine::get_host_cpu_features().to_string(),
        ),
        Some(name) => (name.to_string(), String::new()),
    };
    let target = LlvmTarget::from_triple(&triple).map_err(|e| aot(e.to_string()))?;
    let machine = target
        .create_target_machine(
            &triple,
            &cpu,
            &features,
            inkwell::OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| aot(format!("no target machine for {triple}")))?;
    let context = inkwell::context::Context::create();
    // SAFETY: `module` is a verified LLVM-dialect module; translation
    // creates a new LLVM module in `context` (the two crates' context and
    // module handles are the same C types, only declared twice) and hands
    // its ownership to us. Null means the translation failed.
    let raw = unsafe {
        mlir_sys::mlirTranslateModuleToLLVMIR(
            module.as_operation().to_raw(),
            context.raw() as mlir_sys::LLVMContextRef,
        )
    };
    if raw.is_null() {
        return Err(aot(format!(
            "translation to LLVM IR failed: {}",
            s.take_diags()
        )));
    }
    // SAFETY: `raw` is a non-null module we own, living in `context`, which
    // outlives `llvm` (declared after it, dropped before it).
    let llvm =
        unsafe { inkwell::module::Module::new(raw as inkwell::llvm_sys::prelude::LLVMModuleRef) };
    llvm.set_triple(&triple);
    llvm.set_data_layout(&machine.get_target_data().get_data_layout());
    llvm.run_passes(
        "default<O3>",
        &machine,
        inkwell::passes::PassBuilderOptions::create(),
    )
    .map_err(|e| aot(format!("LLVM -O3: {e}")))?;
    let buffer = machine
        .write_to_memory_buffer(&llvm, FileType::Object)
        .map_err(|e| aot(format!("writing the object: {e}")))?;
    let object = buffer.as_slice().to_vec();
    drop(llvm);
    Ok(HostObject {
        object,
        triple: triple.as_str().to_string_lossy().into_owned(),
        cpu,
        features,
    })
}

/// The version of the LLVM linked in (`22.1.0`).
pub fn llvm_version() -> String {
    let (mut major, mut minor, mut patch) = (0u32, 0u32, 0u32);
    // SAFETY: writes three integers through valid pointers.
    unsafe { inkwell::llvm_sys::core::LLVMGetVersion(&mut major, &mut minor, &mut patch) };
    format!("{major}.{minor}.{patch}")
}
