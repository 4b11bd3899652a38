//! Attention kernels: `flash_attention` and `prflash_attention` (semantics in
//! [`kiln_ir::attention`]), one kernel structure for both.
//!
//! The grid is (batch index × query tile). A block streams the keys its rows
//! can see with the online softmax: a running max `m`, a running sum `l` and
//! an accumulator rescaled by `exp(m_old - m_new)` whenever the max grows, so
//! the scores are never materialized beyond one key tile. Batch dims of `k`,
//! `v` and the bias broadcast by index (a grouped-query `k: [kv, 1, T, D]` is
//! read in place, never copied per head). Causal rows stop at their diagonal
//! (`j <= i + offset`, `offset` a size such as `past`), so a block does no
//! work past its last row's diagonal.
//!
//! `prflash_attention` is the same kernel with a block-keep predicate: for
//! each (query row, key block of `Bs` keys) the seeded hash of
//! [`kiln_ir::attention::prflash_keep`] is recomputed with integer ops (the
//! probability in `f64`, the comparison in `f32`, bit for bit as the
//! interpreter), and an unkept block is skipped — its keys are never loaded.
//!
//! Targets: the CPU kernel is in `attention_cpu` (query tiles of 16 rows,
//! key tiles, vector dot products), the GPU kernel in `attention_gpu` (one
//! warp per query row, lanes over the head dims).

use crate::builder::{if_else, Builder, Ty, R, V};
use crate::ctx::{Ctx, KernelFn};
use crate::elemental::broadcast_index;
use crate::error::CodegenError;
use crate::scalar;
use crate::target::EmitTarget;
use kiln_ir::attention::{harmonic, mix64, AttentionOp, PrFlashOp};
use kiln_ir::infer::broadcast_shapes;
use kiln_ir::kernel::{Grid, GridDim};
use kiln_ir::{DType, Dim, TensorType};

/// Which of the two ops a kernel computes.
#[derive(Clone, Copy)]
pub(crate) enum Mode<'a> {
    Flash(&'a AttentionOp),
    PrFlash(&'a PrFlashOp),
}

/// The prflash keep rule as kernel constants.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keep {
    /// Block size `Bs` of queries and keys.
    pub block: i64,
    pub c: f64,
    /// `mix64(seed)`, the first round of the hash, folded at compile time.
    pub seed_mix: u64,
    pub per_head: bool,
}

/// Everything a kernel needs to know about one attention node.
pub(crate) struct Attn {
    pub dt: DType,
    pub q_batch: Vec<Dim>,
    pub k_batch: Vec<Dim>,
    /// The result's batch dims (the broadcast of q's and k's).
    pub batch: Vec<Dim>,
    pub bias: Option<Vec<Dim>>,
    pub tq: Dim,
    pub tk: Dim,
    /// `k` and `v` are token-major `[T, Bk.., D]` (a KV cache read in place,
    /// keys `0..tk`), not head-major `[Bk.., tk, D]`.
    pub token_major: bool,
    pub d: Dim,
    pub dv: Dim,
    pub scale: f64,
    /// Keys past a row's diagonal are invisible (always so for prflash).
    pub causal: bool,
    pub offset: Dim,
    /// Negated harmonic slopes `-m_h`, one per head (empty: none).
    pub neg_slopes: Vec<f64>,
    pub keep: Option<Keep>,
}

impl Attn {
    /// Index of the result buffer (after q, k, v and the bias).
    pub fn out_buf(&self) -> usize {
        3 + self.bias.is_some() as usize
    }
}

fn analyze(name: &str, mode: Mode, operands: &[TensorType]) -> R<Attn> {
    let bad = |message: String| CodegenError::BadSpec {
        kernel: name.to_string(),
        message,
    };
    let (q, mut k, mut v) = (&operands[0], &operands[1], &operands[2]);
    // Token-major keys are typed here as the head-major view they stand for;
    // only the addressing (see `setup`) differs.
    let viewed;
    let kv_len = match mode {
        Mode::Flash(op) => op.kv_len.as_ref(),
        Mode::PrFlash(_) => None,
    };
    if let Some(len) = kv_len {
        viewed = kiln_ir::attention::head_major_kv(k, v, len).map_err(bad)?;
        (k, v) = (&viewed.0, &viewed.1);
    }
    let r = q.rank();
    let batch = broadcast_shapes(&[&q.shape[..r - 2].to_vec(), &k.shape[..r - 2].to_vec()])
        .ok_or_else(|| bad("attention batch dims do not broadcast".into()))?;
    let mut a = Attn {
        dt: q.dtype,
        q_batch: q.shape[..r - 2].to_vec(),
        k_batch: k.shape[..r - 2].to_vec(),
        batch,
        bias: None,
        tq: q.shape[r - 2].clone(),
        tk: k.shape[r - 2].clone(),
        token_major: kv_len.is_some(),
        d: q.shape[r - 1].clone(),
        dv: v.shape[r - 1].clone(),
        scale: 0.0,
        causal: true,
        offset: Dim::constant(0),
        neg_slopes: Vec::new(),
        keep: None,
    };
    match mode {
        Mode::Flash(op) => {
            a.scale = op.scale.0;
            a.causal = op.causal;
            a.offset = op.offset.clone();
            a.neg_slopes = op.slopes.iter().map(|m| -m.0).collect();
            if op.bias {
                a.bias = Some(operands[3].shape.clone());
            }
            if !op.causal && !op.slopes.is_empty() {
                return Err(bad("harmonic slopes need causal attention".into()));
            }
        }
        Mode::PrFlash(op) => {
            if op.block == 0 {
                return Err(bad("prflash block size must be at least 1".into()));
            }
            a.scale = op.scale.0;
            a.offset = op.offset.clone();
            a.keep = Some(Keep {
                block: op.block as i64,
                c: op.c.0,
                seed_mix: mix64(op.seed),
                per_head: op.per_head,
            });
        }
    }
    Ok(a)
}

/// Emits a `flash_attention` or `prflash_attention` kernel; returns its
/// function, grid and GPU thread count.
pub fn emit_attention(
    name: &str,
    mode: Mode,
    operands: &[TensorType],
    symbols: &[String],
    target: EmitTarget,
) -> R<(KernelFn, Grid, u32)> {
    let a = analyze(name, mode, operands)?;
    if !a.dt.is_float() {
        return Err(CodegenError::UnsupportedDType {
            kernel: name.to_string(),
            op: "attention".into(),
            dtype: a.dt,
        });
    }
    let rows = if target.gpu {
        crate::attention_gpu::ROWS
    } else {
        crate::attention_cpu::ROWS
    };
    let grid = Grid {
        dims: vec![
            GridDim {
                extent: kiln_ir::dim::product(&a.batch),
                tile: 1,
            },
            GridDim {
                extent: a.tq.clone(),
                tile: rows,
            },
        ],
    };
    let n_bufs = a.out_buf() + 1;
    let threads = crate::attention_gpu::THREADS;
    let kf = Ctx::kernel_fn(name, n_bufs, symbols, target, threads, |cx, block| {
        let base = setup(cx, &a, block, rows)?;
        if target.gpu {
            crate::attention_gpu::block(cx, &a, &base)
        } else {
            crate::attention_cpu::block(cx, &a, &base)
        }
    })?;
    Ok((kf, grid, threads))
}

/// Where a bias element lives: `base + i·si + j·sj` (strides 0 on broadcast axes).
#[derive(Clone, Copy)]
pub(crate) struct BiasAt {
    pub base: V,
    pub si: V,
    pub sj: V,
}

/// The per-block values shared by both targets.
#[derive(Clone, Copy)]
pub(crate) struct Base {
    /// First query row of the block.
    pub i0: V,
    /// Element offsets of this batch index's q, k, v and result matrices.
    pub q_off: V,
    pub k_off: V,
    pub v_off: V,
    /// Elements from one key (value) row to the next: `d` (`dv`) head-major,
    /// every batch entry's row times that token-major.
    pub k_stride: V,
    pub v_stride: V,
    pub o_off: V,
    pub tq: V,
    pub tk: V,
    pub d: V,
    pub dv: V,
    pub offset: V,
    pub bias: Option<BiasAt>,
    /// `-m_h` of this head.
    pub neg_slope: Option<V>,
    /// `mix64(mix64(seed) ^ head)`: the hash state every row continues.
    pub head_hash: Option<V>,
}

fn setup(cx: &mut Ctx, a: &Attn, block: V, rows: i64) -> R<Base> {
    let batch_dims = cx.dims(&a.batch)?;
    let mut nb = cx.b.i64c(1);
    for d in &batch_dims {
        nb = cx.b.mul(nb, *d);
    }
    let tq = cx.dim(&a.tq)?;
    let tk = cx.dim(&a.tk)?;
    let d = cx.dim(&a.d)?;
    let dv = cx.dim(&a.dv)?;
    let offset = cx.dim(&a.offset)?;
    let qt = cx.ceil_div(tq, rows);
    let bi = cx.delinearize(block, &[nb, qt]);
    let h = bi[0];
    let rv = cx.b.i64c(rows);
    let i0 = cx.b.mul(bi[1], rv);
    let bidx = cx.delinearize(h, &batch_dims);
    let lin = |cx: &mut Ctx, shape: &[Dim]| -> R<V> {
        let idx = broadcast_index(cx, &bidx, shape);
        let dims = cx.dims(shape)?;
        Ok(cx.linearize(&idx, &dims))
    };
    let q_lin = lin(cx, &a.q_batch)?;
    let k_lin = lin(cx, &a.k_batch)?;
    let tqd = cx.b.mul(tq, d);
    let tkd = cx.b.mul(tk, d);
    let tkdv = cx.b.mul(tk, dv);
    let tqdv = cx.b.mul(tq, dv);
    let q_off = cx.b.mul(q_lin, tqd);
    let (k_off, v_off, k_stride, v_stride) = if a.token_major {
        let mut nk = cx.b.i64c(1);
        for d in cx.dims(&a.k_batch)? {
            nk = cx.b.mul(nk, d);
        }
        let (ks, vs) = (cx.b.mul(nk, d), cx.b.mul(nk, dv));
        (cx.b.mul(k_lin, d), cx.b.mul(k_lin, dv), ks, vs)
    } else {
        (cx.b.mul(k_lin, tkd), cx.b.mul(k_lin, tkdv), d, dv)
    };
    let o_off = cx.b.mul(h, tqdv);
    let bias = match &a.bias {
        Some(shape) => Some(bias_at(cx, shape, &bidx)?),
        None => None,
    };
    let neg_slope = if a.neg_slopes.is_empty() {
        None
    } else {
        Some(table_at(&mut cx.b, &a.neg_slopes, h))
    };
    let head_hash = a.keep.map(|k| {
        if k.per_head {
            let s = cx.b.ci(Ty::I64, k.seed_mix as i64);
            let x = cx.b.bin("xori", s, h);
            mix64_v(&mut cx.b, x)
        } else {
            cx.b.ci(Ty::I64, mix64(k.seed_mix) as i64)
        }
    });
    Ok(Base {
        i0,
        q_off,
        k_off,
        v_off,
        k_stride,
        v_stride,
        o_off,
        tq,
        tk,
        d,
        dv,
        offset,
        bias,
        neg_slope,
        head_hash,
    })
}

/// The bias's strides over the scores `[batch.., tq, tk]` (numpy
/// broadcasting: missing leading axes and size-1 axes get stride 0) and its
/// offset for the batch index `bidx`.
fn bias_at(cx: &mut Ctx, shape: &[Dim], bidx: &[V]) -> R<BiasAt> {
    let rb = shape.len();
    let nbatch = bidx.len();
    let dims = cx.dims(shape)?;
    let one = Dim::constant(1);
    let mut strides = vec![cx.b.i64c(0); rb];
    let mut s = cx.b.i64c(1);
    for j in (0..rb).rev() {
        if shape[j] != one {
            strides[j] = s;
        }
        s = cx.b.mul(s, dims[j]);
    }
    // Bias axis `j` is scores axis `j + lead`.
    let lead = nbatch + 2 - rb;
    let mut base = cx.b.i64c(0);
    for (j, st) in strides.iter().enumerate() {
        if j + lead < nbatch {
            let t = cx.b.mul(bidx[j + lead], *st);
            base = cx.b.add(base, t);
        }
    }
    let zero = cx.b.i64c(0);
    let si = if rb >= 2 { strides[rb - 2] } else { zero };
    let sj = if rb >= 1 { strides[rb - 1] } else { zero };
    Ok(BiasAt { base, si, sj })
}

/// An `f32` MLIR literal for a dense vector: the exact bit pattern.
fn f32_bits(x: f64) -> String {
    format!("0x{:08X}", (x as f32).to_bits())
}

/// `table[i]` for a run-time `i` (`0.0` past the end), from a constant vector.
fn table_at(b: &mut Builder, table: &[f64], i: V) -> V {
    if table.len() == 1 {
        let zero = b.i64c(0);
        let first = b.cmpi("eq", i, zero);
        let v = b.cf(Ty::F32, table[0]);
        let z = b.cf(Ty::F32, 0.0);
        return b.select(first, v, z);
    }
    let n = table.len() as i64;
    let vty = Ty::VF32(table.len() as u32);
    let lits: Vec<String> = table.iter().map(|&x| f32_bits(x)).collect();
    let tv = b.in_prologue(|b| {
        b.pure(
            vty,
            format!("arith.constant dense<[{}]> : {vty}", lits.join(", ")),
        )
    });
    let last = b.i64c(n - 1);
    let ic = b.min_s(i, last);
    let ix = b.conv("arith.index_cast", ic, Ty::Index);
    let x = b.pure(
        Ty::F32,
        format!("vector.extract {tv}[{ix}] : f32 from {vty}"),
    );
    let inside = b.cmpi("sle", i, last);
    let z = b.cf(Ty::F32, 0.0);
    b.select(inside, x, z)
}

/// Up to this `n`, `H(n)` is read from a table of exact sums (as
/// [`kiln_ir::attention::harmonic`] sums them); beyond, the asymptotic series.
const HARMONIC_TABLE: u64 = 64;

/// `H(n)` in `f32` for an `i64` `n >= 0`.
pub(crate) fn harmonic_v(cx: &mut Ctx, n: V) -> R<V> {
    let lim = cx.b.i64c(HARMONIC_TABLE as i64);
    let small = cx.b.cmpi("sle", n, lim);
    let math = cx.scalar.math;
    let r = if_else(
        cx,
        small,
        &[Ty::F32],
        |cx| {
            let t: Vec<f64> = (0..=HARMONIC_TABLE).map(harmonic).collect();
            Ok(vec![table_at(&mut cx.b, &t, n)])
        },
        |cx| {
            // ln x + γ + 1/(2x) - 1/(12x²) + 1/(120x⁴)
            let b = &mut cx.b;
            let x = b.conv("arith.sitofp", n, Ty::F32);
            let ln = math.log(b, x);
            let one = b.cf(Ty::F32, 1.0);
            let inv = b.fbin("divf", one, x);
            let inv2 = b.fbin("mulf", inv, inv);
            let c4 = b.cf(Ty::F32, 1.0 / 120.0);
            let c2 = b.cf(Ty::F32, -1.0 / 12.0);
            let c1 = b.cf(Ty::F32, 0.5);
            let t = b.fbin("mulf", c4, inv2);
            let t = b.fbin("addf", t, c2);
            let t = b.fbin("mulf", t, inv2);
            let h1 = b.fbin("mulf", c1, inv);
            let t = b.fbin("addf", t, h1);
            let g = b.cf(Ty::F32, 0.577_215_664_901_532_9);
            let t = b.fbin("addf", t, g);
            Ok(vec![b.fbin("addf", ln, t)])
        },
    )?;
    Ok(r[0])
}

/// splitmix64's finalizer ([`kiln_ir::attention::mix64`]) on an `i64`.
pub(crate) fn mix64_v(b: &mut Builder, z: V) -> V {
    let c = |b: &mut Builder, x: u64| b.ci(Ty::I64, x as i64);
    let k0 = c(b, 0x9E37_79B9_7F4A_7C15);
    let z = b.add(z, k0);
    let mut z = z;
    for (sh, mul) in [(30, 0xBF58_476D_1CE4_E5B9u64), (27, 0x94D0_49BB_1331_11EB)] {
        let s = c(b, sh);
        let x = b.bin("shrui", z, s);
        let x = b.bin("xori", z, x);
        let m = c(b, mul);
        z = b.mul(x, m);
    }
    let s = c(b, 31);
    let x = b.bin("shrui", z, s);
    b.bin("xori", z, x)
}

/// The hash state of query block `qb` (continues the head's).
pub(crate) fn row_hash(b: &mut Builder, head_hash: V, qb: V) -> V {
    let x = b.bin("xori", head_hash, qb);
    mix64_v(b, x)
}

/// Whether key block `kb <= qb` is kept for query block `qb`:
/// [`kiln_ir::attention::prflash_keep`] with the same roundings — the
/// uniform `(h >> 11)·2⁻⁵³` rounded once to `f32` (an exact `i64 -> f32`
/// conversion then a power-of-two scale), the probability
/// `min(1, c/(d+1))` rounded to `f64` then `f32` ([`keep_probability`]).
pub(crate) fn block_keep(b: &mut Builder, k: &Keep, rh: V, qb: V, kb: V) -> V {
    let x = b.bin("xori", rh, kb);
    let h = mix64_v(b, x);
    let eleven = b.i64c(11);
    let top = b.bin("shrui", h, eleven);
    let uf = b.conv("arith.sitofp", top, Ty::F32);
    let ulp = b.cf(Ty::F32, 2f64.powi(-53));
    let u = b.fbin("mulf", uf, ulp);
    let d = b.sub(qb, kb);
    let one = b.i64c(1);
    let d1 = b.add(d, one);
    let p32 = keep_probability(b, k.c, d1);
    let sampled = b.cmpf("olt", u, p32);
    let diag = b.cmpi("eq", kb, qb);
    b.bin("ori", diag, sampled)
}

/// `f32(min(1, c / n))` for an `i64` `n` in `[1, 2^51]` with `c` the
/// constant of the op (positive, finite), the quotient correctly rounded to
/// `f64` first, exactly as the interpreter computes it — without an `f64`
/// division, which ptxas expands into a subroutine that makes kernels spill.
///
/// `c >= n` gives 1. Otherwise `q = c/n` lies in `[2^-53·c, 1)`, normal, and
/// is found as: an `f32` reciprocal seed refined by three Newton steps, a
/// product refined once by its residual (within one ulp of `c/n`), then the
/// nearest of that value and its two neighbours by exact residuals
/// `c - n·x` (exact: `x` is within two ulps of `c/n` and `n < 2^52`), ties
/// to even.
pub(crate) fn keep_probability(b: &mut Builder, c: f64, n: V) -> V {
    if c >= 2f64.powi(53) {
        return b.cf(Ty::F32, 1.0);
    }
    if c < 2f64.powi(-900) {
        // c/n < 2^-900 rounds to 0 in f32.
        return b.cf(Ty::F32, 0.0);
    }
    let p = keep_probability_f64(b, c, n);
    b.conv("arith.truncf", p, Ty::F32)
}

/// The `f64` `min(1, c / n)` of [`keep_probability`], for
/// `2^-900 <= c < 2^53`.
fn keep_probability_f64(b: &mut Builder, c: f64, n: V) -> V {
    let nf = b.conv("arith.sitofp", n, Ty::F64);
    let cv = b.cf(Ty::F64, c);
    let one = b.cf(Ty::F64, 1.0);
    let n32 = b.conv("arith.truncf", nf, Ty::F32);
    let one32 = b.cf(Ty::F32, 1.0);
    let y32 = b.fbin("divf", one32, n32);
    let mut y = b.conv("arith.extf", y32, Ty::F64);
    let neg_n = b.pure(Ty::F64, format!("arith.negf {nf} : f64"));
    for _ in 0..3 {
        let e = fma64(b, neg_n, y, one);
        y = fma64(b, y, e, y);
    }
    let q0 = b.fbin("mulf", cv, y);
    let r0 = fma64(b, neg_n, q0, cv);
    let q = fma64(b, r0, y, q0);
    // The nearest of q's neighbourhood (positive floats: ±1 on the bits).
    let bits = b.conv("arith.bitcast", q, Ty::I64);
    let i1 = b.i64c(1);
    let mut best = q;
    let r = fma64(b, neg_n, q, cv);
    let mut best_err = abs64(b, r);
    for step in [-1i64, 1] {
        let nb = if step < 0 {
            b.sub(bits, i1)
        } else {
            b.add(bits, i1)
        };
        let x = b.conv("arith.bitcast", nb, Ty::F64);
        let r = fma64(b, neg_n, x, cv);
        let err = abs64(b, r);
        let closer = b.cmpf("olt", err, best_err);
        let tie = b.cmpf("oeq", err, best_err);
        let low = b.and(nb, i1);
        let zero = b.i64c(0);
        let even = b.cmpi("eq", low, zero);
        let even_tie = b.and(tie, even);
        let take = b.bin("ori", closer, even_tie);
        best = b.select(take, x, best);
        best_err = b.select(take, err, best_err);
    }
    let at_least_one = b.cmpf("oge", cv, nf);
    b.select(at_least_one, one, best)
}

/// `x·y + z` rounded once (`llvm.intr.fma`: an FMA instruction on both
/// targets, no libdevice call).
fn fma64(b: &mut Builder, x: V, y: V, z: V) -> V {
    b.pure(
        Ty::F64,
        format!("llvm.intr.fma({x}, {y}, {z}) : (f64, f64, f64) -> f64"),
    )
}

fn abs64(b: &mut Builder, x: V) -> V {
    let zero = b.cf(Ty::F64, 0.0);
    let neg = b.cmpf("olt", x, zero);
    let nx = b.pure(Ty::F64, format!("arith.negf {x} : f64"));
    b.select(neg, nx, x)
}

/// A CPU kernel `kiln_keep_probe(args = [n: i64[len], p: f64[len]], sizes =
/// [len])` computing `p[i] = min(1, c / n[i])` in `f64` with the kernels'
/// code ([`keep_probability`] before its rounding to `f32`); one block per
/// element. For testing that code against `f64` division over many values
/// (`2^-900 <= c < 2^53`; outside, the kernels use constants).
#[doc(hidden)]
pub fn keep_probability_probe(c: f64) -> Result<crate::CpuModule, CodegenError> {
    let name = "kiln_keep_probe";
    let symbols = vec!["len".to_string()];
    let target = EmitTarget::new(crate::Target::Cpu, false);
    let kf = Ctx::kernel_fn(name, 2, &symbols, target, 1, |cx, block| {
        let n = cx.b.gep(cx.bufs[0], block, Ty::I64);
        let n = cx.b.load(n, Ty::I64);
        let p = keep_probability_f64(&mut cx.b, c, n);
        let out = cx.b.gep(cx.bufs[1], block, Ty::F64);
        cx.b.store(p, out);
        Ok(())
    })?;
    let decls: String = kf.externs.iter().map(|d| format!("  {d}\n")).collect();
    let mlir = format!("module {{\n{decls}{}}}\n", kf.text);
    let jit = crate::driver::jit_cpu(&mlir, &[name.to_string()])?;
    Ok(crate::CpuModule {
        jit,
        launches: vec![kiln_ir::kernel::KernelLaunch {
            name: name.to_string(),
            grid: Grid::rows(Dim::from("len")),
            symbols,
            gpu_threads: 1,
        }],
        mlir,
    })
}

/// `scale·dot + bias[i, j] - m_h·H(p - j)` for query row `i` (at absolute
/// position `p = i + offset`) and key `j`.
pub(crate) fn score(cx: &mut Ctx, a: &Attn, base: &Base, dot: V, i: V, j: V, p: V) -> R<V> {
    let sc = cx.b.cf(Ty::F32, a.scale);
    let mut s = cx.b.fbin("mulf", sc, dot);
    if let Some(bi) = base.bias {
        let t = cx.b.mul(i, bi.si);
        let idx = cx.b.add(bi.base, t);
        let t = cx.b.mul(j, bi.sj);
        let idx = cx.b.add(idx, t);
        let x = scalar::load(&mut cx.b, cx.bufs[3], idx, a.dt);
        s = cx.b.fbin("addf", s, x);
    }
    if let Some(m) = base.neg_slope {
        let n = cx.b.sub(p, j);
        let hn = harmonic_v(cx, n)?;
        let t = cx.b.fbin("mulf", m, hn);
        s = cx.b.fbin("addf", s, t);
    }
    Ok(s)
}

/// One online-softmax step over a score `s` (or the max of a tile of
/// scores): the new running max, the max the exponentials are taken against
/// (`0` while every score so far is `-inf`, so no `-inf - -inf` NaN appears
/// and an all-masked row ends as `0/0 = NaN`, as the interpreter's), and
/// the rescale factor of what was accumulated.
pub(crate) fn rescale(cx: &mut Ctx, m_old: V, s_max: V) -> (V, V, V) {
    let b = &mut cx.b;
    let m_new = fmax(b, m_old, s_max);
    let ninf = b.cf(Ty::F32, f64::NEG_INFINITY);
    let zero = b.cf(Ty::F32, 0.0);
    let empty = b.cmpf("oeq", m_new, ninf);
    let m_use = b.select(empty, zero, m_new);
    let diff = b.fbin("subf", m_old, m_use);
    let math = cx.scalar.math;
    let alpha = math.exp(&mut cx.b, diff);
    (m_new, m_use, alpha)
}

/// `max(a, b)` ignoring a NaN `b`, as a compare and select (`arith.maxnumf`
/// becomes a libdevice call on the GPU).
pub(crate) fn fmax(b: &mut Builder, a: V, x: V) -> V {
    let gt = b.cmpf("ogt", x, a);
    b.select(gt, x, a)
}

/// `exp(s - m_use)`.
pub(crate) fn prob(cx: &mut Ctx, s: V, m_use: V) -> V {
    let x = cx.b.fbin("subf", s, m_use);
    let math = cx.scalar.math;
    math.exp(&mut cx.b, x)
}

/// The visible-key count of row position `p` in `[kb, kb + jn)`:
/// `clamp(p + 1 - kb, 0, jn)` when causal, `jn` otherwise.
pub(crate) fn visible(cx: &mut Ctx, a: &Attn, p: V, kb: V, jn: V) -> V {
    if !a.causal {
        return jn;
    }
    let one = cx.b.i64c(1);
    let zero = cx.b.i64c(0);
    let e = cx.b.add(p, one);
    let e = cx.b.sub(e, kb);
    let e = cx.b.min_s(e, jn);
    cx.b.max_s(e, zero)
}
