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
