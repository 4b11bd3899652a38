//! `flash_attention` and `prflash_attention` against attention written out in
//! logical ops (matmul, scale, mask, softmax, matmul), in f64: plain,
//! causal with a KV-cache offset, grouped-query broadcasting, an additive
//! bias, harmonic slopes; prflash with a large `c` is exact causal attention;
//! the text form round-trips.

use kiln_ir::attention::{harmonic, prflash_keep, AttentionOp, PrFlashOp};
use kiln_ir::dsl::{ModelBuilder, Var};
use kiln_ir::interp::{eval_with, EvalOptions};
use kiln_ir::op::F64Bits;
use kiln_ir::{shape, DType, Dim, Graph, Literal, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

struct Case {
    /// `[heads.., T, D]` of q; k/v use `kv` for the batch dims.
    q: Vec<usize>,
    kv: Vec<usize>,
    dv: usize,
    tk: usize,
    causal: Option<usize>,
    bias: bool,
    slopes: Vec<f64>,
}

fn dims(v: &[usize]) -> Vec<Dim> {
    v.iter().map(|&d| Dim::from(d)).collect()
}

/// Builds `(attention op graph, written-out graph)` for a case.
fn graphs(c: &Case, scale: f64) -> (Graph, Graph) {
    let r = c.q.len();
    let tq = c.q[r - 2];
    let d = c.q[r - 1];
    let mut ks = c.kv.clone();
    ks.extend([c.tk, d]);
    let mut vs = c.kv.clone();
    vs.extend([c.tk, c.dv]);
    let mut bias_shape = c.q[..r - 2].to_vec();
    bias_shape.extend([tq, c.tk]);
    let build = |fused: bool| {
        let b = ModelBuilder::new("attn");
        let q = b.input("q", DType::F32, dims(&c.q));
        let k = b.input("k", DType::F32, dims(&ks));
        let v = b.input("v", DType::F32, dims(&vs));
        let bias = c
            .bias
            .then(|| b.input("bias", DType::F32, dims(&bias_shape)));
        let out = if fused {
            q.flash_attention(
                &k,
                &v,
                bias.as_ref(),
                AttentionOp {
                    scale: F64Bits(scale),
                    causal: c.causal.is_some(),
                    offset: Dim::from(c.causal.unwrap_or(0)),
                    bias: c.bias,
                    slopes: c.slopes.iter().map(|&s| F64Bits(s)).collect(),
                    kv_len: None,
                },
            )
        } else {
            written_out(&b, c, &q, &k, &v, bias.as_ref(), scale)
        };
        b.output("out", &out);
        b.finish().unwrap()
    };
    (build(true), build(false))
}

fn written_out(
    b: &ModelBuilder,
    c: &Case,
    q: &Var,
    k: &Var,
    v: &Var,
    bias: Option<&Var>,
    scale: f64,
) -> Var {
    let r = c.q.len() as i64;
    let tq = c.q[r as usize - 2];
    let mut s = q.matmul(&k.transpose(r - 2, r - 1)) * scale;
    if let Some(bias) = bias {
        s = s + bias;
    }
    if let Some(off) = c.causal {
        // Harmonic bias -slope_h·H(i+off-j) as a constant table, and the mask.
        if !c.slopes.is_empty() {
            let h = c.slopes.len();
            let mut t = Vec::new();
            for &m in &c.slopes {
                for i in 0..tq {
                    for j in 0..c.tk {
                        let p = i + off;
                        t.push(if j <= p {
                            -m * harmonic((p - j) as u64)
                        } else {
                            0.0
                        });
                    }
                }
            }
            let mut sh = c.q[..c.q.len() - 2].to_vec();
            sh.extend([tq, c.tk]);
            assert_eq!(sh.iter().product::<usize>(), h * tq * c.tk);
            s = s + b.constant(Literal::floats(DType::F32, sh, &t));
        }
        let qpos = b.arange(DType::I32, tq, off).reshape(shape![tq, 1]);
        let kpos = b.iota(DType::I32, shape![1, c.tk], 1);
        s = kpos.le(&qpos).select_scalar(&s, f64::NEG_INFINITY);
    }
    s.softmax(-1).matmul(v)
}

fn random_inputs(g: &Graph, seed: u64) -> BTreeMap<String, Tensor> {
    let mut r = StdRng::seed_from_u64(seed);
    g.input_types()
        .iter()
        .zip(g.input_names())
        .map(|(t, n)| {
            let shape: Vec<usize> = t
                .shape
                .iter()
                .map(|d| d.as_const().unwrap() as usize)
                .collect();
            let v: Vec<f64> = (0..shape.iter().product())
                .map(|_| r.random_range(-1.0..1.0f64))
                .collect();
            (
                n.to_string(),
                Tensor::from_f64(DType::F32, shape, &v).unwrap(),
            )
        })
        .collect()
}

fn run(g: &Graph, inputs: &BTreeMap<String, Tensor>) -> Vec<f64> {
    let out = eval_with(g, inputs, &BTreeMap::new(), &EvalOptions::f64()).unwrap();
    out["out"].to_f64_vec()
}

fn check(c: Case) {
    // The written-out harmonic table is an f32 constant: one rounding per entry.
    let tol = if c.slopes.is_empty() { 1e-12 } else { 1e-6 };
    let (fused, plain) = graphs(&c, 0.375);
    // Both forms print and parse back.
    for g in [&fused, &plain] {
        let text = kiln_ir::text::print(g);
        assert_eq!(&kiln_ir::text::parse(&text).unwrap(), g, "{text}");
    }
    for seed in 0..3 {
        let inputs = random_inputs(&fused, seed);
        let (a, b) = (run(&fused, &inputs), run(&plain, &inputs));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
}

#[test]
fn plain_attention_matches_the_written_out_form() {
    check(Case {
        q: vec![3, 5, 8],
        kv: vec![3],
        dv: 6,
        tk: 7,
        causal: None,
        bias: false,
        slopes: vec![],
    });
}

#[test]
fn causal_with_a_cache_offset_and_grouped_query_heads() {
    check(Case {
        q: vec![2, 3, 4, 8],
        kv: vec![2, 1],
        dv: 8,
        tk: 9,
        causal: Some(5),
        bias: false,
        slopes: vec![],
    });
}

#[test]
fn additive_bias_broadcast_and_causal() {
    check(Case {
        q: vec![4, 6, 4],
        kv: vec![4],
        dv: 3,
        tk: 6,
        causal: Some(0),
        bias: true,
        slopes: vec![],
    });
}

#[test]
fn harmonic_slopes_add_the_position_bias() {
    check(Case {
        q: vec![2, 2, 3, 4],
        kv: vec![2, 1],
        dv: 4,
        tk: 7,
        causal: Some(4),
        bias: false,
        slopes: vec![0.5, 0.25, 0.125, 0.0625],
    });
}

fn prflash_graph(op: PrFlashOp, q: &[usize], tk: usize) -> Graph {
    let b = ModelBuilder::new("pr");
    let r = q.len();
    let mut ks = q[..r - 2].to_vec();
    ks.extend([tk, q[r - 1]]);
    let qv = b.input("q", DType::F32, dims(q));
    let k = b.input("k", DType::F32, dims(&ks));
    let v = b.input("v", DType::F32, dims(&ks));
    b.output("out", &qv.prflash_attention(&k, &v, op));
    b.finish().unwrap()
}

#[test]
fn prflash_with_large_c_is_exact_causal_attention() {
    let op = PrFlashOp {
        scale: F64Bits(0.375),
        offset: Dim::from(3),
        block: 2,
        c: F64Bits(1e9),
        seed: 11,
        per_head: true,
    };
    let g = prflash_graph(op, &[3, 9, 4], 12);
    let text = kiln_ir::text::print(&g);
    assert_eq!(kiln_ir::text::parse(&text).unwrap(), g, "{text}");
    let (exact, _) = graphs(
        &Case {
            q: vec![3, 9, 4],
            kv: vec![3],
            dv: 4,
            tk: 12,
            causal: Some(3),
            bias: false,
            slopes: vec![],
        },
        0.375,
    );
    let inputs = random_inputs(&g, 5);
    let (a, b) = (run(&g, &inputs), run(&exact, &inputs));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-12, "{x} vs {y}");
    }
}

#[test]
fn prflash_with_small_c_drops_blocks_and_stays_finite() {
    let op = PrFlashOp {
        scale: F64Bits(1.0),
        offset: Dim::from(0),
        block: 2,
        c: F64Bits(1.0),
        seed: 3,
        per_head: false,
    };
    // With c = 1 every off-diagonal block is kept with probability 1/(d+1) < 1.
    let dropped = (1..16u64).any(|qb| (0..qb).any(|kb| !prflash_keep(&op, 0, qb, kb)));
    assert!(dropped);
    let g = prflash_graph(op, &[2, 32, 4], 32);
    let inputs = random_inputs(&g, 9);
    let (exact, _) = graphs(
        &Case {
            q: vec![2, 32, 4],
            kv: vec![2],
            dv: 4,
            tk: 32,
            causal: Some(0),
            bias: false,
            slopes: vec![],
        },
        1.0,
    );
    let (a, b) = (run(&g, &inputs), run(&exact, &inputs));
    assert!(
        a.iter().all(|x| x.is_finite()),
        "the diagonal block keeps every row non-empty"
    );
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-6));
}

#[test]
fn type_errors_name_the_problem() {
    let b = ModelBuilder::new("bad");
    let q = b.input("q", DType::F32, shape![2, 3, 4]);
    let k = b.input("k", DType::F32, shape![2, 3, 5]);
    let _ = q.flash_attention(
        &k,
        &k,
        None,
        AttentionOp {
            scale: F64Bits(1.0),
            causal: false,
            offset: Dim::from(0),
            bias: false,
            slopes: vec![],
            kv_len: None,
        },
    );
    let e = b.finish().unwrap_err().to_string();
    assert!(
        e.contains("flash_attention") && e.contains("head sizes"),
        "{e}"
    );
}

/// Token-major keys and values (`kv_len`): the same as the head-major
/// attention over the sliced, transposed cache; rows past `kv_len` (random
/// here) are never read; the text form round-trips with the attribute.
#[test]
fn token_major_kv_is_the_sliced_transposed_cache() {
    let c = Case {
        q: vec![2, 3, 5, 8],
        kv: vec![2, 1],
        dv: 6,
        tk: 9,
        causal: Some(4),
        bias: false,
        slopes: vec![],
    };
    let build = |in_place: bool| {
        let b = ModelBuilder::new("attn");
        let q = b.input("q", DType::F32, dims(&c.q));
        let k = b.input("k", DType::F32, shape![11, 2, 1, 8]);
        let v = b.input("v", DType::F32, shape![11, 2, 1, 6]);
        let out = if in_place {
            let op = AttentionOp {
                scale: F64Bits(0.375),
                causal: true,
                offset: Dim::from(4),
                bias: false,
                slopes: vec![],
                kv_len: Some(Dim::from(9)),
            };
            q.flash_attention(&k, &v, None, op)
        } else {
            let hm = |x: &Var| x.slice(0, 0, 9).permute(&[1, 2, 0, 3]);
            written_out(&b, &c, &q, &hm(&k), &hm(&v), None, 0.375)
        };
        b.output("out", &out);
        b.finish().unwrap()
    };
    let (in_place, plain) = (build(true), build(false));
    let text = kiln_ir::text::print(&in_place);
    assert!(text.contains("kv_len=9"), "{text}");
    assert_eq!(kiln_ir::text::parse(&text).unwrap(), in_place, "{text}");
    for seed in 0..3 {
        let inputs = random_inputs(&in_place, seed);
        let (a, b) = (run(&in_place, &inputs), run(&plain, &inputs));
        assert_eq!(a.len(), 2 * 3 * 5 * 6);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
}

#[test]
fn token_major_type_errors_name_the_problem() {
    let op = |len: i64| AttentionOp {
        scale: F64Bits(1.0),
        causal: false,
        offset: Dim::from(0),
        bias: false,
        slopes: vec![],
        kv_len: Some(Dim::from(len)),
    };
    let cases: [(Vec<Dim>, i64, &str); 2] = [
        (shape![6, 2, 4], 7, "exceeds the 6 rows"),
        (shape![5, 2, 4], 3, "disagree on the token axis"),
    ];
    for (vshape, len, want) in cases {
        let b = ModelBuilder::new("bad");
        let q = b.input("q", DType::F32, shape![2, 3, 4]);
        let k = b.input("k", DType::F32, shape![6, 2, 4]);
        let v = b.input("v", DType::F32, vshape);
        let _ = q.flash_attention(&k, &v, None, op(len));
        let e = b.finish().unwrap_err().to_string();
        assert!(e.contains("flash_attention") && e.contains(want), "{e}");
    }
}
