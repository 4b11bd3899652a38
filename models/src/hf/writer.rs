//! A safetensors writer (of owned or borrowed tensors): tensors in their stored dtype (`F64` storage as
//! `F64`), sorted by name, laid out back to back, the header padded with
//! spaces to a multiple of 8 bytes so the data section starts aligned.

use super::dtype::{self, Dtype};
use super::error::LoadError;
use kiln_ir::Tensor;
use serde_json::{json, Map, Value};
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes `tensors` to `path` as safetensors.
pub fn save_safetensors(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, impl Borrow<Tensor>>,
) -> Result<(), LoadError> {
    save_safetensors_with_metadata(path, tensors, &BTreeMap::new())
}

/// Writes `tensors` and a `__metadata__` map to `path`. The file appears
/// whole or not at all: it is written next to `path` and renamed into place.
pub fn save_safetensors_with_metadata(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, impl Borrow<Tensor>>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), LoadError> {
    let path = path.as_ref();
    let header = header_bytes(tensors, metadata)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| LoadError::Io { path: p, source }
    };
    // Errors name the destination, not the temporary file.
    let write = || -> Result<(), LoadError> {
        let mut w = BufWriter::new(File::create(&tmp).map_err(io(path))?);
        write_to(&mut w, &header, tensors).map_err(io(path))?;
        let file = w.into_inner().map_err(|e| io(path)(e.into_error()))?;
        file.sync_all().map_err(io(path))
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path)(e)
    })
}

/// The whole file in memory.
pub fn serialize_safetensors(
    tensors: &BTreeMap<String, impl Borrow<Tensor>>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, LoadError> {
    let header = header_bytes(tensors, metadata)?;
    let mut out = Vec::new();
    write_to(&mut out, &header, tensors).map_err(|source| LoadError::Io {
        path: "<memory>".into(),
        source,
    })?;
    Ok(out)
}

fn write_to(
    w: &mut impl Write,
    header: &[u8],
    tensors: &BTreeMap<String, impl Borrow<Tensor>>,
) -> std::io::Result<()> {
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(header)?;
    for t in tensors.values() {
        w.write_all(&dtype::to_bytes(&t.borrow().data))?;
    }
    w.flush()
}

/// The JSON header, padded. Checks every tensor's data against its shape.
fn header_bytes(
    tensors: &BTreeMap<String, impl Borrow<Tensor>>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, LoadError> {
    let mut map = Map::new();
    if !metadata.is_empty() {
        map.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0u64;
    for (name, t) in tensors {
        let t: &Tensor = t.borrow();
        let bad = |message: String| LoadError::BadTensor {
            tensor: name.clone(),
            message,
        };
        if name == "__metadata__" {
            return Err(bad("the name is reserved for the metadata entry".into()));
        }
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {:?} overflows", t.shape)))?;
        if numel != t.data.len() {
            return Err(bad(format!(
                "shape {:?} needs {numel} elements but the data has {}",
                t.shape,
                t.data.len()
            )));
        }
        let dtype = Dtype::of_data(&t.data);
        let nbytes = (numel * dtype.size_bytes()) as u64;
        map.insert(
            name.clone(),
            json!({
                "dtype": dtype.name(),
                "shape": t.shape,
                "data_offsets": [offset, offset + nbytes],
            }),
        );
        offset += nbytes;
    }
    let mut header = serde_json::to_vec(&Value::Object(map)).map_err(|e| LoadError::BadTensor {
        tensor: "<header>".into(),
        message: e.to_string(),
    })?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    Ok(header)
}
