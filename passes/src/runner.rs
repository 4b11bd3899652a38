//! Staged rule application on egg's `Runner`.
//!
//! Stages run in order, each to saturation or to its share of the limits,
//! and the sequence repeats (a bounded number of rounds) while a round still
//! rewrites something — a later stage's result can enable an earlier stage's
//! rule. Saturating all rules at once is what blows compile time up; staging
//! keeps each e-graph run small.

use crate::analysis::KEGraph;
use crate::options::PassOptions;
use crate::rules::{to_rewrite, RuleDef};
use egg::{Runner, SimpleScheduler, StopReason};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

/// At most this many rounds over the stage sequence.
pub const MAX_ROUNDS: usize = 4;

/// One stage run.
#[derive(Clone, Debug)]
pub struct StageReport {
    pub stage: &'static str,
    pub round: usize,
    pub iterations: usize,
    pub stop: String,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    /// Unions each rule made.
    pub applied: BTreeMap<String, usize>,
}

/// All stage runs of one e-graph pass.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub stages: Vec<StageReport>,
    pub time: Duration,
    /// True when a node or time limit stopped the run before saturation.
    pub limited: bool,
}

impl RunReport {
    /// Unions made by `rule` over all stages.
    pub fn applied(&self, rule: &str) -> usize {
        self.stages.iter().filter_map(|s| s.applied.get(rule)).sum()
    }

    /// A short human-readable summary (for [`crate::PassReport::detail`]).
    pub fn summary(&self) -> String {
        let mut total: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &self.stages {
            for (r, n) in &s.applied {
                *total.entry(r).or_default() += n;
            }
        }
        let iterations: usize = self.stages.iter().map(|s| s.iterations).sum();
        let last = self.stages.last();
        let mut out = format!(
            "{} stage run(s), {} iteration(s), {} e-nodes / {} e-classes, stop: {}",
            self.stages.len(),
            iterations,
            last.map_or(0, |s| s.egraph_nodes),
            last.map_or(0, |s| s.egraph_classes),
            last.map_or("nothing to do", |s| s.stop.as_str())
        );
        if !total.is_empty() {
            out.push_str("; rules applied:");
            for (r, n) in total {
                let _ = write!(out, " {r}×{n}");
            }
        }
        out
    }
}

fn stop_text(r: &Option<StopReason>) -> (String, bool) {
    match r {
        Some(StopReason::Saturated) => ("saturated".into(), false),
        Some(StopReason::IterationLimit(n)) => (format!("iteration limit {n}"), false),
        Some(StopReason::NodeLimit(n)) => (format!("node limit {n}"), true),
        Some(StopReason::TimeLimit(t)) => (format!("time limit {t:.3}s"), true),
        Some(StopReason::Other(s)) => (s.clone(), true),
        None => ("not run".into(), false),
    }
}

/// Runs `stages` (each a name and its rules) over `egraph`.
pub fn run_stages(
    mut egraph: KEGraph,
    stages: &[(&'static str, Vec<&'static RuleDef>)],
    opts: &PassOptions,
) -> (KEGraph, RunReport) {
    let start = Instant::now();
    let node_limit = egraph.total_size().saturating_add(opts.egraph_node_limit);
    let mut report = RunReport::default();
    let rewrites: Vec<(&'static str, Vec<_>)> = stages
        .iter()
        .map(|(name, rules)| {
            (
                *name,
                rules.iter().map(|r| to_rewrite(r)).collect::<Vec<_>>(),
            )
        })
        .collect();
    'rounds: for round in 0..MAX_ROUNDS {
        let mut changed = false;
        for (name, rws) in &rewrites {
            if rws.is_empty() {
                continue;
            }
            let left = opts.egraph_time_limit.saturating_sub(start.elapsed());
            let runner = Runner::<_, _, ()>::new(Default::default())
                .with_egraph(egraph)
                .with_scheduler(SimpleScheduler)
                .with_node_limit(node_limit)
                .with_time_limit(left)
                .with_iter_limit(opts.iter_limit)
                .run(rws.iter());
            let mut applied: BTreeMap<String, usize> = BTreeMap::new();
            for it in &runner.iterations {
                for (r, n) in &it.applied {
                    *applied.entry(r.to_string()).or_default() += n;
                }
            }
            changed |= !applied.is_empty();
            let (stop, limited) = stop_text(&runner.stop_reason);
            report.stages.push(StageReport {
                stage: name,
                round,
                iterations: runner.iterations.len(),
                stop,
                egraph_nodes: runner.egraph.total_size(),
                egraph_classes: runner.egraph.number_of_classes(),
                applied,
            });
            egraph = runner.egraph;
            if limited {
                report.limited = true;
                break 'rounds;
            }
        }
        if !changed {
            break;
        }
    }
    egraph.rebuild();
    report.time = start.elapsed();
    (egraph, report)
}
