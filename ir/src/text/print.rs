//! Printing a graph in the text form (see the module docs of [`crate::text`]).

use super::attrs::op_attrs;
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

/// Formats a float so that parsing it back and rounding to `dtype` gives the
/// same bits. `f32`, `f16` and `bf16` values print the shortest `f32` text,
/// other dtypes (pad values) the shortest `f64` text; very large and very
/// small magnitudes use an exponent (`1e-30`). `inf`, `-inf` and `nan` are
/// spelled out; a NaN other than the canonical one prints its raw `f64` bits
/// in hex (`0x7ff8000000000001`), so that it too reads back unchanged.
pub fn format_float(dtype: DType, v: f64) -> String {
    if v.is_nan() {
        return if v.to_bits() == f64::NAN.to_bits() {
            "nan".into()
        } else {
            format!("0x{:016x}", v.to_bits())
        };
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let exponent = v != 0.0 && !(1e-5..1e16).contains(&v.abs());
    match (dtype, exponent) {
        // f32/f16/bf16 values are exactly f32: the shortest f32 repr round-trips.
        (DType::F32 | DType::F16 | DType::BF16, false) => format!("{}", v as f32),
        (DType::F32 | DType::F16 | DType::BF16, true) => format!("{:e}", v as f32),
        (_, false) => format!("{v}"),
        (_, true) => format!("{v:e}"),
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

/// Quotes a string with `"` and backslash escapes for `"`, `\`, newline
/// (`\n`), tab (`\t`), carriage return (`\r`) and other control characters
/// (`\u{1b}`), so a quoted string never spans lines.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
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
        .map(|&n| {
            let node = g.node(n);
            match &node.loc {
                Some(loc) => format!("{}: {} loc({})", names[&n], node.outputs[0], quote(loc)),
                None => format!("{}: {}", names[&n], node.outputs[0]),
            }
        })
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
        let attrs = op_attrs(&node.op);
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
    let sep = if rets.is_empty() { "" } else { " " };
    let _ = writeln!(out, "{}return{sep}{}", indent(level + 1), rets.join(", "));
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
