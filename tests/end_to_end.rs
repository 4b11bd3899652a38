//! The whole pipeline against the reference interpreter, and the crate
//! boundaries the architecture depends on.

use kiln::{jit, CompileOptions};
use kiln_ir::{interp, tensor::rel_l2, Tensor};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

fn tokens(seq: usize, vocab: i32, rng: &mut impl Rng) -> BTreeMap<String, Tensor> {
    let ids: Vec<i32> = (0..seq).map(|_| rng.random_range(0..vocab)).collect();
    BTreeMap::from([("tokens".to_string(), Tensor::i32(vec![seq], ids).unwrap())])
}

/// One compiled model (symbolic `seq`) matches the interpreter at several lengths.
#[test]
fn tiny_decoder_compiled_matches_interpreter_at_several_lengths() {
    let m = kiln_models::builtin("tiny-decoder").unwrap();
    let graph = (m.build)().unwrap();
    let weights = (m.weights)(1);
    let mut exe = jit(&graph, &weights, &CompileOptions::default()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for seq in [1usize, 2, 7, 16, 33, 64] {
        let inputs = tokens(seq, 256, &mut rng);
        let got = exe.run(&inputs).unwrap()["logits"].clone();
        let want = interp::eval(&graph, &inputs, &weights).unwrap()["logits"].clone();
        assert_eq!(got.shape, vec![seq, 256]);
        let err = rel_l2(&got.to_f64_vec(), &want.to_f64_vec());
        assert!(err < 1e-4, "seq={seq}: relative L2 error {err:.3e}");
    }
}

/// The same with one and two threads: the executor's block split must not matter.
#[test]
fn thread_count_does_not_change_results() {
    let m = kiln_models::builtin("tiny-decoder").unwrap();
    let graph = (m.build)().unwrap();
    let weights = (m.weights)(2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let inputs = tokens(19, 256, &mut rng);
    let mut outs = Vec::new();
    for threads in [1, 2] {
        let mut opts = CompileOptions::default();
        opts.exec.threads = threads;
        let mut exe = jit(&graph, &weights, &opts).unwrap();
        outs.push(exe.run(&inputs).unwrap()["logits"].to_f32_vec());
    }
    assert_eq!(outs[0], outs[1]);
}

/// `kiln-runtime` must never link a compiler: an artifact runs without one.
#[test]
fn runtime_does_not_depend_on_llvm_or_mlir() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "kiln-runtime",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("kiln-runtime"), "{tree}");
    for banned in ["melior", "inkwell", "mlir-sys", "llvm-sys", "kiln-codegen"] {
        assert!(
            !tree.lines().any(|l| l.starts_with(&format!("{banned} "))),
            "kiln-runtime depends on {banned}:\n{tree}"
        );
    }
}

/// A plan is plain data: it survives a JSON round trip (what an artifact stores).
#[test]
fn plans_round_trip_through_json() {
    let model = kiln::model::load("llama-tiny", 0).unwrap();
    let exe = jit(&model.graph, &model.weights, &CompileOptions::default()).unwrap();
    let json = serde_json::to_string(exe.plan()).unwrap();
    let back: kiln_runtime::Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, exe.plan());
}

/// Weights stored narrow (`--weights bf16|f16`): the compiled model equals
/// the interpreter on the original graph with the weights `narrowed` names
/// (linear layers, embeddings) rounded to that dtype, for a prefill, a
/// one-token step and a prefill after filled state. Every run-time matmul
/// reads a narrow weight (declared so, or cast at load); no run-time step
/// reads an f32 weight `narrowed` names.
fn check_narrow_weights(
    graph: &kiln_ir::Graph,
    weights: &BTreeMap<String, Tensor>,
    narrowed: impl Fn(&str) -> bool,
    min_matmuls: usize,
) {
    use kiln_ir::DType;
    use kiln_runtime::plan::{Step, Storage};
    for to in [DType::BF16, DType::F16] {
        let rounded: BTreeMap<String, Tensor> = weights
            .iter()
            .map(|(n, t)| {
                let t = if narrowed(n) {
                    let r = Tensor::from_f64(to, t.shape.clone(), &t.to_f64_vec()).unwrap();
                    Tensor::from_f64(DType::F32, t.shape.clone(), &r.to_f64_vec()).unwrap()
                } else {
                    t.clone()
                };
                (n.clone(), t)
            })
            .collect();
        let mut opts = CompileOptions::default();
        opts.passes.weights = Some(to);
        let mut exe = jit(graph, weights, &opts).unwrap();
        let plan = exe.plan().clone();
        let mut matmuls = 0;
        for step in &plan.steps {
            let Step::Kernel { kernel, args } = step else {
                continue;
            };
            let k = &plan.kernels[*kernel];
            if k.op == kiln_ir::Op::MatMulT {
                let b = plan.root(args[1]);
                assert_eq!(plan.buffers[b].ty.dtype, to, "{}", k.name);
                // Declared narrow (the weights supplied rounded), or a cast
                // computed at load.
                assert!(
                    matches!(
                        plan.buffers[b].storage,
                        Storage::Param(_) | Storage::Derived
                    ),
                    "{}",
                    k.name
                );
                matmuls += 1;
            }
            for &a in args {
                let buf = &plan.buffers[plan.root(a)];
                if let Storage::Param(name) = &buf.storage {
                    let f32_read = buf.ty.dtype == DType::F32 && narrowed(name);
                    assert!(!f32_read, "f32 {name} read at run time");
                }
            }
        }
        assert!(matmuls >= min_matmuls, "{matmuls} matmuls");
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let ctx: kiln_ir::Bindings = [("ctx".to_string(), 32)].into();
        let has_past = graph.symbols().iter().any(|s| s == "past");
        for (seq, past) in [(5usize, 0i64), (1, 5), (17, 9)] {
            let mut inputs = tokens(seq, 256, &mut rng);
            for (name, ty) in graph.input_names().zip(graph.input_types()) {
                if name != "tokens" {
                    let shape = ty.eval_shape(&ctx).unwrap();
                    let n: usize = shape.iter().product();
                    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
                    inputs.insert(name.to_string(), Tensor::f32(shape, v).unwrap());
                }
            }
            let sizes: kiln_ir::Bindings = if has_past {
                [("past".to_string(), past)].into()
            } else {
                Default::default()
            };
            let got = exe.run_with(&inputs, &sizes).unwrap()["logits"].clone();
            let eval = interp::EvalOptions {
                sizes,
                ..interp::EvalOptions::default()
            };
            let want = interp::eval_with(graph, &inputs, &rounded, &eval).unwrap();
            let plain = interp::eval_with(graph, &inputs, weights, &eval).unwrap();
            let want = &want["logits"];
            let err = rel_l2(&got.to_f64_vec(), &want.to_f64_vec());
            assert!(
                err < 2e-5,
                "{to} seq={seq} past={past}: relative L2 error {err:.3e}"
            );
            // The rounding shows (1e-4 to 2e-3 here): the test tells the two apart.
            let rounding = rel_l2(&got.to_f64_vec(), &plain["logits"].to_f64_vec());
            assert!(rounding > 1e-4, "{to}: {rounding:.3e} from the f32 weights");
        }
    }
}

/// Llama: q, k, v, o, gate, up, down, the head and the embedding narrow;
/// the norms' scales f32.
#[test]
fn narrow_weights_llama_matches_the_rounded_model() {
    let cfg = kiln_models::llama::tiny_config();
    let graph = kiln_models::llama::build(&cfg).unwrap();
    let weights = kiln_models::llama::random_weights(&cfg, 4);
    let narrowed = |n: &str| !n.contains("norm");
    // Per layer q/k/v (merged into one matmul_t), o, gate/up (merged), down.
    check_narrow_weights(&graph, &weights, narrowed, 4 * cfg.num_hidden_layers);
}

/// Mamba: in, x, dt and out projections and the tied embedding/head narrow;
/// the convolution, `A_log`, `D`, biases and norms f32.
#[test]
fn narrow_weights_mamba_matches_the_rounded_model() {
    let cfg = kiln_models::mamba::tiny_config();
    let graph = kiln_models::mamba::build(&cfg).unwrap();
    let weights = kiln_models::mamba::random_weights(&cfg, 4);
    let narrowed = |n: &str| n.ends_with("_proj.weight") || n.ends_with("embeddings.weight");
    check_narrow_weights(&graph, &weights, narrowed, 4 * cfg.num_hidden_layers);
}
