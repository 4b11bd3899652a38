//! [`Var`]: a value in the graph being built, with model-like methods and
//! operator overloading. Composite operations (softmax, norms, …) are written
//! as compositions of logical ops; the optimizer recognizes them later.

use super::builder::ModelBuilder;
use crate::graph::Value;
use crate::infer::normalize_axis;
use crate::op::{BinaryOp, CmpOp, Op, ReduceOp, UnaryOp};
use crate::types::{DType, Shape, TensorType};
use crate::Dim;
use std::panic::Location;

/// A value in a graph under construction.
#[derive(Clone)]
pub struct Var {
    pub(crate) builder: ModelBuilder,
    pub(crate) value: Value,
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var({:?}: {})", self.value, self.ty())
    }
}

type Caller = &'static Location<'static>;

impl Var {
    /// The graph value this variable stands for.
    pub fn value(&self) -> Value {
        self.value
    }
    pub fn ty(&self) -> TensorType {
        self.builder.state.borrow().graph.ty(self.value).clone()
    }
    pub fn dtype(&self) -> DType {
        self.ty().dtype
    }
    pub fn shape(&self) -> Shape {
        self.ty().shape
    }
    pub fn rank(&self) -> usize {
        self.ty().rank()
    }
    /// The builder this value belongs to.
    pub fn builder(&self) -> &ModelBuilder {
        &self.builder
    }

    fn op1(&self, op: Op, caller: Caller) -> Var {
        self.builder.add(op, &[self.value], caller)
    }
    fn op2(&self, op: Op, other: &Var, caller: Caller) -> Var {
        self.builder.add(op, &[self.value, other.value], caller)
    }
    fn unary(&self, u: UnaryOp, caller: Caller) -> Var {
        self.op1(Op::Unary(u), caller)
    }
    pub(crate) fn binary_at(&self, b: BinaryOp, other: &Var, caller: Caller) -> Var {
        self.op2(Op::Binary(b), other, caller)
    }
    /// A scalar constant of this value's dtype.
    fn scalar_like(&self, v: f64, caller: Caller) -> Var {
        self.builder.add(
            Op::Const(crate::Literal::scalar(self.dtype(), v)),
            &[],
            caller,
        )
    }
    pub(crate) fn add_scalar_at(&self, v: f64, caller: Caller) -> Var {
        let c = self.scalar_like(v, caller);
        self.binary_at(BinaryOp::Add, &c, caller)
    }
    fn binary_scalar(&self, b: BinaryOp, v: f64, caller: Caller) -> Var {
        let c = self.scalar_like(v, caller);
        self.binary_at(b, &c, caller)
    }
    fn axis(&self, axis: i64, caller: Caller) -> usize {
        match normalize_axis(axis, self.rank()) {
            Some(a) => a,
            None => {
                self.builder.fail(
                    format!("axis {axis} out of range for {}", self.ty()),
                    caller,
                );
                0
            }
        }
    }
    fn axes(&self, axes: &[i64], caller: Caller) -> Vec<usize> {
        axes.iter().map(|&a| self.axis(a, caller)).collect()
    }
}

macro_rules! unary_methods {
    ($($(#[$m:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$m])*
        #[track_caller]
        pub fn $name(&self) -> Var { self.unary(UnaryOp::$op, Location::caller()) }
    )*};
}

macro_rules! binary_methods {
    ($($(#[$m:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$m])*
        #[track_caller]
        pub fn $name(&self, other: &Var) -> Var { self.binary_at(BinaryOp::$op, other, Location::caller()) }
    )*};
}

macro_rules! compare_methods {
    ($($name:ident => $op:ident),* $(,)?) => {$(
        #[doc = concat!("Element-wise `", stringify!($name), "` comparison (bool result).")]
        #[track_caller]
        pub fn $name(&self, other: &Var) -> Var { self.op2(Op::Compare(CmpOp::$op), other, Location::caller()) }
    )*};
}

impl Var {
    unary_methods!(
        exp => Exp, log => Log, sqrt => Sqrt, rsqrt => Rsqrt, recip => Recip,
        sin => Sin, cos => Cos, tanh => Tanh, sigmoid => Sigmoid,
        /// `x·sigmoid(x)`.
        silu => Silu,
        /// Exact GELU (erf).
        gelu => Gelu,
        /// GELU, tanh approximation.
        gelu_tanh => GeluTanh,
        softplus => Softplus, abs => Abs, floor => Floor,
        /// Logical not of a bool tensor.
        not => Not,
    );
    binary_methods!(
        /// Element-wise maximum (NaN propagates).
        maximum => Max,
        /// Element-wise minimum (NaN propagates).
        minimum => Min,
        pow => Pow,
        /// Logical and of bool tensors.
        and => And,
        /// Logical or of bool tensors.
        or => Or,
    );
    compare_methods!(eq => Eq, ne => Ne, lt => Lt, le => Le, gt => Gt, ge => Ge);

    /// `x^p` for a constant exponent.
    #[track_caller]
    pub fn powf(&self, p: f64) -> Var {
        self.binary_scalar(BinaryOp::Pow, p, Location::caller())
    }

    /// `a` where `self` (bool) holds, else `b`.
    #[track_caller]
    pub fn select(&self, a: &Var, b: &Var) -> Var {
        self.builder.add(
            Op::Select,
            &[self.value, a.value, b.value],
            Location::caller(),
        )
    }

    /// `a` where `self` holds, else the constant `b` (e.g. a mask fill of `-inf`).
    #[track_caller]
    pub fn select_scalar(&self, a: &Var, b: f64) -> Var {
        let caller = Location::caller();
        let c = a.scalar_like(b, caller);
        self.builder
            .add(Op::Select, &[self.value, a.value, c.value], caller)
    }

    #[track_caller]
    pub fn cast(&self, to: DType) -> Var {
        self.op1(Op::Cast(to), Location::caller())
    }

    /// Batched matrix product `[.., m, k] x [.., k, n]`.
    #[track_caller]
    pub fn matmul(&self, other: &Var) -> Var {
        self.op2(Op::MatMul, other, Location::caller())
    }

    fn reduce(&self, op: ReduceOp, axes: &[i64], keep_dims: bool, caller: Caller) -> Var {
        let axes = self.axes(axes, caller);
        self.op1(
            Op::Reduce {
                op,
                axes,
                keep_dims,
            },
            caller,
        )
    }

    #[track_caller]
    pub fn sum(&self, axes: &[i64], keep_dims: bool) -> Var {
        self.reduce(ReduceOp::Sum, axes, keep_dims, Location::caller())
    }
    #[track_caller]
    pub fn mean(&self, axes: &[i64], keep_dims: bool) -> Var {
        self.reduce(ReduceOp::Mean, axes, keep_dims, Location::caller())
    }
    #[track_caller]
    pub fn max(&self, axes: &[i64], keep_dims: bool) -> Var {
        self.reduce(ReduceOp::Max, axes, keep_dims, Location::caller())
    }
    #[track_caller]
    pub fn min(&self, axes: &[i64], keep_dims: bool) -> Var {
        self.reduce(ReduceOp::Min, axes, keep_dims, Location::caller())
    }

    /// Softmax along `axis`, written out: `exp(x - max) / sum(exp(x - max))`.
    #[track_caller]
    pub fn softmax(&self, axis: i64) -> Var {
        let caller = Location::caller();
        let m = self.reduce(ReduceOp::Max, &[axis], true, caller);
        let e = self
            .binary_at(BinaryOp::Sub, &m, caller)
            .unary(UnaryOp::Exp, caller);
        let s = e.reduce(ReduceOp::Sum, &[axis], true, caller);
        e.binary_at(BinaryOp::Div, &s, caller)
    }

    /// RMS norm over the last axis: `x · rsqrt(mean(x²) + eps) · gain`.
    #[track_caller]
    pub fn rms_norm(&self, gain: &Var, eps: f64) -> Var {
        let caller = Location::caller();
        let sq = self.binary_at(BinaryOp::Mul, self, caller);
        let ms = sq.reduce(ReduceOp::Mean, &[-1], true, caller);
        let inv = ms
            .binary_scalar(BinaryOp::Add, eps, caller)
            .unary(UnaryOp::Rsqrt, caller);
        self.binary_at(BinaryOp::Mul, &inv, caller)
            .binary_at(BinaryOp::Mul, gain, caller)
    }

    /// Layer norm over the last axis with gain and bias.
    #[track_caller]
    pub fn layer_norm(&self, gain: &Var, bias: &Var, eps: f64) -> Var {
        let caller = Location::caller();
        let mu = self.reduce(ReduceOp::Mean, &[-1], true, caller);
        let d = self.binary_at(BinaryOp::Sub, &mu, caller);
        let var =
            d.binary_at(BinaryOp::Mul, &d, caller)
                .reduce(ReduceOp::Mean, &[-1], true, caller);
        let inv = var
            .binary_scalar(BinaryOp::Add, eps, caller)
            .unary(UnaryOp::Rsqrt, caller);
        d.binary_at(BinaryOp::Mul, &inv, caller)
            .binary_at(BinaryOp::Mul, gain, caller)
            .binary_at(BinaryOp::Add, bias, caller)
    }

    /// Row-major reshape.
    #[track_caller]
    pub fn reshape(&self, shape: Shape) -> Var {
        self.op1(Op::Reshape { shape }, Location::caller())
    }

    /// Result axis `i` is axis `perm[i]` of `self`.
    #[track_caller]
    pub fn permute(&self, perm: &[usize]) -> Var {
        self.op1(
            Op::Permute {
                perm: perm.to_vec(),
            },
            Location::caller(),
        )
    }

    /// Swaps two axes (negative axes count from the end).
    #[track_caller]
    pub fn transpose(&self, a: i64, b: i64) -> Var {
        let caller = Location::caller();
        let (a, b) = (self.axis(a, caller), self.axis(b, caller));
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.op1(Op::Permute { perm }, caller)
    }

    #[track_caller]
    pub fn broadcast_to(&self, shape: Shape) -> Var {
        self.op1(Op::Broadcast { shape }, Location::caller())
    }

    pub(crate) fn slice_at(&self, axis: usize, start: Dim, end: Dim, caller: Caller) -> Var {
        self.op1(Op::Slice { axis, start, end }, caller)
    }

    /// Elements `start..end` along `axis`.
    #[track_caller]
    pub fn slice(&self, axis: i64, start: impl Into<Dim>, end: impl Into<Dim>) -> Var {
        let caller = Location::caller();
        let axis = self.axis(axis, caller);
        self.slice_at(axis, start.into(), end.into(), caller)
    }

    /// Joins `self` and `others` along `axis`.
    #[track_caller]
    pub fn concat(&self, others: &[&Var], axis: i64) -> Var {
        let caller = Location::caller();
        let axis = self.axis(axis, caller);
        let operands: Vec<Value> = std::iter::once(self.value)
            .chain(others.iter().map(|v| v.value))
            .collect();
        self.builder.add(Op::Concat { axis }, &operands, caller)
    }

    /// Pads `low` before and `high` after along `axis` with `value`.
    #[track_caller]
    pub fn pad(&self, axis: i64, low: impl Into<Dim>, high: impl Into<Dim>, value: f64) -> Var {
        let caller = Location::caller();
        let axis = self.axis(axis, caller);
        self.op1(
            Op::Pad {
                axis,
                low: low.into(),
                high: high.into(),
                value: crate::op::F64Bits(value),
            },
            caller,
        )
    }

    /// Rows of `self` picked by `indices` along `axis` (an embedding lookup is
    /// `table.gather(&ids, 0)`).
    #[track_caller]
    pub fn gather(&self, indices: &Var, axis: i64) -> Var {
        let caller = Location::caller();
        let axis = self.axis(axis, caller);
        self.op2(Op::Gather { axis }, indices, caller)
    }

    /// `self` with elements `start..start+len` along `axis` replaced by
    /// `update` (`len` = its size on `axis`): how a KV cache takes new rows.
    #[track_caller]
    pub fn update_slice(&self, update: &Var, axis: i64, start: impl Into<Dim>) -> Var {
        let caller = Location::caller();
        let axis = self.axis(axis, caller);
        let start = start.into();
        self.op2(Op::UpdateSlice { axis, start }, update, caller)
    }

    /// `flash_attention` with `self` as the queries (see [`crate::attention`]);
    /// `bias`, when given, must agree with `op.bias`. Models normally write
    /// attention out and let the optimizer recognize it; this is for kernels
    /// the model wants explicitly (and for tests).
    #[track_caller]
    pub fn flash_attention(
        &self,
        k: &Var,
        v: &Var,
        bias: Option<&Var>,
        op: crate::attention::AttentionOp,
    ) -> Var {
        let mut operands = vec![self.value, k.value, v.value];
        operands.extend(bias.map(|b| b.value));
        self.builder
            .add(Op::Attention(op), &operands, Location::caller())
    }

    /// `prflash_attention` with `self` as the queries (see [`crate::attention`]).
    #[track_caller]
    pub fn prflash_attention(&self, k: &Var, v: &Var, op: crate::attention::PrFlashOp) -> Var {
        self.builder.add(
            Op::PrFlash(op),
            &[self.value, k.value, v.value],
            Location::caller(),
        )
    }
}

macro_rules! operator {
    ($tr:ident $f:ident $op:ident) => {
        impl std::ops::$tr<&Var> for &Var {
            type Output = Var;
            #[track_caller]
            fn $f(self, rhs: &Var) -> Var {
                self.binary_at(BinaryOp::$op, rhs, Location::caller())
            }
        }
        impl std::ops::$tr<Var> for Var {
            type Output = Var;
            #[track_caller]
            fn $f(self, rhs: Var) -> Var {
                self.binary_at(BinaryOp::$op, &rhs, Location::caller())
            }
        }
        impl std::ops::$tr<&Var> for Var {
            type Output = Var;
            #[track_caller]
            fn $f(self, rhs: &Var) -> Var {
                self.binary_at(BinaryOp::$op, rhs, Location::caller())
            }
        }
        impl std::ops::$tr<Var> for &Var {
            type Output = Var;
            #[track_caller]
            fn $f(self, rhs: Var) -> Var {
                self.binary_at(BinaryOp::$op, &rhs, Location::caller())
            }
        }
        impl std::ops::$tr<f64> for &Var {
            type Output = Var;
            #[track_caller]
            fn $f(self, rhs: f64) -> Var {
                self.binary_scalar(BinaryOp::$op, rhs, Location::caller())
            }
        }
        impl std::ops::$tr<f64> for Var {
            type Output = Var;
            #[track_caller]
            fn $f(self, rhs: f64) -> Var {
                self.binary_scalar(BinaryOp::$op, rhs, Location::caller())
            }
        }
    };
}
operator!(Add add Add);
operator!(Sub sub Sub);
operator!(Mul mul Mul);
operator!(Div div Div);

impl std::ops::Neg for &Var {
    type Output = Var;
    #[track_caller]
    fn neg(self) -> Var {
        self.unary(UnaryOp::Neg, Location::caller())
    }
}
impl std::ops::Neg for Var {
    type Output = Var;
    #[track_caller]
    fn neg(self) -> Var {
        self.unary(UnaryOp::Neg, Location::caller())
    }
}
