//! Attention written out in logical ops, in the many ways models spell it:
//! the builder behind the `flash-attention` rule's tests and its soundness
//! generator.
#![allow(dead_code)]

use kiln_ir::attention::harmonic;
use kiln_ir::dsl::{ModelBuilder, Var};
use kiln_ir::{DType, Dim, Graph, Literal};
use rand::rngs::StdRng;
use rand::Rng;

/// How `k` reaches the scores matmul.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KLayout {
    /// `k: [.., Tk, D]`, transposed with `transpose(-1, -2)`.
    Transpose,
    /// The input is `kᵀ: [.., D, Tk]` already.
    Pre,
    /// Llama's: a cache-shaped `[Tk, kv_heads, D]` permuted and reshaped to
    /// `[kv_heads, 1, D, Tk]` (q likewise from `[Tq, heads, D]`); needs
    /// `kv_batch = [kv_heads, 1]`, `q_batch = [kv_heads, group]`.
    Llama,
}

/// Where the `1/sqrt(d)` scale is applied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScaleAt {
    /// `(q·kᵀ) * c`.
    Scores,
    /// `(q·kᵀ) / sqrt(d)`.
    ScoresDiv,
    /// `(q * c)·kᵀ`.
    Q,
    /// `q·(k * c)ᵀ`.
    K,
    /// No scale (1).
    None,
    /// `mask(q·kᵀ) * c`: after the mask (and the harmonic term).
    AfterMask,
}

/// How the causal comparison is written (all mean `j <= i + past`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cmp {
    /// `select(kpos <= qpos, s, fill)`.
    Le,
    /// `select(qpos >= kpos, s, fill)`.
    Ge,
    /// `select(kpos < qpos + 1, s, fill)`.
    LtPlusOne,
    /// `select(kpos > qpos, fill, s)` (the condition marks the masked pairs).
    GtMasked,
    /// `select(not(kpos > qpos), s, fill)`.
    NotGt,
}

/// The mask.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mask {
    None,
    /// `select(causal, s, fill)` written as `cmp`.
    Select {
        fill: f64,
        cmp: Cmp,
    },
    /// `s + select(causal, 0, fill)`.
    Additive {
        fill: f64,
    },
    /// `s + const` (a static `[Tq, Tk]` literal of 0 and `fill`; static sizes only).
    Const {
        fill: f64,
    },
    /// `s + bias` with `bias: [Tq, Tk]` a graph input.
    BiasInput,
    /// `select(kpos != qpos, s, -inf)`: not causal (a bias).
    NotCausal,
}

/// How the softmax is written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Softmax {
    /// The DSL's: max-subtracted, divided by the row sum.
    Dsl,
    /// `exp(s) / sum(exp(s))`.
    NoMax,
    /// `exp(s - max) * recip(sum)`.
    Recip,
    /// Over the second-to-last axis (not attention).
    WrongAxis,
}

/// One spelling of attention.
#[derive(Clone, Debug)]
pub struct Spelling {
    pub q_batch: Vec<usize>,
    pub kv_batch: Vec<usize>,
    pub seq: Dim,
    /// Keys already cached before the queries (the causal offset); `Tk = past + seq`.
    pub past: Dim,
    pub d: usize,
    pub dv: usize,
    pub k: KLayout,
    pub scale: ScaleAt,
    pub mask: Mask,
    pub softmax: Softmax,
    /// Add Llama's harmonic position bias `slopes · gather(-H table, clamp(i + past - j))`.
    pub harmonic: bool,
    /// Table length of the harmonic bias (covers every distance).
    pub table: usize,
}

impl Default for Spelling {
    fn default() -> Self {
        Spelling {
            q_batch: vec![2, 2],
            kv_batch: vec![2, 1],
            seq: Dim::sym("seq"),
            past: Dim::sym("past"),
            d: 8,
            dv: 8,
            k: KLayout::Llama,
            scale: ScaleAt::Scores,
            mask: Mask::Select {
                fill: f64::NEG_INFINITY,
                cmp: Cmp::Le,
            },
            softmax: Softmax::Dsl,
            harmonic: false,
            table: 33,
        }
    }
}

fn dims(v: &[usize]) -> Vec<Dim> {
    v.iter().map(|&d| Dim::from(d)).collect()
}

fn with(batch: &[usize], tail: [Dim; 2]) -> Vec<Dim> {
    let mut s = dims(batch);
    s.extend(tail);
    s
}

/// ALiBi-like slopes for `n` heads.
pub fn slopes(n: usize) -> Vec<f64> {
    (1..=n)
        .map(|h| 2f64.powf(-8.0 * h as f64 / n as f64))
        .collect()
}

impl Spelling {
    pub fn tk(&self) -> Dim {
        &self.past + &self.seq
    }

    pub fn scale_value(&self) -> f64 {
        match self.scale {
            ScaleAt::None => 1.0,
            _ => 1.0 / (self.d as f64).sqrt(),
        }
    }

    fn heads(&self) -> usize {
        self.q_batch.iter().product()
    }

    /// The graph: inputs `q`, `k`, `v` (and `bias`), output `out`.
    pub fn build(&self) -> Graph {
        let b = ModelBuilder::new("attn");
        let (tq, tk, d, dv) = (self.seq.clone(), self.tk(), self.d, self.dv);
        let c = self.scale_value();
        let (q, kt, v) = match self.k {
            KLayout::Llama => {
                let (kvh, group) = (self.q_batch[0], self.q_batch[1]);
                let q = b.input(
                    "q",
                    DType::F32,
                    vec![tq.clone(), (kvh * group).into(), d.into()],
                );
                let k = b.input("k", DType::F32, vec![tk.clone(), kvh.into(), d.into()]);
                let v = b.input("v", DType::F32, vec![tk.clone(), kvh.into(), dv.into()]);
                let q = q
                    .reshape(vec![tq.clone(), kvh.into(), group.into(), d.into()])
                    .permute(&[1, 2, 0, 3]);
                let k = match self.scale {
                    ScaleAt::K => k * c,
                    _ => k,
                };
                let kt =
                    k.permute(&[1, 2, 0])
                        .reshape(vec![kvh.into(), 1.into(), d.into(), tk.clone()]);
                let v = v.permute(&[1, 0, 2]).reshape(vec![
                    kvh.into(),
                    1.into(),
                    tk.clone(),
                    dv.into(),
                ]);
                (q, kt, v)
            }
            KLayout::Transpose | KLayout::Pre => {
                let q = b.input("q", DType::F32, with(&self.q_batch, [tq.clone(), d.into()]));
                let v = b.input(
                    "v",
                    DType::F32,
                    with(&self.kv_batch, [tk.clone(), dv.into()]),
                );
                let r = self.kv_batch.len() as i64 + 2;
                let kt = if self.k == KLayout::Pre {
                    let kt = b.input(
                        "k",
                        DType::F32,
                        with(&self.kv_batch, [d.into(), tk.clone()]),
                    );
                    match self.scale {
                        ScaleAt::K => kt * c,
                        _ => kt,
                    }
                } else {
                    let k = b.input(
                        "k",
                        DType::F32,
                        with(&self.kv_batch, [tk.clone(), d.into()]),
                    );
                    let k = match self.scale {
                        ScaleAt::K => k * c,
                        _ => k,
                    };
                    k.transpose(r - 1, r - 2)
                };
                (q, kt, v)
            }
        };
        let q = match self.scale {
            ScaleAt::Q => q * c,
            _ => q,
        };
        let mut s = q.matmul(&kt);
        s = match self.scale {
            ScaleAt::Scores => s * c,
            ScaleAt::ScoresDiv => s / (self.d as f64).sqrt(),
            _ => s,
        };
        let qpos = b
            .arange(DType::I32, tq.clone(), self.past.clone())
            .reshape(vec![tq.clone(), 1.into()]);
        let kpos = b.iota(DType::I32, vec![1.into(), tk.clone()], 1);
        if self.harmonic {
            s = s + self.harmonic_term(&b, &qpos, &kpos);
        }
        s = match self.mask {
            Mask::None => s,
            Mask::Select { fill, cmp } => match cmp {
                Cmp::Le => kpos.le(&qpos).select_scalar(&s, fill),
                Cmp::Ge => qpos.ge(&kpos).select_scalar(&s, fill),
                Cmp::LtPlusOne => kpos.lt(&(&qpos + 1.0)).select_scalar(&s, fill),
                Cmp::GtMasked => {
                    let f = b.scalar(DType::F32, fill);
                    kpos.gt(&qpos).select(&f, &s)
                }
                Cmp::NotGt => kpos.gt(&qpos).not().select_scalar(&s, fill),
            },
            Mask::Additive { fill } => {
                let zero = b.scalar(DType::F32, 0.0);
                let f = b.scalar(DType::F32, fill);
                s + kpos.le(&qpos).select(&zero, &f)
            }
            Mask::Const { fill } => {
                let (q, k) = (
                    tq.as_const().expect("static seq") as usize,
                    self.tk().as_const().expect("static past") as usize,
                );
                let past = self.past.as_const().unwrap() as usize;
                let vals: Vec<f64> = (0..q * k)
                    .map(|n| if n % k <= n / k + past { 0.0 } else { fill })
                    .collect();
                s + b.constant(Literal::floats(DType::F32, vec![q, k], &vals))
            }
            Mask::BiasInput => s + b.input("bias", DType::F32, vec![tq.clone(), tk.clone()]),
            Mask::NotCausal => kpos.ne(&qpos).select_scalar(&s, f64::NEG_INFINITY),
        };
        if self.scale == ScaleAt::AfterMask {
            s = s * c;
        }
        let p = match self.softmax {
            Softmax::Dsl => s.softmax(-1),
            Softmax::WrongAxis => s.softmax(-2),
            Softmax::NoMax => {
                let e = s.exp();
                let sum = e.sum(&[-1], true);
                e / sum
            }
            Softmax::Recip => {
                let m = s.max(&[-1], true);
                let e = (s - m).exp();
                e.clone() * e.sum(&[-1], true).recip()
            }
        };
        b.output("out", &p.matmul(&v));
        b.finish().expect("the spelled attention builds")
    }

    /// `slopes[heads,1,1] * gather(-H table, min(max(qpos - kpos, 0), top))`.
    fn harmonic_term(&self, b: &ModelBuilder, qpos: &Var, kpos: &Var) -> Var {
        let n = self.table;
        let table: Vec<f64> = (0..n).map(|i| -harmonic(i as u64)).collect();
        let table = b.constant(Literal::floats(DType::F32, vec![n], &table));
        let zero = b.scalar(DType::I32, 0.0);
        let top = b.scalar(DType::I32, (n - 1) as f64);
        let dist = (qpos - kpos).maximum(&zero).minimum(&top);
        let mut sh = self.q_batch.clone();
        sh.extend([1, 1]);
        let slopes = b.constant(Literal::floats(DType::F32, sh, &slopes(self.heads())));
        slopes * table.gather(&dist, 0)
    }

    /// A random spelling that the rule must recognize; small shapes, symbolic
    /// or static sizes.
    pub fn random(r: &mut StdRng) -> Spelling {
        let k = [KLayout::Transpose, KLayout::Pre, KLayout::Llama][r.random_range(0..3)];
        let (q_batch, kv_batch) = match (k, r.random_range(0..3)) {
            (KLayout::Llama, _) | (_, 0) => {
                let kvh = r.random_range(1..=2);
                let g = r.random_range(1..=3);
                (vec![kvh, g], vec![kvh, 1])
            }
            (_, 1) => {
                let h = r.random_range(1..=3);
                (vec![h], vec![h])
            }
            _ => {
                let (bb, h) = (r.random_range(1..=2), r.random_range(1..=3));
                (vec![bb, h], vec![bb, h])
            }
        };
        let statics = r.random_bool(0.3);
        let seq = if statics {
            Dim::from(r.random_range(1..=4) as i64)
        } else {
            Dim::sym("seq")
        };
        let past = match r.random_range(0..3) {
            0 => Dim::from(0),
            1 if !statics => Dim::sym("past"),
            _ => Dim::from(r.random_range(0..=3) as i64),
        };
        let fill = [f64::NEG_INFINITY, -1e9, -1e4, f64::MIN][r.random_range(0..4)];
        let cmp =
            [Cmp::Le, Cmp::Ge, Cmp::LtPlusOne, Cmp::GtMasked, Cmp::NotGt][r.random_range(0..5)];
        let mask = match r.random_range(0..7) {
            0 => Mask::None,
            1 => Mask::Additive { fill },
            2 if statics => Mask::Const { fill },
            3 => Mask::BiasInput,
            4 => Mask::NotCausal,
            _ => Mask::Select { fill, cmp },
        };
        let causal = matches!(
            mask,
            Mask::Select { .. } | Mask::Additive { .. } | Mask::Const { .. }
        );
        Spelling {
            q_batch,
            kv_batch,
            seq,
            past,
            d: r.random_range(1..=6),
            dv: r.random_range(2..=5),
            k,
            // After the mask, a -1e4 fill scaled above -1e4 no longer masks.
            scale: [
                ScaleAt::Scores,
                ScaleAt::ScoresDiv,
                ScaleAt::Q,
                ScaleAt::K,
                ScaleAt::None,
                ScaleAt::AfterMask,
            ][r.random_range(if fill == -1e4 { 0..5 } else { 0..6 })],
            mask,
            softmax: [Softmax::Dsl, Softmax::NoMax, Softmax::Recip][r.random_range(0..3)],
            harmonic: causal && r.random_bool(0.3),
            table: 12,
        }
    }
}
