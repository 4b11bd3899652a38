//! From kernel specs to one MLIR module (text), before any lowering.

use crate::attention::{emit_attention, Mode};
use crate::error::CodegenError;
use crate::fused::emit_fused;
use crate::matmul::emit_matmul;
use crate::target::{EmitTarget, Target};
use crate::update::emit_update_slice;
use crate::KernelSpec;
use kiln_ir::infer::infer;
use kiln_ir::kernel::KernelLaunch;
use kiln_ir::Op;
use std::collections::HashSet;

/// The emitted module and the launch information of each kernel.
pub struct Emitted {
    pub mlir: String,
    pub launches: Vec<KernelLaunch>,
}

fn valid_symbol(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$')
}

/// Checks a spec against its op's type rule.
fn check_spec(k: &KernelSpec) -> Result<(), CodegenError> {
    let bad = |message: String| CodegenError::BadSpec {
        kernel: k.name.clone(),
        message,
    };
    if !valid_symbol(&k.name) {
        return Err(bad("a kernel name must be [A-Za-z_][A-Za-z0-9_.$]*".into()));
    }
    let tys: Vec<_> = k.operand_types.iter().collect();
    let got = infer(&k.op, &tys).map_err(|e| bad(e.to_string()))?;
    if got != k.result_types {
        return Err(bad(format!(
            "result types {:?} do not match the op's {:?}",
            k.result_types, got
        )));
    }
    Ok(())
}

pub fn emit_module(
    kernels: &[KernelSpec],
    symbols: &[String],
    target: Target,
    portable_math: bool,
) -> Result<Emitted, CodegenError> {
    let et = EmitTarget::new(target, portable_math);
    let mut seen = HashSet::new();
    let mut funcs = String::new();
    let mut externs = std::collections::BTreeSet::new();
    let mut launches = Vec::new();
    for k in kernels {
        check_spec(k)?;
        if !seen.insert(k.name.as_str()) {
            return Err(CodegenError::BadSpec {
                kernel: k.name.clone(),
                message: "two kernels have this name".into(),
            });
        }
        let (kf, grid, threads) = match &k.op {
            Op::Fused(f) => emit_fused(&k.name, f, symbols, et)?,
            Op::MatMul | Op::MatMulT => emit_matmul(
                &k.name,
                &k.operand_types[0],
                &k.operand_types[1],
                k.op == Op::MatMulT,
                symbols,
                et,
            )?,
            Op::UpdateSlice { axis, start } => emit_update_slice(
                &k.name,
                *axis,
                start,
                &k.operand_types[0],
                &k.operand_types[1],
                symbols,
                et,
            )?,
            Op::Attention(a) => {
                emit_attention(&k.name, Mode::Flash(a), &k.operand_types, symbols, et)?
            }
            Op::PrFlash(a) => {
                emit_attention(&k.name, Mode::PrFlash(a), &k.operand_types, symbols, et)?
            }
            Op::LinearScan(l) => {
                crate::linear_scan::emit_linear_scan(&k.name, l, &k.operand_types, symbols, et)?
            }
            Op::SaqAppend(a) => {
                crate::saq_append::emit_saq_append(&k.name, a, &k.operand_types, symbols, et)?
            }
            Op::SaqAttention(a) => {
                crate::saq_attention::emit_saq_attention(&k.name, a, &k.operand_types, symbols, et)?
            }
            other => {
                return Err(CodegenError::Unsupported {
                    kernel: k.name.clone(),
                    op: other.name().to_string(),
                    detail: "no kernel emitter for this op".into(),
                })
            }
        };
        funcs.push_str(&kf.text);
        externs.extend(kf.externs);
        launches.push(KernelLaunch {
            name: k.name.clone(),
            grid,
            symbols: symbols.to_vec(),
            gpu_threads: threads,
        });
    }
    let mlir = if et.gpu {
        format!(
            "module attributes {{gpu.container_module}} {{\n  gpu.module @kernels {{\n{funcs}  }}\n}}\n"
        )
    } else {
        let decls: String = externs.iter().map(|d| format!("  {d}\n")).collect();
        format!("module {{\n{decls}{funcs}}}\n")
    };
    Ok(Emitted { mlir, launches })
}
