//! Data-movement folding: permute/reshape/broadcast/slice chains collapse,
//! identities disappear, and element-wise ops move before broadcasts so they
//! run on fewer elements. Every rule here is exact.

use super::{op_nodes, ty, Exactness, RuleDef, Stage, Term};
use crate::analysis::KEGraph;
use egg::Id;
use kiln_ir::dim::product;
use kiln_ir::{Dim, Op};

pub(super) fn rules() -> Vec<RuleDef> {
    let r = |name, summary, matcher| RuleDef {
        name,
        stage: Stage::Shape,
        summary,
        exactness: Exactness::Exact,
        matcher,
    };
    vec![
        r("permute-permute", "permute(permute(x, p), q) -> permute(x, p∘q)", permute_permute),
        r("permute-identity", "permute(x, [0,1,..]) -> x", permute_identity),
        r(
            "permute-to-reshape",
            "a permute that only moves size-1 axes -> reshape (same row-major order)",
            permute_to_reshape,
        ),
        r("reshape-reshape", "reshape(reshape(x, s), t) -> reshape(x, t)", reshape_reshape),
        r("reshape-identity", "reshape(x, shape(x)) -> x", reshape_identity),
        r("broadcast-broadcast", "broadcast(broadcast(x, s), t) -> broadcast(x, t)", broadcast_broadcast),
        r("broadcast-identity", "broadcast(x, shape(x)) -> x", broadcast_identity),
        r(
            "broadcast-absorbs-reshape",
            "broadcast(reshape(x, [1,..,1]++shape(x)), t) -> broadcast(x, t) (leading unit axes are implicit)",
            broadcast_absorbs_reshape,
        ),
        r("slice-identity", "slice(x, a, 0, dim(x, a)) -> x", slice_identity),
        r("slice-slice", "slice(slice(x, a, s1, e1), a, s2, e2) -> slice(x, a, s1+s2, s1+e2)", slice_slice),
        r("pad-zero", "pad(x, low=0, high=0) -> x", pad_zero),
        r("concat-one", "concat(x) -> x", concat_one),
        r(
            "unary-before-broadcast",
            "u(broadcast(x, s)) -> broadcast(u(x), s) for unary ops and casts (fewer elements)",
            unary_before_broadcast,
        ),
        r(
            "binary-before-broadcast",
            "f(broadcast(x, s), broadcast(y, t)) -> broadcast(f(x, y), shape) when x, y have one shape (or y is a scalar)",
            binary_before_broadcast,
        ),
        r(
            "reduce-keepdims",
            "reshape(reduce(x, axes, keep_dims=false), kept shape) -> reduce(x, axes, keep_dims=true)",
            reduce_keepdims,
        ),
    ]
}

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}

fn permute_permute(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (op, kids) in op_nodes(eg, id) {
        let Op::Permute { perm: q } = op else {
            continue;
        };
        for (inner, ikids) in op_nodes(eg, kids[0]) {
            let Op::Permute { perm: p } = inner else {
                continue;
            };
            let perm: Vec<usize> = q.iter().map(|&i| p[i]).collect();
            out.push(Term::op(Op::Permute { perm }, vec![Term::Class(ikids[0])]));
        }
    }
    out
}

fn permute_identity(eg: &KEGraph, id: Id) -> Vec<Term> {
    op_nodes(eg, id)
        .filter_map(|(op, kids)| match op {
            Op::Permute { perm } if is_identity(perm) => Some(Term::Class(kids[0])),
            _ => None,
        })
        .collect()
}

fn permute_to_reshape(eg: &KEGraph, id: Id) -> Vec<Term> {
    let one = Dim::constant(1);
    let mut out = Vec::new();
    for (op, kids) in op_nodes(eg, id) {
        let Op::Permute { perm } = op else { continue };
        let Some(t) = ty(eg, kids[0]) else { continue };
        if is_identity(perm) {
            continue;
        }
        let moved: Vec<usize> = perm
            .iter()
            .copied()
            .filter(|&p| t.shape[p] != one)
            .collect();
        if moved.windows(2).all(|w| w[0] < w[1]) {
            let shape = perm.iter().map(|&p| t.shape[p].clone()).collect();
            out.push(Term::op(Op::Reshape { shape }, vec![Term::Class(kids[0])]));
        }
    }
    out
}

fn reshape_reshape(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (op, kids) in op_nodes(eg, id) {
        let Op::Reshape { shape } = op else { continue };
        for (inner, ikids) in op_nodes(eg, kids[0]) {
            if let Op::Reshape { .. } = inner {
                out.push(Term::op(
                    Op::Reshape {
                        shape: shape.clone(),
                    },
                    vec![Term::Class(ikids[0])],
                ));
            }
        }
    }
    out
}

fn reshape_identity(eg: &KEGraph, id: Id) -> Vec<Term> {
    op_nodes(eg, id)
        .filter_map(|(op, kids)| match op {
            Op::Reshape { shape } if ty(eg, kids[0]).is_some_and(|t| t.shape == *shape) => {
                Some(Term::Class(kids[0]))
            }
            _ => None,
        })
        .collect()
}

fn broadcast_broadcast(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (op, kids) in op_nodes(eg, id) {
        let Op::Broadcast { shape } = op else {
            continue;
        };
        for (inner, ikids) in op_nodes(eg, kids[0]) {
            if let Op::Broadcast { .. } = inner {
                out.push(Term::op(
                    Op::Broadcast {
                        shape: shape.clone(),
                    },
                    vec![Term::Class(ikids[0])],
                ));
            }
        }
    }
    out
}

fn broadcast_identity(eg: &KEGraph, id: Id) -> Vec<Term> {
    op_nodes(eg, id)
        .filter_map(|(op, kids)| match op {
            Op::Broadcast { shape } if ty(eg, kids[0]).is_some_and(|t| t.shape == *shape) => {
                Some(Term::Class(kids[0]))
            }
            _ => None,
        })
        .collect()
}

fn strip_leading_ones(s: &[Dim]) -> &[Dim] {
    let one = Dim::constant(1);
    let k = s.iter().take_while(|d| **d == one).count();
    &s[k..]
}

fn broadcast_absorbs_reshape(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (op, kids) in op_nodes(eg, id) {
        let Op::Broadcast { shape } = op else {
            continue;
        };
        for (inner, ikids) in op_nodes(eg, kids[0]) {
            let Op::Reshape { shape: r } = inner else {
                continue;
            };
            let Some(x) = ty(eg, ikids[0]) else { continue };
            if x.rank() <= shape.len() && strip_leading_ones(r) == strip_leading_ones(&x.shape) {
                out.push(Term::op(
                    Op::Broadcast {
                        shape: shape.clone(),
                    },
                    vec![Term::Class(ikids[0])],
                ));
            }
        }
    }
    out
}

fn slice_identity(eg: &KEGraph, id: Id) -> Vec<Term> {
    op_nodes(eg, id)
        .filter_map(|(op, kids)| match op {
            Op::Slice { axis, start, end }
                if start.as_const() == Some(0)
                    && ty(eg, kids[0]).is_some_and(|t| t.shape[*axis] == *end) =>
            {
                Some(Term::Class(kids[0]))
            }
            _ => None,
        })
        .collect()
}

fn slice_slice(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (op, kids) in op_nodes(eg, id) {
        let Op::Slice { axis, start, end } = op else {
            continue;
        };
        for (inner, ikids) in op_nodes(eg, kids[0]) {
            let Op::Slice {
                axis: a, start: s1, ..
            } = inner
            else {
                continue;
            };
            if a == axis {
                out.push(Term::op(
                    Op::Slice {
                        axis: *axis,
                        start: s1 + start,
                        end: s1 + end,
                    },
                    vec![Term::Class(ikids[0])],
                ));
            }
        }
    }
    out
}

fn pad_zero(eg: &KEGraph, id: Id) -> Vec<Term> {
    op_nodes(eg, id)
        .filter_map(|(op, kids)| match op {
            Op::Pad { low, high, .. }
                if low.as_const() == Some(0) && high.as_const() == Some(0) =>
            {
                Some(Term::Class(kids[0]))
            }
            _ => None,
        })
        .collect()
}

fn concat_one(eg: &KEGraph, id: Id) -> Vec<Term> {
    op_nodes(eg, id)
        .filter_map(|(op, kids)| match op {
            Op::Concat { .. } if kids.len() == 1 => Some(Term::Class(kids[0])),
            _ => None,
        })
        .collect()
}

/// `x`'s class holds `broadcast(y, s)` that really expands: `(y, s)`, one
/// per shape of `y`. Two such `y` of one shape are equal values (a
/// broadcast reads every element of its operand), so one stands for all:
/// rewriting every pair made classes of splats grow quadratically per
/// iteration (a 50-node graph ran for minutes).
fn expanding_broadcasts(eg: &KEGraph, x: Id) -> Vec<(Id, Vec<Dim>)> {
    let mut out: Vec<(Id, Vec<Dim>)> = Vec::new();
    let mut shapes: Vec<&[Dim]> = Vec::new();
    for (op, kids) in op_nodes(eg, x) {
        let Op::Broadcast { shape } = op else {
            continue;
        };
        let Some(y) = ty(eg, kids[0]) else { continue };
        if product(&y.shape) == product(shape) || shapes.contains(&y.shape.as_slice()) {
            continue;
        }
        shapes.push(&y.shape);
        out.push((kids[0], shape.clone()));
    }
    out
}

fn unary_before_broadcast(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (op, kids) in op_nodes(eg, id) {
        if !matches!(op, Op::Unary(_) | Op::Cast(_)) {
            continue;
        }
        for (y, shape) in expanding_broadcasts(eg, kids[0]) {
            out.push(Term::op(
                Op::Broadcast { shape },
                vec![Term::op(op.clone(), vec![Term::Class(y)])],
            ));
        }
    }
    out
}

fn binary_before_broadcast(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    let Some(result) = ty(eg, id) else { return out };
    for (op, kids) in op_nodes(eg, id) {
        if !matches!(op, Op::Binary(_) | Op::Compare(_)) {
            continue;
        }
        let (a, b) = (kids[0], kids[1]);
        let scalar = |c: Id| ty(eg, c).is_some_and(|t| t.rank() == 0);
        let wrap = |inner: Term| {
            Term::op(
                Op::Broadcast {
                    shape: result.shape.clone(),
                },
                vec![inner],
            )
        };
        let bx = expanding_broadcasts(eg, a);
        let by = expanding_broadcasts(eg, b);
        for (x, _) in &bx {
            for (y, _) in &by {
                if ty(eg, *x).map(|t| &t.shape) == ty(eg, *y).map(|t| &t.shape) {
                    out.push(wrap(Term::op(
                        op.clone(),
                        vec![Term::Class(*x), Term::Class(*y)],
                    )));
                }
            }
            if scalar(b) {
                out.push(wrap(Term::op(
                    op.clone(),
                    vec![Term::Class(*x), Term::Class(b)],
                )));
            }
        }
        if scalar(a) {
            for (y, _) in &by {
                out.push(wrap(Term::op(
                    op.clone(),
                    vec![Term::Class(a), Term::Class(*y)],
                )));
            }
        }
    }
    out
}

fn reduce_keepdims(eg: &KEGraph, id: Id) -> Vec<Term> {
    let mut out = Vec::new();
    for (op, kids) in op_nodes(eg, id) {
        let Op::Reshape { shape } = op else { continue };
        for (inner, ikids) in op_nodes(eg, kids[0]) {
            let Op::Reduce {
                op: r,
                axes,
                keep_dims: false,
            } = inner
            else {
                continue;
            };
            let Some(x) = ty(eg, ikids[0]) else { continue };
            let kept: Vec<Dim> = (0..x.rank())
                .map(|i| {
                    if axes.contains(&i) {
                        Dim::constant(1)
                    } else {
                        x.shape[i].clone()
                    }
                })
                .collect();
            if kept == *shape {
                out.push(Term::op(
                    Op::Reduce {
                        op: *r,
                        axes: axes.clone(),
                        keep_dims: true,
                    },
                    vec![Term::Class(ikids[0])],
                ));
            }
        }
    }
    out
}
