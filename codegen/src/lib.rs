//! # kiln-codegen
//!
//! Kernel-level IR nodes to MLIR (generated as text and parsed by melior),
//! lowered to LLVM and JIT-compiled in-process for the CPU, or lowered to
//! NVVM and emitted as PTX for the GPU. One kernel model for both targets
//! ([`kiln_ir::kernel`]): a kernel is a function over a grid of blocks.
//!
//! This is the only crate of Kiln that links LLVM/MLIR; the runtime never
//! depends on it.
//!
//! | module | what it holds |
//! |---|---|
//! | [`target`] | [`Target`], [`GpuArch`] |
//! | `builder` | MLIR text builder: typed SSA values, scoped CSE, `scf` control flow |
//! | `ctx` | one kernel function: buffers, sizes, block/thread ids, parallel loops, reductions |
//! | `scalar` | dtype registers/memory and every element-wise op's semantics |
//! | `math` | transcendental functions (libm on the CPU, NVVM-intrinsic formulas on the GPU) |
//! | `elemental` | the elemental emitter over fused bodies |
//! | `fused` | `loop` and `row` fused kernels |
//! | `matmul` | tiled batched `matmul` and `matmul_t` (B as `[n, k]`) |
//! | `matmul_nt` | the CPU f32 `matmul_t` tile: vectors along `k` both sides, a one-row GEMV variant |
//! | `attention` | `flash_attention` / `prflash_attention`: shared setup, hash, scores; `attention_cpu` and `attention_gpu` kernels |
//! | `update` | `update_slice`: the update written into its region of the result |
//! | `saq`, `saq_append`, `saq_attention` | the SAQ quantized KV cache: quantizer and state access, append, attention over the codes |
//! | `linear_scan` | `linear_scan`: sequential or chunked over time, parallel over the state |
//! | `emit` | kernel specs to one MLIR module |
//! | [`ptxas`] | validating PTX with ptxas (no GPU needed): registers and spills |
//! | [`driver`] | the stage lists, MLIR parsing, pass running, JIT, PTX extraction (FFI) |

mod attention;
mod attention_cpu;
mod attention_gpu;
mod builder;
mod ctx;
pub mod driver;
mod elemental;
mod emit;
mod error;
mod fused;
mod linear_scan;
mod math;
mod matmul;
mod matmul_nt;
pub mod ptxas;
mod saq;
mod saq_append;
mod saq_attention;
mod scalar;
pub mod target;
mod update;

#[doc(hidden)]
pub use attention::keep_probability_probe;
pub use driver::{llvm_version, HostObject};
pub use error::CodegenError;
pub use target::{GpuArch, Target};

use kiln_ir::kernel::KernelLaunch;
use kiln_ir::{Op, TensorType};

/// One kernel to compile: a kernel-level op (`fused`, `matmul` or
/// `update_slice`) with the types of its operands and results. The
/// compiled function is named `name`.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelSpec {
    pub name: String,
    pub op: Op,
    pub operand_types: Vec<TensorType>,
    pub result_types: Vec<TensorType>,
}

/// A compiled CPU kernel, following the CPU ABI of [`kiln_ir::kernel`]:
/// `args` holds one buffer pointer per operand then per result, `sizes` the
/// size symbols' values in the module's symbol order, and the call computes
/// blocks `block_begin..block_end` of the kernel's grid.
pub type CpuKernelFn =
    unsafe extern "C" fn(args: *const *mut u8, sizes: *const i64, block_begin: i64, block_end: i64);

/// Options for [`compile_cpu_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuOptions {
    /// Compute transcendental functions with the GPU's formulas (built from
    /// `exp2`/`log2`/`sin`/`cos`/`sqrt`) instead of libm, so those formulas
    /// can be tested against the interpreter on a machine without a GPU.
    pub portable_math: bool,
}

/// JIT-compiled kernels. Owns the execution engine: the function pointers
/// stay valid as long as the module lives.
pub struct CpuModule {
    jit: driver::Jit,
    launches: Vec<KernelLaunch>,
    mlir: String,
}

impl std::fmt::Debug for CpuModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuModule")
            .field("launches", &self.launches)
            .finish_non_exhaustive()
    }
}

impl CpuModule {
    /// Launch information of every kernel, in the order given.
    pub fn launches(&self) -> &[KernelLaunch] {
        &self.launches
    }

    /// The entry point of kernel `name`.
    pub fn lookup(&self, name: &str) -> Option<CpuKernelFn> {
        let addr = *self.jit.entries.get(name)?;
        // SAFETY: `addr` is the non-null address the execution engine returned
        // for a function emitted with exactly the `CpuKernelFn` signature
        // (`(ptr, ptr, i64, i64) -> ()`, C calling convention); the engine
        // (and so the code) lives as long as `self`.
        Some(unsafe { std::mem::transmute::<usize, CpuKernelFn>(addr) })
    }

    /// The MLIR before lowering.
    pub fn mlir(&self) -> &str {
        &self.mlir
    }

    /// The module in the LLVM dialect, after the CPU stages.
    pub fn llvm_dialect(&self) -> &str {
        &self.jit.llvm_dialect
    }
}

/// PTX for a set of kernels and their launch information. Each kernel is a
/// `.entry` named as its spec, following the GPU ABI of [`kiln_ir::kernel`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxModule {
    pub ptx: String,
    pub launches: Vec<KernelLaunch>,
}

/// The MLIR of `kernels` for `target`, before any lowering (what
/// `kiln inspect` shows). `symbols` is the sorted list of size symbols, the
/// order of the `sizes` array (CPU) or size parameters (GPU).
pub fn emit_mlir(
    kernels: &[KernelSpec],
    symbols: &[String],
    target: &Target,
) -> Result<String, CodegenError> {
    Ok(emit::emit_module(kernels, symbols, *target, false)?.mlir)
}

/// Compiles `kernels` for the CPU and JIT-compiles them in-process.
pub fn compile_cpu(kernels: &[KernelSpec], symbols: &[String]) -> Result<CpuModule, CodegenError> {
    compile_cpu_with(kernels, symbols, &CpuOptions::default())
}

/// [`compile_cpu`] with options.
pub fn compile_cpu_with(
    kernels: &[KernelSpec],
    symbols: &[String],
    options: &CpuOptions,
) -> Result<CpuModule, CodegenError> {
    let e = emit::emit_module(kernels, symbols, Target::Cpu, options.portable_math)?;
    let names: Vec<String> = kernels.iter().map(|k| k.name.clone()).collect();
    let jit = driver::jit_cpu(&e.mlir, &names)?;
    Ok(CpuModule {
        jit,
        launches: e.launches,
        mlir: e.mlir,
    })
}

/// Host object code of a set of kernels for an ahead-of-time artifact.
pub struct CpuObject {
    pub object: driver::HostObject,
    pub launches: Vec<KernelLaunch>,
}

/// Compiles `kernels` into a relocatable object for `cpu` (an LLVM CPU
/// name such as `x86-64-v3`) or, when `None`, for this machine's CPU — the
/// code [`compile_cpu`] JIT-compiles — to be linked into a shared library
/// with [`link_shared_library`].
pub fn compile_cpu_object(
    kernels: &[KernelSpec],
    symbols: &[String],
    cpu: Option<&str>,
) -> Result<CpuObject, CodegenError> {
    let e = emit::emit_module(kernels, symbols, Target::Cpu, false)?;
    Ok(CpuObject {
        object: driver::object_cpu(&e.mlir, cpu)?,
        launches: e.launches,
    })
}

/// Links `object` into the shared library `out` with the system C compiler
/// driver (`$CC`, else `cc`), against libm (the kernels' transcendental
/// functions).
pub fn link_shared_library(object: &[u8], out: &std::path::Path) -> Result<(), CodegenError> {
    let linker = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let err = |message: String| CodegenError::Link {
        linker: linker.clone(),
        out: out.display().to_string(),
        message,
    };
    let obj = out.with_extension("o");
    std::fs::write(&obj, object).map_err(|e| err(format!("writing {}: {e}", obj.display())))?;
    let result = std::process::Command::new(&linker)
        .arg("-shared")
        .arg("-o")
        .arg(out)
        .arg(&obj)
        .arg("-lm")
        .output();
    let _ = std::fs::remove_file(&obj);
    let output = result.map_err(|e| {
        err(format!(
            "cannot run it: {e} (install a C toolchain, e.g. `build-essential`, or set CC)"
        ))
    })?;
    if !output.status.success() {
        return Err(err(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// Compiles `kernels` to PTX for `arch`.
pub fn compile_ptx(
    kernels: &[KernelSpec],
    symbols: &[String],
    arch: GpuArch,
) -> Result<PtxModule, CodegenError> {
    let e = emit::emit_module(kernels, symbols, Target::Gpu { arch }, false)?;
    let ptx = driver::ptx_gpu(&e.mlir, arch)?;
    Ok(PtxModule {
        ptx,
        launches: e.launches,
    })
}
