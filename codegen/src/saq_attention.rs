//! `saq_attention` kernels (`kiln_ir::saq::attention`): causal attention
//! of new queries over the SAQ state, decoding the quantized chunks in
//! place — no f32 copy of the cache is made.
//!
//! A block owns one query position `i` of one KV head `h` and all `g`
//! query heads of its group, so each cached key and value is decoded once
//! for the group. It walks the cached positions chunk by chunk (a chunk's
//! rung, and so its widths and offsets, is picked once per chunk), then the
//! f16 residual, then the new tokens `past..=past+i` (read exactly from `k`
//! and `v`), with an online softmax per query head: running max `m`, sum
//! `l` and `g × D` accumulators in stack scratch. Key codes dequantize with
//! their channel's group meta (decoded once per key group into scratch),
//! values with their token's group meta (decoded once per row).
//!
//! On the GPU a block is one thread.

use crate::builder::{for_loop, if_then, Builder, Ty, R, V};
use crate::ctx::{Ctx, KernelFn};
use crate::saq::{
    alloca_f32, dequantize, get_code, layout_for, load_f16, load_meta, row_offset, rung, Rung,
};
use crate::scalar;
use crate::target::EmitTarget;
use kiln_ir::kernel::{Grid, GridDim};
use kiln_ir::saq::{SaqAttentionOp, SaqLayout};
use kiln_ir::{DType, TensorType};

/// Emits `saq_attention(q, state, k, v)`; returns its function, grid and
/// GPU thread count.
pub fn emit_saq_attention(
    name: &str,
    op: &SaqAttentionOp,
    operand_types: &[TensorType],
    symbols: &[String],
    target: EmitTarget,
) -> R<(KernelFn, Grid, u32)> {
    let (q, k) = (&operand_types[0], &operand_types[2]);
    let layout = layout_for(name, &op.spec, k)?;
    let group = q.shape[1]
        .as_const()
        .ok_or_else(|| crate::error::CodegenError::BadSpec {
            kernel: name.to_string(),
            message: format!("the query group size must be a constant, got {q}"),
        })?;
    let grid = Grid {
        dims: vec![
            GridDim {
                extent: q.shape[0].clone(),
                tile: 1,
            },
            GridDim {
                extent: q.shape[2].clone(),
                tile: 1,
            },
        ],
    };
    let kf = Ctx::kernel_fn(name, 5, symbols, target, 1, |cx, block| {
        body(cx, block, op, &layout, group, q.dtype, k)
    })?;
    Ok((kf, grid, 1))
}

struct Env<'l> {
    l: &'l SaqLayout,
    g: i64,
    dt: DType,
    q: V,
    st: V,
    kp: V,
    vp: V,
    h: V,
    i: V,
    seq: V,
    scale: V,
    /// Scratch: running max and sum per query head, `g × D` accumulators.
    m: V,
    lsum: V,
    acc: V,
    /// Scratch: the current key group's meta per channel, the current
    /// row's value-group meta.
    kscale: V,
    kmin: V,
    vscale: V,
    vmin: V,
}

fn c(b: &mut Builder, v: i64) -> V {
    b.i64c(v)
}

#[allow(clippy::too_many_arguments)]
fn body(
    cx: &mut Ctx,
    block: V,
    op: &SaqAttentionOp,
    l: &SaqLayout,
    g: i64,
    dt: DType,
    kt: &TensorType,
) -> R<()> {
    let past = cx.dim(&op.offset)?;
    let seq = cx.dim(&kt.shape[0])?;
    let (heads, d) = (l.heads() as i64, l.dim() as i64);
    let b = &mut cx.b;
    let h = b.div(block, seq);
    let i = b.rem(block, seq);
    let e = Env {
        l,
        g,
        dt,
        q: cx.bufs[0],
        st: cx.bufs[1],
        kp: cx.bufs[2],
        vp: cx.bufs[3],
        h,
        i,
        seq,
        scale: b.cf(Ty::F32, op.scale.0),
        m: alloca_f32(b, g),
        lsum: alloca_f32(b, g),
        acc: alloca_f32(b, g * d),
        kscale: alloca_f32(b, d),
        kmin: alloca_f32(b, d),
        vscale: alloca_f32(b, l.value_groups() as i64),
        vmin: alloca_f32(b, l.value_groups() as i64),
    };
    let (zero, one) = (b.i64c(0), b.i64c(1));
    // Initial state: m = -inf, l = 0, acc = 0.
    let gv = c(b, g);
    let ninf = b.cf(Ty::F32, f64::NEG_INFINITY);
    let fz = b.cf(Ty::F32, 0.0);
    for_loop(cx, zero, gv, one, &[], |cx, j, _| {
        let b = &mut cx.b;
        let p = b.gep(e.m, j, Ty::F32);
        b.store(ninf, p);
        let p = b.gep(e.lsum, j, Ty::F32);
        b.store(fz, p);
        Ok(vec![])
    })?;
    let gd = c(&mut cx.b, g * d);
    for_loop(cx, zero, gd, one, &[], |cx, j, _| {
        let p = cx.b.gep(e.acc, j, Ty::F32);
        cx.b.store(fz, p);
        Ok(vec![])
    })?;
    let b = &mut cx.b;
    let s = c(b, l.chunk() as i64);
    let total = b.add(past, seq);
    let n = b.div(total, s);
    let bottom = c(b, l.bottom() as i64);
    // Quantized chunks: positions below `past` only (the new tokens are
    // read exactly below).
    for_loop(cx, zero, n, one, &[], |cx, ch, _| {
        let b = &mut cx.b;
        let first = b.mul(ch, s);
        let left = b.sub(past, first);
        let left = b.max_s(left, zero);
        let rows = b.min_s(left, s);
        let any = b.cmpi("sgt", rows, zero);
        if_then(cx, any, |cx| {
            let b = &mut cx.b;
            let ago = b.sub(n, ch);
            let r = b.min_s(ago, bottom);
            let rg = rung(b, l, r);
            let at_bottom = b.cmpi("eq", r, bottom);
            let row0 = b.select(at_bottom, first, zero);
            // Key groups: their meta decoded once, then their rows.
            let gk = c(b, l.key_group() as i64);
            let groups = b.add(rows, gk);
            let groups = b.sub(groups, one);
            let groups = b.div(groups, gk);
            for_loop(cx, zero, groups, one, &[], |cx, g, _| {
                let b = &mut cx.b;
                let g0 = b.mul(g, gk);
                let left = b.sub(rows, g0);
                let n_rows = b.min_s(left, gk);
                let grow = b.add(row0, g0);
                key_meta(cx, &e, &rg, grow)?;
                for_loop(cx, zero, n_rows, one, &[], |cx, jj, _| {
                    let row = cx.b.add(grow, jj);
                    quantized_key(cx, &e, &rg, row)?;
                    Ok(vec![])
                })?;
                Ok(vec![])
            })?;
            Ok(())
        })?;
        Ok(vec![])
    })?;
    // The residual: positions n·S .. past.
    let b = &mut cx.b;
    let done = b.mul(n, s);
    let r0 = rung(b, l, zero);
    for_loop(cx, done, past, one, &[], |cx, j, _| {
        let b = &mut cx.b;
        let row = b.sub(j, done);
        let base = row_offset(b, &r0, heads, row, h);
        let two = b.i64c(2);
        let kv = |b: &mut Builder, chan: V, shift: i64| {
            let sh = b.i64c(shift);
            let at = b.add(chan, sh);
            let at = b.mul(at, two);
            let at = b.add(base, at);
            load_f16(b, e.st, at)
        };
        key(cx, &e, |b, chan| kv(b, chan, 0), |b, chan| kv(b, chan, d))
    })?;
    // The new tokens past ..= past + i, exact.
    let b = &mut cx.b;
    let end = b.add(past, i);
    let end = b.add(end, one);
    for_loop(cx, past, end, one, &[], |cx, t, _| {
        let b = &mut cx.b;
        let src = b.sub(t, past);
        let hv = b.i64c(heads);
        let src = b.mul(src, hv);
        let src = b.add(src, h);
        let dv = b.i64c(d);
        let src = b.mul(src, dv);
        let kv = |b: &mut Builder, chan: V, p: V| {
            let at = b.add(src, chan);
            scalar::load(b, p, at, e.dt)
        };
        key(
            cx,
            &e,
            |b, chan| kv(b, chan, e.kp),
            |b, chan| kv(b, chan, e.vp),
        )
    })?;
    // out = acc / l.
    let out = cx.bufs[4];
    for_loop(cx, zero, gv, one, &[], |cx, j, _| {
        let b = &mut cx.b;
        let p = b.gep(e.lsum, j, Ty::F32);
        let lj = b.load(p, Ty::F32);
        let orow = out_row(b, &e, j);
        let dv = b.i64c(d);
        for_loop(cx, zero, dv, one, &[], |cx, chan, _| {
            let b = &mut cx.b;
            let jd = b.mul(j, dv);
            let a = b.add(jd, chan);
            let p = b.gep(e.acc, a, Ty::F32);
            let x = b.load(p, Ty::F32);
            let y = b.fbin("divf", x, lj);
            let o = b.add(orow, chan);
            scalar::store(b, out, o, e.dt, y);
            Ok(vec![])
        })?;
        Ok(vec![])
    })?;
    Ok(())
}

/// Element offset of query head `j`'s row: `((h·g + j)·seq + i)·D`.
fn out_row(b: &mut Builder, e: &Env, j: V) -> V {
    let gv = b.i64c(e.g);
    let x = b.mul(e.h, gv);
    let x = b.add(x, j);
    let x = b.mul(x, e.seq);
    let x = b.add(x, e.i);
    let dv = b.i64c(e.l.dim() as i64);
    b.mul(x, dv)
}

/// One cached position at a quantized rung: codes dequantized with their
/// group meta.
/// Decodes the key meta of the group starting at region row `grow` (one
/// `(scale, min)` per channel, spread over the group's rows) into scratch.
fn key_meta(cx: &mut Ctx, e: &Env, rg: &Rung, grow: V) -> R<()> {
    let l = e.l;
    let heads = l.heads() as i64;
    let b = &mut cx.b;
    let (zero, one, d) = (b.i64c(0), b.i64c(1), c(b, l.dim() as i64));
    let cpr = c(b, l.key_meta_per_row() as i64);
    let four = b.i64c(4);
    for_loop(cx, zero, d, one, &[], |cx, chan, _| {
        let b = &mut cx.b;
        let r = b.div(chan, cpr);
        let mrow = b.add(grow, r);
        let mbase = row_offset(b, rg, heads, mrow, e.h);
        let slot = b.rem(chan, cpr);
        let slot = b.mul(slot, four);
        let off = b.add(mbase, rg.km);
        let off = b.add(off, slot);
        let (scale, min) = load_meta(b, e.st, off);
        let p = b.gep(e.kscale, chan, Ty::F32);
        b.store(scale, p);
        let p = b.gep(e.kmin, chan, Ty::F32);
        b.store(min, p);
        Ok(vec![])
    })?;
    Ok(())
}

/// One cached position at a quantized rung: codes dequantized with their
/// group meta (the key group's from scratch, the row's value groups
/// decoded first).
fn quantized_key(cx: &mut Ctx, e: &Env, rg: &Rung, row: V) -> R<()> {
    let l = e.l;
    let heads = l.heads() as i64;
    let b = &mut cx.b;
    let (zero, one) = (b.i64c(0), b.i64c(1));
    let base = row_offset(b, rg, heads, row, e.h);
    let gv = c(b, l.value_group() as i64);
    let ngv = c(b, l.value_groups() as i64);
    let four = b.i64c(4);
    let st = e.st;
    for_loop(cx, zero, ngv, one, &[], |cx, g, _| {
        let b = &mut cx.b;
        let slot = b.mul(g, four);
        let off = b.add(base, rg.vm);
        let off = b.add(off, slot);
        let (scale, min) = load_meta(b, st, off);
        let p = b.gep(e.vscale, g, Ty::F32);
        b.store(scale, p);
        let p = b.gep(e.vmin, g, Ty::F32);
        b.store(min, p);
        Ok(vec![])
    })?;
    let meta = |b: &mut Builder, s: V, m: V, i: V| {
        let ps = b.gep(s, i, Ty::F32);
        let pm = b.gep(m, i, Ty::F32);
        (b.load(ps, Ty::F32), b.load(pm, Ty::F32))
    };
    let kval = |b: &mut Builder, chan: V| {
        let code = get_code(b, st, base, chan, rg);
        let (scale, min) = meta(b, e.kscale, e.kmin, chan);
        dequantize(b, code, scale, min)
    };
    let vval = |b: &mut Builder, chan: V| {
        let codes = b.add(base, rg.vc);
        let code = get_code(b, st, codes, chan, rg);
        let grp = b.div(chan, gv);
        let (scale, min) = meta(b, e.vscale, e.vmin, grp);
        dequantize(b, code, scale, min)
    };
    key(cx, e, kval, vval).map(|_| ())
}

/// Folds one key/value pair into every query head's online softmax.
fn key(
    cx: &mut Ctx,
    e: &Env,
    kval: impl Fn(&mut Builder, V) -> V,
    vval: impl Fn(&mut Builder, V) -> V,
) -> R<Vec<V>> {
    let math = cx.scalar.math;
    let d = e.l.dim() as i64;
    let b = &mut cx.b;
    let (zero, one, dv) = (b.i64c(0), b.i64c(1), b.i64c(d));
    let fz = b.cf(Ty::F32, 0.0);
    let rows: Vec<V> = (0..e.g)
        .map(|j| {
            let jv = b.i64c(j);
            out_row(b, e, jv)
        })
        .collect();
    // Scores q_j · k for every query head j, sharing the decoded key.
    let inits = vec![fz; e.g as usize];
    let dots = for_loop(cx, zero, dv, one, &inits, |cx, chan, acc| {
        let b = &mut cx.b;
        let kx = kval(b, chan);
        let mut out = Vec::with_capacity(acc.len());
        for (j, &a) in acc.iter().enumerate() {
            let qi = b.add(rows[j], chan);
            let qx = scalar::load(b, e.q, qi, e.dt);
            let p = b.fbin("mulf", qx, kx);
            out.push(b.fbin("addf", a, p));
        }
        Ok(out)
    })?;
    let b = &mut cx.b;
    let mut corr = Vec::new();
    let mut prob = Vec::new();
    for (j, &dot) in dots.iter().enumerate() {
        let jv = b.i64c(j as i64);
        let sc = b.fbin("mulf", dot, e.scale);
        let pm = b.gep(e.m, jv, Ty::F32);
        let pl = b.gep(e.lsum, jv, Ty::F32);
        let m_old = b.load(pm, Ty::F32);
        let l_old = b.load(pl, Ty::F32);
        let m_new = crate::saq::max_or(b, sc, m_old);
        let dm = b.fbin("subf", m_old, m_new);
        let cr = math.exp(b, dm);
        let ds = b.fbin("subf", sc, m_new);
        let p = math.exp(b, ds);
        let l_new = b.fbin("mulf", l_old, cr);
        let l_new = b.fbin("addf", l_new, p);
        b.store(m_new, pm);
        b.store(l_new, pl);
        corr.push(cr);
        prob.push(p);
    }
    for_loop(cx, zero, dv, one, &[], |cx, chan, _| {
        let b = &mut cx.b;
        let vx = vval(b, chan);
        for j in 0..e.g as usize {
            let jv = b.i64c(j as i64 * d);
            let a = b.add(jv, chan);
            let pa = b.gep(e.acc, a, Ty::F32);
            let x = b.load(pa, Ty::F32);
            let x = b.fbin("mulf", x, corr[j]);
            let pv = b.fbin("mulf", prob[j], vx);
            let x = b.fbin("addf", x, pv);
            b.store(x, pa);
        }
        Ok(vec![])
    })?;
    Ok(vec![])
}
