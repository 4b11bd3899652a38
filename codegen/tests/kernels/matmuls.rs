//! Tiled matmul against the interpreter: odd sizes (edge tiles), `m = 1`,
//! batch broadcasting, and non-f32 dtypes.

use crate::harness::{bindings, check, spec};
use crate::ty;
use kiln_codegen::{compile_cpu, KernelSpec};
use kiln_ir::{Bindings, DType, Op};

pub fn mm(name: &str, d: DType, a: &[&str], b: &[&str]) -> KernelSpec {
    spec(name, Op::MatMul, vec![ty(d, a), ty(d, b)])
}

#[test]
fn matmul_sizes_batches_dtypes() {
    let ks = vec![
        // m = seq against n = 33, 64 (full vector tiles), 65, 1 and k = 7, 65.
        mm("mm_33", DType::F32, &["seq", "7"], &["7", "33"]),
        mm("mm_64", DType::F32, &["seq", "65"], &["65", "64"]),
        mm("mm_65", DType::F32, &["seq", "16"], &["16", "65"]),
        mm("mm_n1", DType::F32, &["seq", "5"], &["5", "1"]),
        // Symbolic k and n.
        mm("mm_sym", DType::F32, &["9", "seq"], &["seq", "seq"]),
        // Batch broadcasting: [2,1,seq,16] x [3,16,40] -> [2,3,seq,40].
        mm(
            "mm_batch",
            DType::F32,
            &["2", "1", "seq", "16"],
            &["3", "16", "40"],
        ),
        mm("mm_batch_b", DType::F32, &["seq", "8"], &["4", "8", "32"]),
        mm("mm_f16", DType::F16, &["seq", "24"], &["24", "33"]),
        mm(
            "mm_bf16",
            DType::BF16,
            &["2", "seq", "8"],
            &["2", "8", "17"],
        ),
        mm("mm_i32", DType::I32, &["seq", "12"], &["12", "10"]),
    ];
    let m = compile_cpu(&ks, &["seq".to_string()]).unwrap_or_else(|e| panic!("{e}"));
    let bs: Vec<Bindings> = [1, 7, 33, 65]
        .iter()
        .map(|&s| bindings(&[("seq", s)]))
        .collect();
    for (i, k) in ks.iter().enumerate() {
        let tol = match k.operand_types[0].dtype {
            DType::F16 | DType::BF16 => 1e-2,
            DType::I32 => 0.0,
            _ => 1e-5,
        };
        check(&m, k, &bs, tol, 2000 + i as u64);
    }
    let g = &m.launches()[1].grid;
    assert_eq!(g.dims.len(), 3, "matmul grid is (batch, m tiles, n tiles)");
}

pub fn mmt(name: &str, d: DType, a: &[&str], b: &[&str]) -> KernelSpec {
    spec(name, Op::MatMulT, vec![ty(d, a), ty(d, b)])
}

/// `matmul_t` (B as `[n, k]`): the CPU f32 tile's one-row (`m = 1`) and
/// full variants, partial row and column tiles, `k` below, at and past a
/// vector (tails), a row chunk boundary (m = 65..), symbolic sizes, batch
/// broadcasting, and the scalar path of other dtypes.
#[test]
fn matmul_t_sizes_batches_dtypes() {
    let ks = vec![
        mmt("mt_k7", DType::F32, &["seq", "7"], &["33", "7"]),
        mmt("mt_k16", DType::F32, &["seq", "16"], &["4", "16"]),
        mmt("mt_k37", DType::F32, &["seq", "37"], &["9", "37"]),
        mmt("mt_k768", DType::F32, &["seq", "768"], &["70", "768"]),
        mmt("mt_n1", DType::F32, &["seq", "5"], &["1", "5"]),
        mmt("mt_sym", DType::F32, &["9", "seq"], &["seq", "seq"]),
        mmt(
            "mt_batch",
            DType::F32,
            &["2", "1", "seq", "20"],
            &["3", "13", "20"],
        ),
        mmt("mt_f16", DType::F16, &["seq", "24"], &["33", "24"]),
        mmt(
            "mt_bf16",
            DType::BF16,
            &["2", "seq", "8"],
            &["2", "17", "8"],
        ),
        mmt("mt_i32", DType::I32, &["seq", "12"], &["10", "12"]),
    ];
    let m = compile_cpu(&ks, &["seq".to_string()]).unwrap_or_else(|e| panic!("{e}"));
    let bs: Vec<Bindings> = [1, 2, 5, 33, 130]
        .iter()
        .map(|&s| bindings(&[("seq", s)]))
        .collect();
    for (i, k) in ks.iter().enumerate() {
        let tol = match k.operand_types[0].dtype {
            DType::F16 | DType::BF16 => 1e-2,
            DType::I32 => 0.0,
            _ => 1e-5,
        };
        check(&m, k, &bs, tol, 3000 + i as u64);
    }
}

/// Weights stored narrow: an f32 A with an `f16`/`bf16` B, widened as it is
/// loaded (f32 accumulation), against the interpreter's widened product.
/// `matmul_t` covers the CPU tile's vector loads in both the one-row and
/// the full variant with `k` tails and partial tiles; `matmul` takes the
/// scalar path. Tolerance is f32's: the narrow values are exact in f32.
#[test]
fn matmul_of_a_narrow_weight_widens_it() {
    let mut ks = Vec::new();
    for (d, tag) in [(DType::BF16, "bf16"), (DType::F16, "f16")] {
        let mixed = |name: String, op: Op, a: &[&str], b: &[&str]| {
            spec(&name, op, vec![ty(DType::F32, a), ty(d, b)])
        };
        ks.push(mixed(
            format!("nt_{tag}_k768"),
            Op::MatMulT,
            &["seq", "768"],
            &["70", "768"],
        ));
        ks.push(mixed(
            format!("nt_{tag}_k37"),
            Op::MatMulT,
            &["seq", "37"],
            &["9", "37"],
        ));
        ks.push(mixed(
            format!("nt_{tag}_k7"),
            Op::MatMulT,
            &["seq", "7"],
            &["5", "7"],
        ));
        ks.push(mixed(
            format!("nt_{tag}_batch"),
            Op::MatMulT,
            &["2", "seq", "24"],
            &["2", "13", "24"],
        ));
        ks.push(mixed(
            format!("mm_{tag}"),
            Op::MatMul,
            &["seq", "24"],
            &["24", "64"],
        ));
    }
    let m = compile_cpu(&ks, &["seq".to_string()]).unwrap_or_else(|e| panic!("{e}"));
    let bs: Vec<Bindings> = [1, 2, 7, 65]
        .iter()
        .map(|&s| bindings(&[("seq", s)]))
        .collect();
    for (i, k) in ks.iter().enumerate() {
        check(&m, k, &bs, 1e-5, 3500 + i as u64);
    }
}
