//! The CUDA executor. Without a driver or device every entry point is a
//! `NoCudaDevice` error (never a panic); with one, a small plan with
//! hand-written PTX kernels (no compiler involved) runs and matches the
//! reference interpreter. `KILN_REQUIRE_GPU=1` makes a missing device a
//! failure instead of a skip.

#![cfg(feature = "cuda")]

use kiln_ir::kernel::{Grid, KernelLaunch};
use kiln_ir::{shape, DType, FusedOp, FusionKind, Graph, Op, Tensor, TensorType, UnaryOp, Value};
use kiln_runtime::cuda::{device_info, CudaExecutor, CudaOptions};
use kiln_runtime::{plan, Executor, Plan, RuntimeError};
use std::collections::BTreeMap;
use std::sync::Arc;

fn require_gpu() -> bool {
    std::env::var("KILN_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

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

fn is_neg(op: &Op) -> bool {
    matches!(op, Op::Fused(f) if format!("{:?}", f.body).contains("neg("))
}

/// The chain's plan with launch information: one block per row, 4 threads.
fn chain_plan() -> Plan {
    let mut p = plan(&chain()).unwrap();
    let symbols = p.symbols.clone();
    assert_eq!(symbols, vec!["rows".to_string()]);
    for k in &mut p.kernels {
        k.launch = Some(KernelLaunch {
            name: k.name.clone(),
            grid: Grid::rows("rows".into()),
            symbols: symbols.clone(),
            gpu_threads: 4,
        });
    }
    p
}

/// One PTX kernel with the GPU ABI (x, y, rows): thread t of block b maps
/// element 4b+t; `op` turns %f1 into %f2.
fn ptx_entry(name: &str, op: &str) -> String {
    format!(
        r#"
.visible .entry {name}(
	.param .u64 p_x,
	.param .u64 p_y,
	.param .u64 p_rows
)
{{
	.reg .b32 %r<4>;
	.reg .b64 %rd<8>;
	.reg .f32 %f<4>;
	.reg .pred %p<2>;
	ld.param.u64 %rd1, [p_x];
	ld.param.u64 %rd2, [p_y];
	ld.param.u64 %rd3, [p_rows];
	mov.u32 %r1, %ctaid.x;
	mov.u32 %r2, %tid.x;
	cvt.u64.u32 %rd4, %r1;
	setp.ge.u64 %p1, %rd4, %rd3;
	@%p1 bra DONE;
	mad.lo.u32 %r3, %r1, 4, %r2;
	mul.wide.u32 %rd5, %r3, 4;
	cvta.to.global.u64 %rd6, %rd1;
	cvta.to.global.u64 %rd7, %rd2;
	add.u64 %rd6, %rd6, %rd5;
	add.u64 %rd7, %rd7, %rd5;
	ld.global.f32 %f1, [%rd6];
	{op}
	st.global.f32 [%rd7], %f2;
DONE:
	ret;
}}
"#
    )
}

/// PTX for every kernel of the chain's plan (`skip`: one to leave out).
fn chain_ptx(p: &Plan, skip: Option<&str>) -> String {
    let mut s = String::from(".version 7.0\n.target sm_80\n.address_size 64\n");
    for k in &p.kernels {
        if Some(k.name.as_str()) == skip {
            continue;
        }
        let op = if is_neg(&k.op) {
            "neg.f32 %f2, %f1;"
        } else {
            // exp(x) = 2^(x log2 e)
            "mul.f32 %f3, %f1, 0f3FB8AA3B;\n\tex2.approx.f32 %f2, %f3;"
        };
        s.push_str(&ptx_entry(&k.name, op));
    }
    s
}

#[test]
fn no_device_is_an_error_not_a_panic() {
    let p = chain_plan();
    let ptx = chain_ptx(&p, None);
    let params: BTreeMap<String, Tensor> = BTreeMap::new();
    match device_info(0) {
        Ok(info) => {
            assert!(!info.name.is_empty());
            assert!(info.compute_capability.0 >= 3, "{info:?}");
            assert!(info.total_memory > 0, "{info:?}");
            eprintln!(
                "cuda:0 is {} ({}), driver {:?}",
                info.name,
                info.sm(),
                info.driver_version
            );
        }
        Err(RuntimeError::NoCudaDevice(why)) => {
            assert!(
                !require_gpu(),
                "KILN_REQUIRE_GPU=1 but no CUDA device: {why}"
            );
            eprintln!("no CUDA device ({why}); checking the error paths only");
            let err = CudaExecutor::new(p, &ptx, &params, &CudaOptions::default())
                .err()
                .expect("no device, yet the executor was created");
            assert!(matches!(err, RuntimeError::NoCudaDevice(_)), "{err}");
            assert!(err.to_string().starts_with("no CUDA device"), "{err}");
        }
        Err(e) => panic!("device_info(0) failed with {e}, not NoCudaDevice"),
    }
}

#[test]
fn an_absent_ordinal_is_no_device() {
    let err = device_info(4096).unwrap_err();
    assert!(matches!(err, RuntimeError::NoCudaDevice(_)), "{err}");
    let p = chain_plan();
    let ptx = chain_ptx(&p, None);
    let params: BTreeMap<String, Tensor> = BTreeMap::new();
    let err = CudaExecutor::new(p, &ptx, &params, &CudaOptions { device: 4096 })
        .err()
        .unwrap();
    assert!(matches!(err, RuntimeError::NoCudaDevice(_)), "{err}");
}

fn have_device() -> bool {
    match device_info(0) {
        Ok(_) => true,
        Err(e) => {
            assert!(!require_gpu(), "KILN_REQUIRE_GPU=1 but no CUDA device: {e}");
            eprintln!("skipped: no CUDA device ({e})");
            false
        }
    }
}

#[test]
fn a_small_plan_runs_on_the_device() {
    if !have_device() {
        return;
    }
    let g = chain();
    let p = chain_plan();
    let params: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut exe = CudaExecutor::new(
        p.clone(),
        &chain_ptx(&p, None),
        &params,
        &CudaOptions::default(),
    )
    .unwrap();
    assert!(
        Executor::device(&exe).starts_with("cuda:0 "),
        "{}",
        Executor::device(&exe)
    );
    // Growing and shrinking sizes reuse and regrow the arena.
    for rows in [1usize, 3, 17, 2, 300] {
        let x = Tensor::f32(
            vec![rows, 4],
            (0..rows * 4).map(|i| (i % 29) as f32 * 0.1 - 1.0).collect(),
        )
        .unwrap();
        let inputs = BTreeMap::from([("x".to_string(), x)]);
        let got = exe.run(&inputs).unwrap();
        let want = kiln_ir::interp::eval(&g, &inputs, &params).unwrap();
        for name in ["y", "mid"] {
            assert_eq!(got[name].shape, vec![rows, 4]);
            let e = kiln_ir::tensor::rel_l2(&got[name].to_f64_vec(), &want[name].to_f64_vec());
            assert!(e < 1e-5, "{name} rows={rows}: {e}");
        }
    }
    // The same input checks as the CPU executor.
    let err = exe.run(&BTreeMap::new()).unwrap_err();
    assert!(
        matches!(err, RuntimeError::MissingInput { ref name, .. } if name == "x"),
        "{err}"
    );
    // A plan without state has none to initialize or step.
    assert!(exe.state_names().is_empty());
    assert!(matches!(
        exe.state("x").unwrap_err(),
        RuntimeError::NotState { .. }
    ));
}

#[test]
fn missing_kernels_and_bad_ptx_are_typed_errors() {
    if !have_device() {
        return;
    }
    let p = chain_plan();
    let params: BTreeMap<String, Tensor> = BTreeMap::new();
    let gone = p.kernels[0].name.clone();
    let err = CudaExecutor::new(
        p.clone(),
        &chain_ptx(&p, Some(&gone)),
        &params,
        &CudaOptions::default(),
    )
    .err()
    .unwrap();
    assert_eq!(err, RuntimeError::MissingKernel(gone));

    let err = CudaExecutor::new(
        p.clone(),
        ".version 7.0\n.target sm_80\nnot ptx",
        &params,
        &CudaOptions::default(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, RuntimeError::Cuda { ref call, .. } if call == "cuModuleLoadDataEx"),
        "{err}"
    );

    let mut unlaunched = p.clone();
    unlaunched.kernels[0].launch = None;
    let err = CudaExecutor::new(
        unlaunched,
        &chain_ptx(&p, None),
        &params,
        &CudaOptions::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, RuntimeError::BadPlan(_)), "{err}");
}

/// ptxas from `KILN_PTXAS` or the workspace's `.venv-ptxas` (see
/// scripts/setup.sh), if any.
fn ptxas() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("KILN_PTXAS") {
        return Some(p.into());
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-ptxas/lib");
    std::fs::read_dir(&root).ok()?.flatten().find_map(|d| {
        let p = d.path().join("site-packages/nvidia/cuda_nvcc/bin/ptxas");
        p.exists().then_some(p)
    })
}

#[test]
fn the_hand_written_ptx_assembles() {
    let Some(ptxas) = ptxas() else {
        eprintln!("skipped: no ptxas");
        return;
    };
    let p = chain_plan();
    let dir = std::env::temp_dir().join(format!("kiln-cuda-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("chain.ptx");
    std::fs::write(&file, chain_ptx(&p, None)).unwrap();
    for arch in ["sm_80", "sm_90"] {
        let out = std::process::Command::new(&ptxas)
            .arg(format!("-arch={arch}"))
            .arg(&file)
            .arg("-o")
            .arg(dir.join("chain.cubin"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{arch}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

mod fake_cuda;

/// Rows of 4 floats with the CPU ABI: block b negates row b (args = [x, y]).
unsafe extern "C" fn neg_rows(args: *const *mut u8, _sizes: *const i64, b0: i64, b1: i64) {
    // SAFETY: the executor passes one f32 buffer per operand/result sized rows*4.
    unsafe {
        let x = *args as *const f32;
        let y = *args.add(1) as *mut f32;
        for k in (b0 * 4) as usize..(b1 * 4) as usize {
            *y.add(k) = -*x.add(k);
        }
    }
}

unsafe extern "C" fn exp_rows(args: *const *mut u8, _sizes: *const i64, b0: i64, b1: i64) {
    // SAFETY: as in `neg_rows`.
    unsafe {
        let x = *args as *const f32;
        let y = *args.add(1) as *mut f32;
        for k in (b0 * 4) as usize..(b1 * 4) as usize {
            *y.add(k) = (*x.add(k)).exp();
        }
    }
}

/// The chain's kernels as a fake-driver module (`skip`: one to leave out).
fn fake_module(p: &Plan, skip: Option<&str>) -> String {
    fake_cuda::module_text(
        p.kernels
            .iter()
            .filter(|k| Some(k.name.as_str()) != skip)
            .map(|k| {
                let f: kiln_runtime::CpuKernelFn = if is_neg(&k.op) { neg_rows } else { exp_rows };
                (k.name.clone(), f as usize, 2, p.symbols.len())
            }),
    )
}

/// One of the fake driver's counters (`fake_cuda_<name>`).
fn fake_counter(name: &str) -> i64 {
    // SAFETY: the fake driver is the loaded libcuda (checked by the caller
    // through the device name); its counters are `long f(void)`.
    unsafe {
        let lib = cudarc::driver::sys::culib();
        let f = lib
            .get::<unsafe extern "C" fn() -> std::ffi::c_long>(format!("fake_cuda_{name}"))
            .unwrap();
        f() as i64
    }
}

fn live_allocations() -> i64 {
    fake_counter("live_allocations")
}

/// The executor's own logic on the fake driver (host memory, CPU kernels):
/// sizes, arena growth, launch parameters, errors, and no leaked memory.
#[test]
fn the_executor_runs_on_a_fake_driver() {
    if !fake_cuda::in_child() {
        fake_cuda::run_in_child("the_executor_runs_on_a_fake_driver");
        return;
    }
    let info = device_info(0).unwrap();
    assert_eq!(info.name, fake_cuda::DEVICE_NAME, "not the fake driver");
    assert_eq!(
        (info.sm(), info.driver_version),
        ("sm_90".to_string(), (12, 9))
    );
    let g = chain();
    let p = chain_plan();
    let params: BTreeMap<String, Tensor> = BTreeMap::new();
    {
        let mut exe = CudaExecutor::new(
            p.clone(),
            &fake_module(&p, None),
            &params,
            &CudaOptions::default(),
        )
        .unwrap();
        assert_eq!(Executor::device(&exe), "cuda:0 Fake CUDA device (sm_90)");
        for rows in [1usize, 3, 17, 2, 300, 0] {
            let x = Tensor::f32(
                vec![rows, 4],
                (0..rows * 4).map(|i| (i % 29) as f32 * 0.1 - 1.0).collect(),
            )
            .unwrap();
            let inputs = BTreeMap::from([("x".to_string(), x)]);
            let got = exe.run(&inputs).unwrap();
            let want = kiln_ir::interp::eval(&g, &inputs, &params).unwrap();
            for name in ["y", "mid"] {
                assert_eq!(got[name].shape, vec![rows, 4]);
                assert_eq!(
                    got[name].to_f32_vec(),
                    want[name].to_f32_vec(),
                    "{name} rows={rows}"
                );
            }
        }
        let err = exe.run(&BTreeMap::new()).unwrap_err();
        assert!(matches!(err, RuntimeError::MissingInput { .. }), "{err}");
        // A call at a size seen before: 4 launches, one synchronize.
        let x = Tensor::f32(vec![17, 4], vec![0.5; 68]).unwrap();
        let (launches, syncs) = (fake_counter("launches"), fake_counter("synchronizations"));
        exe.run(&BTreeMap::from([("x".to_string(), x)])).unwrap();
        assert_eq!(fake_counter("launches") - launches, 4);
        assert_eq!(fake_counter("synchronizations") - syncs, 1);
    }
    let gone = p.kernels[1].name.clone();
    let err = CudaExecutor::new(
        p.clone(),
        &fake_module(&p, Some(&gone)),
        &params,
        &CudaOptions::default(),
    )
    .err()
    .unwrap();
    assert_eq!(err, RuntimeError::MissingKernel(gone));
    let err = CudaExecutor::new(p.clone(), "bad ptx", &params, &CudaOptions::default())
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("cuModuleLoadDataEx") && text.contains("fake ptxas: syntax error"),
        "{text}"
    );
    let err = CudaExecutor::new(p.clone(), "", &params, &CudaOptions { device: 1 })
        .err()
        .unwrap();
    assert!(matches!(err, RuntimeError::NoCudaDevice(_)), "{err}");
    // More threads per block than the kernel can take: refused at creation.
    let mut wide = p.clone();
    wide.kernels[0].launch.as_mut().unwrap().gpu_threads = 2048;
    let err = CudaExecutor::new(
        wide,
        &fake_module(&p, None),
        &params,
        &CudaOptions::default(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(&err, RuntimeError::BadPlan(m) if m.contains("2048 threads per block")),
        "{err}"
    );
    // KILN_CUDA_SYNC=1: a synchronize after every launch, same results.
    std::env::set_var("KILN_CUDA_SYNC", "1");
    let made = CudaExecutor::new(
        p.clone(),
        &fake_module(&p, None),
        &params,
        &CudaOptions::default(),
    );
    std::env::remove_var("KILN_CUDA_SYNC");
    let mut exe = made.unwrap();
    let x = Tensor::f32(vec![2, 4], (0..8).map(|i| i as f32 * 0.25).collect()).unwrap();
    let inputs = BTreeMap::from([("x".to_string(), x)]);
    exe.run(&inputs).unwrap();
    let syncs = fake_counter("synchronizations");
    let got = exe.run(&inputs).unwrap();
    assert_eq!(
        fake_counter("synchronizations") - syncs,
        4 + 1,
        "one per launch, one per call"
    );
    let want = kiln_ir::interp::eval(&g, &inputs, &params).unwrap();
    assert_eq!(got["y"].to_f32_vec(), want["y"].to_f32_vec());
    drop(exe);
    assert_eq!(live_allocations(), 0, "device memory leaked");
}
