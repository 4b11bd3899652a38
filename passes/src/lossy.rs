//! `lossy`: the opt-in transforms that trade exactness for speed or memory.
//! Never an e-graph rule (rules are exact); each runs only when
//! [`PassOptions`] asks for it, and the pass does nothing otherwise.
//!
//! - **PrFlashAttention** ([`PrFlashConfig`]): every causal `flash_attention`
//!   without a bias operand or harmonic slopes becomes `prflash_attention`
//!   (probabilistic block-sparse, see `kiln_ir::attention`). Attention with a
//!   bias or slopes stays exact: the sparse kernel has neither.
//! - **Narrow weight storage** ([`PassOptions::weights`], see
//!   [`crate::narrow`]): linear layers read their weights as `f16`/`bf16`.

use crate::error::PassError;
use crate::manager::{Pass, PassInput, PassOutput};
use crate::options::PassOptions;
use crate::provenance::{Step, What};
use kiln_ir::attention::PrFlashOp;
use kiln_ir::op::F64Bits;
use kiln_ir::{Graph, NodeId, Op, Value};

/// The options of PrFlashAttention (DESIGN.md §4).
#[derive(Clone, Debug, PartialEq)]
pub struct PrFlashConfig {
    /// Block size (queries and keys).
    pub block: usize,
    /// Harmonic keep constant: block distance `d` is kept with probability `min(1, c/(d+1))`.
    pub c: f64,
    pub seed: u64,
    /// Sample each head independently (else one pattern for all heads).
    pub per_head: bool,
}

impl Default for PrFlashConfig {
    fn default() -> Self {
        PrFlashConfig {
            block: 64,
            c: 4.0,
            seed: 0,
            per_head: true,
        }
    }
}

/// The option text [`PrFlashConfig::parse`] reads back:
/// `prflash:block=64,c=4,seed=0` (`,shared` when not per head).
impl std::fmt::Display for PrFlashConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "prflash:block={},c={},seed={}",
            self.block, self.c, self.seed
        )?;
        if !self.per_head {
            f.write_str(",shared")?;
        }
        Ok(())
    }
}

impl PrFlashConfig {
    /// Parses `prflash[:block=64,c=4,seed=0,per_head|shared]` (every part optional).
    pub fn parse(text: &str) -> Result<PrFlashConfig, String> {
        let rest = text.strip_prefix("prflash").ok_or_else(|| {
            format!("`{text}`: expected `exact` or `prflash[:block=B,c=C,seed=S,shared]`")
        })?;
        let mut cfg = PrFlashConfig::default();
        let rest = match rest {
            "" => return Ok(cfg),
            r => r
                .strip_prefix(':')
                .ok_or_else(|| format!("`{text}`: expected `:` after prflash"))?,
        };
        for part in rest.split(',').filter(|p| !p.is_empty()) {
            let bad = |what: &str| format!("`{part}` in `{text}`: {what}");
            match part.split_once('=') {
                Some(("block", v)) => {
                    cfg.block = v
                        .parse()
                        .ok()
                        .filter(|&b| b > 0)
                        .ok_or_else(|| bad("the block size must be a positive integer"))?
                }
                Some(("c", v)) => {
                    cfg.c = v
                        .parse()
                        .ok()
                        .filter(|c: &f64| *c > 0.0 && c.is_finite())
                        .ok_or_else(|| bad("c must be a positive number"))?
                }
                Some(("seed", v)) => {
                    cfg.seed = v
                        .parse()
                        .map_err(|_| bad("the seed must be a non-negative integer"))?
                }
                None if part == "shared" => cfg.per_head = false,
                None if part == "per_head" => cfg.per_head = true,
                _ => {
                    return Err(bad(
                        "unknown option (expected block=, c=, seed=, shared or per_head)",
                    ))
                }
            }
        }
        Ok(cfg)
    }
}

/// The `lossy` pass.
pub struct Lossy;

impl Pass for Lossy {
    fn name(&self) -> &'static str {
        "lossy"
    }
    fn description(&self) -> &'static str {
        "opt-in lossy transforms (PrFlashAttention, narrow weight storage); nothing unless requested"
    }
    fn run_with_detail(
        &self,
        graph: Graph,
        opts: &PassOptions,
    ) -> Result<(Graph, String), PassError> {
        rewrite(graph, opts).map(|(g, detail, _)| (g, detail))
    }

    /// Each node a transform made carries the history of the node it
    /// replaces, plus this pass's step (`--explain` shows why a matmul reads
    /// a narrow weight).
    fn run_traced(&self, input: PassInput, opts: &PassOptions) -> Result<PassOutput, PassError> {
        let marks = input.provenance.marks(&input.graph);
        let old = input.provenance.clone();
        let (graph, detail, replaced) = rewrite(input.graph, opts)?;
        let mut provenance = old.carried(&marks, &graph);
        for (from, to, rule, made) in replaced {
            let step = Step {
                seq: input.seq,
                pass: "lossy",
                what: What::Rule {
                    order: 0,
                    rule,
                    made: Some(made),
                },
            };
            provenance.add(to, old.steps(from));
            provenance.add(to, &[step]);
        }
        Ok(PassOutput {
            graph,
            detail,
            phases: Vec::new(),
            provenance,
        })
    }
}

/// A replaced node, its replacement, the transform and the op it made.
type Replaced = (NodeId, NodeId, &'static str, &'static str);

/// The requested transforms, in order; the detail line and what each replaced.
fn rewrite(
    mut graph: Graph,
    opts: &PassOptions,
) -> Result<(Graph, String, Vec<Replaced>), PassError> {
    let mut said = Vec::new();
    let mut replaced = Vec::new();
    if let Some(cfg) = &opts.prflash {
        said.push(prflash(&mut graph, cfg, &mut replaced)?);
    }
    if let Some(to) = opts.weights {
        let n = crate::narrow::narrow_weights(&mut graph, to)?;
        said.push(format!(
            "weights stored as {to}: {} weight(s) ({} declared {to}, {} cast at load), read by {} matmul(s) and {} gather(s)",
            n.weights, n.declared, n.weights - n.declared, n.matmuls, n.gathers
        ));
        for &(from, to) in &n.replaced {
            let made = graph.node(to).op.name();
            replaced.push((from, to, "narrow-weights", made));
        }
    }
    if said.is_empty() {
        said.push("none requested".into());
    }
    Ok((graph, said.join("; "), replaced))
}

/// Every causal attention without a bias or slopes becomes PrFlashAttention.
fn prflash(
    graph: &mut Graph,
    cfg: &PrFlashConfig,
    replaced: &mut Vec<Replaced>,
) -> Result<String, PassError> {
    let (mut done, mut kept) = (0, 0);
    let ids: Vec<_> = graph.node_ids().collect();
    for n in ids {
        let Op::Attention(a) = &graph.node(n).op else {
            continue;
        };
        if !a.causal || a.bias || !a.slopes.is_empty() || a.kv_len.is_some() {
            kept += 1;
            continue;
        }
        let op = Op::PrFlash(PrFlashOp {
            scale: a.scale,
            offset: a.offset.clone(),
            block: cfg.block,
            c: F64Bits(cfg.c),
            seed: cfg.seed,
            per_head: cfg.per_head,
        });
        let rebuild = |source| PassError::Rebuild {
            pass: "lossy",
            source,
        };
        let operands = graph.operands(n);
        let loc = graph.node(n).loc.clone();
        let new = graph.add_node(op, &operands).map_err(rebuild)?;
        graph.set_loc(new, loc);
        graph
            .replace_uses(Value::new(n, 0), Value::new(new, 0))
            .map_err(rebuild)?;
        graph.remove_node(n).map_err(rebuild)?;
        replaced.push((n, new, "prflash", "prflash_attention"));
        done += 1;
    }
    Ok(format!(
        "prflash (block {}, c {}, seed {}, {}): {done} attention(s) made block-sparse, {kept} left exact (not causal, or with a bias or slopes)",
        cfg.block,
        cfg.c,
        cfg.seed,
        if cfg.per_head { "per head" } else { "shared" }
    ))
}
