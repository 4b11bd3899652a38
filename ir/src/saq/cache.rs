//! The SAQ cache's operations on one layer's state bytes: [`append`]
//! (tokens enter at f16; full chunks are quantized and older chunks step
//! down the ladder), [`read_token`] (one token dequantized) and
//! [`attention`] (causal attention of new queries over the cached tokens
//! and the new ones). These are the reference semantics of the
//! `saq_append` and `saq_attention` ops.
//!
//! Every token first becomes f16 (the residual's width); a chunk is
//! quantized from those f16 values, and each step down re-quantizes the
//! dequantized values of the rung above. [`append`] runs exactly this chain
//! for every chunk, whether the chunk formed one token at a time or inside
//! one long prefill, so both produce the same bytes.

use super::layout::SaqLayout;
use super::quant::{dequantize, get_code, group_meta, quantize, set_code, GroupMeta};
use super::SaqError;
use crate::interp::round_f16;
use half::f16;

/// Checks the state's length and that `past + seq` tokens fit.
fn check(layout: &SaqLayout, state: usize, past: usize, seq: usize) -> Result<(), SaqError> {
    let capacity = layout.capacity(state)?;
    if past + seq > capacity {
        return Err(SaqError::Capacity {
            capacity,
            past,
            seq,
        });
    }
    Ok(())
}

fn check_len(what: &'static str, got: usize, want: usize) -> Result<(), SaqError> {
    if got != want {
        return Err(SaqError::Operand {
            what,
            problem: format!("holds {got} values, expected {want}"),
        });
    }
    Ok(())
}

/// Reads the f16 residual row of one head into `k`, `v` (`D` each).
fn read_residual(
    layout: &SaqLayout,
    state: &[u8],
    row: usize,
    head: usize,
    k: &mut [f32],
    v: &mut [f32],
) {
    let d = layout.dim();
    let at = layout.row_offset(0, row, head);
    let h = |i: usize| f16::from_le_bytes([state[at + 2 * i], state[at + 2 * i + 1]]).to_f32();
    for (c, (kc, vc)) in k.iter_mut().zip(v.iter_mut()).enumerate() {
        *kc = h(c);
        *vc = h(d + c);
    }
}

/// Dequantizes row `row` of head `head` at rung `rung >= 1` into `k`, `v`.
fn read_quantized(
    layout: &SaqLayout,
    state: &[u8],
    rung: usize,
    row: usize,
    head: usize,
    k: &mut [f32],
    v: &mut [f32],
) {
    let (d, bits) = (layout.dim(), layout.bits(rung));
    let w = layout.row_bytes(rung);
    let at = layout.row_offset(rung, row, head);
    let bytes = &state[at..at + w];
    let (vc, vm) = (
        layout.value_codes_offset(rung),
        layout.value_meta_offset(rung),
    );
    let gv = layout.value_group();
    for (c, x) in v[..d].iter_mut().enumerate() {
        let meta = GroupMeta::from_bytes(&bytes[vm + 4 * (c / gv)..]);
        *x = dequantize(get_code(&bytes[vc..], c, bits), meta);
    }
    // Key meta lives in the rows of the key group this row belongs to.
    let gk = layout.key_group();
    let first = row - row % gk;
    let km = layout.key_meta_offset(rung);
    for (c, x) in k[..d].iter_mut().enumerate() {
        let (r, off) = layout.key_meta_slot(c);
        let m = layout.row_offset(rung, first + r, head) + km + off;
        let meta = GroupMeta::from_bytes(&state[m..m + 4]);
        *x = dequantize(get_code(bytes, c, bits), meta);
    }
}

/// Token `t` of head `head` (dequantized) when the cache holds `tokens`
/// tokens, into `k` and `v` (`D` values each).
pub fn read_token(
    layout: &SaqLayout,
    state: &[u8],
    tokens: usize,
    t: usize,
    head: usize,
    k: &mut [f32],
    v: &mut [f32],
) {
    let loc = layout.locate(tokens, t);
    if loc.rung == 0 {
        read_residual(layout, state, loc.row, head, k, v);
    } else {
        read_quantized(layout, state, loc.rung, loc.row, head, k, v);
    }
}

/// Quantizes one head's chunk (`k`, `v`: `[S][D]`) at rung `rung >= 1`:
/// returns its `S` rows of bytes and replaces `k`, `v` by their
/// dequantized values (the start of the next step down).
pub fn quantize_chunk(layout: &SaqLayout, rung: usize, k: &mut [f32], v: &mut [f32]) -> Vec<u8> {
    let (s, d, bits) = (layout.chunk(), layout.dim(), layout.bits(rung));
    let w = layout.row_bytes(rung);
    let mut out = vec![0u8; s * w];
    let (vc, vm, km) = (
        layout.value_codes_offset(rung),
        layout.value_meta_offset(rung),
        layout.key_meta_offset(rung),
    );
    // Keys: per channel over groups of Gk tokens.
    let gk = layout.key_group();
    for g in 0..s / gk {
        for c in 0..d {
            let idx = |i: usize| (g * gk + i) * d + c;
            let meta = group_meta((0..gk).map(|i| k[idx(i)]), bits);
            let (r, off) = layout.key_meta_slot(c);
            let m = (g * gk + r) * w + km + off;
            out[m..m + 4].copy_from_slice(&meta.to_bytes());
            for i in 0..gk {
                let q = quantize(k[idx(i)], meta, bits);
                set_code(&mut out[(g * gk + i) * w..], c, bits, q);
                k[idx(i)] = dequantize(q, meta);
            }
        }
    }
    // Values: per token over groups of Gv channels.
    let gv = layout.value_group();
    for i in 0..s {
        let row = &mut out[i * w..(i + 1) * w];
        for g in 0..layout.value_groups() {
            let chans = g * gv..((g + 1) * gv).min(d);
            let meta = group_meta(chans.clone().map(|c| v[i * d + c]), bits);
            row[vm + 4 * g..vm + 4 * g + 4].copy_from_slice(&meta.to_bytes());
            for c in chans {
                let q = quantize(v[i * d + c], meta, bits);
                set_code(&mut row[vc..], c, bits, q);
                v[i * d + c] = dequantize(q, meta);
            }
        }
    }
    out
}

/// Appends `seq` tokens (`k`, `v`: `[seq, H, D]`, row-major) to a cache
/// holding `past` tokens. Tokens enter at f16; each chunk completed by them
/// is quantized at `B2`, and every older chunk not at the bottom steps down
/// one rung per completed chunk, requantized from its dequantized values.
pub fn append(
    layout: &SaqLayout,
    state: &mut [u8],
    past: usize,
    seq: usize,
    k: &[f64],
    v: &[f64],
) -> Result<(), SaqError> {
    check(layout, state.len(), past, seq)?;
    let (h, d, s) = (layout.heads(), layout.dim(), layout.chunk());
    check_len("new keys", k.len(), seq * h * d)?;
    check_len("new values", v.len(), seq * h * d)?;
    let total = past + seq;
    let (n0, n1) = (past / s, total / s);
    let bottom = layout.bottom();
    let (mut ck, mut cv) = (vec![0f32; s * d], vec![0f32; s * d]);
    for head in 0..h {
        // Oldest first: a chunk's destination was vacated by an older chunk
        // already moved, and its source is not yet overwritten (see the
        // module docs of `crate::saq`).
        for c in (n0 + 1).saturating_sub(bottom)..n1 {
            let to = (n1 - c).min(bottom);
            let from = if c < n0 {
                let from = (n0 - c).min(bottom);
                if from == to {
                    continue;
                }
                for i in 0..s {
                    let row = layout.chunk_first_row(from, c) + i;
                    read_quantized(
                        layout,
                        state,
                        from,
                        row,
                        head,
                        &mut ck[i * d..(i + 1) * d],
                        &mut cv[i * d..(i + 1) * d],
                    );
                }
                from
            } else {
                for i in 0..s {
                    let t = c * s + i;
                    let (kr, vr) = (&mut ck[i * d..(i + 1) * d], &mut cv[i * d..(i + 1) * d]);
                    if t < past {
                        read_residual(layout, state, t - n0 * s, head, kr, vr);
                    } else {
                        let at = ((t - past) * h + head) * d;
                        for ch in 0..d {
                            kr[ch] = round_f16(k[at + ch]).to_f32();
                            vr[ch] = round_f16(v[at + ch]).to_f32();
                        }
                    }
                }
                0
            };
            let mut bytes = Vec::new();
            for r in from + 1..=to {
                bytes = quantize_chunk(layout, r, &mut ck, &mut cv);
            }
            let (w, first) = (layout.row_bytes(to), layout.chunk_first_row(to, c));
            for i in 0..s {
                let at = layout.row_offset(to, first + i, head);
                state[at..at + w].copy_from_slice(&bytes[i * w..(i + 1) * w]);
            }
        }
        // Residual rows whose tokens went into chunks are cleared, so that
        // unused bytes are zero whatever the history (prefill and decode
        // give the same bytes); then the new tokens after the last complete
        // chunk enter the residual.
        if n1 > n0 {
            let w = layout.row_bytes(0);
            for row in 0..past - n0 * s {
                let at = layout.row_offset(0, row, head);
                state[at..at + w].fill(0);
            }
        }
        for t in past.max(n1 * s)..total {
            let at = layout.row_offset(0, t - n1 * s, head);
            let src = ((t - past) * h + head) * d;
            for ch in 0..d {
                let kb = round_f16(k[src + ch]).to_le_bytes();
                let vb = round_f16(v[src + ch]).to_le_bytes();
                state[at + 2 * ch..at + 2 * ch + 2].copy_from_slice(&kb);
                state[at + 2 * (d + ch)..at + 2 * (d + ch) + 2].copy_from_slice(&vb);
            }
        }
    }
    Ok(())
}

/// The sizes of an [`attention`] call: queries `[heads, group, seq, dim]`
/// (`group` query heads per KV head, as grouped-query attention lays them
/// out), new keys and values `[seq, heads, dim]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub heads: usize,
    pub group: usize,
    pub seq: usize,
    pub dim: usize,
}

/// Causal attention of `seq` new queries at positions `past..past+seq`
/// over the `past` cached tokens (read from the state, dequantized) and the
/// new keys and values themselves (exact). `state` holds `past + seq`
/// tokens (it is the result of appending `k_new`, `v_new`); query `i` sees
/// positions `0..=past+i`. Scores `scale·q·k`, max-subtracted softmax, in
/// f64 from the f32 dequantized values. Returns `[heads, group, seq, dim]`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    layout: &SaqLayout,
    state: &[u8],
    past: usize,
    shape: AttentionShape,
    q: &[f64],
    k_new: &[f64],
    v_new: &[f64],
    scale: f64,
) -> Result<Vec<f64>, SaqError> {
    let AttentionShape {
        heads,
        group,
        seq,
        dim,
    } = shape;
    if heads != layout.heads() || dim != layout.dim() {
        return Err(SaqError::Operand {
            what: "attention",
            problem: format!(
                "{heads} heads of {dim} channels against a layout of {} of {}",
                layout.heads(),
                layout.dim()
            ),
        });
    }
    check(layout, state.len(), past, seq)?;
    check_len("queries", q.len(), heads * group * seq * dim)?;
    check_len("new keys", k_new.len(), seq * heads * dim)?;
    check_len("new values", v_new.len(), seq * heads * dim)?;
    let total = past + seq;
    let mut out = vec![0f64; heads * group * seq * dim];
    let (mut kc, mut vc) = (vec![0f64; total * dim], vec![0f64; total * dim]);
    let (mut kr, mut vr) = (vec![0f32; dim], vec![0f32; dim]);
    let mut scores = vec![0f64; total];
    for h in 0..heads {
        // The keys and values this head sees, in order of position.
        for t in 0..total {
            let (kd, vd) = (
                &mut kc[t * dim..(t + 1) * dim],
                &mut vc[t * dim..(t + 1) * dim],
            );
            if t < past {
                read_token(layout, state, total, t, h, &mut kr, &mut vr);
                for c in 0..dim {
                    kd[c] = kr[c] as f64;
                    vd[c] = vr[c] as f64;
                }
            } else {
                let at = ((t - past) * heads + h) * dim;
                kd.copy_from_slice(&k_new[at..at + dim]);
                vd.copy_from_slice(&v_new[at..at + dim]);
            }
        }
        for g in 0..group {
            for i in 0..seq {
                let qo = ((h * group + g) * seq + i) * dim;
                let qi = &q[qo..qo + dim];
                let visible = past + i + 1;
                let mut max = f64::NEG_INFINITY;
                for (j, sc) in scores[..visible].iter_mut().enumerate() {
                    let kj = &kc[j * dim..(j + 1) * dim];
                    *sc = scale * qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>();
                    max = max.max(*sc);
                }
                let mut denom = 0.0;
                for sc in scores[..visible].iter_mut() {
                    *sc = (*sc - max).exp();
                    denom += *sc;
                }
                let row = &mut out[qo..qo + dim];
                for (j, &p) in scores[..visible].iter().enumerate() {
                    for (o, x) in row.iter_mut().zip(&vc[j * dim..(j + 1) * dim]) {
                        *o += p * x;
                    }
                }
                for o in row.iter_mut() {
                    *o /= denom;
                }
            }
        }
    }
    Ok(out)
}
