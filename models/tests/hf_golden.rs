//! The loader on files written by Hugging Face `transformers` itself
//! (`tests/golden/`, see its README): every folder loads, the architecture
//! is detected, dtypes and shapes are as the configs say.

use kiln_models::hf::{self, Architecture, Dtype};
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

#[test]
fn every_golden_folder_loads() {
    let mut seen = 0;
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let m = hf::load_dir(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = if name.starts_with("llama") {
            Architecture::Llama
        } else {
            Architecture::Mamba
        };
        assert_eq!(m.architecture, want, "{name}");
        assert!(m.tokenizer.is_none(), "{name}");
        let vocab = m.config["vocab_size"].as_u64().unwrap() as usize;
        let hidden = m.config["hidden_size"].as_u64().unwrap() as usize;
        let embed = if want == Architecture::Llama {
            "model.embed_tokens.weight"
        } else {
            "backbone.embeddings.weight"
        };
        assert_eq!(m.weights.shape(embed), Some(&[vocab, hidden][..]), "{name}");
        let stored = match name.as_str() {
            "llama-bf16" => Dtype::BF16,
            "llama-f16" => Dtype::F16,
            _ => Dtype::F32,
        };
        for n in m.weights.names() {
            assert_eq!(m.weights.dtype(n), Some(stored), "{name} {n}");
            let t = m.weights.get(n).unwrap();
            assert_eq!(t.dtype(), kiln_ir::DType::F32);
            assert!(
                t.as_f32().unwrap().iter().all(|x| x.is_finite()),
                "{name} {n}"
            );
        }
        let tied = m.config["tie_word_embeddings"].as_bool().unwrap_or(false);
        assert_eq!(
            m.weights.contains("lm_head.weight"),
            !tied && want == Architecture::Llama,
            "{name}"
        );
        // The reference outputs are safetensors too.
        let g = kiln_models::weights::Weights::open(dir.join("golden.safetensors")).unwrap();
        assert_eq!(g.dtype("tokens"), Some(Dtype::I64));
        assert_eq!(g.shape("logits"), Some(&[16, vocab][..]));
        seen += 1;
    }
    assert_eq!(seen, 9);
}

/// Every folder builds its graph from its config, and the weights match
/// the graph's parameters exactly: nothing missing, nothing unused (tied
/// models have no LM head weight and the graph asks for none).
#[test]
fn golden_weights_match_their_graphs() {
    let mut seen = 0;
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !dir.is_dir() {
            continue;
        }
        let m = hf::load_dir(&dir).unwrap();
        let graph = m.build_graph().unwrap_or_else(|e| panic!("{name}: {e}"));
        let report = m.check(&graph).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.unused.is_empty(), "{name}: {:?}", report.unused);
        seen += 1;
    }
    assert_eq!(seen, 9);
}

#[test]
fn a_config_the_builder_rejects_is_a_typed_error() {
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir().join("llama-mha/config.json")).unwrap(),
    )
    .unwrap();
    config["hidden_act"] = "gelu".into();
    let e = hf::build_graph(Architecture::Llama, &config).unwrap_err();
    assert!(matches!(e, hf::LoadError::Build { .. }));
    let msg = e.to_string();
    assert!(
        msg.starts_with("building the LlamaForCausalLM graph: "),
        "{msg}"
    );
    assert!(msg.contains("hidden_act"), "{msg}");
}
