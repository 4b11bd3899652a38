//! `flash_attention` and `prflash_attention` written directly with the DSL,
//! through the whole pipeline (`kiln::jit`: optimizer, planner, CPU
//! kernels, executor) against the reference interpreter: grouped-query
//! heads, a KV cache of `past` tokens (bound at run time) as the causal
//! offset, harmonic slopes, element-wise work around the kernels.

use kiln::{jit, CompileOptions, Executable};
use kiln_ir::attention::{AttentionOp, PrFlashOp};
use kiln_ir::dsl::ModelBuilder;
use kiln_ir::interp::{eval_with, EvalOptions};
use kiln_ir::op::F64Bits;
use kiln_ir::{shape, tensor::rel_l2, Bindings, DType, Graph, Tensor};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// 2 kv heads × 2 queries per kv head, head size 32; the cache holds
/// `past + seq` keys.
fn graph() -> Graph {
    let b = ModelBuilder::new("attn");
    let q = b.input("q", DType::F32, shape![2, 2, "seq", 32]);
    let k = b.input("k", DType::F32, shape![2, 1, "past+seq", 32]);
    let v = b.input("v", DType::F32, shape![2, 1, "past+seq", 32]);
    let slopes = [0.5, 0.25, 0.125, 0.0625].map(F64Bits).to_vec();
    let exact = (&q * 0.5).flash_attention(
        &k,
        &v,
        None,
        AttentionOp {
            scale: F64Bits(0.35),
            causal: true,
            offset: "past".into(),
            bias: false,
            slopes,
            kv_len: None,
        },
    );
    let sparse = q.prflash_attention(
        &k,
        &v,
        PrFlashOp {
            scale: F64Bits(0.18),
            offset: "past".into(),
            block: 4,
            c: F64Bits(1.5),
            seed: 11,
            per_head: true,
        },
    );
    b.output("exact", &(exact + 1.0));
    b.output("sparse", &sparse);
    b.finish().unwrap()
}

fn random(shape: Vec<usize>, rng: &mut impl Rng) -> Tensor {
    let n = shape.iter().product();
    let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::f32(shape, x).unwrap()
}

/// The compiled run's outputs and the interpreter's, on `inputs` with the
/// cache holding `past` tokens.
fn compiled_and_interpreted(
    exe: &mut Executable,
    g: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    past: usize,
) -> (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) {
    let sizes: Bindings = [("past".to_string(), past as i64)].into();
    let got = exe.run_with(inputs, &sizes).unwrap();
    let opts = EvalOptions {
        sizes,
        ..EvalOptions::default()
    };
    let want = eval_with(g, inputs, &BTreeMap::new(), &opts).unwrap();
    (got, want)
}

#[test]
fn attention_kernels_compiled_match_interpreter() {
    let g = graph();
    let weights: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut exe = jit(&g, &weights, &CompileOptions::default()).unwrap();
    let ops: Vec<&str> = exe.plan().kernels.iter().map(|k| k.op.name()).collect();
    assert!(ops.contains(&"flash_attention"), "{ops:?}");
    assert!(ops.contains(&"prflash_attention"), "{ops:?}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    // Decode steps and prefills, with and without a filled cache.
    for (seq, past) in [(1usize, 0usize), (1, 70), (9, 0), (23, 41)] {
        let inputs = BTreeMap::from([
            ("q".to_string(), random(vec![2, 2, seq, 32], &mut rng)),
            (
                "k".to_string(),
                random(vec![2, 1, past + seq, 32], &mut rng),
            ),
            (
                "v".to_string(),
                random(vec![2, 1, past + seq, 32], &mut rng),
            ),
        ]);
        let (got, want) = compiled_and_interpreted(&mut exe, &g, &inputs, past);
        for name in ["exact", "sparse"] {
            let (a, b) = (&got[name], &want[name]);
            assert_eq!(a.shape, vec![2, 2, seq, 32]);
            let e = rel_l2(&a.to_f64_vec(), &b.to_f64_vec());
            assert!(e < 1e-5, "{name} at seq={seq} past={past}: rel L2 {e:e}");
        }
    }
}

/// Token-major keys and values read in place from a cache of `ctx` rows
/// (`kv_len = past+seq`): compiled against the interpreter, and a call
/// whose keys would run past the cache is a typed range error, not a read
/// past the buffer.
#[test]
fn token_major_attention_reads_the_cache_in_place_within_its_rows() {
    let b = ModelBuilder::new("attn");
    let q = b.input("q", DType::F32, shape![2, 2, "seq", 32]);
    let k = b.input("k", DType::F32, shape!["ctx", 2, 1, 32]);
    let v = b.input("v", DType::F32, shape!["ctx", 2, 1, 32]);
    let out = q.flash_attention(
        &k,
        &v,
        None,
        AttentionOp {
            scale: F64Bits(0.35),
            causal: true,
            offset: "past".into(),
            bias: false,
            slopes: vec![],
            kv_len: Some("past+seq".into()),
        },
    );
    b.output("out", &out);
    let g = b.finish().unwrap();
    let weights: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut exe = jit(&g, &weights, &CompileOptions::default()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let ctx = 80;
    let inputs = |seq: usize, rng: &mut rand::rngs::StdRng| {
        BTreeMap::from([
            ("q".to_string(), random(vec![2, 2, seq, 32], rng)),
            ("k".to_string(), random(vec![ctx, 2, 1, 32], rng)),
            ("v".to_string(), random(vec![ctx, 2, 1, 32], rng)),
        ])
    };
    for (seq, past) in [(1usize, 0usize), (1, 70), (9, 0), (23, 41), (1, 79)] {
        let ins = inputs(seq, &mut rng);
        let (got, want) = compiled_and_interpreted(&mut exe, &g, &ins, past);
        let e = rel_l2(&got["out"].to_f64_vec(), &want["out"].to_f64_vec());
        assert!(e < 1e-5, "seq={seq} past={past}: rel L2 {e:e}");
    }
    let sizes: Bindings = [("past".to_string(), 75)].into();
    let e = exe.run_with(&inputs(6, &mut rng), &sizes).unwrap_err();
    assert!(e.to_string().contains("attended key count"), "{e}");
}
