//! Where the BOS and EOS token ids come from, most authoritative first:
//!
//! 1. `generation_config.json`: `bos_token_id` / `eos_token_id` (an id or a
//!    list of ids — Llama 3 stops on several);
//! 2. `config.json`: the same fields;
//! 3. `tokenizer_config.json`: `bos_token` / `eos_token` (a string or
//!    `{"content": ...}`), looked up in the vocabulary;
//! 4. `tokenizer.json`: the post-processor's template (a special token
//!    before the sequence is BOS, after it EOS; BERT/RoBERTa processors'
//!    `cls`/`sep`);
//! 5. a special added token with a conventional name (`</s>`,
//!    `<|endoftext|>`, `<|end_of_text|>`, `<eos>`; `<s>`,
//!    `<|begin_of_text|>`, `<bos>`).
//!
//! A field that is present but malformed is an error, never skipped.

use super::error::TokenizerError;
use super::json::kind;
use serde_json::Value;
use std::path::Path;

/// Special ids found so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
}

impl SpecialIds {
    /// Fills what is still unknown from `other`.
    pub fn or(mut self, other: SpecialIds) -> SpecialIds {
        if self.bos.is_none() {
            self.bos = other.bos;
        }
        if self.eos.is_empty() {
            self.eos = other.eos;
        }
        self
    }
}

const EOS_NAMES: &[&str] = &["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"];
const BOS_NAMES: &[&str] = &["<s>", "<|begin_of_text|>", "<bos>"];

/// Reads a JSON file if it exists.
pub(crate) fn read_json(path: &Path) -> Result<Option<Value>, TokenizerError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(TokenizerError::NotJson {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| TokenizerError::NotJson {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// `bos_token_id` / `eos_token_id` of a generation or model config.
pub(crate) fn from_id_fields(path: &Path, config: &Value) -> Result<SpecialIds, TokenizerError> {
    let ids = |field: &str| -> Result<Vec<u32>, TokenizerError> {
        let bad = |message: String| TokenizerError::BadSpecialToken {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        let one = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad(format!("expected a token id, found {v}")))
        };
        match config.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    };
    Ok(SpecialIds {
        bos: ids("bos_token_id")?.first().copied(),
        eos: ids("eos_token_id")?,
    })
}

/// `bos_token` / `eos_token` of `tokenizer_config.json`, by vocabulary lookup.
pub(crate) fn from_token_fields(
    path: &Path,
    config: &Value,
    lookup: &dyn Fn(&str) -> Option<u32>,
) -> Result<SpecialIds, TokenizerError> {
    let id = |field: &str| -> Result<Option<u32>, TokenizerError> {
        let bad = |message: String| TokenizerError::BadSpecialToken {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        let content = match config.get(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Object(o)) => match o.get("content") {
                Some(Value::String(s)) => s.as_str(),
                _ => return Err(bad("an object form needs a string `content`".into())),
            },
            Some(v) => return Err(bad(format!("expected a token string, found {}", kind(v)))),
        };
        lookup(content)
            .map(Some)
            .ok_or_else(|| bad(format!("token `{content}` is not in the vocabulary")))
    };
    Ok(SpecialIds {
        bos: id("bos_token")?,
        eos: id("eos_token")?.into_iter().collect(),
    })
}

/// From `tokenizer.json`'s post-processor, then from conventional names.
pub(crate) fn from_tokenizer_json(
    json: &Value,
    lookup: &dyn Fn(&str) -> Option<u32>,
    is_special: &dyn Fn(&str) -> bool,
) -> SpecialIds {
    let mut found = SpecialIds::default();
    if let Some(pp) = json.get("post_processor") {
        from_processor(pp, &mut found);
    }
    let named = |names: &[&str]| {
        names
            .iter()
            .filter(|n| is_special(n))
            .find_map(|n| lookup(n))
    };
    found.or(SpecialIds {
        bos: named(BOS_NAMES),
        eos: named(EOS_NAMES).into_iter().collect(),
    })
}

fn from_processor(pp: &Value, found: &mut SpecialIds) {
    match pp.get("type").and_then(Value::as_str) {
        Some("Sequence") => {
            for p in pp
                .get("processors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                from_processor(p, found);
            }
        }
        Some("TemplateProcessing") => {
            let Some(single) = pp.get("single").and_then(Value::as_array) else {
                return;
            };
            let id_of = |piece: &Value| -> Option<u32> {
                let name = piece.get("SpecialToken")?.get("id")?.as_str()?;
                let ids = pp
                    .get("special_tokens")?
                    .get(name)?
                    .get("ids")?
                    .as_array()?;
                u32::try_from(ids.first()?.as_u64()?).ok()
            };
            let seq = single.iter().position(|p| p.get("Sequence").is_some());
            if let Some(seq) = seq {
                if found.bos.is_none() {
                    found.bos = single[..seq].iter().find_map(id_of);
                }
                if found.eos.is_empty() {
                    found.eos = single[seq + 1..]
                        .iter()
                        .rev()
                        .find_map(id_of)
                        .into_iter()
                        .collect();
                }
            }
        }
        Some("BertProcessing" | "RobertaProcessing") => {
            let id_of = |field: &str| -> Option<u32> {
                u32::try_from(pp.get(field)?.as_array()?.get(1)?.as_u64()?).ok()
            };
            if found.bos.is_none() {
                found.bos = id_of("cls");
            }
            if found.eos.is_empty() {
                found.eos = id_of("sep").into_iter().collect();
            }
        }
        _ => {}
    }
}
