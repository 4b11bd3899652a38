//! What the executor holds on the device from its creation on: weights and
//! constants (checked and converted exactly as the CPU executor does, then
//! uploaded once), and the buffers the plan's load steps derive from them,
//! computed once on the device. Weights no run-time step reads afterwards
//! are freed.

use super::device::{Context, DevBuf};
use super::exec::{self, DevMachine, Launcher};
use crate::cpu::call;
use crate::cpu::load as cpu_load;
use crate::cpu::program::{Program, RtStep};
use crate::error::RuntimeError;
use crate::plan::{BufferId, Plan};
use kiln_ir::interp::ParamSource;
use std::collections::HashMap;
use std::sync::Arc;

/// Uploads weights, constants and (zero-filled) derived buffers, one at a
/// time (at most one host copy alive).
pub(crate) fn resident(
    ctx: &Arc<Context>,
    plan: &Plan,
    params: &dyn ParamSource,
) -> Result<HashMap<BufferId, DevBuf>, RuntimeError> {
    let mut out = HashMap::new();
    for id in 0..plan.buffers.len() {
        let Some(host) = cpu_load::resident_one(plan, id, params)? else {
            continue;
        };
        let what = || format!("{} b{id}", describe(plan, id));
        let buf = DevBuf::alloc(ctx, host.len(), &what())?;
        buf.upload(host.as_bytes(), what)?;
        out.insert(id, buf);
    }
    Ok(out)
}

/// A resident buffer for messages: `weight `name``, `constant`, `derived`.
pub(crate) fn describe(plan: &Plan, id: BufferId) -> String {
    match &plan.buffers[id].storage {
        crate::plan::Storage::Param(n) => format!("weight `{n}`"),
        crate::plan::Storage::Const(_) => "constant".into(),
        crate::plan::Storage::Derived => "derived buffer".into(),
        _ => "buffer".into(),
    }
}

/// Runs the load steps on the resident buffers and waits for them.
pub(crate) fn run_load_steps(
    plan: &Plan,
    program: &Program,
    resident: &HashMap<BufferId, DevBuf>,
    m: &mut DevMachine,
    k: &Launcher,
) -> Result<(), RuntimeError> {
    if program.load.is_empty() {
        return Ok(());
    }
    m.sizes.fill(0);
    for (b, numel) in program.numel.iter().enumerate() {
        let root = plan.root(b);
        m.ptrs[b] = resident.get(&root).map_or(0, |d| d.ptr());
        // Load steps touch static buffers only; others are never read here.
        m.bytes[b] =
            numel.eval_usize(&m.sizes).unwrap_or(0) * plan.buffers[b].ty.dtype.size_bytes();
    }
    for step in &program.load {
        if let RtStep::Kernel { kernel, .. } = step {
            m.blocks[*kernel] = call::grid_blocks(&program.grids[*kernel], &m.sizes)?;
        }
    }
    let ran = exec::run_steps(&program.load, None, m, k);
    // Wait even when queuing failed part-way: the buffers may be freed next.
    let waited = k
        .ctx
        .synchronize(|| format!("running the load steps of plan @{}", plan.name));
    ran.and(waited)
}

/// Frees weights nothing reads once the load steps have run.
pub(crate) fn drop_unused(plan: &Plan, resident: &mut HashMap<BufferId, DevBuf>) {
    cpu_load::drop_unused(plan, resident);
}
