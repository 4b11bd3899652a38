//! Narrow weight storage (`PassOptions::weights`, in the `lossy` pass):
//! which matmuls read their weight as `f16`/`bf16`, that the rewritten graph
//! computes exactly what the original computes on weights rounded to that
//! dtype (the only change is the weights' one rounding), and that the whole
//! CPU pipeline on Llama ends with every linear layer a `matmul_t` of a
//! weight declared narrow.

mod common;

use common::*;
use kiln_ir::{shape, DType, Graph, Op, Tensor};
use kiln_models::llama;
use kiln_passes::lossy::Lossy;
use kiln_passes::{CostTarget, Pass, PassError, PassManager, PassOptions};
use std::collections::BTreeMap;

fn narrowed(to: DType) -> PassOptions {
    PassOptions {
        weights: Some(to),
        ..PassOptions::default()
    }
}

/// `params` with the f32 tensors named by `pick` rounded to `to` (and kept f32).
fn rounded(
    params: &BTreeMap<String, Tensor>,
    to: DType,
    pick: impl Fn(&str) -> bool,
) -> BTreeMap<String, Tensor> {
    params
        .iter()
        .map(|(n, t)| {
            let t = if t.dtype() == DType::F32 && pick(n) {
                let r = Tensor::from_f64(to, t.shape.clone(), &t.to_f64_vec()).unwrap();
                Tensor::from_f64(DType::F32, t.shape.clone(), &r.to_f64_vec()).unwrap()
            } else {
                t.clone()
            };
            (n.clone(), t)
        })
        .collect()
}

/// `params` as `g` declares them: a weight the pass declared narrow is
/// rounded to its dtype (what `kiln::NarrowWeights` does).
fn as_declared(g: &Graph, params: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    let declared = g.params();
    params
        .iter()
        .map(|(n, t)| {
            let t = match declared.get(n) {
                Some(ty) if ty.dtype != t.dtype() => {
                    Tensor::from_f64(ty.dtype, t.shape.clone(), &t.to_f64_vec()).unwrap()
                }
                _ => t.clone(),
            };
            (n.clone(), t)
        })
        .collect()
}

/// A linear layer through a transpose; a weight read through reshape and
/// slice by two matmuls (cast once) and through the reshape by a gather;
/// an activation product, an f16 layer and an f32 weight under an f16
/// activation (all three left alone).
fn graph() -> Graph {
    let mut g = G::new("narrow");
    let x = g.input(DType::F32, shape!["seq", 8]);
    let w = g.param("w", DType::F32, shape![5, 8]);
    let wt = g.op(Op::Permute { perm: vec![1, 0] }, &[w]);
    let y = g.op(Op::MatMul, &[x, wt]);
    g.out(y);
    let e = g.param("e", DType::F32, shape![2, 6, 8]);
    let e2 = g.op(
        Op::Reshape {
            shape: shape![12, 8],
        },
        &[e],
    );
    let e3 = g.op(
        Op::Slice {
            axis: 0,
            start: 2.into(),
            end: 9.into(),
        },
        &[e2],
    );
    let z = g.op(Op::MatMulT, &[x, e3]);
    g.out(z);
    let ids = g.input(DType::I32, shape!["seq"]);
    let rows = g.op(Op::Gather { axis: 0 }, &[e2, ids]);
    g.out(rows);
    let x3 = g.input(DType::F32, shape!["seq", 8]);
    let z2 = g.op(Op::MatMulT, &[x3, e3]);
    g.out(z2);
    let x2 = g.input(DType::F32, shape![8, "seq"]);
    let act = g.op(Op::MatMul, &[x, x2]);
    g.out(act);
    let h = g.input(DType::F16, shape!["seq", 8]);
    let wh = g.param("wh", DType::F16, shape![3, 8]);
    let yh = g.op(Op::MatMulT, &[h, wh]);
    g.out(yh);
    let h2 = g.op(Op::Cast(DType::F16), &[w]);
    let yh2 = g.op(Op::MatMulT, &[h, h2]);
    g.out(yh2);
    g.finish()
}

#[test]
fn matmuls_of_f32_weights_read_them_narrow() {
    for to in [DType::BF16, DType::F16] {
        let g = graph();
        let (out, detail) = Lossy.run_with_detail(g.clone(), &narrowed(to)).unwrap();
        kiln_ir::verify(&out).unwrap();
        assert!(
            detail.contains(&format!(
                "weights stored as {to}: 2 weight(s) (1 declared {to}, 1 cast at load), read by 3 matmul(s) and 1 gather(s)"
            )),
            "{detail}"
        );
        let narrow_b = out
            .node_ids()
            .filter(|&n| matches!(out.node(n).op, Op::MatMul | Op::MatMulT))
            .filter(|&n| {
                let [a, b] = out.operands(n)[..] else {
                    panic!()
                };
                out.ty(a).dtype == DType::F32 && out.ty(b).dtype == to
            })
            .count();
        assert_eq!(narrow_b, 3, "{out}");
        // Two matmuls of one moved weight share its moves.
        assert_eq!(count(&out, "slice"), 1, "{out}");
        // `e` has no other reader: it is declared narrow. `w` is also cast
        // to f16 for the f16 layer: it keeps its narrowing cast.
        assert_eq!(out.params()["e"].dtype, to);
        assert_eq!(out.params()["w"].dtype, DType::F32);
        // w's cast, the gathered rows' widening, the f16 layer's own.
        assert_eq!(count(&out, "cast"), 3, "{out}");
        // Exactly the original graph on rounded weights, every output (the
        // gather's rows are the rounded table's too).
        let mut rng = rng(5);
        for _ in 0..4 {
            let (mut inputs, params) = random_env(&g, &mut rng);
            // The gather's indices (input x2), in range.
            let seq = inputs["x1"].shape[0];
            let ids = (0..seq).map(|i| (i * 5 % 12) as i32).collect();
            inputs.insert("x2".into(), Tensor::i32(vec![seq], ids).unwrap());
            let got = run(&out, &inputs, &as_declared(&out, &params)).unwrap();
            let want = run(&g, &inputs, &rounded(&params, to, |n| n == "w" || n == "e")).unwrap();
            let plain = run(&g, &inputs, &params).unwrap();
            for (name, t) in &got {
                let w = if ["y5", "y6", "y7"].contains(&name.as_str()) {
                    &plain[name]
                } else {
                    &want[name]
                };
                compare(t, w, true).unwrap_or_else(|m| panic!("{to} {name}: {m}"));
            }
        }
    }
}

#[test]
fn nothing_changes_unless_asked_and_bad_dtypes_are_named() {
    let g = graph();
    let (out, _) = Lossy
        .run_with_detail(g.clone(), &PassOptions::default())
        .unwrap();
    assert_eq!(out, g);
    match Lossy.run_with_detail(g, &narrowed(DType::I32)) {
        Err(e @ PassError::BadOption { .. }) => {
            assert!(e.to_string().contains("f16 or bf16, not i32"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

/// The default CPU pipeline on Llama with bf16 weights: every linear layer
/// (q, k, v, o, gate, up, down per layer, and the head) reads its weight
/// declared bf16 through a `matmul_t` (q/k/v and gate/up merged, over the
/// weights concatenated), and the embedding gathers bf16 rows. Logits
/// through a prefill and decode steps equal the original model's on rounded
/// weights.
#[test]
fn llama_linear_layers_read_bf16_weights() {
    let cfg = llama::tiny_config();
    let g = llama::build(&cfg).unwrap();
    let opts = narrowed(DType::BF16);
    let upto_dce = ["canonicalize", "recognize", "lossy", "layout", "dce"];
    let (out, reports) = PassManager::from_names(&upto_dce)
        .unwrap()
        .run(g.clone(), &opts)
        .unwrap();
    let linear = 7 * cfg.num_hidden_layers + 1;
    assert!(
        reports[2].detail.contains(&format!(
            "{} weight(s) ({} declared bf16, 0 cast at load), read by {} matmul(s) and 1 gather(s)",
            linear + 1,
            linear + 1,
            linear + 1
        )),
        "{}",
        reports[2].detail
    );
    let mt: Vec<_> = out
        .node_ids()
        .filter(|&n| out.node(n).op == Op::MatMulT)
        .collect();
    // Per layer q/k/v merged, o, gate/up merged, down (`layout` merges
    // siblings over their own weights); the head is read twice: all
    // positions' logits, and the last one's.
    assert_eq!(mt.len(), 4 * cfg.num_hidden_layers + 2);
    for &n in &mt {
        // A bf16 weight, or bf16 weights concatenated (at load).
        let b = out.operands(n)[1];
        assert_eq!(out.ty(b).dtype, DType::BF16);
        let weights = match out.node(b.node).op {
            Op::Concat { .. } => out.operands(b.node),
            _ => vec![b],
        };
        for w in weights {
            assert!(matches!(out.node(w.node).op, Op::Param { .. }), "{out}");
            assert_eq!(out.ty(w).dtype, DType::BF16);
        }
    }
    assert_eq!(count(&out, "matmul"), 0, "{out}");
    let w = llama::random_weights(&cfg, 3);
    let tokens: Vec<i32> = (0..10).map(|i| (i * 37 + 5) % 256).collect();
    let got = decode_calls(&out, &as_declared(&out, &w), &tokens, 6, 16);
    let matrix = |n: &str| !n.contains("norm");
    let want = decode_calls(&g, &rounded(&w, DType::BF16, matrix), &tokens, 6, 16);
    for (step, (g, w)) in got.iter().zip(&want).enumerate() {
        compare(&g["logits"], &w["logits"], false).unwrap_or_else(|m| panic!("step {step}: {m}"));
    }
    // The GPU keeps its transposes; the weights are narrowed under them.
    let gpu = PassOptions {
        target: CostTarget::Gpu,
        ..narrowed(DType::BF16)
    };
    let (out, _) = PassManager::from_names(&upto_dce)
        .unwrap()
        .run(g, &gpu)
        .unwrap();
    let narrow_mm = out
        .node_ids()
        .filter(|&n| out.node(n).op == Op::MatMul)
        .filter(|&n| out.ty(out.operands(n)[1]).dtype == DType::BF16)
        .count();
    assert_eq!(narrow_mm, linear + 1);
}
