//! The elemental emitter: the element of any body value at an index vector,
//! computed by walking the fused body backwards from that value. Each op maps
//! its result index to operand indices (numpy broadcasting, permutes,
//! reshapes, slices, pads, concats, gathers); inputs load from their buffers.
//! Results are memoized per (value, index) in the current scope, so a DAG is
//! emitted once per distinct index, not once per path.

use crate::builder::{if_else, Ty, R, V};
use crate::ctx::Ctx;
use crate::error::CodegenError;
use crate::scalar::{self, reg_ty};
use kiln_ir::literal::LiteralData;
use kiln_ir::{Dim, Graph, NodeId, Op, Value};
use std::collections::HashMap;

/// A fused body prepared for emission.
pub struct Body<'g> {
    pub g: &'g Graph,
    /// Body input node -> buffer index.
    inputs: HashMap<NodeId, usize>,
    /// Row kernels: the block's value of each reduction, once computed.
    pub reduced: HashMap<NodeId, V>,
}

impl<'g> Body<'g> {
    pub fn new(g: &'g Graph) -> Body<'g> {
        let inputs = g
            .inputs()
            .iter()
            .enumerate()
            .map(|(k, &n)| (n, k))
            .collect();
        Body {
            g,
            inputs,
            reduced: HashMap::new(),
        }
    }

    fn unsupported(&self, cx: &Ctx, op: &Op, detail: &str) -> CodegenError {
        CodegenError::Unsupported {
            kernel: cx.kernel.to_string(),
            op: op.name().to_string(),
            detail: detail.to_string(),
        }
    }

    /// The element of `v` at `idx` (one `i64` per axis of `v`'s shape).
    pub fn elem(&self, cx: &mut Ctx, v: Value, idx: &[V]) -> R<V> {
        let key = format!(
            "e{}.{}@{}",
            v.node.index(),
            v.port,
            idx.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        if let Some(r) = cx.b.lookup(&key) {
            return Ok(r);
        }
        let r = self.compute(cx, v, idx)?;
        cx.b.remember(key, r);
        Ok(r)
    }

    fn operand_at_broadcast(&self, cx: &mut Ctx, operand: Value, idx: &[V]) -> R<V> {
        let shape = self.g.ty(operand).shape.clone();
        let oi = broadcast_index(cx, idx, &shape);
        self.elem(cx, operand, &oi)
    }

    fn compute(&self, cx: &mut Ctx, v: Value, idx: &[V]) -> R<V> {
        let g = self.g;
        let node = g.node(v.node);
        let ops = g.operands(v.node);
        let ty = g.ty(v).clone();
        let dt = ty.dtype;
        match &node.op {
            Op::Input { .. } => {
                let k = self.inputs[&v.node];
                let dims = cx.dims(&ty.shape)?;
                let lin = cx.linearize(idx, &dims);
                let p = cx.bufs[k];
                Ok(scalar::load(&mut cx.b, p, lin, dt))
            }
            Op::Const(lit) => {
                if lit.numel() != 1 {
                    return Err(self.unsupported(cx, &node.op, "only scalar constants"));
                }
                Ok(match &lit.data {
                    LiteralData::Float(x) => cx.b.cf(Ty::F32, x[0]),
                    LiteralData::Int(x) => {
                        cx.b.ci(reg_ty(dt), kiln_ir::literal::wrap_int(dt, x[0]))
                    }
                    LiteralData::Bool(x) => cx.b.ci(Ty::I1, x[0] as i64),
                })
            }
            Op::Iota { axis, .. } => {
                let i = idx[*axis];
                Ok(if dt.is_float() {
                    let f = cx.b.conv("arith.sitofp", i, Ty::F32);
                    scalar::round(&mut cx.b, f, dt)
                } else {
                    cx.b.conv("arith.trunci", i, reg_ty(dt))
                })
            }
            Op::Unary(u) => {
                let x = self.elem(cx, ops[0], idx)?;
                let s = cx.scalar;
                s.unary(&mut cx.b, *u, x, dt)
            }
            Op::Binary(bop) => {
                let x = self.operand_at_broadcast(cx, ops[0], idx)?;
                let y = self.operand_at_broadcast(cx, ops[1], idx)?;
                let s = cx.scalar;
                s.binary(&mut cx.b, *bop, x, y, dt)
            }
            Op::Compare(c) => {
                let odt = g.ty(ops[0]).dtype;
                let x = self.operand_at_broadcast(cx, ops[0], idx)?;
                let y = self.operand_at_broadcast(cx, ops[1], idx)?;
                let s = cx.scalar;
                Ok(s.compare(&mut cx.b, *c, x, y, odt))
            }
            Op::Select => {
                let c = self.operand_at_broadcast(cx, ops[0], idx)?;
                let x = self.operand_at_broadcast(cx, ops[1], idx)?;
                let y = self.operand_at_broadcast(cx, ops[2], idx)?;
                Ok(cx.b.select(c, x, y))
            }
            Op::Cast(to) => {
                let from = g.ty(ops[0]).dtype;
                let x = self.elem(cx, ops[0], idx)?;
                let s = cx.scalar;
                Ok(s.cast(&mut cx.b, x, from, *to))
            }
            Op::Reduce { .. } => {
                self.reduced.get(&v.node).copied().ok_or_else(|| {
                    self.unsupported(cx, &node.op, "a reduction outside a row kernel")
                })
            }
            Op::Broadcast { .. } => self.operand_at_broadcast(cx, ops[0], idx),
            Op::Permute { perm } => {
                let mut oi = vec![idx[0]; idx.len()];
                for (i, &p) in perm.iter().enumerate() {
                    oi[p] = idx[i];
                }
                self.elem(cx, ops[0], &oi)
            }
            Op::Reshape { shape } => {
                let from = g.ty(ops[0]).shape.clone();
                let oi = self.reshape_index(cx, idx, shape, &from)?;
                self.elem(cx, ops[0], &oi)
            }
            Op::Slice { axis, start, .. } => {
                let s = cx.dim(start)?;
                let mut oi = idx.to_vec();
                oi[*axis] = cx.b.add(idx[*axis], s);
                self.elem(cx, ops[0], &oi)
            }
            Op::Pad {
                axis, low, value, ..
            } => {
                let n = cx.dim(&g.ty(ops[0]).shape[*axis])?;
                let lo = cx.dim(low)?;
                let j = cx.b.sub(idx[*axis], lo);
                let zero = cx.b.i64c(0);
                let ge = cx.b.cmpi("sge", j, zero);
                let lt = cx.b.cmpi("slt", j, n);
                let inb = cx.b.and(ge, lt);
                let mut oi = idx.to_vec();
                oi[*axis] = j;
                let operand = ops[0];
                let pad = value.0;
                let r = if_else(
                    cx,
                    inb,
                    &[reg_ty(dt)],
                    |cx| Ok(vec![self.elem(cx, operand, &oi)?]),
                    |cx| Ok(vec![scalar::constant(&mut cx.b, dt, pad)]),
                )?;
                Ok(r[0])
            }
            Op::Concat { axis } => {
                let mut offsets = Vec::with_capacity(ops.len());
                let mut acc = Dim::constant(0);
                for o in &ops {
                    offsets.push(cx.dim(&acc)?);
                    acc = &acc + &g.ty(*o).shape[*axis];
                }
                self.concat_from(cx, &ops, &offsets, *axis, idx, 0, reg_ty(dt))
            }
            Op::Gather { axis } => {
                let table = ops[0];
                let indices = ops[1];
                let ri = g.ty(indices).rank();
                let ii = &idx[*axis..*axis + ri];
                let raw = self.elem(cx, indices, ii)?;
                let j = cx.b.conv("arith.extsi", raw, Ty::I64);
                let n = cx.dim(&g.ty(table).shape[*axis])?;
                let j = clamp_index(cx, j, n);
                let mut ti: Vec<V> = idx[..*axis].to_vec();
                ti.push(j);
                ti.extend_from_slice(&idx[*axis + ri..]);
                self.elem(cx, table, &ti)
            }
            other => Err(self.unsupported(cx, other, "not allowed in a fused body")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn concat_from(
        &self,
        cx: &mut Ctx,
        ops: &[Value],
        offsets: &[V],
        axis: usize,
        idx: &[V],
        k: usize,
        ty: Ty,
    ) -> R<V> {
        let at = |cx: &mut Ctx, k: usize| -> R<V> {
            let mut oi = idx.to_vec();
            oi[axis] = cx.b.sub(idx[axis], offsets[k]);
            self.elem(cx, ops[k], &oi)
        };
        if k + 1 == ops.len() {
            return at(cx, k);
        }
        let before = cx.b.cmpi("slt", idx[axis], offsets[k + 1]);
        let r = if_else(
            cx,
            before,
            &[ty],
            |cx| Ok(vec![at(cx, k)?]),
            |cx| {
                Ok(vec![self.concat_from(
                    cx,
                    ops,
                    offsets,
                    axis,
                    idx,
                    k + 1,
                    ty,
                )?])
            },
        )?;
        Ok(r[0])
    }

    /// Maps an index of the reshaped value to one of its operand. Leading and
    /// trailing axes the two shapes share map one to one; only the middle is
    /// linearized and split again.
    fn reshape_index(&self, cx: &mut Ctx, idx: &[V], to: &[Dim], from: &[Dim]) -> R<Vec<V>> {
        let mut pre = 0;
        while pre < to.len() && pre < from.len() && to[pre] == from[pre] {
            pre += 1;
        }
        let mut suf = 0;
        while suf < to.len() - pre
            && suf < from.len() - pre
            && to[to.len() - 1 - suf] == from[from.len() - 1 - suf]
        {
            suf += 1;
        }
        let to_mid = &to[pre..to.len() - suf];
        let from_mid = &from[pre..from.len() - suf];
        let mut out: Vec<V> = idx[..pre].to_vec();
        let td = cx.dims(to_mid)?;
        let fd = cx.dims(from_mid)?;
        let lin = cx.linearize(&idx[pre..idx.len() - suf], &td);
        out.extend(cx.delinearize(lin, &fd));
        out.extend_from_slice(&idx[idx.len() - suf..]);
        Ok(out)
    }
}

/// The operand index for a result index under numpy broadcasting: operand
/// axes right-aligned, axes of constant size 1 read index 0.
pub fn broadcast_index(cx: &mut Ctx, idx: &[V], operand_shape: &[Dim]) -> Vec<V> {
    let off = idx.len() - operand_shape.len();
    let one = Dim::constant(1);
    operand_shape
        .iter()
        .enumerate()
        .map(|(j, d)| {
            if *d == one {
                cx.b.i64c(0)
            } else {
                idx[off + j]
            }
        })
        .collect()
}

/// `min(max(j, 0), n - 1)` (an out-of-range gather index reads the nearest row).
fn clamp_index(cx: &mut Ctx, j: V, n: V) -> V {
    let zero = cx.b.i64c(0);
    let one = cx.b.i64c(1);
    let last = cx.b.sub(n, one);
    let j = cx.b.min_s(j, last);
    cx.b.max_s(j, zero)
}
