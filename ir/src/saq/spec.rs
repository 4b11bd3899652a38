//! [`SaqSpec`]: the bit ladder, chunk size `S` and group size `G`, and the
//! option text `saq:16,8,4,2:S=128:G=32` (every part after `saq` optional).

use super::SaqError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The parameters of an SAQ cache (DESIGN.md §4).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SaqSpec {
    /// Bits per rung, newest first: `16` (the f16 residual), then
    /// non-increasing widths from `{8, 4, 2, 1}`; at least two rungs.
    pub ladder: Vec<u32>,
    /// Chunk size `S` in tokens.
    pub chunk: usize,
    /// Group size `G`: tokens per key group (at most `S`), channels per
    /// value group (at most the head size).
    pub group: usize,
}

impl Default for SaqSpec {
    /// `(16, 8, 4, 2)`, `S = 128`, `G = 32`.
    fn default() -> Self {
        SaqSpec {
            ladder: vec![16, 8, 4, 2],
            chunk: 128,
            group: 32,
        }
    }
}

impl SaqSpec {
    /// A validated spec.
    pub fn new(ladder: Vec<u32>, chunk: usize, group: usize) -> Result<SaqSpec, SaqError> {
        let s = SaqSpec {
            ladder,
            chunk,
            group,
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks the ladder and the sizes.
    pub fn validate(&self) -> Result<(), SaqError> {
        let bad = |problem: &str| {
            Err(SaqError::Ladder {
                ladder: self.ladder.clone(),
                problem: problem.into(),
            })
        };
        if self.ladder.len() < 2 {
            return bad("needs at least two rungs (16 and one quantized width)");
        }
        if self.ladder[0] != 16 {
            return bad("the first rung must be 16 (the f16 residual)");
        }
        if let Some(b) = self.ladder[1..]
            .iter()
            .find(|b| !matches!(b, 1 | 2 | 4 | 8))
        {
            return bad(&format!("{b} bits is not a quantized width (8, 4, 2 or 1)"));
        }
        if self.ladder.windows(2).any(|w| w[1] > w[0]) {
            return bad("widths must not increase down the ladder");
        }
        let sizes = |problem: String| {
            Err(SaqError::Sizes {
                chunk: self.chunk,
                group: self.group,
                problem,
            })
        };
        if self.chunk == 0 || self.group == 0 {
            return sizes("S and G must be positive".into());
        }
        if self.group < self.chunk && !self.chunk.is_multiple_of(self.group) {
            return sizes(format!(
                "key groups of G={} tokens must tile a chunk of S={} (G must divide S, or be at least S)",
                self.group, self.chunk
            ));
        }
        Ok(())
    }

    /// Number of rungs `qn`.
    pub fn rungs(&self) -> usize {
        self.ladder.len()
    }

    /// Tokens per key group, `Gk = min(G, S)`.
    pub fn key_group(&self) -> usize {
        self.group.min(self.chunk)
    }

    /// Parses `saq[:B1,B2,…][:S=n][:G=n]` (parts in any order after `saq`;
    /// omitted parts keep the defaults `16,8,4,2`, `S=128`, `G=32`).
    pub fn parse(text: &str) -> Result<SaqSpec, SaqError> {
        let perr = |problem: String| SaqError::Parse {
            text: text.to_string(),
            problem,
        };
        let mut parts = text.split(':');
        match parts.next() {
            Some("saq") => {}
            _ => {
                return Err(perr(
                    "expected `saq[:16,8,4,2][:S=128][:G=32]` (or `f32`, the exact cache)".into(),
                ))
            }
        }
        let mut spec = SaqSpec::default();
        let (mut seen_ladder, mut seen_s, mut seen_g) = (false, false, false);
        for part in parts {
            let once = |seen: &mut bool, what: &str| {
                if std::mem::replace(seen, true) {
                    Err(perr(format!("{what} is given twice")))
                } else {
                    Ok(())
                }
            };
            let number = |v: &str, what: &str| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| perr(format!("{what} `{v}` is not a non-negative integer")))
            };
            if let Some(v) = part.strip_prefix("S=") {
                once(&mut seen_s, "S")?;
                spec.chunk = number(v, "the chunk size S")?;
            } else if let Some(v) = part.strip_prefix("G=") {
                once(&mut seen_g, "G")?;
                spec.group = number(v, "the group size G")?;
            } else if part.starts_with(|c: char| c.is_ascii_digit()) {
                once(&mut seen_ladder, "the ladder")?;
                spec.ladder = part
                    .split(',')
                    .map(|b| {
                        b.trim()
                            .parse::<u32>()
                            .map_err(|_| perr(format!("ladder width `{b}` is not an integer")))
                    })
                    .collect::<Result<_, _>>()?;
            } else {
                return Err(perr(format!(
                    "`{part}` is not a ladder (16,8,4,2), S=n or G=n"
                )));
            }
        }
        spec.validate().map_err(|e| perr(e.to_string()))?;
        Ok(spec)
    }
}

/// The option text: `saq:16,8,4,2:S=128:G=32`.
impl fmt::Display for SaqSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l: Vec<String> = self.ladder.iter().map(|b| b.to_string()).collect();
        write!(f, "saq:{}:S={}:G={}", l.join(","), self.chunk, self.group)
    }
}
