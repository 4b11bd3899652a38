//! The graph builder behind the DSL: owns the graph under construction,
//! records the first error with the Rust source location of the DSL call
//! that caused it, and keeps a scope stack for node locations.

use crate::graph::{Graph, GraphError, Value};
use crate::literal::Literal;
use crate::op::Op;
use crate::types::{DType, Shape, TensorType};
use crate::Dim;
use std::cell::RefCell;
use std::panic::Location;
use std::rc::Rc;

use super::var::Var;

/// A model-building error: what went wrong, the DSL call (file:line:col) that
/// did it, and the model scope (e.g. `layers.3.attn`) it was in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at {caller}{})", scope.as_deref().map(|s| format!(", in {s}")).unwrap_or_default())]
pub struct BuildError {
    pub message: String,
    pub caller: String,
    pub scope: Option<String>,
}

pub(crate) struct State {
    pub(crate) graph: Graph,
    pub(crate) error: Option<BuildError>,
    scopes: Vec<String>,
}

/// Builds a [`Graph`] with model-like code.
///
/// ```
/// use kiln_ir::dsl::ModelBuilder;
/// use kiln_ir::{DType, shape};
///
/// let b = ModelBuilder::new("mlp");
/// let x = b.input("x", DType::F32, shape!["seq", 16]);
/// let w = b.param("w", DType::F32, shape![16, 32]);
/// let bias = b.param("b", DType::F32, shape![32]);
/// let y = (x.matmul(&w) + &bias).silu().softmax(-1);
/// b.output("y", &y);
/// let graph = b.finish().unwrap();
/// assert_eq!(graph.outputs().len(), 1);
/// ```
///
/// Ops never panic on shape or dtype errors: the first error is recorded with
/// the caller's source location and returned by [`ModelBuilder::finish`]; ops
/// after it produce placeholder values so model code can run to the end.
#[derive(Clone)]
pub struct ModelBuilder {
    pub(crate) state: Rc<RefCell<State>>,
}

/// Restores the scope stack when dropped (see [`ModelBuilder::scope`]).
pub struct ScopeGuard {
    state: Rc<RefCell<State>>,
    depth: usize,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        self.state.borrow_mut().scopes.truncate(self.depth);
    }
}

impl ModelBuilder {
    pub fn new(name: impl Into<String>) -> ModelBuilder {
        ModelBuilder {
            state: Rc::new(RefCell::new(State {
                graph: Graph::new(name),
                error: None,
                scopes: Vec::new(),
            })),
        }
    }

    /// Enters a named scope (`layers.3`, then `attn` gives `layers.3.attn`);
    /// nodes created while the guard lives get it as their location.
    pub fn scope(&self, name: impl AsRef<str>) -> ScopeGuard {
        let mut st = self.state.borrow_mut();
        let depth = st.scopes.len();
        st.scopes.push(name.as_ref().to_string());
        ScopeGuard {
            state: self.state.clone(),
            depth,
        }
    }

    fn current_scope(st: &State) -> Option<String> {
        (!st.scopes.is_empty()).then(|| st.scopes.join("."))
    }

    /// Records `message` as the build error unless one is already recorded.
    pub(crate) fn fail(&self, message: String, caller: &'static Location<'static>) {
        let mut st = self.state.borrow_mut();
        if st.error.is_none() {
            let scope = Self::current_scope(&st);
            st.error = Some(BuildError {
                message,
                caller: format!("{}:{}:{}", caller.file(), caller.line(), caller.column()),
                scope,
            });
        }
    }

    /// True once an error has been recorded.
    pub fn has_error(&self) -> bool {
        self.state.borrow().error.is_some()
    }

    pub(crate) fn var(&self, value: Value) -> Var {
        Var {
            builder: self.clone(),
            value,
        }
    }

    /// Adds an op; on failure records the error and returns a placeholder
    /// (the first operand, or a zero scalar for leaves).
    pub(crate) fn add_multi(
        &self,
        op: Op,
        operands: &[Value],
        caller: &'static Location<'static>,
    ) -> Vec<Var> {
        let result = {
            let mut st = self.state.borrow_mut();
            let scope = Self::current_scope(&st);
            st.graph.add_node(op, operands).map(|n| {
                st.graph.set_loc(n, scope);
                let k = st.graph.node(n).outputs.len();
                (0..k as u32).map(|p| Value::new(n, p)).collect::<Vec<_>>()
            })
        };
        match result {
            Ok(values) => values.into_iter().map(|v| self.var(v)).collect(),
            Err(e) => {
                self.fail(e.to_string(), caller);
                vec![self.placeholder(operands)]
            }
        }
    }

    pub(crate) fn add(
        &self,
        op: Op,
        operands: &[Value],
        caller: &'static Location<'static>,
    ) -> Var {
        self.add_multi(op, operands, caller).swap_remove(0)
    }

    fn placeholder(&self, operands: &[Value]) -> Var {
        if let Some(&v) = operands.first() {
            return self.var(v);
        }
        let mut st = self.state.borrow_mut();
        let v = st
            .graph
            .add(Op::Const(Literal::scalar(DType::F32, 0.0)), &[])
            .expect("a scalar constant always type-checks");
        drop(st);
        self.var(v)
    }

    /// Declares the next graph input.
    #[track_caller]
    pub fn input(&self, name: &str, dtype: DType, shape: Shape) -> Var {
        let caller = Location::caller();
        let r = self
            .state
            .borrow_mut()
            .graph
            .add_input(name, TensorType::new(dtype, shape));
        match r {
            Ok(v) => self.var(v),
            Err(e) => {
                self.fail(e.to_string(), caller);
                self.placeholder(&[])
            }
        }
    }

    /// A named weight.
    #[track_caller]
    pub fn param(&self, name: &str, dtype: DType, shape: Shape) -> Var {
        self.add(
            Op::Param {
                name: name.to_string(),
                ty: TensorType::new(dtype, shape),
            },
            &[],
            Location::caller(),
        )
    }

    /// A constant tensor.
    #[track_caller]
    pub fn constant(&self, literal: Literal) -> Var {
        self.add(Op::Const(literal), &[], Location::caller())
    }

    /// A scalar constant of `dtype`.
    #[track_caller]
    pub fn scalar(&self, dtype: DType, value: f64) -> Var {
        self.add(
            Op::Const(Literal::scalar(dtype, value)),
            &[],
            Location::caller(),
        )
    }

    /// `iota` of `dtype` and `shape`, counting along `axis`.
    #[track_caller]
    pub fn iota(&self, dtype: DType, shape: Shape, axis: usize) -> Var {
        self.add(
            Op::Iota {
                ty: TensorType::new(dtype, shape),
                axis,
            },
            &[],
            Location::caller(),
        )
    }

    /// The positions `offset, offset+1, …, offset+len-1` as a 1-D tensor of `dtype`.
    #[track_caller]
    pub fn arange(&self, dtype: DType, len: impl Into<Dim>, offset: impl Into<Dim>) -> Var {
        let caller = Location::caller();
        let iota = self.add(
            Op::Iota {
                ty: TensorType::new(dtype, vec![len.into()]),
                axis: 0,
            },
            &[],
            caller,
        );
        let offset = offset.into();
        if offset == Dim::constant(0) {
            return iota;
        }
        match offset.as_const() {
            Some(c) => iota.add_scalar_at(c as f64, caller),
            None => {
                // A symbolic offset: an iota over `offset+len` sliced from `offset`.
                let total = &offset + &iota.shape()[0];
                let long = self.add(
                    Op::Iota {
                        ty: TensorType::new(dtype, vec![total.clone()]),
                        axis: 0,
                    },
                    &[],
                    caller,
                );
                long.slice_at(0, offset, total, caller)
            }
        }
    }

    /// Declares a named result.
    #[track_caller]
    pub fn output(&self, name: &str, value: &Var) {
        let r = self.state.borrow_mut().graph.add_output(name, value.value);
        if let Err(e) = r {
            self.fail(e.to_string(), Location::caller());
        }
    }

    /// Declares a named result that updates the input `alias` in place (caches, state).
    #[track_caller]
    pub fn output_alias(&self, name: &str, value: &Var, alias: &str) {
        let r = self
            .state
            .borrow_mut()
            .graph
            .add_output_alias(name, value.value, alias);
        if let Err(e) = r {
            self.fail(e.to_string(), Location::caller());
        }
    }

    /// `scan`: runs `body` along `axis` of `xs`, carrying `init` (see [`crate::ScanOp`]).
    ///
    /// `body(builder, carries, x_slices, invariants)` returns the new carries
    /// and the per-step outputs; the scan returns the final carries and the
    /// per-step outputs stacked along `axis`.
    #[track_caller]
    pub fn scan<F>(
        &self,
        init: &[&Var],
        xs: &[&Var],
        invariants: &[&Var],
        axis: usize,
        reverse: bool,
        body: F,
    ) -> (Vec<Var>, Vec<Var>)
    where
        F: FnOnce(&ModelBuilder, &[Var], &[Var], &[Var]) -> (Vec<Var>, Vec<Var>),
    {
        let caller = Location::caller();
        let sub = ModelBuilder::new("step");
        let decl = |prefix: &str, i: usize, t: TensorType| {
            sub.input(&format!("{prefix}{i}"), t.dtype, t.shape)
        };
        let carries: Vec<Var> = init
            .iter()
            .enumerate()
            .map(|(i, v)| decl("c", i, v.ty()))
            .collect();
        let slices: Vec<Var> = xs
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut t = v.ty();
                if axis < t.rank() {
                    t.shape.remove(axis);
                }
                decl("x", i, t)
            })
            .collect();
        let invs: Vec<Var> = invariants
            .iter()
            .enumerate()
            .map(|(i, v)| decl("k", i, v.ty()))
            .collect();
        let (new_carries, ys) = body(&sub, &carries, &slices, &invs);
        for (i, c) in new_carries.iter().enumerate() {
            sub.output(&format!("c{i}"), c);
        }
        for (i, y) in ys.iter().enumerate() {
            sub.output(&format!("y{i}"), y);
        }
        let nc = init.len();
        let body_graph = match sub.finish() {
            Ok(g) => g,
            Err(e) => {
                self.fail(format!("in scan body: {e}"), caller);
                let ph = self.placeholder(&[]);
                return (vec![ph.clone(); nc], vec![ph; ys.len()]);
            }
        };
        let operands: Vec<Value> = init
            .iter()
            .chain(xs)
            .chain(invariants)
            .map(|v| v.value)
            .collect();
        let op = Op::Scan(crate::op::ScanOp {
            body: std::sync::Arc::new(body_graph),
            num_carry: nc,
            num_xs: xs.len(),
            axis,
            reverse,
        });
        let mut results = self.add_multi(op, &operands, caller);
        if results.len() != nc + ys.len() {
            let ph = results[0].clone();
            return (vec![ph.clone(); nc], vec![ph; ys.len()]);
        }
        let ys_out = results.split_off(nc);
        (results, ys_out)
    }

    /// Finishes the graph: the first recorded error, or the verified graph.
    pub fn finish(self) -> Result<Graph, BuildError> {
        let st = self.state.borrow();
        if let Some(e) = &st.error {
            return Err(e.clone());
        }
        if let Err(e) = crate::verify::verify(&st.graph) {
            return Err(BuildError {
                message: e.to_string(),
                caller: "finish".into(),
                scope: None,
            });
        }
        Ok(st.graph.clone())
    }

    /// The graph built so far (for inspection while building).
    pub fn graph(&self) -> Graph {
        self.state.borrow().graph.clone()
    }
}

impl From<GraphError> for BuildError {
    fn from(e: GraphError) -> Self {
        BuildError {
            message: e.to_string(),
            caller: "graph".into(),
            scope: None,
        }
    }
}
