//! AR-Net: an autoregressive forecaster that is one linear layer over the
//! last `p` values, `ŷ_t = b + Σ_{i=1..p} w_i·y_{t-i}`.
//!
//! # Signature
//!
//! Input `lags: f32[batch, p]`, each row the last `p` values of a series in
//! time order (column `p-1` is the newest, `y_{t-1}`); output
//! `forecast: f32[batch]`. Parameters `ar.weight: [1, p]` (a linear layer's
//! `[out, in]`, so `ar.weight[0, p-i] = w_i`) and `ar.bias: [1]`.
//!
//! [`forecast`] runs the one-step graph autoregressively (each forecast
//! becomes the newest lag of the next step) with any evaluator;
//! [`forecast_interp`] uses the reference interpreter.

use crate::layers::{linear, param};
use kiln_ir::dsl::{BuildError, ModelBuilder};
use kiln_ir::interp::{eval, InterpError, ParamSource};
use kiln_ir::{shape, DType, Graph, Tensor};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// The number of lags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArNetConfig {
    pub lags: usize,
}

/// Why an AR-Net graph cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ArNetError {
    #[error("ar-net config: `lags` must be positive, got 0")]
    NoLags,
    #[error("building the ar-net graph: {0}")]
    Build(#[from] BuildError),
}

/// Why a forecast failed; `E` is the evaluator's error.
#[derive(Debug, thiserror::Error)]
pub enum ForecastError<E: std::error::Error + 'static> {
    #[error("series {series} has {len} value(s), the model needs at least {lags} lags")]
    TooShort {
        series: usize,
        len: usize,
        lags: usize,
    },
    #[error("step {step}: the evaluator failed: {source}")]
    Eval {
        step: usize,
        #[source]
        source: E,
    },
    #[error("the graph is not an AR-Net step: {0}")]
    NotArNet(String),
    #[error("step {step}: the evaluator returned {got}, expected f32[{batch}]")]
    BadOutput {
        step: usize,
        got: String,
        batch: usize,
    },
}

/// The one-step graph (see the module docs).
pub fn build(cfg: &ArNetConfig) -> Result<Graph, ArNetError> {
    if cfg.lags == 0 {
        return Err(ArNetError::NoLags);
    }
    let b = ModelBuilder::new("arnet");
    let lags = b.input("lags", DType::F32, shape!["batch", cfg.lags]);
    let w = param(&b, "ar.weight", &[1, cfg.lags]);
    let bias = param(&b, "ar.bias", &[1]);
    let y = linear(&lags, &w, Some(&bias)).reshape(shape!["batch"]);
    b.output("forecast", &y);
    Ok(b.finish()?)
}

/// The parameters for coefficients `w = [w_1, …, w_p]` (`w_i` multiplies
/// `y_{t-i}`) and bias `b`.
pub fn weights(coefficients: &[f32], bias: f32) -> BTreeMap<String, Tensor> {
    let p = coefficients.len();
    let row: Vec<f32> = coefficients.iter().rev().copied().collect();
    BTreeMap::from([
        (
            "ar.weight".to_string(),
            Tensor::f32(vec![1, p], row).expect("one row of p"),
        ),
        (
            "ar.bias".to_string(),
            Tensor::f32(vec![1], vec![bias]).expect("one value"),
        ),
    ])
}

/// Deterministic random coefficients, uniform in ±1/p (a stable process:
/// Σ|w_i| < 1), and a bias in ±0.1.
pub fn random_weights(cfg: &ArNetConfig, seed: u64) -> BTreeMap<String, Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let bound = 1.0 / cfg.lags.max(1) as f32;
    let w: Vec<f32> = (0..cfg.lags)
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    weights(&w, rng.random_range(-0.1..0.1))
}

/// Forecasts `horizon` steps of every series in `histories` at once (a
/// batch), feeding each forecast back as the newest lag. `step` evaluates
/// the one-step graph: it gets `lags: f32[batch, p]` and returns
/// `forecast: f32[batch]`. Returns one `horizon`-long forecast per series.
pub fn forecast<E, F>(
    histories: &[&[f32]],
    lags: usize,
    horizon: usize,
    mut step: F,
) -> Result<Vec<Vec<f32>>, ForecastError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut(&Tensor) -> Result<Tensor, E>,
{
    let batch = histories.len();
    let mut windows: Vec<Vec<f32>> = Vec::with_capacity(batch);
    for (series, h) in histories.iter().enumerate() {
        if h.len() < lags {
            return Err(ForecastError::TooShort {
                series,
                len: h.len(),
                lags,
            });
        }
        windows.push(h[h.len() - lags..].to_vec());
    }
    let mut out = vec![Vec::with_capacity(horizon); batch];
    for t in 0..horizon {
        let input = Tensor::f32(vec![batch, lags], windows.concat()).expect("batch rows of p");
        let y = step(&input).map_err(|source| ForecastError::Eval { step: t, source })?;
        let values = match y.as_f32() {
            Some(v) if y.shape == [batch] => v,
            _ => {
                return Err(ForecastError::BadOutput {
                    step: t,
                    got: format!("{}{:?}", y.dtype(), y.shape),
                    batch,
                })
            }
        };
        for ((w, o), &v) in windows.iter_mut().zip(&mut out).zip(values) {
            if lags > 0 {
                w.remove(0);
                w.push(v);
            }
            o.push(v);
        }
    }
    Ok(out)
}

/// [`forecast`] with the reference interpreter on `graph` (from [`build`]).
pub fn forecast_interp(
    graph: &Graph,
    params: &dyn ParamSource,
    histories: &[&[f32]],
    lags: usize,
    horizon: usize,
) -> Result<Vec<Vec<f32>>, ForecastError<InterpError>> {
    if graph.input("lags").is_none() || graph.output("forecast").is_none() {
        return Err(ForecastError::NotArNet(format!(
            "`{}` lacks the input `lags` or the output `forecast`",
            graph.name
        )));
    }
    forecast(histories, lags, horizon, |input| {
        let inputs = BTreeMap::from([("lags".to_string(), input.clone())]);
        let out = eval(graph, &inputs, params)?;
        Ok(out
            .into_iter()
            .find(|(k, _)| k == "forecast")
            .map(|(_, v)| v)
            .unwrap_or_else(|| Tensor::zeros(DType::F32, vec![0])))
    })
}

impl From<ArNetError> for BuildError {
    /// For the model registry, whose builders report [`BuildError`]s.
    fn from(e: ArNetError) -> BuildError {
        match e {
            ArNetError::Build(b) => b,
            other => BuildError {
                message: other.to_string(),
                caller: "kiln_models::arnet::build".into(),
                scope: None,
            },
        }
    }
}
