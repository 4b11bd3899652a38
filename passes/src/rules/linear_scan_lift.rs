//! Lifting a linear recurrence out of a `scan` (the helper of the
//! `scan-linear-recurrence` rule).
//!
//! A scan whose every carry is updated as `h' = A ⊙ h + B`, with `A` and `B`
//! free of every carry, computes the same as:
//!
//! 1. `A` and `B` for all steps at once — the body's carry-free part applied
//!    to whole sequences (a "vmap" over the time axis: each op gets a
//!    leading `T` axis, its axes shifted by one);
//! 2. `linear_scan(h0, A, B)`, giving every step's state and the final one;
//! 3. the step outputs on the whole state sequence the same way, with the
//!    new carry read from the stacked states (and the old carry, if a step
//!    output uses it, from the states shifted by one step).
//!
//! The affine form is found by walking the new carry's expression: the carry
//! itself is `(1, 0)`, a carry-free value `v` is `(0, v)`, and `+`, `-`,
//! `neg`, multiplication by and division by a carry-free value combine the
//! pairs; anything else touching a carry (a product of two carry-dependent
//! values, `tanh`, a reshape of the carry, another carry) is not linear and
//! the scan is left alone. So is a body op the lifting does not know
//! (nested scans, fused kernels, a gather whose indices vary per step).

use super::{scalar, Term};
use crate::analysis::KEGraph;
use egg::Id;
use kiln_ir::infer::infer;
use kiln_ir::linear_scan::LinearScanOp;
use kiln_ir::{BinaryOp, DType, Dim, Graph, NodeId, Op, ScanOp, TensorType, UnaryOp, Value};
use std::collections::HashMap;

/// Why a scan is not rewritten (for tests and debugging; the rule only
/// needs to know that it is not).
pub(crate) type Refusal = String;

/// A lifted value: its term, whether the term has the leading time axis,
/// and its per-step (body-level) type.
#[derive(Clone)]
struct L {
    term: Term,
    seq: bool,
    ty: TensorType,
}

/// The coefficient of the carry in an affine form.
enum Coef {
    Zero,
    One,
    Of(L),
}

/// `v = a ⊙ h + b` (`b: None` is zero).
struct Affine {
    a: Coef,
    b: Option<L>,
}

/// What a body input is.
enum Input {
    Carry(usize),
    Seq(usize),
    Invariant(Id),
}

struct Lifter<'a> {
    s: &'a ScanOp,
    body: &'a Graph,
    operands: &'a [Id],
    len: Dim,
    inputs: HashMap<NodeId, Input>,
    /// Bit `c` set: the value depends on carry `c`.
    deps: HashMap<NodeId, u64>,
    memo: HashMap<Value, L>,
    /// Per carry, once its `linear_scan` exists: the stacked states.
    states: Vec<Option<L>>,
}

/// The scan `s` with operand classes `operands` rewritten: one term per
/// scan result (final carries, then the stacked step outputs).
pub(crate) fn lift_scan(eg: &KEGraph, s: &ScanOp, operands: &[Id]) -> Result<Vec<Term>, Refusal> {
    let (nc, nx) = (s.num_carry, s.num_xs);
    if nc == 0 {
        return Err("no carry: not a recurrence".into());
    }
    if nc > 64 {
        return Err("more than 64 carries".into());
    }
    if operands.len() < nc + nx || nx == 0 {
        return Err("operands do not match the scan".into());
    }
    let body: &Graph = &s.body;
    let len = eg[operands[nc]]
        .data
        .ty()
        .and_then(|t| t.shape.get(s.axis).cloned())
        .ok_or("the first sequence has no scan axis")?;
    let mut inputs = HashMap::new();
    for (i, &n) in body.inputs().iter().enumerate() {
        let role = if i < nc {
            Input::Carry(i)
        } else if i < nc + nx {
            Input::Seq(i - nc)
        } else {
            Input::Invariant(*operands.get(i).ok_or("too few operands")?)
        };
        inputs.insert(n, role);
    }
    let mut lf = Lifter {
        s,
        body,
        operands,
        len,
        inputs,
        deps: HashMap::new(),
        memo: HashMap::new(),
        states: vec![None; nc],
    };
    lf.find_deps();
    let mut results = Vec::with_capacity(body.outputs().len());
    for (c, (o, &h0)) in body.outputs().iter().zip(operands).take(nc).enumerate() {
        let out = o.value;
        let state = body.ty(out).clone();
        if !state.dtype.is_float() {
            return Err(format!("carry {c} is not a float tensor"));
        }
        if lf.dep(out.node) & !(1u64 << c) != 0 {
            return Err(format!("carry {c} depends on another carry"));
        }
        // `h' = f(x)` keeps only the last step: no recurrence to lift (and
        // `0·h0` would turn an infinite `h0` into NaN).
        if lf.dep(out.node) == 0 {
            return Err(format!("carry {c} does not depend on itself"));
        }
        let aff = lf.affine(out, c, &state)?;
        let a = lf.coef_operand(aff.a, &state)?;
        let b = lf.coef_operand(
            match aff.b {
                Some(l) => Coef::Of(l),
                None => Coef::Zero,
            },
            &state,
        )?;
        let op = Op::LinearScan(LinearScanOp {
            reverse: s.reverse,
            chunk: 0,
        });
        let ls = Term::op(op, vec![Term::Class(h0), a, b]);
        results.push(Term::Get(0, Box::new(ls.clone())));
        lf.states[c] = Some(L {
            term: Term::Get(1, Box::new(ls)),
            seq: true,
            ty: state,
        });
    }
    for o in &body.outputs()[nc..] {
        let y = lf.lift(o.value)?;
        results.push(lf.stacked_at_axis(y)?);
    }
    Ok(results)
}

impl Lifter<'_> {
    fn find_deps(&mut self) {
        for n in self.body.topo_order() {
            let mut mask = match self.inputs.get(&n) {
                Some(Input::Carry(c)) => 1u64 << c,
                _ => 0,
            };
            for v in self.body.operands(n) {
                mask |= self.deps.get(&v.node).copied().unwrap_or(0);
            }
            self.deps.insert(n, mask);
        }
    }

    fn dep(&self, n: NodeId) -> u64 {
        self.deps.get(&n).copied().unwrap_or(0)
    }

    /// The affine form of `v` in carry `c` (`state`: the carry's type).
    fn affine(&mut self, v: Value, c: usize, state: &TensorType) -> Result<Affine, Refusal> {
        if self.dep(v.node) == 0 {
            return Ok(Affine {
                a: Coef::Zero,
                b: Some(self.lift(v)?),
            });
        }
        if let Some(Input::Carry(k)) = self.inputs.get(&v.node) {
            debug_assert_eq!(*k, c);
            return Ok(Affine {
                a: Coef::One,
                b: None,
            });
        }
        let node = self.body.node(v.node);
        if node.outputs.len() != 1 || node.outputs[0] != *state {
            return Err(format!(
                "`{}` mixes the carry into a value of another type",
                node.op.name()
            ));
        }
        let ops = self.body.operands(v.node);
        let dtype = state.dtype;
        match &node.op {
            Op::Binary(b @ (BinaryOp::Add | BinaryOp::Sub)) => {
                let x = self.affine(ops[0], c, state)?;
                let y = self.affine(ops[1], c, state)?;
                let a = self.coef_combine(*b, x.a, y.a, dtype)?;
                let b = self.opt_combine(*b, x.b, y.b, dtype)?;
                Ok(Affine { a, b })
            }
            Op::Binary(b @ (BinaryOp::Mul | BinaryOp::Div)) => {
                let (dx, dy) = (self.dep(ops[0].node), self.dep(ops[1].node));
                let (var, k) = match (dx != 0, dy != 0) {
                    (true, false) => (ops[0], ops[1]),
                    (false, true) if *b == BinaryOp::Mul => (ops[1], ops[0]),
                    _ => return Err(format!("`{}` of two carry-dependent values", b.name())),
                };
                let inner = self.affine(var, c, state)?;
                let k = self.lift(k)?;
                let a = match inner.a {
                    Coef::Zero => Coef::Zero,
                    Coef::One if *b == BinaryOp::Mul => Coef::Of(k.clone()),
                    Coef::One => Coef::Of(self.bin(*b, self.constant(dtype, 1.0), k.clone())?),
                    Coef::Of(a) => Coef::Of(self.bin(*b, a, k.clone())?),
                };
                let b = match inner.b {
                    Some(x) => Some(self.bin(*b, x, k)?),
                    None => None,
                };
                Ok(Affine { a, b })
            }
            Op::Unary(UnaryOp::Neg) => {
                let x = self.affine(ops[0], c, state)?;
                let a = match x.a {
                    Coef::Zero => Coef::Zero,
                    Coef::One => Coef::Of(self.constant(dtype, -1.0)),
                    Coef::Of(l) => Coef::Of(self.unary_neg(l)?),
                };
                let b = match x.b {
                    Some(l) => Some(self.unary_neg(l)?),
                    None => None,
                };
                Ok(Affine { a, b })
            }
            op => Err(format!("`{}` of the carry is not linear", op.name())),
        }
    }

    fn coef_combine(&self, op: BinaryOp, x: Coef, y: Coef, dtype: DType) -> Result<Coef, Refusal> {
        let as_l = |c: Coef, me: &Self| -> Option<L> {
            match c {
                Coef::Zero => None,
                Coef::One => Some(me.constant(dtype, 1.0)),
                Coef::Of(l) => Some(l),
            }
        };
        Ok(match (op, x, y) {
            (_, x, Coef::Zero) => x,
            (BinaryOp::Add, Coef::Zero, y) => y,
            (BinaryOp::Sub, Coef::One, Coef::One) => Coef::Zero,
            (_, x, y) => match self.opt_combine(op, as_l(x, self), as_l(y, self), dtype)? {
                Some(l) => Coef::Of(l),
                None => Coef::Zero,
            },
        })
    }

    /// `x op y` for `op` in `+`/`-` where `None` is zero.
    fn opt_combine(
        &self,
        op: BinaryOp,
        x: Option<L>,
        y: Option<L>,
        _dtype: DType,
    ) -> Result<Option<L>, Refusal> {
        Ok(match (x, y) {
            (x, None) => x,
            (None, Some(y)) if op == BinaryOp::Add => Some(y),
            (None, Some(y)) => Some(self.unary_neg(y)?),
            (Some(x), Some(y)) => Some(self.bin(op, x, y)?),
        })
    }

    fn constant(&self, dtype: DType, v: f64) -> L {
        L {
            term: scalar(dtype, v),
            seq: false,
            ty: TensorType::scalar(dtype),
        }
    }

    fn bin(&self, op: BinaryOp, x: L, y: L) -> Result<L, Refusal> {
        let op = Op::Binary(op);
        let out = infer(&op, &[&x.ty, &y.ty]).map_err(|e| e.to_string())?;
        self.lift_op(&op, vec![x, y], out[0].clone())
    }

    fn unary_neg(&self, x: L) -> Result<L, Refusal> {
        let ty = x.ty.clone();
        self.lift_op(&Op::Unary(UnaryOp::Neg), vec![x], ty)
    }

    /// The `a` or `b` operand of `linear_scan`: `[T, ..]` with one dim per
    /// state dim, each the state's or 1.
    fn coef_operand(&self, c: Coef, state: &TensorType) -> Result<Term, Refusal> {
        let rs = state.rank();
        let l = match c {
            Coef::Zero => self.constant(state.dtype, 0.0),
            Coef::One => self.constant(state.dtype, 1.0),
            Coef::Of(l) => l,
        };
        let k = l.ty.rank();
        if k > rs || l.ty.dtype != state.dtype {
            return Err(format!(
                "coefficient {} does not fit the state {state}",
                l.ty
            ));
        }
        let one = Dim::constant(1);
        for (d, s) in l.ty.shape.iter().zip(&state.shape[rs - k..]) {
            if d != s && *d != one {
                return Err(format!(
                    "coefficient {} does not fit the state {state}",
                    l.ty
                ));
            }
        }
        let mut shape = vec![self.len.clone()];
        shape.extend(std::iter::repeat_n(one, rs - k));
        shape.extend(l.ty.shape.iter().cloned());
        Ok(if l.seq {
            self.pad(l, rs).term
        } else {
            Term::op(Op::Broadcast { shape }, vec![l.term])
        })
    }

    /// The lifted value of body value `v`.
    fn lift(&mut self, v: Value) -> Result<L, Refusal> {
        if let Some(l) = self.memo.get(&v) {
            return Ok(l.clone());
        }
        let nc = self.s.num_carry;
        for c in 0..nc {
            if self.body.outputs()[c].value == v {
                if let Some(l) = &self.states[c] {
                    return Ok(l.clone());
                }
            }
        }
        let ty = self.body.ty(v).clone();
        let l = match self.inputs.get(&v.node) {
            Some(Input::Carry(c)) => self.previous_states(*c)?,
            Some(Input::Seq(j)) => {
                let id = self.operands[nc + j];
                let axis = self.s.axis;
                let term = if axis == 0 {
                    Term::Class(id)
                } else {
                    let rank = ty.rank() + 1;
                    let mut perm = vec![axis];
                    perm.extend((0..rank).filter(|&i| i != axis));
                    Term::op(Op::Permute { perm }, vec![Term::Class(id)])
                };
                L {
                    term,
                    seq: true,
                    ty,
                }
            }
            Some(Input::Invariant(id)) => L {
                term: Term::Class(*id),
                seq: false,
                ty,
            },
            None => {
                if self.dep(v.node) != 0 && self.states.iter().any(Option::is_none) {
                    return Err("a carry-dependent value before the states exist".into());
                }
                let node = self.body.node(v.node);
                if node.outputs.len() != 1 {
                    return Err(format!("`{}` has several results", node.op.name()));
                }
                let kids = self
                    .body
                    .operands(v.node)
                    .into_iter()
                    .map(|k| self.lift(k))
                    .collect::<Result<Vec<_>, _>>()?;
                self.lift_op(&node.op, kids, ty)?
            }
        };
        self.memo.insert(v, l.clone());
        Ok(l)
    }

    /// The carry before each step: `h0` then the states shifted by one step
    /// (from the other end when the scan runs in reverse).
    fn previous_states(&self, c: usize) -> Result<L, Refusal> {
        let states = self.states[c]
            .clone()
            .ok_or("the carry is read before its states exist")?;
        let ty = states.ty.clone();
        let mut one_step = vec![Dim::constant(1)];
        one_step.extend(ty.shape.iter().cloned());
        let h0 = Term::op(
            Op::Reshape { shape: one_step },
            vec![Term::Class(self.operands[c])],
        );
        let last = &self.len - &Dim::constant(1);
        let (start, end) = if self.s.reverse {
            (Dim::constant(1), self.len.clone())
        } else {
            (Dim::constant(0), last)
        };
        let shifted = Term::op(
            Op::Slice {
                axis: 0,
                start,
                end,
            },
            vec![states.term],
        );
        let parts = if self.s.reverse {
            vec![shifted, h0]
        } else {
            vec![h0, shifted]
        };
        Ok(L {
            term: Term::op(Op::Concat { axis: 0 }, parts),
            seq: true,
            ty,
        })
    }

    /// A step output stacked along the scan's axis.
    fn stacked_at_axis(&self, y: L) -> Result<Term, Refusal> {
        let y = self.materialize(y);
        let axis = self.s.axis;
        if axis == 0 {
            return Ok(y.term);
        }
        let rank = y.ty.rank() + 1;
        if axis >= rank {
            return Err(format!("axis {axis} out of range for a step output"));
        }
        // Result axis i is operand axis perm[i]: time (operand axis 0) at `axis`.
        let perm: Vec<usize> = (0..rank)
            .map(|i| match i.cmp(&axis) {
                std::cmp::Ordering::Less => i + 1,
                std::cmp::Ordering::Equal => 0,
                std::cmp::Ordering::Greater => i,
            })
            .collect();
        Ok(Term::op(Op::Permute { perm }, vec![y.term]))
    }

    /// `l` with the time axis, broadcast over it when it has none.
    fn materialize(&self, l: L) -> L {
        if l.seq {
            return l;
        }
        let mut shape = vec![self.len.clone()];
        shape.extend(l.ty.shape.iter().cloned());
        L {
            term: Term::op(Op::Broadcast { shape }, vec![l.term]),
            seq: true,
            ty: l.ty,
        }
    }

    /// A sequence value padded to per-step rank `r` with 1s after the time
    /// axis, so numpy's right-aligned broadcasting keeps time leading.
    fn pad(&self, l: L, r: usize) -> L {
        let k = l.ty.rank();
        if !l.seq || k >= r {
            return l;
        }
        let mut shape = vec![self.len.clone()];
        shape.extend(std::iter::repeat_n(Dim::constant(1), r - k));
        shape.extend(l.ty.shape.iter().cloned());
        L {
            term: Term::op(Op::Reshape { shape }, vec![l.term]),
            seq: true,
            ty: l.ty,
        }
    }

    /// `op` applied to lifted operands; `out` is its per-step result type.
    fn lift_op(&self, op: &Op, kids: Vec<L>, out: TensorType) -> Result<L, Refusal> {
        if !kids.iter().any(|k| k.seq) {
            let terms = kids.into_iter().map(|k| k.term).collect();
            return Ok(L {
                term: Term::op(op.clone(), terms),
                seq: false,
                ty: out,
            });
        }
        let r = out.rank();
        let t = self.len.clone();
        let with_time = |s: &[Dim]| {
            let mut v = vec![t.clone()];
            v.extend(s.iter().cloned());
            v
        };
        let (new_op, kids): (Op, Vec<L>) = match op {
            _ if op.is_elementwise() => (
                op.clone(),
                kids.into_iter().map(|k| self.pad(k, r)).collect(),
            ),
            Op::MatMul => (
                op.clone(),
                kids.into_iter().map(|k| self.pad(k, r)).collect(),
            ),
            Op::Reduce {
                op: ro,
                axes,
                keep_dims,
            } => (
                Op::Reduce {
                    op: *ro,
                    axes: axes.iter().map(|a| a + 1).collect(),
                    keep_dims: *keep_dims,
                },
                kids,
            ),
            Op::Reshape { shape } => (
                Op::Reshape {
                    shape: with_time(shape),
                },
                kids,
            ),
            Op::Permute { perm } => {
                let mut p = vec![0];
                p.extend(perm.iter().map(|a| a + 1));
                (Op::Permute { perm: p }, kids)
            }
            Op::Broadcast { shape } => (
                Op::Broadcast {
                    shape: with_time(shape),
                },
                kids.into_iter().map(|k| self.pad(k, r)).collect(),
            ),
            Op::Slice { axis, start, end } => (
                Op::Slice {
                    axis: axis + 1,
                    start: start.clone(),
                    end: end.clone(),
                },
                kids,
            ),
            Op::Pad {
                axis,
                low,
                high,
                value,
            } => (
                Op::Pad {
                    axis: axis + 1,
                    low: low.clone(),
                    high: high.clone(),
                    value: *value,
                },
                kids,
            ),
            Op::Concat { axis } => (
                Op::Concat { axis: axis + 1 },
                kids.into_iter().map(|k| self.materialize(k)).collect(),
            ),
            Op::UpdateSlice { axis, start } => (
                Op::UpdateSlice {
                    axis: axis + 1,
                    start: start.clone(),
                },
                kids.into_iter().map(|k| self.materialize(k)).collect(),
            ),
            Op::Gather { axis } if !kids[1].seq => (Op::Gather { axis: axis + 1 }, kids),
            op => return Err(format!("cannot lift `{}` over the time axis", op.name())),
        };
        Ok(L {
            term: Term::op(new_op, kids.into_iter().map(|k| k.term).collect()),
            seq: true,
            ty: out,
        })
    }
}
