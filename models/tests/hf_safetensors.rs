//! The safetensors reader and writer: round trips of every dtype, files
//! built by hand, every malformed case with its message, and random
//! corruption that must never panic.

mod hf_common;

use hf_common::{mixed_tensors, Scratch};
use kiln_ir::{DType, Tensor, TensorData};
use kiln_models::hf::{
    save_safetensors, save_safetensors_with_metadata, serialize_safetensors, Dtype, LoadError,
    SafetensorsError, SafetensorsFile, SafetensorsProblem as P,
};
use kiln_models::weights::Weights;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A file from a header string and a data section.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn parse(bytes: Vec<u8>) -> Result<SafetensorsFile, SafetensorsError> {
    SafetensorsFile::from_bytes("m.safetensors", bytes)
}

/// The problem of a malformed file; its message must name the file and
/// contain each of `words`.
fn problem(bytes: Vec<u8>, words: &[&str]) -> P {
    let e = parse(bytes).expect_err("the file should be rejected");
    let msg = e.to_string();
    assert!(msg.starts_with("m.safetensors: "), "{msg}");
    for w in words {
        assert!(msg.contains(w), "`{msg}` should mention `{w}`");
    }
    *e.problem
}

#[test]
fn every_dtype_round_trips_through_a_file() {
    let dir = Scratch::new("roundtrip");
    let path = dir.join("m.safetensors");
    let tensors = mixed_tensors();
    save_safetensors(&path, &tensors).unwrap();
    let f = SafetensorsFile::open(&path).unwrap();
    assert_eq!(f.tensors().len(), tensors.len());
    let w = Weights::open(&path).unwrap();
    for (name, t) in &tensors {
        assert_eq!(w.shape(name), Some(t.shape.as_slice()), "{name}");
        assert_eq!(w.dtype(name), Some(Dtype::of_data(&t.data)), "{name}");
        let got = w.get(name).unwrap();
        match &t.data {
            // Floats load as f32, exactly for every narrower type.
            TensorData::F32(_) | TensorData::F16(_) | TensorData::BF16(_) => {
                assert_eq!(got.dtype(), DType::F32, "{name}");
                assert_eq!(got.to_f64_vec(), t.to_f64_vec(), "{name}");
            }
            _ => assert_eq!(got, t, "{name}"),
        }
    }
    // Stored bytes are the original little-endian encoding.
    let bf = w.stored_bytes("c.bf16").unwrap();
    let TensorData::BF16(orig) = &tensors["c.bf16"].data else {
        unreachable!()
    };
    assert_eq!(bf.len(), 10);
    assert_eq!(u16::from_le_bytes([bf[2], bf[3]]), orig[1].to_bits());
    // Writing is deterministic and matches the in-memory form.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        bytes,
        serialize_safetensors(&tensors, &BTreeMap::new()).unwrap()
    );
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(header_len % 8, 0, "data section starts 8-aligned");
}

#[test]
fn f64_storage_is_written_as_f64_and_loads_as_f32() {
    let t = Tensor::new(vec![3], TensorData::F64(vec![1.0 / 3.0, -2.5, 1e300])).unwrap();
    let bytes =
        serialize_safetensors(&BTreeMap::from([("x".to_string(), t)]), &BTreeMap::new()).unwrap();
    let f = parse(bytes).unwrap();
    assert_eq!(f.info("x").unwrap().dtype, Dtype::F64);
    assert_eq!(f.bytes("x").unwrap().len(), 24);
    let got = f.tensor("x").unwrap();
    assert_eq!(
        got.as_f32().unwrap(),
        &[(1.0f64 / 3.0) as f32, -2.5, f32::INFINITY]
    );
}

#[test]
fn metadata_round_trips() {
    let dir = Scratch::new("meta");
    let path = dir.join("m.safetensors");
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let tensors = BTreeMap::from([("w".to_string(), hf_common::f32_tensor(4, &[2]))]);
    save_safetensors_with_metadata(&path, &tensors, &meta).unwrap();
    let f = SafetensorsFile::open(&path).unwrap();
    assert_eq!(f.metadata(), &meta);
    assert_eq!(f.tensors().keys().collect::<Vec<_>>(), ["w"]);
}

#[test]
fn a_hand_built_file_reads_back() {
    // Entries in the header out of offset order, a scalar, an empty tensor,
    // padding spaces after the JSON.
    let header = r#"{"b":{"dtype":"BF16","shape":[2],"data_offsets":[2,6]},"__metadata__":{"k":"v"},"a":{"dtype":"F16","shape":[],"data_offsets":[0,2]},"z":{"dtype":"I32","shape":[0,3],"data_offsets":[6,6]}}   "#;
    let mut data = Vec::new();
    data.extend_from_slice(&half::f16::from_f32(-1.5).to_le_bytes());
    data.extend_from_slice(&half::bf16::from_f32(3.0).to_le_bytes());
    data.extend_from_slice(&half::bf16::from_f32(-0.125).to_le_bytes());
    let f = parse(raw(header, &data)).unwrap();
    assert_eq!(f.metadata()["k"], "v");
    assert_eq!(
        f.tensor("a").unwrap(),
        Tensor::f32(vec![], vec![-1.5]).unwrap()
    );
    assert_eq!(
        f.tensor("b").unwrap(),
        Tensor::f32(vec![2], vec![3.0, -0.125]).unwrap()
    );
    assert_eq!(
        f.tensor("z").unwrap(),
        Tensor::i32(vec![0, 3], vec![]).unwrap()
    );
    assert_eq!(f.info("b").unwrap().data_offsets, (2, 6));
}

#[test]
fn an_empty_header_is_a_valid_empty_file() {
    let f = parse(raw("{}", &[])).unwrap();
    assert!(f.tensors().is_empty());
}

#[test]
fn framing_errors() {
    assert_eq!(
        problem(vec![1, 2, 3], &["3 bytes", "too short"]),
        P::TooShort { len: 3 }
    );
    let mut b = raw("{}", &[]);
    b[..8].copy_from_slice(&1000u64.to_le_bytes());
    assert!(matches!(
        problem(b, &["1000", "past the end", "truncated"]),
        P::HeaderPastEnd {
            header_len: 1000,
            available: 2
        }
    ));
    let mut b = raw("{\"a\":1}", &[]);
    b[10] = 0xff;
    assert_eq!(
        problem(b, &["UTF-8", "offset 2"]),
        P::HeaderNotUtf8 { offset: 2 }
    );
    assert!(matches!(
        problem(raw("{\"a\": ", &[]), &["not valid JSON"]),
        P::HeaderNotJson { .. }
    ));
    assert!(matches!(
        problem(raw("{} x", &[]), &["not valid JSON", "trailing"]),
        P::HeaderNotJson { .. }
    ));
    assert!(matches!(
        problem(raw("[1, 2]", &[]), &["not a JSON object"]),
        P::HeaderNotObject { .. }
    ));
}

#[test]
fn a_header_over_the_limit_is_rejected_without_reading_it() {
    // A sparse file just past the 100 MB cap: no real disk use.
    let dir = Scratch::new("huge-header");
    let path = dir.join("m.safetensors");
    let limit = kiln_models::hf::safetensors::MAX_HEADER_LEN;
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(8 + limit + 1).unwrap();
    use std::io::Write;
    (&f).write_all(&(limit + 1).to_le_bytes()).unwrap();
    drop(f);
    let e = SafetensorsFile::open(&path).unwrap_err();
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
    let LoadError::Safetensors(e) = e else {
        panic!("{e}")
    };
    assert!(matches!(*e.problem, P::HeaderTooLarge { .. }));
}

const F32X2: &str = r#"{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;

#[test]
fn entry_errors_name_the_tensor() {
    let h = format!(r#"{{"w":{F32X2},"w":{F32X2}}}"#);
    assert_eq!(
        problem(raw(&h, &[0; 8]), &["`w`", "twice"]),
        P::DuplicateName { tensor: "w".into() }
    );
    let h = format!(r#"{{"__metadata__":{{"k":1}},"w":{F32X2}}}"#);
    assert!(matches!(
        problem(raw(&h, &[0; 8]), &["__metadata__", "`k`", "a number"]),
        P::BadMetadata { .. }
    ));
    let cases: &[(&str, &str)] = &[
        (r#"{"w":[1]}"#, "expected an object"),
        (
            r#"{"w":{"shape":[2],"data_offsets":[0,8]}}"#,
            "missing `dtype`",
        ),
        (
            r#"{"w":{"dtype":"F32","data_offsets":[0,8]}}"#,
            "missing `shape`",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[2]}}"#,
            "missing `data_offsets`",
        ),
        (
            r#"{"w":{"dtype":7,"shape":[2],"data_offsets":[0,8]}}"#,
            "`dtype` must be a string",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
            "non-negative integers, found -2",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}"#,
            "non-negative integers",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}"#,
            "`shape` must be an array",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}}"#,
            "exactly 2 integers, found 3",
        ),
    ];
    for (h, words) in cases {
        let p = problem(raw(h, &[0; 8]), &["tensor `w`", words]);
        assert!(matches!(p, P::BadEntry { .. }), "{h}: {p:?}");
    }
}

#[test]
fn dtype_errors() {
    let p = problem(
        raw(
            r#"{"w":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
        &["`w`", "unknown dtype `Q4_K`", "BF16"],
    );
    assert!(matches!(p, P::UnknownDtype { .. }));
    let p = problem(
        raw(
            r#"{"w":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
        &["`w`", "F8_E4M3 is not supported"],
    );
    assert!(matches!(p, P::UnsupportedDtype { .. }));
}

#[test]
fn size_and_offset_errors() {
    let h = r#"{"w":{"dtype":"F32","shape":[1099511627776,1099511627776,1099511627776],"data_offsets":[0,8]}}"#;
    assert!(matches!(
        problem(raw(h, &[0; 8]), &["`w`", "overflows"]),
        P::ShapeOverflow { .. }
    ));
    let h = r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#;
    assert!(matches!(
        problem(raw(h, &[0; 8]), &["`w`", "[8, 4]", "end before they begin"]),
        P::InvertedOffsets { .. }
    ));
    let h = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    let p = problem(raw(h, &[0; 8]), &["`w`", "[3]", "needs 12 bytes", "hold 8"]);
    assert!(matches!(
        p,
        P::SizeMismatch {
            expected: 12,
            found: 8,
            ..
        }
    ));
    let h = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let p = problem(
        raw(h, &[0; 12]),
        &["`w`", "past the end", "12 bytes", "truncated"],
    );
    assert!(matches!(
        p,
        P::OutOfBounds {
            end: 16,
            data_len: 12,
            ..
        }
    ));
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let p = problem(raw(h, &[0; 12]), &["`b`", "overlap", "`a`"]);
    assert!(matches!(p, P::Overlap { .. }));
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let p = problem(raw(h, &[0; 12]), &["`b`", "gap", "ends at 4"]);
    assert!(matches!(
        p,
        P::Gap {
            begin: 8,
            expected: 4,
            ..
        }
    ));
    let p = problem(
        raw(&format!(r#"{{"w":{F32X2}}}"#), &[0; 11]),
        &["3 bytes after"],
    );
    assert!(matches!(p, P::TrailingBytes { trailing: 3, .. }));
}

#[test]
fn a_truncated_file_names_the_first_tensor_it_cuts() {
    let tensors = mixed_tensors();
    let bytes = serialize_safetensors(&tensors, &BTreeMap::new()).unwrap();
    let cut = bytes[..bytes.len() - 3].to_vec();
    // The writer lays tensors out by name: `i.scalar` holds the last bytes.
    let p = problem(cut, &["`i.scalar`", "truncated"]);
    assert!(matches!(p, P::OutOfBounds { .. }), "{p:?}");
}

#[test]
fn file_errors_name_the_path() {
    let dir = Scratch::new("files");
    let missing = dir.join("nope.safetensors");
    let e = SafetensorsFile::open(&missing).unwrap_err();
    assert!(matches!(e, LoadError::Io { .. }));
    assert!(e.to_string().contains("nope.safetensors"), "{e}");
    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let e = SafetensorsFile::open(&empty).unwrap_err();
    assert!(
        e.to_string().contains("empty.safetensors: file is 0 bytes"),
        "{e}"
    );
}

#[test]
fn write_errors_name_the_destination() {
    let dir = Scratch::new("write-errors");
    let path = dir.join("no-such-dir/m.safetensors");
    let e = save_safetensors(&path, &mixed_tensors()).unwrap_err();
    assert!(matches!(e, LoadError::Io { .. }));
    assert!(e.to_string().contains("no-such-dir/m.safetensors: "), "{e}");
    // Nothing is left behind in a directory that exists either.
    std::fs::create_dir(dir.join("d")).unwrap();
    save_safetensors(dir.join("d/m.safetensors"), &mixed_tensors()).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["m.safetensors"]);
}

#[test]
fn the_writer_rejects_inconsistent_tensors() {
    let bad = Tensor {
        shape: vec![3],
        data: TensorData::F32(vec![1.0]),
    };
    let e = serialize_safetensors(&BTreeMap::from([("w".to_string(), bad)]), &BTreeMap::new())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("tensor `w`: shape [3] needs 3 elements but the data has 1"),
        "{e}"
    );
    let ok = Tensor::f32(vec![1], vec![1.0]).unwrap();
    let e = serialize_safetensors(
        &BTreeMap::from([("__metadata__".to_string(), ok)]),
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("reserved"), "{e}");
}

/// Every tensor of a file that parsed must convert and fit its shape.
fn check_parsed(f: &SafetensorsFile) {
    for (name, info) in f.tensors() {
        let t = f.tensor(name).expect("a validated tensor converts");
        assert_eq!(t.shape, info.shape);
        assert_eq!(t.numel(), info.numel());
    }
}

proptest! {
    #![proptest_config(kiln_ir::testing::config(256))]

    /// Truncations and byte changes anywhere (most of them in the header)
    /// either still load, with every tensor readable, or give a typed error.
    #[test]
    fn corrupted_files_never_panic(
        cut in proptest::option::of(0usize..2000),
        edits in proptest::collection::vec((0usize..4096, any::<u8>(), any::<bool>()), 0..6),
    ) {
        let mut bytes = serialize_safetensors(&mixed_tensors(), &BTreeMap::new()).unwrap();
        let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for (pos, byte, in_header) in edits {
            let pos = if in_header { pos % header_end } else { pos % bytes.len() };
            bytes[pos] = byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.min(bytes.len()));
        }
        if let Ok(f) = parse(bytes) {
            check_parsed(&f);
        }
    }

    /// Digits in the header changed to other digits: offsets and shapes
    /// that stay numeric but go wrong in every way.
    #[test]
    fn corrupted_numbers_never_panic(edits in proptest::collection::vec((any::<usize>(), 0u8..10), 1..4)) {
        let mut bytes = serialize_safetensors(&mixed_tensors(), &BTreeMap::new()).unwrap();
        let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let digits: Vec<usize> = (8..header_end).filter(|&i| bytes[i].is_ascii_digit()).collect();
        for (k, d) in edits {
            bytes[digits[k % digits.len()]] = b'0' + d;
        }
        if let Ok(f) = parse(bytes) {
            check_parsed(&f);
        }
    }
}

#[test]
fn corrupted_files_on_disk_go_through_the_same_checks() {
    let dir = Scratch::new("corrupt-disk");
    let good = serialize_safetensors(&mixed_tensors(), &BTreeMap::new()).unwrap();
    for cut in [0, 4, 8, 20, good.len() / 2, good.len() - 1] {
        let path = dir.join("m.safetensors");
        std::fs::write(&path, &good[..cut]).unwrap();
        let e = Weights::open(&path).unwrap_err();
        assert!(e.to_string().contains("m.safetensors"), "{e}");
    }
}

/// The corruption tests above are not vacuous: the same kind of edits give
/// both files that still load and each family of typed errors.
#[test]
fn corruption_reaches_both_outcomes() {
    use rand::{Rng, SeedableRng};
    let good = serialize_safetensors(&mixed_tensors(), &BTreeMap::new()).unwrap();
    let header_end = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let digits: Vec<usize> = (8..header_end)
        .filter(|&i| good[i].is_ascii_digit())
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut ok, mut kinds) = (0, std::collections::BTreeSet::new());
    for _ in 0..400 {
        let mut b = good.clone();
        let i = digits[rng.random_range(0..digits.len())];
        b[i] = b'0' + rng.random_range(0..10u8);
        if rng.random_bool(0.2) {
            let j = rng.random_range(0..header_end);
            b[j] = rng.random();
        }
        if rng.random_bool(0.2) {
            b = good[..rng.random_range(header_end..good.len())].to_vec();
        }
        match parse(b) {
            Ok(f) => {
                check_parsed(&f);
                ok += 1;
            }
            Err(e) => {
                let d = format!("{:?}", e.problem);
                kinds.insert(d[..d.find([' ', '{', '(']).unwrap_or(d.len())].to_string());
            }
        }
    }
    assert!(ok > 0);
    for k in [
        "SizeMismatch",
        "HeaderNotJson",
        "OutOfBounds",
        "InvertedOffsets",
    ] {
        assert!(kinds.contains(k), "{k} not reached: {kinds:?}");
    }
}

/// Releasing a mapped tensor's pages loses nothing: its bytes read the same
/// afterwards, through the file and through `Weights`; a tensor smaller
/// than a page has no page of its own to release; an owned file keeps its
/// bytes.
#[test]
fn released_tensors_read_back_unchanged() {
    use kiln_ir::interp::ParamSource;
    let dir = Scratch::new("release");
    let path = dir.join("m.safetensors");
    let big: Vec<f32> = (0..1 << 20).map(|i| (i as f32).sin()).collect();
    let tensors = BTreeMap::from([
        (
            "big".to_string(),
            Tensor::f32(vec![1024, 1024], big).unwrap(),
        ),
        (
            "small".to_string(),
            Tensor::f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap(),
        ),
    ]);
    save_safetensors(&path, &tensors).unwrap();
    let f = SafetensorsFile::open(&path).unwrap();
    let before = f.bytes("big").unwrap().to_vec();
    assert!(f.release("big"), "a 4 MiB tensor spans whole pages");
    assert_eq!(f.bytes("big").unwrap(), before.as_slice());
    assert!(!f.release("small"));
    assert!(!f.release("absent"));
    let w = Weights::open(&path).unwrap();
    let lent = w.param_bytes("big", DType::F32).unwrap().bytes.to_vec();
    w.release("big");
    assert_eq!(w.get("big").unwrap(), &tensors["big"]);
    assert_eq!(
        w.param_bytes("big", DType::F32).unwrap().bytes.as_ref(),
        lent.as_slice()
    );
    let owned = parse(std::fs::read(&path).unwrap()).unwrap();
    assert!(!owned.release("big"));
    assert_eq!(owned.bytes("big").unwrap(), before.as_slice());
}
