//! The CPU attention kernel (see `attention`).
//!
//! A block owns up to [`ROWS`] query rows of one batch index. It walks the
//! keys its last row can see in tiles of `TK` keys (for prflash a divisor of
//! `Bs`, so a tile lies in one sampling block); inside a tile, row by row:
//! the row's visible keys (the causal limit, then the keep predicate) get
//! their scores into a scratch row, the running max and sum are updated once
//! per tile, and the accumulator row is rescaled once and then gets `p·v`
//! for each key. The tile is reused from L1 across the block's rows; a tile
//! of token-major keys (a KV cache read in place, `kv_len`) is first copied
//! into contiguous scratch when the block has several rows (see `Packing`).
//!
//! Scratch lives on the stack, allocated once at the function's entry: the
//! tile's scores, each row's running max and sum, and the `ROWS × Dv`
//! accumulators. For `f32`, dot products and `p·v` run on `vector<16xf32>`
//! (fully unrolled with the query row held in registers when the head size
//! is a constant up to [`MAX_FIXED`], else a vector loop and a scalar tail);
//! `f16`/`bf16` load element by element converting to `f32`.

use crate::attention::{block_keep, fmax, prob, rescale, row_hash, score, visible, Attn, Base};
use crate::builder::{for_loop, if_then, Builder, Ty, R, V};
use crate::ctx::Ctx;
use crate::scalar;
use kiln_ir::{DType, Dim};

/// Query rows per block.
pub const ROWS: i64 = 16;
/// Keys per tile (flash attention; prflash uses a divisor of its block size).
const TK: i64 = 32;
/// Vector width of the `f32` loops.
const VW: u32 = 16;
/// Head sizes up to this are unrolled into fixed vector pieces.
const MAX_FIXED: i64 = 256;
/// `p·v` carries at most this many vectors through one key loop.
const MAX_CARRIED: usize = 8;

/// The key tile for `a`.
fn key_tile(a: &Attn) -> i64 {
    match a.keep {
        Some(k) => (1..=TK.min(k.block))
            .rev()
            .find(|t| k.block % t == 0)
            .unwrap_or(1),
        None => TK,
    }
}

/// How a contiguous row of `n` elements is walked.
enum Lanes {
    /// A constant `f32` length: pieces `(offset, width)` of 16/8/4 lanes
    /// and single elements.
    Fixed(Vec<(i64, u32)>),
    /// A symbolic (or long) `f32` length: 16-lane vectors, then a scalar tail.
    Vector,
    /// Other dtypes: element by element.
    Scalar,
}

fn lanes(n: &Dim, dt: DType) -> Lanes {
    if dt != DType::F32 {
        return Lanes::Scalar;
    }
    match n.as_const() {
        Some(n) if n <= MAX_FIXED => {
            let mut out = Vec::new();
            let mut off = 0;
            for w in [16u32, 8, 4] {
                while n - off >= w as i64 {
                    out.push((off, w));
                    off += w as i64;
                }
            }
            while off < n {
                out.push((off, 1));
                off += 1;
            }
            Lanes::Fixed(out)
        }
        _ => Lanes::Vector,
    }
}

fn vty(w: u32) -> Ty {
    if w == 1 {
        Ty::F32
    } else {
        Ty::VF32(w)
    }
}

/// Loads `w` lanes at element `i` (`w = 1`: one element of `dt`, converted).
fn vload(b: &mut Builder, ptr: V, i: V, w: u32, dt: DType) -> V {
    if w == 1 {
        return scalar::load(b, ptr, i, dt);
    }
    let p = b.gep(ptr, i, Ty::F32);
    let t = vty(w);
    b.op(
        t,
        &format!("llvm.load {p} {{alignment = 4 : i64}} : !llvm.ptr -> {t}"),
    )
}

/// Stores `f32` lanes to `f32` scratch.
fn vstore(b: &mut Builder, v: V, ptr: V, i: V) {
    let p = b.gep(ptr, i, Ty::F32);
    b.line(&format!(
        "llvm.store {v}, {p} {{alignment = 4 : i64}} : {}, !llvm.ptr",
        v.ty
    ));
}

fn splat(b: &mut Builder, s: V, w: u32) -> V {
    if w == 1 {
        return s;
    }
    let t = vty(w);
    b.pure(t, format!("vector.broadcast {s} : f32 to {t}"))
}

fn fma(b: &mut Builder, x: V, y: V, acc: V) -> V {
    b.pure(acc.ty, format!("math.fma {x}, {y}, {acc} : {}", acc.ty))
}

fn hsum(b: &mut Builder, v: V) -> V {
    if v.ty == Ty::F32 {
        return v;
    }
    b.pure(
        Ty::F32,
        format!(
            "vector.reduction <add>, {v} fastmath<reassoc> : {} into f32",
            v.ty
        ),
    )
}

fn zero(b: &mut Builder, w: u32) -> V {
    if w == 1 {
        return b.cf(Ty::F32, 0.0);
    }
    let t = vty(w);
    b.in_prologue(|b| b.pure(t, format!("arith.constant dense<0.000000e+00> : {t}")))
}

/// `llvm.alloca` of `n` f32s at the function's entry (`n` defined there).
fn alloca(b: &mut Builder, n: V) -> V {
    b.in_prologue(|b| {
        b.op(
            Ty::Ptr,
            &format!("llvm.alloca {n} x f32 {{alignment = 64 : i64}} : (i64) -> !llvm.ptr"),
        )
    })
}

/// Scratch of one block.
struct Scratch {
    /// Scores, then probabilities, of one row's tile.
    s: V,
    m: V,
    l: V,
    /// `ROWS × Dv` accumulators.
    acc: V,
}

pub(crate) fn block(cx: &mut Ctx, a: &Attn, base: &Base) -> R<()> {
    let tk_tile = key_tile(a);
    let dv = base.dv;
    let sc = {
        let b = &mut cx.b;
        let n = b.i64c(tk_tile);
        let s = alloca(b, n);
        let r = b.i64c(ROWS);
        let m = alloca(b, r);
        let l = alloca(b, r);
        // Not CSE'd: the product must be emitted in the prologue.
        let na = b.in_prologue(|b| b.op(Ty::I64, &format!("arith.muli {r}, {dv} : i64")));
        let acc = alloca(b, na);
        Scratch { s, m, l, acc }
    };
    let one = cx.b.i64c(1);
    let z = cx.b.i64c(0);
    let rows = cx.b.i64c(ROWS);
    let i1 = cx.b.add(base.i0, rows);
    let i1 = cx.b.min_s(i1, base.tq);
    let nrows = cx.b.sub(i1, base.i0);
    // Initial state: max -inf, sum 0, accumulators 0.
    for_loop(cx, z, nrows, one, &[], |cx, r, _| {
        let ninf = cx.b.cf(Ty::F32, f64::NEG_INFINITY);
        let zf = cx.b.cf(Ty::F32, 0.0);
        let p = cx.b.gep(sc.m, r, Ty::F32);
        cx.b.store(ninf, p);
        let p = cx.b.gep(sc.l, r, Ty::F32);
        cx.b.store(zf, p);
        Ok(vec![])
    })?;
    let nacc = cx.b.mul(nrows, dv);
    for_loop(cx, z, nacc, one, &[], |cx, x, _| {
        let zf = cx.b.cf(Ty::F32, 0.0);
        let p = cx.b.gep(sc.acc, x, Ty::F32);
        cx.b.store(zf, p);
        Ok(vec![])
    })?;
    // Keys any row of the block can see: causal blocks stop at the last
    // row's diagonal.
    let kend = if a.causal {
        let e = cx.b.add(i1, base.offset);
        cx.b.min_s(e, base.tk)
    } else {
        base.tk
    };
    let tkv = cx.b.i64c(tk_tile);
    let pack = packing(cx, a, tk_tile);
    for_loop(cx, z, kend, tkv, &[], |cx, kb, _| {
        let rest = cx.b.sub(kend, kb);
        let jn = cx.b.min_s(tkv, rest);
        let tile = match &pack {
            Some(pk) => pk.tile(cx, base, nrows, kb, jn)?,
            None => Tile {
                pk: cx.bufs[1],
                pv: cx.bufs[2],
                base: *base,
            },
        };
        let base = &tile.base;
        for_loop(cx, z, nrows, one, &[], |cx, r, _| {
            let i = cx.b.add(base.i0, r);
            let p = cx.b.add(i, base.offset);
            let mut lim = visible(cx, a, p, kb, jn);
            if let (Some(k), Some(hh)) = (a.keep, base.head_hash) {
                let bs = cx.b.i64c(k.block);
                let qb = cx.b.div(p, bs);
                let kbb = cx.b.div(kb, bs);
                let rh = row_hash(&mut cx.b, hh, qb);
                let keep = block_keep(&mut cx.b, &k, rh, qb, kbb);
                let zero = cx.b.i64c(0);
                lim = cx.b.select(keep, lim, zero);
            }
            let zero = cx.b.i64c(0);
            let any = cx.b.cmpi("sgt", lim, zero);
            if_then(cx, any, |cx| {
                row_tile(cx, a, base, &sc, (tile.pk, tile.pv), r, i, p, kb, lim)
            })?;
            Ok(vec![])
        })?;
        Ok(vec![])
    })?;
    // out = acc / l (an all-masked row is 0/0 = NaN).
    let out = cx.bufs[a.out_buf()];
    for_loop(cx, z, nrows, one, &[], |cx, r, _| {
        let p = cx.b.gep(sc.l, r, Ty::F32);
        let l = cx.b.load(p, Ty::F32);
        let i = cx.b.add(base.i0, r);
        let orow = cx.b.mul(i, dv);
        let orow = cx.b.add(base.o_off, orow);
        let arow = cx.b.mul(r, dv);
        for_loop(cx, z, dv, one, &[], |cx, d, _| {
            let ai = cx.b.add(arow, d);
            let p = cx.b.gep(sc.acc, ai, Ty::F32);
            let x = cx.b.load(p, Ty::F32);
            let y = cx.b.fbin("divf", x, l);
            let oi = cx.b.add(orow, d);
            scalar::store(&mut cx.b, out, oi, a.dt, y);
            Ok(vec![])
        })?;
        Ok(vec![])
    })?;
    Ok(())
}

/// Where a key tile's rows are read from: the operands, or a packed copy.
struct Tile {
    pk: V,
    pv: V,
    /// `base` with the key and value offsets and strides of `pk`, `pv`.
    base: Base,
}

/// Token-major keys (a KV cache read in place) are rows a few KiB apart,
/// which fall on a quarter of L1's sets: a tile of them and its values
/// thrash there while the block's rows reread them. A block of several rows
/// therefore first copies the tile into contiguous scratch (`f32`, constant
/// head sizes); a decode block (one row) reads each key once and reads it
/// in place.
struct Packing {
    k: V,
    v: V,
    k_pieces: Vec<(i64, u32)>,
    v_pieces: Vec<(i64, u32)>,
}

fn packing(cx: &mut Ctx, a: &Attn, tk_tile: i64) -> Option<Packing> {
    if !a.token_major || a.dt != DType::F32 {
        return None;
    }
    let (Lanes::Fixed(k_pieces), Lanes::Fixed(v_pieces)) = (lanes(&a.d, a.dt), lanes(&a.dv, a.dt))
    else {
        return None;
    };
    let (d, dv) = (a.d.as_const()?, a.dv.as_const()?);
    let nk = cx.b.i64c(tk_tile * d);
    let nv = cx.b.i64c(tk_tile * dv);
    Some(Packing {
        k: alloca(&mut cx.b, nk),
        v: alloca(&mut cx.b, nv),
        k_pieces,
        v_pieces,
    })
}

impl Packing {
    /// The tile of keys `kb .. kb + jn`: packed when the block has two rows
    /// or more.
    fn tile(&self, cx: &mut Ctx, base: &Base, nrows: V, kb: V, jn: V) -> R<Tile> {
        let (pk, pv) = (cx.bufs[1], cx.bufs[2]);
        let two = cx.b.i64c(2);
        let packed = cx.b.cmpi("sge", nrows, two);
        if_then(cx, packed, |cx| {
            let (one, z) = (cx.b.i64c(1), cx.b.i64c(0));
            for_loop(cx, z, jn, one, &[], |cx, jj, _| {
                let j = cx.b.add(kb, jj);
                for (src, stride, off, dst, row, pieces) in [
                    (
                        pk,
                        base.k_stride,
                        base.k_off,
                        self.k,
                        base.d,
                        &self.k_pieces,
                    ),
                    (
                        pv,
                        base.v_stride,
                        base.v_off,
                        self.v,
                        base.dv,
                        &self.v_pieces,
                    ),
                ] {
                    let from = cx.b.mul(j, stride);
                    let from = cx.b.add(off, from);
                    let to = cx.b.mul(jj, row);
                    for &(o, w) in pieces {
                        let o = cx.b.i64c(o);
                        let fi = cx.b.add(from, o);
                        let x = vload(&mut cx.b, src, fi, w, DType::F32);
                        let ti = cx.b.add(to, o);
                        vstore(&mut cx.b, x, dst, ti);
                    }
                }
                Ok(vec![])
            })?;
            Ok(())
        })?;
        // Packed row `jj` of key `kb + jj` is at `(kb + jj)·d - kb·d`.
        let z = cx.b.i64c(0);
        let kbd = cx.b.mul(kb, base.d);
        let k_off = cx.b.sub(z, kbd);
        let kbdv = cx.b.mul(kb, base.dv);
        let v_off = cx.b.sub(z, kbdv);
        let mut t = *base;
        t.k_off = cx.b.select(packed, k_off, base.k_off);
        t.v_off = cx.b.select(packed, v_off, base.v_off);
        t.k_stride = cx.b.select(packed, base.d, base.k_stride);
        t.v_stride = cx.b.select(packed, base.dv, base.v_stride);
        Ok(Tile {
            pk: cx.b.select(packed, self.k, pk),
            pv: cx.b.select(packed, self.v, pv),
            base: t,
        })
    }
}

/// Row `r` (query `i`, position `p`) against keys `kb .. kb + lim`, all visible.
#[allow(clippy::too_many_arguments)]
fn row_tile(
    cx: &mut Ctx,
    a: &Attn,
    base: &Base,
    sc: &Scratch,
    (pk, pv): (V, V),
    r: V,
    i: V,
    p: V,
    kb: V,
    lim: V,
) -> R<()> {
    let pq = cx.bufs[0];
    let one = cx.b.i64c(1);
    let z = cx.b.i64c(0);
    let qrow = cx.b.mul(i, base.d);
    let qrow = cx.b.add(base.q_off, qrow);
    let qlanes = lanes(&a.d, a.dt);
    // The query row, held in registers across the key loop when unrolled.
    let qv: Vec<V> = match &qlanes {
        Lanes::Fixed(pieces) => pieces
            .iter()
            .map(|&(off, w)| {
                let o = cx.b.i64c(off);
                let idx = cx.b.add(qrow, o);
                vload(&mut cx.b, pq, idx, w, a.dt)
            })
            .collect(),
        _ => Vec::new(),
    };
    let ninf = cx.b.cf(Ty::F32, f64::NEG_INFINITY);
    let ahead = prefetched_rows(a);
    let mx = for_loop(cx, z, lim, one, &[ninf], |cx, jj, mx| {
        let j = cx.b.add(kb, jj);
        let krow = cx.b.mul(j, base.k_stride);
        let krow = cx.b.add(base.k_off, krow);
        if let Some((k_lines, v_lines)) = &ahead {
            // Key `j + KEYS_AHEAD` for a later iteration, value `j` for the
            // `p·v` loop after this one.
            let far = cx.b.i64c(KEYS_AHEAD);
            let jf = cx.b.add(j, far);
            let kf = cx.b.mul(jf, base.k_stride);
            let kf = cx.b.add(base.k_off, kf);
            let vrow = cx.b.mul(j, base.v_stride);
            let vrow = cx.b.add(base.v_off, vrow);
            for (buf, row, lines) in [(pk, kf, k_lines), (pv, vrow, v_lines)] {
                for &o in lines {
                    let o = cx.b.i64c(o);
                    let at = cx.b.add(row, o);
                    cx.b.prefetch(buf, at, Ty::F32);
                }
            }
        }
        let dot = dot(cx, &qlanes, &qv, pq, qrow, pk, krow, base.d, a.dt)?;
        let s = score(cx, a, base, dot, i, j, p)?;
        vstore(&mut cx.b, s, sc.s, jj);
        Ok(vec![fmax(&mut cx.b, mx[0], s)])
    })?[0];
    let mp = cx.b.gep(sc.m, r, Ty::F32);
    let m_old = cx.b.load(mp, Ty::F32);
    let (m_new, m_use, alpha) = rescale(cx, m_old, mx);
    let zf = cx.b.cf(Ty::F32, 0.0);
    let psum = for_loop(cx, z, lim, one, &[zf], |cx, jj, acc| {
        let sp = cx.b.gep(sc.s, jj, Ty::F32);
        let s = cx.b.load(sp, Ty::F32);
        let e = prob(cx, s, m_use);
        cx.b.store(e, sp);
        Ok(vec![cx.b.pure(
            Ty::F32,
            format!("arith.addf {}, {e} fastmath<reassoc> : f32", acc[0]),
        )])
    })?[0];
    cx.b.store(m_new, mp);
    let lp = cx.b.gep(sc.l, r, Ty::F32);
    let l = cx.b.load(lp, Ty::F32);
    let l = cx.b.fbin("mulf", l, alpha);
    let l = cx.b.fbin("addf", l, psum);
    cx.b.store(l, lp);
    // acc = acc·alpha + Σ p_j v_j
    let arow = cx.b.mul(r, base.dv);
    let pvx = Pv {
        acc: sc.acc,
        arow,
        probs: sc.s,
        pv,
        kb,
        lim,
        alpha,
        dt: a.dt,
    };
    match lanes(&a.dv, a.dt) {
        Lanes::Fixed(pieces) => {
            for group in pieces.chunks(MAX_CARRIED) {
                let g: Vec<(V, u32)> = group.iter().map(|&(off, w)| (cx.b.i64c(off), w)).collect();
                pv_pieces(cx, base, &pvx, &g)?;
            }
        }
        Lanes::Vector => {
            let n16 = round_down(cx, base.dv);
            let step = cx.b.i64c(VW as i64);
            for_loop(cx, z, n16, step, &[], |cx, c, _| {
                pv_pieces(cx, base, &pvx, &[(c, VW)])?;
                Ok(vec![])
            })?;
            for_loop(cx, n16, base.dv, one, &[], |cx, c, _| {
                pv_pieces(cx, base, &pvx, &[(c, 1)])?;
                Ok(vec![])
            })?;
        }
        Lanes::Scalar => {
            for_loop(cx, z, base.dv, one, &[], |cx, c, _| {
                pv_pieces(cx, base, &pvx, &[(c, 1)])?;
                Ok(vec![])
            })?;
        }
    }
    Ok(())
}

/// How many keys ahead the score loop prefetches a key row.
const KEYS_AHEAD: i64 = 8;

/// Token-major keys and values (a KV cache read in place) lie a row of all
/// heads apart, a new 4 KiB page every key or so, where the hardware
/// prefetchers do not follow: the score loop prefetches them itself, into
/// the outer caches ([`Builder::prefetch`]: prefetched into L1 they held
/// the miss buffers the loads needed). The element offsets of each cache
/// line of a key row and of a value row, for `f32` rows of a constant
/// length; `None` when not token-major.
fn prefetched_rows(a: &Attn) -> Option<(Vec<i64>, Vec<i64>)> {
    if !a.token_major || a.dt != DType::F32 {
        return None;
    }
    let line = 64 / DType::F32.size_bytes() as i64;
    let offsets = |n: i64| (0..n).step_by(line as usize).collect::<Vec<_>>();
    Some((offsets(a.d.as_const()?), offsets(a.dv.as_const()?)))
}

/// `n` rounded down to a multiple of the vector width.
fn round_down(cx: &mut Ctx, n: V) -> V {
    let w = cx.b.i64c(VW as i64);
    let q = cx.b.div(n, w);
    cx.b.mul(q, w)
}

/// `q·k` over the head dim.
#[allow(clippy::too_many_arguments)]
fn dot(
    cx: &mut Ctx,
    lanes: &Lanes,
    qv: &[V],
    pq: V,
    qrow: V,
    pk: V,
    krow: V,
    d: V,
    dt: DType,
) -> R<V> {
    let one = cx.b.i64c(1);
    let z = cx.b.i64c(0);
    let scalar_tail = |cx: &mut Ctx, from: V, init: V| -> R<V> {
        Ok(for_loop(cx, from, d, one, &[init], |cx, t, acc| {
            let qi = cx.b.add(qrow, t);
            let x = scalar::load(&mut cx.b, pq, qi, dt);
            let ki = cx.b.add(krow, t);
            let y = scalar::load(&mut cx.b, pk, ki, dt);
            Ok(vec![fma(&mut cx.b, x, y, acc[0])])
        })?[0])
    };
    match lanes {
        Lanes::Fixed(pieces) => {
            // Products summed as a tree per width, then across widths.
            let mut by_width: Vec<(u32, Vec<V>)> = Vec::new();
            for (&(off, w), &q) in pieces.iter().zip(qv) {
                let o = cx.b.i64c(off);
                let idx = cx.b.add(krow, o);
                let k = vload(&mut cx.b, pk, idx, w, dt);
                let prod = cx.b.fbin("mulf", q, k);
                match by_width.iter_mut().find(|(x, _)| *x == w) {
                    Some((_, v)) => v.push(prod),
                    None => by_width.push((w, vec![prod])),
                }
            }
            let mut total: Option<V> = None;
            for (_, mut vs) in by_width {
                while vs.len() > 1 {
                    let next: Vec<V> = vs
                        .chunks(2)
                        .map(|c| {
                            if c.len() == 2 {
                                cx.b.fbin("addf", c[0], c[1])
                            } else {
                                c[0]
                            }
                        })
                        .collect();
                    vs = next;
                }
                let s = hsum(&mut cx.b, vs[0]);
                total = Some(match total {
                    Some(t) => cx.b.fbin("addf", t, s),
                    None => s,
                });
            }
            Ok(total.unwrap_or_else(|| cx.b.cf(Ty::F32, 0.0)))
        }
        Lanes::Vector => {
            let n16 = round_down(cx, d);
            let step = cx.b.i64c(VW as i64);
            let zv = zero(&mut cx.b, VW);
            let acc = for_loop(cx, z, n16, step, &[zv], |cx, c, acc| {
                let qi = cx.b.add(qrow, c);
                let x = vload(&mut cx.b, pq, qi, VW, dt);
                let ki = cx.b.add(krow, c);
                let y = vload(&mut cx.b, pk, ki, VW, dt);
                Ok(vec![fma(&mut cx.b, x, y, acc[0])])
            })?[0];
            let s = hsum(&mut cx.b, acc);
            scalar_tail(cx, n16, s)
        }
        Lanes::Scalar => {
            let zf = cx.b.cf(Ty::F32, 0.0);
            scalar_tail(cx, z, zf)
        }
    }
}

/// What `p·v` accumulation reads and writes.
struct Pv {
    acc: V,
    arow: V,
    probs: V,
    pv: V,
    kb: V,
    lim: V,
    alpha: V,
    dt: DType,
}

/// For each piece `(offset, width)` of the accumulator row: rescale by
/// `alpha`, add `p_j · v_j` over the tile's keys (carried in registers),
/// store back.
fn pv_pieces(cx: &mut Ctx, base: &Base, x: &Pv, pieces: &[(V, u32)]) -> R<()> {
    let one = cx.b.i64c(1);
    let z = cx.b.i64c(0);
    let mut inits = Vec::with_capacity(pieces.len());
    for &(off, w) in pieces {
        let ai = cx.b.add(x.arow, off);
        let acc = vload(&mut cx.b, x.acc, ai, w, DType::F32);
        let al = splat(&mut cx.b, x.alpha, w);
        inits.push(cx.b.fbin("mulf", acc, al));
    }
    let accs = for_loop(cx, z, x.lim, one, &inits, |cx, jj, accs| {
        let pp = cx.b.gep(x.probs, jj, Ty::F32);
        let pj = cx.b.load(pp, Ty::F32);
        let j = cx.b.add(x.kb, jj);
        let vrow = cx.b.mul(j, base.v_stride);
        let vrow = cx.b.add(base.v_off, vrow);
        let mut next = Vec::with_capacity(pieces.len());
        for (&(off, w), &acc) in pieces.iter().zip(accs) {
            let vi = cx.b.add(vrow, off);
            let v = vload(&mut cx.b, x.pv, vi, w, x.dt);
            let ps = splat(&mut cx.b, pj, w);
            next.push(fma(&mut cx.b, ps, v, acc));
        }
        Ok(next)
    })?;
    for (&(off, _), &acc) in pieces.iter().zip(&accs) {
        let ai = cx.b.add(x.arow, off);
        vstore(&mut cx.b, acc, x.acc, ai);
    }
    Ok(())
}
