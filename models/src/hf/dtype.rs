//! Safetensors element types and their conversion to Kiln tensors.
//!
//! Floats of every width load as `f32` (models compute in f32 for now):
//! `F16` and `BF16` widen exactly, `F64` rounds to nearest (values beyond the
//! f32 range become ±inf, as `tensor.float()` does in PyTorch). Integers and
//! booleans keep their type; a `BOOL` byte is true when it is non-zero.

use kiln_ir::{DType, Tensor, TensorData};
use std::fmt;

/// An element type as stored in a safetensors file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    U8,
    I8,
    Bool,
}

/// Dtypes of the safetensors format that this loader recognizes but cannot
/// load (a typed "unsupported" error rather than "unknown").
pub(crate) const KNOWN_UNSUPPORTED: &[&str] = &[
    "I16", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64",
];

impl Dtype {
    pub const ALL: [Dtype; 9] = [
        Dtype::F64,
        Dtype::F32,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I64,
        Dtype::I32,
        Dtype::U8,
        Dtype::I8,
        Dtype::Bool,
    ];

    /// The name in a safetensors header (`"BF16"`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "F64",
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::Bool => "BOOL",
        }
    }

    pub fn from_name(s: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U8 | Dtype::I8 | Dtype::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F64 | Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }

    /// The Kiln dtype a tensor of this type loads as.
    pub fn loaded(self) -> DType {
        match self {
            Dtype::F64 | Dtype::F32 | Dtype::F16 | Dtype::BF16 => DType::F32,
            Dtype::I64 => DType::I64,
            Dtype::I32 => DType::I32,
            Dtype::U8 => DType::U8,
            Dtype::I8 => DType::I8,
            Dtype::Bool => DType::Bool,
        }
    }

    /// The stored type of an in-memory tensor's data (`F64` storage stays `F64`).
    pub fn of_data(data: &TensorData) -> Dtype {
        match data {
            TensorData::F64(_) => Dtype::F64,
            TensorData::F32(_) => Dtype::F32,
            TensorData::F16(_) => Dtype::F16,
            TensorData::BF16(_) => Dtype::BF16,
            TensorData::I64(_) => Dtype::I64,
            TensorData::I32(_) => Dtype::I32,
            TensorData::U8(_) => Dtype::U8,
            TensorData::I8(_) => Dtype::I8,
            TensorData::Bool(_) => Dtype::Bool,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn read<T, const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

/// Converts little-endian `bytes` of `dtype` to a Kiln tensor of
/// [`Dtype::loaded`] type. The caller has checked that `bytes` holds exactly
/// `shape.product() * size_bytes` bytes; a trailing partial element would be
/// dropped and the tensor then rejected by [`Tensor::new`], which is why this
/// returns `None` rather than trusting the length.
pub(crate) fn to_tensor(dtype: Dtype, shape: &[usize], bytes: &[u8]) -> Option<Tensor> {
    let data = match dtype {
        Dtype::F32 => TensorData::F32(read(bytes, f32::from_le_bytes)),
        Dtype::F16 => TensorData::F32(read(bytes, |b| {
            half::f16::from_bits(u16::from_le_bytes(b)).to_f32()
        })),
        Dtype::BF16 => TensorData::F32(read(bytes, |b| {
            f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
        })),
        Dtype::F64 => TensorData::F32(read(bytes, |b| f64::from_le_bytes(b) as f32)),
        Dtype::I64 => TensorData::I64(read(bytes, i64::from_le_bytes)),
        Dtype::I32 => TensorData::I32(read(bytes, i32::from_le_bytes)),
        Dtype::U8 => TensorData::U8(bytes.to_vec()),
        Dtype::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
        Dtype::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
    };
    Tensor::new(shape.to_vec(), data).ok()
}

/// The little-endian bytes of a tensor's data, in its stored type.
pub(crate) fn to_bytes(data: &TensorData) -> Vec<u8> {
    fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        let mut out = Vec::with_capacity(v.len() * N);
        for &x in v {
            out.extend_from_slice(&f(x));
        }
        out
    }
    match data {
        TensorData::F64(v) => le(v, f64::to_le_bytes),
        TensorData::F32(v) => le(v, f32::to_le_bytes),
        TensorData::F16(v) => le(v, half::f16::to_le_bytes),
        TensorData::BF16(v) => le(v, half::bf16::to_le_bytes),
        TensorData::I64(v) => le(v, i64::to_le_bytes),
        TensorData::I32(v) => le(v, i32::to_le_bytes),
        TensorData::U8(v) => v.clone(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
    }
}
