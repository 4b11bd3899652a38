//! Compiled kernels against the reference interpreter (CPU), PTX through
//! ptxas, and typed errors (`update_slice` kernels in `updates.rs`). One test binary: each links all of LLVM.

mod attention;
mod errors;
mod harness;
mod linear_scan;
mod loops;
mod matmuls;
mod ptx;
mod rows;
mod saq;
mod updates;

use kiln_ir::{FusedOp, FusionKind, Graph, Op, TensorType};
use std::sync::Arc;

/// A fused op from a body built by `f`.
pub fn fused(kind: FusionKind, f: impl FnOnce(&mut Graph)) -> Op {
    let mut g = Graph::new("body");
    f(&mut g);
    Op::Fused(FusedOp {
        kind,
        body: Arc::new(g),
    })
}

pub fn ty(d: kiln_ir::DType, shape: &[&str]) -> TensorType {
    TensorType::new(d, shape.iter().map(|s| kiln_ir::Dim::from(*s)).collect())
}
