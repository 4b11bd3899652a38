//! Running only what some outputs need: a call that asks for a subset of
//! the outputs skips every top-level step none of them depends on.
//!
//! Generation needs the next token's logits, not every position's: a model
//! with a `last_logits` output next to `logits` then skips the full-sequence
//! LM head on a prefill (a quarter of a 1024-token prefill of a 134M Llama).
//! Skipping is safe with the arena's shared slots: a skipped step only
//! leaves its results unwritten, and nothing needed reads them.

use crate::error::RuntimeError;
use crate::plan::{BufferId, Plan, Step};
use std::collections::HashSet;
use std::sync::Arc;

/// An unknown output name is an error naming the outputs there are.
pub(crate) fn check_outputs(plan: &Plan, names: &[&str]) -> Result<(), RuntimeError> {
    for n in names {
        if !plan.outputs.iter().any(|o| o.name == *n) {
            let known: Vec<&str> = plan.outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(RuntimeError::UnknownOutput {
                name: n.to_string(),
                known: known.join(", "),
            });
        }
    }
    Ok(())
}

/// The steps each set of requested outputs needs, computed once per set
/// (and per mode: a step call updates the states too, so their outputs
/// count as asked for). A short list, searched without allocating: decode
/// asks once per token.
#[derive(Default)]
pub(crate) struct Selections(Vec<(bool, Vec<String>, Arc<Vec<bool>>)>);

impl Selections {
    pub fn get(&mut self, plan: &Plan, step: bool, names: &[&str]) -> Arc<Vec<bool>> {
        let known = self.0.iter().find(|(s, n, _)| {
            *s == step && n.len() == names.len() && n.iter().zip(names).all(|(a, b)| a == b)
        });
        if let Some((_, _, m)) = known {
            return m.clone();
        }
        let wanted: Vec<BufferId> = plan
            .outputs
            .iter()
            .filter(|o| names.iter().any(|n| *n == o.name) || (step && o.alias.is_some()))
            .map(|o| o.buffer)
            .collect();
        let mask = Arc::new(needed_steps(plan, &plan.steps, &wanted));
        let names = names.iter().map(|n| n.to_string()).collect();
        self.0.push((step, names, mask.clone()));
        mask
    }
}

/// Which of `steps` must run for the buffers in `wanted` (roots) to hold
/// their values: a step is needed when it writes a needed buffer, and then
/// everything it reads is needed too (in reverse order, so producers are
/// reached after their users).
pub(crate) fn needed_steps(plan: &Plan, steps: &[Step], wanted: &[BufferId]) -> Vec<bool> {
    let mut needed: HashSet<BufferId> = wanted.iter().map(|&b| plan.root(b)).collect();
    let mut mask = vec![false; steps.len()];
    for (i, step) in steps.iter().enumerate().rev() {
        let (reads, writes) = effects(plan, step);
        if writes.iter().any(|b| needed.contains(b)) {
            mask[i] = true;
            needed.extend(reads);
        }
    }
    mask
}

/// The root buffers a top-level step reads and writes. A scan counts as
/// reading every buffer its steps mention (its body may read outer buffers
/// directly) and writing its carries' results and stacked outputs.
fn effects(plan: &Plan, step: &Step) -> (Vec<BufferId>, Vec<BufferId>) {
    let root = |b: &BufferId| plan.root(*b);
    match step {
        Step::Kernel { kernel, args } => {
            let n = plan.kernels[*kernel].operand_types.len().min(args.len());
            (
                args[..n].iter().map(root).collect(),
                args[n..].iter().map(root).collect(),
            )
        }
        Step::Copy { from, to } => (vec![root(from)], vec![root(to)]),
        Step::Scan(s) => {
            let mut reads = Vec::new();
            plan.step_buffers(step, &mut reads);
            let writes = s
                .carries
                .iter()
                .flat_map(|c| [c.result, c.spare])
                .chain(s.ys.iter().map(|y| y.outer))
                .map(|b| plan.root(b))
                .collect();
            (reads, writes)
        }
    }
}
