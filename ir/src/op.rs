//! The operation set.
//!
//! Logical ops are what the DSL writes; kernel-level ops ([`Op::Fused`],
//! [`Op::Attention`], [`Op::PrFlash`]) are introduced by the optimizer. Every op has reference semantics in
//! [`crate::interp`] and a type rule in [`crate::infer`].

use crate::graph::Graph;
use crate::literal::Literal;
use crate::types::{DType, Shape, TensorType};
use crate::Dim;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $var),* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),*];
            /// The op's name in the text form.
            pub fn name(self) -> &'static str {
                match self { $($name::$var => $text),* }
            }
            pub fn from_name(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$var),)* _ => None }
            }
        }
    };
}

named_enum!(
    /// Element-wise functions of one operand. Float-only except `neg`, `abs` (also
    /// integers) and `not` (bool only).
    UnaryOp {
        Neg = "neg", Abs = "abs", Exp = "exp", Log = "log", Sqrt = "sqrt",
        Rsqrt = "rsqrt", Recip = "recip", Sin = "sin", Cos = "cos", Tanh = "tanh",
        Sigmoid = "sigmoid", Silu = "silu",
        /// Exact GELU, `x·Φ(x)` with the error function.
        Gelu = "gelu",
        /// GELU's tanh approximation (GPT-2's `gelu_new`).
        GeluTanh = "gelu_tanh",
        Softplus = "softplus", Floor = "floor", Not = "not",
    }
);

named_enum!(
    /// Element-wise functions of two operands, with numpy broadcasting. Both
    /// operands have the same dtype. `and`/`or` take bools.
    BinaryOp {
        Add = "add", Sub = "sub", Mul = "mul", Div = "div", Max = "max", Min = "min",
        Pow = "pow", And = "and", Or = "or",
    }
);

named_enum!(
    /// Comparisons, with numpy broadcasting; the result is `bool`.
    CmpOp { Eq = "eq", Ne = "ne", Lt = "lt", Le = "le", Gt = "gt", Ge = "ge" }
);

named_enum!(
    /// Reductions over a set of axes.
    ReduceOp { Sum = "reduce_sum", Max = "reduce_max", Min = "reduce_min", Mean = "reduce_mean" }
);

named_enum!(
    /// How a fused kernel's body maps onto a grid of blocks.
    FusionKind {
        /// Every output element is computed independently (element-wise and
        /// index ops: broadcast, permute, slice, concat, pad, gather, iota).
        Loop = "loop",
        /// The body's roots reduce over the innermost axes; a block owns whole
        /// rows (softmax, norms, reductions with element-wise prologue/epilogue).
        Row = "row",
    }
);

/// An `f64` that compares and hashes by its bits (attributes such as a pad value).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct F64Bits(#[serde(with = "crate::serde_float")] pub f64);
impl PartialEq for F64Bits {
    fn eq(&self, o: &Self) -> bool {
        self.0.to_bits() == o.0.to_bits()
    }
}
impl Eq for F64Bits {}
impl Hash for F64Bits {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.to_bits().hash(h)
    }
}

/// `scan`: a body applied along an axis with carried state, sequentially
/// (like `jax.lax.scan`).
///
/// Operands: `num_carry` initial carries, then `num_xs` sequences, then any
/// number of loop-invariant operands. The body's inputs are the carries, one
/// slice of each sequence (the scan axis removed) and the invariants, in that
/// order; its outputs are the new carries followed by the per-step outputs.
/// The scan's results are the final carries followed by the per-step outputs
/// stacked along `axis`. `reverse` walks the sequence from its end.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScanOp {
    pub body: Arc<Graph>,
    pub num_carry: usize,
    pub num_xs: usize,
    pub axis: usize,
    pub reverse: bool,
}

/// A fused kernel: a body graph of logical ops run as one kernel. Operands map
/// to the body's inputs in order, results to its outputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FusedOp {
    pub kind: FusionKind,
    pub body: Arc<Graph>,
}

/// One operation. Ops are self-contained: their result types follow from the
/// op and its operand types alone (see [`crate::infer::infer`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// A graph input (activations, token ids, cache state), bound at run time.
    Input {
        name: String,
        ty: TensorType,
    },
    /// A named weight, bound from the model's parameters.
    Param {
        name: String,
        ty: TensorType,
    },
    Const(Literal),
    /// Element `[.., i_axis, ..] = i_axis`.
    Iota {
        ty: TensorType,
        axis: usize,
    },
    Unary(UnaryOp),
    Binary(BinaryOp),
    Compare(CmpOp),
    /// `select(cond, a, b)`: `a` where `cond`, else `b`; numpy broadcasting.
    Select,
    Cast(DType),
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keep_dims: bool,
    },
    /// Row-major reshape to `shape` (same element count).
    Reshape {
        shape: Shape,
    },
    /// Result axis `i` is operand axis `perm[i]`.
    Permute {
        perm: Vec<usize>,
    },
    /// Numpy broadcast to `shape` (operand right-aligned, dims equal or 1).
    Broadcast {
        shape: Shape,
    },
    /// Elements `start..end` along `axis`.
    Slice {
        axis: usize,
        start: Dim,
        end: Dim,
    },
    /// Operands joined along `axis`.
    Concat {
        axis: usize,
    },
    /// `low` elements of `value` before and `high` after along `axis`.
    Pad {
        axis: usize,
        low: Dim,
        high: Dim,
        value: F64Bits,
    },
    /// `gather(table, idx)`: result shape `table[..axis] ++ idx ++ table[axis+1..]`.
    Gather {
        axis: usize,
    },
    /// `[.., m, k] x [.., k, n] -> [.., m, n]`, batch dims broadcast.
    ///
    /// Both operands have one dtype, except an `f32` left operand with an
    /// `f16`/`bf16` right one (weights stored narrow): the right operand is
    /// widened to `f32` (exact) and the product is `f32`, as if it were
    /// `cast(b, f32)` — the same for [`Op::MatMulT`].
    MatMul,
    /// `[.., m, k] x [.., n, k] -> [.., m, n]`: `a @ bᵀ`, batch dims broadcast.
    /// A linear layer with its weight as stored (`[out, in]`): both operands
    /// are read along `k`, and the weight needs no transposed copy.
    MatMulT,
    /// `update_slice(base, update)`: `base` with elements `start..start+len`
    /// along `axis` replaced by `update` (`len` = update's size on `axis`;
    /// every other dim equal). How a KV cache takes new entries; when the
    /// result replaces the base (an in-place output alias) only the updated
    /// region is written.
    UpdateSlice {
        axis: usize,
        start: Dim,
    },
    Scan(ScanOp),
    Fused(FusedOp),
    /// `flash_attention` (kernel-level; see [`crate::attention`]).
    Attention(crate::attention::AttentionOp),
    /// `prflash_attention` (kernel-level, lossy; see [`crate::attention`]).
    PrFlash(crate::attention::PrFlashOp),
    /// `saq_append` (kernel-level, lossy SAQ cache; see [`crate::saq::ops`]).
    SaqAppend(crate::saq::SaqAppendOp),
    /// `saq_attention` (kernel-level, lossy SAQ cache; see [`crate::saq::ops`]).
    SaqAttention(crate::saq::SaqAttentionOp),
    /// `linear_scan` (kernel-level; see [`crate::linear_scan`]): two results,
    /// the final state and every step's state.
    LinearScan(crate::linear_scan::LinearScanOp),
}

impl Op {
    /// The op's name in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Const(_) => "const",
            Op::Iota { .. } => "iota",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Compare(c) => c.name(),
            Op::Select => "select",
            Op::Cast(_) => "cast",
            Op::Reduce { op, .. } => op.name(),
            Op::Reshape { .. } => "reshape",
            Op::Permute { .. } => "permute",
            Op::Broadcast { .. } => "broadcast",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::Pad { .. } => "pad",
            Op::Gather { .. } => "gather",
            Op::MatMul => "matmul",
            Op::MatMulT => "matmul_t",
            Op::UpdateSlice { .. } => "update_slice",
            Op::Scan(_) => "scan",
            Op::Fused(_) => "fused",
            Op::Attention(_) => "flash_attention",
            Op::PrFlash(_) => "prflash_attention",
            Op::SaqAppend(_) => "saq_append",
            Op::SaqAttention(_) => "saq_attention",
            Op::LinearScan(_) => "linear_scan",
        }
    }

    /// Element-wise ops: each result element depends only on the operand
    /// elements at the same (broadcast) index.
    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast(_)
        )
    }

    /// Ops that only move or index data (no arithmetic): each result element is
    /// one operand element (or a fill value) at a computed index.
    pub fn is_data_movement(&self) -> bool {
        matches!(
            self,
            Op::Reshape { .. }
                | Op::Permute { .. }
                | Op::Broadcast { .. }
                | Op::Slice { .. }
                | Op::Concat { .. }
                | Op::Pad { .. }
                | Op::Gather { .. }
        )
    }

    /// Leaves: ops with no operands.
    pub fn is_leaf(&self) -> bool {
        matches!(
            self,
            Op::Input { .. } | Op::Param { .. } | Op::Const(_) | Op::Iota { .. }
        )
    }

    /// Nested graphs (scan and fused bodies).
    pub fn body(&self) -> Option<&Arc<Graph>> {
        match self {
            Op::Scan(s) => Some(&s.body),
            Op::Fused(f) => Some(&f.body),
            _ => None,
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
