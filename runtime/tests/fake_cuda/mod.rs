//! A fake CUDA driver for testing the CUDA executor without a GPU: the C
//! stand-in for libcuda in `fake_cuda.c` runs kernels compiled for the CPU
//! (CPU ABI) behind the driver API, checking every copy against the live
//! allocations and every call for a current context.
//!
//! cudarc loads libcuda once per process by name, so a test that uses the
//! fake re-runs itself in a child process whose `LD_LIBRARY_PATH` holds
//! only the fake: [`run_in_child`] in the parent, [`in_child`] to tell.
//! Shared by `runtime/tests/cuda.rs` and the root package's
//! `tests/cuda_exec.rs`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

const CHILD: &str = "KILN_FAKE_CUDA_CHILD";

/// Whether this process is a child running on the fake driver.
pub fn in_child() -> bool {
    std::env::var(CHILD).is_ok_and(|v| v == "1")
}

/// Compiles the fake driver as `libcuda.so` in a fresh directory; `None`
/// when there is no C compiler (or not on Linux).
fn build(test: &str) -> Option<PathBuf> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("kiln-fake-cuda-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let src = dir.join("fake_cuda.c");
    std::fs::write(&src, include_str!("fake_cuda.c")).ok()?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(cc)
        .args([
            "-shared", "-fPIC", "-O1", "-std=c11", "-Wall", "-Werror", "-o",
        ])
        .arg(dir.join("libcuda.so"))
        .arg(&src)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "the fake CUDA driver did not compile:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(dir)
}

/// Runs test `test` of this test binary in a child process on the fake
/// driver and asserts it ran and passed; `false` when it could not run
/// (no C compiler: skipped, with a message).
pub fn run_in_child(test: &str) -> bool {
    let Some(dir) = build(test) else {
        eprintln!("{test}: skipped, the fake CUDA driver could not be built");
        return false;
    };
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("LD_LIBRARY_PATH", &dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{test} on the fake driver ({}):\n{text}",
        out.status
    );
    assert!(
        text.contains("1 passed"),
        "{test} did not run on the fake driver:\n{text}"
    );
    true
}

/// A module for the fake driver: per kernel its name, the address of its
/// CPU-ABI entry, its buffer count (operands + results) and the plan's
/// symbol count.
pub fn module_text(kernels: impl IntoIterator<Item = (String, usize, usize, usize)>) -> String {
    kernels
        .into_iter()
        .map(|(name, addr, bufs, syms)| format!("{name} {addr:x} {bufs} {syms}\n"))
        .collect()
}

/// The name the fake driver gives its device.
pub const DEVICE_NAME: &str = "Fake CUDA device";
