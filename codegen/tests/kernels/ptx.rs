//! PTX for sm_90 and sm_80 through ptxas: the same kinds of kernels the CPU
//! tests run, each module assembled and its registers/spills printed.

use crate::loops::{loop_kernel, unary_specs};
use crate::matmuls::{mm, mmt};
use crate::rows::{layernorm, reduce, rmsnorm, row_kernel, softmax};
use crate::ty;
use kiln_codegen::{compile_ptx, GpuArch, KernelSpec};
use kiln_ir::op::F64Bits;
use kiln_ir::{BinaryOp, CmpOp, DType, Op, ReduceOp};

fn kernel_set() -> Vec<KernelSpec> {
    let mut ks = unary_specs(DType::F32);
    ks.extend(
        unary_specs(DType::F16)
            .into_iter()
            .filter(|k| k.name.starts_with("exp") || k.name.starts_with("gelu")),
    );
    ks.extend(
        unary_specs(DType::BF16)
            .into_iter()
            .filter(|k| k.name.starts_with("silu")),
    );
    for d in [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::I64,
        DType::I8,
        DType::U8,
    ] {
        let (a, b) = (ty(d, &["seq", "1", "9"]), ty(d, &["4", "9"]));
        let ops: &[BinaryOp] = if d.is_float() {
            &[BinaryOp::Add, BinaryOp::Div, BinaryOp::Max, BinaryOp::Pow]
        } else {
            &[BinaryOp::Mul, BinaryOp::Div, BinaryOp::Min]
        };
        for &op in ops {
            ks.push(loop_kernel(
                &format!("{}_{}", op.name(), d.name()),
                &[a.clone(), b.clone()],
                |g, x| vec![g.add(Op::Binary(op), &[x[0], x[1]]).unwrap()],
            ));
        }
        ks.push(loop_kernel(
            &format!("lt_{}", d.name()),
            &[a.clone(), b.clone()],
            |g, x| vec![g.add(Op::Compare(CmpOp::Lt), &[x[0], x[1]]).unwrap()],
        ));
        for to in [DType::F32, DType::F16, DType::I32, DType::U8, DType::Bool] {
            if to != d {
                ks.push(loop_kernel(
                    &format!("cast_{}_{}", d.name(), to.name()),
                    std::slice::from_ref(&a),
                    |g, x| vec![g.add(Op::Cast(to), &[x[0]]).unwrap()],
                ));
            }
        }
    }
    let f = DType::F32;
    ks.push(loop_kernel(
        "movement",
        &[
            ty(f, &["2", "seq", "3"]),
            ty(f, &["10", "3"]),
            ty(DType::I32, &["2", "seq"]),
        ],
        |g, x| {
            let p = g
                .add(
                    Op::Permute {
                        perm: vec![1, 0, 2],
                    },
                    &[x[0]],
                )
                .unwrap();
            let r = g
                .add(
                    Op::Reshape {
                        shape: vec!["seq".into(), 6.into()],
                    },
                    &[p],
                )
                .unwrap();
            let s = g
                .add(
                    Op::Slice {
                        axis: 1,
                        start: 1.into(),
                        end: 4.into(),
                    },
                    &[r],
                )
                .unwrap();
            let pd = g
                .add(
                    Op::Pad {
                        axis: 1,
                        low: 1.into(),
                        high: 2.into(),
                        value: F64Bits(0.0),
                    },
                    &[s],
                )
                .unwrap();
            let ga = g.add(Op::Gather { axis: 0 }, &[x[1], x[2]]).unwrap();
            let ga = g
                .add(
                    Op::Reshape {
                        shape: vec![2.into(), "seq".into(), 3.into()],
                    },
                    &[ga],
                )
                .unwrap();
            let gp = g
                .add(
                    Op::Permute {
                        perm: vec![1, 0, 2],
                    },
                    &[ga],
                )
                .unwrap();
            let gr = g
                .add(
                    Op::Reshape {
                        shape: vec!["seq".into(), 6.into()],
                    },
                    &[gp],
                )
                .unwrap();
            let c = g.add(Op::Concat { axis: 1 }, &[pd, gr]).unwrap();
            let i = g
                .add(
                    Op::Iota {
                        ty: ty(f, &["seq", "12"]),
                        axis: 1,
                    },
                    &[],
                )
                .unwrap();
            vec![g.add(Op::Binary(BinaryOp::Add), &[c, i]).unwrap()]
        },
    ));
    ks.push(softmax("softmax", f, &["seq", "4", "33"]));
    ks.push(softmax("softmax_f16", DType::F16, &["seq", "65"]));
    ks.push(rmsnorm("rmsnorm_bf16", DType::BF16, "64"));
    ks.push(layernorm("layernorm", "96"));
    for d in [DType::I64, DType::I8, DType::I32] {
        ks.push(row_kernel(
            &format!("sum_{}", d.name()),
            &[ty(d, &["seq", "9"])],
            |g, x| vec![reduce(g, ReduceOp::Sum, x[0], &[1], false)],
        ));
    }
    ks.push(row_kernel("min_all", &[ty(f, &["seq", "3"])], |g, x| {
        vec![reduce(g, ReduceOp::Min, x[0], &[0, 1], false)]
    }));
    ks.push(mm("mm", f, &["seq", "65"], &["65", "64"]));
    ks.push(mm(
        "mm_batch",
        f,
        &["2", "1", "seq", "16"],
        &["3", "16", "40"],
    ));
    ks.push(mm("mm_f16", DType::F16, &["seq", "24"], &["24", "33"]));
    ks.push(mm("mm_bf16", DType::BF16, &["seq", "24"], &["24", "33"]));
    ks.push(mm("mm_i32", DType::I32, &["seq", "12"], &["12", "10"]));
    ks.push(mmt("mmt", f, &["seq", "65"], &["64", "65"]));
    ks.push(mmt("mmt_bf16", DType::BF16, &["seq", "24"], &["33", "24"]));
    ks.push(crate::updates::update_spec("upd_f32", f, 0));
    ks.push(crate::updates::update_spec("upd_bf16", DType::BF16, 2));
    ks
}

#[test]
fn ptx_assembles_for_sm90_and_sm80() {
    let ptxas = match kiln_codegen::ptxas::find() {
        Some(p) => Some(p),
        None if std::env::var("KILN_SKIP_PTXAS").as_deref() == Ok("1") => {
            eprintln!("warning: ptxas not found and KILN_SKIP_PTXAS=1: PTX is generated but not assembled");
            None
        }
        None => panic!(
            "ptxas not found: run scripts/setup.sh (creates .venv-ptxas with the PyPI wheel \
             nvidia-cuda-nvcc-cu12), or set KILN_PTXAS=/path/to/ptxas, or set KILN_SKIP_PTXAS=1 to skip"
        ),
    };
    let ks = kernel_set();
    for arch in [GpuArch::Sm90, GpuArch::Sm80] {
        let t0 = std::time::Instant::now();
        let m = compile_ptx(&ks, &["ctx".into(), "past".into(), "seq".into()], arch)
            .unwrap_or_else(|e| panic!("{arch}: {e}"));
        println!("{arch}: {} kernels to PTX in {:?}", ks.len(), t0.elapsed());
        assert!(!m.ptx.contains("__nv_"), "{arch}: PTX calls libdevice");
        for k in &ks {
            assert!(
                m.ptx.contains(&format!(".entry {}(", k.name)),
                "{arch}: no entry for {}",
                k.name
            );
        }
        assert_eq!(m.launches.len(), ks.len());
        let Some(ptxas) = &ptxas else { continue };
        let usage = kiln_codegen::ptxas::assemble(ptxas, &m.ptx, arch)
            .unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(usage.len(), ks.len(), "{arch}: one report per entry");
        println!("{arch} ptxas -v:");
        for u in &usage {
            assert_eq!(
                (u.spill_stores, u.spill_loads),
                (0, 0),
                "{arch}: {} spills",
                u.name
            );
            println!("  {}: {} registers", u.name, u.registers);
        }
    }
}

#[test]
fn ptxas_verbose_output_is_parsed() {
    let s = "ptxas info    : 0 bytes gmem\nptxas info    : Compiling entry function 'kiln_k0_loop' for 'sm_90'\nptxas info    : Function properties for kiln_k0_loop\n    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\nptxas info    : Used 22 registers, used 0 barriers, 384 bytes cmem[0]\n";
    let u = kiln_codegen::ptxas::parse_usage(s);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].name, "kiln_k0_loop");
    assert_eq!(
        (u[0].registers, u[0].spill_stores, u[0].spill_loads),
        (22, 4, 12)
    );
}
