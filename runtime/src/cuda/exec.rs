//! Running a compiled program on the device: kernel launches, device-to-
//! device copies, and scans (the body's buffers re-pointed on each
//! iteration, exactly as the CPU executor does it: contiguous slices by an
//! address offset, strided ones gathered into and scattered from staging).
//!
//! Everything is queued on one stream, in plan order; nothing here waits
//! for the device unless `sync_each` asks for it (to name the kernel that
//! faulted).

use super::device::{self, Context, Function};
use crate::cpu::program::{RtScan, RtStep};
use crate::error::RuntimeError;
use crate::plan::Plan;

/// Per-call state: buffer addresses and sizes, the size values, each
/// kernel's block count.
pub(crate) struct DevMachine {
    /// Device address of each buffer (0: none, e.g. a scan body's buffer
    /// outside its scan).
    pub ptrs: Vec<u64>,
    /// Values of the plan's symbols, in order (the kernels' size parameters).
    pub sizes: Vec<i64>,
    pub known: Vec<bool>,
    /// Bytes of each buffer.
    pub bytes: Vec<usize>,
    /// Blocks of each kernel's grid.
    pub blocks: Vec<usize>,
    /// Bytes each arena slot needs.
    pub slot_bytes: Vec<usize>,
    /// Scratch for one launch's buffer addresses.
    args: Vec<u64>,
}

impl DevMachine {
    pub fn new(n_buffers: usize, n_symbols: usize, n_kernels: usize, n_slots: usize) -> Self {
        DevMachine {
            ptrs: vec![0; n_buffers],
            sizes: vec![0; n_symbols],
            known: vec![false; n_symbols],
            bytes: vec![0; n_buffers],
            blocks: vec![0; n_kernels],
            slot_bytes: vec![0; n_slots],
            args: Vec::new(),
        }
    }
}

/// What launches need besides the machine.
pub(crate) struct Launcher<'a> {
    pub plan: &'a Plan,
    pub ctx: &'a Context,
    pub funcs: &'a [Function],
    /// Threads per block of each kernel (its launch information).
    pub threads: &'a [u32],
    /// Synchronize after every launch and copy, so a fault names its step.
    pub sync_each: bool,
}

impl Launcher<'_> {
    fn after(&self, what: impl FnOnce() -> String) -> Result<(), RuntimeError> {
        if self.sync_each {
            self.ctx.synchronize(what)?;
        }
        Ok(())
    }
}

/// Runs `steps` in order (those `only` marks, when given).
pub(crate) fn run_steps(
    steps: &[RtStep],
    only: Option<&[bool]>,
    m: &mut DevMachine,
    k: &Launcher,
) -> Result<(), RuntimeError> {
    for (i, step) in steps.iter().enumerate() {
        if only.is_some_and(|o| !o[i]) {
            continue;
        }
        match step {
            RtStep::Kernel { kernel, args, .. } => launch(*kernel, args, m, k)?,
            RtStep::Copy { from, to } => {
                let what = || format!("copy b{from} -> b{to}");
                device::copy(m.ptrs[*to], m.ptrs[*from], m.bytes[*to], what)?;
                k.after(what)?;
            }
            RtStep::Scan(s) => run_scan(s, m, k)?,
        }
    }
    Ok(())
}

/// The grid limit of `cuLaunchKernel`'s x dimension.
const MAX_GRID_X: usize = i32::MAX as usize;

fn launch(
    kernel: usize,
    args: &[usize],
    m: &mut DevMachine,
    k: &Launcher,
) -> Result<(), RuntimeError> {
    let blocks = m.blocks[kernel];
    if blocks == 0 {
        return Ok(());
    }
    let name = &k.plan.kernels[kernel].name;
    let threads = k.threads[kernel];
    let what = || format!("kernel `{name}`, {blocks} blocks of {threads} threads");
    if blocks > MAX_GRID_X {
        return Err(RuntimeError::Cuda {
            call: "cuLaunchKernel".into(),
            what: what(),
            message: format!("the grid exceeds the device's limit of {MAX_GRID_X} blocks"),
        });
    }
    m.args.clear();
    m.args.extend(args.iter().map(|&a| m.ptrs[a]));
    k.funcs[kernel].launch(blocks as u32, threads, &m.args, &m.sizes, what)?;
    k.after(what)
}

/// A scan: carries double-buffered between the result and the spare,
/// slices of contiguous sequences read and written in place (an address
/// offset), others gathered/scattered through staging.
fn run_scan(s: &RtScan, m: &mut DevMachine, k: &Launcher) -> Result<(), RuntimeError> {
    let len = s.length.eval_usize(&m.sizes)?;
    let mut cur = Vec::with_capacity(s.carries.len());
    let mut next = Vec::with_capacity(s.carries.len());
    for c in &s.carries {
        let what = || format!("scan carry b{} -> b{}", c.init, c.result);
        device::copy(m.ptrs[c.result], m.ptrs[c.init], m.bytes[c.result], what)?;
        cur.push(m.ptrs[c.result]);
        next.push(m.ptrs[c.spare]);
    }
    for &(outer, body) in &s.invariants {
        m.ptrs[body] = m.ptrs[outer];
    }
    let before =
        s.xs.iter()
            .chain(&s.ys)
            .map(|x| x.before.eval_usize(&m.sizes))
            .collect::<Result<Vec<_>, _>>()?;
    let nx = s.xs.len();
    for step in 0..len {
        let t = if s.reverse { len - 1 - step } else { step };
        for (i, c) in s.carries.iter().enumerate() {
            m.ptrs[c.input] = cur[i];
            m.ptrs[c.output] = next[i];
        }
        for (i, x) in s.xs.iter().chain(&s.ys).enumerate() {
            let inner = m.bytes[x.body];
            let outer = m.ptrs[x.outer];
            m.ptrs[x.body] = match (before[i], x.staging) {
                (1, _) | (_, None) => outer + (t * inner) as u64,
                (rows, Some(st)) => {
                    let staging = m.ptrs[st];
                    if i < nx {
                        let run = inner.checked_div(rows).unwrap_or(0);
                        strided(
                            (staging, run),
                            (outer + (t * run) as u64, len * run),
                            run,
                            rows,
                            || format!("scan @{} gathering b{} at {t}", s.name, x.outer),
                        )?;
                    }
                    staging
                }
            };
        }
        for &(view, root) in &s.views {
            m.ptrs[view] = m.ptrs[root];
        }
        run_steps(&s.body, None, m, k)?;
        for (i, y) in s.ys.iter().enumerate() {
            let rows = before[nx + i];
            if let (true, Some(st)) = (rows != 1, y.staging) {
                let run = m.bytes[y.body].checked_div(rows).unwrap_or(0);
                strided(
                    (m.ptrs[y.outer] + (t * run) as u64, len * run),
                    (m.ptrs[st], run),
                    run,
                    rows,
                    || format!("scan @{} scattering b{} at {t}", s.name, y.outer),
                )?;
            }
        }
        std::mem::swap(&mut cur, &mut next);
    }
    for (i, c) in s.carries.iter().enumerate() {
        let what = || format!("scan carry result b{}", c.result);
        device::copy(m.ptrs[c.result], cur[i], m.bytes[c.result], what)?;
    }
    k.after(|| format!("scan @{}", s.name))
}

/// Copies `rows` runs of `width` bytes between (address, pitch) pairs: one
/// 2-D copy, or, where the driver refuses those pitches, one copy per row.
fn strided(
    dst: (u64, usize),
    src: (u64, usize),
    width: usize,
    rows: usize,
    what: impl Fn() -> String,
) -> Result<(), RuntimeError> {
    if device::copy_2d(dst.0, dst.1, src.0, src.1, width, rows, &what).is_ok() {
        return Ok(());
    }
    for r in 0..rows {
        device::copy(
            dst.0 + (r * dst.1) as u64,
            src.0 + (r * src.1) as u64,
            width,
            &what,
        )?;
    }
    Ok(())
}
