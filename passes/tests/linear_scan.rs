//! `scan-linear-recurrence`: scans whose carries follow `h' = a ⊙ h + b`
//! become `linear_scan` with the rest of the body lifted over the time axis.
//! Soundness on random Mamba-like (diagonal state, several spellings of the
//! update, scan axis 0 or 1, forward or reverse) and RetNet-like (matrix
//! state per head, scalar decay, matmul readout) scans with random sizes;
//! a cumulative sum whose step output reads the old carry; non-linear bodies
//! left alone; the default pipeline picks the lifted form where the cost
//! model says so (the GPU; small states on the CPU); the built-in
//! `mamba-tiny` optimizes to `linear_scan` for the GPU and computes what it
//! did, and keeps its step loop on the CPU; so does `lion-tiny`'s Mamba and
//! RetNet operators for the GPU.

mod common;
mod linear_scan_support;

use common::*;
use kiln_ir::dsl::{ModelBuilder, Var};
use kiln_ir::{shape, DType, Graph, Tensor};
use kiln_passes::canonicalize::run_rules;
use kiln_passes::fuse::check_kernel_level;
use kiln_passes::rules::{find, RuleDef};
use kiln_passes::{optimize, CostTarget, PassOptions};
use linear_scan_support::{mamba_like, retnet_like};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::BTreeMap;

fn rule() -> &'static RuleDef {
    find("scan-linear-recurrence").expect("the rule is registered")
}

/// Top-level nodes named `name`.
/// A running sum whose step output is the carry *before* the step.
fn cumsum_before(r: &mut StdRng) -> Graph {
    let w = r.random_range(1..=4);
    let reverse = r.random_bool(0.5);
    let b = ModelBuilder::new("cumsum");
    let h0 = b.input("h0", DType::F32, shape![w]);
    let x = b.input("x", DType::F32, shape!["seq", w]);
    let (h, ys) = b.scan(&[&h0], &[&x], &[], 0, reverse, |_, c, xs, _| {
        let old = c[0].clone();
        (vec![&c[0] + &xs[0]], vec![&old * 3.0])
    });
    b.output("h", &h[0]);
    b.output("y", &ys[0]);
    b.finish().unwrap()
}

fn assert_rewritten_and_sound(g: &Graph, seed: u64) {
    let (after, report) =
        run_rules(g, &[rule()], &PassOptions::default()).unwrap_or_else(|e| panic!("{e}\n{g}"));
    kiln_ir::verify(&after).unwrap();
    assert!(report.applied(rule().name) > 0, "not rewritten:\n{g}");
    assert_eq!(count(&after, "scan"), 0, "the scan stays:\n{after}");
    assert_eq!(count(&after, "linear_scan"), 1, "{after}");
    let n = check_same(g, &after, false, seed, 3).unwrap_or_else(|m| panic!("{m}"));
    assert!(n > 0, "nothing compared");
}

#[test]
fn mamba_like_scans_become_linear_scans() {
    for seed in 0..24 {
        assert_rewritten_and_sound(&mamba_like(&mut rng(seed)), seed);
    }
}

#[test]
fn retnet_like_scans_become_linear_scans() {
    for seed in 0..16 {
        assert_rewritten_and_sound(&retnet_like(&mut rng(seed)), seed);
    }
}

#[test]
fn a_step_output_may_read_the_old_carry() {
    for seed in 0..8 {
        assert_rewritten_and_sound(&cumsum_before(&mut rng(seed)), seed);
    }
}

/// A one-carry scan over `x: [seq, 3]` with body `f(h, x)`.
fn one_carry(f: impl FnOnce(&Var, &Var) -> Var) -> Graph {
    let b = ModelBuilder::new("nonlinear");
    let h0 = b.input("h0", DType::F32, shape![3]);
    let x = b.input("x", DType::F32, shape!["seq", 3]);
    let (h, ys) = b.scan(&[&h0], &[&x], &[], 0, false, |_, c, xs, _| {
        let h = f(&c[0], &xs[0]);
        (vec![h.clone()], vec![h])
    });
    b.output("h", &h[0]);
    b.output("y", &ys[0]);
    b.finish().unwrap()
}

#[test]
fn non_linear_scans_are_left_alone() {
    let graphs = vec![
        ("tanh(a*h + b)", one_carry(|h, x| (&(h * 0.9) + x).tanh())),
        ("h*h + x", one_carry(|h, x| &(h * h) + x)),
        ("max(h, x)", one_carry(|h, x| h.maximum(x))),
        ("x / h", one_carry(|h, x| x / h)),
        ("no recurrence", one_carry(|_, x| x.exp())),
        (
            "h reshaped",
            one_carry(|h, x| &h.reshape(shape![3, 1]).reshape(shape![3]) + x),
        ),
        ("two carries mixed", {
            let b = ModelBuilder::new("mixed");
            let h0 = b.input("h0", DType::F32, shape![3]);
            let g0 = b.input("g0", DType::F32, shape![3]);
            let x = b.input("x", DType::F32, shape!["seq", 3]);
            let (h, _) = b.scan(&[&h0, &g0], &[&x], &[], 0, false, |_, c, xs, _| {
                // Each update is affine in its own carry, but reads the other.
                (vec![&(&c[0] * &xs[0]) + &c[1], &c[1] * 0.5], vec![])
            });
            b.output("h", &h[0]);
            b.output("g", &h[1]);
            b.finish().unwrap()
        }),
    ];
    for (what, g) in graphs {
        let (after, report) = run_rules(&g, &[rule()], &PassOptions::default()).unwrap();
        assert_eq!(
            report.applied(rule().name),
            0,
            "{what} was rewritten:\n{after}"
        );
        assert_eq!(count(&after, "scan"), 1, "{what}");
        assert_eq!(count(&after, "linear_scan"), 0, "{what}");
    }
}

fn target(t: CostTarget) -> PassOptions {
    PassOptions {
        target: t,
        ..PassOptions::default()
    }
}

/// Extraction keeps the lifted form where the cost model prices it lower:
/// always on the GPU (a launch per step is dear); on the CPU for these tiny
/// states too (the step's launch dominates).
#[test]
fn the_default_pipeline_lowers_linear_scans() {
    for (i, g) in [mamba_like(&mut rng(100)), retnet_like(&mut rng(101))]
        .iter()
        .enumerate()
    {
        for t in [CostTarget::Gpu, CostTarget::Cpu] {
            let after = optimize(g.clone(), &target(t)).unwrap();
            check_kernel_level(&after).unwrap();
            assert_eq!(count(&after, "scan"), 0, "{t:?}\n{after}");
            assert_eq!(count(&after, "linear_scan"), 1, "{t:?}\n{after}");
            check_same(g, &after, false, 7 + i as u64, 3).unwrap_or_else(|m| panic!("{m}"));
        }
    }
}

/// For the GPU the built-in `mamba-tiny` lowers every layer's selective
/// scan to `linear_scan`, computing what it did. On the CPU the step loop
/// stays: its per-step kernel keeps the `[d_inner, N]` state in cache, while
/// the lifted form writes and reads `[seq, d_inner, N]` decays, inputs and
/// states (measured: ~1.1 ms against ~1.7 ms for a 128-token prefill).
#[test]
fn mamba_tiny_optimizes_to_linear_scans() {
    let m = kiln_models::builtin("mamba-tiny").expect("a built-in");
    let g = (m.build)().unwrap();
    let layers = count(&g, "scan");
    assert!(layers > 0);
    let cpu = optimize(g.clone(), &target(CostTarget::Cpu)).unwrap();
    assert_eq!(count(&cpu, "scan"), layers, "{cpu}");
    let after = optimize(g.clone(), &target(CostTarget::Gpu)).unwrap();
    check_kernel_level(&after).unwrap();
    assert_eq!(count(&after, "scan"), 0, "{after}");
    assert_eq!(count(&after, "linear_scan"), layers);
    // Same logits and states on a short prompt, from zero and from random states.
    let weights: BTreeMap<String, Tensor> = (m.weights)(3);
    let mut r = rng(4);
    for round in 0..2 {
        let mut inputs = BTreeMap::new();
        for (name, ty) in g.input_names().zip(g.input_types()) {
            let t = if name == "tokens" {
                let ids: Vec<i32> = (0..5).map(|_| r.random_range(0..256)).collect();
                Tensor::i32(vec![5], ids).unwrap()
            } else if round == 0 {
                Tensor::zeros(ty.dtype, ty.eval_shape(&Default::default()).unwrap())
            } else {
                random_tensor(&ty, &Default::default(), &mut r)
            };
            inputs.insert(name.to_string(), t);
        }
        let want = run(&g, &inputs, &weights).unwrap();
        let got = run(&after, &inputs, &weights).unwrap();
        for (name, w) in &want {
            compare(&got[name], w, false).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

/// The built-in `lion-tiny` (Mamba and RetNet operators over voxel groups)
/// lowers all its scans for the GPU and computes what it did.
#[test]
fn lion_tiny_lowers_for_the_gpu() {
    let m = kiln_models::builtin("lion-tiny").expect("a built-in");
    let g = (m.build)().unwrap();
    let scans = count(&g, "scan");
    assert!(scans > 0);
    let after = optimize(g.clone(), &target(CostTarget::Gpu)).unwrap();
    check_kernel_level(&after).unwrap();
    assert_eq!(count(&after, "scan"), 0, "{after}");
    assert_eq!(count(&after, "linear_scan"), scans);
    let weights: BTreeMap<String, Tensor> = (m.weights)(5);
    let mut r = rng(6);
    let n = 11;
    let mut inputs = BTreeMap::new();
    for (name, ty) in g.input_names().zip(g.input_types()) {
        let b = [("n".to_string(), n as i64)].into_iter().collect();
        let t = if ty.dtype == DType::I32 {
            let shape = ty.eval_shape(&b).unwrap();
            let v: Vec<i32> = (0..shape.iter().product::<usize>())
                .map(|_| r.random_range(0..16))
                .collect();
            Tensor::i32(shape, v).unwrap()
        } else {
            random_tensor(&ty, &b, &mut r)
        };
        inputs.insert(name.to_string(), t);
    }
    let want = run(&g, &inputs, &weights).unwrap();
    let got = run(&after, &inputs, &weights).unwrap();
    for (name, w) in &want {
        compare(&got[name], w, false).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
