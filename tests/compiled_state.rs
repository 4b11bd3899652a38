//! The compiled CPU path (optimize, plan, codegen, executor) on what
//! autoregressive models need, against the reference interpreter:
//! `update_slice` in place and by copy with a symbolic start, a KV cache
//! kept by the executor (prefill then decode steps with growing `past`),
//! scans (a cumulative sum on two axes, Mamba's selective scan, RetNet's
//! matrix-state recurrence; forward and reverse; lengths 0, 1 and more),
//! a recurrent state kept between steps, and the typed errors of explicit
//! sizes and state.

use kiln::passes::CostTarget;
use kiln::runtime::plan::{Step, Storage};
use kiln::runtime::RuntimeError;
use kiln::{jit, CompileOptions, Executable, KilnError};
use kiln_ir::interp::{eval_with, EvalOptions};
use kiln_ir::op::ScanOp;
use kiln_ir::tensor::rel_l2;
use kiln_ir::{
    BinaryOp, Bindings, CmpOp, DType, Dim, Graph, Literal, Op, ReduceOp, Tensor, TensorType,
    UnaryOp, Value,
};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A graph built node by node.
struct G(Graph);

impl G {
    fn new(name: &str) -> G {
        G(Graph::new(name))
    }
    fn input(&mut self, name: &str, shape: &[&str]) -> Value {
        let shape = shape.iter().map(|d| Dim::from(*d)).collect();
        self.0
            .add_input(name, TensorType::new(DType::F32, shape))
            .unwrap()
    }
    fn op(&mut self, op: Op, args: &[Value]) -> Value {
        self.0.add(op, args).unwrap()
    }
    fn un(&mut self, u: UnaryOp, x: Value) -> Value {
        self.op(Op::Unary(u), &[x])
    }
    fn bin(&mut self, b: BinaryOp, x: Value, y: Value) -> Value {
        self.op(Op::Binary(b), &[x, y])
    }
    fn add(&mut self, x: Value, y: Value) -> Value {
        self.bin(BinaryOp::Add, x, y)
    }
    fn mul(&mut self, x: Value, y: Value) -> Value {
        self.bin(BinaryOp::Mul, x, y)
    }
    fn scalar(&mut self, v: f64) -> Value {
        self.op(Op::Const(Literal::scalar(DType::F32, v)), &[])
    }
    fn reshape(&mut self, x: Value, shape: &[&str]) -> Value {
        let shape = shape.iter().map(|d| Dim::from(*d)).collect();
        self.op(Op::Reshape { shape }, &[x])
    }
    fn sum(&mut self, x: Value, axis: usize) -> Value {
        let op = Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![axis],
            keep_dims: false,
        };
        self.op(op, &[x])
    }
    fn out(&mut self, name: &str, v: Value) {
        self.0.add_output(name, v).unwrap();
    }
    fn out_alias(&mut self, name: &str, v: Value, alias: &str) {
        self.0.add_output_alias(name, v, alias).unwrap();
    }
    fn scan(
        &mut self,
        body: G,
        operands: &[Value],
        nc: usize,
        nx: usize,
        axis: usize,
        reverse: bool,
    ) -> Vec<Value> {
        let op = Op::Scan(ScanOp {
            body: Arc::new(body.0),
            num_carry: nc,
            num_xs: nx,
            axis,
            reverse,
        });
        let n = self.0.add_node(op, operands).unwrap();
        let k = self.0.node(n).outputs.len() as u32;
        (0..k).map(|p| Value::new(n, p)).collect()
    }
}

fn sizes(pairs: &[(&str, i64)]) -> Bindings {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn rand_tensor(rng: &mut impl Rng, shape: &[usize], scale: f32) -> Tensor {
    let n = shape.iter().product();
    let v = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
    Tensor::f32(shape.to_vec(), v).unwrap()
}

fn inputs(pairs: Vec<(&str, Tensor)>) -> BTreeMap<String, Tensor> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn no_params() -> BTreeMap<String, Tensor> {
    BTreeMap::new()
}

fn compile(g: &Graph) -> Executable {
    jit(g, &no_params(), &CompileOptions::default()).unwrap_or_else(|e| panic!("{e}\n{g}"))
}

fn interp(g: &Graph, ins: &BTreeMap<String, Tensor>, s: &Bindings) -> BTreeMap<String, Tensor> {
    let opts = EvalOptions {
        sizes: s.clone(),
        ..EvalOptions::default()
    };
    eval_with(g, ins, &no_params(), &opts).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let e = rel_l2(&got.to_f64_vec(), &want.to_f64_vec());
    assert!(e <= tol, "{what}: relative L2 error {e:.3e}");
}

/// Every output of the compiled run against the interpreter.
fn check_run(
    exe: &mut Executable,
    g: &Graph,
    ins: &BTreeMap<String, Tensor>,
    s: &Bindings,
    tol: f64,
) {
    let got = exe.run_with(ins, s).unwrap_or_else(|e| panic!("{e}"));
    let want = interp(g, ins, s);
    assert_eq!(got.len(), want.len());
    for (name, w) in &want {
        assert_close(&format!("{name} at {s:?}"), &got[name], w, tol);
    }
}

fn all_steps(exe: &Executable) -> Vec<&Step> {
    exe.plan().all_steps()
}

fn copies(exe: &Executable) -> usize {
    all_steps(exe)
        .iter()
        .filter(|s| matches!(s, Step::Copy { .. }))
        .count()
}

// ---- update_slice -----------------------------------------------------------

/// `cache[ctx, 3]` takes `2*x` at `past`; the new cache is an aliased output.
/// With `read_old`, the old cache is also summed after the update, so the
/// update cannot be done in place.
fn cache_update_graph(read_old: bool) -> Graph {
    let mut g = G::new("cache_update");
    let cache = g.input("cache", &["ctx", "3"]);
    let x = g.input("x", &["seq", "3"]);
    let two = g.scalar(2.0);
    let k = g.mul(x, two);
    let upd = Op::UpdateSlice {
        axis: 0,
        start: Dim::sym("past"),
    };
    let new = g.op(upd, &[cache, k]);
    let e = g.un(UnaryOp::Exp, new);
    let total = g.sum(e, 1);
    g.out("total", total);
    if read_old {
        let old = g.un(UnaryOp::Neg, cache);
        let old_sum = g.sum(old, 1);
        let both = g.add(old_sum, total);
        g.out("both", both);
    }
    g.out_alias("cache_out", new, "cache");
    g.0
}

#[test]
fn update_slice_in_place_and_by_copy_at_several_sizes() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for read_old in [false, true] {
        let g = cache_update_graph(read_old);
        let mut exe = compile(&g);
        let plan = exe.plan();
        // In place: the result is a view of the cache input, no copy step.
        let upd = all_steps(&exe)
            .into_iter()
            .find_map(|s| match s {
                Step::Kernel { kernel, args }
                    if plan.kernels[*kernel].op.name() == "update_slice" =>
                {
                    Some(args.clone())
                }
                _ => None,
            })
            .expect("an update_slice step");
        let in_place = plan.root(upd[2]) == plan.root(upd[0]);
        assert_eq!(in_place, !read_old, "{}", plan.describe());
        assert_eq!(copies(&exe), usize::from(read_old), "{}", plan.describe());
        for (ctx, past, seq) in [
            (8usize, 0usize, 3usize),
            (8, 5, 3),
            (8, 7, 1),
            (8, 8, 0),
            (33, 10, 17),
        ] {
            let ins = inputs(vec![
                ("cache", rand_tensor(&mut rng, &[ctx, 3], 1.0)),
                ("x", rand_tensor(&mut rng, &[seq, 3], 1.0)),
            ]);
            check_run(&mut exe, &g, &ins, &sizes(&[("past", past as i64)]), 1e-6);
        }
    }
}

// ---- a KV cache kept by the executor ----------------------------------------

/// One attention head over fixed-capacity caches `k_cache`/`v_cache`
/// `[ctx, d]` (aliased outputs): the new keys and values go in at `past`,
/// the queries attend causally over `past+seq` positions.
fn attention_graph(d: usize) -> Graph {
    let ds = d.to_string();
    let d_ = ds.as_str();
    let mut g = G::new("attn");
    let x = g.input("x", &["seq", d_]);
    let kc = g.input("k_cache", &["ctx", d_]);
    let vc = g.input("v_cache", &["ctx", d_]);
    let tanh = g.un(UnaryOp::Tanh, x);
    let half = g.scalar(0.5);
    let q = g.mul(x, half);
    let k = g.add(tanh, half);
    let v = g.un(UnaryOp::Sin, x);
    let at = |start: &str| Op::UpdateSlice {
        axis: 0,
        start: start.into(),
    };
    let kc2 = g.op(at("past"), &[kc, k]);
    let vc2 = g.op(at("past"), &[vc, v]);
    let slice = Op::Slice {
        axis: 0,
        start: 0.into(),
        end: "past+seq".into(),
    };
    let keys = g.op(slice.clone(), &[kc2]);
    let vals = g.op(slice, &[vc2]);
    let kt = g.op(Op::Permute { perm: vec![1, 0] }, &[keys]);
    let scores = g.op(Op::MatMul, &[q, kt]);
    // Causal mask: key j is visible to query i when j <= past + i.
    let iota = |axis| Op::Iota {
        ty: TensorType::new(DType::I32, vec!["seq".into(), "past+seq".into()]),
        axis,
    };
    let kj = g.op(iota(1), &[]);
    let past = {
        let long = g.op(
            Op::Iota {
                ty: TensorType::new(DType::I32, vec!["past+seq".into()]),
                axis: 0,
            },
            &[],
        );
        let pos = g.op(
            Op::Slice {
                axis: 0,
                start: "past".into(),
                end: "past+seq".into(),
            },
            &[long],
        );
        g.reshape(pos, &["seq", "1"])
    };
    let visible = g.op(Op::Compare(CmpOp::Le), &[kj, past]);
    let ninf = g.scalar(f64::NEG_INFINITY);
    let masked = g.op(Op::Select, &[visible, scores, ninf]);
    let m = g.op(
        Op::Reduce {
            op: ReduceOp::Max,
            axes: vec![1],
            keep_dims: true,
        },
        &[masked],
    );
    let shifted = g.bin(BinaryOp::Sub, masked, m);
    let e = g.un(UnaryOp::Exp, shifted);
    let z = g.op(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![1],
            keep_dims: true,
        },
        &[e],
    );
    let p = g.bin(BinaryOp::Div, e, z);
    let o = g.op(Op::MatMul, &[p, vals]);
    g.out("out", o);
    g.out_alias("k_cache_out", kc2, "k_cache");
    g.out_alias("v_cache_out", vc2, "v_cache");
    g.0
}

#[test]
fn kv_cache_prefill_then_decode_matches_the_full_sequence() {
    let d = 8;
    let g = attention_graph(d);
    let mut exe = compile(&g);
    assert_eq!(exe.state_names(), vec!["k_cache", "v_cache"]);
    // The KV-cache updates are in place: no copy anywhere.
    assert_eq!(copies(&exe), 0, "{}", exe.plan().describe());
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let (ctx, total, prompt) = (16usize, 9usize, 4usize);
    let x = rand_tensor(&mut rng, &[total, d], 1.0);
    let rows = |a: usize, b: usize| {
        let v = x.to_f32_vec()[a * d..b * d].to_vec();
        Tensor::f32(vec![b - a, d], v).unwrap()
    };
    // Reference: the whole sequence at once from empty caches.
    let zeros = Tensor::f32(vec![ctx, d], vec![0.0; ctx * d]).unwrap();
    let full = inputs(vec![
        ("x", x.clone()),
        ("k_cache", zeros.clone()),
        ("v_cache", zeros),
    ]);
    let want = interp(&g, &full, &sizes(&[("past", 0)]));
    let want_out = want["out"].to_f32_vec();

    exe.init_state(&sizes(&[("ctx", ctx as i64)])).unwrap();
    assert_eq!(exe.state("k_cache").unwrap().shape, vec![ctx, d]);
    let mut past = 0;
    for len in [prompt, 1, 1, 2, 1] {
        let out = exe
            .step(
                &inputs(vec![("x", rows(past, past + len))]),
                &sizes(&[("past", past as i64)]),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out.keys().collect::<Vec<_>>(),
            vec!["out"],
            "aliased outputs stay in the state"
        );
        let w = Tensor::f32(vec![len, d], want_out[past * d..(past + len) * d].to_vec()).unwrap();
        assert_close(
            &format!("out rows {past}..{}", past + len),
            &out["out"],
            &w,
            1e-5,
        );
        past += len;
    }
    assert_eq!(past, total);
    for name in ["k_cache", "v_cache"] {
        assert_close(
            name,
            &exe.state(name).unwrap(),
            &want[&format!("{name}_out")],
            1e-6,
        );
    }
    // A step that would write past the capacity is an error, and leaves the state alone.
    let before = exe.state("k_cache").unwrap();
    let err = exe
        .step(&inputs(vec![("x", rows(0, 8))]), &sizes(&[("past", 9)]))
        .unwrap_err();
    assert!(
        matches!(err, KilnError::Runtime(RuntimeError::OutOfRange { .. })),
        "{err}"
    );
    assert_eq!(exe.state("k_cache").unwrap(), before);
}

#[test]
fn explicit_size_and_state_errors_are_typed() {
    let g = attention_graph(4);
    let mut exe = compile(&g);
    let x = Tensor::f32(vec![2, 4], vec![0.5; 8]).unwrap();
    let cache = Tensor::f32(vec![8, 4], vec![0.0; 32]).unwrap();
    let full = inputs(vec![
        ("x", x.clone()),
        ("k_cache", cache.clone()),
        ("v_cache", cache.clone()),
    ]);
    let rt = |e: KilnError| match e {
        KilnError::Runtime(r) => r,
        other => panic!("{other}"),
    };
    // `past` is in no input shape.
    let e = rt(exe.run(&full).unwrap_err());
    assert!(
        matches!(&e, RuntimeError::MissingSize { name } if name == "past"),
        "{e}"
    );
    assert!(e.to_string().contains("`past`"), "{e}");
    // A given size must agree with the inputs; sizes cannot be negative.
    let e = rt(exe
        .run_with(&full, &sizes(&[("past", 1), ("seq", 3)]))
        .unwrap_err());
    assert!(
        matches!(&e, RuntimeError::InputShape { name, .. } if name == "x"),
        "{e}"
    );
    let e = rt(exe.run_with(&full, &sizes(&[("past", -1)])).unwrap_err());
    assert!(matches!(e, RuntimeError::NegativeSize { .. }), "{e}");
    assert!(exe
        .run_with(&full, &sizes(&[("past", 6), ("ctx", 8)]))
        .is_ok());
    let e = rt(exe.run_with(&full, &sizes(&[("past", 7)])).unwrap_err());
    assert!(matches!(e, RuntimeError::OutOfRange { .. }), "{e}");
    // State: not initialized, given as an input, unknown name, wrong type.
    let step_in = inputs(vec![("x", x.clone())]);
    let e = rt(exe.step(&step_in, &sizes(&[("past", 0)])).unwrap_err());
    assert!(matches!(e, RuntimeError::StateNotInitialized { .. }), "{e}");
    let e = rt(exe.init_state(&Bindings::new()).unwrap_err());
    assert!(
        matches!(&e, RuntimeError::StateShape { name, .. } if name == "k_cache"),
        "{e}"
    );
    exe.set_state("k_cache", &cache).unwrap();
    exe.set_state("v_cache", &cache).unwrap();
    let e = rt(exe.step(&full, &sizes(&[("past", 0)])).unwrap_err());
    assert!(matches!(e, RuntimeError::StateAsInput { .. }), "{e}");
    let e = rt(exe.set_state("x", &x).unwrap_err());
    assert!(matches!(e, RuntimeError::NotState { .. }), "{e}");
    let e = rt(exe
        .set_state("k_cache", &Tensor::f32(vec![8, 5], vec![0.0; 40]).unwrap())
        .unwrap_err());
    assert!(matches!(e, RuntimeError::StateShape { .. }), "{e}");
    let e = rt(exe
        .set_state("k_cache", &Tensor::i32(vec![8, 4], vec![0; 32]).unwrap())
        .unwrap_err());
    assert!(matches!(e, RuntimeError::StateType { .. }), "{e}");
    // Caches of different capacities conflict on `ctx`.
    exe.set_state("v_cache", &Tensor::f32(vec![9, 4], vec![0.0; 36]).unwrap())
        .unwrap();
    let e = rt(exe.step(&step_in, &sizes(&[("past", 0)])).unwrap_err());
    assert!(matches!(e, RuntimeError::StateShape { .. }), "{e}");
    exe.set_state("v_cache", &cache).unwrap();
    assert!(exe.step(&step_in, &sizes(&[("past", 0)])).is_ok());
}

// ---- scans ------------------------------------------------------------------

/// `(c, x) -> (c + x, c + x)`: a cumulative sum over `xs` along `axis`.
fn cumsum_graph(axis: usize, reverse: bool) -> Graph {
    let mut body = G::new("cumsum_step");
    let c = body.input("c", &["d"]);
    let x = body.input("x", &["d"]);
    let s = body.add(c, x);
    body.out("c", s);
    body.out("y", s);
    let mut g = G::new("cumsum");
    let c0 = g.input("c0", &["d"]);
    let xs = if axis == 0 {
        g.input("xs", &["seq", "d"])
    } else {
        g.input("xs", &["d", "seq"])
    };
    let r = g.scan(body, &[c0, xs], 1, 1, axis, reverse);
    g.out("total", r[0]);
    g.out("ys", r[1]);
    g.0
}

#[test]
fn cumulative_sums_forward_and_reverse_on_both_axes() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for axis in [0, 1] {
        for reverse in [false, true] {
            let g = cumsum_graph(axis, reverse);
            let mut exe = compile(&g);
            for (seq, d) in [(0usize, 3usize), (1, 3), (2, 1), (7, 5), (40, 2)] {
                let shape = if axis == 0 { [seq, d] } else { [d, seq] };
                let ins = inputs(vec![
                    ("c0", rand_tensor(&mut rng, &[d], 1.0)),
                    ("xs", rand_tensor(&mut rng, &shape, 1.0)),
                ]);
                check_run(&mut exe, &g, &ins, &Bindings::new(), 1e-6);
            }
        }
    }
}

/// Mamba's selective scan: carry `h[di, ds]`; per step `dt[di]`, `B[ds]`,
/// `C[ds]`, `x[di]`; invariant `A[di, ds]`:
/// `h' = exp(dt[:,None]*A)*h + (dt*x)[:,None]*B[None,:]`, `y = sum(h'*C, -1)`.
/// Around it, `dt = softplus(dt_raw)` and `out = y * silu(z)`.
fn mamba_graph(di: usize, ds: usize, reverse: bool, state: bool) -> Graph {
    let (dis, dss) = (di.to_string(), ds.to_string());
    let (di_, ds_) = (dis.as_str(), dss.as_str());
    let mut body = G::new("selective_scan_step");
    let h = body.input("h", &[di_, ds_]);
    let dt = body.input("dt", &[di_]);
    let b = body.input("b", &[ds_]);
    let c = body.input("c", &[ds_]);
    let x = body.input("x", &[di_]);
    let a = body.input("a", &[di_, ds_]);
    let dt_col = body.reshape(dt, &[di_, "1"]);
    let dta = body.mul(dt_col, a);
    let decay = body.un(UnaryOp::Exp, dta);
    let dtx = body.mul(dt, x);
    let dtx_col = body.reshape(dtx, &[di_, "1"]);
    let b_row = body.reshape(b, &["1", ds_]);
    let inject = body.mul(dtx_col, b_row);
    let kept = body.mul(decay, h);
    let h2 = body.add(kept, inject);
    let c_row = body.reshape(c, &["1", ds_]);
    let hc = body.mul(h2, c_row);
    let y = body.sum(hc, 1);
    body.out("h", h2);
    body.out("y", y);

    let mut g = G::new("mamba_scan");
    let h0 = g.input("h0", &[di_, ds_]);
    let dt_raw = g.input("dt_raw", &["seq", di_]);
    let bs = g.input("bs", &["seq", ds_]);
    let cs = g.input("cs", &["seq", ds_]);
    let xs = g.input("xs", &["seq", di_]);
    let z = g.input("z", &["seq", di_]);
    let a_log = g.input("a_log", &[di_, ds_]);
    let dt = g.un(UnaryOp::Softplus, dt_raw);
    let ea = g.un(UnaryOp::Exp, a_log);
    let a = g.un(UnaryOp::Neg, ea);
    let r = g.scan(body, &[h0, dt, bs, cs, xs, a], 1, 4, 0, reverse);
    let gate = g.un(UnaryOp::Silu, z);
    let out = g.mul(r[1], gate);
    g.out("out", out);
    if state {
        g.out_alias("h_out", r[0], "h0");
    } else {
        g.out("h_final", r[0]);
    }
    g.0
}

fn mamba_inputs(
    rng: &mut impl Rng,
    seq: usize,
    di: usize,
    ds: usize,
) -> Vec<(&'static str, Tensor)> {
    vec![
        ("h0", rand_tensor(rng, &[di, ds], 1.0)),
        ("dt_raw", rand_tensor(rng, &[seq, di], 2.0)),
        ("bs", rand_tensor(rng, &[seq, ds], 1.0)),
        ("cs", rand_tensor(rng, &[seq, ds], 1.0)),
        ("xs", rand_tensor(rng, &[seq, di], 1.0)),
        ("z", rand_tensor(rng, &[seq, di], 1.0)),
        ("a_log", rand_tensor(rng, &[di, ds], 1.0)),
    ]
}

#[test]
fn mamba_selective_scan_forward_and_reverse() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    // Small states; and one big enough (3 x 32 KiB per iteration) that each
    // iteration's kernel (or the `linear_scan` kernel) is split over two
    // threads. Extraction for the GPU lowers the recurrence to `linear_scan`;
    // for the CPU the cost model decides (the big state keeps its step loop).
    for (di, ds, threads, seqs) in [(6, 4, 1, &[0usize, 1, 2, 9, 33][..]), (32, 256, 2, &[1, 3])] {
        for reverse in [false, true] {
            for target in [CostTarget::Cpu, CostTarget::Gpu] {
                let g = mamba_graph(di, ds, reverse, false);
                let mut opts = CompileOptions::default();
                opts.exec.threads = threads;
                opts.passes.target = target;
                let mut exe = jit(&g, &no_params(), &opts).unwrap_or_else(|e| panic!("{e}"));
                let plan = exe.plan();
                let lowered = plan
                    .kernels
                    .iter()
                    .any(|k| matches!(k.op, Op::LinearScan(_)));
                let stepped = plan.steps.iter().any(|s| matches!(s, Step::Scan(_)));
                assert!(lowered != stepped, "{}", plan.describe());
                if target == CostTarget::Gpu || ds == 256 {
                    assert_eq!(lowered, target == CostTarget::Gpu, "{}", plan.describe());
                }
                for &seq in seqs {
                    let ins = inputs(mamba_inputs(&mut rng, seq, di, ds));
                    check_run(&mut exe, &g, &ins, &Bindings::new(), 1e-5);
                }
            }
        }
    }
}

/// The recurrent state `h` kept by the executor: a prompt, then one token
/// at a time, matches the whole sequence.
#[test]
fn mamba_state_prefill_then_steps_matches_the_full_sequence() {
    let (di, ds, total) = (5, 3, 8);
    let g = mamba_graph(di, ds, false, true);
    let mut exe = compile(&g);
    assert_eq!(exe.state_names(), vec!["h0"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let full = inputs(mamba_inputs(&mut rng, total, di, ds));
    let want = interp(&g, &full, &Bindings::new());
    let rows = |name: &str, a: usize, b: usize| {
        let t = &full[name];
        let w = t.shape[1];
        Tensor::f32(vec![b - a, w], t.to_f32_vec()[a * w..b * w].to_vec()).unwrap()
    };
    exe.set_state("h0", &full["h0"]).unwrap();
    let mut past = 0;
    for len in [3, 1, 1, 3] {
        let mut ins = BTreeMap::new();
        for name in ["dt_raw", "bs", "cs", "xs", "z"] {
            ins.insert(name.to_string(), rows(name, past, past + len));
        }
        ins.insert("a_log".to_string(), full["a_log"].clone());
        let out = exe
            .step(&ins, &Bindings::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let w = Tensor::f32(
            vec![len, di],
            want["out"].to_f32_vec()[past * di..(past + len) * di].to_vec(),
        )
        .unwrap();
        assert_close(&format!("out rows {past}.."), &out["out"], &w, 1e-5);
        past += len;
    }
    assert_close(
        "final state",
        &exe.state("h0").unwrap(),
        &want["h_out"],
        1e-5,
    );
}

/// RetNet's recurrence with a matrix state: `S' = gamma*S + k^T v`,
/// `o = q S'` (a matmul inside the body); `q, k [seq, dk]`, `v [seq, dv]`.
fn retnet_graph(dk: usize, dv: usize, reverse: bool) -> Graph {
    let (dks, dvs) = (dk.to_string(), dv.to_string());
    let (dk_, dv_) = (dks.as_str(), dvs.as_str());
    let mut body = G::new("retention_step");
    let s = body.input("s", &[dk_, dv_]);
    let q = body.input("q", &[dk_]);
    let k = body.input("k", &[dk_]);
    let v = body.input("v", &[dv_]);
    let gamma = body.scalar(0.9);
    let decayed = body.mul(s, gamma);
    let kc = body.reshape(k, &[dk_, "1"]);
    let vr = body.reshape(v, &["1", dv_]);
    let kv = body.mul(kc, vr);
    let s2 = body.add(decayed, kv);
    let qr = body.reshape(q, &["1", dk_]);
    let o = body.op(Op::MatMul, &[qr, s2]);
    let o = body.reshape(o, &[dv_]);
    body.out("s", s2);
    body.out("o", o);
    let mut g = G::new("retnet");
    let s0 = g.input("s0", &[dk_, dv_]);
    let qs = g.input("qs", &["seq", dk_]);
    let ks = g.input("ks", &["seq", dk_]);
    let vs = g.input("vs", &["seq", dv_]);
    let r = g.scan(body, &[s0, qs, ks, vs], 1, 3, 0, reverse);
    g.out("s_final", r[0]);
    g.out("o", r[1]);
    g.0
}

#[test]
fn retnet_matrix_state_recurrence() {
    let (dk, dv) = (4, 6);
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    for reverse in [false, true] {
        let g = retnet_graph(dk, dv, reverse);
        let mut exe = compile(&g);
        for seq in [0usize, 1, 6] {
            let ins = inputs(vec![
                ("s0", rand_tensor(&mut rng, &[dk, dv], 1.0)),
                ("qs", rand_tensor(&mut rng, &[seq, dk], 1.0)),
                ("ks", rand_tensor(&mut rng, &[seq, dk], 1.0)),
                ("vs", rand_tensor(&mut rng, &[seq, dv], 1.0)),
            ]);
            check_run(&mut exe, &g, &ins, &Bindings::new(), 1e-5);
        }
    }
}

/// Scans leave no scratch in their bodies' bound buffers: every body
/// input and output is bound, everything else the body computes is scratch.
#[test]
fn scan_bodies_are_planned_with_bound_inputs_and_outputs() {
    let g = mamba_graph(4, 2, false, false);
    // Without `recognize`, which lowers this recurrence to `linear_scan`.
    let (kernels, _) = kiln::passes::PassManager::from_names(&["canonicalize", "dce", "fuse"])
        .unwrap()
        .run(g, &Default::default())
        .unwrap();
    let plan = &kiln::runtime::plan(&kernels).unwrap();
    let Some(Step::Scan(sc)) = plan.steps.iter().find(|s| matches!(s, Step::Scan(_))) else {
        panic!("no scan step:\n{}", plan.describe())
    };
    for c in &sc.carries {
        assert_eq!(plan.buffers[c.input].storage, Storage::Bound);
        assert_eq!(plan.buffers[c.output].storage, Storage::Bound);
        assert_ne!(
            plan.buffers[c.spare].storage,
            plan.buffers[c.result].storage
        );
    }
    // The new carry and the step output are computed straight into the
    // bound buffers: no copy in the body.
    assert!(
        !sc.body.iter().any(|s| matches!(s, Step::Copy { .. })),
        "{}",
        plan.describe()
    );
}

/// A scan nested in a scan body: rows of `xs f32[m, n, 4]` are summed
/// cumulatively by an inner scan that starts from the outer carry, which
/// is a cumulative sum over all `m * n` rows. And a scan with no carry
/// (a map over the sequence).
#[test]
fn nested_scans_and_carry_free_scans() {
    let mut inner = G::new("inner");
    let c = inner.input("c", &["4"]);
    let x = inner.input("x", &["4"]);
    let s = inner.add(c, x);
    inner.out("c", s);
    inner.out("y", s);
    let mut outer = G::new("outer");
    let c = outer.input("c", &["4"]);
    let row = outer.input("row", &["n", "4"]);
    let r = outer.scan(inner, &[c, row], 1, 1, 0, false);
    let doubled = {
        let two = outer.scalar(2.0);
        outer.mul(r[1], two)
    };
    outer.out("c", r[0]);
    outer.out("ys", doubled);
    let mut g = G::new("nested");
    let c0 = g.input("c0", &["4"]);
    let xs = g.input("xs", &["m", "n", "4"]);
    let r = g.scan(outer, &[c0, xs], 1, 1, 0, false);
    g.out("total", r[0]);
    g.out("yss", r[1]);
    let g = g.0;
    let mut exe = compile(&g);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for (m, n) in [(3usize, 2usize), (1, 5), (2, 0), (0, 3)] {
        let ins = inputs(vec![
            ("c0", rand_tensor(&mut rng, &[4], 1.0)),
            ("xs", rand_tensor(&mut rng, &[m, n, 4], 1.0)),
        ]);
        check_run(&mut exe, &g, &ins, &Bindings::new(), 1e-6);
    }

    // No carry: ys[t] = exp(xs[t]) * k.
    let mut body = G::new("map");
    let x = body.input("x", &["d"]);
    let k = body.input("k", &["d"]);
    let e = body.un(UnaryOp::Exp, x);
    let y = body.mul(e, k);
    body.out("y", y);
    let mut g = G::new("map_scan");
    let xs = g.input("xs", &["seq", "d"]);
    let k = g.input("k", &["d"]);
    let r = g.scan(body, &[xs, k], 0, 1, 0, true);
    g.out("ys", r[0]);
    let g = g.0;
    let mut exe = compile(&g);
    for (seq, d) in [(4usize, 3usize), (0, 2)] {
        let ins = inputs(vec![
            ("xs", rand_tensor(&mut rng, &[seq, d], 1.0)),
            ("k", rand_tensor(&mut rng, &[d], 1.0)),
        ]);
        check_run(&mut exe, &g, &ins, &Bindings::new(), 1e-6);
    }
}

/// Asking a step for `last_logits` alone runs only what it and the cache
/// updates need, and gives the last row of `logits` with the same state
/// afterwards; an unknown output name is a typed error.
#[test]
fn step_only_last_logits_skips_the_full_lm_head() {
    use kiln_runtime::Executor;
    let cfg = kiln_models::llama::tiny_config();
    let w = kiln_models::llama::random_weights(&cfg, 3);
    let g = kiln_models::llama::build(&cfg).unwrap();
    let mut full = jit(&g, &w, &CompileOptions::default()).unwrap();
    let mut only = jit(&g, &w, &CompileOptions::default()).unwrap();
    let b = sizes(&[("ctx", 16), ("past", 0)]);
    Executor::init_state(&mut full, &b).unwrap();
    Executor::init_state(&mut only, &b).unwrap();
    let tokens = |ids: &[i32]| {
        inputs(vec![(
            "tokens",
            Tensor::i32(vec![ids.len()], ids.to_vec()).unwrap(),
        )])
    };
    let mut past = 0;
    for ids in [&[5, 9, 2, 7, 1][..], &[3], &[8]] {
        let b = sizes(&[("ctx", 16), ("past", past)]);
        let all = Executor::step(&mut full, &tokens(ids), &b).unwrap();
        let last = Executor::step_only(&mut only, &tokens(ids), &b, &["last_logits"]).unwrap();
        assert_eq!(last.keys().collect::<Vec<_>>(), ["last_logits"]);
        let all = all["logits"].to_f64_vec();
        let vocab = last["last_logits"].shape[1];
        let want = &all[all.len() - vocab..];
        let e = rel_l2(&last["last_logits"].to_f64_vec(), want);
        assert!(e < 1e-5, "{} token(s) at past {past}: {e:.2e}", ids.len());
        past += ids.len() as i64;
    }
    let err = Executor::step_only(
        &mut only,
        &tokens(&[1]),
        &sizes(&[("ctx", 16), ("past", past)]),
        &["nope"],
    )
    .unwrap_err();
    assert!(
        matches!(err, RuntimeError::UnknownOutput { ref name, .. } if name == "nope"),
        "{err}"
    );
}
