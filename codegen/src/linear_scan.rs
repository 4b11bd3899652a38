//! `linear_scan` kernels: `h_t = a_t ⊙ h_{t-1} + b_t` over the time axis for
//! every state element (see [`kiln_ir::linear_scan`]).
//!
//! The grid is over state elements: a block owns a run of consecutive
//! elements and walks time for each, so the recurrence is already parallel
//! over the whole state (`d_inner · N` for Mamba). Two schedules:
//!
//! - **sequential**: each element runs `t = 0..T` with its state in a
//!   register. CPU blocks own [`CPU_VECTORS`] runs of [`VW`] elements as
//!   `vector<16xf32>` values when the state's last dim is a multiple of 16
//!   (f32; `a`/`b` rows contiguous or broadcast), else [`CPU_LANES`]
//!   elements as independent scalar chains;
//!   GPU threads own one element each ([`SCAN_THREADS`] per block).
//! - **chunked**: time is cut into chunks of `L` steps. Phase 1 reduces each
//!   chunk but the last, from a zero state, to `(A, B) = (Π a, scan of b)`;
//!   phase 2 walks the chunks in order combining the pairs with
//!   `(a1, b1) ∘ (a2, b2) = (a1·a2, a2·b1 + b2)` to get each chunk's true
//!   initial state; phase 3 rescans every chunk from it, writing the states.
//!   Phase 1 and 3 are parallel over chunks: on the GPU a block is
//!   [`GPU_CHUNK_ELEMS`] elements × [`GPU_CHUNK_LANES`] lanes of chunks
//!   (barriers between phases), which multiplies the parallelism when the
//!   state is small and `T` large. Scratch (`A`, `B`, then each chunk's
//!   initial state) lives in the states result itself, at the first and
//!   last step of each chunk, before phase 3 overwrites them — so the
//!   schedule needs `L >= 2` and f32 states (16-bit scratch would lose
//!   precision); f16/bf16 scans always run sequentially.
//!
//! The op's `chunk` attribute picks the schedule: `L >= 2` asks for chunks
//! of `L`; `0` is the kernel's choice — sequential on the CPU (its blocks
//! already cover the cores), chunked with `L = max(2, ceil(T / lanes))` on
//! the GPU when the state is a constant smaller than
//! [`GPU_CHUNKED_STATE_LIMIT`] elements.
//!
//! `a` and `b` may broadcast on the state dims (a dim of 1): each element
//! reads them at its broadcast offset. Floats compute in f32; `f16`/`bf16`
//! are converted on load and rounded on store.

use crate::builder::{for_loop, if_then, Ty, R, V};
use crate::ctx::{Ctx, KernelFn};
use crate::elemental::broadcast_index;
use crate::error::CodegenError;
use crate::scalar;
use crate::target::EmitTarget;
use kiln_ir::kernel::{Grid, GridDim};
use kiln_ir::linear_scan::LinearScanOp;
use kiln_ir::{DType, TensorType};

/// Threads of a GPU block.
pub const SCAN_THREADS: u32 = 128;
/// State elements one CPU block runs together.
pub const CPU_LANES: i64 = 8;
/// Elements of the CPU vector path (`vector<16xf32>`: one AVX-512 register).
pub const VW: i64 = 16;
/// Vectors one CPU block carries: each step then reads and writes runs of
/// `VW · CPU_VECTORS` contiguous elements (a step's rows are `N_state`
/// apart, so one vector per step would touch a new cache line per access).
pub const CPU_VECTORS: i64 = 8;
/// GPU chunked schedule: elements per block and lanes of chunks per element.
pub const GPU_CHUNK_ELEMS: i64 = 32;
pub const GPU_CHUNK_LANES: i64 = SCAN_THREADS as i64 / GPU_CHUNK_ELEMS;
/// States smaller than this run chunked on the GPU when the op leaves the
/// choice to the kernel (fewer than ~2 blocks per SM of an H100 otherwise).
pub const GPU_CHUNKED_STATE_LIMIT: i64 = 32768;

/// How time is walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Schedule {
    Sequential,
    /// Chunks of a fixed length, or (`None`) of `max(2, ceil(T / lanes))`.
    Chunked(Option<i64>),
}

fn schedule(op: &LinearScanOp, state: &TensorType, gpu: bool) -> Schedule {
    if state.dtype != DType::F32 {
        return Schedule::Sequential;
    }
    if op.chunk >= 2 {
        return Schedule::Chunked(Some(op.chunk as i64));
    }
    let small = kiln_ir::dim::product(&state.shape)
        .as_const()
        .is_some_and(|n| n < GPU_CHUNKED_STATE_LIMIT);
    if gpu && small {
        Schedule::Chunked(None)
    } else {
        Schedule::Sequential
    }
}

/// One state element a thread works on: its index (clamped into the state
/// on the CPU, so surplus lanes of the last block recompute the last element
/// and store identical values), and the offsets of its coefficients within
/// one step of `a` and `b`.
#[derive(Clone, Copy)]
struct Elem {
    e: V,
    a_off: V,
    b_off: V,
}

/// What every phase needs.
struct Geo {
    dt: DType,
    reverse: bool,
    t: V,
    n_state: V,
    a_step: V,
    b_step: V,
}

/// Emits `linear_scan(h0, a, b)`; returns its function, grid and GPU thread count.
pub fn emit_linear_scan(
    name: &str,
    op: &LinearScanOp,
    operands: &[TensorType],
    symbols: &[String],
    target: EmitTarget,
) -> R<(KernelFn, Grid, u32)> {
    let bad = |message: String| CodegenError::BadSpec {
        kernel: name.to_string(),
        message,
    };
    let [h0, a, b] = operands else {
        return Err(bad(format!(
            "linear_scan takes 3 operands, got {}",
            operands.len()
        )));
    };
    if !h0.dtype.is_float() {
        return Err(CodegenError::UnsupportedDType {
            kernel: name.to_string(),
            op: "linear_scan".into(),
            dtype: h0.dtype,
        });
    }
    let sched = schedule(op, h0, target.gpu);
    let vector = !target.gpu && sched == Schedule::Sequential && vectorizable(h0);
    let per_block = match (target.gpu, sched) {
        (false, _) if vector => VW * CPU_VECTORS,
        (false, _) => CPU_LANES,
        (true, Schedule::Sequential) => SCAN_THREADS as i64,
        (true, Schedule::Chunked(_)) => GPU_CHUNK_ELEMS,
    };
    let n_state = kiln_ir::dim::product(&h0.shape);
    let grid = Grid {
        dims: vec![GridDim {
            extent: n_state,
            tile: per_block,
        }],
    };
    let (state, a_dims, b_dims) = (
        h0.shape.clone(),
        a.shape[1..].to_vec(),
        b.shape[1..].to_vec(),
    );
    let kf = Ctx::kernel_fn(name, 5, symbols, target, SCAN_THREADS, |cx, block| {
        let sdims = cx.dims(&state)?;
        let ad = cx.dims(&a_dims)?;
        let bd = cx.dims(&b_dims)?;
        let geo = Geo {
            dt: h0.dtype,
            reverse: op.reverse,
            t: cx.dim(&a.shape[0])?,
            n_state: product(cx, &sdims),
            a_step: product(cx, &ad),
            b_step: product(cx, &bd),
        };
        let elem = |cx: &mut Ctx, e: V| -> Elem {
            let idx = cx.delinearize(e, &sdims);
            let ai = broadcast_index(cx, &idx, &a_dims);
            let bi = broadcast_index(cx, &idx, &b_dims);
            let a_off = cx.linearize(&ai, &ad);
            let b_off = cx.linearize(&bi, &bd);
            Elem { e, a_off, b_off }
        };
        let pb = cx.b.i64c(per_block);
        let first = cx.b.mul(block, pb);
        match cx.threads {
            None if vector => {
                // Vector `j` starts at element `first + VW·j`, clamped so a
                // short last block recomputes (and stores the same values
                // into) the state's last vector.
                let vw = cx.b.i64c(VW);
                let last = cx.b.sub(geo.n_state, vw);
                let els: Vec<Elem> = (0..CPU_VECTORS)
                    .map(|j| {
                        let off = cx.b.i64c(VW * j);
                        let e = cx.b.add(first, off);
                        let e = cx.b.min_s(e, last);
                        elem(cx, e)
                    })
                    .collect();
                let a_row = a_dims.last() == state.last();
                let b_row = b_dims.last() == state.last();
                vector_sequential(cx, &geo, &els, a_row, b_row)
            }
            None => {
                let one = cx.b.i64c(1);
                let last = cx.b.sub(geo.n_state, one);
                let elems: Vec<Elem> = (0..CPU_LANES)
                    .map(|k| {
                        let kv = cx.b.i64c(k);
                        let e = cx.b.add(first, kv);
                        let e = cx.b.min_s(e, last);
                        elem(cx, e)
                    })
                    .collect();
                match sched {
                    Schedule::Sequential => sequential(cx, &geo, &elems),
                    Schedule::Chunked(len) => {
                        let (lane, lanes) = (cx.b.i64c(0), cx.b.i64c(1));
                        chunked(cx, &geo, &elems, len, lane, lanes, None)
                    }
                }
            }
            Some(th) => {
                let (local, lane, lanes) = match sched {
                    Schedule::Sequential => (th.tid, cx.b.i64c(0), cx.b.i64c(1)),
                    Schedule::Chunked(_) => {
                        let w = cx.b.i64c(GPU_CHUNK_ELEMS);
                        let local = cx.b.rem(th.tid, w);
                        let lane = cx.b.div(th.tid, w);
                        (local, lane, cx.b.i64c(GPU_CHUNK_LANES))
                    }
                };
                let e = cx.b.add(first, local);
                let valid = cx.b.cmpi("slt", e, geo.n_state);
                // Out-of-range threads compute addresses of element 0 but
                // never touch memory (every access is under `valid`).
                let zero = cx.b.i64c(0);
                let safe = cx.b.select(valid, e, zero);
                let el = [elem(cx, safe)];
                match sched {
                    Schedule::Sequential => if_then(cx, valid, |cx| sequential(cx, &geo, &el)),
                    Schedule::Chunked(len) => chunked(cx, &geo, &el, len, lane, lanes, Some(valid)),
                }
            }
        }
    })?;
    Ok((kf, grid, SCAN_THREADS))
}

fn product(cx: &mut Ctx, dims: &[V]) -> V {
    let mut p = cx.b.i64c(1);
    for &d in dims {
        p = cx.b.mul(p, d);
    }
    p
}

/// The CPU vector path applies: f32, and the state's last dim a constant
/// multiple of [`VW`], so a block's elements lie in one row where `a` and
/// `b` are either contiguous (their last dim is the state's) or one value.
fn vectorizable(h0: &TensorType) -> bool {
    h0.dtype == DType::F32
        && h0
            .shape
            .last()
            .and_then(|d| d.as_const())
            .is_some_and(|n| n > 0 && n % VW == 0)
}

/// Runs of `VW` consecutive elements as `vector<VW x f32>` values: loads
/// (or a broadcast scalar, where the coefficient is shared along the row),
/// one FMA and one store per vector and step.
fn vector_sequential(cx: &mut Ctx, g: &Geo, els: &[Elem], a_row: bool, b_row: bool) -> R<()> {
    let vty = Ty::VF32(VW as u32);
    let load_vec = |cx: &mut Ctx, buf: V, i: V| -> V {
        let p = cx.b.gep(buf, i, Ty::F32);
        cx.b.op(
            vty,
            &format!("llvm.load {p} {{alignment = 4 : i64}} : !llvm.ptr -> {vty}"),
        )
    };
    let load_coef = |cx: &mut Ctx, buf: V, i: V, row: bool| -> V {
        if row {
            load_vec(cx, buf, i)
        } else {
            let p = cx.b.gep(buf, i, Ty::F32);
            let s = cx.b.load(p, Ty::F32);
            cx.b.pure(vty, format!("vector.broadcast {s} : f32 to {vty}"))
        }
    };
    let store_vec = |cx: &mut Ctx, buf: V, i: V, v: V| {
        let p = cx.b.gep(buf, i, Ty::F32);
        cx.b.line(&format!(
            "llvm.store {v}, {p} {{alignment = 4 : i64}} : {vty}, !llvm.ptr"
        ));
    };
    let (p0, pa, pb, pf, ps) = (cx.bufs[0], cx.bufs[1], cx.bufs[2], cx.bufs[3], cx.bufs[4]);
    let h: Vec<V> = els.iter().map(|el| load_vec(cx, p0, el.e)).collect();
    let zero = cx.b.i64c(0);
    let one = cx.b.i64c(1);
    let h = for_loop(cx, zero, g.t, one, &h, |cx, i, hs| {
        let t = pos(cx, g, i);
        let at = cx.b.mul(t, g.a_step);
        let bt = cx.b.mul(t, g.b_step);
        let mut next = Vec::with_capacity(els.len());
        for (el, &h) in els.iter().zip(hs) {
            let ai = cx.b.add(at, el.a_off);
            let bi = cx.b.add(bt, el.b_off);
            let av = load_coef(cx, pa, ai, a_row);
            let bv = load_coef(cx, pb, bi, b_row);
            next.push(cx.b.pure(vty, format!("math.fma {av}, {h}, {bv} : {vty}")));
        }
        for (el, &h) in els.iter().zip(&next) {
            let si = state_index(cx, g, el, t);
            store_vec(cx, ps, si, h);
        }
        Ok(next)
    })?;
    for (el, &v) in els.iter().zip(&h) {
        store_vec(cx, pf, el.e, v);
    }
    Ok(())
}

/// `x·y + acc`, contracted to an FMA by the backend (`math.fma` would be a
/// libdevice call on the GPU).
fn fma(cx: &mut Ctx, x: V, y: V, acc: V) -> V {
    let p = cx.b.pure(
        Ty::F32,
        format!("arith.mulf {x}, {y} fastmath<contract> : f32"),
    );
    cx.b.pure(
        Ty::F32,
        format!("arith.addf {acc}, {p} fastmath<contract> : f32"),
    )
}

/// The time position of logical step `i` (from the end when reversed).
fn pos(cx: &mut Ctx, g: &Geo, i: V) -> V {
    if g.reverse {
        let one = cx.b.i64c(1);
        let last = cx.b.sub(g.t, one);
        cx.b.sub(last, i)
    } else {
        i
    }
}

/// `a` and `b` of element `el` at time position `t`.
fn coefs(cx: &mut Ctx, g: &Geo, el: &Elem, t: V) -> (V, V) {
    let at = cx.b.mul(t, g.a_step);
    let ai = cx.b.add(at, el.a_off);
    let bt = cx.b.mul(t, g.b_step);
    let bi = cx.b.add(bt, el.b_off);
    let (pa, pb) = (cx.bufs[1], cx.bufs[2]);
    let av = scalar::load(&mut cx.b, pa, ai, g.dt);
    let bv = scalar::load(&mut cx.b, pb, bi, g.dt);
    (av, bv)
}

/// Index of element `el` at time position `t` in the states result.
fn state_index(cx: &mut Ctx, g: &Geo, el: &Elem, t: V) -> V {
    let row = cx.b.mul(t, g.n_state);
    cx.b.add(row, el.e)
}

fn load_state(cx: &mut Ctx, g: &Geo, el: &Elem, t: V) -> V {
    let i = state_index(cx, g, el, t);
    let p = cx.bufs[4];
    scalar::load(&mut cx.b, p, i, g.dt)
}

fn store_state(cx: &mut Ctx, g: &Geo, el: &Elem, t: V, v: V) {
    let i = state_index(cx, g, el, t);
    let p = cx.bufs[4];
    scalar::store(&mut cx.b, p, i, g.dt, v);
}

fn store_final(cx: &mut Ctx, g: &Geo, el: &Elem, v: V) {
    let p = cx.bufs[3];
    scalar::store(&mut cx.b, p, el.e, g.dt, v);
}

/// Runs logical steps `i0..i1` from states `h`, storing every state;
/// returns the last ones.
fn scan_range(cx: &mut Ctx, g: &Geo, elems: &[Elem], h: Vec<V>, i0: V, i1: V) -> R<Vec<V>> {
    let one = cx.b.i64c(1);
    for_loop(cx, i0, i1, one, &h, |cx, i, hs| {
        let t = pos(cx, g, i);
        let mut next = Vec::with_capacity(elems.len());
        for (el, &h) in elems.iter().zip(hs) {
            let (a, b) = coefs(cx, g, el, t);
            let h = fma(cx, a, h, b);
            store_state(cx, g, el, t, h);
            next.push(h);
        }
        Ok(next)
    })
}

/// The sequential schedule.
fn sequential(cx: &mut Ctx, g: &Geo, elems: &[Elem]) -> R<()> {
    let p0 = cx.bufs[0];
    let h: Vec<V> = elems
        .iter()
        .map(|el| scalar::load(&mut cx.b, p0, el.e, g.dt))
        .collect();
    let zero = cx.b.i64c(0);
    let h = scan_range(cx, g, elems, h, zero, g.t)?;
    for (el, v) in elems.iter().zip(h) {
        store_final(cx, g, el, v);
    }
    Ok(())
}

/// Runs `f` under `valid` (GPU threads past the state) or unconditionally.
fn guarded(cx: &mut Ctx, valid: Option<V>, f: impl FnOnce(&mut Ctx) -> R<()>) -> R<()> {
    match valid {
        Some(v) => if_then(cx, v, f),
        None => f(cx),
    }
}

/// The chunked schedule (see the module docs). `lane` of `lanes` picks
/// this thread's chunks; `valid` guards memory on the GPU, where the
/// phases are separated by block barriers.
fn chunked(
    cx: &mut Ctx,
    g: &Geo,
    elems: &[Elem],
    fixed: Option<i64>,
    lane: V,
    lanes: V,
    valid: Option<V>,
) -> R<()> {
    let gpu = valid.is_some();
    let one = cx.b.i64c(1);
    let len = match fixed {
        Some(l) => cx.b.i64c(l),
        None => {
            let per = cx.ceil_div(g.t, GPU_CHUNK_LANES);
            let two = cx.b.i64c(2);
            cx.b.max_s(per, two)
        }
    };
    // C = ceil(T / L) chunks.
    let lm1 = cx.b.sub(len, one);
    let tl = cx.b.add(g.t, lm1);
    let chunks = cx.b.div(tl, len);
    let full = cx.b.sub(chunks, one);

    // Phase 1: (Π a, scan of b from 0) of every chunk but the last, kept at
    // the chunk's first and last step.
    guarded(cx, valid, |cx| {
        for_loop(cx, lane, full, lanes, &[], |cx, c, _| {
            let i0 = cx.b.mul(c, len);
            let i1 = cx.b.add(i0, len);
            let init_a = cx.b.cf(Ty::F32, 1.0);
            let init_b = cx.b.cf(Ty::F32, 0.0);
            let mut inits = vec![init_a; elems.len()];
            inits.extend(vec![init_b; elems.len()]);
            let n = elems.len();
            let ab = for_loop(cx, i0, i1, one, &inits, |cx, i, acc| {
                let t = pos(cx, g, i);
                let mut na = Vec::with_capacity(2 * n);
                let mut nb = Vec::with_capacity(n);
                for (k, el) in elems.iter().enumerate() {
                    let (a, b) = coefs(cx, g, el, t);
                    let pa =
                        cx.b.pure(Ty::F32, format!("arith.mulf {a}, {} : f32", acc[k]));
                    na.push(pa);
                    nb.push(fma(cx, a, acc[n + k], b));
                }
                na.extend(nb);
                Ok(na)
            })?;
            let t_first = pos(cx, g, i0);
            let i_last = cx.b.sub(i1, one);
            let t_last = pos(cx, g, i_last);
            for (k, el) in elems.iter().enumerate() {
                store_state(cx, g, el, t_first, ab[k]);
                store_state(cx, g, el, t_last, ab[n + k]);
            }
            Ok(vec![])
        })?;
        Ok(())
    })?;
    if gpu {
        cx.b.line("gpu.barrier");
    }

    // Phase 2 (lane 0): combine the chunks in order; each chunk's initial
    // state replaces its `Π a` slot. With no steps the final state is h0.
    let zero = cx.b.i64c(0);
    let lead = cx.b.cmpi("eq", lane, zero);
    let lead = match valid {
        Some(v) => cx.b.and(v, lead),
        None => lead,
    };
    if_then(cx, lead, |cx| {
        let p0 = cx.bufs[0];
        let h: Vec<V> = elems
            .iter()
            .map(|el| scalar::load(&mut cx.b, p0, el.e, g.dt))
            .collect();
        let carry = for_loop(cx, zero, full, one, &h, |cx, c, hs| {
            let i0 = cx.b.mul(c, len);
            let t_first = pos(cx, g, i0);
            let i1 = cx.b.add(i0, len);
            let i_last = cx.b.sub(i1, one);
            let t_last = pos(cx, g, i_last);
            // Every lane loads before any stores: surplus CPU lanes share
            // the last element's slots.
            let ab: Vec<(V, V)> = elems
                .iter()
                .map(|el| {
                    let a = load_state(cx, g, el, t_first);
                    let b = load_state(cx, g, el, t_last);
                    (a, b)
                })
                .collect();
            let mut next = Vec::with_capacity(elems.len());
            for ((el, &h), (a, b)) in elems.iter().zip(hs).zip(ab) {
                store_state(cx, g, el, t_first, h);
                next.push(fma(cx, a, h, b));
            }
            Ok(next)
        })?;
        let any = cx.b.cmpi("sgt", chunks, zero);
        crate::builder::if_else(
            cx,
            any,
            &[],
            |cx| {
                let i0 = cx.b.mul(full, len);
                let t_first = pos(cx, g, i0);
                for (el, &h) in elems.iter().zip(&carry) {
                    store_state(cx, g, el, t_first, h);
                }
                Ok(vec![])
            },
            |cx| {
                for (el, &h) in elems.iter().zip(&carry) {
                    store_final(cx, g, el, h);
                }
                Ok(vec![])
            },
        )?;
        Ok(())
    })?;
    if gpu {
        cx.b.line("gpu.barrier");
    }

    // Phase 3: rescan every chunk from its initial state.
    guarded(cx, valid, |cx| {
        for_loop(cx, lane, chunks, lanes, &[], |cx, c, _| {
            let i0 = cx.b.mul(c, len);
            let i1 = cx.b.add(i0, len);
            let i1 = cx.b.min_s(i1, g.t);
            let t_first = pos(cx, g, i0);
            let h: Vec<V> = elems
                .iter()
                .map(|el| load_state(cx, g, el, t_first))
                .collect();
            let h = scan_range(cx, g, elems, h, i0, i1)?;
            let is_last = cx.b.cmpi("eq", c, full);
            if_then(cx, is_last, |cx| {
                for (el, &v) in elems.iter().zip(&h) {
                    store_final(cx, g, el, v);
                }
                Ok(())
            })?;
            Ok(vec![])
        })?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::shape;

    #[test]
    fn schedules_follow_the_attribute_dtype_and_target() {
        let op = |chunk| LinearScanOp {
            reverse: false,
            chunk,
        };
        let small = TensorType::new(DType::F32, shape![128, 16]);
        let big = TensorType::new(DType::F32, shape![4096, 16]);
        let half = TensorType::new(DType::F16, shape![128, 16]);
        let sym = TensorType::new(DType::F32, shape!["n", 16]);
        assert_eq!(schedule(&op(0), &small, false), Schedule::Sequential);
        assert_eq!(schedule(&op(0), &small, true), Schedule::Chunked(None));
        assert_eq!(schedule(&op(0), &big, true), Schedule::Sequential);
        assert_eq!(schedule(&op(0), &sym, true), Schedule::Sequential);
        assert_eq!(schedule(&op(8), &small, false), Schedule::Chunked(Some(8)));
        assert_eq!(schedule(&op(8), &half, true), Schedule::Sequential);
    }
}
