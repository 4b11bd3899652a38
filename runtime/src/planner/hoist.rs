//! Work that depends on weights and constants only is done once, at load.
//!
//! A top-level kernel launch whose operands are all weights, constants or
//! results of such launches, whose op mentions no size symbol and whose
//! results have static shapes computes the same values on every call — a
//! weight stored `[out, in]` transposed for a matmul, a weight cast, a
//! rotary table. Its results become [`Storage::Derived`] buffers that the
//! executor computes when it is created; per call (a decode step reads
//! every weight once) the transposition's traffic is gone.

use super::{root_of, symbols};
use crate::plan::{Buffer, PlanKernel, Step, Storage};

/// Marks the launches of `steps` that can run at load and makes their
/// results derived; returns one flag per step.
pub(crate) fn mark(buffers: &mut [Buffer], kernels: &[PlanKernel], steps: &[Step]) -> Vec<bool> {
    steps
        .iter()
        .map(|step| {
            let Step::Kernel { kernel, args } = step else {
                return false;
            };
            let k = &kernels[*kernel];
            let n = k.operand_types.len();
            let constant = args[..n].iter().all(|&a| {
                matches!(
                    buffers[root_of(buffers, a)].storage,
                    Storage::Param(_) | Storage::Const(_) | Storage::Derived
                )
            });
            let fresh = args[n..]
                .iter()
                .all(|&r| buffers[r].storage == (Storage::Temp { slot: usize::MAX }));
            let hoist = constant
                && fresh
                && k.result_types.iter().all(|t| t.is_static())
                && symbols::op_is_static(&k.op);
            if hoist {
                for &r in &args[n..] {
                    buffers[r].storage = Storage::Derived;
                }
            }
            hoist
        })
        .collect()
}
