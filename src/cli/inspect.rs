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
    /// PTX of every kernel for `--arch` (redirect to a `.ptx` file).
    Ptx,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    #[value(name = "sm_90")]
    Sm90,
    #[value(name = "sm_80")]
    Sm80,
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
    /// GPU architecture for `--format ptx`.
    #[arg(long, value_enum, default_value = "sm_90")]
    arch: Arch,
    /// With `--format ptx`: assemble the PTX with ptxas and print each
    /// kernel's registers and spills to stderr.
    #[arg(long)]
    ptxas: bool,
    /// Seed of the built-in models' weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args, opts: PassOptions) -> anyhow::Result<()> {
    let graph_in = model::load_graph(&args.model, args.seed)?;
    let format = args.format.unwrap_or(Format::Text);
    let needs_all = matches!(format, Format::Plan | Format::Mlir | Format::Ptx);
    let pm = PassManager::for_options(&opts);
    let t = Instant::now();
    let (graph, reports): (_, Vec<PassReport>) = if needs_all || args.after == "all" {
        pm.run(graph_in, &opts)?
    } else if args.after == "input" {
        (graph_in, Vec::new())
    } else {
        pm.run_until(graph_in, &args.after, &opts)?
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
                kiln_codegen::emit_mlir(
                    &kiln::kernel_specs(&plan),
                    &plan.symbols,
                    &kiln_codegen::Target::Cpu,
                )
                .map_err(|e| anyhow!(e))?
            }
            Format::Ptx => {
                let arch = match args.arch {
                    Arch::Sm90 => kiln_codegen::GpuArch::Sm90,
                    Arch::Sm80 => kiln_codegen::GpuArch::Sm80,
                };
                let plan = kiln_runtime::plan(&graph)?;
                let module =
                    kiln_codegen::compile_ptx(&kiln::kernel_specs(&plan), &plan.symbols, arch)?;
                if args.ptxas {
                    let ptxas = kiln_codegen::ptxas::find()
                        .ok_or(kiln_codegen::ptxas::PtxasError::NotFound)?;
                    for u in kiln_codegen::ptxas::assemble(&ptxas, &module.ptx, arch)? {
                        eprintln!(
                            "ptxas {arch}: {:<28} {:>4} registers, spills {} B stored / {} B loaded",
                            u.name, u.registers, u.spill_stores, u.spill_loads
                        );
                    }
                }
                module.ptx
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
