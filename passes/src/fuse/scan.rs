//! Scan bodies are graphs of their own: `fuse` optimizes each one
//! (canonicalize, dce, fuse — recursively, for scans nested in bodies) so
//! the body is kernel-level too and the planner can plan it as a sub-plan
//! run once per iteration. The body's signature — inputs and outputs, in
//! order, with their types — is what the scan's operands and results bind
//! to, so it must come out unchanged.

use crate::canonicalize::{canonicalize_stages, rewrite_graph};
use crate::dump::DumpConfig;
use crate::error::PassError;
use crate::options::PassOptions;
use kiln_ir::{Graph, ScanOp};
use std::sync::Arc;

/// The scan with its body optimized and fused.
pub(super) fn fuse_scan(s: &ScanOp, opts: &PassOptions, place: &str) -> Result<ScanOp, PassError> {
    let within = |source: PassError| PassError::InBody {
        place: place.to_string(),
        source: Box::new(source),
    };
    let body: &Graph = &s.body;
    // Dumps number the top-level graph's passes; a body's would interleave.
    let quiet = PassOptions {
        dump: DumpConfig::default(),
        ..opts.clone()
    };
    let (mut g, _, _) =
        rewrite_graph(body, &canonicalize_stages(), &quiet, "canonicalize").map_err(within)?;
    g.remove_dead();
    let (g, _) = super::fuse_with(g, &quiet).map_err(within)?;
    let names = |g: &Graph| -> Vec<String> { g.input_names().map(String::from).collect() };
    if g.input_types() != body.input_types()
        || names(&g) != names(body)
        || g.output_types() != body.output_types()
    {
        return Err(within(PassError::Analysis {
            pass: "fuse",
            message: format!(
                "the body's signature changed from {:?} -> {:?} to {:?} -> {:?}",
                body.input_types(),
                body.output_types(),
                g.input_types(),
                g.output_types()
            ),
        }));
    }
    Ok(ScanOp {
        body: Arc::new(g),
        ..s.clone()
    })
}
