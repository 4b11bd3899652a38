//! Min–max group quantization (KIVI's asymmetric scheme) and code packing.
//!
//! All arithmetic is f32 in a fixed order, so compiled kernels reproduce
//! the interpreter's codes bit for bit:
//!
//! ```text
//! m     = f16 rounded down from min(x)            (stored)
//! s     = f16 rounded up from (max(x) - m) / L    (stored; L = 2^b - 1)
//! q(x)  = min(max(floor((x - m) / s + 0.5), 0), L)   (0 when s = 0)
//! x'    = m + q · s
//! ```
//!
//! Rounding `m` down and `s` up makes the stored grid `m … m + L·s` cover
//! the group, so `|x - x'| <= s/2` (up to f32 rounding) and the group's
//! extremes take codes `0` and `L`; requantizing `x'` at the same width
//! then finds the same `m` and `s` and the same codes (idempotent), unless
//! the group's spread is below about `|m|·2^-9`, where the f16 rounding of
//! `m` itself exceeds half a step. Stored values are clamped to finite f16.

use half::f16;

/// The largest finite f16.
const F16_MAX: f32 = 65504.0;

/// `a` if `a > b`, else `b` (so a NaN `a` gives `b`; equal values give
/// `b`): one compare and select, as the kernels compute it, with no
/// freedom in the sign of a zero.
fn max_or(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `a` if `a < b`, else `b`.
fn min_or(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

/// `x` clamped to the finite f16 range (a NaN becomes -65504).
fn clamp_finite(x: f32) -> f32 {
    min_or(max_or(x, -F16_MAX), F16_MAX)
}

/// The largest f16 not above `x`, clamped to the finite range first (a NaN
/// becomes -65504).
pub fn f16_down(x: f32) -> f16 {
    let x = clamp_finite(x);
    let h = f16::from_f32(x);
    if h.to_f32() > x {
        let b = h.to_bits();
        // Next f16 towards -inf: +0 goes to the smallest negative
        // subnormal, a negative value grows in magnitude, a positive shrinks.
        f16::from_bits(if b == 0 {
            0x8001
        } else if b & 0x8000 != 0 {
            b + 1
        } else {
            b - 1
        })
    } else {
        h
    }
}

/// The smallest f16 not below `x`, clamped to the finite range first.
pub fn f16_up(x: f32) -> f16 {
    let x = clamp_finite(x);
    let h = f16::from_f32(x);
    if h.to_f32() < x {
        let b = h.to_bits();
        f16::from_bits(if b == 0x8000 {
            0x0001
        } else if b & 0x8000 != 0 {
            b - 1
        } else {
            b + 1
        })
    } else {
        h
    }
}

/// A group's stored quantization parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupMeta {
    pub scale: f16,
    pub min: f16,
}

impl GroupMeta {
    /// The 4 stored bytes: scale then min, little-endian f16s.
    pub fn to_bytes(self) -> [u8; 4] {
        let s = self.scale.to_le_bytes();
        let m = self.min.to_le_bytes();
        [s[0], s[1], m[0], m[1]]
    }
    pub fn from_bytes(b: &[u8]) -> GroupMeta {
        GroupMeta {
            scale: f16::from_le_bytes([b[0], b[1]]),
            min: f16::from_le_bytes([b[2], b[3]]),
        }
    }
}

/// The largest code of `bits` bits, `L = 2^b - 1`.
pub fn levels(bits: u32) -> u32 {
    (1u32 << bits) - 1
}

/// The meta of a group of values at `bits` bits.
pub fn group_meta(values: impl IntoIterator<Item = f32>, bits: u32) -> GroupMeta {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for x in values {
        // NaNs are skipped; of equal values (±0) the first is kept.
        lo = min_or(x, lo);
        hi = max_or(x, hi);
    }
    let min = f16_down(lo);
    let spread = (hi - min.to_f32()) / levels(bits) as f32;
    let scale = if spread > 0.0 {
        f16_up(spread)
    } else {
        f16::ZERO
    };
    GroupMeta { scale, min }
}

/// The code of `x` in a group with `meta`.
pub fn quantize(x: f32, meta: GroupMeta, bits: u32) -> u8 {
    let s = meta.scale.to_f32();
    if s == 0.0 {
        return 0;
    }
    let q = ((x - meta.min.to_f32()) / s + 0.5).floor();
    // Lower bound first: a NaN becomes code 0.
    min_or(max_or(q, 0.0), levels(bits) as f32) as u8
}

/// The value of code `q` in a group with `meta`.
pub fn dequantize(q: u8, meta: GroupMeta) -> f32 {
    meta.min.to_f32() + q as f32 * meta.scale.to_f32()
}

/// Code `i` of `bits` bits from packed bytes.
pub fn get_code(bytes: &[u8], i: usize, bits: u32) -> u8 {
    let bit = i * bits as usize;
    (bytes[bit / 8] >> (bit % 8)) & levels(bits) as u8
}

/// Stores code `i` of `bits` bits into packed bytes.
pub fn set_code(bytes: &mut [u8], i: usize, bits: u32, q: u8) {
    let bit = i * bits as usize;
    let mask = (levels(bits) as u8) << (bit % 8);
    let b = &mut bytes[bit / 8];
    *b = (*b & !mask) | ((q << (bit % 8)) & mask);
}
