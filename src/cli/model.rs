//! `--model`: a built-in model's name, or a file holding IR text (`.kir`) or JSON.

use anyhow::{anyhow, bail, Context};
use kiln_ir::{Graph, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

pub struct Model {
    pub graph: Graph,
    /// Weights, when the model has them (built-in models have seeded ones).
    pub weights: Option<BTreeMap<String, Tensor>>,
}

pub fn load(spec: &str, seed: u64) -> anyhow::Result<Model> {
    if let Some(m) = kiln_models::builtin(spec) {
        let graph = (m.build)().with_context(|| format!("building `{spec}`"))?;
        return Ok(Model {
            graph,
            weights: Some((m.weights)(seed)),
        });
    }
    let path = Path::new(spec);
    if path.is_dir() {
        bail!(
            "`{spec}` is a directory; loading model directories (HF config.json + safetensors) is not supported yet. Built-in models: {}",
            builtin_names()
        );
    }
    if path.is_file() {
        return Ok(Model {
            graph: read_graph(path)?,
            weights: None,
        });
    }
    Err(anyhow!(
        "no built-in model or file called `{spec}`; built-in models: {}",
        builtin_names()
    ))
}

fn builtin_names() -> String {
    kiln_models::builtin_models()
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads IR text (or JSON when the file ends in `.json`; `-` is stdin). Parse
/// errors show the file, line, column and the offending line with a caret.
pub fn read_graph(path: &Path) -> anyhow::Result<Graph> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    if path.extension().is_some_and(|e| e == "json") {
        return kiln_ir::json::from_json(&text).map_err(|e| anyhow!("{}: {e}", path.display()));
    }
    kiln_ir::text::parse(&text).map_err(|e| {
        let line_text = text.lines().nth(e.line.saturating_sub(1)).unwrap_or("");
        anyhow!(
            "{}:{}:{}: {}\n{}\n{}^",
            path.display(),
            e.line,
            e.col,
            e.message,
            line_text,
            " ".repeat(e.col.saturating_sub(1))
        )
    })
}
