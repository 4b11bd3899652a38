//! `row` kernels: softmax, norms and plain reductions with prologues and
//! epilogues, at several bindings of `seq` with one compiled module.

use crate::harness::{bindings, check, spec};
use crate::{fused, ty};
use kiln_codegen::{compile_cpu, KernelSpec};
use kiln_ir::{
    BinaryOp, Bindings, DType, FusionKind, Graph, Literal, Op, ReduceOp, TensorType, UnaryOp, Value,
};

fn seqs() -> Vec<Bindings> {
    vec![
        bindings(&[("seq", 4)]),
        bindings(&[("seq", 1)]),
        bindings(&[("seq", 7)]),
    ]
}

pub fn row_kernel(
    name: &str,
    inputs: &[TensorType],
    f: impl FnOnce(&mut Graph, &[Value]) -> Vec<Value>,
) -> KernelSpec {
    let op = fused(FusionKind::Row, |g| {
        let xs: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| g.add_input(format!("x{i}"), t.clone()).unwrap())
            .collect();
        for (i, r) in f(g, &xs).into_iter().enumerate() {
            g.add_output(format!("out{i}"), r).unwrap();
        }
    });
    spec(name, op, inputs.to_vec())
}

pub fn reduce(g: &mut Graph, op: ReduceOp, x: Value, axes: &[usize], keep: bool) -> Value {
    g.add(
        Op::Reduce {
            op,
            axes: axes.to_vec(),
            keep_dims: keep,
        },
        &[x],
    )
    .unwrap()
}

fn bin(g: &mut Graph, op: BinaryOp, a: Value, b: Value) -> Value {
    g.add(Op::Binary(op), &[a, b]).unwrap()
}

fn un(g: &mut Graph, op: UnaryOp, a: Value) -> Value {
    g.add(Op::Unary(op), &[a]).unwrap()
}

fn scalar(g: &mut Graph, d: DType, v: f64) -> Value {
    g.add(Op::Const(Literal::scalar(d, v)), &[]).unwrap()
}

pub fn softmax(name: &str, d: DType, shape: &[&str]) -> KernelSpec {
    let r = shape.len() - 1;
    row_kernel(name, &[ty(d, shape)], |g, x| {
        let m = reduce(g, ReduceOp::Max, x[0], &[r], true);
        let s = bin(g, BinaryOp::Sub, x[0], m);
        let e = un(g, UnaryOp::Exp, s);
        let z = reduce(g, ReduceOp::Sum, e, &[r], true);
        vec![bin(g, BinaryOp::Div, e, z)]
    })
}

pub fn rmsnorm(name: &str, d: DType, n: &str) -> KernelSpec {
    row_kernel(name, &[ty(d, &["seq", n]), ty(d, &[n])], |g, x| {
        let sq = bin(g, BinaryOp::Mul, x[0], x[0]);
        let ms = reduce(g, ReduceOp::Mean, sq, &[1], true);
        let eps = scalar(g, d, 1e-6);
        let v = bin(g, BinaryOp::Add, ms, eps);
        let r = un(g, UnaryOp::Rsqrt, v);
        let y = bin(g, BinaryOp::Mul, x[0], r);
        vec![bin(g, BinaryOp::Mul, y, x[1])]
    })
}

pub fn layernorm(name: &str, n: &str) -> KernelSpec {
    let d = DType::F32;
    row_kernel(
        name,
        &[ty(d, &["seq", n]), ty(d, &[n]), ty(d, &[n])],
        |g, x| {
            let mu = reduce(g, ReduceOp::Mean, x[0], &[1], true);
            let c = bin(g, BinaryOp::Sub, x[0], mu);
            let c2 = bin(g, BinaryOp::Mul, c, c);
            let var = reduce(g, ReduceOp::Mean, c2, &[1], true);
            let eps = scalar(g, d, 1e-5);
            let v = bin(g, BinaryOp::Add, var, eps);
            let r = un(g, UnaryOp::Rsqrt, v);
            let y = bin(g, BinaryOp::Mul, c, r);
            let y = bin(g, BinaryOp::Mul, y, x[1]);
            // Two results: the normalized rows and the per-row mean.
            let mu_flat = reduce(g, ReduceOp::Mean, x[0], &[1], false);
            vec![bin(g, BinaryOp::Add, y, x[2]), mu_flat]
        },
    )
}

#[test]
fn softmax_norms_and_reductions() {
    let mut ks = vec![
        softmax("softmax", DType::F32, &["seq", "4", "33"]),
        softmax("softmax_long", DType::F32, &["seq", "1000"]),
        softmax("softmax_f16", DType::F16, &["seq", "65"]),
        softmax("softmax_bf16", DType::BF16, &["seq", "64"]),
        rmsnorm("rmsnorm", DType::F32, "64"),
        rmsnorm("rmsnorm_f16", DType::F16, "48"),
        layernorm("layernorm", "96"),
    ];
    // Plain reductions over two trailing axes, and over everything.
    for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::Mean] {
        ks.push(row_kernel(
            &format!("{}_2d", op.name()),
            &[ty(DType::F32, &["seq", "5", "7"])],
            |g, x| vec![reduce(g, op, x[0], &[1, 2], false)],
        ));
        ks.push(row_kernel(
            &format!("{}_all", op.name()),
            &[ty(DType::F32, &["seq", "3"])],
            |g, x| vec![reduce(g, op, x[0], &[0, 1], false)],
        ));
    }
    for d in [DType::I32, DType::I64, DType::U8, DType::I8] {
        for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
            ks.push(row_kernel(
                &format!("{}_{}", op.name(), d.name()),
                &[ty(d, &["seq", "9"])],
                |g, x| vec![reduce(g, op, x[0], &[1], true)],
            ));
        }
    }
    // A reduction of a data-movement prologue (a slice and a broadcast input),
    // with a broadcast epilogue.
    ks.push(row_kernel(
        "prologue_epilogue",
        &[ty(DType::F32, &["seq", "12"]), ty(DType::F32, &["1", "8"])],
        |g, x| {
            let s = g
                .add(
                    Op::Slice {
                        axis: 1,
                        start: 2.into(),
                        end: 10.into(),
                    },
                    &[x[0]],
                )
                .unwrap();
            let p = bin(g, BinaryOp::Mul, s, x[1]);
            let t = reduce(g, ReduceOp::Sum, p, &[1], true);
            let b = g
                .add(
                    Op::Broadcast {
                        shape: vec!["seq".into(), 8.into()],
                    },
                    &[t],
                )
                .unwrap();
            vec![bin(g, BinaryOp::Sub, s, b)]
        },
    ));
    let m = compile_cpu(&ks, &["seq".to_string()]).unwrap_or_else(|e| panic!("{e}"));
    for (i, k) in ks.iter().enumerate() {
        let tol = match k.operand_types[0].dtype {
            DType::F16 | DType::BF16 => 1e-2,
            _ => 1e-5,
        };
        check(&m, k, &seqs(), tol, 1000 + i as u64);
    }
}

/// Results over a reduction's index space are stored from inside its loop:
/// a state update next to its readout (`h' = exp(a)*h + b`, `y = sum(h'*c)`),
/// and `e = exp(x - max x)` (after the first reduction) next to `e / sum e`
/// (after the second, so stored by the final loop).
#[test]
fn results_stored_inside_reduction_loops() {
    let f = DType::F32;
    let t = ty(f, &["seq", "16"]);
    let state = row_kernel(
        "state_readout",
        &[t.clone(), t.clone(), t.clone(), t.clone()],
        |g, x| {
            let ea = un(g, UnaryOp::Exp, x[0]);
            let kept = bin(g, BinaryOp::Mul, ea, x[1]);
            let h = bin(g, BinaryOp::Add, kept, x[2]);
            let hc = bin(g, BinaryOp::Mul, h, x[3]);
            let y = reduce(g, ReduceOp::Sum, hc, &[1], false);
            vec![y, h]
        },
    );
    let soft = row_kernel("softmax_and_exp", std::slice::from_ref(&t), |g, x| {
        let m = reduce(g, ReduceOp::Max, x[0], &[1], true);
        let d = bin(g, BinaryOp::Sub, x[0], m);
        let e = un(g, UnaryOp::Exp, d);
        let s = reduce(g, ReduceOp::Sum, e, &[1], true);
        let p = bin(g, BinaryOp::Div, e, s);
        vec![p, e]
    });
    let ks = vec![state, soft];
    let m = compile_cpu(&ks, &["seq".to_string()]).unwrap_or_else(|e| panic!("{e}"));
    for (i, k) in ks.iter().enumerate() {
        check(&m, k, &seqs(), 1e-6, 900 + i as u64);
    }
}
