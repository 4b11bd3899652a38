//! Size limits that keep untrusted text away from overflow.
//!
//! [`Dim`] arithmetic is plain `i64` arithmetic (it panics on overflow in debug
//! builds), and its parser recurses on `(` and unary `-`. Readers of untrusted
//! text (the text parser, the JSON reader) therefore check, before building a
//! dim or adding an op, that nothing can overflow:
//!
//! - every dim, parsed or inferred, has coefficients whose absolute values sum
//!   to at most [`MAX_DIM`] and at most [`MAX_TERMS`] terms, and nests at most
//!   [`MAX_NESTING`] deep;
//! - the ops whose type rule multiplies or sums dims (`reshape`, `concat`) are
//!   checked against bounds on their operands first.
//!
//! The bound of a dim text is computed by a walk of `Dim`'s own grammar, so
//! every intermediate value `Dim::from_str` computes is bounded too.

use crate::op::Op;
use crate::types::TensorType;
use crate::Dim;

/// Largest absolute coefficient sum of a dim (about 10^12 elements).
pub(crate) const MAX_DIM: f64 = (1u64 << 40) as f64;
/// Most terms in one dim (`past+seq` has 2).
pub(crate) const MAX_TERMS: f64 = 64.0;
/// Deepest nesting of `(` and unary `-` in a dim expression.
pub(crate) const MAX_NESTING: usize = 64;
/// Bound for products and sums of dims (an op's element count), well inside `i64`.
const MAX_PRODUCT: f64 = (1u64 << 62) as f64;
/// Most terms a product of dims may expand to.
const MAX_PRODUCT_TERMS: f64 = 4096.0;

/// Upper bounds of a polynomial: the sum of its absolute coefficients, and its term count.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bound {
    pub coef: f64,
    pub terms: f64,
}

/// Why a dim expression was refused; `offset` is a byte offset into its text.
#[derive(Debug)]
pub(crate) struct DimTextError {
    pub offset: usize,
    pub message: String,
}

struct Walk<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

/// Syntax errors are left to `Dim::from_str`: the walk stops there with `Ok(None)`.
type Step = Result<Option<Bound>, DimTextError>;

impl Walk<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }
    fn check(&self, b: Bound, at: usize) -> Step {
        if b.coef > MAX_DIM {
            return Err(DimTextError {
                offset: at,
                message: format!("dimension too large (the limit is {MAX_DIM})"),
            });
        }
        if b.terms > MAX_TERMS {
            return Err(DimTextError {
                offset: at,
                message: format!("dimension has too many terms (the limit is {MAX_TERMS})"),
            });
        }
        Ok(Some(b))
    }
    fn expr(&mut self) -> Step {
        let at = self.pos;
        let Some(mut acc) = self.term()? else {
            return Ok(None);
        };
        while let Some(b'+' | b'-') = self.peek() {
            self.pos += 1;
            let Some(t) = self.term()? else {
                return Ok(None);
            };
            acc = Bound {
                coef: acc.coef + t.coef,
                terms: acc.terms + t.terms,
            };
            self.check(acc, at)?;
        }
        Ok(Some(acc))
    }
    fn term(&mut self) -> Step {
        let at = self.pos;
        let Some(mut acc) = self.factor()? else {
            return Ok(None);
        };
        while self.peek() == Some(b'*') {
            self.pos += 1;
            let Some(f) = self.factor()? else {
                return Ok(None);
            };
            acc = Bound {
                coef: acc.coef * f.coef,
                terms: acc.terms * f.terms,
            };
            self.check(acc, at)?;
        }
        Ok(Some(acc))
    }
    fn factor(&mut self) -> Step {
        let at = self.pos;
        match self.peek() {
            Some(c @ (b'(' | b'-')) => {
                if self.depth >= MAX_NESTING {
                    return Err(DimTextError {
                        offset: self.pos,
                        message: format!(
                            "dimension nested too deeply (the limit is {MAX_NESTING})"
                        ),
                    });
                }
                self.depth += 1;
                self.pos += 1;
                let inner = if c == b'(' {
                    self.expr()?
                } else {
                    self.factor()?
                };
                self.depth -= 1;
                if c == b'(' {
                    if self.peek() != Some(b')') {
                        return Ok(None);
                    }
                    self.pos += 1;
                }
                Ok(inner)
            }
            Some(c) if c.is_ascii_digit() => {
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let text = std::str::from_utf8(&self.s[at..self.pos]).unwrap_or("");
                let coef: f64 = text.parse().unwrap_or(f64::INFINITY);
                self.check(Bound { coef, terms: 1.0 }, at)
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                while self.pos < self.s.len()
                    && (self.s[self.pos].is_ascii_alphanumeric() || self.s[self.pos] == b'_')
                {
                    self.pos += 1;
                }
                Ok(Some(Bound {
                    coef: 1.0,
                    terms: 1.0,
                }))
            }
            _ => Ok(None),
        }
    }
}

/// Parses a dim with `Dim`'s grammar after checking that it stays within the limits.
pub(crate) fn parse_dim(text: &str) -> Result<Dim, DimTextError> {
    let mut w = Walk {
        s: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    w.expr()?;
    text.parse::<Dim>().map_err(|e| DimTextError {
        offset: e.offset,
        message: format!("bad dimension '{text}': {}", e.message),
    })
}

/// The bound of an existing dim (exact: its absolute coefficients summed).
pub(crate) fn bound(d: &Dim) -> Bound {
    d.terms().fold(
        Bound {
            coef: 0.0,
            terms: 0.0,
        },
        |acc, (c, _)| Bound {
            coef: acc.coef + (c as f64).abs(),
            terms: acc.terms + 1.0,
        },
    )
}

/// Checks that a dim computed by a type rule is within the limits.
pub(crate) fn check_dim(d: &Dim) -> Result<(), String> {
    let b = bound(d);
    if b.coef > MAX_DIM || b.terms > MAX_TERMS {
        return Err(format!(
            "dimension {d} is too large (limits: coefficients summing to {MAX_DIM}, {MAX_TERMS} terms)"
        ));
    }
    Ok(())
}

/// Checks every dim of the result types of an op.
pub(crate) fn check_types(tys: &[TensorType]) -> Result<(), String> {
    tys.iter().flat_map(|t| &t.shape).try_for_each(check_dim)
}

fn product_bound<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Bound {
    dims.into_iter().fold(
        Bound {
            coef: 1.0,
            terms: 1.0,
        },
        |acc, d| {
            let b = bound(d);
            Bound {
                coef: acc.coef * b.coef.max(1.0),
                terms: acc.terms * b.terms.max(1.0),
            }
        },
    )
}

/// Checks, before the type rule runs, that the dim arithmetic of `op` on
/// operands of types `inputs` cannot overflow.
pub(crate) fn check_op(op: &Op, inputs: &[&TensorType]) -> Result<(), String> {
    let too_large = || format!("`{}`: sizes too large to compute", op.name());
    match op {
        Op::Reshape { shape } => {
            let shapes = inputs.iter().map(|t| &t.shape[..]).chain([&shape[..]]);
            for s in shapes {
                let b = product_bound(s);
                if b.coef > MAX_PRODUCT || b.terms > MAX_PRODUCT_TERMS {
                    return Err(too_large());
                }
            }
        }
        Op::Concat { axis } => {
            let total: f64 = inputs
                .iter()
                .filter_map(|t| t.shape.get(*axis))
                .map(|d| bound(d).coef)
                .sum();
            if total > MAX_PRODUCT {
                return Err(too_large());
            }
        }
        _ => {}
    }
    Ok(())
}
