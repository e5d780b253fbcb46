//! Is a stored line its own RFC 8785 (JCS) form? Answered in one pass over
//! the bytes, without building a tree, and written from the RFC alone: it
//! shares no code with the writer (`audit_processor`'s serializer), so a
//! writer bug shows up here instead of being reproduced.
//!
//! A line is canonical iff it equals `JCS(parse(line))`. Checked directly,
//! that means: valid UTF-8; no insignificant whitespace; strings escape
//! exactly `"`, `\`, and the characters below U+0020 (the five with short
//! forms as `\b \t \n \f \r`, the rest as `\u00xx` in lowercase hex) and
//! nothing else; numbers are finite and spelled as ECMAScript's
//! `Number.prototype.toString` spells their double value; the members of
//! every object are in strictly increasing order of their names' UTF-16
//! code units (so none repeats). While checking, the members of the
//! top-level object, and of its `chain` and `gap` objects, are recorded
//! by byte range for the record checks that follow.

use std::cmp::Ordering;
use std::ops::Range;

/// Objects and arrays nest at most this deep (a record from OTLP is far
/// shallower: protobuf decoding stops at 100 levels).
const MAX_DEPTH: usize = 512;

/// Why a line is not canonical, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonCanonical {
    /// Byte offset in the line.
    pub offset: usize,
    /// What is wrong there.
    pub reason: &'static str,
}

/// One object member, by byte ranges of the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The whole member including the `,` before it (or the `,` after it
    /// when it is the object's first member and not its only one): removing
    /// these bytes leaves the canonical form of the object without it.
    pub span: Range<usize>,
    /// The name, between its quotes (still escaped).
    pub key: Range<usize>,
    /// The value (a string with its quotes).
    pub value: Range<usize>,
}

/// Which members [`check`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    None,
    Top,
    Chain,
    Gap,
}

/// The members [`check`] found; reused from line to line.
#[derive(Debug, Default)]
pub struct Members {
    /// The top-level object's members, in order.
    pub top: Vec<Member>,
    /// The members of the top-level `chain` object.
    pub chain: Vec<Member>,
    /// The members of the top-level `gap` object.
    pub gap: Vec<Member>,
}

impl Members {
    fn clear(&mut self) {
        self.top.clear();
        self.chain.clear();
        self.gap.clear();
    }
}

/// Checks that `line` (without its `\n`) is one JSON object in canonical
/// form, recording its members in `members`.
pub fn check(line: &[u8], members: &mut Members) -> Result<(), NonCanonical> {
    members.clear();
    if let Err(e) = std::str::from_utf8(line) {
        return Err(NonCanonical { offset: e.valid_up_to(), reason: "invalid UTF-8" });
    }
    if line.first() != Some(&b'{') {
        return Err(NonCanonical { offset: 0, reason: "a record is a JSON object" });
    }
    let mut parser = Parser { line, members };
    let end = parser.object(0, 0, Capture::Top)?;
    if end != line.len() {
        return Err(NonCanonical { offset: end, reason: "bytes after the object" });
    }
    Ok(())
}

struct Parser<'a, 'm> {
    line: &'a [u8],
    members: &'m mut Members,
}

fn fail<T>(offset: usize, reason: &'static str) -> Result<T, NonCanonical> {
    Err(NonCanonical { offset, reason })
}

impl Parser<'_, '_> {
    fn byte(&self, at: usize) -> Option<u8> {
        self.line.get(at).copied()
    }

    fn value(&mut self, at: usize, depth: usize, capture: Capture) -> Result<usize, NonCanonical> {
        match self.byte(at) {
            Some(b'{') => self.object(at, depth + 1, capture),
            Some(b'[') => self.array(at, depth + 1),
            Some(b'"') => string(self.line, at).map(|(end, _)| end),
            Some(b'-' | b'0'..=b'9') => number(self.line, at),
            Some(b't') => literal(self.line, at, b"true"),
            Some(b'f') => literal(self.line, at, b"false"),
            Some(b'n') => literal(self.line, at, b"null"),
            Some(b' ' | b'\t' | b'\r' | b'\n') => fail(at, "whitespace"),
            Some(_) => fail(at, "not a JSON value"),
            None => fail(at, "the line ends inside a value"),
        }
    }

    fn object(&mut self, at: usize, depth: usize, capture: Capture) -> Result<usize, NonCanonical> {
        if depth > MAX_DEPTH {
            return fail(at, "nested too deeply");
        }
        let mut p = at + 1;
        if self.byte(p) == Some(b'}') {
            return Ok(p + 1);
        }
        let mut previous: Option<Range<usize>> = None;
        loop {
            let member_start = p;
            if self.byte(p) != Some(b'"') {
                return fail(
                    p,
                    if previous.is_some() { "expected a member name after ','" } else { "expected '\"' or '}'" },
                );
            }
            let (key_end, escaped) = string(self.line, p)?;
            let key = p + 1..key_end - 1;
            if let Some(prev) = &previous
                && compare_names(self.line, prev.clone(), key.clone(), escaped) != Ordering::Less
            {
                return fail(p, "member names out of order or repeated (RFC 8785 sorts by UTF-16 code units)");
            }
            p = key_end;
            if self.byte(p) != Some(b':') {
                return fail(p, "expected ':'");
            }
            p += 1;
            let inner = match capture {
                Capture::Top => match &self.line[key.clone()] {
                    b"chain" => Capture::Chain,
                    b"gap" => Capture::Gap,
                    _ => Capture::None,
                },
                _ => Capture::None,
            };
            let value_start = p;
            p = self.value(p, depth, inner)?;
            let span = if previous.is_some() { member_start - 1..p } else { member_start..p };
            let member = Member { span, key: key.clone(), value: value_start..p };
            match capture {
                Capture::Top => self.members.top.push(member),
                Capture::Chain => self.members.chain.push(member),
                Capture::Gap => self.members.gap.push(member),
                Capture::None => {}
            }
            previous = Some(key);
            match self.byte(p) {
                Some(b',') => p += 1,
                Some(b'}') => break,
                _ => return fail(p, "expected ',' or '}'"),
            }
        }
        // The first member's span takes the comma after it, so removing it
        // leaves `{"b":..}` rather than `{,"b":..}`.
        let list = match capture {
            Capture::Top => Some(&mut self.members.top),
            Capture::Chain => Some(&mut self.members.chain),
            Capture::Gap => Some(&mut self.members.gap),
            Capture::None => None,
        };
        if let Some(list) = list
            && list.len() > 1
        {
            list[0].span.end += 1;
        }
        Ok(p + 1)
    }

    fn array(&mut self, at: usize, depth: usize) -> Result<usize, NonCanonical> {
        if depth > MAX_DEPTH {
            return fail(at, "nested too deeply");
        }
        let mut p = at + 1;
        if self.byte(p) == Some(b']') {
            return Ok(p + 1);
        }
        loop {
            p = self.value(p, depth, Capture::None)?;
            match self.byte(p) {
                Some(b',') => p += 1,
                Some(b']') => return Ok(p + 1),
                _ => return fail(p, "expected ',' or ']'"),
            }
        }
    }
}

fn literal(line: &[u8], at: usize, word: &[u8]) -> Result<usize, NonCanonical> {
    if line.get(at..at + word.len()) == Some(word) { Ok(at + word.len()) } else { fail(at, "not a JSON value") }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// A bit set in the byte of `word` (little endian) where the first `"`,
/// `\` or control character is; bits above it may be set too.
#[inline]
fn specials(word: u64) -> u64 {
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    control | zero_byte(word ^ (ONES * b'"' as u64)) | zero_byte(word ^ (ONES * b'\\' as u64))
}

/// Checks the string starting at `line[at] == '"'`: returns the offset
/// after its closing quote and whether it holds escapes.
fn string(line: &[u8], at: usize) -> Result<(usize, bool), NonCanonical> {
    let mut p = at + 1;
    let mut escaped = false;
    loop {
        // Eight bytes at a time up to the next byte that needs a look.
        while let Some(chunk) = line.get(p..p + 8) {
            let found = specials(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            if found != 0 {
                p += (found.trailing_zeros() / 8) as usize;
                break;
            }
            p += 8;
        }
        match line.get(p) {
            None => return fail(at, "unterminated string"),
            Some(b'"') => return Ok((p + 1, escaped)),
            Some(b'\\') => {
                escaped = true;
                match line.get(p + 1) {
                    Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') => p += 2,
                    Some(b'u') => {
                        let hex =
                            line.get(p + 2..p + 6).ok_or(NonCanonical { offset: p, reason: "short \\u escape" })?;
                        // Only U+0000..U+001F without a short form are escaped, as \u00xx in lowercase.
                        let lower = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
                        if hex[0] != b'0' || hex[1] != b'0' || !matches!(hex[2], b'0' | b'1') || !lower(hex[3]) {
                            return fail(p, "a \\u escape of a character RFC 8785 writes raw (or uppercase hex)");
                        }
                        if hex[2] == b'0' && matches!(hex[3], b'8' | b'9' | b'a' | b'c' | b'd') {
                            return fail(p, "a \\u escape of a character with a short escape (\\b \\t \\n \\f \\r)");
                        }
                        p += 6;
                    }
                    Some(b'/') => return fail(p, "'/' is escaped (RFC 8785 writes it raw)"),
                    _ => return fail(p, "invalid escape"),
                }
            }
            Some(b) if *b < 0x20 => return fail(p, "a control character in a string must be escaped"),
            Some(_) => p += 1,
        }
    }
}

/// Checks the number at `line[at]`: JSON grammar, finite, and spelled as
/// ECMAScript spells its double. Returns the offset after it.
fn number(line: &[u8], at: usize) -> Result<usize, NonCanonical> {
    let digits = |mut p: usize| {
        while line.get(p).is_some_and(u8::is_ascii_digit) {
            p += 1;
        }
        p
    };
    let mut p = at + usize::from(line[at] == b'-');
    match line.get(p) {
        Some(b'0') => p += 1,
        Some(b'1'..=b'9') => p = digits(p),
        _ => return fail(at, "not a JSON number"),
    }
    if line.get(p) == Some(&b'.') {
        let end = digits(p + 1);
        if end == p + 1 {
            return fail(p, "no digits after the decimal point");
        }
        p = end;
    }
    if matches!(line.get(p), Some(b'e' | b'E')) {
        p += 1;
        if matches!(line.get(p), Some(b'+' | b'-')) {
            p += 1;
        }
        let end = digits(p);
        if end == p {
            return fail(p, "no digits in the exponent");
        }
        p = end;
    }
    let token = &line[at..p];
    // Integers of up to 15 digits are exact doubles that ECMAScript spells
    // digit for digit; the grammar above already refused leading zeros.
    let integer =
        token.iter().all(u8::is_ascii_digit) || (token[0] == b'-' && token[1..].iter().all(u8::is_ascii_digit));
    if integer && token.len() <= 15 && token != b"-0" {
        return Ok(p);
    }
    let text = std::str::from_utf8(token).expect("ASCII");
    let value: f64 = text.parse().map_err(|_| NonCanonical { offset: at, reason: "not a JSON number" })?;
    if !value.is_finite() {
        return fail(at, "a number beyond the range of an IEEE 754 double");
    }
    if ecmascript(value) != text {
        return fail(at, "a number not in ECMAScript form (RFC 8785 §3.2.2.3)");
    }
    Ok(p)
}

/// `Number.prototype.toString(value)` for a finite double (ECMA-262
/// Number::toString, radix 10), from the shortest round-trip digits.
pub fn ecmascript(value: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    // `{:e}` gives the fewest digits that round-trip (d[.ddd]e<exp>), but
    // breaks a tie between two such candidates upwards; ECMAScript takes
    // the one closest to the value, and the even one on a tie, which is
    // the exact rounding (half to even) to that many digits whenever that
    // rounding still round-trips.
    let shortest = format!("{:e}", value.abs());
    let digits = shortest.split_once('e').map_or(1, |(m, _)| m.len() - usize::from(m.contains('.')));
    let nearest = format!("{:.*e}", digits - 1, value.abs());
    let sci = if nearest.parse::<f64>() == Ok(value.abs()) { nearest } else { shortest };
    let (mantissa, exponent) = sci.split_once('e').expect("{:e} has an exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
    // value = 0.d1d2..dk * 10^n
    let (k, n) = (digits.len() as i32, exponent + 1);
    let mut out = String::with_capacity(k as usize + 8);
    if value < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n - 1 < 0 { '-' } else { '+' });
        out.push_str(&(n - 1).abs().to_string());
    }
    out
}

/// Orders two member names (raw, between quotes) by their UTF-16 code
/// units, as RFC 8785 §3.2.3 sorts them. `escaped` says whether the second
/// holds escapes; the first was checked when it was the second.
fn compare_names(line: &[u8], a: Range<usize>, b: Range<usize>, escaped: bool) -> Ordering {
    let (a, b) = (&line[a], &line[b]);
    if !escaped && a.iter().all(|c| c.is_ascii() && *c != b'\\') && b.is_ascii() {
        // Names are short: a loop beats a call to memcmp.
        for (x, y) in a.iter().zip(b) {
            if x != y {
                return x.cmp(y);
            }
        }
        return a.len().cmp(&b.len());
    }
    let units = |raw: &[u8]| -> Vec<u16> {
        let text = std::str::from_utf8(raw).expect("checked UTF-8");
        let decoded = if raw.contains(&b'\\') { unescape(text) } else { text.to_owned() };
        decoded.encode_utf16().collect()
    };
    units(a).cmp(&units(b))
}

/// Decodes the escapes of a canonical string body.
pub fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16).unwrap_or(0xfffd);
                out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> bool {
        check(text.as_bytes(), &mut Members::default()).is_ok()
    }

    /// RFC 8785 Appendix B: IEEE 754 bit patterns and their JCS text.
    #[test]
    fn numbers_follow_the_rfc_8785_table() {
        let table: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, text) in table {
            let value = f64::from_bits(*bits);
            assert_eq!(ecmascript(value), *text, "{bits:#018x}");
            if *bits != 0x8000000000000000 {
                assert!(ok(&format!("{{\"n\":{text}}}")), "{text} is canonical");
            }
        }
        for bad in [
            "1.0",
            "1E+23",
            "1e23",
            "01",
            "-0",
            "1e+021",
            "0.0000010",
            "1000000000000000000000",
            "1e400",
            ".5",
            "+1",
            "1.",
        ] {
            assert!(!ok(&format!("{{\"n\":{bad}}}")), "{bad} is not canonical");
        }
    }

    /// The ECMAScript spelling agrees with serde_json_canonicalizer (whose
    /// numbers come from ryu-js) on random doubles of every magnitude.
    #[test]
    fn numbers_agree_with_another_jcs_implementation() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Every third value has a short mantissa, where ties between candidates happen.
            let bits = if i % 3 == 0 { state & 0xffff_f000_0000_0000 } else { state };
            let value = f64::from_bits(bits);
            if !value.is_finite() {
                continue;
            }
            let theirs = serde_json_canonicalizer::to_string(&serde_json::json!(value)).unwrap();
            assert_eq!(ecmascript(value), theirs, "{bits:#018x}");
        }
    }

    #[test]
    fn strings_escape_exactly_what_rfc_8785_escapes() {
        assert!(ok(r#"{"s":"\"\\\b\f\n\r\t\u0000\u001f\u000b"}"#));
        assert!(ok("{\"s\":\"\u{7f}\u{2028}é😀 /\"}"));
        for bad in [
            r#"{"s":"\/"}"#,
            r#"{"s":"\u00e9"}"#,
            r#"{"s":"\u001F"}"#,
            r#"{"s":"\u0008"}"#,
            r#"{"s":"\u000a"}"#,
            r#"{"s":"\ud83d\ude00"}"#,
            r#"{"s":"\x"}"#,
            "{\"s\":\"\u{1}\"}",
            r#"{"s":"unterminated}"#,
        ] {
            assert!(!ok(bad), "{bad}");
        }
        assert!(check(b"{\"s\":\"\xff\"}", &mut Members::default()).is_err(), "invalid UTF-8");
    }

    #[test]
    fn members_sort_by_utf16_code_units_without_repeats() {
        // é U+00E9 < 😀 U+1F600 (D83D DE00) < U+FB33: code point order would put 😀 last.
        assert!(ok("{\"a\":1,\"é\":2,\"😀\":3,\"\u{fb33}\":4}"));
        assert!(!ok("{\"a\":1,\"é\":2,\"\u{fb33}\":4,\"😀\":3}"));
        assert!(!ok(r#"{"a":1,"a":1}"#));
        assert!(!ok(r#"{"b":1,"a":1}"#));
        // An escaped name sorts by what it decodes to: "\"" (U+0022) < "#".
        assert!(ok(r##"{"\"":1,"#":2}"##));
        assert!(!ok(r##"{"#":2,"\"":1}"##));
        assert!(ok(r#"{"a":{"b":[1,{"c":true,"d":null}],"c":false}}"#));
    }

    #[test]
    fn structure_and_whitespace() {
        for bad in [
            "{ }",
            "{\"a\": 1}",
            "{\"a\":1 }",
            "{\"a\":1}\n",
            "[1]",
            "{\"a\":tru}",
            "{\"a\":1,}",
            "{\"a\":[1,]}",
            "{}x",
            "{\"a\"}",
        ] {
            assert!(!ok(bad), "{bad:?}");
        }
        assert!(ok("{}"));
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(600), "]".repeat(600));
        assert!(!ok(&deep));
    }

    #[test]
    fn records_top_level_chain_and_gap_members() {
        let line = br#"{"chain":{"id":"c","prev":"p","seq":"1"},"mac":"m","v":1}"#;
        let mut members = Members::default();
        check(line, &mut members).unwrap();
        let keys: Vec<&[u8]> = members.top.iter().map(|m| &line[m.key.clone()]).collect();
        assert_eq!(keys, [&b"chain"[..], b"mac", b"v"]);
        let mac = &members.top[1];
        let mut without = line[..mac.span.start].to_vec();
        without.extend_from_slice(&line[mac.span.end..]);
        assert_eq!(without, br#"{"chain":{"id":"c","prev":"p","seq":"1"},"v":1}"#);
        assert_eq!(&line[members.chain[2].value.clone()], br#""1""#);
        // Removing a first member takes the comma after it.
        let first = &members.top[0];
        let mut rest = line[..first.span.start].to_vec();
        rest.extend_from_slice(&line[first.span.end..]);
        assert_eq!(rest, br#"{"mac":"m","v":1}"#);
    }
}
