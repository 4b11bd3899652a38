//! Transcendental functions on `f32` registers.
//!
//! On the CPU they are `math` dialect ops, which lower to LLVM intrinsics or
//! libm calls resolved in-process. On the GPU, `convert-gpu-to-nvvm` would
//! turn `math` ops into libdevice calls (`__nv_expf`) that ptxas cannot
//! resolve without linking libdevice, so the portable flavor builds every
//! function from a few primitives that are NVVM intrinsics there (`ex2`,
//! `lg2`, `sin`, `cos` approximations, correctly rounded `sqrt`) plus
//! generic LLVM intrinsics (`floor`, `trunc`, `fabs`) that the NVPTX backend
//! selects to single instructions. The same formulas can run on the CPU
//! (primitives mapped to `math` ops) so they are tested against the
//! interpreter without a GPU.

use crate::builder::{Builder, Ty, V};
use crate::target::MathFlavor;
use std::f64::consts::{LN_2, LOG2_E, PI};

#[derive(Clone, Copy, Debug)]
pub struct Math {
    pub flavor: MathFlavor,
}

impl Math {
    fn math_op(&self, b: &mut Builder, name: &str, x: V) -> V {
        b.pure(Ty::F32, format!("math.{name} {x} : f32"))
    }

    /// A primitive: an NVVM / LLVM intrinsic on the GPU, a `math` op on the CPU.
    fn prim(&self, b: &mut Builder, p: Prim, x: V) -> V {
        match self.flavor {
            MathFlavor::Portable { nvvm: true } => {
                let intr = match p {
                    Prim::Ex2 => "llvm.nvvm.ex2.approx.f32",
                    Prim::Lg2 => "llvm.nvvm.lg2.approx.f",
                    Prim::Sin => "llvm.nvvm.sin.approx.f",
                    Prim::Cos => "llvm.nvvm.cos.approx.f",
                    Prim::Sqrt => "llvm.nvvm.sqrt.rn.f",
                    Prim::Floor => "llvm.floor.f32",
                    Prim::Trunc => "llvm.trunc.f32",
                    Prim::Fabs => "llvm.fabs.f32",
                };
                b.pure(
                    Ty::F32,
                    format!("llvm.call_intrinsic \"{intr}\"({x}) : (f32) -> f32"),
                )
            }
            _ => {
                let name = match p {
                    Prim::Ex2 => "exp2",
                    Prim::Lg2 => "log2",
                    Prim::Sin => "sin",
                    Prim::Cos => "cos",
                    Prim::Sqrt => "sqrt",
                    Prim::Floor => "floor",
                    Prim::Trunc => "trunc",
                    Prim::Fabs => "absf",
                };
                self.math_op(b, name, x)
            }
        }
    }

    fn libm(&self) -> bool {
        self.flavor == MathFlavor::Libm
    }

    pub fn fabs(&self, b: &mut Builder, x: V) -> V {
        self.prim(b, Prim::Fabs, x)
    }
    pub fn floor(&self, b: &mut Builder, x: V) -> V {
        self.prim(b, Prim::Floor, x)
    }
    pub fn trunc(&self, b: &mut Builder, x: V) -> V {
        self.prim(b, Prim::Trunc, x)
    }
    pub fn sqrt(&self, b: &mut Builder, x: V) -> V {
        self.prim(b, Prim::Sqrt, x)
    }

    pub fn exp(&self, b: &mut Builder, x: V) -> V {
        if self.libm() {
            return self.exp_poly(b, x);
        }
        let l = b.cf(Ty::F32, LOG2_E);
        let t = b.fbin("mulf", x, l);
        self.prim(b, Prim::Ex2, t)
    }

    /// `e^x` without a libm call, so loops over it vectorize (libm's `expf`
    /// is a scalar call per element): `x = n·ln2 + r` with a two-part ln 2,
    /// Cephes' degree-6 polynomial for `e^r` on |r| ≤ ln2/2 (about 1 ulp),
    /// and `2^n` applied in two halves so results reach the subnormal range
    /// and overflow to inf exactly where `expf` does.
    fn exp_poly(&self, b: &mut Builder, x: V) -> V {
        let lo = b.cf(Ty::F32, -104.0);
        let hi = b.cf(Ty::F32, 89.0);
        let xc = b.fbin("maxnumf", x, lo);
        let xc = b.fbin("minnumf", xc, hi);
        let l2e = b.cf(Ty::F32, LOG2_E);
        let half = b.cf(Ty::F32, 0.5);
        let t = b.fbin("mulf", xc, l2e);
        let t = b.fbin("addf", t, half);
        let n = self.floor(b, t);
        let (c1, c2) = (b.cf(Ty::F32, 0.693359375), b.cf(Ty::F32, -2.12194440e-4));
        let a = b.fbin("mulf", n, c1);
        let r = b.fbin("subf", xc, a);
        let a = b.fbin("mulf", n, c2);
        let r = b.fbin("subf", r, a);
        let p = horner(
            b,
            r,
            &[
                1.9875691500e-4,
                1.3981999507e-3,
                8.3334519073e-3,
                4.1665795894e-2,
                1.6666665459e-1,
                5.0000001201e-1,
            ],
        );
        let r2 = b.fbin("mulf", r, r);
        let p = b.fbin("mulf", p, r2);
        let p = b.fbin("addf", p, r);
        let one = b.cf(Ty::F32, 1.0);
        let p = b.fbin("addf", p, one);
        let ni = b.conv("arith.fptosi", n, Ty::I32);
        let one_i = b.ci(Ty::I32, 1);
        let n1 = b.bin("shrsi", ni, one_i);
        let n2 = b.sub(ni, n1);
        let bias = b.ci(Ty::I32, 127);
        let sh = b.ci(Ty::I32, 23);
        let mut y = p;
        for k in [n1, n2] {
            let e = b.add(k, bias);
            let e = b.bin("shli", e, sh);
            let f = b.conv("arith.bitcast", e, Ty::F32);
            y = b.fbin("mulf", y, f);
        }
        let nan = b.cmpf("uno", x, x);
        b.select(nan, x, y)
    }

    pub fn log(&self, b: &mut Builder, x: V) -> V {
        if self.libm() {
            return self.math_op(b, "log", x);
        }
        let l = self.prim(b, Prim::Lg2, x);
        let ln2 = b.cf(Ty::F32, LN_2);
        b.fbin("mulf", l, ln2)
    }

    pub fn sin(&self, b: &mut Builder, x: V) -> V {
        if self.libm() {
            return self.math_op(b, "sin", x);
        }
        let r = self.reduce_2pi(b, x);
        self.prim(b, Prim::Sin, r)
    }

    pub fn cos(&self, b: &mut Builder, x: V) -> V {
        if self.libm() {
            return self.math_op(b, "cos", x);
        }
        let r = self.reduce_2pi(b, x);
        self.prim(b, Prim::Cos, r)
    }

    /// `x - 2π·round(x/2π)` with 2π split in two parts (Cody–Waite), so the
    /// approximate sine/cosine see an argument in [-π, π].
    fn reduce_2pi(&self, b: &mut Builder, x: V) -> V {
        let two_pi = 2.0 * PI;
        let hi = two_pi as f32 as f64;
        let lo = two_pi - hi;
        let inv = b.cf(Ty::F32, 1.0 / two_pi);
        let half = b.cf(Ty::F32, 0.5);
        let q = b.fbin("mulf", x, inv);
        let q = b.fbin("addf", q, half);
        let k = self.floor(b, q);
        let (chi, clo) = (b.cf(Ty::F32, hi), b.cf(Ty::F32, lo));
        let a = b.fbin("mulf", k, chi);
        let r = b.fbin("subf", x, a);
        let c = b.fbin("mulf", k, clo);
        b.fbin("subf", r, c)
    }

    pub fn tanh(&self, b: &mut Builder, x: V) -> V {
        if self.libm() {
            return self.math_op(b, "tanh", x);
        }
        // |x| < 0.125: odd Taylor polynomial (relative error < 1e-9);
        // otherwise sign(x)·(1 - 2/(e^{2|x|}+1)), which saturates to ±1.
        let a = self.fabs(b, x);
        let x2 = b.fbin("mulf", x, x);
        let p = horner(
            b,
            x2,
            &[62.0 / 2835.0, -17.0 / 315.0, 2.0 / 15.0, -1.0 / 3.0],
        );
        let px = b.fbin("mulf", p, x2);
        let px = b.fbin("mulf", px, x);
        let small = b.fbin("addf", x, px);
        let two = b.cf(Ty::F32, 2.0);
        let one = b.cf(Ty::F32, 1.0);
        let a2 = b.fbin("mulf", a, two);
        let e = self.exp(b, a2);
        let d = b.fbin("addf", e, one);
        let q = b.fbin("divf", two, d);
        let big = b.fbin("subf", one, q);
        let big = with_sign_of(b, big, x);
        let cut = b.cf(Ty::F32, 0.125);
        let is_small = b.cmpf("olt", a, cut);
        b.select(is_small, small, big)
    }

    /// `1/(1+e^-x)` for `x ≥ 0`, `e^x/(1+e^x)` otherwise (no overflow, and
    /// the negative tail keeps its relative accuracy).
    pub fn sigmoid(&self, b: &mut Builder, x: V) -> V {
        let one = b.cf(Ty::F32, 1.0);
        let zero = b.cf(Ty::F32, 0.0);
        let a = self.fabs(b, x);
        let na = b.pure(Ty::F32, format!("arith.negf {a} : f32"));
        let e = self.exp(b, na);
        let d = b.fbin("addf", one, e);
        let s = b.fbin("divf", one, d);
        let es = b.fbin("mulf", e, s);
        let pos = b.cmpf("oge", x, zero);
        b.select(pos, s, es)
    }

    /// `log(1 + e^x)` computed as `max(x, 0) + log1p(e^{-|x|})`.
    pub fn softplus(&self, b: &mut Builder, x: V) -> V {
        let zero = b.cf(Ty::F32, 0.0);
        let one = b.cf(Ty::F32, 1.0);
        let a = self.fabs(b, x);
        let na = b.pure(Ty::F32, format!("arith.negf {a} : f32"));
        let e = self.exp(b, na);
        let l = if self.libm() {
            self.math_op(b, "log1p", e)
        } else {
            // log(1+u) loses u's low bits when u is tiny; there log1p(u) ≈ u.
            let s = b.fbin("addf", one, e);
            let l = self.log(b, s);
            let tiny = b.cf(Ty::F32, 1e-4);
            let is_tiny = b.cmpf("olt", e, tiny);
            let half = b.cf(Ty::F32, 0.5);
            let e2 = b.fbin("mulf", e, e);
            let h = b.fbin("mulf", e2, half);
            let approx = b.fbin("subf", e, h);
            b.select(is_tiny, approx, l)
        };
        let m = b.fbin("maximumf", x, zero);
        b.fbin("addf", m, l)
    }

    /// The error function. Portable: Abramowitz & Stegun 7.1.26 (absolute
    /// error below 1.5e-7), sign restored.
    pub fn erf(&self, b: &mut Builder, x: V) -> V {
        if self.libm() {
            return self.math_op(b, "erf", x);
        }
        let one = b.cf(Ty::F32, 1.0);
        let a = self.fabs(b, x);
        let p = b.cf(Ty::F32, 0.3275911);
        let pa = b.fbin("mulf", p, a);
        let d = b.fbin("addf", one, pa);
        let t = b.fbin("divf", one, d);
        let poly = horner(
            b,
            t,
            &[
                1.061405429,
                -1.453152027,
                1.421413741,
                -0.284496736,
                0.254829592,
            ],
        );
        let poly = b.fbin("mulf", poly, t);
        let a2 = b.fbin("mulf", a, a);
        let na2 = b.pure(Ty::F32, format!("arith.negf {a2} : f32"));
        let e = self.exp(b, na2);
        let pe = b.fbin("mulf", poly, e);
        let y = b.fbin("subf", one, pe);
        with_sign_of(b, y, x)
    }

    /// The complementary error function `1 - erf(z)`.
    pub fn erfc(&self, b: &mut Builder, z: V) -> V {
        if self.libm() {
            // `math.erfc` has no LLVM lowering; call libm's directly.
            b.externs.insert("llvm.func @erfcf(f32) -> f32".to_string());
            return b.op(Ty::F32, &format!("llvm.call @erfcf({z}) : (f32) -> f32"));
        }
        let one = b.cf(Ty::F32, 1.0);
        let e = self.erf(b, z);
        b.fbin("subf", one, e)
    }

    /// `x^y`. Portable: `2^(y·log2|x|)` with the sign of a negative base
    /// restored for odd integer exponents (NaN for non-integer ones, as powf),
    /// and `x^0 = 1`.
    pub fn pow(&self, b: &mut Builder, x: V, y: V) -> V {
        if self.libm() {
            return b.pure(Ty::F32, format!("math.powf {x}, {y} : f32"));
        }
        let zero = b.cf(Ty::F32, 0.0);
        let one = b.cf(Ty::F32, 1.0);
        let half = b.cf(Ty::F32, 0.5);
        let nan = b.cf(Ty::F32, f64::NAN);
        let a = self.fabs(b, x);
        let l = self.prim(b, Prim::Lg2, a);
        let t = b.fbin("mulf", y, l);
        let mag = self.prim(b, Prim::Ex2, t);
        let yt = self.trunc(b, y);
        let is_int = b.cmpf("oeq", yt, y);
        let yh = b.fbin("mulf", y, half);
        let yht = self.trunc(b, yh);
        let is_even = b.cmpf("oeq", yht, yh);
        let neg_base = b.cmpf("olt", x, zero);
        let neg_mag = b.pure(Ty::F32, format!("arith.negf {mag} : f32"));
        let odd_sign = b.select(is_even, mag, neg_mag);
        let neg_res = b.select(is_int, odd_sign, nan);
        let r = b.select(neg_base, neg_res, mag);
        let y_zero = b.cmpf("oeq", y, zero);
        b.select(y_zero, one, r)
    }
}

#[derive(Clone, Copy)]
enum Prim {
    Ex2,
    Lg2,
    Sin,
    Cos,
    Sqrt,
    Floor,
    Trunc,
    Fabs,
}

/// `c0·t^{n-1} + … + c_{n-1}` by Horner's rule (coefficients highest first).
fn horner(b: &mut Builder, t: V, coefs: &[f64]) -> V {
    let mut acc = b.cf(Ty::F32, coefs[0]);
    for &c in &coefs[1..] {
        let m = b.fbin("mulf", acc, t);
        let k = b.cf(Ty::F32, c);
        acc = b.fbin("addf", m, k);
    }
    acc
}

/// `y` (non-negative) with the sign of `x` (`math.copysign` would become a
/// libdevice call on the GPU).
fn with_sign_of(b: &mut Builder, y: V, x: V) -> V {
    let zero = b.cf(Ty::F32, 0.0);
    let neg = b.cmpf("olt", x, zero);
    let ny = b.pure(Ty::F32, format!("arith.negf {y} : f32"));
    b.select(neg, ny, y)
}
