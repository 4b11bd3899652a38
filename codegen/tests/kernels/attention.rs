//! `flash_attention` and `prflash_attention` kernels against the interpreter
//! (CPU), their PTX through ptxas (sm_90, sm_80), and their typed errors.
//!
//! Shapes cover head sizes 8/64/80/128 and a symbolic one, decode (`seq =
//! 1`) and prefill, key counts that are not a multiple of the tile,
//! grouped-query broadcasting, causal attention with the offset bound at
//! run time, a broadcast bias (with fully masked rows), harmonic slopes past
//! the exact-sum range, f16/bf16 operands; prflash over block sizes, `c`,
//! seeds and per-head/shared sampling — the kept blocks must agree with the
//! interpreter's exactly for the results to agree.

use crate::harness::{bindings, check, check_on, random, reference, spec, Rng};
use crate::ty;
use kiln_codegen::{compile_cpu, compile_ptx, CodegenError, GpuArch, KernelSpec};
use kiln_ir::attention::{prflash_probability, AttentionOp, PrFlashOp};
use kiln_ir::op::F64Bits;
use kiln_ir::tensor::rel_l2;
use kiln_ir::{Bindings, DType, Dim, Op, Tensor};

fn flash(causal: Option<&str>, bias: bool, slopes: &[f64], scale: f64) -> Op {
    Op::Attention(AttentionOp {
        scale: F64Bits(scale),
        causal: causal.is_some(),
        offset: Dim::from(causal.unwrap_or("0")),
        bias,
        slopes: slopes.iter().map(|&s| F64Bits(s)).collect(),
        kv_len: None,
    })
}

/// `flash` reading token-major keys and values (`kv_len`).
fn flash_tm(causal: Option<&str>, bias: bool, slopes: &[f64], kv_len: &str) -> Op {
    let Op::Attention(a) = flash(causal, bias, slopes, 0.17) else {
        unreachable!()
    };
    Op::Attention(AttentionOp {
        kv_len: Some(Dim::from(kv_len)),
        ..a
    })
}

/// Token-major operand types: `q: [qb.., tq, d]`, `k: [ctx, kb.., d]`,
/// `v: [ctx, kb.., dv]`: a cache of `ctx` rows.
fn operands_tm(
    dt: DType,
    qb: &[&str],
    kb: &[&str],
    d: &str,
    dv: &str,
    bias: Option<&[&str]>,
) -> Vec<kiln_ir::TensorType> {
    let mk = |lead: &str, b: &[&str], last: &str| {
        let mut s = vec![lead];
        s.extend_from_slice(b);
        s.push(last);
        ty(dt, &s)
    };
    let mut v = vec![
        {
            let mut s: Vec<&str> = qb.to_vec();
            s.extend(["seq", d]);
            ty(dt, &s)
        },
        mk("ctx", kb, d),
        mk("ctx", kb, dv),
    ];
    if let Some(b) = bias {
        v.push(ty(dt, b));
    }
    v
}

fn prflash(block: usize, c: f64, seed: u64, per_head: bool) -> Op {
    Op::PrFlash(PrFlashOp {
        scale: F64Bits(0.3),
        offset: Dim::from("past"),
        block,
        c: F64Bits(c),
        seed,
        per_head,
    })
}

/// q, k, v (and bias) types: `q: [qb.., tq, d]`, `k: [kb.., tk, d]`, `v: [kb.., tk, dv]`.
#[allow(clippy::too_many_arguments)]
fn operands(
    dt: DType,
    qb: &[&str],
    kb: &[&str],
    tq: &str,
    tk: &str,
    d: &str,
    dv: &str,
    bias: Option<&[&str]>,
) -> Vec<kiln_ir::TensorType> {
    let mk = |b: &[&str], t: &str, d: &str| {
        let mut s: Vec<&str> = b.to_vec();
        s.extend([t, d]);
        ty(dt, &s)
    };
    let mut v = vec![mk(qb, tq, d), mk(kb, tk, d), mk(kb, tk, dv)];
    if let Some(b) = bias {
        v.push(ty(dt, b));
    }
    v
}

/// The flash attention kernels of the tests (also compiled to PTX).
pub fn flash_specs() -> Vec<KernelSpec> {
    let f = DType::F32;
    let slopes8: Vec<f64> = (1..=8).map(|h| 2f64.powf(-(h as f64))).collect();
    vec![
        // Head size 8, not causal, Tk not a multiple of the tile.
        spec(
            "fa_d8",
            flash(None, false, &[], 0.35),
            operands(f, &["3"], &["3"], "seq", "ctx", "8", "8", None),
        ),
        // Head size 64, grouped-query (k/v batch 1 per group), causal with
        // a KV cache of `past` tokens.
        spec(
            "fa_gqa64",
            flash(Some("past"), false, &[], 0.125),
            operands(
                f,
                &["2", "3"],
                &["2", "1"],
                "seq",
                "past+seq",
                "64",
                "64",
                None,
            ),
        ),
        // Head size 80, a bias broadcast over heads, not causal.
        spec(
            "fa_bias80",
            flash(None, true, &[], 0.11),
            operands(
                f,
                &["4"],
                &["4"],
                "seq",
                "ctx",
                "80",
                "80",
                Some(&["1", "seq", "ctx"]),
            ),
        ),
        // Head size 128, harmonic slopes (8 heads), causal offset, q's
        // batch broadcast against k's and k's against q's.
        spec(
            "fa_slopes128",
            flash(Some("past"), false, &slopes8, 0.09),
            operands(
                f,
                &["1", "4"],
                &["2", "1"],
                "seq",
                "past+seq",
                "128",
                "128",
                None,
            ),
        ),
        // Value head size differing from the key's, a per-row bias and causal.
        spec(
            "fa_dv48",
            flash(Some("past"), true, &[], 0.2),
            operands(
                f,
                &["2"],
                &["1"],
                "seq",
                "past+seq",
                "16",
                "48",
                Some(&["seq", "past+seq"]),
            ),
        ),
        // A symbolic head size (vector loop and scalar tail).
        spec(
            "fa_symd",
            flash(Some("past"), false, &[], 0.3),
            operands(f, &["2"], &["2"], "seq", "past+seq", "hd", "hd", None),
        ),
        // Half-precision operands and results.
        spec(
            "fa_f16",
            flash(Some("past"), false, &[], 0.125),
            operands(
                DType::F16,
                &["2", "2"],
                &["2", "1"],
                "seq",
                "past+seq",
                "64",
                "64",
                None,
            ),
        ),
        // Token-major keys (a KV cache read in place, rows past `kv_len`
        // never read): grouped-query decode/prefill over a cache longer
        // than the keys used.
        spec(
            "fa_tm_gqa64",
            flash_tm(Some("past"), false, &[], "past+seq"),
            operands_tm(f, &["2", "3"], &["2", "1"], "64", "64", None),
        ),
        // Token-major, not causal, with a bias and a value head size of its
        // own; harmonic slopes over 8 heads at head size 20.
        spec(
            "fa_tm_bias",
            flash_tm(None, true, &[], "past+seq"),
            operands_tm(f, &["3"], &["3"], "24", "40", Some(&["seq", "past+seq"])),
        ),
        spec(
            "fa_tm_slopes",
            flash_tm(Some("past"), false, &slopes8, "past+seq"),
            operands_tm(f, &["8"], &["8"], "20", "20", None),
        ),
        spec(
            "fa_tm_f16",
            flash_tm(Some("past"), false, &[], "past+seq"),
            operands_tm(DType::F16, &["2", "2"], &["2", "1"], "64", "64", None),
        ),
        spec(
            "fa_bf16",
            flash(None, true, &[], 0.2),
            operands(
                DType::BF16,
                &["2"],
                &["2"],
                "seq",
                "ctx",
                "24",
                "40",
                Some(&["ctx"]),
            ),
        ),
    ]
}

fn tolerance(spec: &KernelSpec) -> f64 {
    match spec.operand_types[0].dtype {
        DType::F16 | DType::BF16 => 1e-2,
        _ => 1e-5,
    }
}

fn flash_bindings() -> Vec<Bindings> {
    // (seq, past): decode and prefill, past past the exact harmonic range.
    [(1, 0), (1, 77), (5, 3), (19, 0), (37, 90)]
        .iter()
        .map(|&(seq, past)| bind(seq, past, seq + past + 13, 20 + seq % 3))
        .collect()
}

/// Values for every symbol of the modules.
fn bind(seq: i64, past: i64, ctx: i64, hd: i64) -> Bindings {
    bindings(&[("seq", seq), ("past", past), ("ctx", ctx), ("hd", hd)])
}

const SYMBOLS: [&str; 4] = ["ctx", "hd", "past", "seq"];

fn symbols() -> Vec<String> {
    SYMBOLS.iter().map(|s| s.to_string()).collect()
}

#[test]
fn flash_attention_matches_interpreter() {
    let ks = flash_specs();
    let m = compile_cpu(&ks, &symbols()).unwrap_or_else(|e| panic!("{e}"));
    for (n, k) in ks.iter().enumerate() {
        check(&m, k, &flash_bindings(), tolerance(k), 7000 + 10 * n as u64);
    }
    let g = &m.launches()[1].grid;
    assert_eq!(g.dims.len(), 2, "attention grid is (batch, query tiles)");
}

/// A mask bias of `0`/`-inf` that hides whole rows: those rows are NaN in
/// both, the others agree.
#[test]
fn masked_rows_are_nan_like_the_interpreter() {
    let k = spec(
        "fa_mask",
        flash(None, true, &[], 0.5),
        operands(
            DType::F32,
            &["2"],
            &["2"],
            "seq",
            "ctx",
            "32",
            "32",
            Some(&["2", "seq", "ctx"]),
        ),
    );
    let m = compile_cpu(std::slice::from_ref(&k), &symbols()).unwrap_or_else(|e| panic!("{e}"));
    let b = bind(9, 0, 40, 1);
    let mut rng = Rng::new(99);
    let mut inputs: Vec<Tensor> = k.operand_types[..3]
        .iter()
        .map(|t| random(&mut rng, t, &b))
        .collect();
    // Row 2 of head 0 and row 5 of head 1 see nothing; elsewhere keys
    // 0..4 are hidden from the first tile and a sprinkle of others.
    let (seq, ctx) = (9, 40);
    let mut mask = vec![0.0f64; 2 * seq * ctx];
    for h in 0..2 {
        for i in 0..seq {
            for j in 0..ctx {
                let hidden = (h == 0 && i == 2) || (h == 1 && i == 5) || j < 4 || (i + j) % 7 == 0;
                if hidden {
                    mask[(h * seq + i) * ctx + j] = f64::NEG_INFINITY;
                }
            }
        }
    }
    inputs.push(Tensor::from_f64(DType::F32, vec![2, seq, ctx], &mask).unwrap());
    let want = reference(&k, &inputs, &b);
    let nans = want[0].to_f64_vec().iter().filter(|x| x.is_nan()).count();
    assert_eq!(nans, 2 * 32, "the interpreter has two NaN rows");
    check_on(&m, &k, &inputs, &b, 1e-5);
}

/// The prflash kernels of the tests: block sizes (a tile equal to the block,
/// a divisor of it, a block larger than the CPU tile), `c`, seeds, sampling.
pub fn prflash_specs() -> Vec<KernelSpec> {
    let cases: [(usize, f64, u64, bool); 6] = [
        (4, 1.0, 0, true),
        (4, 2.5, 7, false),
        (16, 1.0, 12345, true),
        (48, 1.5, 3, true),
        (64, 1.0, 99, false),
        (5, 3.0, 2024, true),
    ];
    cases
        .iter()
        .enumerate()
        .map(|(n, &(block, c, seed, per_head))| {
            let (d, kb): (&str, &[&str]) = if n % 2 == 0 {
                ("64", &["2", "3"])
            } else {
                ("24", &["2", "1"])
            };
            spec(
                &format!("pf_{n}_b{block}"),
                prflash(block, c, seed, per_head),
                operands(
                    DType::F32,
                    &["2", "3"],
                    kb,
                    "seq",
                    "past+seq",
                    d,
                    "32",
                    None,
                ),
            )
        })
        .collect()
}

#[test]
fn prflash_attention_matches_interpreter() {
    let ks = prflash_specs();
    let m = compile_cpu(&ks, &symbols()).unwrap_or_else(|e| panic!("{e}"));
    let bs: Vec<Bindings> = [(1, 0), (1, 150), (50, 0), (130, 37)]
        .iter()
        .map(|&(seq, past)| bind(seq, past, 1, 1))
        .collect();
    for (n, k) in ks.iter().enumerate() {
        check(&m, k, &bs, 1e-5, 8000 + 10 * n as u64);
    }
}

/// The sampled pattern matters: with a small `c`, prflash and exact causal
/// attention differ (so the agreement above is not the trivial all-kept
/// case), and a large `c` makes the kernel exact causal attention.
#[test]
fn prflash_drops_blocks_and_large_c_is_exact() {
    let types = operands(
        DType::F32,
        &["3"],
        &["3"],
        "seq",
        "past+seq",
        "16",
        "16",
        None,
    );
    let sparse = spec("pf_sparse", prflash(4, 1.0, 5, true), types.clone());
    let dense = spec("pf_dense", prflash(4, 1e9, 5, true), types.clone());
    let exact = spec("fa_exact", flash(Some("past"), false, &[], 0.3), types);
    let ks = vec![sparse, dense, exact];
    let m = compile_cpu(&ks, &symbols()).unwrap_or_else(|e| panic!("{e}"));
    let b = bind(64, 20, 1, 1);
    let mut rng = Rng::new(5);
    let inputs: Vec<Tensor> = ks[0]
        .operand_types
        .iter()
        .map(|t| random(&mut rng, t, &b))
        .collect();
    let out: Vec<Vec<f64>> = ks
        .iter()
        .map(|k| crate::harness::run(&m, k, &inputs, &b)[0].to_f64_vec())
        .collect();
    let e_sparse = rel_l2(&out[0], &out[2]);
    let e_dense = rel_l2(&out[1], &out[2]);
    assert!(
        e_sparse > 1e-2,
        "c = 1 kept (almost) everything: {e_sparse:e}"
    );
    assert!(e_dense < 1e-6, "c = 1e9 is not exact: {e_dense:e}");
}

/// The kernels' `min(1, c/n)` (an `f64` quotient without a division) is
/// bit for bit `f64` division, over many `c` and `n`: small `n`, `n` around
/// `c`, large `n` — so the `f32` probability the keep test compares with is
/// the interpreter's.
#[test]
fn keep_probability_is_bit_exact() {
    let mut rng = Rng::new(31);
    let mut cs = vec![
        1.0,
        1.5,
        2.5,
        std::f64::consts::PI,
        0.3,
        1e-5,
        7.77e5,
        3.0e12,
    ];
    cs.extend((0..8).map(|_| rng.uniform(0.5, 64.0)));
    for c in cs {
        let m = kiln_codegen::keep_probability_probe(c).unwrap_or_else(|e| panic!("{e}"));
        let f = m.lookup("kiln_keep_probe").expect("probe compiled");
        let mut ns: Vec<i64> = (1..=3000).collect();
        ns.extend((0..3000).map(|k| (c as i64 - 1500 + k).max(1)));
        ns.extend((0..3000).map(|_| {
            let e = rng.next_u32() % 50;
            ((rng.next_u32() as i64) << 19 | rng.next_u32() as i64) % (1i64 << e) + 1
        }));
        let mut out = vec![0f64; ns.len()];
        let args = [ns.as_mut_ptr() as *mut u8, out.as_mut_ptr() as *mut u8];
        let sizes = [ns.len() as i64];
        // SAFETY: the probe reads `len` i64s from args[0] and writes `len`
        // f64s to args[1], both that long; blocks 0..len are its grid.
        unsafe { f(args.as_ptr(), sizes.as_ptr(), 0, ns.len() as i64) };
        for (&n, &p) in ns.iter().zip(&out) {
            let want = prflash_probability(c, n as u64 - 1);
            assert_eq!(
                p.to_bits(),
                want.to_bits(),
                "c = {c:e}, n = {n}: got {p:e}, want {want:e}"
            );
        }
    }
}

fn ptxas_or_skip() -> Option<std::path::PathBuf> {
    let p = kiln_codegen::ptxas::find();
    if p.is_none() {
        eprintln!(
            "warning: ptxas not found (scripts/setup.sh installs it into .venv-ptxas, or set \
             KILN_PTXAS): attention PTX is generated but not assembled"
        );
    }
    p
}

#[test]
fn attention_ptx_assembles_for_sm90_and_sm80() {
    let mut ks = flash_specs();
    ks.extend(prflash_specs());
    // GPU-only shapes: a head size past the register limit accumulates in
    // the result row; a single-head decode.
    ks.push(spec(
        "fa_d600",
        flash(Some("past"), false, &[], 0.04),
        operands(
            DType::F32,
            &["2"],
            &["2"],
            "seq",
            "past+seq",
            "600",
            "600",
            None,
        ),
    ));
    ks.push(spec(
        "fa_decode",
        flash(Some("past"), false, &[], 0.125),
        operands(
            DType::F32,
            &["1"],
            &["1"],
            "1",
            "past+1",
            "128",
            "128",
            None,
        ),
    ));
    let ptxas = ptxas_or_skip();
    for arch in [GpuArch::Sm90, GpuArch::Sm80] {
        let t0 = std::time::Instant::now();
        let m = compile_ptx(&ks, &symbols(), arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        println!(
            "{arch}: {} attention kernels to PTX in {:?}",
            ks.len(),
            t0.elapsed()
        );
        let libdevice: Vec<&str> = m
            .ptx
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("__nv_"))
            .collect();
        assert!(
            libdevice.is_empty(),
            "{arch}: PTX calls libdevice: {libdevice:?}"
        );
        for k in &ks {
            assert!(
                m.ptx.contains(&format!(".entry {}(", k.name)),
                "{arch}: no entry for {}",
                k.name
            );
        }
        let Some(ptxas) = &ptxas else { continue };
        let usage = kiln_codegen::ptxas::assemble(ptxas, &m.ptx, arch)
            .unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(usage.len(), ks.len(), "{arch}: one report per entry");
        println!("{arch} ptxas -v:");
        for u in &usage {
            println!(
                "  {}: {} registers, {} bytes spill stores, {} bytes spill loads",
                u.name, u.registers, u.spill_stores, u.spill_loads
            );
        }
        let spilling: Vec<&str> = usage
            .iter()
            .filter(|u| (u.spill_stores, u.spill_loads) != (0, 0))
            .map(|u| u.name.as_str())
            .collect();
        assert!(spilling.is_empty(), "{arch}: kernels spill: {spilling:?}");
    }
}

#[test]
fn attention_errors_are_typed() {
    // On the GPU, a symbolic value head size accumulates in the result row,
    // which an f16 result cannot do.
    let k = spec(
        "fa_f16_symd",
        flash(None, false, &[], 0.5),
        operands(DType::F16, &["2"], &["2"], "seq", "ctx", "hd", "hd", None),
    );
    match compile_ptx(std::slice::from_ref(&k), &symbols(), GpuArch::Sm90) {
        Err(CodegenError::Unsupported { kernel, detail, .. }) => {
            assert_eq!(kernel, "fa_f16_symd");
            assert!(detail.contains("head size"), "{detail}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // The CPU kernel handles it.
    let m = compile_cpu(std::slice::from_ref(&k), &symbols()).unwrap_or_else(|e| panic!("{e}"));
    let bs = [bind(3, 0, 10, 5)];
    check(&m, &k, &bs, 1e-2, 1);
}
