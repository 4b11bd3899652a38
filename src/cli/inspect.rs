//! `kiln inspect`: a model's IR as text, JSON or DOT, after any pass; its plan;
//! the MLIR of its kernels; per-stage timings.

use super::model;
use anyhow::anyhow;
use clap::ValueEnum;
use kiln_passes::{PassManager, PassOptions, PassReport};
use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The readable text form (parses back with `kiln opt`).
    Text,
    Json,
    /// Graphviz.
    Dot,
    /// The runtime's execution plan (kernels, buffers, arena slots).
    Plan,
    /// The MLIR of every kernel, before lowering.
    Mlir,
}

#[derive(clap::Args)]
pub struct Args {
    /// A built-in model (see `kiln models`) or an IR file.
    #[arg(long)]
    model: String,
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Show the graph after this pass (`input` for the graph as built, `all` for
    /// the whole pipeline). Passes in order: see `kiln opt --list-passes`.
    #[arg(long, value_name = "PASS", default_value = "input")]
    after: String,
    /// Print the time of every stage; the last line is `optimize: N ms`.
    /// Without an explicit --format, only the timings are printed.
    #[arg(long)]
    timings: bool,
    /// Seed of the built-in models' weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args, opts: PassOptions) -> anyhow::Result<()> {
    let m = model::load(&args.model, args.seed)?;
    let format = args.format.unwrap_or(Format::Text);
    let needs_all = matches!(format, Format::Plan | Format::Mlir);
    let pm = PassManager::default_pipeline();
    let t = Instant::now();
    let (graph, reports): (_, Vec<PassReport>) = if needs_all || args.after == "all" {
        pm.run(m.graph, &opts)?
    } else if args.after == "input" {
        (m.graph, Vec::new())
    } else {
        pm.run_until(m.graph, &args.after, &opts)?
    };
    let optimize_ms = t.elapsed().as_secs_f64() * 1e3;

    let show_ir = args.format.is_some() || !args.timings;
    if show_ir {
        let out = match format {
            Format::Text => kiln_ir::text::print(&graph),
            Format::Json => kiln_ir::json::to_json(&graph),
            Format::Dot => kiln_ir::dot::to_dot(&graph),
            Format::Plan => kiln_runtime::plan(&graph)?.describe(),
            Format::Mlir => {
                let plan = kiln_runtime::plan(&graph)?;
                let specs: Vec<_> = plan
                    .kernels
                    .iter()
                    .map(|k| kiln_codegen::KernelSpec {
                        name: k.name.clone(),
                        op: k.op.clone(),
                        operand_types: k.operand_types.clone(),
                        result_types: k.result_types.clone(),
                    })
                    .collect();
                kiln_codegen::emit_mlir(&specs, &plan.symbols, &kiln_codegen::Target::Cpu)
                    .map_err(|e| anyhow!(e))?
            }
        };
        print!("{out}");
        if !out.ends_with('\n') {
            println!();
        }
    }
    if args.timings {
        for r in &reports {
            println!(
                "{:<14} {:>9.2} ms  nodes {} -> {}  {}",
                r.pass,
                r.time.as_secs_f64() * 1e3,
                r.nodes_before,
                r.nodes_after,
                r.detail
            );
        }
        println!("optimize: {} ms", optimize_ms.round() as u64);
    }
    Ok(())
}
