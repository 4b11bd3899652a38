//! SAQ kernels against the interpreter (`kiln_ir::saq`): `saq_append`
//! state bytes exactly equal to the interpreter's after every call of a
//! prefill-then-decode sequence (chunks forming, stepping down, reaching
//! the bottom; several ladders, `G` below and above `S`, f16 inputs), and
//! `saq_attention` within f32 rounding of the interpreter's f64 over
//! states with every rung populated; both through ptxas (sm_90, sm_80).

use crate::harness::{assert_close, bindings, random, spec, Rng};
use kiln_codegen::{compile_cpu, compile_ptx, CpuModule, GpuArch, KernelSpec};
use kiln_ir::interp::{eval_op, EvalOptions};
use kiln_ir::op::F64Bits;
use kiln_ir::saq::{SaqAppendOp, SaqAttentionOp, SaqLayout, SaqSpec};
use kiln_ir::{Bindings, DType, Dim, Op, Tensor, TensorData, TensorType};

fn syms() -> Vec<String> {
    vec!["ctx".to_string(), "past".to_string(), "seq".to_string()]
}

fn saq(ladder: &[u32], s: usize, g: usize) -> SaqSpec {
    SaqSpec::new(ladder.to_vec(), s, g).unwrap()
}

fn state_ty(sp: &SaqSpec, heads: usize, dim: usize) -> TensorType {
    let l = SaqLayout::new(sp, heads, dim).unwrap();
    TensorType::new(DType::U8, vec![l.state_len(&Dim::sym("ctx"))])
}

fn kv_ty(d: DType, heads: usize, dim: usize) -> TensorType {
    TensorType::new(d, vec![Dim::sym("seq"), heads.into(), dim.into()])
}

fn append_spec(name: &str, sp: &SaqSpec, d: DType, heads: usize, dim: usize) -> KernelSpec {
    let op = Op::SaqAppend(SaqAppendOp {
        spec: sp.clone(),
        start: Dim::sym("past"),
    });
    let kv = kv_ty(d, heads, dim);
    spec(name, op, vec![state_ty(sp, heads, dim), kv.clone(), kv])
}

fn attention_spec(
    name: &str,
    sp: &SaqSpec,
    d: DType,
    heads: usize,
    group: usize,
    dim: usize,
) -> KernelSpec {
    let op = Op::SaqAttention(SaqAttentionOp {
        spec: sp.clone(),
        scale: F64Bits(0.3),
        offset: Dim::sym("past"),
    });
    let kv = kv_ty(d, heads, dim);
    let q = TensorType::new(
        d,
        vec![heads.into(), group.into(), Dim::sym("seq"), dim.into()],
    );
    spec(name, op, vec![q, state_ty(sp, heads, dim), kv.clone(), kv])
}

fn words(t: &Tensor) -> Vec<u64> {
    let bytes = t.to_bytes();
    let mut v = vec![0u64; bytes.len().div_ceil(8).max(1)];
    for (i, c) in bytes.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        v[i] = u64::from_le_bytes(w);
    }
    v
}

/// Runs compiled `saq_append` as the planner does: the result buffer holds
/// the state when the kernel starts; blocks in two calls.
fn run_append(
    m: &CpuModule,
    spec: &KernelSpec,
    state: &Tensor,
    k: &Tensor,
    v: &Tensor,
    b: &Bindings,
) -> Tensor {
    let launch = m.launches().iter().find(|l| l.name == spec.name).unwrap();
    let f = m.lookup(&spec.name).unwrap();
    let mut bufs = [words(state), words(k), words(v), words(state)];
    let args: Vec<*mut u8> = bufs.iter_mut().map(|v| v.as_mut_ptr() as *mut u8).collect();
    let sizes: Vec<i64> = launch.symbols.iter().map(|s| b[s]).collect();
    let nb = launch.grid.num_blocks(b).unwrap() as i64;
    // SAFETY: buffers sized for the state, k, v and the result under `b`;
    // sizes in the module's symbol order; blocks in range.
    unsafe {
        f(args.as_ptr(), sizes.as_ptr(), 0, nb / 2);
        f(args.as_ptr(), sizes.as_ptr(), nb / 2, nb);
    }
    let bytes: Vec<u8> = bufs[3]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .take(state.numel())
        .collect();
    Tensor::from_bytes(DType::U8, state.shape.clone(), &bytes).unwrap()
}

/// Appends `steps` token counts with the kernel and the interpreter side by
/// side; the states must agree byte for byte after every call. Returns the
/// final state and the tokens appended.
fn appends(
    sp: &SaqSpec,
    d: DType,
    heads: usize,
    dim: usize,
    ctx: usize,
    steps: &[usize],
    seed: u64,
) -> (Tensor, usize) {
    let ks = append_spec("saq_append_k", sp, d, heads, dim);
    let m = compile_cpu(std::slice::from_ref(&ks), &syms()).unwrap();
    let l = SaqLayout::new(sp, heads, dim).unwrap();
    let n = l.state_bytes(ctx);
    let mut state = Tensor::new(vec![n], TensorData::U8(vec![0; n])).unwrap();
    let mut rng = Rng::new(seed);
    let mut past = 0;
    for &seq in steps {
        let b = bindings(&[
            ("ctx", ctx as i64),
            ("past", past as i64),
            ("seq", seq as i64),
        ]);
        let k = random(&mut rng, &ks.operand_types[1], &b);
        let v = random(&mut rng, &ks.operand_types[2], &b);
        let got = run_append(&m, &ks, &state, &k, &v, &b);
        let want = eval_op(&ks.op, &[state.clone(), k, v], &b, &EvalOptions::default())
            .unwrap()
            .remove(0);
        if got != want {
            let (g, w) = (got.to_bytes(), want.to_bytes());
            let i = g.iter().zip(&w).position(|(a, b)| a != b).unwrap();
            panic!("{sp} {d}: state differs after {seq} tokens at {past}: first at byte {i} ({} vs {})", g[i], w[i]);
        }
        state = got;
        past += seq;
    }
    (state, past)
}

#[test]
fn saq_append_matches_the_interpreter_byte_for_byte() {
    // Prefill across several chunks, then decode through chunk formation,
    // step-downs and the bottom; then a multi-chunk call after decoding.
    let steps = [9, 1, 1, 1, 1, 2, 1, 1, 1, 6, 1, 1, 1];
    appends(&saq(&[16, 8, 4, 2], 4, 4), DType::F32, 2, 8, 40, &steps, 1);
    appends(
        &saq(&[16, 8, 4, 2], 4, 32),
        DType::F32,
        2,
        16,
        40,
        &steps,
        2,
    );
    appends(
        &saq(&[16, 4], 8, 2),
        DType::F16,
        1,
        8,
        40,
        &[17, 1, 1, 3, 1, 7],
        3,
    );
    appends(
        &saq(&[16, 8, 4, 2, 1], 2, 2),
        DType::F32,
        3,
        8,
        40,
        &steps,
        4,
    );
}

#[test]
fn saq_attention_matches_the_interpreter() {
    for (sp, heads, group, dim, steps) in [
        (saq(&[16, 8, 4, 2], 4, 4), 2, 2, 8, vec![13, 1, 1, 1, 1, 2]),
        (saq(&[16, 8, 4, 2], 4, 32), 1, 3, 16, vec![6, 1, 1, 1, 9, 1]),
        (saq(&[16, 2], 8, 4), 2, 1, 8, vec![20]),
    ] {
        let ks = attention_spec("saq_attention_k", &sp, DType::F32, heads, group, dim);
        let m = compile_cpu(std::slice::from_ref(&ks), &syms()).unwrap();
        // States of the same history, read at each step.
        let ctx = 40;
        let mut rng = Rng::new(11);
        let mut past = 0;
        let l = SaqLayout::new(&sp, heads, dim).unwrap();
        let n = l.state_bytes(ctx);
        let mut state = Tensor::new(vec![n], TensorData::U8(vec![0; n])).unwrap();
        let append = Op::SaqAppend(SaqAppendOp {
            spec: sp.clone(),
            start: Dim::sym("past"),
        });
        for seq in steps {
            let b = bindings(&[
                ("ctx", ctx as i64),
                ("past", past as i64),
                ("seq", seq as i64),
            ]);
            let k = random(&mut rng, &ks.operand_types[2], &b);
            let v = random(&mut rng, &ks.operand_types[3], &b);
            let q = random(&mut rng, &ks.operand_types[0], &b);
            state = eval_op(
                &append,
                &[state, k.clone(), v.clone()],
                &b,
                &EvalOptions::default(),
            )
            .unwrap()
            .remove(0);
            let inputs = [q, state.clone(), k, v];
            let got = crate::harness::run(&m, &ks, &inputs, &b).remove(0);
            let want = eval_op(&ks.op, &inputs, &b, &EvalOptions::default())
                .unwrap()
                .remove(0);
            assert_close(
                &format!("{sp} at past={past}, seq={seq}"),
                &got,
                &want,
                2e-6,
            );
            past += seq;
        }
        assert!(l.tokens_per_rung(past).iter().all(|&t| t > 0) || sp.ladder.len() == 2);
    }
}

#[test]
fn saq_kernels_assemble_for_sm90_and_sm80() {
    let ptxas = kiln_codegen::ptxas::find();
    if ptxas.is_none() {
        eprintln!("warning: ptxas not found (scripts/setup.sh installs it into .venv-ptxas, or set KILN_PTXAS): SAQ PTX generated but not assembled");
    }
    let sp = SaqSpec::default();
    let ks = vec![
        append_spec("saq_append_f32", &sp, DType::F32, 8, 128),
        attention_spec("saq_attention_f32", &sp, DType::F32, 8, 4, 128),
        append_spec(
            "saq_append_bf16",
            &saq(&[16, 4, 2], 16, 32),
            DType::BF16,
            2,
            64,
        ),
        attention_spec(
            "saq_attention_f16",
            &saq(&[16, 8], 16, 32),
            DType::F16,
            2,
            2,
            64,
        ),
    ];
    for arch in [GpuArch::Sm90, GpuArch::Sm80] {
        let m = compile_ptx(&ks, &syms(), arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let nv: Vec<&str> = m
            .ptx
            .lines()
            .filter(|l| l.contains("__nv_"))
            .take(3)
            .collect();
        assert!(nv.is_empty(), "{arch}: PTX calls libdevice: {nv:?}");
        for k in &ks {
            assert!(
                m.ptx.contains(&format!(".entry {}(", k.name)),
                "{arch}: no {}",
                k.name
            );
        }
        let Some(ptxas) = &ptxas else { continue };
        let usage = kiln_codegen::ptxas::assemble(ptxas, &m.ptx, arch)
            .unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(usage.len(), ks.len());
        for u in &usage {
            println!(
                "{arch} {}: {} registers, {}/{} spill bytes",
                u.name, u.registers, u.spill_stores, u.spill_loads
            );
        }
    }
}

#[test]
fn saq_attention_on_random_states_stays_finite() {
    // Garbage bytes are still decodable: finite scales and mins, codes in range.
    let sp = saq(&[16, 8, 4, 2], 4, 4);
    let ks = attention_spec("saq_attention_r", &sp, DType::F32, 1, 1, 8);
    let m = compile_cpu(std::slice::from_ref(&ks), &syms()).unwrap();
    let b = bindings(&[("ctx", 16), ("past", 14), ("seq", 1)]);
    let mut rng = Rng::new(5);
    let l = SaqLayout::new(&sp, 1, 8).unwrap();
    let bytes: Vec<u8> = (0..l.state_bytes(16))
        .map(|_| (rng.next_u32() % 7) as u8)
        .collect();
    let state = Tensor::new(vec![bytes.len()], TensorData::U8(bytes)).unwrap();
    let q = random(&mut rng, &ks.operand_types[0], &b);
    let k = random(&mut rng, &ks.operand_types[2], &b);
    let v = random(&mut rng, &ks.operand_types[3], &b);
    let inputs = [q, state, k, v];
    let got = crate::harness::run(&m, &ks, &inputs, &b).remove(0);
    let want = eval_op(&ks.op, &inputs, &b, &EvalOptions::default())
        .unwrap()
        .remove(0);
    assert_close("random state", &got, &want, 1e-5);
}
