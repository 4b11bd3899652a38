//! `kiln opt`: IR text in, passes, IR out — like `mlir-opt`.

use super::inspect::Format;
use super::model::read_graph;
use anyhow::{bail, Context};
use kiln_passes::{PassManager, PassOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// IR text (or `.json`) to read; `-` for stdin.
    #[arg(required_unless_present = "list_passes")]
    file: Option<PathBuf>,
    /// Passes to run, in order, separated by commas (`default` for the whole
    /// pipeline). Without it the graph is parsed, verified and printed back.
    #[arg(long, value_name = "PASSES")]
    passes: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the result here instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// List the passes and exit.
    #[arg(long)]
    list_passes: bool,
}

pub fn run(args: Args, opts: PassOptions) -> anyhow::Result<()> {
    if args.list_passes {
        let default = PassManager::default_pipeline().names();
        for p in kiln_passes::manager::all_passes() {
            let mark = if default.contains(&p.name()) {
                "*"
            } else {
                " "
            };
            println!("{mark} {:<14} {}", p.name(), p.description());
        }
        println!(
            "(* = in the default pipeline, in this order: {})",
            default.join(", ")
        );
        return Ok(());
    }
    let file = args.file.expect("clap requires FILE without --list-passes");
    let graph = read_graph(&file)?;
    let graph = match args.passes.as_deref() {
        None => graph,
        Some("default") => PassManager::for_options(&opts).run(graph, &opts)?.0,
        Some(list) => {
            let names: Vec<&str> = list.split(',').map(str::trim).collect();
            PassManager::from_names(&names)?.run(graph, &opts)?.0
        }
    };
    let out = match args.format {
        Format::Text => kiln_ir::text::print(&graph),
        Format::Json => kiln_ir::json::to_json(&graph),
        Format::Dot => kiln_ir::dot::to_dot(&graph),
        Format::Plan | Format::Mlir | Format::Ptx => {
            bail!("`kiln opt` prints graphs; use `kiln inspect` for plans, MLIR and PTX")
        }
    };
    match args.output {
        Some(path) => {
            std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{out}"),
    }
    Ok(())
}
