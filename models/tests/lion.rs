//! LION: the graph against a plain reference (window keys computed in Rust,
//! `sort_by_key`, a loop over groups from a zero state, scatter back), for
//! both operators, with ties and a short last group; permutation
//! equivariance; typed config errors.

use kiln_ir::interp::eval;
use kiln_ir::Tensor;
use kiln_models::lion::{self, LionConfig, LionError, LionOperator};
use std::collections::BTreeMap;

fn cfg(operator: LionOperator) -> LionConfig {
    LionConfig {
        dim: 12,
        num_layers: 4,
        group_size: 4,
        window: 4,
        grid: [10, 9],
        operator,
        norm_eps: 1e-5,
    }
}

// ---- the plain reference -------------------------------------------------

fn key(c: &LionConfig, l: usize, x: i64, y: i64) -> i64 {
    let along_y = l % 2 == 1;
    let shift = if (l / 2) % 2 == 1 {
        c.window as i64 / 2
    } else {
        0
    };
    let w = c.window as i64;
    let windows = |g: usize| (g as i64 - 1 + w / 2) / w + 1;
    let (xs, ys) = (x + shift, y + shift);
    let (wx, lx, wy, ly) = (xs / w, xs % w, ys / w, ys % w);
    if along_y {
        ((wy * windows(c.grid[0]) + wx) * w + ly) * w + lx
    } else {
        ((wx * windows(c.grid[1]) + wy) * w + lx) * w + ly
    }
}

fn mat_vec(w: &[f64], x: &[f64]) -> Vec<f64> {
    let n = x.len();
    (0..w.len() / n)
        .map(|o| (0..n).map(|i| w[o * n + i] * x[i]).sum())
        .collect()
}

fn softplus(x: f64) -> f64 {
    x.exp().ln_1p()
}

/// One group, from a zero state: the operator's outputs per item.
fn run_group(
    c: &LionConfig,
    w: &BTreeMap<String, Vec<f64>>,
    l: usize,
    xs: &[Vec<f64>],
) -> Vec<Vec<f64>> {
    let d = c.dim;
    let p = |s: &str| &w[&format!("layers.{l}.mixer.{s}")];
    match c.operator {
        LionOperator::Mamba { state_size: n } => {
            let mut h = vec![0.0; d * n];
            xs.iter()
                .map(|x| {
                    let u = mat_vec(p("in_proj.weight"), x);
                    let dt: Vec<f64> = mat_vec(p("dt_proj.weight"), x)
                        .iter()
                        .zip(p("dt_proj.bias"))
                        .map(|(a, b)| softplus(a + b))
                        .collect();
                    let bm = mat_vec(p("B_proj.weight"), x);
                    let cm = mat_vec(p("C_proj.weight"), x);
                    (0..d)
                        .map(|ch| {
                            let mut y = 0.0;
                            for s in 0..n {
                                let a = -p("A_log")[ch * n + s].exp();
                                let i = ch * n + s;
                                h[i] = (dt[ch] * a).exp() * h[i] + dt[ch] * u[ch] * bm[s];
                                y += h[i] * cm[s];
                            }
                            y + p("D")[ch] * u[ch]
                        })
                        .collect()
                })
                .collect()
        }
        LionOperator::RetNet { heads } => {
            let dh = d / heads;
            let gammas = lion::retnet_gammas(heads);
            // S[h][i][j]
            let mut s = vec![vec![vec![0.0; dh]; dh]; heads];
            xs.iter()
                .map(|x| {
                    let q = mat_vec(p("q_proj.weight"), x);
                    let k: Vec<f64> = mat_vec(p("k_proj.weight"), x)
                        .iter()
                        .map(|v| v / (dh as f64).sqrt())
                        .collect();
                    let v = mat_vec(p("v_proj.weight"), x);
                    let mut o = vec![0.0; d];
                    for hh in 0..heads {
                        for i in 0..dh {
                            for j in 0..dh {
                                s[hh][i][j] =
                                    gammas[hh] * s[hh][i][j] + k[hh * dh + i] * v[hh * dh + j];
                            }
                        }
                        for j in 0..dh {
                            o[hh * dh + j] = (0..dh).map(|i| q[hh * dh + i] * s[hh][i][j]).sum();
                        }
                    }
                    o
                })
                .collect()
        }
    }
}

fn reference(
    c: &LionConfig,
    weights: &BTreeMap<String, Tensor>,
    feats: &[Vec<f64>],
    coords: &[(i64, i64)],
) -> Vec<Vec<f64>> {
    let w: BTreeMap<String, Vec<f64>> = weights
        .iter()
        .map(|(k, t)| (k.clone(), t.to_f64_vec()))
        .collect();
    let mut x = feats.to_vec();
    for l in 0..c.num_layers {
        let xn: Vec<Vec<f64>> = x
            .iter()
            .map(|v| {
                let ms = v.iter().map(|a| a * a).sum::<f64>() / v.len() as f64;
                let inv = 1.0 / (ms + c.norm_eps).sqrt();
                v.iter()
                    .zip(&w[&format!("layers.{l}.norm.weight")])
                    .map(|(a, g)| a * inv * g)
                    .collect()
            })
            .collect();
        let mut order: Vec<usize> = (0..x.len()).collect();
        order.sort_by_key(|&i| key(c, l, coords[i].0, coords[i].1));
        let mut y = vec![Vec::new(); x.len()];
        for group in order.chunks(c.group_size) {
            let items: Vec<Vec<f64>> = group.iter().map(|&i| xn[i].clone()).collect();
            for (&i, out) in group.iter().zip(run_group(c, &w, l, &items)) {
                y[i] = out;
            }
        }
        let w_out = &w[&format!("layers.{l}.mixer.out_proj.weight")];
        for (xi, yi) in x.iter_mut().zip(&y) {
            for (a, b) in xi.iter_mut().zip(mat_vec(w_out, yi)) {
                *a += b;
            }
        }
    }
    x
}

// ---- the graph ---------------------------------------------------------------

fn inputs(feats: &[Vec<f64>], coords: &[(i64, i64)]) -> BTreeMap<String, Tensor> {
    let n = feats.len();
    let d = feats[0].len();
    let f: Vec<f32> = feats.concat().iter().map(|&v| v as f32).collect();
    let c: Vec<i32> = coords
        .iter()
        .flat_map(|&(x, y)| [x as i32, y as i32])
        .collect();
    BTreeMap::from([
        ("features".to_string(), Tensor::f32(vec![n, d], f).unwrap()),
        ("coords".to_string(), Tensor::i32(vec![n, 2], c).unwrap()),
    ])
}

/// Deterministic features and coordinates; `ties` repeats some coordinates.
fn data(c: &LionConfig, n: usize, ties: bool) -> (Vec<Vec<f64>>, Vec<(i64, i64)>) {
    let feats = (0..n)
        .map(|i| {
            (0..c.dim)
                .map(|j| (((i * 31 + j * 17) % 23) as f64 / 11.0) - 1.0)
                .collect()
        })
        .collect();
    let mut coords: Vec<(i64, i64)> = (0..n)
        .map(|i| {
            (
                ((i * 7 + 3) % c.grid[0]) as i64,
                ((i * 5 + 1) % c.grid[1]) as i64,
            )
        })
        .collect();
    if ties {
        coords[5] = coords[2];
        coords[11] = coords[2];
        coords[n - 1] = coords[0];
    }
    (feats, coords)
}

fn check(c: &LionConfig, n: usize, ties: bool, seed: u64) {
    let g = lion::build(c).unwrap();
    let w = lion::random_weights(c, seed);
    let (feats, coords) = data(c, n, ties);
    let out = eval(&g, &inputs(&feats, &coords), &w).unwrap();
    let got = out["features"].as_f32().unwrap();
    let want = reference(c, &w, &feats, &coords).concat();
    let mut worst = 0.0f64;
    for (a, b) in got.iter().zip(&want) {
        worst = worst.max((*a as f64 - b).abs() / (1.0 + b.abs()));
    }
    assert!(worst <= 1e-5, "{:?}: relative error {worst}", c.operator);
    // The operator matters: the output is not just the input.
    let diff: f64 = got
        .iter()
        .zip(feats.concat())
        .map(|(a, b)| (*a as f64 - b).abs())
        .sum();
    assert!(diff > 1e-2);
}

#[test]
fn mamba_operator_matches_the_reference() {
    check(&cfg(LionOperator::Mamba { state_size: 5 }), 19, false, 1);
    check(&cfg(LionOperator::Mamba { state_size: 3 }), 16, true, 2);
}

#[test]
fn retnet_operator_matches_the_reference() {
    check(&cfg(LionOperator::RetNet { heads: 3 }), 19, true, 3);
    check(&cfg(LionOperator::RetNet { heads: 1 }), 13, false, 4);
}

#[test]
fn groups_of_one_and_one_group_of_everything() {
    let mut c = cfg(LionOperator::RetNet { heads: 2 });
    c.group_size = 1;
    check(&c, 13, true, 5);
    c.group_size = 64;
    c.operator = LionOperator::Mamba { state_size: 2 };
    check(&c, 9, false, 6);
}

#[test]
fn shuffling_the_items_shuffles_the_output() {
    // With distinct coordinates the sort ignores the input order.
    let c = cfg(LionOperator::Mamba { state_size: 4 });
    let g = lion::build(&c).unwrap();
    let w = lion::random_weights(&c, 9);
    let n = 15;
    let feats: Vec<Vec<f64>> = data(&c, n, false).0;
    let coords: Vec<(i64, i64)> = (0..n as i64).map(|i| ((i * 3) % 10, (i * 7) % 9)).collect();
    let perm: Vec<usize> = (0..n).map(|i| (i * 4 + 1) % n).collect();
    let base = eval(&g, &inputs(&feats, &coords), &w).unwrap()["features"].clone();
    let pf: Vec<Vec<f64>> = perm.iter().map(|&i| feats[i].clone()).collect();
    let pc: Vec<(i64, i64)> = perm.iter().map(|&i| coords[i]).collect();
    let shuffled = eval(&g, &inputs(&pf, &pc), &w).unwrap()["features"].clone();
    let (b, s) = (base.as_f32().unwrap(), shuffled.as_f32().unwrap());
    for (row, &i) in perm.iter().enumerate() {
        assert_eq!(
            s[row * c.dim..(row + 1) * c.dim],
            b[i * c.dim..(i + 1) * c.dim]
        );
    }
}

#[test]
fn signature() {
    let g = lion::build(&lion::tiny_config()).unwrap();
    let ins: Vec<String> = g
        .input_names()
        .zip(g.input_types())
        .map(|(n, t)| format!("{n}: {t}"))
        .collect();
    assert_eq!(ins, ["features: f32[n,32]", "coords: i32[n,2]"]);
    assert_eq!(g.outputs().len(), 1);
    assert_eq!(g.output_types()[0].to_string(), "f32[n,32]");
    let text = kiln_ir::text::print(&g);
    assert_eq!(kiln_ir::text::parse(&text).unwrap(), g);
}

#[test]
fn bad_configs_are_typed_errors() {
    let err = |c: LionConfig| {
        let e = lion::build(&c).unwrap_err();
        assert!(matches!(e, LionError::Invalid { .. }));
        e.to_string()
    };
    let mut c = cfg(LionOperator::RetNet { heads: 5 });
    assert_eq!(
        err(c.clone()),
        "lion config: `operator.heads` (5) must be positive and divide dim (12)"
    );
    c.operator = LionOperator::Mamba { state_size: 0 };
    assert_eq!(
        err(c.clone()),
        "lion config: `operator.state_size` must be positive, got 0"
    );
    c.operator = LionOperator::Mamba { state_size: 2 };
    c.window = 3;
    assert_eq!(
        err(c.clone()),
        "lion config: `window` must be even and positive, got 3"
    );
    c.window = 4;
    c.group_size = 0;
    assert_eq!(
        err(c.clone()),
        "lion config: `group_size` must be positive, got 0"
    );
    c.group_size = 4;
    c.grid = [1 << 20, 1 << 20];
    assert!(err(c).contains("more than i32 holds"));
}
