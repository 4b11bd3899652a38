//! AR-Net: one step and autoregressive forecasts against hand computations,
//! through the interpreter and through a plain closure; typed errors.

use kiln_ir::interp::{eval, InterpError};
use kiln_ir::Tensor;
use kiln_models::arnet::{self, ArNetConfig, ArNetError, ForecastError};
use std::collections::BTreeMap;

/// w_1 = 0.5, w_2 = -0.25, w_3 = 0.1, b = 0.2.
const W: [f32; 3] = [0.5, -0.25, 0.1];
const B: f32 = 0.2;

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-6, "{a:?} vs {b:?}");
    }
}

#[test]
fn one_step_is_the_weighted_sum_of_the_lags() {
    let g = arnet::build(&ArNetConfig { lags: 3 }).unwrap();
    let w = arnet::weights(&W, B);
    // Rows in time order: [y_{t-3}, y_{t-2}, y_{t-1}].
    let lags = Tensor::f32(vec![2, 3], vec![2.0, 3.0, 4.0, -1.0, 0.0, 10.0]).unwrap();
    let out = eval(&g, &BTreeMap::from([("lags".to_string(), lags)]), &w).unwrap();
    // 0.2 + 0.5·4 - 0.25·3 + 0.1·2 = 1.65 ; 0.2 + 0.5·10 - 0.25·0 + 0.1·(-1) = 5.1
    close(out["forecast"].as_f32().unwrap(), &[1.65, 5.1]);
    assert_eq!(out["forecast"].shape, vec![2]);
}

#[test]
fn autoregressive_forecast_feeds_predictions_back() {
    let g = arnet::build(&ArNetConfig { lags: 3 }).unwrap();
    let w = arnet::weights(&W, B);
    let a: &[f32] = &[9.0, 1.0, 2.0, 3.0, 4.0];
    let b: &[f32] = &[0.0, 0.0, 1.0];
    let got = arnet::forecast_interp(&g, &w, &[a, b], 3, 3).unwrap();
    // Series a: ŷ5 = 1.65, ŷ6 = 0.2 + 0.5·1.65 - 0.25·4 + 0.1·3 = 0.325,
    //           ŷ7 = 0.2 + 0.5·0.325 - 0.25·1.65 + 0.1·4 = 0.35.
    close(&got[0], &[1.65, 0.325, 0.35]);
    // Series b: 0.2 + 0.5 = 0.7; 0.2 + 0.35 - 0.25 = 0.3; 0.2 + 0.15 - 0.175 + 0.1 = 0.275.
    close(&got[1], &[0.7, 0.3, 0.275]);
}

#[test]
fn any_evaluator_works_and_its_errors_propagate() {
    // A plain Rust evaluator of the same model.
    let rust = |lags: &Tensor| -> Result<Tensor, std::fmt::Error> {
        let v = lags.as_f32().unwrap();
        let rows: Vec<f32> = v
            .chunks(3)
            .map(|r| B + W[0] * r[2] + W[1] * r[1] + W[2] * r[0])
            .collect();
        Ok(Tensor::f32(vec![rows.len()], rows).unwrap())
    };
    let got = arnet::forecast(&[&[1.0, 2.0, 3.0, 4.0][..]], 3, 3, rust).unwrap();
    close(&got[0], &[1.65, 0.325, 0.35]);

    let mut calls = 0;
    let failing = |_: &Tensor| -> Result<Tensor, std::fmt::Error> {
        calls += 1;
        if calls == 2 {
            Err(std::fmt::Error)
        } else {
            Ok(Tensor::f32(vec![1], vec![0.0]).unwrap())
        }
    };
    let e = arnet::forecast(&[&[1.0, 2.0, 3.0][..]], 3, 5, failing).unwrap_err();
    assert!(matches!(e, ForecastError::Eval { step: 1, .. }), "{e}");

    let wrong = |_: &Tensor| -> Result<Tensor, std::fmt::Error> {
        Ok(Tensor::f32(vec![2], vec![0.0; 2]).unwrap())
    };
    let e = arnet::forecast(&[&[1.0, 2.0, 3.0][..]], 3, 1, wrong).unwrap_err();
    assert_eq!(
        e.to_string(),
        "step 0: the evaluator returned f32[2], expected f32[1]"
    );
}

#[test]
fn errors_are_typed() {
    let g = arnet::build(&ArNetConfig { lags: 3 }).unwrap();
    let w = arnet::weights(&W, B);
    let e =
        arnet::forecast_interp(&g, &w, &[&[1.0, 2.0, 3.0][..], &[1.0, 2.0][..]], 3, 2).unwrap_err();
    assert_eq!(
        e.to_string(),
        "series 1 has 2 value(s), the model needs at least 3 lags"
    );
    // Coefficients for another lag count: the interpreter's error, by step.
    let e: ForecastError<InterpError> = arnet::forecast_interp(
        &g,
        &arnet::weights(&[1.0, 2.0], 0.0),
        &[&[1.0, 2.0, 3.0][..]],
        3,
        1,
    )
    .unwrap_err();
    assert!(matches!(e, ForecastError::Eval { step: 0, .. }), "{e}");
    let other = kiln_models::lion::build(&kiln_models::lion::tiny_config()).unwrap();
    let e = arnet::forecast_interp(&other, &w, &[&[1.0, 2.0, 3.0][..]], 3, 1).unwrap_err();
    assert!(matches!(e, ForecastError::NotArNet(_)), "{e}");
    assert!(matches!(
        arnet::build(&ArNetConfig { lags: 0 }),
        Err(ArNetError::NoLags)
    ));
}

#[test]
fn builtin_arnet_is_stable() {
    let m = kiln_models::builtin("arnet-tiny").unwrap();
    let g = (m.build)().unwrap();
    let w = (m.weights)(0);
    let coeffs: f32 = w["ar.weight"]
        .as_f32()
        .unwrap()
        .iter()
        .map(|x| x.abs())
        .sum();
    assert!(coeffs < 1.0);
    let history: Vec<f32> = (0..10).map(|i| i as f32).collect();
    let got = arnet::forecast_interp(&g, &w, &[&history], 8, 50).unwrap();
    assert!(got[0].iter().all(|x| x.is_finite() && x.abs() < 100.0));
}
