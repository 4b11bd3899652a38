//! Storage-level helpers: typed views of tensor data, conversion to the
//! compute types (`f64`, `i64`, `bool`) and back with rounding to the
//! declared type, and the storage rules of the two precisions.
//!
//! Rounding to f16 and bf16 is done here from `f64`, to nearest with ties to
//! even, in one step (`half`'s `from_f64` goes through f32 or drops low bits,
//! which can round a value near a tie the wrong way).

use super::error::InterpError;
use super::Precision;
use crate::tensor::{Tensor, TensorData};
use crate::types::DType;
use half::{bf16, f16};
use std::borrow::Cow;

/// One storage element type (one variant of [`TensorData`]).
pub(crate) trait Elem: Copy + 'static {
    fn view(d: &TensorData) -> Option<&[Self]>;
    fn wrap(v: Vec<Self>) -> TensorData;
}

macro_rules! elem {
    ($($t:ty => $var:ident),*) => {$(
        impl Elem for $t {
            fn view(d: &TensorData) -> Option<&[Self]> {
                match d {
                    TensorData::$var(x) => Some(x),
                    _ => None,
                }
            }
            fn wrap(v: Vec<Self>) -> TensorData {
                TensorData::$var(v)
            }
        }
    )*};
}
elem!(f32 => F32, f16 => F16, bf16 => BF16, f64 => F64, i32 => I32, i64 => I64,
      u8 => U8, i8 => I8, bool => Bool);

/// Evaluates `$body` with `$v` bound to the element slice of `$data`,
/// whatever its storage type (`$body` is generic in the element type).
macro_rules! with_slice {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::F32($v) => $body,
            TensorData::F16($v) => $body,
            TensorData::BF16($v) => $body,
            TensorData::F64($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::Bool($v) => $body,
        }
    };
}
pub(crate) use with_slice;

/// Calls `$f::<T>(args…)` with `T` the storage element type of `$data`.
macro_rules! dispatch {
    ($data:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $data {
            TensorData::F32(_) => $f::<f32>($($arg),*),
            TensorData::F16(_) => $f::<half::f16>($($arg),*),
            TensorData::BF16(_) => $f::<half::bf16>($($arg),*),
            TensorData::F64(_) => $f::<f64>($($arg),*),
            TensorData::I32(_) => $f::<i32>($($arg),*),
            TensorData::I64(_) => $f::<i64>($($arg),*),
            TensorData::U8(_) => $f::<u8>($($arg),*),
            TensorData::I8(_) => $f::<i8>($($arg),*),
            TensorData::Bool(_) => $f::<bool>($($arg),*),
        }
    };
}
pub(crate) use dispatch;

/// The element slice of `d` as `T`, or an error when its storage differs
/// (operands that must share a dtype).
pub(crate) fn view_as<'a, T: Elem>(d: &'a TensorData, what: &str) -> Result<&'a [T], InterpError> {
    T::view(d).ok_or_else(|| {
        InterpError::operands(format!(
            "{what} is stored as {}, unlike the first operand",
            storage_name(d)
        ))
    })
}

/// What a value computes in: the three arithmetic kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Float,
    Int,
    Bool,
}

pub(crate) fn kind(d: &TensorData) -> Kind {
    match d {
        TensorData::F32(_) | TensorData::F16(_) | TensorData::BF16(_) | TensorData::F64(_) => {
            Kind::Float
        }
        TensorData::Bool(_) => Kind::Bool,
        _ => Kind::Int,
    }
}

/// The storage's name: the dtype, or `f64` for double-precision storage.
pub(crate) fn storage_name(d: &TensorData) -> &'static str {
    match d {
        TensorData::F64(_) => "f64",
        d => d.dtype().name(),
    }
}

/// `f32[2,3]`-style description of a concrete tensor (`f64[..]` for f64 storage).
pub(crate) fn describe(t: &Tensor) -> String {
    let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    format!("{}[{}]", storage_name(&t.data), dims.join(","))
}

/// Does storage `d` hold a value of declared dtype `dtype` under `precision`?
/// Declared: exactly that dtype. F64: floats must be f64 storage; other
/// dtypes exactly.
pub(crate) fn storage_is(d: &TensorData, dtype: DType, precision: Precision) -> bool {
    match (precision, d) {
        (Precision::F64, TensorData::F64(_)) => dtype.is_float(),
        (Precision::F64, _) if dtype.is_float() => false,
        (_, TensorData::F64(_)) => false,
        (_, d) => d.dtype() == dtype,
    }
}

/// The name of the storage a value of `dtype` has under `precision`.
pub(crate) fn storage_name_for(dtype: DType, precision: Precision) -> &'static str {
    if precision == Precision::F64 && dtype.is_float() {
        "f64"
    } else {
        dtype.name()
    }
}

/// Converts float storage to f64 storage (other tensors unchanged).
pub(crate) fn to_f64_storage(t: Cow<'_, Tensor>) -> Cow<'_, Tensor> {
    match &t.data {
        TensorData::F32(_) | TensorData::F16(_) | TensorData::BF16(_) => Cow::Owned(Tensor {
            shape: t.shape.clone(),
            data: TensorData::F64(t.to_f64_vec()),
        }),
        _ => t,
    }
}

/// Elements as f64 (exact for every storage type except i64 beyond 2^53;
/// bools as 0/1).
pub(crate) fn floats(t: &Tensor) -> Cow<'_, [f64]> {
    match &t.data {
        TensorData::F64(v) => Cow::Borrowed(v),
        _ => Cow::Owned(t.to_f64_vec()),
    }
}

/// Elements of an integer or bool tensor as i64 (bools as 0/1; floats are
/// truncated, which callers never ask for).
pub(crate) fn ints(t: &Tensor) -> Cow<'_, [i64]> {
    match &t.data {
        TensorData::I64(v) => Cow::Borrowed(v),
        TensorData::Bool(v) => Cow::Owned(v.iter().map(|&b| b as i64).collect()),
        _ => Cow::Owned(
            t.to_i64_vec()
                .unwrap_or_else(|| floats(t).iter().map(|&x| x as i64).collect()),
        ),
    }
}

/// Rounds `x` to the binary format with `man` fraction bits and `exp`
/// exponent bits (IEEE layout, 1+exp+man ≤ 16), to nearest, ties to even;
/// overflow gives infinity, NaN a quiet NaN of the same sign.
fn round_small(x: f64, man: u32, exp: u32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 63) as u16) << 15;
    let inf = (((1u32 << exp) - 1) << man) as u16;
    if x.is_nan() {
        return sign | inf | (1 << (man - 1));
    }
    if x.is_infinite() {
        return sign | inf;
    }
    if x == 0.0 {
        return sign;
    }
    let bias = (1i64 << (exp - 1)) - 1;
    let emin = 1 - bias;
    let e_field = ((bits >> 52) & 0x7ff) as i64;
    let frac = bits & ((1u64 << 52) - 1);
    // |x| = m · 2^(e-52) with m < 2^53.
    let (e, m) = if e_field == 0 {
        (-1022, frac)
    } else {
        (e_field - 1023, frac | (1u64 << 52))
    };
    // Keep `man` fraction bits for normals; fewer (a fixed exponent) for subnormals.
    let shift = 52 - man as i64 + (emin - e).max(0);
    let q = if shift >= 64 {
        0
    } else {
        round_shift(m, shift as u32)
    };
    let r: u64 = if e >= emin {
        // q ∈ [2^man, 2^(man+1)]; a carry out of the fraction bumps the exponent.
        (((e + bias) as u64) << man) + q - (1u64 << man)
    } else {
        // A subnormal; q = 2^man is exactly the smallest normal's encoding.
        q
    };
    if r >= inf as u64 {
        sign | inf
    } else {
        sign | r as u16
    }
}

/// `m / 2^s` rounded to nearest, ties to even (`1 ≤ s < 64`).
fn round_shift(m: u64, s: u32) -> u64 {
    let q = m >> s;
    let rem = m & ((1u64 << s) - 1);
    let half = 1u64 << (s - 1);
    if rem > half || (rem == half && q & 1 == 1) {
        q + 1
    } else {
        q
    }
}

/// `x` rounded to the nearest f16 (ties to even), in one step from f64.
pub fn round_f16(x: f64) -> f16 {
    f16::from_bits(round_small(x, 10, 5))
}

/// `x` rounded to the nearest bf16 (ties to even), in one step from f64.
pub fn round_bf16(x: f64) -> bf16 {
    bf16::from_bits(round_small(x, 7, 8))
}

/// Significand bits (with the implicit one) of a float dtype.
fn precision_bits(dtype: DType) -> u32 {
    match dtype {
        DType::F16 => 11,
        DType::BF16 => 8,
        _ => 24,
    }
}

/// An integer rounded to `bits` significant bits, ties to even — exactly,
/// with no detour through a rounded f64 (which could round twice).
fn round_int(v: i64, bits: u32) -> f64 {
    let a = v.unsigned_abs();
    let width = 64 - a.leading_zeros();
    let mag = if width <= bits {
        a as f64
    } else {
        let shift = width - bits;
        round_shift(a, shift) as f64 * (shift as f64).exp2()
    };
    if v < 0 {
        -mag
    } else {
        mag
    }
}

/// A float tensor of declared `dtype` from f64 values: f64 storage in F64
/// precision, else each value rounded to `dtype`.
pub(crate) fn float_tensor(dtype: DType, shape: Vec<usize>, v: Vec<f64>, p: Precision) -> Tensor {
    let data = if p == Precision::F64 {
        TensorData::F64(v)
    } else {
        match dtype {
            DType::F16 => TensorData::F16(v.into_iter().map(round_f16).collect()),
            DType::BF16 => TensorData::BF16(v.into_iter().map(round_bf16).collect()),
            _ => TensorData::F32(v.into_iter().map(|x| x as f32).collect()),
        }
    };
    Tensor { shape, data }
}

/// A float tensor of declared `dtype` from integers, rounded once to the type.
pub(crate) fn float_tensor_from_ints(
    dtype: DType,
    shape: Vec<usize>,
    v: &[i64],
    p: Precision,
) -> Tensor {
    let vals = if p == Precision::F64 {
        v.iter().map(|&x| x as f64).collect()
    } else {
        let bits = precision_bits(dtype);
        v.iter().map(|&x| round_int(x, bits)).collect()
    };
    float_tensor(dtype, shape, vals, p)
}

/// An integer tensor of `dtype` from i64 values, wrapped (two's complement)
/// to its width.
pub(crate) fn int_tensor(dtype: DType, shape: Vec<usize>, v: Vec<i64>) -> Tensor {
    let data = match dtype {
        DType::I32 => TensorData::I32(v.into_iter().map(|x| x as i32).collect()),
        DType::U8 => TensorData::U8(v.into_iter().map(|x| x as u8).collect()),
        DType::I8 => TensorData::I8(v.into_iter().map(|x| x as i8).collect()),
        DType::Bool => TensorData::Bool(v.into_iter().map(|x| x != 0).collect()),
        _ => TensorData::I64(v),
    };
    Tensor { shape, data }
}

/// Float to integer: truncation toward zero, saturating at the type's
/// range, NaN to 0 (Rust's `as`, applied in the target width).
pub(crate) fn float_to_int(dtype: DType, x: f64) -> i64 {
    match dtype {
        DType::I32 => x as i32 as i64,
        DType::U8 => x as u8 as i64,
        DType::I8 => x as i8 as i64,
        DType::Bool => (x != 0.0) as i64,
        _ => x as i64,
    }
}

/// The smallest and largest value of an integer dtype.
pub(crate) fn int_range(dtype: DType) -> (i64, i64) {
    match dtype {
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::U8 => (0, u8::MAX as i64),
        DType::I8 => (i8::MIN as i64, i8::MAX as i64),
        _ => (i64::MIN, i64::MAX),
    }
}

/// A one-element tensor with the storage of `like` holding `v`, converted
/// as `cast` would (rounded float, saturated integer, `v != 0` for bool).
pub(crate) fn scalar_like(like: &TensorData, v: f64, p: Precision) -> TensorData {
    match kind(like) {
        Kind::Float => {
            let precision = if matches!(like, TensorData::F64(_)) {
                Precision::F64
            } else {
                p
            };
            float_tensor(like.dtype(), vec![], vec![v], precision).data
        }
        Kind::Bool => TensorData::Bool(vec![v != 0.0]),
        Kind::Int => {
            let dtype = like.dtype();
            int_tensor(dtype, vec![], vec![float_to_int(dtype, v)]).data
        }
    }
}

/// An empty tensor of declared `dtype` with the storage of `precision`.
pub(crate) fn empty_tensor(dtype: DType, shape: Vec<usize>, p: Precision) -> Tensor {
    if dtype.is_float() {
        float_tensor(dtype, shape, Vec::new(), p)
    } else {
        int_tensor(dtype, shape, Vec::new())
    }
}

/// The concrete type of a result: declared dtype and evaluated shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Out {
    pub dtype: DType,
    pub shape: Vec<usize>,
}
