//! Times the generated CPU matmul kernels alone: `matmul` (B as `[k, n]`)
//! against `matmul_t` (B as `[n, k]`, a weight as stored) on the shapes of a
//! 134M Llama's layers, for one row (decode) and for prompts, on 1 and 2
//! threads (blocks split in halves, as the executor splits a grid).
//!
//!   cargo run --release -p kiln-codegen --example gemm [-- THREADS]
//!
//! `nt16`/`ntb16` are `matmul_t` of an f16/bf16 B (`--weights f16|bf16`).
//! Prints GFLOP/s and, for one row, the weight-read rate in GB/s. A
//! developer's tool for tuning tiles, not a benchmark against peers (that is
//! scripts/bench).

use kiln_codegen::{compile_cpu, KernelSpec};
use kiln_ir::{DType, Dim, Op, TensorType};
use kiln_runtime::memory::AlignedBuf;
use std::time::Instant;

fn spec(name: &str, (op, bdt): (Op, DType), m: &str, k: i64, n: i64) -> KernelSpec {
    let b = if op == Op::MatMulT { [n, k] } else { [k, n] };
    let a = TensorType::new(DType::F32, vec![Dim::from(m), Dim::from(k)]);
    let bt = TensorType::new(bdt, b.iter().map(|&d| Dim::from(d)).collect());
    let c = kiln_ir::infer::infer(&op, &[&a, &bt]).expect("types")[0].clone();
    KernelSpec {
        name: name.into(),
        op,
        operand_types: vec![a, bt],
        result_types: vec![c],
    }
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .map_or(2, |s| s.parse().expect("THREADS"));
    let shapes = [(768, 768), (768, 2048), (2048, 768), (768, 32000)];
    let kinds = [
        ("nn", (Op::MatMul, DType::F32)),
        ("nt", (Op::MatMulT, DType::F32)),
        ("nt16", (Op::MatMulT, DType::F16)),
        ("ntb16", (Op::MatMulT, DType::BF16)),
    ];
    let mut specs = Vec::new();
    let mut dims = Vec::new();
    for &(k, n) in &shapes {
        for (tag, kind) in &kinds {
            specs.push(spec(&format!("{tag}_{k}_{n}"), kind.clone(), "m", k, n));
            dims.push((k, n));
        }
    }
    let module = compile_cpu(&specs, &["m".to_string()]).expect("compiles");
    println!("threads {threads}");
    println!("| kernel | m | k | n | ms | GFLOP/s | GB/s of B |");
    println!("|---|---|---|---|---|---|---|");
    for m in [1usize, 128, 1024] {
        for (s, &(k, n)) in specs.iter().zip(&dims) {
            let (k, n) = (k as usize, n as usize);
            let bdt = s.operand_types[1].dtype;
            let b_bytes = k * n * bdt.size_bytes();
            let launch = module.launches().iter().find(|l| l.name == s.name).unwrap();
            let f = module.lookup(&s.name).unwrap();
            let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
            // One row streams its weight from memory, as decode does: enough
            // copies of B to overflow the last-level cache, used in turn.
            let copies = if m == 1 { (256 << 20) / b_bytes + 1 } else { 1 };
            // Weights live where the executor keeps them: huge-page mappings.
            let bs: Vec<AlignedBuf> = (0..copies)
                .map(|_| {
                    let vals: Vec<f64> = (0..k * n).map(|i| (i % 5) as f64 * 0.1).collect();
                    let t = kiln_ir::Tensor::from_f64(bdt, vec![k * n], &vals).unwrap();
                    AlignedBuf::from_bytes(&t.to_bytes())
                })
                .collect();
            let mut c = vec![0f32; m * n];
            let (pa, pc) = (a.as_ptr() as usize, c.as_mut_ptr() as usize);
            let pbs: Vec<usize> = bs.iter().map(|b| b.as_bytes().as_ptr() as usize).collect();
            let sizes = [m as i64];
            let bind = kiln_ir::Bindings::from([("m".to_string(), m as i64)]);
            let blocks = launch.grid.num_blocks(&bind).unwrap() as i64;
            let reps = (4e9 / (2.0 * (m * k * n) as f64)).clamp(3.0, 400.0) as usize;
            let barrier = std::sync::Barrier::new(threads);
            let t0 = std::sync::Mutex::new(None);
            let mut secs = 0.0;
            std::thread::scope(|sc| {
                let handles: Vec<_> = (0..threads as i64)
                    .map(|t| {
                        let (barrier, t0, pbs) = (&barrier, &t0, &pbs);
                        sc.spawn(move || {
                            let nt = threads as i64;
                            let (lo, hi) = (blocks * t / nt, blocks * (t + 1) / nt);
                            // One untimed call first (page faults, code).
                            for r in 0..=reps {
                                barrier.wait();
                                if r == 1 && t == 0 {
                                    *t0.lock().unwrap() = Some(Instant::now());
                                }
                                let args = [pa, pbs[r % pbs.len()], pc].map(|p| p as *mut u8);
                                // SAFETY: the buffers hold m*k f32s, k*n of B's dtype and
                                // m*n f32s, the kernel's operand shapes under `m`; blocks
                                // are in range.
                                unsafe { f(args.as_ptr(), sizes.as_ptr(), lo, hi) }
                            }
                            barrier.wait();
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
                secs = t0.lock().unwrap().unwrap().elapsed().as_secs_f64() / reps as f64;
            });
            let gflops = 2.0 * (m * k * n) as f64 / secs / 1e9;
            let gbs = b_bytes as f64 / secs / 1e9;
            println!(
                "| {} | {m} | {k} | {n} | {:.3} | {gflops:.1} | {gbs:.1} |",
                s.name,
                secs * 1e3
            );
            std::hint::black_box(&c);
        }
    }
}
