//! Batched matmul `[.., m, k] x [.., k, n] -> [.., m, n]` (batch dims
//! broadcast), and `matmul_t`, whose right operand is `[.., n, k]`, tiled:
//! the grid is (batch, ceil(m/TM), ceil(n/TN)) and a block computes one
//! TM x TN tile of the result with a k-loop, accumulating in registers (f32
//! for float dtypes).
//!
//! CPU `matmul_t` in f32 has its own tile (`matmul_nt.rs`): both operands
//! are read along `k` as vectors.
//!
//! CPU: interior tiles of f32 matmuls use `vector<16xf32>` accumulators
//! (TM rows x TN/16 vectors, n innermost), rows past `m` are clamped for
//! loads and skipped for stores (so `m = 1` decode stays on the fast path);
//! tiles that cross `n`, and other dtypes, take a scalar path.
//! GPU: the block's threads split the tile: thread `t` owns column
//! `t % TN` and `TM / (threads / TN)` rows of it, so loads of B are coalesced.

use crate::builder::{for_loop, if_else, if_then, Ty, R, V};
use crate::ctx::{Ctx, KernelFn};
use crate::elemental::broadcast_index;
use crate::error::CodegenError;
use crate::scalar;
use crate::target::EmitTarget;
use kiln_ir::infer::broadcast_shapes;
use kiln_ir::kernel::{Grid, GridDim};
use kiln_ir::{DType, Dim, TensorType};

const CPU_TM: i64 = 8;
const CPU_TN: i64 = 32;
const VW: i64 = 16;
const GPU_TM: i64 = 32;
const GPU_TN: i64 = 64;
pub const MATMUL_THREADS: u32 = 128;

pub(crate) struct Shapes {
    a_batch: Vec<Dim>,
    b_batch: Vec<Dim>,
    batch: Vec<Dim>,
    m: Dim,
    k: Dim,
    n: Dim,
}

fn shapes(name: &str, a: &TensorType, b: &TensorType, b_transposed: bool) -> R<Shapes> {
    let bad = |m: &str| CodegenError::BadSpec {
        kernel: name.to_string(),
        message: m.to_string(),
    };
    if a.rank() < 2 || b.rank() < 2 {
        return Err(bad("matmul operands need rank >= 2"));
    }
    let (ra, rb) = (a.rank(), b.rank());
    let a_batch = a.shape[..ra - 2].to_vec();
    let b_batch = b.shape[..rb - 2].to_vec();
    let batch = broadcast_shapes(&[&a_batch, &b_batch])
        .ok_or_else(|| bad("matmul batch dims do not broadcast"))?;
    let n_axis = if b_transposed { rb - 2 } else { rb - 1 };
    Ok(Shapes {
        a_batch,
        b_batch,
        batch,
        m: a.shape[ra - 2].clone(),
        k: a.shape[ra - 1].clone(),
        n: b.shape[n_axis].clone(),
    })
}

/// Emits a matmul kernel (`matmul_t` when `b_transposed`: `b` is
/// `[.., n, k]`); returns its function, grid and GPU thread count.
pub fn emit_matmul(
    name: &str,
    a: &TensorType,
    b: &TensorType,
    b_transposed: bool,
    symbols: &[String],
    target: EmitTarget,
) -> R<(KernelFn, Grid, u32)> {
    let dt = a.dtype;
    // A weight stored narrow: f32 A, f16/bf16 B, widened as loaded.
    let widened = dt == DType::F32 && matches!(b.dtype, DType::F16 | DType::BF16);
    if dt == DType::Bool || (b.dtype != dt && !widened) {
        return Err(CodegenError::UnsupportedDType {
            kernel: name.to_string(),
            op: "matmul".into(),
            dtype: if dt == DType::Bool { dt } else { b.dtype },
        });
    }
    let s = shapes(name, a, b, b_transposed)?;
    let cpu_nt = !target.gpu && b_transposed && dt == DType::F32;
    let (tm, tn) = if target.gpu {
        (GPU_TM, GPU_TN)
    } else if cpu_nt {
        (crate::matmul_nt::TM, crate::matmul_nt::TN)
    } else {
        (CPU_TM, CPU_TN)
    };
    let grid = Grid {
        dims: vec![
            GridDim {
                extent: kiln_ir::dim::product(&s.batch),
                tile: 1,
            },
            GridDim {
                extent: s.m.clone(),
                tile: tm,
            },
            GridDim {
                extent: s.n.clone(),
                tile: tn,
            },
        ],
    };
    let kf = Ctx::kernel_fn(name, 3, symbols, target, MATMUL_THREADS, |cx, block| {
        let order = if cpu_nt {
            crate::matmul_nt::ORDER
        } else {
            BlockOrder::RowsThenColumns
        };
        let t = tile_setup(cx, &s, tm, tn, (b_transposed, b.dtype), order, block)?;
        if target.gpu {
            gpu_tile(cx, &t, dt)
        } else if cpu_nt {
            crate::matmul_nt::cpu_tile(cx, &t)
        } else if b_transposed {
            scalar_tile(cx, &t, dt)
        } else if dt == DType::F32 && b.dtype == DType::F32 {
            let end = cx.b.add(t.j0, t.tnv);
            let full = cx.b.cmpi("sle", end, t.n);
            if_else(
                cx,
                full,
                &[],
                |cx| {
                    cpu_vector_tile(cx, &t)?;
                    Ok(vec![])
                },
                |cx| {
                    scalar_tile(cx, &t, dt)?;
                    Ok(vec![])
                },
            )?;
            Ok(())
        } else {
            scalar_tile(cx, &t, dt)
        }
    })?;
    Ok((kf, grid, MATMUL_THREADS))
}

/// Where a block's tile lives: element offsets of its batch in A, B, C and
/// its first row / column.
pub(crate) struct Tile {
    pub a_off: V,
    pub b_off: V,
    pub c_off: V,
    pub i0: V,
    pub j0: V,
    pub m: V,
    pub k: V,
    pub n: V,
    pub tm: i64,
    pub tn: i64,
    pub tnv: V,
    /// B is `[n, k]` (`matmul_t`).
    pub b_transposed: bool,
    /// B's dtype: A's, or `f16`/`bf16` under an `f32` A (widened as loaded).
    pub b_dtype: DType,
}

/// Which tile a block number names, within one batch.
#[derive(Clone, Copy)]
pub(crate) enum BlockOrder {
    /// Row tiles outer, column tiles inner.
    RowsThenColumns,
    /// Row tiles in chunks of this many; within a chunk column tiles outer
    /// and row tiles inner, so a block's slice of B is reused from cache by
    /// the chunk's row tiles, and the chunk's rows of A stay in cache while
    /// B streams by.
    ChunkedRows(i64),
}

#[allow(clippy::too_many_arguments)]
fn tile_setup(
    cx: &mut Ctx,
    s: &Shapes,
    tm: i64,
    tn: i64,
    (b_transposed, b_dtype): (bool, DType),
    order: BlockOrder,
    block: V,
) -> R<Tile> {
    let batch_dims = cx.dims(&s.batch)?;
    let mut nb = cx.b.i64c(1);
    for d in &batch_dims {
        nb = cx.b.mul(nb, *d);
    }
    let m = cx.dim(&s.m)?;
    let k = cx.dim(&s.k)?;
    let n = cx.dim(&s.n)?;
    let mt = cx.ceil_div(m, tm);
    let nt = cx.ceil_div(n, tn);
    let bi = match order {
        BlockOrder::RowsThenColumns => cx.delinearize(block, &[nb, mt, nt]),
        BlockOrder::ChunkedRows(chunk) => {
            let per_batch = cx.b.mul(mt, nt);
            let batch = cx.b.div(block, per_batch);
            let l = cx.b.rem(block, per_batch);
            // Every chunk before this one is full: `chunk * nt` blocks.
            let cv = cx.b.i64c(chunk);
            let chunk_blocks = cx.b.mul(cv, nt);
            let c = cx.b.div(l, chunk_blocks);
            let rest = cx.b.rem(l, chunk_blocks);
            let first = cx.b.mul(c, cv);
            let left = cx.b.sub(mt, first);
            let rows = cx.b.min_s(cv, left);
            let col = cx.b.div(rest, rows);
            let within = cx.b.rem(rest, rows);
            let row = cx.b.add(first, within);
            vec![batch, row, col]
        }
    };
    let bidx = cx.delinearize(bi[0], &batch_dims);
    let ai = broadcast_index(cx, &bidx, &s.a_batch);
    let bbi = broadcast_index(cx, &bidx, &s.b_batch);
    let ad = cx.dims(&s.a_batch)?;
    let bd = cx.dims(&s.b_batch)?;
    let a_lin = cx.linearize(&ai, &ad);
    let b_lin = cx.linearize(&bbi, &bd);
    let mk = cx.b.mul(m, k);
    let kn = cx.b.mul(k, n);
    let mn = cx.b.mul(m, n);
    let a_off = cx.b.mul(a_lin, mk);
    let b_off = cx.b.mul(b_lin, kn);
    let c_off = cx.b.mul(bi[0], mn);
    let tmv = cx.b.i64c(tm);
    let tnv = cx.b.i64c(tn);
    let i0 = cx.b.mul(bi[1], tmv);
    let j0 = cx.b.mul(bi[2], tnv);
    Ok(Tile {
        a_off,
        b_off,
        c_off,
        i0,
        j0,
        m,
        k,
        n,
        tm,
        tn,
        tnv,
        b_transposed,
        b_dtype,
    })
}

/// Element offset of `B[kk, j]` (of `B[j, kk]` when B is transposed).
fn b_index(cx: &mut Ctx, t: &Tile, kk: V, j: V) -> V {
    let (outer, inner, stride) = if t.b_transposed {
        (j, kk, t.k)
    } else {
        (kk, j, t.n)
    };
    let o = cx.b.mul(outer, stride);
    let o = cx.b.add(t.b_off, o);
    cx.b.add(o, inner)
}

/// `acc + x*y` in the accumulator type (f32 for floats, contracted to an FMA).
fn mac(cx: &mut Ctx, dt: DType, acc: V, x: V, y: V) -> V {
    if dt.is_float() {
        let p = cx.b.pure(
            Ty::F32,
            format!("arith.mulf {x}, {y} fastmath<contract> : f32"),
        );
        cx.b.pure(
            Ty::F32,
            format!("arith.addf {acc}, {p} fastmath<contract> : f32"),
        )
    } else {
        let p = cx.b.bin("muli", x, y);
        cx.b.bin("addi", acc, p)
    }
}

fn zero_acc(cx: &mut Ctx, dt: DType) -> V {
    scalar::constant(&mut cx.b, dt, 0.0)
}

/// Rows of the tile clamped to `m - 1` for loading.
pub(crate) fn clamped_row(cx: &mut Ctx, t: &Tile, r: V) -> V {
    let i = cx.b.add(t.i0, r);
    let one = cx.b.i64c(1);
    let last = cx.b.sub(t.m, one);
    cx.b.min_s(i, last)
}

fn cpu_vector_tile(cx: &mut Ctx, t: &Tile) -> R<()> {
    let nvec = (t.tn / VW) as usize;
    let vty = Ty::VF32(VW as u32);
    let zero =
        cx.b.in_prologue(|b| b.pure(vty, format!("arith.constant dense<0.000000e+00> : {vty}")));
    let rows: Vec<V> = (0..t.tm)
        .map(|r| {
            let rv = cx.b.i64c(r);
            clamped_row(cx, t, rv)
        })
        .collect();
    let a_rows: Vec<V> = rows
        .iter()
        .map(|&i| {
            let ik = cx.b.mul(i, t.k);
            cx.b.add(t.a_off, ik)
        })
        .collect();
    let b_col = cx.b.add(t.b_off, t.j0);
    let inits = vec![zero; t.tm as usize * nvec];
    let z = cx.b.i64c(0);
    let one = cx.b.i64c(1);
    let (pa, pb) = (cx.bufs[0], cx.bufs[1]);
    let accs = for_loop(cx, z, t.k, one, &inits, |cx, kk, acc| {
        let kn = cx.b.mul(kk, t.n);
        let brow = cx.b.add(b_col, kn);
        let bv: Vec<V> = (0..nvec)
            .map(|c| {
                let off = cx.b.i64c(c as i64 * VW);
                let i = cx.b.add(brow, off);
                let p = cx.b.gep(pb, i, Ty::F32);
                cx.b.op(
                    vty,
                    &format!("llvm.load {p} {{alignment = 4 : i64}} : !llvm.ptr -> {vty}"),
                )
            })
            .collect();
        let mut next = Vec::with_capacity(acc.len());
        for (r, &ar) in a_rows.iter().enumerate() {
            let i = cx.b.add(ar, kk);
            let p = cx.b.gep(pa, i, Ty::F32);
            let a = cx.b.load(p, Ty::F32);
            let av =
                cx.b.pure(vty, format!("vector.broadcast {a} : f32 to {vty}"));
            for (c, bvc) in bv.iter().enumerate() {
                let acc_v = acc[r * nvec + c];
                next.push(cx.b.pure(vty, format!("math.fma {av}, {bvc}, {acc_v} : {vty}")));
            }
        }
        Ok(next)
    })?;
    let pc = cx.bufs[2];
    for r in 0..t.tm {
        let rv = cx.b.i64c(r);
        let i = cx.b.add(t.i0, rv);
        let inside = cx.b.cmpi("slt", i, t.m);
        let accs = &accs[r as usize * nvec..(r as usize + 1) * nvec];
        if_then(cx, inside, |cx| {
            let row = cx.b.mul(i, t.n);
            let base = cx.b.add(t.c_off, row);
            let base = cx.b.add(base, t.j0);
            for (c, v) in accs.iter().enumerate() {
                let off = cx.b.i64c(c as i64 * VW);
                let idx = cx.b.add(base, off);
                let p = cx.b.gep(pc, idx, Ty::F32);
                cx.b.line(&format!(
                    "llvm.store {v}, {p} {{alignment = 4 : i64}} : {vty}, !llvm.ptr"
                ));
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// The general tile: one output at a time with a scalar k-loop.
fn scalar_tile(cx: &mut Ctx, t: &Tile, dt: DType) -> R<()> {
    let one = cx.b.i64c(1);
    let tmv = cx.b.i64c(t.tm);
    let i1 = cx.b.add(t.i0, tmv);
    let i1 = cx.b.min_s(i1, t.m);
    let j1 = cx.b.add(t.j0, t.tnv);
    let j1 = cx.b.min_s(j1, t.n);
    let (pa, pb, pc) = (cx.bufs[0], cx.bufs[1], cx.bufs[2]);
    for_loop(cx, t.i0, i1, one, &[], |cx, i, _| {
        for_loop(cx, t.j0, j1, one, &[], |cx, j, _| {
            let acc0 = zero_acc(cx, dt);
            let z = cx.b.i64c(0);
            let ik = cx.b.mul(i, t.k);
            let arow = cx.b.add(t.a_off, ik);
            let acc = for_loop(cx, z, t.k, one, &[acc0], |cx, kk, acc| {
                let ai = cx.b.add(arow, kk);
                let a = scalar::load(&mut cx.b, pa, ai, dt);
                let bi = b_index(cx, t, kk, j);
                let bv = scalar::load(&mut cx.b, pb, bi, t.b_dtype);
                Ok(vec![mac(cx, dt, acc[0], a, bv)])
            })?;
            let row = cx.b.mul(i, t.n);
            let ci = cx.b.add(t.c_off, row);
            let ci = cx.b.add(ci, j);
            let v = if dt.is_float() {
                scalar::round(&mut cx.b, acc[0], dt)
            } else {
                acc[0]
            };
            scalar::store(&mut cx.b, pc, ci, dt, v);
            Ok(vec![])
        })?;
        Ok(vec![])
    })?;
    Ok(())
}

/// GPU tile: thread `t` owns column `t % TN` and rows `(t / TN) * R .. + R`
/// with `R = TM / (threads / TN)`.
fn gpu_tile(cx: &mut Ctx, t: &Tile, dt: DType) -> R<()> {
    let threads = cx.threads.expect("gpu kernel has threads");
    let groups = threads.count as i64 / t.tn;
    let rows_per = t.tm / groups;
    let tnv = cx.b.i64c(t.tn);
    let col = cx.b.rem(threads.tid, tnv);
    let grp = cx.b.div(threads.tid, tnv);
    let rp = cx.b.i64c(rows_per);
    let r0 = cx.b.mul(grp, rp);
    let j = cx.b.add(t.j0, col);
    let one = cx.b.i64c(1);
    let nm1 = cx.b.sub(t.n, one);
    let jc = cx.b.min_s(j, nm1);
    let rows: Vec<V> = (0..rows_per)
        .map(|r| {
            let rv = cx.b.i64c(r);
            let rr = cx.b.add(r0, rv);
            clamped_row(cx, t, rr)
        })
        .collect();
    let a_rows: Vec<V> = rows
        .iter()
        .map(|&i| {
            let ik = cx.b.mul(i, t.k);
            cx.b.add(t.a_off, ik)
        })
        .collect();
    let acc0 = zero_acc(cx, dt);
    let inits = vec![acc0; rows_per as usize];
    let z = cx.b.i64c(0);
    let (pa, pb, pc) = (cx.bufs[0], cx.bufs[1], cx.bufs[2]);
    let accs = for_loop(cx, z, t.k, one, &inits, |cx, kk, acc| {
        let bi = b_index(cx, t, kk, jc);
        let bv = scalar::load(&mut cx.b, pb, bi, t.b_dtype);
        let mut next = Vec::new();
        for (r, &ar) in a_rows.iter().enumerate() {
            let ai = cx.b.add(ar, kk);
            let a = scalar::load(&mut cx.b, pa, ai, dt);
            next.push(mac(cx, dt, acc[r], a, bv));
        }
        Ok(next)
    })?;
    let col_ok = cx.b.cmpi("slt", j, t.n);
    for (r, acc) in accs.iter().enumerate() {
        let rv = cx.b.i64c(r as i64);
        let rr = cx.b.add(r0, rv);
        let i = cx.b.add(t.i0, rr);
        let row_ok = cx.b.cmpi("slt", i, t.m);
        let ok = cx.b.and(row_ok, col_ok);
        let acc = *acc;
        if_then(cx, ok, |cx| {
            let row = cx.b.mul(i, t.n);
            let ci = cx.b.add(t.c_off, row);
            let ci = cx.b.add(ci, j);
            let v = if dt.is_float() {
                scalar::round(&mut cx.b, acc, dt)
            } else {
                acc
            };
            scalar::store(&mut cx.b, pc, ci, dt, v);
            Ok(())
        })?;
    }
    Ok(())
}
