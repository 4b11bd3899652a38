//! `kiln inspect`: a model's IR as text, JSON or DOT, after any pass; its plan;
//! the MLIR of its kernels; per-stage timings; the rewrites behind every kernel.

use super::model;
use anyhow::anyhow;
use clap::ValueEnum;
use kiln_passes::{LayerMode, PassManager, PassOptions, PassReport, Traced};
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
pub enum Layers {
    Shared,
    Separate,
    Whole,
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
    /// the whole pipeline; default `input`, or `all` with --timings or
    /// --explain). Passes in order: see `kiln opt --list-passes`.
    #[arg(long, value_name = "PASS")]
    after: Option<String>,
    /// Print the time of every pass and of its phases (for the e-graph passes:
    /// translate, each rule stage, extract, rebuild; with layers also
    /// partition and stitch); the last line is `optimize: N ms`. Without an
    /// explicit --format, only the timings are printed.
    #[arg(long)]
    timings: bool,
    /// For every kernel (or, with --after before `fuse`, every rewritten
    /// node), print the chain of rewrites that produced it: rule names by
    /// pass, the ops they made, the kernel `fuse` formed. Without an explicit
    /// --format, only the explanation is printed.
    #[arg(long)]
    explain: bool,
    /// GPU architecture for `--format ptx`.
    #[arg(long, value_enum, default_value = "sm_90")]
    arch: Arch,
    /// With `--format ptx`: assemble the PTX with ptxas and print each
    /// kernel's registers and spills to stderr.
    #[arg(long)]
    ptxas: bool,
    /// Repeated layers in the e-graph passes: `shared` (identical layers
    /// optimized once), `separate` (each layer on its own) or `whole` (the
    /// graph in one e-graph), to compare their timings and results.
    #[arg(long, value_enum, default_value = "shared")]
    layers: Layers,
    /// Seed of the built-in models' weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The graph to inspect: a built-in is built without its weights (inspection
/// needs none, and shape-only built-ins have none).
fn load(spec: &str, seed: u64) -> anyhow::Result<kiln_ir::Graph> {
    if !std::path::Path::new(spec).exists() {
        if let Some(m) = kiln_models::builtin(spec) {
            return (m.build)().map_err(|e| anyhow!("building `{spec}`: {e}"));
        }
    }
    model::load_graph(spec, seed)
}

pub fn run(args: Args, mut opts: PassOptions) -> anyhow::Result<()> {
    opts.layers = match args.layers {
        Layers::Shared => LayerMode::Shared,
        Layers::Separate => LayerMode::Separate,
        Layers::Whole => LayerMode::Whole,
    };
    let graph_in = load(&args.model, args.seed)?;
    let format = args.format.unwrap_or(Format::Text);
    if matches!(format, Format::Ptx) {
        // PTX runs on a GPU: extract what the GPU runs best.
        opts.target = kiln_passes::CostTarget::Gpu;
    }
    let needs_all = matches!(format, Format::Plan | Format::Mlir | Format::Ptx);
    let after = args.after.clone().unwrap_or_else(|| {
        if args.explain || args.timings {
            "all"
        } else {
            "input"
        }
        .to_string()
    });
    let pm = PassManager::for_options(&opts);
    let t = Instant::now();
    let traced = if needs_all || after == "all" {
        pm.run_traced(graph_in, &opts)?
    } else if after == "input" {
        Traced {
            graph: graph_in,
            reports: Vec::new(),
            provenance: Default::default(),
        }
    } else {
        pm.run_until_traced(graph_in, &after, &opts)?
    };
    let optimize_ms = t.elapsed().as_secs_f64() * 1e3;
    let Traced {
        graph,
        reports,
        provenance,
    } = traced;
    let kernels = reports.last().is_some_and(|r| r.pass == "fuse");

    let show_ir = args.format.is_some() || !(args.timings || args.explain);
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
    if args.explain {
        if reports.is_empty() {
            println!("(the graph as built: no pass has run; use --after PASS)");
        }
        // After `fuse`, every kernel; before, the nodes a rewrite touched.
        print!(
            "{}",
            kiln_passes::provenance::explain(&graph, &provenance, kernels)
        );
    }
    if args.timings {
        print_timings(&reports);
        println!("optimize: {} ms", optimize_ms.round() as u64);
    }
    Ok(())
}

/// One line per pass, then its phases indented.
fn print_timings(reports: &[PassReport]) {
    for r in reports {
        println!(
            "{:<14} {:>9.2} ms  nodes {} -> {}  {}",
            r.pass,
            r.time.as_secs_f64() * 1e3,
            r.nodes_before,
            r.nodes_after,
            r.detail
        );
        for (phase, t) in &r.phases {
            println!("  {:<20} {:>9.2} ms", phase, t.as_secs_f64() * 1e3);
        }
    }
}
