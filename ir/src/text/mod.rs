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
//!   the type rules. `loc("...")` is an optional source location (also after
//!   an input's type in the header).
//! - Attributes are `{key=value, ...}`: integers, booleans, dims (`past+seq`),
//!   lists (`[0,2,1]`, shapes `[seq,64]`), dtypes and types.
//! - Float constants print the shortest text that reads back to the same bits;
//!   `inf`, `-inf`, `nan` are spelled out.
//!
//! # Grammar
//!
//! Whitespace, newlines included, only separates tokens; `//` starts a comment
//! that runs to the end of the line.
//!
//! ```text
//! graph   := 'graph' '@'NAME '(' [input (',' input)*] ')' '{' node* return '}'
//! input   := '%'NAME ':' type [loc]
//! node    := '%'ID [':' INT] '=' rhs [attrs] ':' types [loc] ['body' graph]
//! rhs     := 'param' STRING | 'const' literal | OPNAME '(' [use (',' use)*] ')'
//! use     := '%'ID ['#' INT]
//! literal := item | '[' [item (',' item)*] ']'      (row-major, flat)
//! item    := ['-'] (NUMBER | 'inf' | 'nan' | 'true' | 'false') | HEXBITS
//! attrs   := '{' [KEY '=' value (',' KEY '=' value)*] '}'
//! types   := type | '(' [type (',' type)*] ')'
//! type    := DTYPE '[' [dim (',' dim)*] ']'
//! loc     := 'loc' '(' STRING ')'
//! return  := 'return' [use 'as' STRING ['alias' '%'NAME] (',' ...)*]
//! ```
//!
//! - `NAME` is an identifier (`[A-Za-z_][A-Za-z0-9_.]*`). Node ids `ID` may be
//!   any distinct names (`%7`, `%h`); the printer numbers them `%0, %1, ...` in
//!   canonical order, so printing a parsed graph gives the canonical text.
//!   A value must be defined before it is used; a body sees only its own inputs.
//! - `dim` uses the grammar of [`crate::Dim`]'s `FromStr` (`past+seq`, `2*seq-1`).
//! - Strings are double-quoted with the escapes of [`quote`]: `\"`, `\\`,
//!   `\n`, `\t`, `\r` and `\u{hex}`.
//! - `param` and `const` take one result type; the type of a const gives the
//!   dtype and (static) shape of its literal. Float items are rounded to the
//!   dtype (`f32` directly from the decimal); integers must fit their dtype;
//!   `HEXBITS` (`0x` and up to 16 hex digits) is the raw bits of an `f64` and
//!   is how NaNs other than the canonical `nan` print.
//! - Attribute keys per op: `iota {axis, type}`, `cast {to}`,
//!   `reduce_* {axes, keep_dims}`, `reshape`/`broadcast {shape}`,
//!   `permute {perm}`, `slice {axis, start, end}`, `concat`/`gather {axis}`,
//!   `pad {axis, low, high, value}`, `scan {num_carry, num_xs, axis, reverse}`,
//!   `fused {kind}`; all are required, in any order.
//! - `scan` and `fused` lines end with `body` and the body graph, which may not
//!   hold parameters and must return at least one value.
//!
//! The parser rebuilds the graph with [`crate::Graph::add_input`] and
//! [`crate::Graph::add_node`], checks every declared result type against the
//! inferred one, and runs [`crate::verify()`]. Every error is a [`ParseError`]
//! with the line and column of the offending token; no input makes it panic.
//! To keep dim arithmetic from overflowing on hostile input, dims are limited
//! to coefficients summing to 2^40 and 64 terms, and bodies to 32 levels.

pub(crate) mod attrs;
mod lex;
pub(crate) mod limits;
pub(crate) mod number;
mod parse;
mod print;

pub use parse::{parse, parse_dim, parse_type, ParseError, MAX_BODY_DEPTH};
pub use print::{format_float, print, quote};
