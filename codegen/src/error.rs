//! Typed errors of code generation.

use kiln_ir::kernel::FusionError;
use kiln_ir::DType;

/// Why a kernel could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodegenError {
    /// The kernel (or a node of its body) is an op code generation does not handle.
    #[error("kernel `{kernel}`: unsupported op `{op}`{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    Unsupported {
        kernel: String,
        op: String,
        detail: String,
    },
    /// An op applied to a dtype code generation does not handle.
    #[error("kernel `{kernel}`: op `{op}` is not supported on {dtype}")]
    UnsupportedDType {
        kernel: String,
        op: String,
        dtype: DType,
    },
    /// A fused body breaks the fusion contract ([`kiln_ir::kernel::check_fused`]).
    #[error("kernel `{kernel}`: {source}")]
    Fusion {
        kernel: String,
        #[source]
        source: FusionError,
    },
    /// The kernel spec disagrees with its op (operand or result types, names).
    #[error("kernel `{kernel}`: {message}")]
    BadSpec { kernel: String, message: String },
    /// A dimension mentions a size symbol that is not in the module's symbol list.
    #[error("kernel `{kernel}`: size `{symbol}` is not among the module's symbols {symbols:?}")]
    UnknownSymbol {
        kernel: String,
        symbol: String,
        symbols: Vec<String>,
    },
    /// The generated MLIR did not parse or verify. `line` is the offending
    /// line of the generated text when the diagnostic points at one.
    #[error("generated MLIR does not parse: {message}{}", line.as_ref().map(|l| format!("\n  at: {l}")).unwrap_or_default())]
    Parse {
        message: String,
        line: Option<String>,
    },
    /// A lowering stage failed.
    #[error("stage `{stage}` failed: {message}")]
    Pass { stage: String, message: String },
    /// The JIT could not compile the lowered module or find a kernel in it.
    #[error("JIT: {0}")]
    Jit(String),
    /// PTX could not be produced or extracted.
    #[error("PTX: {0}")]
    Ptx(String),
    /// Writing a dump file failed.
    #[error("ahead-of-time compilation: {0}")]
    Aot(String),
    #[error("linking {out} with `{linker}`: {message}")]
    Link {
        linker: String,
        out: String,
        message: String,
    },
    #[error("dump to `{path}`: {message}")]
    Dump { path: String, message: String },
}
