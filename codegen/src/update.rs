//! `update_slice` kernels: copy the update into its region of the result.
//!
//! Contract (the planner's): when the kernel runs, the result buffer already
//! holds the base — it *is* the base's buffer (in place) or a copy of it —
//! so the kernel touches only the update's elements, O(update) work. The
//! base operand is passed (the ABI lists every operand) but not read.
//!
//! The grid is a `loop` kernel's over the update's shape: one block per
//! index of its leading dims times tiles of its last dim. Elements move as
//! raw bits of their memory type (no conversion). `start` may be symbolic
//! (`past`); the runtime checks `start + len <= size` before launching.

use crate::builder::{R, V};
use crate::ctx::{Ctx, KernelFn};
use crate::fused::{LOOP_THREADS, LOOP_TILE_CPU, LOOP_TILE_GPU};
use crate::scalar::mem_ty;
use crate::target::EmitTarget;
use kiln_ir::kernel::{Grid, GridDim};
use kiln_ir::{Dim, TensorType};

/// Emits `update_slice(base, update)` along `axis` at `start`; returns its
/// function, grid and GPU thread count.
pub fn emit_update_slice(
    name: &str,
    axis: usize,
    start: &Dim,
    base: &TensorType,
    update: &TensorType,
    symbols: &[String],
    target: EmitTarget,
) -> R<(KernelFn, Grid, u32)> {
    let shape = update.shape.clone();
    let r = shape.len();
    let tile = if target.gpu {
        LOOP_TILE_GPU
    } else {
        LOOP_TILE_CPU
    };
    let mut grid = Grid {
        dims: shape[..r - 1]
            .iter()
            .map(|d| GridDim {
                extent: d.clone(),
                tile: 1,
            })
            .collect(),
    };
    grid.dims.push(GridDim {
        extent: shape[r - 1].clone(),
        tile,
    });
    let mt = mem_ty(update.dtype);
    let kf = Ctx::kernel_fn(name, 3, symbols, target, LOOP_THREADS, |cx, block| {
        let upd_outer = cx.dims(&shape[..r - 1])?;
        let last = cx.dim(&shape[r - 1])?;
        let base_dims = cx.dims(&base.shape)?;
        let s = cx.dim(start)?;
        let tiles = cx.ceil_div(last, tile);
        let mut factors = upd_outer.clone();
        factors.push(tiles);
        let bi = cx.delinearize(block, &factors);
        let outer_idx: Vec<V> = bi[..r - 1].to_vec();
        let tv = cx.b.i64c(tile);
        let j0 = cx.b.mul(bi[r - 1], tv);
        let j1 = cx.b.add(j0, tv);
        let j1 = cx.b.min_s(j1, last);
        // Row starts: the update's row is dense; the result's row is the
        // same index with `start` added on `axis`.
        let ulin = cx.linearize(&outer_idx, &upd_outer);
        let src_row = cx.b.mul(ulin, last);
        let mut bidx = outer_idx.clone();
        let zero = cx.b.i64c(0);
        bidx.push(zero);
        bidx[axis] = cx.b.add(bidx[axis], s);
        let dst_row = cx.linearize(&bidx, &base_dims);
        let (src, dst) = (cx.bufs[1], cx.bufs[2]);
        cx.par_for(j0, j1, |cx, j| {
            let si = cx.b.add(src_row, j);
            let di = cx.b.add(dst_row, j);
            let p = cx.b.gep(src, si, mt);
            let v = cx.b.load(p, mt);
            let q = cx.b.gep(dst, di, mt);
            cx.b.store(v, q);
            Ok(())
        })
    })?;
    Ok((kf, grid, LOOP_THREADS))
}
