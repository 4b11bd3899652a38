//! `kiln-run`: runs an ahead-of-time artifact (made by `kiln compile`) with
//! no compiler linked — the runtime alone.
//!
//! ```sh
//! kiln-run ART --prompt "And God said" --max-new-tokens 32 [--device cuda]
//! kiln-run logits ART --tokens 1,2,3 --out logits.safetensors [--decode]
//! kiln-run info ART
//! ```
//!
//! Flags and behaviour follow `kiln generate` and `kiln logits`. Every
//! failure prints one line naming the artifact or file and exits with 1.

mod args;
mod generate;
mod info;
mod load;
mod logits;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let result = match cli.command {
        Some(args::Command::Logits(a)) => logits::run(a),
        Some(args::Command::Info { artifact }) => info::run(artifact),
        None => generate::run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-run: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Many errors already print their
/// source in their own message (`{dir}: {source}`); a cause whose text is
/// already there is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message.replace('\n', " ")
}
