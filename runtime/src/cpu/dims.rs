//! Dims compiled against the plan's symbol list, so a run evaluates and
//! binds sizes in a plain `[i64]` (indexed like the kernels' `sizes` array)
//! with no map lookups or allocation.

use crate::error::RuntimeError;
use kiln_ir::dim::DimError;
use kiln_ir::Dim;

/// A [`Dim`] whose symbols are indices into the plan's symbol list.
#[derive(Clone, Debug)]
pub(crate) struct SymDim {
    /// The source dim, for messages.
    dim: Dim,
    constant: i64,
    /// The non-constant terms: coefficient and symbol indices (with repetition).
    terms: Vec<(i64, Vec<usize>)>,
}

impl SymDim {
    pub fn new(d: &Dim, symbols: &[String]) -> Result<SymDim, RuntimeError> {
        let mut constant = 0;
        let mut terms = Vec::new();
        for (coef, syms) in d.terms() {
            if syms.is_empty() {
                constant = coef;
                continue;
            }
            let idx = syms
                .iter()
                .map(|s| {
                    symbols.iter().position(|x| x == s).ok_or_else(|| {
                        RuntimeError::BadPlan(format!(
                            "dimension `{d}` uses `{s}`, which is not among the plan's symbols {symbols:?}"
                        ))
                    })
                })
                .collect::<Result<Vec<usize>, _>>()?;
            terms.push((coef, idx));
        }
        Ok(SymDim {
            dim: d.clone(),
            constant,
            terms,
        })
    }

    pub fn dim(&self) -> &Dim {
        &self.dim
    }

    fn overflow(&self) -> DimError {
        DimError::Overflow(self.dim.to_string())
    }

    /// The value with every symbol bound in `sizes`; negative values are an error.
    pub fn eval(&self, sizes: &[i64]) -> Result<i64, DimError> {
        let mut total = self.constant;
        for (coef, syms) in &self.terms {
            let mut t = *coef;
            for &s in syms {
                t = t.checked_mul(sizes[s]).ok_or_else(|| self.overflow())?;
            }
            total = total.checked_add(t).ok_or_else(|| self.overflow())?;
        }
        if total < 0 {
            return Err(DimError::Negative {
                dim: self.dim.to_string(),
                value: total,
            });
        }
        Ok(total)
    }

    pub fn eval_usize(&self, sizes: &[i64]) -> Result<usize, DimError> {
        self.eval(sizes).map(|v| v as usize)
    }

    /// Checks the dim against `actual`, binding its one unknown symbol when
    /// it is affine in it (as [`Dim::unify`]). `Ok(false)`: not yet
    /// decidable (two or more unknowns, or one that appears squared);
    /// retry once other dims have bound more symbols.
    pub fn unify(
        &self,
        actual: i64,
        sizes: &mut [i64],
        known: &mut [bool],
    ) -> Result<bool, DimError> {
        let mut unknown: Option<usize> = None;
        for (_, syms) in &self.terms {
            for &s in syms {
                if !known[s] {
                    match unknown {
                        None => unknown = Some(s),
                        Some(u) if u == s => {}
                        Some(_) => return Ok(false),
                    }
                }
            }
        }
        let Some(u) = unknown else {
            let expected = self.eval(sizes)?;
            if expected != actual {
                return Err(DimError::Mismatch {
                    dim: self.dim.to_string(),
                    expected,
                    actual,
                });
            }
            return Ok(true);
        };
        let (mut coef, mut rest) = (0i64, self.constant);
        for (c, syms) in &self.terms {
            let mut t = *c;
            let mut uses = 0;
            for &s in syms {
                if s == u {
                    uses += 1;
                } else {
                    t = t.checked_mul(sizes[s]).ok_or_else(|| self.overflow())?;
                }
            }
            match uses {
                0 => rest = rest.checked_add(t).ok_or_else(|| self.overflow())?,
                1 => coef = coef.checked_add(t).ok_or_else(|| self.overflow())?,
                _ => return Ok(false),
            }
        }
        let diff = actual.checked_sub(rest).ok_or_else(|| self.overflow())?;
        if coef == 0 || diff % coef != 0 || diff / coef < 0 {
            return Err(DimError::Unsolvable {
                dim: self.dim.to_string(),
                actual,
            });
        }
        sizes[u] = diff / coef;
        known[u] = true;
        Ok(true)
    }
}

/// Binds symbols from `(name, dims, actual shape)` items, starting from
/// the values already `known`: passes over every dim until one makes no
/// progress, so `past+seq` is solved once another tensor binds `past`.
/// Errors name the item whose dim conflicts or cannot be solved.
pub(crate) fn bind_all<'a>(
    items: impl Iterator<Item = (&'a str, &'a [SymDim], &'a [usize])> + Clone,
    sizes: &mut [i64],
    known: &mut [bool],
    wrap: impl Fn(&str, DimError) -> RuntimeError,
) -> Result<(), RuntimeError> {
    loop {
        let before = known.iter().filter(|k| **k).count();
        let mut pending: Option<(&str, &SymDim, i64)> = None;
        for (name, dims, shape) in items.clone() {
            for (d, &actual) in dims.iter().zip(shape) {
                let done = d
                    .unify(actual as i64, sizes, known)
                    .map_err(|e| wrap(name, e))?;
                if !done && pending.is_none() {
                    pending = Some((name, d, actual as i64));
                }
            }
        }
        let Some((name, d, actual)) = pending else {
            return Ok(());
        };
        if known.iter().filter(|k| **k).count() == before {
            return Err(wrap(
                name,
                DimError::Unsolvable {
                    dim: d.dim().to_string(),
                    actual,
                },
            ));
        }
    }
}
