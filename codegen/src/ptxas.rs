//! Validating PTX with NVIDIA's assembler, which runs without a GPU (the PyPI
//! wheel `nvidia-cuda-nvcc-cu12` ships it; `scripts/setup.sh` installs it into
//! `.venv-ptxas/`). Used by the tests and by `kiln inspect --format ptx --ptxas`.

use crate::GpuArch;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why PTX could not be validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PtxasError {
    #[error("ptxas not found: run scripts/setup.sh (installs the PyPI wheel nvidia-cuda-nvcc-cu12 into .venv-ptxas/) or set KILN_PTXAS=/path/to/ptxas")]
    NotFound,
    #[error("running {path}: {message}")]
    Run { path: String, message: String },
    #[error("ptxas -arch={arch} rejected the PTX:\n{stderr}")]
    Rejected { arch: String, stderr: String },
}

/// Registers and spills of one entry function, from `ptxas -v`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelUsage {
    pub name: String,
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

/// Finds ptxas: `KILN_PTXAS`, else `.venv-ptxas` in the workspace that built
/// this crate or in the current directory, else `ptxas` on PATH.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_PTXAS") {
        return Some(p.into());
    }
    let roots = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
        PathBuf::from("."),
    ];
    for root in roots {
        if let Ok(entries) = std::fs::read_dir(root.join(".venv-ptxas/lib")) {
            for e in entries.flatten() {
                let p = e.path().join("site-packages/nvidia/cuda_nvcc/bin/ptxas");
                if e.file_name().to_string_lossy().starts_with("python3") && p.is_file() {
                    return Some(p);
                }
            }
        }
    }
    Command::new("ptxas")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "ptxas".into())
}

/// Assembles `ptx` for `arch` with `ptxas -v`; returns each entry's usage.
pub fn assemble(ptxas: &Path, ptx: &str, arch: GpuArch) -> Result<Vec<KernelUsage>, PtxasError> {
    let dir = std::env::temp_dir().join(format!(
        "kiln-ptxas-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let run_err = |m: String| PtxasError::Run {
        path: ptxas.display().to_string(),
        message: m,
    };
    std::fs::create_dir_all(&dir).map_err(|e| run_err(e.to_string()))?;
    let file = dir.join("module.ptx");
    std::fs::write(&file, ptx).map_err(|e| run_err(e.to_string()))?;
    let out = Command::new(ptxas)
        .arg(format!("-arch={}", arch.name()))
        .arg("-v")
        .arg(&file)
        .arg("-o")
        .arg(dir.join("module.cubin"))
        .output()
        .map_err(|e| run_err(e.to_string()));
    std::fs::remove_dir_all(&dir).ok();
    let out = out?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(PtxasError::Rejected {
            arch: arch.name().into(),
            stderr,
        });
    }
    Ok(parse_usage(&stderr))
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Parses `ptxas -v` output: per entry, `Used N registers` and the spill line.
pub fn parse_usage(stderr: &str) -> Vec<KernelUsage> {
    let number_before = |line: &str, word: &str| -> u32 {
        line.find(word)
            .and_then(|i| line[..i].split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut out: Vec<KernelUsage> = Vec::new();
    for line in stderr.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let name = line[i + 26..].split('\'').next().unwrap_or("").to_string();
            out.push(KernelUsage {
                name,
                registers: 0,
                spill_stores: 0,
                spill_loads: 0,
            });
        } else if let Some(k) = out.last_mut() {
            if line.contains("bytes spill stores") {
                k.spill_stores = number_before(line, "bytes spill stores");
                k.spill_loads = number_before(line, "bytes spill loads");
            }
            if line.contains("Used ") && line.contains(" registers") {
                k.registers = number_before(line, "registers");
            }
        }
    }
    out
}
