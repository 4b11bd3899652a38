//! Whether an `update_slice` may write into its base's storage.
//!
//! Every `update_slice` is first planned as a copy of the base into a fresh
//! result followed by the kernel that writes the update's region. The copy
//! is dropped, and the result becomes a view of the base (O(update) work
//! instead of O(base)), when all of these hold for the base's root buffer:
//!
//! - it is scratch, or an input: the executor copies the caller's inputs
//!   into its own memory, so writing there is invisible to the caller;
//!   weights, constants, what is derived from them at load and a scan
//!   body's bound buffers are never written;
//! - no later step reads it (through any view of it);
//! - it is not (the storage of) a graph output, which must keep its value;
//! - when it is a state input (aliased by an output), the chain of
//!   updates starting here ends in that very output: then the executor's
//!   state buffer is updated in place and nothing is written back, and no
//!   state buffer ever holds another state's new value.

use super::{root_of, UpdateSite};
use crate::plan::{Buffer, BufferId, PlanInput, Step, Storage};
use kiln_ir::{Graph, NodeId, Op, Value};
use std::collections::HashMap;

/// What the decision needs to know about the level being planned.
pub(crate) struct Context<'a> {
    pub inputs: &'a [PlanInput],
    /// Output buffers (top level; a body's outputs are read by copy steps
    /// or are bound buffers, which the other rules cover).
    pub outputs: &'a [BufferId],
    /// Names of the state inputs.
    pub aliased: &'a [String],
    /// For each `update_slice` node, the state input its chain of updates
    /// ends in (see [`state_targets`]).
    pub targets: &'a HashMap<NodeId, String>,
}

impl Context<'static> {
    /// A scan body: no inputs of its own (they are bound), no graph outputs.
    pub fn body() -> Context<'static> {
        static NONE: std::sync::OnceLock<HashMap<NodeId, String>> = std::sync::OnceLock::new();
        Context {
            inputs: &[],
            outputs: &[],
            aliased: &[],
            targets: NONE.get_or_init(HashMap::new),
        }
    }
}

/// Decides each site in step order (earlier in-place results extend their
/// base's storage, which later decisions see) and drops the copies no
/// longer needed, and the matching entries of `flags` (one per step).
pub(crate) fn decide(
    buffers: &mut [Buffer],
    steps: &mut Vec<Step>,
    flags: &mut Vec<bool>,
    sites: Vec<UpdateSite>,
    cx: &Context,
) {
    let mut dropped = vec![false; steps.len()];
    for site in sites {
        let root = root_of(buffers, site.base);
        let legal = match buffers[root].storage {
            Storage::Temp { .. } => true,
            Storage::Input(i) => {
                let name = &cx.inputs[i].name;
                !cx.aliased.contains(name) || cx.targets.get(&site.node) == Some(name)
            }
            _ => false,
        };
        let in_place = legal
            && !cx.outputs.iter().any(|&o| root_of(buffers, o) == root)
            && !steps[site.kernel_step + 1..]
                .iter()
                .enumerate()
                .any(|(k, s)| !dropped[site.kernel_step + 1 + k] && touches(buffers, s, root));
        if in_place {
            dropped[site.copy_step] = true;
            buffers[site.result].storage = Storage::View { of: site.base };
        }
    }
    let mut k = 0;
    steps.retain(|_| {
        k += 1;
        !dropped[k - 1]
    });
    let mut k = 0;
    flags.retain(|_| {
        k += 1;
        !dropped[k - 1]
    });
}

/// True when `step` reads or writes storage rooted at `root`.
fn touches(buffers: &[Buffer], step: &Step, root: BufferId) -> bool {
    let hit = |b: &BufferId| root_of(buffers, *b) == root;
    match step {
        Step::Kernel { args, .. } => args.iter().any(hit),
        Step::Copy { from, to } => hit(from) || hit(to),
        Step::Scan(s) => {
            s.carries
                .iter()
                .any(|c| hit(&c.init) || hit(&c.result) || hit(&c.spare))
                || s.xs
                    .iter()
                    .chain(&s.ys)
                    .any(|x| hit(&x.outer) || x.staging.as_ref().is_some_and(hit))
                || s.invariants.iter().any(|(o, _)| hit(o))
        }
    }
}

/// For each `update_slice` node of `g`, the input its result ends up
/// replacing: follow the result through a unique next `update_slice` (as
/// its base) or `reshape` until a graph output; if that output aliases an
/// input, that input is the target.
pub(crate) fn state_targets(g: &Graph) -> HashMap<NodeId, String> {
    let mut out = HashMap::new();
    for n in g.node_ids() {
        if !matches!(g.node(n).op, Op::UpdateSlice { .. } | Op::SaqAppend(_)) {
            continue;
        }
        let mut v = Value::new(n, 0);
        // A chain is acyclic; the bound only guards against a malformed graph.
        for _ in 0..=g.node_count() {
            let outs: Vec<_> = g.outputs().iter().filter(|o| o.value == v).collect();
            if !outs.is_empty() {
                if let [o] = outs.as_slice() {
                    if let Some(a) = &o.alias {
                        out.insert(n, a.clone());
                    }
                }
                break;
            }
            let next: Vec<NodeId> = g
                .users(v.node)
                .into_iter()
                .filter(|&(u, slot, port)| {
                    port == v.port
                        && match g.node(u).op {
                            Op::UpdateSlice { .. } | Op::SaqAppend(_) => slot == 0,
                            Op::Reshape { .. } => true,
                            _ => false,
                        }
                })
                .map(|(u, _, _)| u)
                .collect();
            match next.as_slice() {
                [u] => v = Value::new(*u, 0),
                _ => break,
            }
        }
    }
    out
}
