//! Planning `flash_attention` / `prflash_attention` nodes: each is one
//! kernel step, its causal offset's symbol is among the plan's sizes even
//! when no type mentions it, identical nodes share a kernel, and an
//! attention over weights alone with a constant offset runs at load.

use kiln_ir::attention::{AttentionOp, PrFlashOp};
use kiln_ir::op::F64Bits;
use kiln_ir::{DType, Dim, Graph, Op, TensorType};
use kiln_runtime::plan as plan_graph;
use kiln_runtime::plan::Step;

fn f32t(dims: &[&str]) -> TensorType {
    TensorType::new(DType::F32, dims.iter().map(|d| Dim::from(*d)).collect())
}

fn flash(offset: &str) -> Op {
    Op::Attention(AttentionOp {
        scale: F64Bits(0.25),
        causal: true,
        offset: Dim::from(offset),
        bias: false,
        slopes: Vec::new(),
        kv_len: None,
    })
}

fn kernel_ops(p: &kiln_runtime::plan::Plan, steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Kernel { kernel, .. } => Some(p.kernels[*kernel].op.name().to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn attention_nodes_are_kernel_steps_and_their_offset_is_a_symbol() {
    let mut g = Graph::new("g");
    let q = g.add_input("q", f32t(&["4", "seq", "16"])).unwrap();
    let k = g.add_input("k", f32t(&["4", "ctx", "16"])).unwrap();
    let v = g.add_input("v", f32t(&["4", "ctx", "16"])).unwrap();
    let a = g.add(flash("past"), &[q, k, v]).unwrap();
    let b = g.add(flash("past"), &[a, k, v]).unwrap();
    let pf = Op::PrFlash(PrFlashOp {
        scale: F64Bits(0.25),
        offset: Dim::from("start"),
        block: 4,
        c: F64Bits(1.0),
        seed: 3,
        per_head: true,
    });
    let c = g.add(pf, &[b, k, v]).unwrap();
    g.add_output("out", c).unwrap();
    let p = plan_graph(&g).unwrap();
    // `past` and `start` appear in no type, only in the offsets.
    assert_eq!(p.symbols, vec!["ctx", "past", "seq", "start"]);
    assert_eq!(
        kernel_ops(&p, &p.steps),
        vec!["flash_attention", "flash_attention", "prflash_attention"],
        "{}",
        p.describe()
    );
    assert_eq!(
        p.kernels.len(),
        2,
        "identical attention nodes share a kernel"
    );
    assert!(p.load_steps.is_empty());
}

#[test]
fn attention_over_weights_with_a_constant_offset_runs_at_load() {
    let mut g = Graph::new("g");
    let t = f32t(&["2", "8", "16"]);
    let q = g
        .add(
            Op::Param {
                name: "q".into(),
                ty: t.clone(),
            },
            &[],
        )
        .unwrap();
    let k = g
        .add(
            Op::Param {
                name: "k".into(),
                ty: t.clone(),
            },
            &[],
        )
        .unwrap();
    let fixed = g.add(flash("0"), &[q, k, k]).unwrap();
    let moving = g.add(flash("past"), &[q, k, k]).unwrap();
    g.add_output("fixed", fixed).unwrap();
    g.add_output("moving", moving).unwrap();
    let p = plan_graph(&g).unwrap();
    assert_eq!(kernel_ops(&p, &p.load_steps), vec!["flash_attention"]);
    assert_eq!(kernel_ops(&p, &p.steps), vec!["flash_attention"]);
    assert_eq!(p.symbols, vec!["past"]);
}
