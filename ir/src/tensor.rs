//! Host tensors: concrete shapes and owned, row-major data. The interpreter
//! computes on them and the runtime takes and returns them.

use crate::types::DType;
use half::{bf16, f16};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Owned element storage. `F64` is not an IR dtype: the interpreter uses it to
/// run float graphs in double precision (its check against f64).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    Bool(Vec<bool>),
}

/// A concrete tensor.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// A tensor whose data does not fit its shape or dtype.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor data has {len} elements ({bytes} bytes of {dtype}) but the shape {shape:?} needs {expected}")]
pub struct TensorSizeError {
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub len: usize,
    pub bytes: usize,
    pub expected: usize,
}

macro_rules! each_data {
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

impl TensorData {
    pub fn len(&self) -> usize {
        each_data!(self, v => v.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The IR dtype; `F64` storage reports `F32` (it stands for a float tensor).
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) | TensorData::F64(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::U8(_) => DType::U8,
            TensorData::I8(_) => DType::I8,
            TensorData::Bool(_) => DType::Bool,
        }
    }
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, TensorSizeError> {
        let expected: usize = shape.iter().product();
        if data.len() != expected {
            return Err(TensorSizeError {
                dtype: data.dtype().name(),
                bytes: data.len() * data.dtype().size_bytes(),
                len: data.len(),
                shape,
                expected,
            });
        }
        Ok(Tensor { shape, data })
    }

    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, TensorSizeError> {
        Tensor::new(shape, TensorData::F32(data))
    }
    pub fn i32(shape: Vec<usize>, data: Vec<i32>) -> Result<Tensor, TensorSizeError> {
        Tensor::new(shape, TensorData::I32(data))
    }
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Result<Tensor, TensorSizeError> {
        Tensor::new(shape, TensorData::I64(data))
    }

    /// Zeros of `dtype`.
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        let data = match dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::F16 => TensorData::F16(vec![f16::ZERO; n]),
            DType::BF16 => TensorData::BF16(vec![bf16::ZERO; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
            DType::I64 => TensorData::I64(vec![0; n]),
            DType::U8 => TensorData::U8(vec![0; n]),
            DType::I8 => TensorData::I8(vec![0; n]),
            DType::Bool => TensorData::Bool(vec![false; n]),
        };
        Tensor { shape, data }
    }

    /// Builds a tensor of `dtype` from f64 values (rounded / truncated to the type).
    pub fn from_f64(
        dtype: DType,
        shape: Vec<usize>,
        values: &[f64],
    ) -> Result<Tensor, TensorSizeError> {
        let data = match dtype {
            DType::F32 => TensorData::F32(values.iter().map(|&v| v as f32).collect()),
            DType::F16 => TensorData::F16(
                values
                    .iter()
                    .map(|&v| crate::interp::round_f16(v))
                    .collect(),
            ),
            DType::BF16 => TensorData::BF16(
                values
                    .iter()
                    .map(|&v| crate::interp::round_bf16(v))
                    .collect(),
            ),
            DType::I32 => TensorData::I32(values.iter().map(|&v| v as i32).collect()),
            DType::I64 => TensorData::I64(values.iter().map(|&v| v as i64).collect()),
            DType::U8 => TensorData::U8(values.iter().map(|&v| v as u8).collect()),
            DType::I8 => TensorData::I8(values.iter().map(|&v| v as i8).collect()),
            DType::Bool => TensorData::Bool(values.iter().map(|&v| v != 0.0).collect()),
        };
        Tensor::new(shape, data)
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Every element as f64 (bools as 0/1).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::F64(v) => v.clone(),
            TensorData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }

    /// Every element as f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            _ => self.to_f64_vec().into_iter().map(|x| x as f32).collect(),
        }
    }

    /// Integer elements as i64 (`None` for float or bool tensors).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match &self.data {
            TensorData::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::I64(v) => Some(v.clone()),
            TensorData::U8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::I8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            _ => None,
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The raw little-endian bytes (bools as one byte 0/1). `F64` storage is
    /// written as f32, its IR dtype.
    pub fn to_bytes(&self) -> Vec<u8> {
        fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            v.iter().flat_map(|&x| f(x)).collect()
        }
        match &self.data {
            TensorData::F32(v) => le(v, f32::to_le_bytes),
            TensorData::F16(v) => le(v, f16::to_le_bytes),
            TensorData::BF16(v) => le(v, bf16::to_le_bytes),
            TensorData::F64(v) => le(v, |x| (x as f32).to_le_bytes()),
            TensorData::I32(v) => le(v, i32::to_le_bytes),
            TensorData::I64(v) => le(v, i64::to_le_bytes),
            TensorData::U8(v) => v.clone(),
            TensorData::I8(v) => le(v, i8::to_le_bytes),
            TensorData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        }
    }

    /// Reads little-endian bytes of `dtype` (the inverse of [`Tensor::to_bytes`]).
    pub fn from_bytes(
        dtype: DType,
        shape: Vec<usize>,
        bytes: &[u8],
    ) -> Result<Tensor, TensorSizeError> {
        let expected: usize = shape.iter().product();
        let sz = dtype.size_bytes();
        if bytes.len() != expected * sz {
            return Err(TensorSizeError {
                dtype: dtype.name(),
                len: bytes.len() / sz,
                bytes: bytes.len(),
                shape,
                expected,
            });
        }
        fn rd<T, const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            b.chunks_exact(N)
                .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
                .collect()
        }
        let data = match dtype {
            DType::F32 => TensorData::F32(rd(bytes, f32::from_le_bytes)),
            DType::F16 => TensorData::F16(rd(bytes, f16::from_le_bytes)),
            DType::BF16 => TensorData::BF16(rd(bytes, bf16::from_le_bytes)),
            DType::I32 => TensorData::I32(rd(bytes, i32::from_le_bytes)),
            DType::I64 => TensorData::I64(rd(bytes, i64::from_le_bytes)),
            DType::U8 => TensorData::U8(bytes.to_vec()),
            DType::I8 => TensorData::I8(rd(bytes, i8::from_le_bytes)),
            DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        };
        Tensor::new(shape, data)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.to_f64_vec();
        let shown: Vec<String> = v.iter().take(8).map(|x| format!("{x:.6}")).collect();
        write!(
            f,
            "Tensor<{}{:?}>[{}{}]",
            self.dtype(),
            self.shape,
            shown.join(", "),
            if v.len() > 8 { ", …" } else { "" }
        )
    }
}

/// Relative L2 error `‖a-b‖ / max(‖b‖, tiny)`, the project's standard metric
/// for comparing a result against a reference.
pub fn rel_l2(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_l2 on different lengths");
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    if num == 0.0 {
        return 0.0;
    }
    (num / den.max(1e-300)).sqrt()
}
