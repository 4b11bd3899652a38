//! `update_slice` kernels against the interpreter: every axis of a rank-3
//! base, a symbolic start (`past`), several dtypes (moved as raw bits), at
//! several bindings with one compiled module. The kernel's contract is that
//! the result buffer already holds the base, so the harness copies the base
//! into it first (as the planner's copy step, or the in-place aliasing, does).

use crate::harness::{assert_close, bindings, random, reference, spec, Rng};
use crate::ty;
use kiln_codegen::{compile_cpu, CpuModule, KernelSpec};
use kiln_ir::{Bindings, DType, Dim, Op, Tensor};

fn syms() -> Vec<String> {
    vec!["ctx".to_string(), "past".to_string(), "seq".to_string()]
}

/// `update_slice(base, update)` on `axis` at `past` with a `seq`-long update.
pub fn update_spec(name: &str, d: DType, axis: usize) -> KernelSpec {
    let mut base = vec!["3", "5", "7"];
    base[axis] = "ctx";
    let mut upd = base.clone();
    upd[axis] = "seq";
    spec(
        name,
        Op::UpdateSlice {
            axis,
            start: Dim::sym("past"),
        },
        vec![ty(d, &base), ty(d, &upd)],
    )
}

/// Runs `spec` with the result pre-filled with the base; blocks in two calls.
fn run_update(
    m: &CpuModule,
    spec: &KernelSpec,
    base: &Tensor,
    update: &Tensor,
    b: &Bindings,
) -> Tensor {
    let launch = m.launches().iter().find(|l| l.name == spec.name).unwrap();
    let f = m.lookup(&spec.name).unwrap();
    let words = |t: &Tensor| -> Vec<u64> {
        let bytes = t.to_bytes();
        let mut v = vec![0u64; bytes.len().div_ceil(8).max(1)];
        for (i, c) in bytes.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            v[i] = u64::from_le_bytes(w);
        }
        v
    };
    let mut bufs = [words(base), words(update), words(base)];
    let args: Vec<*mut u8> = bufs.iter_mut().map(|v| v.as_mut_ptr() as *mut u8).collect();
    let sizes: Vec<i64> = launch.symbols.iter().map(|s| b[s]).collect();
    let nb = launch.grid.num_blocks(b).unwrap() as i64;
    // SAFETY: buffers sized for base, update and result under `b`; sizes in
    // the module's symbol order; blocks in range.
    unsafe {
        f(args.as_ptr(), sizes.as_ptr(), 0, nb / 2);
        f(args.as_ptr(), sizes.as_ptr(), nb / 2, nb);
    }
    let n = base.numel() * base.dtype().size_bytes();
    let bytes: Vec<u8> = bufs[2]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .take(n)
        .collect();
    Tensor::from_bytes(base.dtype(), base.shape.clone(), &bytes).unwrap()
}

#[test]
fn update_slice_every_axis_and_dtype_with_symbolic_start() {
    let mut ks = Vec::new();
    for d in [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I64,
        DType::I8,
        DType::Bool,
    ] {
        for axis in 0..3 {
            ks.push(update_spec(&format!("upd_{}_{axis}", d.name()), d, axis));
        }
    }
    let m = compile_cpu(&ks, &syms()).unwrap_or_else(|e| panic!("{e}"));
    // (ctx, past, seq): fill from the start, the middle, up to the end, one
    // row (decode), nothing, and a tile-crossing last axis.
    let cases = [
        (9, 0, 4),
        (9, 3, 2),
        (9, 8, 1),
        (9, 9, 0),
        (16, 5, 11),
        (5000, 4000, 1000),
    ];
    let mut rng = Rng::new(11);
    for k in &ks {
        for &(ctx, past, seq) in &cases {
            let axis = match k.op {
                Op::UpdateSlice { axis, .. } => axis,
                _ => unreachable!(),
            };
            // The big case only on the last axis (keeps the test fast).
            if ctx > 100 && axis != 2 {
                continue;
            }
            let b = bindings(&[("ctx", ctx), ("past", past), ("seq", seq)]);
            let base = random(&mut rng, &k.operand_types[0], &b);
            let update = random(&mut rng, &k.operand_types[1], &b);
            let got = run_update(&m, k, &base, &update, &b);
            let want = &reference(k, &[base, update], &b)[0];
            assert_close(&format!("{} at {b:?}", k.name), &got, want, 0.0);
        }
    }
}
