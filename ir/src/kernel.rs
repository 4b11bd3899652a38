//! The kernel model shared by code generation and the runtime.
//!
//! A kernel is a function over a one-dimensional grid of blocks. The GPU
//! launches the grid; the CPU executor hands ranges of blocks to its threads.
//! Kernels never know which executor runs them.
//!
//! **CPU ABI** (host code, C calling convention):
//!
//! ```c
//! void kernel(void **args, const int64_t *sizes, int64_t block_begin, int64_t block_end);
//! ```
//!
//! - `args`: one pointer per operand of the kernel node, then one per result,
//!   each to a dense row-major buffer of the value's dtype (`bool` is one byte).
//! - `sizes`: the values of the compiled graph's size symbols, in the sorted
//!   order of [`KernelLaunch::symbols`] (the same list for every kernel of a module).
//! - The call computes blocks `block_begin..block_end` of the grid.
//!
//! **GPU ABI** (PTX `.entry`): parameters are the buffer pointers (operands,
//! then results) followed by the sizes as `i64`; the kernel is launched with
//! `grid = (num_blocks, 1, 1)` and `block = (gpu_threads, 1, 1)`, and block `b`
//! of the grid is `blockIdx.x`.

use crate::dim::{Bindings, Dim, DimError};
use serde::{Deserialize, Serialize};

/// One factor of a grid: `ceil(extent / tile)` blocks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GridDim {
    pub extent: Dim,
    pub tile: i64,
}

/// A grid of `Π ceil(extent_i / tile_i)` blocks. Block ids are row-major over
/// the factors (the last factor varies fastest), which is how kernels decode them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grid {
    pub dims: Vec<GridDim>,
}

impl Grid {
    /// A grid of `extent` blocks, one per element of `extent`.
    pub fn rows(extent: Dim) -> Grid {
        Grid {
            dims: vec![GridDim { extent, tile: 1 }],
        }
    }

    /// The number of blocks under `bindings`.
    pub fn num_blocks(&self, bindings: &Bindings) -> Result<usize, DimError> {
        let mut n: usize = 1;
        for d in &self.dims {
            let e = d.extent.eval_usize(bindings)?;
            let t = d.tile.max(1) as usize;
            n = n
                .checked_mul(e.div_ceil(t))
                .ok_or_else(|| DimError::Overflow(d.extent.to_string()))?;
        }
        Ok(n)
    }
}

/// What the runtime needs to launch a compiled kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelLaunch {
    /// Symbol name of the kernel function.
    pub name: String,
    pub grid: Grid,
    /// Size symbols passed in the `sizes` array, in order.
    pub symbols: Vec<String>,
    /// Threads per block on the GPU (ignored on the CPU).
    pub gpu_threads: u32,
}
