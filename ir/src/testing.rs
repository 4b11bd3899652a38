//! Random *valid* graphs for property tests (feature `testing`, or in this
//! crate's own tests).
//!
//! Graphs are built through [`Graph::add_input`] / [`Graph::add_node`], so
//! they type-check by construction (an op that fails its type rule is simply
//! left out), and every graph passes [`crate::verify()`]. Over many cases they
//! cover every op kind of [`crate::op`]: all unary, binary and compare ops,
//! `select`, `cast`, every reduction, `reshape`, `permute`, `broadcast`,
//! `slice` (also with symbolic bounds such as `past..past+seq`), `concat`,
//! `pad`, `gather`, `iota`, `matmul` (with batch broadcasting), constants of
//! every dtype (with `inf`, `-inf`, `nan`, NaNs with a payload and `-0.0`),
//! parameters, inputs with symbolic dims (`seq`, `past`, `past+seq`),
//! multi-result `scan` with a body, `fused` loop and row kernels (whose bodies
//! satisfy [`crate::kernel::check_fused`]), locations with odd characters,
//! and outputs that alias inputs.
//!
//! Every choice is read from an [`Entropy`] stream, a vector of `u32`s that
//! proptest generates and shrinks: a shorter or smaller vector gives a smaller,
//! simpler graph, so failures shrink well. The same functions work without
//! proptest (seed a vector any way you like and call [`graph_from_entropy`]).
//!
//! ```
//! use kiln_ir::testing::{arb_graph, GraphConfig};
//! use proptest::prelude::*;
//! use proptest::test_runner::TestRunner;
//!
//! let mut runner = TestRunner::deterministic();
//! runner
//!     .run(&arb_graph(), |g| {
//!         kiln_ir::verify(&g).unwrap();
//!         Ok(())
//!     })
//!     .unwrap();
//! // Interpreter-friendly graphs: static shapes, no bodies.
//! let _simple = kiln_ir::testing::arb_graph_with(GraphConfig {
//!     symbolic: false,
//!     scan: false,
//!     fused: false,
//!     ..GraphConfig::default()
//! });
//! ```
//!
//! Symbols used: `seq` and `past` (dims `seq`, `past`, `past+seq`, `2*seq`).
//! Binding each to at least 1 gives every dim a non-negative size (some
//! slices end at `seq-1`). Gather indices are not range-checked.

mod ops;

use crate::graph::{Graph, Value};
use crate::literal::Literal;
use crate::types::{DType, Shape, TensorType};
use crate::Dim;
use proptest::prelude::*;

/// A stream of choices read from a slice of numbers. Reading past the end
/// gives zeros, which every generator treats as the simplest choice.
#[derive(Clone, Debug)]
pub struct Entropy<'a> {
    data: &'a [u32],
    pos: usize,
}

impl<'a> Entropy<'a> {
    pub fn new(data: &'a [u32]) -> Self {
        Entropy { data, pos: 0 }
    }

    /// The next number (0 once the data is used up).
    pub fn next_u32(&mut self) -> u32 {
        let v = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            self.pos += 1;
            return 0;
        }
        self.next_u32() as usize % n
    }

    /// True with probability `num/den` (false once the data is used up).
    pub fn chance(&mut self, num: u32, den: u32) -> bool {
        let v = self.next_u32();
        den > 0 && v != 0 && v % den < num
    }

    /// One of `items` (None when it is empty).
    pub fn choose<'b, T>(&mut self, items: &'b [T]) -> Option<&'b T> {
        let i = self.below(items.len());
        items.get(i)
    }

    /// True once every number has been read.
    pub fn is_exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// What random graphs may contain.
#[derive(Clone, Debug)]
pub struct GraphConfig {
    /// At most this many graph inputs (at least one).
    pub max_inputs: usize,
    /// At most this many ops tried at the top level (each adds one to three nodes).
    pub max_ops: usize,
    /// At most this many ops tried inside a body.
    pub max_body_ops: usize,
    /// Deepest nesting of bodies (0: no scan or fused).
    pub max_depth: usize,
    /// Symbolic dims (`seq`, `past`, `past+seq`) in input and other types.
    pub symbolic: bool,
    /// `param` nodes (top level only; bodies never hold parameters).
    pub params: bool,
    pub scan: bool,
    pub fused: bool,
    /// Source locations on some nodes.
    pub locs: bool,
    /// Outputs that alias an input of the same type.
    pub aliases: bool,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            max_inputs: 3,
            max_ops: 16,
            max_body_ops: 5,
            max_depth: 2,
            symbolic: true,
            params: true,
            scan: true,
            fused: true,
            locs: true,
            aliases: true,
        }
    }
}

impl GraphConfig {
    /// How many numbers of entropy a graph of this config uses at most, roughly.
    pub fn entropy_len(&self) -> usize {
        64 + 24 * self.max_ops * (1 + self.max_depth.min(2) * self.max_body_ops / 2)
    }
}

/// A deterministic proptest config: `cases` cases (or `PROPTEST_CASES`), a
/// fixed seed (or `PROPTEST_RNG_SEED`), and no failure files written into
/// the source tree. Use it so that test runs are reproducible:
/// `#![proptest_config(kiln_ir::testing::config(256))]`.
pub fn config(cases: u32) -> proptest::test_runner::Config {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    proptest::test_runner::Config {
        cases: env("PROPTEST_CASES").map_or(cases, |c| c as u32),
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            env("PROPTEST_RNG_SEED").unwrap_or(0x6b69_6c6e),
        ),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// Random verified graphs with the default [`GraphConfig`].
pub fn arb_graph() -> impl Strategy<Value = Graph> {
    arb_graph_with(GraphConfig::default())
}

/// Random verified graphs with the given config.
pub fn arb_graph_with(cfg: GraphConfig) -> impl Strategy<Value = Graph> {
    let len = cfg.entropy_len();
    prop::collection::vec(any::<u32>(), 0..len).prop_map(move |e| graph_from_entropy(&e, &cfg))
}

/// The graph that `entropy` describes under `cfg` (deterministic).
pub fn graph_from_entropy(entropy: &[u32], cfg: &GraphConfig) -> Graph {
    let mut e = Entropy::new(entropy);
    ops::top_graph(&mut e, cfg)
}

/// Random dtypes, `f32` most often.
pub fn arb_dtype() -> impl Strategy<Value = DType> {
    any::<u32>().prop_map(|v| dtype(&mut Entropy::new(&[v])))
}

/// Random dims: small constants, and with `symbolic` also `seq`, `past`,
/// `past+seq`, `2*seq`.
pub fn arb_dim(symbolic: bool) -> impl Strategy<Value = Dim> {
    any::<u32>().prop_map(move |v| dim(&mut Entropy::new(&[v]), symbolic))
}

/// Random shapes of rank `0..=max_rank`.
pub fn arb_shape(max_rank: usize, symbolic: bool) -> impl Strategy<Value = Shape> {
    prop::collection::vec(any::<u32>(), 0..=max_rank + 1)
        .prop_map(move |v| shape(&mut Entropy::new(&v), max_rank, symbolic))
}

/// Random tensor types of rank up to 3.
pub fn arb_tensor_type(symbolic: bool) -> impl Strategy<Value = TensorType> {
    prop::collection::vec(any::<u32>(), 0..6)
        .prop_map(move |v| tensor_type(&mut Entropy::new(&v), symbolic))
}

/// Random constants of every dtype, rank up to 2, with special values.
pub fn arb_literal() -> impl Strategy<Value = Literal> {
    prop::collection::vec(any::<u32>(), 0..24).prop_map(|v| {
        let mut e = Entropy::new(&v);
        let dt = dtype(&mut e);
        let rank = e.below(3);
        let shape: Vec<usize> = (0..rank).map(|_| e.below(4)).collect();
        literal(&mut e, dt, shape)
    })
}

/// A dtype, `f32` most often.
pub fn dtype(e: &mut Entropy) -> DType {
    const WEIGHTED: [DType; 11] = [
        DType::F32,
        DType::F32,
        DType::F32,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::I8,
        DType::Bool,
    ];
    WEIGHTED[e.below(WEIGHTED.len())]
}

/// A dim from the pool (see [`arb_dim`]).
pub fn dim(e: &mut Entropy, symbolic: bool) -> Dim {
    let consts = [1, 2, 3, 4, 1, 2];
    let n = if symbolic {
        consts.len() + 4
    } else {
        consts.len()
    };
    match e.below(n) {
        i if i < consts.len() => Dim::constant(consts[i]),
        6 => Dim::sym("seq"),
        7 => Dim::sym("past"),
        8 => &Dim::sym("past") + &Dim::sym("seq"),
        _ => Dim::sym("seq").scale(2),
    }
}

/// A shape of rank `0..=max_rank` from the dim pool.
pub fn shape(e: &mut Entropy, max_rank: usize, symbolic: bool) -> Shape {
    let rank = e.below(max_rank + 1);
    (0..rank).map(|_| dim(e, symbolic)).collect()
}

/// A tensor type of rank up to 3.
pub fn tensor_type(e: &mut Entropy, symbolic: bool) -> TensorType {
    let dt = dtype(e);
    TensorType::new(dt, shape(e, 3, symbolic))
}

/// Float values that stress printing and parsing.
const FLOATS: [f64; 16] = [
    0.0,
    -0.0,
    1.0,
    -2.5,
    0.1,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
    1e-30,
    3.4e38,
    65504.0,
    1.0e-45,
    123456.789,
    -7.25,
    1e300,
    -1e-310,
];

/// A float: a special value, a NaN with a payload, or random bits.
pub fn float_value(e: &mut Entropy) -> f64 {
    match e.below(FLOATS.len() + 4) {
        i if i < FLOATS.len() => FLOATS[i],
        16 => f64::from_bits(0x7ff8_0000_0000_0001),
        17 => -f64::NAN,
        18 => f64::from(f32::from_bits(e.next_u32())),
        _ => f64::from_bits((u64::from(e.next_u32()) << 32) | u64::from(e.next_u32())),
    }
}

/// A constant of `dtype` and `shape` (values rounded or wrapped to the dtype).
pub fn literal(e: &mut Entropy, dtype: DType, shape: Vec<usize>) -> Literal {
    const INTS: [i64; 11] = [
        0,
        1,
        -1,
        2,
        127,
        -128,
        255,
        i32::MAX as i64,
        i32::MIN as i64,
        i64::MAX,
        i64::MIN,
    ];
    let n: usize = shape.iter().product();
    if dtype.is_float() {
        let v: Vec<f64> = (0..n).map(|_| float_value(e)).collect();
        Literal::floats(dtype, shape, &v)
    } else if dtype == DType::Bool {
        let mut lit = Literal::filled(dtype, shape, 0.0);
        if let crate::literal::LiteralData::Bool(b) = &mut lit.data {
            b.iter_mut().for_each(|x| *x = e.chance(1, 2));
        }
        lit
    } else {
        let v: Vec<i64> = (0..n)
            .map(|_| match e.below(INTS.len() + 1) {
                i if i < INTS.len() => INTS[i],
                _ => i64::from(e.next_u32() as i32),
            })
            .collect();
        Literal::ints(dtype, shape, &v)
    }
}

/// Every op name of a graph and of its bodies, with repetition.
pub fn op_names(g: &Graph) -> Vec<&'static str> {
    let mut out = Vec::new();
    for n in g.node_ids() {
        let op = &g.node(n).op;
        out.push(op.name());
        if let Some(b) = op.body() {
            out.extend(op_names(b));
        }
    }
    out
}

/// The values of a graph, every result of every node.
pub fn all_values(g: &Graph) -> Vec<Value> {
    g.topo_order()
        .into_iter()
        .flat_map(|n| (0..g.node(n).outputs.len() as u32).map(move |p| Value::new(n, p)))
        .collect()
}
