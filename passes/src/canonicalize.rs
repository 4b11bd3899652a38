//! The e-graph passes: `canonicalize` (the staged rulesets) and `cse`
//! (translation and extraction only: hash-consing merges equal sub-terms).

use crate::cost::CostModel;
use crate::error::PassError;
use crate::extract::{extract_dag, selection_cost};
use crate::manager::{Pass, PassInput, PassOutput};
use crate::options::LayerMode;
use crate::options::PassOptions;
use crate::provenance::{Provenance, Recorder};
use crate::regions::LayerOutcome;
use crate::rules::{stage_rules, RuleDef, Stage};
use crate::runner::{run_stages, RunReport};
use crate::translate::{to_egraph_traced, to_graph_traced};
use kiln_ir::Graph;
use std::time::Instant;

/// What an e-graph pass made of a graph.
pub struct Rewritten {
    pub graph: Graph,
    pub report: RunReport,
    /// The extracted cost (summed over the layers when cut into layers).
    pub cost: f64,
    /// The history of every node of `graph`.
    pub provenance: Provenance,
}

/// Translates `graph`, runs `stages`, extracts the cheapest graph — the
/// whole graph in one e-graph. `pass` names the caller in errors.
pub fn rewrite_graph(
    graph: &Graph,
    stages: &[(&'static str, Vec<&'static RuleDef>)],
    opts: &PassOptions,
    pass: &'static str,
) -> Result<(Graph, RunReport, f64), PassError> {
    let r = rewrite_whole(graph, &Provenance::default(), stages, opts, pass, 0)?;
    Ok((r.graph, r.report, r.cost))
}

/// [`rewrite_graph`] carrying provenance: `prov` is the input's history,
/// `seq` the pass's position in the pipeline (steps it records get it).
pub fn rewrite_whole(
    graph: &Graph,
    prov: &Provenance,
    stages: &[(&'static str, Vec<&'static RuleDef>)],
    opts: &PassOptions,
    pass: &'static str,
    seq: u16,
) -> Result<Rewritten, PassError> {
    let start = Instant::now();
    let mut t = to_egraph_traced(graph, prov);
    t.egraph.analysis.recorder = Recorder { seq, pass };
    let translate = start.elapsed();
    let (eg, mut report) = run_stages(t.egraph, stages, opts);
    t.egraph = eg;
    let errors = &t.egraph.analysis.errors;
    if !errors.is_empty() {
        let shown: Vec<&str> = errors.iter().take(3).map(String::as_str).collect();
        return Err(PassError::Analysis {
            pass,
            message: format!("{} problem(s): {}", errors.len(), shown.join("; ")),
        });
    }
    let start = Instant::now();
    let model = CostModel::new(opts.target);
    let roots = t.roots();
    let sel = extract_dag(&t.egraph, &roots, &model)
        .map_err(|message| PassError::Extraction { pass, message })?;
    let cost = selection_cost(&t.egraph, &sel, &roots, &model);
    let extract = start.elapsed();
    let start = Instant::now();
    let (g, provenance) = to_graph_traced(&t, &sel, pass)?;
    report.translate = translate;
    report.extract = extract;
    report.rebuild = start.elapsed();
    Ok(Rewritten {
        graph: g,
        report,
        cost,
        provenance,
    })
}

/// The e-graph passes' driver: a graph of repeated layers is cut into
/// pieces, identical layers optimized once ([`crate::regions`], as
/// `opts.layers` says); any other graph is rewritten whole.
pub fn rewrite_traced(
    graph: &Graph,
    prov: &Provenance,
    stages: &[(&'static str, Vec<&'static RuleDef>)],
    opts: &PassOptions,
    pass: &'static str,
    seq: u16,
) -> Result<Rewritten, PassError> {
    if opts.layers != LayerMode::Whole {
        match crate::regions::rewrite_by_layers(graph, prov, stages, opts, pass, seq)? {
            LayerOutcome::Done(r) => return Ok(*r),
            LayerOutcome::NoLayers => {}
            LayerOutcome::Fallback(why) => {
                let mut r = rewrite_whole(graph, prov, stages, opts, pass, seq)?;
                r.report.layers = Some(format!("layers optimized whole ({why})"));
                return Ok(r);
            }
        }
    }
    rewrite_whole(graph, prov, stages, opts, pass, seq)
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

/// Runs an e-graph pass with history and phases; `whole` keeps the graph in
/// one e-graph whatever `opts.layers` says.
fn traced(
    pass: &'static str,
    stages: &[(&'static str, Vec<&'static RuleDef>)],
    input: PassInput,
    opts: &PassOptions,
    whole: bool,
) -> Result<PassOutput, PassError> {
    let r = if whole {
        rewrite_whole(
            &input.graph,
            &input.provenance,
            stages,
            opts,
            pass,
            input.seq,
        )?
    } else {
        rewrite_traced(
            &input.graph,
            &input.provenance,
            stages,
            opts,
            pass,
            input.seq,
        )?
    };
    let detail = if stages.is_empty() {
        format!("extracted cost {:.1} µs", r.cost / 1000.0)
    } else {
        format!(
            "{}; extracted cost {:.1} µs",
            r.report.summary(),
            r.cost / 1000.0
        )
    };
    Ok(PassOutput {
        graph: r.graph,
        detail,
        phases: r.report.phases(),
        provenance: r.provenance,
    })
}

/// The detail-only form of [`traced`] (no history in, none kept).
fn untraced(
    pass: &'static str,
    stages: &[(&'static str, Vec<&'static RuleDef>)],
    graph: Graph,
    opts: &PassOptions,
    whole: bool,
) -> Result<(Graph, String), PassError> {
    let input = PassInput {
        graph,
        provenance: Provenance::default(),
        seq: 0,
    };
    traced(pass, stages, input, opts, whole).map(|o| (o.graph, o.detail))
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
        untraced(self.name(), &canonicalize_stages(), graph, opts, false)
    }
    fn run_traced(&self, input: PassInput, opts: &PassOptions) -> Result<PassOutput, PassError> {
        traced(self.name(), &canonicalize_stages(), input, opts, false)
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
        untraced(self.name(), &recognize_stages(), graph, opts, false)
    }
    fn run_traced(&self, input: PassInput, opts: &PassOptions) -> Result<PassOutput, PassError> {
        traced(self.name(), &recognize_stages(), input, opts, false)
    }
}

/// `cse`: translation to an e-graph and back, no rules: equal sub-terms merge
/// (over the whole graph, across layers too).
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
        untraced(self.name(), &[], graph, opts, true)
    }
    fn run_traced(&self, input: PassInput, opts: &PassOptions) -> Result<PassOutput, PassError> {
        traced(self.name(), &[], input, opts, true)
    }
}
