//! JSON form of graphs: a plain schema that other tools can read, which
//! round-trips exactly and is checked as strictly as the text form.
//!
//! ```json
//! {
//!   "name": "tiny",
//!   "nodes": [
//!     { "id": 0, "op": "input", "name": "tokens", "types": ["i32[seq]"] },
//!     { "id": 1, "op": "param", "name": "embed.weight", "types": ["f32[256,64]"] },
//!     { "id": 2, "op": "gather", "operands": [[1, 0], [0, 0]], "attrs": { "axis": 0 },
//!       "types": ["f32[seq,64]"], "loc": "embed" },
//!     { "id": 3, "op": "const", "value": [0.125], "types": ["f32[]"] },
//!     { "id": 4, "op": "scan", "operands": [...], "attrs": {...}, "types": [...],
//!       "body": { "name": "step", "nodes": [...], "outputs": [...] } }
//!   ],
//!   "outputs": [ { "name": "logits", "value": [3, 0], "alias": "k_cache" } ]
//! }
//! ```
//!
//! - Nodes are listed in dependency order; an operand `[id, port]` names a
//!   result of an earlier node. The printer numbers nodes in canonical order
//!   (inputs first); a reader accepts any distinct ids. Input nodes, in list
//!   order, are the graph's signature.
//! - Types and dims are strings in the text form's syntax (`f32[past+seq,4]`);
//!   a constant dim may also be a number.
//! - Attributes are those of the text form (see [`crate::text`]): numbers,
//!   booleans, dims, lists, dtype and type strings. A float attribute or
//!   literal element is a number when finite, else `"inf"`, `"-inf"`, `"nan"`
//!   or `"0x…"` (the raw bits of a NaN with a payload), as in the text form.
//! - `const` nodes hold their elements, row-major, in `value`.
//!
//! [`from_json`] rebuilds the graph through [`Graph::add_node`], checks every
//! declared type against the inferred one and verifies the result; anything
//! inconsistent is a [`JsonError`] that names the node and the problem.

use crate::graph::{Graph, GraphError, NodeId, Value};
use crate::literal::LiteralData;
use crate::op::Op;
use crate::text::attrs::{self, AttrKind, AttrValue, Attrs, OpName};
use crate::text::{format_float, limits, number, parse_dim, parse_type, MAX_BODY_DEPTH};
use crate::types::{DType, TensorType};
use crate::verify::{verify, VerifyError};
use crate::Dim;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as J};
use std::collections::HashMap;

/// Why a JSON text is not a valid graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON, or not of the schema (a missing field, a wrong kind of value).
    #[error("malformed graph JSON at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A field with a bad value: an unknown op, attribute or dtype, a bad type
    /// string, a bad literal. `path` names the node, as in
    /// `graph @g, node 4 (scan), body @step, node 2 (add)`.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: operand [{id}, {port}] is not a result of an earlier node")]
    UndefinedOperand { path: String, id: u64, port: u32 },
    #[error("{path}: node id {id} is used twice")]
    DuplicateId { path: String, id: u64 },
    /// The op's type rule rejects its operands.
    #[error("{path}: {message}")]
    Type { path: String, message: String },
    #[error("{path}: declared type(s) {declared} but the op gives {inferred}")]
    TypeMismatch {
        path: String,
        declared: String,
        inferred: String,
    },
    #[error("{0}")]
    Verify(#[from] VerifyError),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JGraph {
    name: String,
    nodes: Vec<JNode>,
    outputs: Vec<JOutput>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JNode {
    id: u64,
    op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    operands: Vec<(u64, u32)>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    attrs: Map<String, J>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Vec<J>>,
    types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<Box<JGraph>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JOutput {
    name: String,
    value: (u64, u32),
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alias: Option<String>,
}

// ---- writing ----

/// The JSON form of `graph`, pretty-printed (short lists stay on one line).
pub fn to_json(graph: &Graph) -> String {
    let v = serde_json::to_value(to_schema(graph)).unwrap_or(J::Null);
    let mut out = String::new();
    pretty(&v, 0, &mut out);
    out.push('\n');
    out
}

fn to_schema(g: &Graph) -> JGraph {
    let order = g.topo_order();
    let pos: HashMap<NodeId, u64> = order
        .iter()
        .enumerate()
        .map(|(i, &n)| (n, i as u64))
        .collect();
    let val = |v: Value| (pos[&v.node], v.port);
    let nodes = order
        .iter()
        .map(|&n| {
            let node = g.node(n);
            let (name, value) = match &node.op {
                Op::Input { name, .. } | Op::Param { name, .. } => (Some(name.clone()), None),
                Op::Const(lit) => (None, Some(literal_values(lit.dtype, &lit.data))),
                _ => (None, None),
            };
            JNode {
                id: pos[&n],
                op: node.op.name().to_string(),
                name,
                operands: g.operands(n).into_iter().map(val).collect(),
                attrs: attrs::op_attrs(&node.op)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), attr_json(&v)))
                    .collect(),
                value,
                types: node.outputs.iter().map(|t| t.to_string()).collect(),
                loc: node.loc.clone(),
                body: node.op.body().map(|b| Box::new(to_schema(b))),
            }
        })
        .collect();
    let outputs = g
        .outputs()
        .iter()
        .map(|o| JOutput {
            name: o.name.clone(),
            value: val(o.value),
            alias: o.alias.clone(),
        })
        .collect();
    JGraph {
        name: g.name.clone(),
        nodes,
        outputs,
    }
}

/// A float as a JSON number when finite, else the text form's spelling.
fn float_json(dtype: DType, v: f64) -> J {
    match serde_json::Number::from_f64(v) {
        Some(n) => J::Number(n),
        None => J::String(format_float(dtype, v)),
    }
}

fn dim_json(d: &Dim) -> J {
    match d.as_const() {
        Some(n) => J::from(n),
        None => J::String(d.to_string()),
    }
}

fn attr_json(v: &AttrValue) -> J {
    match v {
        AttrValue::Int(n) => J::from(*n),
        AttrValue::Bool(b) => J::Bool(*b),
        AttrValue::Dim(d) => dim_json(d),
        AttrValue::Ints(v) => J::Array(v.iter().map(|&n| J::from(n)).collect()),
        AttrValue::Shape(s) => J::Array(s.iter().map(dim_json).collect()),
        AttrValue::Float(f) => float_json(DType::I64, *f),
        AttrValue::Floats(v) => J::Array(v.iter().map(|&f| float_json(DType::I64, f)).collect()),
        other => J::String(other.to_string()),
    }
}

fn literal_values(dtype: DType, data: &LiteralData) -> Vec<J> {
    match data {
        LiteralData::Float(v) => v.iter().map(|&x| float_json(dtype, x)).collect(),
        LiteralData::Int(v) => v.iter().map(|&x| J::from(x)).collect(),
        LiteralData::Bool(v) => v.iter().map(|&x| J::Bool(x)).collect(),
    }
}

/// Pretty JSON, with arrays of scalars (and of short scalar arrays) on one line.
fn pretty(v: &J, level: usize, out: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    let flat = |v: &J| match v {
        J::Array(a) => a.iter().all(|x| !matches!(x, J::Array(_) | J::Object(_))),
        J::Object(_) => false,
        _ => true,
    };
    match v {
        J::Array(a) if a.iter().all(flat) => inline(v, out),
        J::Array(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                out.push_str(&pad(level + 1));
                pretty(x, level + 1, out);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(level));
            out.push(']');
        }
        J::Object(m) if m.is_empty() => out.push_str("{}"),
        J::Object(m) => {
            out.push_str("{\n");
            let mut fields: Vec<(&String, &J)> = m.iter().collect();
            fields.sort_by_key(|(k, _)| (key_rank(k), k.as_str()));
            for (i, (k, x)) in fields.into_iter().enumerate() {
                out.push_str(&pad(level + 1));
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(": ");
                pretty(x, level + 1, out);
                out.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(level));
            out.push('}');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).unwrap_or_default()),
    }
}

/// Fields print in schema order (then attribute keys in the text form's order).
fn key_rank(key: &str) -> usize {
    const ORDER: [&str; 27] = [
        "id",
        "op",
        "name",
        "nodes",
        "operands",
        "attrs",
        "value",
        "types",
        "loc",
        "body",
        "outputs",
        "alias",
        "axis",
        "axes",
        "keep_dims",
        "to",
        "shape",
        "perm",
        "start",
        "end",
        "low",
        "high",
        "num_carry",
        "num_xs",
        "reverse",
        "kind",
        "type",
    ];
    ORDER.iter().position(|k| *k == key).unwrap_or(ORDER.len())
}

/// A scalar, or an array of scalars and scalar arrays, on one line.
fn inline(v: &J, out: &mut String) {
    match v {
        J::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                inline(x, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).unwrap_or_default()),
    }
}

// ---- reading ----

/// Reads the JSON form, rebuilds the graph and verifies it.
pub fn from_json(text: &str) -> Result<Graph, JsonError> {
    let jg: JGraph = serde_json::from_str(text).map_err(|e| JsonError::Syntax {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let g = build(&jg, "", false, 0)?;
    verify(&g)?;
    Ok(g)
}

fn build(jg: &JGraph, outer: &str, is_body: bool, depth: usize) -> Result<Graph, JsonError> {
    let gpath = if is_body {
        format!("{outer}, body @{}", jg.name)
    } else {
        format!("graph @{}", jg.name)
    };
    let mut g = Graph::new(jg.name.clone());
    let mut ids: HashMap<u64, (NodeId, usize)> = HashMap::new();
    for jn in &jg.nodes {
        let path = format!("{gpath}, node {} ({})", jn.id, jn.op);
        let invalid = |message: String| JsonError::Invalid {
            path: path.clone(),
            message,
        };
        if ids.contains_key(&jn.id) {
            return Err(JsonError::DuplicateId { path, id: jn.id });
        }
        let declared = jn
            .types
            .iter()
            .map(|t| {
                let ty =
                    parse_type(t).map_err(|e| invalid(format!("type \"{t}\": {}", e.message)))?;
                limits::check_types(std::slice::from_ref(&ty)).map_err(&invalid)?;
                Ok(ty)
            })
            .collect::<Result<Vec<TensorType>, JsonError>>()?;
        let single = || match declared.as_slice() {
            [t] => Ok(t.clone()),
            _ => Err(invalid(format!("{} has exactly one type", jn.op))),
        };
        let name = || {
            jn.name
                .clone()
                .ok_or_else(|| invalid(format!("{} needs a \"name\"", jn.op)))
        };
        let class =
            attrs::classify(&jn.op).ok_or_else(|| invalid(format!("unknown op \"{}\"", jn.op)))?;
        if class != OpName::WithBody && jn.body.is_some() {
            return Err(invalid(format!("{} takes no body", jn.op)));
        }
        if !matches!(class, OpName::Input | OpName::Param) && jn.name.is_some() {
            return Err(invalid(format!("{} takes no \"name\"", jn.op)));
        }
        let leaf = matches!(class, OpName::Input | OpName::Param | OpName::Const);
        if leaf && !(jn.operands.is_empty() && jn.attrs.is_empty()) {
            return Err(invalid(format!(
                "{} takes no operands or attributes",
                jn.op
            )));
        }
        if class != OpName::Const && jn.value.is_some() {
            return Err(invalid(format!("{} takes no \"value\"", jn.op)));
        }
        let op = match class {
            OpName::Input => {
                let v = g
                    .add_input(name()?, single()?)
                    .map_err(|e| invalid(e.to_string()))?;
                finish(&mut g, jn, v.node, &mut ids);
                continue;
            }
            OpName::Param => {
                if is_body {
                    return Err(invalid("a body may not hold parameters".into()));
                }
                Op::Param {
                    name: name()?,
                    ty: single()?,
                }
            }
            OpName::Const => {
                let ty = single()?;
                let values = jn
                    .value
                    .as_ref()
                    .ok_or_else(|| invalid("const needs a \"value\"".into()))?;
                let texts: Vec<String> = values
                    .iter()
                    .map(element_text)
                    .collect::<Result<_, _>>()
                    .map_err(&invalid)?;
                let items: Vec<(&str, usize)> = texts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.as_str(), i))
                    .collect();
                let lit = number::build_literal(&ty, &items, 0).map_err(|(i, m)| {
                    invalid(if values.len() > 1 {
                        format!("value {i}: {m}")
                    } else {
                        m
                    })
                })?;
                Op::Const(lit)
            }
            OpName::Plain | OpName::WithBody => {
                let body = match (&jn.body, class) {
                    (Some(b), _) if depth + 1 >= MAX_BODY_DEPTH => {
                        return Err(invalid(format!(
                            "bodies nested too deeply (the limit is {MAX_BODY_DEPTH}, at {})",
                            b.name
                        )))
                    }
                    (Some(b), _) => Some(build(b, &path, true, depth + 1)?),
                    (None, OpName::WithBody) => {
                        return Err(invalid(format!("{} needs a \"body\"", jn.op)))
                    }
                    (None, _) => None,
                };
                let a = decode_attrs(&jn.op, &jn.attrs).map_err(&invalid)?;
                attrs::build_op(&jn.op, a, body).map_err(&invalid)?
            }
        };
        let operands = jn
            .operands
            .iter()
            .map(|&(id, port)| match ids.get(&id) {
                Some(&(node, n)) if (port as usize) < n => Ok(Value::new(node, port)),
                _ => Err(JsonError::UndefinedOperand {
                    path: path.clone(),
                    id,
                    port,
                }),
            })
            .collect::<Result<Vec<Value>, JsonError>>()?;
        let tys: Vec<&TensorType> = operands.iter().filter_map(|v| g.try_ty(*v)).collect();
        limits::check_op(&op, &tys).map_err(&invalid)?;
        let id = g.add_node(op, &operands).map_err(|e| match e {
            GraphError::Type(t) => JsonError::Type {
                path: path.clone(),
                message: t.to_string(),
            },
            other => invalid(other.to_string()),
        })?;
        let inferred = &g.node(id).outputs;
        limits::check_types(inferred).map_err(&invalid)?;
        if *inferred != declared {
            return Err(JsonError::TypeMismatch {
                path,
                declared: list(&declared),
                inferred: list(inferred),
            });
        }
        finish(&mut g, jn, id, &mut ids);
    }
    for o in &jg.outputs {
        let path = format!("{gpath}, output \"{}\"", o.name);
        let (id, port) = o.value;
        let v = match ids.get(&id) {
            Some(&(node, n)) if (port as usize) < n => Value::new(node, port),
            _ => return Err(JsonError::UndefinedOperand { path, id, port }),
        };
        let res = match &o.alias {
            Some(a) => g.add_output_alias(o.name.clone(), v, a.clone()),
            None => g.add_output(o.name.clone(), v),
        };
        res.map_err(|e| JsonError::Invalid {
            path,
            message: e.to_string(),
        })?;
    }
    if is_body {
        if g.outputs().is_empty() {
            return Err(JsonError::Invalid {
                path: gpath,
                message: "a body must return at least one value".into(),
            });
        }
        verify(&g)?;
    }
    Ok(g)
}

fn finish(g: &mut Graph, jn: &JNode, id: NodeId, ids: &mut HashMap<u64, (NodeId, usize)>) {
    g.set_loc(id, jn.loc.clone());
    ids.insert(jn.id, (id, g.node(id).outputs.len()));
}

fn list(ts: &[TensorType]) -> String {
    let v: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
    format!("[{}]", v.join(", "))
}

/// The text of a literal element or float attribute: a number's shortest
/// text, a bool, or a spelled-out special (`"nan"`).
fn element_text(v: &J) -> Result<String, String> {
    match v {
        J::Number(n) => Ok(n.to_string()),
        J::Bool(b) => Ok(b.to_string()),
        J::String(s) => Ok(s.clone()),
        other => Err(format!(
            "expected a number, a bool or a string, found {other}"
        )),
    }
}

fn decode_attrs(op: &str, m: &Map<String, J>) -> Result<Attrs, String> {
    let spec = attrs::spec(op);
    let mut values = Vec::with_capacity(m.len());
    for (k, v) in m {
        let Some(&(key, kind)) = spec.iter().find(|(s, _)| s == k) else {
            return Err(format!("unknown attribute \"{k}\" for {op}"));
        };
        let value = decode_attr(kind, v).ok_or_else(|| {
            format!("attribute \"{k}\": expected {}, found {v}", kind.expected())
        })??;
        values.push((key, value));
    }
    Ok(Attrs::new(op, values))
}

/// `None`: the JSON value has the wrong shape; `Some(Err)`: a bad value inside.
fn decode_attr(kind: AttrKind, v: &J) -> Option<Result<AttrValue, String>> {
    let int = |v: &J| {
        v.as_u64()
            .filter(|&n| n <= u32::MAX as u64)
            .map(|n| n as usize)
    };
    let dim = |v: &J| -> Option<Result<Dim, String>> {
        match v {
            J::Number(_) => Some(parse_dim(&v.as_i64()?.to_string()).map_err(|e| e.message)),
            J::String(s) => Some(parse_dim(s).map_err(|e| format!("dim \"{s}\": {}", e.message))),
            _ => None,
        }
    };
    let word = |v: &J| v.as_str().map(str::to_string);
    Some(Ok(match kind {
        AttrKind::Int => AttrValue::Int(int(v)?),
        AttrKind::Bool => AttrValue::Bool(v.as_bool()?),
        AttrKind::Dim => match dim(v)? {
            Ok(d) => AttrValue::Dim(d),
            Err(e) => return Some(Err(e)),
        },
        AttrKind::Ints => AttrValue::Ints(v.as_array()?.iter().map(int).collect::<Option<_>>()?),
        AttrKind::Shape => {
            let dims: Option<Result<Vec<Dim>, String>> = v.as_array()?.iter().map(dim).collect();
            match dims? {
                Ok(s) => AttrValue::Shape(s),
                Err(e) => return Some(Err(e)),
            }
        }
        AttrKind::DType => {
            let w = word(v)?;
            match DType::from_name(&w) {
                Some(d) => AttrValue::DType(d),
                None => return Some(Err(format!("unknown dtype \"{w}\""))),
            }
        }
        AttrKind::Type => match parse_type(&word(v)?) {
            Ok(t) => AttrValue::Type(t),
            Err(e) => return Some(Err(format!("type: {}", e.message))),
        },
        AttrKind::Float => {
            if matches!(v, J::Bool(_)) {
                return None;
            }
            match element_text(v).and_then(|t| number::parse_float(&t, DType::I64)) {
                Ok(f) => AttrValue::Float(f),
                Err(e) => return Some(Err(e)),
            }
        }
        AttrKind::Floats => {
            let mut out = Vec::new();
            for x in v.as_array()? {
                if matches!(x, J::Bool(_)) {
                    return None;
                }
                match element_text(x).and_then(|t| number::parse_float(&t, DType::I64)) {
                    Ok(f) => out.push(f),
                    Err(e) => return Some(Err(e)),
                }
            }
            AttrValue::Floats(out)
        }
        AttrKind::Kind => {
            let w = word(v)?;
            match crate::op::FusionKind::from_name(&w) {
                Some(k) => AttrValue::Kind(k),
                None => return Some(Err(format!("unknown fusion kind \"{w}\""))),
            }
        }
    }))
}
