//! `layout`: on the CPU, a `matmul` whose right operand is a transpose of
//! its last two axes becomes `matmul_t` of the untransposed operand.
//!
//! A linear layer is `x @ wᵀ` with `w` stored `[out, in]`. Kept as written,
//! the transpose is a kernel of its own — for a weight, a transposed copy
//! made at load that doubles the weight's memory — and the matmul then
//! reads B across rows. `matmul_t` reads `w` as stored, contiguous along
//! the contraction axis like A, which is what a CPU GEMV streams fastest
//! (decode reads every weight once per token).
//!
//! The GPU keeps the transpose: its matmul tile gives each thread a column
//! of B, and loads along B's rows are the coalesced ones.

use crate::error::PassError;
use crate::manager::{Pass, PassInput, PassOutput};
use crate::options::{CostTarget, PassOptions};
use crate::provenance::{Step, What};
use kiln_ir::{Graph, NodeId, Op, Value};

/// The layout pass.
pub struct Layout;

const PASS: &str = "layout";
const RULE: &str = "transpose-into-matmul_t";

impl Pass for Layout {
    fn name(&self) -> &'static str {
        PASS
    }
    fn description(&self) -> &'static str {
        "CPU: matmul of a transposed operand reads it untransposed (matmul_t)"
    }
    fn run_with_detail(
        &self,
        graph: Graph,
        opts: &PassOptions,
    ) -> Result<(Graph, String), PassError> {
        let (g, rewritten) = rewrite(graph, opts)?;
        Ok((g, detail(rewritten.len(), opts)))
    }
    /// The new `matmul_t` carries the history of the `matmul` it replaces,
    /// plus this pass's step.
    fn run_traced(&self, input: PassInput, opts: &PassOptions) -> Result<PassOutput, PassError> {
        let marks = input.provenance.marks(&input.graph);
        let old = input.provenance.clone();
        let (graph, rewritten) = rewrite(input.graph, opts)?;
        let mut provenance = old.carried(&marks, &graph);
        let step = Step {
            seq: input.seq,
            pass: PASS,
            what: What::Rule {
                order: 0,
                rule: RULE,
                made: Some("matmul_t"),
            },
        };
        for &(from, to) in &rewritten {
            provenance.add(to, old.steps(from));
            provenance.add(to, &[step]);
        }
        Ok(PassOutput {
            graph,
            detail: detail(rewritten.len(), opts),
            phases: Vec::new(),
            provenance,
        })
    }
}

fn detail(n: usize, opts: &PassOptions) -> String {
    match opts.target {
        CostTarget::Cpu => format!("{n} matmul(s) of a transpose -> matmul_t"),
        CostTarget::Gpu => "GPU target: nothing to do".into(),
    }
}

/// Rewrites every top-level `matmul(a, permute(b))` whose permute swaps
/// exactly the last two axes; returns the graph and (old, new) node pairs.
/// The replaced matmuls, and the transposes left unused, are removed.
fn rewrite(mut g: Graph, opts: &PassOptions) -> Result<(Graph, Vec<(NodeId, NodeId)>), PassError> {
    let mut done = Vec::new();
    if opts.target != CostTarget::Cpu {
        return Ok((g, done));
    }
    let candidates: Vec<(NodeId, Value, NodeId)> = g
        .node_ids()
        .filter(|&n| g.node(n).op == Op::MatMul)
        .filter_map(|n| {
            let a = g.operands(n)[0];
            let t = g.operands(n)[1].node;
            swapped_last_two(&g, t).map(|_| (n, a, t))
        })
        .collect();
    let rebuild = |source| PassError::Rebuild { pass: PASS, source };
    for (n, a, t) in candidates {
        let b = g.operands(t)[0];
        let id = g.add_node(Op::MatMulT, &[a, b]).map_err(rebuild)?;
        g.set_loc(id, g.node(n).loc.clone());
        g.replace_uses(Value::new(n, 0), Value::new(id, 0))
            .map_err(rebuild)?;
        g.remove_node(n).map_err(rebuild)?;
        // The transpose goes once nothing else reads it.
        if g.try_node(t).is_some()
            && g.users(t).is_empty()
            && !g.outputs().iter().any(|o| o.value.node == t)
        {
            g.remove_node(t).map_err(rebuild)?;
        }
        done.push((n, id));
    }
    Ok((g, done))
}

/// Some when `node` is a permute that swaps the last two axes and keeps
/// the others in place.
fn swapped_last_two(g: &Graph, node: NodeId) -> Option<()> {
    let Op::Permute { perm } = &g.node(node).op else {
        return None;
    };
    let r = perm.len();
    if r < 2 {
        return None;
    }
    let batch_kept = perm[..r - 2].iter().enumerate().all(|(i, &p)| p == i);
    (batch_kept && perm[r - 2] == r - 1 && perm[r - 1] == r - 2).then_some(())
}
