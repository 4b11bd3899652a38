//! Options shared by every pass.

use crate::dump::DumpConfig;
use std::time::Duration;

/// Which machine the cost model prices for; extraction picks different terms
/// when bandwidth and compute are balanced differently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CostTarget {
    /// A CPU: ~40 GB/s, ~400 GFLOP/s, cheap kernel calls.
    #[default]
    Cpu,
    /// An NVIDIA GPU: ~3 TB/s, ~50 TFLOP/s, a few microseconds per launch.
    Gpu,
}

/// How the e-graph passes treat a graph of repeated layers (nodes whose
/// locations share a scope `prefix.i` for several `i`, as the DSL's
/// `model.layers.{i}` scopes give; see [`crate::regions`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LayerMode {
    /// Each layer is a piece of its own; identical layers (the same graph
    /// once the layer index in names is abstracted) are optimized once and
    /// the result replayed with each layer's names.
    #[default]
    Shared,
    /// Each layer is a piece optimized on its own (what `Shared` must
    /// reproduce exactly; for tests and comparisons).
    Separate,
    /// The whole graph in one e-graph.
    Whole,
}

/// Options of a pass run.
#[derive(Clone, Debug)]
pub struct PassOptions {
    /// Where and after which passes to dump the graph.
    pub dump: DumpConfig,
    /// The machine the cost model prices for.
    pub target: CostTarget,
    /// E-nodes the rewrites of one e-graph pass may add on top of the
    /// translated graph, summed over all stages.
    pub egraph_node_limit: usize,
    /// Wall-clock budget of one e-graph pass, summed over all stages.
    pub egraph_time_limit: Duration,
    /// Iterations per stage (each iteration searches every rule once).
    pub iter_limit: usize,
    /// Repeated layers: optimized once per distinct layer, each on its own,
    /// or the graph whole. The node and time limits apply per e-graph.
    pub layers: LayerMode,
    /// Opt-in, lossy: causal attention becomes PrFlashAttention (the `lossy` pass).
    pub prflash: Option<crate::lossy::PrFlashConfig>,
    /// Opt-in, lossy: the KV cache becomes an SAQ quantized cache (the `saq`
    /// pass; see [`crate::saq`]).
    pub kv_cache: Option<kiln_ir::saq::SaqSpec>,
    /// Opt-in, lossy: the `f32` weights of linear layers and embeddings are
    /// stored as this dtype (`f16` or `bf16`) and read with `f32`
    /// accumulation (the `lossy` pass; see [`crate::narrow`]). `None` keeps
    /// them as declared.
    pub weights: Option<kiln_ir::DType>,
}

impl Default for PassOptions {
    /// Limits that keep a 32-layer transformer well under a second while
    /// letting the canonicalization rules saturate on ordinary graphs.
    fn default() -> Self {
        PassOptions {
            dump: DumpConfig::default(),
            target: CostTarget::Cpu,
            egraph_node_limit: 200_000,
            egraph_time_limit: Duration::from_secs(5),
            iter_limit: 30,
            layers: LayerMode::Shared,
            prflash: None,
            kv_cache: None,
            weights: None,
        }
    }
}

impl PassOptions {
    /// Default options with the dump settings taken from the environment
    /// (see [`DumpConfig::from_env`]).
    pub fn from_env() -> Self {
        PassOptions {
            dump: DumpConfig::from_env(),
            ..PassOptions::default()
        }
    }
}
