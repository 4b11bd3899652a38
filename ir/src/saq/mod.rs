//! SAQ — staircase adaptive quantization of the KV cache (DESIGN.md §4).
//!
//! A fixed-capacity cache of `ctx` tokens for `H` KV heads of `D` channels
//! whose older tokens hold fewer bits. With the bit ladder
//! `B = (B1, …, Bqn)` (default `(16, 8, 4, 2)`), chunk size `S` and group
//! size `G`:
//!
//! - the newest `T mod S` tokens (fewer than `S`) stay at `B1` = f16 (the
//!   *residual*);
//! - the `k`-th most recent complete chunk of `S` tokens is stored at
//!   `B[min(k+1, qn)]`: when the residual fills, it is quantized at `B2` and
//!   every older chunk steps one rung down, requantized from its dequantized
//!   values; chunks at the bottom rung stay as they are;
//! - quantization is KIVI's asymmetric min–max per group: keys per channel
//!   over groups of `Gk = min(G, S)` tokens of a chunk, values per token over
//!   groups of `Gv = min(G, D)` channels of a head (see [`quant`]).
//!
//! Example (S = 4, 17 tokens, oldest first): 8 tokens at 2 bits, 4 at 4,
//! 4 at 8, 1 at 16.
//!
//! # The state
//!
//! One layer's cache is one byte buffer (`u8[N]`), laid out by
//! [`SaqLayout`] from `(S, G, ladder, H, D)` and the capacity alone — the
//! number of tokens `T` it holds (the size `past`) says where each token is,
//! no header is stored:
//!
//! ```text
//! region 0      residual   S rows × H × W16    (f16 keys, f16 values)
//! region r      rung r     S rows × H × W(Br)  one chunk, r = 1 … qn-2
//! region qn-1   bottom     one slot of S rows per chunk at Bqn, oldest first
//! ```
//!
//! A row is one token of one head (rows are token-major, heads inner, as in
//! the f32 cache `[ctx, H, D]`). At `b < 16` bits a row holds
//!
//! ```text
//! key codes D·b/8 | value codes D·b/8 | value meta 4·⌈D/Gv⌉ | key meta 4·⌈D/Gk⌉
//! ```
//!
//! codes packed little-endian (code `i` at bit `(i·b) mod 8` of byte
//! `i·b/8`), each meta entry an f16 scale then an f16 min. A key group's
//! meta (one entry per channel) is spread over the group's own `Gk` rows,
//! `⌈D/Gk⌉` channels per row, so every pool is a whole number of rows. The
//! residual's row is `D` f16 keys then `D` f16 values (`W16 = 4D`).
//!
//! Chunk `c` (oldest = 0) of a cache holding `T` tokens (`n = T / S`
//! complete chunks) is in region `min(n - c, qn-1)`; at the bottom it fills
//! rows `c·S … c·S+S` of the bottom region. A cache of capacity `ctx` has
//! at most `⌊ctx/S⌋ - (qn-2)` bottom chunks, so the buffer ends
//! `ctx - (qn-2)·S` rows after the bottom region's start:
//! `N = fixed + H·W(Bqn)·(ctx - (qn-2)·S)`, linear in `ctx` (a symbolic dim)
//! and never short of a byte that `ctx` tokens use (for a small `ctx` the
//! cut-off tail lies in middle rungs that `ctx` tokens never reach).
//!
//! # Modules
//!
//! | module | what it holds |
//! |---|---|
//! | [`spec`] | [`SaqSpec`] (ladder, `S`, `G`) and its `saq:16,8,4,2:S=128:G=32` text |
//! | [`layout`] | [`SaqLayout`]: regions, rows, where each token lives, bytes |
//! | [`quant`] | f16 rounding, min–max group quantization, code packing |
//! | [`cache`] | `append`, reading tokens, and attention over the state |
//! | [`ops`] | the kernel-level ops `saq_append` and `saq_attention` |

pub mod cache;
pub mod layout;
pub mod ops;
pub mod quant;
pub mod spec;

pub use cache::{append, attention, read_token, AttentionShape};
pub use layout::{Placement, SaqLayout, TokenLocation};
pub use ops::{SaqAppendOp, SaqAttentionOp};
pub use spec::SaqSpec;

/// Why an SAQ spec, layout, state or operand is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaqError {
    #[error("kv-cache option `{text}`: {problem}")]
    Parse { text: String, problem: String },
    #[error("SAQ ladder {ladder:?}: {problem}")]
    Ladder { ladder: Vec<u32>, problem: String },
    #[error("SAQ sizes S={chunk}, G={group}: {problem}")]
    Sizes {
        chunk: usize,
        group: usize,
        problem: String,
    },
    #[error("SAQ cache of {heads} head(s) of {dim} channel(s): {problem}")]
    Geometry {
        heads: usize,
        dim: usize,
        problem: String,
    },
    #[error("SAQ state of {got} bytes does not fit the layout: {expected}")]
    StateSize { got: usize, expected: String },
    #[error("SAQ cache with capacity for {capacity} tokens cannot take {seq} more after {past}")]
    Capacity {
        capacity: usize,
        past: usize,
        seq: usize,
    },
    #[error("SAQ {what}: {problem}")]
    Operand { what: &'static str, problem: String },
}
