//! The CPU tile of f32 `matmul_t` (`C = A · Bᵀ`, B as `[n, k]`): the shape
//! of every linear layer with its weight as stored.
//!
//! Both operands are contiguous along `k`, so a block keeps `TM x TN`
//! vector accumulators and, per 16 values of `k`, loads TM vectors of A and
//! TN of B and does TM·TN FMAs; each accumulator is summed across its lanes
//! once at the end, and a scalar loop takes the last `k % 16`. Rows and
//! columns past the edge are clamped for loading and skipped for storing, so
//! every tile takes the vector path.
//!
//! A tile with a single row of A left (decode, `m = 1`) runs a one-row
//! variant: a GEMV that reads its TN weight rows one after the other, so
//! each thread streams one contiguous range of the weight (reading the rows
//! side by side instead halved the rate: four short streams per block that
//! the prefetchers must pick up anew every 12 KiB). Blocks are ordered in chunks of rows (`ORDER`): within a chunk a
//! block's TN rows of B are reused by the chunk's row tiles from cache.

use crate::builder::{for_loop, if_else, if_then, Ty, R, V};
use crate::ctx::Ctx;
use crate::matmul::{clamped_row, BlockOrder, Tile};
use crate::scalar;
use kiln_ir::DType;

/// Rows of A per tile.
pub(crate) const TM: i64 = 6;
/// Rows of B (columns of C) per tile.
pub(crate) const TN: i64 = 4;
/// Vector width along `k`.
const VW: i64 = 16;
/// Vectors of `k` per iteration of the one-row variant, each with its own
/// accumulator: as many as make one 64-byte line of B (f32: 1, f16/bf16:
/// 2). One FMA chain per line is 16 bytes a cycle, about twice what a core
/// pulls from memory, and every extra accumulator is only more work:
/// stepped decode of the 134M Llama (fraction of the read bandwidth at each
/// step's moment, one thread): f32 with 1, 2, 4, 8 vectors 0.915, 0.896,
/// 0.83–0.86, 0.80; f16 with 1, 2, 4 0.64 (the chain is then the limit),
/// 0.79, 0.74. Software prefetch on top (1–4 KiB ahead) only lost.
fn gemv_unroll(b: DType) -> i64 {
    (64 / (VW * b.size_bytes() as i64)).max(1)
}
/// Row tiles per chunk: 64 rows of A (192 KiB at k = 768) stay in L2.
pub(crate) const ORDER: BlockOrder = BlockOrder::ChunkedRows(16);

/// The block's tile: the one-row variant when one row of A is left.
pub(crate) fn cpu_tile(cx: &mut Ctx, t: &Tile) -> R<()> {
    let left = cx.b.sub(t.m, t.i0);
    let one = cx.b.i64c(1);
    let single = cx.b.cmpi("eq", left, one);
    if_else(
        cx,
        single,
        &[],
        |cx| {
            gemv_tile(cx, t)?;
            Ok(vec![])
        },
        |cx| {
            tile(cx, t)?;
            Ok(vec![])
        },
    )?;
    Ok(())
}

/// One row of A against TN rows of B, one B row after the other: a thread
/// then reads its weight rows as one sequential stream (what hardware
/// prefetchers follow best), with [`gemv_unroll`] accumulators per row for
/// independent FMA chains. The row of A stays in L1.
fn gemv_tile(cx: &mut Ctx, t: &Tile) -> R<()> {
    let vty = Ty::VF32(VW as u32);
    let zero =
        cx.b.in_prologue(|b| b.pure(vty, format!("arith.constant dense<0.000000e+00> : {vty}")));
    let one = cx.b.i64c(1);
    let ik = cx.b.mul(t.i0, t.k);
    let a_row = cx.b.add(t.a_off, ik);
    let (pa, pb, pc) = (cx.bufs[0], cx.bufs[1], cx.bufs[2]);
    let z = cx.b.i64c(0);
    let unroll = gemv_unroll(t.b_dtype);
    let step = cx.b.i64c(VW * unroll);
    let k_vec = cx.b.div(t.k, step);
    let k_vec = cx.b.mul(k_vec, step);
    let row = cx.b.mul(t.i0, t.n);
    let c_row = cx.b.add(t.c_off, row);
    for c in 0..t.tn {
        let cv = cx.b.i64c(c);
        let j = cx.b.add(t.j0, cv);
        let col_ok = cx.b.cmpi("slt", j, t.n);
        if_then(cx, col_ok, |cx| {
            let jk = cx.b.mul(j, t.k);
            let b_row = cx.b.add(t.b_off, jk);
            let inits = vec![zero; unroll as usize];
            let accs = for_loop(cx, z, k_vec, step, &inits, |cx, kk, acc| {
                let mut next = Vec::with_capacity(acc.len());
                for (u, &s) in acc.iter().enumerate() {
                    let off = cx.b.i64c(u as i64 * VW);
                    let ku = cx.b.add(kk, off);
                    let a = vload(cx, pa, a_row, ku);
                    let b = vload_b(cx, t, pb, b_row, ku);
                    next.push(cx.b.pure(vty, format!("math.fma {a}, {b}, {s} : {vty}")));
                }
                Ok(next)
            })?;
            let mut v = accs[0];
            for &w in &accs[1..] {
                v = cx.b.pure(vty, format!("arith.addf {v}, {w} : {vty}"));
            }
            let sum = cx.b.pure(
                Ty::F32,
                format!("vector.reduction <add>, {v} fastmath<reassoc> : {vty} into f32"),
            );
            let sum = for_loop(cx, k_vec, t.k, one, &[sum], |cx, kk, acc| {
                let ai = cx.b.add(a_row, kk);
                let p = cx.b.gep(pa, ai, Ty::F32);
                let a = cx.b.load(p, Ty::F32);
                let bi = cx.b.add(b_row, kk);
                let b = scalar::load(&mut cx.b, pb, bi, t.b_dtype);
                let s = acc[0];
                Ok(vec![cx
                    .b
                    .pure(Ty::F32, format!("math.fma {a}, {b}, {s} : f32"))])
            })?;
            let idx = cx.b.add(c_row, j);
            let p = cx.b.gep(pc, idx, Ty::F32);
            cx.b.store(sum[0], p);
            Ok(())
        })?;
    }
    Ok(())
}

/// TM rows of A against TN rows of B.
fn tile(cx: &mut Ctx, t: &Tile) -> R<()> {
    let vty = Ty::VF32(VW as u32);
    let zero =
        cx.b.in_prologue(|b| b.pure(vty, format!("arith.constant dense<0.000000e+00> : {vty}")));
    let a_rows: Vec<V> = (0..t.tm)
        .map(|r| {
            let rv = cx.b.i64c(r);
            let i = clamped_row(cx, t, rv);
            let ik = cx.b.mul(i, t.k);
            cx.b.add(t.a_off, ik)
        })
        .collect();
    let b_rows: Vec<V> = (0..t.tn)
        .map(|c| {
            let cv = cx.b.i64c(c);
            let j = cx.b.add(t.j0, cv);
            let one = cx.b.i64c(1);
            let last = cx.b.sub(t.n, one);
            let j = cx.b.min_s(j, last);
            let jk = cx.b.mul(j, t.k);
            cx.b.add(t.b_off, jk)
        })
        .collect();
    let (pa, pb, pc) = (cx.bufs[0], cx.bufs[1], cx.bufs[2]);
    let z = cx.b.i64c(0);
    let step = cx.b.i64c(VW);
    let k_vec = cx.b.div(t.k, step);
    let k_vec = cx.b.mul(k_vec, step);
    let inits = vec![zero; a_rows.len() * b_rows.len()];
    let accs = for_loop(cx, z, k_vec, step, &inits, |cx, kk, acc| {
        let av: Vec<V> = a_rows.iter().map(|&r| vload(cx, pa, r, kk)).collect();
        let bv: Vec<V> = b_rows.iter().map(|&r| vload_b(cx, t, pb, r, kk)).collect();
        let mut next = Vec::with_capacity(acc.len());
        for (r, a) in av.iter().enumerate() {
            for (c, b) in bv.iter().enumerate() {
                let s = acc[r * bv.len() + c];
                next.push(cx.b.pure(vty, format!("math.fma {a}, {b}, {s} : {vty}")));
            }
        }
        Ok(next)
    })?;
    let sums: Vec<V> = accs
        .iter()
        .map(|v| {
            cx.b.pure(
                Ty::F32,
                format!("vector.reduction <add>, {v} fastmath<reassoc> : {vty} into f32"),
            )
        })
        .collect();
    // The last products, one at a time.
    let one = cx.b.i64c(1);
    let sums = for_loop(cx, k_vec, t.k, one, &sums, |cx, kk, acc| {
        let load = |cx: &mut Ctx, ptr: V, base: V, dt: DType| {
            let i = cx.b.add(base, kk);
            scalar::load(&mut cx.b, ptr, i, dt)
        };
        let av: Vec<V> = a_rows
            .iter()
            .map(|&r| load(cx, pa, r, DType::F32))
            .collect();
        let bv: Vec<V> = b_rows.iter().map(|&r| load(cx, pb, r, t.b_dtype)).collect();
        let mut next = Vec::with_capacity(acc.len());
        for (r, a) in av.iter().enumerate() {
            for (c, b) in bv.iter().enumerate() {
                let s = acc[r * bv.len() + c];
                next.push(cx.b.pure(Ty::F32, format!("math.fma {a}, {b}, {s} : f32")));
            }
        }
        Ok(next)
    })?;
    for r in 0..t.tm {
        let rv = cx.b.i64c(r);
        let i = cx.b.add(t.i0, rv);
        let row_ok = cx.b.cmpi("slt", i, t.m);
        let sums = &sums[(r * t.tn) as usize..((r + 1) * t.tn) as usize];
        if_then(cx, row_ok, |cx| {
            let row = cx.b.mul(i, t.n);
            let base = cx.b.add(t.c_off, row);
            for (c, &v) in sums.iter().enumerate() {
                let cv = cx.b.i64c(c as i64);
                let j = cx.b.add(t.j0, cv);
                let col_ok = cx.b.cmpi("slt", j, t.n);
                if_then(cx, col_ok, |cx| {
                    let idx = cx.b.add(base, j);
                    let p = cx.b.gep(pc, idx, Ty::F32);
                    cx.b.store(v, p);
                    Ok(())
                })?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// `vector<16xf32>` at element `base + k` of `ptr` (4-byte aligned).
fn vload(cx: &mut Ctx, ptr: V, base: V, k: V) -> V {
    let vty = Ty::VF32(VW as u32);
    let i = cx.b.add(base, k);
    let p = cx.b.gep(ptr, i, Ty::F32);
    cx.b.op(
        vty,
        &format!("llvm.load {p} {{alignment = 4 : i64}} : !llvm.ptr -> {vty}"),
    )
}

/// `vector<16xf32>` of B at element `base + k`: B's own f32 values, or its
/// `f16`/`bf16` bits widened (exact) — a weight stored narrow streams half
/// the bytes. `bf16` is the high half of an f32, so two integer ops widen
/// it; `f16` takes one conversion (`vcvtph2ps` on x86).
fn vload_b(cx: &mut Ctx, t: &Tile, ptr: V, base: V, k: V) -> V {
    let vty = Ty::VF32(VW as u32);
    let raw_ty = Ty::VI16(VW as u32);
    let load_raw = |cx: &mut Ctx| {
        let i = cx.b.add(base, k);
        let p = cx.b.gep(ptr, i, Ty::I16);
        cx.b.op(
            raw_ty,
            &format!("llvm.load {p} {{alignment = 2 : i64}} : !llvm.ptr -> {raw_ty}"),
        )
    };
    match t.b_dtype {
        DType::BF16 => {
            let raw = load_raw(cx);
            let wide_ty = Ty::VI32(VW as u32);
            let wide = cx.b.conv("arith.extui", raw, wide_ty);
            let sixteen = cx
                .b
                .in_prologue(|b| b.pure(wide_ty, format!("arith.constant dense<16> : {wide_ty}")));
            let bits =
                cx.b.pure(wide_ty, format!("arith.shli {wide}, {sixteen} : {wide_ty}"));
            cx.b.conv("arith.bitcast", bits, vty)
        }
        DType::F16 => {
            let raw = load_raw(cx);
            let half = cx.b.conv("arith.bitcast", raw, Ty::VF16(VW as u32));
            cx.b.conv("arith.extf", half, vty)
        }
        _ => vload(cx, ptr, base, k),
    }
}
