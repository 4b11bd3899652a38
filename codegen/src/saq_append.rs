//! `saq_append` kernels (`kiln_ir::saq::append`): the new tokens of one
//! call quantized into the SAQ state in place.
//!
//! Contract (the planner's, as for `update_slice`): when the kernel runs,
//! the result buffer already holds the state (it *is* the state, or a copy
//! of it); the kernel reads and writes only the result. One block per KV
//! head (heads own disjoint bytes). A block walks the chunks the call
//! completes or moves, oldest first — the order that makes the in-place
//! moves safe (see `kiln_ir::saq`) — and runs each group's requantization
//! chain: the group's values are loaded (f16 residual, new tokens rounded
//! to f16, or a middle rung dequantized), quantized and dequantized once
//! per intermediate rung, and quantized at the destination, where its codes
//! and meta are written. Keys are groups of `Gk` tokens of one channel,
//! values groups of `Gv` channels of one token. Then the residual rows that
//! went into chunks are cleared and the remaining new tokens enter the
//! residual as f16.
//!
//! On the GPU a block is one thread: the chunk order is sequential, and
//! packed codes share bytes across groups.

use crate::builder::{for_loop, if_else, if_then, Builder, Ty, R, V};
use crate::ctx::{Ctx, KernelFn};
use crate::saq::{
    alloca_f32, dequantize, get_code, layout_for, load_f16, load_meta, meta, min_max, quantize,
    row_offset, rung, set_code, store_i16, store_meta, Meta, Rung,
};
use crate::scalar::{self, f16_bits};
use crate::target::EmitTarget;
use kiln_ir::kernel::{Grid, GridDim};
use kiln_ir::saq::{SaqAppendOp, SaqLayout};
use kiln_ir::{DType, Dim, TensorType};

/// Emits `saq_append(state, k, v)`; returns its function, grid and GPU
/// thread count.
pub fn emit_saq_append(
    name: &str,
    op: &SaqAppendOp,
    operand_types: &[TensorType],
    symbols: &[String],
    target: EmitTarget,
) -> R<(KernelFn, Grid, u32)> {
    let k = &operand_types[1];
    let layout = layout_for(name, &op.spec, k)?;
    let grid = Grid {
        dims: vec![GridDim {
            extent: Dim::constant(layout.heads() as i64),
            tile: 1,
        }],
    };
    let kf = Ctx::kernel_fn(name, 4, symbols, target, 1, |cx, block| {
        body(cx, block, op, &layout, k)
    })?;
    Ok((kf, grid, 1))
}

/// The sizes and buffers one block works with.
struct Env<'l> {
    l: &'l SaqLayout,
    dt: DType,
    /// The state (the result buffer) and the new keys and values.
    st: V,
    kp: V,
    vp: V,
    h: V,
    past: V,
    n0: V,
    /// The residual's constants.
    r0: Rung,
    tmp: V,
}

fn c(b: &mut Builder, v: usize) -> V {
    b.i64c(v as i64)
}

fn body(cx: &mut Ctx, h: V, op: &SaqAppendOp, l: &SaqLayout, kt: &TensorType) -> R<()> {
    let past = cx.dim(&op.start)?;
    let seq = cx.dim(&kt.shape[0])?;
    let b = &mut cx.b;
    let (s, bottom) = (c(b, l.chunk()), c(b, l.bottom()));
    let (zero, one) = (b.i64c(0), b.i64c(1));
    let total = b.add(past, seq);
    let n0 = b.div(past, s);
    let n1 = b.div(total, s);
    let tmp = alloca_f32(b, l.key_group().max(l.value_group()) as i64);
    let r0 = rung(b, l, zero);
    let e = Env {
        l,
        dt: kt.dtype,
        st: cx.bufs[3],
        kp: cx.bufs[1],
        vp: cx.bufs[2],
        h,
        past,
        n0,
        r0,
        tmp,
    };
    // Chunks that move or form, oldest first.
    let lo = cx.b.add(n0, one);
    let lo = cx.b.sub(lo, bottom);
    let lo = cx.b.max_s(lo, zero);
    for_loop(cx, lo, n1, one, &[], |cx, ch, _| {
        let b = &mut cx.b;
        let left = b.sub(n1, ch);
        let to = b.min_s(left, bottom);
        let old = b.cmpi("slt", ch, n0);
        let ago = b.sub(n0, ch);
        let from = b.min_s(ago, bottom);
        let from = b.select(old, from, zero);
        let moves = b.cmpi("ne", from, to);
        if_then(cx, moves, |cx| chunk(cx, &e, ch, from, to))?;
        Ok(vec![])
    })?;
    // Residual rows whose tokens went into chunks are cleared (unused bytes
    // stay zero, as in the interpreter).
    let formed = cx.b.cmpi("sgt", n1, n0);
    if_then(cx, formed, |cx| {
        let b = &mut cx.b;
        let used = b.mul(n0, s);
        let rows = b.sub(past, used);
        let words = c(b, l.row_bytes(0) / 4);
        for_loop(cx, zero, rows, one, &[], |cx, row, _| {
            let base = row_offset(&mut cx.b, &e.r0, l.heads() as i64, row, h);
            for_loop(cx, zero, words, one, &[], |cx, w, _| {
                let b = &mut cx.b;
                let four = b.i64c(4);
                let off = b.mul(w, four);
                let off = b.add(base, off);
                let p = b.gep(e.st, off, Ty::I8);
                let z = b.ci(Ty::I32, 0);
                b.store(z, p);
                Ok(vec![])
            })?;
            Ok(vec![])
        })?;
        Ok(())
    })?;
    // The new tokens after the last complete chunk enter the residual.
    let b = &mut cx.b;
    let done = b.mul(n1, s);
    let t_lo = b.max_s(past, done);
    let d = c(b, l.dim());
    for_loop(cx, t_lo, total, one, &[], |cx, t, _| {
        let b = &mut cx.b;
        let row = b.sub(t, done);
        let base = row_offset(b, &e.r0, l.heads() as i64, row, h);
        let src = new_row(b, &e, t);
        for_loop(cx, zero, d, one, &[], |cx, chan, _| {
            let b = &mut cx.b;
            let i = b.add(src, chan);
            let two = b.i64c(2);
            for (p, shift) in [(e.kp, 0), (e.vp, l.dim())] {
                let x = scalar::load(b, p, i, e.dt);
                let bits = f16_bits(b, x);
                let sh = c(b, shift);
                let at = b.add(chan, sh);
                let at = b.mul(at, two);
                let at = b.add(base, at);
                store_i16(b, e.st, at, bits);
            }
            Ok(vec![])
        })?;
        Ok(vec![])
    })?;
    Ok(())
}

/// Element offset of new token `t`'s row of this head in `k`/`v`:
/// `((t - past)·H + h)·D`.
fn new_row(b: &mut Builder, e: &Env, t: V) -> V {
    let i = b.sub(t, e.past);
    let hv = c(b, e.l.heads());
    let i = b.mul(i, hv);
    let i = b.add(i, e.h);
    let d = c(b, e.l.dim());
    b.mul(i, d)
}

/// Chunk `ch` goes from rung `from` (0: it forms now) to rung `to`.
fn chunk(cx: &mut Ctx, e: &Env, ch: V, from: V, to: V) -> R<()> {
    let l = e.l;
    let heads = l.heads() as i64;
    let b = &mut cx.b;
    let (zero, one) = (b.i64c(0), b.i64c(1));
    let rt = rung(b, l, to);
    let rf = rung(b, l, from);
    let s = c(b, l.chunk());
    let bottom = c(b, l.bottom());
    let at_bottom = b.cmpi("eq", to, bottom);
    let first = b.mul(ch, s);
    let row0 = b.select(at_bottom, first, zero);
    let (gk, cpr) = (c(b, l.key_group()), c(b, l.key_meta_per_row()));
    let groups = c(b, l.chunk() / l.key_group());
    let d = c(b, l.dim());
    // Keys: per channel, groups of Gk tokens.
    for_loop(cx, zero, d, one, &[], |cx, chan, _| {
        for_loop(cx, zero, groups, one, &[], |cx, g, _| {
            let g0 = cx.b.mul(g, gk);
            let load = |cx: &mut Ctx, i: V| {
                let row = cx.b.add(g0, i);
                source(cx, e, false, &rf, from, ch, row, chan)
            };
            let put_meta = |cx: &mut Ctx, m: &Meta| {
                let b = &mut cx.b;
                let r = b.div(chan, cpr);
                let row = b.add(g0, r);
                let row = b.add(row0, row);
                let base = row_offset(b, &rt, heads, row, e.h);
                let slot = b.rem(chan, cpr);
                let four = b.i64c(4);
                let slot = b.mul(slot, four);
                let off = b.add(base, rt.km);
                let off = b.add(off, slot);
                store_meta(b, e.st, off, m);
                Ok(())
            };
            let put_code = |cx: &mut Ctx, i: V, q: V| {
                let b = &mut cx.b;
                let row = b.add(g0, i);
                let row = b.add(row0, row);
                let base = row_offset(b, &rt, heads, row, e.h);
                set_code(b, e.st, base, chan, &rt, q);
                Ok(())
            };
            chain(cx, e, gk, from, to, load, put_meta, put_code)?;
            Ok(vec![])
        })?;
        Ok(vec![])
    })?;
    // Values: per token, groups of Gv channels.
    let (gv, ngv) = (
        c(&mut cx.b, l.value_group()),
        c(&mut cx.b, l.value_groups()),
    );
    for_loop(cx, zero, s, one, &[], |cx, i, _| {
        for_loop(cx, zero, ngv, one, &[], |cx, g, _| {
            let b = &mut cx.b;
            let c0 = b.mul(g, gv);
            let rest = b.sub(d, c0);
            let len = b.min_s(gv, rest);
            let load = |cx: &mut Ctx, j: V| {
                let chan = cx.b.add(c0, j);
                source(cx, e, true, &rf, from, ch, i, chan)
            };
            let put_meta = |cx: &mut Ctx, m: &Meta| {
                let b = &mut cx.b;
                let row = b.add(row0, i);
                let base = row_offset(b, &rt, heads, row, e.h);
                let four = b.i64c(4);
                let slot = b.mul(g, four);
                let off = b.add(base, rt.vm);
                let off = b.add(off, slot);
                store_meta(b, e.st, off, m);
                Ok(())
            };
            let put_code = |cx: &mut Ctx, j: V, q: V| {
                let b = &mut cx.b;
                let row = b.add(row0, i);
                let base = row_offset(b, &rt, heads, row, e.h);
                let base = b.add(base, rt.vc);
                let chan = b.add(c0, j);
                set_code(b, e.st, base, chan, &rt, q);
                Ok(())
            };
            chain(cx, e, len, from, to, load, put_meta, put_code)?;
            Ok(vec![])
        })?;
        Ok(vec![])
    })?;
    Ok(())
}

/// The starting value of one element of chunk `ch`: token row `row` of the
/// chunk, channel `chan`, a key or a value. A chunk forming now (`from` =
/// 0) reads the residual (tokens before `past`) or the new tokens (rounded
/// to f16); a moving chunk dequantizes its middle rung (rows from 0).
#[allow(clippy::too_many_arguments)]
fn source(cx: &mut Ctx, e: &Env, value: bool, rf: &Rung, from: V, ch: V, row: V, chan: V) -> R<V> {
    let l = e.l;
    let heads = l.heads() as i64;
    let zero = cx.b.i64c(0);
    let forming = cx.b.cmpi("eq", from, zero);
    let r = if_else(
        cx,
        forming,
        &[Ty::F32],
        |cx| {
            let b = &mut cx.b;
            let s = c(b, l.chunk());
            let t = b.mul(ch, s);
            let t = b.add(t, row);
            let cached = b.cmpi("slt", t, e.past);
            if_else(
                cx,
                cached,
                &[Ty::F32],
                |cx| {
                    let b = &mut cx.b;
                    let used = b.mul(e.n0, s);
                    let rrow = b.sub(t, used);
                    let base = row_offset(b, &e.r0, heads, rrow, e.h);
                    let shift = c(b, if value { l.dim() } else { 0 });
                    let at = b.add(chan, shift);
                    let two = b.i64c(2);
                    let at = b.mul(at, two);
                    let at = b.add(base, at);
                    Ok(vec![load_f16(b, e.st, at)])
                },
                |cx| {
                    let b = &mut cx.b;
                    let src = new_row(b, e, t);
                    let i = b.add(src, chan);
                    let p = if value { e.vp } else { e.kp };
                    let x = scalar::load(b, p, i, e.dt);
                    Ok(vec![scalar::round(b, x, DType::F16)])
                },
            )
        },
        |cx| {
            let b = &mut cx.b;
            let base = row_offset(b, rf, heads, row, e.h);
            let four = b.i64c(4);
            let (code, moff) = if value {
                let codes = b.add(base, rf.vc);
                let code = get_code(b, e.st, codes, chan, rf);
                let gv = c(b, l.value_group());
                let g = b.div(chan, gv);
                let slot = b.mul(g, four);
                let moff = b.add(base, rf.vm);
                (code, b.add(moff, slot))
            } else {
                let code = get_code(b, e.st, base, chan, rf);
                let (gk, cpr) = (c(b, l.key_group()), c(b, l.key_meta_per_row()));
                let within = b.rem(row, gk);
                let g0 = b.sub(row, within);
                let r = b.div(chan, cpr);
                let mrow = b.add(g0, r);
                let mbase = row_offset(b, rf, heads, mrow, e.h);
                let slot = b.rem(chan, cpr);
                let slot = b.mul(slot, four);
                let moff = b.add(mbase, rf.km);
                (code, b.add(moff, slot))
            };
            let (scale, min) = load_meta(b, e.st, moff);
            Ok(vec![dequantize(b, code, scale, min)])
        },
    )?;
    Ok(r[0])
}

/// One group's requantization chain over `n` elements (see the module docs).
#[allow(clippy::too_many_arguments)]
fn chain(
    cx: &mut Ctx,
    e: &Env,
    n: V,
    from: V,
    to: V,
    load: impl FnOnce(&mut Ctx, V) -> R<V>,
    put_meta: impl FnOnce(&mut Ctx, &Meta) -> R<()>,
    put_code: impl FnOnce(&mut Ctx, V, V) -> R<()>,
) -> R<()> {
    let (zero, one) = (cx.b.i64c(0), cx.b.i64c(1));
    let math = cx.scalar.math;
    let tmp = e.tmp;
    for_loop(cx, zero, n, one, &[], |cx, i, _| {
        let x = load(cx, i)?;
        let p = cx.b.gep(tmp, i, Ty::F32);
        cx.b.store(x, p);
        Ok(vec![])
    })?;
    let next = cx.b.add(from, one);
    for_loop(cx, next, to, one, &[], |cx, r, _| {
        let lv = rung(&mut cx.b, e.l, r).levels;
        let (lo, hi) = min_max(cx, tmp, n)?;
        let m = meta(&mut cx.b, lo, hi, lv);
        for_loop(cx, zero, n, one, &[], |cx, i, _| {
            let b = &mut cx.b;
            let p = b.gep(tmp, i, Ty::F32);
            let x = b.load(p, Ty::F32);
            let q = quantize(b, &math, x, &m, lv);
            let y = dequantize(b, q, m.scale, m.min);
            b.store(y, p);
            Ok(vec![])
        })?;
        Ok(vec![])
    })?;
    let lv = rung(&mut cx.b, e.l, to).levels;
    let (lo, hi) = min_max(cx, tmp, n)?;
    let m = meta(&mut cx.b, lo, hi, lv);
    put_meta(cx, &m)?;
    for_loop(cx, zero, n, one, &[], |cx, i, _| {
        let b = &mut cx.b;
        let p = b.gep(tmp, i, Ty::F32);
        let x = b.load(p, Ty::F32);
        let q = quantize(b, &math, x, &m, lv);
        put_code(cx, i, q)?;
        Ok(vec![])
    })?;
    Ok(())
}
