//! Hugging Face tokenizers (`tokenizer.json`: BPE, byte-level BPE,
//! WordPiece, Unigram, WordLevel), wrapped with typed errors, the model's
//! BOS/EOS ids and a streaming decoder.

use super::error::TokenizerError;
use super::special::{self, SpecialIds};
use std::path::{Path, PathBuf};

/// A loaded tokenizer; see the module docs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    bos: Option<u32>,
    eos: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` at `path`; BOS/EOS come from the file itself:
    /// its post-processor template, else conventionally named special tokens.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TokenizerError::NotFound {
                path: path.to_path_buf(),
            },
            _ => TokenizerError::Malformed {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
        })?;
        Tokenizer::from_bytes(path, &bytes)
    }

    /// Parses tokenizer JSON; `path` names it in messages.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: &[u8]) -> Result<Tokenizer, TokenizerError> {
        let path = path.into();
        let malformed = |message: String| TokenizerError::Malformed {
            path: path.clone(),
            message,
        };
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        let inner =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| malformed(e.to_string()))?;
        let added = inner.get_added_vocabulary();
        let ids = special::from_tokenizer_json(&json, &|t| inner.token_to_id(t), &|t| {
            added.is_special_token(t)
        });
        Ok(Tokenizer {
            bos: ids.bos,
            eos: ids.eos,
            inner,
            path,
        })
    }

    /// Loads `dir/tokenizer.json`, taking BOS/EOS from the directory's
    /// `generation_config.json`, `config.json` and `tokenizer_config.json`
    /// first (in that order), then from the tokenizer itself.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let dir = dir.as_ref();
        let mut tok = Tokenizer::from_file(dir.join("tokenizer.json"))?;
        let mut ids = SpecialIds::default();
        for file in ["generation_config.json", "config.json"] {
            let path = dir.join(file);
            if let Some(json) = special::read_json(&path)? {
                ids = ids.or(special::from_id_fields(&path, &json)?);
            }
        }
        let path = dir.join("tokenizer_config.json");
        if let Some(json) = special::read_json(&path)? {
            let lookup = |t: &str| tok.inner.token_to_id(t);
            ids = ids.or(special::from_token_fields(&path, &json, &lookup)?);
        }
        let ids = ids.or(SpecialIds {
            bos: tok.bos,
            eos: std::mem::take(&mut tok.eos),
        });
        tok.bos = ids.bos;
        tok.eos = ids.eos;
        Ok(tok)
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos
    }

    /// The first EOS id.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos.first().copied()
    }

    /// Every id that ends generation.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos
    }

    pub fn set_bos_token_id(&mut self, id: Option<u32>) {
        self.bos = id;
    }

    pub fn set_eos_token_ids(&mut self, ids: Vec<u32>) {
        self.eos = ids;
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.encode_with_special(text, false)
    }

    /// Token ids of `text`; with `add_special`, the post-processor's special
    /// tokens (e.g. BOS) are added as the model's tokenizer would.
    pub fn encode_with_special(
        &self,
        text: &str,
        add_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode {
                message: e.to_string(),
            })
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.decode_with(ids, false)
    }

    /// The text of `ids`; `skip_special` drops special tokens. An id outside
    /// the vocabulary is an error (the underlying library would drop it).
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        if let Some(&id) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(TokenizerError::UnknownTokenId {
                id,
                vocab_size: self.vocab_size(),
            });
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Decode {
                message: e.to_string(),
            })
    }

    /// A streaming decoder (special tokens kept).
    pub fn stream(&self) -> StreamDecoder<'_> {
        self.stream_with(false)
    }

    /// A streaming decoder; `skip_special` drops special tokens.
    pub fn stream_with(&self, skip_special: bool) -> StreamDecoder<'_> {
        StreamDecoder {
            tok: self,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
            skip_special,
        }
    }
}

/// Decodes tokens as they arrive, yielding only complete new text.
///
/// Decoding token by token goes wrong two ways: a multi-byte character split
/// across byte-level tokens decodes to U+FFFD until its last byte arrives,
/// and decoders that strip a leading space (SentencePiece's `▁`) would strip
/// it from every token. So the decoder re-decodes a window starting one
/// emitted step back (`ids[prefix..]`), emits what extends the window's
/// already-emitted text (`ids[prefix..read]`), and holds back text that
/// ends in U+FFFD. The concatenation of everything emitted (plus
/// [`StreamDecoder::finish`]) equals decoding all ids at once, for
/// tokenizers whose decoding of a window is a suffix-stable prefix of the
/// decoding of a longer window (byte-level BPE, SentencePiece, WordPiece).
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    /// Start of the context window.
    prefix: usize,
    /// End of the ids whose text has been emitted.
    read: usize,
    skip_special: bool,
}

impl StreamDecoder<'_> {
    /// Adds a token; returns the new text it completes, if any.
    pub fn step(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        if self.tok.inner.id_to_token(id).is_none() {
            return Err(TokenizerError::UnknownTokenId {
                id,
                vocab_size: self.tok.vocab_size(),
            });
        }
        self.ids.push(id);
        let emitted = self
            .tok
            .decode_with(&self.ids[self.prefix..self.read], self.skip_special)?;
        let window = self
            .tok
            .decode_with(&self.ids[self.prefix..], self.skip_special)?;
        if window.len() <= emitted.len() || window.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let new = new_suffix(&emitted, &window);
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(Some(new.to_string()).filter(|s| !s.is_empty()))
    }

    /// Text still held back (e.g. an incomplete character at the end of the
    /// stream, rendered as U+FFFD); the decoder then starts a fresh window.
    pub fn finish(&mut self) -> Result<Option<String>, TokenizerError> {
        if self.read == self.ids.len() {
            return Ok(None);
        }
        let emitted = self
            .tok
            .decode_with(&self.ids[self.prefix..self.read], self.skip_special)?;
        let window = self
            .tok
            .decode_with(&self.ids[self.prefix..], self.skip_special)?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        let new = new_suffix(&emitted, &window);
        Ok(Some(new.to_string()).filter(|s| !s.is_empty()))
    }

    /// Every id stepped so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

/// The part of `window` after the already-emitted text. If `window` does not
/// extend `emitted` (a decoder that rewrote earlier text), the part after
/// their longest common prefix.
fn new_suffix<'w>(emitted: &str, window: &'w str) -> &'w str {
    if let Some(rest) = window.strip_prefix(emitted) {
        return rest;
    }
    let common = emitted
        .char_indices()
        .zip(window.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(emitted.len().min(window.len()));
    window.get(common..).unwrap_or("")
}
