//! A small builder for MLIR text: SSA values with types, scoped CSE of pure
//! ops, hoisted constants, and structured control flow (`scf.for`, `scf.if`)
//! built from closures so nesting follows Rust's.

use crate::error::CodegenError;
use std::collections::HashMap;
use std::fmt::{self, Write};

/// A register type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    F32,
    /// `f64`: scalar work that must round exactly as the interpreter does
    /// (the prflash keep probability).
    F64,
    I1,
    I8,
    I16,
    I32,
    I64,
    Index,
    Ptr,
    /// `vector<N x f32>`.
    VF32(u32),
    /// `vector<N x f16>`: only as a conversion's source.
    VF16(u32),
    /// `vector<N x i16>`: raw `f16`/`bf16` bits as loaded.
    VI16(u32),
    /// `vector<N x i32>`.
    VI32(u32),
}

impl Ty {
    pub fn bits(self) -> u32 {
        match self {
            Ty::I1 => 1,
            Ty::I8 => 8,
            Ty::I16 => 16,
            Ty::I32 | Ty::F32 => 32,
            Ty::I64 | Ty::F64 | Ty::Index | Ty::Ptr => 64,
            Ty::VF32(n) | Ty::VI32(n) => 32 * n,
            Ty::VF16(n) | Ty::VI16(n) => 16 * n,
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::F32 => f.write_str("f32"),
            Ty::F64 => f.write_str("f64"),
            Ty::I1 => f.write_str("i1"),
            Ty::I8 => f.write_str("i8"),
            Ty::I16 => f.write_str("i16"),
            Ty::I32 => f.write_str("i32"),
            Ty::I64 => f.write_str("i64"),
            Ty::Index => f.write_str("index"),
            Ty::Ptr => f.write_str("!llvm.ptr"),
            Ty::VF32(n) => write!(f, "vector<{n}xf32>"),
            Ty::VF16(n) => write!(f, "vector<{n}xf16>"),
            Ty::VI16(n) => write!(f, "vector<{n}xi16>"),
            Ty::VI32(n) => write!(f, "vector<{n}xi32>"),
        }
    }
}

const SINGLE: u16 = u16::MAX;

/// An SSA value: `%v<id>` or `%v<id>#<part>` for one result of a multi-result op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct V {
    id: u32,
    part: u16,
    pub ty: Ty,
}

impl fmt::Display for V {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.part == SINGLE {
            write!(f, "%v{}", self.id)
        } else {
            write!(f, "%v{}#{}", self.id, self.part)
        }
    }
}

pub type R<T> = Result<T, CodegenError>;

/// Builds one function body. Constants are hoisted into a prologue (they
/// dominate everything); pure ops are CSE'd within the scope they were
/// emitted in and the scopes enclosing it.
pub struct Builder {
    next: u32,
    prologue: String,
    body: String,
    indent: usize,
    in_prologue: bool,
    scopes: Vec<HashMap<String, V>>,
    consts: HashMap<(Ty, u64), V>,
    known_ints: HashMap<V, i64>,
    /// Module-level declarations the function needs (external libm calls).
    pub externs: std::collections::BTreeSet<String>,
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            next: 0,
            prologue: String::new(),
            body: String::new(),
            indent: 2,
            in_prologue: false,
            scopes: vec![HashMap::new()],
            consts: HashMap::new(),
            known_ints: HashMap::new(),
            externs: Default::default(),
        }
    }

    /// A fresh value name of type `ty` (for block arguments).
    pub fn fresh(&mut self, ty: Ty) -> V {
        self.next += 1;
        V {
            id: self.next,
            part: SINGLE,
            ty,
        }
    }

    fn buf(&mut self) -> &mut String {
        if self.in_prologue {
            &mut self.prologue
        } else {
            &mut self.body
        }
    }

    /// Writes one line at the current indentation.
    pub fn line(&mut self, text: &str) {
        let indent = if self.in_prologue { 2 } else { self.indent };
        let buf = self.buf();
        for _ in 0..indent {
            buf.push(' ');
        }
        buf.push_str(text);
        buf.push('\n');
    }

    /// Emits `%v = text` without CSE (loads, ops with effects).
    pub fn op(&mut self, ty: Ty, text: &str) -> V {
        let v = self.fresh(ty);
        self.line(&format!("{v} = {text}"));
        v
    }

    /// Emits `%v = text` unless the same text was emitted in an enclosing scope.
    pub fn pure(&mut self, ty: Ty, text: String) -> V {
        if let Some(v) = self.lookup(&text) {
            return v;
        }
        let v = self.op(ty, &text);
        self.remember(text, v);
        v
    }

    /// Looks a key up in the enclosing scopes.
    pub fn lookup(&self, key: &str) -> Option<V> {
        self.scopes.iter().rev().find_map(|s| s.get(key).copied())
    }

    /// Records a value under a key in the innermost scope (or the function
    /// scope when emitting the prologue).
    pub fn remember(&mut self, key: String, v: V) {
        let s = if self.in_prologue {
            &mut self.scopes[0]
        } else {
            self.scopes.last_mut().expect("function scope")
        };
        s.insert(key, v);
    }

    /// Runs `f` with output going to the prologue (values that depend only on
    /// function arguments: loaded sizes, dims).
    pub fn in_prologue<T>(&mut self, f: impl FnOnce(&mut Builder) -> T) -> T {
        let was = self.in_prologue;
        self.in_prologue = true;
        let r = f(self);
        self.in_prologue = was;
        r
    }

    pub(crate) fn enter(&mut self) {
        self.indent += 2;
        self.scopes.push(HashMap::new());
    }
    pub(crate) fn leave(&mut self) {
        self.indent -= 2;
        self.scopes.pop();
    }

    // ---- constants -------------------------------------------------------

    fn constant(&mut self, ty: Ty, bits: u64, text: String) -> V {
        if let Some(v) = self.consts.get(&(ty, bits)) {
            return *v;
        }
        let v = self.fresh(ty);
        let was = self.in_prologue;
        self.in_prologue = true;
        self.line(&format!("{v} = arith.constant {text} : {ty}"));
        self.in_prologue = was;
        self.consts.insert((ty, bits), v);
        v
    }

    /// An integer constant (also `i1` and `index`).
    pub fn ci(&mut self, ty: Ty, value: i64) -> V {
        let v = if ty == Ty::I1 {
            // `arith.constant true` takes no type suffix.
            let t = if value != 0 { "true" } else { "false" };
            if let Some(v) = self.consts.get(&(ty, value as u64)) {
                *v
            } else {
                let v = self.fresh(ty);
                let was = self.in_prologue;
                self.in_prologue = true;
                self.line(&format!("{v} = arith.constant {t}"));
                self.in_prologue = was;
                self.consts.insert((ty, value as u64), v);
                v
            }
        } else {
            self.constant(ty, value as u64, value.to_string())
        };
        self.known_ints.insert(v, value);
        v
    }

    pub fn i64c(&mut self, value: i64) -> V {
        self.ci(Ty::I64, value)
    }

    /// A float constant, written as its exact bit pattern.
    pub fn cf(&mut self, ty: Ty, value: f64) -> V {
        let (bits, text) = match ty {
            Ty::F32 => {
                let b = (value as f32).to_bits();
                (b as u64, format!("0x{b:08X}"))
            }
            Ty::F64 => {
                let b = value.to_bits();
                (b, format!("0x{b:016X}"))
            }
            _ => unreachable!("cf on non-float type {ty}"),
        };
        self.constant(ty, bits, text)
    }

    /// The value of an integer constant, if `v` is one.
    pub fn known(&self, v: V) -> Option<i64> {
        self.known_ints.get(&v).copied()
    }

    // ---- integer arithmetic with folding ------------------------------------

    pub fn bin(&mut self, name: &str, a: V, b: V) -> V {
        self.pure(a.ty, format!("arith.{name} {a}, {b} : {}", a.ty))
    }

    pub fn add(&mut self, a: V, b: V) -> V {
        match (self.known(a), self.known(b)) {
            (Some(x), Some(y)) => self.ci(a.ty, x.wrapping_add(y)),
            (Some(0), _) => b,
            (_, Some(0)) => a,
            _ => self.bin("addi", a, b),
        }
    }

    pub fn sub(&mut self, a: V, b: V) -> V {
        match (self.known(a), self.known(b)) {
            (Some(x), Some(y)) => self.ci(a.ty, x.wrapping_sub(y)),
            (_, Some(0)) => a,
            _ => self.bin("subi", a, b),
        }
    }

    pub fn mul(&mut self, a: V, b: V) -> V {
        match (self.known(a), self.known(b)) {
            (Some(x), Some(y)) => self.ci(a.ty, x.wrapping_mul(y)),
            (Some(1), _) => b,
            (_, Some(1)) => a,
            (Some(0), _) | (_, Some(0)) => self.ci(a.ty, 0),
            _ => self.bin("muli", a, b),
        }
    }

    /// Signed division of non-negative index values.
    pub fn div(&mut self, a: V, b: V) -> V {
        match (self.known(a), self.known(b)) {
            (Some(x), Some(y)) if y != 0 => self.ci(a.ty, x / y),
            (_, Some(1)) => a,
            _ => self.bin("divsi", a, b),
        }
    }

    /// Signed remainder of non-negative index values.
    pub fn rem(&mut self, a: V, b: V) -> V {
        match (self.known(a), self.known(b)) {
            (Some(x), Some(y)) if y != 0 => self.ci(a.ty, x % y),
            (_, Some(1)) => self.ci(a.ty, 0),
            _ => self.bin("remsi", a, b),
        }
    }

    pub fn min_s(&mut self, a: V, b: V) -> V {
        match (self.known(a), self.known(b)) {
            (Some(x), Some(y)) => self.ci(a.ty, x.min(y)),
            _ => self.bin("minsi", a, b),
        }
    }

    pub fn max_s(&mut self, a: V, b: V) -> V {
        match (self.known(a), self.known(b)) {
            (Some(x), Some(y)) => self.ci(a.ty, x.max(y)),
            _ => self.bin("maxsi", a, b),
        }
    }

    /// `arith.cmpi` with predicate `pred` (`slt`, `eq`, …).
    pub fn cmpi(&mut self, pred: &str, a: V, b: V) -> V {
        self.pure(Ty::I1, format!("arith.cmpi {pred}, {a}, {b} : {}", a.ty))
    }

    pub fn cmpf(&mut self, pred: &str, a: V, b: V) -> V {
        self.pure(Ty::I1, format!("arith.cmpf {pred}, {a}, {b} : {}", a.ty))
    }

    pub fn select(&mut self, c: V, a: V, b: V) -> V {
        if a == b {
            return a;
        }
        self.pure(a.ty, format!("arith.select {c}, {a}, {b} : {}", a.ty))
    }

    pub fn and(&mut self, a: V, b: V) -> V {
        self.bin("andi", a, b)
    }

    /// A conversion op `name` (`arith.extf`, …) from `a` to `ty`.
    pub fn conv(&mut self, name: &str, a: V, ty: Ty) -> V {
        if a.ty == ty {
            return a;
        }
        self.pure(ty, format!("{name} {a} : {} to {ty}", a.ty))
    }

    /// Float binary op (`addf`, `mulf`, …).
    pub fn fbin(&mut self, name: &str, a: V, b: V) -> V {
        self.bin(name, a, b)
    }

    // ---- memory ------------------------------------------------------------

    /// `&p[i]` for elements of `elem`.
    pub fn gep(&mut self, p: V, i: V, elem: Ty) -> V {
        if self.known(i) == Some(0) {
            return p;
        }
        self.pure(
            Ty::Ptr,
            format!(
                "llvm.getelementptr inbounds {p}[{i}] : (!llvm.ptr, {}) -> !llvm.ptr, {elem}",
                i.ty
            ),
        )
    }

    /// A hint to bring the cache line of `&p[i]` (elements of `elem`) into
    /// the outer caches for reading, not L1 (locality 1, x86 `prefetcht2`):
    /// on the znver4 VM, prefetches into L1 of KV-cache rows a few KiB
    /// apart held L1's miss buffers that the demand loads then waited for
    /// (decode attention of the 134M Llama: 0.79 -> 0.59 ms a step with
    /// this hint). The address may lie past the buffer's end: a prefetch
    /// never faults, so the pointer is not `inbounds`.
    pub fn prefetch(&mut self, p: V, i: V, elem: Ty) {
        let q = self.pure(
            Ty::Ptr,
            format!(
                "llvm.getelementptr {p}[{i}] : (!llvm.ptr, {}) -> !llvm.ptr, {elem}",
                i.ty
            ),
        );
        self.line(&format!(
            "\"llvm.intr.prefetch\"({q}) <{{cache = 1 : i32, hint = 1 : i32, rw = 0 : i32}}> : (!llvm.ptr) -> ()"
        ));
    }

    pub fn load(&mut self, p: V, ty: Ty) -> V {
        self.op(ty, &format!("llvm.load {p} : !llvm.ptr -> {ty}"))
    }

    pub fn store(&mut self, v: V, p: V) {
        self.line(&format!("llvm.store {v}, {p} : {}, !llvm.ptr", v.ty));
    }

    pub(crate) fn results(&mut self, tys: impl Iterator<Item = Ty>) -> Vec<V> {
        let tys: Vec<Ty> = tys.collect();
        if tys.is_empty() {
            return Vec::new();
        }
        let base = self.fresh(tys[0]);
        if tys.len() == 1 {
            return vec![base];
        }
        tys.iter()
            .enumerate()
            .map(|(i, &ty)| V {
                id: base.id,
                part: i as u16,
                ty,
            })
            .collect()
    }

    /// Emits an op with several results (`%v:n = text`).
    pub fn op_multi(&mut self, tys: &[Ty], text: &str) -> Vec<V> {
        let rs = self.results(tys.iter().copied());
        self.line(&format!("{} = {text}", results_lhs(&rs)));
        rs
    }

    /// The prologue and body, indented for a function body.
    pub fn finish(&mut self) -> String {
        let mut s = std::mem::take(&mut self.prologue);
        s.push_str(&self.body);
        s
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

fn results_lhs(results: &[V]) -> String {
    if results.len() == 1 {
        results[0].to_string()
    } else {
        format!("%v{}:{}", results[0].id, results.len())
    }
}

pub fn names(vs: &[V]) -> String {
    vs.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn types(vs: &[V]) -> String {
    vs.iter()
        .map(|v| v.ty.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Anything that owns a [`Builder`]; structured control flow is generic over
/// it so loop and branch bodies get the whole emission context back.
pub trait Emit {
    fn b(&mut self) -> &mut Builder;
}

impl Emit for Builder {
    fn b(&mut self) -> &mut Builder {
        self
    }
}

/// `scf.for %iv = lb to ub step step` over `i64`, with loop-carried values.
/// `body` gets the induction variable and the carried values and returns the
/// next carried values; the loop's results are returned.
pub fn for_loop<C: Emit>(
    cx: &mut C,
    lb: V,
    ub: V,
    step: V,
    inits: &[V],
    body: impl FnOnce(&mut C, V, &[V]) -> R<Vec<V>>,
) -> R<Vec<V>> {
    let b = cx.b();
    let iv = b.fresh(Ty::I64);
    let args: Vec<V> = inits.iter().map(|i| b.fresh(i.ty)).collect();
    let results = b.results(inits.iter().map(|i| i.ty));
    let mut head = String::new();
    if !inits.is_empty() {
        write!(head, "{} = ", results_lhs(&results)).ok();
    }
    write!(head, "scf.for {iv} = {lb} to {ub} step {step}").ok();
    if !inits.is_empty() {
        let pairs: Vec<String> = args
            .iter()
            .zip(inits)
            .map(|(a, i)| format!("{a} = {i}"))
            .collect();
        write!(
            head,
            " iter_args({}) -> ({})",
            pairs.join(", "),
            types(inits)
        )
        .ok();
    }
    write!(head, " : i64 {{").ok();
    b.line(&head);
    b.enter();
    let yields = body(cx, iv, &args);
    let b = cx.b();
    match yields {
        Ok(y) => {
            if !y.is_empty() {
                b.line(&format!("scf.yield {} : {}", names(&y), types(&y)));
            }
            b.leave();
            b.line("}");
            Ok(results)
        }
        Err(e) => {
            b.leave();
            Err(e)
        }
    }
}

/// `scf.if cond -> (tys) { then } else { otherwise }`.
pub fn if_else<C: Emit>(
    cx: &mut C,
    cond: V,
    tys: &[Ty],
    then: impl FnOnce(&mut C) -> R<Vec<V>>,
    otherwise: impl FnOnce(&mut C) -> R<Vec<V>>,
) -> R<Vec<V>> {
    let b = cx.b();
    let results = b.results(tys.iter().copied());
    if tys.is_empty() {
        b.line(&format!("scf.if {cond} {{"));
    } else {
        let tlist: Vec<String> = tys.iter().map(|t| t.to_string()).collect();
        b.line(&format!(
            "{} = scf.if {cond} -> ({}) {{",
            results_lhs(&results),
            tlist.join(", ")
        ));
    }
    b.enter();
    let y = then(cx)?;
    let b = cx.b();
    if !y.is_empty() {
        b.line(&format!("scf.yield {} : {}", names(&y), types(&y)));
    }
    b.leave();
    b.line("} else {");
    b.enter();
    let y = otherwise(cx)?;
    let b = cx.b();
    if !y.is_empty() {
        b.line(&format!("scf.yield {} : {}", names(&y), types(&y)));
    }
    b.leave();
    b.line("}");
    Ok(results)
}

/// `scf.if cond { then }`.
pub fn if_then<C: Emit>(cx: &mut C, cond: V, then: impl FnOnce(&mut C) -> R<()>) -> R<()> {
    let b = cx.b();
    b.line(&format!("scf.if {cond} {{"));
    b.enter();
    then(cx)?;
    let b = cx.b();
    b.leave();
    b.line("}");
    Ok(())
}
