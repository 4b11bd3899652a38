//! The reference interpreter: the semantic oracle that every optimization and
//! every compiled kernel is tested against.
//!
//! It evaluates a [`Graph`] on host [`Tensor`]s with straightforward loops,
//! aiming first at being obviously correct, then at being fast enough to run
//! small models in tests.
//!
//! # Evaluating a graph
//!
//! [`eval`] (inputs and outputs by name), [`eval_positional`] (signature
//! order) and [`eval_with`] (with [`EvalOptions`]) all:
//!
//! 1. run [`crate::verify()`] — a malformed graph is an [`InterpError::Verify`];
//! 2. check every input: present, no unknown names, the declared dtype (see
//!    [`Precision`] for f64 storage), rank and shape; the size symbols
//!    (`seq`, `past`, …) are bound by unifying the declared shapes with the
//!    actual ones ([`crate::Dim::unify`]; `past+seq` is solved once `past` is
//!    known), and a conflict names the input and axis;
//! 3. look up every parameter the outputs depend on in the [`ParamSource`]
//!    and check it the same way (a parameter may bind symbols too);
//! 4. evaluate the nodes the outputs depend on, in dependency order, dropping
//!    each value after its last use, and check every result against the
//!    node's declared type with its dims evaluated under the bindings — a
//!    mismatch is an [`InterpError::ResultMismatch`], never silently accepted.
//!
//! # Semantics
//!
//! Each op family documents its semantics in its module:
//! [`elementwise`] (unary, binary, compare, select, cast; broadcasting,
//! integer wrapping, NaN rules), [`reduce`], [`shape_ops`] (reshape, permute,
//! broadcast, slice, concat, pad, gather, iota, const), [`matmul`] and
//! [`scan`] (scan and fused bodies).
//!
//! Floats are computed in f64 from exact operand values; in
//! [`Precision::Declared`] every op's result is rounded once to its declared
//! dtype (f16/bf16 to nearest even, see [`round_f16`], [`round_bf16`]);
//! reductions and matmul accumulate in f64 and round once. In
//! [`Precision::F64`] nothing is rounded, which is how the interpreter
//! checks itself (and any f32 path) against double precision.

mod attention;
mod dispatch;
pub mod elementwise;
mod error;
mod index;
mod linear_scan;
pub mod matmul;
pub mod reduce;
mod run;
mod saq;
pub mod scan;
pub mod shape_ops;
mod value;

pub use error::InterpError;
pub use value::{round_bf16, round_f16};

use crate::dim::Bindings;
use crate::graph::Graph;
use crate::op::Op;
use crate::tensor::Tensor;
use run::{check_tensor, unify_all, Plan, Role, ShapeItem};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// The arithmetic precision of an evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Every float op's result is rounded to its declared dtype (f32, f16,
    /// bf16), as a compiled kernel stores it. Float tensors are stored in
    /// their dtype; inputs must have exactly the declared dtype.
    #[default]
    Declared,
    /// Every float tensor is computed and stored in f64
    /// ([`crate::TensorData::F64`]) with no rounding, whatever its declared
    /// float dtype. Float inputs and parameters may be given in their dtype
    /// or in f64 storage; they are converted to f64 first. Outputs of float
    /// type come back in f64 storage.
    F64,
}

/// Options of an evaluation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvalOptions {
    pub precision: Precision,
    /// Sizes no input shape determines, given by the caller (`past`, when a
    /// KV cache is a fixed-capacity buffer and `past` says how much is filled).
    /// Sizes that inputs do determine are checked against these.
    pub sizes: Bindings,
}

impl EvalOptions {
    /// Options for an evaluation in double precision.
    pub fn f64() -> EvalOptions {
        EvalOptions {
            precision: Precision::F64,
            ..EvalOptions::default()
        }
    }
}

/// Where the interpreter finds the model's parameters (weights), by name.
pub trait ParamSource {
    /// The tensor of parameter `name`, if there is one.
    fn param(&self, name: &str) -> Option<&Tensor>;

    /// Parameter `name` as its dtype, shape and little-endian bytes (the
    /// layout [`Tensor::to_bytes`] gives): what an executor copies into its
    /// own memory, for a buffer `declared` with that dtype. The default
    /// converts [`ParamSource::param`]; a store that holds the bytes already
    /// (a mapped file) lends them, so loading makes no converted copy on the
    /// way, and a store that holds them in the `declared` dtype may lend
    /// them as stored instead of as [`ParamSource::param`] would convert them.
    fn param_bytes(&self, name: &str, declared: crate::DType) -> Option<ParamBytes<'_>> {
        let _ = declared;
        self.param(name).map(|t| ParamBytes {
            dtype: t.dtype(),
            shape: t.shape.clone(),
            bytes: std::borrow::Cow::Owned(t.to_bytes()),
        })
    }

    /// The executor has its own copy of parameter `name` now. A store that
    /// lends mapped bytes may drop their pages from memory (the file stays
    /// mapped; a later read faults them back in), so loading a model holds
    /// about one copy of the weights at a time instead of two. The default
    /// does nothing.
    fn release(&self, name: &str) {
        let _ = name;
    }
}

/// See [`ParamSource::param_bytes`].
pub struct ParamBytes<'a> {
    pub dtype: crate::DType,
    pub shape: Vec<usize>,
    pub bytes: std::borrow::Cow<'a, [u8]>,
}

impl ParamSource for HashMap<String, Tensor> {
    fn param(&self, name: &str) -> Option<&Tensor> {
        self.get(name)
    }
}

impl ParamSource for BTreeMap<String, Tensor> {
    fn param(&self, name: &str) -> Option<&Tensor> {
        self.get(name)
    }
}

/// Evaluates `graph` in [`Precision::Declared`]; inputs and outputs by name.
pub fn eval(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    params: &dyn ParamSource,
) -> Result<BTreeMap<String, Tensor>, InterpError> {
    eval_with(graph, inputs, params, &EvalOptions::default())
}

/// Evaluates `graph` with `opts`; inputs and outputs by name. Every input of
/// the signature must be given and no other.
pub fn eval_with(
    graph: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    params: &dyn ParamSource,
    opts: &EvalOptions,
) -> Result<BTreeMap<String, Tensor>, InterpError> {
    if let Some(name) = inputs.keys().find(|n| graph.input(n).is_none()) {
        return Err(InterpError::UnexpectedInput {
            name: name.clone(),
            graph: graph.name.clone(),
        });
    }
    let mut ordered = Vec::with_capacity(graph.inputs().len());
    for (name, ty) in graph.input_names().zip(graph.input_types()) {
        match inputs.get(name) {
            Some(t) => ordered.push(t),
            None => {
                return Err(InterpError::MissingInput {
                    name: name.to_string(),
                    expected: ty,
                })
            }
        }
    }
    let outs = eval_core(graph, ordered, params, opts)?;
    Ok(graph
        .outputs()
        .iter()
        .map(|o| o.name.clone())
        .zip(outs)
        .collect())
}

/// Evaluates `graph` with `opts` on `inputs` in signature order; returns the
/// outputs in order.
pub fn eval_positional(
    graph: &Graph,
    inputs: &[Tensor],
    params: &dyn ParamSource,
    opts: &EvalOptions,
) -> Result<Vec<Tensor>, InterpError> {
    if inputs.len() != graph.inputs().len() {
        return Err(InterpError::InputCount {
            graph: graph.name.clone(),
            expected: graph.inputs().len(),
            got: inputs.len(),
        });
    }
    eval_core(graph, inputs.iter().collect(), params, opts)
}

/// Float tensors to f64 storage in F64 precision; others as they are.
fn prepare<'a>(t: &'a Tensor, opts: &EvalOptions) -> Cow<'a, Tensor> {
    match opts.precision {
        Precision::F64 => value::to_f64_storage(Cow::Borrowed(t)),
        Precision::Declared => Cow::Borrowed(t),
    }
}

fn eval_core(
    graph: &Graph,
    inputs: Vec<&Tensor>,
    params: &dyn ParamSource,
    opts: &EvalOptions,
) -> Result<Vec<Tensor>, InterpError> {
    crate::verify::verify(graph)?;
    let plan = Plan::new(graph)?;
    let p = opts.precision;
    let input_types = graph.input_types();
    let input_names: Vec<&str> = graph.input_names().collect();
    let mut items: Vec<ShapeItem<'_>> = Vec::new();
    for ((name, ty), t) in input_names.iter().zip(&input_types).zip(&inputs) {
        check_tensor(Role::Input, name, ty, t, p)?;
        items.push(ShapeItem {
            role: Role::Input,
            name,
            ty,
            storage: value::storage_name(&t.data),
            shape: &t.shape,
        });
    }
    let live_params = plan.params();
    let mut found: Vec<(&str, &Tensor)> = Vec::with_capacity(live_params.len());
    for (&name, &ty) in &live_params {
        let t = params
            .param(name)
            .ok_or_else(|| InterpError::MissingParam {
                name: name.to_string(),
                expected: ty.clone(),
            })?;
        check_tensor(Role::Param, name, ty, t, p)?;
        items.push(ShapeItem {
            role: Role::Param,
            name,
            ty,
            storage: value::storage_name(&t.data),
            shape: &t.shape,
        });
        found.push((name, t));
    }
    let mut bindings = opts.sizes.clone();
    unify_all(&items, &mut bindings)?;
    let prepared: BTreeMap<String, Cow<'_, Tensor>> = found
        .into_iter()
        .map(|(name, t)| (name.to_string(), prepare(t, opts)))
        .collect();
    let inputs = inputs.into_iter().map(|t| prepare(t, opts)).collect();
    plan.run(inputs, &prepared, &bindings, opts)
}

/// Evaluates one op on concrete operands — what the optimizer's constant
/// folding uses. `bindings` gives the values of the size symbols in the op's
/// attributes (slice bounds, reshape shapes, …) and bodies.
///
/// The operands are checked with the op's type rule; `input` and `param`
/// cannot be evaluated on their own (they are bound by [`eval`]). In F64
/// precision float operands are converted to f64 storage first; in Declared
/// precision f64 storage is an error. Scan and fused bodies are verified.
/// Errors name the op (`` `gather` ``).
pub fn eval_op(
    op: &Op,
    operands: &[Tensor],
    bindings: &Bindings,
    opts: &EvalOptions,
) -> Result<Vec<Tensor>, InterpError> {
    let place = format!("`{}`", op.name());
    let at = |e: InterpError| e.within(&place);
    for (i, t) in operands.iter().enumerate() {
        if index::numel(&t.shape).ok() != Some(t.data.len()) {
            return Err(at(InterpError::operands(format!(
                "operand {i} holds {} elements but its shape is {:?}",
                t.data.len(),
                t.shape
            ))));
        }
    }
    if let Some(body) = op.body() {
        crate::verify::verify(body)
            .map_err(|e| at(InterpError::operands(format!("invalid body: {e}"))))?;
    }
    let prepared: Vec<Cow<'_, Tensor>> = operands.iter().map(|t| prepare(t, opts)).collect();
    let args: Vec<&Tensor> = prepared.iter().map(|t| &**t).collect();
    dispatch::apply(op, &args, bindings, opts).map_err(at)
}
