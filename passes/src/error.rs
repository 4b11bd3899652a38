//! Typed errors of the optimizer.

use kiln_ir::graph::GraphError;
use kiln_ir::kernel::FusionError;
use kiln_ir::verify::VerifyError;
use std::path::PathBuf;

/// Why a pass (or the pass manager) failed. Every variant names the pass or
/// the place, so a failure in a long pipeline is attributable.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// `kiln opt --passes` or [`crate::PassManager::from_names`] named a pass that does not exist.
    #[error("unknown pass `{name}`; valid passes: {}", valid.join(", "))]
    UnknownPass {
        name: String,
        valid: Vec<&'static str>,
    },
    /// [`crate::PassManager::run_until`] asked for a pass the pipeline does not hold.
    #[error("pass `{name}` is not in the pipeline ({})", pipeline.join(", "))]
    NotInPipeline {
        name: String,
        pipeline: Vec<&'static str>,
    },
    /// The input graph is malformed (checked before the first pass).
    #[error("the input graph does not verify: {0}")]
    InvalidInput(#[source] VerifyError),
    /// A pass produced a graph that fails `kiln_ir::verify`: a bug in that pass.
    #[error("the graph after pass `{pass}` does not verify: {source}")]
    Verify {
        pass: &'static str,
        #[source]
        source: VerifyError,
    },
    /// A fused node breaks the fusion contract codegen relies on.
    #[error("pass `{pass}` built a kernel that breaks the fusion contract at {place}: {source}")]
    FusionContract {
        pass: &'static str,
        place: String,
        #[source]
        source: FusionError,
    },
    /// After `fuse`, a top-level node is not a kernel-level node.
    #[error("pass `{pass}` left a `{op}` node at the top level ({place}); only input, param, const, reshape, matmul, scan and fused may remain")]
    NotKernelLevel {
        pass: &'static str,
        op: &'static str,
        place: String,
    },
    /// A pass failed on the body of a scan (which `fuse` optimizes as a graph of its own).
    #[error("in the body of the scan {place}: {source}")]
    InBody {
        place: String,
        #[source]
        source: Box<PassError>,
    },
    /// Rebuilding a graph failed (a type error while re-adding nodes).
    #[error("pass `{pass}` could not rebuild the graph: {source}")]
    Rebuild {
        pass: &'static str,
        #[source]
        source: GraphError,
    },
    /// The e-graph analysis found two merged classes that disagree (an unsound rule).
    #[error("e-graph analysis inconsistency in pass `{pass}`: {message}")]
    Analysis { pass: &'static str, message: String },
    /// No finite-cost, acyclic term could be extracted for a graph result.
    #[error("extraction failed in pass `{pass}`: {message}")]
    Extraction { pass: &'static str, message: String },
    /// `--kv-cache saq:...` was asked for a graph whose cache the `saq` pass
    /// cannot rewrite.
    #[error("the `saq` pass (--kv-cache): {problem}")]
    Saq { problem: String },
    /// A [`crate::PassOptions`] value the pass cannot honour.
    #[error("pass `{pass}`: {problem}")]
    BadOption { pass: &'static str, problem: String },
    /// Writing a dump file failed.
    #[error("cannot write the dump file {path}: {source}")]
    Dump {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
