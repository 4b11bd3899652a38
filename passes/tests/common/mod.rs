//! Shared test support: random environments, evaluation with the reference
//! interpreter, comparison, and a small graph-building helper.
#![allow(dead_code)]

pub mod models;

use kiln_ir::interp::{eval, eval_with, EvalOptions, InterpError};
use kiln_ir::tensor::rel_l2;
use kiln_ir::{Bindings, DType, Dim, Graph, Literal, Op, Tensor, TensorType, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// How many nodes of `g` are the op called `name` (`Op::name`).
pub fn count(g: &Graph, name: &str) -> usize {
    g.node_ids()
        .filter(|&n| g.node(n).op.name() == name)
        .count()
}

/// Relative L2 tolerance for float rules.
pub const TOL: f64 = 1e-5;

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Every symbol of `g` bound to a random size in 1..=4.
pub fn bindings(g: &Graph, rng: &mut StdRng) -> Bindings {
    g.symbols()
        .into_iter()
        .map(|s| (s, rng.random_range(1..=4)))
        .collect()
}

/// A random tensor of `ty` under `b`: floats in [-2, 2], small integers, random bools.
pub fn random_tensor(ty: &TensorType, b: &Bindings, rng: &mut StdRng) -> Tensor {
    let shape = ty.eval_shape(b).expect("every symbol is bound");
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n)
        .map(|_| match ty.dtype {
            d if d.is_float() => rng.random_range(-2.0..2.0),
            DType::U8 => rng.random_range(0..10) as f64,
            DType::Bool => rng.random_range(0..2) as f64,
            _ => rng.random_range(-5..6) as f64,
        })
        .collect();
    Tensor::from_f64(ty.dtype, shape, &values).expect("sizes match")
}

/// Random inputs and parameters for `g`.
pub fn random_env(
    g: &Graph,
    rng: &mut StdRng,
) -> (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) {
    let b = bindings(g, rng);
    let inputs = g
        .input_names()
        .zip(g.input_types())
        .map(|(n, t)| (n.to_string(), random_tensor(&t, &b, rng)))
        .collect();
    let params = g
        .params()
        .into_iter()
        .map(|(n, t)| {
            let v = random_tensor(&t, &b, rng);
            (n, v)
        })
        .collect();
    (inputs, params)
}

pub fn run(
    g: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Tensor>,
) -> Result<BTreeMap<String, Tensor>, InterpError> {
    eval(g, inputs, params)
}

/// Compares two results: same shape and dtype; non-finite values at the
/// same places; finite values equal (`exact`) or within [`TOL`] rel L2.
pub fn compare(a: &Tensor, b: &Tensor, exact: bool) -> Result<(), String> {
    if a.shape != b.shape || a.dtype() != b.dtype() {
        return Err(format!("{a:?} vs {b:?}: shapes or dtypes differ"));
    }
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    let (mut fx, mut fy) = (Vec::new(), Vec::new());
    for (i, (&p, &q)) in x.iter().zip(&y).enumerate() {
        if p.is_finite() && q.is_finite() {
            fx.push(p);
            fy.push(q);
        } else if !(p == q || (p.is_nan() && q.is_nan())) {
            return Err(format!("element {i}: {p} vs {q}"));
        }
    }
    if exact {
        if let Some(i) = fx.iter().zip(&fy).position(|(p, q)| p != q) {
            return Err(format!("element {i}: {} vs {} (exact)", fx[i], fy[i]));
        }
    } else {
        let e = rel_l2(&fx, &fy);
        if e > TOL {
            return Err(format!("rel L2 {e:e} > {TOL:e}"));
        }
    }
    Ok(())
}

/// Evaluates `before` and `after` on `trials` random environments and
/// compares every output. Environments where `before` itself fails (an
/// out-of-range gather index, say) are skipped; returns how many compared.
pub fn check_same(
    before: &Graph,
    after: &Graph,
    exact: bool,
    seed: u64,
    trials: usize,
) -> Result<usize, String> {
    let mut rng = rng(seed);
    let mut compared = 0;
    for _ in 0..trials {
        let (inputs, params) = random_env(before, &mut rng);
        let Ok(want) = run(before, &inputs, &params) else {
            continue;
        };
        let got = run(after, &inputs, &params)
            .map_err(|e| format!("the rewritten graph fails: {e}\n{after}"))?;
        for (name, w) in &want {
            let g = got
                .get(name)
                .ok_or_else(|| format!("output {name} missing"))?;
            compare(g, w, exact)
                .map_err(|m| format!("output {name}: {m}\nbefore:\n{before}\nafter:\n{after}"))?;
        }
        compared += 1;
    }
    Ok(compared)
}

/// A small graph builder for generators (a wrong op is a test bug: panics).
pub struct G {
    pub g: Graph,
    inputs: usize,
    outputs: usize,
}

impl G {
    pub fn new(name: &str) -> G {
        G {
            g: Graph::new(name),
            inputs: 0,
            outputs: 0,
        }
    }
    pub fn input(&mut self, dtype: DType, shape: Vec<Dim>) -> Value {
        self.inputs += 1;
        self.g
            .add_input(format!("x{}", self.inputs), TensorType::new(dtype, shape))
            .unwrap()
    }
    pub fn param(&mut self, name: &str, dtype: DType, shape: Vec<Dim>) -> Value {
        self.op(
            Op::Param {
                name: name.into(),
                ty: TensorType::new(dtype, shape),
            },
            &[],
        )
    }
    pub fn op(&mut self, op: Op, args: &[Value]) -> Value {
        match self.g.add(op.clone(), args) {
            Ok(v) => v,
            Err(e) => panic!("generator built a bad `{}`: {e}\n{}", op.name(), self.g),
        }
    }
    pub fn scalar(&mut self, dtype: DType, v: f64) -> Value {
        self.op(Op::Const(Literal::scalar(dtype, v)), &[])
    }
    pub fn ty(&self, v: Value) -> TensorType {
        self.g.ty(v).clone()
    }
    /// A value whose elements all equal `v`, spelled one of several ways.
    pub fn splat(&mut self, dtype: DType, v: f64, shape: &[Dim], rng: &mut StdRng) -> Value {
        let static_shape: Option<Vec<usize>> = shape
            .iter()
            .map(|d| d.as_const().map(|c| c as usize))
            .collect();
        match rng.random_range(0..4) {
            0 => self.scalar(dtype, v),
            1 => {
                let c = self.scalar(dtype, v);
                self.op(
                    Op::Broadcast {
                        shape: shape.to_vec(),
                    },
                    &[c],
                )
            }
            2 => {
                let one = self.op(Op::Const(Literal::filled(dtype, vec![1], v)), &[]);
                let units = vec![Dim::constant(1); shape.len()];
                let r = self.op(Op::Reshape { shape: units }, &[one]);
                self.op(
                    Op::Broadcast {
                        shape: shape.to_vec(),
                    },
                    &[r],
                )
            }
            _ => match static_shape {
                Some(s) if s.iter().product::<usize>() <= 16 => {
                    self.op(Op::Const(Literal::filled(dtype, s, v)), &[])
                }
                _ => self.scalar(dtype, v),
            },
        }
    }
    pub fn out(&mut self, v: Value) {
        self.outputs += 1;
        self.g.add_output(format!("y{}", self.outputs), v).unwrap();
    }
    pub fn finish(self) -> Graph {
        kiln_ir::verify(&self.g).expect("generated graphs verify");
        self.g
    }
}

/// A random dim: small constants and symbols.
pub fn dim(rng: &mut StdRng) -> Dim {
    match rng.random_range(0..6) {
        0 => Dim::sym("seq"),
        1 => Dim::sym("n"),
        k => Dim::constant(k as i64),
    }
}

/// A random shape of rank in `ranks`.
pub fn shape(rng: &mut StdRng, ranks: std::ops::RangeInclusive<usize>) -> Vec<Dim> {
    let r = rng.random_range(ranks);
    (0..r).map(|_| dim(rng)).collect()
}

pub fn float_dtype(rng: &mut StdRng) -> DType {
    [DType::F32, DType::F16, DType::BF16][rng.random_range(0..3)]
}

pub fn any_dtype(rng: &mut StdRng) -> DType {
    [
        DType::F32,
        DType::F16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::Bool,
    ][rng.random_range(0..6)]
}

/// A random permutation of `0..n`.
pub fn perm(rng: &mut StdRng, n: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        p.swap(i, j);
    }
    p
}

/// Every output of each call of a decoder `g` (input `tokens`, every other
/// input a state aliased by an output of its name, explicit size `past`)
/// over `tokens`: a prefill of `prefill` tokens, then one token per call,
/// the states (zeros of capacity `ctx` at first) carried between calls.
pub fn decode_calls(
    g: &Graph,
    w: &BTreeMap<String, Tensor>,
    tokens: &[i32],
    prefill: usize,
    ctx: usize,
) -> Vec<BTreeMap<String, Tensor>> {
    let b = [("ctx".to_string(), ctx as i64)].into();
    let mut state: BTreeMap<String, Tensor> = g
        .input_names()
        .zip(g.input_types())
        .filter(|(n, _)| *n != "tokens")
        .map(|(n, t)| {
            (
                n.to_string(),
                Tensor::zeros(t.dtype, t.eval_shape(&b).unwrap()),
            )
        })
        .collect();
    let mut steps = vec![prefill];
    steps.extend(vec![1; tokens.len() - prefill]);
    let (mut past, mut out) = (0, Vec::new());
    for n in steps {
        let mut inputs = state.clone();
        let ids = tokens[past..past + n].to_vec();
        inputs.insert("tokens".into(), Tensor::i32(vec![n], ids).unwrap());
        let opts = EvalOptions {
            sizes: [("past".to_string(), past as i64)].into(),
            ..EvalOptions::default()
        };
        let res = eval_with(g, &inputs, w, &opts).unwrap();
        for (k, v) in &res {
            if state.contains_key(k) {
                state.insert(k.clone(), v.clone());
            }
        }
        out.push(res);
        past += n;
    }
    out
}
