//! Dumping the graph after passes, like `MLIR_ENABLE_DUMP` / `--mlir-print-ir-after`
//! or `XLA_FLAGS=--xla_dump_to`.
//!
//! - `KILN_DUMP_DIR=dir` writes `<dir>/<graph>.<NN>.<pass>.kir` after each pass
//!   (`NN` is the pass's position in the pipeline, from `01`; `00.input` is the
//!   graph the pipeline started from), in the text form of `kiln_ir::text::print`.
//! - `KILN_PRINT_AFTER=all` or `KILN_PRINT_AFTER=canonicalize,fuse` prints the
//!   graph to stderr after the named passes.

use crate::error::PassError;
use kiln_ir::Graph;
use std::path::{Path, PathBuf};

/// Where and after which passes the pass manager dumps the graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpConfig {
    /// Directory for `<graph>.<NN>.<pass>.kir` files, written after every pass.
    pub dir: Option<PathBuf>,
    /// Pass names (or `"all"`) after which the graph is printed to stderr.
    pub print_after: Vec<String>,
}

impl DumpConfig {
    /// Reads `KILN_DUMP_DIR` and `KILN_PRINT_AFTER` (comma-separated pass names or `all`).
    pub fn from_env() -> Self {
        let dir = std::env::var_os("KILN_DUMP_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        let print_after = std::env::var("KILN_PRINT_AFTER")
            .map(|s| parse_list(&s))
            .unwrap_or_default();
        DumpConfig { dir, print_after }
    }

    /// True when the graph should be printed after `pass`.
    pub fn prints_after(&self, pass: &str) -> bool {
        self.print_after.iter().any(|p| p == "all" || p == pass)
    }

    /// True when nothing is dumped or printed.
    pub fn is_off(&self) -> bool {
        self.dir.is_none() && self.print_after.is_empty()
    }

    /// The file a dump of `graph` after pass number `index` named `pass` goes to.
    pub fn file_for(dir: &Path, graph: &str, index: usize, pass: &str) -> PathBuf {
        dir.join(format!("{graph}.{index:02}.{pass}.kir"))
    }

    /// Dumps `graph` after pass number `index` (0 = the input) according to the config.
    pub fn dump(&self, graph: &Graph, index: usize, pass: &str) -> Result<(), PassError> {
        if self.is_off() {
            return Ok(());
        }
        let text = kiln_ir::text::print(graph);
        if let Some(dir) = &self.dir {
            std::fs::create_dir_all(dir).map_err(|source| PassError::Dump {
                path: dir.clone(),
                source,
            })?;
            let path = Self::file_for(dir, &graph.name, index, pass);
            std::fs::write(&path, &text).map_err(|source| PassError::Dump { path, source })?;
        }
        if index > 0 && self.prints_after(pass) {
            eprintln!("// ----- IR dump after `{pass}` -----\n{text}");
        }
        Ok(())
    }
}

fn parse_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_after_matches_names_and_all() {
        let c = DumpConfig {
            dir: None,
            print_after: parse_list(" canonicalize, fuse ,"),
        };
        assert!(c.prints_after("fuse"));
        assert!(c.prints_after("canonicalize"));
        assert!(!c.prints_after("dce"));
        let all = DumpConfig {
            dir: None,
            print_after: vec!["all".into()],
        };
        assert!(all.prints_after("dce"));
        assert!(DumpConfig::default().is_off());
    }

    #[test]
    fn file_names_are_numbered() {
        let p = DumpConfig::file_for(Path::new("/tmp/x"), "model", 3, "fuse");
        assert_eq!(p, PathBuf::from("/tmp/x/model.03.fuse.kir"));
    }
}
