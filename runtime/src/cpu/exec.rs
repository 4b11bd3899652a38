//! Running a compiled program: kernel launches split over the thread pool,
//! copies, and scans (rebinding the body's buffers on each iteration).
//!
//! Nothing here allocates: every table is sized when the executor is built
//! and refilled per run.

use super::dims::SymDim;
use super::ffi::{
    copy_bytes, gather_slice, scatter_slice, CpuKernelFn, LaunchArgs, PtrVec, Strided,
};
use super::program::{RtScan, RtStep};
use super::split::Split;
use crate::error::RuntimeError;
use std::time::{Duration, Instant};

/// Per-run state: buffer addresses and sizes, the size values, each
/// kernel's block count, and scratch for argument lists.
#[derive(Default)]
pub(crate) struct Machine {
    pub ptrs: PtrVec,
    /// Values of the plan's symbols, in order (the kernels' `sizes`).
    pub sizes: Vec<i64>,
    pub known: Vec<bool>,
    /// Bytes of each buffer.
    pub bytes: Vec<usize>,
    /// Blocks of each kernel's grid.
    pub blocks: Vec<usize>,
    /// Bytes each arena slot needs.
    pub slot_bytes: Vec<usize>,
    args: PtrVec,
    /// Per kernel, then copies last: launches, time and operand bytes of
    /// the current call. Counted only while `profiling`.
    pub tally: Vec<Tally>,
    pub profiling: bool,
}

/// Launches of one kernel (or copies), their time and operand bytes.
#[derive(Clone, Copy, Default)]
pub(crate) struct Tally {
    pub launches: u64,
    pub time: Duration,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, since: Instant, bytes: usize) {
        self.launches += 1;
        self.time += since.elapsed();
        self.bytes += bytes as u64;
    }
}

/// What launches need besides the machine.
pub(crate) struct Kernels<'a> {
    pub funcs: &'a [CpuKernelFn],
    pub pool: &'a super::pool::Pool,
}

impl Machine {
    pub fn new(n_buffers: usize, n_symbols: usize, n_kernels: usize, n_slots: usize) -> Machine {
        Machine {
            ptrs: PtrVec(vec![std::ptr::null_mut(); n_buffers]),
            sizes: vec![0; n_symbols],
            known: vec![false; n_symbols],
            bytes: vec![0; n_buffers],
            blocks: vec![0; n_kernels],
            slot_bytes: vec![0; n_slots],
            args: PtrVec(Vec::new()),
            tally: vec![Tally::default(); n_kernels + 1],
            profiling: false,
        }
    }

    /// Blocks of a grid under the current sizes.
    pub fn grid_blocks(&self, grid: &[(SymDim, usize)]) -> Result<usize, RuntimeError> {
        super::call::grid_blocks(grid, &self.sizes)
    }
}

/// Runs `steps` in order (those `only` marks, when given).
pub(crate) fn run_steps(
    steps: &mut [RtStep],
    only: Option<&[bool]>,
    m: &mut Machine,
    k: &Kernels,
) -> Result<(), RuntimeError> {
    for (i, step) in steps.iter_mut().enumerate() {
        if only.is_some_and(|o| !o[i]) {
            continue;
        }
        match step {
            RtStep::Kernel { kernel, args, work } => {
                let blocks = m.blocks[*kernel];
                if blocks == 0 {
                    continue;
                }
                m.args.0.clear();
                m.args.0.extend(args.iter().map(|&a| m.ptrs.0[a]));
                let bytes: usize = work.iter().map(|&a| m.bytes[a]).sum();
                let start = m.profiling.then(Instant::now);
                launch(k, k.funcs[*kernel], &m.args.0, &m.sizes, blocks, bytes);
                if let Some(start) = start {
                    m.tally[*kernel].add(start, bytes);
                }
            }
            RtStep::Copy { from, to } => {
                let start = m.profiling.then(Instant::now);
                copy_bytes(m.ptrs.0[*from], m.ptrs.0[*to], m.bytes[*to]);
                if let Some(start) = start {
                    let copies = m.tally.len() - 1;
                    m.tally[copies].add(start, 2 * m.bytes[*to]);
                }
            }
            RtStep::Scan(s) => run_scan(s, m, k)?,
        }
    }
    Ok(())
}

/// A launch touching fewer bytes than this runs on the calling thread:
/// handing it to the pool (publishing the job, a spinning worker noticing
/// it, cache lines moving between cores) costs more than such a kernel takes
/// (decode steps and scan iterations are full of them). Measured on a
/// 2-core znver4 VM, decoding a 4-layer hidden-256 Llama (scripts/bench
/// llama-small): 16 KiB 1.8k tok/s, 64 KiB 2.9k, 256 KiB 3.2k, 1 MiB 1.9k.
const PARALLEL_BYTES: usize = 256 << 10;

/// Runs `blocks` on the pool, split into one contiguous range per thread
/// with stealing at the end (see [`super::split`]).
fn launch(
    k: &Kernels,
    func: CpuKernelFn,
    args: &[*mut u8],
    sizes: &[i64],
    blocks: usize,
    bytes: usize,
) {
    let call = LaunchArgs { func, args, sizes };
    let threads = k.pool.threads();
    if threads <= 1 || blocks == 1 || bytes < PARALLEL_BYTES || blocks > u32::MAX as usize {
        call.run_blocks(0, blocks);
        return;
    }
    let split = Split::new(blocks as u32, threads);
    k.pool
        .run(&|me| split.run(me, &mut |begin, end| call.run_blocks(begin, end)));
}

/// A scan: carries double-buffered between the result and the spare,
/// slices of contiguous sequences read and written in place (a pointer
/// offset), others gathered/scattered through staging.
fn run_scan(s: &mut RtScan, m: &mut Machine, k: &Kernels) -> Result<(), RuntimeError> {
    let len = s.length.eval_usize(&m.sizes)?;
    for (i, c) in s.carries.iter().enumerate() {
        copy_bytes(m.ptrs.0[c.init], m.ptrs.0[c.result], m.bytes[c.result]);
        s.cur.0[i] = m.ptrs.0[c.result];
        s.next.0[i] = m.ptrs.0[c.spare];
    }
    for &(outer, body) in &s.invariants {
        m.ptrs.0[body] = m.ptrs.0[outer];
    }
    for (i, x) in s.xs.iter().chain(&s.ys).enumerate() {
        s.before[i] = x.before.eval_usize(&m.sizes)?;
    }
    let nx = s.xs.len();
    for step in 0..len {
        let t = if s.reverse { len - 1 - step } else { step };
        for (i, c) in s.carries.iter().enumerate() {
            m.ptrs.0[c.input] = s.cur.0[i];
            m.ptrs.0[c.output] = s.next.0[i];
        }
        for (i, x) in s.xs.iter().chain(&s.ys).enumerate() {
            let inner = m.bytes[x.body];
            let outer = m.ptrs.0[x.outer];
            m.ptrs.0[x.body] = match (s.before[i], x.staging) {
                (1, _) | (_, None) => outer.wrapping_add(t * inner),
                (before, Some(st)) => {
                    let staging = m.ptrs.0[st];
                    if i < nx {
                        gather_slice(outer, staging, strided(before, len, inner), t);
                    }
                    staging
                }
            };
        }
        for &(view, root) in &s.views {
            m.ptrs.0[view] = m.ptrs.0[root];
        }
        run_steps(&mut s.body, None, m, k)?;
        for (i, y) in s.ys.iter().enumerate() {
            let before = s.before[nx + i];
            if let (true, Some(st)) = (before != 1, y.staging) {
                let inner = m.bytes[y.body];
                scatter_slice(
                    m.ptrs.0[st],
                    m.ptrs.0[y.outer],
                    strided(before, len, inner),
                    t,
                );
            }
        }
        std::mem::swap(&mut s.cur, &mut s.next);
    }
    for (i, c) in s.carries.iter().enumerate() {
        copy_bytes(s.cur.0[i], m.ptrs.0[c.result], m.bytes[c.result]);
    }
    Ok(())
}

/// `before` runs of a slice of `bytes` bytes.
fn strided(before: usize, len: usize, bytes: usize) -> Strided {
    Strided {
        outer: before,
        len,
        inner: bytes.checked_div(before).unwrap_or(0),
    }
}
