//! The executor's scans and kept state with kernels written in Rust against
//! the CPU ABI (no compiler involved), checked against the interpreter:
//! scan iterations over contiguous and strided slices, forward and reverse,
//! lengths 0 and up; state written back when it cannot be updated in place
//! (two states swapping their updated values); `run` leaving the kept state
//! alone; and steady-state `step` calls that allocate nothing.

use kiln_ir::interp::{eval_with, EvalOptions};
use kiln_ir::kernel::{Grid, KernelLaunch};
use kiln_ir::{
    BinaryOp, Bindings, DType, Dim, FusedOp, FusionKind, Graph, Op, ScanOp, Tensor, TensorType,
    Value,
};
use kiln_runtime::{plan, CpuExecutor, CpuKernelFn, ExecOptions, KernelTable, Plan};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Counts the allocations of the current thread.
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a plain
// thread-local cell that needs no allocation or destructor.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(|c| c.get())
}

fn f32t(dims: &[&str]) -> TensorType {
    TensorType::new(DType::F32, dims.iter().map(|d| Dim::from(*d)).collect())
}

/// `c + x` over `f32[4]` (one block).
unsafe extern "C" fn add4(args: *const *mut u8, _sizes: *const i64, b0: i64, b1: i64) {
    // SAFETY: the executor passes two f32[4] operands and one f32[4] result.
    unsafe {
        let (a, b, y) = (
            *args as *const f32,
            *args.add(1) as *const f32,
            *args.add(2) as *mut f32,
        );
        for _ in b0..b1 {
            for i in 0..4 {
                *y.add(i) = *a.add(i) + *b.add(i);
            }
        }
    }
}

/// `update_slice(base f32[n,4], update f32[seq,4])` on axis 0 at `sizes[START]`
/// (or 0): writes only the update's rows. Symbols: `[n, past, seq]`.
unsafe fn update_rows(args: *const *mut u8, sizes: *const i64, start: Option<usize>) {
    // SAFETY: args = [base, update, result]; the result holds the base.
    unsafe {
        let (u, y) = (*args.add(1) as *const f32, *args.add(2) as *mut f32);
        let rows = *sizes.add(2) as usize;
        let s = start.map_or(0, |k| *sizes.add(k) as usize);
        for i in 0..rows * 4 {
            *y.add(s * 4 + i) = *u.add(i);
        }
    }
}

unsafe extern "C" fn update_at_past(args: *const *mut u8, sizes: *const i64, b0: i64, b1: i64) {
    if b0 < b1 {
        // SAFETY: as in `update_rows`; `past` is symbol 1.
        unsafe { update_rows(args, sizes, Some(1)) }
    }
}

unsafe extern "C" fn update_at_0(args: *const *mut u8, sizes: *const i64, b0: i64, b1: i64) {
    if b0 < b1 {
        // SAFETY: as in `update_rows`.
        unsafe { update_rows(args, sizes, None) }
    }
}

/// Rust kernels for a plan's kernels, each a one-block grid.
struct Table(Vec<(String, CpuKernelFn)>, Vec<String>);

impl KernelTable for Table {
    fn lookup(&self, name: &str) -> Option<CpuKernelFn> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, f)| *f)
    }
    fn launches(&self) -> Vec<KernelLaunch> {
        self.0
            .iter()
            .map(|(n, _)| KernelLaunch {
                name: n.clone(),
                grid: Grid::default(),
                symbols: self.1.clone(),
                gpu_threads: 1,
            })
            .collect()
    }
}

fn table(p: &Plan) -> Arc<Table> {
    let fns = p
        .kernels
        .iter()
        .map(|k| {
            let f: CpuKernelFn = match &k.op {
                Op::UpdateSlice { start, .. } if *start == Dim::sym("past") => update_at_past,
                Op::UpdateSlice { .. } => update_at_0,
                _ => add4,
            };
            (k.name.clone(), f)
        })
        .collect();
    Arc::new(Table(fns, p.symbols.clone()))
}

fn executor(g: &Graph, threads: usize) -> CpuExecutor {
    let p = plan(g).unwrap();
    let t = table(&p);
    CpuExecutor::new(
        p,
        t,
        &BTreeMap::<String, Tensor>::new(),
        &ExecOptions { threads },
    )
    .unwrap()
}

fn interp(g: &Graph, ins: &BTreeMap<String, Tensor>, s: &Bindings) -> BTreeMap<String, Tensor> {
    let opts = EvalOptions {
        sizes: s.clone(),
        ..EvalOptions::default()
    };
    eval_with(g, ins, &BTreeMap::<String, Tensor>::new(), &opts).unwrap()
}

fn tensor(shape: &[usize], seed: usize) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| ((i * 7 + seed * 13) % 23) as f32 * 0.25 - 2.0)
        .collect();
    Tensor::f32(shape.to_vec(), v).unwrap()
}

fn named(pairs: Vec<(&str, Tensor)>) -> BTreeMap<String, Tensor> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A cumulative sum over `xs` along `axis` (`f32[seq,4]` or `f32[4,seq]`),
/// the body one `add4` kernel whose result is both the carry and the step
/// output.
fn cumsum(axis: usize, reverse: bool, state: bool) -> Graph {
    let mut body = Graph::new("step");
    let c = body.add_input("c", f32t(&["4"])).unwrap();
    let x = body.add_input("x", f32t(&["4"])).unwrap();
    let mut k = Graph::new("add");
    let (a, b) = (
        k.add_input("a", f32t(&["4"])).unwrap(),
        k.add_input("b", f32t(&["4"])).unwrap(),
    );
    let s = k.add(Op::Binary(BinaryOp::Add), &[a, b]).unwrap();
    k.add_output("s", s).unwrap();
    let op = Op::Fused(FusedOp {
        kind: FusionKind::Loop,
        body: Arc::new(k),
    });
    let s = body.add(op, &[c, x]).unwrap();
    body.add_output("c", s).unwrap();
    body.add_output("y", s).unwrap();
    let mut g = Graph::new("cumsum");
    let c0 = g.add_input("c0", f32t(&["4"])).unwrap();
    let xs = g
        .add_input(
            "xs",
            f32t(if axis == 0 {
                &["seq", "4"]
            } else {
                &["4", "seq"]
            }),
        )
        .unwrap();
    let n = g
        .add_node(
            Op::Scan(ScanOp {
                body: Arc::new(body),
                num_carry: 1,
                num_xs: 1,
                axis,
                reverse,
            }),
            &[c0, xs],
        )
        .unwrap();
    if state {
        g.add_output_alias("c_out", Value::new(n, 0), "c0").unwrap();
    } else {
        g.add_output("total", Value::new(n, 0)).unwrap();
        g.add_output("ys", Value::new(n, 1)).unwrap();
    }
    g
}

#[test]
fn scans_over_contiguous_and_strided_slices_match_the_interpreter() {
    for axis in [0, 1] {
        for reverse in [false, true] {
            let g = cumsum(axis, reverse, false);
            for threads in [1, 2] {
                let mut exe = executor(&g, threads);
                for seq in [0usize, 1, 2, 7] {
                    let shape = if axis == 0 { [seq, 4] } else { [4, seq] };
                    let ins = named(vec![("c0", tensor(&[4], seq)), ("xs", tensor(&shape, 1))]);
                    let got = exe.run(&ins).unwrap();
                    let want = interp(&g, &ins, &Bindings::new());
                    for name in ["total", "ys"] {
                        assert_eq!(
                            got[name], want[name],
                            "{name}, axis {axis}, reverse {reverse}, seq {seq}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn swapped_states_are_written_back_and_run_leaves_state_alone() {
    // a' = update(b, x, at 0), b' = update(a, x, at past): neither in place.
    let mut g = Graph::new("swap");
    let a = g.add_input("a", f32t(&["n", "4"])).unwrap();
    let b = g.add_input("b", f32t(&["n", "4"])).unwrap();
    let x = g.add_input("x", f32t(&["seq", "4"])).unwrap();
    let at = |s: &str| Op::UpdateSlice {
        axis: 0,
        start: s.into(),
    };
    let ua = g.add(at("past"), &[a, x]).unwrap();
    let ub = g.add(at("0"), &[b, x]).unwrap();
    g.add_output_alias("a_out", ub, "a").unwrap();
    g.add_output_alias("b_out", ua, "b").unwrap();
    let mut exe = executor(&g, 1);
    assert_eq!(exe.state_names(), vec!["a", "b"]);
    let (mut sa, mut sb) = (tensor(&[5, 4], 1), tensor(&[5, 4], 2));
    exe.set_state("a", &sa).unwrap();
    exe.set_state("b", &sb).unwrap();
    for (k, (past, seq)) in [(0usize, 2usize), (3, 2), (1, 1), (4, 0)]
        .into_iter()
        .enumerate()
    {
        let x = tensor(&[seq, 4], 10 + k);
        let s: Bindings = [("past".to_string(), past as i64)].into();
        let out = exe.step(&named(vec![("x", x.clone())]), &s).unwrap();
        assert!(out.is_empty(), "only aliased outputs");
        let want = interp(&g, &named(vec![("a", sa), ("b", sb), ("x", x)]), &s);
        (sa, sb) = (want["a_out"].clone(), want["b_out"].clone());
        assert_eq!(exe.state("a").unwrap(), sa, "a after step {k}");
        assert_eq!(exe.state("b").unwrap(), sb, "b after step {k}");
    }
    // `run` takes the state as inputs and returns it; the kept state is untouched.
    let ins = named(vec![
        ("a", tensor(&[5, 4], 7)),
        ("b", tensor(&[5, 4], 8)),
        ("x", tensor(&[1, 4], 9)),
    ]);
    let s: Bindings = [("past".to_string(), 2)].into();
    let got = exe.run_with(&ins, &s).unwrap();
    assert_eq!(got, interp(&g, &ins, &s));
    assert_eq!(exe.state("a").unwrap(), sa);
    assert_eq!(exe.state("b").unwrap(), sb);
}

#[test]
fn steady_state_steps_allocate_nothing() {
    // A recurrent state updated by a scan, and a cache updated in place.
    let g = cumsum(0, false, true);
    let mut exe = executor(&g, 1);
    exe.set_state("c0", &tensor(&[4], 0)).unwrap();
    let ins = named(vec![("xs", tensor(&[3, 4], 1))]);
    let none = Bindings::new();
    exe.step(&ins, &none).unwrap();
    // The counter sees this thread's allocations: returning an output allocates.
    let before = allocations();
    let state_in = named(vec![("c0", tensor(&[4], 0)), ("xs", tensor(&[3, 4], 1))]);
    let out = exe.run(&state_in).unwrap();
    assert!(allocations() > before && out.contains_key("c_out"));
    let before = allocations();
    for _ in 0..5 {
        exe.step(&ins, &none).unwrap();
    }
    assert_eq!(allocations() - before, 0, "steps of a scan allocated");

    let mut exe = executor(&cache_graph(), 1);
    exe.init_state(&[("n".to_string(), 16)].into()).unwrap();
    let x1 = named(vec![("x", tensor(&[1, 4], 3))]);
    let sizes: Vec<Bindings> = (0..8).map(|p| [("past".to_string(), p)].into()).collect();
    exe.step(&x1, &sizes[0]).unwrap();
    let before = allocations();
    for s in &sizes[1..] {
        exe.step(&x1, s).unwrap();
    }
    assert_eq!(allocations() - before, 0, "cache steps allocated");
    let cache = exe.state("cache").unwrap().to_f32_vec();
    assert_eq!(&cache[..8 * 4], &x1["x"].to_f32_vec().repeat(8)[..]);
    assert!(
        cache[8 * 4..].iter().all(|v| *v == 0.0),
        "init_state zero-fills"
    );
}

/// `cache[n, 4]` takes `x` at `past`, in place.
fn cache_graph() -> Graph {
    let mut g = Graph::new("cache");
    let c = g.add_input("cache", f32t(&["n", "4"])).unwrap();
    let x = g.add_input("x", f32t(&["seq", "4"])).unwrap();
    let u = g
        .add(
            Op::UpdateSlice {
                axis: 0,
                start: "past".into(),
            },
            &[c, x],
        )
        .unwrap();
    g.add_output_alias("cache_out", u, "cache").unwrap();
    g
}

/// Whether state `name` is all zeros.
fn all_zero(exe: &CpuExecutor, name: &str) -> bool {
    exe.state(name)
        .unwrap()
        .to_f32_vec()
        .iter()
        .all(|v| *v == 0.0)
}

/// Initializing again zero-fills every state, whether it kept its memory
/// (same size: only the rows written are cleared) or not, and whatever
/// wrote it: an in-place update, a scan's write-back, `set_state`.
#[test]
fn init_state_again_zero_fills_what_was_written() {
    let mut exe = executor(&cache_graph(), 2);
    let n16: Bindings = [("n".to_string(), 16)].into();
    for round in 0..3 {
        exe.init_state(&n16).unwrap();
        assert!(all_zero(&exe, "cache"), "round {round}");
        // Rows 0..5, then 9..11 (a gap left zero), differing per round.
        let mut want = vec![0.0; 16 * 4];
        for (past, seq) in [(0, 5), (9, 2)] {
            let x = tensor(&[seq, 4], round * 10 + past);
            want[past * 4..(past + seq) * 4].copy_from_slice(&x.to_f32_vec());
            exe.step(
                &named(vec![("x", x)]),
                &[("past".to_string(), past as i64)].into(),
            )
            .unwrap();
        }
        assert_eq!(
            exe.state("cache").unwrap().to_f32_vec(),
            want,
            "round {round}"
        );
    }
    // A state set whole, then a smaller capacity and the same one again.
    exe.set_state("cache", &tensor(&[16, 4], 7)).unwrap();
    exe.init_state(&n16).unwrap();
    assert!(all_zero(&exe, "cache"));
    exe.init_state(&[("n".to_string(), 8)].into()).unwrap();
    assert_eq!(exe.state("cache").unwrap().shape, vec![8, 4]);
    assert!(all_zero(&exe, "cache"));

    // A recurrent state copied back after a scan.
    let mut exe = executor(&cumsum(0, false, true), 1);
    exe.init_state(&Bindings::new()).unwrap();
    let ins = named(vec![("xs", tensor(&[3, 4], 1))]);
    exe.step(&ins, &Bindings::new()).unwrap();
    assert!(exe
        .state("c0")
        .unwrap()
        .to_f32_vec()
        .iter()
        .any(|v| *v != 0.0));
    exe.init_state(&Bindings::new()).unwrap();
    assert!(all_zero(&exe, "c0"));
}

#[test]
fn executors_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CpuExecutor>();
}

static ADDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

unsafe extern "C" fn add4_counted(args: *const *mut u8, sizes: *const i64, b0: i64, b1: i64) {
    ADDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: as `add4`.
    unsafe { add4(args, sizes, b0, b1) }
}

/// `w + w` (weights only) is computed once, when the executor is created;
/// `x + (w + w)` on every run.
#[test]
fn load_steps_run_once() {
    let add = |g: &mut Graph, a: Value, b: Value| {
        let mut k = Graph::new("add");
        let (x, y) = (
            k.add_input("a", f32t(&["4"])).unwrap(),
            k.add_input("b", f32t(&["4"])).unwrap(),
        );
        let s = k.add(Op::Binary(BinaryOp::Add), &[x, y]).unwrap();
        k.add_output("s", s).unwrap();
        let op = Op::Fused(FusedOp {
            kind: FusionKind::Loop,
            body: Arc::new(k),
        });
        g.add(op, &[a, b]).unwrap()
    };
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32t(&["4"])).unwrap();
    let w = g
        .add(
            Op::Param {
                name: "w".into(),
                ty: f32t(&["4"]),
            },
            &[],
        )
        .unwrap();
    let ww = add(&mut g, w, w);
    let y = add(&mut g, x, ww);
    g.add_output("y", y).unwrap();
    let p = plan(&g).unwrap();
    assert_eq!(
        (p.load_steps.len(), p.steps.len()),
        (1, 1),
        "{}",
        p.describe()
    );
    let fns = p
        .kernels
        .iter()
        .map(|k| (k.name.clone(), add4_counted as CpuKernelFn))
        .collect();
    let t = Arc::new(Table(fns, p.symbols.clone()));
    let params = named(vec![("w", tensor(&[4], 3))]);
    let mut exe = CpuExecutor::new(p, t, &params, &ExecOptions { threads: 1 }).unwrap();
    assert_eq!(ADDS.load(std::sync::atomic::Ordering::SeqCst), 1);
    for k in 0..3 {
        let ins = named(vec![("x", tensor(&[4], k))]);
        let got = exe.run(&ins).unwrap();
        assert_eq!(got["y"], interp_with(&g, &ins, &params)["y"]);
    }
    assert_eq!(ADDS.load(std::sync::atomic::Ordering::SeqCst), 4);
}

fn interp_with(
    g: &Graph,
    ins: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Tensor>,
) -> BTreeMap<String, Tensor> {
    eval_with(g, ins, params, &EvalOptions::default()).unwrap()
}
