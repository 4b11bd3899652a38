//! Ops with a body graph: `scan` and `fused`.
//!
//! **`scan`** (see [`crate::op::ScanOp`]): operands are `num_carry` initial
//! carries, `num_xs` sequences and then loop invariants. Step `t` runs the
//! body on `(carries, xs[.., t, ..] with the scan axis removed, invariants)`;
//! its outputs are the new carries followed by the step's outputs `ys`. The
//! results are the final carries, then each `y` stacked along `axis` with
//! step `t`'s value at position `t`. With `reverse` the steps run
//! `t = len-1, …, 0` (so carries flow from the end), but `ys` still sit at
//! their original positions. A scan over an empty axis returns the initial
//! carries and empty `ys`.
//!
//! **`fused`**: the body graph evaluated on the operands; its outputs are the
//! op's results. Fusion changes how a computation is scheduled, never what it
//! computes, so this is the reference every fused kernel is checked against.

use super::error::InterpError;
use super::index::prod;
use super::run::{unify_all, Plan, Role, ShapeItem};
use super::shape_ops::index_axis;
use super::value::{dispatch, empty_tensor, storage_name, view_as, Elem};
use super::EvalOptions;
use crate::dim::Bindings;
use crate::graph::Graph;
use crate::op::{FusedOp, ScanOp};
use crate::tensor::{Tensor, TensorData};
use crate::types::TensorType;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Binds the body's input symbols from the shapes its inputs will have,
/// starting from the outer bindings.
fn bind_body(
    body: &Graph,
    args: &[&Tensor],
    shapes: &[Vec<usize>],
    outer: &Bindings,
) -> Result<Bindings, InterpError> {
    let tys = body.input_types();
    if tys.len() != shapes.len() {
        return Err(InterpError::operands(format!(
            "the body takes {} input(s), the op gives {}",
            tys.len(),
            shapes.len()
        )));
    }
    let names: Vec<&str> = body.input_names().collect();
    let items: Vec<ShapeItem<'_>> = (0..tys.len())
        .map(|i| ShapeItem {
            role: Role::Input,
            name: names[i],
            ty: &tys[i],
            storage: storage_name(&args[i].data),
            shape: shapes[i].as_slice(),
        })
        .collect();
    let mut b = outer.clone();
    unify_all(&items, &mut b)?;
    Ok(b)
}

/// `fused`: the body on the operands.
pub(crate) fn fused(
    f: &FusedOp,
    args: &[&Tensor],
    b: &Bindings,
    opts: &EvalOptions,
) -> Result<Vec<Tensor>, InterpError> {
    let plan = Plan::new(&f.body)?;
    let shapes: Vec<Vec<usize>> = args.iter().map(|t| t.shape.clone()).collect();
    let bindings = bind_body(&f.body, args, &shapes, b)?;
    let none = BTreeMap::new();
    let inputs = args.iter().map(|t| Cow::Borrowed(*t)).collect();
    plan.run(inputs, &none, &bindings, opts)
}

/// `scan`: the body applied step by step along `axis`.
pub(crate) fn scan(
    s: &ScanOp,
    args: &[&Tensor],
    b: &Bindings,
    opts: &EvalOptions,
) -> Result<Vec<Tensor>, InterpError> {
    let (nc, nx, axis) = (s.num_carry, s.num_xs, s.axis);
    if nx == 0 || args.len() < nc + nx {
        return Err(InterpError::operands(format!(
            "needs {nc} carries and at least one of {nx} sequences, got {} operands",
            args.len()
        )));
    }
    let xs = &args[nc..nc + nx];
    if let Some(x) = xs.iter().find(|x| axis >= x.rank()) {
        return Err(InterpError::operands(format!(
            "axis {axis} out of range for a sequence of shape {:?}",
            x.shape
        )));
    }
    let len = xs[0].shape[axis];
    if let Some(x) = xs.iter().find(|x| x.shape[axis] != len) {
        return Err(InterpError::operands(format!(
            "sequences differ in length along axis {axis}: {len} and {}",
            x.shape[axis]
        )));
    }
    let body: &Graph = &s.body;
    let plan = Plan::new(body)?;
    let out_tys = body.output_types();
    if out_tys.len() < nc {
        return Err(InterpError::operands(format!(
            "the body returns fewer than {nc} carries"
        )));
    }
    let shapes: Vec<Vec<usize>> = args
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut sh = t.shape.clone();
            if (nc..nc + nx).contains(&i) {
                sh.remove(axis);
            }
            sh
        })
        .collect();
    let bindings = bind_body(body, args, &shapes, b)?;
    let none = BTreeMap::new();
    let mut carries: Vec<Cow<'_, Tensor>> = args[..nc].iter().map(|t| Cow::Borrowed(*t)).collect();
    let mut ys: Vec<Vec<Option<Tensor>>> = vec![vec![None; len]; out_tys.len() - nc];
    for step in 0..len {
        let t = if s.reverse { len - 1 - step } else { step };
        let mut inputs = std::mem::take(&mut carries);
        for x in xs {
            inputs.push(Cow::Owned(index_axis(x, axis, t)?));
        }
        inputs.extend(args[nc + nx..].iter().map(|t| Cow::Borrowed(*t)));
        let outs = plan
            .run(inputs, &none, &bindings, opts)
            .map_err(|e| e.within(&format!("step {t}")))?;
        let mut outs = outs.into_iter();
        carries = outs.by_ref().take(nc).map(Cow::Owned).collect();
        for (j, y) in outs.enumerate() {
            ys[j][t] = Some(y);
        }
    }
    let mut results: Vec<Tensor> = carries.into_iter().map(Cow::into_owned).collect();
    for (j, steps) in ys.into_iter().enumerate() {
        let ty = &out_tys[nc + j];
        results.push(stack(steps, axis, ty, &bindings, opts)?);
    }
    Ok(results)
}

/// Stacks the per-step outputs along `axis` (`ty` is the body's declared
/// output type, used for the shape when there are no steps).
fn stack(
    steps: Vec<Option<Tensor>>,
    axis: usize,
    ty: &TensorType,
    b: &Bindings,
    opts: &EvalOptions,
) -> Result<Tensor, InterpError> {
    let len = steps.len();
    let steps: Vec<Tensor> = steps
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(|| InterpError::operands("a step produced no output"))?;
    let Some(first) = steps.first() else {
        let mut shape = ty.eval_shape(b).map_err(super::error::dim_err)?;
        if axis > shape.len() {
            return Err(InterpError::operands(format!(
                "axis {axis} out of range for a step output"
            )));
        }
        shape.insert(axis, 0);
        return Ok(empty_tensor(ty.dtype, shape, opts.precision));
    };
    let y_shape = first.shape.clone();
    if axis > y_shape.len() {
        return Err(InterpError::operands(format!(
            "axis {axis} out of range for a step output"
        )));
    }
    if let Some(t) = steps.iter().position(|y| y.shape != y_shape) {
        return Err(InterpError::operands(format!(
            "step outputs differ in shape: {:?} and {:?} at step {t}",
            y_shape, steps[t].shape
        )));
    }
    let (outer, inner) = (prod(&y_shape[..axis]), prod(&y_shape[axis..]));
    fn go<T: Elem>(
        steps: &[Tensor],
        outer: usize,
        inner: usize,
    ) -> Result<TensorData, InterpError> {
        let views: Vec<&[T]> = steps
            .iter()
            .map(|y| view_as::<T>(&y.data, "a step output"))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(outer * steps.len() * inner);
        for o in 0..outer {
            for v in &views {
                out.extend_from_slice(&v[o * inner..(o + 1) * inner]);
            }
        }
        Ok(T::wrap(out))
    }
    let data = dispatch!(&first.data, go(&steps, outer, inner))?;
    let mut shape = y_shape;
    shape.insert(axis, len);
    Ok(Tensor { shape, data })
}
