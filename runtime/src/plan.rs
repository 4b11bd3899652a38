//! The execution plan: buffers with symbolic sizes, an ordered list of kernel
//! steps, and the kernels' descriptions. A plan is plain data (serde), so an
//! ahead-of-time artifact can store it and a runtime without a compiler can
//! run it.

use kiln_ir::kernel::KernelLaunch;
use kiln_ir::{Bindings, Literal, Op, TensorType};
use serde::{Deserialize, Serialize};

/// Index of a buffer in [`Plan::buffers`].
pub type BufferId = usize;

/// Where a buffer's memory comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Storage {
    /// The caller's input of this index in [`Plan::inputs`].
    Input(usize),
    /// A weight, loaded once when the executor is created.
    Param(String),
    /// A constant, materialized once when the executor is created.
    Const(Literal),
    /// Scratch memory in arena slot `slot`; buffers whose lifetimes do not
    /// overlap share a slot.
    Temp { slot: usize },
    /// The same bytes as another buffer, read with another shape (a reshape).
    View { of: BufferId },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Buffer {
    pub ty: TensorType,
    pub storage: Storage,
}

/// A kernel as code generation needs it: the kernel-level op and its operand
/// and result types; `launch` is filled in once the kernel is compiled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanKernel {
    pub name: String,
    pub op: Op,
    pub operand_types: Vec<TensorType>,
    pub result_types: Vec<TensorType>,
    /// Where the kernel came from (the node's location), for messages and profiles.
    pub loc: Option<String>,
    pub launch: Option<KernelLaunch>,
}

/// One launch: kernel `kernel` on buffers `args` (operands, then results).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub kernel: usize,
    pub args: Vec<BufferId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanInput {
    pub name: String,
    pub ty: TensorType,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanOutput {
    pub name: String,
    pub buffer: BufferId,
    /// The input this output updates in place (cache and recurrent state).
    pub alias: Option<String>,
}

/// A compiled graph's schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    /// Size symbols, sorted: the order of the `sizes` array every kernel gets.
    pub symbols: Vec<String>,
    pub inputs: Vec<PlanInput>,
    pub outputs: Vec<PlanOutput>,
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<PlanKernel>,
    pub steps: Vec<Step>,
    /// Number of arena slots used by [`Storage::Temp`] buffers.
    pub num_slots: usize,
}

impl Plan {
    /// The values of [`Plan::symbols`] under `bindings`, in order.
    pub fn sizes(&self, bindings: &Bindings) -> Result<Vec<i64>, kiln_ir::dim::DimError> {
        self.symbols
            .iter()
            .map(|s| {
                bindings
                    .get(s)
                    .copied()
                    .ok_or_else(|| kiln_ir::dim::DimError::Unbound(s.clone()))
            })
            .collect()
    }

    /// The buffer a view ultimately reads.
    pub fn root(&self, mut b: BufferId) -> BufferId {
        while let Storage::View { of } = self.buffers[b].storage {
            b = of;
        }
        b
    }

    /// Bytes each arena slot needs under `bindings` (the largest buffer it holds).
    pub fn slot_bytes(&self, bindings: &Bindings) -> Result<Vec<usize>, kiln_ir::dim::DimError> {
        let mut sizes = vec![0usize; self.num_slots];
        for b in &self.buffers {
            if let Storage::Temp { slot } = b.storage {
                let n = b.ty.numel().eval_usize(bindings)? * b.ty.dtype.size_bytes();
                sizes[slot] = sizes[slot].max(n);
            }
        }
        Ok(sizes)
    }

    /// A human-readable listing: buffers, slots and steps.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "plan @{}: {} steps, {} buffers, {} arena slots, symbols {:?}",
            self.name,
            self.steps.len(),
            self.buffers.len(),
            self.num_slots,
            self.symbols
        );
        for (i, b) in self.buffers.iter().enumerate() {
            let storage = match &b.storage {
                Storage::Input(k) => format!("input {}", self.inputs[*k].name),
                Storage::Param(n) => format!("param {n}"),
                Storage::Const(_) => "const".into(),
                Storage::Temp { slot } => format!("slot {slot}"),
                Storage::View { of } => format!("view of b{of}"),
            };
            let _ = writeln!(s, "  b{i}: {} ({storage})", b.ty);
        }
        for (i, st) in self.steps.iter().enumerate() {
            let k = &self.kernels[st.kernel];
            let args: Vec<String> = st.args.iter().map(|a| format!("b{a}")).collect();
            let _ = writeln!(
                s,
                "  step {i}: {} `{}`{} ({})",
                k.name,
                k.op.name(),
                k.loc
                    .as_deref()
                    .map(|l| format!(" at {l}"))
                    .unwrap_or_default(),
                args.join(", ")
            );
        }
        for o in &self.outputs {
            let _ = writeln!(s, "  output {} = b{}", o.name, o.buffer);
        }
        s
    }
}
