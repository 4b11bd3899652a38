//! The GPU attention kernel (see `attention`).
//!
//! A block of [`THREADS`] threads owns [`ROWS`] query rows of one batch
//! index: one warp per row, the warp's lanes over the head dims. Lane `t`
//! holds `q[t], q[t+32], …` and the matching accumulator entries in
//! registers (constant head sizes up to `32·MAX_REGS`); for each visible
//! key the lanes' partial dot products are summed with `shuffle xor`, every
//! lane updates the running max and sum, and each rescales its own
//! accumulator entries and adds `p·v`. Loads of a key row are coalesced.
//! No shared memory and no barriers: warps are independent, and all control
//! flow is uniform within a warp (it depends only on the row and the key).
//!
//! A symbolic or very large head size reads `q` per key instead of holding
//! it, and accumulates in the result row itself (so `f32` results only).

use crate::attention::{block_keep, prob, rescale, row_hash, score, Attn, Base};
use crate::builder::{for_loop, if_else, if_then, Builder, Ty, R, V};
use crate::ctx::Ctx;
use crate::error::CodegenError;
use crate::scalar;
use kiln_ir::DType;

/// Threads of a block: four warps.
pub const THREADS: u32 = 128;
/// Query rows per block: one per warp.
pub const ROWS: i64 = THREADS as i64 / WARP;
const WARP: i64 = 32;
/// Per-lane entries of a head row kept in registers at most.
const MAX_REGS: i64 = 16;

/// Registers per lane for a row of `n` (a constant small enough), else `None`.
fn regs(n: &kiln_ir::Dim) -> Option<i64> {
    n.as_const()
        .map(|n| (n + WARP - 1) / WARP)
        .filter(|&r| r <= MAX_REGS)
}

/// What every key step of a row needs.
struct Row {
    i: V,
    p: V,
    lane: V,
    qrow: V,
    orow: V,
    /// The lane's query entries (register mode), else empty.
    qv: Vec<V>,
    /// Accumulator registers per lane; `0`: accumulate in the result row.
    nv: usize,
}

pub(crate) fn block(cx: &mut Ctx, a: &Attn, base: &Base) -> R<()> {
    let nv = match regs(&a.dv) {
        Some(r) => r as usize,
        None if a.dt == DType::F32 => 0,
        None => {
            return Err(CodegenError::Unsupported {
                kernel: cx.kernel.to_string(),
                op: "attention".into(),
                detail: format!(
                    "GPU kernel: value head size {} with {} results (a symbolic or \
                     over-{} head size accumulates in an f32 result)",
                    a.dv,
                    a.dt,
                    WARP * MAX_REGS
                ),
            })
        }
    };
    let tid = cx
        .threads
        .map(|t| t.tid)
        .ok_or_else(|| CodegenError::BadSpec {
            kernel: cx.kernel.to_string(),
            message: "GPU attention kernel emitted without threads".into(),
        })?;
    let w = cx.b.i64c(WARP);
    let warp = cx.b.div(tid, w);
    let lane = cx.b.rem(tid, w);
    let i = cx.b.add(base.i0, warp);
    let inside = cx.b.cmpi("slt", i, base.tq);
    if_then(cx, inside, |cx| {
        let p = cx.b.add(i, base.offset);
        let qrow = cx.b.mul(i, base.d);
        let qrow = cx.b.add(base.q_off, qrow);
        let orow = cx.b.mul(i, base.dv);
        let orow = cx.b.add(base.o_off, orow);
        let mut row = Row {
            i,
            p,
            lane,
            qrow,
            orow,
            qv: Vec::new(),
            nv,
        };
        if let Some(nq) = regs(&a.d) {
            let pq = cx.bufs[0];
            for t in 0..nq {
                let x = lane_load(cx, a, pq, qrow, base.d, lane, t, true);
                row.qv.push(x);
            }
        }
        row_body(cx, a, base, &row)
    })
}

/// Lane entry `t` of a row of `n` at `row`: element `lane + 32t`, clamped
/// into the row; with `zero_out`, lanes past the end read `0`.
#[allow(clippy::too_many_arguments)]
fn lane_load(cx: &mut Ctx, a: &Attn, buf: V, row: V, n: V, lane: V, t: i64, zero_out: bool) -> V {
    let b = &mut cx.b;
    let off = b.i64c(t * WARP);
    let e = b.add(lane, off);
    let full = b.known(n).is_some_and(|n| (t + 1) * WARP <= n);
    if full {
        let idx = b.add(row, e);
        return scalar::load(b, buf, idx, a.dt);
    }
    let one = b.i64c(1);
    let last = b.sub(n, one);
    let ec = b.min_s(e, last);
    let idx = b.add(row, ec);
    let x = scalar::load(b, buf, idx, a.dt);
    if !zero_out {
        return x;
    }
    let ok = b.cmpi("slt", e, n);
    let z = b.cf(Ty::F32, 0.0);
    b.select(ok, x, z)
}

/// The sum over the warp, in every lane.
fn warp_sum(b: &mut Builder, mut x: V) -> V {
    let width = b.ci(Ty::I32, WARP);
    let mut off = WARP / 2;
    while off >= 1 {
        let o = b.ci(Ty::I32, off);
        let sh = b.op_multi(
            &[Ty::F32, Ty::I1],
            &format!("gpu.shuffle xor {x}, {o}, {width} : f32"),
        );
        x = b.fbin("addf", x, sh[0]);
        off /= 2;
    }
    x
}

fn row_body(cx: &mut Ctx, a: &Attn, base: &Base, row: &Row) -> R<()> {
    let z = cx.b.i64c(0);
    let one = cx.b.i64c(1);
    let w = cx.b.i64c(WARP);
    let out = cx.bufs[a.out_buf()];
    let kend = if a.causal {
        let e = cx.b.add(row.p, one);
        cx.b.min_s(e, base.tk)
    } else {
        base.tk
    };
    let zf = cx.b.cf(Ty::F32, 0.0);
    let ninf = cx.b.cf(Ty::F32, f64::NEG_INFINITY);
    if row.nv == 0 {
        let start = cx.b.add(z, row.lane);
        for_loop(cx, start, base.dv, w, &[], |cx, d, _| {
            let oi = cx.b.add(row.orow, d);
            let p = cx.b.gep(out, oi, Ty::F32);
            cx.b.store(zf, p);
            Ok(vec![])
        })?;
    }
    let mut init = vec![ninf, zf];
    init.extend(std::iter::repeat_n(zf, row.nv));
    let fin = match (a.keep, base.head_hash) {
        (Some(k), Some(hh)) => {
            let bs = cx.b.i64c(k.block);
            let qb = cx.b.div(row.p, bs);
            let rh = row_hash(&mut cx.b, hh, qb);
            for_loop(cx, z, kend, bs, &init, |cx, kb, st| {
                let kbb = cx.b.div(kb, bs);
                let keep = block_keep(&mut cx.b, &k, rh, qb, kbb);
                let tys: Vec<Ty> = st.iter().map(|v| v.ty).collect();
                let st = st.to_vec();
                let st2 = st.clone();
                if_else(
                    cx,
                    keep,
                    &tys,
                    |cx| {
                        let e = cx.b.add(kb, bs);
                        let e = cx.b.min_s(e, kend);
                        for_loop(cx, kb, e, one, &st, |cx, j, st| {
                            key_step(cx, a, base, row, j, st)
                        })
                    },
                    |_| Ok(st2),
                )
            })?
        }
        _ => for_loop(cx, z, kend, one, &init, |cx, j, st| {
            key_step(cx, a, base, row, j, st)
        })?,
    };
    let l = fin[1];
    if row.nv == 0 {
        let start = cx.b.add(z, row.lane);
        for_loop(cx, start, base.dv, w, &[], |cx, d, _| {
            let oi = cx.b.add(row.orow, d);
            let p = cx.b.gep(out, oi, Ty::F32);
            let x = cx.b.load(p, Ty::F32);
            let y = cx.b.fbin("divf", x, l);
            cx.b.store(y, p);
            Ok(vec![])
        })?;
        return Ok(());
    }
    for (t, &acc) in fin[2..].iter().enumerate() {
        let off = cx.b.i64c(t as i64 * WARP);
        let d = cx.b.add(row.lane, off);
        let ok = cx.b.cmpi("slt", d, base.dv);
        if_then(cx, ok, |cx| {
            let y = cx.b.fbin("divf", acc, l);
            let oi = cx.b.add(row.orow, d);
            scalar::store(&mut cx.b, out, oi, a.dt, y);
            Ok(())
        })?;
    }
    Ok(())
}

/// One key `j`: state `[m, l, acc..]` in, updated state out.
fn key_step(cx: &mut Ctx, a: &Attn, base: &Base, row: &Row, j: V, st: &[V]) -> R<Vec<V>> {
    let (pq, pk, pv) = (cx.bufs[0], cx.bufs[1], cx.bufs[2]);
    let krow = cx.b.mul(j, base.k_stride);
    let krow = cx.b.add(base.k_off, krow);
    let partial = if row.qv.is_empty() {
        let zf = cx.b.cf(Ty::F32, 0.0);
        let w = cx.b.i64c(WARP);
        for_loop(cx, row.lane, base.d, w, &[zf], |cx, d, acc| {
            let qi = cx.b.add(row.qrow, d);
            let x = scalar::load(&mut cx.b, pq, qi, a.dt);
            let ki = cx.b.add(krow, d);
            let y = scalar::load(&mut cx.b, pk, ki, a.dt);
            Ok(vec![fma(&mut cx.b, x, y, acc[0])])
        })?[0]
    } else {
        let mut acc = cx.b.cf(Ty::F32, 0.0);
        for (t, &q) in row.qv.iter().enumerate() {
            // Lanes past the row's end read 0 for both (a clamped k could
            // be inf, and 0·inf would poison the sum).
            let k = lane_load(cx, a, pk, krow, base.d, row.lane, t as i64, true);
            acc = fma(&mut cx.b, q, k, acc);
        }
        acc
    };
    let dot = warp_sum(&mut cx.b, partial);
    let s = score(cx, a, base, dot, row.i, j, row.p)?;
    let (m_new, m_use, alpha) = rescale(cx, st[0], s);
    let pj = prob(cx, s, m_use);
    let l = cx.b.fbin("mulf", st[1], alpha);
    let l = cx.b.fbin("addf", l, pj);
    let vrow = cx.b.mul(j, base.v_stride);
    let vrow = cx.b.add(base.v_off, vrow);
    let mut next = vec![m_new, l];
    if row.nv == 0 {
        let out = cx.bufs[a.out_buf()];
        let w = cx.b.i64c(WARP);
        for_loop(cx, row.lane, base.dv, w, &[], |cx, d, _| {
            let oi = cx.b.add(row.orow, d);
            let p = cx.b.gep(out, oi, Ty::F32);
            let o = cx.b.load(p, Ty::F32);
            let o = cx.b.fbin("mulf", o, alpha);
            let vi = cx.b.add(vrow, d);
            let v = scalar::load(&mut cx.b, pv, vi, a.dt);
            let o = fma(&mut cx.b, pj, v, o);
            cx.b.store(o, p);
            Ok(vec![])
        })?;
    } else {
        for (t, &acc) in st[2..].iter().enumerate() {
            let v = lane_load(cx, a, pv, vrow, base.dv, row.lane, t as i64, false);
            let acc = cx.b.fbin("mulf", acc, alpha);
            next.push(fma(&mut cx.b, pj, v, acc));
        }
    }
    Ok(next)
}

/// `x·y + acc`, contracted to an FMA by the backend (`math.fma` would
/// become a libdevice call).
fn fma(b: &mut Builder, x: V, y: V, acc: V) -> V {
    let p = b.pure(
        Ty::F32,
        format!("arith.mulf {x}, {y} fastmath<contract> : f32"),
    );
    b.pure(
        Ty::F32,
        format!("arith.addf {acc}, {p} fastmath<contract> : f32"),
    )
}
