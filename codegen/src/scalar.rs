//! Scalar semantics: how one element of each dtype lives in registers and
//! memory, and every element-wise op on registers, matching the reference
//! interpreter.
//!
//! Registers: floats (f32, f16, bf16) compute in `f32` and are rounded to
//! their dtype after each op; `i32`/`i64` as themselves; `u8`/`i8` as `i8`
//! (signedness picks the instruction); `bool` as `i1` (one byte in memory).

use crate::builder::{Builder, Ty, R, V};
use crate::error::CodegenError;
use crate::math::Math;
use kiln_ir::{BinaryOp, CmpOp, DType, UnaryOp};

/// The register type of an element of `d`.
pub fn reg_ty(d: DType) -> Ty {
    match d {
        DType::F32 | DType::F16 | DType::BF16 => Ty::F32,
        DType::I32 => Ty::I32,
        DType::I64 => Ty::I64,
        DType::U8 | DType::I8 => Ty::I8,
        DType::Bool => Ty::I1,
    }
}

/// The memory type of an element of `d` (`f16`/`bf16` are moved as raw
/// `i16` bits and converted with integer ops: LLVM's `half` on x86 becomes
/// libcalls and compiles slowly).
pub fn mem_ty(d: DType) -> Ty {
    match d {
        DType::F32 => Ty::F32,
        DType::F16 | DType::BF16 => Ty::I16,
        DType::I32 => Ty::I32,
        DType::I64 => Ty::I64,
        DType::U8 | DType::I8 | DType::Bool => Ty::I8,
    }
}

/// Loads element `i` of a buffer of `d` into a register.
pub fn load(b: &mut Builder, ptr: V, i: V, d: DType) -> V {
    let mt = mem_ty(d);
    let p = b.gep(ptr, i, mt);
    let raw = b.load(p, mt);
    match d {
        DType::F16 => f16_to_f32(b, raw),
        DType::BF16 => {
            let w = b.conv("arith.extui", raw, Ty::I32);
            let sixteen = b.ci(Ty::I32, 16);
            let s = b.bin("shli", w, sixteen);
            b.conv("arith.bitcast", s, Ty::F32)
        }
        DType::Bool => {
            let zero = b.ci(Ty::I8, 0);
            b.cmpi("ne", raw, zero)
        }
        _ => raw,
    }
}

/// Stores a register value as element `i` of a buffer of `d`.
pub fn store(b: &mut Builder, ptr: V, i: V, d: DType, v: V) {
    let mt = mem_ty(d);
    let raw = match d {
        DType::F16 => f16_bits(b, v),
        DType::BF16 => bf16_bits(b, v),
        DType::Bool => b.conv("arith.extui", v, Ty::I8),
        _ => v,
    };
    let p = b.gep(ptr, i, mt);
    b.store(raw, p);
}

/// Round-to-nearest-even `f32 -> bf16` bits (NaN stays a quiet NaN).
fn bf16_bits(b: &mut Builder, v: V) -> V {
    let bits = b.conv("arith.bitcast", v, Ty::I32);
    let sixteen = b.ci(Ty::I32, 16);
    let one = b.ci(Ty::I32, 1);
    let hi = b.bin("shrui", bits, sixteen);
    let lsb = b.and(hi, one);
    let bias = b.ci(Ty::I32, 0x7FFF);
    let r = b.add(bits, bias);
    let r = b.add(r, lsb);
    let r = b.bin("shrui", r, sixteen);
    let qnan = b.ci(Ty::I32, 0x40);
    let nan_bits = b.bin("ori", hi, qnan);
    let isnan = b.cmpf("uno", v, v);
    let r = b.select(isnan, nan_bits, r);
    b.conv("arith.trunci", r, Ty::I16)
}

/// IEEE half bits (`i16`) to `f32`: normals rebias the exponent, inf/NaN
/// keep their payload, subnormals are `mantissa · 2^-24` (exact in f32).
pub(crate) fn f16_to_f32(b: &mut Builder, h: V) -> V {
    let u = b.conv("arith.extui", h, Ty::I32);
    let c = |b: &mut Builder, v: i64| b.ci(Ty::I32, v);
    let (m8000, m3ff, m1f) = (c(b, 0x8000), c(b, 0x3FF), c(b, 0x1F));
    let (ten, thirteen, sixteen, twenty3) = (c(b, 10), c(b, 13), c(b, 16), c(b, 23));
    let sign = b.and(u, m8000);
    let sign = b.bin("shli", sign, sixteen);
    let e = b.bin("shrui", u, ten);
    let e = b.and(e, m1f);
    let man = b.and(u, m3ff);
    let man13 = b.bin("shli", man, thirteen);
    let bias = c(b, 112);
    let e32 = b.add(e, bias);
    let e32 = b.bin("shli", e32, twenty3);
    let normal = b.bin("ori", e32, man13);
    let infnan = c(b, 0x7F80_0000);
    let infnan = b.bin("ori", infnan, man13);
    let mf = b.conv("arith.sitofp", man, Ty::F32);
    let scale = b.cf(Ty::F32, 2f64.powi(-24));
    let sub = b.fbin("mulf", mf, scale);
    let sub = b.conv("arith.bitcast", sub, Ty::I32);
    let zero = c(b, 0);
    let is_sub = b.cmpi("eq", e, zero);
    let is_max = b.cmpi("eq", e, m1f);
    let r = b.select(is_max, infnan, normal);
    let r = b.select(is_sub, sub, r);
    let r = b.bin("ori", r, sign);
    b.conv("arith.bitcast", r, Ty::F32)
}

/// Round-to-nearest-even `f32 -> f16` bits (`i16`) with integer and one
/// float op: overflow to inf, NaN to a quiet NaN, subnormals rounded by an
/// add of a magic constant (the FPU does the rounding).
pub(crate) fn f16_bits(b: &mut Builder, v: V) -> V {
    let c = |b: &mut Builder, v: i64| b.ci(Ty::I32, v);
    let bits = b.conv("arith.bitcast", v, Ty::I32);
    let sign_mask = c(b, 0x8000_0000u32 as i32 as i64);
    let sign = b.and(bits, sign_mask);
    let f = b.bin("xori", bits, sign);
    let f16max = c(b, (127 + 16) << 23);
    let f32inf = c(b, 255 << 23);
    let min_normal = c(b, 113 << 23);
    let denorm_magic = c(b, ((127 - 15) + (23 - 10) + 1) << 23);
    // Overflow, inf and NaN.
    let (qnan, inf) = (c(b, 0x7E00), c(b, 0x7C00));
    let is_nan = b.cmpi("ugt", f, f32inf);
    let big = b.select(is_nan, qnan, inf);
    // Subnormal results: add 0.5 (as the magic) and read the low bits.
    let ff = b.conv("arith.bitcast", f, Ty::F32);
    let magic_f = b.conv("arith.bitcast", denorm_magic, Ty::F32);
    let sum = b.fbin("addf", ff, magic_f);
    let sum = b.conv("arith.bitcast", sum, Ty::I32);
    let small = b.sub(sum, denorm_magic);
    // Normal results: rebias and round to nearest even.
    let thirteen = c(b, 13);
    let one = c(b, 1);
    let odd = b.bin("shrui", f, thirteen);
    let odd = b.and(odd, one);
    let rebias = c(b, (((15 - 127) << 23) + 0xFFF) as i64);
    let n = b.add(f, rebias);
    let n = b.add(n, odd);
    let normal = b.bin("shrui", n, thirteen);
    let is_big = b.cmpi("uge", f, f16max);
    let is_small = b.cmpi("ult", f, min_normal);
    let o = b.select(is_small, small, normal);
    let o = b.select(is_big, big, o);
    let sixteen = c(b, 16);
    let s16 = b.bin("shrui", sign, sixteen);
    let o = b.bin("ori", o, s16);
    b.conv("arith.trunci", o, Ty::I16)
}

/// Rounds an f32 register to the precision of the float dtype `d`.
pub fn round(b: &mut Builder, v: V, d: DType) -> V {
    match d {
        DType::F16 => {
            let h = f16_bits(b, v);
            f16_to_f32(b, h)
        }
        DType::BF16 => {
            let h = bf16_bits(b, v);
            let w = b.conv("arith.extui", h, Ty::I32);
            let sixteen = b.ci(Ty::I32, 16);
            let s = b.bin("shli", w, sixteen);
            b.conv("arith.bitcast", s, Ty::F32)
        }
        _ => v,
    }
}

/// A register constant of dtype `d`.
pub fn constant(b: &mut Builder, d: DType, value: f64) -> V {
    match d {
        DType::F32 | DType::F16 | DType::BF16 => b.cf(Ty::F32, value),
        DType::Bool => b.ci(Ty::I1, (value != 0.0) as i64),
        _ => {
            let v = kiln_ir::literal::wrap_int(d, value as i64);
            b.ci(reg_ty(d), v)
        }
    }
}

/// Element-wise ops on registers for one kernel (names it in errors).
#[derive(Clone, Copy)]
pub struct Scalar<'a> {
    pub kernel: &'a str,
    pub math: Math,
}

impl Scalar<'_> {
    fn bad(&self, op: &str, d: DType) -> CodegenError {
        CodegenError::UnsupportedDType {
            kernel: self.kernel.to_string(),
            op: op.to_string(),
            dtype: d,
        }
    }

    pub fn unary(&self, b: &mut Builder, u: UnaryOp, x: V, d: DType) -> R<V> {
        if !d.is_float() {
            return match (u, d) {
                (UnaryOp::Not, DType::Bool) => {
                    let t = b.ci(Ty::I1, 1);
                    Ok(b.bin("xori", x, t))
                }
                (UnaryOp::Neg, _) if d != DType::Bool => {
                    let z = b.ci(x.ty, 0);
                    Ok(b.sub(z, x))
                }
                (UnaryOp::Abs, DType::U8) => Ok(x),
                (UnaryOp::Abs, _) if d != DType::Bool => {
                    let z = b.ci(x.ty, 0);
                    let n = b.sub(z, x);
                    let neg = b.cmpi("slt", x, z);
                    Ok(b.select(neg, n, x))
                }
                _ => Err(self.bad(u.name(), d)),
            };
        }
        let m = self.math;
        let one = b.cf(Ty::F32, 1.0);
        let r = match u {
            UnaryOp::Neg => b.pure(Ty::F32, format!("arith.negf {x} : f32")),
            UnaryOp::Abs => m.fabs(b, x),
            UnaryOp::Exp => m.exp(b, x),
            UnaryOp::Log => m.log(b, x),
            UnaryOp::Sqrt => m.sqrt(b, x),
            UnaryOp::Rsqrt => {
                let s = m.sqrt(b, x);
                b.fbin("divf", one, s)
            }
            UnaryOp::Recip => b.fbin("divf", one, x),
            UnaryOp::Sin => m.sin(b, x),
            UnaryOp::Cos => m.cos(b, x),
            UnaryOp::Tanh => m.tanh(b, x),
            UnaryOp::Sigmoid => m.sigmoid(b, x),
            UnaryOp::Silu => {
                let s = m.sigmoid(b, x);
                b.fbin("mulf", x, s)
            }
            UnaryOp::Gelu => {
                // x·Φ(x) = x/2 · erfc(-x/√2): the negative tail keeps its relative accuracy.
                let c = b.cf(Ty::F32, -std::f64::consts::FRAC_1_SQRT_2);
                let half = b.cf(Ty::F32, 0.5);
                let t = b.fbin("mulf", x, c);
                let e = m.erfc(b, t);
                let hx = b.fbin("mulf", half, x);
                b.fbin("mulf", hx, e)
            }
            UnaryOp::GeluTanh => {
                // x/2 * (1 + tanh(√(2/π) (x + 0.044715 x³)))
                let c = b.cf(Ty::F32, (2.0 / std::f64::consts::PI).sqrt());
                let k = b.cf(Ty::F32, 0.044715);
                let half = b.cf(Ty::F32, 0.5);
                let x2 = b.fbin("mulf", x, x);
                let x3 = b.fbin("mulf", x2, x);
                let kx3 = b.fbin("mulf", k, x3);
                let inner = b.fbin("addf", x, kx3);
                let arg = b.fbin("mulf", c, inner);
                let t = m.tanh(b, arg);
                let p = b.fbin("addf", one, t);
                let hx = b.fbin("mulf", half, x);
                b.fbin("mulf", hx, p)
            }
            UnaryOp::Softplus => m.softplus(b, x),
            UnaryOp::Floor => m.floor(b, x),
            UnaryOp::Not => return Err(self.bad(u.name(), d)),
        };
        Ok(round(b, r, d))
    }

    pub fn binary(&self, b: &mut Builder, op: BinaryOp, x: V, y: V, d: DType) -> R<V> {
        if d.is_float() {
            let r = match op {
                BinaryOp::Add => b.fbin("addf", x, y),
                BinaryOp::Sub => b.fbin("subf", x, y),
                BinaryOp::Mul => b.fbin("mulf", x, y),
                BinaryOp::Div => b.fbin("divf", x, y),
                BinaryOp::Max => b.fbin("maximumf", x, y),
                BinaryOp::Min => b.fbin("minimumf", x, y),
                BinaryOp::Pow => self.math.pow(b, x, y),
                BinaryOp::And | BinaryOp::Or => return Err(self.bad(op.name(), d)),
            };
            return Ok(round(b, r, d));
        }
        if d == DType::Bool {
            return match op {
                BinaryOp::And => Ok(b.bin("andi", x, y)),
                BinaryOp::Or => Ok(b.bin("ori", x, y)),
                _ => Err(self.bad(op.name(), d)),
            };
        }
        let unsigned = d == DType::U8;
        Ok(match op {
            BinaryOp::Add => b.bin("addi", x, y),
            BinaryOp::Sub => b.bin("subi", x, y),
            BinaryOp::Mul => b.bin("muli", x, y),
            BinaryOp::Div => int_div(b, x, y, unsigned),
            BinaryOp::Max => b.bin(if unsigned { "maxui" } else { "maxsi" }, x, y),
            BinaryOp::Min => b.bin(if unsigned { "minui" } else { "minsi" }, x, y),
            BinaryOp::Pow | BinaryOp::And | BinaryOp::Or => return Err(self.bad(op.name(), d)),
        })
    }

    pub fn compare(&self, b: &mut Builder, op: CmpOp, x: V, y: V, d: DType) -> V {
        if d.is_float() {
            let p = match op {
                CmpOp::Eq => "oeq",
                CmpOp::Ne => "une",
                CmpOp::Lt => "olt",
                CmpOp::Le => "ole",
                CmpOp::Gt => "ogt",
                CmpOp::Ge => "oge",
            };
            return b.cmpf(p, x, y);
        }
        let unsigned = matches!(d, DType::U8 | DType::Bool);
        let p = match (op, unsigned) {
            (CmpOp::Eq, _) => "eq",
            (CmpOp::Ne, _) => "ne",
            (CmpOp::Lt, false) => "slt",
            (CmpOp::Le, false) => "sle",
            (CmpOp::Gt, false) => "sgt",
            (CmpOp::Ge, false) => "sge",
            (CmpOp::Lt, true) => "ult",
            (CmpOp::Le, true) => "ule",
            (CmpOp::Gt, true) => "ugt",
            (CmpOp::Ge, true) => "uge",
        };
        b.cmpi(p, x, y)
    }

    /// `cast` from `from` to `to` (float to int truncates toward zero and
    /// saturates, NaN gives 0; to bool is `!= 0`; int to int wraps).
    pub fn cast(&self, b: &mut Builder, x: V, from: DType, to: DType) -> V {
        if from == to {
            return x;
        }
        let rt = reg_ty(to);
        if to == DType::Bool {
            return if from.is_float() {
                let z = b.cf(Ty::F32, 0.0);
                b.cmpf("une", x, z)
            } else {
                let z = b.ci(x.ty, 0);
                b.cmpi("ne", x, z)
            };
        }
        if from == DType::Bool {
            return if to.is_float() {
                b.conv("arith.uitofp", x, Ty::F32)
            } else {
                b.conv("arith.extui", x, rt)
            };
        }
        match (from.is_float(), to.is_float()) {
            (true, true) => round(b, x, to),
            (false, true) => {
                let name = if from == DType::U8 {
                    "arith.uitofp"
                } else {
                    "arith.sitofp"
                };
                let f = b.conv(name, x, Ty::F32);
                round(b, f, to)
            }
            (true, false) => float_to_int(b, self.math, x, to),
            (false, false) => {
                let (fb, tb) = (x.ty.bits(), rt.bits());
                if tb < fb {
                    b.conv("arith.trunci", x, rt)
                } else if tb > fb {
                    let name = if from == DType::U8 {
                        "arith.extui"
                    } else {
                        "arith.extsi"
                    };
                    b.conv(name, x, rt)
                } else {
                    x
                }
            }
        }
    }
}

/// Integer division truncating toward zero; `x / 0 = 0` and `MIN / -1`
/// wraps to `MIN` (LLVM would trap or leave them undefined).
fn int_div(b: &mut Builder, x: V, y: V, unsigned: bool) -> V {
    let z = b.ci(x.ty, 0);
    let one = b.ci(x.ty, 1);
    let is_zero = b.cmpi("eq", y, z);
    if unsigned {
        let safe = b.select(is_zero, one, y);
        let q = b.bin("divui", x, safe);
        return b.select(is_zero, z, q);
    }
    let minus1 = b.ci(x.ty, -1);
    let is_m1 = b.cmpi("eq", y, minus1);
    let bad = b.bin("ori", is_zero, is_m1);
    let safe = b.select(bad, one, y);
    let q = b.bin("divsi", x, safe);
    let neg = b.sub(z, x);
    let q = b.select(is_m1, neg, q);
    b.select(is_zero, z, q)
}

/// Saturating float -> int conversion, NaN -> 0 (Rust's `as`).
fn float_to_int(b: &mut Builder, m: Math, x: V, to: DType) -> V {
    let rt = reg_ty(to);
    let (lo, hi, min, max): (f64, f64, i64, i64) = match to {
        DType::I32 => (
            -2147483648.0,
            2147483648.0,
            i32::MIN as i64,
            i32::MAX as i64,
        ),
        DType::I64 => (
            -9223372036854775808.0,
            9223372036854775808.0,
            i64::MIN,
            i64::MAX,
        ),
        DType::I8 => (-128.0, 128.0, -128, 127),
        DType::U8 => (0.0, 256.0, 0, 255),
        _ => unreachable!("float_to_int to {to}"),
    };
    let conv = if to == DType::U8 {
        "arith.fptoui"
    } else {
        "arith.fptosi"
    };
    // Truncate first so values in (lo-1, lo) still convert (e.g. -0.5 -> 0 for u8).
    let t = m.trunc(b, x);
    let v = b.conv(conv, t, rt);
    let (flo, fhi) = (b.cf(Ty::F32, lo), b.cf(Ty::F32, hi));
    let (cmin, cmax, zero) = (b.ci(rt, min), b.ci(rt, max), b.ci(rt, 0));
    let below = b.cmpf("olt", t, flo);
    let above = b.cmpf("oge", t, fhi);
    let nan = b.cmpf("uno", x, x);
    let v = b.select(below, cmin, v);
    let v = b.select(above, cmax, v);
    b.select(nan, zero, v)
}
