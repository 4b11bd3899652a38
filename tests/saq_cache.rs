//! `--kv-cache saq:...` through the whole compiled path (optimizer with the
//! `saq` pass, plan, SAQ kernels, executor state): llama-tiny decoded token
//! by token matches the interpreter running the same SAQ graph; the state
//! the executor keeps has the layout's size; the golden Llama configs stay
//! exact on a prefill and close to transformers decoding through the
//! quantized cache; a call past the capacity is a typed error.

use kiln::lm::CompiledLm;
use kiln::{jit, CompileOptions, KilnError};
use kiln_ir::interp::{eval_with, EvalOptions};
use kiln_ir::saq::{SaqLayout, SaqSpec};
use kiln_ir::tensor::rel_l2;
use kiln_ir::{Bindings, Graph, Tensor};
use kiln_models::llama;
use kiln_passes::{PassManager, PassOptions};
use kiln_runtime::generate::LanguageModel;
use std::collections::BTreeMap;
use std::path::Path;

fn options(spec: &str) -> CompileOptions {
    CompileOptions {
        passes: PassOptions {
            kv_cache: Some(SaqSpec::parse(spec).unwrap()),
            ..PassOptions::default()
        },
        ..CompileOptions::default()
    }
}

/// The graph after the `saq` pass: what the interpreter runs as reference.
fn saq_graph(g: &Graph, spec: &str) -> Graph {
    let opts = options(spec).passes;
    PassManager::for_options(&opts)
        .run_until(g.clone(), "saq", &opts)
        .unwrap()
        .0
}

/// Logits of each token fed one at a time to the interpreter, the states
/// carried between calls (zeros of capacity `ctx` at first).
fn interpreted(
    g: &Graph,
    w: &BTreeMap<String, Tensor>,
    tokens: &[u32],
    ctx: usize,
) -> Vec<Vec<f64>> {
    let b: Bindings = [("ctx".to_string(), ctx as i64)].into();
    let mut state: BTreeMap<String, Tensor> = g
        .input_names()
        .zip(g.input_types())
        .filter(|(n, _)| *n != "tokens")
        .map(|(n, t)| {
            (
                n.to_string(),
                Tensor::zeros(t.dtype, t.eval_shape(&b).unwrap()),
            )
        })
        .collect();
    let mut out = Vec::new();
    for (past, &t) in tokens.iter().enumerate() {
        let mut inputs = state.clone();
        inputs.insert(
            "tokens".into(),
            Tensor::i32(vec![1], vec![t as i32]).unwrap(),
        );
        let opts = EvalOptions {
            sizes: [("past".to_string(), past as i64)].into(),
            ..EvalOptions::default()
        };
        let mut res = eval_with(g, &inputs, w, &opts).unwrap();
        out.push(res.remove("logits").unwrap().to_f64_vec());
        res.remove("last_logits");
        state.extend(res);
    }
    out
}

#[test]
fn compiled_saq_decode_matches_the_interpreter() {
    let cfg = llama::tiny_config();
    let w = llama::random_weights(&cfg, 1);
    let g = llama::build(&cfg).unwrap();
    let tokens: Vec<u32> = (0..21).map(|i| (i * 53 + 7) % 256).collect();
    let ctx = 24;
    let spec = "saq:16,8,4,2:S=4:G=4";
    let want = interpreted(&saq_graph(&g, spec), &w, &tokens, ctx);
    let exe = jit(&g, &w, &options(spec)).unwrap();
    let names = exe.state_names();
    assert_eq!(names, ["model.layers.0.kv_saq", "model.layers.1.kv_saq"]);
    let mut lm = CompiledLm::new(exe, ctx).unwrap();
    for (i, &t) in tokens.iter().enumerate() {
        let got = lm.forward_all(&[t]).unwrap().to_f64_vec();
        let e = rel_l2(&got, &want[i]);
        assert!(e < 1e-4, "token {i}: compiled vs interpreter {e:.2e}");
    }
    // The executor's state is the layout's byte buffer.
    let l = SaqLayout::new(
        &SaqSpec::parse(spec).unwrap(),
        cfg.num_kv_heads(),
        cfg.head_dim(),
    )
    .unwrap();
    let s = lm.executable().state("model.layers.0.kv_saq").unwrap();
    assert_eq!(s.shape, vec![l.state_bytes(ctx)]);
    // Past the capacity: the adapter refuses, and so does the executor.
    let e = lm.forward_all(&[1, 2, 3, 4]).unwrap_err();
    assert!(e.to_string().contains("exceed the context of 24"), "{e}");
    let mut exe = jit(&g, &w, &options(spec)).unwrap();
    let sizes: Bindings = [("ctx".to_string(), 8), ("past".to_string(), 6)].into();
    exe.init_state(&sizes).unwrap();
    let tok = BTreeMap::from([(
        "tokens".to_string(),
        Tensor::i32(vec![3], vec![1, 2, 3]).unwrap(),
    )]);
    let e = exe.step(&tok, &sizes).unwrap_err();
    assert!(matches!(e, KilnError::Runtime(_)), "{e}");
    assert!(e.to_string().contains("SAQ cache"), "{e}");
}

fn golden_tensor(dir: &Path, name: &str) -> Tensor {
    let w = kiln_models::weights::Weights::open(dir.join("golden.safetensors")).unwrap();
    w.get(name).unwrap().clone()
}

#[test]
fn golden_llama_logits_through_the_saq_cache() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/llama-gqa-tied");
    let tokens: Vec<u32> = golden_tensor(&dir, "tokens")
        .to_i64_vec()
        .unwrap()
        .iter()
        .map(|&t| t as u32)
        .collect();
    let want = golden_tensor(&dir, "logits").to_f64_vec();
    let model = kiln::model::load_dir(&dir).unwrap();
    for (spec, bound) in [
        ("saq", 2e-3),
        ("saq:16,8:S=4:G=4", 2e-2),
        ("saq:16,8,4,2:S=4:G=4", 0.2),
    ] {
        let exe = jit(&model.graph, &model.weights, &options(spec)).unwrap();
        let mut lm = CompiledLm::new(exe, 64).unwrap();
        // A prefill attends its own tokens exactly.
        let prefill = lm.forward_all(&tokens).unwrap().to_f64_vec();
        let e = rel_l2(&prefill, &want);
        assert!(e < 1e-5, "{spec}: prefill {e:.2e}");
        LanguageModel::reset(&mut lm).unwrap();
        let mut decode = Vec::new();
        for &t in &tokens {
            decode.extend(lm.forward_all(&[t]).unwrap().to_f64_vec());
        }
        let e = rel_l2(&decode, &want);
        eprintln!("llama-gqa-tied, {spec}: decode logits vs transformers, relative L2 {e:.2e}");
        assert!(e > 0.0 && e < bound, "{spec}: decode {e:.2e}");
    }
}
