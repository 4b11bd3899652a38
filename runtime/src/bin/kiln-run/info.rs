//! `kiln-run info ART`: what an artifact holds and was built for, after
//! verifying it (the manifest, every file's hash) — nothing is loaded.

use kiln_runtime::artifact::{Artifact, Codec, TargetSpec};
use kiln_runtime::plan::Storage;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

pub fn run(dir: PathBuf) -> anyhow::Result<()> {
    let mut out = String::new();
    let a = Artifact::open(&dir)?;
    let m = a.manifest();
    let plan = a.plan();
    writeln!(
        out,
        "artifact   {} (verified: {} files)",
        dir.display(),
        m.files.len()
    )?;
    writeln!(out, "model      {}", m.model)?;
    match &m.target {
        TargetSpec::Cpu {
            triple,
            cpu,
            features,
        } => {
            let needed = features.split(',').filter(|f| f.starts_with('+')).count();
            writeln!(
                out,
                "target     cpu: {triple}, {cpu} ({needed} CPU features required)"
            )?;
            let here = match a.check_cpu_host() {
                Ok(()) => "yes".to_string(),
                Err(e) => format!("no — {e}"),
            };
            writeln!(out, "runs here  {here}")?;
        }
        TargetSpec::Cuda { arch } => writeln!(out, "target     cuda: {arch} or newer")?,
    }
    writeln!(
        out,
        "built by   Kiln {}, LLVM {} (artifact format {})",
        m.kiln_version, m.llvm_version, m.format
    )?;
    let options: Vec<String> = m.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
    writeln!(out, "options    {}", options.join(" "))?;
    let g = a.generation();
    let codec = match g.codec {
        Codec::Hf => "Hugging Face tokenizer",
        Codec::Bytes => "bytes",
        Codec::None => "token ids only",
    };
    writeln!(
        out,
        "text       {codec}; bos {}, eos {:?}, context {}",
        g.bos_token_id.map_or("none".to_string(), |b| b.to_string()),
        g.eos_token_ids,
        g.max_context
            .map_or("unbounded".to_string(), |c| c.to_string())
    )?;
    let params = plan
        .buffers
        .iter()
        .filter(|b| matches!(b.storage, Storage::Param(_)))
        .count();
    writeln!(
        out,
        "plan       {} kernels, {} steps ({} at load), {} buffers, {} weights, sizes [{}]",
        plan.kernels.len(),
        plan.steps.len(),
        plan.load_steps.len(),
        plan.buffers.len(),
        params,
        plan.symbols.join(", ")
    )?;
    for i in &plan.inputs {
        let state = plan
            .outputs
            .iter()
            .any(|o| o.alias.as_ref() == Some(&i.name));
        let kind = if state { "state " } else { "input " };
        writeln!(out, "  {kind} {}: {}", i.name, i.ty)?;
    }
    for o in plan.outputs.iter().filter(|o| o.alias.is_none()) {
        writeln!(out, "  output {}: {}", o.name, plan.buffers[o.buffer].ty)?;
    }
    writeln!(out, "files")?;
    for (name, f) in &m.files {
        writeln!(
            out,
            "  {name:<22} {:>12} bytes  sha256 {}",
            f.bytes,
            &f.sha256[..16]
        )?;
    }
    // Printed at once; a closed pipe (`| head`) is not an error.
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
