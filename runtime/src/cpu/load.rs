//! What the executor holds from its creation on: weights, constants, and
//! the buffers derived from them by the plan's load steps (run once here).
//! Weights that no run-time step or output reads afterwards (a weight only
//! ever used transposed) are dropped.

use super::exec::{self, Kernels, Machine};
use super::program::{Program, RtStep};
use crate::error::RuntimeError;
use crate::memory::AlignedBuf;
use crate::plan::{BufferId, Plan, Storage};
use kiln_ir::interp::ParamSource;
use kiln_ir::{Bindings, Tensor};
use std::collections::{HashMap, HashSet};

/// Loads weights and constants, allocates derived buffers.
pub(crate) fn resident(
    plan: &Plan,
    params: &dyn ParamSource,
) -> Result<HashMap<BufferId, AlignedBuf>, RuntimeError> {
    let mut resident = HashMap::new();
    for id in 0..plan.buffers.len() {
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
            let t = params
                .param_bytes(name)
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

/// Runs the load steps on the resident buffers.
pub(crate) fn run_load_steps(
    plan: &Plan,
    program: &mut Program,
    resident: &mut HashMap<BufferId, AlignedBuf>,
    m: &mut Machine,
    k: &Kernels,
) -> Result<(), RuntimeError> {
    if program.load.is_empty() {
        return Ok(());
    }
    m.sizes.fill(0);
    for (b, numel) in program.numel.iter().enumerate() {
        let root = plan.root(b);
        m.ptrs.0[b] = match resident.get_mut(&root) {
            Some(buf) => buf.as_mut_ptr(),
            None => std::ptr::null_mut(),
        };
        // Load steps touch static buffers only; others are never read here.
        m.bytes[b] =
            numel.eval_usize(&m.sizes).unwrap_or(0) * plan.buffers[b].ty.dtype.size_bytes();
    }
    for step in &program.load {
        if let RtStep::Kernel { kernel, .. } = step {
            m.blocks[*kernel] = m.grid_blocks(&program.grids[*kernel])?;
        }
    }
    exec::run_steps(&mut program.load, None, m, k)
}

/// Drops weights nothing reads once the load steps have run.
pub(crate) fn drop_unused<T>(plan: &Plan, resident: &mut HashMap<BufferId, T>) {
    let mut used: Vec<BufferId> = plan.outputs.iter().map(|o| plan.root(o.buffer)).collect();
    for s in &plan.steps {
        plan.step_buffers(s, &mut used);
    }
    let used: HashSet<BufferId> = used.into_iter().collect();
    resident.retain(|id, _| {
        !matches!(plan.buffers[*id].storage, Storage::Param(_)) || used.contains(id)
    });
}
