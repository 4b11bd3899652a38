//! Explanations: the rewrites that produced each kernel, recorded in the
//! e-graph and carried through extraction, `dce` and `fuse`.

mod common;

use common::models::Decoder;
use common::*;
use kiln_ir::{shape, BinaryOp, DType, Graph, Op, UnaryOp};
use kiln_passes::canonicalize::Canonicalize;
use kiln_passes::fuse::Fuse;
use kiln_passes::provenance::{explain, What};
use kiln_passes::{Pass, PassError, PassManager, PassOptions, Provenance, Traced};

fn full(g: &Graph) -> Traced {
    PassManager::default_pipeline()
        .run_traced(g.clone(), &PassOptions::default())
        .unwrap()
}

/// The rules in a node's history.
fn rules(prov: &Provenance, g: &Graph, op: &str) -> Vec<&'static str> {
    let n = g
        .node_ids()
        .find(|&n| g.node(n).op.name() == op)
        .unwrap_or_else(|| panic!("no `{op}` node in\n{g}"));
    prov.steps(n)
        .iter()
        .filter_map(|s| match s.what {
            What::Rule { rule, .. } => Some(rule),
            What::Kernel { .. } => None,
        })
        .collect()
}

/// `exp(x * 1) + z`: `mul-one` rewrites a class into an existing one.
fn mul_one() -> Graph {
    let mut g = G::new("m");
    let x = g.input(DType::F32, shape![4, 8]);
    let z = g.input(DType::F32, shape![4, 8]);
    let one = g.scalar(DType::F32, 1.0);
    let m = g.op(Op::Binary(BinaryOp::Mul), &[x, one]);
    let e = g.op(Op::Unary(UnaryOp::Exp), &[m]);
    let y = g.op(Op::Binary(BinaryOp::Add), &[e, z]);
    g.out(y);
    g.finish()
}

#[test]
fn a_rule_that_merges_classes_shows_in_the_kernel_that_reads_the_result() {
    let g = mul_one();
    let t = full(&g);
    assert_eq!(rules(&t.provenance, &t.graph, "fused"), vec!["mul-one"]);
    let text = explain(&t.graph, &t.provenance, true);
    let line = text.lines().find(|l| l.contains("fused")).unwrap();
    assert!(
        line.ends_with("canonicalize: mul-one; fuse: loop kernel of 2 op(s)"),
        "{text}"
    );
}

#[test]
fn a_rule_that_makes_ops_names_them() {
    // x / sqrt(y) -> x * rsqrt(y)
    let mut g = G::new("d");
    let x = g.input(DType::F32, shape![4, 8]);
    let y = g.input(DType::F32, shape![4, 8]);
    let s = g.op(Op::Unary(UnaryOp::Sqrt), &[y]);
    let d = g.op(Op::Binary(BinaryOp::Div), &[x, s]);
    g.out(d);
    let g = g.finish();
    let t = full(&g);
    let text = explain(&t.graph, &t.provenance, true);
    assert!(
        text.contains("canonicalize: div-sqrt -> mul, rsqrt; fuse: loop kernel of 2 op(s)"),
        "{text}"
    );
    // Before `fuse`, the rewritten nodes themselves are listed.
    let t = PassManager::default_pipeline()
        .run_until_traced(g, "canonicalize", &PassOptions::default())
        .unwrap();
    let text = explain(&t.graph, &t.provenance, false);
    assert!(
        text.contains("mul: canonicalize: div-sqrt -> mul"),
        "{text}"
    );
    assert!(
        text.contains("rsqrt: canonicalize: div-sqrt -> rsqrt"),
        "{text}"
    );
    assert!(
        text.ends_with("2 node(s) with rewrites; 0 other computing node(s) unchanged\n"),
        "{text}"
    );
}

#[test]
fn untouched_kernels_say_so_and_nothing_is_invented() {
    let cfg = Decoder::default();
    let t = full(&cfg.build());
    let text = explain(&t.graph, &t.provenance, true);
    assert!(
        text.lines()
            .any(|l| l.contains(" matmul at ") && l.ends_with(": no rewrites")),
        "{text}"
    );
    for n in t.graph.node_ids() {
        if let Op::Fused(_) = t.graph.node(n).op {
            assert!(
                t.provenance
                    .steps(n)
                    .iter()
                    .any(|s| s.pass == "fuse" && matches!(s.what, What::Kernel { .. })),
                "every fused kernel records how fuse formed it"
            );
        }
    }
}

/// The naive decoder: canonicalization cleans the attention up, then
/// recognition turns it into `flash_attention`; the kernel's history holds
/// both, in pipeline order.
#[test]
fn attention_kernels_show_the_whole_chain() {
    let cfg = Decoder {
        naive: true,
        ..Decoder::default()
    };
    let t = full(&cfg.build());
    let text = explain(&t.graph, &t.provenance, true);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("flash_attention at layers."))
        .collect();
    assert_eq!(lines.len(), cfg.layers, "{text}");
    for l in lines {
        let canon = l.find("canonicalize: ").expect(l);
        let recog = l
            .find("recognize: flash-attention -> flash_attention")
            .expect(l);
        assert!(canon < recog, "{l}");
        assert!(l.contains("div-sqrt") || l.contains("div-const"), "{l}");
    }
}

/// A pass that does not report history (the default `run_traced`) keeps
/// the history of the nodes it leaves in place.
#[test]
fn passes_without_history_keep_it_for_nodes_they_leave_alone() {
    struct Identity;
    impl Pass for Identity {
        fn name(&self) -> &'static str {
            "identity"
        }
        fn description(&self) -> &'static str {
            "returns its input"
        }
        fn run_with_detail(
            &self,
            graph: Graph,
            _opts: &PassOptions,
        ) -> Result<(Graph, String), PassError> {
            Ok((graph, String::new()))
        }
    }
    let pm = PassManager::new(vec![
        Box::new(Canonicalize),
        Box::new(Identity),
        Box::new(Fuse),
    ]);
    let t = pm.run_traced(mul_one(), &PassOptions::default()).unwrap();
    assert_eq!(rules(&t.provenance, &t.graph, "fused"), vec!["mul-one"]);
}

/// The `lossy` transforms show in the chain: every linear layer reads a
/// narrow weight; a causal attention made block-sparse keeps its
/// recognition before the `prflash` step. (Llama's `matmul_t` chain, with
/// `layout` after `lossy`, is checked by `tests/cli.rs`.)
#[test]
fn lossy_transforms_show_in_the_chain() {
    let g = Decoder::default().build();
    let opts = PassOptions {
        weights: Some(DType::BF16),
        prflash: Some(kiln_passes::lossy::PrFlashConfig::default()),
        ..PassOptions::default()
    };
    let t = PassManager::for_options(&opts)
        .run_traced(g, &opts)
        .unwrap();
    let text = explain(&t.graph, &t.provenance, true);
    // This decoder stores its weights `[in, out]`: plain matmuls.
    let linear: Vec<&str> = text.lines().filter(|l| l.contains(" matmul at ")).collect();
    assert!(!linear.is_empty(), "{text}");
    for l in &linear {
        assert!(l.contains("lossy: narrow-weights -> matmul"), "{l}");
    }
    let sparse: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("prflash_attention at "))
        .collect();
    assert!(!sparse.is_empty(), "{text}");
    for l in &sparse {
        let recog = l.find("recognize: flash-attention").expect(l);
        let lossy = l.find("lossy: prflash -> prflash_attention").expect(l);
        assert!(recog < lossy, "{l}");
    }
}
