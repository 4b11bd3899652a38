//! The executor's form of a plan, built once: steps with their dims compiled
//! against the symbol list, per-buffer sizes, kernel grids, and the range
//! checks that keep symbolic offsets (an `update_slice` at `past`, a slice
//! up to `past+seq`) inside their buffers. Building it also validates the
//! plan, which may come from an artifact on disk.

use super::dims::SymDim;
use super::ffi::PtrVec;
use crate::error::RuntimeError;
use crate::plan::{BufferId, Plan, ScanCarry, Step, Storage};
use kiln_ir::kernel::KernelLaunch;
use kiln_ir::{Dim, Graph, Op, TensorType};

/// One step, ready to run.
pub(crate) enum RtStep {
    Kernel {
        kernel: usize,
        args: Vec<BufferId>,
        /// The buffers whose bytes measure the launch's work (whether it
        /// is worth the thread pool): all but the base of an
        /// `update_slice`, which touches only the update's region of it.
        work: Vec<BufferId>,
    },
    Copy {
        from: BufferId,
        to: BufferId,
    },
    Scan(Box<RtScan>),
}

/// A sequence of a scan: the stacked buffer, the body's buffer, staging,
/// and the element count before the scan axis (a slice is contiguous when
/// it is 1).
pub(crate) struct RtSeq {
    pub outer: BufferId,
    pub body: BufferId,
    pub staging: Option<BufferId>,
    pub before: SymDim,
}

pub(crate) struct RtScan {
    /// The body's name, for messages (the CUDA executor's).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub name: String,
    pub length: SymDim,
    pub reverse: bool,
    pub carries: Vec<ScanCarry>,
    pub xs: Vec<RtSeq>,
    pub ys: Vec<RtSeq>,
    pub invariants: Vec<(BufferId, BufferId)>,
    pub body: Vec<RtStep>,
    /// Views whose root is one of this scan's bound buffers, with that
    /// root: re-pointed whenever the scan rebinds.
    pub views: Vec<(BufferId, BufferId)>,
    /// Per-run scratch: each carry's current and next half, and each
    /// sequence's (xs then ys) element count before the axis.
    pub cur: PtrVec,
    pub next: PtrVec,
    pub before: Vec<usize>,
}

/// A run-time range check: `value <= limit`, both dims.
pub(crate) struct Guard {
    pub kernel: usize,
    pub what: String,
    pub value: SymDim,
    pub limit: SymDim,
}

pub(crate) struct Program {
    pub steps: Vec<RtStep>,
    /// The plan's load steps (kernel launches on weights and constants).
    pub load: Vec<RtStep>,
    /// Element count of each buffer.
    pub numel: Vec<SymDim>,
    /// Each kernel's grid: (extent, tile) per factor.
    pub grids: Vec<Vec<(SymDim, usize)>>,
    pub guards: Vec<Guard>,
    /// Each input's dims, for binding.
    pub input_dims: Vec<Vec<SymDim>>,
    /// Each input's buffer.
    pub input_buf: Vec<BufferId>,
    /// Each output's shape.
    pub output_dims: Vec<Vec<SymDim>>,
}

fn bad(m: String) -> RuntimeError {
    RuntimeError::BadPlan(m)
}

impl Program {
    pub fn compile(plan: &Plan, launches: &[KernelLaunch]) -> Result<Program, RuntimeError> {
        let syms = &plan.symbols;
        let sd = |d: &Dim| SymDim::new(d, syms);
        let shape = |t: &TensorType| t.shape.iter().map(sd).collect::<Result<Vec<_>, _>>();
        let nb = plan.buffers.len();
        for (i, b) in plan.buffers.iter().enumerate() {
            let ok = match &b.storage {
                Storage::Input(k) => *k < plan.inputs.len(),
                Storage::Temp { slot } => *slot < plan.num_slots,
                Storage::View { of } => *of < nb && chain_ends(plan, i),
                _ => true,
            };
            if !ok {
                return Err(bad(format!(
                    "buffer b{i} has invalid storage {:?}",
                    b.storage
                )));
            }
        }
        let numel = plan
            .buffers
            .iter()
            .map(|b| sd(&b.ty.numel()))
            .collect::<Result<Vec<_>, _>>()?;
        let grids = launches
            .iter()
            .map(|l| {
                l.grid
                    .dims
                    .iter()
                    .map(|g| Ok((sd(&g.extent)?, g.tile.max(1) as usize)))
                    .collect::<Result<Vec<_>, RuntimeError>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut guards = Vec::new();
        for (k, pk) in plan.kernels.iter().enumerate() {
            kernel_guards(k, &pk.op, &pk.operand_types, syms, &mut guards)?;
        }
        let mut input_buf = vec![usize::MAX; plan.inputs.len()];
        for (b, buf) in plan.buffers.iter().enumerate() {
            if let Storage::Input(i) = buf.storage {
                if input_buf[i] != usize::MAX || buf.ty != plan.inputs[i].ty {
                    return Err(bad(format!(
                        "input {i} has a duplicate or mistyped buffer b{b}"
                    )));
                }
                input_buf[i] = b;
            }
        }
        if let Some(i) = input_buf.iter().position(|&b| b == usize::MAX) {
            return Err(bad(format!(
                "input `{}` has no buffer",
                plan.inputs[i].name
            )));
        }
        let mut output_dims = Vec::new();
        for o in &plan.outputs {
            if o.buffer >= nb {
                return Err(bad(format!("output `{}` names no buffer", o.buffer)));
            }
            if plan.buffers[plan.root(o.buffer)].storage == Storage::Bound {
                return Err(bad(format!("output `{}` is a scan body's buffer", o.name)));
            }
            if let Some(alias) = &o.alias {
                let Some(x) = plan.aliased_input(o) else {
                    return Err(bad(format!("output `{}` aliases no input", o.name)));
                };
                let root = plan.root(o.buffer);
                let foreign = matches!(plan.buffers[root].storage, Storage::Input(j) if j != x);
                if foreign || plan.buffers[o.buffer].ty != plan.inputs[x].ty {
                    return Err(bad(format!(
                        "output `{}` cannot be written back to `{alias}`",
                        o.name
                    )));
                }
            }
            output_dims.push(shape(&plan.buffers[o.buffer].ty)?);
        }
        let input_dims = plan
            .inputs
            .iter()
            .map(|i| shape(&i.ty))
            .collect::<Result<Vec<_>, _>>()?;
        let steps = compile_steps(plan, &plan.steps, launches.len())?;
        for st in &plan.load_steps {
            let resident = |b: BufferId| {
                matches!(
                    plan.buffers[plan.root(b)].storage,
                    Storage::Param(_) | Storage::Const(_) | Storage::Derived
                )
            };
            let ok = match st {
                Step::Kernel { kernel, args } => plan.kernels.get(*kernel).is_some_and(|k| {
                    args.len() == k.operand_types.len() + k.result_types.len()
                        && args.iter().all(|&a| a < nb && resident(a))
                        && args[k.operand_types.len()..]
                            .iter()
                            .all(|&r| plan.buffers[r].storage == Storage::Derived)
                }),
                _ => false,
            };
            if !ok {
                return Err(bad(format!(
                    "load step {st:?} is not a launch on weights, constants and derived buffers"
                )));
            }
        }
        let load = compile_steps(plan, &plan.load_steps, launches.len())?;
        Ok(Program {
            steps,
            load,
            numel,
            grids,
            guards,
            input_dims,
            input_buf,
            output_dims,
        })
    }
}

/// A view chain that ends (no cycle).
fn chain_ends(plan: &Plan, mut b: BufferId) -> bool {
    for _ in 0..=plan.buffers.len() {
        match plan.buffers[b].storage {
            Storage::View { of } if of < plan.buffers.len() => b = of,
            Storage::View { .. } => return false,
            _ => return true,
        }
    }
    false
}

fn compile_steps(
    plan: &Plan,
    steps: &[Step],
    n_kernels: usize,
) -> Result<Vec<RtStep>, RuntimeError> {
    let nb = plan.buffers.len();
    let in_range = |ids: &[BufferId]| ids.iter().all(|&b| b < nb);
    let same_bytes = |a: BufferId, b: BufferId| {
        let (x, y) = (&plan.buffers[a].ty, &plan.buffers[b].ty);
        x.numel() == y.numel() && x.dtype.size_bytes() == y.dtype.size_bytes()
    };
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        out.push(match step {
            Step::Kernel { kernel, args } => {
                let k = plan
                    .kernels
                    .get(*kernel)
                    .filter(|_| *kernel < n_kernels)
                    .ok_or_else(|| {
                        bad(format!(
                            "a step launches kernel {kernel}, which does not exist"
                        ))
                    })?;
                if args.len() != k.operand_types.len() + k.result_types.len() || !in_range(args) {
                    return Err(bad(format!(
                        "kernel `{}` is launched with bad arguments {args:?}",
                        k.name
                    )));
                }
                // Kernels index their buffers by the types they were
                // compiled for: a buffer of another type would be read or
                // written out of bounds.
                let expected = k.operand_types.iter().chain(&k.result_types);
                if let Some((b, ty)) = args
                    .iter()
                    .zip(expected)
                    .find(|(b, ty)| plan.buffers[**b].ty != **ty)
                {
                    return Err(bad(format!(
                        "kernel `{}` takes {ty} but is launched on b{b}: {}",
                        k.name, plan.buffers[*b].ty
                    )));
                }
                let work = match k.op {
                    Op::UpdateSlice { .. } => vec![args[1], args[1]],
                    _ => args.clone(),
                };
                RtStep::Kernel {
                    kernel: *kernel,
                    args: args.clone(),
                    work,
                }
            }
            Step::Copy { from, to } => {
                if !in_range(&[*from, *to]) || !same_bytes(*from, *to) {
                    return Err(bad(format!(
                        "copy b{from} -> b{to} between buffers of different sizes"
                    )));
                }
                RtStep::Copy {
                    from: *from,
                    to: *to,
                }
            }
            Step::Scan(s) => {
                let seq = |x: &crate::plan::ScanSeq| -> Result<RtSeq, RuntimeError> {
                    let mut ids = vec![x.outer, x.body];
                    ids.extend(x.staging);
                    if !in_range(&ids) || plan.buffers[x.body].storage != Storage::Bound {
                        return Err(bad(format!("scan sequence {x:?} is malformed")));
                    }
                    let t = &plan.buffers[x.outer].ty;
                    if s.axis >= t.rank() || (s.axis > 0 && x.staging.is_none()) {
                        return Err(bad(format!(
                            "scan sequence {x:?} does not fit axis {}",
                            s.axis
                        )));
                    }
                    Ok(RtSeq {
                        outer: x.outer,
                        body: x.body,
                        staging: x.staging,
                        before: SymDim::new(
                            &kiln_ir::dim::product(&t.shape[..s.axis]),
                            &plan.symbols,
                        )?,
                    })
                };
                let mut bound = Vec::new();
                for c in &s.carries {
                    if !in_range(&[c.init, c.result, c.spare, c.input, c.output]) {
                        return Err(bad(format!("scan carry {c:?} names missing buffers")));
                    }
                    bound.extend([c.input, c.output]);
                }
                for (o, i) in &s.invariants {
                    if !in_range(&[*o, *i]) {
                        return Err(bad("scan invariant names missing buffers".into()));
                    }
                    bound.push(*i);
                }
                let xs = s.xs.iter().map(seq).collect::<Result<Vec<_>, _>>()?;
                let ys = s.ys.iter().map(seq).collect::<Result<Vec<_>, _>>()?;
                bound.extend(xs.iter().chain(&ys).map(|x| x.body));
                if bound
                    .iter()
                    .any(|&b| plan.buffers[b].storage != Storage::Bound)
                {
                    return Err(bad(format!(
                        "scan @{}: a body input or output is not bound",
                        s.name
                    )));
                }
                let views = (0..nb)
                    .filter(|&b| b != plan.root(b) && bound.contains(&plan.root(b)))
                    .map(|b| (b, plan.root(b)))
                    .collect();
                let n_seq = xs.len() + ys.len();
                RtStep::Scan(Box::new(RtScan {
                    name: s.name.clone(),
                    length: SymDim::new(&s.length, &plan.symbols)?,
                    reverse: s.reverse,
                    carries: s.carries.clone(),
                    xs,
                    ys,
                    invariants: s.invariants.clone(),
                    body: compile_steps(plan, &s.body, n_kernels)?,
                    views,
                    cur: PtrVec(vec![std::ptr::null_mut(); s.carries.len()]),
                    next: PtrVec(vec![std::ptr::null_mut(); s.carries.len()]),
                    before: vec![0; n_seq],
                }))
            }
        });
    }
    Ok(out)
}

/// Range checks a kernel needs: an `update_slice` must end within its
/// base, a slice (in a fused body) must start before it ends and end
/// within its operand, token-major attention must read keys within its cache.
fn kernel_guards(
    k: usize,
    op: &Op,
    operand_types: &[TensorType],
    syms: &[String],
    out: &mut Vec<Guard>,
) -> Result<(), RuntimeError> {
    let mut push = |what: String, value: &Dim, limit: &Dim| -> Result<(), RuntimeError> {
        if let (Some(v), Some(l)) = (value.as_const(), limit.as_const()) {
            if v <= l {
                return Ok(());
            }
        }
        out.push(Guard {
            kernel: k,
            what,
            value: SymDim::new(value, syms)?,
            limit: SymDim::new(limit, syms)?,
        });
        Ok(())
    };
    match op {
        Op::UpdateSlice { axis, start } => {
            let (base, upd) = (&operand_types[0], &operand_types[1]);
            let end = start + &upd.shape[*axis];
            push(
                format!("the end of the update `{end}` on axis {axis}"),
                &end,
                &base.shape[*axis],
            )
        }
        Op::Fused(f) => body_guards(&f.body, &mut push),
        // Token-major attention reads keys `0..kv_len` of a cache of `T` rows.
        Op::Attention(a) => match &a.kv_len {
            Some(len) => push(
                format!("the attended key count `{len}`"),
                len,
                &operand_types[1].shape[0],
            ),
            None => Ok(()),
        },
        // The SAQ state holds `capacity` tokens; a call appends (or
        // attends over) `past + seq` of them.
        Op::SaqAppend(a) => saq_guard(&a.spec, &a.start, operand_types, 0, &mut push),
        Op::SaqAttention(a) => saq_guard(&a.spec, &a.offset, operand_types, 1, &mut push),
        _ => Ok(()),
    }
}

/// `past + seq <= capacity` for an SAQ op whose state is operand `state`
/// (the keys follow it).
fn saq_guard(
    spec: &kiln_ir::saq::SaqSpec,
    past: &Dim,
    operand_types: &[TensorType],
    state: usize,
    push: &mut impl FnMut(String, &Dim, &Dim) -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    let (st, k) = (&operand_types[state], &operand_types[state + 1]);
    let (Some(h), Some(d)) = (k.shape[1].as_const(), k.shape[2].as_const()) else {
        return Ok(());
    };
    let Ok(layout) = kiln_ir::saq::SaqLayout::new(spec, h as usize, d as usize) else {
        return Ok(());
    };
    let Some(capacity) = layout.capacity_dim(&st.shape[0]) else {
        return Ok(());
    };
    let end = past + &k.shape[0];
    push(
        format!("the SAQ cache's token count `{end}`"),
        &end,
        &capacity,
    )
}

fn body_guards(
    g: &Graph,
    push: &mut impl FnMut(String, &Dim, &Dim) -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    for n in g.node_ids() {
        if let Op::Slice { axis, start, end } = &g.node(n).op {
            let size = &g.ty(g.operands(n)[0]).shape[*axis];
            push(
                format!("the slice start `{start}` on axis {axis}"),
                start,
                end,
            )?;
            push(format!("the slice end `{end}` on axis {axis}"), end, size)?;
        }
    }
    Ok(())
}
