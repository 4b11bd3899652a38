//! The cost model extraction minimizes: estimated time of each e-node on the
//! target, from bytes moved and flops, with symbolic sizes evaluated at a
//! representative value.
//!
//! Each op is priced as if it ran on its own (read operands, write results):
//! extraction happens before fusion, and a term that moves fewer bytes or
//! does less arithmetic stays cheaper once fused. A small per-node overhead
//! makes fewer ops win ties (`x * 1` loses to `x`).

use crate::options::CostTarget;
use kiln_ir::{BinaryOp, Bindings, Dim, Op, TensorType, UnaryOp};

/// Every size symbol is priced at this value (`seq = past = batch = 128`).
pub const REPRESENTATIVE_SIZE: i64 = 128;

/// Prices e-nodes for one target, in nanoseconds.
#[derive(Clone, Debug)]
pub struct CostModel {
    pub target: CostTarget,
    /// Bytes per nanosecond.
    pub bandwidth: f64,
    /// Flops per nanosecond.
    pub flops: f64,
    /// Fixed cost of one op, nanoseconds.
    pub overhead: f64,
}

impl CostModel {
    /// CPU: ~40 GB/s, ~400 GFLOP/s. GPU: ~3 TB/s, ~50 TFLOP/s.
    pub fn new(target: CostTarget) -> CostModel {
        match target {
            CostTarget::Cpu => CostModel {
                target,
                bandwidth: 40.0,
                flops: 400.0,
                overhead: 200.0,
            },
            CostTarget::Gpu => CostModel {
                target,
                bandwidth: 3000.0,
                flops: 50_000.0,
                overhead: 3000.0,
            },
        }
    }

    /// The price of `op` with operand types `inputs` and result types `outputs`.
    pub fn op_cost(&self, op: &Op, inputs: &[&TensorType], outputs: &[TensorType]) -> f64 {
        self.op_cost_reading(op, inputs, inputs, outputs)
    }

    /// [`CostModel::op_cost`] where only `reads` (the distinct operands: `x * x`
    /// reads `x` once) count as bytes read.
    pub fn op_cost_reading(
        &self,
        op: &Op,
        inputs: &[&TensorType],
        reads: &[&TensorType],
        outputs: &[TensorType],
    ) -> f64 {
        let bytes_in: f64 = reads.iter().map(|t| bytes(t)).sum();
        let bytes_out: f64 = outputs.iter().map(bytes).sum();
        let out_elems: f64 = outputs.iter().map(elems).sum();
        let (moved, flops, overhead) = match op {
            Op::Input { .. } | Op::Param { .. } => return 0.0,
            // A scalar constant is an immediate; a tensor constant is a buffer to read.
            Op::Const(l) if l.shape.is_empty() => return 1.0,
            Op::Const(_) => (2.0 * bytes_out, 0.0, 1.0),
            // A reshape of a dense buffer is a view: metadata only.
            Op::Reshape { .. } => (0.0, 0.0, 0.05),
            Op::Iota { .. } => (bytes_out, out_elems, 1.0),
            Op::Unary(u) => (bytes_in + bytes_out, out_elems * unary_flops(*u), 1.0),
            Op::Binary(b) => (bytes_in + bytes_out, out_elems * binary_flops(*b), 1.0),
            Op::Compare(_) | Op::Select | Op::Cast(_) => (bytes_in + bytes_out, out_elems, 1.0),
            Op::Reduce { .. } => {
                let n: f64 = inputs.iter().map(|t| elems(t)).sum();
                (bytes_in + bytes_out, n, 1.0)
            }
            Op::MatMul | Op::MatMulT => {
                let k = inputs.first().and_then(|a| a.shape.last()).map_or(1.0, dim);
                (bytes_in + bytes_out, 2.0 * out_elems * k.max(1.0), 1.0)
            }
            // A broadcast reads its (small) operand once and writes the result.
            Op::Broadcast { .. } => (bytes_in + bytes_out, 0.0, 1.0),
            // Writes only the update when done in place.
            Op::UpdateSlice { .. } => (2.0 * (bytes_in - bytes_out).max(0.0), 0.0, 1.0),
            Op::Permute { .. }
            | Op::Slice { .. }
            | Op::Concat { .. }
            | Op::Pad { .. }
            | Op::Gather { .. } => (bytes_out * 2.0, 0.0, 1.0),
            // Every step runs the body as the kernels `fuse` makes of it: a
            // long scan pays the per-step launches `steps` times, which is
            // what lifting a linear recurrence out of the loop (`linear_scan`)
            // saves where launches are dear (the GPU); where they are cheap
            // (the CPU) the step loop's small, cache-resident state usually
            // wins over whole-sequence intermediates.
            Op::Scan(s) => {
                let steps = inputs
                    .get(s.num_carry)
                    .and_then(|t| t.shape.get(s.axis))
                    .map(dim)
                    .unwrap_or(1.0);
                let body = self.fused_body_cost(&s.body);
                return (bytes_in + bytes_out) / self.bandwidth + steps * body + self.overhead;
            }
            // Reads `a`, `b` and `h0` once, writes every state and the final
            // one; one multiply-add per state element and step.
            Op::LinearScan(_) => {
                let states = outputs.get(1).map_or(0.0, elems);
                (bytes_in + bytes_out, 2.0 * states, 1.0)
            }
            Op::Fused(f) => (bytes_in + bytes_out, body_elems(&f.body), 1.0),
            // Scores never reach memory: q, k, v (and any bias) are read once,
            // the result written once; per score a dot product, an exp and an
            // accumulation into the value row. Causal and sparse variants skip
            // about half of the scores or more; counted in full (an upper bound).
            Op::Attention(_) | Op::PrFlash(_) => {
                let (q, k) = (inputs[0], inputs[1]);
                let d = q.shape.last().map_or(1.0, dim);
                let tk = match op {
                    Op::Attention(a) if a.kv_len.is_some() => a.kv_len.as_ref().map_or(1.0, dim),
                    _ => k.shape.get(k.rank().wrapping_sub(2)).map_or(1.0, dim),
                };
                let dv = outputs[0].shape.last().map_or(1.0, dim).max(1.0);
                let scores = out_elems / dv * tk;
                (
                    bytes_in + bytes_out,
                    scores * (2.0 * d + 2.0 * dv + 20.0),
                    1.0,
                )
            }
            // In place: the new keys and values are read and written into the
            // state (a completed chunk's requantization amortizes over S
            // tokens); a handful of flops per element to round and quantize.
            Op::SaqAppend(_) => {
                let kv: f64 = inputs[1..].iter().map(|t| bytes(t)).sum();
                let n: f64 = inputs[1..].iter().map(|t| elems(t)).sum();
                (2.0 * kv, 10.0 * n, 1.0)
            }
            // Every query row reads its head's quantized state once (an upper
            // bound: the whole state) and decodes it: about two flops per
            // code for the dot product and two for the value sum.
            Op::SaqAttention(_) => {
                let rows = out_elems / outputs[0].shape.last().map_or(1.0, dim).max(1.0);
                let heads = inputs[0].shape.first().map_or(1.0, dim).max(1.0);
                let codes = 4.0 * bytes(inputs[1]) / heads;
                (bytes_in + bytes_out, rows * codes * 4.0, 1.0)
            }
        };
        moved / self.bandwidth + flops / self.flops + overhead * self.overhead
    }
}

impl CostModel {
    /// The price of one run of a (scan) body as `fuse` will run it: its
    /// element-wise, data-movement and reduction ops as one kernel that
    /// reads the body's inputs and writes its outputs once; any other op
    /// (a matmul, a nested scan) priced on its own.
    pub fn fused_body_cost(&self, g: &kiln_ir::Graph) -> f64 {
        let io: f64 = g
            .input_types()
            .iter()
            .chain(&g.output_types())
            .map(bytes)
            .sum();
        let (mut flops, mut others) = (0.0, 0.0);
        for n in g.node_ids() {
            let node = g.node(n);
            let out: f64 = node.outputs.iter().map(elems).sum();
            let operands: Vec<TensorType> =
                g.operands(n).iter().map(|v| g.ty(*v).clone()).collect();
            match &node.op {
                Op::Input { .. } | Op::Param { .. } | Op::Const(_) => {}
                Op::Unary(u) => flops += out * unary_flops(*u),
                Op::Binary(b) => flops += out * binary_flops(*b),
                Op::Compare(_) | Op::Select | Op::Cast(_) | Op::Iota { .. } => flops += out,
                Op::Reduce { .. } => flops += operands.iter().map(elems).sum::<f64>(),
                op if op.is_data_movement() => {}
                op => {
                    let refs: Vec<&TensorType> = operands.iter().collect();
                    others += self.op_cost(op, &refs, &node.outputs);
                }
            }
        }
        io / self.bandwidth + flops / self.flops + self.overhead + others
    }
}

/// Elements computed by one run of a body (its flops, roughly).
fn body_elems(body: &kiln_ir::Graph) -> f64 {
    body.node_ids()
        .map(|n| body.node(n).outputs.iter().map(elems).sum::<f64>())
        .sum()
}

/// Approximate flops per element: transcendental functions cost more.
fn unary_flops(u: UnaryOp) -> f64 {
    match u {
        UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Not | UnaryOp::Floor => 1.0,
        UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => 4.0,
        _ => 20.0,
    }
}

fn binary_flops(b: BinaryOp) -> f64 {
    match b {
        BinaryOp::Div => 4.0,
        BinaryOp::Pow => 40.0,
        _ => 1.0,
    }
}

/// A dim at the representative size (0 when it would be negative).
pub fn dim(d: &Dim) -> f64 {
    if let Some(c) = d.as_const() {
        return c.max(0) as f64;
    }
    let b: Bindings = d
        .symbols()
        .into_iter()
        .map(|s| (s.to_string(), REPRESENTATIVE_SIZE))
        .collect();
    d.eval(&b).map(|v| v as f64).unwrap_or(0.0)
}

/// Elements of a type at the representative size.
pub fn elems(t: &TensorType) -> f64 {
    t.shape.iter().map(dim).product()
}

/// Bytes of a type at the representative size.
pub fn bytes(t: &TensorType) -> f64 {
    elems(t) * t.dtype.size_bytes() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{shape, DType};

    #[test]
    fn symbols_are_priced_at_the_representative_size() {
        assert_eq!(dim(&"past+seq".parse().unwrap()), 256.0);
        assert_eq!(dim(&"seq-200".parse().unwrap()), 0.0);
        let t = TensorType::new(DType::F16, shape!["seq", 4]);
        assert_eq!(bytes(&t), 128.0 * 4.0 * 2.0);
    }

    #[test]
    fn targets_price_differently() {
        let t = TensorType::new(DType::F32, shape![1024, 1024]);
        let op = Op::Unary(UnaryOp::Exp);
        let cpu = CostModel::new(CostTarget::Cpu).op_cost(&op, &[&t], std::slice::from_ref(&t));
        let gpu = CostModel::new(CostTarget::Gpu).op_cost(&op, &[&t], std::slice::from_ref(&t));
        assert!(cpu > 10.0 * gpu, "cpu {cpu} gpu {gpu}");
        let id = Op::Reshape {
            shape: shape![1024 * 1024],
        };
        let view = CostModel::new(CostTarget::Cpu).op_cost(&id, &[&t], std::slice::from_ref(&t));
        assert!(view < cpu);
    }
}
