//! The random graph builder behind [`super::graph_from_entropy`]: one method
//! per op kind, each picking operands that fit the op's type rule.

use super::{dim, float_value, literal, shape, tensor_type, Entropy, GraphConfig};
use crate::graph::{Graph, Value};
use crate::infer::broadcast_shapes;
use crate::kernel::check_fused;
use crate::op::{BinaryOp, CmpOp, F64Bits, FusedOp, FusionKind, Op, ReduceOp, ScanOp, UnaryOp};
use crate::types::{DType, Shape, TensorType};
use crate::Dim;
use std::collections::BTreeMap;
use std::sync::Arc;

const GRAPH_NAMES: [&str; 4] = ["g", "model", "tiny.v2", "_main"];
const BODY_NAMES: [&str; 3] = ["step", "body", "cell.0"];
const INPUT_NAMES: [&str; 6] = ["x", "tokens", "k_cache", "state", "h.0", "mask"];
const PARAM_NAMES: [&str; 5] = [
    "w",
    "embed.weight",
    "layers.0.wq",
    "norm \"gain\"",
    "b\\ias",
];
const OUTPUT_NAMES: [&str; 8] = [
    "out",
    "logits",
    "y",
    "k_cache_out",
    "a b",
    "q\"uote",
    "tab\there",
    "ünï\n\u{1}",
];
const LOCS: [&str; 6] = [
    "embed",
    "layers.0.attn",
    "blk[1]/mlp",
    "quote\"d",
    "new\nline",
    "ü",
];

/// Where the builder is: what the graph under construction may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Top,
    ScanBody,
    Fused(FusionKind),
}

struct Builder<'c, 'e, 'd> {
    e: &'e mut Entropy<'d>,
    cfg: &'c GraphConfig,
    depth: usize,
    mode: Mode,
    g: Graph,
    values: Vec<Value>,
    params: BTreeMap<String, TensorType>,
}

pub(super) fn top_graph(e: &mut Entropy, cfg: &GraphConfig) -> Graph {
    let name = GRAPH_NAMES[e.below(GRAPH_NAMES.len())];
    let mut b = Builder::new(e, cfg, 0, Mode::Top, name);
    let n = 1 + b.e.below(cfg.max_inputs.max(1));
    let mut names: Vec<&str> = INPUT_NAMES.to_vec();
    for _ in 0..n {
        let i = b.e.below(names.len());
        let ty = tensor_type(b.e, cfg.symbolic);
        let v =
            b.g.add_input(names.remove(i), ty)
                .expect("input names are distinct");
        if cfg.locs && b.e.chance(1, 6) {
            b.set_loc(v);
        }
        b.values.push(v);
    }
    b.steps(cfg.max_ops);
    b.outputs();
    b.g
}

impl<'c, 'e, 'd> Builder<'c, 'e, 'd> {
    fn new(
        e: &'e mut Entropy<'d>,
        cfg: &'c GraphConfig,
        depth: usize,
        mode: Mode,
        name: &str,
    ) -> Self {
        Builder {
            e,
            cfg,
            depth,
            mode,
            g: Graph::new(name),
            values: Vec::new(),
            params: BTreeMap::new(),
        }
    }

    fn ty(&self, v: Value) -> &TensorType {
        self.g.ty(v)
    }

    /// A value whose type satisfies `ok`.
    fn pick(&mut self, ok: impl Fn(&TensorType) -> bool) -> Option<Value> {
        let c: Vec<Value> = self
            .values
            .iter()
            .copied()
            .filter(|v| ok(self.g.ty(*v)))
            .collect();
        self.e.choose(&c).copied()
    }

    fn set_loc(&mut self, v: Value) {
        let loc = LOCS[self.e.below(LOCS.len())];
        self.g.set_loc(v.node, Some(loc.to_string()));
    }

    /// Adds the op if it type-checks; records every result.
    fn add(&mut self, op: Op, operands: &[Value]) -> Option<Value> {
        let id = self.g.add_node(op, operands).ok()?;
        let n = self.g.node(id).outputs.len() as u32;
        self.values.extend((0..n).map(|p| Value::new(id, p)));
        if self.cfg.locs && self.e.chance(1, 4) {
            self.set_loc(Value::new(id, 0));
        }
        Some(Value::new(id, 0))
    }

    fn steps(&mut self, max: usize) {
        for _ in 0..max {
            if self.e.is_exhausted() {
                break;
            }
            self.step();
        }
    }

    fn step(&mut self) {
        let bodies = self.depth < self.cfg.max_depth;
        let in_fused = matches!(self.mode, Mode::Fused(_));
        let kind = self.e.below(21);
        let _ = match kind {
            0 | 1 => self.unary(),
            2 | 3 => self.binary(),
            4 => self.compare(),
            5 => self.select(),
            6 => self.cast(),
            7 if self.mode != Mode::Fused(FusionKind::Loop) => self.reduce(),
            8 => self.reshape(),
            9 => self.permute(),
            10 => self.broadcast(),
            11 => self.slice(),
            12 => self.concat(),
            13 => self.pad(),
            14 => self.gather(),
            15 => self.iota(),
            16 if !in_fused => self.matmul(),
            17 => self.constant(),
            18 if self.mode == Mode::Top && self.cfg.params => self.param(),
            19 if bodies && !in_fused && self.cfg.scan && self.e.chance(1, 2) => self.scan(),
            19 if bodies && !in_fused && self.cfg.fused => self.fused(),
            20 if !in_fused => self.update_slice(),
            _ => None,
        };
    }

    // ---- leaves ----

    /// A scalar constant of `dt` (in fused bodies only scalars are allowed).
    fn scalar(&mut self, dt: DType) -> Option<Value> {
        let lit = literal(self.e, dt, Vec::new());
        self.add(Op::Const(lit), &[])
    }

    fn constant(&mut self) -> Option<Value> {
        let dt = super::dtype(self.e);
        let rank = if matches!(self.mode, Mode::Fused(_)) {
            0
        } else {
            self.e.below(3)
        };
        let shape: Vec<usize> = (0..rank).map(|_| self.e.below(4)).collect();
        let lit = literal(self.e, dt, shape);
        self.add(Op::Const(lit), &[])
    }

    fn param(&mut self) -> Option<Value> {
        let name = PARAM_NAMES[self.e.below(PARAM_NAMES.len())].to_string();
        let ty = match self.params.get(&name) {
            Some(t) => t.clone(),
            None => tensor_type(self.e, self.cfg.symbolic),
        };
        self.param_of(name, ty)
    }

    fn param_of(&mut self, name: String, ty: TensorType) -> Option<Value> {
        self.params.insert(name.clone(), ty.clone());
        self.add(Op::Param { name, ty }, &[])
    }

    fn iota(&mut self) -> Option<Value> {
        let mut ty = tensor_type(self.e, self.cfg.symbolic);
        if ty.dtype == DType::Bool {
            ty.dtype = DType::I32;
        }
        if ty.shape.is_empty() {
            ty.shape.push(dim(self.e, self.cfg.symbolic));
        }
        let axis = self.e.below(ty.rank());
        self.add(Op::Iota { ty, axis }, &[])
    }

    // ---- element-wise ----

    fn unary(&mut self) -> Option<Value> {
        let u = UnaryOp::ALL[self.e.below(UnaryOp::ALL.len())];
        let ok = move |t: &TensorType| match u {
            UnaryOp::Neg | UnaryOp::Abs => !matches!(t.dtype, DType::Bool | DType::U8),
            UnaryOp::Not => t.dtype == DType::Bool,
            _ => t.dtype.is_float(),
        };
        let a = self.pick(ok)?;
        self.add(Op::Unary(u), &[a])
    }

    /// A second operand for `a`: a value of the same dtype whose shape
    /// broadcasts with it, or a fresh scalar constant.
    fn partner(&mut self, a: Value) -> Option<Value> {
        let t = self.ty(a).clone();
        let c: Vec<Value> = self
            .values
            .iter()
            .copied()
            .filter(|v| {
                let u = self.g.ty(*v);
                u.dtype == t.dtype && broadcast_shapes(&[&t.shape, &u.shape]).is_some()
            })
            .collect();
        match self.e.below(c.len() + 1) {
            i if i < c.len() => Some(c[i]),
            _ => self.scalar(t.dtype),
        }
    }

    fn binary(&mut self) -> Option<Value> {
        let b = BinaryOp::ALL[self.e.below(BinaryOp::ALL.len())];
        let ok = move |t: &TensorType| match b {
            BinaryOp::And | BinaryOp::Or => t.dtype == DType::Bool,
            BinaryOp::Pow => t.dtype.is_float(),
            _ => t.dtype != DType::Bool,
        };
        let a = self.pick(ok)?;
        let c = self.partner(a)?;
        let ops = if self.e.chance(1, 2) { [a, c] } else { [c, a] };
        self.add(Op::Binary(b), &ops)
    }

    fn compare(&mut self) -> Option<Value> {
        let c = CmpOp::ALL[self.e.below(CmpOp::ALL.len())];
        let a = self.pick(|_| true)?;
        let b = self.partner(a)?;
        self.add(Op::Compare(c), &[a, b])
    }

    fn select(&mut self) -> Option<Value> {
        let a = self.pick(|_| true)?;
        let b = self.partner(a)?;
        let (ta, tb) = (self.ty(a).shape.clone(), self.ty(b).shape.clone());
        let cond = match self
            .pick(|t| t.dtype == DType::Bool && broadcast_shapes(&[&t.shape, &ta, &tb]).is_some())
        {
            Some(c) if self.e.chance(1, 2) => c,
            _ => {
                let op = Op::Compare(CmpOp::ALL[self.e.below(CmpOp::ALL.len())]);
                self.add(op, &[a, b])?
            }
        };
        self.add(Op::Select, &[cond, a, b])
    }

    fn cast(&mut self) -> Option<Value> {
        let a = self.pick(|_| true)?;
        let to = super::dtype(self.e);
        self.add(Op::Cast(to), &[a])
    }

    // ---- reductions and shape ops ----

    fn reduce(&mut self) -> Option<Value> {
        let op = ReduceOp::ALL[self.e.below(ReduceOp::ALL.len())];
        let ok = move |t: &TensorType| match op {
            ReduceOp::Mean => t.dtype.is_float(),
            _ => t.dtype != DType::Bool,
        };
        let a = self.pick(ok)?;
        let rank = self.ty(a).rank();
        let axes: Vec<usize> = if let Mode::Fused(FusionKind::Row) = self.mode {
            // Row kernels reduce trailing axes.
            let k = 1 + self.e.below(rank.max(1));
            (rank.saturating_sub(k)..rank).collect()
        } else {
            let mask = self.e.next_u32();
            let mut axes: Vec<usize> = (0..rank).filter(|i| mask >> i & 1 == 1).collect();
            self.e.shuffle(&mut axes);
            axes
        };
        let keep_dims = self.e.chance(1, 2);
        self.add(
            Op::Reduce {
                op,
                axes,
                keep_dims,
            },
            &[a],
        )
    }

    fn reshape(&mut self) -> Option<Value> {
        let a = self.pick(|_| true)?;
        let s = self.ty(a).shape.clone();
        let mut target = s.clone();
        match self.e.below(5) {
            0 => target = vec![crate::dim::product(&s)],
            1 if s.len() >= 2 => {
                let i = self.e.below(s.len() - 1);
                let merged = &s[i] * &s[i + 1];
                target.splice(i..i + 2, [merged]);
            }
            2 => {
                // Split a constant dim n into (f, n/f).
                let i = self.e.below(s.len());
                let n = s.get(i)?.as_const()?;
                let divisors: Vec<i64> = (1..=n).filter(|f| n % f == 0).collect();
                let f = *self.e.choose(&divisors)?;
                target.splice(i..i + 1, [Dim::constant(f), Dim::constant(n / f)]);
            }
            3 => {
                let i = self.e.below(s.len() + 1);
                target.insert(i, Dim::constant(1));
            }
            _ => {
                let ones: Vec<usize> = (0..s.len()).filter(|&i| s[i] == Dim::constant(1)).collect();
                let i = *self.e.choose(&ones)?;
                target.remove(i);
            }
        }
        self.add(Op::Reshape { shape: target }, &[a])
    }

    fn permute(&mut self) -> Option<Value> {
        let a = self.pick(|t| t.rank() >= 1)?;
        let mut perm: Vec<usize> = (0..self.ty(a).rank()).collect();
        self.e.shuffle(&mut perm);
        self.add(Op::Permute { perm }, &[a])
    }

    fn broadcast(&mut self) -> Option<Value> {
        let a = self.pick(|_| true)?;
        let mut target: Shape = (0..self.e.below(3))
            .map(|_| dim(self.e, self.cfg.symbolic))
            .collect();
        for d in self.ty(a).shape.clone() {
            let wide = d == Dim::constant(1) && self.e.chance(1, 2);
            target.push(if wide {
                dim(self.e, self.cfg.symbolic)
            } else {
                d
            });
        }
        self.add(Op::Broadcast { shape: target }, &[a])
    }

    /// `update_slice(base, f(slice(base)))` at the slice's start: the update
    /// always fits, with constant or symbolic bounds.
    fn update_slice(&mut self) -> Option<Value> {
        let base = self.pick(|t| t.rank() >= 1)?;
        let axis = self.e.below(self.ty(base).rank());
        let part = self.slice_on(base, axis)?;
        let Op::Slice { start, .. } = self.g.node(part.node).op.clone() else {
            return None;
        };
        let update = if self.ty(part).dtype.is_float() && self.e.chance(1, 2) {
            self.add(Op::Unary(UnaryOp::Neg), &[part])?
        } else {
            part
        };
        self.add(Op::UpdateSlice { axis, start }, &[base, update])
    }

    fn slice(&mut self) -> Option<Value> {
        let a = self.pick(|t| t.rank() >= 1)?;
        let axis = self.e.below(self.ty(a).rank());
        self.slice_on(a, axis)
    }

    fn slice_on(&mut self, a: Value, axis: usize) -> Option<Value> {
        let d = self.ty(a).shape[axis].clone();
        let (seq, past) = (Dim::sym("seq"), Dim::sym("past"));
        let (start, end) = match d.as_const() {
            Some(n) => {
                let s = self.e.below(n as usize + 1) as i64;
                let e = s + self.e.below((n - s) as usize + 1) as i64;
                (Dim::constant(s), Dim::constant(e))
            }
            None if d == &past + &seq => match self.e.below(3) {
                0 => (past.clone(), d.clone()),
                1 => (Dim::constant(0), past),
                _ => (seq, d.clone()),
            },
            None => match self.e.below(2) {
                0 => (Dim::constant(0), d.clone()),
                _ => (Dim::constant(1), d.clone()),
            },
        };
        self.add(Op::Slice { axis, start, end }, &[a])
    }

    fn concat(&mut self) -> Option<Value> {
        let a = self.pick(|t| t.rank() >= 1)?;
        let t = self.ty(a).clone();
        let axis = self.e.below(t.rank());
        let fits = |u: &TensorType| {
            u.dtype == t.dtype
                && u.rank() == t.rank()
                && (0..t.rank()).all(|i| i == axis || u.shape[i] == t.shape[i])
        };
        let mut ops = vec![a];
        for _ in 0..self.e.below(3) {
            ops.push(self.pick(fits)?);
        }
        self.e.shuffle(&mut ops);
        self.add(Op::Concat { axis }, &ops)
    }

    fn pad(&mut self) -> Option<Value> {
        let a = self.pick(|t| t.rank() >= 1)?;
        let axis = self.e.below(self.ty(a).rank());
        let amount = |e: &mut Entropy| match e.below(4) {
            3 if self.cfg.symbolic => Dim::sym("seq"),
            n => Dim::constant(n as i64 % 3),
        };
        let low = amount(self.e);
        let high = amount(self.e);
        let value = F64Bits(float_value(self.e));
        self.add(
            Op::Pad {
                axis,
                low,
                high,
                value,
            },
            &[a],
        )
    }

    fn gather(&mut self) -> Option<Value> {
        let table = self.pick(|t| t.rank() >= 1)?;
        let axis = self.e.below(self.ty(table).rank());
        let is_index = |t: &TensorType| matches!(t.dtype, DType::I32 | DType::I64);
        let idx = match self.pick(is_index) {
            Some(i) if self.e.chance(2, 3) => i,
            _ => {
                let dtype = if self.e.chance(1, 2) {
                    DType::I32
                } else {
                    DType::I64
                };
                let mut s = shape(self.e, 2, self.cfg.symbolic);
                if s.is_empty() {
                    s.push(Dim::constant(2));
                }
                let axis = self.e.below(s.len());
                self.add(
                    Op::Iota {
                        ty: TensorType::new(dtype, s),
                        axis,
                    },
                    &[],
                )?
            }
        };
        self.add(Op::Gather { axis }, &[table, idx])
    }

    fn matmul(&mut self) -> Option<Value> {
        let a = self.pick(|t| t.rank() >= 2 && t.dtype != DType::Bool)?;
        let t = self.ty(a).clone();
        let k = t.shape[t.rank() - 1].clone();
        let fits = |u: &TensorType| {
            u.dtype == t.dtype
                && u.rank() >= 2
                && u.shape[u.rank() - 2] == k
                && broadcast_shapes(&[
                    &t.shape[..t.rank() - 2].to_vec(),
                    &u.shape[..u.rank() - 2].to_vec(),
                ])
                .is_some()
        };
        let b = match self.e.below(4) {
            0 => self.pick(fits)?,
            1 => {
                // a x aᵀ: swap the two inner axes.
                let mut perm: Vec<usize> = (0..t.rank()).collect();
                perm.swap(t.rank() - 1, t.rank() - 2);
                self.add(Op::Permute { perm }, &[a])?
            }
            2 if self.mode == Mode::Top && self.cfg.params => {
                // A weight, with or without batch dims to broadcast.
                let n = dim(self.e, false);
                let mut s = match self.e.below(3) {
                    0 => vec![],
                    1 => vec![Dim::constant(1)],
                    _ => t.shape[..t.rank() - 2].to_vec(),
                };
                s.extend([k, n]);
                let name = format!("mm.w{}", self.params.len());
                self.param_of(name, TensorType::new(t.dtype, s))?
            }
            _ => {
                let n = dim(self.e, self.cfg.symbolic);
                let ty = TensorType::new(t.dtype, vec![k, n]);
                self.add(Op::Iota { ty, axis: 0 }, &[])?
            }
        };
        self.add(Op::MatMul, &[a, b])
    }

    // ---- bodies ----

    fn sub(&mut self, mode: Mode, inputs: &[TensorType], prefix: &str) -> Builder<'c, '_, 'd> {
        let name = BODY_NAMES[self.e.below(BODY_NAMES.len())];
        let mut b = Builder::new(self.e, self.cfg, self.depth + 1, mode, name);
        for (i, t) in inputs.iter().enumerate() {
            let v =
                b.g.add_input(format!("{prefix}{i}"), t.clone())
                    .expect("body input names are distinct");
            b.values.push(v);
        }
        b
    }

    fn scan(&mut self) -> Option<Value> {
        let x0 = self.pick(|t| t.rank() >= 1)?;
        let axis = self.e.below(self.ty(x0).rank());
        let len = self.ty(x0).shape[axis].clone();
        let mut xs = vec![x0];
        for _ in 0..self.e.below(2) {
            xs.push(self.pick(|t| t.rank() > axis && t.shape[axis] == len)?);
        }
        let carries: Vec<Value> = (0..self.e.below(3))
            .filter_map(|_| self.pick(|_| true))
            .collect();
        let invariants: Vec<Value> = (0..self.e.below(2))
            .filter_map(|_| self.pick(|_| true))
            .collect();
        let ctys: Vec<TensorType> = carries.iter().map(|v| self.ty(*v).clone()).collect();
        let mut inputs = ctys.clone();
        for x in &xs {
            let mut t = self.ty(*x).clone();
            t.shape.remove(axis);
            inputs.push(t);
        }
        inputs.extend(invariants.iter().map(|v| self.ty(*v).clone()));
        let mut b = self.sub(Mode::ScanBody, &inputs, "in");
        b.steps(b.cfg.max_body_ops);
        for (i, ct) in ctys.iter().enumerate() {
            let c = b.pick(|t| t == ct)?;
            b.g.add_output(format!("c{i}"), c).ok()?;
        }
        let ny = b.e.below(3).max(usize::from(ctys.is_empty()));
        for i in 0..ny {
            let y = b.pick(|t| t.rank() >= axis)?;
            b.g.add_output(format!("y{i}"), y).ok()?;
        }
        let body = b.g;
        let reverse = self.e.chance(1, 2);
        let op = Op::Scan(ScanOp {
            body: Arc::new(body),
            num_carry: carries.len(),
            num_xs: xs.len(),
            axis,
            reverse,
        });
        let operands: Vec<Value> = carries.into_iter().chain(xs).chain(invariants).collect();
        self.add(op, &operands)
    }

    fn fused(&mut self) -> Option<Value> {
        let kind = if self.e.chance(1, 2) {
            FusionKind::Row
        } else {
            FusionKind::Loop
        };
        let operands: Vec<Value> = (0..1 + self.e.below(3))
            .filter_map(|_| self.pick(|_| true))
            .collect();
        let inputs: Vec<TensorType> = operands.iter().map(|v| self.ty(*v).clone()).collect();
        let mut b = self.sub(Mode::Fused(kind), &inputs, "a");
        b.steps(b.cfg.max_body_ops);
        let first = match kind {
            // A row kernel needs a reduction: end on one if the steps made none.
            FusionKind::Row => match b.e.chance(1, 2) {
                true => b.reduce().or_else(|| b.values.last().copied())?,
                false => *b.values.last()?,
            },
            FusionKind::Loop => *b.values.last()?,
        };
        b.g.add_output("r0", first).ok()?;
        let shape0 = b.ty(first).shape.clone();
        if b.e.chance(1, 2) {
            if let Some(v) = b.pick(|t| t.shape == shape0) {
                b.g.add_output("r1", v).ok()?;
            }
        }
        let f = FusedOp {
            kind,
            body: Arc::new(b.g),
        };
        check_fused(&f).ok()?;
        self.add(Op::Fused(f), &operands)
    }

    // ---- outputs ----

    fn outputs(&mut self) {
        let n = 1 + self.e.below(3);
        let mut names: Vec<&str> = OUTPUT_NAMES.to_vec();
        let mut free: Vec<(String, Value)> = self
            .g
            .input_names()
            .map(String::from)
            .zip(self.g.input_values())
            .collect();
        for k in 0..n {
            // Sometimes an output of an input's type, to alias it.
            let v = if self.cfg.aliases && k == 0 && self.e.chance(1, 2) {
                let tys: Vec<TensorType> = free.iter().map(|(_, i)| self.ty(*i).clone()).collect();
                self.pick(|t| tys.contains(t))
            } else {
                let recent = self.values.len().saturating_sub(6);
                self.values.get(recent + self.e.below(6)).copied()
            };
            let Some(v) = v.or_else(|| self.values.last().copied()) else {
                return;
            };
            let name = names.remove(self.e.below(names.len()));
            let alias = free.iter().position(|(_, i)| self.g.ty(*i) == self.g.ty(v));
            match alias {
                Some(i) if self.cfg.aliases && self.e.chance(2, 3) => {
                    let (input, _) = free.remove(i);
                    let _ = self.g.add_output_alias(name, v, input);
                }
                _ => {
                    let _ = self.g.add_output(name, v);
                }
            }
        }
    }
}
