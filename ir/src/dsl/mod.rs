//! The model-building DSL (being written).
