//! Linear recurrences: a `scan` whose carries follow `h' = a ⊙ h + b` (with
//! `a`, `b` free of every carry) becomes `linear_scan` with the carry-free
//! part of its body, and its step outputs, computed on whole sequences
//! (see [`super::linear_scan_lift`]). Mamba's selective scan and RetNet's
//! decayed matrix state are such scans; a body that is not linear in its
//! carry (`tanh(a·h + b)`, `h·h + x`) is left alone.
//!
//! The rewrite adds an alternative for each of the scan's results; the
//! extractor keeps it where the cost model prices it lower than the step
//! loop (a sequence long enough to amortize the per-step work: prefill).

use super::linear_scan_lift::lift_scan;
use super::{op_nodes, Exactness, RuleDef, Stage, Term};
use crate::analysis::KEGraph;
use crate::lang::Head;
use egg::Id;
use kiln_ir::Op;

pub(super) fn rules() -> Vec<RuleDef> {
    vec![RuleDef {
        name: "scan-linear-recurrence",
        stage: Stage::Lower,
        summary: "scan whose carries follow h' = a*h + b (a, b free of the carries) -> a, b and the step outputs on whole sequences around linear_scan",
        exactness: Exactness::Approximate,
        matcher: scan_linear_recurrence,
    }]
}

/// Matches `(get i (scan ..))`: result `i` of the lifted form.
fn scan_linear_recurrence(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for n in &eg[id].nodes {
        let Head::Get(i) = n.head else { continue };
        for (op, kids) in op_nodes(eg, n.children[0]) {
            let Op::Scan(s) = op else { continue };
            if let Ok(results) = lift_scan(eg, s, kids) {
                out.extend(results.into_iter().nth(i as usize));
            }
        }
    }
    out
}
