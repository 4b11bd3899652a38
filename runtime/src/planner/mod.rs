//! Builds a [`Plan`] from a kernel-level graph (the output of the optimizer's
//! `fuse` pass): one step per kernel node in dependency order, identical
//! kernels compiled once, scan bodies planned as nested step lists,
//! `update_slice` done in place where that is legal, and scratch buffers
//! packed into arena slots by liveness.
//!
//! - **`update_slice`** becomes a copy of the base into the result followed
//!   by a kernel that writes the update's region ([`inplace`] then drops the
//!   copy and makes the result a view of the base when nothing reads the
//!   base afterwards and it is neither a graph output nor a weight).
//! - **`saq_append`** (the SAQ cache's state update) is planned exactly like
//!   `update_slice`: copy, then a kernel that updates the result in place.
//! - **`scan`** becomes a [`Step::Scan`] whose body is planned like a graph:
//!   the body's inputs and outputs are [`Storage::Bound`] buffers the
//!   executor points at the right memory on each iteration; a kernel that
//!   computes a body output writes it there directly, any other body output
//!   (an input passed through, a constant, a value returned twice) is copied.
//! - **Load-time work** ([`hoist`]): launches on weights and constants
//!   alone run once when the executor is created.
//! - **State**: an output aliasing an input it does not share storage with
//!   is written back by the executor after the run; when its value lives in
//!   another input's storage, a copy to scratch is planned first, so
//!   write-backs never read a buffer another write-back overwrites.

mod hoist;
mod inplace;
mod slots;
mod symbols;

use crate::plan::{
    Buffer, BufferId, Plan, PlanInput, PlanKernel, PlanOutput, ScanCarry, ScanSeq, ScanStep, Step,
    Storage,
};
use kiln_ir::{Graph, NodeId, Op, TensorType, Value};
use std::collections::HashMap;

/// Why a graph cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("node `{op}`{} is not a kernel; run the optimizer's `fuse` pass before planning", loc.as_deref().map(|l| format!(" at {l}")).unwrap_or_default())]
    NotAKernel { op: String, loc: Option<String> },
    #[error("graph fails verification: {0}")]
    Invalid(String),
}

/// Plans a verified kernel-level graph.
pub fn plan(graph: &Graph) -> Result<Plan, PlanError> {
    kiln_ir::verify(graph).map_err(|e| PlanError::Invalid(e.to_string()))?;
    let inputs: Vec<PlanInput> = graph
        .input_names()
        .zip(graph.input_types())
        .map(|(name, ty)| PlanInput {
            name: name.to_string(),
            ty,
        })
        .collect();
    let mut b = Builder::default();
    let input_bufs: Vec<BufferId> = inputs
        .iter()
        .enumerate()
        .map(|(i, pi)| b.buffer(pi.ty.clone(), Storage::Input(i)))
        .collect();
    let mut level = Level::new(graph, &input_bufs, HashMap::new());
    b.plan_nodes(&mut level)?;
    let mut steps = level.steps;
    let mut at_load = hoist::mark(&mut b.buffers, &b.kernels, &steps);
    let targets = inplace::state_targets(graph);
    let output_bufs: Vec<BufferId> = graph
        .outputs()
        .iter()
        .map(|o| level.value_buf[&o.value])
        .collect();
    inplace::decide(
        &mut b.buffers,
        &mut steps,
        &mut at_load,
        level.updates,
        &inplace::Context {
            inputs: &inputs,
            outputs: &output_bufs,
            aliased: &graph
                .outputs()
                .iter()
                .filter_map(|o| o.alias.clone())
                .collect::<Vec<_>>(),
            targets: &targets,
        },
    );
    let (load_steps, steps): (Vec<_>, Vec<_>) =
        steps.into_iter().zip(at_load).partition(|(_, load)| *load);
    let load_steps: Vec<Step> = load_steps.into_iter().map(|(s, _)| s).collect();
    let mut steps: Vec<Step> = steps.into_iter().map(|(s, _)| s).collect();
    // An aliased output whose value lives in another input's storage is
    // copied out, so the executor's write-backs only read scratch, weights
    // or the state's own buffer.
    let mut outputs = Vec::with_capacity(graph.outputs().len());
    for (o, &buf) in graph.outputs().iter().zip(&output_bufs) {
        let mut buffer = buf;
        if let Some(alias) = &o.alias {
            let root = root_of(&b.buffers, buf);
            if let Storage::Input(i) = b.buffers[root].storage {
                if inputs[i].name != *alias {
                    let t = b.temp(b.buffers[buf].ty.clone());
                    steps.push(Step::Copy { from: buf, to: t });
                    buffer = t;
                }
            }
        }
        outputs.push(PlanOutput {
            name: o.name.clone(),
            buffer,
            alias: o.alias.clone(),
        });
    }
    let mut plan = Plan {
        name: graph.name.clone(),
        symbols: symbols::of_graph(graph),
        inputs,
        outputs,
        buffers: b.buffers,
        kernels: b.kernels,
        steps,
        load_steps,
        num_slots: 0,
    };
    slots::assign(&mut plan);
    Ok(plan)
}

fn root_of(buffers: &[Buffer], mut b: BufferId) -> BufferId {
    while let Storage::View { of } = buffers[b].storage {
        b = of;
    }
    b
}

/// An `update_slice` planned as copy + kernel, awaiting the in-place decision.
pub(crate) struct UpdateSite {
    /// Index (in its level's steps) of the copy of the base into the result.
    pub copy_step: usize,
    /// Index of the kernel step.
    pub kernel_step: usize,
    pub base: BufferId,
    pub result: BufferId,
    pub node: NodeId,
}

/// One graph being planned: the top level or a scan body.
struct Level<'g> {
    graph: &'g Graph,
    /// Buffers of the graph's inputs, in signature order.
    inputs: &'g [BufferId],
    steps: Vec<Step>,
    value_buf: HashMap<Value, BufferId>,
    /// Body outputs: the buffer a value must end up in (first output that
    /// returns it); the producer writes it there directly when it can.
    fixed: HashMap<Value, BufferId>,
    updates: Vec<UpdateSite>,
}

impl<'g> Level<'g> {
    fn new(graph: &'g Graph, inputs: &'g [BufferId], fixed: HashMap<Value, BufferId>) -> Self {
        Level {
            graph,
            inputs,
            steps: Vec::new(),
            value_buf: HashMap::new(),
            fixed,
            updates: Vec::new(),
        }
    }
}

#[derive(Default)]
struct Builder {
    buffers: Vec<Buffer>,
    kernels: Vec<PlanKernel>,
    params: HashMap<String, BufferId>,
    kernel_ids: HashMap<(Op, Vec<TensorType>), usize>,
}

impl Builder {
    fn buffer(&mut self, ty: TensorType, storage: Storage) -> BufferId {
        self.buffers.push(Buffer { ty, storage });
        self.buffers.len() - 1
    }

    /// A scratch buffer; its slot is assigned once liveness is known.
    fn temp(&mut self, ty: TensorType) -> BufferId {
        self.buffer(ty, Storage::Temp { slot: usize::MAX })
    }

    /// Where value `v` of the level is computed: its fixed body-output
    /// buffer if it has one not yet taken, else fresh scratch.
    fn result_buffer(&mut self, level: &mut Level, v: Value, ty: TensorType) -> BufferId {
        match level.fixed.remove(&v) {
            Some(b) => b,
            None => self.temp(ty),
        }
    }

    /// The kernel for `op` on these operand types; identical ones are shared
    /// (the same op in every layer of a decoder, whatever its location).
    fn kernel(
        &mut self,
        op: &Op,
        operand_types: Vec<TensorType>,
        result_types: Vec<TensorType>,
        loc: &Option<String>,
    ) -> usize {
        let key = (without_locs(op), operand_types.clone());
        if let Some(&k) = self.kernel_ids.get(&key) {
            return k;
        }
        let k = self.kernels.len();
        self.kernels.push(PlanKernel {
            name: format!("kiln_k{k}_{}", kernel_kind(op)),
            op: op.clone(),
            operand_types,
            result_types,
            loc: loc.clone(),
            launch: None,
        });
        self.kernel_ids.insert(key, k);
        k
    }

    /// Plans every node of `level`'s graph in dependency order.
    fn plan_nodes(&mut self, level: &mut Level) -> Result<(), PlanError> {
        let g = level.graph;
        let input_pos: HashMap<NodeId, usize> = g
            .inputs()
            .iter()
            .enumerate()
            .map(|(i, &n)| (n, i))
            .collect();
        for n in g.topo_order() {
            let node = g.node(n);
            let operands: Vec<BufferId> =
                g.operands(n).iter().map(|v| level.value_buf[v]).collect();
            let v0 = Value::new(n, 0);
            match &node.op {
                Op::Input { .. } => {
                    level.value_buf.insert(v0, level.inputs[input_pos[&n]]);
                }
                Op::Param { name, ty } => {
                    let id = match self.params.get(name) {
                        Some(&id) => id,
                        None => {
                            let id = self.buffer(ty.clone(), Storage::Param(name.clone()));
                            self.params.insert(name.clone(), id);
                            id
                        }
                    };
                    level.value_buf.insert(v0, id);
                }
                Op::Const(lit) => {
                    let id = self.buffer(lit.ty(), Storage::Const(lit.clone()));
                    level.value_buf.insert(v0, id);
                }
                Op::Reshape { .. } => {
                    let id =
                        self.buffer(node.outputs[0].clone(), Storage::View { of: operands[0] });
                    level.value_buf.insert(v0, id);
                }
                Op::MatMul
                | Op::MatMulT
                | Op::Fused(_)
                | Op::Attention(_)
                | Op::PrFlash(_)
                | Op::LinearScan(_)
                | Op::SaqAttention(_) => {
                    let kernel = self.kernel(
                        &node.op,
                        operand_types(g, n),
                        node.outputs.clone(),
                        &node.loc,
                    );
                    let mut args = operands;
                    for (port, ty) in node.outputs.iter().enumerate() {
                        let v = Value::new(n, port as u32);
                        let id = self.result_buffer(level, v, ty.clone());
                        level.value_buf.insert(v, id);
                        args.push(id);
                    }
                    level.steps.push(Step::Kernel { kernel, args });
                }
                // `saq_append` updates its state as `update_slice` updates
                // its base: the same copy-or-in-place decision.
                Op::UpdateSlice { .. } | Op::SaqAppend(_) => {
                    let kernel = self.kernel(
                        &node.op,
                        operand_types(g, n),
                        node.outputs.clone(),
                        &node.loc,
                    );
                    let fixed = level.fixed.contains_key(&v0);
                    let result = self.result_buffer(level, v0, node.outputs[0].clone());
                    level.value_buf.insert(v0, result);
                    let base = operands[0];
                    let copy_step = level.steps.len();
                    level.steps.push(Step::Copy {
                        from: base,
                        to: result,
                    });
                    let mut args = operands;
                    args.push(result);
                    level.steps.push(Step::Kernel { kernel, args });
                    // A result that must land in a body output buffer is
                    // written there: the copy is needed anyway.
                    if !fixed {
                        level.updates.push(UpdateSite {
                            copy_step,
                            kernel_step: copy_step + 1,
                            base,
                            result,
                            node: n,
                        });
                    }
                }
                Op::Scan(s) => self.plan_scan(level, n, s, &operands)?,
                op => {
                    return Err(PlanError::NotAKernel {
                        op: op.name().to_string(),
                        loc: node.loc.clone(),
                    })
                }
            }
        }
        Ok(())
    }

    fn plan_scan(
        &mut self,
        level: &mut Level,
        n: NodeId,
        s: &kiln_ir::ScanOp,
        operands: &[BufferId],
    ) -> Result<(), PlanError> {
        let g = level.graph;
        let body: &Graph = &s.body;
        let (nc, nx) = (s.num_carry, s.num_xs);
        let outer_tys = &g.node(n).outputs;
        let body_in: Vec<BufferId> = body
            .input_types()
            .into_iter()
            .map(|t| self.buffer(t, Storage::Bound))
            .collect();
        let body_out: Vec<BufferId> = body
            .output_types()
            .into_iter()
            .map(|t| self.buffer(t, Storage::Bound))
            .collect();
        let mut carries = Vec::with_capacity(nc);
        for c in 0..nc {
            let v = Value::new(n, c as u32);
            let result = self.result_buffer(level, v, outer_tys[c].clone());
            level.value_buf.insert(v, result);
            carries.push(ScanCarry {
                init: operands[c],
                result,
                spare: self.temp(outer_tys[c].clone()),
                input: body_in[c],
                output: body_out[c],
            });
        }
        let staging =
            |b: &mut Builder, of: BufferId| (s.axis > 0).then(|| b.temp(b.buffers[of].ty.clone()));
        let xs: Vec<ScanSeq> = (0..nx)
            .map(|i| ScanSeq {
                outer: operands[nc + i],
                body: body_in[nc + i],
                staging: staging(self, body_in[nc + i]),
            })
            .collect();
        let invariants: Vec<(BufferId, BufferId)> = (nc + nx..operands.len())
            .map(|i| (operands[i], body_in[i]))
            .collect();
        let mut ys = Vec::with_capacity(body_out.len() - nc);
        for j in nc..body_out.len() {
            let v = Value::new(n, j as u32);
            let outer = self.result_buffer(level, v, outer_tys[j].clone());
            level.value_buf.insert(v, outer);
            ys.push(ScanSeq {
                outer,
                body: body_out[j],
                staging: staging(self, body_out[j]),
            });
        }
        let mut fixed = HashMap::new();
        for (o, &buf) in body.outputs().iter().zip(&body_out) {
            fixed.entry(o.value).or_insert(buf);
        }
        let mut sub = Level::new(body, &body_in, fixed);
        self.plan_nodes(&mut sub)?;
        let mut steps = sub.steps;
        for (o, &buf) in body.outputs().iter().zip(&body_out) {
            let have = sub.value_buf[&o.value];
            if have != buf {
                steps.push(Step::Copy {
                    from: have,
                    to: buf,
                });
            }
        }
        let mut flags = vec![false; steps.len()];
        inplace::decide(
            &mut self.buffers,
            &mut steps,
            &mut flags,
            sub.updates,
            &inplace::Context::body(),
        );
        let length = g.ty(g.operands(n)[nc]).shape[s.axis].clone();
        level.steps.push(Step::Scan(ScanStep {
            length,
            axis: s.axis,
            reverse: s.reverse,
            carries,
            xs,
            invariants,
            ys,
            body: steps,
            name: body.name.clone(),
        }));
        Ok(())
    }
}

/// `op` with its body's name and its nodes' source locations removed: they
/// name the layer a kernel came from, not what it computes.
fn without_locs(op: &Op) -> Op {
    match op {
        Op::Fused(f) => {
            let mut body = (*f.body).clone();
            body.name = "body".into();
            let ids: Vec<NodeId> = body.node_ids().collect();
            for n in ids {
                body.set_loc(n, None);
            }
            Op::Fused(kiln_ir::FusedOp {
                kind: f.kind,
                body: std::sync::Arc::new(body),
            })
        }
        _ => op.clone(),
    }
}

fn operand_types(g: &Graph, n: NodeId) -> Vec<TensorType> {
    g.operands(n).iter().map(|v| g.ty(*v).clone()).collect()
}

fn kernel_kind(op: &Op) -> &'static str {
    match op {
        Op::Fused(f) => f.kind.name(),
        other => other.name(),
    }
}
