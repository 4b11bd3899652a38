//! Packing scratch buffers into arena slots by liveness.
//!
//! Steps are numbered in execution order, a scan's body between the scan's
//! start and its end (the body repeats, but nothing a body computes outlives
//! one iteration except through the scan's own buffers). Every buffer a
//! step names is a use of its root at that step's number; a scan's outer
//! buffers (operands, results, the spare halves of its carries, staging)
//! are used at its start and its end, so they stay allocated while the body
//! runs. Greedy interval packing then walks the numbers: the scratch
//! buffers first used at a number take free slots (before anything is
//! released there, so a step never writes over what it reads), then buffers
//! whose last use was that number give their slot back. Outputs live to
//! the end.

use crate::plan::{BufferId, Plan, Step, Storage};
use std::collections::HashMap;

/// Assigns a slot to every [`Storage::Temp`] buffer and sets `num_slots`.
pub(crate) fn assign(plan: &mut Plan) {
    let mut uses: Vec<Vec<BufferId>> = Vec::new();
    number(plan, &plan.steps, &mut uses);
    let end = uses.len();
    let mut last_use: HashMap<BufferId, usize> = HashMap::new();
    for (pos, bufs) in uses.iter().enumerate() {
        for &b in bufs {
            last_use.insert(b, pos);
        }
    }
    for o in &plan.outputs {
        last_use.insert(plan.root(o.buffer), end);
    }
    let mut free: Vec<usize> = Vec::new();
    let mut num_slots = 0;
    let mut releases: Vec<Vec<BufferId>> = vec![Vec::new(); end + 1];
    for (pos, bufs) in uses.iter().enumerate() {
        for &b in bufs {
            if plan.buffers[b].storage != (Storage::Temp { slot: usize::MAX }) {
                continue;
            }
            let slot = free.pop().unwrap_or_else(|| {
                num_slots += 1;
                num_slots - 1
            });
            plan.buffers[b].storage = Storage::Temp { slot };
            releases[last_use[&b]].push(b);
        }
        for b in std::mem::take(&mut releases[pos]) {
            if let Storage::Temp { slot } = plan.buffers[b].storage {
                free.push(slot);
            }
        }
    }
    // A scratch buffer no step names (nothing should produce one) still
    // gets memory of its own rather than an invalid slot.
    for b in &mut plan.buffers {
        if b.storage == (Storage::Temp { slot: usize::MAX }) {
            b.storage = Storage::Temp { slot: num_slots };
            num_slots += 1;
        }
    }
    plan.num_slots = num_slots;
}

/// Appends one entry per step number: the roots the step uses.
fn number(plan: &Plan, steps: &[Step], uses: &mut Vec<Vec<BufferId>>) {
    let roots = |ids: &mut dyn Iterator<Item = BufferId>| -> Vec<BufferId> {
        let mut v: Vec<BufferId> = ids.map(|b| plan.root(b)).collect();
        v.dedup();
        v
    };
    for step in steps {
        match step {
            Step::Kernel { args, .. } => uses.push(roots(&mut args.iter().copied())),
            Step::Copy { from, to } => uses.push(roots(&mut [*from, *to].into_iter())),
            Step::Scan(s) => {
                let mut outer: Vec<BufferId> = Vec::new();
                for c in &s.carries {
                    outer.extend([c.init, c.result, c.spare]);
                }
                for x in s.xs.iter().chain(&s.ys) {
                    outer.push(x.outer);
                    outer.extend(x.staging);
                }
                outer.extend(s.invariants.iter().map(|(o, _)| *o));
                let outer = roots(&mut outer.into_iter());
                uses.push(outer.clone());
                number(plan, &s.body, uses);
                uses.push(outer);
            }
        }
    }
}
