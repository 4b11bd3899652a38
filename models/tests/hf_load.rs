//! `config.json` dispatch and `hf::load_dir` on whole directories.

mod hf_common;

use hf_common::{f32_tensor, Scratch};
use kiln_models::hf::{
    self, config::architecture_of, Architecture, ConfigProblem, LoadError, ModelConfig,
};
use serde_json::json;
use std::collections::BTreeMap;

#[test]
fn the_architecture_comes_from_architectures_then_model_type() {
    let arch = |v: serde_json::Value| architecture_of(&v);
    assert_eq!(
        arch(json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})),
        Ok(Architecture::Llama)
    );
    assert_eq!(
        arch(json!({"architectures": ["MambaForCausalLM"]})),
        Ok(Architecture::Mamba)
    );
    assert_eq!(
        arch(json!({"model_type": "mamba"})),
        Ok(Architecture::Mamba)
    );
    assert_eq!(
        arch(json!({"architectures": [], "model_type": "llama"})),
        Ok(Architecture::Llama)
    );
    assert_eq!(
        arch(json!({"architectures": null, "model_type": "llama"})),
        Ok(Architecture::Llama)
    );
}

#[test]
fn config_errors_say_what_is_supported() {
    let err = |text: &str| ModelConfig::from_json("cfg/config.json", text.as_bytes()).unwrap_err();
    let e = err(r#"{"architectures": ["MistralForCausalLM"], "model_type": "mistral"}"#);
    assert_eq!(
        e.to_string(),
        "cfg/config.json: unsupported architecture `MistralForCausalLM` (supported: LlamaForCausalLM (model_type `llama`), MambaForCausalLM (model_type `mamba`))"
    );
    let e = err(r#"{"model_type": "qwen2"}"#);
    assert!(
        matches!(&e.problem, ConfigProblem::UnknownArchitecture { found, .. } if found == "model_type `qwen2`")
    );
    let e = err(r#"{"hidden_size": 8}"#);
    assert!(
        e.to_string()
            .contains("neither `architectures` nor `model_type`"),
        "{e}"
    );
    assert!(e.to_string().contains("LlamaForCausalLM"), "{e}");
    let e = err(r#"{"architectures": "LlamaForCausalLM"}"#);
    assert!(
        e.to_string()
            .contains("field `architectures`: expected a list of class names, found a string"),
        "{e}"
    );
    let e = err(r#"{"architectures": [3]}"#);
    assert!(matches!(e.problem, ConfigProblem::BadField { .. }), "{e}");
    let e = err(r#"{"model_type": 3}"#);
    assert!(
        e.to_string()
            .contains("field `model_type`: expected a string, found a number"),
        "{e}"
    );
    let e = err(r#"{"architectures": ["LlamaForCausalLM"], "model_type": "mamba"}"#);
    assert!(
        e.to_string()
            .contains("`mamba` contradicts `architectures`"),
        "{e}"
    );
    assert_eq!(err("[1]").problem, ConfigProblem::NotObject);
    let e = err("{\"a\": ");
    assert!(
        e.to_string().starts_with("cfg/config.json: not valid JSON"),
        "{e}"
    );
}

fn llama_config() -> serde_json::Value {
    json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 8, "eos_token_id": 2})
}

#[test]
fn load_dir_reads_config_weights_and_tokenizer() {
    let dir = Scratch::new("load-dir");
    std::fs::write(dir.join("config.json"), llama_config().to_string()).unwrap();
    let w = BTreeMap::from([(
        "model.embed_tokens.weight".to_string(),
        f32_tensor(1, &[8, 4]),
    )]);
    hf::save_safetensors(dir.join("model.safetensors"), &w).unwrap();
    let m = hf::load_dir(dir.path()).unwrap();
    assert_eq!(m.architecture, Architecture::Llama);
    assert_eq!(m.config["vocab_size"], 8);
    assert_eq!(
        m.weights.get("model.embed_tokens.weight").unwrap(),
        &w["model.embed_tokens.weight"]
    );
    assert!(m.tokenizer.is_none());
    // Special ids from the configs alone; generation_config.json wins.
    assert_eq!(
        (m.bos_token_id, m.eos_token_ids.as_slice()),
        (None, &[2][..])
    );
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"bos_token_id": 1, "eos_token_id": [3, 4]}"#,
    )
    .unwrap();
    let m = hf::load_dir(dir.path()).unwrap();
    assert_eq!(
        (m.bos_token_id, m.eos_token_ids.as_slice()),
        (Some(1), &[3, 4][..])
    );
    std::fs::remove_file(dir.join("generation_config.json")).unwrap();

    // A tokenizer next to it is loaded, with EOS from config.json.
    let vocab = json!({"<unk>": 0, "a": 1, "</s>": 2});
    std::fs::write(dir.join("vocab.json"), vocab.to_string()).unwrap();
    let model = tokenizers::models::wordlevel::WordLevel::from_file(
        dir.join("vocab.json").to_str().unwrap(),
        "<unk>".into(),
    )
    .unwrap();
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace));
    tok.save(dir.join("tokenizer.json"), false).unwrap();
    let m = hf::load_dir(dir.path()).unwrap();
    let t = m.tokenizer.unwrap();
    assert_eq!(t.encode("a a").unwrap(), [1, 1]);
    assert_eq!(t.eos_token_id(), Some(2));
    assert_eq!(m.eos_token_ids, [2]);

    // A malformed tokenizer is an error, not silently skipped.
    std::fs::write(dir.join("tokenizer.json"), "{").unwrap();
    let e = hf::load_dir(dir.path()).unwrap_err();
    assert!(matches!(e, LoadError::Tokenizer(_)), "{e}");
}

#[test]
fn load_dir_errors() {
    let dir = Scratch::new("load-dir-errors");
    let e = hf::load_dir(dir.join("absent")).unwrap_err();
    assert!(
        e.to_string().contains("absent: not a model directory"),
        "{e}"
    );
    let e = hf::load_dir(dir.path()).unwrap_err();
    assert!(
        e.to_string()
            .contains("config.json: missing the model config"),
        "{e}"
    );

    std::fs::write(dir.join("config.json"), llama_config().to_string()).unwrap();
    let e = hf::load_dir(dir.path()).unwrap_err();
    assert!(
        e.to_string().contains(
            "no safetensors weights (looked for model.safetensors.index.json, model.safetensors)"
        ),
        "{e}"
    );
    std::fs::write(dir.join("pytorch_model.bin"), b"pickle").unwrap();
    let e = hf::load_dir(dir.path()).unwrap_err();
    assert!(
        e.to_string()
            .contains("found pytorch_model.bin, a PyTorch pickle"),
        "{e}"
    );

    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures": ["GPT2LMHeadModel"]}"#,
    )
    .unwrap();
    let e = hf::load_dir(dir.path()).unwrap_err();
    assert!(matches!(e, LoadError::Config(_)), "{e}");
    assert!(
        e.to_string()
            .contains("unsupported architecture `GPT2LMHeadModel`"),
        "{e}"
    );
}
