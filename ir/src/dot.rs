//! Graphviz DOT form of graphs (being written).
