//! The verifier: checks that a graph is well-formed — operands wired to
//! existing results in consecutive slots, result types that match the type
//! rules, names that are unique and printable, outputs and aliases that refer
//! to real values, one type per parameter name, and well-formed bodies.

use crate::graph::{Graph, NodeId};
use crate::infer::infer;
use crate::op::Op;
use std::collections::BTreeMap;

/// A verification failure, naming the node (by op, location and id) and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("in graph @{graph}, {place}: {message}")]
pub struct VerifyError {
    pub graph: String,
    pub place: String,
    pub message: String,
}

/// Is `s` a valid input name in the text form (`[A-Za-z_][A-Za-z0-9_.]*`)?
pub fn is_identifier(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Is `s` a valid size symbol (`[A-Za-z_][A-Za-z0-9_]*`, what dims parse)?
fn is_size_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn place(g: &Graph, n: NodeId) -> String {
    let node = g.node(n);
    match &node.loc {
        Some(loc) => format!("node n{} `{}` at {loc}", n.index(), node.op.name()),
        None => format!("node n{} `{}`", n.index(), node.op.name()),
    }
}

/// Verifies `graph` and, recursively, the bodies of its scan and fused nodes.
pub fn verify(graph: &Graph) -> Result<(), VerifyError> {
    verify_inner(graph, false)
}

fn verify_inner(g: &Graph, is_body: bool) -> Result<(), VerifyError> {
    let fail = |place: String, message: String| VerifyError {
        graph: g.name.clone(),
        place,
        message,
    };
    if !is_identifier(&g.name) {
        return Err(fail(
            "header".into(),
            format!("graph name `{}` is not an identifier", g.name),
        ));
    }
    let mut params: BTreeMap<&str, (&crate::TensorType, NodeId)> = BTreeMap::new();
    for n in g.node_ids() {
        let node = g.node(n);
        let operands = g.operands(n);
        // Slots must be 0..k without gaps (a removed edge would leave a hole).
        let slots = g.operand_slots(n);
        if slots != (0..slots.len() as u32).collect::<Vec<_>>() {
            return Err(fail(
                place(g, n),
                format!("operand slots {slots:?} are not consecutive"),
            ));
        }
        let mut tys = Vec::with_capacity(operands.len());
        for v in &operands {
            match g.try_ty(*v) {
                Some(t) => tys.push(t),
                None => return Err(fail(place(g, n), format!("operand {v:?} does not exist"))),
            }
        }
        for t in &node.outputs {
            for d in &t.shape {
                if let Some(bad) = d.symbols().into_iter().find(|s| !is_size_name(s)) {
                    return Err(fail(
                        place(g, n),
                        format!("size name `{bad}` in {t} is not an identifier"),
                    ));
                }
            }
        }
        let inferred = infer(&node.op, &tys).map_err(|e| fail(place(g, n), e.to_string()))?;
        if inferred != node.outputs {
            return Err(fail(
                place(g, n),
                format!(
                    "result types {:?} but the op gives {:?}",
                    node.outputs, inferred
                ),
            ));
        }
        match &node.op {
            Op::Input { name, .. } => {
                if !g.inputs().contains(&n) {
                    return Err(fail(
                        place(g, n),
                        "input node missing from the signature".into(),
                    ));
                }
                if !is_identifier(name) {
                    return Err(fail(
                        place(g, n),
                        format!("input name `{name}` is not an identifier"),
                    ));
                }
            }
            Op::Param { name, ty } => {
                if is_body {
                    return Err(fail(
                        place(g, n),
                        format!("parameter `{name}` inside a body; pass it as an operand"),
                    ));
                }
                if let Some((other, m)) = params.insert(name, (ty, n)) {
                    if other != ty {
                        return Err(fail(
                            place(g, n),
                            format!(
                                "parameter `{name}` is {ty} here and {other} at n{}",
                                m.index()
                            ),
                        ));
                    }
                }
            }
            Op::Scan(s) => verify_inner(&s.body, true)
                .map_err(|e| fail(place(g, n), format!("in its body: {e}")))?,
            Op::Fused(f) => verify_inner(&f.body, true)
                .map_err(|e| fail(place(g, n), format!("in its body: {e}")))?,
            _ => {}
        }
    }
    let mut names = std::collections::HashSet::new();
    for &i in g.inputs() {
        if !matches!(g.try_node(i).map(|n| &n.op), Some(Op::Input { .. })) {
            return Err(fail(
                "signature".into(),
                format!("n{} is not an input", i.index()),
            ));
        }
    }
    for name in g.input_names() {
        if !names.insert(name) {
            return Err(fail(
                "signature".into(),
                format!("input `{name}` declared twice"),
            ));
        }
    }
    let mut outs = std::collections::HashSet::new();
    for o in g.outputs() {
        if !outs.insert(o.name.as_str()) {
            return Err(fail(
                "return".into(),
                format!("output `{}` declared twice", o.name),
            ));
        }
        let Some(ty) = g.try_ty(o.value) else {
            return Err(fail(
                "return".into(),
                format!("output `{}` refers to a missing value", o.name),
            ));
        };
        if let Some(alias) = &o.alias {
            match g.input(alias) {
                Some(i) if g.ty(i) == ty => {}
                Some(i) => {
                    return Err(fail(
                        "return".into(),
                        format!(
                            "output `{}` is {ty} but aliases `{alias}` of type {}",
                            o.name,
                            g.ty(i)
                        ),
                    ))
                }
                None => {
                    return Err(fail(
                        "return".into(),
                        format!(
                            "output `{}` aliases `{alias}`, which is not an input",
                            o.name
                        ),
                    ))
                }
            }
        }
    }
    if is_body && g.outputs().is_empty() {
        return Err(fail(
            "return".into(),
            "a body must return at least one value".into(),
        ));
    }
    Ok(())
}
