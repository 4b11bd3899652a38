//! Kernels from a shared library: the CPU half of an ahead-of-time
//! artifact. The library was linked from the object code generation wrote;
//! each kernel is an exported C function with the CPU ABI of
//! [`kiln_ir::kernel`].

use crate::cpu::{CpuKernelFn, KernelTable};
use kiln_ir::kernel::KernelLaunch;
use std::collections::HashMap;
use std::path::Path;

/// A loaded kernel library. The function pointers stay valid while it lives.
pub struct SharedLibrary {
    funcs: HashMap<String, CpuKernelFn>,
    launches: Vec<KernelLaunch>,
    // Dropped last: unloading invalidates `funcs`.
    _lib: libloading::Library,
}

impl std::fmt::Debug for SharedLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLibrary")
            .field("kernels", &self.launches.len())
            .finish_non_exhaustive()
    }
}

/// Why a kernel library could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LibraryError {
    #[error("cannot load the kernel library {path}: {message}")]
    Load { path: String, message: String },
    #[error("the kernel library {path} has no kernel `{name}`")]
    MissingKernel { path: String, name: String },
}

impl SharedLibrary {
    /// Loads the library at `path` and resolves every kernel of `launches`.
    pub fn open(path: &Path, launches: Vec<KernelLaunch>) -> Result<SharedLibrary, LibraryError> {
        let shown = path.display().to_string();
        // SAFETY: loading runs the library's initializers. Kiln's kernel
        // libraries are linked from generated kernel code only (no
        // constructors besides the C runtime's), and the artifact's
        // checksum was verified before this call.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| LibraryError::Load {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let mut funcs = HashMap::new();
        for l in &launches {
            // SAFETY: every kernel is emitted as `void(ptr, ptr, i64, i64)`
            // with the C calling convention, which is `CpuKernelFn`; the
            // pointer is copied out and used only while `lib` is alive
            // (`SharedLibrary` owns both and drops `lib` last).
            let f = unsafe { lib.get::<CpuKernelFn>(l.name.as_bytes()) }
                .map(|s| *s)
                .map_err(|_| LibraryError::MissingKernel {
                    path: shown.clone(),
                    name: l.name.clone(),
                })?;
            funcs.insert(l.name.clone(), f);
        }
        Ok(SharedLibrary {
            funcs,
            launches,
            _lib: lib,
        })
    }
}

impl KernelTable for SharedLibrary {
    fn lookup(&self, name: &str) -> Option<CpuKernelFn> {
        self.funcs.get(name).copied()
    }
    fn launches(&self) -> Vec<KernelLaunch> {
        self.launches.clone()
    }
}
