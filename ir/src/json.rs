//! JSON form of graphs (being written).
