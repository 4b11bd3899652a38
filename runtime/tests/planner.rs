//! Planner decisions: `update_slice` in place exactly when that is legal,
//! copies otherwise; scan bodies with bound inputs and outputs, written
//! directly by their kernels or copied when they must be; arena slots that
//! never overlap a buffer that is still live; symbols from attributes; the
//! plan as plain serde data.

use kiln_ir::{
    shape, BinaryOp, DType, Dim, FusedOp, FusionKind, Graph, Op, ScanOp, TensorType, UnaryOp, Value,
};
use kiln_runtime::plan as plan_graph;
use kiln_runtime::plan::{Plan, Step, Storage};
use std::sync::Arc;

fn f32t(dims: &[&str]) -> TensorType {
    TensorType::new(DType::F32, dims.iter().map(|d| Dim::from(*d)).collect())
}

/// A loop kernel applying `u` to one operand of type `t`.
fn unary(g: &mut Graph, u: UnaryOp, x: Value) -> Value {
    let t = g.ty(x).clone();
    let mut body = Graph::new("body");
    let i = body.add_input("x", t).unwrap();
    let y = body.add(Op::Unary(u), &[i]).unwrap();
    body.add_output("y", y).unwrap();
    let op = Op::Fused(FusedOp {
        kind: FusionKind::Loop,
        body: Arc::new(body),
    });
    g.add(op, &[x]).unwrap()
}

/// A loop kernel adding two operands of the same type.
fn add(g: &mut Graph, a: Value, b: Value) -> Value {
    let t = g.ty(a).clone();
    let mut body = Graph::new("body");
    let x = body.add_input("a", t.clone()).unwrap();
    let y = body.add_input("b", t).unwrap();
    let s = body.add(Op::Binary(BinaryOp::Add), &[x, y]).unwrap();
    body.add_output("s", s).unwrap();
    let op = Op::Fused(FusedOp {
        kind: FusionKind::Loop,
        body: Arc::new(body),
    });
    g.add(op, &[a, b]).unwrap()
}

fn update(g: &mut Graph, base: Value, upd: Value, start: &str) -> Value {
    let op = Op::UpdateSlice {
        axis: 0,
        start: start.into(),
    };
    g.add(op, &[base, upd]).unwrap()
}

/// The `update_slice` launches of a plan (top level): (base, result) buffers.
fn updates(p: &Plan) -> Vec<(usize, usize)> {
    p.steps
        .iter()
        .filter_map(|s| match s {
            Step::Kernel { kernel, args } if p.kernels[*kernel].op.name() == "update_slice" => {
                Some((args[0], args[2]))
            }
            _ => None,
        })
        .collect()
}

fn copies(steps: &[Step]) -> usize {
    steps
        .iter()
        .filter(|s| matches!(s, Step::Copy { .. }))
        .count()
}

fn in_place(p: &Plan) -> Vec<bool> {
    updates(p)
        .into_iter()
        .map(|(base, result)| p.root(base) == p.root(result))
        .collect()
}

#[test]
fn update_in_place_when_nothing_reads_the_base_later() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32t(&["n", "4"])).unwrap();
    let y = g.add_input("y", f32t(&["seq", "4"])).unwrap();
    let t = unary(&mut g, UnaryOp::Exp, x);
    let u = update(&mut g, t, y, "past");
    let v = unary(&mut g, UnaryOp::Neg, u);
    g.add_output("v", v).unwrap();
    let p = plan_graph(&g).unwrap();
    assert_eq!(in_place(&p), vec![true], "{}", p.describe());
    assert_eq!(copies(&p.steps), 0);
    // `past` appears in no type, only in the update's start.
    assert_eq!(p.symbols, vec!["n", "past", "seq"]);
    // A plain input (copied in by the executor on every call) is fair game too.
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32t(&["n", "4"])).unwrap();
    let y = g.add_input("y", f32t(&["seq", "4"])).unwrap();
    let u = update(&mut g, x, y, "0");
    let v = unary(&mut g, UnaryOp::Neg, u);
    g.add_output("v", v).unwrap();
    let p = plan_graph(&g).unwrap();
    assert_eq!(in_place(&p), vec![true], "{}", p.describe());
}

#[test]
fn update_copies_when_the_base_is_read_later_or_is_an_output_or_a_weight() {
    // Read later: the old value feeds a kernel that runs after the update.
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32t(&["n", "4"])).unwrap();
    let y = g.add_input("y", f32t(&["seq", "4"])).unwrap();
    let t = unary(&mut g, UnaryOp::Exp, x);
    let u = update(&mut g, t, y, "past");
    let v = unary(&mut g, UnaryOp::Neg, u);
    let w = add(&mut g, v, t);
    g.add_output("w", w).unwrap();
    let p = plan_graph(&g).unwrap();
    assert_eq!(in_place(&p), vec![false], "{}", p.describe());
    assert_eq!(copies(&p.steps), 1);
    let copy = p
        .steps
        .iter()
        .position(|s| matches!(s, Step::Copy { .. }))
        .unwrap();
    assert!(
        matches!(p.steps[copy + 1], Step::Kernel { kernel, .. } if p.kernels[kernel].op.name() == "update_slice"),
        "the copy comes right before the update:\n{}",
        p.describe()
    );
    // The base is a graph output (through a view).
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32t(&["n", "4"])).unwrap();
    let y = g.add_input("y", f32t(&["seq", "4"])).unwrap();
    let t = unary(&mut g, UnaryOp::Exp, x);
    let r = g
        .add(
            Op::Reshape {
                shape: shape!["n", 2, 2],
            },
            &[t],
        )
        .unwrap();
    let u = update(&mut g, t, y, "past");
    g.add_output("old", r).unwrap();
    g.add_output("new", u).unwrap();
    let p = plan_graph(&g).unwrap();
    assert_eq!(in_place(&p), vec![false], "{}", p.describe());
    // A weight or a constant is never written.
    let mut g = Graph::new("g");
    let y = g.add_input("y", f32t(&["seq", "4"])).unwrap();
    let w = g
        .add(
            Op::Param {
                name: "w".into(),
                ty: f32t(&["8", "4"]),
            },
            &[],
        )
        .unwrap();
    let u = update(&mut g, w, y, "past");
    g.add_output("u", u).unwrap();
    let p = plan_graph(&g).unwrap();
    assert_eq!(in_place(&p), vec![false], "{}", p.describe());
}

#[test]
fn state_is_updated_in_place_only_by_its_own_chain() {
    // A chain of two updates ending in the cache's own output: both in place.
    let mut g = Graph::new("g");
    let cache = g.add_input("cache", f32t(&["ctx", "4"])).unwrap();
    let a = g.add_input("a", f32t(&["1", "4"])).unwrap();
    let b = g.add_input("b", f32t(&["seq", "4"])).unwrap();
    let u1 = update(&mut g, cache, a, "0");
    let u2 = update(&mut g, u1, b, "past");
    let s = unary(&mut g, UnaryOp::Exp, u2);
    g.add_output("s", s).unwrap();
    g.add_output_alias("cache_out", u2, "cache").unwrap();
    let p = plan_graph(&g).unwrap();
    assert_eq!(in_place(&p), vec![true, true], "{}", p.describe());
    assert_eq!(copies(&p.steps), 0);
    let out = &p.outputs[1];
    assert_eq!(p.buffers[p.root(out.buffer)].storage, Storage::Input(0));

    // Two states whose new values are each other's updates (a swap): no
    // state may take the other's value in place, so both are copies.
    let mut g = Graph::new("g");
    let sa = g.add_input("a", f32t(&["n", "4"])).unwrap();
    let sb = g.add_input("b", f32t(&["n", "4"])).unwrap();
    let x = g.add_input("x", f32t(&["seq", "4"])).unwrap();
    let ua = update(&mut g, sa, x, "past");
    let ub = update(&mut g, sb, x, "0");
    g.add_output_alias("a_out", ub, "a").unwrap();
    g.add_output_alias("b_out", ua, "b").unwrap();
    let p = plan_graph(&g).unwrap();
    assert_eq!(in_place(&p), vec![false, false], "{}", p.describe());
    for o in &p.outputs {
        assert!(matches!(
            p.buffers[p.root(o.buffer)].storage,
            Storage::Temp { .. }
        ));
    }

    // A state returned unchanged under another state's name is copied out
    // first, so write-backs never read a state buffer.
    let mut g = Graph::new("g");
    let sa = g.add_input("a", f32t(&["4"])).unwrap();
    let sb = g.add_input("b", f32t(&["4"])).unwrap();
    g.add_output_alias("a_out", sb, "a").unwrap();
    g.add_output_alias("b_out", sa, "b").unwrap();
    let p = plan_graph(&g).unwrap();
    assert_eq!(copies(&p.steps), 2, "{}", p.describe());
    for o in &p.outputs {
        assert!(matches!(
            p.buffers[p.root(o.buffer)].storage,
            Storage::Temp { .. }
        ));
    }
}

/// A scan over `xs f32[seq, 4]` whose body computes `t = exp(x)` and
/// `c' = c + (-t)` (so `-t` is scratch of the body), returning `c'` as the carry, `t` as a step output, and
/// the invariant `k` unchanged as another step output.
fn scan_graph() -> Graph {
    let mut body = Graph::new("step");
    let c = body.add_input("c", f32t(&["4"])).unwrap();
    let x = body.add_input("x", f32t(&["4"])).unwrap();
    let k = body.add_input("k", f32t(&["4"])).unwrap();
    let t = unary(&mut body, UnaryOp::Exp, x);
    let nt = unary(&mut body, UnaryOp::Neg, t);
    let c2 = add(&mut body, c, nt);
    body.add_output("c", c2).unwrap();
    body.add_output("t", t).unwrap();
    body.add_output("k", k).unwrap();
    body.add_output("c_again", c2).unwrap();
    let mut g = Graph::new("g");
    let c0 = g.add_input("c0", f32t(&["4"])).unwrap();
    let xs = g.add_input("xs", f32t(&["seq", "4"])).unwrap();
    let k = g.add_input("k", f32t(&["4"])).unwrap();
    let x2 = unary(&mut g, UnaryOp::Neg, xs);
    let n = g
        .add_node(
            Op::Scan(ScanOp {
                body: Arc::new(body),
                num_carry: 1,
                num_xs: 1,
                axis: 0,
                reverse: false,
            }),
            &[c0, x2, k],
        )
        .unwrap();
    for (i, name) in ["c", "ts", "ks", "cs"].iter().enumerate() {
        let y = unary(&mut g, UnaryOp::Neg, Value::new(n, i as u32));
        g.add_output(*name, y).unwrap();
    }
    g
}

#[test]
fn scan_bodies_write_outputs_directly_and_copy_only_what_they_must() {
    let p = plan_graph(&scan_graph()).unwrap();
    let Some(Step::Scan(s)) = p.steps.iter().find(|s| matches!(s, Step::Scan(_))) else {
        panic!("no scan:\n{}", p.describe())
    };
    assert_eq!(
        (s.carries.len(), s.xs.len(), s.invariants.len(), s.ys.len()),
        (1, 1, 1, 3)
    );
    // Kernels write `t` and `c'` straight into their bound outputs; the
    // invariant passed through and `c'` returned a second time are copied.
    assert_eq!(s.body.len(), 5, "{}", p.describe());
    assert_eq!(copies(&s.body), 2);
    let writes = |b: usize| {
        s.body
            .iter()
            .any(|st| matches!(st, Step::Kernel { args, .. } if args.last() == Some(&b)))
    };
    assert!(writes(s.carries[0].output) && writes(s.ys[0].body));
    let bound = |b: usize| p.buffers[b].storage == Storage::Bound;
    assert!(bound(s.carries[0].input) && bound(s.xs[0].body) && bound(s.invariants[0].1));
    assert!(s.ys.iter().all(|y| bound(y.body) && y.staging.is_none()));
}

#[test]
fn slots_never_overlap_live_buffers_across_a_scan() {
    let p = plan_graph(&scan_graph()).unwrap();
    let Some(Step::Scan(s)) = p.steps.iter().find(|s| matches!(s, Step::Scan(_))) else {
        unreachable!()
    };
    let slot = |b: usize| match p.buffers[p.root(b)].storage {
        Storage::Temp { slot } => Some(slot),
        _ => None,
    };
    // Live during the whole scan: its scratch operand, results and spare.
    let mut live: Vec<usize> = vec![s.xs[0].outer, s.carries[0].result, s.carries[0].spare];
    live.extend(s.ys.iter().map(|y| y.outer));
    let live_slots: Vec<usize> = live.iter().filter_map(|&b| slot(b)).collect();
    let mut sorted = live_slots.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), live_slots.len(), "{}", p.describe());
    // Scratch the body computes (`-t`) never takes their slots.
    let mut scratch = 0;
    for st in &s.body {
        if let Step::Kernel { args, .. } = st {
            for &a in args {
                if let Some(sl) = slot(a) {
                    scratch += 1;
                    assert!(!live_slots.contains(&sl), "{}", p.describe());
                }
            }
        }
    }
    assert_eq!(scratch, 2, "`-t` is written once and read once");
}

/// The plan (scan steps included) stays plain serde data. (A JSON round
/// trip is not possible yet: `Dim` serializes as a map keyed by monomials,
/// which JSON rejects.)
#[test]
fn plans_are_plain_serde_data() {
    fn serde_data<T: serde::Serialize + serde::de::DeserializeOwned + Clone + PartialEq>(_: &T) {}
    let p = plan_graph(&scan_graph()).unwrap();
    serde_data(&p);
    assert_eq!(p.clone(), p);
}

/// A weight transposed for a matmul (and a cast of it) is computed once at
/// load; a kernel that mentions a size (a slice up to `past`) or reads an
/// input is not; an update of a derived buffer is a copy.
#[test]
fn weight_only_kernels_run_at_load() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32t(&["seq", "4"])).unwrap();
    let w = g
        .add(
            Op::Param {
                name: "w".into(),
                ty: f32t(&["4", "4"]),
            },
            &[],
        )
        .unwrap();
    let wt = unary(&mut g, UnaryOp::Neg, w);
    let wt2 = unary(&mut g, UnaryOp::Exp, wt);
    let y = g.add(Op::MatMul, &[x, wt2]).unwrap();
    let sliced = {
        let mut body = Graph::new("body");
        let i = body.add_input("w", f32t(&["4", "4"])).unwrap();
        let s = body
            .add(
                Op::Slice {
                    axis: 0,
                    start: 0.into(),
                    end: "past".into(),
                },
                &[i],
            )
            .unwrap();
        body.add_output("s", s).unwrap();
        let op = Op::Fused(FusedOp {
            kind: FusionKind::Loop,
            body: Arc::new(body),
        });
        g.add(op, &[w]).unwrap()
    };
    let upd = update(&mut g, wt, x, "0");
    g.add_output("y", y).unwrap();
    g.add_output("s", sliced).unwrap();
    g.add_output("u", upd).unwrap();
    let p = plan_graph(&g).unwrap();
    assert_eq!(p.load_steps.len(), 2, "{}", p.describe());
    for st in &p.load_steps {
        let Step::Kernel { args, .. } = st else {
            panic!("{st:?}")
        };
        assert_eq!(p.buffers[*args.last().unwrap()].storage, Storage::Derived);
    }
    // The matmul reads an input, the slice mentions `past`: both run per call.
    assert!(p.steps.iter().any(
        |s| matches!(s, Step::Kernel { kernel, .. } if p.kernels[*kernel].op.name() == "matmul")
    ));
    assert_eq!(
        in_place(&p),
        vec![false],
        "a derived buffer is never written"
    );
}

/// The same kernel in two layers (bodies named and located differently) is
/// compiled once.
#[test]
fn kernels_differing_only_in_names_and_locations_are_shared() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32t(&["seq", "4"])).unwrap();
    let a = unary(&mut g, UnaryOp::Exp, x);
    let b = unary(&mut g, UnaryOp::Neg, a);
    let c = {
        let mut body = Graph::new("layer1_k7");
        let i = body.add_input("x", f32t(&["seq", "4"])).unwrap();
        let y = body.add(Op::Unary(UnaryOp::Exp), &[i]).unwrap();
        body.set_loc(y.node, Some("layers.1.mlp".into()));
        body.add_output("y", y).unwrap();
        let op = Op::Fused(FusedOp {
            kind: FusionKind::Loop,
            body: Arc::new(body),
        });
        g.add(op, &[b]).unwrap()
    };
    g.add_output("c", c).unwrap();
    let p = plan_graph(&g).unwrap();
    assert_eq!(p.steps.len(), 3);
    assert_eq!(p.kernels.len(), 2, "{}", p.describe());
}
