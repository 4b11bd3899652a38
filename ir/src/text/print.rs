//! Printing a graph in the text form (see the module docs of [`crate::text`]).

use crate::graph::{Graph, NodeId, Value};
use crate::literal::{Literal, LiteralData};
use crate::op::Op;
use crate::types::{DType, TensorType};
use std::collections::HashMap;
use std::fmt::Write;

/// Prints `graph` in the canonical text form.
pub fn print(graph: &Graph) -> String {
    let mut out = String::new();
    print_graph(graph, 0, &mut out);
    out
}

fn indent(level: usize) -> String {
    "  ".repeat(level)
}

/// Formats a float so that parsing it back and rounding to `dtype` gives the same bits.
pub fn format_float(dtype: DType, v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    match dtype {
        // f32/f16/bf16 values are exactly f32: the shortest f32 repr round-trips.
        DType::F32 | DType::F16 | DType::BF16 => format!("{}", v as f32),
        _ => format!("{v}"),
    }
}

fn format_literal(lit: &Literal) -> String {
    let items: Vec<String> = match &lit.data {
        LiteralData::Float(v) => v.iter().map(|&x| format_float(lit.dtype, x)).collect(),
        LiteralData::Int(v) => v.iter().map(|x| x.to_string()).collect(),
        LiteralData::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
    };
    if lit.shape.is_empty() && items.len() == 1 {
        items[0].clone()
    } else {
        format!("[{}]", items.join(", "))
    }
}

fn dims(ds: &[crate::Dim]) -> String {
    let v: Vec<String> = ds.iter().map(|d| d.to_string()).collect();
    format!("[{}]", v.join(","))
}

/// The `{key=value, ...}` attributes of an op (empty when it has none).
fn attributes(op: &Op) -> Vec<(String, String)> {
    let kv = |k: &str, v: String| (k.to_string(), v);
    match op {
        Op::Iota { ty, axis } => vec![kv("axis", axis.to_string()), kv("type", ty.to_string())],
        Op::Cast(to) => vec![kv("to", to.to_string())],
        Op::Reduce {
            axes, keep_dims, ..
        } => vec![
            kv("axes", format!("{axes:?}").replace(' ', "")),
            kv("keep_dims", keep_dims.to_string()),
        ],
        Op::Reshape { shape } => vec![kv("shape", dims(shape))],
        Op::Permute { perm } => vec![kv("perm", format!("{perm:?}").replace(' ', ""))],
        Op::Broadcast { shape } => vec![kv("shape", dims(shape))],
        Op::Slice { axis, start, end } => vec![
            kv("axis", axis.to_string()),
            kv("start", start.to_string()),
            kv("end", end.to_string()),
        ],
        Op::Concat { axis } | Op::Gather { axis } => vec![kv("axis", axis.to_string())],
        Op::Pad {
            axis,
            low,
            high,
            value,
        } => vec![
            kv("axis", axis.to_string()),
            kv("low", low.to_string()),
            kv("high", high.to_string()),
            kv("value", format_float(DType::I64, value.0)),
        ],
        Op::Scan(s) => vec![
            kv("num_carry", s.num_carry.to_string()),
            kv("num_xs", s.num_xs.to_string()),
            kv("axis", s.axis.to_string()),
            kv("reverse", s.reverse.to_string()),
        ],
        Op::Fused(f) => vec![kv("kind", f.kind.name().to_string())],
        _ => vec![],
    }
}

/// Quotes a string with `"` and backslash escapes for `"`, `\`, newline and tab.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn print_graph(g: &Graph, level: usize, out: &mut String) {
    let order = g.topo_order();
    // Inputs are referred to by name; every other node by its number.
    let mut names: HashMap<NodeId, String> = HashMap::new();
    let mut next = 0usize;
    for &n in &order {
        let name = match &g.node(n).op {
            Op::Input { name, .. } => format!("%{name}"),
            _ => {
                next += 1;
                format!("%{}", next - 1)
            }
        };
        names.insert(n, name);
    }
    let val = |v: Value| -> String {
        let base = &names[&v.node];
        if g.node(v.node).outputs.len() == 1 {
            base.clone()
        } else {
            format!("{base}#{}", v.port)
        }
    };
    let params: Vec<String> = g
        .inputs()
        .iter()
        .map(|&n| format!("{}: {}", names[&n], g.node(n).outputs[0]))
        .collect();
    let _ = writeln!(
        out,
        "{}graph @{}({}) {{",
        indent(level),
        g.name,
        params.join(", ")
    );
    for &n in &order {
        let node = g.node(n);
        if matches!(node.op, Op::Input { .. }) {
            continue;
        }
        let mut line = indent(level + 1);
        line.push_str(&names[&n]);
        if node.outputs.len() != 1 {
            let _ = write!(line, ":{}", node.outputs.len());
        }
        line.push_str(" = ");
        line.push_str(node.op.name());
        match &node.op {
            Op::Param { name, .. } => {
                let _ = write!(line, " {}", quote(name));
            }
            Op::Const(lit) => {
                let _ = write!(line, " {}", format_literal(lit));
            }
            _ => {
                let ops: Vec<String> = g.operands(n).into_iter().map(val).collect();
                let _ = write!(line, "({})", ops.join(", "));
            }
        }
        let attrs = attributes(&node.op);
        if !attrs.is_empty() {
            let a: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(line, " {{{}}}", a.join(", "));
        }
        line.push_str(" : ");
        line.push_str(&types(&node.outputs));
        if let Some(loc) = &node.loc {
            let _ = write!(line, " loc({})", quote(loc));
        }
        if let Some(body) = node.op.body() {
            out.push_str(&line);
            out.push_str(" body\n");
            print_graph(body, level + 2, out);
        } else {
            out.push_str(&line);
            out.push('\n');
        }
    }
    let rets: Vec<String> = g
        .outputs()
        .iter()
        .map(|o| {
            let mut s = format!("{} as {}", val(o.value), quote(&o.name));
            if let Some(a) = &o.alias {
                let _ = write!(s, " alias %{a}");
            }
            s
        })
        .collect();
    let _ = writeln!(out, "{}return {}", indent(level + 1), rets.join(", "));
    let _ = writeln!(out, "{}}}", indent(level));
}

fn types(ts: &[TensorType]) -> String {
    if ts.len() == 1 {
        ts[0].to_string()
    } else {
        let v: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
        format!("({})", v.join(", "))
    }
}
