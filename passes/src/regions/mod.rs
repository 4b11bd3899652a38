//! Identical layers optimized once (DESIGN.md §3).
//!
//! A decoder of N identical layers should cost one layer's optimization, not
//! N. The DSL records each node's scope in its location (`model.layers.3.mlp`,
//! `backbone.layers.0.mixer`); a *layer* is the set of nodes whose location
//! has scope `prefix.i` for a prefix that occurs with several indices `i`.
//! The e-graph passes then work on pieces instead of the whole graph:
//!
//! 1. **Cut** ([`pieces`]): one piece per layer and one for the rest, each a
//!    graph of its own whose inputs are the values it reads from outside and
//!    whose outputs are the values others read from it. A layer's piece also
//!    holds a copy of the shared, layer-invariant values of the rest it reads
//!    (the causal mask, the rotary tables, with everything they are computed
//!    from): rules see through them — attention is recognized as causal —
//!    and every layer's piece stays the same.
//! 2. **Abstract**: in a layer's piece, the scope `model.layers.3` in
//!    parameter names and locations becomes `model.layers.{layer}`. Pieces
//!    that are then equal (same ops, types, wiring, names and history) are
//!    one *distinct* layer.
//! 3. **Optimize** each distinct piece once (translate, staged rules,
//!    extraction), and the rest.
//! 4. **Replay and stitch** ([`stitch`]): the graph is rebuilt from its
//!    outputs, each layer instantiated from its distinct piece's optimized
//!    graph with its own names; equal nodes of one scope are built once, so
//!    the copies of the shared context come back to one node.
//!
//! The result is exactly what optimizing every layer's piece on its own
//! gives ([`LayerMode::Separate`]; tested on Llama, Mamba and random layered
//! graphs), because the optimizer does not look at names. What it cannot
//! give is a rewrite across a layer boundary (the residual add of one layer
//! with the norm of the next): those stay as they are; `fuse`, which runs on
//! the whole graph, still fuses across layers. If the optimized pieces
//! cannot be put back together (a rewrite made a piece's output depend on an
//! input it did not depend on, closing a cycle through another piece), the
//! pass optimizes the graph whole instead and says so in its report.

mod names;
mod pieces;
mod stitch;

pub use names::{scope_of, PLACEHOLDER};

use crate::canonicalize::{rewrite_whole, Rewritten};
use crate::error::PassError;
use crate::options::{LayerMode, PassOptions};
use crate::provenance::Provenance;
use crate::rules::RuleDef;
use crate::runner::RunReport;
use kiln_ir::{Graph, NodeId};
use pieces::{build_piece, layouts, partition};
use std::collections::HashMap;
use std::time::Instant;
use stitch::{stitch, Placed, StitchError};

/// What cutting a graph into layers gave.
pub enum LayerOutcome {
    /// The graph, rewritten layer by layer.
    Done(Box<Rewritten>),
    /// The graph has no repeated layers.
    NoLayers,
    /// The pieces could not be put back together (why): optimize it whole.
    Fallback(String),
}

/// Rewrites `graph` piece by piece (see the module docs).
pub fn rewrite_by_layers(
    graph: &Graph,
    prov: &Provenance,
    stages: &[(&'static str, Vec<&'static RuleDef>)],
    opts: &PassOptions,
    pass: &'static str,
    seq: u16,
) -> Result<LayerOutcome, PassError> {
    let start = Instant::now();
    let order = graph.topo_order();
    let Some(part) = partition(graph, &order) else {
        return Ok(LayerOutcome::NoLayers);
    };
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let share = opts.layers == LayerMode::Shared;
    let layouts = layouts(graph, &part, &pos, share);
    let partition_time = start.elapsed();

    // Optimize the rest and each distinct layer once; a layer equal to one
    // optimized already (up to its index) replays that one's result.
    let mut report = RunReport::default();
    let mut optimized: Vec<Rewritten> = Vec::new();
    let mut which: Vec<usize> = Vec::with_capacity(layouts.len());
    // (layout, its optimized piece) of each distinct layer.
    let mut distinct: Vec<(usize, usize)> = Vec::new();
    let mut cost = 0.0;
    let (mut layer_runs, mut layer_replays) = (0, 0);
    let mut compare_time = std::time::Duration::ZERO;
    for (i, l) in layouts.iter().enumerate() {
        if l.outputs.is_empty() {
            which.push(usize::MAX); // nothing reads it: it is dropped
            continue;
        }
        let t0 = Instant::now();
        let same = distinct
            .iter()
            .find(|(r, _)| l.same_layer(&layouts[*r], graph, prov))
            .map(|&(_, t)| t);
        compare_time += t0.elapsed();
        let t = match same {
            Some(t) => {
                layer_replays += 1;
                t
            }
            None => {
                let (piece, piece_prov) = build_piece(graph, prov, l)
                    .map_err(|source| PassError::Rebuild { pass, source })?;
                let r = rewrite_whole(&piece, &piece_prov, stages, opts, pass, seq)?;
                report.absorb(&r.report);
                layer_runs += usize::from(i > 0);
                optimized.push(r);
                if l.rename.is_some() {
                    distinct.push((i, optimized.len() - 1));
                }
                optimized.len() - 1
            }
        };
        cost += optimized[t].cost;
        which.push(t);
    }

    let start = Instant::now();
    let placed: Vec<Placed<'_>> = layouts
        .iter()
        .zip(&which)
        .filter(|(_, &t)| t != usize::MAX)
        .map(|(l, &t)| Placed {
            graph: &optimized[t].graph,
            prov: &optimized[t].provenance,
            inputs: &l.inputs,
            outputs: &l.outputs,
            rename_back: l.rename.as_ref().map(|(_, back)| back),
        })
        .collect();
    let (g, provenance) = match stitch(graph, &placed, &part.prefixes) {
        Ok(r) => r,
        Err(StitchError::Cycle) => {
            return Ok(LayerOutcome::Fallback(
                "the optimized layers depend on each other in a cycle".into(),
            ))
        }
        Err(StitchError::Graph(source)) => return Err(PassError::Rebuild { pass, source }),
        Err(StitchError::Missing(m)) => return Ok(LayerOutcome::Fallback(m)),
    };
    report.partition = partition_time + compare_time;
    report.stitch = start.elapsed();
    let prefixes: Vec<String> = part
        .prefixes
        .iter()
        .map(|(p, n)| format!("{n} × {p}"))
        .collect();
    report.layers = Some(format!(
        "layers {}: {} optimized, {} replayed",
        prefixes.join(", "),
        layer_runs,
        layer_replays
    ));
    Ok(LayerOutcome::Done(Box::new(Rewritten {
        graph: g,
        report,
        cost,
        provenance,
    })))
}
