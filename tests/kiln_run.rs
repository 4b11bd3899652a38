//! The thin `kiln-run` binary on CPU artifacts made by `kiln compile`: its
//! logits (prefill and token by token) equal `kiln logits`, its generated
//! tokens and text equal `kiln generate`, and a broken artifact is a
//! one-line error with a non-zero exit, never a panic.
//!
//! `kiln-run` belongs to another package (`kiln-runtime`), so Cargo gives
//! this test no `CARGO_BIN_EXE_kiln-run`. The test looks for it next to the
//! `kiln` binary under test (same target directory and profile): under
//! `cargo test --workspace` Cargo has just built it there, with the
//! workspace's features. It is used only if it is newer than every source
//! it is built from (the `ir`, `models` and `runtime` crates, the
//! manifests, `Cargo.lock`); otherwise — missing or possibly stale, e.g.
//! under `cargo test -p kiln` after an edit — the test runs `cargo build -p
//! kiln-runtime --bin kiln-run` into that directory first. So the binary
//! tested is always built from the current sources. (Cargo releases its
//! build lock before running tests, so the nested build does not wait on
//! the outer one.)

use kiln_ir::tensor::rel_l2;
use kiln_models::weights::Weights;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::SystemTime;

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

/// The `kiln-run` binary, checked or built once per test run (see the
/// module docs).
fn kiln_run_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let kiln = Path::new(env!("CARGO_BIN_EXE_kiln"));
        let bin_dir = kiln.parent().expect("the kiln binary is in a directory");
        let path = bin_dir.join(format!("kiln-run{}", std::env::consts::EXE_SUFFIX));
        let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if built.is_some_and(|b| b >= newest_source()) {
            return path;
        }
        let profile = bin_dir.file_name().unwrap().to_string_lossy().into_owned();
        let profile = if profile == "debug" {
            "dev".to_string()
        } else {
            profile
        };
        let target_dir = bin_dir.parent().expect("a profile directory has a parent");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--offline",
                "-p",
                "kiln-runtime",
                "--bin",
                "kiln-run",
            ])
            .args(["--profile", &profile])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("running cargo");
        assert!(
            out.status.success(),
            "cargo build -p kiln-runtime --bin kiln-run failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(path.is_file(), "{} was not built", path.display());
        path
    })
}

/// The latest modification of anything `kiln-run` is built from.
fn newest_source() -> SystemTime {
    fn walk(p: &Path, newest: &mut SystemTime) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                walk(&e.path(), newest);
            }
        } else if let Ok(m) = meta.modified() {
            *newest = (*newest).max(m);
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest = SystemTime::UNIX_EPOCH;
    for p in ["Cargo.toml", "Cargo.lock"] {
        walk(&root.join(p), &mut newest);
    }
    for krate in ["ir", "models", "runtime"] {
        walk(&root.join(krate).join("Cargo.toml"), &mut newest);
        walk(&root.join(krate).join("src"), &mut newest);
    }
    newest
}

fn kiln_run() -> Command {
    Command::new(kiln_run_path())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the binary runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-run-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `kiln compile --model SPEC --target cpu --out DIR/art`.
fn compile(spec: &str, dir: &Path, opts: &[&str]) -> PathBuf {
    let art = dir.join("art");
    run(kiln()
        .args(["compile", "--model", spec, "--target", "cpu", "--out"])
        .arg(&art)
        .args(opts));
    art
}

fn logits_file(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let w = Weights::open(path).unwrap();
    let t = w.get("logits").unwrap();
    (t.shape.clone(), t.to_f32_vec())
}

/// `kiln-run logits` equals `kiln logits` (bitwise, or within 1e-6
/// relative L2: the artifact's kernels are compiled ahead of time by the
/// same code generator, but as object code instead of the JIT).
fn same_logits(spec: &str, art: &Path, dir: &Path, tokens: &str, decode: bool, opts: &[&str]) {
    let tag = if decode { "decode" } else { "prefill" };
    let (ours, theirs) = (
        dir.join(format!("run-{tag}")),
        dir.join(format!("jit-{tag}")),
    );
    let mut a = kiln_run();
    a.arg("logits")
        .arg(art)
        .args(["--tokens", tokens, "--out"])
        .arg(&ours);
    let mut b = kiln();
    b.args(["logits", "--model", spec, "--tokens", tokens, "--out"])
        .arg(&theirs)
        .args(opts);
    if decode {
        a.arg("--decode");
        b.arg("--decode");
    }
    run(&mut a);
    run(&mut b);
    let ((sa, va), (sb, vb)) = (logits_file(&ours), logits_file(&theirs));
    let seq = tokens.split(',').count();
    assert_eq!(sa, sb, "{spec} {tag}: shapes");
    assert_eq!(sa[0], seq, "{spec} {tag}: one row per token");
    if va != vb {
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let e = rel_l2(&f(&va), &f(&vb));
        assert!(
            e <= 1e-6,
            "{spec} {tag}: kiln-run vs kiln logits, relative L2 {e:.2e}"
        );
    }
}

/// Logits (prefill and decode) and 8 generated token ids, `kiln-run` on
/// the artifact against `kiln` on the model.
fn check_model(spec: &str, tag: &str, tokens: &str) {
    let dir = tempdir(tag);
    check_compiled(spec, &dir, tokens, &[]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// [`check_model`] with `opts` given to `kiln compile` and to `kiln`;
/// returns the artifact.
fn check_compiled(spec: &str, dir: &Path, tokens: &str, opts: &[&str]) -> PathBuf {
    let art = compile(spec, dir, opts);
    same_logits(spec, &art, dir, tokens, false, opts);
    same_logits(spec, &art, dir, tokens, true, opts);
    let generate = ["--tokens", tokens, "--max-new-tokens", "8", "--ids"];
    let ours = stdout(kiln_run().arg(&art).args(generate));
    let theirs = stdout(
        kiln()
            .args(["generate", "--model", spec])
            .args(generate)
            .args(opts),
    );
    assert_eq!(ours.split_whitespace().count(), 8, "{spec}: {ours:?}");
    assert_eq!(ours, theirs, "{spec}: kiln-run vs kiln generate");
    art
}

#[test]
fn tiny_decoder_matches_kiln() {
    check_model("tiny-decoder", "tiny", "72,101,108,108,111,33");
}

#[test]
fn llama_tiny_matches_kiln() {
    check_model("llama-tiny", "llama", "5,17,3,60,2,250,9");
}

/// `--weights bf16|f16`: the artifact stores the matrices rounded (half the
/// bytes; the norms stay f32), `kiln-run` reads them as stored, and its
/// logits and ids equal the JIT's, which rounds the f32 checkpoint at load.
#[test]
fn narrow_weights_artifact_matches_kiln() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/llama-gqa-tied");
    for (weights, stored) in [("bf16", "BF16"), ("f16", "F16")] {
        let dir = tempdir(&format!("narrow-{weights}"));
        let art = check_compiled(spec, &dir, "5,17,3,60,2,95,0,41", &["--weights", weights]);
        let w = Weights::open(art.join("weights.safetensors")).unwrap();
        for name in w.names() {
            let want = if name.contains("norm") { "F32" } else { stored };
            let got = format!("{:?}", w.dtype(name).unwrap());
            assert_eq!(got, want, "{weights}: {name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn golden_llama_gqa_tied_matches_kiln() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/llama-gqa-tied");
    check_model(spec, "gqa", "5,17,3,60,2,95,0,41");
}

/// Text in, text out, statistics, version — and every broken artifact a
/// one-line error.
/// `--lockstep`: one id per line, each after a line of input; the same
/// tokens as a free-running generation; end of input stops it cleanly.
#[test]
fn lockstep_waits_for_a_line_before_each_step() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempdir("lockstep");
    let art = compile("tiny-decoder", &dir, &[]);
    let args = ["--tokens", "5,6,7", "--max-new-tokens", "6"];
    let free = stdout(kiln_run().arg(&art).args(args).arg("--ids"));
    let json = dir.join("stats.json");
    let mut child = kiln_run()
        .arg(&art)
        .args(args)
        .arg("--lockstep")
        .arg("--stats-json")
        .arg(&json)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ids = Vec::new();
    for _ in 0..6 {
        // Nothing more comes until the line is sent: the next id follows it.
        ids.push(lines.next().unwrap().unwrap());
        writeln!(input, "go").unwrap();
    }
    drop(input);
    assert!(child.wait().unwrap().success());
    assert_eq!(ids.join(" "), free.trim(), "the same greedy tokens");
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(stats["decode_step_ms"].as_array().unwrap().len(), 5);

    // No input at all: the first token, then generation stops.
    let out = run(kiln_run()
        .arg(&art)
        .args(args)
        .arg("--lockstep")
        .stdin(std::process::Stdio::null()));
    let first = free.split_whitespace().next().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), first);
}

/// `--profile`: the same tokens, and on stderr a table for the prefill
/// and one for the decode whose launches add up to the plan's steps.
#[test]
fn profile_tables_account_for_every_call() {
    let dir = tempdir("profile");
    let art = compile("tiny-decoder", &dir, &[]);
    let args = ["--tokens", "5,6,7", "--max-new-tokens", "4", "--ids"];
    let free = stdout(kiln_run().arg(&art).args(args));
    let out = run(kiln_run().arg(&art).args(args).arg("--profile"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), free);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (prefill, decode) = stderr
        .split_once("profile: decode (3 steps of one token)")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        prefill.starts_with("profile: prefill (3 tokens)"),
        "{stderr}"
    );
    for table in [prefill, decode] {
        let launches: u64 = table
            .lines()
            .filter(|l| l.starts_with("kiln_k"))
            .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
            .sum();
        assert!(launches > 0, "{stderr}");
        assert!(table.contains("(outside kernels)"), "{stderr}");
    }
    assert!(prefill.contains("total, 1 calls"), "{stderr}");
    assert!(decode.contains("total, 3 calls"), "{stderr}");
}

#[test]
fn text_stats_version_and_errors() {
    let dir = tempdir("text");
    let art = compile("tiny-decoder", &dir, &[]);

    // A prompt streams the same text as `kiln generate` (bytes model).
    let prompt = ["--prompt", "Hello", "--max-new-tokens", "12"];
    let ours = run(kiln_run().arg(&art).args(prompt)).stdout;
    let theirs = run(kiln()
        .args(["generate", "--model", "tiny-decoder"])
        .args(prompt))
    .stdout;
    assert_eq!(ours, theirs);

    let json = dir.join("stats.json");
    let out = run(kiln_run()
        .arg(&art)
        .args([
            "--tokens",
            "1,2,3",
            "--max-new-tokens",
            "4",
            "--stats",
            "--stats-json",
        ])
        .arg(&json));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("prefill: ") && stderr.contains("tokens/s"),
        "{stderr}"
    );
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(stats["prompt_tokens"], 3);
    assert_eq!(stats["new_tokens"], 4);
    assert!(
        stats["device"].as_str().unwrap().starts_with("cpu"),
        "{stats}"
    );
    assert!(stats["prefill_ms"].as_f64().unwrap() > 0.0, "{stats}");
    assert!(
        stats["decode_tokens_per_s"].as_f64().unwrap() > 0.0,
        "{stats}"
    );
    let steps = stats["decode_step_ms"].as_array().unwrap();
    assert_eq!(
        steps.len(),
        3,
        "one step per token after the first: {stats}"
    );
    assert!(steps.iter().all(|s| s.as_f64().unwrap() > 0.0), "{stats}");

    // `info` verifies and describes without loading.
    let info = stdout(kiln_run().arg("info").arg(&art));
    for needle in [
        "model      tiny-decoder",
        "runs here  yes",
        "kv_cache=f32",
        "input  tokens: i32[seq]",
        "output logits: f32[seq,256]",
        "kernels.so",
    ] {
        assert!(info.contains(needle), "{needle:?} not in:\n{info}");
    }

    let version = stdout(kiln_run().arg("--version"));
    assert_eq!(
        version.trim(),
        format!("kiln-run {}", env!("CARGO_PKG_VERSION"))
    );

    // Each failure: exit 1, one line on stderr naming the problem and the file.
    let fails = |cmd: &mut Command, needles: &[&str]| {
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{cmd:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("kiln-run: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{stderr} lacks {n:?}");
        }
    };
    let gen = ["--tokens", "1,2", "--max-new-tokens", "2"];
    let broken = dir.join("broken");
    let reset = || {
        let _ = std::fs::remove_dir_all(&broken);
        std::fs::create_dir_all(&broken).unwrap();
        for e in std::fs::read_dir(&art).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), broken.join(e.file_name())).unwrap();
        }
    };

    // Tampered: one byte of the weights changed.
    reset();
    let weights = broken.join("weights.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 0x01;
    std::fs::write(&weights, bytes).unwrap();
    fails(
        kiln_run().arg(&broken).args(gen),
        &["weights.safetensors", "sha256"],
    );
    let out = dir.join("l.safetensors");
    let mut logits = kiln_run();
    logits
        .arg("logits")
        .arg(&broken)
        .args(["--tokens", "1,2", "--out"])
        .arg(&out);
    fails(&mut logits, &["weights.safetensors", "corrupted"]);
    assert!(!out.exists(), "no output from a broken artifact");

    // Missing: the plan.
    reset();
    std::fs::remove_file(broken.join("plan.json")).unwrap();
    fails(kiln_run().arg(&broken).args(gen), &["plan.json", "missing"]);
    fails(
        kiln_run().arg("info").arg(&broken),
        &["plan.json", "missing"],
    );

    // Wrong target: a CPU artifact on a CUDA device.
    reset();
    fails(
        kiln_run().arg(&broken).args(gen).args(["--device", "cuda"]),
        &["built for", "cuda:0"],
    );

    // ... and a CUDA artifact on the CPU (the default device).
    let cuda = dir.join("cuda");
    run(kiln()
        .args([
            "compile",
            "--model",
            "tiny-decoder",
            "--target",
            "cuda",
            "--out",
        ])
        .arg(&cuda));
    fails(
        kiln_run().arg(&cuda).args(gen),
        &["built for cuda", "cannot run on the CPU", "--device cuda"],
    );

    // Not an artifact at all; an unknown device is a usage error (clap, 2).
    fails(kiln_run().arg(dir.join("nowhere")).args(gen), &["nowhere"]);
    let out = kiln_run()
        .arg(&art)
        .args(gen)
        .args(["--device", "tpu"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown device `tpu`"));

    // A token outside the vocabulary names the artifact.
    fails(
        kiln_run()
            .arg(&art)
            .args(["--tokens", "1,999", "--max-new-tokens", "2"]),
        &["999", "vocabulary"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every other golden config (tests/golden): `kiln-run logits` equals
/// `kiln logits` on the golden prompt, prefill and token by token.
#[test]
fn every_golden_config_logits_match_kiln() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("golden.safetensors").is_file() && !p.ends_with("llama-gqa-tied"))
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "golden configs: {dirs:?}");
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let golden = Weights::open(dir.join("golden.safetensors")).unwrap();
        let tokens: Vec<String> = golden
            .get("tokens")
            .unwrap()
            .to_i64_vec()
            .unwrap()
            .iter()
            .map(|t| t.to_string())
            .collect();
        let tokens = tokens.join(",");
        let tmp = tempdir(&format!("golden-{name}"));
        let spec = dir.to_str().unwrap();
        let art = compile(spec, &tmp, &[]);
        same_logits(spec, &art, &tmp, &tokens, false, &[]);
        same_logits(spec, &art, &tmp, &tokens, true, &[]);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

/// The embedded default model through its Hugging Face tokenizer (carried
/// in the artifact): the same streamed text as `kiln generate`.
#[test]
fn default_model_text_matches_kiln_generate() {
    let dir = tempdir("default");
    let art = compile("default", &dir, &[]);
    let prompt = ["--prompt", "And God said", "--max-new-tokens", "16"];
    let ours = stdout(kiln_run().arg(&art).args(prompt));
    let theirs = stdout(kiln().args(["generate", "--model", "default"]).args(prompt));
    assert!(ours.trim().len() > 16, "{ours:?}");
    assert_eq!(ours, theirs);
    let _ = std::fs::remove_dir_all(&dir);
}
