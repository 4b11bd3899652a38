//! # kiln
//!
//! Compile a model written in Kiln's DSL and run it in-process:
//!
//! ```no_run
//! use kiln::{jit, CompileOptions};
//! use kiln_ir::Tensor;
//! use std::collections::BTreeMap;
//!
//! let model = kiln::models::builtin("tiny-decoder").unwrap();
//! let graph = (model.build)()?;
//! let weights = (model.weights)(0);
//! let mut exe = jit(&graph, &weights, &CompileOptions::default())?;
//! let tokens = Tensor::i32(vec![3], vec![72, 105, 33])?;
//! let out = exe.run(&BTreeMap::from([("tokens".to_string(), tokens)]))?;
//! println!("{:?}", out["logits"].shape); // [3, 256]
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The pipeline, in order: the DSL builds a [`kiln_ir::Graph`]; the optimizer
//! ([`kiln_passes`]) rewrites it into kernel-level IR; the runtime's planner
//! ([`kiln_runtime::planner`]) schedules kernels and buffers; code generation
//! ([`kiln_codegen`]) compiles every kernel through MLIR and LLVM; the CPU
//! executor ([`kiln_runtime::cpu`]) runs the plan.

pub use kiln_codegen as codegen;
pub use kiln_ir as ir;
pub use kiln_models as models;
pub use kiln_passes as passes;
pub use kiln_runtime as runtime;

pub mod aot;
mod jit;
pub mod lm;
pub mod model;
pub use jit::{
    compile_ptx, jit, jit_with_progress, kernel_specs, CompileOptions, CompileReport, Executable,
    KilnError,
};
pub use lm::{jit_model, jit_model_with_context, CompiledLm, CompiledModel};
