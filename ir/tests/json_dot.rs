//! JSON and DOT forms: JSON round-trips exactly and rejects inconsistent
//! input with a typed error; DOT is well-formed on random graphs.

use kiln_ir::dot::to_dot;
use kiln_ir::json::{from_json, to_json, JsonError};
use kiln_ir::testing::arb_graph;
use kiln_ir::text::parse;
use kiln_ir::{verify, Graph, Op};
use proptest::prelude::*;
use serde_json::{json, Value as J};
use std::collections::HashSet;

const TINY: &str = r#"graph @tiny(%tokens: i32[seq], %k_cache: f32[past,4,16], %h: f32[64]) {
  %0 = param "embed.weight" : f32[256,64]
  %1 = gather(%0, %tokens) {axis=0} : f32[seq,64] loc("embed")
  %2 = const 0.125 : f32[]
  %3 = mul(%1, %2) : f32[seq,64]
  %4:2 = scan(%h, %3) {num_carry=1, num_xs=1, axis=0, reverse=false} : (f32[64], f32[seq,64]) body
    graph @step(%c: f32[64], %x: f32[64]) {
      %0 = add(%c, %x) : f32[64]
      %1 = tanh(%0) : f32[64]
      return %1 as "c", %0 as "y"
    }
  %5 = slice(%k_cache) {axis=0, start=0, end=past} : f32[past,4,16]
  %6 = const [1, -2, 3] : i32[3]
  %7 = pad(%5) {axis=0, low=1, high=seq, value=-inf} : f32[past+seq+1,4,16]
  return %4#1 as "logits", %5 as "k_cache_out" alias %k_cache, %6 as "ints", %7 as "p"
}
"#;

fn tiny() -> Graph {
    parse(TINY).unwrap()
}

// ---- JSON ----

#[test]
fn json_schema_is_plain() {
    let j: J = serde_json::from_str(&to_json(&tiny())).unwrap();
    assert_eq!(j["name"], "tiny");
    let nodes = j["nodes"].as_array().unwrap();
    assert_eq!(
        nodes[0],
        json!({"id": 0, "op": "input", "name": "tokens", "types": ["i32[seq]"]})
    );
    let gather = nodes.iter().find(|n| n["op"] == "gather").unwrap();
    assert_eq!(gather["attrs"], json!({"axis": 0}));
    assert_eq!(gather["loc"], "embed");
    assert_eq!(gather["operands"].as_array().unwrap().len(), 2);
    let scan = nodes.iter().find(|n| n["op"] == "scan").unwrap();
    assert_eq!(scan["types"], json!(["f32[64]", "f32[seq,64]"]));
    assert_eq!(scan["body"]["name"], "step");
    let slice = nodes.iter().find(|n| n["op"] == "slice").unwrap();
    assert_eq!(
        slice["attrs"],
        json!({"axis": 0, "start": 0, "end": "past"})
    );
    let pad = nodes.iter().find(|n| n["op"] == "pad").unwrap();
    assert_eq!(pad["attrs"]["value"], "-inf");
    assert_eq!(pad["attrs"]["high"], "seq");
    let ints = nodes
        .iter()
        .find(|n| n["types"] == json!(["i32[3]"]))
        .unwrap();
    assert_eq!(ints["value"], json!([1, -2, 3]));
    assert_eq!(
        j["outputs"][1],
        json!({"name": "k_cache_out", "value": [8, 0], "alias": "k_cache"})
    );
    assert_eq!(from_json(&to_json(&tiny())).unwrap(), tiny());
}

proptest! {
    #![proptest_config(kiln_ir::testing::config(256))]

    #[test]
    fn json_round_trips(g in arb_graph()) {
        let j = to_json(&g);
        let back = from_json(&j).map_err(|e| TestCaseError::fail(format!("{e}\n{j}")))?;
        prop_assert_eq!(&back, &g);
        prop_assert_eq!(to_json(&back), j);
    }

    /// Random edits of a graph's JSON: never a panic; Ok means a verified graph.
    #[test]
    fn edited_json_never_panics(g in arb_graph(), edits in prop::collection::vec((any::<usize>(), 0u8..6, any::<i64>()), 1..4)) {
        let mut j: J = serde_json::from_str(&to_json(&g)).unwrap();
        for (at, kind, n) in edits {
            edit(&mut j, at, kind, n);
        }
        let text = j.to_string();
        if let Ok(back) = from_json(&text) {
            prop_assert!(verify(&back).is_ok());
            prop_assert_eq!(from_json(&to_json(&back)).unwrap(), back);
        }
    }
}

/// Applies one edit to the `at`-th node of the top graph (or to the outputs).
fn edit(j: &mut J, at: usize, kind: u8, n: i64) {
    let nodes = j["nodes"].as_array_mut().unwrap();
    if nodes.is_empty() {
        return;
    }
    let len = nodes.len();
    let node = &mut nodes[at % len];
    let obj = node.as_object_mut().unwrap();
    match kind {
        0 => {
            obj.insert("id".into(), json!(n.rem_euclid(len as i64 + 2)));
        }
        1 => {
            obj.insert(
                "operands".into(),
                json!([[n.rem_euclid(len as i64 + 1), n & 1]]),
            );
        }
        2 => {
            let keys: Vec<String> = obj.keys().cloned().collect();
            obj.remove(&keys[at % keys.len()]);
        }
        3 => {
            obj.insert("types".into(), json!([format!("f32[{}]", n.rem_euclid(5))]));
        }
        4 => {
            let ops = [
                "add",
                "neg",
                "concat",
                "reduce_sum",
                "scan",
                "const",
                "bogus",
            ];
            obj.insert("op".into(), json!(ops[at % ops.len()]));
        }
        _ => {
            obj.insert(
                "attrs".into(),
                json!({"axis": n.rem_euclid(3), "keep_dims": true, "axes": [0]}),
            );
        }
    }
}

/// Replaces the first node whose op is `op` with `f(node)` in TINY's JSON and reads it.
fn read_edited(f: impl FnOnce(&mut J)) -> Result<Graph, JsonError> {
    let mut j: J = serde_json::from_str(&to_json(&tiny())).unwrap();
    f(&mut j);
    from_json(&j.to_string())
}

fn node_mut<'a>(j: &'a mut J, op: &str) -> &'a mut J {
    j["nodes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|n| n["op"] == op)
        .unwrap()
}

#[test]
fn json_rejects_inconsistent_graphs() {
    let e = from_json("{\"name\": \"g\", \"nodes\": [}").unwrap_err();
    assert!(
        matches!(
            e,
            JsonError::Syntax {
                line: 1,
                column: 25,
                ..
            }
        ),
        "{e}"
    );
    let e = read_edited(|j| {
        node_mut(j, "mul")["operands"] = json!([[3, 0], [77, 0]]);
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            JsonError::UndefinedOperand {
                id: 77,
                port: 0,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("graph @tiny, node 6 (mul)"), "{e}");
    let e = read_edited(|j| node_mut(j, "mul")["types"] = json!(["f32[seq,65]"])).unwrap_err();
    assert!(
        matches!(&e, JsonError::TypeMismatch { declared, inferred, .. } if declared == "[f32[seq,65]]" && inferred == "[f32[seq,64]]"),
        "{e}"
    );
    let e = read_edited(|j| node_mut(j, "mul")["id"] = json!(1)).unwrap_err();
    assert!(matches!(e, JsonError::DuplicateId { id: 1, .. }), "{e}");
    let e = read_edited(|j| node_mut(j, "mul")["op"] = json!("mull")).unwrap_err();
    assert!(e.to_string().contains("unknown op \"mull\""), "{e}");
    let e = read_edited(|j| node_mut(j, "mul")["operands"] = json!([[3, 0], [0, 0]])).unwrap_err();
    assert!(
        matches!(&e, JsonError::Type { message, .. } if message.contains("operand dtypes differ")),
        "{e}"
    );
    let e = read_edited(|j| node_mut(j, "gather")["attrs"] = json!({})).unwrap_err();
    assert!(
        e.to_string()
            .contains("missing attribute \"axis\" for gather"),
        "{e}"
    );
    let e = read_edited(|j| node_mut(j, "gather")["attrs"] = json!({"axis": "zero"})).unwrap_err();
    assert!(
        e.to_string()
            .contains("attribute \"axis\": expected a non-negative integer"),
        "{e}"
    );
    let e = read_edited(|j| node_mut(j, "slice")["attrs"]["end"] = json!("past+")).unwrap_err();
    assert!(e.to_string().contains("dim \"past+\""), "{e}");
    let e = read_edited(|j| node_mut(j, "input")["types"] = json!(["f32[seq"])).unwrap_err();
    assert!(e.to_string().contains("type \"f32[seq\""), "{e}");
    let e = read_edited(|j| node_mut(j, "const")["value"] = json!([1, 2])).unwrap_err();
    assert!(
        e.to_string()
            .contains("const has 2 value(s) but its type f32[] holds 1"),
        "{e}"
    );
    let e = read_edited(|j| j["outputs"][1]["alias"] = json!("nope")).unwrap_err();
    assert!(e.to_string().contains("output \"k_cache_out\""), "{e}");
    let e = read_edited(|j| node_mut(j, "scan")["body"]["outputs"] = json!([])).unwrap_err();
    assert!(
        e.to_string()
            .contains("a body must return at least one value"),
        "{e}"
    );
    let e = read_edited(|j| {
        node_mut(j, "scan")
            .as_object_mut()
            .unwrap()
            .remove("body")
            .map(|_| ())
            .unwrap()
    })
    .unwrap_err();
    assert!(e.to_string().contains("scan needs a \"body\""), "{e}");
    let e = read_edited(|j| node_mut(j, "mul")["colour"] = json!("red")).unwrap_err();
    assert!(
        matches!(&e, JsonError::Syntax { message, .. } if message.contains("unknown field `colour`")),
        "{e}"
    );
    let e = read_edited(|j| node_mut(j, "input")["attrs"] = json!({"axis": 0})).unwrap_err();
    assert!(
        e.to_string()
            .contains("input takes no operands or attributes"),
        "{e}"
    );
}

// ---- DOT ----

/// A declared DOT node: id and its attributes as `k=v;` text.
type NodeDecl = (String, String);
/// A DOT edge: tail, head, attributes as `k=v;` text.
type Edge = (String, String, String);

/// A small DOT reader: checks the statement grammar that `to_dot` uses,
/// balanced braces, and that every edge joins declared nodes. Returns the
/// node declarations (id, attribute text) and the edges.
fn check_dot(dot: &str) -> (Vec<NodeDecl>, Vec<Edge>) {
    #[derive(Debug, PartialEq, Clone)]
    enum T {
        Id(String),
        P(char),
        Arrow,
    }
    let mut toks = Vec::new();
    let mut cs = dot.chars().peekable();
    while let Some(c) = cs.next() {
        match c {
            c if c.is_whitespace() => {}
            '"' => {
                let mut s = String::new();
                loop {
                    match cs.next().expect("unterminated string") {
                        '"' => break,
                        '\\' => {
                            s.push('\\');
                            s.push(cs.next().expect("dangling escape"));
                        }
                        '\n' => panic!("raw newline in a string"),
                        c => s.push(c),
                    }
                }
                toks.push(T::Id(s));
            }
            '-' if cs.peek() == Some(&'>') => {
                cs.next();
                toks.push(T::Arrow);
            }
            '{' | '}' | '[' | ']' | ';' | '=' | ',' => toks.push(T::P(c)),
            c if c.is_ascii_alphanumeric() || c == '#' || c == '_' => {
                let mut s = String::from(c);
                while let Some(&d) = cs.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == '.' || d == '#' {
                        s.push(d);
                        cs.next();
                    } else {
                        break;
                    }
                }
                toks.push(T::Id(s));
            }
            other => panic!("unexpected {other:?} in DOT"),
        }
    }
    let mut i = 0;
    let id = |i: &mut usize| match toks.get(*i) {
        Some(T::Id(s)) => {
            *i += 1;
            s.clone()
        }
        t => panic!("expected an id, found {t:?} at token {i}"),
    };
    let expect = |i: &mut usize, t: T| {
        assert_eq!(toks.get(*i), Some(&t), "at token {i}");
        *i += 1;
    };
    let attr_list = |i: &mut usize| -> String {
        let mut text = String::new();
        if toks.get(*i) != Some(&T::P('[')) {
            return text;
        }
        *i += 1;
        loop {
            let k = id(i);
            expect(i, T::P('='));
            let v = id(i);
            text.push_str(&format!("{k}={v};"));
            match toks.get(*i) {
                Some(T::P(',')) => *i += 1,
                Some(T::P(']')) => {
                    *i += 1;
                    return text;
                }
                t => panic!("bad attribute list: {t:?}"),
            }
        }
    };
    assert_eq!(id(&mut i), "digraph");
    id(&mut i);
    expect(&mut i, T::P('{'));
    let (mut nodes, mut edges) = (Vec::new(), Vec::new());
    let mut depth = 1;
    while depth > 0 {
        match toks.get(i).cloned() {
            Some(T::P('}')) => {
                i += 1;
                depth -= 1;
            }
            Some(T::Id(s)) if s == "subgraph" => {
                i += 1;
                assert!(id(&mut i).starts_with("cluster_"));
                expect(&mut i, T::P('{'));
                depth += 1;
            }
            Some(T::Id(s)) if ["graph", "node", "edge"].contains(&s.as_str()) => {
                i += 1;
                attr_list(&mut i);
                expect(&mut i, T::P(';'));
            }
            Some(T::Id(_)) => {
                let a = id(&mut i);
                match toks.get(i) {
                    Some(T::P('=')) => {
                        i += 1;
                        id(&mut i);
                    }
                    Some(T::Arrow) => {
                        i += 1;
                        let b = id(&mut i);
                        let attrs = attr_list(&mut i);
                        edges.push((a, b, attrs));
                    }
                    _ => {
                        let attrs = attr_list(&mut i);
                        nodes.push((a, attrs));
                    }
                }
                expect(&mut i, T::P(';'));
            }
            t => panic!("unexpected {t:?} at token {i}"),
        }
    }
    assert_eq!(i, toks.len(), "text after the closing brace");
    let declared: HashSet<&String> = nodes.iter().map(|(n, _)| n).collect();
    assert_eq!(declared.len(), nodes.len(), "a node declared twice");
    for (a, b, _) in &edges {
        assert!(
            declared.contains(a) && declared.contains(b),
            "edge {a} -> {b} has an undeclared end"
        );
    }
    (nodes, edges)
}

fn count_bodies(g: &Graph) -> usize {
    g.node_ids()
        .filter_map(|n| g.node(n).op.body())
        .map(|b| 1 + count_bodies(b))
        .sum()
}

fn count_nodes(g: &Graph) -> usize {
    g.node_count()
        + g.outputs().len()
        + g.node_ids()
            .filter_map(|n| g.node(n).op.body())
            .map(|b| count_nodes(b))
            .sum::<usize>()
}

#[test]
fn dot_shows_kinds_and_slots() {
    let dot = to_dot(&tiny());
    let (nodes, edges) = check_dot(&dot);
    let attrs_of = |id: &str| nodes.iter().find(|(n, _)| n == id).unwrap().1.clone();
    assert!(attrs_of("n0").contains("shape=invhouse"));
    assert!(attrs_of("n0").contains("label=%tokens"));
    let param = nodes.iter().find(|(_, a)| a.contains("param")).unwrap();
    assert!(param.1.contains("shape=cylinder"), "{param:?}");
    let out = nodes
        .iter()
        .find(|(_, a)| a.contains("k_cache_out"))
        .unwrap();
    assert!(
        out.1.contains("shape=house") && out.1.contains("alias %k_cache"),
        "{out:?}"
    );
    // gather has two operands: its edges carry slots; scan's results carry ports.
    let gather = nodes
        .iter()
        .find(|(_, a)| a.contains("label=gather"))
        .unwrap()
        .0
        .clone();
    let slots: Vec<&String> = edges
        .iter()
        .filter(|e| e.1 == gather)
        .map(|e| &e.2)
        .collect();
    assert_eq!(slots, [&"label=0;".to_string(), &"label=1;".to_string()]);
    assert!(edges.iter().any(|e| e.2.contains("taillabel=#1")));
    assert!(dot.contains("subgraph \"cluster_n"));
    assert!(dot.contains("label=\"scan body @step\""));
}

proptest! {
    #![proptest_config(kiln_ir::testing::config(256))]

    #[test]
    fn dot_is_well_formed(g in arb_graph()) {
        let dot = to_dot(&g);
        let (nodes, edges) = check_dot(&dot);
        prop_assert_eq!(nodes.len(), count_nodes(&g));
        prop_assert_eq!(dot.matches("subgraph \"cluster_").count(), count_bodies(&g));
        // One edge per operand and per output, plus one per body output.
        let mut want = 0;
        fn walk(g: &Graph, want: &mut usize) {
            for n in g.node_ids() {
                *want += g.operands(n).len();
                if let Some(b) = g.node(n).op.body() {
                    *want += b.outputs().len();
                    walk(b, want);
                }
            }
            *want += g.outputs().len();
        }
        walk(&g, &mut want);
        prop_assert_eq!(edges.len(), want);
        for n in g.node_ids() {
            if let Op::Input { .. } = g.node(n).op {
                prop_assert!(nodes.iter().any(|(_, a)| a.contains("shape=invhouse")));
            }
        }
    }
}
