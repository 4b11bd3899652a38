//! The e-graph language: Kiln ops as egg e-nodes.
//!
//! An e-node is a [`Head`] plus child e-class ids. The head is either a whole
//! [`kiln_ir::Op`] — every attribute, and for `scan`/`fused` the nested body,
//! is part of the op, so two e-nodes are equal exactly when their ops and
//! children are — or a projection `(get i)`.
//!
//! Multi-result ops (`scan`, `fused`) live in *tuple* e-classes; consumers
//! never use a tuple class directly but through `(get i tuple)` e-nodes, one
//! per result. Graph inputs, parameters, constants and `iota` are leaves.

use egg::{Id, Language};
use kiln_ir::Op;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// An op as an e-node key: the op behind an `Arc` (cheap to clone) with its
/// hash computed once (fused bodies are whole graphs).
#[derive(Clone)]
pub struct OpKey {
    op: Arc<Op>,
    hash: u64,
}

impl OpKey {
    pub fn new(op: Op) -> OpKey {
        // `DefaultHasher::new()` has fixed keys: the hash, and so the e-node
        // order, is the same in every run.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        op.hash(&mut h);
        OpKey {
            op: Arc::new(op),
            hash: h.finish(),
        }
    }

    pub fn op(&self) -> &Op {
        &self.op
    }
}

impl PartialEq for OpKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (Arc::ptr_eq(&self.op, &other.op) || self.op == other.op)
    }
}
impl Eq for OpKey {}

impl Hash for OpKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash)
    }
}

impl Ord for OpKey {
    /// By hash, then (on a collision between different ops) by the debug
    /// text, which is deterministic and consistent with `Eq`.
    fn cmp(&self, other: &Self) -> Ordering {
        self.hash.cmp(&other.hash).then_with(|| {
            if self == other {
                Ordering::Equal
            } else {
                format!("{:?}", self.op).cmp(&format!("{:?}", other.op))
            }
        })
    }
}
impl PartialOrd for OpKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for OpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", describe(&self.op))
    }
}

/// What an e-node computes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Head {
    /// The op applied to the children (its operands, in slot order).
    Op(OpKey),
    /// Result `i` of the single child, a tuple class.
    Get(u32),
}

/// An e-node of the Kiln language.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KNode {
    pub head: Head,
    pub children: Vec<Id>,
}

impl KNode {
    pub fn op(op: Op, children: Vec<Id>) -> KNode {
        KNode {
            head: Head::Op(OpKey::new(op)),
            children,
        }
    }

    pub fn get(index: u32, tuple: Id) -> KNode {
        KNode {
            head: Head::Get(index),
            children: vec![tuple],
        }
    }

    /// The op, when the head is one.
    pub fn as_op(&self) -> Option<&Op> {
        match &self.head {
            Head::Op(k) => Some(k.op()),
            Head::Get(_) => None,
        }
    }

    /// True for ops whose e-class is a tuple of results.
    pub fn is_tuple(&self) -> bool {
        self.as_op().is_some_and(is_tuple_op)
    }
}

/// Multi-result ops are represented as tuples (always, even with one result,
/// so that the representation does not depend on a count): ops with a body,
/// and `linear_scan` (final state, all states).
pub fn is_tuple_op(op: &Op) -> bool {
    op.body().is_some() || matches!(op, Op::LinearScan(_))
}

impl Language for KNode {
    type Discriminant = Head;

    fn discriminant(&self) -> Self::Discriminant {
        self.head.clone()
    }

    fn matches(&self, other: &Self) -> bool {
        self.head == other.head && self.children.len() == other.children.len()
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

/// A one-line description of an op with its attributes (for e-graph dumps
/// and explanations; not the text form, which `kiln_ir::text` owns).
pub fn describe(op: &Op) -> String {
    match op {
        Op::Input { name, ty } => format!("input %{name}:{ty}"),
        Op::Param { name, ty } => format!("param \"{name}\":{ty}"),
        Op::Const(l) => match l.splat_value() {
            Some(v) => format!("const {v}:{}", l.ty()),
            None => format!("const [{} elems]:{}", l.numel(), l.ty()),
        },
        Op::Iota { ty, axis } => format!("iota{{axis={axis}}}:{ty}"),
        Op::Cast(d) => format!("cast{{to={d}}}"),
        Op::Reduce {
            op,
            axes,
            keep_dims,
        } => format!("{}{{axes={axes:?},keep_dims={keep_dims}}}", op.name()),
        Op::Reshape { shape } | Op::Broadcast { shape } => {
            format!("{}{{shape={shape:?}}}", op.name())
        }
        Op::Permute { perm } => format!("permute{{perm={perm:?}}}"),
        Op::Slice { axis, start, end } => format!("slice{{axis={axis},{start}..{end}}}"),
        Op::Concat { axis } | Op::Gather { axis } => format!("{}{{axis={axis}}}", op.name()),
        Op::UpdateSlice { axis, start } => format!("update_slice{{axis={axis},start={start}}}"),
        Op::Pad {
            axis,
            low,
            high,
            value,
        } => format!("pad{{axis={axis},low={low},high={high},value={}}}", value.0),
        Op::Scan(s) => format!(
            "scan{{num_carry={},num_xs={},axis={},reverse={}}}",
            s.num_carry, s.num_xs, s.axis, s.reverse
        ),
        Op::Fused(f) => format!("fused{{kind={}}}", f.kind.name()),
        _ => op.name().to_string(),
    }
}

impl fmt::Display for KNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.head {
            Head::Op(k) => write!(f, "{}", describe(k.op())),
            Head::Get(i) => write!(f, "get{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{BinaryOp, DType, Literal};

    #[test]
    fn equal_ops_are_equal_keys_and_order_is_total() {
        let a = OpKey::new(Op::Binary(BinaryOp::Add));
        let b = OpKey::new(Op::Binary(BinaryOp::Add));
        let c = OpKey::new(Op::Const(Literal::scalar(DType::F32, 1.0)));
        assert_eq!(a, b);
        assert_eq!(a.cmp(&b), Ordering::Equal);
        assert_ne!(a, c);
        assert_eq!(a.cmp(&c), c.cmp(&a).reverse());
        assert_ne!(a.cmp(&c), Ordering::Equal);
    }
}
