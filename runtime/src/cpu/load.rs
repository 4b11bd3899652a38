//! What the executor holds from its creation on: weights, constants, and
//! the buffers derived from them by the plan's load steps (run once here).
//! Weights that no run-time step or output reads afterwards (a weight only
//! ever used transposed, or stored narrow) are dropped.
//!
//! Such load-only weights are read in just before the first load step that
//! needs them and dropped after the last one, so they pass through memory
//! one at a time: peak memory at load stays about what the executor keeps,
//! not that plus every weight as stored.

use super::exec::{self, Kernels, Machine};
use super::program::{Program, RtStep};
use crate::error::RuntimeError;
use crate::memory::AlignedBuf;
use crate::plan::{BufferId, Plan, Storage};
use kiln_ir::interp::ParamSource;
use kiln_ir::{Bindings, Tensor};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

/// Loads weights and constants, allocates derived buffers; weights that
/// only load steps read are left to [`run_load_steps`].
pub(crate) fn resident(
    plan: &Plan,
    program: &Program,
    params: &dyn ParamSource,
) -> Result<HashMap<BufferId, AlignedBuf>, RuntimeError> {
    let run_time = read_at_run_time(plan);
    // Load steps are kernels (`planner::hoist`); were one a scan, whose
    // buffers `step_args` does not list, every weight is read in up front.
    let defer = !program.load.iter().any(|s| matches!(s, RtStep::Scan(_)));
    let mut resident = HashMap::new();
    for id in 0..plan.buffers.len() {
        let param = matches!(plan.buffers[id].storage, Storage::Param(_));
        if defer && param && !run_time.contains(&id) {
            continue;
        }
        if let Some(buf) = resident_one(plan, id, params)? {
            resident.insert(id, buf);
        }
    }
    Ok(resident)
}

/// The host bytes of buffer `id` if it is resident: a weight (checked
/// against its declared dtype and shape), a constant, or a zero-filled
/// derived buffer; `None` for any other buffer.
pub(crate) fn resident_one(
    plan: &Plan,
    id: BufferId,
    params: &dyn ParamSource,
) -> Result<Option<AlignedBuf>, RuntimeError> {
    let b = &plan.buffers[id];
    let buf = match &b.storage {
        Storage::Param(name) => {
            let t =
                params
                    .param_bytes(name, b.ty.dtype)
                    .ok_or_else(|| RuntimeError::MissingParam {
                        name: name.clone(),
                        expected: b.ty.to_string(),
                    })?;
            let want = b.ty.eval_shape(&Bindings::new());
            let fits = t.dtype == b.ty.dtype
                && want.as_ref().ok() == Some(&t.shape)
                && t.bytes.len() == t.shape.iter().product::<usize>() * t.dtype.size_bytes();
            if !fits {
                return Err(RuntimeError::ParamType {
                    name: name.clone(),
                    got: format!("{}{:?}", t.dtype, t.shape),
                    expected: b.ty.to_string(),
                });
            }
            let buf = AlignedBuf::from_bytes(&t.bytes);
            drop(t);
            // The copy is made: the store's pages of it may go (load holds
            // one weight twice at a time, not all of them).
            params.release(name);
            buf
        }
        Storage::Const(lit) => {
            let t = Tensor::from_f64(
                lit.dtype,
                lit.shape.clone(),
                &(0..lit.numel()).map(|i| lit.get_f64(i)).collect::<Vec<_>>(),
            )
            .map_err(|e| RuntimeError::BadPlan(format!("constant b{id}: {e}")))?;
            AlignedBuf::from_bytes(&t.to_bytes())
        }
        Storage::Derived => {
            let shape = b.ty.eval_shape(&Bindings::new()).map_err(|e| {
                RuntimeError::BadPlan(format!("derived buffer b{id} is not static: {e}"))
            })?;
            AlignedBuf::zeroed(shape.iter().product::<usize>() * b.ty.dtype.size_bytes())
        }
        _ => return Ok(None),
    };
    Ok(Some(buf))
}

/// Runs the load steps on the resident buffers. A weight that only load
/// steps read (left out by [`resident`]) is read in before the first step
/// that reads it and dropped after the last.
pub(crate) fn run_load_steps(
    plan: &Plan,
    program: &mut Program,
    resident: &mut HashMap<BufferId, AlignedBuf>,
    params: &dyn ParamSource,
    m: &mut Machine,
    k: &Kernels,
) -> Result<(), RuntimeError> {
    if program.load.is_empty() {
        return Ok(());
    }
    m.sizes.fill(0);
    for (b, numel) in program.numel.iter().enumerate() {
        // Load steps touch static buffers only; others are never read here.
        m.bytes[b] =
            numel.eval_usize(&m.sizes).unwrap_or(0) * plan.buffers[b].ty.dtype.size_bytes();
    }
    for step in &program.load {
        if let RtStep::Kernel { kernel, .. } = step {
            m.blocks[*kernel] = m.grid_blocks(&program.grids[*kernel])?;
        }
    }
    // The load-only weights each step reads, and the last step reading each.
    let load_only = |b: BufferId| {
        let r = plan.root(b);
        (matches!(plan.buffers[r].storage, Storage::Param(_)) && !resident.contains_key(&r))
            .then_some(r)
    };
    let reads: Vec<Vec<BufferId>> = program
        .load
        .iter()
        .map(|step| {
            let mut w: Vec<BufferId> = step_args(step).filter_map(load_only).collect();
            w.sort_unstable();
            w.dedup();
            w
        })
        .collect();
    let mut last = HashMap::new();
    for (i, ws) in reads.iter().enumerate() {
        for &w in ws {
            last.insert(w, i);
        }
    }
    for (i, step) in program.load.iter_mut().enumerate() {
        for &w in &reads[i] {
            if let Entry::Vacant(slot) = resident.entry(w) {
                if let Some(buf) = resident_one(plan, w, params)? {
                    slot.insert(buf);
                }
            }
        }
        for b in 0..m.ptrs.0.len() {
            m.ptrs.0[b] = match resident.get_mut(&plan.root(b)) {
                Some(buf) => buf.as_mut_ptr(),
                None => std::ptr::null_mut(),
            };
        }
        exec::run_steps(std::slice::from_mut(step), None, m, k)?;
        for &w in &reads[i] {
            if last[&w] == i {
                resident.remove(&w);
            }
        }
    }
    Ok(())
}

/// The buffers a step names.
fn step_args(step: &RtStep) -> Box<dyn Iterator<Item = BufferId> + '_> {
    match step {
        RtStep::Kernel { args, .. } => Box::new(args.iter().copied()),
        RtStep::Copy { from, to } => Box::new([*from, *to].into_iter()),
        RtStep::Scan(_) => Box::new(std::iter::empty()),
    }
}

/// Roots of the buffers a run-time step or an output reads.
fn read_at_run_time(plan: &Plan) -> HashSet<BufferId> {
    let mut used: Vec<BufferId> = plan.outputs.iter().map(|o| plan.root(o.buffer)).collect();
    for s in &plan.steps {
        plan.step_buffers(s, &mut used);
    }
    used.into_iter().map(|b| plan.root(b)).collect()
}

/// Drops weights nothing reads once the load steps have run.
pub(crate) fn drop_unused<T>(plan: &Plan, resident: &mut HashMap<BufferId, T>) {
    let used = read_at_run_time(plan);
    resident.retain(|id, _| {
        !matches!(plan.buffers[*id].storage, Storage::Param(_)) || used.contains(id)
    });
}
