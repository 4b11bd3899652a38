//! Constant folding, driven by the analysis: a class whose value is known is
//! given a constant e-node, and extraction prefers it because it is cheaper.
//!
//! A splat of any shape (symbolic included) becomes `broadcast(const v)`, a
//! scalar constant that fuses into any kernel body; other small static
//! values (at most [`crate::analysis::FOLD_LIMIT`] elements) become a literal.

use super::{fit, op_nodes, scalar, splat, ty, Exactness, RuleDef, Stage, Term};
use crate::analysis::{tensor_to_literal, KEGraph};
use egg::Id;
use kiln_ir::Op;

pub(super) fn rules() -> Vec<RuleDef> {
    vec![
        RuleDef {
            name: "splat-fold",
            stage: Stage::Fold,
            summary: "a value whose elements are all v -> const v (broadcast to its shape)",
            exactness: Exactness::Exact,
            matcher: splat_fold,
        },
        RuleDef {
            name: "splat-operand",
            stage: Stage::Fold,
            summary: "an element-wise op's operand that is a splat of rank > 0 -> a rank-0 constant (broadcast after if it set the shape)",
            exactness: Exactness::Exact,
            matcher: splat_operand,
        },
        RuleDef {
            name: "const-fold",
            stage: Stage::Fold,
            summary: "a small static value computed from constants -> a literal",
            exactness: Exactness::Exact,
            matcher: const_fold,
        },
    ]
}

/// True when the class holds a rank-0 constant.
fn has_scalar_const(eg: &KEGraph, id: Id) -> bool {
    op_nodes(eg, id).any(|(op, _)| matches!(op, Op::Const(l) if l.shape.is_empty()))
}

fn splat_fold(eg: &KEGraph, id: Id) -> Vec<Term> {
    let (Some(v), Some(t)) = (splat(eg, id), ty(eg, id)) else {
        return Vec::new();
    };
    if t.rank() == 0 {
        if has_scalar_const(eg, id) {
            return Vec::new();
        }
        return vec![scalar(t.dtype, v)];
    }
    let done = op_nodes(eg, id)
        .any(|(op, kids)| matches!(op, Op::Broadcast { .. }) && has_scalar_const(eg, kids[0]));
    if done {
        return Vec::new();
    }
    vec![Term::op(
        Op::Broadcast {
            shape: t.shape.clone(),
        },
        vec![scalar(t.dtype, v)],
    )]
}

fn const_fold(eg: &KEGraph, id: Id) -> Vec<Term> {
    let data = &eg[id].data;
    let Some(value) = &data.value else {
        return Vec::new();
    };
    if data.splat.is_some() || op_nodes(eg, id).any(|(op, _)| matches!(op, Op::Const(_))) {
        return Vec::new();
    }
    vec![Term::op(Op::Const(tensor_to_literal(value)), vec![])]
}

fn splat_operand(eg: &KEGraph, id: Id) -> Vec<Term> {
    let Some(want) = ty(eg, id) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (op, kids) in op_nodes(eg, id) {
        if !op.is_elementwise() || kids.len() < 2 {
            continue;
        }
        for (i, &k) in kids.iter().enumerate() {
            let (Some(v), Some(t)) = (splat(eg, k), ty(eg, k)) else {
                continue;
            };
            if t.rank() == 0 {
                continue;
            }
            let args = kids
                .iter()
                .enumerate()
                .map(|(j, &c)| {
                    if j == i {
                        scalar(t.dtype, v)
                    } else {
                        Term::Class(c)
                    }
                })
                .collect();
            out.extend(fit(eg, Term::op(op.clone(), args), want));
        }
    }
    out
}
