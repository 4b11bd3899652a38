//! Finding a model by name: the embedded default, a built-in, a Hugging Face
//! directory, or an IR file — and what generating from it needs (tokenizer,
//! special ids, context, sampling defaults).

use crate::jit::KilnError;
use kiln_ir::Graph;
use kiln_models::hf::{self, Architecture, SafetensorsFile, Tokenizer};
use kiln_models::weights::Weights;
use kiln_runtime::sampler::SamplingConfig;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// The name that selects the model shipped inside the `kiln` binary.
pub const DEFAULT_MODEL: &str = "default";

/// The trained default model (`models/default`, made by
/// `scripts/train/train.py`), embedded so `kiln run` needs no download.
mod embedded {
    pub const CONFIG: &[u8] = include_bytes!("../models/default/config.json");
    pub const GENERATION: &[u8] = include_bytes!("../models/default/generation_config.json");
    pub const TOKENIZER: &[u8] = include_bytes!("../models/default/tokenizer.json");
    pub const WEIGHTS: &[u8] = include_bytes!("../models/default/model.safetensors");
}

/// How text becomes tokens.
pub enum TextCodec {
    /// A Hugging Face tokenizer (boxed: it is large).
    Hf(Box<Tokenizer>),
    /// Bytes as tokens (built-in byte-vocabulary models).
    Bytes,
}

impl TextCodec {
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, KilnError> {
        match self {
            TextCodec::Hf(t) => t.encode(text).map_err(|e| KilnError::Model(e.to_string())),
            TextCodec::Bytes => Ok(text.bytes().map(u32::from).collect()),
        }
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, KilnError> {
        match self {
            TextCodec::Hf(t) => t.decode(ids).map_err(|e| KilnError::Model(e.to_string())),
            TextCodec::Bytes => {
                let bytes: Vec<u8> = ids.iter().map(|&t| t as u8).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }
}

/// A model ready to compile: its graph, weights and what generation needs.
pub struct LoadedModel {
    pub name: String,
    pub graph: Graph,
    pub weights: Weights,
    /// `None` when the model comes without a tokenizer (use token ids).
    pub codec: Option<TextCodec>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The longest sequence the model supports (`max_position_embeddings`).
    pub max_context: Option<usize>,
    /// Sampling defaults from `generation_config.json` (greedy when absent).
    pub sampling: SamplingConfig,
    /// Where it came from, for an ahead-of-time artifact: the Hugging Face
    /// `config.json` and `tokenizer.json` as read (none for built-ins).
    pub source: ModelSource,
}

/// The files a model was read from, kept so an artifact can carry them.
#[derive(Clone, Debug, Default)]
pub struct ModelSource {
    pub hf_config: Option<Value>,
    pub tokenizer_json: Option<Vec<u8>>,
}

/// Loads `spec`: [`DEFAULT_MODEL`], a built-in name (`kiln models`), a
/// Hugging Face model directory, or an IR file (`.kir`, `.json`; no weights).
pub fn load(spec: &str, seed: u64) -> Result<LoadedModel, KilnError> {
    if spec == DEFAULT_MODEL {
        return load_default();
    }
    if let Some(m) = kiln_models::builtin(spec) {
        if m.shape_only {
            return Err(KilnError::Model(format!(
                "`{spec}` is a shape-only built-in: it has a graph but no weights, so it cannot run; use `kiln inspect --model {spec}`"
            )));
        }
        let graph = (m.build)()?;
        let logits_vocab = vocab_of(&graph);
        return Ok(LoadedModel {
            name: spec.to_string(),
            graph,
            weights: Weights::from_tensors((m.weights)(seed)),
            codec: (logits_vocab >= 256).then_some(TextCodec::Bytes),
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            max_context: None,
            sampling: SamplingConfig::greedy(),
            source: ModelSource::default(),
        });
    }
    let path = Path::new(spec);
    if path.is_dir() {
        return load_dir(path);
    }
    Err(KilnError::Model(format!(
        "no built-in model or model directory called `{spec}`; built-in models: {DEFAULT_MODEL}, {}",
        kiln_models::builtin_models()
            .iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// A Hugging Face directory (`config.json`, safetensors, optional tokenizer).
pub fn load_dir(dir: &Path) -> Result<LoadedModel, KilnError> {
    let m = hf::load_dir(dir)?;
    let graph = hf::build_graph(m.architecture, &m.config)?;
    m.check(&graph)?;
    let generation = std::fs::read(dir.join("generation_config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let tokenizer_json = match &m.tokenizer {
        Some(t) => Some(
            std::fs::read(t.path())
                .map_err(|e| KilnError::Model(format!("reading {}: {e}", t.path().display())))?,
        ),
        None => None,
    };
    let source = ModelSource {
        hf_config: Some(m.config.clone()),
        tokenizer_json,
    };
    Ok(LoadedModel {
        source,
        name: dir.display().to_string(),
        max_context: max_context(m.architecture, &m.config),
        sampling: sampling_defaults(generation.as_ref()),
        graph,
        weights: m.weights,
        codec: m.tokenizer.map(|t| TextCodec::Hf(Box::new(t))),
        bos_token_id: m.bos_token_id,
        eos_token_ids: m.eos_token_ids,
    })
}

/// The embedded default model.
pub fn load_default() -> Result<LoadedModel, KilnError> {
    let bad = |e: String| KilnError::Model(format!("the embedded default model: {e}"));
    let config: Value = serde_json::from_slice(embedded::CONFIG).map_err(|e| bad(e.to_string()))?;
    let generation: Value =
        serde_json::from_slice(embedded::GENERATION).map_err(|e| bad(e.to_string()))?;
    let file =
        SafetensorsFile::from_bytes("<embedded>/model.safetensors", embedded::WEIGHTS.to_vec())
            .map_err(|e| bad(e.to_string()))?;
    let mut weights = Weights::default();
    weights.add_file(Arc::new(file))?;
    let tokenizer = Tokenizer::from_bytes("<embedded>/tokenizer.json", embedded::TOKENIZER)
        .map_err(|e| bad(e.to_string()))?;
    let graph = hf::build_graph(Architecture::Llama, &config)?;
    weights.check_against(&graph.params())?;
    let id = |k: &str| generation.get(k).and_then(Value::as_u64).map(|v| v as u32);
    Ok(LoadedModel {
        source: ModelSource {
            hf_config: Some(config.clone()),
            tokenizer_json: Some(embedded::TOKENIZER.to_vec()),
        },
        name: DEFAULT_MODEL.into(),
        max_context: max_context(Architecture::Llama, &config),
        sampling: sampling_defaults(Some(&generation)),
        graph,
        weights,
        bos_token_id: id("bos_token_id").or(tokenizer.bos_token_id()),
        eos_token_ids: id("eos_token_id")
            .map(|e| vec![e])
            .unwrap_or_else(|| tokenizer.eos_token_ids().to_vec()),
        codec: Some(TextCodec::Hf(Box::new(tokenizer))),
    })
}

fn vocab_of(graph: &Graph) -> usize {
    graph
        .output("logits")
        .and_then(|o| graph.ty(o.value).shape.last().and_then(|d| d.as_const()))
        .unwrap_or(0) as usize
}

fn max_context(arch: Architecture, config: &Value) -> Option<usize> {
    match arch {
        Architecture::Llama => config
            .get("max_position_embeddings")
            .and_then(Value::as_u64)
            .map(|v| v as usize),
        // Recurrent: no cache to fill.
        Architecture::Mamba => None,
    }
}

/// `generation_config.json`'s sampling settings (`do_sample` false or absent:
/// greedy; `top_k` 0 and `top_p` 1 mean off, as in transformers).
fn sampling_defaults(generation: Option<&Value>) -> SamplingConfig {
    let Some(g) = generation else {
        return SamplingConfig::greedy();
    };
    if !g.get("do_sample").and_then(Value::as_bool).unwrap_or(false) {
        return SamplingConfig::greedy();
    }
    SamplingConfig {
        temperature: g.get("temperature").and_then(Value::as_f64).unwrap_or(1.0) as f32,
        // transformers' default top-k is 50 when the file does not say.
        top_k: match g.get("top_k").and_then(Value::as_u64) {
            Some(0) => None,
            Some(k) => Some(k as usize),
            None => Some(50),
        },
        top_p: g
            .get("top_p")
            .and_then(Value::as_f64)
            .filter(|&p| p < 1.0)
            .map(|p| p as f32),
        seed: 0,
    }
}

/// The reference interpreter's logits for `tokens` from an empty state:
/// state inputs zero-filled with a cache of exactly `tokens.len()` rows, and
/// `past = 0`. The oracle `kiln run --check` and the tests compare against.
pub fn reference_logits(model: &LoadedModel, tokens: &[u32]) -> Result<kiln_ir::Tensor, KilnError> {
    reference_logits_of(&model.graph, &model.weights, tokens)
}

/// [`reference_logits`] of the model with its weight matrices stored as
/// `to` (`--weights f16|bf16`): the interpreter on the graph after the
/// `lossy` pass, the weights rounded as the JIT rounds them — what the
/// compiled model computes, up to f32 arithmetic.
pub fn reference_logits_narrow(
    model: &LoadedModel,
    tokens: &[u32],
    to: kiln_ir::DType,
) -> Result<kiln_ir::Tensor, KilnError> {
    let opts = kiln_passes::PassOptions {
        weights: Some(to),
        ..Default::default()
    };
    let (graph, _) =
        kiln_passes::PassManager::from_names(&["lossy"])?.run(model.graph.clone(), &opts)?;
    let weights = crate::NarrowWeights::new(&model.weights, &graph, to);
    reference_logits_of(&graph, &weights, tokens)
}

fn reference_logits_of(
    graph: &kiln_ir::Graph,
    weights: &dyn kiln_ir::interp::ParamSource,
    tokens: &[u32],
) -> Result<kiln_ir::Tensor, KilnError> {
    use kiln_ir::{interp, Bindings, Tensor};
    let n = tokens.len();
    let sizes: Bindings = [("past", 0), ("ctx", n as i64), ("seq", n as i64)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut inputs = std::collections::BTreeMap::new();
    for (name, ty) in graph.input_names().zip(graph.input_types()) {
        let t = if name == "tokens" {
            Tensor::i32(vec![n], tokens.iter().map(|&t| t as i32).collect())
                .expect("length matches")
        } else {
            let shape = ty
                .eval_shape(&sizes)
                .map_err(|e| KilnError::Model(format!("state `{name}`: {e}")))?;
            Tensor::zeros(ty.dtype, shape)
        };
        inputs.insert(name.to_string(), t);
    }
    let opts = interp::EvalOptions {
        sizes: [("past".to_string(), 0)].into_iter().collect(),
        ..Default::default()
    };
    let uses_past = graph.symbols().iter().any(|s| s == "past");
    let opts = if uses_past {
        opts
    } else {
        interp::EvalOptions::default()
    };
    let mut out = interp::eval_with(graph, &inputs, weights, &opts)
        .map_err(|e| KilnError::Model(format!("reference interpreter: {e}")))?;
    out.remove("logits")
        .ok_or_else(|| KilnError::Model("the model has no `logits` output".into()))
}
