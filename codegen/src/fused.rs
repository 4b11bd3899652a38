//! Fused kernels (`loop` and `row`) on the elemental emitter.
//!
//! `loop`: the grid is one block per index of the outer dims times tiles of
//! the last dim; a block loops over its tile and stores every result.
//!
//! `row`: one block per index of the outer dims; a block first reduces each
//! reduction of the body (in dependency order) to one value, then loops over
//! the rest of each result's dims and stores it.

use crate::builder::{Builder, Ty, R, V};
use crate::ctx::{Ctx, KernelFn};
use crate::elemental::Body;
use crate::error::CodegenError;
use crate::scalar::{self, reg_ty};
use crate::target::EmitTarget;
use kiln_ir::kernel::{check_fused, Grid, GridDim};
use kiln_ir::{DType, Dim, FusedOp, FusionKind, NodeId, Op, ReduceOp};

/// Elements of the last dim one `loop` block handles.
pub(crate) const LOOP_TILE_CPU: i64 = 4096;
pub(crate) const LOOP_TILE_GPU: i64 = 1024;
/// Threads of a GPU block: a `loop` block; a `row` block is one warp.
pub const LOOP_THREADS: u32 = 128;
pub const ROW_THREADS: u32 = 32;

/// Emits a fused kernel; returns its function, grid and GPU thread count.
pub fn emit_fused(
    name: &str,
    f: &FusedOp,
    symbols: &[String],
    target: EmitTarget,
) -> R<(KernelFn, Grid, u32)> {
    let geo = check_fused(f).map_err(|source| CodegenError::Fusion {
        kernel: name.to_string(),
        source,
    })?;
    let g = &*f.body;
    let n_in = g.inputs().len();
    let n_bufs = n_in + g.outputs().len();
    let outer = geo.outer;
    match f.kind {
        FusionKind::Loop => {
            let shape = g.output_types()[0].shape.clone();
            let tile = if target.gpu {
                LOOP_TILE_GPU
            } else {
                LOOP_TILE_CPU
            };
            let mut grid = Grid {
                dims: outer
                    .iter()
                    .map(|d| GridDim {
                        extent: d.clone(),
                        tile: 1,
                    })
                    .collect(),
            };
            if let Some(last) = shape.last() {
                grid.dims.push(GridDim {
                    extent: last.clone(),
                    tile,
                });
            }
            let threads = LOOP_THREADS;
            let kf = Ctx::kernel_fn(name, n_bufs, symbols, target, threads, |cx, block| {
                loop_block(cx, g, &shape, &outer, tile, block)
            })?;
            Ok((kf, grid, threads))
        }
        FusionKind::Row => {
            let grid = Grid {
                dims: outer
                    .iter()
                    .map(|d| GridDim {
                        extent: d.clone(),
                        tile: 1,
                    })
                    .collect(),
            };
            let threads = ROW_THREADS;
            let kf = Ctx::kernel_fn(name, n_bufs, symbols, target, threads, |cx, block| {
                row_block(cx, g, &outer, block)
            })?;
            Ok((kf, grid, threads))
        }
    }
}

fn loop_block(
    cx: &mut Ctx,
    g: &kiln_ir::Graph,
    shape: &[Dim],
    outer: &[Dim],
    tile: i64,
    block: V,
) -> R<()> {
    let body = Body::new(g);
    let n_in = g.inputs().len();
    let outs: Vec<_> = g.outputs().iter().map(|o| o.value).collect();
    if shape.is_empty() {
        // A scalar result: one block, one element.
        for (k, v) in outs.iter().enumerate() {
            let x = body.elem(cx, *v, &[])?;
            let zero = cx.b.i64c(0);
            let p = cx.bufs[n_in + k];
            scalar::store(&mut cx.b, p, zero, g.ty(*v).dtype, x);
        }
        return Ok(());
    }
    let outer_dims = cx.dims(outer)?;
    let last = cx.dim(&shape[shape.len() - 1])?;
    let tiles = cx.ceil_div(last, tile);
    let mut factors = outer_dims.clone();
    factors.push(tiles);
    let bi = cx.delinearize(block, &factors);
    let outer_idx = bi[..outer.len()].to_vec();
    let t = bi[outer.len()];
    let tv = cx.b.i64c(tile);
    let j0 = cx.b.mul(t, tv);
    let j1 = cx.b.add(j0, tv);
    let j1 = cx.b.min_s(j1, last);
    let outer_lin = cx.linearize(&outer_idx, &outer_dims);
    let row = cx.b.mul(outer_lin, last);
    cx.par_for(j0, j1, |cx, j| {
        let mut idx = outer_idx.clone();
        idx.push(j);
        let lin = cx.b.add(row, j);
        let vals = outs
            .iter()
            .map(|v| body.elem(cx, *v, &idx))
            .collect::<R<Vec<V>>>()?;
        for (k, (v, x)) in outs.iter().zip(vals).enumerate() {
            let p = cx.bufs[n_in + k];
            scalar::store(&mut cx.b, p, lin, g.ty(*v).dtype, x);
        }
        Ok(())
    })
}

fn row_block(cx: &mut Ctx, g: &kiln_ir::Graph, outer: &[Dim], block: V) -> R<()> {
    let mut body = Body::new(g);
    let n_in = g.inputs().len();
    let outer_dims = cx.dims(outer)?;
    let outer_idx = cx.delinearize(block, &outer_dims);
    let outer_lin = cx.linearize(&outer_idx, &outer_dims);
    let reduces: Vec<NodeId> = g
        .topo_order()
        .into_iter()
        .filter(|&n| matches!(g.node(n).op, Op::Reduce { .. }))
        .collect();
    let mut stored = vec![false; g.outputs().len()];
    for (ri, &n) in reduces.iter().enumerate() {
        let Op::Reduce { op, .. } = &g.node(n).op else {
            unreachable!("filtered to reductions")
        };
        let operand = g.operands(n)[0];
        let oty = g.ty(operand).clone();
        let inner = oty.shape[outer.len()..].to_vec();
        let inner_dims = cx.dims(&inner)?;
        let count = product(cx, &inner_dims);
        // Results over the same index space as this reduction's operand that
        // need no reduction still to come are stored from inside its loop,
        // sharing the element computation (a state update `h'` next to
        // `sum(h' * c)` computes `h'` once).
        let riders: Vec<usize> = (0..g.outputs().len())
            .filter(|&k| {
                let v = g.outputs()[k].value;
                !stored[k]
                    && g.ty(v).shape == oty.shape
                    && reduces[ri..].iter().all(|&m| !g.depends_on(v.node, m))
            })
            .collect();
        for &k in &riders {
            stored[k] = true;
        }
        let dt = oty.dtype;
        let init = reduce_init(&mut cx.b, *op, dt);
        let gpu = cx.target.gpu;
        let rop = *op;
        let base = cx.b.mul(outer_lin, count);
        let acc = cx.reduce(
            count,
            init,
            |cx, r| {
                let ii = cx.delinearize(r, &inner_dims);
                let mut idx = outer_idx.clone();
                idx.extend(ii);
                let lin = cx.b.add(base, r);
                for &k in &riders {
                    let v = g.outputs()[k].value;
                    let x = body.elem(cx, v, &idx)?;
                    scalar::store(&mut cx.b, cx.bufs[n_in + k], lin, g.ty(v).dtype, x);
                }
                body.elem(cx, operand, &idx)
            },
            move |b, a, x| combine(b, rop, dt, a, x, !gpu),
        )?;
        let mut val = acc;
        if *op == ReduceOp::Mean {
            let c = cx.b.conv("arith.sitofp", count, Ty::F32);
            val = cx.b.fbin("divf", val, c);
        }
        if dt.is_float() {
            val = scalar::round(&mut cx.b, val, dt);
        }
        body.reduced.insert(n, val);
    }
    for (k, o) in g.outputs().iter().enumerate() {
        if stored[k] {
            continue;
        }
        let v = o.value;
        let ty = g.ty(v).clone();
        let rest = ty.shape[outer.len()..].to_vec();
        let rest_dims = cx.dims(&rest)?;
        let m = product(cx, &rest_dims);
        let base = cx.b.mul(outer_lin, m);
        let zero = cx.b.i64c(0);
        let p = cx.bufs[n_in + k];
        cx.par_for(zero, m, |cx, r| {
            let ri = cx.delinearize(r, &rest_dims);
            let mut idx = outer_idx.clone();
            idx.extend(ri);
            let x = body.elem(cx, v, &idx)?;
            let lin = cx.b.add(base, r);
            scalar::store(&mut cx.b, p, lin, ty.dtype, x);
            Ok(())
        })?;
    }
    Ok(())
}

fn product(cx: &mut Ctx, dims: &[V]) -> V {
    let mut p = cx.b.i64c(1);
    for d in dims {
        p = cx.b.mul(p, *d);
    }
    p
}

/// The identity of a reduction in register type.
fn reduce_init(b: &mut Builder, op: ReduceOp, dt: DType) -> V {
    let rt = reg_ty(dt);
    if dt.is_float() {
        let v = match op {
            ReduceOp::Sum | ReduceOp::Mean => 0.0,
            ReduceOp::Max => f64::NEG_INFINITY,
            ReduceOp::Min => f64::INFINITY,
        };
        return b.cf(Ty::F32, v);
    }
    let (min, max) = match dt {
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::I64 => (i64::MIN, i64::MAX),
        DType::I8 => (-128, 127),
        _ => (0, 255),
    };
    let v = match op {
        ReduceOp::Sum | ReduceOp::Mean => 0,
        ReduceOp::Max => min,
        ReduceOp::Min => max,
    };
    b.ci(rt, v)
}

/// Folds `x` into the accumulator `a`. Float sums may be reassociated on the
/// CPU so the loop vectorizes.
fn combine(b: &mut Builder, op: ReduceOp, dt: DType, a: V, x: V, reassoc: bool) -> V {
    if dt.is_float() {
        return match op {
            ReduceOp::Sum | ReduceOp::Mean => {
                if reassoc {
                    b.pure(
                        Ty::F32,
                        format!("arith.addf {a}, {x} fastmath<reassoc> : f32"),
                    )
                } else {
                    b.fbin("addf", a, x)
                }
            }
            ReduceOp::Max => b.fbin("maximumf", a, x),
            ReduceOp::Min => b.fbin("minimumf", a, x),
        };
    }
    let unsigned = dt == DType::U8;
    match op {
        ReduceOp::Sum | ReduceOp::Mean => b.bin("addi", a, x),
        ReduceOp::Max => b.bin(if unsigned { "maxui" } else { "maxsi" }, a, x),
        ReduceOp::Min => b.bin(if unsigned { "minui" } else { "minsi" }, a, x),
    }
}
