//! Shared helpers of the `hf_*` tests: scratch directories and seeded tensors.
#![allow(dead_code)]

use kiln_ir::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A scratch directory removed on drop, unique per test.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kiln-hf-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Seeded f32 values in [-2, 2).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

pub fn f32_tensor(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::f32(shape.to_vec(), values(seed, shape.iter().product())).unwrap()
}

/// A few tensors of every stored type.
pub fn mixed_tensors() -> BTreeMap<String, Tensor> {
    let mut m = BTreeMap::new();
    m.insert("a.f32".to_string(), f32_tensor(1, &[3, 4]));
    let h: Vec<half::f16> = values(2, 6).into_iter().map(half::f16::from_f32).collect();
    m.insert(
        "b.f16".into(),
        Tensor::new(vec![2, 3], TensorData::F16(h)).unwrap(),
    );
    let b: Vec<half::bf16> = values(3, 5).into_iter().map(half::bf16::from_f32).collect();
    m.insert(
        "c.bf16".into(),
        Tensor::new(vec![5], TensorData::BF16(b)).unwrap(),
    );
    m.insert(
        "d.i64".into(),
        Tensor::i64(vec![2, 2], vec![-1, 0, 1 << 40, 7]).unwrap(),
    );
    m.insert(
        "e.i32".into(),
        Tensor::i32(vec![3], vec![-5, 9, i32::MAX]).unwrap(),
    );
    m.insert(
        "f.u8".into(),
        Tensor::new(vec![2], TensorData::U8(vec![0, 255])).unwrap(),
    );
    m.insert(
        "g.i8".into(),
        Tensor::new(vec![2], TensorData::I8(vec![-128, 127])).unwrap(),
    );
    m.insert(
        "h.bool".into(),
        Tensor::new(vec![3], TensorData::Bool(vec![true, false, true])).unwrap(),
    );
    m.insert("i.scalar".into(), Tensor::f32(vec![], vec![0.5]).unwrap());
    m.insert("j.empty".into(), Tensor::f32(vec![0, 4], vec![]).unwrap());
    m
}
