//! The rewrite rules and their registry.
//!
//! A rule is a Rust *matcher*: given an e-class, it returns the terms that are
//! equal to it. Matching in Rust (rather than with a fixed s-expression
//! pattern) is what lets rules look at the analysis — a constant is matched by
//! its value whatever its dtype, rank or spelling — and try both operand
//! orders of a commutative op without adding commutativity rewrites that
//! would blow the e-graph up.
//!
//! Each rule belongs to one [`Stage`]; the stages run in order, each to
//! saturation or a limit (see [`crate::runner`]).
//!
//! Float semantics: rules never turn a NaN or an infinity into a finite
//! value or back, except through rounding and overflow in
//! [`Exactness::Approximate`] rules; [`Exactness::NoSignedZeros`] rules may
//! flip the sign of a zero.

mod algebra;
mod attention;
mod attention_mask;
mod fold;
mod linear_scan;
mod linear_scan_lift;
mod shape;

use crate::analysis::KEGraph;
use crate::lang::{Head, KNode};
use egg::{Applier, Id, PatternAst, SearchMatches, Searcher, Subst, Symbol, Var};
use kiln_ir::{Op, TensorType};

/// The staged rulesets of `canonicalize`, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Transpose/reshape/broadcast folding and identity removal.
    Shape,
    /// Algebraic identities and strength reduction.
    Algebra,
    /// Constant folding (splats of any shape, small static tensors).
    Fold,
    /// Recognizing composite computations in normalized form (softmax,
    /// attention, linear recurrences) — run by the `recognize` pass.
    Recognize,
    /// Lowering recognized computations to kernel-level ops (flash attention,
    /// linear scans, and the opt-in lossy variants) — run by `recognize`.
    Lower,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Shape,
        Stage::Algebra,
        Stage::Fold,
        Stage::Recognize,
        Stage::Lower,
    ];
    /// The stages of the `canonicalize` pass.
    pub const CANONICALIZE: [Stage; 3] = [Stage::Shape, Stage::Algebra, Stage::Fold];
    /// The stages of the `recognize` pass.
    pub const RECOGNIZE: [Stage; 2] = [Stage::Recognize, Stage::Lower];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Shape => "shape",
            Stage::Algebra => "algebra",
            Stage::Fold => "fold",
            Stage::Recognize => "recognize",
            Stage::Lower => "lower",
        }
    }
}

/// A term to add to the e-graph: existing classes combined by new ops.
#[derive(Clone, Debug)]
pub enum Term {
    Class(Id),
    Node(Op, Vec<Term>),
    /// Result `i` of a multi-result term (a `linear_scan`).
    Get(u32, Box<Term>),
}

impl Term {
    pub fn op(op: Op, children: Vec<Term>) -> Term {
        Term::Node(op, children)
    }

    /// The term's type, or `None` when it does not type-check (or is a
    /// tuple, which only a [`Term::Get`] may use).
    pub fn ty(&self, eg: &KEGraph) -> Option<TensorType> {
        match self {
            Term::Class(id) => eg[*id].data.ty().cloned(),
            Term::Node(op, _) => {
                let out = self.tuple_types(eg)?;
                (out.len() == 1 && !crate::lang::is_tuple_op(op)).then(|| out[0].clone())
            }
            Term::Get(i, t) => {
                let tuple = match &**t {
                    Term::Class(id) => eg[*id].data.tuple,
                    Term::Node(op, _) => crate::lang::is_tuple_op(op),
                    Term::Get(..) => false,
                };
                if !tuple {
                    return None;
                }
                t.tuple_types(eg)?.get(*i as usize).cloned()
            }
        }
    }

    /// Every result type of the term (one for a tensor term).
    fn tuple_types(&self, eg: &KEGraph) -> Option<Vec<TensorType>> {
        match self {
            Term::Class(id) => Some(eg[*id].data.types.clone()),
            Term::Node(op, kids) => {
                let tys: Option<Vec<TensorType>> = kids.iter().map(|k| k.ty(eg)).collect();
                let tys = tys?;
                let refs: Vec<&TensorType> = tys.iter().collect();
                kiln_ir::infer::infer(op, &refs).ok()
            }
            Term::Get(..) => self.ty(eg).map(|t| vec![t]),
        }
    }

    /// Adds the term; `None` when it does not type-check (nothing is added then).
    pub fn add(&self, eg: &mut KEGraph) -> Option<Id> {
        self.ty(eg)?;
        Some(self.add_checked(eg))
    }

    fn add_checked(&self, eg: &mut KEGraph) -> Id {
        match self {
            Term::Class(id) => *id,
            Term::Node(op, kids) => {
                let ids = kids.iter().map(|k| k.add_checked(eg)).collect();
                eg.add(KNode::op(op.clone(), ids))
            }
            Term::Get(i, t) => {
                let tuple = t.add_checked(eg);
                eg.add(KNode::get(*i, tuple))
            }
        }
    }
}

/// How closely a rule's right-hand side reproduces its left-hand side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exactness {
    /// Bit-identical results (data movement, folding by the interpreter,
    /// IEEE identities such as `x + neg(y) = x - y`).
    Exact,
    /// Identical except that a zero may change sign (`x + 0 -> x` turns
    /// `-0 + 0 = +0` into `-0`), as XLA and fast-math's `nsz` allow.
    NoSignedZeros,
    /// Equal up to float rounding (reassociation, reciprocals, `pow`).
    Approximate,
}

/// One rewrite rule.
pub struct RuleDef {
    /// Unique name (reports, explanations, tests).
    pub name: &'static str,
    pub stage: Stage,
    /// One line: what it rewrites into what.
    pub summary: &'static str,
    /// How exact the rewrite is; soundness tests compare accordingly.
    pub exactness: Exactness,
    /// The terms equal to the given class.
    pub matcher: fn(&KEGraph, Id) -> Vec<Term>,
}

impl std::fmt::Debug for RuleDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rule `{}` ({})", self.name, self.stage.name())
    }
}

/// Every rule, grouped by stage.
pub fn registry() -> &'static [RuleDef] {
    static RULES: std::sync::OnceLock<Vec<RuleDef>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        let mut v = shape::rules();
        v.extend(algebra::rules());
        v.extend(fold::rules());
        v.extend(attention::rules());
        v.extend(linear_scan::rules());
        v
    })
}

/// The rule named `name`.
pub fn find(name: &str) -> Option<&'static RuleDef> {
    registry().iter().find(|r| r.name == name)
}

/// The rules of one stage.
pub fn stage_rules(stage: Stage) -> Vec<&'static RuleDef> {
    registry().iter().filter(|r| r.stage == stage).collect()
}

/// The rule as an egg rewrite.
pub fn to_rewrite(rule: &'static RuleDef) -> egg::Rewrite<KNode, crate::analysis::KAnalysis> {
    egg::Rewrite::new(rule.name, RuleSearcher(rule), RuleApplier(rule))
        .expect("rule adapters bind no pattern variables")
}

/// Searches by running the matcher; one match per class that has a result.
struct RuleSearcher(&'static RuleDef);

impl Searcher<KNode, crate::analysis::KAnalysis> for RuleSearcher {
    fn search_eclass_with_limit(
        &self,
        egraph: &KEGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, KNode>> {
        if limit == 0 || (self.0.matcher)(egraph, eclass).is_empty() {
            return None;
        }
        Some(SearchMatches {
            eclass,
            substs: vec![Subst::default()],
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        Vec::new()
    }
}

/// Applies by re-running the matcher on the (possibly grown) e-graph and
/// unioning each well-typed result with the class, recording provenance
/// (see [`crate::provenance::apply_rule`]).
struct RuleApplier(&'static RuleDef);

impl Applier<KNode, crate::analysis::KAnalysis> for RuleApplier {
    fn apply_one(
        &self,
        egraph: &mut KEGraph,
        eclass: Id,
        _subst: &Subst,
        _ast: Option<&PatternAst<KNode>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        crate::provenance::apply_rule(egraph, eclass, self.0, rule_name)
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by the matchers.

/// The op e-nodes of a class with their children.
pub(crate) fn op_nodes(eg: &KEGraph, id: Id) -> impl Iterator<Item = (&Op, &[Id])> {
    eg[id].nodes.iter().filter_map(|n| match &n.head {
        Head::Op(k) => Some((k.op(), n.children.as_slice())),
        Head::Get(_) => None,
    })
}

/// The type of a tensor class.
pub(crate) fn ty(eg: &KEGraph, id: Id) -> Option<&TensorType> {
    eg[id].data.ty()
}

/// The splat value of a class.
pub(crate) fn splat(eg: &KEGraph, id: Id) -> Option<f64> {
    eg[id].data.splat
}

/// True when the class is a splat of exactly `v` (`0.0` matches `-0.0`).
pub(crate) fn is_splat(eg: &KEGraph, id: Id, v: f64) -> bool {
    splat(eg, id) == Some(v)
}

/// `term` made to have the shape of `want` with a broadcast when its own
/// shape is smaller (the result of a broadcasting binary op whose other
/// operand was dropped). `None` when it cannot be.
pub(crate) fn fit(eg: &KEGraph, term: Term, want: &TensorType) -> Option<Term> {
    let have = term.ty(eg)?;
    if have.dtype != want.dtype {
        return None;
    }
    if have.shape == want.shape {
        return Some(term);
    }
    Some(Term::op(
        Op::Broadcast {
            shape: want.shape.clone(),
        },
        vec![term],
    ))
}

/// A scalar constant term.
pub(crate) fn scalar(dtype: kiln_ir::DType, v: f64) -> Term {
    Term::op(Op::Const(kiln_ir::Literal::scalar(dtype, v)), vec![])
}

/// The two operand orders of a commutative binary node.
pub(crate) fn both_orders(kids: &[Id]) -> [(Id, Id); 2] {
    [(kids[0], kids[1]), (kids[1], kids[0])]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_documented() {
        let mut seen = HashSet::new();
        for r in registry() {
            assert!(seen.insert(r.name), "duplicate rule name {}", r.name);
            assert!(!r.summary.is_empty(), "rule {} has no summary", r.name);
        }
        // Lower may still be empty; every other stage has rules.
        for s in Stage::ALL.into_iter().filter(|&s| s != Stage::Lower) {
            assert!(!stage_rules(s).is_empty(), "stage {} is empty", s.name());
        }
    }

    #[test]
    fn readme_lists_every_rule() {
        let readme = include_str!("../../README.md");
        for r in registry() {
            assert!(
                readme.contains(&format!("| `{}` |", r.name)),
                "README.md does not list rule `{}`",
                r.name
            );
        }
    }
}
