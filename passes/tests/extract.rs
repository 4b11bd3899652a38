//! The DAG-aware extractor against tree-cost extraction.

use egg::Id;
use kiln_ir::{shape, BinaryOp, DType, Graph, Op, TensorType, UnaryOp};
use kiln_passes::cost::CostModel;
use kiln_passes::extract::{extract_dag, extract_tree, selection_cost, Selection};
use kiln_passes::lang::KNode;
use kiln_passes::translate::{to_egraph, to_graph, Translated};
use kiln_passes::CostTarget;

fn input_graph(build: impl FnOnce(&mut Graph, kiln_ir::Value) -> Vec<kiln_ir::Value>) -> Graph {
    let mut g = Graph::new("t");
    let x = g
        .add_input("x", TensorType::new(DType::F32, shape![1024, 1024]))
        .unwrap();
    for (i, v) in build(&mut g, x).into_iter().enumerate() {
        g.add_output(format!("y{i}"), v).unwrap();
    }
    g
}

fn chosen_op(t: &Translated, sel: &Selection, class: Id) -> String {
    let node = &sel[&t.egraph.find(class)];
    node.as_op()
        .map(|o| o.name().to_string())
        .unwrap_or_default()
}

/// Adds the chain `us[n-1](..us[0](x))` to the e-graph and makes it equal to `class`.
fn add_alternative(t: &mut Translated, class: Id, x: Id, us: &[UnaryOp]) {
    let mut v = x;
    for u in us {
        v = t.egraph.add(KNode::op(Op::Unary(*u), vec![v]));
    }
    t.egraph.union(class, v);
    t.egraph.rebuild();
}

#[test]
fn dag_extraction_keeps_a_shared_sub_term_the_tree_extractor_duplicates() {
    // y = e + e with e = tanh(exp(sin(x))), shared by hash-consing. As a
    // tree, `add(e, e)` prices e's three transcendental ops twice (seven ops'
    // worth), more than the five-op alternative chain; as a DAG it prices
    // them once (four ops' worth), less than the alternative.
    let g = input_graph(|g, x| {
        let mut e = x;
        for u in [UnaryOp::Sin, UnaryOp::Exp, UnaryOp::Tanh] {
            e = g.add(Op::Unary(u), &[e]).unwrap();
        }
        vec![g.add(Op::Binary(BinaryOp::Add), &[e, e]).unwrap()]
    });
    let mut t = to_egraph(&g);
    let root = t.roots()[0];
    let x = t.inputs[0].2;
    let alt = [
        UnaryOp::Cos,
        UnaryOp::Sigmoid,
        UnaryOp::Exp,
        UnaryOp::Sin,
        UnaryOp::Tanh,
    ];
    add_alternative(&mut t, root, x, &alt);
    let model = CostModel::new(CostTarget::Cpu);
    let dag = extract_dag(&t.egraph, &[root], &model).unwrap();
    let tree = extract_tree(&t.egraph, &model);
    assert_eq!(chosen_op(&t, &dag, root), "add");
    assert_eq!(chosen_op(&t, &tree, root), "tanh");
    let (cd, ct) = (
        selection_cost(&t.egraph, &dag, &[root], &model),
        selection_cost(&t.egraph, &tree, &[root], &model),
    );
    assert!(
        cd < ct,
        "the DAG choice must be cheaper as a graph: {cd} vs {ct}"
    );
    let out = to_graph(&t, &dag, "test").unwrap();
    kiln_ir::verify(&out).unwrap();
    assert_eq!(out.node_count(), 5, "x, sin, exp, tanh once, add:\n{out}");
}

#[test]
fn dag_extraction_shares_with_other_outputs() {
    // y0 = exp(x); y1 = exp(x) * 2, or equally sin(x). In isolation sin(x) is
    // cheaper than mul(exp(x), 2); but exp(x) is computed for y0 anyway, so
    // the whole graph is cheaper with the mul.
    let g = input_graph(|g, x| {
        let e = g.add(Op::Unary(UnaryOp::Exp), &[x]).unwrap();
        let two = g
            .add(Op::Const(kiln_ir::Literal::scalar(DType::F32, 2.0)), &[])
            .unwrap();
        let m = g.add(Op::Binary(BinaryOp::Mul), &[e, two]).unwrap();
        vec![e, m]
    });
    let mut t = to_egraph(&g);
    let roots = t.roots();
    let x = t.inputs[0].2;
    let s = t.egraph.add(KNode::op(Op::Unary(UnaryOp::Sin), vec![x]));
    t.egraph.union(roots[1], s);
    t.egraph.rebuild();
    let model = CostModel::new(CostTarget::Cpu);
    let dag = extract_dag(&t.egraph, &roots, &model).unwrap();
    assert_eq!(chosen_op(&t, &dag, roots[1]), "mul");
    let tree = extract_tree(&t.egraph, &model);
    assert_eq!(chosen_op(&t, &tree, roots[1]), "sin");
    assert!(
        selection_cost(&t.egraph, &dag, &roots, &model)
            < selection_cost(&t.egraph, &tree, &roots, &model)
    );
}

#[test]
fn extraction_never_picks_a_cycle() {
    // x * 1 == x puts the mul into x's class: a cyclic choice must not be taken.
    let g = input_graph(|g, x| {
        let one = g
            .add(Op::Const(kiln_ir::Literal::scalar(DType::F32, 1.0)), &[])
            .unwrap();
        let m = g.add(Op::Binary(BinaryOp::Mul), &[x, one]).unwrap();
        vec![g.add(Op::Unary(UnaryOp::Neg), &[m]).unwrap()]
    });
    let mut t = to_egraph(&g);
    let roots = t.roots();
    let x = t.inputs[0].2;
    let neg = &t.egraph[roots[0]].nodes[0].clone();
    let m = neg.children[0];
    t.egraph.union(m, x);
    t.egraph.rebuild();
    let dag = extract_dag(&t.egraph, &roots, &CostModel::new(CostTarget::Gpu)).unwrap();
    let out = to_graph(&t, &dag, "test").unwrap();
    kiln_ir::verify(&out).unwrap();
    assert_eq!(out.node_count(), 2, "{out}");
}

#[test]
fn deep_shared_dags_extract_in_linear_time() {
    // A residual stream used twice per layer: tree costs double per layer.
    let g = input_graph(|g, x| {
        let mut v = x;
        for _ in 0..200 {
            let e = g.add(Op::Unary(UnaryOp::Tanh), &[v]).unwrap();
            v = g.add(Op::Binary(BinaryOp::Add), &[v, e]).unwrap();
        }
        vec![v]
    });
    let t = to_egraph(&g);
    let start = std::time::Instant::now();
    let dag = extract_dag(&t.egraph, &t.roots(), &CostModel::new(CostTarget::Cpu)).unwrap();
    let out = to_graph(&t, &dag, "test").unwrap();
    assert_eq!(out.node_count(), 401);
    assert!(start.elapsed().as_secs_f64() < 5.0);
}
