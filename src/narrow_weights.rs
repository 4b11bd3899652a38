//! Weights for a graph whose `lossy` pass declared some of them narrow
//! (`--weights f16|bf16`, see `kiln_passes::narrow`): the graph says
//! `param "w" : f16[..]` while the checkpoint holds `w` in f32. Each such
//! weight is rounded to the declared dtype (to nearest, ties to even, as
//! the interpreter rounds) when it is read; every other weight passes
//! through untouched. The JIT loads through it, and an artifact stores the
//! rounded tensors, so `kiln-run` reads them as declared.

use kiln_ir::interp::{round_bf16, round_f16, ParamBytes, ParamSource};
use kiln_ir::{DType, Graph, Tensor};
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
        let rounded = graph
            .params()
            .into_iter()
            .filter(|(_, ty)| ty.dtype == to)
            .map(|(name, _)| (name, OnceLock::new()))
            .collect();
        NarrowWeights { inner, to, rounded }
    }

    /// Whether weight `name` is one this rounds.
    pub fn rounds(&self, name: &str) -> bool {
        self.rounded.contains_key(name)
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
    /// A rounded weight is [`ParamSource::param_bytes`]'s bytes as a tensor,
    /// made once.
    fn param(&self, name: &str) -> Option<&Tensor> {
        let Some(cell) = self.rounded.get(name) else {
            return self.inner.param(name);
        };
        cell.get_or_init(|| {
            let p = self.param_bytes(name, self.to)?;
            Tensor::from_bytes(p.dtype, p.shape, &p.bytes).ok()
        })
        .as_ref()
    }

    fn param_bytes(&self, name: &str, declared: DType) -> Option<ParamBytes<'_>> {
        let p = self.inner.param_bytes(name, declared)?;
        if !self.rounds(name) || p.dtype != DType::F32 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::TensorType;
    use std::collections::HashMap;

    /// A graph declaring one weight `w` of `n` values as `to`.
    fn declaring(n: usize, to: DType) -> Graph {
        let mut g = Graph::new("w");
        let ty = TensorType::new(to, vec![n.into()]);
        let name = "w".to_string();
        g.add(kiln_ir::Op::Param { name, ty }, &[]).unwrap();
        g
    }

    /// The bytes the JIT loads (`param_bytes`, rounded element by element)
    /// equal the interpreter's rounding (`Tensor::from_f64`), and the tensor
    /// `kiln compile` stores (`param`) equals them too, for values at every
    /// edge of f16 and bf16: ties, subnormals, overflow to infinity,
    /// infinities, NaN.
    #[test]
    fn loaded_bytes_equal_the_stored_tensor() {
        let mut vals: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            1.0 + f32::EPSILON,
            1.000_976_6, // 1 + 2^-10: an f16 tie region
            1.003_906_2, // 1 + 2^-8: a bf16 tie
            65504.0,
            65520.0, // rounds to f16 infinity
            1e-8,    // f16 subnormal range / underflow
            5.96e-8,
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let mut x: u32 = 0x1234_5678;
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = f32::from_bits(x);
            if v.is_finite() {
                vals.push(v);
            }
        }
        let t = Tensor::f32(vec![vals.len()], vals.clone()).unwrap();
        let wide: Vec<f64> = vals.iter().map(|&v| v as f64).collect();
        let source: HashMap<String, Tensor> = HashMap::from([("w".to_string(), t)]);
        for to in [DType::F16, DType::BF16] {
            let g = declaring(vals.len(), to);
            let narrow = NarrowWeights::new(&source, &g, to);
            let loaded = narrow.param_bytes("w", to).unwrap();
            assert_eq!(loaded.dtype, to);
            let want = Tensor::from_f64(to, vec![vals.len()], &wide).unwrap();
            assert_eq!(loaded.bytes.as_ref(), want.to_bytes().as_slice(), "{to}");
            let stored = narrow.param("w").unwrap();
            assert_eq!(stored, &want, "{to}");
        }
        // NaN stays NaN either way (its payload may differ).
        let nan = HashMap::from([(
            "w".to_string(),
            Tensor::f32(vec![1], vec![f32::NAN]).unwrap(),
        )]);
        for to in [DType::F16, DType::BF16] {
            let g = declaring(1, to);
            let narrow = NarrowWeights::new(&nan, &g, to);
            let b = narrow.param_bytes("w", to).unwrap();
            let bits = u16::from_le_bytes([b.bytes[0], b.bytes[1]]);
            let (exponent, mantissa) = match to {
                DType::F16 => (0x7C00, 0x03FF),
                _ => (0x7F80, 0x007F),
            };
            let is_nan = bits & exponent == exponent && bits & mantissa != 0;
            assert!(is_nan, "{to}: {bits:#06x}");
        }
    }
}
