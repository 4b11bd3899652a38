//! Whole models against Hugging Face transformers: the golden files in
//! `tests/golden/` (made by `scripts/golden/make_golden.py`; CI needs no
//! torch) hold random-weight models and the logits and greedy generations
//! transformers computed for them. Everything here runs the compiled CPU path.

use kiln::lm::CompiledLm;
use kiln_ir::tensor::rel_l2;
use kiln_models::weights::Weights;
use kiln_runtime::generate::{generate, GenerateOptions, LanguageModel};
use kiln_runtime::sampler::SamplingConfig;
use std::path::{Path, PathBuf};

const TOLERANCE: f64 = 1e-4;

fn golden_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/golden exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("golden.safetensors").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 9,
        "expected the golden folders, found {dirs:?}"
    );
    dirs
}

fn ids(w: &Weights, name: &str) -> Vec<u32> {
    w.get(name)
        .unwrap()
        .to_i64_vec()
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

fn compile(dir: &Path) -> CompiledLm {
    let model = kiln::model::load_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let exe = kiln::jit(&model.graph, &model.weights, &Default::default())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    CompiledLm::new(exe, 64).unwrap()
}

/// Prefill logits, token-by-token decode logits and 32 greedy tokens, for
/// every golden model.
#[test]
fn compiled_models_match_transformers() {
    for dir in golden_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let golden = Weights::open(dir.join("golden.safetensors")).unwrap();
        let tokens = ids(&golden, "tokens");
        let want = golden.get("logits").unwrap().to_f64_vec();
        let mut lm = compile(&dir);

        let prefill = lm.forward_all(&tokens).unwrap().to_f64_vec();
        let e = rel_l2(&prefill, &want);
        assert!(e < TOLERANCE, "{name}: prefill logits relative L2 {e:.3e}");

        lm.reset().unwrap();
        let mut decode = Vec::new();
        for &t in &tokens {
            decode.extend(lm.forward_all(&[t]).unwrap().to_f64_vec());
        }
        let e = rel_l2(&decode, &want);
        assert!(e < TOLERANCE, "{name}: decode logits relative L2 {e:.3e}");

        let prompt = ids(&golden, "greedy_prompt");
        let expected = ids(&golden, "greedy_ids");
        let opts = GenerateOptions {
            max_new_tokens: expected.len(),
            sampling: SamplingConfig::greedy(),
            stop_tokens: Vec::new(),
        };
        let (got, _) = generate(&mut lm, &prompt, &opts, &mut |_| true).unwrap();
        assert_eq!(
            got, expected,
            "{name}: greedy generation differs from transformers"
        );
        eprintln!("{name}: prefill, decode and 32 greedy tokens match");
    }
}

/// The Mamba goldens with extraction for the GPU, which lowers every
/// selective scan to `linear_scan` (run here by the CPU executor; for the
/// CPU the cost model keeps these step loops): prefill and token-by-token
/// decode logits.
#[test]
fn mamba_goldens_through_linear_scans() {
    let mut seen = 0;
    for dir in golden_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("mamba") {
            continue;
        }
        seen += 1;
        let golden = Weights::open(dir.join("golden.safetensors")).unwrap();
        let tokens = ids(&golden, "tokens");
        let want = golden.get("logits").unwrap().to_f64_vec();
        let model = kiln::model::load_dir(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut opts = kiln::CompileOptions::default();
        opts.passes.target = kiln::passes::CostTarget::Gpu;
        let exe = kiln::jit(&model.graph, &model.weights, &opts)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            exe.plan()
                .kernels
                .iter()
                .any(|k| matches!(k.op, kiln_ir::Op::LinearScan(_))),
            "{name}: no linear_scan kernel"
        );
        let mut lm = CompiledLm::new(exe, 64).unwrap();
        let prefill = lm.forward_all(&tokens).unwrap().to_f64_vec();
        let e = rel_l2(&prefill, &want);
        assert!(e < TOLERANCE, "{name}: prefill logits relative L2 {e:.3e}");
        lm.reset().unwrap();
        let mut decode = Vec::new();
        for &t in &tokens {
            decode.extend(lm.forward_all(&[t]).unwrap().to_f64_vec());
        }
        let e = rel_l2(&decode, &want);
        assert!(e < TOLERANCE, "{name}: decode logits relative L2 {e:.3e}");
    }
    assert!(seen >= 2, "expected the Mamba golden folders");
}
