//! Every built-in model, the embedded default and a few golden Hugging Face
//! configs, compiled to PTX under the option sets a GPU artifact can use,
//! each module assembled by ptxas for sm_80 and sm_90. Prints one table
//! (kernel kind, name, registers and spill bytes per arch) and checks that
//! every kernel kind issue 5 names reaches ptxas at least once.
//!
//! Kinds are found by what a kernel is (its op, and for fused kernels what
//! its body computes), never by kernel names: an embedding is a gather from a
//! weight, RoPE a rotate-half (a negated slice concatenated with its partner
//! slice), Mamba's causal convolution a sliding window (several equally long
//! slices of one value at different offsets, each multiplied).

use kiln_codegen::ptxas::KernelUsage;
use kiln_codegen::GpuArch;
use kiln_ir::{BinaryOp, DType, Graph, NodeId, Op, ReduceOp, UnaryOp};
use kiln_passes::{CostTarget, PassManager, PassOptions};
use kiln_runtime::plan::{Plan, Step, Storage};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

const ARCHS: [GpuArch; 2] = [GpuArch::Sm80, GpuArch::Sm90];

/// The kinds issue 5 lists; each must appear in at least one assembled kernel.
const REQUIRED: [&str; 12] = [
    "elementwise",
    "reduction",
    "softmax",
    "matmul",
    "flash_attention",
    "prflash_attention",
    "saq_append",
    "saq_attention",
    "linear_scan",
    "conv1d",
    "embedding",
    "rope",
];

/// Kernel kinds known to spill, with the most spill bytes (stores + loads)
/// allowed per kernel: `saq_append` runs one thread per block and keeps a
/// head's per-group requantization values in a local array (160 B stack
/// frame); ptxas spills 40 B around it on sm_80 and sm_90. Anything more,
/// or a spill in any other kernel, fails.
const KNOWN_SPILLS: [(&str, u32); 1] = [("saq_append", 80)];

/// One model under one option set, optimized and planned once for both archs.
struct Case {
    label: String,
    plan: Plan,
}

fn options(set: &str) -> PassOptions {
    let gpu = PassOptions {
        target: CostTarget::Gpu,
        ..PassOptions::default()
    };
    match set {
        "cpu" => PassOptions::default(),
        "gpu" => gpu,
        "gpu+saq" => PassOptions {
            kv_cache: Some(kiln_ir::saq::SaqSpec::parse("saq").unwrap()),
            ..gpu
        },
        "gpu+bf16" => PassOptions {
            weights: Some(DType::BF16),
            ..gpu
        },
        "gpu+prflash" => PassOptions {
            prflash: Some(kiln_passes::lossy::PrFlashConfig::parse("prflash").unwrap()),
            ..gpu
        },
        other => unreachable!("option set {other}"),
    }
}

fn plan(graph: &Graph, set: &str) -> Plan {
    let opts = options(set);
    let (kernels, _) = PassManager::for_options(&opts)
        .run(graph.clone(), &opts)
        .unwrap_or_else(|e| panic!("{} under {set}: {e}", graph.name));
    kiln_runtime::plan(&kernels).unwrap_or_else(|e| panic!("{} under {set}: {e}", graph.name))
}

/// A sampler's head: temperature then softmax over a vocabulary. No model
/// keeps a plain softmax (attention becomes flash kernels), so this graph
/// is what sends a softmax row kernel through ptxas.
fn sampling_head() -> Graph {
    let b = kiln_ir::dsl::ModelBuilder::new("sampling_head");
    let logits = b.input("logits", DType::F32, kiln_ir::shape!["seq", 2048]);
    let inv_t = b.input("inv_temperature", DType::F32, vec![]);
    b.output("probs", &(&logits * &inv_t).softmax(-1));
    b.finish().unwrap()
}

/// Every (model, option set): each model under `cpu` and `gpu`; models with
/// lossless causal attention also under `gpu+prflash`, and those that keep a
/// KV cache for it under `gpu+saq`; the default model under `gpu+bf16`
/// (weights stored narrow); golden HF configs (what
/// `scripts/gpu/prepare.sh` ships) under `gpu`.
fn cases() -> Vec<Case> {
    let mut models: Vec<(String, Graph, bool)> = kiln_models::builtin_models()
        .into_iter()
        .map(|m| (m.name.to_string(), (m.build)().unwrap(), true))
        .collect();
    let default = kiln::model::load(kiln::model::DEFAULT_MODEL, 0).unwrap();
    models.push(("default".into(), default.graph, true));
    models.push(("sampling-head".into(), sampling_head(), false));
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for dir in ["llama-headdim", "llama-mqa-odd", "mamba-explicit-rank"] {
        let m = kiln::model::load_dir(&golden.join(dir)).unwrap();
        models.push((dir.into(), m.graph, false));
    }
    let mut out = Vec::new();
    for (name, graph, all_sets) in models {
        let gpu = plan(&graph, "gpu");
        let exact_causal = gpu.kernels.iter().any(
            |k| matches!(&k.op, Op::Attention(a) if a.causal && !a.bias && a.slopes.is_empty()),
        );
        let kv_cache = gpu
            .kernels
            .iter()
            .any(|k| matches!(k.op, Op::UpdateSlice { .. }));
        let mut sets = Vec::new();
        if all_sets {
            sets.push("cpu");
            // Narrow weights: matmuls of a bf16 operand (one model suffices).
            if name == "default" {
                sets.push("gpu+bf16");
            }
            if exact_causal {
                sets.push("gpu+prflash");
                if kv_cache {
                    sets.push("gpu+saq");
                }
            }
        }
        let gpu_specs = kiln::kernel_specs(&gpu);
        out.push(Case {
            label: format!("{name} gpu"),
            plan: gpu,
        });
        for set in sets {
            let p = plan(&graph, set);
            // The same kernels as the `gpu` set compile to the same PTX.
            if kiln::kernel_specs(&p) != gpu_specs {
                out.push(Case {
                    label: format!("{name} {set}"),
                    plan: p,
                });
            }
        }
    }
    out
}

/// The uses of every value in `g`, by producing node.
fn users(g: &Graph) -> HashMap<NodeId, Vec<NodeId>> {
    let mut u: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for n in g.node_ids() {
        for v in g.operands(n) {
            u.entry(v.node).or_default().push(n);
        }
    }
    u
}

/// Whether `n`'s value reaches a multiplication through data movement only.
fn reaches_mul(g: &Graph, users: &HashMap<NodeId, Vec<NodeId>>, n: NodeId) -> bool {
    users
        .get(&n)
        .into_iter()
        .flatten()
        .any(|&u| match &g.node(u).op {
            Op::Binary(BinaryOp::Mul) => true,
            op if op.is_data_movement() => reaches_mul(g, users, u),
            _ => false,
        })
}

/// A sliding window: at least three slices of one value along one axis, of
/// equal length and distinct starts, each multiplied (a convolution's taps).
fn has_sliding_window(g: &Graph) -> bool {
    let users = users(g);
    g.node_ids().any(|n| {
        let mut windows: BTreeMap<(usize, String), BTreeSet<String>> = BTreeMap::new();
        for &u in users.get(&n).into_iter().flatten() {
            if let Op::Slice { axis, start, .. } = &g.node(u).op {
                if reaches_mul(g, &users, u) {
                    let len = g.node(u).outputs[0].shape[*axis].to_string();
                    windows
                        .entry((*axis, len))
                        .or_default()
                        .insert(start.to_string());
                }
            }
        }
        windows.values().any(|starts| starts.len() >= 3)
    })
}

/// RoPE's rotate-half: `concat(-x[.., h..], x[.., ..h])` along the sliced axis.
fn has_rotate_half(g: &Graph) -> bool {
    let slice_of = |v: kiln_ir::Value| match &g.node(v.node).op {
        Op::Slice { axis, .. } => Some((g.operands(v.node)[0], *axis)),
        _ => None,
    };
    g.node_ids().any(|n| {
        let Op::Concat { axis } = g.node(n).op else {
            return false;
        };
        let ops = g.operands(n);
        if ops.len() != 2 {
            return false;
        }
        let negated = match g.node(ops[0].node).op {
            Op::Unary(UnaryOp::Neg) => slice_of(g.operands(ops[0].node)[0]),
            _ => None,
        };
        match (negated, slice_of(ops[1])) {
            (Some((a, ax1)), Some((b, ax2))) => a == b && ax1 == ax2 && ax1 == axis,
            _ => false,
        }
    })
}

/// Softmax in a row: max, exp and sum reductions over the same row.
fn has_softmax(g: &Graph) -> bool {
    let has = |f: &dyn Fn(&Op) -> bool| g.node_ids().any(|n| f(&g.node(n).op));
    has(&|o| {
        matches!(
            o,
            Op::Reduce {
                op: ReduceOp::Max,
                ..
            }
        )
    }) && has(&|o| {
        matches!(
            o,
            Op::Reduce {
                op: ReduceOp::Sum,
                ..
            }
        )
    }) && has(&|o| matches!(o, Op::Unary(UnaryOp::Exp)))
}

/// Operand buffers of every kernel launch in `steps` (scan bodies included),
/// by kernel index.
fn kernel_args(steps: &[Step], out: &mut HashMap<usize, Vec<usize>>) {
    for s in steps {
        match s {
            Step::Kernel { kernel, args } => {
                out.insert(*kernel, args.clone());
            }
            Step::Scan(scan) => kernel_args(&scan.body, out),
            Step::Copy { .. } => {}
        }
    }
}

/// The kernel's kind (its op) and the kinds it covers.
fn classify(plan: &Plan, index: usize, args: &[usize]) -> (String, Vec<&'static str>) {
    let k = &plan.kernels[index];
    let mut tags = Vec::new();
    let kind = match &k.op {
        Op::Fused(f) => {
            let g = &f.body;
            let any = |p: &dyn Fn(&Op) -> bool| g.node_ids().any(|n| p(&g.node(n).op));
            if any(&|o| o.is_elementwise()) {
                tags.push("elementwise");
            }
            if any(&|o| matches!(o, Op::Reduce { .. })) {
                tags.push("reduction");
            }
            if has_softmax(g) {
                tags.push("softmax");
            }
            // A gather whose table is a weight: an embedding lookup.
            let inputs = g.inputs();
            let embedding = g.node_ids().any(|n| {
                matches!(g.node(n).op, Op::Gather { .. })
                    && inputs
                        .iter()
                        .position(|&i| i == g.operands(n)[0].node)
                        .and_then(|slot| args.get(slot))
                        .is_some_and(|&b| matches!(plan.buffers[b].storage, Storage::Param(_)))
            });
            if embedding {
                tags.push("embedding");
            }
            if has_rotate_half(g) {
                tags.push("rope");
            }
            if has_sliding_window(g) {
                tags.push("conv1d");
            }
            format!("fused {}", f.kind.name())
        }
        op => {
            let name = op.name();
            if let Some(&t) = REQUIRED.iter().find(|&&t| t == name) {
                tags.push(t);
            }
            name.to_string()
        }
    };
    (kind, tags)
}

/// Assembles `ptx` once per distinct module text.
fn assemble(
    ptxas: &std::path::Path,
    ptx: &str,
    arch: GpuArch,
    seen: &mut HashMap<u64, Vec<KernelUsage>>,
) -> Result<Vec<KernelUsage>, kiln_codegen::ptxas::PtxasError> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ptx.hash(&mut h);
    let key = h.finish();
    if let Some(u) = seen.get(&key) {
        return Ok(u.clone());
    }
    let u = kiln_codegen::ptxas::assemble(ptxas, ptx, arch)?;
    seen.insert(key, u.clone());
    Ok(u)
}

/// Per case and kernel, (registers, spill stores + loads in bytes) for one
/// arch; `None` where ptxas is skipped.
type Usage = Vec<Vec<Option<(u32, u32)>>>;

/// Compiles every case's plan to PTX for `arch` and assembles it.
fn compile_arch(cases: &[Case], arch: GpuArch, ptxas: Option<&std::path::Path>) -> Usage {
    let t0 = std::time::Instant::now();
    let mut seen = HashMap::new();
    let usage = cases
        .iter()
        .map(|c| {
            let specs = kiln::kernel_specs(&c.plan);
            let m = kiln_codegen::compile_ptx(&specs, &c.plan.symbols, arch)
                .unwrap_or_else(|e| panic!("{} {arch}: {e}", c.label));
            assert_eq!(m.launches.len(), specs.len(), "{} {arch}", c.label);
            assert!(
                !m.ptx.contains("__nv_"),
                "{} {arch}: PTX calls libdevice",
                c.label
            );
            let usage = ptxas.map(|p| {
                assemble(p, &m.ptx, arch, &mut seen)
                    .unwrap_or_else(|e| panic!("{} {arch}: {e}", c.label))
            });
            specs
                .iter()
                .map(|k| {
                    assert!(
                        m.ptx.contains(&format!(".entry {}(", k.name)),
                        "{} {arch}: no entry for {}",
                        c.label,
                        k.name
                    );
                    let u = usage.as_ref()?;
                    let u = u.iter().find(|u| u.name == k.name).unwrap_or_else(|| {
                        panic!("{} {arch}: ptxas reported nothing for {}", c.label, k.name)
                    });
                    Some((u.registers, u.spill_stores + u.spill_loads))
                })
                .collect()
        })
        .collect();
    println!(
        "{arch}: {} modules to PTX and ptxas in {:?}",
        cases.len(),
        t0.elapsed()
    );
    usage
}

#[test]
fn every_model_kernel_assembles_for_sm80_and_sm90() {
    let t0 = std::time::Instant::now();
    let ptxas = kiln_codegen::ptxas::find();
    if ptxas.is_none() {
        assert_eq!(
            std::env::var("KILN_SKIP_PTXAS").as_deref(),
            Ok("1"),
            "{} (or set KILN_SKIP_PTXAS=1 to skip)",
            kiln_codegen::ptxas::PtxasError::NotFound
        );
        eprintln!(
            "warning: ptxas not found and KILN_SKIP_PTXAS=1: PTX is generated, not assembled"
        );
    }
    let cases = cases();
    let planned = t0.elapsed();
    // One thread per arch: codegen and ptxas of the two archs are independent.
    let usage: Vec<Usage> = std::thread::scope(|s| {
        let handles: Vec<_> = ARCHS
            .iter()
            .map(|&arch| {
                let (cases, ptxas) = (&cases, ptxas.as_deref());
                s.spawn(move || compile_arch(cases, arch, ptxas))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    // One row per distinct kernel (op and types); repeats are counted.
    let mut table = String::new();
    let mut rows = 0;
    let mut repeats = 0;
    let mut seen_specs = HashMap::new();
    let mut covered: BTreeMap<&str, String> = BTreeMap::new();
    let mut max_regs: BTreeMap<String, u32> = BTreeMap::new();
    let mut spills = Vec::new();
    writeln!(
        table,
        "| model / options | kernel kind | kernel | covers | sm_80 regs | sm_80 spill B | sm_90 regs | sm_90 spill B |"
    )
    .unwrap();
    writeln!(table, "|---|---|---|---|---|---|---|---|").unwrap();
    for (ci, c) in cases.iter().enumerate() {
        let mut args = HashMap::new();
        kernel_args(&c.plan.steps, &mut args);
        kernel_args(&c.plan.load_steps, &mut args);
        for (ki, k) in c.plan.kernels.iter().enumerate() {
            let (kind, tags) = classify(&c.plan, ki, args.get(&ki).map_or(&[], |a| a));
            // The body detectors must tell models apart: RoPE only in
            // attention models, a sliding window only in Mamba's mixer.
            let mamba = c.label.starts_with("mamba");
            assert!(
                !(tags.contains(&"rope") && mamba),
                "{} {}: RoPE found in a Mamba kernel",
                c.label,
                k.name
            );
            assert!(
                !tags.contains(&"conv1d") || mamba,
                "{} {}: a causal convolution found outside Mamba",
                c.label,
                k.name
            );
            for t in &tags {
                covered
                    .entry(t)
                    .or_insert_with(|| format!("{} {}", c.label, k.name));
            }
            let cells: Vec<String> = ARCHS
                .iter()
                .enumerate()
                .flat_map(|(ai, arch)| match usage[ai][ci][ki] {
                    Some((regs, spill)) => {
                        let m = max_regs.entry(kind.clone()).or_default();
                        *m = (*m).max(regs);
                        let allowed = KNOWN_SPILLS
                            .iter()
                            .find(|(k, _)| *k == kind)
                            .map_or(0, |&(_, b)| b);
                        if spill > allowed {
                            spills.push(format!("{} {} {arch}: {spill} B", c.label, k.name));
                        }
                        [regs.to_string(), spill.to_string()]
                    }
                    None => ["-".into(), "-".into()],
                })
                .collect();
            let spec = format!("{:?}{:?}{:?}", k.op, k.operand_types, k.result_types);
            if seen_specs.insert(spec, ()).is_some() {
                repeats += 1;
                continue;
            }
            rows += 1;
            writeln!(
                table,
                "| {} | {kind} | {} | {} | {} |",
                c.label,
                k.name,
                tags.join(" "),
                cells.join(" | ")
            )
            .unwrap();
        }
    }
    println!("{table}");
    println!(
        "{rows} distinct kernels ({repeats} repeats omitted) in {} model/option cases; plan {:?}, total {:?}",
        cases.len(),
        planned,
        t0.elapsed()
    );
    println!("max registers by kind: {max_regs:?}");
    for (kind, first) in &covered {
        println!("{kind}: first in {first}");
    }
    let missing: Vec<_> = REQUIRED
        .iter()
        .filter(|k| !covered.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "kernel kinds never compiled: {missing:?}"
    );
    assert!(
        spills.is_empty(),
        "kernels that spill (more than KNOWN_SPILLS allows):\n{}",
        spills.join("\n")
    );
}
