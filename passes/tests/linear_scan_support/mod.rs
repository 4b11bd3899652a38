//! Random linear-recurrence scans for the `scan-linear-recurrence` tests
//! (its own test file and the rule soundness suite): Mamba's selective scan
//! and RetNet's decayed matrix state, with random sizes, spellings, scan axis
//! and direction.
#![allow(dead_code)]

use kiln_ir::dsl::{ModelBuilder, Var};
use kiln_ir::{shape, DType, Dim, Graph, Literal};
use rand::rngs::StdRng;
use rand::Rng;

/// A sequence input of per-step shape `step` with time (`seq`) at `axis`.
pub fn seq_input(b: &ModelBuilder, name: &str, step: &[usize], axis: usize) -> Var {
    let mut s: Vec<Dim> = step.iter().map(|&d| Dim::from(d)).collect();
    s.insert(axis, Dim::from("seq"));
    b.input(name, DType::F32, s)
}

/// Mamba's selective scan with random sizes, spelling, axis and direction.
pub fn mamba_like(r: &mut StdRng) -> Graph {
    let (d, n) = (r.random_range(1..=5), r.random_range(1..=4));
    let axis = r.random_range(0..=1usize);
    let reverse = r.random_bool(0.5);
    let spelling = r.random_range(0..4);
    let b = ModelBuilder::new("mamba");
    let h0 = b.input("h0", DType::F32, shape![d, n]);
    let dt = seq_input(&b, "dt", &[d], axis).softplus();
    let x = seq_input(&b, "x", &[d], axis);
    let bm = seq_input(&b, "bm", &[n], axis);
    let cm = seq_input(&b, "cm", &[n], axis);
    let a = -b.param("A_log", DType::F32, shape![d, n]).exp();
    let (h, ys) = b.scan(
        &[&h0],
        &[&dt, &x, &bm, &cm],
        &[&a],
        axis,
        reverse,
        |_, c, xs, k| {
            let (h, dt, x, bm, cm, a) = (&c[0], &xs[0], &xs[1], &xs[2], &xs[3], &k[0]);
            let decay = (dt.reshape(shape![d, 1]) * a).exp();
            let input = (dt * x).reshape(shape![d, 1]) * bm.reshape(shape![1, n]);
            let h = match spelling {
                0 => decay * h + input,
                1 => &input + &(h * &decay),
                2 => &(h * &decay) - &(-&input),
                _ => (&(h * &(&decay * 2.0)) + &(&input * 2.0)) / 2.0,
            };
            let y = (&h * &cm.reshape(shape![1, n])).sum(&[-1], false);
            (vec![h], vec![y])
        },
    );
    b.output("h", &h[0]);
    b.output("y", &ys[0]);
    b.finish().unwrap()
}

/// RetNet over `heads` heads: `S' = γ·keep·S + kᵀv`, `o = q S`.
pub fn retnet_like(r: &mut StdRng) -> Graph {
    let (heads, dh) = (r.random_range(1..=3), r.random_range(1..=3));
    let d = heads * dh;
    let reverse = r.random_bool(0.5);
    let b = ModelBuilder::new("retnet");
    let s0 = b.input("s0", DType::F32, shape![heads, dh, dh]);
    let q = b.input("q", DType::F32, shape!["seq", d]);
    let k = b.input("k", DType::F32, shape!["seq", d]);
    let v = b.input("v", DType::F32, shape!["seq", d]);
    let keep = b.input("keep", DType::F32, shape!["seq"]).sigmoid();
    let gammas = kiln_models::lion::retnet_gammas(heads);
    let gamma = b.constant(Literal::floats(DType::F32, vec![heads, 1, 1], &gammas));
    let (s, ys) = b.scan(
        &[&s0],
        &[&q, &k, &v, &keep],
        &[&gamma],
        0,
        reverse,
        |_, c, xs, inv| {
            let (s, q, k, v, keep, gamma) = (&c[0], &xs[0], &xs[1], &xs[2], &xs[3], &inv[0]);
            let outer = k.reshape(shape![heads, dh, 1]) * v.reshape(shape![heads, 1, dh]);
            let s = gamma * keep * s + outer;
            let o = q
                .reshape(shape![heads, 1, dh])
                .matmul(&s)
                .reshape(shape![d]);
            (vec![s], vec![o])
        },
    );
    b.output("s", &s[0]);
    b.output("o", &ys[0]);
    b.finish().unwrap()
}
