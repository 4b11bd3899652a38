//! `--model`: `default` (the embedded trained model), a built-in name, a
//! Hugging Face model directory, or a file holding IR text (`.kir`) or JSON.

use anyhow::{anyhow, Context};
use kiln::model::LoadedModel;
use kiln_ir::Graph;
use std::path::Path;

/// A model's graph, for inspection: from an IR file, or any model `load_runnable` takes.
pub fn load_graph(spec: &str, seed: u64) -> anyhow::Result<Graph> {
    let path = Path::new(spec);
    if path.is_file() {
        return read_graph(path);
    }
    Ok(load_runnable(spec, seed)?.graph)
}

/// A model with weights, for running.
pub fn load_runnable(spec: &str, seed: u64) -> anyhow::Result<LoadedModel> {
    kiln::model::load(spec, seed).with_context(|| format!("loading model `{spec}`"))
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
