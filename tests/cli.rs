//! The `kiln` command line, run as a user would.

use std::process::Command;

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env_remove("KILN_DUMP_DIR")
        .env_remove("KILN_PRINT_AFTER")
        .output()
        .expect("kiln runs")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn models_lists_the_builtin_decoder() {
    let o = kiln(&["models"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("tiny-decoder"));
}

/// `kiln inspect --format text` parses back with `kiln opt` to the identical graph.
#[test]
fn inspect_text_round_trips_through_opt() {
    let dir = tempdir();
    for after in ["input", "canonicalize", "all"] {
        let o = kiln(&[
            "inspect",
            "--model",
            "tiny-decoder",
            "--format",
            "text",
            "--after",
            after,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = stdout(&o);
        let path = dir.join(format!("{after}.kir"));
        std::fs::write(&path, &text).unwrap();
        let back = kiln(&["opt", path.to_str().unwrap()]);
        assert!(back.status.success(), "{}", stderr(&back));
        assert_eq!(stdout(&back), text, "after {after}");
        // And the graphs themselves are equal.
        let a = kiln_ir::text::parse(&text).unwrap();
        let b = kiln_ir::text::parse(&stdout(&back)).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn malformed_ir_reports_line_and_column() {
    let dir = tempdir();
    let path = dir.join("bad.kir");
    std::fs::write(
        &path,
        "graph @g(%x: f32[4]) {\n  %0 = exp(%x) : f32[4]\n  %1 = frobnicate(%0) : f32[4]\n  return %1 as \"y\"\n}\n",
    )
    .unwrap();
    let o = kiln(&["opt", path.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("bad.kir:3:8"), "{err}");
    assert!(err.contains("frobnicate"), "{err}");
}

#[test]
fn unknown_model_and_pass_are_clear_errors() {
    let o = kiln(&["inspect", "--model", "no-such-model"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tiny-decoder"), "{}", stderr(&o));
    let o = kiln(&[
        "inspect",
        "--model",
        "tiny-decoder",
        "--after",
        "no-such-pass",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("fuse"), "{}", stderr(&o));
}

#[test]
fn inspect_json_dot_plan_and_mlir() {
    for (format, needle) in [
        ("json", "\"tiny_decoder\""),
        ("dot", "digraph"),
        ("plan", "arena slots"),
        ("mlir", "func.func"),
    ] {
        let o = kiln(&["inspect", "--model", "tiny-decoder", "--format", format]);
        assert!(o.status.success(), "{format}: {}", stderr(&o));
        assert!(
            stdout(&o).contains(needle),
            "{format}: {}",
            &stdout(&o)[..stdout(&o).len().min(400)]
        );
    }
}

#[test]
fn timings_end_with_the_optimize_line() {
    let o = kiln(&[
        "inspect",
        "--model",
        "tiny-decoder",
        "--after",
        "all",
        "--timings",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("optimize: ") && last.ends_with(" ms"),
        "{out}"
    );
}

#[test]
fn dump_dir_gets_a_file_per_pass() {
    let dir = tempdir().join("dump");
    let o = kiln(&[
        "inspect",
        "--model",
        "tiny-decoder",
        "--after",
        "all",
        "--timings",
        "--dump-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for pass in ["canonicalize", "fuse"] {
        assert!(
            names
                .iter()
                .any(|n| n.contains(pass) && n.ends_with(".kir")),
            "{names:?}"
        );
    }
}

#[test]
fn run_generates_and_checks_against_the_interpreter() {
    let o = kiln(&["run", "--max-new-tokens", "4", "--check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("output"), "{out}");
    assert!(out.contains("relative L2 error"), "{out}");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "kiln-cli-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
