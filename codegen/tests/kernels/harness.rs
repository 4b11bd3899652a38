//! A single-threaded test executor for compiled CPU kernels, random inputs,
//! and comparison against the reference interpreter.

use kiln_codegen::{CpuModule, KernelSpec};
use kiln_ir::infer::infer;
use kiln_ir::interp::{eval_op, EvalOptions};
use kiln_ir::tensor::rel_l2;
use kiln_ir::{Bindings, DType, Op, Tensor, TensorType};

/// A kernel spec whose result types come from the op's type rule.
pub fn spec(name: &str, op: Op, operand_types: Vec<TensorType>) -> KernelSpec {
    let refs: Vec<&TensorType> = operand_types.iter().collect();
    let result_types = infer(&op, &refs).expect("test op type-checks");
    KernelSpec {
        name: name.to_string(),
        op,
        operand_types,
        result_types,
    }
}

pub fn bindings(pairs: &[(&str, i64)]) -> Bindings {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// A deterministic generator (64-bit LCG, high bits).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u32() as f64 / (1u64 << 31) as f64)
    }
}

/// A random tensor of `ty` under `b`: floats in [-2, 2), ints in [-20, 20)
/// ([0, 40) for u8), bools half and half.
pub fn random(rng: &mut Rng, ty: &TensorType, b: &Bindings) -> Tensor {
    let shape = ty.eval_shape(b).expect("bound shape");
    let n: usize = shape.iter().product();
    let vals: Vec<f64> = (0..n)
        .map(|_| match ty.dtype {
            d if d.is_float() => rng.uniform(-2.0, 2.0),
            DType::Bool => (rng.next_u32() % 2) as f64,
            DType::U8 => (rng.next_u32() % 40) as f64,
            _ => (rng.next_u32() % 40) as f64 - 20.0,
        })
        .collect();
    Tensor::from_f64(ty.dtype, shape, &vals).expect("sized")
}

/// Runs kernel `name` of `m` on `inputs`: allocates result buffers, then
/// calls the kernel on blocks `0..k` and `k..n` (two calls, to exercise
/// block ranges).
pub fn run(m: &CpuModule, spec: &KernelSpec, inputs: &[Tensor], b: &Bindings) -> Vec<Tensor> {
    let launch = m
        .launches()
        .iter()
        .find(|l| l.name == spec.name)
        .expect("launch info");
    let f = m.lookup(&spec.name).expect("kernel compiled");
    // u64 storage keeps every buffer 8-byte aligned.
    let mut bufs: Vec<Vec<u64>> = Vec::new();
    for t in inputs {
        let bytes = t.to_bytes();
        let mut v = vec![0u64; bytes.len().div_ceil(8).max(1)];
        bytemuck_copy(&bytes, &mut v);
        bufs.push(v);
    }
    let mut out_shapes = Vec::new();
    for ty in &spec.result_types {
        let shape = ty.eval_shape(b).expect("bound result");
        let bytes = shape.iter().product::<usize>() * ty.dtype.size_bytes();
        bufs.push(vec![0u64; bytes.div_ceil(8).max(1)]);
        out_shapes.push(shape);
    }
    let args: Vec<*mut u8> = bufs.iter_mut().map(|v| v.as_mut_ptr() as *mut u8).collect();
    let sizes: Vec<i64> = launch.symbols.iter().map(|s| b[s]).collect();
    let nb = launch.grid.num_blocks(b).expect("grid") as i64;
    let mid = nb / 2;
    // SAFETY: buffers are sized for the kernel's operands and results under
    // `b`, `sizes` follows the module's symbol order, and blocks are in range.
    unsafe {
        f(args.as_ptr(), sizes.as_ptr(), 0, mid);
        f(args.as_ptr(), sizes.as_ptr(), mid, nb);
    }
    spec.result_types
        .iter()
        .zip(out_shapes)
        .enumerate()
        .map(|(k, (ty, shape))| {
            let n = shape.iter().product::<usize>() * ty.dtype.size_bytes();
            let bytes: Vec<u8> = bufs[inputs.len() + k]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .take(n)
                .collect();
            Tensor::from_bytes(ty.dtype, shape, &bytes).expect("result bytes")
        })
        .collect()
}

fn bytemuck_copy(bytes: &[u8], words: &mut [u64]) {
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        words[i] = u64::from_le_bytes(w);
    }
}

/// The interpreter's results for `spec` on `inputs`.
pub fn reference(spec: &KernelSpec, inputs: &[Tensor], b: &Bindings) -> Vec<Tensor> {
    eval_op(&spec.op, inputs, b, &EvalOptions::default()).expect("interpreter runs")
}

/// Asserts `got` matches `want`: floats within relative L2 `tol` (NaNs in
/// the same places), everything else exactly.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    if got.dtype().is_float() {
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            assert_eq!(
                a.is_nan(),
                b.is_nan(),
                "{what}: NaN mismatch at {i}: got {a}, want {b}"
            );
            if a.is_infinite() || b.is_infinite() {
                assert_eq!(a, b, "{what}: infinity mismatch at {i}");
            }
        }
        let (gf, wf): (Vec<f64>, Vec<f64>) = g
            .iter()
            .zip(&w)
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .map(|(a, b)| (*a, *b))
            .unzip();
        let e = rel_l2(&gf, &wf);
        assert!(
            e <= tol,
            "{what}: rel L2 {e:e} > {tol:e}\n got {got:?}\nwant {want:?}"
        );
    } else {
        assert_eq!(g, w, "{what}: values differ");
    }
}

/// Compiles nothing; runs `spec` (compiled in `m`) at each binding on random
/// inputs and compares with the interpreter.
pub fn check(m: &CpuModule, spec: &KernelSpec, bs: &[Bindings], tol: f64, seed: u64) {
    for (i, b) in bs.iter().enumerate() {
        let mut rng = Rng::new(seed + i as u64);
        let inputs: Vec<Tensor> = spec
            .operand_types
            .iter()
            .map(|t| random(&mut rng, t, b))
            .collect();
        check_on(m, spec, &inputs, b, tol);
    }
}

/// Runs `spec` on the given inputs and compares with the interpreter.
pub fn check_on(m: &CpuModule, spec: &KernelSpec, inputs: &[Tensor], b: &Bindings, tol: f64) {
    let got = run(m, spec, inputs, b);
    let want = reference(spec, inputs, b);
    assert_eq!(got.len(), want.len());
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("{} result {k} at {b:?}", spec.name), g, w, tol);
    }
}
