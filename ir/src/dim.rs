//! Symbolic dimensions.
//!
//! A [`Dim`] is a polynomial with integer coefficients over named sizes
//! (`seq`, `past`, `batch`, …), kept in a canonical form so that two dims are
//! equal exactly when their polynomials are equal: `past+seq == seq+past`,
//! `2*seq == seq+seq`. Symbolic sizes are what let one compiled model serve
//! prefill and decode without recompiling: the runtime binds the symbols from
//! the shapes of the actual inputs and evaluates every dim it needs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A product of symbols, sorted (with repetition: `seq*seq`). Empty = the constant term.
type Monomial = Vec<String>;

/// A symbolic dimension: `Σ coef · Π symbols`, canonical (no zero coefficients).
/// Serialized as its canonical text (`"past+seq"`), which every format can hold.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dim {
    terms: BTreeMap<Monomial, i64>,
}

/// Values of the named sizes, for evaluating dims.
pub type Bindings = BTreeMap<String, i64>;

/// Why a dim could not be evaluated or solved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimError {
    #[error("size `{0}` is not bound")]
    Unbound(String),
    #[error("dimension `{dim}` evaluates to {value}, which is negative")]
    Negative { dim: String, value: i64 },
    #[error("dimension arithmetic overflowed in `{0}`")]
    Overflow(String),
    #[error("size `{symbol}` is bound to both {first} and {second}")]
    Conflict {
        symbol: String,
        first: i64,
        second: i64,
    },
    #[error("dimension `{dim}` should be {expected} but the tensor has {actual}")]
    Mismatch {
        dim: String,
        expected: i64,
        actual: i64,
    },
    #[error("cannot solve `{dim}` = {actual}: more than one unknown size")]
    Unsolvable { dim: String, actual: i64 },
}

impl Dim {
    /// The constant `n`.
    pub fn constant(n: i64) -> Dim {
        let mut terms = BTreeMap::new();
        if n != 0 {
            terms.insert(Vec::new(), n);
        }
        Dim { terms }
    }

    /// The named size `name`.
    pub fn sym(name: impl Into<String>) -> Dim {
        let mut terms = BTreeMap::new();
        terms.insert(vec![name.into()], 1);
        Dim { terms }
    }

    /// `Some(n)` when the dim does not depend on any symbol.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// `Some(name)` when the dim is exactly one symbol.
    pub fn as_sym(&self) -> Option<&str> {
        match self.terms.iter().next() {
            Some((m, 1)) if self.terms.len() == 1 && m.len() == 1 => Some(&m[0]),
            _ => None,
        }
    }

    pub fn is_const(&self) -> bool {
        self.as_const().is_some()
    }

    /// The symbols the dim mentions, sorted and without repetition.
    pub fn symbols(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .terms
            .keys()
            .flat_map(|m| m.iter().map(String::as_str))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn from_terms(terms: impl IntoIterator<Item = (Monomial, i64)>) -> Dim {
        let mut out: BTreeMap<Monomial, i64> = BTreeMap::new();
        for (m, c) in terms {
            *out.entry(m).or_insert(0) += c;
        }
        out.retain(|_, c| *c != 0);
        Dim { terms: out }
    }

    /// The polynomial's terms as `(coefficient, symbols)` in canonical order
    /// (symbols sorted, repeated for powers); code generation emits a dim as
    /// arithmetic from them.
    pub fn terms(&self) -> impl Iterator<Item = (i64, &[String])> + '_ {
        self.terms.iter().map(|(m, c)| (*c, m.as_slice()))
    }

    /// Multiplies by a constant.
    pub fn scale(&self, k: i64) -> Dim {
        Dim::from_terms(self.terms.iter().map(|(m, c)| (m.clone(), c * k)))
    }

    /// Exact division by a positive constant: `Some` only when every
    /// coefficient is divisible (so the result is a dim for every binding).
    pub fn div_exact(&self, k: i64) -> Option<Dim> {
        if k <= 0 || self.terms.values().any(|c| c % k != 0) {
            return None;
        }
        Some(Dim::from_terms(
            self.terms.iter().map(|(m, c)| (m.clone(), c / k)),
        ))
    }

    /// Evaluates under `bindings`; every symbol must be bound and the result non-negative.
    pub fn eval(&self, bindings: &Bindings) -> Result<i64, DimError> {
        let overflow = || DimError::Overflow(self.to_string());
        let mut total: i64 = 0;
        for (m, c) in &self.terms {
            let mut term = *c;
            for s in m {
                let v = *bindings
                    .get(s)
                    .ok_or_else(|| DimError::Unbound(s.clone()))?;
                term = term.checked_mul(v).ok_or_else(overflow)?;
            }
            total = total.checked_add(term).ok_or_else(overflow)?;
        }
        if total < 0 {
            return Err(DimError::Negative {
                dim: self.to_string(),
                value: total,
            });
        }
        Ok(total)
    }

    /// Evaluates as `usize` (for sizing buffers).
    pub fn eval_usize(&self, bindings: &Bindings) -> Result<usize, DimError> {
        self.eval(bindings).map(|v| v as usize)
    }

    /// Binds the symbols of `self` so that it evaluates to `actual`, given the
    /// symbols already in `bindings`. Solves dims that are affine in a single
    /// unknown symbol (`seq`, `past+seq`, `2*seq+1`); checks fully bound dims.
    pub fn unify(&self, actual: i64, bindings: &mut Bindings) -> Result<(), DimError> {
        let unknown: Vec<&str> = self
            .symbols()
            .into_iter()
            .filter(|s| !bindings.contains_key(*s))
            .collect();
        match unknown.as_slice() {
            [] => {
                let expected = self.eval(bindings)?;
                if expected != actual {
                    return Err(DimError::Mismatch {
                        dim: self.to_string(),
                        expected,
                        actual,
                    });
                }
                Ok(())
            }
            [u] => {
                let u = u.to_string();
                // Only affine in `u`: coefficient * u + rest.
                let overflow = || DimError::Overflow(self.to_string());
                let mut coef = 0i64;
                let mut rest = 0i64;
                for (m, c) in &self.terms {
                    let uses = m.iter().filter(|s| **s == u).count();
                    let mut term = *c;
                    for s in m.iter().filter(|s| **s != u) {
                        term = term.checked_mul(bindings[s]).ok_or_else(overflow)?;
                    }
                    match uses {
                        0 => rest = rest.checked_add(term).ok_or_else(overflow)?,
                        1 => coef = coef.checked_add(term).ok_or_else(overflow)?,
                        _ => {
                            return Err(DimError::Unsolvable {
                                dim: self.to_string(),
                                actual,
                            })
                        }
                    }
                }
                let diff = actual.checked_sub(rest).ok_or_else(overflow)?;
                if coef == 0 || diff % coef != 0 || diff / coef < 0 {
                    return Err(DimError::Unsolvable {
                        dim: self.to_string(),
                        actual,
                    });
                }
                bindings.insert(u, diff / coef);
                Ok(())
            }
            _ => Err(DimError::Unsolvable {
                dim: self.to_string(),
                actual,
            }),
        }
    }

    /// Substitutes dims for symbols.
    pub fn substitute(&self, map: &BTreeMap<String, Dim>) -> Dim {
        let mut out = Dim::constant(0);
        for (m, c) in &self.terms {
            let mut term = Dim::constant(*c);
            for s in m {
                let factor = map.get(s).cloned().unwrap_or_else(|| Dim::sym(s.clone()));
                term = &term * &factor;
            }
            out = &out + &term;
        }
        out
    }
}

impl Serialize for Dim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dim, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl From<i64> for Dim {
    fn from(n: i64) -> Dim {
        Dim::constant(n)
    }
}
impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::constant(n as i64)
    }
}
impl From<i32> for Dim {
    fn from(n: i32) -> Dim {
        Dim::constant(n as i64)
    }
}
impl From<&str> for Dim {
    /// A symbol name, or an expression such as `past+seq` (panics on a malformed one;
    /// use [`str::parse`] for untrusted text).
    fn from(s: &str) -> Dim {
        s.parse()
            .unwrap_or_else(|e| panic!("invalid dimension `{s}`: {e}"))
    }
}
impl From<&Dim> for Dim {
    fn from(d: &Dim) -> Dim {
        d.clone()
    }
}

impl std::ops::Add for &Dim {
    type Output = Dim;
    fn add(self, rhs: &Dim) -> Dim {
        Dim::from_terms(self.terms.clone().into_iter().chain(rhs.terms.clone()))
    }
}
impl std::ops::Sub for &Dim {
    type Output = Dim;
    fn sub(self, rhs: &Dim) -> Dim {
        self + &rhs.scale(-1)
    }
}
impl std::ops::Mul for &Dim {
    type Output = Dim;
    fn mul(self, rhs: &Dim) -> Dim {
        let mut terms = Vec::new();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &rhs.terms {
                let mut m = ma.clone();
                m.extend(mb.iter().cloned());
                m.sort();
                terms.push((m, ca * cb));
            }
        }
        Dim::from_terms(terms)
    }
}
macro_rules! by_value_ops {
    ($($tr:ident $f:ident),*) => {$(
        impl std::ops::$tr for Dim {
            type Output = Dim;
            fn $f(self, rhs: Dim) -> Dim { std::ops::$tr::$f(&self, &rhs) }
        }
        impl std::ops::$tr<i64> for Dim {
            type Output = Dim;
            fn $f(self, rhs: i64) -> Dim { std::ops::$tr::$f(&self, &Dim::constant(rhs)) }
        }
    )*};
}
by_value_ops!(Add add, Sub sub, Mul mul);

/// Product of dims (element count of a shape).
pub fn product<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Dim {
    dims.into_iter().fold(Dim::constant(1), |acc, d| &acc * d)
}

impl fmt::Display for Dim {
    /// Canonical text: constant term last, higher degree first, e.g. `past+seq`, `2*seq-1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return write!(f, "0");
        }
        let mut terms: Vec<(&Monomial, &i64)> = self.terms.iter().collect();
        terms.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
        for (i, (m, c)) in terms.iter().enumerate() {
            let c = **c;
            let (sign, mag) = if c < 0 { ("-", -c) } else { ("+", c) };
            if i > 0 || sign == "-" {
                write!(f, "{sign}")?;
            }
            if m.is_empty() {
                write!(f, "{mag}")?;
            } else {
                if mag != 1 {
                    write!(f, "{mag}*")?;
                }
                write!(f, "{}", m.join("*"))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// A malformed dimension expression; `offset` is a byte offset into the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at offset {offset}")]
pub struct DimParseError {
    pub message: String,
    pub offset: usize,
}

impl std::str::FromStr for Dim {
    type Err = DimParseError;
    /// Grammar: `expr := term (('+'|'-') term)*`, `term := factor ('*' factor)*`,
    /// `factor := integer | identifier | '(' expr ')' | '-' factor`.
    fn from_str(s: &str) -> Result<Dim, DimParseError> {
        let mut p = DimParser {
            s: s.as_bytes(),
            pos: 0,
        };
        let d = p.expr()?;
        p.skip_ws();
        if p.pos != p.s.len() {
            return Err(p.err("unexpected character in dimension"));
        }
        Ok(d)
    }
}

struct DimParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl DimParser<'_> {
    fn err(&self, m: &str) -> DimParseError {
        DimParseError {
            message: m.to_string(),
            offset: self.pos,
        }
    }
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }
    fn expr(&mut self) -> Result<Dim, DimParseError> {
        let mut acc = self.term()?;
        while let Some(c @ (b'+' | b'-')) = self.peek() {
            self.pos += 1;
            let t = self.term()?;
            acc = if c == b'+' { &acc + &t } else { &acc - &t };
        }
        Ok(acc)
    }
    fn term(&mut self) -> Result<Dim, DimParseError> {
        let mut acc = self.factor()?;
        while self.peek() == Some(b'*') {
            self.pos += 1;
            let f = self.factor()?;
            acc = &acc * &f;
        }
        Ok(acc)
    }
    fn factor(&mut self) -> Result<Dim, DimParseError> {
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                let d = self.expr()?;
                if self.peek() != Some(b')') {
                    return Err(self.err("expected `)`"));
                }
                self.pos += 1;
                Ok(d)
            }
            Some(b'-') => {
                self.pos += 1;
                Ok(self.factor()?.scale(-1))
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
                text.parse::<i64>()
                    .map(Dim::constant)
                    .map_err(|_| DimParseError {
                        message: "integer too large".into(),
                        offset: start,
                    })
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.pos;
                while self.pos < self.s.len()
                    && (self.s[self.pos].is_ascii_alphanumeric() || self.s[self.pos] == b'_')
                {
                    self.pos += 1;
                }
                let name = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
                Ok(Dim::sym(name))
            }
            _ => Err(self.err("expected a size name, an integer or `(`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_equality() {
        let a: Dim = "past+seq".parse().unwrap();
        let b: Dim = "seq + past".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "past+seq");
        let c: Dim = "2*(seq+1)-2".parse().unwrap();
        assert_eq!(c, Dim::sym("seq").scale(2));
        assert_eq!(c.to_string(), "2*seq");
        assert_eq!("seq-seq".parse::<Dim>().unwrap(), Dim::constant(0));
        assert_eq!(
            "4*heads*seq".parse::<Dim>().unwrap().to_string(),
            "4*heads*seq"
        );
        assert_eq!("-1+seq".parse::<Dim>().unwrap().to_string(), "seq-1");
    }

    #[test]
    fn eval_and_unify() {
        let d: Dim = "past+seq".parse().unwrap();
        let mut b = Bindings::new();
        b.insert("past".into(), 5);
        d.unify(8, &mut b).unwrap();
        assert_eq!(b["seq"], 3);
        assert_eq!(d.eval(&b).unwrap(), 8);
        assert!(matches!(d.unify(9, &mut b), Err(DimError::Mismatch { .. })));
        let two: Dim = "2*n".parse().unwrap();
        assert!(two.unify(7, &mut Bindings::new()).is_err());
    }

    #[test]
    fn serializes_as_its_text() {
        let d: Dim = "2*seq+past-1".parse().unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, "\"past+2*seq-1\"");
        assert_eq!(serde_json::from_str::<Dim>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Dim>("\"seq+\"").is_err());
    }

    #[test]
    fn parse_errors_have_offsets() {
        let e = "seq+".parse::<Dim>().unwrap_err();
        assert_eq!(e.offset, 4);
        assert!("seq)".parse::<Dim>().is_err());
        assert!("99999999999999999999".parse::<Dim>().is_err());
    }
}
