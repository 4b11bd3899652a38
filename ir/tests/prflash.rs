//! PrFlashAttention's block sampling (DESIGN.md §4): never above the
//! diagonal, the diagonal always, the mean number of kept blocks per query
//! block `i` follows `Σ_{d<=i} min(1, c/(d+1))` (`c·H(i+1)` while no
//! probability is capped), reproducible for a seed, per-head or shared.

use kiln_ir::attention::{harmonic, prflash_keep, PrFlashOp};
use kiln_ir::op::F64Bits;
use kiln_ir::Dim;

fn op(c: f64, seed: u64, per_head: bool) -> PrFlashOp {
    PrFlashOp {
        scale: F64Bits(1.0),
        offset: Dim::from(0),
        block: 16,
        c: F64Bits(c),
        seed,
        per_head,
    }
}

fn kept(o: &PrFlashOp, head: u64, qb: u64) -> Vec<u64> {
    (0..=qb + 3)
        .filter(|&kb| prflash_keep(o, head, qb, kb))
        .collect()
}

#[test]
fn never_above_the_diagonal_and_always_the_diagonal() {
    for seed in 0..50 {
        let o = op(0.5, seed, true);
        for qb in 0..40 {
            let k = kept(&o, seed % 3, qb);
            assert!(k.iter().all(|&kb| kb <= qb), "{k:?}");
            assert!(k.contains(&qb));
        }
    }
}

#[test]
fn mean_kept_blocks_per_row_follows_the_harmonic_law() {
    let seeds = 4000;
    for c in [1.0, 2.0, 0.5] {
        for qb in [0u64, 3, 10, 31] {
            let total: usize = (0..seeds)
                .map(|s| kept(&op(c, s, false), 0, qb).len())
                .sum();
            let mean = total as f64 / seeds as f64;
            // The diagonal is kept always; distance d > 0 with min(1, c/(d+1)).
            let expect: f64 = 1.0
                + (1..=qb)
                    .map(|d| (c / (d as f64 + 1.0)).min(1.0))
                    .sum::<f64>();
            let var: f64 = (1..=qb)
                .map(|d| {
                    let p = (c / (d as f64 + 1.0)).min(1.0);
                    p * (1.0 - p)
                })
                .sum();
            let tol = 5.0 * (var / seeds as f64).sqrt() + 1e-9;
            assert!(
                (mean - expect).abs() <= tol,
                "c={c} qb={qb}: mean {mean}, expected {expect} ± {tol}"
            );
            if c == 1.0 {
                // No probability is capped: exactly c·H(i+1) in expectation.
                assert!((expect - c * harmonic(qb + 1)).abs() < 1e-12);
            }
        }
    }
}

#[test]
fn reproducible_for_a_seed_and_different_across_seeds() {
    let a: Vec<_> = (0..30).map(|qb| kept(&op(1.0, 9, true), 2, qb)).collect();
    let b: Vec<_> = (0..30).map(|qb| kept(&op(1.0, 9, true), 2, qb)).collect();
    let c: Vec<_> = (0..30).map(|qb| kept(&op(1.0, 10, true), 2, qb)).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn per_head_sampling_differs_across_heads_and_shared_does_not() {
    let pattern = |per_head: bool, head: u64| -> Vec<Vec<u64>> {
        (0..30)
            .map(|qb| kept(&op(1.0, 4, per_head), head, qb))
            .collect()
    };
    assert_ne!(pattern(true, 0), pattern(true, 1));
    assert_eq!(pattern(false, 0), pattern(false, 1));
}
