//! The `layout` pass: which matmuls of a transpose become `matmul_t`, that
//! results do not change (the interpreter computes both forms with the same
//! accumulation order), and that the GPU target is left alone.

mod common;

use common::*;
use kiln_ir::{shape, DType, Graph, Op};
use kiln_passes::{CostTarget, PassManager, PassOptions};

fn count(g: &Graph, name: &str) -> usize {
    g.node_ids()
        .filter(|&n| g.node(n).op.name() == name)
        .count()
}

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

#[test]
fn last_two_swaps_become_matmul_t_on_the_cpu() {
    let g = graph();
    let (out, detail) = layout(&g, CostTarget::Cpu);
    assert!(detail.starts_with("2 matmul(s)"), "{detail}");
    assert_eq!(count(&out, "matmul_t"), 2, "{out}");
    assert_eq!(count(&out, "matmul"), 1, "{out}");
    // The weight's transpose is gone; `kt` (an output) and `rp` stay.
    assert_eq!(count(&out, "permute"), 2, "{out}");
    let mut rng = rng(7);
    for _ in 0..3 {
        let (inputs, params) = random_env(&g, &mut rng);
        let want = run(&g, &inputs, &params).unwrap();
        let got = run(&out, &inputs, &params).unwrap();
        for (name, w) in &want {
            compare(&got[name], w, true).unwrap_or_else(|m| panic!("{name}: {m}"));
        }
    }
}

#[test]
fn the_gpu_keeps_the_transpose() {
    let g = graph();
    let (out, detail) = layout(&g, CostTarget::Gpu);
    assert!(detail.contains("GPU"), "{detail}");
    assert_eq!(count(&out, "matmul_t"), 0);
    assert_eq!(out.node_count(), g.node_count());
}
