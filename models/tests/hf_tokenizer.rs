//! The tokenizer wrapper on tokenizers built here with the `tokenizers`
//! API and saved as `tokenizer.json`: a byte-level BPE (GPT-2 style) and a
//! SentencePiece-style word-level model.

mod hf_common;

use hf_common::Scratch;
use kiln_models::hf::{Tokenizer, TokenizerError};
use std::path::{Path, PathBuf};
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::AddedToken;

/// GPT-2's reversible byte → printable-char map: printable Latin-1 bytes map
/// to themselves, the rest to 256, 257, … in byte order.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

fn chars(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_char(b)).collect()
}

const TEXT: &str = "hello wörld, 世界 🎉 héllo";

/// A byte-level BPE over all 256 bytes with a few merges, one of which
/// (the first two bytes of 界) ends in the middle of a character, and
/// `<s>` / `</s>` added by a template. Returns the tokenizer.json path.
fn byte_level_bpe(dir: &Path) -> PathBuf {
    let merges: Vec<(String, String)> = vec![
        (chars(b"h"), chars(b"e")),
        (chars(b"l"), chars(b"l")),
        (chars(b"he"), chars(b"ll")),
        (chars(b" "), chars(b"w")),
        (chars(&[0xC3]), chars(&[0xA9])), // é, a whole character
        (chars(&[0xE7]), chars(&[0x95])), // 界 (E7 95 8C), two of three bytes
    ];
    let mut vocab = serde_json::Map::new();
    for b in 0..=255u8 {
        vocab.insert(chars(&[b]), vocab.len().into());
    }
    for (a, b) in &merges {
        vocab.insert(format!("{a}{b}"), vocab.len().into());
    }
    std::fs::write(
        dir.join("vocab.json"),
        serde_json::Value::Object(vocab).to_string(),
    )
    .unwrap();
    let merges_txt: String = std::iter::once("#version: 0.2".to_string())
        .chain(merges.iter().map(|(a, b)| format!("{a} {b}")))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("merges.txt"), merges_txt + "\n").unwrap();
    let bpe = BPE::from_file(
        dir.join("vocab.json").to_str().unwrap(),
        dir.join("merges.txt").to_str().unwrap(),
    )
    .build()
    .unwrap();
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.add_special_tokens([
        AddedToken::from("<s>", true),
        AddedToken::from("</s>", true),
    ])
    .unwrap();
    let (bos, eos) = (
        tok.token_to_id("<s>").unwrap(),
        tok.token_to_id("</s>").unwrap(),
    );
    let template = TemplateProcessing::builder()
        .try_single("<s> $A </s>")
        .unwrap()
        .special_tokens(vec![("<s>", bos), ("</s>", eos)])
        .build()
        .unwrap();
    tok.with_post_processor(Some(template));
    let path = dir.join("tokenizer.json");
    tok.save(&path, false).unwrap();
    path
}

#[test]
fn byte_level_bpe_round_trips_and_adds_special_tokens_on_request() {
    let dir = Scratch::new("tok-bpe");
    let tok = Tokenizer::from_file(byte_level_bpe(dir.path())).unwrap();
    let (bos, eos) = (
        tok.token_to_id("<s>").unwrap(),
        tok.token_to_id("</s>").unwrap(),
    );
    assert_eq!(tok.bos_token_id(), Some(bos));
    assert_eq!(tok.eos_token_id(), Some(eos));
    assert_eq!(tok.eos_token_ids(), &[eos]);
    assert_eq!(tok.vocab_size(), 256 + 6 + 2);

    let ids = tok.encode(TEXT).unwrap();
    assert!(!ids.contains(&bos) && !ids.contains(&eos));
    // The merges applied: "hell" is one token, é is one token.
    assert!(ids.contains(&tok.token_to_id(&chars(b"hell")).unwrap()));
    assert!(ids.contains(&tok.token_to_id(&chars("é".as_bytes())).unwrap()));
    assert!(ids.len() < TEXT.len());
    assert_eq!(tok.decode(&ids).unwrap(), TEXT);

    let with = tok.encode_with_special(TEXT, true).unwrap();
    assert_eq!(with.first(), Some(&bos));
    assert_eq!(with.last(), Some(&eos));
    assert_eq!(&with[1..with.len() - 1], ids.as_slice());
    assert_eq!(tok.decode(&with).unwrap(), format!("<s>{TEXT}</s>"));
    assert_eq!(tok.decode_with(&with, true).unwrap(), TEXT);
}

#[test]
fn streaming_decode_holds_back_split_characters() {
    let dir = Scratch::new("tok-stream");
    let tok = Tokenizer::from_file(byte_level_bpe(dir.path())).unwrap();
    let ids = tok.encode(TEXT).unwrap();
    // Decoding token by token breaks characters: the test has teeth.
    let naive: String = ids.iter().map(|&i| tok.decode(&[i]).unwrap()).collect();
    assert!(naive.contains('\u{FFFD}'));

    let mut stream = tok.stream();
    let (mut out, mut held) = (String::new(), 0);
    for &id in &ids {
        match stream.step(id).unwrap() {
            Some(chunk) => {
                assert!(!chunk.contains('\u{FFFD}'), "{chunk:?}");
                out.push_str(&chunk);
            }
            None => held += 1,
        }
        // Everything emitted so far is a prefix of the text.
        assert!(TEXT.starts_with(&out), "{out:?}");
    }
    assert_eq!(stream.finish().unwrap(), None);
    assert_eq!(out, TEXT);
    // ö (2 one-byte tokens), 世 (3), 界 (2 bytes + 1), 🎉 (4) hold back
    // 1 + 2 + 1 + 3 steps.
    assert_eq!(held, 7);
    assert_eq!(stream.ids(), ids.as_slice());
}

#[test]
fn finish_flushes_an_incomplete_character() {
    let dir = Scratch::new("tok-finish");
    let tok = Tokenizer::from_file(byte_level_bpe(dir.path())).unwrap();
    let mut stream = tok.stream();
    assert_eq!(
        stream
            .step(tok.token_to_id("h").unwrap())
            .unwrap()
            .as_deref(),
        Some("h")
    );
    let partial = tok.token_to_id(&chars(&[0xE7, 0x95])).unwrap();
    assert_eq!(stream.step(partial).unwrap(), None);
    assert_eq!(stream.finish().unwrap().as_deref(), Some("\u{FFFD}"));
    assert_eq!(stream.finish().unwrap(), None);
}

#[test]
fn unknown_ids_are_errors() {
    let dir = Scratch::new("tok-unknown");
    let tok = Tokenizer::from_file(byte_level_bpe(dir.path())).unwrap();
    let e = tok.decode(&[5, 100_000]).unwrap_err();
    assert_eq!(
        e,
        TokenizerError::UnknownTokenId {
            id: 100_000,
            vocab_size: 264
        }
    );
    assert!(e
        .to_string()
        .contains("token id 100000 is not in the vocabulary (size 264)"));
    assert!(matches!(
        tok.stream().step(100_000),
        Err(TokenizerError::UnknownTokenId { .. })
    ));
}

/// A word-level model with SentencePiece's `▁` word marker, whose decoder
/// drops the marker's space at the start of the text only.
fn metaspace_word_level(dir: &Path) -> PathBuf {
    let vocab = serde_json::json!({"<unk>": 0, "▁hello": 1, "▁world": 2, "!": 3, "</s>": 4});
    std::fs::write(dir.join("vocab.json"), vocab.to_string()).unwrap();
    let model =
        WordLevel::from_file(dir.join("vocab.json").to_str().unwrap(), "<unk>".into()).unwrap();
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
    tok.with_decoder(Some(Metaspace::new('▁', PrependScheme::Always, true)));
    tok.add_special_tokens([AddedToken::from("</s>", true)])
        .unwrap();
    let path = dir.join("tokenizer.json");
    tok.save(&path, false).unwrap();
    path
}

#[test]
fn streaming_keeps_spaces_that_a_leading_token_would_lose() {
    let dir = Scratch::new("tok-meta");
    let tok = Tokenizer::from_file(metaspace_word_level(dir.path())).unwrap();
    let ids = tok.encode("hello world").unwrap();
    assert_eq!(ids, [1, 2]);
    assert_eq!(
        tok.decode(&[2]).unwrap(),
        "world",
        "a lone token loses its space"
    );
    let mut stream = tok.stream();
    let chunks: Vec<Option<String>> = ids.iter().map(|&i| stream.step(i).unwrap()).collect();
    assert_eq!(
        chunks,
        [Some("hello".to_string()), Some(" world".to_string())]
    );
    // `</s>` is found by its conventional name (no template here).
    assert_eq!(tok.eos_token_id(), Some(4));
    assert_eq!(tok.bos_token_id(), None);
}

#[test]
fn special_ids_come_from_the_model_directory_first() {
    let dir = Scratch::new("tok-dir");
    let path = byte_level_bpe(dir.path());
    let tok = Tokenizer::from_file(&path).unwrap();
    let (bos, eos) = (tok.bos_token_id().unwrap(), tok.eos_token_id().unwrap());
    let write = |f: &str, v: serde_json::Value| std::fs::write(dir.join(f), v.to_string()).unwrap();

    // Nothing but nulls: the tokenizer's own template decides.
    write(
        "config.json",
        serde_json::json!({"bos_token_id": null, "eos_token_id": null}),
    );
    let t = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(
        (t.bos_token_id(), t.eos_token_ids()),
        (Some(bos), &[eos][..])
    );

    // tokenizer_config.json names tokens; the object form works too.
    write(
        "tokenizer_config.json",
        serde_json::json!({"bos_token": {"content": "h"}, "eos_token": "w"}),
    );
    let t = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(t.bos_token_id(), tok.token_to_id("h"));
    assert_eq!(t.eos_token_ids(), &[tok.token_to_id("w").unwrap()]);

    // config.json ids beat tokenizer_config.json; generation_config.json beats both.
    write(
        "config.json",
        serde_json::json!({"bos_token_id": 1, "eos_token_id": 2}),
    );
    write(
        "generation_config.json",
        serde_json::json!({"eos_token_id": [7, 8]}),
    );
    let t = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(t.bos_token_id(), Some(1));
    assert_eq!(t.eos_token_ids(), &[7, 8]);
    assert_eq!(t.eos_token_id(), Some(7));

    // Malformed fields are errors naming the file and the field.
    write(
        "generation_config.json",
        serde_json::json!({"eos_token_id": "</s>"}),
    );
    let e = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("generation_config.json: malformed special-token field `eos_token_id`: expected a token id"), "{e}");
    write(
        "generation_config.json",
        serde_json::json!({"eos_token_id": -1}),
    );
    assert!(Tokenizer::from_dir(dir.path()).is_err());
    std::fs::remove_file(dir.join("generation_config.json")).unwrap();
    write("config.json", serde_json::json!({}));
    write(
        "tokenizer_config.json",
        serde_json::json!({"eos_token": "<|nope|>"}),
    );
    let e = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("tokenizer_config.json: malformed special-token field `eos_token`: token `<|nope|>` is not in the vocabulary"), "{e}");
    std::fs::write(dir.join("tokenizer_config.json"), "{").unwrap();
    let e = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("tokenizer_config.json: not valid JSON"), "{e}");
}

#[test]
fn missing_and_malformed_tokenizers() {
    let dir = Scratch::new("tok-bad");
    let path = dir.join("tokenizer.json");
    let e = Tokenizer::from_file(&path).unwrap_err();
    assert!(matches!(e, TokenizerError::NotFound { .. }));
    assert!(
        e.to_string()
            .ends_with("tokenizer.json: tokenizer file not found"),
        "{e}"
    );
    for text in ["{", "[]", r#"{"model": {"type": "NoSuchModel"}}"#, ""] {
        std::fs::write(&path, text).unwrap();
        let e = Tokenizer::from_file(&path).unwrap_err();
        assert!(matches!(e, TokenizerError::Malformed { .. }), "{text}: {e}");
        assert!(
            e.to_string()
                .contains("tokenizer.json: malformed tokenizer"),
            "{e}"
        );
    }
}
