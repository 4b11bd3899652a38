//! `loop` kernels: element-wise ops, casts, broadcasting, data movement.

use crate::harness::{bindings, check, spec};
use crate::{fused, ty};
use kiln_codegen::compile_cpu;
use kiln_ir::{BinaryOp, DType, FusionKind, Op, UnaryOp};

#[test]
fn smoke_add_exp() {
    let t = ty(DType::F32, &["seq", "8"]);
    let op = fused(FusionKind::Loop, |g| {
        let x = g.add_input("x", t.clone()).unwrap();
        let y = g.add_input("y", t.clone()).unwrap();
        let s = g.add(Op::Binary(BinaryOp::Add), &[x, y]).unwrap();
        let e = g.add(Op::Unary(UnaryOp::Exp), &[s]).unwrap();
        g.add_output("out", e).unwrap();
    });
    let k = spec("add_exp", op, vec![t.clone(), t.clone()]);
    let syms = vec!["seq".to_string()];
    let m = compile_cpu(std::slice::from_ref(&k), &syms).unwrap_or_else(|e| panic!("{e}"));
    println!("{}", m.mlir());
    check(&m, &k, &[bindings(&[("seq", 3)]), bindings(&[("seq", 1)])], 1e-6, 1);
}
