//! The text form of a graph: readable, diffable, and parsed back to an equal graph.
//!
//! ```text
//! graph @tiny(%tokens: i32[seq], %k_cache: f32[past,4,16]) {
//!   %0 = param "embed.weight" : f32[256,64]
//!   %1 = gather(%0, %tokens) {axis=0} : f32[seq,64] loc("embed")
//!   %2 = const 0.125 : f32[]
//!   %3 = mul(%1, %2) : f32[seq,64]
//!   %4:2 = scan(%a, %3) {num_carry=1, num_xs=1, axis=0, reverse=false} : (f32[64], f32[seq,64]) body
//!     graph @step(%c: f32[64], %x: f32[64]) {
//!       ...
//!     }
//!   return %3 as "logits", %9 as "k_cache_out" alias %k_cache
//! }
//! ```
//!
//! - Inputs are named (`%tokens`); every other node is numbered in the
//!   canonical order of [`crate::Graph::topo_order`]. A node with several
//!   results is declared `%4:2` and its results are used as `%4#0`, `%4#1`.
//! - Each line ends with the result type(s); the parser checks them against
//!   the type rules. `loc("...")` is an optional source location.
//! - Attributes are `{key=value, ...}`: integers, booleans, dims (`past+seq`),
//!   lists (`[0,2,1]`, shapes `[seq,64]`), dtypes and types.
//! - Float constants print the shortest text that reads back to the same bits;
//!   `inf`, `-inf`, `nan` are spelled out.

mod parse;
mod print;

pub use parse::{parse, ParseError};
pub use print::{format_float, print, quote};
