//! The planner and the CPU executor, with kernels written in Rust against the
//! CPU ABI (no compiler involved), checked against the reference interpreter.

use kiln_ir::kernel::{Grid, KernelLaunch};
use kiln_ir::{shape, DType, FusedOp, FusionKind, Graph, Op, Tensor, TensorType, UnaryOp, Value};
use kiln_runtime::plan::{Step, Storage};
use kiln_runtime::{plan, CpuExecutor, CpuKernelFn, ExecOptions, KernelTable, RuntimeError};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A one-op loop kernel `f32[rows, 4] -> f32[rows, 4]`.
fn unary_kernel(u: UnaryOp) -> Op {
    let mut body = Graph::new("body");
    let x = body
        .add_input("x", TensorType::new(DType::F32, shape!["rows", 4]))
        .unwrap();
    let y = body.add(Op::Unary(u), &[x]).unwrap();
    body.add_output("y", y).unwrap();
    Op::Fused(FusedOp {
        kind: FusionKind::Loop,
        body: Arc::new(body),
    })
}

/// Rows of 4 floats: block b handles row b. args = [x, y]; sizes = [rows].
unsafe extern "C" fn neg_rows(args: *const *mut u8, _sizes: *const i64, b0: i64, b1: i64) {
    // SAFETY: the executor passes one f32 buffer per operand/result sized rows*4.
    unsafe {
        let x = *args as *const f32;
        let y = *args.add(1) as *mut f32;
        for b in b0..b1 {
            for i in 0..4 {
                let k = (b * 4 + i) as usize;
                *y.add(k) = -*x.add(k);
            }
        }
    }
}

unsafe extern "C" fn exp_rows(args: *const *mut u8, _sizes: *const i64, b0: i64, b1: i64) {
    // SAFETY: as in `neg_rows`.
    unsafe {
        let x = *args as *const f32;
        let y = *args.add(1) as *mut f32;
        for b in b0..b1 {
            for i in 0..4 {
                let k = (b * 4 + i) as usize;
                *y.add(k) = (*x.add(k)).exp();
            }
        }
    }
}

struct Table(Vec<(String, CpuKernelFn)>, Vec<String>);

impl KernelTable for Table {
    fn lookup(&self, name: &str) -> Option<CpuKernelFn> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, f)| *f)
    }
    fn launches(&self) -> Vec<KernelLaunch> {
        self.0
            .iter()
            .map(|(n, _)| KernelLaunch {
                name: n.clone(),
                grid: Grid::rows("rows".into()),
                symbols: self.1.clone(),
                gpu_threads: 1,
            })
            .collect()
    }
}

/// x -> neg -> exp -> neg -> exp, with an extra output in the middle.
fn chain() -> Graph {
    let mut g = Graph::new("chain");
    let x = g
        .add_input("x", TensorType::new(DType::F32, shape!["rows", 4]))
        .unwrap();
    let mut v: Value = x;
    let mut mids = Vec::new();
    for u in [UnaryOp::Neg, UnaryOp::Exp, UnaryOp::Neg, UnaryOp::Exp] {
        v = g.add(unary_kernel(u), &[v]).unwrap();
        mids.push(v);
    }
    g.add_output("y", v).unwrap();
    g.add_output("mid", mids[1]).unwrap();
    g
}

fn table_for(p: &kiln_runtime::Plan) -> Arc<Table> {
    let fns = p
        .kernels
        .iter()
        .map(|k| {
            let f: CpuKernelFn = match &k.op {
                Op::Fused(f) if format!("{:?}", f.body).contains("neg(") => neg_rows,
                _ => exp_rows,
            };
            (k.name.clone(), f)
        })
        .collect();
    Arc::new(Table(fns, p.symbols.clone()))
}

#[test]
fn identical_kernels_are_planned_once_and_slots_are_reused() {
    let p = plan(&chain()).unwrap();
    assert_eq!(p.steps.len(), 4);
    assert_eq!(p.kernels.len(), 2, "neg and exp each compiled once");
    // Step 2 can reuse step 0's slot; `mid` (step 1) lives to the end.
    assert!(p.num_slots <= 3, "{}", p.describe());
    let slot = |step: usize| {
        let Step::Kernel { args, .. } = &p.steps[step] else {
            panic!("step {step} is not a launch")
        };
        match p.buffers[*args.last().unwrap()].storage {
            Storage::Temp { slot } => slot,
            ref s => panic!("{s:?}"),
        }
    };
    assert_ne!(slot(1), slot(2));
    assert_ne!(slot(2), slot(3));
    assert_ne!(slot(1), slot(3), "an output's slot is never reused");
}

#[test]
fn executor_matches_the_interpreter_at_several_sizes() {
    let g = chain();
    let p = plan(&g).unwrap();
    let table = table_for(&p);
    let params: BTreeMap<String, Tensor> = BTreeMap::new();
    for threads in [1, 2] {
        let mut exe =
            CpuExecutor::new(p.clone(), table.clone(), &params, &ExecOptions { threads }).unwrap();
        for rows in [1usize, 3, 17] {
            let x = Tensor::f32(
                vec![rows, 4],
                (0..rows * 4).map(|i| i as f32 * 0.1 - 1.0).collect(),
            )
            .unwrap();
            let inputs = BTreeMap::from([("x".to_string(), x)]);
            let got = exe.run(&inputs).unwrap();
            let want = kiln_ir::interp::eval(&g, &inputs, &params).unwrap();
            for name in ["y", "mid"] {
                assert_eq!(got[name].shape, vec![rows, 4]);
                let e = kiln_ir::tensor::rel_l2(&got[name].to_f64_vec(), &want[name].to_f64_vec());
                assert!(e < 1e-6, "{name} rows={rows}: {e}");
            }
        }
    }
}

#[test]
fn bad_inputs_and_missing_pieces_are_typed_errors() {
    let g = chain();
    let p = plan(&g).unwrap();
    let params: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut exe =
        CpuExecutor::new(p.clone(), table_for(&p), &params, &ExecOptions::default()).unwrap();
    let err = exe.run(&BTreeMap::new()).unwrap_err();
    assert!(
        matches!(err, RuntimeError::MissingInput { ref name, .. } if name == "x"),
        "{err}"
    );
    let wrong = BTreeMap::from([(
        "x".to_string(),
        Tensor::f32(vec![2, 5], vec![0.0; 10]).unwrap(),
    )]);
    let err = exe.run(&wrong).unwrap_err();
    assert!(err.to_string().contains("input `x`"), "{err}");
    let wrong = BTreeMap::from([(
        "x".to_string(),
        Tensor::i32(vec![2, 4], vec![0; 8]).unwrap(),
    )]);
    assert!(matches!(
        exe.run(&wrong).unwrap_err(),
        RuntimeError::InputType { .. }
    ));
    let extra = BTreeMap::from([
        (
            "x".to_string(),
            Tensor::f32(vec![1, 4], vec![0.0; 4]).unwrap(),
        ),
        ("z".to_string(), Tensor::f32(vec![1], vec![0.0]).unwrap()),
    ]);
    assert!(matches!(
        exe.run(&extra).unwrap_err(),
        RuntimeError::UnknownInput { .. }
    ));

    let empty = Arc::new(Table(vec![], p.symbols.clone()));
    let err = CpuExecutor::new(p.clone(), empty, &params, &ExecOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, RuntimeError::MissingKernel(_)), "{err}");

    // A parameter the weights lack, and one of the wrong shape.
    let mut g = Graph::new("withparam");
    let w = g
        .add(
            Op::Param {
                name: "w".into(),
                ty: TensorType::new(DType::F32, shape![2, 4]),
            },
            &[],
        )
        .unwrap();
    g.add_output("w", w).unwrap();
    let p = plan(&g).unwrap();
    let t = Arc::new(Table(vec![], p.symbols.clone()));
    let err = CpuExecutor::new(p.clone(), t.clone(), &params, &ExecOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, RuntimeError::MissingParam { ref name, .. } if name == "w"),
        "{err}"
    );
    let bad = BTreeMap::from([(
        "w".to_string(),
        Tensor::f32(vec![4, 2], vec![0.0; 8]).unwrap(),
    )]);
    let err = CpuExecutor::new(p, t, &bad, &ExecOptions::default())
        .err()
        .unwrap();
    assert!(matches!(err, RuntimeError::ParamType { .. }), "{err}");
}

#[test]
fn logical_ops_are_refused_by_the_planner() {
    let mut g = Graph::new("logical");
    let x = g
        .add_input("x", TensorType::new(DType::F32, shape![4]))
        .unwrap();
    let y = g.add(Op::Unary(UnaryOp::Exp), &[x]).unwrap();
    g.add_output("y", y).unwrap();
    let err = plan(&g).unwrap_err();
    assert!(
        err.to_string().contains("`exp`") && err.to_string().contains("fuse"),
        "{err}"
    );
}
