//! The weight store: sharded checkpoints and their errors, the check
//! against a graph's parameters, the interpreter reading mapped weights.

mod hf_common;

use hf_common::{f32_tensor, Scratch};
use kiln_ir::{shape, DType, Tensor, TensorData, TensorType};
use kiln_models::hf::{self, save_safetensors, IndexProblem, LoadError};
use kiln_models::tiny_decoder::{self, TinyDecoderConfig};
use kiln_models::weights::Weights;
use std::collections::BTreeMap;
use std::path::Path;

fn tensors(names: &[(&str, &[usize])], seed: u64) -> BTreeMap<String, Tensor> {
    names
        .iter()
        .enumerate()
        .map(|(i, (n, s))| (n.to_string(), f32_tensor(seed + i as u64, s)))
        .collect()
}

/// Two shards and an index over them.
fn write_sharded(dir: &Path) -> BTreeMap<String, Tensor> {
    let a = tensors(&[("embed", &[4, 3]), ("l0.w", &[3, 3])], 10);
    let b = tensors(&[("l1.w", &[3, 3]), ("norm", &[3])], 20);
    save_safetensors(dir.join("model-00001-of-00002.safetensors"), &a).unwrap();
    save_safetensors(dir.join("model-00002-of-00002.safetensors"), &b).unwrap();
    let mut map = serde_json::Map::new();
    for n in a.keys() {
        map.insert(n.clone(), "model-00001-of-00002.safetensors".into());
    }
    for n in b.keys() {
        map.insert(n.clone(), "model-00002-of-00002.safetensors".into());
    }
    let index = serde_json::json!({"metadata": {"total_size": 120}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    a.into_iter().chain(b).collect()
}

fn index_problem(e: LoadError) -> IndexProblem {
    match e {
        LoadError::Index(e) => e.problem,
        other => panic!("expected an index error, got {other}"),
    }
}

#[test]
fn a_sharded_checkpoint_loads_every_shard() {
    let dir = Scratch::new("sharded");
    let all = write_sharded(dir.path());
    let w = Weights::open_sharded(dir.join("model.safetensors.index.json")).unwrap();
    assert_eq!(
        w.names().collect::<Vec<_>>(),
        ["embed", "l0.w", "l1.w", "norm"]
    );
    for (n, t) in &all {
        assert_eq!(w.get(n).unwrap(), t, "{n}");
    }
    assert!(w
        .file("norm")
        .unwrap()
        .ends_with("model-00002-of-00002.safetensors"));
    // `load_weights` prefers the index.
    let w = hf::load_weights(dir.path()).unwrap();
    assert_eq!(w.len(), 4);
}

#[test]
fn sharded_errors() {
    let dir = Scratch::new("sharded-errors");
    write_sharded(dir.path());
    let index = dir.join("model.safetensors.index.json");
    let write_index = |v: serde_json::Value| std::fs::write(&index, v.to_string()).unwrap();

    // A tensor listed in a shard that does not hold it.
    write_index(serde_json::json!({"weight_map": {
        "embed": "model-00001-of-00002.safetensors",
        "ghost": "model-00002-of-00002.safetensors"}}));
    let e = Weights::open_sharded(&index).unwrap_err();
    assert!(e.to_string().contains("tensor `ghost` is indexed in shard `model-00002-of-00002.safetensors` but that shard does not contain it"), "{e}");

    // A missing shard file.
    write_index(
        serde_json::json!({"weight_map": {"embed": "model-00001-of-00002.safetensors", "x": "model-00003-of-00003.safetensors", "y": "model-00003-of-00003.safetensors"}}),
    );
    let e = Weights::open_sharded(&index).unwrap_err();
    assert!(e.to_string().contains("shard `model-00003-of-00003.safetensors` (holding 2 indexed tensors, e.g. `x`) does not exist"), "{e}");

    // Path traversal, in every spelling, is rejected before any file is opened.
    for shard in [
        "../model.safetensors",
        "/etc/passwd",
        "a/../../b.safetensors",
        "..\\x.safetensors",
        "C:x.safetensors",
        "",
        "\\\\server\\share",
    ] {
        write_index(serde_json::json!({"weight_map": {"embed": shard}}));
        let e = Weights::open_sharded(&index).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("model.safetensors.index.json")
                && msg.contains("not a plain relative path"),
            "{shard}: {msg}"
        );
        assert!(
            matches!(index_problem(e), IndexProblem::UnsafeShardName { .. }),
            "{shard}"
        );
    }

    // Malformed indexes.
    let cases: &[(&str, &str)] = &[
        ("{", "not valid JSON"),
        ("[]", "malformed index"),
        (r#"{"metadata": {}}"#, "missing `weight_map`"),
        (r#"{"weight_map": {}}"#, "lists no tensors"),
        (
            r#"{"weight_map": {"embed": 3}}"#,
            "must name a shard file, found a number",
        ),
        (
            r#"{"weight_map": {"embed": "a.safetensors", "embed": "b.safetensors"}}"#,
            "`embed` is listed twice",
        ),
    ];
    for (text, words) in cases {
        std::fs::write(&index, text).unwrap();
        let e = Weights::open_sharded(&index).unwrap_err();
        assert!(e.to_string().contains(words), "{text}: {e}");
    }

    // The same tensor in two shards.
    save_safetensors(
        dir.join("model-00002-of-00002.safetensors"),
        &tensors(&[("embed", &[4, 3])], 1),
    )
    .unwrap();
    write_index(
        serde_json::json!({"weight_map": {"l0.w": "model-00001-of-00002.safetensors", "embed": "model-00002-of-00002.safetensors"}}),
    );
    let e = Weights::open_sharded(&index).unwrap_err();
    assert!(matches!(e, LoadError::DuplicateTensor { .. }));
    assert!(
        e.to_string().contains("tensor `embed` appears in both"),
        "{e}"
    );

    // A corrupt shard reports the shard's own path.
    std::fs::write(
        dir.join("model-00002-of-00002.safetensors"),
        b"\x01\0\0\0\0\0\0\0{",
    )
    .unwrap();
    let e = Weights::open_sharded(&index).unwrap_err();
    assert!(
        e.to_string()
            .contains("model-00002-of-00002.safetensors: header is not valid JSON"),
        "{e}"
    );
}

#[test]
fn plain_relative_shard_names() {
    use kiln_models::hf::index::is_plain_relative;
    for ok in [
        "model.safetensors",
        "sub/model-1.safetensors",
        "./m.safetensors",
        "a..b.safetensors",
    ] {
        assert!(is_plain_relative(ok), "{ok}");
    }
    for bad in [
        "..",
        "../m",
        "/m",
        "sub/../../m",
        "\\m",
        "C:\\m",
        ".",
        "a\0b",
    ] {
        assert!(!is_plain_relative(bad), "{bad}");
    }
}

fn ty(dims: &[usize]) -> TensorType {
    TensorType::new(
        DType::F32,
        dims.iter().map(|&d| kiln_ir::Dim::from(d as i64)).collect(),
    )
}

#[test]
fn check_against_reports_every_problem() {
    let q = "model.layers.0.self_attn.q_proj.weight";
    let mut w = Weights::from_tensors(tensors(
        &[
            (q, &[64, 32]),
            ("norm", &[64]),
            ("extra.a", &[1]),
            ("extra.b", &[2]),
        ],
        0,
    ));
    w.insert("ids", Tensor::i64(vec![2], vec![1, 2]).unwrap());
    let params = BTreeMap::from([
        (q.to_string(), ty(&[64, 64])),
        ("norm".to_string(), ty(&[64])),
        ("ids".to_string(), ty(&[2])),
        ("missing.one".to_string(), ty(&[3])),
        ("missing.two".to_string(), ty(&[4, 4])),
    ]);
    let e = w.check_against(&params).unwrap_err();
    let msg = e.to_string();
    for line in [
        "2 missing, 2 with the wrong shape or dtype",
        "missing.one: missing (expected f32[3])",
        "missing.two: missing (expected f32[4,4])",
        "model.layers.0.self_attn.q_proj.weight: expected [64, 64], found [64, 32]",
        "ids: expected dtype f32, found i64 (stored as I64)",
        "unused tensors in the weights: extra.a, extra.b",
    ] {
        assert!(msg.contains(line), "`{line}` not in:\n{msg}");
    }
    let LoadError::Mismatch(m) = e else { panic!() };
    assert_eq!(m.missing.len(), 2);
    assert_eq!(m.wrong.len(), 2);
    assert_eq!(m.unused, ["extra.a", "extra.b"]);

    // Without the problems: OK, with the unused tensors as a warning.
    let params = BTreeMap::from([("norm".to_string(), ty(&[64]))]);
    let report = w.check_against(&params).unwrap();
    assert_eq!(report.unused, ["extra.a", "extra.b", "ids", q]);
}

#[test]
fn symbolic_parameter_dims_bind_consistently() {
    let w = Weights::from_tensors(tensors(
        &[("embed", &[10, 4]), ("head", &[4, 10]), ("bad", &[4, 11])],
        0,
    ));
    let sym = |a: kiln_ir::Dim, b: kiln_ir::Dim| TensorType::new(DType::F32, vec![a, b]);
    let ok = BTreeMap::from([
        ("embed".to_string(), sym("vocab".into(), 4.into())),
        ("head".to_string(), sym(4.into(), "vocab".into())),
    ]);
    w.check_against(&ok).unwrap();
    let mut bad = ok.clone();
    bad.insert("bad".to_string(), sym(4.into(), "vocab".into()));
    let e = w.check_against(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bad: expected [4, vocab], found [4, 11] (`vocab` was bound to 10 by `embed`)"),
        "{e}"
    );
    // A rank mismatch is a shape mismatch too.
    let rank = BTreeMap::from([("embed".to_string(), TensorType::new(DType::F32, shape![40]))]);
    let e = w.check_against(&rank).unwrap_err().to_string();
    assert!(e.contains("embed: expected [40], found [10, 4]"), "{e}");
}

#[test]
fn tensors_convert_once_and_aliases_share_them() {
    let dir = Scratch::new("lazy");
    let path = dir.join("model.safetensors");
    let b: Vec<half::bf16> = [1.5f32, -2.0, 0.25]
        .into_iter()
        .map(half::bf16::from_f32)
        .collect();
    let t = BTreeMap::from([(
        "embed".to_string(),
        Tensor::new(vec![3], TensorData::BF16(b)).unwrap(),
    )]);
    save_safetensors(&path, &t).unwrap();
    let mut w = Weights::open(&path).unwrap();
    assert_eq!(w.dtype("embed"), Some(hf::Dtype::BF16));
    assert_eq!(w.loaded_dtype("embed"), Some(DType::F32));
    w.alias("lm_head", "embed").unwrap();
    assert!(w.contains("lm_head"));
    let first = w.get("embed").unwrap();
    assert!(std::ptr::eq(first, w.get("embed").unwrap()));
    assert!(std::ptr::eq(first, w.get("lm_head").unwrap()));
    assert_eq!(first.as_f32().unwrap(), &[1.5, -2.0, 0.25]);
    assert!(matches!(
        w.alias("x", "nope"),
        Err(LoadError::UnknownTensor(_))
    ));
    assert!(matches!(w.get("nope"), Err(LoadError::UnknownTensor(_))));
    w.insert("other", Tensor::f32(vec![1], vec![0.0]).unwrap());
    let e = w.alias("other", "embed").unwrap_err().to_string();
    assert!(
        e.contains("tensor `other`: cannot alias it to `embed`: it names a stored tensor"),
        "{e}"
    );
    // Concurrent first accesses agree.
    let w = Weights::open(&path).unwrap();
    let seen: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| w.get("embed").unwrap() as *const Tensor as usize))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(seen.iter().all(|&p| p == seen[0]));
}

#[test]
fn the_interpreter_runs_on_mapped_weights() {
    // The tiny decoder's weights stored as bf16 give the same logits as the
    // in-memory weights rounded to bf16.
    let cfg = TinyDecoderConfig {
        layers: 1,
        max_positions: 16,
        ..TinyDecoderConfig::default()
    };
    let graph = tiny_decoder::build(&cfg).unwrap();
    let weights = tiny_decoder::random_weights(&cfg, 3);
    let as_bf16: BTreeMap<String, Tensor> = weights
        .iter()
        .map(|(n, t)| {
            let v = t
                .as_f32()
                .unwrap()
                .iter()
                .map(|&x| half::bf16::from_f32(x))
                .collect();
            (
                n.clone(),
                Tensor::new(t.shape.clone(), TensorData::BF16(v)).unwrap(),
            )
        })
        .collect();
    let rounded: BTreeMap<String, Tensor> = as_bf16
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                Tensor::f32(t.shape.clone(), t.to_f32_vec()).unwrap(),
            )
        })
        .collect();
    let dir = Scratch::new("interp");
    let path = dir.join("model.safetensors");
    save_safetensors(&path, &as_bf16).unwrap();
    let mapped = Weights::open(&path).unwrap();
    assert!(mapped
        .check_against(&graph.params())
        .unwrap()
        .unused
        .is_empty());
    let inputs = BTreeMap::from([(
        "tokens".to_string(),
        Tensor::i32(vec![4], vec![1, 200, 3, 77]).unwrap(),
    )]);
    let got = kiln_ir::interp::eval(&graph, &inputs, &mapped).unwrap();
    let want = kiln_ir::interp::eval(&graph, &inputs, &rounded).unwrap();
    assert_eq!(got, want);
    // Stored as f32, the mapped weights are the original ones.
    save_safetensors(&path, &weights).unwrap();
    let mapped = Weights::open(&path).unwrap();
    assert_eq!(mapped.to_tensors().unwrap(), weights);
}

#[test]
fn weights_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Weights>();
    check::<hf::HfModel>();
}
