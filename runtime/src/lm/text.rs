//! Generated tokens as text, as they stream: a Hugging Face tokenizer's
//! streaming decoder, bytes (Kiln's byte-vocabulary models) printed by whole
//! characters, or the ids themselves.

use crate::generate::{generate, GenerateError, GenerateOptions, GenerationStats, LanguageModel};
use kiln_models::hf::{StreamDecoder, Tokenizer, TokenizerError};
use std::io::Write;

/// Turns tokens into text one at a time; what [`TextStream::push`] and
/// [`TextStream::finish`] return, concatenated, is the text of every token.
pub enum TextStream<'a> {
    /// A Hugging Face tokenizer's streaming decoder (special tokens kept).
    Hf(StreamDecoder<'a>),
    /// Each token is one byte; bytes are held until they form whole UTF-8
    /// characters.
    Bytes(Vec<u8>),
    /// Each token printed as its id and a space.
    Ids,
}

impl<'a> TextStream<'a> {
    pub fn hf(tokenizer: &'a Tokenizer) -> TextStream<'a> {
        TextStream::Hf(tokenizer.stream())
    }

    pub fn bytes() -> TextStream<'static> {
        TextStream::Bytes(Vec::new())
    }

    /// Adds a token; returns the new text it completes, if any.
    pub fn push(&mut self, token: u32) -> Result<Option<String>, TokenizerError> {
        match self {
            TextStream::Hf(d) => d.step(token),
            TextStream::Ids => Ok(Some(format!("{token} "))),
            TextStream::Bytes(held) => {
                held.push(token as u8);
                Ok(take_complete(held))
            }
        }
    }

    /// Text still held back (an incomplete character at the end).
    pub fn finish(&mut self) -> Result<Option<String>, TokenizerError> {
        match self {
            TextStream::Hf(d) => d.finish(),
            TextStream::Ids => Ok(None),
            TextStream::Bytes(held) => {
                let rest = String::from_utf8_lossy(held).into_owned();
                held.clear();
                Ok(Some(rest).filter(|s| !s.is_empty()))
            }
        }
    }
}

/// The whole characters at the front of `held` (invalid bytes as U+FFFD);
/// an incomplete character at the end stays held.
fn take_complete(held: &mut Vec<u8>) -> Option<String> {
    let mut text = String::new();
    let mut start = 0;
    loop {
        match std::str::from_utf8(&held[start..]) {
            Ok(s) => {
                text.push_str(s);
                start = held.len();
                break;
            }
            Err(e) => {
                let valid = start + e.valid_up_to();
                text.push_str(std::str::from_utf8(&held[start..valid]).expect("checked valid"));
                match e.error_len() {
                    Some(n) => {
                        text.push('\u{FFFD}');
                        start = valid + n;
                    }
                    None => {
                        start = valid;
                        break;
                    }
                }
            }
        }
    }
    held.drain(..start);
    Some(text).filter(|t| !t.is_empty())
}

/// Why a streamed generation stopped early.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error("decoding the output: {0}")]
    Text(#[from] TokenizerError),
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
}

/// Generates after `prompt` (see [`generate`]) and writes each token's text
/// to `out` as soon as it is complete, flushing, then a newline.
pub fn stream_generation(
    model: &mut dyn LanguageModel,
    prompt: &[u32],
    opts: &GenerateOptions,
    text: &mut TextStream<'_>,
    out: &mut dyn Write,
) -> Result<(Vec<u32>, GenerationStats), StreamError> {
    let mut failed: Option<StreamError> = None;
    let mut on_token = |token: u32| {
        let r = (|| -> Result<(), StreamError> {
            if let Some(s) = text.push(token)? {
                out.write_all(s.as_bytes())?;
                out.flush()?;
            }
            Ok(())
        })();
        r.map_err(|e| failed = Some(e)).is_ok()
    };
    let result = generate(model, prompt, opts, &mut on_token);
    if let Some(e) = failed {
        return Err(e);
    }
    let (tokens, stats) = result?;
    if let Some(rest) = text.finish()? {
        out.write_all(rest.as_bytes())?;
    }
    writeln!(out)?;
    out.flush()?;
    Ok((tokens, stats))
}

/// The one-line summary `--stats` prints.
pub fn stats_line(stats: &GenerationStats) -> String {
    format!(
        "prefill: {:.2} ms for {} tokens; decode: {:.1} tokens/s ({} tokens, stop: {:?})",
        stats.prefill.as_secs_f64() * 1e3,
        stats.prompt_tokens,
        stats.decode_tokens_per_sec(),
        stats.new_tokens,
        stats.stop
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(stream: &mut TextStream, tokens: &[u32]) -> Vec<String> {
        let mut parts: Vec<String> = tokens
            .iter()
            .filter_map(|&t| stream.push(t).unwrap())
            .collect();
        parts.extend(stream.finish().unwrap());
        parts
    }

    #[test]
    fn bytes_stream_whole_characters() {
        // "é" is two bytes, "€" three: nothing is printed mid-character.
        let text = "aé€b";
        let tokens: Vec<u32> = text.bytes().map(u32::from).collect();
        let parts = all(&mut TextStream::bytes(), &tokens);
        assert_eq!(parts, ["a", "é", "€", "b"]);
    }

    #[test]
    fn invalid_bytes_do_not_hold_the_stream() {
        let parts = all(&mut TextStream::bytes(), &[0xff, b'x' as u32, 0xe2, 0x82]);
        assert_eq!(parts, ["\u{FFFD}", "x", "\u{FFFD}"]);
    }

    #[test]
    fn ids_print_one_by_one() {
        assert_eq!(all(&mut TextStream::Ids, &[3, 14]), ["3 ", "14 "]);
    }

    /// Token t is followed by t + 1.
    struct Next;
    impl LanguageModel for Next {
        fn vocab_size(&self) -> usize {
            256
        }
        fn max_context(&self) -> Option<usize> {
            None
        }
        fn reset(&mut self) -> Result<(), GenerateError> {
            Ok(())
        }
        fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GenerateError> {
            let mut l = vec![0.0; 256];
            l[(*tokens.last().unwrap() as usize + 1) % 256] = 1.0;
            Ok(l)
        }
    }

    #[test]
    fn streams_generation_to_a_writer() {
        let opts = GenerateOptions {
            max_new_tokens: 3,
            ..Default::default()
        };
        let mut out = Vec::new();
        let (tokens, stats) = stream_generation(
            &mut Next,
            &[b'a' as u32],
            &opts,
            &mut TextStream::bytes(),
            &mut out,
        )
        .unwrap();
        assert_eq!(tokens, [98, 99, 100]);
        assert_eq!(String::from_utf8(out).unwrap(), "bcd\n");
        assert!(stats_line(&stats).contains("(3 tokens, stop: MaxNewTokens)"));
    }
}
