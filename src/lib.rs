//! # kiln
//!
//! A compiler and runtime for autoregressive models. Three ways to use it:
//!
//! - **JIT, in-process** (this crate): [`jit`] compiles a graph with its
//!   weights into an [`Executable`] you [`run`](Executable::run) or
//!   [`generate`](Executable::generate) from; [`jit_model`] compiles a loaded
//!   model with its tokenizer into a [`CompiledModel`] that takes and returns
//!   text.
//! - **Ahead of time**: `kiln compile --model M --target cpu|cuda --out ART`
//!   writes an artifact ([`aot`]); the `kiln-run` binary of
//!   [`kiln_runtime`] runs it with no compiler linked.
//! - **Inspection**: `kiln inspect`, `kiln opt` print the IR after any pass.
//!
//! ## Run a graph
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
//! Any graph runs this way (see `examples/custom_model.rs`, a model written
//! in the DSL). A decoder — input `tokens: i32[seq]`, output
//! `logits: f32[seq, vocab]`, KV caches or recurrent states as aliased
//! inputs and outputs — also generates:
//!
//! ```no_run
//! # let model = kiln::models::builtin("tiny-decoder").unwrap();
//! # let mut exe = kiln::jit(&(model.build)()?, &(model.weights)(0), &Default::default())?;
//! use kiln::runtime::generate::GenerateOptions;
//! let opts = GenerateOptions { max_new_tokens: 16, ..Default::default() };
//! let (tokens, stats) = exe.generate(&[72, 105], &opts)?;
//! println!("{tokens:?} at {:.0} tokens/s", stats.decode_tokens_per_sec());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Generate text from a model
//!
//! [`model::load`] finds the embedded default model, a built-in or a Hugging
//! Face directory, with its tokenizer, special tokens and sampling defaults;
//! [`jit_model`] compiles it:
//!
//! ```no_run
//! let model = kiln::model::load("default", 0)?;
//! let mut compiled = kiln::jit_model(&model, &kiln::CompileOptions::default())?;
//! println!("{}", compiled.generate_text("And God said", 32)?);
//! let logits = compiled.logits(&compiled.encode("And God said")?)?; // [seq, vocab]
//! # Ok::<(), kiln::KilnError>(())
//! ```
//!
//! `cargo run --release --example jit` runs this with timings. For a
//! streaming callback, drive [`CompiledModel::lm`] (a
//! [`kiln_runtime::generate::LanguageModel`]) with
//! [`kiln_runtime::generate::generate`], or use
//! [`Executable::generate_streaming`].
//!
//! ## The pipeline
//!
//! In order: the DSL builds a [`kiln_ir::Graph`]; the optimizer
//! ([`kiln_passes`]) rewrites it into kernel-level IR; the runtime's planner
//! ([`kiln_runtime::planner`]) schedules kernels and buffers; code generation
//! ([`kiln_codegen`]) compiles every kernel through MLIR and LLVM; the CPU
//! executor ([`kiln_runtime::cpu`]) runs the plan. Language models sit on top
//! of any executor through [`kiln_runtime::lm::ExecutorLm`] — the same
//! adapter `kiln-run` uses on an artifact loaded onto the CPU or a GPU.

pub use kiln_codegen as codegen;
pub use kiln_ir as ir;
pub use kiln_models as models;
pub use kiln_passes as passes;
pub use kiln_runtime as runtime;

pub mod aot;
mod jit;
pub mod lm;
pub mod model;
mod narrow_weights;
pub use jit::{
    compile_ptx, jit, jit_with_progress, kernel_specs, CompileOptions, CompileReport, Executable,
    KilnError,
};
pub use lm::{jit_model, jit_model_with_context, CompiledLm, CompiledModel};
pub use narrow_weights::NarrowWeights;
