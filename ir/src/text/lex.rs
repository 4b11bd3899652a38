//! The lexer of the text form: turns the source into tokens with byte spans.
//!
//! Whitespace (including newlines) separates tokens and is otherwise
//! insignificant; `//` starts a comment that runs to the end of the line.

use super::ParseError;

/// What a token is. Names keep their text without the sigil; strings are decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    /// `[A-Za-z_][A-Za-z0-9_]*`: keywords, op names, dtypes, size symbols.
    Ident(String),
    /// `%name` or `%3` (the text after `%`, from `[A-Za-z0-9_.]`).
    Value(String),
    /// `@name`, a graph name.
    Global(String),
    /// An unsigned number as written: `12`, `0.5`, `1e-30`, `0x7ff8000000000001`.
    Number(String),
    /// A quoted string, escapes decoded.
    Str(String),
    /// One of `( ) { } [ ] , = : # + - *`.
    Punct(char),
    Eof,
}

/// A token and where it is: `start..end` are byte offsets into the source.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// How an error message names this token.
    pub fn describe(&self) -> String {
        match &self.tok {
            Tok::Ident(s) | Tok::Number(s) => format!("'{s}'"),
            Tok::Value(s) => format!("'%{s}'"),
            Tok::Global(s) => format!("'@{s}'"),
            Tok::Str(s) => {
                let short: String = s.chars().take(24).collect();
                let more = if short.len() < s.len() { "..." } else { "" };
                format!("string {}{more}", super::quote(&short))
            }
            Tok::Punct(c) => format!("'{c}'"),
            Tok::Eof => "end of input".into(),
        }
    }

    pub fn is_punct(&self, c: char) -> bool {
        self.tok == Tok::Punct(c)
    }

    pub fn is_ident(&self, word: &str) -> bool {
        matches!(&self.tok, Tok::Ident(s) if s == word)
    }
}

/// Maps byte offsets to 1-based (line, column); columns count characters.
pub(crate) struct Lines<'a> {
    src: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    pub fn new(src: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Lines { src, starts }
    }

    pub fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.src.len());
        while !self.src.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let col = self.src[start..offset].chars().count() + 1;
        (line, col)
    }

    pub fn error(&self, offset: usize, message: impl Into<String>) -> ParseError {
        let (line, col) = self.position(offset);
        ParseError {
            line,
            col,
            message: message.into(),
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// Splits `src` into tokens, ending with [`Tok::Eof`].
pub(crate) fn lex(src: &str, lines: &Lines) -> Result<Vec<Token>, ParseError> {
    let bytes = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let tok = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'(' | b')' | b'{' | b'}' | b'[' | b']' | b',' | b'=' | b':' | b'#' | b'+' | b'-'
            | b'*' => {
                i += 1;
                Tok::Punct(c as char)
            }
            b'%' | b'@' => {
                i += 1;
                while i < bytes.len() && is_name_char(bytes[i] as char) {
                    i += 1;
                }
                if i == start + 1 {
                    let what = if c == b'%' { "a value" } else { "a graph" };
                    return Err(
                        lines.error(start, format!("expected {what} name after '{}'", c as char))
                    );
                }
                let name = src[start + 1..i].to_string();
                if c == b'%' {
                    Tok::Value(name)
                } else {
                    Tok::Global(name)
                }
            }
            b'"' => {
                let (s, end) = lex_string(src, start, lines)?;
                i = end;
                Tok::Str(s)
            }
            b'0'..=b'9' => {
                i = lex_number(bytes, i);
                Tok::Number(src[start..i].to_string())
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                Tok::Ident(src[start..i].to_string())
            }
            _ => {
                let ch = src[start..].chars().next().unwrap_or('?');
                return Err(lines.error(start, format!("unexpected character {ch:?}")));
            }
        };
        toks.push(Token { tok, start, end: i });
    }
    toks.push(Token {
        tok: Tok::Eof,
        start: src.len(),
        end: src.len(),
    });
    Ok(toks)
}

/// `[0-9]+ ('.' [0-9]+)? ([eE] [+-]? [0-9]+)?`, or `0x` hex digits; returns the end.
fn lex_number(b: &[u8], mut i: usize) -> usize {
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    if b[i] == b'0' && b.get(i + 1) == Some(&b'x') {
        let mut j = i + 2;
        while j < b.len() && b[j].is_ascii_hexdigit() {
            j += 1;
        }
        if j > i + 2 {
            return j;
        }
    }
    i = digits(i);
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i = digits(i + 1);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
        if b.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
            i = digits(i + 1 + sign);
        }
    }
    i
}

/// A quoted string starting at `start`; returns the decoded text and the end offset.
/// Escapes: `\"`, `\\`, `\n`, `\t`, `\r`, `\u{hex}`. A raw newline ends nothing: it is an error.
fn lex_string(src: &str, start: usize, lines: &Lines) -> Result<(String, usize), ParseError> {
    let mut out = String::new();
    let mut chars = src[start + 1..]
        .char_indices()
        .map(|(k, c)| (start + 1 + k, c));
    while let Some((k, c)) = chars.next() {
        match c {
            '"' => return Ok((out, k + 1)),
            '\n' => break,
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'u' => {
                        let mut hex = String::new();
                        let mut closed = false;
                        if chars.next().map(|p| p.1) == Some('{') {
                            for (_, h) in chars.by_ref() {
                                if h == '}' {
                                    closed = true;
                                    break;
                                }
                                hex.push(h);
                                if hex.len() > 6 {
                                    break;
                                }
                            }
                        }
                        let ch = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        match (closed, ch) {
                            (true, Some(ch)) => out.push(ch),
                            _ => {
                                return Err(lines.error(
                                    k,
                                    "bad unicode escape: write \\u{...} with 1 to 6 hex digits of a valid character",
                                ))
                            }
                        }
                    }
                    other => {
                        return Err(
                            lines.error(k, format!("unknown escape \\{}", other.escape_debug()))
                        )
                    }
                }
            }
            c => out.push(c),
        }
    }
    Err(lines.error(start, "unterminated string"))
}
