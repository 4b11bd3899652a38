//! The model-building DSL: Rust code that reads like model code and builds an
//! IR graph.
//!
//! ```
//! use kiln_ir::dsl::ModelBuilder;
//! use kiln_ir::{shape, DType};
//!
//! let b = ModelBuilder::new("attention_scores");
//! let q = b.input("q", DType::F32, shape!["seq", 8]);
//! let k = b.input("k", DType::F32, shape!["seq", 8]);
//! let scores = q.matmul(&k.transpose(0, 1)) * (1.0 / 8f64.sqrt());
//! // Causal mask: position i sees j <= i.
//! let i = b.iota(DType::I32, shape!["seq", 1], 0);
//! let j = b.iota(DType::I32, shape![1, "seq"], 1);
//! let probs = j.le(&i).select_scalar(&scores, f64::NEG_INFINITY).softmax(-1);
//! b.output("probs", &probs);
//! let g = b.finish().unwrap();
//! assert_eq!(g.output_types()[0].to_string(), "f32[seq,seq]");
//! ```
//!
//! Shape and dtype mistakes do not panic: [`ModelBuilder::finish`] returns a
//! [`BuildError`] naming the first bad call by its source location.

mod builder;
mod var;

pub use builder::{BuildError, ModelBuilder, ScopeGuard};
pub use var::Var;
