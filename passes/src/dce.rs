//! `dce`: removes nodes no output depends on (inputs stay: they are the signature).

use crate::error::PassError;
use crate::manager::{Pass, PassInput, PassOutput};
use crate::options::PassOptions;
use kiln_ir::Graph;

/// Dead-code elimination.
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }
    fn description(&self) -> &'static str {
        "dead-code elimination: drop nodes no output depends on"
    }
    fn run_with_detail(
        &self,
        mut graph: Graph,
        _opts: &PassOptions,
    ) -> Result<(Graph, String), PassError> {
        let removed = graph.remove_dead();
        Ok((graph, format!("removed {removed} node(s)")))
    }
    /// Node ids survive removal: the history of the nodes left is kept.
    fn run_traced(&self, input: PassInput, opts: &PassOptions) -> Result<PassOutput, PassError> {
        let (graph, detail) = self.run_with_detail(input.graph, opts)?;
        let mut provenance = input.provenance;
        provenance.retain_in(&graph);
        Ok(PassOutput {
            graph,
            detail,
            phases: Vec::new(),
            provenance,
        })
    }
}
