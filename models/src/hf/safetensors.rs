//! A validating safetensors reader.
//!
//! The format: an 8-byte little-endian header length `N`, `N` bytes of a
//! UTF-8 JSON object mapping each tensor name to
//! `{"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}` (plus an
//! optional `"__metadata__"` object of strings), then the data section. The
//! offsets are relative to the data section.
//!
//! Everything is checked before any tensor is handed out: the header length
//! against the file size (and a 100 MB cap), UTF-8, JSON, duplicate names,
//! every entry's fields, the dtype, that the shape's byte size neither
//! overflows nor differs from the offsets, that every range lies inside the
//! data section, and that the ranges tile the data section exactly (sorted
//! by offset: no overlap, no gap, no trailing bytes — the layout every writer
//! produces and the reference implementation demands). After that, every
//! read is a slice of a range that was proven in bounds.
//!
//! Files are memory-mapped ([`SafetensorsFile::open`]); the map is read-only.
//! As with every mmap-based loader, a file truncated or rewritten by another
//! process while it is mapped is outside what the reader can guard against.

use super::dtype::{self, Dtype, KNOWN_UNSUPPORTED};
use super::error::{join, LoadError, SafetensorsError, SafetensorsProblem as P};
use super::json::{kind, OrderedEntries};
use kiln_ir::Tensor;
use memmap2::Mmap;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Largest header accepted (the reference implementation's limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The bytes of a file: memory-mapped, or owned (parsed from memory).
enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// One tensor's entry in a validated header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// `data_offsets` from the header (relative to the data section).
    pub data_offsets: (u64, u64),
    /// The same range as indices into the whole file.
    range: Range<usize>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        // Proven not to overflow when the header was validated.
        self.shape.iter().product()
    }
}

/// An open, fully validated safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    storage: Storage,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .field("bytes", &self.storage.bytes().len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Memory-maps and validates the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile, LoadError> {
        let path = path.as_ref();
        let io = |source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let storage = if len == 0 {
            // Mapping zero bytes fails on some systems; parsing reports "too short".
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and private, and its length is fixed
            // when it is made; every access below is a bounds-checked slice of
            // it. Soundness additionally needs the file not to be modified
            // while mapped, the standing contract of mmap-based model loaders
            // (documented in the module docs).
            Storage::Mapped(unsafe { Mmap::map(&file) }.map_err(io)?)
        };
        Ok(SafetensorsFile::parse(path.to_path_buf(), storage)?)
    }

    /// Validates an in-memory file; `path` only names it in messages.
    pub fn from_bytes(
        path: impl Into<PathBuf>,
        bytes: Vec<u8>,
    ) -> Result<SafetensorsFile, SafetensorsError> {
        SafetensorsFile::parse(path.into(), Storage::Owned(bytes))
    }

    fn parse(path: PathBuf, storage: Storage) -> Result<SafetensorsFile, SafetensorsError> {
        match parse_header(storage.bytes()) {
            Ok((tensors, metadata)) => Ok(SafetensorsFile {
                path,
                storage,
                tensors,
                metadata,
            }),
            Err(problem) => Err(SafetensorsError {
                file: path,
                problem: Box::new(problem),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `__metadata__` map (empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// The stored little-endian bytes of tensor `name`.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        let info = self.tensors.get(name)?;
        self.storage.bytes().get(info.range.clone())
    }

    /// Drops the memory pages that only tensor `name`'s bytes occupy from
    /// this process (a mapped file; an owned one keeps its bytes). The
    /// mapping stays: reading the tensor again faults the same bytes back
    /// in from the file. Returns whether any pages were released.
    pub fn release(&self, name: &str) -> bool {
        let (Storage::Mapped(m), Some(info)) = (&self.storage, self.tensors.get(name)) else {
            return false;
        };
        let page = page_size();
        // Whole pages inside the tensor's range: a page it shares with a
        // neighbour stays.
        let start = info.range.start.div_ceil(page) * page;
        let end = info.range.end / page * page;
        if end <= start {
            return false;
        }
        // SAFETY: the mapping is read-only and never written, so dropping
        // its pages loses nothing: the next access reads the same bytes from
        // the file. Borrowed slices stay valid (the addresses stay mapped).
        #[cfg(unix)]
        unsafe {
            m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
                .is_ok()
        }
        #[cfg(not(unix))]
        {
            let _ = m;
            false
        }
    }

    /// Tensor `name` converted to a Kiln tensor (see [`Dtype::loaded`]).
    pub fn tensor(&self, name: &str) -> Option<Tensor> {
        let info = self.tensors.get(name)?;
        dtype::to_tensor(info.dtype, &info.shape, self.bytes(name)?)
    }
}

type Parsed = (BTreeMap<String, TensorInfo>, BTreeMap<String, String>);

fn parse_header(bytes: &[u8]) -> Result<Parsed, P> {
    let len = bytes.len() as u64;
    let Some(len_field) = bytes.get(..8) else {
        return Err(P::TooShort { len });
    };
    let mut n = [0u8; 8];
    n.copy_from_slice(len_field);
    let header_len = u64::from_le_bytes(n);
    let available = len - 8;
    if header_len > available {
        return Err(P::HeaderPastEnd {
            header_len,
            available,
        });
    }
    if header_len > MAX_HEADER_LEN {
        return Err(P::HeaderTooLarge {
            header_len,
            limit: MAX_HEADER_LEN,
        });
    }
    // Both fit in the slice, hence in usize.
    let data_start = 8 + header_len as usize;
    let header = std::str::from_utf8(&bytes[8..data_start]).map_err(|e| P::HeaderNotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let entries = read_entries(header)?;
    let data_len = len - data_start as u64;

    let mut tensors = BTreeMap::new();
    let mut metadata = None;
    for (name, value) in entries {
        if tensors.contains_key(&name) || (name == "__metadata__" && metadata.is_some()) {
            return Err(P::DuplicateName { tensor: name });
        }
        if name == "__metadata__" {
            metadata = Some(read_metadata(value)?);
            continue;
        }
        let info = read_entry(&name, &value, data_start, data_len)?;
        tensors.insert(name, info);
    }
    check_layout(&tensors, data_len)?;
    Ok((tensors, metadata.unwrap_or_default()))
}

/// The header's top-level entries in file order, duplicates kept.
fn read_entries(header: &str) -> Result<Vec<(String, Value)>, P> {
    let mut de = serde_json::Deserializer::from_str(header);
    let classify = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => P::HeaderNotObject {
            message: e.to_string(),
        },
        _ => P::HeaderNotJson {
            message: e.to_string(),
        },
    };
    let entries = OrderedEntries::deserialize(&mut de).map_err(classify)?;
    // Trailing whitespace (the writer's padding) is fine; anything else is not.
    de.end().map_err(classify)?;
    Ok(entries.0)
}

fn read_metadata(value: Value) -> Result<BTreeMap<String, String>, P> {
    let Value::Object(map) = value else {
        return Err(P::BadMetadata {
            message: format!("found {}", kind(&value)),
        });
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(P::BadMetadata {
                message: format!("key `{k}` holds {}", kind(&other)),
            }),
        })
        .collect()
}

fn read_entry(
    name: &str,
    value: &Value,
    data_start: usize,
    data_len: u64,
) -> Result<TensorInfo, P> {
    let bad = |message: String| P::BadEntry {
        tensor: name.to_string(),
        message,
    };
    let Value::Object(obj) = value else {
        return Err(bad(format!("expected an object, found {}", kind(value))));
    };
    let field = |f: &str| obj.get(f).ok_or_else(|| bad(format!("missing `{f}`")));

    let dtype = match field("dtype")? {
        Value::String(s) => match Dtype::from_name(s) {
            Some(d) => d,
            None if KNOWN_UNSUPPORTED.contains(&s.as_str()) => {
                return Err(P::UnsupportedDtype {
                    tensor: name.to_string(),
                    dtype: s.clone(),
                    supported: join(Dtype::ALL),
                })
            }
            None => {
                return Err(P::UnknownDtype {
                    tensor: name.to_string(),
                    dtype: s.clone(),
                    known: join(
                        Dtype::ALL
                            .iter()
                            .map(|d| d.name())
                            .chain(KNOWN_UNSUPPORTED.iter().copied()),
                    ),
                })
            }
        },
        other => {
            return Err(bad(format!(
                "`dtype` must be a string, found {}",
                kind(other)
            )))
        }
    };

    let uints = |f: &str| -> Result<Vec<u64>, P> {
        match field(f)? {
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_u64().ok_or_else(|| {
                        bad(format!("`{f}` must hold non-negative integers, found {v}"))
                    })
                })
                .collect(),
            other => Err(bad(format!(
                "`{f}` must be an array, found {}",
                kind(other)
            ))),
        }
    };
    let raw_shape = uints("shape")?;
    let offsets = uints("data_offsets")?;
    let &[begin, end] = offsets.as_slice() else {
        return Err(bad(format!(
            "`data_offsets` must hold exactly 2 integers, found {}",
            offsets.len()
        )));
    };

    let overflow = || P::ShapeOverflow {
        tensor: name.to_string(),
        dtype: dtype.to_string(),
        shape: raw_shape.clone(),
    };
    let mut shape = Vec::with_capacity(raw_shape.len());
    let mut nbytes = dtype.size_bytes();
    for &d in &raw_shape {
        let d = usize::try_from(d).map_err(|_| overflow())?;
        nbytes = nbytes.checked_mul(d).ok_or_else(overflow)?;
        shape.push(d);
    }
    if begin > end {
        return Err(P::InvertedOffsets {
            tensor: name.to_string(),
            begin,
            end,
        });
    }
    if end - begin != nbytes as u64 {
        return Err(P::SizeMismatch {
            tensor: name.to_string(),
            dtype: dtype.to_string(),
            shape,
            begin,
            end,
            expected: nbytes as u64,
            found: end - begin,
        });
    }
    if end > data_len {
        return Err(P::OutOfBounds {
            tensor: name.to_string(),
            begin,
            end,
            data_len,
        });
    }
    // In bounds of the file, so these fit in usize.
    let range = data_start + begin as usize..data_start + end as usize;
    Ok(TensorInfo {
        dtype,
        shape,
        data_offsets: (begin, end),
        range,
    })
}

/// The ranges, sorted by offset, must tile `[0, data_len)` exactly.
fn check_layout(tensors: &BTreeMap<String, TensorInfo>, data_len: u64) -> Result<(), P> {
    let mut order: Vec<(&String, &TensorInfo)> = tensors.iter().collect();
    order.sort_by_key(|(name, t)| (t.data_offsets, *name));
    let mut cursor = 0u64;
    let mut last: Option<(&String, (u64, u64))> = None;
    for (name, t) in order {
        let (begin, end) = t.data_offsets;
        // `begin < cursor` needs a previous tensor (the cursor starts at 0).
        if let Some((other, (other_begin, other_end))) = last.filter(|_| begin < cursor) {
            return Err(P::Overlap {
                tensor: name.clone(),
                begin,
                end,
                other: other.clone(),
                other_begin,
                other_end,
            });
        }
        if begin > cursor {
            return Err(P::Gap {
                tensor: name.clone(),
                begin,
                expected: cursor,
            });
        }
        cursor = end;
        last = Some((name, t.data_offsets));
    }
    if cursor != data_len {
        return Err(P::TrailingBytes {
            trailing: data_len - cursor,
            data_len,
            covered: cursor,
        });
    }
    Ok(())
}

/// The memory page size (4 KiB where the system does not say).
fn page_size() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 {
            return n as usize;
        }
    }
    4096
}
