//! Typed errors: unsupported ops, fusion-contract violations, bad specs,
//! unknown size symbols, malformed MLIR; and `emit_mlir` for both targets.

use crate::harness::spec;
use crate::loops::loop_kernel;
use crate::rows::{reduce, row_kernel};
use crate::{fused, ty};
use kiln_codegen::{compile_cpu, compile_ptx, driver, emit_mlir, CodegenError, GpuArch, Target};
use kiln_ir::{BinaryOp, DType, FusionKind, Graph, Op, ReduceOp, ScanOp, UnaryOp};
use std::sync::Arc;

fn syms() -> Vec<String> {
    vec!["seq".to_string()]
}

#[test]
fn unsupported_ops_are_named() {
    let t = ty(DType::F32, &["seq", "8"]);
    let k = spec(
        "red",
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![1],
            keep_dims: false,
        },
        vec![t.clone()],
    );
    match compile_cpu(&[k], &syms()) {
        Err(CodegenError::Unsupported { kernel, op, .. }) => {
            assert_eq!((kernel.as_str(), op.as_str()), ("red", "reduce_sum"))
        }
        other => panic!("expected Unsupported, got {:?}", other.err()),
    }
    // A scan: carry f32[8], sequence f32[seq, 8].
    let mut body = Graph::new("step");
    let c = body.add_input("c", ty(DType::F32, &["8"])).unwrap();
    let x = body.add_input("x", ty(DType::F32, &["8"])).unwrap();
    let s = body.add(Op::Binary(BinaryOp::Add), &[c, x]).unwrap();
    body.add_output("c", s).unwrap();
    let scan = Op::Scan(ScanOp {
        body: Arc::new(body),
        num_carry: 1,
        num_xs: 1,
        axis: 0,
        reverse: false,
    });
    let k = spec("cumsum", scan, vec![ty(DType::F32, &["8"]), t]);
    let e = compile_ptx(&[k], &syms(), GpuArch::Sm90).expect_err("scan is unsupported");
    assert!(
        matches!(&e, CodegenError::Unsupported { op, .. } if op == "scan"),
        "{e}"
    );
    assert!(e.to_string().contains("`cumsum`"), "{e}");
}

#[test]
fn fusion_contract_violations() {
    // A reduction in a loop body.
    let op = fused(FusionKind::Loop, |g| {
        let x = g.add_input("x", ty(DType::F32, &["seq", "8"])).unwrap();
        let r = reduce(g, ReduceOp::Sum, x, &[1], true);
        let y = g.add(Op::Binary(BinaryOp::Sub), &[x, r]).unwrap();
        g.add_output("y", y).unwrap();
    });
    let k = spec("bad_loop", op, vec![ty(DType::F32, &["seq", "8"])]);
    let e = compile_cpu(&[k], &syms()).expect_err("contract violation");
    assert!(
        matches!(&e, CodegenError::Fusion { kernel, .. } if kernel == "bad_loop"),
        "{e}"
    );
    // A reshape of a reduced value in a row body.
    let k = row_kernel("bad_row", &[ty(DType::F32, &["seq", "8"])], |g, x| {
        let r = reduce(g, ReduceOp::Max, x[0], &[1], true);
        vec![g
            .add(
                Op::Reshape {
                    shape: vec!["seq".into()],
                },
                &[r],
            )
            .unwrap()]
    });
    let e = emit_mlir(&[k], &syms(), &Target::Cpu).expect_err("contract violation");
    assert!(matches!(&e, CodegenError::Fusion { .. }), "{e}");
    assert!(e.to_string().contains("reshape"), "{e}");
}

#[test]
fn bad_specs_and_symbols() {
    let t = ty(DType::F32, &["seq", "8"]);
    let good = loop_kernel("ok", std::slice::from_ref(&t), |g, x| {
        vec![g.add(Op::Unary(UnaryOp::Exp), &[x[0]]).unwrap()]
    });
    // Wrong result types.
    let mut k = good.clone();
    k.result_types = vec![ty(DType::F16, &["seq", "8"])];
    assert!(matches!(
        compile_cpu(&[k], &syms()),
        Err(CodegenError::BadSpec { .. })
    ));
    // Duplicate and malformed names.
    let e = emit_mlir(&[good.clone(), good.clone()], &syms(), &Target::Cpu)
        .err()
        .unwrap();
    assert!(matches!(e, CodegenError::BadSpec { .. }), "{e}");
    let mut k = good.clone();
    k.name = "not a name".into();
    assert!(matches!(
        emit_mlir(&[k], &syms(), &Target::Cpu),
        Err(CodegenError::BadSpec { .. })
    ));
    // A dim over a symbol the module does not pass.
    let e = compile_cpu(std::slice::from_ref(&good), &["past".to_string()])
        .err()
        .unwrap();
    assert!(
        matches!(&e, CodegenError::UnknownSymbol { symbol, .. } if symbol == "seq"),
        "{e}"
    );
}

#[test]
fn malformed_mlir_names_the_line() {
    let text = "module {\n  func.func @f() {\n    %x = arith.bogus_op : i64\n    return\n  }\n}\n";
    let e = driver::jit_cpu(text, &[]).err().expect("parse error");
    match &e {
        CodegenError::Parse { line: Some(l), .. } => assert!(l.contains("arith.bogus_op"), "{e}"),
        other => panic!("expected a parse error with its line, got {other}"),
    }
}

#[test]
fn emit_mlir_for_both_targets() {
    let t = ty(DType::F32, &["seq", "8"]);
    let k = loop_kernel("k0", &[t.clone(), t], |g, x| {
        vec![g.add(Op::Binary(BinaryOp::Mul), &[x[0], x[1]]).unwrap()]
    });
    let cpu = emit_mlir(std::slice::from_ref(&k), &syms(), &Target::Cpu).unwrap();
    assert!(
        cpu.contains("func.func @k0(") && cpu.contains("arith.mulf"),
        "{cpu}"
    );
    let gpu = emit_mlir(
        &[k],
        &syms(),
        &Target::Gpu {
            arch: GpuArch::Sm90,
        },
    )
    .unwrap();
    assert!(
        gpu.contains("gpu.func @k0(") && gpu.contains("gpu.block_id x"),
        "{gpu}"
    );
}

#[test]
fn module_is_send_sync_and_dumps_stages() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<kiln_codegen::CpuModule>();
    let dir = std::env::temp_dir().join(format!("kiln-codegen-dump-{}", std::process::id()));
    let t = ty(DType::F32, &["seq", "8"]);
    let k = loop_kernel("dumped", std::slice::from_ref(&t), |g, x| {
        vec![g.add(Op::Unary(UnaryOp::Neg), &[x[0]]).unwrap()]
    });
    // The variable is read once per compilation; other tests running now may
    // dump into the same folder too, which does not disturb them.
    std::env::set_var("KILN_DUMP_DIR", &dir);
    let r = compile_cpu(&[k], &syms());
    std::env::remove_var("KILN_DUMP_DIR");
    let m = r.unwrap_or_else(|e| panic!("{e}"));
    let input = std::fs::read_to_string(dir.join("codegen.00.input.mlir")).unwrap();
    let lowered = std::fs::read_to_string(dir.join("codegen.01.lower.mlir")).unwrap();
    assert!(input.contains("func @"), "{input}");
    assert!(lowered.contains("llvm.func @"), "{lowered}");
    assert!(m.llvm_dialect().contains("llvm.func @dumped("));
    std::fs::remove_dir_all(&dir).ok();
}
