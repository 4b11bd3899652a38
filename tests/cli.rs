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

/// [`kiln`], which must succeed (its stderr is the failure message).
fn kiln_ok(args: &[&str]) -> std::process::Output {
    let o = kiln(args);
    assert!(o.status.success(), "{}", stderr(&o));
    o
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
        let o = kiln_ok(&[
            "inspect",
            "--model",
            "tiny-decoder",
            "--format",
            "text",
            "--after",
            after,
        ]);
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
    let o = kiln_ok(&[
        "inspect",
        "--model",
        "tiny-decoder",
        "--after",
        "all",
        "--timings",
    ]);
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
    kiln_ok(&[
        "inspect",
        "--model",
        "tiny-decoder",
        "--after",
        "all",
        "--timings",
        "--dump-dir",
        dir.to_str().unwrap(),
    ]);
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
fn run_generates_text_from_the_embedded_model_and_checks_it() {
    let o = kiln_ok(&["run", "--max-new-tokens", "12", "--check", "--stats"]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.starts_with("And God said"), "{out}");
    assert!(
        out.trim().len() > "And God said".len() + 10,
        "no text generated: {out}"
    );
    assert!(err.contains("relative L2 error"), "{err}");
    assert!(
        err.contains("prefill:") && err.contains("tokens/s"),
        "{err}"
    );
}

#[test]
fn run_seeded_sampling_is_reproducible() {
    let a = kiln(&[
        "run",
        "--max-new-tokens",
        "10",
        "--temperature",
        "0.9",
        "--top-k",
        "40",
        "--seed",
        "5",
    ]);
    let b = kiln(&[
        "run",
        "--max-new-tokens",
        "10",
        "--temperature",
        "0.9",
        "--top-k",
        "40",
        "--seed",
        "5",
    ]);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
}

fn golden(name: &str) -> String {
    format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn golden_ids(dir: &str, tensor: &str) -> Vec<i64> {
    let w = kiln_models::weights::Weights::open(format!("{dir}/golden.safetensors")).unwrap();
    w.get(tensor).unwrap().to_i64_vec().unwrap()
}

fn csv(ids: &[i64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `kiln logits` (prefill and `--decode`) writes the logits transformers computed.
#[test]
fn logits_prefill_and_decode_match_the_golden_file() {
    let dir = golden("llama-mqa-odd");
    let tokens = csv(&golden_ids(&dir, "tokens"));
    let want = kiln_models::weights::Weights::open(format!("{dir}/golden.safetensors"))
        .unwrap()
        .get("logits")
        .unwrap()
        .to_f64_vec();
    let tmp = tempdir();
    for decode in [false, true] {
        let out = tmp.join(format!("logits-{decode}.safetensors"));
        let mut args = vec![
            "logits",
            "--model",
            &dir,
            "--tokens",
            &tokens,
            "--out",
            out.to_str().unwrap(),
        ];
        if decode {
            args.push("--decode");
        }
        kiln_ok(&args);
        let got = kiln_models::weights::Weights::open(&out).unwrap();
        let got = got.get("logits").unwrap();
        assert_eq!(got.shape[0], 16);
        let e = kiln_ir::tensor::rel_l2(&got.to_f64_vec(), &want);
        assert!(e < 1e-4, "decode={decode}: {e:.3e}");
    }
}

/// `kiln generate --ids` greedy equals transformers' `generate(do_sample=False)`.
#[test]
fn generate_greedy_ids_match_the_golden_file_also_profiled() {
    let dir = golden("mamba-explicit-rank");
    let prompt = csv(&golden_ids(&dir, "greedy_prompt"));
    let o = kiln_ok(&[
        "generate",
        "--model",
        &dir,
        "--tokens",
        &prompt,
        "--max-new-tokens",
        "32",
        "--temperature",
        "0",
        "--ids",
        "--profile",
    ]);
    let got: Vec<i64> = stdout(&o)
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(got, golden_ids(&dir, "greedy_ids"));
    // `--profile` (scans included) changes no token and prints both tables.
    let err = stderr(&o);
    assert!(err.contains("profile: prefill ("), "{err}");
    assert!(
        err.contains("profile: decode (31 steps of one token)"),
        "{err}"
    );
    assert!(err.contains("total, 31 calls"), "{err}");
}

#[test]
fn generate_errors_are_clear() {
    let dir = golden("llama-mha");
    // No tokenizer in the golden folders: text needs one.
    let o = kiln(&["generate", "--model", &dir, "--prompt", "hello"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no tokenizer"), "{}", stderr(&o));
    // A token outside the vocabulary.
    let o = kiln(&[
        "logits",
        "--model",
        &dir,
        "--tokens",
        "1,5000",
        "--out",
        "/dev/null",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("outside the vocabulary"),
        "{}",
        stderr(&o)
    );
    // A model directory with a truncated checkpoint names the file.
    let tmp = tempdir().join("broken");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(format!("{dir}/config.json"), tmp.join("config.json")).unwrap();
    let bytes = std::fs::read(format!("{dir}/model.safetensors")).unwrap();
    std::fs::write(tmp.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let o = kiln(&[
        "generate",
        "--model",
        tmp.to_str().unwrap(),
        "--tokens",
        "1,2",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("model.safetensors"), "{}", stderr(&o));
    // A directory that is not a model.
    let o = kiln(&["generate", "--model", "/tmp", "--tokens", "1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("config.json"), "{}", stderr(&o));
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

/// The shape-only 7B Llama: timings per pass and phase, the optimize line
/// last, identical layers optimized once; it cannot run.
#[test]
fn llama_7b_shape_inspects_with_timings_and_refuses_to_run() {
    let o = kiln_ok(&["inspect", "--model", "llama-7b-shape", "--timings"]);
    let out = stdout(&o);
    for needle in [
        "canonicalize",
        "recognize",
        "fuse",
        "  translate",
        "  rules algebra",
        "  extract",
        "  stitch",
        "layers 32 × model.layers: 1 optimized, 31 replayed",
    ] {
        assert!(out.contains(needle), "{needle}:\n{out}");
    }
    let last = out.lines().last().unwrap();
    let ms: u64 = last
        .strip_prefix("optimize: ")
        .and_then(|s| s.strip_suffix(" ms"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("last line: {last}"));
    // The release binary does it in well under 2 s; tests run the debug one.
    assert!(ms < 20_000, "{out}");
    for cmd in ["run", "generate"] {
        let o = kiln(&[cmd, "--model", "llama-7b-shape", "--prompt", "hi"]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("shape-only"), "{cmd}: {}", stderr(&o));
    }
}

/// `--explain` names the rules behind every kernel: attention becomes
/// `flash_attention` in Llama, the selective scan `linear_scan` in Mamba
/// (priced for the GPU; the CPU keeps mamba-tiny's step loop).
#[test]
fn explain_shows_the_rules_behind_each_kernel() {
    let o = kiln_ok(&["inspect", "--model", "llama-tiny", "--explain"]);
    let out = stdout(&o);
    assert!(
        out.lines().any(
            |l| l.contains("flash_attention at model.layers.1.self_attn")
                && l.contains("recognize: flash-attention -> flash_attention")
        ),
        "{out}"
    );
    assert!(out.contains("fuse: row kernel of "), "{out}");
    let o = kiln_ok(&[
        "inspect",
        "--model",
        "mamba-tiny",
        "--explain",
        "--target",
        "gpu",
    ]);
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.contains("linear_scan at backbone.layers.0")
                && l.contains("recognize: scan-linear-recurrence -> linear_scan")),
        "{out}"
    );
    // After an earlier pass: the nodes a rewrite touched, and a count.
    let o = kiln_ok(&[
        "inspect",
        "--model",
        "llama-tiny",
        "--explain",
        "--after",
        "recognize",
    ]);
    let out = stdout(&o);
    assert!(
        out.contains("flash_attention at model.layers.0.self_attn: recognize: flash-attention"),
        "{out}"
    );
    assert!(
        out.lines()
            .last()
            .unwrap()
            .contains("node(s) with rewrites"),
        "{out}"
    );
}

/// `--weights f16|bf16`: after the `lossy` pass the weights are declared
/// bf16; the run generates text and passes `--check`; a dtype it cannot
/// store is a clear error naming the choices.
#[test]
fn weights_option_narrows_and_bad_values_are_clear() {
    let o = kiln_ok(&[
        "inspect",
        "--model",
        "llama-tiny",
        "--weights",
        "bf16",
        "--after",
        "lossy",
    ]);
    let text = stdout(&o);
    // The weights are declared bf16 (nothing else reads them).
    assert!(text.contains("q_proj.weight\" : bf16["), "{text}");
    // `--explain` names the step, before `layout` makes the matmul_t.
    let o = kiln_ok(&[
        "inspect",
        "--model",
        "llama-tiny",
        "--weights",
        "bf16",
        "--explain",
    ]);
    let chain = "lossy: narrow-weights -> matmul; layout: transpose-into-matmul_t -> matmul_t";
    assert!(stdout(&o).contains(chain), "{}", stdout(&o));
    // `--check` holds the compiled model to the interpreter on the graph
    // after `lossy`, with the weights rounded the same way.
    let o = kiln_ok(&[
        "run",
        "--weights",
        "f16",
        "--max-new-tokens",
        "8",
        "--check",
    ]);
    assert!(!stdout(&o).trim().is_empty());
    assert!(
        stderr(&o).contains("check: compiled vs reference"),
        "{}",
        stderr(&o)
    );
    let o = kiln(&["run", "--weights", "i8"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("f32, bf16 or f16"), "{err}");
}
