//! The emission context of one kernel function: its buffers, its sizes, the
//! block (and on the GPU, thread) it runs as, and the target-dependent
//! pieces of the kernel model (how a block is entered, how threads split a
//! loop, how a reduction is combined across threads).

use crate::builder::{for_loop, Builder, Emit, Ty, R, V};
use crate::error::CodegenError;
use crate::math::Math;
use crate::scalar::Scalar;
use crate::target::EmitTarget;
use kiln_ir::Dim;
use std::fmt::Write;

/// How the kernel reads the size symbols.
enum Sizes {
    /// CPU: `sizes` is a pointer to `i64`s, loaded on first use.
    Ptr(V),
    /// GPU: one `i64` parameter per symbol.
    Args(Vec<V>),
}

/// Per-thread state on the GPU.
#[derive(Clone, Copy)]
pub struct Threads {
    pub tid: V,
    pub count: u32,
}

pub struct Ctx<'a> {
    pub b: Builder,
    pub kernel: &'a str,
    pub target: EmitTarget,
    pub scalar: Scalar<'a>,
    /// Buffer pointers: operands, then results.
    pub bufs: Vec<V>,
    symbols: &'a [String],
    sizes: Sizes,
    pub threads: Option<Threads>,
}

impl Emit for Ctx<'_> {
    fn b(&mut self) -> &mut Builder {
        &mut self.b
    }
}

/// The text of one kernel function and its parameters.
pub struct KernelFn {
    pub text: String,
    /// Module-level declarations the function needs.
    pub externs: std::collections::BTreeSet<String>,
}

impl<'a> Ctx<'a> {
    /// Emits one kernel function. `body` is called with the context and the
    /// block id (an `i64`) and emits the work of that block.
    pub fn kernel_fn(
        name: &'a str,
        n_bufs: usize,
        symbols: &'a [String],
        target: EmitTarget,
        gpu_threads: u32,
        body: impl FnOnce(&mut Ctx<'a>, V) -> R<()>,
    ) -> R<KernelFn> {
        let mut b = Builder::new();
        let math = Math {
            flavor: target.math,
        };
        let scalar = Scalar { kernel: name, math };
        let mut text = String::new();
        let b_externs: std::collections::BTreeSet<String>;
        if target.gpu {
            let bufs: Vec<V> = (0..n_bufs).map(|_| b.fresh(Ty::Ptr)).collect();
            let syms: Vec<V> = symbols.iter().map(|_| b.fresh(Ty::I64)).collect();
            let params: Vec<String> = bufs
                .iter()
                .map(|p| format!("{p}: !llvm.ptr"))
                .chain(syms.iter().map(|s| format!("{s}: i64")))
                .collect();
            writeln!(
                text,
                "    gpu.func @{name}({}) kernel attributes {{known_block_size = array<i32: {gpu_threads}, 1, 1>}} {{",
                params.join(", ")
            )
            .ok();
            let (block, tid) = b.in_prologue(|b| {
                let bx = b.op(Ty::Index, "gpu.block_id x");
                let block = b.conv("arith.index_cast", bx, Ty::I64);
                let tx = b.op(Ty::Index, "gpu.thread_id x");
                let tid = b.conv("arith.index_cast", tx, Ty::I64);
                (block, tid)
            });
            let mut cx = Ctx {
                b,
                kernel: name,
                target,
                scalar,
                bufs,
                symbols,
                sizes: Sizes::Args(syms),
                threads: Some(Threads {
                    tid,
                    count: gpu_threads,
                }),
            };
            body(&mut cx, block)?;
            cx.b.line("gpu.return");
            text.push_str(&indent(&cx.b.finish(), 4));
            b_externs = std::mem::take(&mut cx.b.externs);
            text.push_str("    }\n");
        } else {
            let args = b.fresh(Ty::Ptr);
            let sizes = b.fresh(Ty::Ptr);
            let begin = b.fresh(Ty::I64);
            let end = b.fresh(Ty::I64);
            writeln!(
                text,
                "  func.func @{name}({args}: !llvm.ptr, {sizes}: !llvm.ptr, {begin}: i64, {end}: i64) {{"
            )
            .ok();
            let bufs = b.in_prologue(|b| {
                (0..n_bufs)
                    .map(|k| {
                        let i = b.i64c(k as i64);
                        let p = b.gep(args, i, Ty::Ptr);
                        b.load(p, Ty::Ptr)
                    })
                    .collect()
            });
            let mut cx = Ctx {
                b,
                kernel: name,
                target,
                scalar,
                bufs,
                symbols,
                sizes: Sizes::Ptr(sizes),
                threads: None,
            };
            let one = cx.b.i64c(1);
            for_loop(&mut cx, begin, end, one, &[], |cx, block, _| {
                body(cx, block)?;
                Ok(vec![])
            })?;
            cx.b.line("return");
            text.push_str(&indent(&cx.b.finish(), 2));
            b_externs = std::mem::take(&mut cx.b.externs);
            text.push_str("  }\n");
        }
        Ok(KernelFn {
            text,
            externs: b_externs,
        })
    }

    /// The value of a size symbol.
    fn symbol(&mut self, s: &str) -> R<V> {
        let k = self.symbols.iter().position(|x| x == s).ok_or_else(|| {
            CodegenError::UnknownSymbol {
                kernel: self.kernel.to_string(),
                symbol: s.to_string(),
                symbols: self.symbols.to_vec(),
            }
        })?;
        match &self.sizes {
            Sizes::Args(a) => Ok(a[k]),
            Sizes::Ptr(p) => {
                let p = *p;
                let key = format!("size:{k}");
                if let Some(v) = self.b.lookup(&key) {
                    return Ok(v);
                }
                let v = self.b.in_prologue(|b| {
                    let i = b.i64c(k as i64);
                    let q = b.gep(p, i, Ty::I64);
                    let v = b.load(q, Ty::I64);
                    b.remember(key, v);
                    v
                });
                Ok(v)
            }
        }
    }

    /// A dim as an `i64` value (computed once, in the prologue).
    pub fn dim(&mut self, d: &Dim) -> R<V> {
        if let Some(c) = d.as_const() {
            return Ok(self.b.i64c(c));
        }
        let key = format!("dim:{d}");
        if let Some(v) = self.b.lookup(&key) {
            return Ok(v);
        }
        let mut terms = Vec::new();
        for (coef, syms) in d.terms() {
            let mut vs = Vec::new();
            for s in syms {
                vs.push(self.symbol(s)?);
            }
            terms.push((coef, vs));
        }
        let v = self.b.in_prologue(|b| {
            let mut total = b.i64c(0);
            for (coef, vs) in terms {
                let mut t = b.i64c(coef);
                for v in vs {
                    t = b.mul(t, v);
                }
                total = b.add(total, t);
            }
            total
        });
        self.b.remember(key, v);
        Ok(v)
    }

    pub fn dims(&mut self, shape: &[Dim]) -> R<Vec<V>> {
        shape.iter().map(|d| self.dim(d)).collect()
    }

    /// Row-major linear index of `idx` in `dims`.
    pub fn linearize(&mut self, idx: &[V], dims: &[V]) -> V {
        let mut lin = self.b.i64c(0);
        for (i, d) in idx.iter().zip(dims) {
            let m = self.b.mul(lin, *d);
            lin = self.b.add(m, *i);
        }
        lin
    }

    /// The index vector of linear index `lin` in `dims`.
    pub fn delinearize(&mut self, lin: V, dims: &[V]) -> Vec<V> {
        let mut out = vec![lin; dims.len()];
        let mut rest = lin;
        for k in (0..dims.len()).rev() {
            if k == 0 {
                out[0] = rest;
            } else {
                out[k] = self.b.rem(rest, dims[k]);
                rest = self.b.div(rest, dims[k]);
            }
        }
        out
    }

    /// `ceil(a / t)` for a constant tile `t`.
    pub fn ceil_div(&mut self, a: V, t: i64) -> V {
        let tm1 = self.b.i64c(t - 1);
        let tt = self.b.i64c(t);
        let s = self.b.add(a, tm1);
        self.b.div(s, tt)
    }

    /// A loop over `lb..ub` whose iterations are independent: sequential on
    /// the CPU, split across the block's threads (strided) on the GPU.
    pub fn par_for(&mut self, lb: V, ub: V, body: impl FnOnce(&mut Self, V) -> R<()>) -> R<()> {
        let (start, step) = match self.threads {
            Some(t) => {
                let s = self.b.add(lb, t.tid);
                (s, self.b.i64c(t.count as i64))
            }
            None => (lb, self.b.i64c(1)),
        };
        for_loop(self, start, ub, step, &[], |cx, i, _| {
            body(cx, i)?;
            Ok(vec![])
        })?;
        Ok(())
    }

    /// Reduces `0..n` to one value: `elem(i)` combined by `combine` from
    /// `init`. On the GPU the block's threads (one warp) each reduce a
    /// strided part and combine through `gpu.shuffle xor`, so every thread
    /// ends with the full result.
    pub fn reduce(
        &mut self,
        n: V,
        init: V,
        elem: impl FnOnce(&mut Self, V) -> R<V>,
        combine: impl Fn(&mut Builder, V, V) -> V,
    ) -> R<V> {
        let zero = self.b.i64c(0);
        let (start, step) = match self.threads {
            Some(t) => (t.tid, self.b.i64c(t.count as i64)),
            None => (zero, self.b.i64c(1)),
        };
        let r = for_loop(self, start, n, step, &[init], |cx, i, acc| {
            let x = elem(cx, i)?;
            Ok(vec![combine(&mut cx.b, acc[0], x)])
        })?;
        let mut acc = r[0];
        if let Some(t) = self.threads {
            let width = self.b.ci(Ty::I32, t.count as i64);
            let mut off = t.count / 2;
            while off >= 1 {
                let o = self.b.ci(Ty::I32, off as i64);
                // Shuffles move 32-bit (or 64-bit) values; widen bytes and bools.
                let narrow = matches!(acc.ty, Ty::I1 | Ty::I8 | Ty::I16);
                let x = if narrow {
                    self.b.conv("arith.extsi", acc, Ty::I32)
                } else {
                    acc
                };
                let sh = self.b.op_multi(
                    &[x.ty, Ty::I1],
                    &format!("gpu.shuffle xor {x}, {o}, {width} : {}", x.ty),
                );
                let other = if narrow {
                    self.b.conv("arith.trunci", sh[0], acc.ty)
                } else {
                    sh[0]
                };
                acc = combine(&mut self.b, acc, other);
                off /= 2;
            }
        }
        Ok(acc)
    }
}

fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines().map(|l| format!("{pad}{l}\n")).collect()
}
