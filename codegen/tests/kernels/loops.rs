//! `loop` kernels: element-wise ops, casts, broadcasting, data movement.

use crate::harness::{bindings, check, check_on, random, spec, Rng};
use crate::{fused, ty};
use kiln_codegen::{compile_cpu, compile_cpu_with, CpuOptions, KernelSpec};
use kiln_ir::op::F64Bits;
use kiln_ir::{
    BinaryOp, Bindings, CmpOp, DType, Dim, FusionKind, Graph, Literal, Op, Tensor, TensorType,
    UnaryOp, Value,
};

fn syms() -> Vec<String> {
    vec!["seq".to_string()]
}

fn seqs() -> Vec<Bindings> {
    vec![
        bindings(&[("seq", 3)]),
        bindings(&[("seq", 1)]),
        bindings(&[("seq", 5)]),
    ]
}

/// A loop kernel applying `f` to inputs of the given types.
pub fn loop_kernel(
    name: &str,
    inputs: &[TensorType],
    f: impl FnOnce(&mut Graph, &[Value]) -> Vec<Value>,
) -> KernelSpec {
    let op = fused(FusionKind::Loop, |g| {
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

pub fn unary_specs(d: DType) -> Vec<KernelSpec> {
    let t = ty(d, &["seq", "37"]);
    UnaryOp::ALL
        .iter()
        .filter(|u| **u != UnaryOp::Not)
        .map(|&u| {
            loop_kernel(
                &format!("{}_{}", u.name(), d.name()),
                std::slice::from_ref(&t),
                |g, x| vec![g.add(Op::Unary(u), &[x[0]]).unwrap()],
            )
        })
        .collect()
}

#[test]
fn unary_f32_f16_bf16() {
    let mut ks = unary_specs(DType::F32);
    ks.extend(unary_specs(DType::F16));
    ks.extend(unary_specs(DType::BF16));
    let m = compile_cpu(&ks, &syms()).unwrap_or_else(|e| panic!("{e}"));
    for (i, k) in ks.iter().enumerate() {
        // 16-bit results may round the other way at a tie of the f32 value.
        let tol = if k.name.ends_with("f32") { 1e-6 } else { 4e-3 };
        check(&m, k, &seqs(), tol, 100 + i as u64);
    }
}

/// The GPU's formulas for transcendental functions, run on the CPU.
#[test]
fn unary_portable_math() {
    let mut ks = unary_specs(DType::F32);
    let t = ty(DType::F32, &["seq", "37"]);
    ks.push(loop_kernel("pow_f32", &[t.clone(), t.clone()], |g, x| {
        vec![g.add(Op::Binary(BinaryOp::Pow), &[x[0], x[1]]).unwrap()]
    }));
    let opts = CpuOptions {
        portable_math: true,
    };
    let m = compile_cpu_with(&ks, &syms(), &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(!m.mlir().contains("math.exp "), "portable math uses exp2");
    for (i, k) in ks.iter().enumerate() {
        check(&m, k, &seqs(), 2e-6, 200 + i as u64);
    }
    // Wide arguments: range reduction of sin/cos, saturation of tanh, tails.
    let b = bindings(&[("seq", 4)]);
    let vals: Vec<f64> = (0..4 * 37).map(|i| (i as f64 - 74.0) * 0.37).collect();
    let x = Tensor::from_f64(DType::F32, vec![4, 37], &vals).unwrap();
    for k in &ks[..ks.len() - 1] {
        let tol = if k.name.starts_with("exp") {
            1e-5
        } else {
            2e-6
        };
        check_on(&m, k, std::slice::from_ref(&x), &b, tol);
    }
}

#[test]
fn binary_and_compare_all_dtypes() {
    let mut ks = Vec::new();
    for d in [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::I64,
        DType::I8,
        DType::U8,
    ] {
        let a = ty(d, &["seq", "1", "9"]);
        let b = ty(d, &["4", "9"]);
        for &op in BinaryOp::ALL {
            let ok = match op {
                BinaryOp::And | BinaryOp::Or => false,
                BinaryOp::Pow => d.is_float(),
                // Division is tested separately with non-zero divisors.
                BinaryOp::Div => d.is_float(),
                _ => true,
            };
            if ok {
                ks.push(loop_kernel(
                    &format!("{}_{}", op.name(), d.name()),
                    &[a.clone(), b.clone()],
                    |g, x| vec![g.add(Op::Binary(op), &[x[0], x[1]]).unwrap()],
                ));
            }
        }
        for &c in CmpOp::ALL {
            ks.push(loop_kernel(
                &format!("{}_{}", c.name(), d.name()),
                &[a.clone(), b.clone()],
                |g, x| vec![g.add(Op::Compare(c), &[x[0], x[1]]).unwrap()],
            ));
        }
    }
    let bt = ty(DType::Bool, &["seq", "9"]);
    for &op in &[BinaryOp::And, BinaryOp::Or] {
        ks.push(loop_kernel(
            &format!("{}_bool", op.name()),
            &[bt.clone(), bt.clone()],
            |g, x| vec![g.add(Op::Binary(op), &[x[0], x[1]]).unwrap()],
        ));
    }
    for &c in CmpOp::ALL {
        ks.push(loop_kernel(
            &format!("{}_bool", c.name()),
            &[bt.clone(), bt.clone()],
            |g, x| vec![g.add(Op::Compare(c), &[x[0], x[1]]).unwrap()],
        ));
    }
    ks.push(loop_kernel(
        "not_bool",
        std::slice::from_ref(&bt),
        |g, x| vec![g.add(Op::Unary(UnaryOp::Not), &[x[0]]).unwrap()],
    ));
    for d in [DType::I32, DType::I64, DType::I8] {
        let t = ty(d, &["seq", "9"]);
        for u in [UnaryOp::Neg, UnaryOp::Abs] {
            ks.push(loop_kernel(
                &format!("{}_{}", u.name(), d.name()),
                std::slice::from_ref(&t),
                |g, x| vec![g.add(Op::Unary(u), &[x[0]]).unwrap()],
            ));
        }
    }
    let m = compile_cpu(&ks, &syms()).unwrap_or_else(|e| panic!("{e}"));
    for (i, k) in ks.iter().enumerate() {
        check(&m, k, &seqs(), 1e-6, 300 + i as u64);
    }
}

#[test]
fn integer_division_truncates() {
    let mut ks = Vec::new();
    for d in [DType::I32, DType::I64, DType::I8, DType::U8] {
        let t = ty(d, &["seq", "8"]);
        ks.push(loop_kernel(
            &format!("div_{}", d.name()),
            &[t.clone(), t.clone()],
            |g, x| vec![g.add(Op::Binary(BinaryOp::Div), &[x[0], x[1]]).unwrap()],
        ));
    }
    let m = compile_cpu(&ks, &syms()).unwrap_or_else(|e| panic!("{e}"));
    let b = bindings(&[("seq", 2)]);
    for k in &ks {
        let d = k.operand_types[0].dtype;
        let signed = d != DType::U8;
        let num: Vec<f64> = (0..16)
            .map(|i| {
                if signed {
                    i as f64 * 7.0 - 50.0
                } else {
                    i as f64 * 13.0
                }
            })
            .collect();
        let den: Vec<f64> = (0..16)
            .map(|i| {
                if signed && i % 3 == 0 {
                    -(i as f64 % 5.0) - 1.0
                } else {
                    (i % 7) as f64 + 1.0
                }
            })
            .collect();
        let xs = [
            Tensor::from_f64(d, vec![2, 8], &num).unwrap(),
            Tensor::from_f64(d, vec![2, 8], &den).unwrap(),
        ];
        check_on(&m, k, &xs, &b, 0.0);
    }
}

#[test]
fn select_and_casts() {
    let mut ks = Vec::new();
    let c = ty(DType::Bool, &["seq", "1"]);
    let a = ty(DType::F32, &["seq", "11"]);
    let b = ty(DType::F32, &["11"]);
    ks.push(loop_kernel(
        "select_f32",
        &[c.clone(), a.clone(), b.clone()],
        |g, x| vec![g.add(Op::Select, &[x[0], x[1], x[2]]).unwrap()],
    ));
    let ci = ty(DType::I64, &["seq", "11"]);
    ks.push(loop_kernel(
        "select_i64",
        &[c.clone(), ci.clone(), ci.clone()],
        |g, x| vec![g.add(Op::Select, &[x[0], x[1], x[2]]).unwrap()],
    ));
    for from in DType::ALL {
        for to in DType::ALL {
            if from == to {
                continue;
            }
            let t = ty(from, &["seq", "13"]);
            ks.push(loop_kernel(
                &format!("cast_{}_{}", from.name(), to.name()),
                &[t],
                |g, x| vec![g.add(Op::Cast(to), &[x[0]]).unwrap()],
            ));
        }
    }
    let m = compile_cpu(&ks, &syms()).unwrap_or_else(|e| panic!("{e}"));
    for (i, k) in ks.iter().enumerate() {
        check(&m, k, &seqs(), 0.0, 400 + i as u64);
    }
    // Saturation, NaN and truncation toward zero of float -> int casts.
    let special = [
        -1e10,
        1e10,
        300.7,
        -300.2,
        f64::NAN,
        2.7,
        -2.7,
        0.5,
        -0.5,
        127.9,
        128.5,
        255.5,
        256.2,
    ];
    let b = bindings(&[("seq", 1)]);
    for k in ks.iter().filter(|k| k.name.starts_with("cast_f32_")) {
        let x = Tensor::from_f64(DType::F32, vec![1, 13], &special).unwrap();
        check_on(&m, k, &[x], &b, 0.0);
    }
}

#[test]
fn broadcast_and_data_movement() {
    let mut ks = Vec::new();
    let f = DType::F32;
    // Explicit broadcast and a scalar constant.
    ks.push(loop_kernel("bcast", &[ty(f, &["5", "1"])], |g, x| {
        let b = g
            .add(
                Op::Broadcast {
                    shape: vec!["seq".into(), 5.into(), 6.into()],
                },
                &[x[0]],
            )
            .unwrap();
        let c = g.add(Op::Const(Literal::scalar(f, 0.25)), &[]).unwrap();
        vec![g.add(Op::Binary(BinaryOp::Mul), &[b, c]).unwrap()]
    }));
    // Permute then add: [seq, 4, 6] -> [6, seq, 4].
    ks.push(loop_kernel(
        "permute",
        &[ty(f, &["seq", "4", "6"]), ty(f, &["6", "seq", "4"])],
        |g, x| {
            let p = g
                .add(
                    Op::Permute {
                        perm: vec![2, 0, 1],
                    },
                    &[x[0]],
                )
                .unwrap();
            vec![g.add(Op::Binary(BinaryOp::Sub), &[p, x[1]]).unwrap()]
        },
    ));
    // Reshapes: merge, split and a middle regroup.
    ks.push(loop_kernel(
        "reshape",
        &[ty(f, &["seq", "4", "6"])],
        |g, x| {
            let a = g
                .add(
                    Op::Reshape {
                        shape: vec!["seq".into(), 24.into()],
                    },
                    &[x[0]],
                )
                .unwrap();
            let b = g
                .add(
                    Op::Reshape {
                        shape: vec!["seq".into(), 3.into(), 8.into()],
                    },
                    &[a],
                )
                .unwrap();
            let c = g
                .add(
                    Op::Reshape {
                        shape: vec![Dim::from("seq").scale(4), 6.into()],
                    },
                    &[x[0]],
                )
                .unwrap();
            let c = g
                .add(
                    Op::Reshape {
                        shape: vec!["seq".into(), 3.into(), 8.into()],
                    },
                    &[c],
                )
                .unwrap();
            vec![g.add(Op::Binary(BinaryOp::Add), &[b, c]).unwrap()]
        },
    ));
    ks.push(loop_kernel(
        "reshape_merge",
        &[ty(f, &["seq", "4", "6"])],
        |g, x| {
            vec![g
                .add(
                    Op::Reshape {
                        shape: vec!["seq".into(), 24.into()],
                    },
                    &[x[0]],
                )
                .unwrap()]
        },
    ));
    // Slice with symbolic bounds, then pad back.
    ks.push(loop_kernel(
        "slice_pad",
        &[ty(f, &["seq", "10"])],
        |g, x| {
            let s = g
                .add(
                    Op::Slice {
                        axis: 1,
                        start: 2.into(),
                        end: 7.into(),
                    },
                    &[x[0]],
                )
                .unwrap();
            let p = g
                .add(
                    Op::Pad {
                        axis: 1,
                        low: 3.into(),
                        high: 2.into(),
                        value: F64Bits(-1.5),
                    },
                    &[s],
                )
                .unwrap();
            let s2 = g
                .add(
                    Op::Slice {
                        axis: 0,
                        start: 1.into(),
                        end: "seq".into(),
                    },
                    &[x[0]],
                )
                .unwrap();
            let p2 = g
                .add(
                    Op::Pad {
                        axis: 0,
                        low: 0.into(),
                        high: 1.into(),
                        value: F64Bits(7.0),
                    },
                    &[s2],
                )
                .unwrap();
            vec![p, p2]
        },
    ));
    // Concat of three along a middle axis with a symbolic part.
    ks.push(loop_kernel(
        "concat",
        &[
            ty(f, &["2", "seq", "3"]),
            ty(f, &["2", "1", "3"]),
            ty(f, &["2", "seq", "3"]),
        ],
        |g, x| {
            let n = g.add(Op::Unary(UnaryOp::Neg), &[x[2]]).unwrap();
            vec![g.add(Op::Concat { axis: 1 }, &[x[0], x[1], n]).unwrap()]
        },
    ));
    // Gather rows of a table by i32 and i64 indices, along both axes.
    let table = ty(f, &["10", "8"]);
    let gathers = [
        ("gather_i32", ty(DType::I32, &["seq"]), 0),
        ("gather_i64", ty(DType::I64, &["2", "seq"]), 0),
        ("gather_axis1", ty(DType::I64, &["2", "seq"]), 1),
    ];
    for (name, it, axis) in &gathers {
        ks.push(loop_kernel(name, &[table.clone(), it.clone()], |g, x| {
            vec![g.add(Op::Gather { axis: *axis }, &[x[0], x[1]]).unwrap()]
        }));
    }
    ks.push(loop_kernel("iota", &[ty(f, &["seq", "5"])], |g, x| {
        let i = g
            .add(
                Op::Iota {
                    ty: ty(f, &["seq", "5"]),
                    axis: 0,
                },
                &[],
            )
            .unwrap();
        let j = g
            .add(
                Op::Iota {
                    ty: ty(DType::I32, &["seq", "5"]),
                    axis: 1,
                },
                &[],
            )
            .unwrap();
        let jf = g.add(Op::Cast(f), &[j]).unwrap();
        let s = g.add(Op::Binary(BinaryOp::Add), &[i, jf]).unwrap();
        vec![g.add(Op::Binary(BinaryOp::Mul), &[s, x[0]]).unwrap(), j]
    }));
    // A scalar result.
    ks.push(loop_kernel("scalar", &[ty(f, &[]), ty(f, &[])], |g, x| {
        vec![g.add(Op::Binary(BinaryOp::Max), &[x[0], x[1]]).unwrap()]
    }));
    // Shared sub-expressions (a diamond chain that would be exponential without memoization).
    ks.push(loop_kernel("diamonds", &[ty(f, &["seq", "7"])], |g, x| {
        let mut v = x[0];
        for _ in 0..24 {
            let a = g.add(Op::Unary(UnaryOp::Sin), &[v]).unwrap();
            let b = g.add(Op::Unary(UnaryOp::Cos), &[v]).unwrap();
            v = g.add(Op::Binary(BinaryOp::Add), &[a, b]).unwrap();
        }
        vec![v]
    }));
    let m = compile_cpu(&ks, &syms()).unwrap_or_else(|e| panic!("{e}"));
    for (i, k) in ks.iter().enumerate() {
        if k.name.starts_with("gather") {
            continue;
        }
        check(&m, k, &seqs(), 1e-6, 500 + i as u64);
    }
    // Gather needs in-range indices (the interpreter rejects others).
    for k in ks.iter().filter(|k| k.name.starts_with("gather")) {
        for (i, b) in seqs().iter().enumerate() {
            let mut rng = Rng::new(900 + i as u64);
            let table = random(&mut rng, &k.operand_types[0], b);
            let it = &k.operand_types[1];
            let shape = it.eval_shape(b).unwrap();
            let n: usize = shape.iter().product();
            let idx: Vec<f64> = (0..n).map(|_| (rng.next_u32() % 8) as f64).collect();
            let xs = [table, Tensor::from_f64(it.dtype, shape, &idx).unwrap()];
            check_on(&m, k, &xs, b, 0.0);
        }
    }
}

/// One compiled module serves long rows that span several blocks.
#[test]
fn long_rows_span_blocks() {
    let t = ty(DType::F32, &["seq"]);
    let k = loop_kernel("long", &[t.clone(), t], |g, x| {
        let s = g.add(Op::Binary(BinaryOp::Mul), &[x[0], x[1]]).unwrap();
        vec![g.add(Op::Unary(UnaryOp::Silu), &[s]).unwrap()]
    });
    let m = compile_cpu(std::slice::from_ref(&k), &syms()).unwrap_or_else(|e| panic!("{e}"));
    let bs = [
        bindings(&[("seq", 10000)]),
        bindings(&[("seq", 4096)]),
        bindings(&[("seq", 1)]),
    ];
    for b in &bs {
        assert_eq!(
            m.launches()[0].grid.num_blocks(b).unwrap(),
            (b["seq"] as usize).div_ceil(4096)
        );
    }
    check(&m, &k, &bs, 1e-6, 77);
}
