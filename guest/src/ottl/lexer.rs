//! OTTL's tokens, after the Collector's lexer (`pkg/ottl/grammar.go`):
//! names (lower-case paths and editors, upper-case converters and enums),
//! strings with Go's escapes, ints, floats, bytes (`0x…`), operators and
//! punctuation, each with its 1-based column.

use std::fmt;

use super::grammar::{CompareOp, SyntaxError};

/// A token.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub(super) enum Tok {
    /// `[a-z][A-Za-z0-9_]*`
    Lower(String),
    /// `[A-Z][A-Za-z0-9_]*`
    Upper(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    /// `== != < <= > >=`
    Cmp(CompareOp),
    Plus,
    Minus,
    Star,
    Slash,
    Equal,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Dot,
    Colon,
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Lower(s) | Tok::Upper(s) => write!(f, "{s:?}"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Int(i) => write!(f, "\"{i}\""),
            Tok::Float(x) => write!(f, "\"{x}\""),
            Tok::Bytes(b) => write!(f, "\"0x{}\"", hex::encode(b)),
            Tok::Cmp(op) => write!(f, "\"{}\"", op.as_str()),
            Tok::Plus => f.write_str("\"+\""),
            Tok::Minus => f.write_str("\"-\""),
            Tok::Star => f.write_str("\"*\""),
            Tok::Slash => f.write_str("\"/\""),
            Tok::Equal => f.write_str("\"=\""),
            Tok::LParen => f.write_str("\"(\""),
            Tok::RParen => f.write_str("\")\""),
            Tok::LBracket => f.write_str("\"[\""),
            Tok::RBracket => f.write_str("\"]\""),
            Tok::LBrace => f.write_str("\"{\""),
            Tok::RBrace => f.write_str("\"}\""),
            Tok::Comma => f.write_str("\",\""),
            Tok::Dot => f.write_str("\".\""),
            Tok::Colon => f.write_str("\":\""),
            Tok::End => f.write_str("the end of the statement"),
        }
    }
}

pub(super) fn lex(text: &str) -> Result<Vec<(Tok, usize)>, SyntaxError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |i: usize, message: String| SyntaxError { column: i + 1, message };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = match c {
            '"' => {
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(err(start, "unterminated string".into())),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let e = chars.get(i + 1).copied();
                            i += 2;
                            match e {
                                Some('"') => s.push('"'),
                                Some('\\') => s.push('\\'),
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some('r') => s.push('\r'),
                                Some('a') => s.push('\x07'),
                                Some('b') => s.push('\x08'),
                                Some('f') => s.push('\x0c'),
                                Some('v') => s.push('\x0b'),
                                Some('\'') => s.push('\''),
                                Some(q @ ('u' | 'U' | 'x')) => {
                                    let n = match q {
                                        'x' => 2,
                                        'u' => 4,
                                        _ => 8,
                                    };
                                    let digits: String = chars.iter().skip(i).take(n).collect();
                                    let ch = (digits.len() == n)
                                        .then(|| u32::from_str_radix(&digits, 16).ok())
                                        .flatten()
                                        .and_then(char::from_u32)
                                        .ok_or_else(|| err(i - 2, format!("invalid escape \\{q}{digits}")))?;
                                    s.push(ch);
                                    i += n;
                                }
                                Some(other) => return Err(err(i - 2, format!("invalid escape \\{other} in a string"))),
                                None => return Err(err(start, "unterminated string".into())),
                            }
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                Tok::Str(s)
            }
            '0' if matches!(chars.get(i + 1), Some('x')) => {
                i += 2;
                let digits: String = chars[i..].iter().take_while(|c| c.is_ascii_hexdigit()).collect();
                i += digits.len();
                if digits.is_empty() || digits.len() % 2 == 1 {
                    return Err(err(start, format!("bytes literal 0x{digits} needs an even number of hex digits")));
                }
                Tok::Bytes(hex::decode(&digits).map_err(|e| err(start, e.to_string()))?)
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+' || c == '.')
                    && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit() || *d == '.')
                    && signed_number_allowed(&out)) =>
            {
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_digit()
                        || chars[i] == '.'
                        || chars[i] == 'e'
                        || chars[i] == 'E'
                        || ((chars[i] == '-' || chars[i] == '+') && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                if text.contains(['.', 'e', 'E']) {
                    Tok::Float(text.parse().map_err(|_| err(start, format!("invalid number {text:?}")))?)
                } else {
                    Tok::Int(text.parse().map_err(|_| err(start, format!("integer {text} is out of range")))?)
                }
            }
            c if c.is_ascii_alphabetic() => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if c.is_ascii_uppercase() { Tok::Upper(word) } else { Tok::Lower(word) }
            }
            _ => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let (tok, len) = match two.as_str() {
                    "==" => (Tok::Cmp(CompareOp::Eq), 2),
                    "!=" => (Tok::Cmp(CompareOp::Ne), 2),
                    "<=" => (Tok::Cmp(CompareOp::Le), 2),
                    ">=" => (Tok::Cmp(CompareOp::Ge), 2),
                    _ => match c {
                        '<' => (Tok::Cmp(CompareOp::Lt), 1),
                        '>' => (Tok::Cmp(CompareOp::Gt), 1),
                        '+' => (Tok::Plus, 1),
                        '-' => (Tok::Minus, 1),
                        '*' => (Tok::Star, 1),
                        '/' => (Tok::Slash, 1),
                        '=' => (Tok::Equal, 1),
                        '(' => (Tok::LParen, 1),
                        ')' => (Tok::RParen, 1),
                        '[' => (Tok::LBracket, 1),
                        ']' => (Tok::RBracket, 1),
                        '{' => (Tok::LBrace, 1),
                        '}' => (Tok::RBrace, 1),
                        ',' => (Tok::Comma, 1),
                        '.' => (Tok::Dot, 1),
                        ':' => (Tok::Colon, 1),
                        other => return Err(err(start, format!("unexpected character {other:?}"))),
                    },
                };
                i += len;
                tok
            }
        };
        out.push((tok, column));
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

/// A `-` or `+` directly before a digit is a sign only where a value may
/// start (after an operator, a comma, an opening bracket or at the start);
/// after a value it is the operator (`x - 1`, `x -1`).
fn signed_number_allowed(before: &[(Tok, usize)]) -> bool {
    !matches!(
        before.last().map(|(t, _)| t),
        Some(
            Tok::Lower(_)
                | Tok::Upper(_)
                | Tok::Str(_)
                | Tok::Int(_)
                | Tok::Float(_)
                | Tok::Bytes(_)
                | Tok::RParen
                | Tok::RBracket
                | Tok::RBrace
        )
    )
}
