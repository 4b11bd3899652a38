//! `layout`: rewrites that let kernels read tensors as they are stored,
//! instead of through a transposed copy, and store weights the way decode
//! streams them. Three rules:
//!
//! **`transpose-into-matmul_t`**: a `matmul` whose right operand is a
//! transpose of its last two axes becomes `matmul_t` of the untransposed
//! operand. A linear layer is `x @ wᵀ` with `w` stored `[out, in]`. Kept as
//! written, the transpose is a kernel of its own — for a weight, a
//! transposed copy made at load that doubles the weight's memory — and the
//! matmul then reads B across rows. `matmul_t` reads `w` as stored,
//! contiguous along the contraction axis like A, which is what a CPU GEMV
//! streams fastest (decode reads every weight once per token).
//!
//! **`merge-sibling-matmul_t`** (CPU, in `layout/siblings.rs`):
//! `matmul_t`s of one left operand and weights of their own become one
//! `matmul_t` of the weights concatenated at load, their results slices of
//! its columns — a layer's q/k/v projections one weight stream, its gate
//! and up projections another.
//!
//! **`kv-cache-in-place`**: `flash_attention` whose keys and values are the
//! first `L` rows of a token-major cache, moved head-major —
//! `reshape?(permute(slice(cache, axis 0, 0..L)))` with the permute moving
//! the token axis to second last — reads the cache in place
//! (`kv_len = L`, see `kiln_ir::attention`). Written out, every decode step
//! copies the whole filled cache of every layer (the copy grows with the
//! context; at a few hundred tokens it costs as much as a tenth of a step).
//!
//! Targets: the first two rules are CPU only — the GPU's matmul tile gives
//! each thread a column of B, and loads along B's rows are the coalesced
//! ones, so it keeps the transpose (and its matmuls, not `matmul_t`, are
//! left unmerged). The third applies to both: a GPU warp reads
//! one key row across its lanes, contiguous in either layout, and the
//! copies it removes are launches of their own.

use crate::error::PassError;
use crate::manager::{Pass, PassInput, PassOutput};
use crate::options::{CostTarget, PassOptions};
use crate::provenance::{Step, What};
use kiln_ir::{Graph, NodeId, Op, Value};

mod siblings;
use siblings::{merge_siblings, MERGE_SIBLINGS};

/// The layout pass.
pub struct Layout;

const PASS: &str = "layout";

/// One rewrite: the node replaced, its replacement, the rule and what it made.
struct Rewrite {
    from: NodeId,
    to: NodeId,
    rule: &'static str,
    made: &'static str,
}

impl Pass for Layout {
    fn name(&self) -> &'static str {
        PASS
    }
    fn description(&self) -> &'static str {
        "attention reads the KV cache in place (kv_len); CPU: matmul of a transposed operand reads it untransposed (matmul_t)"
    }
    fn run_with_detail(
        &self,
        graph: Graph,
        opts: &PassOptions,
    ) -> Result<(Graph, String), PassError> {
        let (g, rewritten) = rewrite(graph, opts)?;
        Ok((g, detail(&rewritten, opts)))
    }
    /// The new `matmul_t` carries the history of the `matmul` it replaces,
    /// plus this pass's step.
    fn run_traced(&self, input: PassInput, opts: &PassOptions) -> Result<PassOutput, PassError> {
        let marks = input.provenance.marks(&input.graph);
        let old = input.provenance.clone();
        let (graph, rewritten) = rewrite(input.graph, opts)?;
        let mut provenance = old.carried(&marks, &graph);
        for r in &rewritten {
            let step = Step {
                seq: input.seq,
                pass: PASS,
                what: What::Rule {
                    order: 0,
                    rule: r.rule,
                    made: Some(r.made),
                },
            };
            provenance.add(r.to, old.steps(r.from));
            provenance.add(r.to, &[step]);
        }
        Ok(PassOutput {
            graph,
            detail: detail(&rewritten, opts),
            phases: Vec::new(),
            provenance,
        })
    }
}

fn detail(done: &[Rewrite], opts: &PassOptions) -> String {
    let n = |rule| done.iter().filter(|r| r.rule == rule).count();
    let kv = n(KV_IN_PLACE);
    match opts.target {
        CostTarget::Cpu => format!(
            "{} matmul(s) of a transpose -> matmul_t, {} sibling matmul_t(s) merged over concatenated weights, {kv} attention(s) read the KV cache in place",
            n(MATMUL_T),
            done.iter().filter(|r| r.rule == MERGE_SIBLINGS && r.made == "slice").count()
        ),
        CostTarget::Gpu => format!(
            "GPU target: matmuls keep their transposes, {kv} attention(s) read the KV cache in place"
        ),
    }
}

fn rewrite(mut g: Graph, opts: &PassOptions) -> Result<(Graph, Vec<Rewrite>), PassError> {
    let mut done = Vec::new();
    if opts.target == CostTarget::Cpu {
        matmul_t(&mut g, &mut done)?;
        merge_siblings(&mut g, &mut done)?;
    }
    kv_in_place(&mut g, &mut done)?;
    Ok((g, done))
}

fn rebuild(source: kiln_ir::GraphError) -> PassError {
    PassError::Rebuild { pass: PASS, source }
}

/// Replaces node `n`'s only result by node `id`'s and removes `n`.
fn replace(g: &mut Graph, n: NodeId, id: NodeId) -> Result<(), PassError> {
    g.set_loc(id, g.node(n).loc.clone());
    g.replace_uses(Value::new(n, 0), Value::new(id, 0))
        .map_err(rebuild)?;
    g.remove_node(n).map_err(rebuild)?;
    Ok(())
}

const MATMUL_T: &str = "transpose-into-matmul_t";

/// Rewrites every top-level `matmul(a, permute(b))` whose permute swaps
/// exactly the last two axes. The replaced matmuls, and the transposes
/// left unused, are removed.
fn matmul_t(g: &mut Graph, done: &mut Vec<Rewrite>) -> Result<(), PassError> {
    let candidates: Vec<(NodeId, Value, NodeId)> = g
        .node_ids()
        .filter(|&n| g.node(n).op == Op::MatMul)
        .filter_map(|n| {
            let a = g.operands(n)[0];
            let t = g.operands(n)[1].node;
            swapped_last_two(g, t).map(|_| (n, a, t))
        })
        .collect();
    for (n, a, t) in candidates {
        let b = g.operands(t)[0];
        let id = g.add_node(Op::MatMulT, &[a, b]).map_err(rebuild)?;
        replace(g, n, id)?;
        // The transpose goes once nothing else reads it.
        if g.try_node(t).is_some()
            && g.users(t).is_empty()
            && !g.outputs().iter().any(|o| o.value.node == t)
        {
            g.remove_node(t).map_err(rebuild)?;
        }
        done.push(Rewrite {
            from: n,
            to: id,
            rule: MATMUL_T,
            made: "matmul_t",
        });
    }
    Ok(())
}

const KV_IN_PLACE: &str = "kv-cache-in-place";

/// Gives every head-major `flash_attention` whose keys and values are both
/// views of token-major caches (see [`token_major_source`]), read to the
/// same length, `kv_len` and the caches themselves as operands. The views
/// are left for `dce`.
fn kv_in_place(g: &mut Graph, done: &mut Vec<Rewrite>) -> Result<(), PassError> {
    let sites: Vec<NodeId> = g
        .node_ids()
        .filter(|&n| matches!(&g.node(n).op, Op::Attention(a) if a.kv_len.is_none()))
        .collect();
    for n in sites {
        let Op::Attention(a) = g.node(n).op.clone() else {
            continue;
        };
        let ops = g.operands(n).to_vec();
        let (Some((kc, kl)), Some((vc, vl))) =
            (token_major_source(g, ops[1]), token_major_source(g, ops[2]))
        else {
            continue;
        };
        if kl != vl {
            continue;
        }
        // The cache as `[T, Bk.., D]`: the batch dims the attention had.
        let loc = g.node(n).loc.clone();
        let as_batch = |g: &mut Graph, cache: Value, head_major: Value| {
            let hm = g.ty(head_major).shape.clone();
            let mut shape = vec![g.ty(cache).shape[0].clone()];
            shape.extend_from_slice(&hm[..hm.len() - 2]);
            shape.push(hm[hm.len() - 1].clone());
            if g.ty(cache).shape == shape {
                return Ok(cache);
            }
            let id = g
                .add_node(Op::Reshape { shape }, &[cache])
                .map_err(rebuild)?;
            g.set_loc(id, loc.clone());
            Ok(Value::new(id, 0))
        };
        let k = as_batch(g, kc, ops[1])?;
        let v = as_batch(g, vc, ops[2])?;
        let mut operands = vec![ops[0], k, v];
        operands.extend_from_slice(&ops[3..]);
        let op = Op::Attention(kiln_ir::attention::AttentionOp {
            kv_len: Some(kl),
            ..a
        });
        let id = g.add_node(op, &operands).map_err(rebuild)?;
        replace(g, n, id)?;
        done.push(Rewrite {
            from: n,
            to: id,
            rule: KV_IN_PLACE,
            made: "flash_attention",
        });
    }
    Ok(())
}

/// `Some((cache, L))` when head-major `value: [Bk.., L, D]` is
/// `reshape?(permute(slice(cache, axis 0, 0..L)))` of a token-major
/// `cache: [T, H.., D]` (no permute when `H` is all 1s), the permute
/// moving axis 0 to second last and the
/// reshape (if any) regrouping only the batch dims (`∏H = ∏Bk`), so that
/// row `j` of batch entry `b` is the cache's element row `j·∏H + b`.
fn token_major_source(g: &Graph, value: Value) -> Option<(Value, kiln_ir::Dim)> {
    let want = g.ty(value).shape.clone();
    let mut v = value;
    if matches!(g.node(v.node).op, Op::Reshape { .. }) {
        v = g.operands(v.node)[0];
    }
    // With no batch dims other than 1s (`[L, D]`, `[L, 1, D]`: one KV head)
    // the slice is head-major as it is (canonicalization may have made the
    // permute a reshape).
    let s = match &g.node(v.node).op {
        Op::Permute { perm } => {
            let r = perm.len();
            if r < 2 || *perm != (1..r - 1).chain([0, r - 1]).collect::<Vec<usize>>() {
                return None;
            }
            g.operands(v.node)[0]
        }
        Op::Slice { .. } if one_head(&g.ty(v).shape) => v,
        _ => return None,
    };
    let Op::Slice {
        axis: 0,
        start,
        end,
    } = &g.node(s.node).op
    else {
        return None;
    };
    if start.as_const() != Some(0) {
        return None;
    }
    let cache = g.operands(s.node)[0];
    // The slice `[L, H.., D]` read head-major: `[H.., L, D]`.
    let sliced = &g.ty(s).shape;
    let r = sliced.len();
    let mut have: Vec<kiln_ir::Dim> = sliced[1..r - 1].to_vec();
    have.extend([sliced[0].clone(), sliced[r - 1].clone()]);
    let w = want.len();
    if w < 2 || have[r - 2..] != want[w - 2..] {
        return None;
    }
    let same_batch = kiln_ir::dim::product(&have[..r - 2]) == kiln_ir::dim::product(&want[..w - 2]);
    same_batch.then(|| (cache, end.clone()))
}

/// Some when `node` is a permute that swaps the last two axes and keeps
/// the others in place.
fn swapped_last_two(g: &Graph, node: NodeId) -> Option<()> {
    let Op::Permute { perm } = &g.node(node).op else {
        return None;
    };
    let r = perm.len();
    if r < 2 {
        return None;
    }
    let batch_kept = perm[..r - 2].iter().enumerate().all(|(i, &p)| p == i);
    (batch_kept && perm[r - 2] == r - 1 && perm[r - 1] == r - 2).then_some(())
}

/// Whether every axis of `shape` between the first and the last is 1.
fn one_head(shape: &[kiln_ir::Dim]) -> bool {
    shape.len() >= 2
        && shape[1..shape.len() - 1]
            .iter()
            .all(|d| d.as_const() == Some(1))
}
