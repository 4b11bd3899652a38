//! The `flash-attention` rule: every spelling of attention becomes exactly
//! one `flash_attention` with the right scale, causal offset, bias and
//! slopes, and look-alikes are left alone or keep their meaning; the
//! interpreter agrees before and after.

mod attention_support;
mod common;

use attention_support::*;
use common::*;
use kiln_ir::attention::AttentionOp;
use kiln_ir::dsl::ModelBuilder;
use kiln_ir::interp::{eval_with, EvalOptions};
use kiln_ir::{DType, Dim, Graph, Op};
use kiln_passes::canonicalize::{canonicalize_stages, recognize_stages, rewrite_graph, run_rules};
use kiln_passes::rules::find;
use kiln_passes::PassOptions;

/// The graph after the rule alone, checked against the interpreter.
fn recognize(g: &Graph) -> Graph {
    let rule = find("flash-attention").expect("the rule is registered");
    let (out, _) = run_rules(g, &[rule], &PassOptions::default()).unwrap();
    kiln_ir::verify(&out).unwrap();
    check_f64(g, &out, 7, 4);
    out
}

/// Both graphs in f64 arithmetic on random environments: equal but for the
/// order of summation (and the f32 rounding of a harmonic table's entries).
/// The rewritten graph also runs at its declared precision.
fn check_f64(before: &Graph, after: &Graph, seed: u64, trials: usize) {
    let mut r = rng(seed);
    let opts = EvalOptions::f64();
    for _ in 0..trials {
        let (inputs, params) = random_env(before, &mut r);
        let want = eval_with(before, &inputs, &params, &opts).unwrap();
        let got =
            eval_with(after, &inputs, &params, &opts).unwrap_or_else(|e| panic!("{e}\n{after}"));
        run(after, &inputs, &params).unwrap_or_else(|e| panic!("{e}\n{after}"));
        for (name, w) in &want {
            let (x, y) = (got[name].to_f64_vec(), w.to_f64_vec());
            assert_eq!(x.len(), y.len());
            for (a, b) in x.iter().zip(&y) {
                let same =
                    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-6 * (1.0 + b.abs());
                assert!(
                    same,
                    "{name}: {a} vs {b}\nbefore:\n{before}\nafter:\n{after}"
                );
            }
        }
    }
}

fn attention_ops(g: &Graph) -> Vec<AttentionOp> {
    g.node_ids()
        .filter_map(|n| match &g.node(n).op {
            Op::Attention(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// The one attention op of the rewritten graph; the softmax is gone.
fn the_attention(s: &Spelling) -> AttentionOp {
    let g = s.build();
    let out = recognize(&g);
    let ops = attention_ops(&out);
    assert_eq!(ops.len(), 1, "{s:?}\n{out}");
    assert_eq!(
        count(&out, "exp"),
        0,
        "the written-out softmax stays:\n{out}"
    );
    assert_eq!(count(&out, "matmul"), 0, "{out}");
    ops.into_iter().next().unwrap()
}

fn assert_scale(a: &AttentionOp, want: f64) {
    assert!(
        (a.scale.0 - want).abs() <= 1e-6 * want.abs(),
        "scale {} want {want}",
        a.scale.0
    );
}

fn assert_causal(a: &AttentionOp, offset: &Dim) {
    assert!(a.causal, "{a:?}");
    assert_eq!(&a.offset, offset, "{a:?}");
}

#[test]
fn llama_spelling_is_causal_with_the_cache_offset() {
    let s = Spelling::default();
    let a = the_attention(&s);
    assert_scale(&a, 1.0 / 8f64.sqrt());
    assert_causal(&a, &Dim::sym("past"));
    assert!(!a.bias && a.slopes.is_empty(), "{a:?}");
}

#[test]
fn llama_spelling_through_canonicalize_and_recognize() {
    let g = Spelling {
        q_batch: vec![2, 3],
        d: 16,
        dv: 16,
        ..Spelling::default()
    }
    .build();
    let opts = PassOptions::default();
    let (canon, _, _) = rewrite_graph(&g, &canonicalize_stages(), &opts, "canonicalize").unwrap();
    let (rec, report, _) = rewrite_graph(&canon, &recognize_stages(), &opts, "recognize").unwrap();
    assert!(
        report.applied("flash-attention") > 0,
        "{}",
        report.summary()
    );
    let ops = attention_ops(&rec);
    assert_eq!(ops.len(), 1, "{rec}");
    assert_causal(&ops[0], &Dim::sym("past"));
    assert_eq!(count(&rec, "exp") + count(&rec, "reduce_max"), 0, "{rec}");
    check_f64(&g, &rec, 3, 4);
}

#[test]
fn large_negative_masks_are_causal() {
    for fill in [-1e9, -1e4, f64::MIN] {
        for mask in [Mask::Select { fill, cmp: Cmp::Le }, Mask::Additive { fill }] {
            let a = the_attention(&Spelling {
                mask,
                ..Spelling::default()
            });
            assert_causal(&a, &Dim::sym("past"));
            assert!(!a.bias, "{mask:?}: {a:?}");
        }
    }
    // A constant [Tq, Tk] mask of 0 and -1e9 (static sizes).
    for past in [0, 3] {
        let a = the_attention(&Spelling {
            seq: Dim::from(4),
            past: Dim::from(past),
            mask: Mask::Const { fill: -1e9 },
            ..Spelling::default()
        });
        assert_causal(&a, &Dim::from(past));
        assert!(!a.bias);
    }
}

#[test]
fn every_comparison_orientation_is_causal() {
    for cmp in [Cmp::Le, Cmp::Ge, Cmp::LtPlusOne, Cmp::GtMasked, Cmp::NotGt] {
        for past in [Dim::sym("past"), Dim::from(2)] {
            let a = the_attention(&Spelling {
                past: past.clone(),
                mask: Mask::Select {
                    fill: f64::NEG_INFINITY,
                    cmp,
                },
                ..Spelling::default()
            });
            assert_causal(&a, &past);
        }
    }
}

#[test]
fn scale_on_q_k_or_scores_becomes_one_scale() {
    for (scale, k) in [
        (ScaleAt::Scores, KLayout::Transpose),
        (ScaleAt::ScoresDiv, KLayout::Llama),
        (ScaleAt::Q, KLayout::Llama),
        (ScaleAt::K, KLayout::Llama),
        (ScaleAt::K, KLayout::Transpose),
        (ScaleAt::K, KLayout::Pre),
        (ScaleAt::None, KLayout::Pre),
        (ScaleAt::AfterMask, KLayout::Llama),
    ] {
        let s = Spelling {
            scale,
            k,
            d: 6,
            ..Spelling::default()
        };
        let a = the_attention(&s);
        assert_scale(&a, s.scale_value());
    }
}

#[test]
fn scale_after_the_mask_scales_biases_and_slopes() {
    let s = Spelling {
        scale: ScaleAt::AfterMask,
        harmonic: true,
        ..Spelling::default()
    };
    let a = the_attention(&s);
    assert_scale(&a, s.scale_value());
    assert_causal(&a, &Dim::sym("past"));
    let c = s.scale_value();
    for (m, w) in a.slopes.iter().zip(slopes(4)) {
        assert!((m.0 - c * w).abs() < 1e-6, "{} vs {}", m.0, c * w);
    }
    let a = the_attention(&Spelling {
        scale: ScaleAt::AfterMask,
        mask: Mask::BiasInput,
        ..Spelling::default()
    });
    assert!(a.bias && !a.causal, "{a:?}");
    // A -1e4 fill scaled by 1/sqrt(8) is no longer a mask: not recognized.
    let g = Spelling {
        scale: ScaleAt::AfterMask,
        mask: Mask::Additive { fill: -1e4 },
        ..Spelling::default()
    }
    .build();
    assert!(attention_ops(&recognize(&g)).is_empty());
}

#[test]
fn softmax_in_any_form() {
    for softmax in [Softmax::Dsl, Softmax::NoMax, Softmax::Recip] {
        let a = the_attention(&Spelling {
            softmax,
            ..Spelling::default()
        });
        assert_causal(&a, &Dim::sym("past"));
    }
}

#[test]
fn plain_batched_and_grouped_heads_of_any_size() {
    let cases = [
        (vec![4], vec![4], KLayout::Transpose),
        (vec![2, 3], vec![2, 3], KLayout::Transpose),
        (vec![3], vec![3], KLayout::Pre),
        (vec![2, 4], vec![2, 1], KLayout::Transpose),
        (vec![1, 3], vec![1, 1], KLayout::Llama),
    ];
    for (q_batch, kv_batch, k) in cases {
        for d in [1, 5, 16] {
            let a = the_attention(&Spelling {
                q_batch: q_batch.clone(),
                kv_batch: kv_batch.clone(),
                k,
                d,
                dv: d + 1,
                ..Spelling::default()
            });
            assert_causal(&a, &Dim::sym("past"));
            assert_scale(&a, 1.0 / (d as f64).sqrt());
        }
    }
}

#[test]
fn harmonic_position_bias_becomes_slopes() {
    let s = Spelling {
        harmonic: true,
        ..Spelling::default()
    };
    let a = the_attention(&s);
    assert_causal(&a, &Dim::sym("past"));
    assert!(!a.bias, "{a:?}");
    let want = slopes(4);
    assert_eq!(a.slopes.len(), want.len());
    for (m, w) in a.slopes.iter().zip(&want) {
        // The slope constant is f32.
        assert!((m.0 - w).abs() < 1e-6, "{} vs {w}", m.0);
    }
    // Without a causal mask the slopes do not apply: the term stays a bias.
    let a = the_attention(&Spelling {
        harmonic: true,
        mask: Mask::None,
        ..Spelling::default()
    });
    assert!(!a.causal && a.bias && a.slopes.is_empty(), "{a:?}");
}

#[test]
fn other_masks_become_the_bias_operand() {
    for mask in [Mask::BiasInput, Mask::NotCausal] {
        let a = the_attention(&Spelling {
            mask,
            ..Spelling::default()
        });
        assert!(!a.causal && a.bias, "{mask:?}: {a:?}");
    }
    let a = the_attention(&Spelling {
        mask: Mask::None,
        ..Spelling::default()
    });
    assert!(!a.causal && !a.bias, "{a:?}");
}

/// A mask of the wrong shape for causal attention, with `-inf`.
fn with_mask(anti: bool) -> Graph {
    let b = ModelBuilder::new("m");
    let tq = Dim::sym("seq");
    let tk = &Dim::sym("past") + &tq;
    let q = b.input("q", DType::F32, vec![3.into(), tq.clone(), 4.into()]);
    let k = b.input("k", DType::F32, vec![3.into(), tk.clone(), 4.into()]);
    let v = b.input("v", DType::F32, vec![3.into(), tk.clone(), 4.into()]);
    let s = q.matmul(&k.transpose(-1, -2));
    let kpos = b.iota(DType::I32, vec![1.into(), tk], 1);
    let cond = if anti {
        // j >= i + past: the upper triangle.
        let qpos = b
            .arange(DType::I32, tq.clone(), "past")
            .reshape(vec![tq, 1.into()]);
        kpos.ge(&qpos)
    } else {
        // j <= past for every row: the query position is broadcast, not i.
        let p = b.iota(DType::I32, vec![1.into(), 1.into()], 0)
            + b.arange(DType::I32, 1, "past")
                .reshape(vec![1.into(), 1.into()]);
        kpos.le(&p.broadcast_to(vec![tq, 1.into()]))
    };
    let p = cond.select_scalar(&s, f64::NEG_INFINITY).softmax(-1);
    b.output("out", &p.matmul(&v));
    b.finish().unwrap()
}

#[test]
fn look_alike_masks_are_not_causal() {
    for anti in [true, false] {
        let out = recognize(&with_mask(anti));
        let ops = attention_ops(&out);
        assert_eq!(ops.len(), 1, "{out}");
        assert!(!ops[0].causal && ops[0].bias, "{:?}", ops[0]);
    }
}

#[test]
fn softmax_over_another_axis_is_not_attention() {
    let g = Spelling {
        softmax: Softmax::WrongAxis,
        ..Spelling::default()
    }
    .build();
    let out = recognize(&g);
    assert!(attention_ops(&out).is_empty(), "{out}");
}

#[test]
fn matmul_chains_without_softmax_are_left_alone() {
    let b = ModelBuilder::new("chain");
    let q = b.input("q", DType::F32, vec![2.into(), "seq".into(), 4.into()]);
    let k = b.input("k", DType::F32, vec![2.into(), "seq".into(), 4.into()]);
    let v = b.input("v", DType::F32, vec![2.into(), "seq".into(), 4.into()]);
    // exp without normalization, and a normalization without exp.
    let s = q.matmul(&k.transpose(-1, -2)) * 0.5;
    let e = s.exp();
    let a = e.matmul(&v);
    let n = &s / &s.sum(&[-1], true);
    let c = n.matmul(&v);
    b.output("a", &a);
    b.output("c", &c);
    let g = b.finish().unwrap();
    let out = recognize(&g);
    assert!(attention_ops(&out).is_empty(), "{out}");
}

#[test]
fn random_spellings_are_recognized_and_sound() {
    let mut r = rng(2024);
    for _ in 0..100 {
        let s = Spelling::random(&mut r);
        let a = the_attention(&s);
        assert_scale(&a, s.scale_value());
        let causal = matches!(
            s.mask,
            Mask::Select { .. } | Mask::Additive { .. } | Mask::Const { .. }
        );
        // With one static query row every key is visible: the mask may fold
        // away (and the harmonic term then stays a bias).
        if s.seq == Dim::from(1) {
            continue;
        }
        assert_eq!(a.causal, causal, "{s:?}");
        if causal {
            assert_eq!(a.offset, s.past, "{s:?}");
            assert_eq!(a.slopes.is_empty(), !s.harmonic, "{s:?}: {a:?}");
        }
        assert_eq!(
            a.bias,
            matches!(s.mask, Mask::BiasInput | Mask::NotCausal),
            "{s:?}: {a:?}"
        );
    }
}
