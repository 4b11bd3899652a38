//! The interpreter's error type.

use crate::dim::DimError;
use crate::types::TensorType;
use crate::verify::VerifyError;

/// Why a graph or an op could not be evaluated. Every variant names the
/// place: the input or parameter, or the node (`n5 `gather` at emb`; inside
/// a body, the outer node first: `n7 `scan` › step 3 › n2 `div``).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    /// The graph failed [`crate::verify()`]; nothing was evaluated.
    #[error("the graph is not well-formed: {0}")]
    Verify(#[from] VerifyError),
    #[error("missing input `{name}` of type {expected}")]
    MissingInput { name: String, expected: TensorType },
    #[error("unexpected input `{name}`: graph @{graph} has no input of that name")]
    UnexpectedInput { name: String, graph: String },
    #[error("graph @{graph} takes {expected} input(s), got {got}")]
    InputCount {
        graph: String,
        expected: usize,
        got: usize,
    },
    /// An input tensor of the wrong dtype, rank or shape (or malformed data).
    #[error("input `{name}` should be {expected} but is {got}: {reason}")]
    InputType {
        name: String,
        expected: TensorType,
        got: String,
        reason: String,
    },
    #[error("missing parameter `{name}` of type {expected}")]
    MissingParam { name: String, expected: TensorType },
    /// A parameter tensor of the wrong dtype, rank or shape (or malformed data).
    #[error("parameter `{name}` should be {expected} but is {got}: {reason}")]
    ParamType {
        name: String,
        expected: TensorType,
        got: String,
        reason: String,
    },
    /// A symbolic dimension that could not be evaluated (unbound size, negative, overflow).
    #[error("{place}: {source}")]
    Dim { place: String, source: DimError },
    /// A `gather` index that is negative or not below the axis size.
    #[error("{place}: index {index} is out of range for an axis of size {size}")]
    IndexOutOfRange {
        place: String,
        index: i64,
        size: usize,
    },
    /// Integer `div` with a zero divisor.
    #[error("{place}: integer division by zero")]
    DivisionByZero { place: String },
    /// Operands that the op does not accept (wrong count, dtype or shape), or
    /// an op that cannot be evaluated on its own (`input`, `param` in `eval_op`).
    #[error("{place}: {message}")]
    InvalidOperands { place: String, message: String },
    /// An op produced a result whose dtype or shape differs from the node's
    /// declared type under the current size bindings.
    #[error("{place}: the op produced {got} but the node is declared {expected}")]
    ResultMismatch {
        place: String,
        expected: String,
        got: String,
    },
}

impl InterpError {
    /// An op-level error whose place is filled in by the caller (see [`InterpError::within`]).
    pub(crate) fn operands(message: impl Into<String>) -> InterpError {
        InterpError::InvalidOperands {
            place: String::new(),
            message: message.into(),
        }
    }

    /// Puts the error inside `outer` (a node, a scan step): an empty place
    /// becomes `outer`, a non-empty one `outer › place`. Errors about a
    /// graph's signature (which, inside a body, mean the operands did not fit
    /// it) become [`InterpError::InvalidOperands`] at `outer`.
    pub(crate) fn within(self, outer: &str) -> InterpError {
        let nest = |place: String| {
            if place.is_empty() {
                outer.to_string()
            } else {
                format!("{outer} › {place}")
            }
        };
        match self {
            InterpError::Dim { place, source } => InterpError::Dim {
                place: nest(place),
                source,
            },
            InterpError::IndexOutOfRange { place, index, size } => InterpError::IndexOutOfRange {
                place: nest(place),
                index,
                size,
            },
            InterpError::DivisionByZero { place } => {
                InterpError::DivisionByZero { place: nest(place) }
            }
            InterpError::InvalidOperands { place, message } => InterpError::InvalidOperands {
                place: nest(place),
                message,
            },
            InterpError::ResultMismatch {
                place,
                expected,
                got,
            } => InterpError::ResultMismatch {
                place: nest(place),
                expected,
                got,
            },
            other => InterpError::InvalidOperands {
                place: outer.to_string(),
                message: other.to_string(),
            },
        }
    }
}

/// A dim error at `place` (empty: filled in by the caller).
pub(crate) fn dim_err(source: DimError) -> InterpError {
    InterpError::Dim {
        place: String::new(),
        source,
    }
}
