//! Write a model in the DSL, compile it in-process, run it, check it.
//!
//! ```sh
//! cargo run --release --example custom_model
//! ```
//!
//! The model is one pre-norm transformer block with a gated MLP over a
//! symbolic sequence length: one compiled executable serves every length.

use kiln::ir::dsl::ModelBuilder;
use kiln::ir::{interp, shape, tensor::rel_l2, DType, Graph, Tensor};
use std::collections::BTreeMap;

const HIDDEN: usize = 32;
const FFN: usize = 64;

fn build() -> Result<Graph, kiln::ir::dsl::BuildError> {
    let b = ModelBuilder::new("block");
    let x = b.input("x", DType::F32, shape!["seq", HIDDEN]);
    let w = |name: &str, rows: usize, cols: usize| b.param(name, DType::F32, shape![rows, cols]);
    let norm = b.param("norm", DType::F32, shape![HIDDEN]);

    let h = x.rms_norm(&norm, 1e-6);
    let scores = h
        .matmul(&w("wq", HIDDEN, HIDDEN))
        .matmul(&h.matmul(&w("wk", HIDDEN, HIDDEN)).transpose(0, 1))
        * (1.0 / (HIDDEN as f64).sqrt());
    let row = b.iota(DType::I32, shape!["seq", 1], 0);
    let col = b.iota(DType::I32, shape![1, "seq"], 1);
    let attn = col
        .le(&row)
        .select_scalar(&scores, f64::NEG_INFINITY)
        .softmax(-1);
    let x = &x + &attn.matmul(&h.matmul(&w("wv", HIDDEN, HIDDEN)));

    let h = x.rms_norm(&norm, 1e-6);
    let mlp = (h.matmul(&w("gate", HIDDEN, FFN)).silu() * h.matmul(&w("up", HIDDEN, FFN)))
        .matmul(&w("down", FFN, HIDDEN));
    b.output("y", &(x + mlp));
    b.finish()
}

/// Deterministic weights without a random-number crate: a simple LCG.
fn weights(graph: &Graph) -> BTreeMap<String, Tensor> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4
    };
    graph
        .params()
        .into_iter()
        .map(|(name, ty)| {
            let dims: Vec<usize> = ty
                .shape
                .iter()
                .map(|d| d.as_const().unwrap() as usize)
                .collect();
            let n = dims.iter().product();
            let data = if name == "norm" {
                vec![1.0; n]
            } else {
                (0..n).map(|_| next()).collect()
            };
            (name, Tensor::f32(dims, data).unwrap())
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let graph = build()?;
    println!("{}", kiln::ir::text::print(&graph));
    let params = weights(&graph);
    let mut exe = kiln::jit(&graph, &params, &kiln::CompileOptions::default())?;
    let r = exe.report();
    println!(
        "compiled: {} kernels, {} steps (optimize {:?}, codegen {:?})",
        r.kernels, r.steps, r.optimize, r.codegen
    );
    for seq in [1usize, 5, 12] {
        let x: Vec<f32> = (0..seq * HIDDEN)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0)
            .collect();
        let inputs = BTreeMap::from([("x".to_string(), Tensor::f32(vec![seq, HIDDEN], x)?)]);
        let got = exe.run(&inputs)?;
        let want = interp::eval(&graph, &inputs, &params)?;
        let err = rel_l2(&got["y"].to_f64_vec(), &want["y"].to_f64_vec());
        println!(
            "seq={seq:>2}: y{:?}, relative L2 error vs the interpreter {err:.2e}",
            got["y"].shape
        );
        assert!(err < 1e-4);
    }
    Ok(())
}
