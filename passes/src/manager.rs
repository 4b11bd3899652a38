//! The pass manager: a plain list of passes run in order (like Triton's
//! compiler stages), verifying the graph after each one, reporting what each
//! did and dumping the graph when asked.

use crate::canonicalize::{Canonicalize, Cse, Recognize};
use crate::dce::Dce;
use crate::error::PassError;
use crate::fuse::Fuse;
use crate::layout::Layout;
use crate::lossy::Lossy;
use crate::options::PassOptions;
use crate::provenance::Provenance;
use kiln_ir::Graph;
use std::time::{Duration, Instant};

/// A graph-to-graph transformation.
pub trait Pass: Send + Sync {
    /// The name used by `kiln opt --passes` and `kiln inspect --after`.
    fn name(&self) -> &'static str;
    /// One line for `--help` and reports.
    fn description(&self) -> &'static str;
    /// Transforms the graph and says what happened (e-graph iterations, stop
    /// reason, rules applied, kernels formed) for the pass report.
    fn run_with_detail(
        &self,
        graph: Graph,
        opts: &PassOptions,
    ) -> Result<(Graph, String), PassError>;
    /// Transforms the graph.
    fn run(&self, graph: Graph, opts: &PassOptions) -> Result<Graph, PassError> {
        self.run_with_detail(graph, opts).map(|(g, _)| g)
    }
    /// Transforms the graph carrying each node's history (see
    /// [`crate::provenance`]); `input.seq` is the pass's position in the
    /// pipeline, for the steps it records. The default runs
    /// [`Pass::run_with_detail`] and keeps the history of the nodes that are
    /// still there unchanged in kind (right for passes that edit in place).
    fn run_traced(&self, input: PassInput, opts: &PassOptions) -> Result<PassOutput, PassError> {
        let marks = input.provenance.marks(&input.graph);
        let (graph, detail) = self.run_with_detail(input.graph, opts)?;
        let provenance = input.provenance.carried(&marks, &graph);
        Ok(PassOutput {
            graph,
            detail,
            phases: Vec::new(),
            provenance,
        })
    }
}

/// A graph with its history, going into a pass.
pub struct PassInput {
    pub graph: Graph,
    pub provenance: Provenance,
    /// The pass's position in the pipeline run.
    pub seq: u16,
}

/// What a traced pass gives back.
pub struct PassOutput {
    pub graph: Graph,
    /// See [`PassReport::detail`].
    pub detail: String,
    /// See [`PassReport::phases`].
    pub phases: Vec<(String, Duration)>,
    pub provenance: Provenance,
}

/// What one pass did.
#[derive(Clone, Debug)]
pub struct PassReport {
    pub pass: &'static str,
    pub time: Duration,
    /// Top-level nodes before and after.
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// Pass-specific: e-graph iterations, e-nodes, stop reason, rules applied, kernels.
    pub detail: String,
    /// Time of the pass's phases (for the e-graph passes: translate, each
    /// rule stage, extract, rebuild), when the pass reports them.
    pub phases: Vec<(String, Duration)>,
}

/// A pipeline's result: the graph, a report per pass, and the history of
/// every node (which rewrites and kernels produced it; `kiln inspect --explain`).
pub struct Traced {
    pub graph: Graph,
    pub reports: Vec<PassReport>,
    pub provenance: Provenance,
}

impl std::fmt::Display for PassReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<13} {:>9.3} ms  {:>6} -> {:<6} nodes  {}",
            self.pass,
            self.time.as_secs_f64() * 1e3,
            self.nodes_before,
            self.nodes_after,
            self.detail
        )
    }
}

/// Every pass the manager knows, by name.
pub fn all_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(Canonicalize),
        Box::new(Recognize),
        Box::new(Lossy),
        Box::new(crate::saq::Saq),
        Box::new(Cse),
        Box::new(Layout),
        Box::new(Dce),
        Box::new(Fuse),
    ]
}

/// The names of every known pass.
pub fn pass_names() -> Vec<&'static str> {
    all_passes().iter().map(|p| p.name()).collect()
}

/// An ordered list of passes.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
}

impl PassManager {
    /// `canonicalize`, `recognize`, `lossy`, `layout`, `dce`, `fuse`.
    pub fn default_pipeline() -> Self {
        PassManager {
            passes: vec![
                Box::new(Canonicalize),
                Box::new(Recognize),
                Box::new(Lossy),
                Box::new(Layout),
                Box::new(Dce),
                Box::new(Fuse),
            ],
        }
    }

    /// A pipeline of the named passes, in the given order.
    pub fn from_names(names: &[&str]) -> Result<Self, PassError> {
        let mut passes = Vec::with_capacity(names.len());
        for name in names {
            let pass = all_passes()
                .into_iter()
                .find(|p| p.name() == *name)
                .ok_or_else(|| PassError::UnknownPass {
                    name: name.to_string(),
                    valid: pass_names(),
                })?;
            passes.push(pass);
        }
        Ok(PassManager { passes })
    }

    /// The default pipeline for `opts`: with [`PassOptions::kv_cache`] set,
    /// the `saq` pass runs right after `recognize` (it rewrites the
    /// recognized `flash_attention` over the cache).
    pub fn for_options(opts: &PassOptions) -> Self {
        let mut pm = Self::default_pipeline();
        if opts.kv_cache.is_some() {
            let at = pm
                .passes
                .iter()
                .position(|p| p.name() == "recognize")
                .map_or(0, |i| i + 1);
            pm.passes.insert(at, Box::new(crate::saq::Saq));
        }
        pm
    }

    /// A pipeline of the given passes.
    pub fn new(passes: Vec<Box<dyn Pass>>) -> Self {
        PassManager { passes }
    }

    /// The pass names in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs every pass.
    pub fn run(
        &self,
        graph: Graph,
        opts: &PassOptions,
    ) -> Result<(Graph, Vec<PassReport>), PassError> {
        self.run_prefix(graph, self.passes.len(), opts)
            .map(|t| (t.graph, t.reports))
    }

    /// Runs every pass, keeping each node's history.
    pub fn run_traced(&self, graph: Graph, opts: &PassOptions) -> Result<Traced, PassError> {
        self.run_prefix(graph, self.passes.len(), opts)
    }

    /// Runs the passes up to and including the first one named `last`.
    pub fn run_until(
        &self,
        graph: Graph,
        last: &str,
        opts: &PassOptions,
    ) -> Result<(Graph, Vec<PassReport>), PassError> {
        self.run_until_traced(graph, last, opts)
            .map(|t| (t.graph, t.reports))
    }

    /// [`PassManager::run_until`], keeping each node's history.
    pub fn run_until_traced(
        &self,
        graph: Graph,
        last: &str,
        opts: &PassOptions,
    ) -> Result<Traced, PassError> {
        let Some(i) = self.passes.iter().position(|p| p.name() == last) else {
            if pass_names().contains(&last) {
                return Err(PassError::NotInPipeline {
                    name: last.to_string(),
                    pipeline: self.names(),
                });
            }
            return Err(PassError::UnknownPass {
                name: last.to_string(),
                valid: pass_names(),
            });
        };
        self.run_prefix(graph, i + 1, opts)
    }

    fn run_prefix(
        &self,
        mut graph: Graph,
        count: usize,
        opts: &PassOptions,
    ) -> Result<Traced, PassError> {
        kiln_ir::verify(&graph).map_err(PassError::InvalidInput)?;
        opts.dump.dump(&graph, 0, "input")?;
        let mut reports = Vec::with_capacity(count);
        let mut provenance = Provenance::default();
        for (i, pass) in self.passes[..count].iter().enumerate() {
            let nodes_before = graph.node_count();
            let start = Instant::now();
            let input = PassInput {
                graph,
                provenance,
                seq: (i + 1) as u16,
            };
            let out = pass.run_traced(input, opts)?;
            let (g, detail, phases) = (out.graph, out.detail, out.phases);
            provenance = out.provenance;
            let time = start.elapsed();
            kiln_ir::verify(&g).map_err(|source| PassError::Verify {
                pass: pass.name(),
                source,
            })?;
            opts.dump.dump(&g, i + 1, pass.name())?;
            reports.push(PassReport {
                pass: pass.name(),
                time,
                nodes_before,
                nodes_after: g.node_count(),
                detail,
                phases,
            });
            graph = g;
        }
        Ok(Traced {
            graph,
            reports,
            provenance,
        })
    }
}
