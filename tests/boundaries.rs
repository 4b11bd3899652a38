//! The hard boundary of DESIGN.md §1: the runtime (and so `kiln-run` and
//! every artifact it runs) links no compiler. `cargo tree` lists what
//! `kiln-runtime` builds against; no LLVM or MLIR crate may be among them.

#[test]
fn the_runtime_links_no_llvm_or_mlir() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "-p",
            "kiln-runtime",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && tree.contains("kiln-runtime"),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let forbidden = ["kiln-codegen", "melior", "mlir-sys", "inkwell", "llvm-sys"];
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(
            !forbidden.contains(&name),
            "kiln-runtime depends on `{name}`:\n{tree}"
        );
    }
}
