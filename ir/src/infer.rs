//! Type rules: the result types of an op from its operand types.
//!
//! One function, [`infer`], shared by the graph builder, the verifier, the
//! text parser and the optimizer's e-graph analysis, so they cannot disagree.

use crate::dim::{product, Dim};
use crate::op::{BinaryOp, Op, ReduceOp, UnaryOp};
use crate::types::{DType, Shape, TensorType};

/// An op applied to operands of the wrong number, dtype or shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{op}`: {message}")]
pub struct TypeError {
    pub op: String,
    pub message: String,
}

fn err<T>(op: &Op, message: impl Into<String>) -> Result<T, TypeError> {
    Err(TypeError {
        op: op.name().to_string(),
        message: message.into(),
    })
}

fn arity(op: &Op, inputs: &[&TensorType], n: usize) -> Result<(), TypeError> {
    if inputs.len() != n {
        return err(op, format!("expects {n} operand(s), got {}", inputs.len()));
    }
    Ok(())
}

fn shape_str(s: &[Dim]) -> String {
    TensorType::new(DType::F32, s.to_vec())
        .to_string()
        .trim_start_matches("f32")
        .to_string()
}

/// Numpy broadcasting of shapes: right-aligned, each pair equal or one of them 1.
pub fn broadcast_shapes(shapes: &[&Shape]) -> Option<Shape> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let one = Dim::constant(1);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let mut d = one.clone();
        for s in shapes {
            let off = rank - s.len();
            if i < off {
                continue;
            }
            let e = &s[i - off];
            if *e == one {
                continue;
            }
            if d == one {
                d = e.clone();
            } else if d != *e {
                return None;
            }
        }
        out.push(d);
    }
    Some(out)
}

/// Resolves a possibly negative axis against `rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

fn check_axis(op: &Op, axis: usize, rank: usize) -> Result<(), TypeError> {
    if axis >= rank {
        return err(op, format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(())
}

/// The result types of `op` applied to operands of types `inputs`.
pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
    let one = |t: TensorType| Ok(vec![t]);
    match op {
        Op::Input { ty, .. } | Op::Param { ty, .. } => {
            arity(op, inputs, 0)?;
            one(ty.clone())
        }
        Op::Const(lit) => {
            arity(op, inputs, 0)?;
            if !lit.is_well_formed() {
                return err(op, "literal data does not match its dtype and shape");
            }
            one(lit.ty())
        }
        Op::Iota { ty, axis } => {
            arity(op, inputs, 0)?;
            check_axis(op, *axis, ty.rank())?;
            if ty.dtype == DType::Bool {
                return err(op, "iota cannot produce bool");
            }
            one(ty.clone())
        }
        Op::Unary(u) => {
            arity(op, inputs, 1)?;
            let t = inputs[0];
            let ok = match u {
                UnaryOp::Neg | UnaryOp::Abs => t.dtype != DType::Bool && t.dtype != DType::U8,
                UnaryOp::Not => t.dtype == DType::Bool,
                _ => t.dtype.is_float(),
            };
            if !ok {
                return err(op, format!("not defined on {}", t.dtype));
            }
            one(t.clone())
        }
        Op::Binary(b) => {
            arity(op, inputs, 2)?;
            let (a, c) = (inputs[0], inputs[1]);
            if a.dtype != c.dtype {
                return err(
                    op,
                    format!("operand dtypes differ: {} and {}", a.dtype, c.dtype),
                );
            }
            let ok = match b {
                BinaryOp::And | BinaryOp::Or => a.dtype == DType::Bool,
                BinaryOp::Pow => a.dtype.is_float(),
                _ => a.dtype != DType::Bool,
            };
            if !ok {
                return err(op, format!("not defined on {}", a.dtype));
            }
            match broadcast_shapes(&[&a.shape, &c.shape]) {
                Some(s) => one(TensorType::new(a.dtype, s)),
                None => err(
                    op,
                    format!(
                        "shapes {} and {} do not broadcast",
                        shape_str(&a.shape),
                        shape_str(&c.shape)
                    ),
                ),
            }
        }
        Op::Compare(_) => {
            arity(op, inputs, 2)?;
            let (a, c) = (inputs[0], inputs[1]);
            if a.dtype != c.dtype {
                return err(
                    op,
                    format!("operand dtypes differ: {} and {}", a.dtype, c.dtype),
                );
            }
            match broadcast_shapes(&[&a.shape, &c.shape]) {
                Some(s) => one(TensorType::new(DType::Bool, s)),
                None => err(
                    op,
                    format!(
                        "shapes {} and {} do not broadcast",
                        shape_str(&a.shape),
                        shape_str(&c.shape)
                    ),
                ),
            }
        }
        Op::Select => {
            arity(op, inputs, 3)?;
            let (c, a, b) = (inputs[0], inputs[1], inputs[2]);
            if c.dtype != DType::Bool {
                return err(op, format!("condition must be bool, got {}", c.dtype));
            }
            if a.dtype != b.dtype {
                return err(
                    op,
                    format!("branch dtypes differ: {} and {}", a.dtype, b.dtype),
                );
            }
            match broadcast_shapes(&[&c.shape, &a.shape, &b.shape]) {
                Some(s) => one(TensorType::new(a.dtype, s)),
                None => err(op, "condition and branch shapes do not broadcast"),
            }
        }
        Op::Cast(to) => {
            arity(op, inputs, 1)?;
            one(inputs[0].with_dtype(*to))
        }
        Op::Reduce {
            op: r,
            axes,
            keep_dims,
        } => {
            arity(op, inputs, 1)?;
            let t = inputs[0];
            if t.dtype == DType::Bool {
                return err(op, "cannot reduce bool");
            }
            if *r == ReduceOp::Mean && !t.dtype.is_float() {
                return err(op, "mean needs a float dtype");
            }
            let mut seen = vec![false; t.rank()];
            for &a in axes {
                check_axis(op, a, t.rank())?;
                if seen[a] {
                    return err(op, format!("axis {a} listed twice"));
                }
                seen[a] = true;
            }
            let shape = t
                .shape
                .iter()
                .enumerate()
                .filter_map(|(i, d)| match (seen[i], keep_dims) {
                    (false, _) => Some(d.clone()),
                    (true, true) => Some(Dim::constant(1)),
                    (true, false) => None,
                })
                .collect();
            one(TensorType::new(t.dtype, shape))
        }
        Op::Reshape { shape } => {
            arity(op, inputs, 1)?;
            let t = inputs[0];
            if product(&t.shape) != product(shape) {
                return err(
                    op,
                    format!(
                        "cannot reshape {} to {}: element counts differ",
                        shape_str(&t.shape),
                        shape_str(shape)
                    ),
                );
            }
            one(t.with_shape(shape.clone()))
        }
        Op::Permute { perm } => {
            arity(op, inputs, 1)?;
            let t = inputs[0];
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..t.rank()).collect::<Vec<_>>() {
                return err(
                    op,
                    format!("{perm:?} is not a permutation of the {} axes", t.rank()),
                );
            }
            one(t.with_shape(perm.iter().map(|&p| t.shape[p].clone()).collect()))
        }
        Op::Broadcast { shape } => {
            arity(op, inputs, 1)?;
            let t = inputs[0];
            match broadcast_shapes(&[&t.shape, shape]) {
                Some(s) if s == *shape => one(t.with_shape(shape.clone())),
                _ => err(
                    op,
                    format!(
                        "cannot broadcast {} to {}",
                        shape_str(&t.shape),
                        shape_str(shape)
                    ),
                ),
            }
        }
        Op::Slice { axis, start, end } => {
            arity(op, inputs, 1)?;
            let t = inputs[0];
            check_axis(op, *axis, t.rank())?;
            let len = end - start;
            if let (Some(s), Some(e)) = (start.as_const(), end.as_const()) {
                if s < 0 || e < s {
                    return err(op, format!("bad range {s}..{e}"));
                }
            }
            if let (Some(e), Some(n)) = (end.as_const(), t.shape[*axis].as_const()) {
                if e > n {
                    return err(op, format!("end {e} exceeds the axis size {n}"));
                }
            }
            if let Some(l) = len.as_const() {
                if l < 0 {
                    return err(op, format!("range {start}..{end} is negative"));
                }
            }
            let mut shape = t.shape.clone();
            shape[*axis] = len;
            one(t.with_shape(shape))
        }
        Op::Concat { axis } => {
            if inputs.is_empty() {
                return err(op, "needs at least one operand");
            }
            let first = inputs[0];
            check_axis(op, *axis, first.rank())?;
            let mut total = Dim::constant(0);
            for (i, t) in inputs.iter().enumerate() {
                if t.dtype != first.dtype || t.rank() != first.rank() {
                    return err(op, format!("operand {i} is {t}, the first is {first}"));
                }
                for (a, (x, y)) in t.shape.iter().zip(&first.shape).enumerate() {
                    if a != *axis && x != y {
                        return err(op, format!("operand {i} is {t}, the first is {first}"));
                    }
                }
                total = &total + &t.shape[*axis];
            }
            let mut shape = first.shape.clone();
            shape[*axis] = total;
            one(first.with_shape(shape))
        }
        Op::Pad {
            axis, low, high, ..
        } => {
            arity(op, inputs, 1)?;
            let t = inputs[0];
            check_axis(op, *axis, t.rank())?;
            if low.as_const().is_some_and(|v| v < 0) || high.as_const().is_some_and(|v| v < 0) {
                return err(op, "negative padding");
            }
            let mut shape = t.shape.clone();
            shape[*axis] = &(&shape[*axis] + low) + high;
            one(t.with_shape(shape))
        }
        Op::Gather { axis } => {
            arity(op, inputs, 2)?;
            let (table, idx) = (inputs[0], inputs[1]);
            check_axis(op, *axis, table.rank())?;
            if !matches!(idx.dtype, DType::I32 | DType::I64) {
                return err(op, format!("indices must be i32 or i64, got {}", idx.dtype));
            }
            let mut shape: Shape = table.shape[..*axis].to_vec();
            shape.extend(idx.shape.iter().cloned());
            shape.extend(table.shape[axis + 1..].iter().cloned());
            one(table.with_shape(shape))
        }
        Op::MatMul | Op::MatMulT => {
            arity(op, inputs, 2)?;
            let (a, b) = (inputs[0], inputs[1]);
            // Narrow stored weights: an f32 product of a widened f16/bf16 operand.
            let widened = a.dtype == DType::F32 && matches!(b.dtype, DType::F16 | DType::BF16);
            if a.dtype != b.dtype && !widened {
                return err(
                    op,
                    format!("operand dtypes differ: {} and {}", a.dtype, b.dtype),
                );
            }
            if a.dtype == DType::Bool {
                return err(op, "not defined on bool");
            }
            if a.rank() < 2 || b.rank() < 2 {
                return err(op, format!("operands must have rank >= 2, got {a} and {b}"));
            }
            let (m, k1) = (&a.shape[a.rank() - 2], &a.shape[a.rank() - 1]);
            let (mut k2, mut n) = (&b.shape[b.rank() - 2], &b.shape[b.rank() - 1]);
            if *op == Op::MatMulT {
                std::mem::swap(&mut k2, &mut n);
            }
            if k1 != k2 {
                return err(op, format!("contraction sizes differ: {a} x {b}"));
            }
            let ba = a.shape[..a.rank() - 2].to_vec();
            let bb = b.shape[..b.rank() - 2].to_vec();
            let Some(mut shape) = broadcast_shapes(&[&ba, &bb]) else {
                return err(op, format!("batch dims do not broadcast: {a} x {b}"));
            };
            shape.push(m.clone());
            shape.push(n.clone());
            one(a.with_shape(shape))
        }
        Op::UpdateSlice { axis, start } => {
            arity(op, inputs, 2)?;
            let (base, upd) = (inputs[0], inputs[1]);
            check_axis(op, *axis, base.rank())?;
            if base.dtype != upd.dtype || base.rank() != upd.rank() {
                return err(op, format!("update {upd} does not fit base {base}"));
            }
            for (a, (x, y)) in base.shape.iter().zip(&upd.shape).enumerate() {
                if a != *axis && x != y {
                    return err(
                        op,
                        format!("update {upd} does not fit base {base} on axis {a}"),
                    );
                }
            }
            if start.as_const().is_some_and(|s| s < 0) {
                return err(op, format!("negative start {start}"));
            }
            let end = start + &upd.shape[*axis];
            if let (Some(e), Some(n)) = (end.as_const(), base.shape[*axis].as_const()) {
                if e > n {
                    return err(op, format!("update ends at {e}, past the axis size {n}"));
                }
            }
            one(base.clone())
        }
        Op::Scan(s) => infer_scan(op, s, inputs),
        Op::Attention(a) => {
            if !a.causal && a.offset != Dim::constant(0) {
                return err(op, format!("offset {} without causal", a.offset));
            }
            if !a.causal && !a.slopes.is_empty() {
                return err(op, "harmonic slopes need causal attention");
            }
            if a.offset.as_const().is_some_and(|o| o < 0) {
                return err(op, format!("negative offset {}", a.offset));
            }
            let viewed;
            let inputs = match &a.kv_len {
                Some(len) if inputs.len() >= 3 => {
                    let (k, v) = match crate::attention::head_major_kv(inputs[1], inputs[2], len) {
                        Ok(kv) => kv,
                        Err(m) => return err(op, m),
                    };
                    viewed = (k, v);
                    let mut all = inputs.to_vec();
                    all[1] = &viewed.0;
                    all[2] = &viewed.1;
                    all
                }
                _ => inputs.to_vec(),
            };
            crate::attention::infer_attention(&inputs, a.bias, a.slopes.len())
                .map(|t| vec![t])
                .or_else(|m| err(op, m))
        }
        Op::PrFlash(a) => {
            if a.block == 0 {
                return err(op, "block size 0");
            }
            if !(a.c.0 > 0.0 && a.c.0.is_finite()) {
                return err(op, format!("c must be positive and finite, got {}", a.c.0));
            }
            if a.offset.as_const().is_some_and(|o| o < 0) {
                return err(op, format!("negative offset {}", a.offset));
            }
            crate::attention::infer_attention(inputs, false, 0)
                .map(|t| vec![t])
                .or_else(|m| err(op, m))
        }
        Op::SaqAppend(a) => crate::saq::ops::infer_append(a, inputs)
            .map(|t| vec![t])
            .or_else(|m| err(op, m)),
        Op::SaqAttention(a) => crate::saq::ops::infer_attention(a, inputs)
            .map(|t| vec![t])
            .or_else(|m| err(op, m)),
        Op::LinearScan(l) => {
            crate::linear_scan::infer_linear_scan(l, inputs).or_else(|m| err(op, m))
        }
        Op::Fused(f) => {
            let body_inputs = f.body.input_types();
            if body_inputs.len() != inputs.len() {
                return err(
                    op,
                    format!(
                        "body takes {} input(s), got {} operand(s)",
                        body_inputs.len(),
                        inputs.len()
                    ),
                );
            }
            for (i, (want, got)) in body_inputs.iter().zip(inputs).enumerate() {
                if want != *got {
                    return err(op, format!("operand {i} is {got}, body input is {want}"));
                }
            }
            Ok(f.body.output_types())
        }
    }
}

fn infer_scan(
    op: &Op,
    s: &crate::op::ScanOp,
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>, TypeError> {
    let (nc, nx) = (s.num_carry, s.num_xs);
    if nx == 0 {
        return err(op, "needs at least one scanned sequence");
    }
    if inputs.len() < nc + nx {
        return err(
            op,
            format!(
                "expects at least {} operands, got {}",
                nc + nx,
                inputs.len()
            ),
        );
    }
    let xs = &inputs[nc..nc + nx];
    for x in xs {
        check_axis(op, s.axis, x.rank())?;
    }
    let len = xs[0].shape[s.axis].clone();
    for (i, x) in xs.iter().enumerate() {
        if x.shape[s.axis] != len {
            return err(
                op,
                format!("sequence {i} has length {} not {len}", x.shape[s.axis]),
            );
        }
    }
    // What the body must accept: carries, one slice per sequence, invariants.
    let mut expect: Vec<TensorType> = inputs[..nc].iter().map(|t| (*t).clone()).collect();
    for x in xs {
        let mut shape = x.shape.clone();
        shape.remove(s.axis);
        expect.push(x.with_shape(shape));
    }
    expect.extend(inputs[nc + nx..].iter().map(|t| (*t).clone()));
    let body_in = s.body.input_types();
    if body_in != expect {
        return err(
            op,
            format!(
                "body inputs are {} but the operands give {}",
                list(&body_in),
                list(&expect)
            ),
        );
    }
    let body_out = s.body.output_types();
    if body_out.len() < nc || body_out[..nc] != expect[..nc] {
        return err(
            op,
            format!(
                "body must return the {nc} carries first ({}), returns {}",
                list(&expect[..nc]),
                list(&body_out)
            ),
        );
    }
    let mut out: Vec<TensorType> = body_out[..nc].to_vec();
    for y in &body_out[nc..] {
        if s.axis > y.rank() {
            return err(
                op,
                format!("axis {} out of range for step output {y}", s.axis),
            );
        }
        let mut shape = y.shape.clone();
        shape.insert(s.axis, len.clone());
        out.push(y.with_shape(shape));
    }
    Ok(out)
}

fn list(ts: &[TensorType]) -> String {
    let v: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
    format!("({})", v.join(", "))
}
