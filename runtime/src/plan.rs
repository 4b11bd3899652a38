//! The execution plan: buffers with symbolic sizes, an ordered list of steps
//! (kernel launches, copies, scans), and the kernels' descriptions. A plan is
//! plain data (serde), so an ahead-of-time artifact can store it and a
//! runtime without a compiler can run it.

use kiln_ir::kernel::KernelLaunch;
use kiln_ir::{Bindings, Dim, Literal, Op, TensorType};
use serde::{Deserialize, Serialize};

/// Index of a buffer in [`Plan::buffers`].
pub type BufferId = usize;

/// Where a buffer's memory comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Storage {
    /// The caller's input of this index in [`Plan::inputs`] (or, when the
    /// input is state, the executor's state buffer).
    Input(usize),
    /// A weight, loaded once when the executor is created.
    Param(String),
    /// A constant, materialized once when the executor is created.
    Const(Literal),
    /// Scratch memory in arena slot `slot`; buffers whose lifetimes do not
    /// overlap share a slot.
    Temp { slot: usize },
    /// The same bytes as another buffer: a reshape read with another shape,
    /// or the result of an `update_slice` done in place on its base.
    View { of: BufferId },
    /// An input or output of a scan body: memory the scan step points it at
    /// on each iteration (a slice of a sequence, a carry, an invariant).
    Bound,
    /// Computed from weights and constants alone by [`Plan::load_steps`],
    /// once, when the executor is created (a transposed weight); static
    /// shape, never written by a run.
    Derived,
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

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Step {
    /// Launches kernel `kernel` on buffers `args` (operands, then results).
    /// An `update_slice` kernel writes only the update's region of its
    /// result, which must already hold the base: the planner either makes
    /// the result a view of the base (in place) or copies the base first.
    Kernel { kernel: usize, args: Vec<BufferId> },
    /// Copies `to`'s bytes (its type under the bindings) from `from`, which
    /// has the same element count and dtype.
    Copy { from: BufferId, to: BufferId },
    /// Runs a scan body `length` times.
    Scan(ScanStep),
}

/// A carried value of a scan, double-buffered: iteration `t` reads the body
/// input `input` and writes the body output `output`, then the two swap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCarry {
    /// The initial value (an outer buffer), copied into `result` first.
    pub init: BufferId,
    /// The scan's result for this carry (an outer buffer); one of the two
    /// halves of the double buffer, so the final value lands here.
    pub result: BufferId,
    /// The other half of the double buffer (scratch).
    pub spare: BufferId,
    /// The body's input and output buffers ([`Storage::Bound`]).
    pub input: BufferId,
    pub output: BufferId,
}

/// A sequence the scan walks (`xs`) or stacks (`ys`): iteration `t` sees
/// the slice at position `t` of `outer` along the scan axis through the
/// body buffer `body`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanSeq {
    /// The stacked tensor (an operand for `xs`, a result for `ys`).
    pub outer: BufferId,
    /// The body's input (`xs`) or output (`ys`), [`Storage::Bound`].
    pub body: BufferId,
    /// Where a slice that is not contiguous in `outer` (scan axis past the
    /// first non-unit dim) is gathered to or scattered from; `None` when the
    /// axis is 0 and every slice is contiguous.
    pub staging: Option<BufferId>,
}

/// A `scan`: the body's steps run once per position of the scanned axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScanStep {
    /// The number of iterations (the scanned axis' size).
    pub length: Dim,
    pub axis: usize,
    pub reverse: bool,
    pub carries: Vec<ScanCarry>,
    pub xs: Vec<ScanSeq>,
    /// Loop-invariant operands: (outer buffer, body input), passed whole.
    pub invariants: Vec<(BufferId, BufferId)>,
    pub ys: Vec<ScanSeq>,
    /// The body's steps; after them every body output buffer holds its value.
    pub body: Vec<Step>,
    /// The body's name, for listings.
    pub name: String,
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
    /// Includes symbols only op attributes mention (an `update_slice` start
    /// `past`), which no input shape determines and the caller must give.
    pub symbols: Vec<String>,
    pub inputs: Vec<PlanInput>,
    pub outputs: Vec<PlanOutput>,
    pub buffers: Vec<Buffer>,
    /// Every kernel, scan bodies' included (names are unique).
    pub kernels: Vec<PlanKernel>,
    pub steps: Vec<Step>,
    /// Kernel launches that depend on weights and constants only, run once
    /// when the executor is created; their results are [`Storage::Derived`].
    #[serde(default)]
    pub load_steps: Vec<Step>,
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

    /// Every buffer (as its root) `step` mentions, through scan bodies.
    pub fn step_buffers(&self, step: &Step, out: &mut Vec<BufferId>) {
        match step {
            Step::Kernel { args, .. } => out.extend(args.iter().map(|&b| self.root(b))),
            Step::Copy { from, to } => out.extend([self.root(*from), self.root(*to)]),
            Step::Scan(s) => {
                for c in &s.carries {
                    out.extend([c.init, c.result, c.spare].map(|b| self.root(b)));
                }
                for x in s.xs.iter().chain(&s.ys) {
                    out.push(self.root(x.outer));
                }
                out.extend(s.invariants.iter().map(|(o, _)| self.root(*o)));
                for b in &s.body {
                    self.step_buffers(b, out);
                }
            }
        }
    }

    /// The input output `o` updates in place (its `alias`), when it names
    /// one.
    pub fn aliased_input(&self, o: &PlanOutput) -> Option<usize> {
        let alias = o.alias.as_ref()?;
        self.inputs.iter().position(|i| &i.name == alias)
    }

    /// The indices of the inputs that are state: aliased by an output.
    pub fn state_inputs(&self) -> Vec<usize> {
        self.inputs
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                self.outputs
                    .iter()
                    .any(|o| o.alias.as_ref() == Some(&i.name))
            })
            .map(|(k, _)| k)
            .collect()
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

    /// Every step, scan bodies' included, in a pre-order walk.
    pub fn all_steps(&self) -> Vec<&Step> {
        fn walk<'a>(steps: &'a [Step], out: &mut Vec<&'a Step>) {
            for s in steps {
                out.push(s);
                if let Step::Scan(sc) = s {
                    walk(&sc.body, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.steps, &mut out);
        out
    }

    /// A human-readable listing: buffers, slots and steps.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "plan @{}: {} steps ({} more at load), {} buffers, {} arena slots, symbols {:?}",
            self.name,
            self.steps.len(),
            self.load_steps.len(),
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
                Storage::Bound => "bound by a scan".into(),
                Storage::Derived => "computed at load".into(),
            };
            let _ = writeln!(s, "  b{i}: {} ({storage})", b.ty);
        }
        if !self.load_steps.is_empty() {
            let _ = writeln!(s, "  at load:");
            self.describe_steps(&self.load_steps, 2, &mut s);
        }
        self.describe_steps(&self.steps, 1, &mut s);
        for o in &self.outputs {
            let alias = o
                .alias
                .as_deref()
                .map(|a| format!(" (updates {a})"))
                .unwrap_or_default();
            let _ = writeln!(s, "  output {} = b{}{alias}", o.name, o.buffer);
        }
        s
    }

    fn describe_steps(&self, steps: &[Step], depth: usize, s: &mut String) {
        use std::fmt::Write;
        let pad = "  ".repeat(depth);
        let b = |ids: &[BufferId]| {
            ids.iter()
                .map(|a| format!("b{a}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (i, st) in steps.iter().enumerate() {
            match st {
                Step::Kernel { kernel, args } => {
                    let k = &self.kernels[*kernel];
                    let _ = writeln!(
                        s,
                        "{pad}step {i}: {} `{}`{} ({})",
                        k.name,
                        k.op.name(),
                        k.loc
                            .as_deref()
                            .map(|l| format!(" at {l}"))
                            .unwrap_or_default(),
                        b(args)
                    );
                }
                Step::Copy { from, to } => {
                    let _ = writeln!(s, "{pad}step {i}: copy b{from} -> b{to}");
                }
                Step::Scan(sc) => {
                    let carries: Vec<String> = sc
                        .carries
                        .iter()
                        .map(|c| format!("b{}->b{}", c.init, c.result))
                        .collect();
                    let xs: Vec<BufferId> = sc.xs.iter().map(|x| x.outer).collect();
                    let ys: Vec<BufferId> = sc.ys.iter().map(|y| y.outer).collect();
                    let inv: Vec<BufferId> = sc.invariants.iter().map(|x| x.0).collect();
                    let _ = writeln!(
                        s,
                        "{pad}step {i}: scan @{} over {} on axis {}{} (carries [{}], xs [{}], invariants [{}], ys [{}]):",
                        sc.name,
                        sc.length,
                        sc.axis,
                        if sc.reverse { ", reverse" } else { "" },
                        carries.join(", "),
                        b(&xs),
                        b(&inv),
                        b(&ys)
                    );
                    self.describe_steps(&sc.body, depth + 1, s);
                }
            }
        }
    }
}
