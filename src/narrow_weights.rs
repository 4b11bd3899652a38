//! Weights for a graph whose `lossy` pass declared some of them narrow
//! (`--weights f16|bf16`, see `kiln_passes::narrow`): the graph says
//! `param "w" : f16[..]` while the checkpoint holds `w` in f32. Each such
//! weight is rounded to the declared dtype (to nearest, ties to even, as
//! the interpreter rounds) when it is read; every other weight passes
//! through untouched. The JIT loads through it, and an artifact stores the
//! rounded tensors, so `kiln-run` reads them as declared.

use kiln_ir::interp::{round_bf16, round_f16, ParamBytes, ParamSource};
use kiln_ir::{DType, Graph, Tensor, TensorType};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// `inner`, with the weights `graph` declares as `to` rounded from f32.
pub struct NarrowWeights<'a> {
    inner: &'a dyn ParamSource,
    to: DType,
    /// The narrow-declared weights, each rounded on first [`ParamSource::param`].
    rounded: BTreeMap<String, OnceLock<Option<Tensor>>>,
}

impl<'a> NarrowWeights<'a> {
    /// The weights `graph` declares as `to` (`f16`/`bf16`) are rounded.
    pub fn new(inner: &'a dyn ParamSource, graph: &Graph, to: DType) -> Self {
        Self::from_declared(inner, graph.params(), to)
    }

    /// The weights `declared` (name and declared type) as `to` are rounded.
    pub fn from_declared(
        inner: &'a dyn ParamSource,
        declared: BTreeMap<String, TensorType>,
        to: DType,
    ) -> Self {
        let rounded = declared
            .into_iter()
            .filter(|(_, ty)| ty.dtype == to)
            .map(|(name, _)| (name, OnceLock::new()))
            .collect();
        NarrowWeights { inner, to, rounded }
    }

    /// How many weights are rounded when read.
    pub fn len(&self) -> usize {
        self.rounded.len()
    }

    /// True when no weight is declared narrow.
    pub fn is_empty(&self) -> bool {
        self.rounded.is_empty()
    }
}

/// `x` (f32 bits) rounded to `to`, as raw bits.
fn round_bits(x: f32, to: DType) -> u16 {
    match to {
        DType::BF16 => round_bf16(x as f64).to_bits(),
        _ => round_f16(x as f64).to_bits(),
    }
}

impl ParamSource for NarrowWeights<'_> {
    fn param(&self, name: &str) -> Option<&Tensor> {
        let Some(cell) = self.rounded.get(name) else {
            return self.inner.param(name);
        };
        cell.get_or_init(|| {
            let t = self.inner.param(name)?;
            if t.dtype() != DType::F32 {
                return Some(t.clone());
            }
            Tensor::from_f64(self.to, t.shape.clone(), &t.to_f64_vec()).ok()
        })
        .as_ref()
    }

    fn param_bytes(&self, name: &str) -> Option<ParamBytes<'_>> {
        let p = self.inner.param_bytes(name)?;
        if !self.rounded.contains_key(name) || p.dtype != DType::F32 {
            return Some(p);
        }
        let bytes = p
            .bytes
            .chunks_exact(4)
            .flat_map(|c| {
                let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                round_bits(x, self.to).to_le_bytes()
            })
            .collect();
        Some(ParamBytes {
            dtype: self.to,
            shape: p.shape,
            bytes: Cow::Owned(bytes),
        })
    }

    fn release(&self, name: &str) {
        self.inner.release(name);
    }
}
