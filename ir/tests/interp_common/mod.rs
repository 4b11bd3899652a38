//! Helpers shared by the interpreter tests: seeded random data, graph
//! building shortcuts, running a graph, and comparisons.
#![allow(dead_code)]

use kiln_ir::interp::{eval_with, EvalOptions, Precision};
use kiln_ir::op::F64Bits;
use kiln_ir::{
    BinaryOp, CmpOp, DType, Dim, Graph, Literal, Op, ReduceOp, Tensor, TensorType, UnaryOp, Value,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` values uniform in `lo..hi`, each exactly representable in f32.
pub fn rand_vals(r: &mut StdRng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n)
        .map(|_| r.random_range(lo..hi) as f32 as f64)
        .collect()
}

pub fn f32_tensor(shape: &[usize], v: &[f64]) -> Tensor {
    Tensor::from_f64(DType::F32, shape.to_vec(), v).unwrap()
}

pub fn rand_f32(r: &mut StdRng, shape: &[usize], lo: f64, hi: f64) -> (Tensor, Vec<f64>) {
    let v = rand_vals(r, shape.iter().product(), lo, hi);
    (f32_tensor(shape, &v), v)
}

pub fn ty(dtype: DType, dims: &[&str]) -> TensorType {
    TensorType::new(dtype, dims.iter().map(|d| Dim::from(*d)).collect())
}

pub fn f32t(dims: &[&str]) -> TensorType {
    ty(DType::F32, dims)
}

/// Graph-building shortcuts (each panics on a type error: tests build valid graphs).
pub struct B {
    pub g: Graph,
}

impl B {
    pub fn new(name: &str) -> B {
        B {
            g: Graph::new(name),
        }
    }
    pub fn input(&mut self, name: &str, t: TensorType) -> Value {
        self.g.add_input(name, t).unwrap()
    }
    pub fn param(&mut self, name: &str, t: TensorType) -> Value {
        self.op(
            Op::Param {
                name: name.into(),
                ty: t,
            },
            &[],
        )
    }
    pub fn op(&mut self, op: Op, args: &[Value]) -> Value {
        self.g.add(op, args).unwrap()
    }
    pub fn un(&mut self, u: UnaryOp, x: Value) -> Value {
        self.op(Op::Unary(u), &[x])
    }
    pub fn bin(&mut self, b: BinaryOp, x: Value, y: Value) -> Value {
        self.op(Op::Binary(b), &[x, y])
    }
    pub fn add(&mut self, x: Value, y: Value) -> Value {
        self.bin(BinaryOp::Add, x, y)
    }
    pub fn sub(&mut self, x: Value, y: Value) -> Value {
        self.bin(BinaryOp::Sub, x, y)
    }
    pub fn mul(&mut self, x: Value, y: Value) -> Value {
        self.bin(BinaryOp::Mul, x, y)
    }
    pub fn div(&mut self, x: Value, y: Value) -> Value {
        self.bin(BinaryOp::Div, x, y)
    }
    pub fn cmp(&mut self, c: CmpOp, x: Value, y: Value) -> Value {
        self.op(Op::Compare(c), &[x, y])
    }
    pub fn select(&mut self, c: Value, x: Value, y: Value) -> Value {
        self.op(Op::Select, &[c, x, y])
    }
    pub fn reduce(&mut self, op: ReduceOp, axes: &[usize], keep_dims: bool, x: Value) -> Value {
        self.op(
            Op::Reduce {
                op,
                axes: axes.to_vec(),
                keep_dims,
            },
            &[x],
        )
    }
    pub fn matmul(&mut self, x: Value, y: Value) -> Value {
        self.op(Op::MatMul, &[x, y])
    }
    pub fn permute(&mut self, x: Value, perm: &[usize]) -> Value {
        self.op(
            Op::Permute {
                perm: perm.to_vec(),
            },
            &[x],
        )
    }
    pub fn reshape(&mut self, x: Value, dims: &[&str]) -> Value {
        self.op(
            Op::Reshape {
                shape: dims.iter().map(|d| Dim::from(*d)).collect(),
            },
            &[x],
        )
    }
    pub fn broadcast(&mut self, x: Value, dims: &[&str]) -> Value {
        self.op(
            Op::Broadcast {
                shape: dims.iter().map(|d| Dim::from(*d)).collect(),
            },
            &[x],
        )
    }
    pub fn scalar(&mut self, dtype: DType, v: f64) -> Value {
        self.op(Op::Const(Literal::scalar(dtype, v)), &[])
    }
    pub fn pad(&mut self, x: Value, axis: usize, low: &str, high: &str, value: f64) -> Value {
        self.op(
            Op::Pad {
                axis,
                low: Dim::from(low),
                high: Dim::from(high),
                value: F64Bits(value),
            },
            &[x],
        )
    }
    pub fn out(&mut self, name: &str, v: Value) {
        self.g.add_output(name, v).unwrap();
    }
}

pub fn no_params() -> BTreeMap<String, Tensor> {
    BTreeMap::new()
}

pub fn named(inputs: Vec<(&str, Tensor)>) -> BTreeMap<String, Tensor> {
    inputs
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect()
}

/// Runs `g` and returns output `out`.
pub fn run_out(
    g: &Graph,
    inputs: Vec<(&str, Tensor)>,
    params: &BTreeMap<String, Tensor>,
    precision: Precision,
    out: &str,
) -> Tensor {
    let mut outs = eval_with(
        g,
        &named(inputs),
        params,
        &EvalOptions {
            precision,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("evaluation failed: {e}"));
    outs.remove(out).expect("output exists")
}

/// Runs a graph with a single output `y` in Declared precision.
pub fn run(g: &Graph, inputs: Vec<(&str, Tensor)>) -> Tensor {
    run_out(g, inputs, &no_params(), Precision::Declared, "y")
}

/// Runs a graph with a single output `y` in F64 precision.
pub fn run64(g: &Graph, inputs: Vec<(&str, Tensor)>) -> Tensor {
    run_out(g, inputs, &no_params(), Precision::F64, "y")
}

/// Relative L2 error of `got` against `want`.
pub fn rel_l2(got: &[f64], want: &[f64]) -> f64 {
    kiln_ir::tensor::rel_l2(got, want)
}

/// Asserts element-wise `|got - want| <= rel·|want| + abs`, NaN matching NaN.
pub fn assert_close(got: &[f64], want: &[f64], rel: f64, abs: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}[{i}]: got {g}, want NaN");
            continue;
        }
        if w.is_infinite() {
            assert_eq!(g, w, "{what}[{i}]");
            continue;
        }
        assert!(
            (g - w).abs() <= rel * w.abs() + abs,
            "{what}[{i}]: got {g}, want {w} (diff {})",
            (g - w).abs()
        );
    }
}

/// Asserts that each f32 result is within one f32 ulp of the exact value.
pub fn assert_f32_ulp(got: &Tensor, want: &[f64], what: &str) {
    assert_eq!(got.dtype(), DType::F32, "{what}: dtype");
    assert!(got.as_f32().is_some(), "{what}: f32 storage");
    assert_close(&got.to_f64_vec(), want, f32::EPSILON as f64, 1e-37, what);
}

/// Row-major multi-index of flat position `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        idx[a] = i % shape[a];
        i /= shape[a];
    }
    idx
}

/// Flat position of `idx` in `shape`.
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
}

/// The element of a tensor with shape `from` seen at index `idx` of the
/// broadcast shape (numpy rules, written out independently).
pub fn bcast_get(v: &[f64], from: &[usize], idx: &[usize]) -> f64 {
    let off = idx.len() - from.len();
    let src: Vec<usize> = from
        .iter()
        .enumerate()
        .map(|(a, &n)| if n == 1 { 0 } else { idx[off + a] })
        .collect();
    v[ravel(&src, from)]
}

/// `erf` by its everywhere-positive series `2/√π·e^{-x²}·Σ 2ⁿx^{2n+1}/(1·3·…·(2n+1))`,
/// independent of the interpreter's (libm's) implementation.
pub fn erf_series(x: f64) -> f64 {
    if x.abs() > 6.0 {
        return x.signum();
    }
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    while term.abs() > 1e-18 * sum.abs() {
        n += 1.0;
        term *= 2.0 * x * x / (2.0 * n + 1.0);
        sum += term;
    }
    2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp() * sum
}

/// The elements of a bool tensor.
pub fn bools_of(t: &Tensor) -> Vec<bool> {
    match &t.data {
        kiln_ir::TensorData::Bool(v) => v.clone(),
        _ => panic!("{t:?} is not bool"),
    }
}

/// The elements of an f64-storage tensor.
pub fn f64s_of(t: &Tensor) -> Vec<f64> {
    match &t.data {
        kiln_ir::TensorData::F64(v) => v.clone(),
        _ => panic!("{t:?} is not in f64 storage"),
    }
}
