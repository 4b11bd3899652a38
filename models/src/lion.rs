//! A LION-style linear group RNN over items on a 2-D grid (e.g. voxels):
//! each layer sorts the items by a window key, runs a linear RNN over
//! consecutive groups of `group_size` sorted items, and scatters the results
//! back to the original order.
//!
//! # Ordering
//!
//! Layer `l` sorts along x when `l` is even and along y when odd; the windows
//! (`window × window` cells) are shifted by `window/2` on the second pair of
//! layers and every other pair after it (`shift = window/2` when `(l/2)` is
//! odd), so layers 0–3 see x, y, x-shifted, y-shifted. With `x' = x + shift`,
//! `wx = x' / window`, `lx = x' % window` (same for y), the key along x is
//! `((wx·nwy + wy)·window + lx)·window + ly` — windows in x-major order,
//! items inside a window x-major — and symmetrically along y. Ties keep the
//! input order (a stable sort). Coordinates must lie in `0..grid`.
//!
//! Sorted positions `0..G`, `G..2G`, … form the groups (the last may be
//! shorter); the recurrence restarts from a zero state at each group start.
//!
//! # The data-dependent sort with existing ops, and its cost
//!
//! `rank_i = #{j : key_j < key_i or (key_j = key_i and j < i)}` is a
//! compare of every pair plus a row sum, and the permutation is its inverse,
//! `perm_p = Σ_i i·[rank_i = p]`; items are sorted with `gather(x, perm)` and
//! scattered back with `gather(y, rank)`. Each layer costs O(n²) compares and
//! adds for the ranks and the inverse (fine for tests and small tiles; a
//! sort kernel would replace it), O(n·dim) for the gathers, and a scan of
//! n sequential steps of O(dim·state) (Mamba) or O(dim²/heads) (RetNet)
//! each. The scan is one sequence with a reset, so any n works.
//!
//! # Operators
//!
//! - **Mamba** (diagonal selective state `[dim, N]`): `u = W_in x`,
//!   `dt = softplus(W_dt x + b)`, `B = W_B x`, `C = W_C x`, `A = -exp(A_log)`,
//!   `h' = keep·exp(dt·A)·h + (dt·u)·Bᵀ`, `y = h'·C + D·u`.
//! - **RetNet** (matrix state per head `[dh, dh]`): `q, k, v` projections
//!   (`k` scaled by `dh^-½`), `S_t = keep·γ_h·S_{t-1} + k_tᵀ v_t`,
//!   `o_t = q_t S_t`, with RetNet's decays `γ_h = 1 - 2^(-5-h)`.
//!
//! (`keep` is 0 at a group start, else 1.) Each layer is pre-norm residual:
//! `x + W_out · scatter(op(sort(rms_norm(x))))`.
//!
//! # Signature
//!
//! Inputs `features: f32[n, dim]`, `coords: i32[n, 2]` (x, y); output
//! `features: f32[n, dim]`; no explicit sizes, no state.

use crate::layers::{linear, param};
use kiln_ir::dsl::{BuildError, ModelBuilder, Var};
use kiln_ir::{shape, DType, Graph, Literal, Tensor};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// The linear RNN run over each group.
#[derive(Clone, Debug, PartialEq)]
pub enum LionOperator {
    /// Mamba-style diagonal selective state of `state_size` per channel.
    Mamba { state_size: usize },
    /// RetNet retention with `heads` heads (each `dim/heads` wide).
    RetNet { heads: usize },
}

/// Sizes of a LION stack.
#[derive(Clone, Debug, PartialEq)]
pub struct LionConfig {
    pub dim: usize,
    pub num_layers: usize,
    pub group_size: usize,
    /// Window side in grid cells; even, so windows shift by exactly half.
    pub window: usize,
    /// Coordinate extents: `0 <= x < grid[0]`, `0 <= y < grid[1]`.
    pub grid: [usize; 2],
    pub operator: LionOperator,
    pub norm_eps: f64,
}

/// Why a LION config cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum LionError {
    #[error("lion config: `{field}` {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("building the lion graph: {0}")]
    Build(#[from] BuildError),
}

impl LionConfig {
    /// Windows along each axis once shifted by up to `window/2`.
    pub fn windows(&self) -> [usize; 2] {
        self.grid
            .map(|g| (g.max(1) - 1 + self.window / 2) / self.window + 1)
    }

    /// Layer `l`'s sort axis (0 = x, 1 = y) and window shift.
    pub fn layer_order(&self, l: usize) -> (usize, usize) {
        (l % 2, if (l / 2) % 2 == 1 { self.window / 2 } else { 0 })
    }

    pub fn validate(&self) -> Result<(), LionError> {
        let invalid = |field, problem: String| Err(LionError::Invalid { field, problem });
        for (field, v) in [
            ("dim", self.dim),
            ("group_size", self.group_size),
            ("grid[0]", self.grid[0]),
            ("grid[1]", self.grid[1]),
        ] {
            if v == 0 {
                return invalid(field, "must be positive, got 0".into());
            }
        }
        if self.window == 0 || !self.window.is_multiple_of(2) {
            return invalid(
                "window",
                format!("must be even and positive, got {}", self.window),
            );
        }
        let [nx, ny] = self.windows();
        let keys = (nx as u128) * (ny as u128) * (self.window as u128).pow(2);
        if keys > i32::MAX as u128 {
            return invalid(
                "grid",
                format!(
                    "{:?} with window {} gives {keys} sort keys, more than i32 holds",
                    self.grid, self.window
                ),
            );
        }
        match self.operator {
            LionOperator::Mamba { state_size: 0 } => {
                invalid("operator.state_size", "must be positive, got 0".into())
            }
            LionOperator::RetNet { heads } if heads == 0 || !self.dim.is_multiple_of(heads) => {
                invalid(
                    "operator.heads",
                    format!("({heads}) must be positive and divide dim ({})", self.dim),
                )
            }
            _ => Ok(()),
        }
    }

    /// Every weight with its shape.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let d = self.dim;
        let mut out = Vec::new();
        for l in 0..self.num_layers {
            let p = |s: &str| format!("layers.{l}.{s}");
            out.push((p("norm.weight"), vec![d]));
            match self.operator {
                LionOperator::Mamba { state_size: n } => {
                    out.push((p("mixer.in_proj.weight"), vec![d, d]));
                    out.push((p("mixer.dt_proj.weight"), vec![d, d]));
                    out.push((p("mixer.dt_proj.bias"), vec![d]));
                    out.push((p("mixer.B_proj.weight"), vec![n, d]));
                    out.push((p("mixer.C_proj.weight"), vec![n, d]));
                    out.push((p("mixer.A_log"), vec![d, n]));
                    out.push((p("mixer.D"), vec![d]));
                }
                LionOperator::RetNet { .. } => {
                    for n in ["q_proj", "k_proj", "v_proj"] {
                        out.push((p(&format!("mixer.{n}.weight")), vec![d, d]));
                    }
                }
            }
            out.push((p("mixer.out_proj.weight"), vec![d, d]));
        }
        out
    }
}

/// RetNet's per-head decays `γ_h = 1 - 2^(-5-h)`.
pub fn retnet_gammas(heads: usize) -> Vec<f64> {
    (0..heads).map(|h| 1.0 - 2f64.powi(-5 - h as i32)).collect()
}

/// Each item's sort key for layer `l` (see the module docs), `i32[n]`.
fn window_keys(cfg: &LionConfig, coords: &Var, l: usize) -> Var {
    let (axis, shift) = cfg.layer_order(l);
    let w = cfg.window as f64;
    let [nx, ny] = cfg.windows();
    let split = |a: usize| {
        let c = coords.slice(1, a, a + 1).reshape(shape!["n"]) + shift as f64;
        let win = &c / w;
        let local = &c - &(&win * w);
        (win, local)
    };
    let ((wx, lx), (wy, ly)) = (split(0), split(1));
    let (wa, wb, nb, la, lb) = if axis == 0 {
        (wx, wy, ny, lx, ly)
    } else {
        (wy, wx, nx, ly, lx)
    };
    ((wa * nb as f64 + wb) * w + la) * w + lb
}

/// `(rank, perm)`: each item's position in the stable sort by `keys`, and
/// the item at each sorted position (the inverse permutation). O(n²).
fn sort_by_keys(b: &ModelBuilder, keys: &Var) -> (Var, Var) {
    let ki = keys.reshape(shape!["n", 1]);
    let kj = keys.reshape(shape![1, "n"]);
    let i = b.iota(DType::I32, shape!["n", 1], 0);
    let j = b.iota(DType::I32, shape![1, "n"], 1);
    let before = kj.lt(&ki).or(&kj.eq(&ki).and(&j.lt(&i)));
    let rank = before.cast(DType::I32).sum(&[1], false);
    // perm[p] = Σ_i i·[rank_i = p]   (rows p, columns i)
    let hits = rank.reshape(shape![1, "n"]).eq(&i).cast(DType::I32);
    let perm = (hits * j).sum(&[1], false);
    (rank, perm)
}

/// `keep[p] = 0` where sorted position `p` starts a group, else 1 (`f32[n]`).
fn group_keep(b: &ModelBuilder, group: usize) -> Var {
    let p = b.iota(DType::I32, shape!["n"], 0);
    let g = group as f64;
    let offset = &p - &(&(&p / g) * g);
    let zero = b.scalar(DType::I32, 0.0);
    offset.ne(&zero).cast(DType::F32)
}

/// The Mamba-style operator on sorted items `x: [n, dim]`.
fn mamba_op(b: &ModelBuilder, cfg: &LionConfig, l: usize, x: &Var, keep: &Var, n: usize) -> Var {
    let d = cfg.dim;
    let p = |s: &str, dims: &[usize]| param(b, &format!("layers.{l}.mixer.{s}"), dims);
    let u = linear(x, &p("in_proj.weight", &[d, d]), None);
    let dt = linear(
        x,
        &p("dt_proj.weight", &[d, d]),
        Some(&p("dt_proj.bias", &[d])),
    )
    .softplus();
    let bm = linear(x, &p("B_proj.weight", &[n, d]), None);
    let cm = linear(x, &p("C_proj.weight", &[n, d]), None);
    let a = -p("A_log", &[d, n]).exp();
    let h0 = b.constant(Literal::filled(DType::F32, vec![d, n], 0.0));
    let (_, mut ys) = b.scan(
        &[&h0],
        &[&dt, &u, &bm, &cm, keep],
        &[&a],
        0,
        false,
        |_, c, xs, k| {
            let (h, dt, u, bm, cm, keep, a) =
                (&c[0], &xs[0], &xs[1], &xs[2], &xs[3], &xs[4], &k[0]);
            let decay = (dt.reshape(shape![d, 1]) * a).exp() * keep;
            let h = decay * h + (dt * u).reshape(shape![d, 1]) * bm.reshape(shape![1, n]);
            let y = (&h * &cm.reshape(shape![1, n])).sum(&[-1], false);
            (vec![h], vec![y])
        },
    );
    ys.remove(0) + u * p("D", &[d])
}

/// The RetNet operator on sorted items `x: [n, dim]`.
fn retnet_op(
    b: &ModelBuilder,
    cfg: &LionConfig,
    l: usize,
    x: &Var,
    keep: &Var,
    heads: usize,
) -> Var {
    let d = cfg.dim;
    let dh = d / heads;
    let p = |s: &str| param(b, &format!("layers.{l}.mixer.{s}.weight"), &[d, d]);
    let split = |t: Var| t.reshape(shape!["n", heads, dh]);
    let q = split(linear(x, &p("q_proj"), None));
    let k = split(linear(x, &p("k_proj"), None) * (1.0 / (dh as f64).sqrt()));
    let v = split(linear(x, &p("v_proj"), None));
    let gammas = b.constant(Literal::floats(
        DType::F32,
        vec![heads, 1, 1],
        &retnet_gammas(heads),
    ));
    let s0 = b.constant(Literal::filled(DType::F32, vec![heads, dh, dh], 0.0));
    let (_, mut ys) = b.scan(
        &[&s0],
        &[&q, &k, &v, keep],
        &[&gammas],
        0,
        false,
        |_, c, xs, inv| {
            let (s, q, k, v, keep, gamma) = (&c[0], &xs[0], &xs[1], &xs[2], &xs[3], &inv[0]);
            let outer = k.reshape(shape![heads, dh, 1]) * v.reshape(shape![heads, 1, dh]);
            let s = gamma * keep * s + outer;
            // o_h = q_h S_h
            let o = q
                .reshape(shape![heads, 1, dh])
                .matmul(&s)
                .reshape(shape![d]);
            (vec![s], vec![o])
        },
    );
    ys.remove(0)
}

/// The LION stack (see the module docs for the signature).
pub fn build(cfg: &LionConfig) -> Result<Graph, LionError> {
    cfg.validate()?;
    let b = ModelBuilder::new("lion");
    let d = cfg.dim;
    let mut x = b.input("features", DType::F32, shape!["n", d]);
    let coords = b.input("coords", DType::I32, shape!["n", 2]);
    let keep = group_keep(&b, cfg.group_size);
    for l in 0..cfg.num_layers {
        let _layer = b.scope(format!("layers.{l}"));
        let xn = x.rms_norm(
            &param(&b, &format!("layers.{l}.norm.weight"), &[d]),
            cfg.norm_eps,
        );
        let keys = window_keys(cfg, &coords, l);
        let (rank, perm) = sort_by_keys(&b, &keys);
        let sorted = xn.gather(&perm, 0);
        let y_sorted = match cfg.operator {
            LionOperator::Mamba { state_size } => mamba_op(&b, cfg, l, &sorted, &keep, state_size),
            LionOperator::RetNet { heads } => retnet_op(&b, cfg, l, &sorted, &keep, heads),
        };
        let y = y_sorted.gather(&rank, 0);
        let w_out = param(&b, &format!("layers.{l}.mixer.out_proj.weight"), &[d, d]);
        x = x + linear(&y, &w_out, None);
    }
    b.output("features", &x);
    Ok(b.finish()?)
}

/// Deterministic random weights: projections uniform in ±1/sqrt(fan_in),
/// `A_log[c, s] = ln(s+1)`, `dt_proj.bias` around softplus⁻¹(0.1), `D` and
/// norm gains 1 ± 0.1.
pub fn random_weights(cfg: &LionConfig, seed: u64) -> BTreeMap<String, Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    cfg.param_shapes()
        .into_iter()
        .map(|(name, dims)| {
            let count: usize = dims.iter().product();
            let mut uniform = |center: f32, bound: f32| -> Vec<f32> {
                (0..count)
                    .map(|_| center + rng.random_range(-bound..bound))
                    .collect()
            };
            let data = if name.ends_with("A_log") {
                (0..count)
                    .map(|i| ((i % dims[1]) as f32 + 1.0).ln())
                    .collect()
            } else if name.ends_with("dt_proj.bias") {
                // softplus⁻¹(0.1) = ln(e^0.1 - 1) ≈ -2.25
                uniform(-2.25, 0.5)
            } else if name.ends_with(".D") || name.ends_with("norm.weight") {
                uniform(1.0, 0.1)
            } else {
                uniform(0.0, 1.0 / (dims[1] as f32).sqrt())
            };
            let t = Tensor::f32(dims, data).expect("data sized from the shape");
            (name, t)
        })
        .collect()
}

/// The built-in `lion-tiny`: 4 Mamba-style layers of width 32 over a 32×32 grid.
pub fn tiny_config() -> LionConfig {
    LionConfig {
        dim: 32,
        num_layers: 4,
        group_size: 8,
        window: 8,
        grid: [32, 32],
        operator: LionOperator::Mamba { state_size: 8 },
        norm_eps: 1e-5,
    }
}

impl From<LionError> for BuildError {
    /// For the model registry, whose builders report [`BuildError`]s.
    fn from(e: LionError) -> BuildError {
        match e {
            LionError::Build(b) => b,
            other => BuildError {
                message: other.to_string(),
                caller: "kiln_models::lion::build".into(),
                scope: None,
            },
        }
    }
}
