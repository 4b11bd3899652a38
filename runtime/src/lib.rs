//! # kiln-runtime
//!
//! Runs compiled models. Holds no compiler: an ahead-of-time artifact runs
//! with this crate alone (it never depends on `kiln-codegen` or any
//! LLVM/MLIR crate).
//!
//! | module | what it holds |
//! |---|---|
//! | [`plan`] | the execution plan: buffers, kernels, steps (plain data) |
//! | [`planner`] | kernel-level graph → plan, with liveness-based buffer reuse |
//! | [`cpu`] | the CPU executor: grid blocks on a thread pool |
//! | [`memory`] | aligned host buffers |
//! | [`error`] | runtime errors |

pub mod cpu;
pub mod error;
pub mod memory;
pub mod plan;
pub mod planner;

pub use cpu::{CpuExecutor, CpuKernelFn, ExecOptions, KernelTable};
pub use error::RuntimeError;
pub use plan::Plan;
pub use planner::{plan, PlanError};
