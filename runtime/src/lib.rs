//! # kiln-runtime
//!
//! Runs compiled models. Holds no compiler: an ahead-of-time artifact runs
//! with this crate alone (it never depends on `kiln-codegen` or any
//! LLVM/MLIR crate).
//!
//! | module | what it holds |
//! |---|---|
//! | [`artifact`] | ahead-of-time artifacts: manifest (versions, target, sha256 of every file), verified loading onto the CPU |
//! | [`plan`] | the execution plan: buffers, kernels, steps (launches, copies, scans; plain data) |
//! | [`planner`] | kernel-level graph → plan: in-place `update_slice`, scan bodies as sub-plans, liveness-based buffer reuse |
//! | [`cpu`] | the CPU executor: grid blocks on a thread pool, explicit sizes, state kept between calls |
//! | `cuda` | the CUDA executor (feature `cuda`, default): PTX kernels through the driver API (cudarc), weights and state on the device |
//! | [`memory`] | aligned host buffers |
//! | [`executor`] | the [`Executor`] trait every executor implements |
//! | [`profile`] | per-kernel time of an executor's calls (`kiln-run --profile`) |
//! | [`error`] | runtime errors |
//! | [`sampler`] | greedy / temperature / top-k / top-p sampling, seeded |
//! | [`generate`] | the generation loop over any [`generate::LanguageModel`], streaming |
//! | [`lm`] | a decoder plan on any executor as a language model ([`lm::ExecutorLm`]); streaming text |

pub mod artifact;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod executor;
pub mod generate;
pub mod lm;
pub mod memory;
pub mod plan;
pub mod planner;
pub mod profile;
pub mod sampler;
mod select;

pub use cpu::{CpuExecutor, CpuKernelFn, ExecOptions, KernelTable};
pub use error::RuntimeError;
pub use executor::Executor;
pub use plan::Plan;
pub use planner::{plan, PlanError};
