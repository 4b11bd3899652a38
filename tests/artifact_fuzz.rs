//! Property tests of the artifact loader: whatever happens to an artifact's
//! bytes, `Artifact::open` returns (an error, or an artifact whose every
//! file is as compiled) and never panics.
//!
//! - The manifest is not hashed: any edit of it is parsed and checked.
//! - Any edit of another file, its hash left alone, is `Corrupted`.
//! - `plan.json` and `generation.json` edited *with* the manifest's hash
//!   fixed up exercise their parsers: error or success, no panic. (Loading
//!   such an artifact is not tried: an artifact is code — its kernels are
//!   a shared library — and the hashes, not the loader, are what guard it.)

use kiln::aot::{compile_artifact, AotOptions, AotTarget};
use kiln_runtime::artifact::{hash_file, Artifact, ArtifactError, Manifest};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One compiled tiny-decoder artifact, shared by every case.
fn artifact() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-artifact-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let model = kiln::model::load("tiny-decoder", 0).unwrap();
        let opts = AotOptions {
            passes: Default::default(),
            target: AotTarget::Cpu { cpu: None },
        };
        compile_artifact(&model, "tiny-decoder", &opts, &dir, &mut |_| {}).unwrap();
        dir
    })
}

/// A fresh copy of the artifact for one case.
fn copy(tag: &str) -> PathBuf {
    let to = artifact().with_file_name(format!(
        "{}-{tag}",
        artifact().file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(artifact()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

#[derive(Clone, Debug)]
enum Edit {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
    Delete { at: usize, len: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Edit::Flip { at, mask }),
        any::<usize>().prop_map(|at| Edit::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert { at, byte }),
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Delete { at, len }),
    ]
}

fn apply(path: &Path, e: &Edit) {
    let mut b = std::fs::read(path).unwrap();
    let n = b.len().max(1);
    match *e {
        Edit::Flip { at, mask } => {
            let i = at % n;
            if i < b.len() {
                b[i] ^= mask;
            }
        }
        Edit::Truncate { at } => b.truncate(at % n),
        Edit::Insert { at, byte } => b.insert(at % (b.len() + 1), byte),
        Edit::Delete { at, len } => {
            let i = at % n;
            let j = (i + len).min(b.len());
            b.drain(i.min(b.len())..j);
        }
    }
    std::fs::write(path, b).unwrap();
}

/// Records `file`'s new hash in the manifest.
fn fix_hash(dir: &Path, file: &str) {
    let m = dir.join("manifest.json");
    let mut manifest: Manifest = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    manifest
        .files
        .insert(file.into(), hash_file(&dir.join(file)).unwrap());
    std::fs::write(&m, serde_json::to_vec(&manifest).unwrap()).unwrap();
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b69_6c6e),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_edit_of_the_manifest_is_checked_without_panicking(e in edit()) {
        let dir = copy("manifest");
        apply(&dir.join("manifest.json"), &e);
        // Success is possible (an edit inside white space, or of the model
        // name); then every file still matched its recorded hash.
        if let Ok(a) = Artifact::open(&dir) {
            prop_assert_eq!(a.plan().kernels.len(), Artifact::open(artifact()).unwrap().plan().kernels.len());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn any_edit_of_a_hashed_file_is_corrupted(e in edit(), which in 0usize..4) {
        let file = ["plan.json", "kernels.so", "weights.safetensors", "generation.json"][which];
        let dir = copy("hashed");
        let before = std::fs::read(dir.join(file)).unwrap();
        apply(&dir.join(file), &e);
        let after = std::fs::read(dir.join(file)).unwrap();
        let r = Artifact::open(&dir);
        if before == after {
            prop_assert!(r.is_ok());
        } else {
            let is_corrupted = matches!(&r, Err(ArtifactError::Corrupted { file: f, .. }) if f == file);
            prop_assert!(is_corrupted, "{}: {:?}", file, r.err());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn plan_and_generation_parsers_take_any_bytes(e in edit(), which in 0usize..2) {
        let file = ["plan.json", "generation.json"][which];
        let dir = copy("parsed");
        apply(&dir.join(file), &e);
        fix_hash(&dir, file);
        match Artifact::open(&dir) {
            Ok(_) => {}
            Err(ArtifactError::Malformed { file: f, .. }) => prop_assert_eq!(f.as_str(), file),
            // `generation.json` now saying the codec is a tokenizer's.
            Err(ArtifactError::MissingFile { file: f, .. }) => prop_assert_eq!(f.as_str(), "tokenizer.json"),
            Err(other) => prop_assert!(false, "{}: {}", file, other),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
