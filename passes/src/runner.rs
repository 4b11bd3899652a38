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
    /// Wall-clock time of this stage run.
    pub time: Duration,
}

/// All stage runs of one e-graph pass (over one e-graph, or summed over the
/// pieces of a graph cut into layers; see [`crate::regions`]).
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub stages: Vec<StageReport>,
    /// Time running the rules (all stages).
    pub time: Duration,
    /// True when a node or time limit stopped the run before saturation.
    pub limited: bool,
    /// Graph -> e-graph.
    pub translate: Duration,
    /// Choosing the terms (the DAG extractor).
    pub extract: Duration,
    /// E-graph -> graph.
    pub rebuild: Duration,
    /// E-graphs run (1, or one per distinct layer plus the rest).
    pub egraphs: usize,
    /// E-nodes and e-classes at the end, summed over the e-graphs.
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    /// Cutting the graph into layers and putting it back together.
    pub partition: Duration,
    pub stitch: Duration,
    /// How layers were shared, when the graph was cut into layers.
    pub layers: Option<String>,
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
        // A limit that stopped some stage matters more than the last stop.
        let stop = self
            .stages
            .iter()
            .find(|s| s.stop.contains("limit") && !s.stop.starts_with("iteration"))
            .or(self.stages.last())
            .map_or("nothing to do", |s| s.stop.as_str());
        let mut out = String::new();
        if let Some(l) = &self.layers {
            let _ = write!(out, "{l}; ");
        }
        if self.egraphs > 1 {
            let _ = write!(out, "{} e-graphs, ", self.egraphs);
        }
        let _ = write!(
            out,
            "{} stage run(s), {} iteration(s), {} e-nodes / {} e-classes, stop: {}",
            self.stages.len(),
            iterations,
            self.egraph_nodes,
            self.egraph_classes,
            stop
        );
        if !total.is_empty() {
            out.push_str("; rules applied:");
            for (r, n) in total {
                let _ = write!(out, " {r}×{n}");
            }
        }
        out
    }

    /// Adds another e-graph's run (a piece of a graph cut into layers).
    pub fn absorb(&mut self, other: &RunReport) {
        self.stages.extend(other.stages.iter().cloned());
        self.time += other.time;
        self.limited |= other.limited;
        self.translate += other.translate;
        self.extract += other.extract;
        self.rebuild += other.rebuild;
        self.egraphs += other.egraphs;
        self.egraph_nodes += other.egraph_nodes;
        self.egraph_classes += other.egraph_classes;
        self.partition += other.partition;
        self.stitch += other.stitch;
    }

    /// Time per phase, in order: translate, each stage (summed over rounds
    /// and e-graphs), extract, rebuild; with layers also partition and stitch.
    pub fn phases(&self) -> Vec<(String, Duration)> {
        let mut out = Vec::new();
        if self.layers.is_some() {
            out.push(("partition".to_string(), self.partition));
        }
        out.push(("translate".to_string(), self.translate));
        let mut stages: Vec<(&'static str, Duration)> = Vec::new();
        for s in &self.stages {
            match stages.iter_mut().find(|(n, _)| *n == s.stage) {
                Some((_, t)) => *t += s.time,
                None => stages.push((s.stage, s.time)),
            }
        }
        out.extend(stages.into_iter().map(|(n, t)| (format!("rules {n}"), t)));
        out.push(("extract".to_string(), self.extract));
        out.push(("rebuild".to_string(), self.rebuild));
        if self.layers.is_some() {
            out.push(("stitch".to_string(), self.stitch));
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
            let stage_start = Instant::now();
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
                time: stage_start.elapsed(),
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
    report.egraphs = 1;
    report.egraph_nodes = egraph.total_size();
    report.egraph_classes = egraph.number_of_classes();
    (egraph, report)
}
