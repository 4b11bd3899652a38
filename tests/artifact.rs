//! Ahead-of-time artifacts, end to end through the library: `kiln compile`'s
//! code path writes an artifact, the runtime opens it (verifying the
//! manifest) and runs it on the CPU from the shared library, and its outputs
//! equal the JIT's. Then every way an artifact can be wrong — a changed
//! byte, a truncated or missing file, another target, another version, a
//! damaged manifest — is a typed error naming the file.

use kiln::aot::{compile_artifact, AotOptions, AotTarget};
use kiln::model::{load, LoadedModel};
use kiln::{jit, CompileOptions};
use kiln_codegen::GpuArch;
use kiln_ir::{Bindings, DType, Tensor};
use kiln_passes::PassOptions;
use kiln_runtime::artifact::{Artifact, ArtifactError, Device};
use kiln_runtime::{ExecOptions, Executor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-artifact-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn compile(model: &LoadedModel, passes: PassOptions, target: AotTarget, out: &Path) {
    let opts = AotOptions { passes, target };
    compile_artifact(model, &model.name, &opts, out, &mut |_| {}).unwrap();
}

fn cpu() -> AotTarget {
    AotTarget::Cpu { cpu: None }
}

/// Every input of the plan: `tokens` as given, states zero-filled for a
/// context of `ctx`; `past` = 0.
fn inputs(exe: &dyn Executor, tokens: &[i32], ctx: usize) -> (BTreeMap<String, Tensor>, Bindings) {
    let sizes: Bindings = [
        ("ctx", ctx as i64),
        ("past", 0),
        ("seq", tokens.len() as i64),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut m = BTreeMap::new();
    for i in &exe.plan().inputs {
        let t = if i.name == "tokens" {
            Tensor::i32(vec![tokens.len()], tokens.to_vec()).unwrap()
        } else {
            Tensor::zeros(i.ty.dtype, i.ty.eval_shape(&sizes).unwrap())
        };
        m.insert(i.name.clone(), t);
    }
    (m, sizes)
}

/// The artifact's outputs equal the JIT's on the same model and options.
fn check_same_as_jit(spec: &str, passes: PassOptions) {
    let model = load(spec, 0).unwrap();
    let dir = tempdir(&spec.replace('/', "_"));
    let art = dir.join("art");
    compile(&model, passes.clone(), cpu(), &art);
    let artifact = Artifact::open(&art).unwrap();
    let mut aot = artifact.load(&Device::Cpu { threads: 2 }).unwrap();
    let opts = CompileOptions {
        passes,
        exec: ExecOptions { threads: 2 },
    };
    let mut jitted = jit(&model.graph, &model.weights, &opts).unwrap();
    let tokens: Vec<i32> = [1, 7, 3, 9, 2, 5].to_vec();
    let (ins, sizes) = inputs(aot.as_ref(), &tokens, 16);
    let a = aot.run_with(&ins, &sizes).unwrap();
    let j = jitted.run_with(&ins, &sizes).unwrap();
    assert_eq!(a.keys().collect::<Vec<_>>(), j.keys().collect::<Vec<_>>());
    for (name, t) in &a {
        let (x, y) = (t.to_f64_vec(), j[name].to_f64_vec());
        assert_eq!(x.len(), y.len(), "{spec}: `{name}` sizes");
        let err = kiln_ir::tensor::rel_l2(&x, &y);
        assert!(
            err <= 1e-6,
            "{spec}: `{name}` differs from the JIT: {err:e}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cpu_artifacts_compute_what_the_jit_computes() {
    check_same_as_jit("tiny-decoder", PassOptions::default());
    check_same_as_jit("llama-tiny", PassOptions::default());
    check_same_as_jit("mamba-tiny", PassOptions::default());
    check_same_as_jit(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/llama-gqa-tied"),
        PassOptions::default(),
    );
    let saq = PassOptions {
        kv_cache: Some(kiln_ir::saq::SaqSpec::parse("saq:16,8,4,2:S=4:G=4").unwrap()),
        ..PassOptions::default()
    };
    check_same_as_jit("llama-tiny", saq);
}

/// A fresh copy of one small CPU artifact, and a CUDA one, per test.
fn fixture(tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = tempdir(tag);
    let model = load("tiny-decoder", 0).unwrap();
    let (cpu_art, cuda_art) = (dir.join("cpu"), dir.join("cuda"));
    compile(&model, PassOptions::default(), cpu(), &cpu_art);
    compile(
        &model,
        PassOptions::default(),
        AotTarget::Cuda {
            arch: GpuArch::Sm90,
        },
        &cuda_art,
    );
    (dir, cpu_art, cuda_art)
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

fn open_err(dir: &Path) -> ArtifactError {
    Artifact::open(dir).expect_err("the artifact must be refused")
}

#[test]
fn a_changed_byte_in_any_file_is_caught_and_named() {
    let (tmp, art, _) = fixture("tamper");
    let manifest = Artifact::open(&art).unwrap().manifest().clone();
    assert!(manifest.files.contains_key("kernels.so"));
    for (name, entry) in &manifest.files {
        let copy = tmp.join(format!("copy-{name}"));
        copy_dir(&art, &copy);
        flip_byte(&copy.join(name), entry.bytes as usize / 2);
        let e = open_err(&copy);
        let msg = e.to_string();
        assert!(
            matches!(&e, ArtifactError::Corrupted { file, what: "its sha256", .. } if file == name),
            "{name}: {msg}"
        );
        assert!(msg.contains(name) && msg.contains("corrupted"), "{msg}");
    }
    // A truncated file: its length is wrong.
    let copy = tmp.join("truncated");
    copy_dir(&art, &copy);
    let w = copy.join("weights.safetensors");
    let b = std::fs::read(&w).unwrap();
    std::fs::write(&w, &b[..b.len() - 10]).unwrap();
    let e = open_err(&copy);
    assert!(
        matches!(
            &e,
            ArtifactError::Corrupted {
                what: "its length",
                ..
            }
        ),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_missing_file_is_named() {
    let (tmp, art, _) = fixture("missing");
    for name in [
        "kernels.so",
        "plan.json",
        "weights.safetensors",
        "manifest.json",
    ] {
        let copy = tmp.join(format!("copy-{name}"));
        copy_dir(&art, &copy);
        std::fs::remove_file(copy.join(name)).unwrap();
        let e = open_err(&copy);
        assert!(
            matches!(&e, ArtifactError::MissingFile { file, .. } if file == name),
            "{name}: {e}"
        );
        assert!(e.to_string().contains(name), "{e}");
    }
    let e = open_err(&tmp.join("no-such-artifact"));
    assert!(matches!(e, ArtifactError::NotFound { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn the_wrong_target_is_refused_with_the_way_out() {
    let (tmp, cpu_art, cuda_art) = fixture("target");
    let cuda = Artifact::open(&cuda_art).unwrap();
    assert_eq!(cuda.manifest().target.kind(), "cuda");
    let e = cuda
        .load(&Device::Cpu { threads: 1 })
        .err()
        .expect("a CUDA artifact does not load on the CPU");
    assert!(matches!(e, ArtifactError::WrongTarget { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("cuda (sm_90)") && msg.contains("--target cpu"),
        "{msg}"
    );

    // Without a GPU (or a driver), loading a CUDA artifact is an error, not a panic.
    if kiln_runtime::cuda::device_info(0).is_err() {
        let e = cuda
            .load(&Device::Cuda { ordinal: 0 })
            .err()
            .expect("no device, no executor");
        assert!(e.to_string().to_lowercase().contains("cuda"), "{e}");
    }

    let cpu = Artifact::open(&cpu_art).unwrap();
    let e = cpu
        .load(&Device::Cuda { ordinal: 0 })
        .err()
        .expect("a CPU artifact does not load on a GPU");
    assert!(matches!(e, ArtifactError::WrongTarget { .. }), "{e}");
    assert!(e.to_string().contains("--target cuda"), "{e}");

    // A CPU artifact for another architecture, or needing features this
    // CPU lacks (the manifest is edited and its hashes still hold: the
    // manifest is what records the target).
    for (from, to) in [
        ("\"triple\": \"x86_64", "\"triple\": \"aarch64"),
        (
            "\"features\": \"",
            "\"features\": \"+made-up-feature,+avx512fp16,+amx-tile,",
        ),
    ] {
        let copy = tmp.join("edited");
        copy_dir(&cpu_art, &copy);
        let m = copy.join("manifest.json");
        let text = std::fs::read_to_string(&m).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(&m, text.replacen(from, to, 1)).unwrap();
        let a = Artifact::open(&copy).unwrap();
        match a.check_cpu_host() {
            Err(ArtifactError::WrongTarget { .. }) => {}
            // Only a CPU with AVX512-FP16 passes the feature edit.
            Ok(())
                if from.contains("features")
                    && std::arch::is_x86_feature_detected!("avx512fp16") => {}
            other => panic!("{to}: {other:?}"),
        }
        std::fs::remove_dir_all(&copy).unwrap();
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn another_version_or_a_damaged_manifest_is_refused() {
    let (tmp, art, _) = fixture("version");
    let edit = |from: &str, to: &str| {
        let copy = tmp.join("edited");
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&art, &copy);
        let m = copy.join("manifest.json");
        let text = std::fs::read_to_string(&m).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(&m, text.replacen(from, to, 1)).unwrap();
        open_err(&copy)
    };
    let v = kiln_runtime::artifact::KILN_VERSION;
    let e = edit(
        &format!("\"kiln_version\": \"{v}\""),
        "\"kiln_version\": \"0.0.1\"",
    );
    assert!(matches!(e, ArtifactError::Version { .. }), "{e}");
    assert!(e.to_string().contains("0.0.1") && e.to_string().contains("kiln compile"));
    let e = edit("\"format\": 1", "\"format\": 99");
    assert!(matches!(e, ArtifactError::Version { .. }), "{e}");
    let e = edit("{", "[");
    assert!(
        matches!(&e, ArtifactError::Malformed { file, .. } if file == "manifest.json"),
        "{e}"
    );
    let e = edit("\"plan.json\"", "\"../plan.json\"");
    assert!(matches!(e, ArtifactError::Malformed { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn compile_refuses_to_overwrite_what_is_not_an_artifact() {
    let tmp = tempdir("overwrite");
    let keep = tmp.join("notes");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::write(keep.join("precious.txt"), "keep me").unwrap();
    let model = load("tiny-decoder", 0).unwrap();
    let opts = AotOptions {
        passes: PassOptions::default(),
        target: cpu(),
    };
    let e = compile_artifact(&model, "tiny-decoder", &opts, &keep, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("not a Kiln artifact"), "{e}");
    assert!(keep.join("precious.txt").exists());
    // A CPU name LLVM does not know is an error (LLVM itself would abort).
    let bogus = AotOptions {
        passes: PassOptions::default(),
        target: AotTarget::Cpu {
            cpu: Some("bogus".into()),
        },
    };
    let e =
        compile_artifact(&model, "tiny-decoder", &bogus, &tmp.join("b"), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("unknown CPU `bogus`"), "{e}");
    assert!(!tmp.join("b").exists());
    // An earlier artifact is replaced.
    let art = tmp.join("art");
    compile(&model, PassOptions::default(), cpu(), &art);
    compile(&model, PassOptions::default(), cpu(), &art);
    Artifact::open(&art).unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn the_artifact_records_what_it_was_built_with() {
    let tmp = tempdir("manifest");
    let model = load("llama-tiny", 0).unwrap();
    let passes = PassOptions {
        kv_cache: Some(kiln_ir::saq::SaqSpec::parse("saq").unwrap()),
        ..PassOptions::default()
    };
    let art = tmp.join("art");
    compile(
        &model,
        passes,
        AotTarget::Cuda {
            arch: GpuArch::Sm80,
        },
        &art,
    );
    let a = Artifact::open(&art).unwrap();
    let m = a.manifest();
    assert_eq!(m.kiln_version, env!("CARGO_PKG_VERSION"));
    assert!(m.llvm_version.starts_with("22."), "{}", m.llvm_version);
    assert_eq!(m.target.to_string(), "cuda (sm_80)");
    assert_eq!(m.options["kv_cache"], "saq:16,8,4,2:S=128:G=32");
    assert_eq!(m.options["optimizer_target"], "gpu");
    let ptx = std::fs::read_to_string(a.path("kernels.ptx")).unwrap();
    assert!(ptx.contains(".target sm_80"));
    for k in &a.plan().kernels {
        assert!(ptx.contains(&format!(".entry {}", k.name)), "{}", k.name);
    }
    // Weights: exactly the plan's parameters, in their dtypes.
    let w = a.weights().unwrap();
    let params: Vec<&str> = a
        .plan()
        .buffers
        .iter()
        .filter_map(|b| match &b.storage {
            kiln_runtime::plan::Storage::Param(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(w.len(), params.len());
    for p in params {
        assert_eq!(w.get(p).unwrap().dtype(), DType::F32);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A plan edited by hand (its hash fixed up, so it passes the manifest)
/// that hands a kernel a buffer of another type is refused at load — a
/// kernel would otherwise index past that buffer.
#[test]
fn a_kernel_given_a_buffer_of_another_type_is_refused_at_load() {
    let (tmp, art, _) = fixture("edited-plan");
    let plan_path = art.join("plan.json");
    let mut plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&plan_path).unwrap()).unwrap();
    let typed: kiln_runtime::Plan = serde_json::from_value(plan.clone()).unwrap();
    // The first kernel step, and a buffer whose type differs from its first argument's.
    let (step, first) = typed
        .steps
        .iter()
        .enumerate()
        .find_map(|(i, s)| match s {
            kiln_runtime::plan::Step::Kernel { args, .. } => Some((i, args[0])),
            _ => None,
        })
        .unwrap();
    let other = (0..typed.buffers.len())
        .find(|&b| typed.buffers[b].ty != typed.buffers[first].ty)
        .unwrap();
    plan["steps"][step]["Kernel"]["args"][0] = serde_json::json!(other);
    std::fs::write(&plan_path, serde_json::to_vec(&plan).unwrap()).unwrap();
    let manifest_path = art.join("manifest.json");
    let mut manifest: kiln_runtime::artifact::Manifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest.files.insert(
        "plan.json".into(),
        kiln_runtime::artifact::hash_file(&plan_path).unwrap(),
    );
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let a = Artifact::open(&art).unwrap();
    let e = a
        .load(&Device::Cpu { threads: 1 })
        .err()
        .expect("the edited plan must be refused");
    let msg = e.to_string();
    assert!(
        matches!(e, ArtifactError::Runtime { .. }) && msg.contains("is launched on"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
