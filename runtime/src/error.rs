//! Runtime errors: each names the input, parameter, kernel, state or size involved.

use kiln_ir::dim::DimError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuntimeError {
    #[error("missing input `{name}` (expected {expected})")]
    MissingInput { name: String, expected: String },
    #[error("unexpected input `{name}`; the model takes: {known}")]
    UnknownInput { name: String, known: String },
    #[error("no output `{name}`; the model returns: {known}")]
    UnknownOutput { name: String, known: String },
    #[error("input `{name}` is {got}, expected {expected}")]
    InputType {
        name: String,
        got: String,
        expected: String,
    },
    #[error("input `{name}`: {source}")]
    InputShape { name: String, source: DimError },
    #[error("size `{name}` is needed but no input shape determines it; give it in the sizes")]
    MissingSize { name: String },
    #[error("size `{name}` is given as {value}; sizes cannot be negative")]
    NegativeSize { name: String, value: i64 },
    #[error("kernel `{kernel}`: {what} is {value}, past {limit} (sizes {sizes})")]
    OutOfRange {
        kernel: String,
        what: String,
        value: i64,
        limit: i64,
        sizes: String,
    },
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
    #[error("the plan is malformed: {0}")]
    BadPlan(String),
    #[error("`{name}` is not a state of the model; its states are: {states}")]
    NotState { name: String, states: String },
    #[error("state `{name}` is not initialized; call `init_state` or `set_state` first")]
    StateNotInitialized { name: String },
    #[error("input `{name}` is state, kept by the executor; set it with `set_state`, not as an input of `step`")]
    StateAsInput { name: String },
    #[error("state `{name}`: {source}")]
    StateShape { name: String, source: DimError },
    #[error("state `{name}` is {got}, expected {expected}")]
    StateType {
        name: String,
        got: String,
        expected: String,
    },
    #[error("sizes: {0}")]
    Size(#[from] DimError),
    #[error("cannot build the thread pool: {0}")]
    ThreadPool(String),
    /// Something this executor does not offer (what, on which device).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// No CUDA driver, no device, or no device of the requested ordinal.
    #[error("no CUDA device: {0}")]
    NoCudaDevice(String),
    /// A CUDA driver call failed: the call, what it was doing (the kernel,
    /// buffer or state involved) and the driver's error.
    #[error("CUDA {call} failed ({what}): {message}")]
    Cuda {
        call: String,
        what: String,
        message: String,
    },
}
