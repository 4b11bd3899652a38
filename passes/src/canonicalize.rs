//! The e-graph passes: `canonicalize` (the staged rulesets) and `cse`
//! (translation and extraction only: hash-consing merges equal sub-terms).

use crate::cost::CostModel;
use crate::error::PassError;
use crate::extract::{extract_dag, selection_cost};
use crate::manager::Pass;
use crate::options::PassOptions;
use crate::rules::{stage_rules, RuleDef, Stage};
use crate::runner::{run_stages, RunReport};
use crate::translate::{to_egraph, to_graph};
use kiln_ir::Graph;

/// Translates `graph`, runs `stages`, extracts the cheapest graph.
/// `pass` names the caller in errors.
pub fn rewrite_graph(
    graph: &Graph,
    stages: &[(&'static str, Vec<&'static RuleDef>)],
    opts: &PassOptions,
    pass: &'static str,
) -> Result<(Graph, RunReport, f64), PassError> {
    let mut t = to_egraph(graph);
    let (eg, report) = run_stages(t.egraph, stages, opts);
    t.egraph = eg;
    let errors = &t.egraph.analysis.errors;
    if !errors.is_empty() {
        let shown: Vec<&str> = errors.iter().take(3).map(String::as_str).collect();
        return Err(PassError::Analysis {
            pass,
            message: format!("{} problem(s): {}", errors.len(), shown.join("; ")),
        });
    }
    let model = CostModel::new(opts.target);
    let roots = t.roots();
    let sel = extract_dag(&t.egraph, &roots, &model)
        .map_err(|message| PassError::Extraction { pass, message })?;
    let cost = selection_cost(&t.egraph, &sel, &roots, &model);
    let g = to_graph(&t, &sel, pass)?;
    Ok((g, report, cost))
}

/// Runs exactly `rules` (as one stage) over `graph`: how each rule's
/// soundness test exercises it alone.
pub fn run_rules(
    graph: &Graph,
    rules: &[&'static RuleDef],
    opts: &PassOptions,
) -> Result<(Graph, RunReport), PassError> {
    let stages = [("rules", rules.to_vec())];
    rewrite_graph(graph, &stages, opts, "rules").map(|(g, r, _)| (g, r))
}

/// The canonicalize stages in order: shape folding, algebra, constant folding.
pub fn canonicalize_stages() -> Vec<(&'static str, Vec<&'static RuleDef>)> {
    stages(&Stage::CANONICALIZE)
}

/// The staged rulesets of `recognize`, in order.
pub fn recognize_stages() -> Vec<(&'static str, Vec<&'static RuleDef>)> {
    stages(&Stage::RECOGNIZE)
}

fn stages(which: &[Stage]) -> Vec<(&'static str, Vec<&'static RuleDef>)> {
    which.iter().map(|s| (s.name(), stage_rules(*s))).collect()
}

/// `canonicalize`: the e-graph with the staged rulesets, then DAG extraction.
pub struct Canonicalize;

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }
    fn description(&self) -> &'static str {
        "e-graph rewriting with staged rulesets (shape folding, algebra, constant folding), DAG-aware extraction by the cost model"
    }
    fn run_with_detail(
        &self,
        graph: Graph,
        opts: &PassOptions,
    ) -> Result<(Graph, String), PassError> {
        let (g, report, cost) = rewrite_graph(&graph, &canonicalize_stages(), opts, self.name())?;
        Ok((
            g,
            format!(
                "{}; extracted cost {:.1} µs",
                report.summary(),
                cost / 1000.0
            ),
        ))
    }
}

/// `recognize`: the e-graph with the recognition and lowering rulesets —
/// composite computations in normalized form become kernel-level ops — then
/// DAG extraction, which keeps a kernel only where the cost model says so.
pub struct Recognize;

impl Pass for Recognize {
    fn name(&self) -> &'static str {
        "recognize"
    }
    fn description(&self) -> &'static str {
        "e-graph recognition of composite computations (attention, linear recurrences) and lowering to kernel-level ops, DAG-aware extraction"
    }
    fn run_with_detail(
        &self,
        graph: Graph,
        opts: &PassOptions,
    ) -> Result<(Graph, String), PassError> {
        let (g, report, cost) = rewrite_graph(&graph, &recognize_stages(), opts, self.name())?;
        Ok((
            g,
            format!(
                "{}; extracted cost {:.1} µs",
                report.summary(),
                cost / 1000.0
            ),
        ))
    }
}

/// `cse`: translation to an e-graph and back, no rules: equal sub-terms merge.
pub struct Cse;

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }
    fn description(&self) -> &'static str {
        "common-subexpression elimination by hash-consing (e-graph round trip, no rules)"
    }
    fn run_with_detail(
        &self,
        graph: Graph,
        opts: &PassOptions,
    ) -> Result<(Graph, String), PassError> {
        let (g, _, cost) = rewrite_graph(&graph, &[], opts, self.name())?;
        Ok((g, format!("extracted cost {:.1} µs", cost / 1000.0)))
    }
}
