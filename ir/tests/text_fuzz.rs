//! Fuzzing the parser without cargo-fuzz: arbitrary strings and printed
//! graphs with random character and token mutations. The parser never
//! panics; it returns a graph that verifies and round-trips, or an error
//! whose position lies inside the text.
//!
//! For a longer campaign: `PROPTEST_CASES=200000 cargo test -p kiln-ir --test text_fuzz --release`.

use kiln_ir::testing::arb_graph;
use kiln_ir::text::{parse, print, ParseError};
use kiln_ir::verify;
use proptest::prelude::*;

/// Checks the outcome of parsing `text`.
fn check_outcome(text: &str) -> Result<(), TestCaseError> {
    match parse(text) {
        Ok(g) => {
            // Whatever parses is a verified graph that round-trips.
            prop_assert!(
                verify(&g).is_ok(),
                "parsed an invalid graph from:\n{}",
                text
            );
            let printed = print(&g);
            let back =
                parse(&printed).map_err(|e| TestCaseError::fail(format!("{e}\n{printed}")))?;
            prop_assert_eq!(back, g);
        }
        Err(ParseError { line, col, message }) => {
            let lines: Vec<&str> = text.split('\n').collect();
            prop_assert!(
                (1..=lines.len()).contains(&line),
                "line {} outside 1..={} for {:?}",
                line,
                lines.len(),
                message
            );
            // The column is at most one past the end of its line.
            let width = lines[line - 1].chars().count();
            prop_assert!(
                col >= 1 && col <= width + 1,
                "col {} outside 1..={}: {}",
                col,
                width + 1,
                message
            );
            prop_assert!(!message.is_empty());
        }
    }
    Ok(())
}

/// Fragments that are likely to reach deeper into the parser than random bytes.
const FRAGMENTS: &[&str] = &[
    "%0",
    "%1",
    "%99",
    "%x",
    "#0",
    "#7",
    ":2",
    "=",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ":",
    "-",
    "+",
    "*",
    "body",
    "graph @b() {",
    "graph @c(%a: f32[4]) {\n return %a as \"r\"\n}",
    "return",
    "as",
    "alias",
    "loc(\"l\")",
    "\"",
    "\\",
    "\\u{",
    "\n",
    " ",
    "//",
    "0",
    "1",
    "2",
    "99999999999999999999",
    "1e400",
    "-0",
    "nan",
    "inf",
    "0x7ff8000000000001",
    "0x",
    "seq",
    "past+seq",
    "seq*seq*seq*seq*seq*seq*seq*seq",
    "(((((",
    "f32[]",
    "f16[2]",
    "i8",
    "bool",
    "true",
    "scan",
    "fused",
    "const",
    "param",
    "input",
    "iota",
    "concat",
    "reshape",
    "{axis=0}",
    "{kind=row}",
    "ü",
    "\u{0}",
    "\r",
];

#[derive(Clone, Debug)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, fragment: usize },
    InsertChar { at: usize, c: char },
    Swap { a: usize, b: usize },
    Duplicate { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 0..FRAGMENTS.len())
            .prop_map(|(at, fragment)| Mutation::Insert { at, fragment }),
        (any::<usize>(), any::<char>()).prop_map(|(at, c)| Mutation::InsertChar { at, c }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap { a, b }),
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
    ]
}

/// Applies a mutation to the characters of a text (so it stays valid UTF-8).
fn apply(chars: &mut Vec<char>, m: &Mutation) {
    let n = chars.len();
    let pos = |at: usize| if n == 0 { 0 } else { at % (n + 1) };
    match *m {
        Mutation::Delete { at, len } => {
            let s = pos(at).min(n);
            let e = (s + len).min(n);
            chars.drain(s..e);
        }
        Mutation::Insert { at, fragment } => {
            let s = pos(at);
            chars.splice(s..s, FRAGMENTS[fragment].chars());
        }
        Mutation::InsertChar { at, c } => chars.insert(pos(at), c),
        Mutation::Swap { a, b } if n > 0 => chars.swap(a % n, b % n),
        Mutation::Duplicate { at, len } => {
            let s = pos(at).min(n);
            let e = (s + len).min(n);
            let copy: Vec<char> = chars[s..e].to_vec();
            chars.splice(s..s, copy);
        }
        Mutation::Swap { .. } => {}
    }
}

/// Token-level mutation: split on spaces and reorder/drop/duplicate words.
fn mutate_words(text: &str, ops: &[(usize, usize, u8)]) -> String {
    let mut words: Vec<&str> = text.split(' ').collect();
    for &(a, b, kind) in ops {
        let n = words.len();
        if n == 0 {
            break;
        }
        let (a, b) = (a % n, b % n);
        match kind % 3 {
            0 => words.swap(a, b),
            1 => {
                words.remove(a);
            }
            _ => {
                let w = words[a];
                words.insert(b, w);
            }
        }
    }
    words.join(" ")
}

proptest! {
    #![proptest_config(kiln_ir::testing::config(512))]

    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,200}") {
        check_outcome(&s)?;
    }

    #[test]
    fn arbitrary_grammar_soup_never_panics(parts in prop::collection::vec(0..FRAGMENTS.len(), 0..60)) {
        let s: String = parts.iter().map(|&i| FRAGMENTS[i]).collect::<Vec<_>>().join(" ");
        check_outcome(&s)?;
    }

    #[test]
    fn mutated_graphs_never_panic(
        g in arb_graph(),
        muts in prop::collection::vec(mutation(), 1..5),
    ) {
        let mut chars: Vec<char> = print(&g).chars().collect();
        for m in &muts {
            apply(&mut chars, m);
        }
        let text: String = chars.into_iter().collect();
        check_outcome(&text)?;
    }

    #[test]
    fn word_shuffled_graphs_never_panic(
        g in arb_graph(),
        ops in prop::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 1..4),
    ) {
        check_outcome(&mutate_words(&print(&g), &ops))?;
    }
}

#[test]
fn deep_nesting_is_refused_cleanly() {
    // 40 nested fused bodies: over the limit of 32, refused without recursion trouble.
    let depth = 40;
    let mut text = String::new();
    for i in 0..depth {
        text.push_str(&format!(
            "graph @g{i}(%a: f32[]) {{\n%0 = fused(%a) {{kind=loop}} : f32[] body\n"
        ));
    }
    for _ in 0..depth {
        text.push_str("return %0 as \"r\"\n}\n");
    }
    let e = parse(&text).unwrap_err();
    assert!(e.message.contains("nested too deeply"), "{e}");
    assert_eq!(e.line, 2 * 32 + 2);
    // Unary minus chains are nesting too, for `Dim`'s recursive parser.
    let minus = format!(
        "graph @g(%x: f32[{}1]) {{\n  return\n}}\n",
        "-".repeat(100_000)
    );
    assert!(parse(&minus)
        .unwrap_err()
        .message
        .contains("nested too deeply"));
}

#[test]
fn huge_dim_arithmetic_is_refused_not_overflowed() {
    // Each concat doubles the dim; it would pass i64 after 23 more doublings
    // of 2^40, and the limit stops it first.
    let mut text = String::from(
        "graph @g(%x: f32[1099511627776]) {\n  %0 = concat(%x, %x) {axis=0} : f32[2199023255552]\n",
    );
    text.push_str("  return %0 as \"y\"\n}\n");
    let e = parse(&text).unwrap_err();
    assert!(e.message.contains("too large"), "{e}");
    // Term explosion: (a+b+c+d)^k grows fast; refused by the term limit.
    let t = format!(
        "graph @g(%x: f32[{}]) {{\n  return\n}}\n",
        ["(a+b+c+d+e+f+g+h)"; 3].join("*")
    );
    assert!(parse(&t).unwrap_err().message.contains("too many terms"));
}
