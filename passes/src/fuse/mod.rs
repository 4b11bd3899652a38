//! `fuse`: the logical graph becomes a graph of kernels.
//!
//! Fusion is a *graph* pass, run after extraction, not a set of e-graph
//! rules: which ops share a kernel is a global partitioning decision — a
//! value can be fused into one consumer only if every other consumer can do
//! without it, recomputing is worth it only for cheap producers, and a
//! partition must not make two kernels wait on each other. Rewrite rules see
//! one term at a time and an e-graph holds every alternative at once, so
//! neither can weigh those trade-offs; a walk over the extracted graph can.
//!
//! After `fuse` every top-level node is an input, param, constant, reshape
//! (a view of a buffer), matmul, update_slice, scan or fused kernel, and
//! every fused kernel satisfies `kiln_ir::kernel::check_fused` — the pass
//! checks both. Scan bodies are optimized and fused the same way (see
//! `scan.rs`), so they are kernel-level too.

mod body;
mod normalize;
mod partition;
mod scan;

pub use partition::DUP_LIMIT;

use crate::error::PassError;
use crate::manager::{Pass, PassInput, PassOutput};
use crate::options::PassOptions;
use crate::provenance::{Provenance, Step, What};
use kiln_ir::kernel::check_fused;
use kiln_ir::{FusionKind, Graph, NodeId, Op, Value};
use partition::{partition, role, Role};
use std::collections::HashMap;

const PASS: &str = "fuse";

/// The fusion pass.
pub struct Fuse;

impl Pass for Fuse {
    fn name(&self) -> &'static str {
        PASS
    }
    fn description(&self) -> &'static str {
        "partition into kernels: row kernels around reductions, maximal loop kernels, matmul/update_slice/scan as is (scan bodies fused too), reshapes as views"
    }
    fn run_with_detail(
        &self,
        graph: Graph,
        opts: &PassOptions,
    ) -> Result<(Graph, String), PassError> {
        fuse_with(graph, opts)
    }
    fn run_traced(&self, input: PassInput, opts: &PassOptions) -> Result<PassOutput, PassError> {
        let (graph, detail, provenance) =
            fuse_traced(input.graph, opts, &input.provenance, input.seq)?;
        Ok(PassOutput {
            graph,
            detail,
            phases: Vec::new(),
            provenance,
        })
    }
}

fn place(g: &Graph, n: NodeId) -> String {
    match &g.node(n).loc {
        Some(loc) => format!("n{} `{}` at {loc}", n.index(), g.node(n).op.name()),
        None => format!("n{} `{}`", n.index(), g.node(n).op.name()),
    }
}

/// Fuses `graph` with default options; returns the kernel graph and a summary.
pub fn fuse(graph: Graph) -> Result<(Graph, String), PassError> {
    fuse_with(graph, &PassOptions::default())
}

/// Fuses `graph`; `opts` drive the optimization of scan bodies.
pub fn fuse_with(graph: Graph, opts: &PassOptions) -> Result<(Graph, String), PassError> {
    fuse_traced(graph, opts, &Provenance::default(), 0).map(|(g, d, _)| (g, d))
}

/// [`fuse_with`] carrying history: a kernel's history is its members'
/// together, plus the kernel's own step (`seq`: the pass's position).
pub fn fuse_traced(
    mut graph: Graph,
    opts: &PassOptions,
    prov: &Provenance,
    seq: u16,
) -> Result<(Graph, String, Provenance), PassError> {
    let mut out_prov = Provenance::default();
    let rebuild = |source| PassError::Rebuild { pass: PASS, source };
    // Dead nodes would only become dead kernels.
    graph.remove_dead();
    let permuted = normalize::trailing_reductions(&mut graph).map_err(rebuild)?;
    let g = &graph;
    let p = partition(g);

    let mut out = Graph::new(g.name.clone());
    let mut vmap: HashMap<Value, Value> = HashMap::new();
    for &i in g.inputs() {
        let (name, ty) = match &g.node(i).op {
            Op::Input { name, ty } => (name.clone(), ty.clone()),
            _ => unreachable!("graph inputs are input nodes"),
        };
        vmap.insert(Value::new(i, 0), out.add_input(name, ty).map_err(rebuild)?);
    }
    let missing = |v: Value| PassError::Rebuild {
        pass: PASS,
        source: kiln_ir::GraphError::UnknownValue(v),
    };
    let root_of: HashMap<NodeId, usize> = p
        .groups
        .iter()
        .enumerate()
        .map(|(i, gr)| (gr.root, i))
        .collect();
    let (mut loops, mut rows, mut scans) = (0, 0, 0);
    for &n in &p.order {
        let node = g.node(n);
        if matches!(node.op, Op::Input { .. }) {
            continue;
        }
        let top =
            role(&node.op) == Role::Buffer || p.views.contains(&n) || p.top_consts.contains(&n);
        if top {
            let ops = g
                .operands(n)
                .into_iter()
                .map(|v| vmap.get(&v).copied().ok_or_else(|| missing(v)))
                .collect::<Result<Vec<_>, _>>()?;
            let op = match &node.op {
                Op::Scan(s) => {
                    scans += 1;
                    Op::Scan(scan::fuse_scan(s, opts, &place(g, n))?)
                }
                op => op.clone(),
            };
            let id = out.add_node(op, &ops).map_err(rebuild)?;
            out.set_loc(id, node.loc.clone());
            out_prov.add(id, prov.steps(n));
            for port in 0..node.outputs.len() as u32 {
                vmap.insert(Value::new(n, port), Value::new(id, port));
            }
        } else if let Some(&gid) = root_of.get(&n) {
            let members = p.sorted_members(gid);
            let results = &p.groups[gid].results;
            let name = format!("{}_k{}", g.name, gid);
            let b = body::build_checked(g, &name, &members, results).map_err(|source| {
                PassError::FusionContract {
                    pass: PASS,
                    place: place(g, n),
                    source,
                }
            })?;
            match b.op.kind {
                FusionKind::Loop => loops += 1,
                FusionKind::Row => rows += 1,
            }
            let ops = b
                .operands
                .iter()
                .map(|v| vmap.get(v).copied().ok_or_else(|| missing(*v)))
                .collect::<Result<Vec<_>, _>>()?;
            let kind = b.op.kind.name();
            let id = out.add_node(Op::Fused(b.op), &ops).map_err(rebuild)?;
            out.set_loc(id, node.loc.clone());
            let mut ops = 0u32;
            for &m in &members {
                out_prov.add(id, prov.steps(m));
                ops += u32::from(role(&g.node(m).op) != Role::ScalarConst);
            }
            let step = Step {
                seq,
                pass: PASS,
                what: What::Kernel { kind, ops },
            };
            out_prov.add(id, &[step]);
            for (i, &r) in results.iter().enumerate() {
                vmap.insert(Value::new(r, 0), Value::new(id, i as u32));
            }
        }
    }
    for o in g.outputs() {
        let v = vmap
            .get(&o.value)
            .copied()
            .ok_or_else(|| missing(o.value))?;
        match &o.alias {
            Some(a) => out.add_output_alias(o.name.clone(), v, a.clone()),
            None => out.add_output(o.name.clone(), v),
        }
        .map_err(rebuild)?;
    }
    check_kernel_level(&out)?;
    let detail = format!(
        "{} kernel(s): {rows} row, {loops} loop; {scans} scan bod(ies) fused; {} view(s); {} node(s) recomputed in several kernels; {permuted} reduction(s) made trailing",
        rows + loops,
        p.views.len(),
        p.cloned
    );
    Ok((out, detail, out_prov))
}

/// Checks that `g` is kernel-level: only input, param, const, reshape,
/// matmul, update_slice, attention, scan and fused nodes at the top, every fused node
/// within the fusion contract, every scan body kernel-level too.
pub fn check_kernel_level(g: &Graph) -> Result<(), PassError> {
    for n in g.node_ids() {
        let op = &g.node(n).op;
        match op {
            Op::Input { .. }
            | Op::Param { .. }
            | Op::Const(_)
            | Op::Reshape { .. }
            | Op::MatMul
            | Op::MatMulT
            | Op::UpdateSlice { .. }
            | Op::Attention(_)
            | Op::PrFlash(_)
            | Op::SaqAppend(_)
            | Op::SaqAttention(_)
            | Op::LinearScan(_) => {}
            Op::Scan(s) => check_kernel_level(&s.body).map_err(|source| PassError::InBody {
                place: place(g, n),
                source: Box::new(source),
            })?,
            Op::Fused(f) => {
                check_fused(f).map_err(|source| PassError::FusionContract {
                    pass: PASS,
                    place: place(g, n),
                    source,
                })?;
            }
            _ => {
                return Err(PassError::NotKernelLevel {
                    pass: PASS,
                    op: op.name(),
                    place: place(g, n),
                })
            }
        }
    }
    Ok(())
}
