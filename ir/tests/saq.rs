//! The SAQ cache core (`kiln_ir::saq`): the option text, the staircase
//! layout after T tokens, prefill == token by token (bytes), idempotent
//! bottom-rung requantization, per-group error bounds, attention error
//! against exact attention per ladder, and the `saq_append` /
//! `saq_attention` ops in the interpreter and the text form.

use kiln_ir::interp::{eval_with, EvalOptions};
use kiln_ir::op::F64Bits;
use kiln_ir::saq::cache::quantize_chunk;
use kiln_ir::saq::quant::{self, get_code, GroupMeta};
use kiln_ir::saq::{
    append, attention, read_token, AttentionShape, SaqAppendOp, SaqAttentionOp, SaqError,
    SaqLayout, SaqSpec,
};
use kiln_ir::tensor::rel_l2;
use kiln_ir::{shape, DType, Dim, Graph, Op, Tensor, TensorData, TensorType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

fn spec(ladder: &[u32], s: usize, g: usize) -> SaqSpec {
    SaqSpec::new(ladder.to_vec(), s, g).unwrap()
}

/// Keys like a model's: normal-ish values with a few outlier channels
/// (which is why keys are quantized per channel).
fn kv_data(rng: &mut StdRng, tokens: usize, heads: usize, dim: usize) -> Vec<f64> {
    data(rng, tokens, heads, dim, 6.0)
}

/// Values: no outlier channels.
fn v_data(rng: &mut StdRng, tokens: usize, heads: usize, dim: usize) -> Vec<f64> {
    data(rng, tokens, heads, dim, 1.0)
}

fn data(rng: &mut StdRng, tokens: usize, heads: usize, dim: usize, big: f64) -> Vec<f64> {
    (0..tokens * heads * dim)
        .map(|i| {
            let c = i % dim;
            let outlier = if c % 7 == 3 { big } else { 1.0 };
            let x: f64 = (0..3).map(|_| rng.random_range(-1.0..1.0)).sum();
            x * outlier
        })
        .collect()
}

#[test]
fn option_text_parses_with_defaults_and_clear_errors() {
    assert_eq!(SaqSpec::parse("saq").unwrap(), SaqSpec::default());
    let s = SaqSpec::parse("saq:16,8,4,2:S=128:G=32").unwrap();
    assert_eq!(s, SaqSpec::default());
    assert_eq!(s.to_string(), "saq:16,8,4,2:S=128:G=32");
    let s = SaqSpec::parse("saq:S=16").unwrap();
    assert_eq!(
        (s.ladder.clone(), s.chunk, s.group),
        (vec![16, 8, 4, 2], 16, 32)
    );
    assert_eq!(s.key_group(), 16);
    let s = SaqSpec::parse("saq:G=8:16,4").unwrap();
    assert_eq!((s.ladder.clone(), s.chunk, s.group), (vec![16, 4], 128, 8));
    for (text, needle) in [
        ("f32", "expected `saq"),
        ("saq:16,8,3", "3 bits is not a quantized width"),
        ("saq:8,4", "first rung must be 16"),
        ("saq:16", "at least two rungs"),
        ("saq:16,2,4", "must not increase"),
        ("saq:S=0", "must be positive"),
        ("saq:S=x", "not a non-negative integer"),
        ("saq:S=128:G=48", "must tile a chunk"),
        ("saq:S=4:S=8", "given twice"),
        ("saq:bits=4", "is not a ladder"),
    ] {
        let e = SaqSpec::parse(text).unwrap_err().to_string();
        assert!(e.contains(needle), "{text}: {e}");
        assert!(e.contains(text), "{text}: the error names the option: {e}");
    }
}

#[test]
fn layout_after_t_tokens_is_the_staircase() {
    let l = SaqLayout::new(&spec(&[16, 8, 4, 2], 4, 4), 2, 8).unwrap();
    // Index = rung (16, 8, 4, 2 bits).
    for (t, want) in [
        (0, [0, 0, 0, 0]),
        (3, [3, 0, 0, 0]),
        (4, [0, 4, 0, 0]),
        (8, [0, 4, 4, 0]),
        (12, [0, 4, 4, 4]),
        (13, [1, 4, 4, 4]),
        // The example of DESIGN.md §4: 8 at 2 bits, 4 at 4, 4 at 8, 1 at 16.
        (17, [1, 4, 4, 8]),
        (40, [0, 4, 4, 32]),
    ] {
        assert_eq!(l.tokens_per_rung(t), want, "T = {t}");
    }
    // Oldest first: tokens 0..8 at the bottom, 8..12 at 4 bits, 12..16 at 8, 16 at f16.
    let bits: Vec<u32> = (0..17).map(|t| l.bits(l.locate(17, t).rung)).collect();
    let mut want = vec![2; 8];
    want.extend([4; 4]);
    want.extend([8; 4]);
    want.push(16);
    assert_eq!(bits, want);
    // Other ladders: two rungs (everything complete at the bottom), five rungs.
    let l2 = SaqLayout::new(&spec(&[16, 4], 4, 4), 1, 8).unwrap();
    assert_eq!(l2.tokens_per_rung(17), vec![1, 16]);
    let l5 = SaqLayout::new(&spec(&[16, 8, 4, 2, 1], 4, 2), 1, 8).unwrap();
    assert_eq!(l5.tokens_per_rung(17), vec![1, 4, 4, 4, 4]);
    assert_eq!(l5.tokens_per_rung(29), vec![1, 4, 4, 4, 16]);
}

#[test]
fn every_token_has_its_own_row_inside_the_state() {
    for (ladder, s, g, h, d) in [
        (&[16, 8, 4, 2][..], 4, 4, 2, 8),
        (&[16, 8, 4, 2][..], 16, 32, 2, 16),
        (&[16, 4][..], 8, 2, 3, 8),
        (&[16, 8, 4, 2, 1][..], 4, 8, 1, 8),
    ] {
        let l = SaqLayout::new(&spec(ladder, s, g), h, d).unwrap();
        for ctx in [0, 1, s - 1, s, 3 * s + 1, 10 * s] {
            let bytes = l.state_bytes(ctx);
            assert_eq!(l.capacity(bytes).unwrap(), ctx);
            for t_total in [ctx / 2, ctx] {
                let mut seen = std::collections::HashSet::new();
                for t in 0..t_total {
                    let loc = l.locate(t_total, t);
                    assert!(seen.insert((loc.rung, loc.row)), "{loc:?} twice");
                    for head in 0..h {
                        let end = l.row_offset(loc.rung, loc.row, head) + l.row_bytes(loc.rung);
                        assert!(
                            end <= bytes,
                            "token {t} of {t_total} ends at {end} > {bytes} (ctx {ctx})"
                        );
                    }
                }
                assert!(l.used_bytes(t_total) <= bytes);
            }
        }
        assert!(matches!(
            l.capacity(l.state_bytes(5) + 1),
            Err(SaqError::StateSize { .. })
        ));
    }
    let e = SaqLayout::new(&spec(&[16, 2], 4, 4), 1, 6)
        .unwrap_err()
        .to_string();
    assert!(e.contains("whole bytes"), "{e}");
}

/// A state of capacity `ctx` after appending `k`/`v` in pieces of `sizes`.
fn fill(l: &SaqLayout, ctx: usize, k: &[f64], v: &[f64], sizes: &[usize]) -> Vec<u8> {
    let mut state = vec![0u8; l.state_bytes(ctx)];
    let row = l.heads() * l.dim();
    let mut past = 0;
    for &n in sizes {
        let r = past * row..(past + n) * row;
        append(l, &mut state, past, n, &k[r.clone()], &v[r]).unwrap();
        past += n;
    }
    state
}

#[test]
fn prefill_gives_the_same_bytes_as_token_by_token() {
    let mut rng = StdRng::seed_from_u64(7);
    for (ladder, s, g, h, d, tokens) in [
        (&[16, 8, 4, 2][..], 4, 4, 2, 8, 37),
        (&[16, 8, 4, 2][..], 8, 4, 1, 16, 41),
        (&[16, 4, 2][..], 4, 8, 2, 8, 23),
        (&[16, 8, 4, 2, 1][..], 4, 2, 1, 8, 29),
    ] {
        let l = SaqLayout::new(&spec(ladder, s, g), h, d).unwrap();
        let k = kv_data(&mut rng, tokens, h, d);
        let v = kv_data(&mut rng, tokens, h, d);
        let ctx = tokens + 3;
        let prefill = fill(&l, ctx, &k, &v, &[tokens]);
        let one_by_one = fill(&l, ctx, &k, &v, &vec![1; tokens]);
        assert!(
            prefill == one_by_one,
            "{ladder:?} S={s}: prefill differs from decode"
        );
        // Any split (chunked prefill then decode) too.
        let mut sizes = Vec::new();
        let mut left = tokens;
        while left > 0 {
            let n = rng.random_range(1..=left.min(2 * s + 1));
            sizes.push(n);
            left -= n;
        }
        assert!(fill(&l, ctx, &k, &v, &sizes) == prefill, "split {sizes:?}");
        // And the staircase is what the layout says: the newest token is
        // its f16 value.
        let (mut kr, mut vr) = (vec![0f32; d], vec![0f32; d]);
        read_token(&l, &prefill, tokens, tokens - 1, h - 1, &mut kr, &mut vr);
        let at = ((tokens - 1) * h + h - 1) * d;
        if l.locate(tokens, tokens - 1).rung == 0 {
            for c in 0..d {
                assert_eq!(kr[c], kiln_ir::interp::round_f16(k[at + c]).to_f32());
            }
        }
    }
}

#[test]
fn requantizing_at_the_bottom_width_is_idempotent() {
    let mut rng = StdRng::seed_from_u64(11);
    for (ladder, s, g) in [
        (&[16, 8, 4, 2][..], 8, 4),
        (&[16, 4][..], 16, 32),
        (&[16, 8, 1][..], 4, 4),
    ] {
        let l = SaqLayout::new(&spec(ladder, s, g), 1, 16).unwrap();
        let bottom = l.bottom();
        for _ in 0..20 {
            let mut k: Vec<f32> = kv_data(&mut rng, s, 1, 16)
                .iter()
                .map(|&x| x as f32)
                .collect();
            let mut v: Vec<f32> = kv_data(&mut rng, s, 1, 16)
                .iter()
                .map(|&x| x as f32)
                .collect();
            let first = quantize_chunk(&l, bottom, &mut k, &mut v);
            // k, v now hold the dequantized values.
            let again = quantize_chunk(&l, bottom, &mut k, &mut v);
            assert_eq!(first, again, "{ladder:?}: requantization changed the chunk");
        }
    }
}

/// Every element of a freshly quantized chunk is within half its group's
/// stored scale of the value quantized (plus f32 rounding).
#[test]
fn quantization_error_is_at_most_half_a_step_per_group() {
    let mut rng = StdRng::seed_from_u64(3);
    let (s, d) = (8, 16);
    for bits in [8u32, 4, 2, 1] {
        let l = SaqLayout::new(&spec(&[16, bits], s, 4), 1, d).unwrap();
        let mut worst = 0f64;
        for _ in 0..10 {
            let k0: Vec<f32> = kv_data(&mut rng, s, 1, d)
                .iter()
                .map(|&x| x as f32)
                .collect();
            let v0: Vec<f32> = kv_data(&mut rng, s, 1, d)
                .iter()
                .map(|&x| x as f32)
                .collect();
            let (mut k, mut v) = (k0.clone(), v0.clone());
            let bytes = quantize_chunk(&l, 1, &mut k, &mut v);
            let w = l.row_bytes(1);
            let (gk, gv) = (l.key_group(), l.value_group());
            for i in 0..s {
                let row = &bytes[i * w..(i + 1) * w];
                for c in 0..d {
                    // Key meta: channel c of the group of row i.
                    let (r, off) = l.key_meta_slot(c);
                    let m = ((i / gk) * gk + r) * w + l.key_meta_offset(1) + off;
                    let km = GroupMeta::from_bytes(&bytes[m..m + 4]);
                    let vm = GroupMeta::from_bytes(&row[l.value_meta_offset(1) + 4 * (c / gv)..]);
                    for (x, y, meta, code) in [
                        (k0[i * d + c], k[i * d + c], km, get_code(row, c, bits)),
                        (
                            v0[i * d + c],
                            v[i * d + c],
                            vm,
                            get_code(&row[l.value_codes_offset(1)..], c, bits),
                        ),
                    ] {
                        let sc = meta.scale.to_f32() as f64;
                        assert_eq!(y, quant::dequantize(code, meta));
                        let err = (x as f64 - y as f64).abs();
                        let tol = sc / 2.0 + 4.0 * f32::EPSILON as f64 * (x.abs() as f64 + sc);
                        assert!(err <= tol, "{bits} bits: |{x} - {y}| = {err} > {tol}");
                        worst = worst.max(err / sc.max(1e-30));
                    }
                }
            }
        }
        eprintln!("{bits}-bit: worst error {worst:.4} steps (bound 0.5)");
    }
    // Directed rounding of the stored meta.
    for x in [
        0.1f32, -0.1, 3.3333, -7.77, 1e-6, -1e-6, 0.0, 70000.0, -70000.0,
    ] {
        let (lo, hi) = (quant::f16_down(x).to_f32(), quant::f16_up(x).to_f32());
        let xc = x.clamp(-65504.0, 65504.0);
        assert!(
            lo <= xc && hi >= xc && hi - lo <= xc.abs() / 512.0 + 1e-7,
            "{x}: {lo} {hi}"
        );
        assert!(lo.is_finite() && hi.is_finite());
    }
}

/// Exact causal attention (f64) of `q` over all `tokens` keys/values.
fn exact_attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    sh: AttentionShape,
    past: usize,
    scale: f64,
) -> Vec<f64> {
    let AttentionShape {
        heads,
        group,
        seq,
        dim,
    } = sh;
    let mut out = vec![0.0; q.len()];
    for h in 0..heads {
        for g in 0..group {
            for i in 0..seq {
                let qo = ((h * group + g) * seq + i) * dim;
                let n = past + i + 1;
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        scale
                            * (0..dim)
                                .map(|c| q[qo + c] * k[(j * heads + h) * dim + c])
                                .sum::<f64>()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..dim {
                    out[qo + c] = (0..n)
                        .map(|j| e[j] * v[(j * heads + h) * dim + c])
                        .sum::<f64>()
                        / z;
                }
            }
        }
    }
    out
}

#[test]
fn attention_error_against_exact_per_ladder() {
    let mut rng = StdRng::seed_from_u64(5);
    let (heads, group, dim, s, past, seq) = (2, 2, 32, 16, 100, 3);
    let total = past + seq;
    let k = kv_data(&mut rng, total, heads, dim);
    let v = v_data(&mut rng, total, heads, dim);
    let sh = AttentionShape {
        heads,
        group,
        seq,
        dim,
    };
    let q: Vec<f64> = (0..heads * group * seq * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let scale = 1.0 / (dim as f64).sqrt();
    let exact = exact_attention(&q, &k, &v, sh, past, scale);
    let mut errors = Vec::new();
    for (ladder, bound) in [
        // Measured 4.8e-3, 6.5e-2, 0.34, 7.2e-2, 0.40 (random data, flat
        // attention: the worst case for quantization noise).
        (&[16, 8][..], 8e-3),
        (&[16, 8, 4][..], 0.1),
        (&[16, 8, 4, 2][..], 0.5),
        (&[16, 4][..], 0.11),
        (&[16, 2][..], 0.6),
    ] {
        let l = SaqLayout::new(&spec(ladder, s, 8), heads, dim).unwrap();
        let state = fill(&l, total, &k, &v, &[past, seq]);
        let got = attention(
            &l,
            &state,
            past,
            sh,
            &q,
            &k[past * heads * dim..],
            &v[past * heads * dim..],
            scale,
        )
        .unwrap();
        let e = rel_l2(&got, &exact);
        eprintln!("ladder {ladder:?} S={s} G=8: {past} cached tokens at {:?} per rung, attention rel L2 vs exact {e:.2e}", l.tokens_per_rung(total));
        errors.push((e, bound));
    }
    for (e, bound) in &errors {
        assert!(e < bound, "{errors:?}");
    }
    // More bits, less error: (16,8) < (16,8,4) < (16,8,4,2) < (16,2).
    let e: Vec<f64> = errors.iter().map(|x| x.0).collect();
    assert!(e[0] < e[1] && e[1] < e[2] && e[2] < e[4], "{errors:?}");
    // With no cached tokens it is exact attention (new tokens are exact).
    let l = SaqLayout::new(&spec(&[16, 2], 4, 4), heads, dim).unwrap();
    let state = fill(&l, seq, &k, &v, &[seq]);
    let got = attention(
        &l,
        &state,
        0,
        sh,
        &q,
        &k[..seq * heads * dim],
        &v[..seq * heads * dim],
        scale,
    )
    .unwrap();
    let want = exact_attention(&q, &k, &v, sh, 0, scale);
    assert!(rel_l2(&got, &want) < 1e-12);
}

#[test]
fn capacity_and_operand_errors_name_the_problem() {
    let l = SaqLayout::new(&spec(&[16, 8, 4, 2], 4, 4), 1, 8).unwrap();
    let mut state = vec![0u8; l.state_bytes(10)];
    let kv = vec![0.5; 11 * 8];
    let e = append(&l, &mut state, 0, 11, &kv, &kv).unwrap_err();
    assert!(
        matches!(
            e,
            SaqError::Capacity {
                capacity: 10,
                past: 0,
                seq: 11
            }
        ),
        "{e}"
    );
    let e = append(&l, &mut state, 0, 2, &kv[..8], &kv[..16])
        .unwrap_err()
        .to_string();
    assert!(e.contains("new keys") && e.contains("expected 16"), "{e}");
    let mut short = vec![0u8; l.state_bytes(10) - 1];
    let e = append(&l, &mut short, 0, 1, &kv[..8], &kv[..8])
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit the layout"), "{e}");
}

/// `saq_append` then `saq_attention`, as the `saq` pass emits them.
fn op_graph(sp: &SaqSpec, heads: usize, group: usize, dim: usize) -> Graph {
    let l = SaqLayout::new(sp, heads, dim).unwrap();
    let mut g = Graph::new("saq");
    let state = g
        .add_input(
            "state",
            TensorType::new(DType::U8, vec![l.state_len(&Dim::sym("ctx"))]),
        )
        .unwrap();
    let f32t = |s: Vec<Dim>| TensorType::new(DType::F32, s);
    let q = g
        .add_input("q", f32t(shape![heads, group, "seq", dim]))
        .unwrap();
    let k = g.add_input("k", f32t(shape!["seq", heads, dim])).unwrap();
    let v = g.add_input("v", f32t(shape!["seq", heads, dim])).unwrap();
    let past = Dim::sym("past");
    let append = Op::SaqAppend(SaqAppendOp {
        spec: sp.clone(),
        start: past.clone(),
    });
    let new_state = g.add(append, &[state, k, v]).unwrap();
    let attend = Op::SaqAttention(SaqAttentionOp {
        spec: sp.clone(),
        scale: F64Bits(0.25),
        offset: past,
    });
    let out = g.add(attend, &[q, new_state, k, v]).unwrap();
    g.add_output("out", out).unwrap();
    g.add_output_alias("state", new_state, "state").unwrap();
    kiln_ir::verify(&g).unwrap();
    g
}

#[test]
fn ops_run_in_the_interpreter_and_round_trip_as_text() {
    let sp = spec(&[16, 8, 4, 2], 4, 4);
    let (heads, group, dim) = (2, 2, 8);
    let g = op_graph(&sp, heads, group, dim);
    let text = kiln_ir::text::print(&g);
    assert!(
        text.contains(
            "saq_append(%state, %k, %v) {ladder=[16,8,4,2], chunk=4, group=4, start=past}"
        ),
        "{text}"
    );
    let back = kiln_ir::text::parse(&text).unwrap();
    assert_eq!(kiln_ir::text::print(&back), text);
    let json = kiln_ir::json::to_json(&g);
    assert_eq!(
        kiln_ir::text::print(&kiln_ir::json::from_json(&json).unwrap()),
        text
    );

    let l = SaqLayout::new(&sp, heads, dim).unwrap();
    let ctx = 20;
    let mut rng = StdRng::seed_from_u64(9);
    let k = kv_data(&mut rng, 13, heads, dim);
    let v = kv_data(&mut rng, 13, heads, dim);
    let mut state = Tensor::new(
        vec![l.state_bytes(ctx)],
        TensorData::U8(vec![0; l.state_bytes(ctx)]),
    )
    .unwrap();
    let mut past = 0;
    for seq in [6, 1, 1, 5] {
        let rows = |x: &[f64]| {
            Tensor::from_f64(
                DType::F32,
                vec![seq, heads, dim],
                &x[past * heads * dim..(past + seq) * heads * dim],
            )
            .unwrap()
        };
        let qv: Vec<f64> = (0..heads * group * seq * dim)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let inputs = BTreeMap::from([
            ("state".to_string(), state.clone()),
            (
                "q".to_string(),
                Tensor::from_f64(DType::F32, vec![heads, group, seq, dim], &qv).unwrap(),
            ),
            ("k".to_string(), rows(&k)),
            ("v".to_string(), rows(&v)),
        ]);
        let opts = EvalOptions {
            sizes: [("past".to_string(), past as i64)].into(),
            ..EvalOptions::default()
        };
        let out = eval_with(&g, &inputs, &BTreeMap::<String, Tensor>::new(), &opts).unwrap();
        // The op is the core: same state bytes, same attention.
        let mut want = match &state.data {
            TensorData::U8(b) => b.clone(),
            _ => unreachable!(),
        };
        let f32s = |x: &[f64]| -> Vec<f64> { x.iter().map(|&y| y as f32 as f64).collect() };
        let (kn, vn) = (
            f32s(&k[past * heads * dim..(past + seq) * heads * dim]),
            f32s(&v[past * heads * dim..(past + seq) * heads * dim]),
        );
        append(&l, &mut want, past, seq, &kn, &vn).unwrap();
        assert!(matches!(&out["state"].data, TensorData::U8(b) if *b == want));
        let sh = AttentionShape {
            heads,
            group,
            seq,
            dim,
        };
        let att = attention(&l, &want, past, sh, &f32s(&qv), &kn, &vn, 0.25).unwrap();
        let got = out["out"].to_f64_vec();
        assert!(rel_l2(&got, &att) < 1e-6, "{}", rel_l2(&got, &att));
        state = out["state"].clone();
        past += seq;
    }
    // Past the capacity: an error that names the sizes.
    let inputs = BTreeMap::from([
        ("state".to_string(), state),
        (
            "q".to_string(),
            Tensor::zeros(DType::F32, vec![heads, group, 8, dim]),
        ),
        (
            "k".to_string(),
            Tensor::zeros(DType::F32, vec![8, heads, dim]),
        ),
        (
            "v".to_string(),
            Tensor::zeros(DType::F32, vec![8, heads, dim]),
        ),
    ]);
    let opts = EvalOptions {
        sizes: [("past".to_string(), 13)].into(),
        ..EvalOptions::default()
    };
    let e = eval_with(&g, &inputs, &BTreeMap::<String, Tensor>::new(), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("capacity for 20 tokens cannot take 8 more after 13"),
        "{e}"
    );
}

#[test]
fn type_rules_reject_bad_operands() {
    let sp = spec(&[16, 8, 4, 2], 4, 4);
    let bad = |text: &str, needle: &str| {
        let e = kiln_ir::text::parse(text).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    };
    let l = SaqLayout::new(&sp, 2, 8).unwrap();
    let n = l.state_len(&Dim::sym("ctx"));
    let good = format!(
        "graph @g(%s: u8[{n}], %k: f32[seq,2,8], %v: f32[seq,2,8]) {{\n  %0 = saq_append(%s, %k, %v) {{ladder=[16,8,4,2], chunk=4, group=4, start=past}} : u8[{n}]\n  return %0 as \"s\" alias %s\n}}\n"
    );
    kiln_ir::text::parse(&good).unwrap();
    bad(
        &good.replace(&format!("u8[{n}]"), "u8[ctx]"),
        "does not have the layout's length",
    );
    bad(
        &good.replace("%v: f32[seq,2,8]", "%v: f32[seq,2,16]"),
        "new keys and values differ",
    );
    bad(
        &good.replace("ladder=[16,8,4,2]", "ladder=[16,3]"),
        "3 bits",
    );
    bad(&good.replace("f32[seq,2,8]", "f32[seq,2,6]"), "whole bytes");
}

/// The memory report: SAQ state bytes against an f16 cache (keys and
/// values) at 4096 tokens, for llama-tiny (2 layers of 2 KV heads × 16)
/// and one Llama-7B-shaped layer (32 KV heads × 128), default spec.
#[test]
fn state_bytes_against_an_f16_cache_at_4k_tokens() {
    let sp = SaqSpec::default();
    let ctx = 4096;
    let mut ratios = Vec::new();
    for (model, layers, heads, dim) in [("llama-tiny", 2, 2, 16), ("llama-7b layer", 1, 32, 128)] {
        let l = SaqLayout::new(&sp, heads, dim).unwrap();
        let (saq, f16) = (layers * l.state_bytes(ctx), layers * l.f16_bytes(ctx));
        let used = layers * l.used_bytes(ctx);
        let ratio = f16 as f64 / saq as f64;
        eprintln!(
            "{model} ({layers} layer(s), {heads} KV heads x {dim}), {sp} at {ctx} tokens: \
             SAQ state {saq} bytes ({used} holding tokens) vs f16 {f16} bytes: {ratio:.2}x smaller \
             ({:.2} bits per cached value vs 16)",
            saq as f64 * 8.0 / (ctx * heads * dim * 2 * layers) as f64
        );
        // Every token fits, and the state is what the layout says.
        assert_eq!(l.capacity(l.state_bytes(ctx)).unwrap(), ctx);
        assert_eq!(l.tokens_per_rung(ctx), vec![0, 128, 128, 3840]);
        ratios.push(ratio);
    }
    // 2-bit codes with f16 meta per group of 32 (and 16 channels for the
    // tiny model's values): about 3-4x below f16 for the tiny heads, above
    // 4x for 128-channel heads.
    assert!(ratios[0] > 3.0 && ratios[1] > 4.0, "{ratios:?}");
}
