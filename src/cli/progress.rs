//! Progress on long work: a status line on stderr when it is a terminal.

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    enabled: bool,
    start: Instant,
    what: String,
}

impl Progress {
    pub fn new(what: &str) -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            start: Instant::now(),
            what: what.to_string(),
        }
    }

    pub fn stage(&mut self, stage: &str) {
        if self.enabled {
            let mut e = std::io::stderr();
            let _ = write!(
                e,
                "\r\x1b[2K{} — {stage}… ({:.1} s)",
                self.what,
                self.start.elapsed().as_secs_f64()
            );
            let _ = e.flush();
        }
    }

    pub fn done(&mut self) {
        if self.enabled {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
