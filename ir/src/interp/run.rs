//! The graph walk: checking and binding a graph's inputs and parameters,
//! then evaluating its live nodes in dependency order, checking every result
//! against the node's declared type.

use super::dispatch::apply;
use super::error::InterpError;
use super::index::numel;
use super::value::{describe, storage_is, storage_name_for};
use super::{EvalOptions, Precision};
use crate::dim::Bindings;
use crate::graph::{Graph, Node, NodeId};
use crate::op::Op;
use crate::tensor::{Tensor, TensorData};
use crate::types::TensorType;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Whether a checked tensor is a graph input or a parameter (for errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Input,
    Param,
}

fn type_error(role: Role, name: &str, ty: &TensorType, got: String, reason: String) -> InterpError {
    let (name, expected) = (name.to_string(), ty.clone());
    match role {
        Role::Input => InterpError::InputType {
            name,
            expected,
            got,
            reason,
        },
        Role::Param => InterpError::ParamType {
            name,
            expected,
            got,
            reason,
        },
    }
}

/// Checks a tensor's data length, storage type and rank against `ty`.
/// Declared precision needs exactly the dtype; F64 precision also accepts
/// f64 storage for a float dtype.
pub(crate) fn check_tensor(
    role: Role,
    name: &str,
    ty: &TensorType,
    t: &Tensor,
    p: Precision,
) -> Result<(), InterpError> {
    let fail = |reason: String| Err(type_error(role, name, ty, describe(t), reason));
    match numel(&t.shape) {
        Ok(n) if n == t.data.len() => {}
        Ok(n) => {
            return fail(format!(
                "its data holds {} elements but the shape needs {n}",
                t.data.len()
            ))
        }
        Err(_) => return fail("its shape has too many elements".into()),
    }
    let storage_ok = match (&t.data, p) {
        (TensorData::F64(_), Precision::F64) => ty.dtype.is_float(),
        (TensorData::F64(_), Precision::Declared) => false,
        (d, _) => d.dtype() == ty.dtype,
    };
    if !storage_ok {
        let why = if matches!(t.data, TensorData::F64(_)) {
            "f64 storage is accepted only in F64 precision, for a float dtype".to_string()
        } else {
            format!("the dtype is {}, not {}", t.data.dtype(), ty.dtype)
        };
        return fail(why);
    }
    if t.rank() != ty.rank() {
        return fail(format!("the rank is {}, not {}", t.rank(), ty.rank()));
    }
    Ok(())
}

/// One tensor whose shape binds symbols: who it is, its declared type, and
/// its actual storage and shape.
pub(crate) struct ShapeItem<'a> {
    pub role: Role,
    pub name: &'a str,
    pub ty: &'a TensorType,
    pub storage: &'static str,
    pub shape: &'a [usize],
}

impl ShapeItem<'_> {
    fn fail(&self, reason: String) -> InterpError {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        let got = format!("{}[{}]", self.storage, dims.join(","));
        type_error(self.role, self.name, self.ty, got, reason)
    }
}

/// Binds the symbols of the declared shapes from the actual ones (and checks
/// the dims already bound). Dims with one unknown symbol are solved first, so
/// `past+seq` is solved once `past` is known from another tensor.
pub(crate) fn unify_all(items: &[ShapeItem<'_>], b: &mut Bindings) -> Result<(), InterpError> {
    let mut pending: Vec<(usize, usize)> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if it.ty.rank() != it.shape.len() {
            return Err(it.fail(format!(
                "the rank is {}, not {}",
                it.shape.len(),
                it.ty.rank()
            )));
        }
        pending.extend((0..it.shape.len()).map(|a| (i, a)));
    }
    loop {
        let before = pending.len();
        let mut still = Vec::new();
        let mut last = None;
        for (i, a) in pending {
            let it = &items[i];
            match it.ty.shape[a].unify(it.shape[a] as i64, b) {
                Ok(()) => {}
                Err(e @ crate::dim::DimError::Unsolvable { .. }) => {
                    last = Some((i, a, e));
                    still.push((i, a));
                }
                Err(e) => return Err(it.fail(format!("axis {a}: {e}"))),
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if still.len() == before {
            let (i, a, e) = last.expect("an unsolved dim carries its error");
            return Err(items[i].fail(format!("axis {a}: {e}")));
        }
        pending = still;
    }
}

/// `n5 `gather` at layers.0.emb`: how errors name a node.
pub(crate) fn node_place(id: NodeId, node: &Node) -> String {
    match &node.loc {
        Some(loc) => format!("n{} `{}` at {loc}", id.index(), node.op.name()),
        None => format!("n{} `{}`", id.index(), node.op.name()),
    }
}

/// A graph prepared for (repeated) evaluation: its live nodes in order, each
/// operand as a (step, port) reference, and use counts so values are dropped
/// after their last use.
pub(crate) struct Plan<'g> {
    graph: &'g Graph,
    /// The signature's inputs first, then the live nodes in dependency order.
    steps: Vec<NodeId>,
    args: Vec<Vec<(usize, usize)>>,
    uses: Vec<Vec<usize>>,
    outputs: Vec<(usize, usize)>,
}

impl<'g> Plan<'g> {
    pub(crate) fn new(graph: &'g Graph) -> Result<Plan<'g>, InterpError> {
        let broken =
            |m: String| InterpError::operands(format!("graph @{} is malformed: {m}", graph.name));
        let order = graph.topo_order();
        let mut live: HashSet<NodeId> = graph.outputs().iter().map(|o| o.value.node).collect();
        for &n in order.iter().rev() {
            if live.contains(&n) {
                live.extend(graph.operands(n).into_iter().map(|v| v.node));
            }
        }
        let inputs: HashSet<NodeId> = graph.inputs().iter().copied().collect();
        let mut steps: Vec<NodeId> = graph.inputs().to_vec();
        steps.extend(
            order
                .into_iter()
                .filter(|n| live.contains(n) && !inputs.contains(n)),
        );
        let mut pos: HashMap<NodeId, usize> = HashMap::new();
        let mut args = Vec::with_capacity(steps.len());
        let mut uses: Vec<Vec<usize>> = Vec::with_capacity(steps.len());
        for (s, &n) in steps.iter().enumerate() {
            let node = graph
                .try_node(n)
                .ok_or_else(|| broken(format!("n{} is missing", n.index())))?;
            if s >= graph.inputs().len() && matches!(node.op, Op::Input { .. }) {
                return Err(broken(format!(
                    "input node n{} is not in the signature",
                    n.index()
                )));
            }
            let mut a = Vec::new();
            for v in graph.operands(n) {
                let (j, port) = (pos.get(&v.node).copied(), v.port as usize);
                match j {
                    Some(j) if port < uses[j].len() => {
                        uses[j][port] += 1;
                        a.push((j, port));
                    }
                    _ => {
                        return Err(broken(format!(
                            "n{} uses {v:?}, which is not computed before it",
                            n.index()
                        )))
                    }
                }
            }
            args.push(a);
            uses.push(vec![0; node.outputs.len()]);
            pos.insert(n, s);
        }
        let mut outputs = Vec::new();
        for o in graph.outputs() {
            match pos.get(&o.value.node) {
                Some(&j) if (o.value.port as usize) < uses[j].len() => {
                    uses[j][o.value.port as usize] += 1;
                    outputs.push((j, o.value.port as usize));
                }
                _ => {
                    return Err(broken(format!(
                        "output `{}` refers to a missing value",
                        o.name
                    )))
                }
            }
        }
        Ok(Plan {
            graph,
            steps,
            args,
            uses,
            outputs,
        })
    }

    /// The live parameters, by name.
    pub(crate) fn params(&self) -> BTreeMap<&'g str, &'g TensorType> {
        self.steps
            .iter()
            .filter_map(|&n| match &self.graph.node(n).op {
                Op::Param { name, ty } => Some((name.as_str(), ty)),
                _ => None,
            })
            .collect()
    }

    /// Evaluates the graph on `inputs` (signature order, already bound into
    /// `b`) and prepared `params`; returns the outputs in order.
    pub(crate) fn run<'x>(
        &self,
        inputs: Vec<Cow<'x, Tensor>>,
        params: &'x BTreeMap<String, Cow<'x, Tensor>>,
        b: &Bindings,
        opts: &EvalOptions,
    ) -> Result<Vec<Tensor>, InterpError> {
        let g = self.graph;
        let p = opts.precision;
        if inputs.len() != g.inputs().len() {
            return Err(InterpError::InputCount {
                graph: g.name.clone(),
                expected: g.inputs().len(),
                got: inputs.len(),
            });
        }
        let mut vals: Vec<Vec<Option<Cow<'x, Tensor>>>> =
            self.uses.iter().map(|u| vec![None; u.len()]).collect();
        let mut left = self.uses.clone();
        for (i, (t, (name, ty))) in inputs
            .into_iter()
            .zip(g.input_names().zip(g.input_types()))
            .enumerate()
        {
            check_tensor(Role::Input, name, &ty, &t, p)?;
            let want = ty.eval_shape(b).map_err(|e| InterpError::Dim {
                place: format!("input `{name}`"),
                source: e,
            })?;
            if want != t.shape {
                let reason = format!("the shape is {:?}, expected {want:?} under {b:?}", t.shape);
                return Err(type_error(Role::Input, name, &ty, describe(&t), reason));
            }
            vals[i][0] = Some(t);
        }
        for s in g.inputs().len()..self.steps.len() {
            let id = self.steps[s];
            let node = g.node(id);
            let results: Vec<Cow<'x, Tensor>> = match &node.op {
                Op::Param { name, .. } => {
                    let t = params.get(name).ok_or_else(|| InterpError::MissingParam {
                        name: name.clone(),
                        expected: node.outputs[0].clone(),
                    })?;
                    vec![Cow::Borrowed(&**t)]
                }
                op => {
                    let operands: Vec<&Tensor> = self.args[s]
                        .iter()
                        .map(|&(j, port)| {
                            vals[j][port]
                                .as_deref()
                                .expect("operands are live until their last use")
                        })
                        .collect();
                    apply(op, &operands, b, opts)
                        .map_err(|e| e.within(&node_place(id, node)))?
                        .into_iter()
                        .map(Cow::Owned)
                        .collect()
                }
            };
            check_results(id, node, &results, b, p)?;
            for &(j, port) in &self.args[s] {
                left[j][port] -= 1;
                if left[j][port] == 0 {
                    vals[j][port] = None;
                }
            }
            for (port, r) in results.into_iter().enumerate() {
                if self.uses[s][port] > 0 {
                    vals[s][port] = Some(r);
                }
            }
        }
        let mut out = Vec::with_capacity(self.outputs.len());
        for &(j, port) in &self.outputs {
            left[j][port] -= 1;
            let v = if left[j][port] == 0 {
                vals[j][port].take()
            } else {
                vals[j][port].clone()
            };
            out.push(v.expect("outputs are live until the end").into_owned());
        }
        Ok(out)
    }
}

/// Checks an op's results against the node's declared types under `b`.
fn check_results(
    id: NodeId,
    node: &Node,
    results: &[Cow<'_, Tensor>],
    b: &Bindings,
    p: Precision,
) -> Result<(), InterpError> {
    let place = || node_place(id, node);
    if results.len() != node.outputs.len() {
        return Err(InterpError::ResultMismatch {
            place: place(),
            expected: format!("{} result(s)", node.outputs.len()),
            got: format!("{} result(s)", results.len()),
        });
    }
    for (ty, r) in node.outputs.iter().zip(results) {
        let shape = ty.eval_shape(b).map_err(|e| InterpError::Dim {
            place: place(),
            source: e,
        })?;
        if !storage_is(&r.data, ty.dtype, p)
            || r.shape != shape
            || r.data.len() != shape.iter().product::<usize>()
        {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            return Err(InterpError::ResultMismatch {
                place: place(),
                expected: format!(
                    "{ty} = {}[{}]",
                    storage_name_for(ty.dtype, p),
                    dims.join(",")
                ),
                got: describe(r),
            });
        }
    }
    Ok(())
}
