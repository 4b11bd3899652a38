//! # kiln-ir
//!
//! The typed dataflow-graph IR of Kiln, its text form, the model-building DSL
//! and the reference interpreter — the semantic oracle every optimization and
//! every kernel is tested against. No heavy dependencies live here.
//!
//! | module | what it holds |
//! |---|---|
//! | [`attention`] | the attention kernel ops and their shared math |
//! | [`dim`] | symbolic dimensions (`seq`, `past+seq`) and their evaluation |
//! | [`types`] | dtypes, shapes, tensor types |
//! | [`op`] | the op set (logical and kernel-level) |
//! | [`infer`] | type rules, shared by every producer of graphs |
//! | [`graph`] | the graph on petgraph: nodes, values, inputs, outputs |
//! | [`verify`] | the verifier |
//! | [`text`] | the text form: print and parse |
//! | [`json`], [`dot`] | JSON (serde) and Graphviz forms |
//! | [`dsl`] | the Rust DSL models are written in |
//! | [`interp`] | the reference interpreter |
//! | [`tensor`] | host tensors |
//! | [`kernel`] | the kernel model (grid of blocks, CPU and GPU ABI) |
//! | [`linear_scan`] | the `linear_scan` kernel op (first-order linear recurrences) |
//! | [`saq`] | the SAQ quantized KV cache: layout, quantization, its ops |

pub mod attention;
pub mod dim;
pub mod dot;
pub mod dsl;
pub mod graph;
pub mod infer;
pub mod interp;
pub mod json;
pub mod kernel;
pub mod linear_scan;
pub mod literal;
pub mod op;
pub mod saq;
mod serde_float;
pub mod tensor;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
pub mod types;
pub mod verify;

pub use dim::{Bindings, Dim};
pub use graph::{Graph, GraphError, GraphOutput, Node, NodeId, Value};
pub use literal::Literal;
pub use op::{BinaryOp, CmpOp, FusedOp, FusionKind, Op, ReduceOp, ScanOp, UnaryOp};
pub use tensor::{Tensor, TensorData};
pub use types::{DType, Shape, TensorType};
pub use verify::verify;
