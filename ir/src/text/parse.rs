//! Parsing the text form (the grammar is in the module docs of [`crate::text`]).
//!
//! The parser rebuilds the graph through [`Graph::add_input`] and
//! [`Graph::add_node`], which infer the result types; the declared types must
//! equal them. Every graph (bodies included) is then verified. Errors carry
//! the 1-based line and column of the offending token.

use super::attrs::{self, AttrKind, AttrValue, Attrs, OpName};
use super::lex::{lex, Lines, Tok, Token};
use super::{limits, number};
use crate::graph::{Graph, GraphError, NodeId, Value};
use crate::op::{FusionKind, Op};
use crate::types::{DType, TensorType};
use crate::verify::{is_identifier, verify, VerifyError};
use crate::Dim;
use std::collections::{HashMap, HashSet};

/// A malformed text form, with the 1-based line and column of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Deepest nesting of bodies (scan and fused) the parser accepts.
pub const MAX_BODY_DEPTH: usize = 32;

/// Parses the text form of a graph.
pub fn parse(text: &str) -> Result<Graph, ParseError> {
    let lines = Lines::new(text);
    let mut p = Parser::new(text, &lines)?;
    let g = p.graph(false)?;
    p.expect_end()?;
    Ok(g)
}

/// Parses a tensor type such as `f32[past+seq,4]` (the whole text).
pub fn parse_type(text: &str) -> Result<TensorType, ParseError> {
    let lines = Lines::new(text);
    let mut p = Parser::new(text, &lines)?;
    let (ty, _) = p.ty()?;
    p.expect_end()?;
    Ok(ty)
}

/// Parses a dimension such as `past+seq` (the whole text), within the size
/// limits that keep dim arithmetic from overflowing.
pub fn parse_dim(text: &str) -> Result<Dim, ParseError> {
    let lines = Lines::new(text);
    let mut p = Parser::new(text, &lines)?;
    let d = p.dim()?;
    p.expect_end()?;
    Ok(d)
}

/// A defined value name: its node and how many results it has.
#[derive(Clone, Copy)]
struct Def {
    node: NodeId,
    results: usize,
}

/// The graph being built and the names visible in it.
struct Scope {
    graph: Graph,
    defs: HashMap<String, Def>,
    /// Byte offset of each node's definition, to place verifier errors.
    node_at: HashMap<NodeId, usize>,
    /// Parameter name -> (type, offset of its first definition).
    params: HashMap<String, (TensorType, usize)>,
    is_body: bool,
    header_at: usize,
}

/// The header of a node line, read before its body and types are known.
struct Line {
    name: String,
    name_at: usize,
    results: Option<(usize, usize)>,
    op: String,
    op_at: usize,
}

struct Parser<'a> {
    src: &'a str,
    lines: &'a Lines<'a>,
    toks: Vec<Token>,
    pos: usize,
    /// Names of the enclosing graphs, innermost last (for a hint only).
    outer: Vec<HashSet<String>>,
}

type R<T> = Result<T, ParseError>;

impl<'a> Parser<'a> {
    fn new(src: &'a str, lines: &'a Lines<'a>) -> R<Parser<'a>> {
        Ok(Parser {
            src,
            lines,
            toks: lex(src, lines)?,
            pos: 0,
            outer: Vec::new(),
        })
    }

    fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    /// The current token; always advances (past the end too, where `peek`
    /// keeps answering end of input), so `pos -= 1` undoes it exactly.
    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }

    fn err(&self, at: usize, message: impl Into<String>) -> ParseError {
        self.lines.error(at, message)
    }

    fn unexpected(&self, expected: &str) -> ParseError {
        let t = self.peek();
        self.err(
            t.start,
            format!("expected {expected} but found {}", t.describe()),
        )
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek().is_punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> R<Token> {
        if self.peek().is_punct(c) {
            Ok(self.next())
        } else {
            Err(self.unexpected(&format!("'{c}'")))
        }
    }

    fn expect_word(&mut self, word: &str) -> R<Token> {
        if self.peek().is_ident(word) {
            Ok(self.next())
        } else {
            Err(self.unexpected(&format!("'{word}'")))
        }
    }

    fn expect_end(&mut self) -> R<()> {
        match self.peek().tok {
            Tok::Eof => Ok(()),
            _ => Err(self.unexpected("end of input")),
        }
    }

    /// `p` separated list of `open .. close`; `open` already consumed.
    fn list<T>(&mut self, close: char, mut p: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        let mut out = Vec::new();
        if self.eat(close) {
            return Ok(out);
        }
        loop {
            out.push(p(self)?);
            if self.eat(',') {
                continue;
            }
            if self.eat(close) {
                return Ok(out);
            }
            return Err(self.unexpected(&format!("',' or '{close}'")));
        }
    }

    fn string(&mut self, what: &str) -> R<(String, usize)> {
        match &self.peek().tok {
            Tok::Str(s) => {
                let s = s.clone();
                Ok((s, self.next().start))
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn small_int(&mut self, what: &str) -> R<(usize, usize)> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Number(n) if n.bytes().all(|b| b.is_ascii_digit()) => {
                self.pos += 1;
                n.parse::<u32>()
                    .map(|v| (v as usize, t.start))
                    .map_err(|_| self.err(t.start, format!("integer {n} is too large")))
            }
            _ => Err(self.unexpected(what)),
        }
    }

    // ---- types and dims ----

    /// A dim: the tokens up to the next `,` `]` `}` (or unmatched `)`),
    /// handed to `Dim`'s own grammar.
    fn dim(&mut self) -> R<Dim> {
        let first = self.pos;
        let mut depth = 0usize;
        loop {
            match &self.peek().tok {
                Tok::Ident(_) | Tok::Number(_) => {}
                Tok::Punct('+' | '-' | '*') => {}
                Tok::Punct('(') => depth += 1,
                Tok::Punct(')') if depth > 0 => depth -= 1,
                _ => break,
            }
            self.pos += 1;
        }
        if self.pos == first {
            return Err(self.unexpected("a dimension"));
        }
        let start = self.toks[first].start;
        let text = &self.src[start..self.toks[self.pos - 1].end];
        limits::parse_dim(text).map_err(|e| self.err(start + e.offset, e.message))
    }

    fn ty(&mut self) -> R<(TensorType, usize)> {
        let t = self.peek().clone();
        let dtype = match &t.tok {
            Tok::Ident(name) => DType::from_name(name)
                .ok_or_else(|| self.err(t.start, format!("unknown dtype \"{name}\"")))?,
            _ => return Err(self.unexpected("a type such as f32[4]")),
        };
        self.pos += 1;
        self.expect('[')?;
        let shape = self.list(']', Self::dim)?;
        Ok((TensorType::new(dtype, shape), t.start))
    }

    /// `type` or `(type, ...)`, with the offset of each.
    fn types(&mut self) -> R<Vec<(TensorType, usize)>> {
        if self.eat('(') {
            self.list(')', Self::ty)
        } else {
            Ok(vec![self.ty()?])
        }
    }

    fn loc(&mut self) -> R<Option<String>> {
        if !self.peek().is_ident("loc") {
            return Ok(None);
        }
        self.pos += 1;
        self.expect('(')?;
        let (s, _) = self.string("a quoted location")?;
        self.expect(')')?;
        Ok(Some(s))
    }

    // ---- graphs ----

    fn graph(&mut self, is_body: bool) -> R<Graph> {
        let header_at = self.expect_word("graph")?.start;
        let name_tok = self.next();
        let Tok::Global(name) = &name_tok.tok else {
            self.pos -= 1;
            return Err(self.unexpected("a graph name such as @main"));
        };
        if !is_identifier(name) {
            return Err(self.err(
                name_tok.start,
                format!("graph name \"{name}\" is not an identifier"),
            ));
        }
        let mut s = Scope {
            graph: Graph::new(name.clone()),
            defs: HashMap::new(),
            node_at: HashMap::new(),
            params: HashMap::new(),
            is_body,
            header_at,
        };
        self.expect('(')?;
        self.list(')', |p| p.input(&mut s))?;
        self.expect('{')?;
        while matches!(self.peek().tok, Tok::Value(_)) {
            self.node(&mut s)?;
        }
        let ret_at = match self.peek() {
            t if t.is_ident("return") => self.next().start,
            _ => return Err(self.unexpected("a node definition such as '%0 = ...' or 'return'")),
        };
        if !self.peek().is_punct('}') {
            loop {
                self.output(&mut s)?;
                if !self.eat(',') {
                    break;
                }
            }
        }
        if !self.peek().is_punct('}') {
            return Err(self.unexpected("',' or '}'"));
        }
        self.pos += 1;
        if is_body && s.graph.outputs().is_empty() {
            return Err(self.err(ret_at, "a body must return at least one value"));
        }
        verify(&s.graph).map_err(|e| self.verify_error(&s, e))?;
        Ok(s.graph)
    }

    fn verify_error(&self, s: &Scope, e: VerifyError) -> ParseError {
        // Places look like "node n12 `add`"; map the id back to its line.
        let at = e
            .place
            .strip_prefix("node n")
            .and_then(|r| r.split(' ').next())
            .and_then(|id| id.parse::<u32>().ok())
            .and_then(|id| s.node_at.get(&NodeId::new(id as usize)).copied())
            .unwrap_or(s.header_at);
        self.err(at, e.message)
    }

    fn input(&mut self, s: &mut Scope) -> R<()> {
        let t = self.next();
        let Tok::Value(name) = &t.tok else {
            self.pos -= 1;
            return Err(self.unexpected("an input such as %x: f32[4]"));
        };
        if !is_identifier(name) {
            return Err(self.err(
                t.start,
                format!(
                    "input name %{name} is not an identifier (inputs are named, nodes numbered)"
                ),
            ));
        }
        if s.defs.contains_key(name) {
            return Err(self.err(t.start, format!("duplicate definition of %{name}")));
        }
        self.expect(':')?;
        let (ty, ty_at) = self.ty()?;
        limits::check_types(std::slice::from_ref(&ty)).map_err(|m| self.err(ty_at, m))?;
        let loc = self.loc()?;
        let v = s
            .graph
            .add_input(name.clone(), ty)
            .map_err(|e| self.err(t.start, e.to_string()))?;
        s.graph.set_loc(v.node, loc);
        s.node_at.insert(v.node, t.start);
        s.defs.insert(
            name.clone(),
            Def {
                node: v.node,
                results: 1,
            },
        );
        Ok(())
    }

    /// A use of a value: `%3`, `%x` or `%4#1`.
    fn use_value(&mut self, s: &Scope) -> R<Value> {
        let t = self.next();
        let Tok::Value(name) = &t.tok else {
            self.pos -= 1;
            return Err(self.unexpected("a value such as %0"));
        };
        let port = if self.eat('#') {
            Some(self.small_int("a result number after '#'")?)
        } else {
            None
        };
        let Some(def) = s.defs.get(name) else {
            let hint = if self.outer.iter().any(|o| o.contains(name)) {
                " (a body sees only its own inputs; pass the value as an operand)"
            } else {
                ""
            };
            return Err(self.err(t.start, format!("use of undefined value %{name}{hint}")));
        };
        let port = match port {
            Some((p, at)) if p >= def.results => {
                return Err(self.err(
                    at,
                    format!(
                        "%{name} has {} result(s); #{p} is out of range",
                        def.results
                    ),
                ))
            }
            Some((p, _)) => p,
            None if def.results != 1 => {
                return Err(self.err(
                    t.start,
                    format!(
                        "%{name} has {} results; refer to one as %{name}#0 .. %{name}#{}",
                        def.results,
                        def.results.saturating_sub(1)
                    ),
                ))
            }
            None => 0,
        };
        Ok(Value::new(def.node, port as u32))
    }

    fn output(&mut self, s: &mut Scope) -> R<()> {
        let at = self.peek().start;
        let v = self.use_value(s)?;
        self.expect_word("as")?;
        let (name, name_at) = self.string("the output name as a quoted string")?;
        let res = if self.peek().is_ident("alias") {
            self.pos += 1;
            let t = self.next();
            let Tok::Value(alias) = &t.tok else {
                self.pos -= 1;
                return Err(self.unexpected("the aliased input such as %k_cache"));
            };
            s.graph
                .add_output_alias(name, v, alias.clone())
                .map_err(|e| (e, t.start))
        } else {
            s.graph.add_output(name, v).map_err(|e| (e, name_at))
        };
        res.map_err(|(e, pos)| {
            let pos = if matches!(e, GraphError::DuplicateOutput(_)) {
                name_at
            } else {
                pos
            };
            self.err(pos.max(at), e.to_string())
        })
    }

    fn node(&mut self, s: &mut Scope) -> R<()> {
        let t = self.next();
        let Tok::Value(name) = t.tok else {
            self.pos -= 1;
            return Err(self.unexpected("a node definition such as '%0 = ...'"));
        };
        if s.defs.contains_key(&name) {
            return Err(self.err(t.start, format!("duplicate definition of %{name}")));
        }
        let results = if self.eat(':') {
            Some(self.small_int("the number of results after ':'")?)
        } else {
            None
        };
        self.expect('=')?;
        let op_tok = self.peek().clone();
        let Tok::Ident(op) = op_tok.tok else {
            return Err(self.unexpected("an op name"));
        };
        self.pos += 1;
        let line = Line {
            name,
            name_at: t.start,
            results,
            op,
            op_at: op_tok.start,
        };
        let class = attrs::classify(&line.op)
            .ok_or_else(|| self.err(line.op_at, format!("unknown op \"{}\"", line.op)))?;
        match class {
            OpName::Input => Err(self.err(
                line.op_at,
                "'input' cannot be a node: declare inputs in the graph header",
            )),
            OpName::Param => self.param_node(s, line),
            OpName::Const => self.const_node(s, line),
            OpName::Plain | OpName::WithBody => self.op_node(s, line, class),
        }
    }

    fn param_node(&mut self, s: &mut Scope, line: Line) -> R<()> {
        let (pname, _) = self.string("the parameter name as a quoted string")?;
        if s.is_body {
            return Err(self.err(
                line.op_at,
                format!("parameter \"{pname}\" inside a body; pass it as an operand"),
            ));
        }
        let (ty, ty_at) = self.single_type(&line)?;
        if let Some((other, at)) = s.params.get(&pname) {
            if *other != ty {
                let (l, _) = self.lines.position(*at);
                return Err(self.err(
                    ty_at,
                    format!("parameter \"{pname}\" is {ty} here but {other} at line {l}"),
                ));
            }
        }
        s.params.entry(pname.clone()).or_insert((ty.clone(), ty_at));
        let loc = self.loc()?;
        self.no_body(&line)?;
        self.add(
            s,
            &line,
            Op::Param {
                name: pname,
                ty: ty.clone(),
            },
            &[],
            vec![(ty, ty_at)],
            loc,
        )
    }

    fn const_node(&mut self, s: &mut Scope, line: Line) -> R<()> {
        // Elements: `v` or `[v, ...]`, each an optional '-' and a number or word.
        let lit_at = self.peek().start;
        let items = if self.eat('[') {
            self.list(']', Self::literal_item)?
        } else {
            vec![self.literal_item()?]
        };
        let (ty, ty_at) = self.single_type(&line)?;
        let texts: Vec<(&str, usize)> = items.iter().map(|(t, at)| (t.as_str(), *at)).collect();
        let lit = number::build_literal(&ty, &texts, lit_at).map_err(|(at, m)| self.err(at, m))?;
        let loc = self.loc()?;
        self.no_body(&line)?;
        self.add(s, &line, Op::Const(lit), &[], vec![(ty, ty_at)], loc)
    }

    fn literal_item(&mut self) -> R<(String, usize)> {
        let at = self.peek().start;
        let sign = if self.eat('-') { "-" } else { "" };
        match &self.peek().tok {
            Tok::Number(n) | Tok::Ident(n) => {
                let text = format!("{sign}{n}");
                self.pos += 1;
                Ok((text, at))
            }
            _ => Err(self.unexpected("a literal value")),
        }
    }

    /// `: type` for single-result leaves.
    fn single_type(&mut self, line: &Line) -> R<(TensorType, usize)> {
        self.expect(':')?;
        let at = self.peek().start;
        let mut tys = self.types()?;
        if tys.len() != 1 {
            return Err(self.err(at, format!("{} has exactly one result type", line.op)));
        }
        Ok(tys.remove(0))
    }

    fn no_body(&self, line: &Line) -> R<()> {
        if self.peek().is_ident("body") {
            return Err(self.err(self.peek().start, format!("{} takes no body", line.op)));
        }
        Ok(())
    }

    fn op_node(&mut self, s: &mut Scope, line: Line, class: OpName) -> R<()> {
        self.expect('(')?;
        let operands = self.list(')', |p| p.use_value(s))?;
        let attrs = if self.peek().is_punct('{') {
            self.attributes(&line.op)?
        } else {
            Vec::new()
        };
        if !self.peek().is_punct(':') {
            return Err(self.unexpected("':' and the result type"));
        }
        self.pos += 1;
        let types = self.types()?;
        let loc = self.loc()?;
        let body = if class == OpName::WithBody {
            if !self.peek().is_ident("body") {
                return Err(self.unexpected(&format!("'body' and the {} body graph", line.op)));
            }
            let at = self.next().start;
            if self.outer.len() >= MAX_BODY_DEPTH {
                return Err(self.err(
                    at,
                    format!("bodies nested too deeply (the limit is {MAX_BODY_DEPTH})"),
                ));
            }
            self.outer.push(s.defs.keys().cloned().collect());
            let body = self.graph(true);
            self.outer.pop();
            Some(body?)
        } else {
            self.no_body(&line)?;
            None
        };
        let op = attrs::build_op(&line.op, Attrs::new(&line.op, attrs), body)
            .map_err(|m| self.err(line.op_at, m))?;
        self.add(s, &line, op, &operands, types, loc)
    }

    fn attributes(&mut self, op: &str) -> R<Vec<(&'static str, AttrValue)>> {
        self.expect('{')?;
        let spec = attrs::spec(op);
        let mut seen: Vec<(&'static str, AttrValue)> = Vec::new();
        self.list('}', |p| {
            let t = p.next();
            let Tok::Ident(key) = &t.tok else {
                p.pos -= 1;
                return Err(p.unexpected("an attribute name"));
            };
            let Some(&(k, kind)) = spec.iter().find(|(k, _)| k == key) else {
                let none = if spec.is_empty() {
                    " (it takes none)"
                } else {
                    ""
                };
                return Err(p.err(
                    t.start,
                    format!("unknown attribute \"{key}\" for {op}{none}"),
                ));
            };
            if seen.iter().any(|(s, _)| *s == k) {
                return Err(p.err(t.start, format!("attribute \"{k}\" given twice")));
            }
            p.expect('=')?;
            let v = p.attr_value(k, kind)?;
            seen.push((k, v));
            Ok(())
        })?;
        Ok(seen)
    }

    fn attr_value(&mut self, key: &str, kind: AttrKind) -> R<AttrValue> {
        let expected = format!("{} for \"{key}\"", kind.expected());
        let t = self.peek().clone();
        let word = match &t.tok {
            Tok::Ident(w) => Some(w.clone()),
            _ => None,
        };
        // Kinds spelled as one word.
        let from_word = |p: &mut Self, v: Option<AttrValue>, unknown: String| match (v, &word) {
            (Some(v), _) => {
                p.pos += 1;
                Ok(v)
            }
            (None, Some(_)) => Err(p.err(t.start, unknown)),
            (None, None) => Err(p.unexpected(&expected)),
        };
        let w = word.as_deref().unwrap_or("");
        match kind {
            AttrKind::Int => Ok(AttrValue::Int(self.small_int(&expected)?.0)),
            AttrKind::Bool => {
                let v = match w {
                    "true" => Some(AttrValue::Bool(true)),
                    "false" => Some(AttrValue::Bool(false)),
                    _ => None,
                };
                from_word(self, v, format!("expected {expected} but found '{w}'"))
            }
            AttrKind::DType => {
                let v = DType::from_name(w).map(AttrValue::DType);
                from_word(self, v, format!("unknown dtype \"{w}\""))
            }
            AttrKind::Kind => {
                let v = FusionKind::from_name(w).map(AttrValue::Kind);
                from_word(
                    self,
                    v,
                    format!("unknown fusion kind \"{w}\" (expected loop or row)"),
                )
            }
            AttrKind::Dim => Ok(AttrValue::Dim(self.dim()?)),
            AttrKind::Ints => {
                self.expect('[')?;
                let v = self.list(']', |p| p.small_int("a non-negative integer"))?;
                Ok(AttrValue::Ints(v.into_iter().map(|x| x.0).collect()))
            }
            AttrKind::Shape => {
                self.expect('[')?;
                Ok(AttrValue::Shape(self.list(']', Self::dim)?))
            }
            AttrKind::Type => Ok(AttrValue::Type(self.ty()?.0)),
            AttrKind::Float => {
                let (text, at) = self.literal_item()?;
                let v = number::parse_float(&text, DType::I64).map_err(|m| self.err(at, m))?;
                Ok(AttrValue::Float(v))
            }
            AttrKind::Floats => {
                self.expect('[')?;
                let v = self.list(']', |p| {
                    let (text, at) = p.literal_item()?;
                    number::parse_float(&text, DType::I64).map_err(|m| p.err(at, m))
                })?;
                Ok(AttrValue::Floats(v))
            }
        }
    }

    /// Adds the node, checks the declared types against the inferred ones and
    /// records the name.
    fn add(
        &mut self,
        s: &mut Scope,
        line: &Line,
        op: Op,
        operands: &[Value],
        declared: Vec<(TensorType, usize)>,
        loc: Option<String>,
    ) -> R<()> {
        if let Some((n, at)) = line.results {
            if n != declared.len() {
                return Err(self.err(
                    at,
                    format!(
                        "%{}:{n} declares {n} result(s) but {} type(s) follow",
                        line.name,
                        declared.len()
                    ),
                ));
            }
        }
        let tys: Vec<&TensorType> = operands.iter().filter_map(|v| s.graph.try_ty(*v)).collect();
        limits::check_op(&op, &tys).map_err(|m| self.err(line.op_at, m))?;
        let id = s
            .graph
            .add_node(op, operands)
            .map_err(|e| self.err(line.op_at, e.to_string()))?;
        let inferred = s.graph.node(id).outputs.clone();
        let fail = |at: usize, m: String| Err(self.err(at, m));
        if let Err(m) = limits::check_types(&inferred) {
            return fail(line.op_at, m);
        }
        if inferred.len() != declared.len() {
            let at = declared.first().map_or(line.op_at, |d| d.1);
            return fail(
                at,
                format!(
                    "declared {} result type(s) but {} gives {}",
                    declared.len(),
                    line.op,
                    inferred.len()
                ),
            );
        }
        for ((want, at), got) in declared.iter().zip(&inferred) {
            if want != got {
                return fail(*at, format!("declared type {want} but the op gives {got}"));
            }
        }
        s.graph.set_loc(id, loc);
        s.node_at.insert(id, line.name_at);
        s.defs.insert(
            line.name.clone(),
            Def {
                node: id,
                results: inferred.len(),
            },
        );
        Ok(())
    }
}
