//! Graphviz DOT form of graphs, for looking at them (`dot -Tsvg`).
//!
//! - Each node is labeled with its op, its payload (a parameter's name, the
//!   first elements of a constant), its attributes and its result type(s),
//!   and its location when it has one.
//! - Inputs are blue inverted houses, parameters yellow cylinders, constants
//!   grey notes, outputs green houses (with the input they alias); `scan`
//!   and `fused` nodes have a double border.
//! - An edge is labeled with the operand slot when its consumer has more than
//!   one operand, and with `#port` at its tail when its producer has several
//!   results.
//! - Bodies of `scan` and `fused` nodes are clusters next to their node; a
//!   dashed edge leads from each body output back to the node that owns it.

use crate::graph::{Graph, NodeId};
use crate::literal::LiteralData;
use crate::op::Op;
use crate::text::attrs::op_attrs;
use crate::text::{format_float, quote};
use std::collections::HashMap;
use std::fmt::Write;

/// The DOT form of `graph`.
pub fn to_dot(graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", esc(&graph.name));
    out.push_str("  graph [fontname=\"monospace\", fontsize=10];\n");
    out.push_str("  node [fontname=\"monospace\", fontsize=10, shape=box];\n");
    out.push_str("  edge [fontname=\"monospace\", fontsize=9];\n");
    body(graph, "", 1, &mut out);
    out.push_str("}\n");
    out
}

/// Escapes text for a double-quoted DOT string (line breaks are added by the caller).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A user string (name, location) shown with the text form's quoting, so
/// control characters stay visible.
fn shown(s: &str) -> String {
    esc(&quote(s))
}

/// Up to four elements of a constant.
fn literal_summary(op: &Op) -> String {
    let Op::Const(lit) = op else {
        return String::new();
    };
    let mut items: Vec<String> = match &lit.data {
        LiteralData::Float(v) => v
            .iter()
            .take(5)
            .map(|&x| format_float(lit.dtype, x))
            .collect(),
        LiteralData::Int(v) => v.iter().take(5).map(|x| x.to_string()).collect(),
        LiteralData::Bool(v) => v.iter().take(5).map(|x| x.to_string()).collect(),
    };
    if lit.shape.is_empty() && items.len() == 1 {
        return format!(" {}", items[0]);
    }
    if items.len() > 4 {
        items.truncate(4);
        items.push("...".into());
    }
    format!(" [{}]", items.join(", "))
}

fn body(g: &Graph, prefix: &str, level: usize, out: &mut String) {
    let pad = "  ".repeat(level);
    let order = g.topo_order();
    let ids: HashMap<NodeId, String> = order
        .iter()
        .enumerate()
        .map(|(i, &n)| (n, format!("{prefix}n{i}")))
        .collect();
    for &n in &order {
        let node = g.node(n);
        let mut label = match &node.op {
            Op::Input { name, .. } => format!("%{name}"),
            Op::Param { name, .. } => format!("param {}", shown(name)),
            op => format!("{}{}", op.name(), esc(&literal_summary(op))),
        };
        let attrs: Vec<String> = op_attrs(&node.op)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !attrs.is_empty() {
            let _ = write!(label, "\\n{{{}}}", esc(&attrs.join(", ")));
        }
        let types: Vec<String> = node.outputs.iter().map(|t| t.to_string()).collect();
        let _ = write!(label, "\\n{}", esc(&types.join(", ")));
        if let Some(loc) = &node.loc {
            let _ = write!(label, "\\nloc {}", shown(loc));
        }
        let style = match &node.op {
            Op::Input { .. } => "shape=invhouse, style=filled, fillcolor=\"#dbeafe\"",
            Op::Param { .. } => "shape=cylinder, style=filled, fillcolor=\"#fef3c7\"",
            Op::Const(_) => "shape=note, style=filled, fillcolor=\"#f3f4f6\"",
            Op::Scan(_) | Op::Fused(_) => "peripheries=2",
            _ => "shape=box",
        };
        let _ = writeln!(out, "{pad}\"{}\" [{style}, label=\"{label}\"];", ids[&n]);
    }
    for &n in &order {
        let operands = g.operands(n);
        for (slot, v) in operands.iter().enumerate() {
            let mut attrs = Vec::new();
            if operands.len() > 1 {
                attrs.push(format!("label=\"{slot}\""));
            }
            if g.node(v.node).outputs.len() > 1 {
                attrs.push(format!("taillabel=\"#{}\"", v.port));
            }
            let a = if attrs.is_empty() {
                String::new()
            } else {
                format!(" [{}]", attrs.join(", "))
            };
            let _ = writeln!(out, "{pad}\"{}\" -> \"{}\"{a};", ids[&v.node], ids[&n]);
        }
    }
    for (k, o) in g.outputs().iter().enumerate() {
        let id = format!("{prefix}out{k}");
        let mut label = shown(&o.name);
        if let Some(a) = &o.alias {
            let _ = write!(label, "\\nalias %{}", esc(a));
        }
        let _ = writeln!(
            out,
            "{pad}\"{id}\" [shape=house, style=filled, fillcolor=\"#dcfce7\", label=\"{label}\"];"
        );
        let tail = if g.node(o.value.node).outputs.len() > 1 {
            format!(" [taillabel=\"#{}\"]", o.value.port)
        } else {
            String::new()
        };
        let _ = writeln!(out, "{pad}\"{}\" -> \"{id}\"{tail};", ids[&o.value.node]);
    }
    for &n in &order {
        let node = g.node(n);
        let Some(b) = node.op.body() else { continue };
        let owner = &ids[&n];
        let inner = format!("{owner}/");
        let _ = writeln!(out, "{pad}subgraph \"cluster_{owner}\" {{");
        let _ = writeln!(
            out,
            "{pad}  label=\"{} body @{}\";",
            node.op.name(),
            esc(&b.name)
        );
        let _ = writeln!(out, "{pad}  style=dashed;");
        body(b, &inner, level + 1, out);
        let _ = writeln!(out, "{pad}}}");
        for k in 0..b.outputs().len() {
            let _ = writeln!(
                out,
                "{pad}\"{inner}out{k}\" -> \"{owner}\" [style=dashed, constraint=false];"
            );
        }
    }
}
