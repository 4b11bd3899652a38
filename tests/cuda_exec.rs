//! The CUDA executor on real models: tiny-decoder and llama-tiny compiled
//! to PTX (GPU pass options, the device's architecture) run on the GPU and
//! match the CPU path (`kiln::jit`) within 1e-4 relative L2 — llama-tiny
//! through a prefill and decode steps on state kept on the device.
//!
//! Without a CUDA device the PTX is still compiled, creating the executor
//! must be the `NoCudaDevice` error, and the comparison is skipped (with a
//! message); `KILN_REQUIRE_GPU=1` turns a missing device into a failure.

use kiln::{compile_ptx, jit, CompileOptions};
use kiln_codegen::GpuArch;
use kiln_ir::tensor::rel_l2;
use kiln_ir::{Bindings, Graph, Tensor};
use kiln_passes::{CostTarget, PassOptions};
use kiln_runtime::cuda::{device_info, CudaExecutor, CudaOptions, DeviceInfo};
use kiln_runtime::{Executor, Plan, RuntimeError};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

const TOL: f64 = 1e-4;

/// The device, or `None` (and why, on stderr) when there is none.
fn device() -> Option<DeviceInfo> {
    match device_info(0) {
        Ok(info) => Some(info),
        Err(RuntimeError::NoCudaDevice(why)) => {
            assert!(
                std::env::var("KILN_REQUIRE_GPU").as_deref() != Ok("1"),
                "KILN_REQUIRE_GPU=1 but there is no CUDA device: {why}"
            );
            None
        }
        Err(e) => panic!("device_info(0) failed with {e}, not NoCudaDevice"),
    }
}

fn arch(dev: Option<&DeviceInfo>) -> GpuArch {
    match dev {
        Some(d) if d.compute_capability.0 >= 9 => GpuArch::Sm90,
        _ => GpuArch::Sm80,
    }
}

/// The plan with each kernel's launch information, and the module's PTX.
fn compile(graph: &Graph, arch: GpuArch) -> (Plan, String) {
    let opts = PassOptions {
        target: CostTarget::Gpu,
        ..PassOptions::default()
    };
    let (mut plan, module) = compile_ptx(graph, arch, &opts).unwrap();
    assert_eq!(module.launches.len(), plan.kernels.len());
    for (k, l) in plan.kernels.iter_mut().zip(module.launches) {
        assert_eq!(k.name, l.name);
        k.launch = Some(l);
    }
    (plan, module.ptx)
}

/// The executor on the device, or `None` after checking that creating it
/// without a device is the typed error.
fn cuda_executor(
    dev: Option<&DeviceInfo>,
    plan: Plan,
    ptx: &str,
    weights: &BTreeMap<String, Tensor>,
    what: &str,
) -> Option<CudaExecutor> {
    let made = CudaExecutor::new(plan, ptx, weights, &CudaOptions::default());
    match (dev, made) {
        (Some(_), Ok(exe)) => Some(exe),
        (Some(d), Err(e)) => panic!("{what} on {} ({}): {e}", d.name, d.sm()),
        (None, Err(RuntimeError::NoCudaDevice(why))) => {
            eprintln!("{what}: skipped the GPU run, no CUDA device ({why})");
            None
        }
        (None, Err(e)) => panic!("{what}: without a device the error is {e}, not NoCudaDevice"),
        (None, Ok(_)) => panic!("{what}: an executor was created without a device"),
    }
}

fn tokens(ids: &[i32]) -> BTreeMap<String, Tensor> {
    BTreeMap::from([(
        "tokens".to_string(),
        Tensor::i32(vec![ids.len()], ids.to_vec()).unwrap(),
    )])
}

fn close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape, want.shape, "{what}");
    let e = rel_l2(&got.to_f64_vec(), &want.to_f64_vec());
    assert!(e < TOL, "{what}: relative L2 error {e:.3e}");
}

#[test]
fn tiny_decoder_on_cuda_matches_the_cpu() {
    let dev = device();
    let m = kiln_models::builtin("tiny-decoder").unwrap();
    let graph = (m.build)().unwrap();
    let weights = (m.weights)(1);
    let (plan, ptx) = compile(&graph, arch(dev.as_ref()));
    assert!(ptx.contains(".entry"), "no kernels in the PTX");
    let Some(mut gpu) = cuda_executor(dev.as_ref(), plan, &ptx, &weights, "tiny-decoder") else {
        return;
    };
    let mut cpu = jit(&graph, &weights, &CompileOptions::default()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for seq in [1usize, 7, 33, 5] {
        let ids: Vec<i32> = (0..seq).map(|_| rng.random_range(0..256)).collect();
        let got = gpu.run(&tokens(&ids)).unwrap();
        let want = cpu.run(&tokens(&ids)).unwrap();
        close(
            &format!("tiny-decoder seq={seq}"),
            &got["logits"],
            &want["logits"],
        );
    }
}

#[test]
fn llama_tiny_prefill_and_decode_on_cuda_match_the_cpu() {
    let dev = device();
    let m = kiln_models::builtin("llama-tiny").unwrap();
    let graph = (m.build)().unwrap();
    let weights = (m.weights)(2);
    let (plan, ptx) = compile(&graph, arch(dev.as_ref()));
    let Some(gpu) = cuda_executor(dev.as_ref(), plan, &ptx, &weights, "llama-tiny") else {
        return;
    };
    // Driven through the trait, as kiln-run drives it.
    let mut gpu: Box<dyn Executor> = Box::new(gpu);
    eprintln!("llama-tiny on {}", gpu.device());
    let mut cpu = jit(&graph, &weights, &CompileOptions::default()).unwrap();
    let ctx: Bindings = [("ctx".to_string(), 32i64)].into();
    gpu.init_state(&ctx).unwrap();
    cpu.init_state(&ctx).unwrap();
    assert_eq!(gpu.state_names(), cpu.state_names());

    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let prompt: Vec<i32> = (0..6).map(|_| rng.random_range(0..256)).collect();
    let mut past = 0i64;
    let mut next = prompt.clone();
    for call in 0..5 {
        let sizes: Bindings = [("past".to_string(), past)].into();
        let got = gpu.step(&tokens(&next), &sizes).unwrap();
        let want = cpu.step(&tokens(&next), &sizes).unwrap();
        close(
            &format!("llama-tiny call {call} (past={past})"),
            &got["logits"],
            &want["logits"],
        );
        past += next.len() as i64;
        next = vec![rng.random_range(0..256)];
    }
    // The caches the device kept match the CPU's.
    for name in gpu.state_names() {
        close(
            &format!("state `{name}`"),
            &gpu.state(&name).unwrap(),
            &cpu.state(&name).unwrap(),
        );
    }
    // Past the capacity: the same range guard as the CPU executor.
    let sizes: Bindings = [("past".to_string(), 32i64)].into();
    let err = gpu.step(&tokens(&[1]), &sizes).unwrap_err();
    assert!(matches!(err, RuntimeError::OutOfRange { .. }), "{err}");
}

#[path = "../runtime/tests/fake_cuda/mod.rs"]
mod fake_cuda;

/// The plan `kiln::jit` compiled for the CPU, its kernels JIT-compiled once
/// more and handed to the CUDA executor through the fake driver.
fn on_fake_driver(
    graph: &Graph,
    weights: &BTreeMap<String, Tensor>,
) -> (kiln::Executable, CudaExecutor, kiln_codegen::CpuModule) {
    let cpu = jit(graph, weights, &CompileOptions::default()).unwrap();
    let plan = cpu.plan().clone();
    let module = kiln_codegen::compile_cpu(&kiln::kernel_specs(&plan), &plan.symbols).unwrap();
    let text = fake_cuda::module_text(plan.kernels.iter().map(|k| {
        let f = module.lookup(&k.name).unwrap();
        let bufs = k.operand_types.len() + k.result_types.len();
        (k.name.clone(), f as usize, bufs, plan.symbols.len())
    }));
    let gpu = CudaExecutor::new(plan, &text, weights, &CudaOptions::default()).unwrap();
    (cpu, gpu, module)
}

fn same(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape, want.shape, "{what}");
    assert_eq!(got.to_f32_vec(), want.to_f32_vec(), "{what}");
}

/// Whole models through the CUDA executor on the fake driver, with the
/// CPU executor's own kernels: every result must be bitwise the CPU
/// executor's (same kernels, same blocks), through run, prefill and decode
/// on device-kept state (llama-tiny's KV caches updated in place,
/// mamba-tiny's recurrent states and scans).
#[test]
fn models_run_on_a_fake_driver() {
    if !fake_cuda::in_child() {
        fake_cuda::run_in_child("models_run_on_a_fake_driver");
        return;
    }
    assert_eq!(device_info(0).unwrap().name, fake_cuda::DEVICE_NAME);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for name in ["tiny-decoder", "llama-tiny", "mamba-tiny"] {
        let m = kiln_models::builtin(name).unwrap();
        let graph = (m.build)().unwrap();
        let weights = (m.weights)(3);
        let (mut cpu, mut gpu, _module) = on_fake_driver(&graph, &weights);
        let scans = cpu
            .plan()
            .all_steps()
            .iter()
            .filter(|s| matches!(s, kiln_runtime::plan::Step::Scan(_)))
            .count();
        eprintln!(
            "{name}: {} kernels, {scans} scans",
            cpu.plan().kernels.len()
        );
        let states = gpu.state_names();
        assert_eq!(states, cpu.state_names());
        if states.is_empty() {
            for seq in [1usize, 9, 4] {
                let ids: Vec<i32> = (0..seq).map(|_| rng.random_range(0..256)).collect();
                let got = gpu.run(&tokens(&ids)).unwrap();
                let want = cpu.run(&tokens(&ids)).unwrap();
                same(
                    &format!("{name} seq={seq}"),
                    &got["logits"],
                    &want["logits"],
                );
            }
            continue;
        }
        let ctx: Bindings = [("ctx".to_string(), 16i64)].into();
        gpu.init_state(&ctx).unwrap();
        cpu.init_state(&ctx).unwrap();
        let mut past = 0i64;
        let mut next: Vec<i32> = (0..5).map(|_| rng.random_range(0..256)).collect();
        for call in 0..4 {
            let sizes: Bindings = [("past".to_string(), past)].into();
            let got = gpu.step(&tokens(&next), &sizes).unwrap();
            let want = cpu.step(&tokens(&next), &sizes).unwrap();
            same(
                &format!("{name} call {call}"),
                &got["logits"],
                &want["logits"],
            );
            past += next.len() as i64;
            next = vec![rng.random_range(0..256)];
        }
        for s in &states {
            same(
                &format!("{name} state `{s}`"),
                &gpu.state(s).unwrap(),
                &cpu.state(s).unwrap(),
            );
        }
        // Only `last_logits`: both executors skip the full LM head alike and
        // update the states alike.
        let sizes: Bindings = [("past".to_string(), past)].into();
        let got = gpu
            .step_only(&tokens(&[3, 4]), &sizes, &["last_logits"])
            .unwrap();
        let want = cpu
            .step_only(&tokens(&[3, 4]), &sizes, &["last_logits"])
            .unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["last_logits"]);
        same(
            &format!("{name} last_logits"),
            &got["last_logits"],
            &want["last_logits"],
        );
        for s in &states {
            same(
                &format!("{name} state `{s}` after step_only"),
                &gpu.state(s).unwrap(),
                &cpu.state(s).unwrap(),
            );
        }
        // Setting a state and running with explicit state inputs.
        let first = &states[0];
        let zeros = Tensor::zeros(
            gpu.state(first).unwrap().dtype(),
            gpu.state(first).unwrap().shape.clone(),
        );
        gpu.set_state(first, &zeros).unwrap();
        same(
            &format!("{name} set_state"),
            &gpu.state(first).unwrap(),
            &zeros,
        );
        let mut inputs = tokens(&[7, 8]);
        for s in &states {
            inputs.insert(s.clone(), cpu.state(s).unwrap());
        }
        let sizes: Bindings = [("past".to_string(), 2i64)].into();
        let got = gpu.run_with(&inputs, &sizes).unwrap();
        let want = cpu.run_with(&inputs, &sizes).unwrap();
        for (k, v) in &want {
            same(&format!("{name} run_with output `{k}`"), &got[k], v);
        }
    }
}

/// `(c, x) -> (tanh(c + x), tanh(c + x))` scanned over `xs` along `axis`
/// (non-linear, so it stays a scan): on axis 1 every slice is strided and
/// goes through staging.
fn tanh_scan(axis: usize, reverse: bool) -> Graph {
    use kiln_ir::op::ScanOp;
    use kiln_ir::{BinaryOp, DType, Dim, Op, TensorType, UnaryOp, Value};
    let ty =
        |dims: &[&str]| TensorType::new(DType::F32, dims.iter().map(|d| Dim::from(*d)).collect());
    let mut body = Graph::new("tanh_step");
    let c = body.add_input("c", ty(&["d"])).unwrap();
    let x = body.add_input("x", ty(&["d"])).unwrap();
    let s = body.add(Op::Binary(BinaryOp::Add), &[c, x]).unwrap();
    let t = body.add(Op::Unary(UnaryOp::Tanh), &[s]).unwrap();
    body.add_output("c", t).unwrap();
    body.add_output("y", t).unwrap();
    let mut g = Graph::new("tanh_scan");
    let c0 = g.add_input("c0", ty(&["d"])).unwrap();
    let xs = g
        .add_input(
            "xs",
            ty(if axis == 0 {
                &["seq", "d"]
            } else {
                &["d", "seq"]
            }),
        )
        .unwrap();
    let op = Op::Scan(ScanOp {
        body: std::sync::Arc::new(body),
        num_carry: 1,
        num_xs: 1,
        axis,
        reverse,
    });
    let n = g.add_node(op, &[c0, xs]).unwrap();
    g.add_output("total", Value::new(n, 0)).unwrap();
    g.add_output("ys", Value::new(n, 1)).unwrap();
    g
}

/// Scans on the fake driver: carries double-buffered on the device,
/// contiguous slices by address, strided ones through staging (2-D copies),
/// forward and reverse; bitwise the CPU executor's results.
#[test]
fn scans_run_on_a_fake_driver() {
    if !fake_cuda::in_child() {
        fake_cuda::run_in_child("scans_run_on_a_fake_driver");
        return;
    }
    assert_eq!(device_info(0).unwrap().name, fake_cuda::DEVICE_NAME);
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut rand_tensor = |shape: Vec<usize>| {
        let n = shape.iter().product();
        Tensor::f32(shape, (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()).unwrap()
    };
    for axis in [0, 1] {
        for reverse in [false, true] {
            let g = tanh_scan(axis, reverse);
            let (mut cpu, mut gpu, _module) = on_fake_driver(&g, &BTreeMap::new());
            let staged = cpu.plan().all_steps().iter().any(|s| {
                matches!(s, kiln_runtime::plan::Step::Scan(sc) if sc.xs.iter().any(|x| x.staging.is_some()))
            });
            assert_eq!(staged, axis == 1, "axis {axis}:\n{}", cpu.plan().describe());
            for (seq, d) in [(0usize, 3usize), (1, 3), (7, 5), (40, 2)] {
                let shape = if axis == 0 {
                    vec![seq, d]
                } else {
                    vec![d, seq]
                };
                let inputs = BTreeMap::from([
                    ("c0".to_string(), rand_tensor(vec![d])),
                    ("xs".to_string(), rand_tensor(shape)),
                ]);
                let got = gpu.run(&inputs).unwrap();
                let want = cpu.run(&inputs).unwrap();
                for k in ["total", "ys"] {
                    same(
                        &format!("axis {axis} reverse {reverse} seq {seq} `{k}`"),
                        &got[k],
                        &want[k],
                    );
                }
            }
        }
    }
}

/// What the executor passes each kernel is what its PTX `.entry` takes:
/// one `.u64` address per operand and result, then one `.u64` per size
/// symbol, and a block of at most `.maxntid` threads (the launch's
/// `gpu_threads`). Checked on the text, so it holds without a GPU.
fn check_entry_abi(model: &str, plan: &Plan, ptx: &str) {
    for k in &plan.kernels {
        let launch = k.launch.as_ref().unwrap();
        let head = format!(".entry {}(", k.name);
        let at = ptx
            .find(&head)
            .unwrap_or_else(|| panic!("{model}: no `.entry {}` in the PTX", k.name));
        let rest = &ptx[at + head.len()..];
        let close = rest.find(')').unwrap();
        let params: Vec<&str> = rest[..close]
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        let bufs = k.operand_types.len() + k.result_types.len();
        assert_eq!(
            params.len(),
            bufs + plan.symbols.len(),
            "{model}: `{}` takes {params:?}; the executor passes {bufs} buffers and {} sizes",
            k.name,
            plan.symbols.len()
        );
        for (i, p) in params.iter().enumerate() {
            assert!(
                p.starts_with(".param .u64"),
                "{model}: `{}` param {i} is `{p}`",
                k.name
            );
            assert_eq!(
                p.contains(".ptr"),
                i < bufs,
                "{model}: `{}` param {i} is `{p}`",
                k.name
            );
        }
        let body = &rest[close..rest.find('{').unwrap()];
        if let Some(n) = body.split(".maxntid").nth(1) {
            let max: u32 = n.trim().split(',').next().unwrap().trim().parse().unwrap();
            assert!(
                launch.gpu_threads >= 1 && launch.gpu_threads <= max,
                "{model}: `{}` launches {} threads, .maxntid {max}",
                k.name,
                launch.gpu_threads
            );
        }
    }
}

#[test]
fn ptx_entries_take_what_the_executor_passes() {
    for name in ["tiny-decoder", "llama-tiny", "mamba-tiny"] {
        let graph = (kiln_models::builtin(name).unwrap().build)().unwrap();
        for arch in [GpuArch::Sm80, GpuArch::Sm90] {
            let (plan, ptx) = compile(&graph, arch);
            check_entry_abi(name, &plan, &ptx);
        }
    }
}
