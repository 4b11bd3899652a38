//! # kiln-passes
//!
//! Kiln's optimizer: it rewrites a logical `kiln_ir::Graph` with an e-graph
//! (egg), extracts the cheapest equivalent graph under a per-target cost
//! model that counts shared sub-terms once, and partitions the result into
//! kernel-level IR (`fused` kernels, matmuls, scans, views) that codegen
//! compiles.
//!
//! | module | what it holds |
//! |---|---|
//! | [`lang`] | the egg language: ops as e-nodes, tuples and `get` for multi-result ops |
//! | [`analysis`] | per-class types, splat values, small constant values |
//! | [`translate`] | graph <-> e-graph |
//! | [`rules`] | the rewrite rules and their registry, by stage |
//! | [`runner`] | staged rule application on egg's runner |
//! | [`cost`] | bytes + flops per target |
//! | [`extract`] | the DAG-aware extractor |
//! | [`canonicalize`] | the e-graph passes `canonicalize` and `cse` |
//! | [`regions`] | repeated layers cut into pieces, identical ones optimized once |
//! | [`provenance`] | which rewrites produced each node, through to the kernels |
//! | [`lossy`] | the opt-in lossy transforms (PrFlashAttention) |
//! | [`saq`] | the opt-in SAQ quantized KV cache (`--kv-cache saq:…`) |
//! | [`layout`] | attention reads the KV cache in place (`kv_len`); CPU: `matmul` of a transpose reads it untransposed (`matmul_t`) |
//! | [`dce`] | dead-code elimination |
//! | [`fuse`] | the fusion pass |
//! | [`manager`] | `Pass`, `PassManager`, reports |
//! | [`dump`] | dumps after passes (`KILN_DUMP_DIR`, `KILN_PRINT_AFTER`) |
//!
//! ```no_run
//! # fn demo(graph: kiln_ir::Graph) -> Result<(), kiln_passes::PassError> {
//! use kiln_passes::{PassManager, PassOptions};
//! let (kernels, reports) = PassManager::default_pipeline().run(graph, &PassOptions::from_env())?;
//! for r in &reports {
//!     eprintln!("{r}");
//! }
//! # let _ = kernels; Ok(()) }
//! ```

pub mod analysis;
pub mod canonicalize;
pub mod cost;
pub mod dce;
pub mod dump;
pub mod error;
pub mod extract;
pub mod fuse;
pub mod lang;
pub mod layout;
pub mod lossy;
pub mod manager;
pub mod narrow;
pub mod options;
pub mod provenance;
pub mod regions;
pub mod rules;
pub mod runner;
pub mod saq;
pub mod translate;

pub use dump::DumpConfig;
pub use error::PassError;
pub use manager::{Pass, PassInput, PassManager, PassOutput, PassReport, Traced};
pub use options::{CostTarget, LayerMode, PassOptions};
pub use provenance::Provenance;

/// Runs the default pipeline (`canonicalize`, `dce`, `fuse`) and returns the
/// kernel-level graph.
pub fn optimize(graph: kiln_ir::Graph, opts: &PassOptions) -> Result<kiln_ir::Graph, PassError> {
    PassManager::default_pipeline()
        .run(graph, opts)
        .map(|(g, _)| g)
}
