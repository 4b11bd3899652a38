//! From a loaded directory to a graph: the architecture picks the typed
//! config (read from the raw `config.json`) and the graph builder, both of
//! which live with the model ([`crate::llama`], [`crate::mamba`]).

use super::config::Architecture;
use super::error::LoadError;
use kiln_ir::Graph;
use serde_json::Value;

/// Builds the graph of `architecture` from its `config.json`.
pub fn build_graph(architecture: Architecture, config: &Value) -> Result<Graph, LoadError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| LoadError::Build {
        architecture,
        source,
    };
    match architecture {
        Architecture::Llama => {
            let cfg = crate::llama::LlamaConfig::from_json(config).map_err(|e| failed(e.into()))?;
            crate::llama::build(&cfg).map_err(|e| failed(e.into()))
        }
        Architecture::Mamba => {
            let cfg = crate::mamba::MambaConfig::from_json(config).map_err(|e| failed(e.into()))?;
            crate::mamba::build(&cfg).map_err(|e| failed(e.into()))
        }
    }
}
