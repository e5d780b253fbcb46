//! RFC 8785 (JSON Canonicalization Scheme) output, written straight into a
//! byte buffer.
//!
//! The record writer emits members already in canonical order, so this module
//! only needs the leaf encodings: strings (§3.2.2.2), numbers (§3.2.2.3, the
//! ECMAScript `Number.prototype.toString` form) and the member order rule
//! (§3.2.3, UTF-16 code units). There is no parser here on purpose: the
//! verifier checks records with an independent implementation.

use std::cmp::Ordering;

use crate::copy;

/// Appends `s` as a JCS string literal: only `"`, `\` and control characters
/// are escaped, with the short forms where JSON has them and `\u00xx`
/// (lowercase hex) otherwise; everything else is copied as UTF-8.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let n = bytes.len();
    let clean = clean_prefix(bytes);
    out.reserve(n + 2);
    if clean == n {
        // Most strings: the quotes and the bytes written at once, the
        // length set once (each `push` reloads and stores it).
        // SAFETY: `n + 2` bytes of room were reserved above and are all
        // written before the length grows over them.
        unsafe {
            let dst = out.as_mut_ptr().add(out.len());
            *dst = b'"';
            copy::write(dst.add(1), bytes);
            *dst.add(n + 1) = b'"';
            out.set_len(out.len() + n + 2);
        }
        return;
    }
    out.push(b'"');
    copy::append(out, &bytes[..clean]);
    write_escaped(out, &bytes[clean..]);
    out.push(b'"');
}

/// Appends the rest of a string from its first byte needing an escape.
#[inline(never)]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        copy::append(out, &bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    copy::append(out, &bytes[start..]);
}

/// The length of the longest prefix needing no escape (most attribute text
/// needs none), found sixteen bytes at a time with WebAssembly SIMD; the
/// last sixteen bytes are checked at once (overlapping the chunks before),
/// and a string shorter than that as [`clean_prefix_scalar`] does.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn clean_prefix(bytes: &[u8]) -> usize {
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 16) {
        let mask = special_bytes(chunk);
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 16;
    }
    if i == bytes.len() {
        return i;
    }
    match bytes.len().checked_sub(16) {
        // Bytes up to `i` are clean, so a special one here is at or after `i`.
        Some(last) => match special_bytes(&bytes[last..]) {
            0 => bytes.len(),
            mask => last + mask.trailing_zeros() as usize,
        },
        None => clean_prefix_scalar(bytes),
    }
}

/// A bit for each of the 16 bytes of `chunk` needing an escape.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline]
fn special_bytes(chunk: &[u8]) -> u32 {
    use core::arch::wasm32::{u8x16_bitmask, u8x16_eq, u8x16_lt, u8x16_splat, v128, v128_load, v128_or};
    assert!(chunk.len() == 16);
    // SAFETY: `chunk` holds 16 bytes; v128_load needs no alignment.
    let x = unsafe { v128_load(chunk.as_ptr().cast::<v128>()) };
    let special = v128_or(
        u8x16_lt(x, u8x16_splat(0x20)),
        v128_or(u8x16_eq(x, u8x16_splat(b'"')), u8x16_eq(x, u8x16_splat(b'\\'))),
    );
    u32::from(u8x16_bitmask(special))
}

/// The length of the longest prefix needing no escape.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn clean_prefix(bytes: &[u8]) -> usize {
    clean_prefix_scalar(bytes)
}

/// [`clean_prefix`] eight bytes at a time, then byte by byte.
fn clean_prefix_scalar(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // Any byte below 0x20, '"' or '\\' in the word (the classic
        // "has less than" and "has zero byte" tests; bytes of multi-byte
        // UTF-8 characters never match).
        let special = (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
            | has_zero(x ^ (ONES * b'"' as u64))
            | has_zero(x ^ (ONES * b'\\' as u64));
        if special != 0 {
            break;
        }
        i += 8;
    }
    i + bytes[i..].iter().take_while(|&&b| b >= 0x20 && b != b'"' && b != b'\\').count()
}

/// Appends a finite `f64` in the ECMAScript shortest round-trip form that
/// RFC 8785 requires (`-0` is written `0`). Returns `false`, writing nothing,
/// for NaN and the infinities, which JSON cannot represent.
pub fn write_f64(out: &mut Vec<u8>, value: f64) -> bool {
    if !value.is_finite() {
        return false;
    }
    let mut buffer = ryu_js::Buffer::new();
    out.extend_from_slice(buffer.format_finite(value).as_bytes());
    true
}

/// Appends an unsigned integer as a JSON number. Only for values that are
/// exact in an IEEE double (below 2^53); larger ones are written as strings.
pub fn write_small_uint(out: &mut Vec<u8>, value: u32) {
    let mut buffer = itoa::Buffer::new();
    out.extend_from_slice(buffer.format(value).as_bytes());
}

/// Appends a 64-bit integer as a decimal string literal (`"-42"`), the form
/// the record format uses for every 64-bit value so no JSON reader rounds it.
pub fn write_int_str<I: itoa::Integer>(out: &mut Vec<u8>, value: I) {
    let mut buffer = itoa::Buffer::new();
    out.push(b'"');
    out.extend_from_slice(buffer.format(value).as_bytes());
    out.push(b'"');
}

/// Orders member names as RFC 8785 §3.2.3 does: by their UTF-16 code units.
/// (This differs from UTF-8 byte order only when characters above U+FFFF
/// meet characters in U+E000..U+FFFF.)
pub fn cmp_keys(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.as_bytes().cmp(b.as_bytes());
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(v: f64) -> String {
        let mut out = Vec::new();
        assert!(write_f64(&mut out, v));
        String::from_utf8(out).unwrap()
    }

    fn string(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    /// RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text.
    #[test]
    fn rfc8785_appendix_b_numbers() {
        let vectors: &[(u64, &str)] = &[
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
        for &(bits, expected) in vectors {
            assert_eq!(number(f64::from_bits(bits)), expected, "bits {bits:#018x}");
        }
    }

    /// The word-at-a-time scan must agree with a byte-by-byte escaper at
    /// every position and alignment.
    #[test]
    fn fast_path_matches_naive_escaping() {
        fn naive(s: &str) -> String {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        for special in (0u8..0x80).map(char::from).chain(['é', '😀', '\u{7f}', '\u{2028}']) {
            for prefix in 0..40 {
                let text: String = "abcdefghijklmnopqrstuvwxyz0123456789ABCD"[..prefix]
                    .chars()
                    .chain([special])
                    .chain("tail-ü".chars())
                    .collect();
                assert_eq!(string(&text), naive(&text), "{text:?}");
            }
        }
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut out = Vec::new();
            assert!(!write_f64(&mut out, v));
            assert!(out.is_empty());
        }
    }

    /// RFC 8785 §3.2.2.2 and the string part of its Appendix example.
    #[test]
    fn string_escaping() {
        assert_eq!(string("€$\u{000F}\nA'B\"\\\\\"/"), "\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"");
        assert_eq!(string("\u{8}\u{c}\r\t\u{1f}\u{7f}"), "\"\\b\\f\\r\\t\\u001f\u{7f}\"");
        assert_eq!(string("😀 ünïcödé"), "\"😀 ünïcödé\"");
        assert_eq!(string(""), "\"\"");
    }

    /// RFC 8785 §3.2.3: the sorting example's keys in canonical order.
    #[test]
    fn member_order_is_utf16() {
        let mut keys = vec!["\u{20ac}", "\r", "\u{fb33}", "1", "\u{1f600}", "\u{80}", "\u{f6}"];
        keys.sort_by(|a, b| cmp_keys(a, b));
        assert_eq!(keys, vec!["\r", "1", "\u{80}", "\u{f6}", "\u{20ac}", "\u{1f600}", "\u{fb33}"]);
    }

    #[test]
    fn int64_beyond_2_pow_53_is_a_string() {
        let mut out = Vec::new();
        write_int_str(&mut out, i64::MAX);
        write_int_str(&mut out, i64::MIN);
        write_int_str(&mut out, u64::MAX);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"9223372036854775807\"\"-9223372036854775808\"\"18446744073709551615\""
        );
    }
}
