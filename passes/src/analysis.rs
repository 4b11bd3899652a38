//! The e-class analysis: result types, splat values and small constant values.
//!
//! - `types`: the result type(s) of the class, from `kiln_ir::infer::infer` —
//!   the same rules the graph uses. Merging two classes with different types
//!   means a rule was unsound; it is recorded as an error (not a panic) and the
//!   pass fails with [`crate::PassError::Analysis`].
//! - `splat`: `Some(v)` when every element of the value is `v`, whatever the
//!   (possibly symbolic) shape. Rules match constants *by value* through it, so
//!   `x * 1` is found whether the one is an `f16[]` constant, a broadcast of
//!   one, or folded from other constants.
//! - `value`: the whole constant value for small static tensors
//!   (at most [`FOLD_LIMIT`] elements), computed with the reference
//!   interpreter's `eval_op` so folding agrees with it bit for bit.

use crate::lang::{is_tuple_op, Head, KNode};
use crate::provenance::{Recorder, Steps};
use egg::{Analysis, DidMerge, EGraph, Id};
use kiln_ir::interp::{eval_op, EvalOptions};
use kiln_ir::literal::LiteralData;
use kiln_ir::op::ReduceOp;
use kiln_ir::tensor::TensorData;
use kiln_ir::{Bindings, DType, Literal, Op, Tensor, TensorType};
use std::sync::Arc;

/// Constants of at most this many elements (with static shapes) are folded.
pub const FOLD_LIMIT: usize = 64;

/// The e-graph type used by every e-graph pass.
pub type KEGraph = EGraph<KNode, KAnalysis>;

/// Per-class facts.
#[derive(Debug, Clone)]
pub struct ClassData {
    /// Result types: one for a tensor class, one per result for a tuple class.
    pub types: Vec<TensorType>,
    /// The class is a tuple (a `scan` or `fused` node); use it through `get`.
    pub tuple: bool,
    /// Every element equals this value (bools as 0/1).
    pub splat: Option<f64>,
    /// The value, for small static constants.
    pub value: Option<Arc<Tensor>>,
    /// History of the class's e-nodes that have one (see [`crate::provenance`]).
    pub prov: Vec<(KNode, Steps)>,
}

impl ClassData {
    /// The type of a tensor class (`None` for a tuple class or a broken one).
    pub fn ty(&self) -> Option<&TensorType> {
        if self.tuple {
            None
        } else {
            self.types.first()
        }
    }
}

/// The analysis; it collects inconsistencies instead of panicking.
#[derive(Debug, Default, Clone)]
pub struct KAnalysis {
    /// Problems found while making or merging class data (each one is a bug in a rule).
    pub errors: Vec<String>,
    /// The pass recording provenance (see [`crate::provenance`]).
    pub recorder: Recorder,
}

/// Equal as numbers: `0 == -0` (rules may flip a zero's sign, see
/// [`crate::rules::Exactness::NoSignedZeros`]) and every NaN equals every NaN.
fn same_f64(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn same_tensor(a: &Tensor, b: &Tensor) -> bool {
    a.shape == b.shape
        && a.dtype() == b.dtype()
        && a.to_f64_vec()
            .into_iter()
            .zip(b.to_f64_vec())
            .all(|(x, y)| same_f64(x, y))
}

impl Analysis<KNode> for KAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut KEGraph, enode: &KNode, _id: Id) -> ClassData {
        match make_data(egraph, enode) {
            Ok(d) => d,
            Err(msg) => {
                egraph.analysis.errors.push(msg);
                ClassData {
                    types: Vec::new(),
                    tuple: false,
                    splat: None,
                    value: None,
                    prov: Vec::new(),
                }
            }
        }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        if a.types != b.types || a.tuple != b.tuple {
            self.errors.push(format!(
                "merged classes of different types: {:?} and {:?}",
                a.types, b.types
            ));
            return DidMerge(false, false);
        }
        // Histories concatenate; they never change what parents compute.
        a.prov.extend(b.prov);
        let mut changed = DidMerge(false, false);
        match (a.splat, b.splat) {
            (None, Some(v)) => {
                a.splat = Some(v);
                changed.0 = true;
            }
            (Some(_), None) => changed.1 = true,
            (Some(x), Some(y)) if !same_f64(x, y) => self.errors.push(format!(
                "merged classes with different constant values {x} and {y}"
            )),
            _ => {}
        }
        match (&a.value, b.value) {
            (None, Some(v)) => {
                a.value = Some(v);
                changed.0 = true;
            }
            (Some(_), None) => changed.1 = true,
            (Some(x), Some(y)) if !same_tensor(x, &y) => self.errors.push(format!(
                "merged classes with different constant tensors {x:?} and {y:?}"
            )),
            _ => {}
        }
        changed
    }
}

fn make_data(egraph: &KEGraph, enode: &KNode) -> Result<ClassData, String> {
    let op = match &enode.head {
        Head::Get(i) => {
            let child = &egraph[enode.children[0]].data;
            let ty = match (child.tuple, child.types.get(*i as usize)) {
                (true, Some(t)) => t.clone(),
                _ => {
                    return Err(format!(
                        "`get {i}` of a class that is not a tuple with result {i}"
                    ))
                }
            };
            return Ok(ClassData {
                types: vec![ty],
                tuple: false,
                splat: None,
                value: None,
                prov: Vec::new(),
            });
        }
        Head::Op(k) => k.op(),
    };
    let kids: Vec<&ClassData> = enode.children.iter().map(|&c| &egraph[c].data).collect();
    let mut tys = Vec::with_capacity(kids.len());
    for k in &kids {
        match k.ty() {
            Some(t) => tys.push(t),
            None => return Err(format!("`{}` uses a tuple or untyped class", op.name())),
        }
    }
    let types = kiln_ir::infer::infer(op, &tys).map_err(|e| e.to_string())?;
    if is_tuple_op(op) {
        return Ok(ClassData {
            types,
            tuple: true,
            splat: None,
            value: None,
            prov: Vec::new(),
        });
    }
    let ty = &types[0];
    // Every value is vacuously the splat of an empty tensor: claim none.
    let empty = ty.shape.iter().any(|d| d.as_const() == Some(0));
    let splat = if empty { None } else { splat_of(op, &kids, ty) };
    let value = value_of(op, &kids, ty, splat);
    Ok(ClassData {
        types,
        tuple: false,
        splat,
        value,
        prov: Vec::new(),
    })
}

/// The splat value of `op` applied to classes `kids`, when it is one.
fn splat_of(op: &Op, kids: &[&ClassData], ty: &TensorType) -> Option<f64> {
    match op {
        Op::Const(l) => l.splat_value(),
        Op::Reshape { .. } | Op::Permute { .. } | Op::Broadcast { .. } | Op::Slice { .. } => {
            kids[0].splat
        }
        Op::Concat { .. } => {
            let v = kids[0].splat?;
            kids.iter()
                .all(|k| k.splat.is_some_and(|w| v.to_bits() == w.to_bits()))
                .then_some(v)
        }
        Op::Pad { value, .. } => kids[0]
            .splat
            .filter(|&v| v.to_bits() == value.0.to_bits() || (v.is_nan() && value.0.is_nan())),
        Op::Reduce {
            op: ReduceOp::Max | ReduceOp::Min,
            axes,
            ..
        } => {
            let operand = kids[0].ty()?;
            // An empty reduction gives the identity, not the splat.
            let nonempty = axes
                .iter()
                .all(|&a| operand.shape[a].as_const().is_some_and(|n| n > 0));
            kids[0].splat.filter(|_| nonempty)
        }
        _ if op.is_elementwise() => {
            // Evaluate on rank-0 tensors with the interpreter.
            let mut scalars = Vec::with_capacity(kids.len());
            for k in kids {
                let v = k.splat?;
                scalars.push(scalar_tensor(k.ty()?.dtype, v));
            }
            let out = eval_const(op, &scalars)?;
            let t = out.first()?;
            (t.numel() == 1 && t.dtype() == ty.dtype).then(|| t.to_f64_vec()[0])
        }
        _ => None,
    }
}

/// The value of `op` applied to classes `kids`, for small static results.
fn value_of(
    op: &Op,
    kids: &[&ClassData],
    ty: &TensorType,
    splat: Option<f64>,
) -> Option<Arc<Tensor>> {
    if !ty.is_static() {
        return None;
    }
    let shape = ty.eval_shape(&Bindings::new()).ok()?;
    if shape.iter().product::<usize>() > FOLD_LIMIT {
        return None;
    }
    if let Some(v) = splat {
        return Some(Arc::new(filled_tensor(ty.dtype, shape, v)));
    }
    match op {
        Op::Input { .. } | Op::Param { .. } | Op::Scan(_) | Op::Fused(_) => None,
        Op::Const(l) => Some(Arc::new(literal_to_tensor(l))),
        _ => {
            let args: Option<Vec<Tensor>> =
                kids.iter().map(|k| k.value.as_deref().cloned()).collect();
            let out = eval_const(op, &args?)?;
            let t = out.into_iter().next()?;
            (t.shape == shape && t.dtype() == ty.dtype).then(|| Arc::new(t))
        }
    }
}

/// Runs the reference interpreter on constant operands; `None` when it
/// refuses (an out-of-range gather index, say): such a node is not folded.
pub fn eval_const(op: &Op, operands: &[Tensor]) -> Option<Vec<Tensor>> {
    eval_op(op, operands, &Bindings::new(), &EvalOptions::default()).ok()
}

/// A rank-0 tensor of `dtype` holding `v`.
pub fn scalar_tensor(dtype: DType, v: f64) -> Tensor {
    filled_tensor(dtype, Vec::new(), v)
}

/// A tensor of `dtype` and `shape` whose elements are all `v`.
pub fn filled_tensor(dtype: DType, shape: Vec<usize>, v: f64) -> Tensor {
    literal_to_tensor(&Literal::filled(dtype, shape, v))
}

/// The tensor a literal stands for.
pub fn literal_to_tensor(l: &Literal) -> Tensor {
    let shape = l.shape.clone();
    let data = match (&l.data, l.dtype) {
        (LiteralData::Float(v), DType::F32) => {
            TensorData::F32(v.iter().map(|&x| x as f32).collect())
        }
        (LiteralData::Float(v), DType::F16) => {
            TensorData::F16(v.iter().map(|&x| half::f16::from_f64(x)).collect())
        }
        (LiteralData::Float(v), _) => {
            TensorData::BF16(v.iter().map(|&x| half::bf16::from_f64(x)).collect())
        }
        (LiteralData::Int(v), DType::I32) => TensorData::I32(v.iter().map(|&x| x as i32).collect()),
        (LiteralData::Int(v), DType::U8) => TensorData::U8(v.iter().map(|&x| x as u8).collect()),
        (LiteralData::Int(v), DType::I8) => TensorData::I8(v.iter().map(|&x| x as i8).collect()),
        (LiteralData::Int(v), _) => TensorData::I64(v.clone()),
        (LiteralData::Bool(v), _) => TensorData::Bool(v.clone()),
    };
    Tensor { shape, data }
}

/// The literal holding a tensor's values (f64 storage is rounded to f32, its IR dtype).
pub fn tensor_to_literal(t: &Tensor) -> Literal {
    let dtype = t.dtype();
    let shape = t.shape.clone();
    match &t.data {
        TensorData::Bool(v) => Literal {
            dtype,
            shape,
            data: LiteralData::Bool(v.clone()),
        },
        _ if dtype.is_float() => Literal::floats(dtype, shape, &t.to_f64_vec()),
        _ => Literal::ints(dtype, shape, &t.to_i64_vec().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::to_egraph;
    use kiln_ir::{shape, BinaryOp, Graph, UnaryOp};

    fn data_of(g: &Graph) -> ClassData {
        let t = to_egraph(g);
        let root = t.roots()[0];
        t.egraph[root].data.clone()
    }

    #[test]
    fn splats_propagate_through_data_movement_and_arithmetic() {
        let mut g = Graph::new("s");
        let c = g
            .add(Op::Const(Literal::scalar(DType::F16, 1.5)), &[])
            .unwrap();
        let b = g
            .add(
                Op::Broadcast {
                    shape: shape!["seq", 4],
                },
                &[c],
            )
            .unwrap();
        let p = g.add(Op::Permute { perm: vec![1, 0] }, &[b]).unwrap();
        let two = g
            .add(Op::Const(Literal::filled(DType::F16, vec![4, 1], 2.0)), &[])
            .unwrap();
        let m = g.add(Op::Binary(BinaryOp::Mul), &[p, two]).unwrap();
        let n = g.add(Op::Unary(UnaryOp::Neg), &[m]).unwrap();
        g.add_output("y", n).unwrap();
        let d = data_of(&g);
        assert_eq!(d.splat, Some(-3.0));
        assert!(d.value.is_none(), "a symbolic shape has no static value");
        assert_eq!(d.ty().unwrap().to_string(), "f16[4,seq]");
    }

    #[test]
    fn small_static_values_are_computed_by_the_interpreter() {
        let mut g = Graph::new("v");
        let i = g
            .add(
                Op::Iota {
                    ty: TensorType::new(DType::F32, shape![2, 3]),
                    axis: 1,
                },
                &[],
            )
            .unwrap();
        let e = g.add(Op::Unary(UnaryOp::Exp), &[i]).unwrap();
        g.add_output("y", e).unwrap();
        let d = data_of(&g);
        assert_eq!(d.splat, None);
        let v = d.value.expect("a static value");
        let want: Vec<f64> = [0.0f32, 1.0, 2.0, 0.0, 1.0, 2.0]
            .iter()
            .map(|x| x.exp() as f64)
            .collect();
        let got = v.to_f64_vec();
        assert!(
            got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{got:?}"
        );
    }

    #[test]
    fn empty_tensors_claim_no_splat() {
        let mut g = Graph::new("e");
        let c = g
            .add(Op::Const(Literal::scalar(DType::F32, 1.0)), &[])
            .unwrap();
        let b = g
            .add(
                Op::Broadcast {
                    shape: shape![0, 3],
                },
                &[c],
            )
            .unwrap();
        g.add_output("y", b).unwrap();
        assert_eq!(data_of(&g).splat, None);
    }

    #[test]
    fn inconsistent_merges_are_recorded_not_panics() {
        let mut g = Graph::new("m");
        let a = g
            .add(Op::Const(Literal::scalar(DType::F32, 1.0)), &[])
            .unwrap();
        let b = g
            .add(Op::Const(Literal::scalar(DType::F32, 2.0)), &[])
            .unwrap();
        let c = g
            .add(Op::Const(Literal::scalar(DType::I32, 2.0)), &[])
            .unwrap();
        for (i, v) in [a, b, c].into_iter().enumerate() {
            g.add_output(format!("y{i}"), v).unwrap();
        }
        let mut t = to_egraph(&g);
        let r = t.roots();
        t.egraph.union(r[0], r[1]);
        t.egraph.union(r[0], r[2]);
        t.egraph.rebuild();
        let errors = &t.egraph.analysis.errors;
        assert!(
            errors
                .iter()
                .any(|e| e.contains("different constant values")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("different types")),
            "{errors:?}"
        );
    }
}
