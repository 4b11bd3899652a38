//! Malformed text gets a `ParseError` at the offending token (1-based line
//! and column) with a message that names the problem.

use kiln_ir::text::parse;

/// Parses `text`, expects an error at `line`:`col` whose message contains `fragment`.
#[track_caller]
fn check(text: &str, line: usize, col: usize, fragment: &str) {
    let e = match parse(text) {
        Ok(g) => panic!("expected an error, parsed:\n{g}"),
        Err(e) => e,
    };
    assert!(
        e.message.contains(fragment),
        "message {:?} lacks {fragment:?}",
        e.message
    );
    assert_eq!((e.line, e.col), (line, col), "wrong place for: {e}");
}

/// A graph with one f32[4] input `%x`, the given body lines, and `return`.
fn graph(lines: &[&str], ret: &str) -> String {
    let mut s = String::from("graph @g(%x: f32[4], %i: i32[4]) {\n");
    for l in lines {
        s.push_str("  ");
        s.push_str(l);
        s.push('\n');
    }
    s.push_str("  return ");
    s.push_str(ret);
    s.push_str("\n}\n");
    s
}

#[test]
fn unknown_op() {
    check(
        &graph(&["%0 = foo(%x) : f32[4]"], "%0 as \"y\""),
        2,
        8,
        "unknown op \"foo\"",
    );
}

#[test]
fn undefined_value() {
    check(
        &graph(&["%0 = neg(%7) : f32[4]"], "%0 as \"y\""),
        2,
        12,
        "use of undefined value %7",
    );
}

#[test]
fn forward_reference_is_undefined() {
    let t = graph(
        &["%0 = neg(%1) : f32[4]", "%1 = neg(%x) : f32[4]"],
        "%0 as \"y\"",
    );
    check(&t, 2, 12, "use of undefined value %1");
}

#[test]
fn missing_close_paren() {
    check(
        &graph(&["%0 = add(%x, %x : f32[4]"], "%0 as \"y\""),
        2,
        19,
        "expected ',' or ')' but found ':'",
    );
}

#[test]
fn declared_type_differs_from_inferred() {
    check(
        &graph(&["%0 = neg(%x) : f32[3]"], "%0 as \"y\""),
        2,
        18,
        "declared type f32[3] but the op gives f32[4]",
    );
}

#[test]
fn duplicate_definition() {
    let t = graph(
        &["%3 = neg(%x) : f32[4]", "%3 = exp(%x) : f32[4]"],
        "%3 as \"y\"",
    );
    check(&t, 3, 3, "duplicate definition of %3");
    // An input name cannot be redefined either.
    check(
        &graph(&["%x = neg(%x) : f32[4]"], "%x as \"y\""),
        2,
        3,
        "duplicate definition of %x",
    );
}

#[test]
fn unknown_attribute() {
    check(
        &graph(
            &["%0 = reduce_sum(%x) {axs=[0], keep_dims=false} : f32[]"],
            "%0 as \"y\"",
        ),
        2,
        24,
        "unknown attribute \"axs\" for reduce_sum",
    );
    check(
        &graph(&["%0 = neg(%x) {axis=0} : f32[4]"], "%0 as \"y\""),
        2,
        17,
        "unknown attribute \"axis\" for neg (it takes none)",
    );
}

#[test]
fn missing_attribute() {
    check(
        &graph(&["%0 = reduce_sum(%x) {axes=[0]} : f32[]"], "%0 as \"y\""),
        2,
        8,
        "missing attribute \"keep_dims\" for reduce_sum",
    );
}

#[test]
fn bad_dim_expression() {
    // The error points into the dim, where `Dim`'s grammar failed.
    check(
        "graph @g(%x: f32[seq+]) {\n  return\n}\n",
        1,
        22,
        "bad dimension 'seq+'",
    );
    check(
        &graph(
            &["%0 = slice(%x) {axis=0, start=0, end=2*} : f32[2]"],
            "%0 as \"y\"",
        ),
        2,
        42,
        "bad dimension '2*'",
    );
}

#[test]
fn bad_literal_count() {
    check(
        &graph(&["%0 = const [1, 2] : f32[3]"], "%0 as \"y\""),
        2,
        14,
        "const has 2 value(s) but its type f32[3] holds 3",
    );
}

#[test]
fn literal_out_of_range_or_of_the_wrong_kind() {
    check(
        &graph(&["%0 = const 300 : u8[]"], "%0 as \"y\""),
        2,
        14,
        "out of range for u8",
    );
    check(
        &graph(&["%0 = const [1, 1.5] : i32[2]"], "%0 as \"y\""),
        2,
        18,
        "expected an integer for i32",
    );
    check(
        &graph(&["%0 = const 1e39 : f32[]"], "%0 as \"y\""),
        2,
        14,
        "out of range for f32",
    );
    check(
        &graph(&["%0 = const 1 : bool[]"], "%0 as \"y\""),
        2,
        14,
        "expected true or false",
    );
    check(
        &graph(&["%0 = const 1 : f32[seq]"], "%0 as \"y\""),
        2,
        14,
        "a const needs a static shape",
    );
}

#[test]
fn unknown_dtype() {
    check(
        "graph @g(%x: f64[4]) {\n  return\n}\n",
        1,
        14,
        "unknown dtype \"f64\"",
    );
}

#[test]
fn type_rule_violation_points_at_the_op() {
    check(
        &graph(&["%0 = add(%x, %i) : f32[4]"], "%0 as \"y\""),
        2,
        8,
        "operand dtypes differ: f32 and i32",
    );
}

#[test]
fn multi_result_values_need_a_port() {
    let scan = [
        "%0:2 = scan(%x, %x) {num_carry=1, num_xs=1, axis=0, reverse=false} : (f32[4], f32[4]) body",
        "  graph @step(%c: f32[4], %e: f32[]) {",
        "    return %c as \"c\", %e as \"y\"",
        "  }",
    ];
    let mut lines = scan.to_vec();
    lines.push("%1 = neg(%0) : f32[4]");
    check(
        &graph(&lines, "%1 as \"y\""),
        6,
        12,
        "%0 has 2 results; refer to one as %0#0 .. %0#1",
    );
    let mut lines = scan.to_vec();
    lines.push("%1 = neg(%0#2) : f32[4]");
    check(&graph(&lines, "%1 as \"y\""), 6, 15, "#2 is out of range");
}

#[test]
fn declared_result_count_must_match() {
    check(
        &graph(&["%0:2 = neg(%x) : f32[4]"], "%0 as \"y\""),
        2,
        6,
        "%0:2 declares 2 result(s) but 1 type(s) follow",
    );
}

#[test]
fn lexical_errors() {
    check(
        "graph @g() {\n  return $\n}\n",
        2,
        10,
        "unexpected character '$'",
    );
    check(
        "graph @g() {\n  return %x as \"abc\n}\n",
        2,
        16,
        "unterminated string",
    );
    check(
        "graph @g() {\n  return %x as \"a\\qb\"\n}\n",
        2,
        18,
        "unknown escape \\q",
    );
}

#[test]
fn truncated_and_trailing_text() {
    check(
        "graph @g(%x: f32[4]) {\n  return %x as \"y\"\n",
        3,
        1,
        "but found end of input",
    );
    check(
        "graph @g() {\n  return\n}\n}\n",
        4,
        1,
        "expected end of input but found '}'",
    );
    check("graph @g() {\n}\n", 2, 1, "or 'return' but found '}'");
    // Cut short anywhere: the error names the end of input, at the end.
    check(
        "graph",
        1,
        6,
        "expected a graph name such as @main but found end of input",
    );
    check(
        "graph @g(",
        1,
        10,
        "expected an input such as %x: f32[4] but found end of input",
    );
    check(
        "graph @g() {\n  %0 = neg(",
        2,
        12,
        "expected a value such as %0 but found end of input",
    );
    check(
        "graph @g(%x: f32[4]) {\n  %0 = reduce_sum(%x) {",
        2,
        24,
        "expected an attribute name but found end of input",
    );
    check("", 1, 1, "expected 'graph' but found end of input");
}

#[test]
fn bodies_are_checked() {
    // A body may not hold parameters.
    let t = graph(
        &[
            "%0 = fused(%x) {kind=loop} : f32[4] body",
            "  graph @k(%a: f32[4]) {",
            "    %0 = param \"w\" : f32[4]",
            "    return %0 as \"r\"",
            "  }",
        ],
        "%0 as \"y\"",
    );
    check(&t, 4, 12, "parameter \"w\" inside a body");
    // A body must return something.
    let t = graph(
        &[
            "%0 = fused(%x) {kind=loop} : () body",
            "  graph @k(%a: f32[4]) {",
            "    return",
            "  }",
        ],
        "%0 as \"y\"",
    );
    check(&t, 4, 7, "a body must return at least one value");
    // Bodies do not see the enclosing graph's values.
    let t = graph(
        &[
            "%0 = fused(%x) {kind=loop} : f32[4] body",
            "  graph @k(%a: f32[4]) {",
            "    %0 = add(%a, %x) : f32[4]",
            "    return %0 as \"r\"",
            "  }",
        ],
        "%0 as \"y\"",
    );
    check(
        &t,
        4,
        20,
        "use of undefined value %x (a body sees only its own inputs",
    );
    // scan needs its body; other ops take none.
    check(
        &graph(
            &["%0 = scan(%x) {num_carry=0, num_xs=1, axis=0, reverse=false} : f32[4]"],
            "%0 as \"y\"",
        ),
        3,
        3,
        "expected 'body' and the scan body graph but found 'return'",
    );
    check(
        &graph(&["%0 = neg(%x) : f32[4] body"], "%0 as \"y\""),
        2,
        25,
        "neg takes no body",
    );
}

#[test]
fn outputs_are_checked() {
    check(
        &graph(&["%0 = neg(%x) : f32[4]"], "%0 as \"y\", %0 as \"y\""),
        3,
        27,
        "output `y` is declared twice",
    );
    check(
        &graph(&["%0 = neg(%x) : f32[4]"], "%0 as \"y\" alias %0"),
        3,
        26,
        "output `y` aliases `0`: no such input",
    );
    check(
        &graph(&[], "%i as \"y\" alias %x"),
        2,
        26,
        "types differ (f32[4] vs i32[4])",
    );
}

#[test]
fn parameters_keep_one_type() {
    let t = graph(
        &["%0 = param \"w\" : f32[4]", "%1 = param \"w\" : f32[3]"],
        "%0 as \"y\"",
    );
    check(
        &t,
        3,
        20,
        "parameter \"w\" is f32[3] here but f32[4] at line 2",
    );
}

#[test]
fn names_must_be_identifiers() {
    check(
        "graph @9g() {\n  return\n}\n",
        1,
        7,
        "graph name \"9g\" is not an identifier",
    );
    check(
        "graph @g(%3: f32[]) {\n  return\n}\n",
        1,
        10,
        "input name %3 is not an identifier",
    );
}

#[test]
fn oversized_dims_are_refused_not_overflowed() {
    // 2^40 is the limit on a dim; products are checked before the type rule runs.
    check(
        "graph @g(%x: f32[99999999999999]) {\n  return\n}\n",
        1,
        18,
        "dimension too large",
    );
    let t = "graph @g(%x: f32[1000000000000,1000000000000]) {\n  \
             %0 = reshape(%x) {shape=[1000000000000,1000000000000]} : f32[1000000000000,1000000000000]\n  \
             return %0 as \"y\"\n}\n";
    check(t, 2, 8, "sizes too large");
    // Deep nesting in a dim is refused before `Dim`'s recursive parser sees it.
    let deep = format!(
        "graph @g(%x: f32[{}1{}]) {{\n  return\n}}\n",
        "(".repeat(200),
        ")".repeat(200)
    );
    check(&deep, 1, 82, "nested too deeply");
}
