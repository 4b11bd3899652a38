//! Element types, shapes and tensor types.

use crate::dim::{Bindings, Dim, DimError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    I64,
    U8,
    I8,
    /// Result of comparisons, condition of `select`; one byte per element in memory.
    Bool,
}

impl DType {
    pub const ALL: [DType; 8] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::I8,
        DType::Bool,
    ];

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }
    pub fn is_int(self) -> bool {
        matches!(self, DType::I32 | DType::I64 | DType::U8 | DType::I8)
    }
    /// Bytes per element in memory.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::U8 | DType::I8 | DType::Bool => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::Bool => "bool",
        }
    }
    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A shape: one [`Dim`] per axis, outermost first (row-major).
pub type Shape = Vec<Dim>;

/// Builds a shape from anything convertible to dims: `shape![seq, 64]` style
/// call sites use `shape_of(["seq".into(), 64.into()])`.
pub fn shape_of<I, D>(dims: I) -> Shape
where
    I: IntoIterator<Item = D>,
    D: Into<Dim>,
{
    dims.into_iter().map(Into::into).collect()
}

/// `shape!["seq", 64]` builds a [`Shape`] from symbol names, expressions and integers.
#[macro_export]
macro_rules! shape {
    ($($d:expr),* $(,)?) => { vec![$($crate::Dim::from($d)),*] };
}

/// The type of a value: element type and (possibly symbolic) shape.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Shape) -> Self {
        TensorType { dtype, shape }
    }
    pub fn scalar(dtype: DType) -> Self {
        TensorType {
            dtype,
            shape: Vec::new(),
        }
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Symbolic element count.
    pub fn numel(&self) -> Dim {
        crate::dim::product(&self.shape)
    }
    /// Concrete shape under `bindings`.
    pub fn eval_shape(&self, bindings: &Bindings) -> Result<Vec<usize>, DimError> {
        self.shape.iter().map(|d| d.eval_usize(bindings)).collect()
    }
    /// True when every dim is a constant.
    pub fn is_static(&self) -> bool {
        self.shape.iter().all(Dim::is_const)
    }
    pub fn with_dtype(&self, dtype: DType) -> Self {
        TensorType {
            dtype,
            shape: self.shape.clone(),
        }
    }
    pub fn with_shape(&self, shape: Shape) -> Self {
        TensorType {
            dtype: self.dtype,
            shape,
        }
    }
}

/// Text form: `f32[past+seq,4,16]`, a scalar is `f32[]`.
impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl fmt::Debug for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Binds the symbols of `types` from concrete `shapes` (e.g. the graph's input
/// types against the tensors a caller passes). Single-symbol dims are bound
/// first so that `past+seq` can be solved once `past` is known.
pub fn bind_symbols<'a>(
    pairs: impl IntoIterator<Item = (&'a [Dim], &'a [usize])> + Clone,
    bindings: &mut Bindings,
) -> Result<(), DimError> {
    // Repeat until no progress: each pass solves dims with at most one unknown.
    let all: Vec<(&Dim, i64)> = pairs
        .into_iter()
        .flat_map(|(dims, sizes)| dims.iter().zip(sizes.iter().map(|&s| s as i64)))
        .collect();
    let mut pending: Vec<(&Dim, i64)> = all;
    loop {
        let before = pending.len();
        let mut still = Vec::new();
        let mut last_err = None;
        for (d, actual) in pending {
            match d.unify(actual, bindings) {
                Ok(()) => {}
                Err(e @ DimError::Unsolvable { .. }) => {
                    last_err = Some(e);
                    still.push((d, actual));
                }
                Err(e) => return Err(e),
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if still.len() == before {
            return Err(last_err.expect("unsolved dims carry an error"));
        }
        pending = still;
    }
}
