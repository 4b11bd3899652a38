//! The one place the CPU executor calls generated code.

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
