//! [`SaqLayout`]: where every byte of an SAQ state lives (see the module
//! docs of [`crate::saq`] for the picture). Everything here follows from
//! the spec, the head count and size, the capacity and the token count.

use super::{SaqError, SaqSpec};
use crate::dim::Dim;

/// The geometry of one layer's SAQ state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaqLayout {
    spec: SaqSpec,
    heads: usize,
    dim: usize,
    /// Bytes of one row (one token of one head), per rung.
    rows: Vec<usize>,
    /// Byte offset of each rung's region; the last is the bottom's.
    offsets: Vec<usize>,
}

/// How `T` tokens split into complete chunks and the residual.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Complete chunks, `T / S`.
    pub chunks: usize,
    /// Tokens in the f16 residual, `T mod S`.
    pub residual: usize,
}

/// Where one token is: its rung (region) and its row in that region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLocation {
    pub rung: usize,
    pub row: usize,
}

impl SaqLayout {
    /// The layout for `heads` KV heads of `dim` channels. Every quantized
    /// width must pack a head's codes into whole bytes (`dim·b` a multiple
    /// of 8).
    pub fn new(spec: &SaqSpec, heads: usize, dim: usize) -> Result<SaqLayout, SaqError> {
        spec.validate()?;
        let geo = |problem: String| SaqError::Geometry {
            heads,
            dim,
            problem,
        };
        if heads == 0 || dim == 0 {
            return Err(geo("heads and channels must be positive".into()));
        }
        if let Some(b) = spec.ladder[1..]
            .iter()
            .find(|&&b| !(dim * b as usize).is_multiple_of(8))
        {
            return Err(geo(format!(
                "{dim} channels at {b} bits do not fill whole bytes (D·b must be a multiple of 8)"
            )));
        }
        let mut l = SaqLayout {
            spec: spec.clone(),
            heads,
            dim,
            rows: Vec::new(),
            offsets: Vec::new(),
        };
        l.rows = (0..spec.rungs()).map(|r| l.compute_row_bytes(r)).collect();
        let mut off = 0;
        for r in 0..spec.rungs() {
            l.offsets.push(off);
            off += spec.chunk * heads * l.rows[r];
        }
        Ok(l)
    }

    fn compute_row_bytes(&self, rung: usize) -> usize {
        if rung == 0 {
            return 4 * self.dim;
        }
        2 * self.code_bytes(rung) + 4 * self.value_groups() + 4 * self.key_meta_per_row()
    }

    pub fn spec(&self) -> &SaqSpec {
        &self.spec
    }
    pub fn heads(&self) -> usize {
        self.heads
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Number of rungs `qn`.
    pub fn rungs(&self) -> usize {
        self.spec.rungs()
    }
    /// The bottom rung, `qn - 1`.
    pub fn bottom(&self) -> usize {
        self.rungs() - 1
    }
    /// Bits of rung `r` (16 for the residual).
    pub fn bits(&self, rung: usize) -> u32 {
        self.spec.ladder[rung]
    }
    /// Chunk size `S`.
    pub fn chunk(&self) -> usize {
        self.spec.chunk
    }
    /// Bytes of one row (one token of one head) at rung `r`.
    pub fn row_bytes(&self, rung: usize) -> usize {
        self.rows[rung]
    }
    /// Byte offset of rung `r`'s region in the state.
    pub fn region_offset(&self, rung: usize) -> usize {
        self.offsets[rung]
    }
    /// Byte offset of row `row` of head `head` in rung `r`'s region.
    pub fn row_offset(&self, rung: usize, row: usize, head: usize) -> usize {
        self.offsets[rung] + (row * self.heads + head) * self.rows[rung]
    }

    /// Bytes of one head's packed codes of keys (or values) at rung `r >= 1`.
    pub fn code_bytes(&self, rung: usize) -> usize {
        self.dim * self.bits(rung) as usize / 8
    }
    /// Offset of the value codes in a row (the key codes are at 0).
    pub fn value_codes_offset(&self, rung: usize) -> usize {
        self.code_bytes(rung)
    }
    /// Offset of the value groups' meta (scale, min) in a row.
    pub fn value_meta_offset(&self, rung: usize) -> usize {
        2 * self.code_bytes(rung)
    }
    /// Offset of the row's share of its key group's meta.
    pub fn key_meta_offset(&self, rung: usize) -> usize {
        2 * self.code_bytes(rung) + 4 * self.value_groups()
    }
    /// Tokens per key group, `Gk = min(G, S)`.
    pub fn key_group(&self) -> usize {
        self.spec.key_group()
    }
    /// Channels per value group, `Gv = min(G, D)`.
    pub fn value_group(&self) -> usize {
        self.spec.group.min(self.dim)
    }
    /// Value groups per row, `⌈D / Gv⌉` (the last may be shorter).
    pub fn value_groups(&self) -> usize {
        self.dim.div_ceil(self.value_group())
    }
    /// Key-meta entries per row, `⌈D / Gk⌉`.
    pub fn key_meta_per_row(&self) -> usize {
        self.dim.div_ceil(self.key_group())
    }
    /// Where channel `c`'s key meta is, relative to its group's first row:
    /// `(row, byte offset within the row's key-meta area)`.
    pub fn key_meta_slot(&self, channel: usize) -> (usize, usize) {
        let per = self.key_meta_per_row();
        (channel / per, 4 * (channel % per))
    }

    /// Bytes before the bottom region.
    fn fixed(&self) -> usize {
        self.offsets[self.bottom()]
    }
    /// Bytes of one bottom row across heads.
    fn bottom_token_bytes(&self) -> usize {
        self.heads * self.rows[self.bottom()]
    }
    /// The constant part of the state size: `fixed - (qn-2)·S·H·W(Bqn)`
    /// (positive: every middle rung is at least as wide as the bottom).
    fn base(&self) -> usize {
        self.fixed() - (self.rungs() - 2) * self.chunk() * self.bottom_token_bytes()
    }

    /// State bytes for a capacity of `ctx` tokens.
    pub fn state_bytes(&self, ctx: usize) -> usize {
        self.base() + self.bottom_token_bytes() * ctx
    }

    /// The state's length as a dim of the capacity (`ctx` symbolic).
    pub fn state_len(&self, ctx: &Dim) -> Dim {
        &Dim::constant(self.base() as i64) + &ctx.scale(self.bottom_token_bytes() as i64)
    }

    /// The capacity (tokens) of a state of `bytes` bytes.
    pub fn capacity(&self, bytes: usize) -> Result<usize, SaqError> {
        let (base, per) = (self.base(), self.bottom_token_bytes());
        if bytes < base || !(bytes - base).is_multiple_of(per) {
            return Err(SaqError::StateSize {
                got: bytes,
                expected: format!("{base} + {per}·ctx bytes for a capacity of ctx tokens"),
            });
        }
        Ok((bytes - base) / per)
    }

    /// The capacity as a dim, when `len` has the layout's form
    /// `base + per·ctx`.
    pub fn capacity_dim(&self, len: &Dim) -> Option<Dim> {
        (len - &Dim::constant(self.base() as i64)).div_exact(self.bottom_token_bytes() as i64)
    }

    /// A description of the expected length, for errors.
    pub fn describe_len(&self) -> String {
        format!("{} + {}·ctx bytes", self.base(), self.bottom_token_bytes())
    }

    /// Complete chunks and residual of `tokens` tokens.
    pub fn placement(&self, tokens: usize) -> Placement {
        Placement {
            chunks: tokens / self.chunk(),
            residual: tokens % self.chunk(),
        }
    }

    /// The rung of chunk `c` (oldest = 0) when the cache holds `tokens`
    /// tokens: `min(n - c, qn - 1)` for the `n - c`-th most recent chunk.
    pub fn chunk_rung(&self, tokens: usize, c: usize) -> usize {
        let n = tokens / self.chunk();
        debug_assert!(c < n, "chunk {c} of {n}");
        (n - c).min(self.bottom())
    }

    /// The first row of chunk `c` in its region (`c·S` at the bottom, else 0).
    pub fn chunk_first_row(&self, rung: usize, c: usize) -> usize {
        if rung == self.bottom() {
            c * self.chunk()
        } else {
            0
        }
    }

    /// Where token `t` (`t < tokens`) is when the cache holds `tokens` tokens.
    pub fn locate(&self, tokens: usize, t: usize) -> TokenLocation {
        let s = self.chunk();
        let n = tokens / s;
        let c = t / s;
        if c >= n {
            return TokenLocation {
                rung: 0,
                row: t - n * s,
            };
        }
        let rung = self.chunk_rung(tokens, c);
        TokenLocation {
            rung,
            row: self.chunk_first_row(rung, c) + t % s,
        }
    }

    /// How many of `tokens` tokens each rung holds (index = rung).
    pub fn tokens_per_rung(&self, tokens: usize) -> Vec<usize> {
        let mut out = vec![0; self.rungs()];
        let p = self.placement(tokens);
        out[0] = p.residual;
        for c in 0..p.chunks {
            out[self.chunk_rung(tokens, c)] += self.chunk();
        }
        out
    }

    /// Bytes the rows of `tokens` tokens occupy (codes and meta; no
    /// unused capacity).
    pub fn used_bytes(&self, tokens: usize) -> usize {
        self.tokens_per_rung(tokens)
            .iter()
            .enumerate()
            .map(|(r, n)| n * self.heads * self.rows[r])
            .sum()
    }

    /// Bytes of an f16 cache (keys and values) of `ctx` tokens.
    pub fn f16_bytes(&self, ctx: usize) -> usize {
        ctx * self.heads * self.dim * 2 * 2
    }
}
