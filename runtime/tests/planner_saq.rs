//! Planning the SAQ cache's ops: `saq_append` on a state input whose
//! aliased output it is updates the executor's state in place (no copy,
//! nothing written back); when something still reads the old state after
//! it, the copy stays; `saq_attention` is a kernel step; `past` (only in
//! the ops' attributes) is a plan size.

use kiln_ir::op::F64Bits;
use kiln_ir::saq::{SaqAppendOp, SaqAttentionOp, SaqLayout, SaqSpec};
use kiln_ir::{DType, Dim, Graph, Op, TensorType, Value};
use kiln_runtime::plan as plan_graph;
use kiln_runtime::plan::{Plan, Step, Storage};

fn spec() -> SaqSpec {
    SaqSpec::new(vec![16, 8, 4, 2], 4, 4).unwrap()
}

/// `state -> saq_append -> saq_attention`, the new state an in-place output;
/// with `reread`, a second attention reads the old state afterwards.
fn graph(reread: bool) -> Graph {
    let l = SaqLayout::new(&spec(), 2, 8).unwrap();
    let mut g = Graph::new("g");
    let st = TensorType::new(DType::U8, vec![l.state_len(&Dim::sym("ctx"))]);
    let state = g.add_input("state", st).unwrap();
    let f = |s: &[&str]| TensorType::new(DType::F32, s.iter().map(|d| Dim::from(*d)).collect());
    let q = g.add_input("q", f(&["2", "1", "seq", "8"])).unwrap();
    let k = g.add_input("k", f(&["seq", "2", "8"])).unwrap();
    let v = g.add_input("v", f(&["seq", "2", "8"])).unwrap();
    let append = Op::SaqAppend(SaqAppendOp {
        spec: spec(),
        start: Dim::sym("past"),
    });
    let new = g.add(append, &[state, k, v]).unwrap();
    let attend = |g: &mut Graph, s: Value| {
        let op = Op::SaqAttention(SaqAttentionOp {
            spec: spec(),
            scale: F64Bits(0.5),
            offset: Dim::sym("past"),
        });
        g.add(op, &[q, s, k, v]).unwrap()
    };
    let out = attend(&mut g, new);
    g.add_output("out", out).unwrap();
    if reread {
        let old = attend(&mut g, state);
        g.add_output("old", old).unwrap();
    }
    g.add_output_alias("state", new, "state").unwrap();
    g
}

fn kernel_ops(p: &Plan) -> Vec<&str> {
    p.steps
        .iter()
        .filter_map(|s| match s {
            Step::Kernel { kernel, .. } => Some(p.kernels[*kernel].op.name()),
            _ => None,
        })
        .collect()
}

fn copies(p: &Plan) -> usize {
    p.steps
        .iter()
        .filter(|s| matches!(s, Step::Copy { .. }))
        .count()
}

#[test]
fn saq_append_updates_the_state_in_place() {
    let p = plan_graph(&graph(false)).unwrap();
    assert_eq!(p.symbols, vec!["ctx", "past", "seq"]);
    assert_eq!(
        kernel_ops(&p),
        vec!["saq_append", "saq_attention"],
        "{}",
        p.describe()
    );
    assert_eq!(copies(&p), 0, "{}", p.describe());
    let out = p.outputs.iter().find(|o| o.name == "state").unwrap();
    assert!(
        matches!(p.buffers[out.buffer].storage, Storage::View { .. }),
        "{}",
        p.describe()
    );
}

#[test]
fn saq_append_copies_when_the_old_state_is_read_later() {
    let p = plan_graph(&graph(true)).unwrap();
    assert_eq!(
        kernel_ops(&p),
        vec!["saq_append", "saq_attention", "saq_attention"],
        "{}",
        p.describe()
    );
    assert!(copies(&p) >= 1, "{}", p.describe());
}
