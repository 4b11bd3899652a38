//! Runtime errors: each names the input, parameter, kernel or size involved.

use kiln_ir::dim::DimError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuntimeError {
    #[error("missing input `{name}` (expected {expected})")]
    MissingInput { name: String, expected: String },
    #[error("unexpected input `{name}`; the model takes: {known}")]
    UnknownInput { name: String, known: String },
    #[error("input `{name}` is {got}, expected {expected}")]
    InputType {
        name: String,
        got: String,
        expected: String,
    },
    #[error("input `{name}`: {source}")]
    InputShape { name: String, source: DimError },
    #[error("missing parameter `{name}` (expected {expected})")]
    MissingParam { name: String, expected: String },
    #[error("parameter `{name}` is {got}, expected {expected}")]
    ParamType {
        name: String,
        got: String,
        expected: String,
    },
    #[error("kernel `{0}` is missing from the compiled module")]
    MissingKernel(String),
    #[error("kernel `{name}` was compiled for sizes {compiled:?}, the plan passes {plan:?}")]
    SymbolOrder {
        name: String,
        compiled: Vec<String>,
        plan: Vec<String>,
    },
    #[error("sizes: {0}")]
    Size(#[from] DimError),
    #[error("cannot build the thread pool: {0}")]
    ThreadPool(String),
}
