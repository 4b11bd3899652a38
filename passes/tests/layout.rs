//! The `layout` pass: which matmuls of a transpose become `matmul_t`, that
//! results do not change (the interpreter computes both forms with the same
//! accumulation order), and that the GPU target is left alone; attention
//! over a sliced, transposed KV cache reads the cache in place (`kv_len`),
//! with the same logits through a prefill and decode steps, and look-alikes
//! are left as written.

mod common;

use common::*;
use kiln_ir::{shape, DType, Dim, Graph, Op};
use kiln_models::llama;
use kiln_passes::{CostTarget, PassManager, PassOptions};

fn layout(g: &Graph, target: CostTarget) -> (Graph, String) {
    let opts = PassOptions {
        target,
        ..PassOptions::default()
    };
    let (out, reports) = PassManager::from_names(&["layout"])
        .unwrap()
        .run(g.clone(), &opts)
        .unwrap();
    kiln_ir::verify(&out).unwrap();
    (out, reports[0].detail.clone())
}

/// `x @ wᵀ` (a linear layer), a batched `q @ kᵀ`, a transpose that is also
/// an output (kept), and permutes that are not a last-two swap (left).
fn graph() -> Graph {
    let mut g = G::new("layout");
    let x = g.input(DType::F32, shape!["seq", 8]);
    let w = g.param("w", DType::F32, shape![5, 8]);
    let wt = g.op(Op::Permute { perm: vec![1, 0] }, &[w]);
    let y = g.op(Op::MatMul, &[x, wt]);
    g.out(y);
    let q = g.input(DType::F32, shape![2, "seq", 4]);
    let k = g.input(DType::F32, shape![2, 3, 4]);
    let kt = g.op(
        Op::Permute {
            perm: vec![0, 2, 1],
        },
        &[k],
    );
    let s = g.op(Op::MatMul, &[q, kt]);
    g.out(s);
    g.out(kt);
    // [3, 2, 4] -> [2, 4, 3]: moves a batch axis too; not a last-two swap.
    let r = g.input(DType::F32, shape![3, 2, 4]);
    let rp = g.op(
        Op::Permute {
            perm: vec![1, 2, 0],
        },
        &[r],
    );
    let z = g.op(Op::MatMul, &[q, rp]);
    g.out(z);
    g.finish()
}

/// `before` and `after` give exactly the same outputs on three random
/// environments.
fn same_results(before: &Graph, after: &Graph, seed: u64) {
    let mut rng = rng(seed);
    for _ in 0..3 {
        let (inputs, params) = random_env(before, &mut rng);
        let want = run(before, &inputs, &params).unwrap();
        let got = run(after, &inputs, &params).unwrap();
        for (name, w) in &want {
            compare(&got[name], w, true).unwrap_or_else(|m| panic!("{name}: {m}"));
        }
    }
}

#[test]
fn last_two_swaps_become_matmul_t_on_the_cpu() {
    let g = graph();
    let (out, detail) = layout(&g, CostTarget::Cpu);
    assert!(detail.starts_with("2 matmul(s)"), "{detail}");
    assert!(detail.contains("0 sibling"), "{detail}");
    assert_eq!(count(&out, "matmul_t"), 2, "{out}");
    assert_eq!(count(&out, "matmul"), 1, "{out}");
    // The weight's transpose is gone; `kt` (an output) and `rp` stay.
    assert_eq!(count(&out, "permute"), 2, "{out}");
    same_results(&g, &out, 7);
}

#[test]
fn the_gpu_keeps_the_transpose() {
    let g = graph();
    let (out, detail) = layout(&g, CostTarget::Gpu);
    assert!(detail.contains("GPU"), "{detail}");
    assert_eq!(count(&out, "matmul_t"), 0);
    assert_eq!(out.node_count(), g.node_count());
}

/// Llama (after `canonicalize` and `recognize`) before and after `layout`
/// and `dce` on the CPU, and the layout pass's detail.
fn llama_layout(cfg: &llama::LlamaConfig) -> (Graph, Graph, String) {
    let g = llama::build(cfg).unwrap();
    let opts = PassOptions::default();
    let (g, _) = PassManager::from_names(&["canonicalize", "recognize"])
        .unwrap()
        .run(g, &opts)
        .unwrap();
    let (out, reports) = PassManager::from_names(&["layout", "dce"])
        .unwrap()
        .run(g.clone(), &opts)
        .unwrap();
    kiln_ir::verify(&out).unwrap();
    (g, out, reports[0].detail.clone())
}

fn attentions(g: &Graph) -> Vec<kiln_ir::attention::AttentionOp> {
    g.node_ids()
        .filter_map(|n| match &g.node(n).op {
            Op::Attention(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn llama_attention_reads_its_kv_cache_in_place() {
    // Grouped-query, with the harmonic bias, and one KV head (whose
    // transpose canonicalization turns into a reshape).
    for (harmonic, kv_heads) in [(false, 2), (true, 2), (false, 1)] {
        let cfg = llama::LlamaConfig {
            kiln_harmonic_alibi: harmonic,
            num_key_value_heads: Some(kv_heads),
            ..llama::tiny_config()
        };
        let (before, after, detail) = llama_layout(&cfg);
        assert!(
            detail.contains("2 attention(s) read the KV cache in place"),
            "{detail}"
        );
        let ops = attentions(&after);
        assert_eq!(ops.len(), 2);
        for a in &ops {
            assert_eq!(a.kv_len, Some(Dim::from("past+seq")), "{a:?}");
        }
        // No slice of a cache (nor its transpose) is left to copy; each
        // layer's q/k/v and gate/up projections are slices of one merged
        // matmul_t (two layers).
        assert_eq!(
            count(&after, "slice"),
            count(&before, "slice") - 4 + 2 * 5,
            "{after}"
        );
        assert!(detail.contains("10 sibling matmul_t(s) merged"), "{detail}");
        // Per layer qkv, o, gate/up, down; the head for `logits` and
        // for `last_logits` (one weight read twice: not merged).
        assert_eq!(count(&after, "matmul_t"), 2 * 4 + 2, "{after}");
        // The same logits and caches, exactly (the interpreter reads the
        // token-major cache as the head-major copy it replaces).
        let w = llama::random_weights(&cfg, 11);
        let tokens: Vec<i32> = (0..12).map(|i| (i * 53 + 7) % 256).collect();
        let want = decode_calls(&before, &w, &tokens, 7, 16);
        let got = decode_calls(&after, &w, &tokens, 7, 16);
        for (step, (g, w)) in got.iter().zip(&want).enumerate() {
            for (name, t) in w {
                compare(&g[name], t, true).unwrap_or_else(|m| {
                    panic!("harmonic {harmonic}, {kv_heads} kv heads, step {step}, {name}: {m}")
                });
            }
        }
    }
}

/// Look-alikes keep their copies: keys that do not start at row 0, and
/// keys that are not a token-major view (only both in place qualifies).
#[test]
fn kv_look_alikes_are_left_alone() {
    let attn = |causal: bool| {
        Op::Attention(kiln_ir::attention::AttentionOp {
            scale: kiln_ir::op::F64Bits(0.5),
            causal,
            offset: Dim::from(if causal { "past" } else { "0" }),
            bias: false,
            slopes: vec![],
            kv_len: None,
        })
    };
    let slice = |start: &str, end: &str| Op::Slice {
        axis: 0,
        start: Dim::from(start),
        end: Dim::from(end),
    };
    let to_head_major = Op::Permute {
        perm: vec![1, 0, 2],
    };
    let mut g = G::new("kv");
    let q = g.input(DType::F32, shape![2, "seq", 8]);
    let cache = g.input(DType::F32, shape!["ctx", 2, 8]);
    // In place: both from row 0 to past+seq.
    let k = g.op(slice("0", "past+seq"), &[cache]);
    let k = g.op(to_head_major.clone(), &[k]);
    let a = g.op(attn(true), &[q, k, k]);
    g.out(a);
    // Starts at row 1.
    let k1 = g.op(slice("1", "past+seq+1"), &[cache]);
    let k1 = g.op(to_head_major.clone(), &[k1]);
    let b = g.op(attn(true), &[q, k1, k1]);
    g.out(b);
    // Values in place, keys from a cache stored head-major `[2, ctx, 8]`
    // (sliced on axis 1, nothing to undo).
    let v2 = g.op(slice("0", "seq"), &[cache]);
    let v2 = g.op(to_head_major, &[v2]);
    let hm = g.input(DType::F32, shape![2, "ctx", 8]);
    let k3 = g.op(
        Op::Slice {
            axis: 1,
            start: Dim::from("0"),
            end: Dim::from("seq"),
        },
        &[hm],
    );
    let d = g.op(attn(false), &[q, k3, v2]);
    g.out(d);
    let g = g.finish();
    let (out, detail) = layout(&g, CostTarget::Cpu);
    assert!(detail.contains("1 attention(s)"), "{detail}\n{out}");
    let ops = attentions(&out);
    assert_eq!(
        ops.iter().filter(|a| a.kv_len.is_some()).count(),
        1,
        "{out}"
    );
}

/// Linear layers of one input merge when each has a weight of its own with
/// the same dtype and contraction length; a weight read elsewhere too, one
/// of another length, an activation as B and another input stay apart.
/// Results are the same, exactly.
#[test]
fn sibling_matmuls_over_own_weights_merge() {
    let mut g = G::new("siblings");
    let x = g.input(DType::F32, shape!["seq", 8]);
    let x2 = g.input(DType::F32, shape!["seq", 6]);
    let act = g.input(DType::F32, shape![3, 8]);
    let linear = |g: &mut G, x, w| {
        let wt = g.op(Op::Permute { perm: vec![1, 0] }, &[w]);
        g.op(Op::MatMul, &[x, wt])
    };
    // Merged: three weights of x, widths 5, 3 and 4.
    for (name, n) in [("a", 5), ("b", 3), ("c", 4)] {
        let w = g.param(name, DType::F32, shape![n, 8]);
        let y = linear(&mut g, x, w);
        let y = g.op(Op::Unary(kiln_ir::UnaryOp::Neg), &[y]);
        g.out(y);
    }
    // Read twice (also an output): kept apart.
    let shared = g.param("shared", DType::F32, shape![2, 8]);
    let y = linear(&mut g, x, shared);
    g.out(y);
    g.out(shared);
    // An activation as B, and a weight of another input: alone.
    let y = linear(&mut g, x, act);
    g.out(y);
    let w6 = g.param("w6", DType::F32, shape![4, 6]);
    let y = linear(&mut g, x2, w6);
    g.out(y);
    let g = g.finish();
    let (out, detail) = layout(&g, CostTarget::Cpu);
    assert!(detail.contains("3 sibling matmul_t(s) merged"), "{detail}");
    assert_eq!(count(&out, "concat"), 1, "{out}");
    // 6 linear layers -> 4 matmul_t (one merged of three).
    assert_eq!(count(&out, "matmul_t"), 4, "{out}");
    same_results(&g, &out, 3);
    // The GPU target keeps them all.
    let (gpu, _) = layout(&g, CostTarget::Gpu);
    assert_eq!(count(&gpu, "concat"), 0, "{gpu}");
}
