//! Builds a [`Plan`] from a kernel-level graph (the output of the optimizer's
//! `fuse` pass): one step per kernel node in dependency order, identical
//! kernels compiled once, and scratch buffers packed into arena slots by
//! liveness (a slot is reused once every reader of its buffer has run).

use crate::plan::{Buffer, BufferId, Plan, PlanInput, PlanKernel, PlanOutput, Step, Storage};
use kiln_ir::{Graph, Op, TensorType, Value};
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
    let mut b = Builder::default();
    let inputs: Vec<PlanInput> = graph
        .input_names()
        .zip(graph.input_types())
        .map(|(name, ty)| PlanInput {
            name: name.to_string(),
            ty,
        })
        .collect();
    let input_index: HashMap<_, usize> = graph
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, &n)| (n, i))
        .collect();

    for n in graph.topo_order() {
        let node = graph.node(n);
        let operands: Vec<BufferId> = graph.operands(n).iter().map(|v| b.value_buf[v]).collect();
        match &node.op {
            Op::Input { ty, .. } => {
                let id = b.buffer(ty.clone(), Storage::Input(input_index[&n]));
                b.value_buf.insert(Value::new(n, 0), id);
            }
            Op::Param { name, ty } => {
                let id = match b.params.get(name) {
                    Some(&id) => id,
                    None => {
                        let id = b.buffer(ty.clone(), Storage::Param(name.clone()));
                        b.params.insert(name.clone(), id);
                        id
                    }
                };
                b.value_buf.insert(Value::new(n, 0), id);
            }
            Op::Const(lit) => {
                let id = b.buffer(lit.ty(), Storage::Const(lit.clone()));
                b.value_buf.insert(Value::new(n, 0), id);
            }
            Op::Reshape { .. } => {
                let id = b.buffer(node.outputs[0].clone(), Storage::View { of: operands[0] });
                b.value_buf.insert(Value::new(n, 0), id);
            }
            Op::MatMul | Op::Fused(_) => {
                let operand_types: Vec<TensorType> = graph
                    .operands(n)
                    .iter()
                    .map(|v| graph.ty(*v).clone())
                    .collect();
                let kernel = b.kernel(&node.op, operand_types, node.outputs.clone(), &node.loc);
                let mut args = operands;
                for (port, ty) in node.outputs.iter().enumerate() {
                    // Slots are assigned after liveness is known.
                    let id = b.buffer(ty.clone(), Storage::Temp { slot: usize::MAX });
                    b.value_buf.insert(Value::new(n, port as u32), id);
                    args.push(id);
                }
                b.steps.push(Step { kernel, args });
            }
            op => {
                return Err(PlanError::NotAKernel {
                    op: op.name().to_string(),
                    loc: node.loc.clone(),
                })
            }
        }
    }
    let outputs: Vec<PlanOutput> = graph
        .outputs()
        .iter()
        .map(|o| PlanOutput {
            name: o.name.clone(),
            buffer: b.value_buf[&o.value],
            alias: o.alias.clone(),
        })
        .collect();
    let mut plan = Plan {
        name: graph.name.clone(),
        symbols: graph.symbols(),
        inputs,
        outputs,
        buffers: b.buffers,
        kernels: b.kernels,
        steps: b.steps,
        num_slots: 0,
    };
    assign_slots(&mut plan);
    Ok(plan)
}

#[derive(Default)]
struct Builder {
    buffers: Vec<Buffer>,
    kernels: Vec<PlanKernel>,
    steps: Vec<Step>,
    value_buf: HashMap<Value, BufferId>,
    params: HashMap<String, BufferId>,
    kernel_ids: HashMap<(Op, Vec<TensorType>), usize>,
}

impl Builder {
    fn buffer(&mut self, ty: TensorType, storage: Storage) -> BufferId {
        self.buffers.push(Buffer { ty, storage });
        self.buffers.len() - 1
    }

    /// The kernel for `op` on these operand types; identical ones are shared.
    fn kernel(
        &mut self,
        op: &Op,
        operand_types: Vec<TensorType>,
        result_types: Vec<TensorType>,
        loc: &Option<String>,
    ) -> usize {
        let key = (op.clone(), operand_types.clone());
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
}

fn kernel_kind(op: &Op) -> &'static str {
    match op {
        Op::Fused(f) => f.kind.name(),
        other => other.name(),
    }
}

/// Greedy interval packing: walk the steps; a step's results take free slots
/// (allocated before its operands are released, so a kernel never writes
/// over its own inputs), then buffers whose last reader was this step give
/// their slot back. Outputs live to the end.
fn assign_slots(plan: &mut Plan) {
    let n_steps = plan.steps.len();
    let mut last_use: HashMap<BufferId, usize> = HashMap::new();
    for (s, step) in plan.steps.iter().enumerate() {
        for &a in &step.args {
            let r = plan.root(a);
            let e = last_use.entry(r).or_insert(s);
            *e = (*e).max(s);
        }
    }
    for o in &plan.outputs {
        last_use.insert(plan.root(o.buffer), n_steps);
    }
    let mut free: Vec<usize> = Vec::new();
    let mut num_slots = 0;
    let mut releases: Vec<Vec<BufferId>> = vec![Vec::new(); n_steps + 1];
    for s in 0..n_steps {
        let results: Vec<BufferId> = {
            let step = &plan.steps[s];
            let k = &plan.kernels[step.kernel];
            step.args[k.operand_types.len()..].to_vec()
        };
        for r in results {
            let slot = free.pop().unwrap_or_else(|| {
                num_slots += 1;
                num_slots - 1
            });
            plan.buffers[r].storage = Storage::Temp { slot };
            // A result nobody reads is released right after its step.
            let end = last_use.get(&r).copied().unwrap_or(s);
            releases[end].push(r);
        }
        for r in std::mem::take(&mut releases[s]) {
            if let Storage::Temp { slot } = plan.buffers[r].storage {
                free.push(slot);
            }
        }
    }
    plan.num_slots = num_slots;
}
