//! `linear_scan` kernels against the interpreter (CPU): Mamba-like diagonal
//! and broadcast (RetNet-like per-head) coefficients, a scalar state, a
//! state that is not a multiple of the block's lanes, forward and reverse,
//! sequential and chunked schedules, empty, one-step and long sequences
//! with one compiled module; f16/bf16 states; PTX for sm_90/sm_80 through
//! ptxas (both schedules).

use crate::harness::{assert_close, bindings, reference, run, spec, Rng};
use crate::ty;
use kiln_codegen::{compile_cpu, compile_ptx, GpuArch, KernelSpec};
use kiln_ir::linear_scan::LinearScanOp;
use kiln_ir::{Bindings, DType, Op, Tensor, TensorType};

fn syms() -> Vec<String> {
    vec!["seq".to_string()]
}

/// `linear_scan` over `seq` steps: state `state`, coefficients `a`, `b`
/// (per-step shapes).
fn scan_spec(
    name: &str,
    d: DType,
    state: &[&str],
    a: &[&str],
    b: &[&str],
    reverse: bool,
    chunk: usize,
) -> KernelSpec {
    let with_time = |s: &[&str]| {
        let mut v = vec!["seq"];
        v.extend_from_slice(s);
        ty(d, &v)
    };
    spec(
        name,
        Op::LinearScan(LinearScanOp { reverse, chunk }),
        vec![ty(d, state), with_time(a), with_time(b)],
    )
}

/// Inputs that keep the recurrence bounded: `a` in [0.5, 1), `h0`, `b` in [-1, 1).
fn inputs(rng: &mut Rng, k: &KernelSpec, b: &Bindings) -> Vec<Tensor> {
    k.operand_types
        .iter()
        .enumerate()
        .map(|(i, t): (usize, &TensorType)| {
            let shape = t.eval_shape(b).unwrap();
            let n: usize = shape.iter().product();
            let (lo, hi) = if i == 1 { (0.5, 1.0) } else { (-1.0, 1.0) };
            let v: Vec<f64> = (0..n).map(|_| rng.uniform(lo, hi)).collect();
            Tensor::from_f64(t.dtype, shape, &v).unwrap()
        })
        .collect()
}

fn f32_specs() -> Vec<KernelSpec> {
    let f = DType::F32;
    let mut ks = Vec::new();
    for reverse in [false, true] {
        for chunk in [0usize, 2, 3, 8] {
            let tag = format!("{}_{chunk}", if reverse { "rev" } else { "fwd" });
            ks.push(scan_spec(
                &format!("mamba_{tag}"),
                f,
                &["8", "16"],
                &["8", "16"],
                &["8", "16"],
                reverse,
                chunk,
            ));
            ks.push(scan_spec(
                &format!("retnet_{tag}"),
                f,
                &["2", "3", "3"],
                &["2", "1", "1"],
                &["2", "3", "3"],
                reverse,
                chunk,
            ));
            ks.push(scan_spec(
                &format!("odd_{tag}"),
                f,
                &["5", "3"],
                &["5", "1"],
                &["1", "3"],
                reverse,
                chunk,
            ));
            // The CPU vector path: rows of 32 (two vectors), coefficients
            // contiguous, shared along the row, or both.
            ks.push(scan_spec(
                &format!("vec_{tag}"),
                f,
                &["3", "32"],
                &["3", "1"],
                &["3", "32"],
                reverse,
                chunk,
            ));
            // Five vectors: one block, its last vectors clamped.
            ks.push(scan_spec(
                &format!("vecshort_{tag}"),
                f,
                &["5", "16"],
                &["5", "1"],
                &["5", "16"],
                reverse,
                chunk,
            ));
            // Two blocks, the second short.
            ks.push(scan_spec(
                &format!("veclong_{tag}"),
                f,
                &["9", "16"],
                &["9", "16"],
                &["9", "16"],
                reverse,
                chunk,
            ));
            ks.push(scan_spec(
                &format!("vecfull_{tag}"),
                f,
                &["2", "16"],
                &["2", "16"],
                &["1", "16"],
                reverse,
                chunk,
            ));
            ks.push(scan_spec(
                &format!("scalar_{tag}"),
                f,
                &[],
                &[],
                &[],
                reverse,
                chunk,
            ));
        }
    }
    ks
}

#[test]
fn linear_scan_matches_the_interpreter() {
    let ks = f32_specs();
    let m = compile_cpu(&ks, &syms()).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng::new(3);
    for k in &ks {
        for seq in [0i64, 1, 2, 5, 37] {
            let b = bindings(&[("seq", seq)]);
            let x = inputs(&mut rng, k, &b);
            let got = run(&m, k, &x, &b);
            let want = reference(k, &x, &b);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_close(&format!("{} result {i} seq={seq}", k.name), g, w, 1e-5);
            }
        }
    }
}

#[test]
fn half_precision_states_round_on_store() {
    let ks: Vec<KernelSpec> = [DType::F16, DType::BF16]
        .into_iter()
        .flat_map(|d| {
            [false, true].map(|reverse| {
                scan_spec(
                    &format!("h_{}_{reverse}", d.name()),
                    d,
                    &["4", "6"],
                    &["4", "1"],
                    &["4", "6"],
                    reverse,
                    4,
                )
            })
        })
        .collect();
    let m = compile_cpu(&ks, &syms()).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng::new(9);
    for k in &ks {
        for seq in [0i64, 3, 12] {
            let b = bindings(&[("seq", seq)]);
            let x = inputs(&mut rng, k, &b);
            let got = run(&m, k, &x, &b);
            let want = reference(k, &x, &b);
            // The kernel carries f32, the interpreter f64: a 16-bit
            // rounding apart at most per element.
            let tol = if k.name.contains("bf16") { 1e-2 } else { 2e-3 };
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_close(&format!("{} result {i} seq={seq}", k.name), g, w, tol);
            }
        }
    }
}

#[test]
fn linear_scan_ptx_assembles() {
    let ptxas = kiln_codegen::ptxas::find();
    if ptxas.is_none() {
        eprintln!("warning: ptxas not found (scripts/setup.sh installs it): linear_scan PTX is generated but not assembled");
    }
    let f = DType::F32;
    let ks = vec![
        // Chunked on the GPU (small constant state), with and without a fixed length.
        scan_spec(
            "ls_mamba",
            f,
            &["128", "16"],
            &["128", "16"],
            &["128", "16"],
            false,
            0,
        ),
        scan_spec(
            "ls_retnet_rev",
            f,
            &["4", "8", "8"],
            &["4", "1", "1"],
            &["4", "8", "8"],
            true,
            16,
        ),
        // Sequential: a large state, a symbolic one, a 16-bit one.
        scan_spec(
            "ls_big",
            f,
            &["4096", "16"],
            &["4096", "1"],
            &["4096", "16"],
            false,
            0,
        ),
        scan_spec(
            "ls_sym",
            f,
            &["seq", "4"],
            &["1", "4"],
            &["seq", "4"],
            true,
            0,
        ),
        scan_spec(
            "ls_bf16",
            DType::BF16,
            &["64", "16"],
            &["64", "16"],
            &["64", "16"],
            false,
            0,
        ),
    ];
    for arch in [GpuArch::Sm90, GpuArch::Sm80] {
        let m = compile_ptx(&ks, &syms(), arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert!(!m.ptx.contains("__nv_"), "{arch}: PTX calls libdevice");
        for k in &ks {
            assert!(
                m.ptx.contains(&format!(".entry {}(", k.name)),
                "{arch}: {}",
                k.name
            );
        }
        // The chunked kernels synchronize their block between phases.
        assert!(
            m.ptx.contains("bar.sync"),
            "{arch}: no barrier in the chunked kernels"
        );
        let Some(ptxas) = &ptxas else { continue };
        let usage = kiln_codegen::ptxas::assemble(ptxas, &m.ptx, arch)
            .unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(usage.len(), ks.len());
        for u in &usage {
            assert_eq!(
                (u.spill_stores, u.spill_loads),
                (0, 0),
                "{arch}: {} spills",
                u.name
            );
            println!("{arch} {}: {} registers", u.name, u.registers);
        }
    }
}
