//! Parsing the text form (work in progress: being written).
use crate::graph::Graph;

/// A malformed text form, with the 1-based line and column of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Parses the text form.
pub fn parse(_text: &str) -> Result<Graph, ParseError> {
    Err(ParseError {
        line: 1,
        col: 1,
        message: "parser not written yet".into(),
    })
}
