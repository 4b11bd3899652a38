//! The per-call work every executor does the same way, whatever device
//! holds the memory: checking the inputs against the plan, binding the
//! size symbols from their shapes, and sizing every buffer, grid and range
//! guard under those sizes. The CPU and CUDA executors both call these, so
//! they accept and reject exactly the same calls with the same errors.

use super::dims::{self, SymDim};
use super::program::Program;
use crate::error::RuntimeError;
use crate::plan::{Plan, Storage};
use kiln_ir::dim::DimError;
use kiln_ir::{Bindings, Tensor, TensorType};
use std::collections::BTreeMap;

fn check_type(t: &Tensor, expected: &TensorType) -> bool {
    t.dtype() == expected.dtype && t.rank() == expected.rank()
}

/// Checks the inputs are exactly the plan's (less the state when `step`)
/// with the right dtypes and ranks; in step mode every state must be held
/// (`state_ready`).
fn check_inputs(
    plan: &Plan,
    is_state: &[bool],
    step: bool,
    state_ready: impl Fn(usize) -> bool,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<(), RuntimeError> {
    for name in inputs.keys() {
        match plan.inputs.iter().position(|i| &i.name == name) {
            None => {
                let known: Vec<String> = plan
                    .inputs
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| !step || !is_state[*k])
                    .map(|(_, i)| format!("{}: {}", i.name, i.ty))
                    .collect();
                return Err(RuntimeError::UnknownInput {
                    name: name.clone(),
                    known: known.join(", "),
                });
            }
            Some(i) if step && is_state[i] => {
                return Err(RuntimeError::StateAsInput { name: name.clone() })
            }
            Some(_) => {}
        }
    }
    for (i, pi) in plan.inputs.iter().enumerate() {
        if step && is_state[i] {
            if !state_ready(i) {
                return Err(RuntimeError::StateNotInitialized {
                    name: pi.name.clone(),
                });
            }
            continue;
        }
        let t = inputs
            .get(&pi.name)
            .ok_or_else(|| RuntimeError::MissingInput {
                name: pi.name.clone(),
                expected: pi.ty.to_string(),
            })?;
        if !check_type(t, &pi.ty) || t.data.len() != t.shape.iter().product::<usize>() {
            return Err(RuntimeError::InputType {
                name: pi.name.clone(),
                got: format!("{}{:?}", t.dtype(), t.shape),
                expected: pi.ty.to_string(),
            });
        }
    }
    Ok(())
}

/// Binds every symbol into `vals`/`known`: given sizes first, then the
/// shapes of the inputs (`shape(i)`: the caller's tensor, or in step mode
/// the kept state's shape); every symbol must end up bound.
#[allow(clippy::too_many_arguments)]
fn bind_sizes<'a>(
    plan: &Plan,
    program: &'a Program,
    is_state: &[bool],
    step: bool,
    shape: impl Fn(usize) -> &'a [usize],
    sizes: &Bindings,
    vals: &mut [i64],
    known: &mut [bool],
) -> Result<(), RuntimeError> {
    vals.fill(0);
    known.fill(false);
    for (k, name) in plan.symbols.iter().enumerate() {
        if let Some(&v) = sizes.get(name) {
            if v < 0 {
                return Err(RuntimeError::NegativeSize {
                    name: name.clone(),
                    value: v,
                });
            }
            vals[k] = v;
            known[k] = true;
        }
    }
    let items = (0..plan.inputs.len()).map(|i| {
        (
            plan.inputs[i].name.as_str(),
            program.input_dims[i].as_slice(),
            shape(i),
        )
    });
    let wrap = |name: &str, source: DimError| {
        let state = step
            && plan
                .inputs
                .iter()
                .position(|i| i.name == name)
                .is_some_and(|i| is_state[i]);
        let name = name.to_string();
        if state {
            RuntimeError::StateShape { name, source }
        } else {
            RuntimeError::InputShape { name, source }
        }
    };
    dims::bind_all(items, vals, known, wrap)?;
    match known.iter().position(|k| !k) {
        Some(k) => Err(RuntimeError::MissingSize {
            name: plan.symbols[k].clone(),
        }),
        None => Ok(()),
    }
}

/// Blocks of a grid under `sizes`.
pub(crate) fn grid_blocks(grid: &[(SymDim, usize)], sizes: &[i64]) -> Result<usize, RuntimeError> {
    let mut n: usize = 1;
    for (extent, tile) in grid {
        let e = extent.eval_usize(sizes)?;
        n = n
            .checked_mul(e.div_ceil(*tile))
            .ok_or_else(|| DimError::Overflow(extent.dim().to_string()))?;
    }
    Ok(n)
}

/// Where a call's sizes land: the symbols' values (and which are bound),
/// bytes per buffer, blocks per kernel, bytes per arena slot (each indexed
/// like the plan's symbols, buffers, kernels, slots).
pub(crate) struct CallSizes<'a> {
    pub sizes: &'a mut [i64],
    pub known: &'a mut [bool],
    pub bytes: &'a mut [usize],
    pub blocks: &'a mut [usize],
    pub slot_bytes: &'a mut [usize],
}

/// Everything a call does before touching memory, the same for every
/// executor: checks the inputs ([`check_inputs`]), binds the sizes from
/// `given` and the shapes of the inputs — in step mode, of the kept state
/// (`state_shape(i)`, `None` when input `i` holds none) — ([`bind_sizes`]),
/// then sizes every buffer, grid and arena slot and checks the ranges
/// ([`size_call`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare<'a>(
    plan: &Plan,
    program: &'a Program,
    is_state: &[bool],
    step: bool,
    state_shape: impl Fn(usize) -> Option<&'a [usize]>,
    inputs: &'a BTreeMap<String, Tensor>,
    given: &Bindings,
    out: CallSizes,
) -> Result<(), RuntimeError> {
    check_inputs(plan, is_state, step, |i| state_shape(i).is_some(), inputs)?;
    let shape = |i: usize| -> &'a [usize] {
        if step && is_state[i] {
            return state_shape(i).unwrap_or(&[]);
        }
        inputs.get(&plan.inputs[i].name).map_or(&[], |t| &t.shape)
    };
    bind_sizes(
        plan, program, is_state, step, shape, given, out.sizes, out.known,
    )?;
    size_call(plan, program, out)
}

/// Evaluates buffer sizes, grids and range checks under the bound sizes,
/// and the bytes each arena slot needs.
fn size_call(plan: &Plan, program: &Program, out: CallSizes) -> Result<(), RuntimeError> {
    let sizes: &[i64] = out.sizes;
    for (b, numel) in program.numel.iter().enumerate() {
        let n = numel.eval_usize(sizes)?;
        let sz = plan.buffers[b].ty.dtype.size_bytes();
        out.bytes[b] = n
            .checked_mul(sz)
            .ok_or_else(|| DimError::Overflow(numel.dim().to_string()))?;
    }
    for (k, grid) in program.grids.iter().enumerate() {
        out.blocks[k] = grid_blocks(grid, sizes)?;
    }
    for g in &program.guards {
        let (v, l) = (g.value.eval(sizes)?, g.limit.eval(sizes)?);
        if v > l {
            let sizes: Vec<String> = plan
                .symbols
                .iter()
                .zip(sizes)
                .map(|(s, v)| format!("{s}={v}"))
                .collect();
            return Err(RuntimeError::OutOfRange {
                kernel: plan.kernels[g.kernel].name.clone(),
                what: g.what.clone(),
                value: v,
                limit: l,
                sizes: sizes.join(", "),
            });
        }
    }
    out.slot_bytes.fill(0);
    for (b, buf) in plan.buffers.iter().enumerate() {
        if let Storage::Temp { slot } = buf.storage {
            out.slot_bytes[slot] = out.slot_bytes[slot].max(out.bytes[b]);
        }
    }
    Ok(())
}

/// A shape of symbolic dims under `sizes`.
pub(crate) fn eval_shape(dims: &[SymDim], sizes: &[i64]) -> Result<Vec<usize>, RuntimeError> {
    Ok(dims
        .iter()
        .map(|d| d.eval_usize(sizes))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The names of the state inputs (inputs some output aliases), in input order.
pub(crate) fn state_names(plan: &Plan, is_state: &[bool]) -> Vec<String> {
    plan.inputs
        .iter()
        .zip(is_state)
        .filter(|(_, s)| **s)
        .map(|(i, _)| i.name.clone())
        .collect()
}

/// The input index of state `name`.
pub(crate) fn state_index(
    plan: &Plan,
    is_state: &[bool],
    name: &str,
) -> Result<usize, RuntimeError> {
    plan.inputs
        .iter()
        .position(|i| i.name == name)
        .filter(|&i| is_state[i])
        .ok_or_else(|| RuntimeError::NotState {
            name: name.to_string(),
            states: state_names(plan, is_state).join(", "),
        })
}

/// Every state's input index, shape and bytes under `sizes`; a symbol of a
/// state's shape missing from `sizes` is [`RuntimeError::StateShape`].
pub(crate) fn state_shapes(
    plan: &Plan,
    is_state: &[bool],
    sizes: &Bindings,
) -> Result<Vec<(usize, Vec<usize>, usize)>, RuntimeError> {
    let mut out = Vec::new();
    for (i, pi) in plan.inputs.iter().enumerate() {
        if !is_state[i] {
            continue;
        }
        let shape = pi
            .ty
            .eval_shape(sizes)
            .map_err(|source| RuntimeError::StateShape {
                name: pi.name.clone(),
                source,
            })?;
        let bytes = shape.iter().product::<usize>() * pi.ty.dtype.size_bytes();
        out.push((i, shape, bytes));
    }
    Ok(out)
}

/// Checks `value` may become state input `i` (`name`): its dtype, rank and
/// constant dims; returns its size in bytes.
pub(crate) fn check_state_value(
    plan: &Plan,
    i: usize,
    name: &str,
    value: &Tensor,
) -> Result<usize, RuntimeError> {
    let ty = &plan.inputs[i].ty;
    let n: usize = value.shape.iter().product();
    if value.dtype() != ty.dtype || value.rank() != ty.rank() || value.data.len() != n {
        return Err(RuntimeError::StateType {
            name: name.to_string(),
            got: format!("{}{:?}", value.dtype(), value.shape),
            expected: ty.to_string(),
        });
    }
    let mut b = Bindings::new();
    kiln_ir::types::bind_symbols([(ty.shape.as_slice(), value.shape.as_slice())], &mut b).map_err(
        |source| RuntimeError::StateShape {
            name: name.to_string(),
            source,
        },
    )?;
    Ok(n * ty.dtype.size_bytes())
}
