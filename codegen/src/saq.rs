//! Shared pieces of the SAQ kernels (`saq_append` in `saq_append`,
//! `saq_attention` in `saq_attention`): the layout's per-rung constants
//! picked by a runtime rung index, byte-addressed access to the `u8` state
//! (f16 fields, packed codes), and the min–max quantizer in exactly the f32
//! operation order of `kiln_ir::saq::quant`, so compiled states match the
//! interpreter's bytes:
//!
//! ```text
//! m = f16_down(min x); s = f16_up((max x - m) / L) (0 when not > 0)
//! q = min(max(floor((x - m) / s + 0.5), 0), L)     (0 when s = 0)
//! x' = m + q·s
//! ```
//!
//! f16 conversions use the integer routines of `scalar` (round to nearest
//! even); the directed roundings step one f16 ulp when the nearest value
//! lies on the wrong side, as the interpreter does.

use crate::builder::{for_loop, Builder, Ty, R, V};
use crate::ctx::Ctx;
use crate::math::Math;
use crate::scalar::{f16_bits, f16_to_f32};
use kiln_ir::saq::SaqLayout;

/// `vals[r]` for a runtime index `r` (a select chain; equal values fold).
pub(crate) fn pick(b: &mut Builder, r: V, vals: &[i64]) -> V {
    let last = vals.len() - 1;
    let mut acc = b.i64c(vals[last]);
    for (i, &v) in vals[..last].iter().enumerate().rev() {
        let c = b.i64c(v);
        let ri = b.i64c(i as i64);
        let is = b.cmpi("eq", r, ri);
        acc = b.select(is, c, acc);
    }
    acc
}

/// The constants of one rung, for a runtime rung index (all `i64`, the
/// levels as `f32`). For the residual (rung 0) only `region` and `row`
/// mean anything.
#[derive(Clone, Copy)]
pub(crate) struct Rung {
    pub bits: V,
    /// `2^bits - 1` as an `i64` (the code mask) and as an `f32`.
    pub mask: V,
    pub levels: V,
    pub region: V,
    pub row: V,
    pub vc: V,
    pub vm: V,
    pub km: V,
}

pub(crate) fn rung(b: &mut Builder, l: &SaqLayout, r: V) -> Rung {
    let per = |f: &dyn Fn(usize) -> i64| -> Vec<i64> { (0..l.rungs()).map(f).collect() };
    let q = |r: usize| r > 0;
    let bits = per(&|r| if q(r) { l.bits(r) as i64 } else { 0 });
    let mask = per(&|r| if q(r) { (1i64 << l.bits(r)) - 1 } else { 0 });
    let region = per(&|r| l.region_offset(r) as i64);
    let row = per(&|r| l.row_bytes(r) as i64);
    let vc = per(&|r| {
        if q(r) {
            l.value_codes_offset(r) as i64
        } else {
            0
        }
    });
    let vm = per(&|r| {
        if q(r) {
            l.value_meta_offset(r) as i64
        } else {
            0
        }
    });
    let km = per(&|r| if q(r) { l.key_meta_offset(r) as i64 } else { 0 });
    let mask = pick(b, r, &mask);
    let levels = b.conv("arith.sitofp", mask, Ty::F32);
    Rung {
        bits: pick(b, r, &bits),
        mask,
        levels,
        region: pick(b, r, &region),
        row: pick(b, r, &row),
        vc: pick(b, r, &vc),
        vm: pick(b, r, &vm),
        km: pick(b, r, &km),
    }
}

/// Byte offset of row `row` of head `h` in a rung: `region + (row·H + h)·W`.
pub(crate) fn row_offset(b: &mut Builder, r: &Rung, heads: i64, row: V, h: V) -> V {
    let hv = b.i64c(heads);
    let x = b.mul(row, hv);
    let x = b.add(x, h);
    let x = b.mul(x, r.row);
    b.add(r.region, x)
}

/// The byte at `p + off`, zero-extended to `i64`.
pub(crate) fn load_u8(b: &mut Builder, p: V, off: V) -> V {
    let q = b.gep(p, off, Ty::I8);
    let x = b.load(q, Ty::I8);
    b.conv("arith.extui", x, Ty::I64)
}

/// The f16 at byte offset `off` (even) of `p`, as `f32`.
pub(crate) fn load_f16(b: &mut Builder, p: V, off: V) -> V {
    let q = b.gep(p, off, Ty::I8);
    let x = b.load(q, Ty::I16);
    f16_to_f32(b, x)
}

/// Stores `i16` bits at byte offset `off` (even) of `p`.
pub(crate) fn store_i16(b: &mut Builder, p: V, off: V, bits: V) {
    let q = b.gep(p, off, Ty::I8);
    b.store(bits, q);
}

/// Code `ch` of `bits` bits packed from byte offset `off`.
pub(crate) fn get_code(b: &mut Builder, p: V, off: V, ch: V, r: &Rung) -> V {
    let bit = b.mul(ch, r.bits);
    let three = b.i64c(3);
    let seven = b.i64c(7);
    let byte = b.bin("shrui", bit, three);
    let sh = b.and(bit, seven);
    let at = b.add(off, byte);
    let x = load_u8(b, p, at);
    let x = b.bin("shrui", x, sh);
    b.and(x, r.mask)
}

/// Stores code `q` (`i64`) as code `ch` packed from byte offset `off`.
pub(crate) fn set_code(b: &mut Builder, p: V, off: V, ch: V, r: &Rung, q: V) {
    let bit = b.mul(ch, r.bits);
    let three = b.i64c(3);
    let seven = b.i64c(7);
    let byte = b.bin("shrui", bit, three);
    let sh = b.and(bit, seven);
    let at = b.add(off, byte);
    let old = load_u8(b, p, at);
    let m = b.bin("shli", r.mask, sh);
    let all = b.i64c(-1);
    let keep = b.bin("xori", m, all);
    let old = b.and(old, keep);
    let q = b.bin("shli", q, sh);
    let q = b.and(q, m);
    let new = b.bin("ori", old, q);
    let new = b.conv("arith.trunci", new, Ty::I8);
    let ptr = b.gep(p, at, Ty::I8);
    b.store(new, ptr);
}

/// `a` if `a > c`, else `c` (a NaN `a` gives `c`), as a compare and
/// select: `arith.maxnumf` would be a libdevice call on the GPU and leaves
/// the sign of an equal zero open.
pub(crate) fn max_or(b: &mut Builder, a: V, c: V) -> V {
    let gt = b.cmpf("ogt", a, c);
    b.select(gt, a, c)
}

/// `a` if `a < c`, else `c`.
pub(crate) fn min_or(b: &mut Builder, a: V, c: V) -> V {
    let lt = b.cmpf("olt", a, c);
    b.select(lt, a, c)
}

/// `x` clamped to the finite f16 range (a NaN goes to the lower bound).
fn clamp_finite(b: &mut Builder, x: V) -> V {
    let lo = b.cf(Ty::F32, -65504.0);
    let hi = b.cf(Ty::F32, 65504.0);
    let x = max_or(b, x, lo);
    min_or(b, x, hi)
}

/// Bits of the largest f16 not above `x` (clamped to the finite range).
pub(crate) fn f16_down(b: &mut Builder, x: V) -> V {
    let x = clamp_finite(b, x);
    let h = f16_bits(b, x);
    let back = f16_to_f32(b, h);
    let above = b.cmpf("ogt", back, x);
    let c = |b: &mut Builder, v: i64| b.ci(Ty::I16, v);
    let (sign, zero, one) = (c(b, -0x8000), c(b, 0), c(b, 1));
    let s = b.and(h, sign);
    let neg = b.cmpi("ne", s, zero);
    let is_zero = b.cmpi("eq", h, zero);
    let up = b.add(h, one);
    let dn = b.sub(h, one);
    let step = b.select(neg, up, dn);
    let tiny_neg = c(b, -0x7FFF);
    let step = b.select(is_zero, tiny_neg, step);
    b.select(above, step, h)
}

/// Bits of the smallest f16 not below `x` (clamped to the finite range).
pub(crate) fn f16_up(b: &mut Builder, x: V) -> V {
    let x = clamp_finite(b, x);
    let h = f16_bits(b, x);
    let back = f16_to_f32(b, h);
    let below = b.cmpf("olt", back, x);
    let c = |b: &mut Builder, v: i64| b.ci(Ty::I16, v);
    let (sign, zero, one) = (c(b, -0x8000), c(b, 0), c(b, 1));
    let s = b.and(h, sign);
    let neg = b.cmpi("ne", s, zero);
    let is_negzero = b.cmpi("eq", h, sign);
    let up = b.add(h, one);
    let dn = b.sub(h, one);
    let step = b.select(neg, dn, up);
    let step = b.select(is_negzero, one, step);
    b.select(below, step, h)
}

/// A group's stored parameters: values and their f16 bits.
#[derive(Clone, Copy)]
pub(crate) struct Meta {
    pub min: V,
    pub scale: V,
    pub min_bits: V,
    pub scale_bits: V,
}

/// The meta of a group with extremes `lo`, `hi` at `levels` (`f32`).
pub(crate) fn meta(b: &mut Builder, lo: V, hi: V, levels: V) -> Meta {
    let min_bits = f16_down(b, lo);
    let min = f16_to_f32(b, min_bits);
    let d = b.fbin("subf", hi, min);
    let spread = b.fbin("divf", d, levels);
    let zero = b.cf(Ty::F32, 0.0);
    let pos = b.cmpf("ogt", spread, zero);
    let up = f16_up(b, spread);
    let z16 = b.ci(Ty::I16, 0);
    let scale_bits = b.select(pos, up, z16);
    let scale = f16_to_f32(b, scale_bits);
    Meta {
        min,
        scale,
        min_bits,
        scale_bits,
    }
}

/// Meta from a stored `(scale, min)` pair at byte offset `off` of `p`.
pub(crate) fn load_meta(b: &mut Builder, p: V, off: V) -> (V, V) {
    let scale = load_f16(b, p, off);
    let two = b.i64c(2);
    let at = b.add(off, two);
    let min = load_f16(b, p, at);
    (scale, min)
}

/// Stores `(scale, min)` at byte offset `off` of `p`.
pub(crate) fn store_meta(b: &mut Builder, p: V, off: V, m: &Meta) {
    store_i16(b, p, off, m.scale_bits);
    let two = b.i64c(2);
    let at = b.add(off, two);
    store_i16(b, p, at, m.min_bits);
}

/// The code of `x` (`i64`).
pub(crate) fn quantize(b: &mut Builder, math: &Math, x: V, m: &Meta, levels: V) -> V {
    let d = b.fbin("subf", x, m.min);
    let d = b.fbin("divf", d, m.scale);
    let half = b.cf(Ty::F32, 0.5);
    let d = b.fbin("addf", d, half);
    let q = math.floor(b, d);
    let zero = b.cf(Ty::F32, 0.0);
    let q = max_or(b, q, zero);
    let q = min_or(b, q, levels);
    let qi = b.conv("arith.fptoui", q, Ty::I64);
    let s0 = b.cmpf("oeq", m.scale, zero);
    let z = b.i64c(0);
    b.select(s0, z, qi)
}

/// `min + q·scale` for a code `q` (`i64`).
pub(crate) fn dequantize(b: &mut Builder, q: V, scale: V, min: V) -> V {
    let qf = b.conv("arith.uitofp", q, Ty::F32);
    let p = b.fbin("mulf", qf, scale);
    b.fbin("addf", min, p)
}

/// `llvm.alloca` of `n` f32s at the function's entry.
pub(crate) fn alloca_f32(b: &mut Builder, n: i64) -> V {
    b.in_prologue(|b| {
        let n = b.i64c(n);
        b.op(
            Ty::Ptr,
            &format!("llvm.alloca {n} x f32 {{alignment = 16 : i64}} : (i64) -> !llvm.ptr"),
        )
    })
}

/// The `(min, max)` of `tmp[0..n]` (NaNs skipped, the first of equal values kept).
pub(crate) fn min_max(cx: &mut Ctx, tmp: V, n: V) -> R<(V, V)> {
    let zero = cx.b.i64c(0);
    let one = cx.b.i64c(1);
    let inf = cx.b.cf(Ty::F32, f64::INFINITY);
    let ninf = cx.b.cf(Ty::F32, f64::NEG_INFINITY);
    let r = for_loop(cx, zero, n, one, &[inf, ninf], |cx, e, acc| {
        let p = cx.b.gep(tmp, e, Ty::F32);
        let x = cx.b.load(p, Ty::F32);
        let lo = min_or(&mut cx.b, x, acc[0]);
        let hi = max_or(&mut cx.b, x, acc[1]);
        Ok(vec![lo, hi])
    })?;
    Ok((r[0], r[1]))
}

/// The layout of a kernel's state from its keys' type `[seq, H, D]`.
pub(crate) fn layout_for(
    kernel: &str,
    spec: &kiln_ir::saq::SaqSpec,
    k: &kiln_ir::TensorType,
) -> R<SaqLayout> {
    let bad = |message: String| crate::error::CodegenError::BadSpec {
        kernel: kernel.to_string(),
        message,
    };
    let (Some(h), Some(d)) = (k.shape[1].as_const(), k.shape[2].as_const()) else {
        return Err(bad(format!(
            "SAQ heads and head size must be constants, got {k}"
        )));
    };
    SaqLayout::new(spec, h as usize, d as usize).map_err(|e| bad(e.to_string()))
}
