//! The one place the CPU executor calls generated code or touches memory
//! through raw pointers (kernel arguments, copies between plan buffers).

use kiln_ir::kernel::KernelLaunch;

/// A compiled CPU kernel (see the CPU ABI in [`kiln_ir::kernel`]).
pub type CpuKernelFn =
    unsafe extern "C" fn(args: *const *mut u8, sizes: *const i64, block_begin: i64, block_end: i64);

/// Argument pointers for one launch, shareable across the pool's threads.
pub(crate) struct LaunchArgs<'a> {
    pub(crate) func: CpuKernelFn,
    pub(crate) args: &'a [*mut u8],
    pub(crate) sizes: &'a [i64],
}

// SAFETY: the pointers refer to buffers the executor owns and keeps alive and
// unaliased for the duration of the launch; kernels write disjoint blocks.
unsafe impl Sync for LaunchArgs<'_> {}

impl LaunchArgs<'_> {
    /// Runs blocks `begin..end`.
    pub(crate) fn run_blocks(&self, begin: usize, end: usize) {
        // SAFETY: `args` has one valid pointer per kernel operand and result,
        // each to a buffer sized for its type under the bindings that produced
        // `sizes`; the kernel was compiled for exactly this argument list and
        // symbol order (checked when the executor was built); block ranges
        // handed to different threads are disjoint.
        unsafe {
            (self.func)(
                self.args.as_ptr(),
                self.sizes.as_ptr(),
                begin as i64,
                end as i64,
            )
        }
    }
}

/// Where compiled kernels come from: a JIT module in-process, or a shared
/// library of an ahead-of-time artifact.
pub trait KernelTable: Send + Sync {
    /// The entry point of the kernel named `name`.
    fn lookup(&self, name: &str) -> Option<CpuKernelFn>;
    /// Launch information for every kernel the table holds.
    fn launches(&self) -> Vec<KernelLaunch>;
}

/// A table of buffer addresses the executor rebuilds on each run (and
/// rebinds inside scans). Plain addresses: dereferenced only by kernels and
/// the copies below, while the executor is exclusively borrowed.
#[derive(Default)]
pub(crate) struct PtrVec(pub(crate) Vec<*mut u8>);

// SAFETY: the addresses point into heap memory owned by the executor that
// holds this table; moving the executor to another thread moves the owners
// with it, and the addresses are only dereferenced during `run`/`step`,
// which take `&mut self`.
unsafe impl Send for PtrVec {}
// SAFETY: a shared reference gives no way to dereference the addresses.
unsafe impl Sync for PtrVec {}

/// Copies `n` bytes from `from` to `to` (regions may overlap).
///
/// The caller guarantees both point into live plan buffers holding at
/// least `n` bytes, which the planner and executor establish by sizing
/// every buffer for its type under the run's bindings.
pub(crate) fn copy_bytes(from: *const u8, to: *mut u8, n: usize) {
    if n == 0 || std::ptr::eq(from, to) {
        return;
    }
    // SAFETY: see the contract above; `copy` tolerates overlap.
    unsafe { std::ptr::copy(from, to, n) }
}

/// A slice of a stacked tensor along a non-leading axis: `outer` runs of
/// `inner` bytes, run `o` at byte `(o * len + t) * inner` of the stacked
/// buffer and at `o * inner` of the dense slice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strided {
    pub outer: usize,
    pub len: usize,
    pub inner: usize,
}

/// Gathers slice `t` of `stacked` into `dense`.
///
/// Same contract as [`copy_bytes`]: `stacked` holds `outer * len * inner`
/// bytes, `dense` holds `outer * inner`, and `t < len`.
pub(crate) fn gather_slice(stacked: *const u8, dense: *mut u8, s: Strided, t: usize) {
    for o in 0..s.outer {
        let src = stacked.wrapping_add((o * s.len + t) * s.inner);
        copy_bytes(src, dense.wrapping_add(o * s.inner), s.inner);
    }
}

/// Scatters `dense` into slice `t` of `stacked` (the inverse of [`gather_slice`]).
pub(crate) fn scatter_slice(dense: *const u8, stacked: *mut u8, s: Strided, t: usize) {
    for o in 0..s.outer {
        let dst = stacked.wrapping_add((o * s.len + t) * s.inner);
        copy_bytes(dense.wrapping_add(o * s.inner), dst, s.inner);
    }
}
