//! Constant tensors embedded in a graph (`const` nodes).

use crate::types::{DType, TensorType};
use crate::Dim;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

/// The elements of a [`Literal`], stored in the widest type of their kind.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LiteralData {
    /// Values of a float literal; for f32/f16/bf16 they are already rounded to that type.
    Float(#[serde(with = "crate::serde_float::vec")] Vec<f64>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
}

/// A constant tensor with a static shape.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Literal {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: LiteralData,
}

/// Rounds `v` to the nearest value representable in the float type `dtype`.
pub fn round_to(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::F32 => v as f32 as f64,
        // `half`'s own f64 conversions can round a near-tie the wrong way.
        DType::F16 => crate::interp::round_f16(v).to_f64(),
        DType::BF16 => crate::interp::round_bf16(v).to_f64(),
        _ => v,
    }
}

/// Wraps an integer to the range of the integer type `dtype` (two's complement).
pub fn wrap_int(dtype: DType, v: i64) -> i64 {
    match dtype {
        DType::I32 => v as i32 as i64,
        DType::U8 => v as u8 as i64,
        DType::I8 => v as i8 as i64,
        _ => v,
    }
}

impl Literal {
    /// A scalar of `dtype` with value `v` (rounded / truncated to the type).
    pub fn scalar(dtype: DType, v: f64) -> Literal {
        Literal::filled(dtype, Vec::new(), v)
    }

    /// A tensor of `shape` whose elements all equal `v`.
    pub fn filled(dtype: DType, shape: Vec<usize>, v: f64) -> Literal {
        let n: usize = shape.iter().product();
        let data = if dtype.is_float() {
            LiteralData::Float(vec![round_to(dtype, v); n])
        } else if dtype == DType::Bool {
            LiteralData::Bool(vec![v != 0.0; n])
        } else {
            LiteralData::Int(vec![wrap_int(dtype, v as i64); n])
        };
        Literal { dtype, shape, data }
    }

    /// A float literal from values (rounded to `dtype`).
    pub fn floats(dtype: DType, shape: Vec<usize>, values: &[f64]) -> Literal {
        Literal {
            dtype,
            shape,
            data: LiteralData::Float(values.iter().map(|&v| round_to(dtype, v)).collect()),
        }
    }

    /// An integer literal from values (wrapped to `dtype`).
    pub fn ints(dtype: DType, shape: Vec<usize>, values: &[i64]) -> Literal {
        Literal {
            dtype,
            shape,
            data: LiteralData::Int(values.iter().map(|&v| wrap_int(dtype, v)).collect()),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn ty(&self) -> TensorType {
        TensorType::new(
            self.dtype,
            self.shape.iter().map(|&d| Dim::from(d)).collect(),
        )
    }

    /// Element `i` as f64 (bools as 0/1).
    pub fn get_f64(&self, i: usize) -> f64 {
        match &self.data {
            LiteralData::Float(v) => v[i],
            LiteralData::Int(v) => v[i] as f64,
            LiteralData::Bool(v) => v[i] as u8 as f64,
        }
    }

    /// `Some(v)` when every element equals `v` (a splat).
    pub fn splat_value(&self) -> Option<f64> {
        let n = self.numel();
        if n == 0 {
            return None;
        }
        let first = self.get_f64(0);
        (1..n)
            .all(|i| self.get_f64(i).to_bits() == first.to_bits())
            .then_some(first)
    }

    /// Checks that the data matches dtype and shape.
    pub fn is_well_formed(&self) -> bool {
        let n = self.numel();
        match &self.data {
            LiteralData::Float(v) => self.dtype.is_float() && v.len() == n,
            LiteralData::Int(v) => self.dtype.is_int() && v.len() == n,
            LiteralData::Bool(v) => self.dtype == DType::Bool && v.len() == n,
        }
    }
}

impl PartialEq for Literal {
    /// Bitwise on the values, so `nan == nan` and `0.0 != -0.0`: constants are
    /// compared as data, not as numbers.
    fn eq(&self, other: &Self) -> bool {
        self.dtype == other.dtype
            && self.shape == other.shape
            && match (&self.data, &other.data) {
                (LiteralData::Float(a), LiteralData::Float(b)) => {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
                }
                (LiteralData::Int(a), LiteralData::Int(b)) => a == b,
                (LiteralData::Bool(a), LiteralData::Bool(b)) => a == b,
                _ => false,
            }
    }
}
impl Eq for Literal {}

impl Hash for Literal {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.dtype.hash(state);
        self.shape.hash(state);
        match &self.data {
            LiteralData::Float(v) => v.iter().for_each(|x| x.to_bits().hash(state)),
            LiteralData::Int(v) => v.hash(state),
            LiteralData::Bool(v) => v.hash(state),
        }
    }
}
