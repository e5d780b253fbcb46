//! One stored line as a record of chain format v1 (docs/chain-format.md):
//! its canonical form, the members the chain depends on, its leaf.

use std::borrow::Cow;
use std::ops::Range;

use sha2::{Digest, Sha256};

use super::jcs::{self, Members};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// What kind of record a line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A span or a log record (written by the processor).
    Item,
    /// A declared gap (written by the host, docs/chain-format.md §1.8).
    Gap {
        /// Size of the checkpoint the chain continues from.
        checkpoint_size: u64,
        /// Its root.
        checkpoint_root: Hash,
        /// The operator's reason.
        reason: String,
    },
}

/// The members of a record the chain checks use.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// `chain.id`.
    pub chain_id: Cow<'a, str>,
    /// `chain.seq`.
    pub seq: u64,
    /// `chain.prev`.
    pub prev: Hash,
    /// `chain.key_id`, in keyed chains.
    pub key_id: Option<Cow<'a, str>>,
    /// `mac`, when present.
    pub mac: Option<Hash>,
    /// `received_at` (RFC 3339, sorts as time).
    pub received_at: &'a str,
    /// Span or log, or gap.
    pub kind: Kind,
    /// RFC 6962 leaf of the record without its `mac` member.
    pub leaf: Hash,
}

/// Why a line is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Valid JSON, but not its own canonical form (`NON_CANONICAL`).
    #[error("not in its canonical (RFC 8785) form: {0}")]
    NonCanonical(String),
    /// Not JSON, or not a record of this format (`MALFORMED`).
    #[error("{0}")]
    Malformed(String),
}

/// The chain position of a line that failed [`parse`], when it can still
/// be read, so the walk can go on past it.
#[derive(Debug, Clone, Copy)]
pub struct Salvaged {
    /// `chain.seq`.
    pub seq: u64,
    /// `chain.prev`.
    pub prev: Hash,
    /// The leaf of the stored bytes.
    pub leaf: Hash,
}

/// Parses and checks one stored line (without its `\n`).
pub fn parse<'a>(line: &'a [u8], members: &mut Members) -> Result<Record<'a>, LineError> {
    if let Err(e) = jcs::check(line, members) {
        let at = format!("byte {}: {}", e.offset, e.reason);
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
            Ok(_) => LineError::NonCanonical(at),
            Err(json) => LineError::Malformed(format!("not JSON ({json})")),
        });
    }
    let bad = |m: String| LineError::Malformed(m);
    let text = |range: &Range<usize>| -> &'a str { std::str::from_utf8(&line[range.clone()]).expect("checked UTF-8") };
    let (mut chain, mut mac, mut received_at, mut version, mut body, mut gap) = (None, None, None, None, 0, false);
    let mut item_parts = 0;
    let mut sender = false;
    for m in &members.top {
        let value = &m.value;
        match text(&m.key) {
            "chain" => chain = Some(value.clone()),
            "mac" => mac = Some(m.clone()),
            "received_at" => {
                received_at = Some(string(line, value).ok_or_else(|| bad("received_at is not a string".into()))?)
            }
            "v" => version = Some(text(value)),
            "span" | "log" => {
                body += 1;
                if line[value.start] != b'{' {
                    return Err(bad(format!("{} is not an object", text(&m.key))));
                }
            }
            "gap" => {
                body += 1;
                gap = true;
            }
            "resource" | "scope" => {
                item_parts += 1;
                if line[value.start] != b'{' {
                    return Err(bad(format!("{} is not an object", text(&m.key))));
                }
            }
            "sender" => {
                sender = true;
                if line[value.start] != b'{' {
                    return Err(bad("sender is not an object".into()));
                }
            }
            other => return Err(bad(format!("unknown top-level member {other:?}"))),
        }
    }
    // Version 1 has no sender; version 2 is version 1 with a sender.
    match (version, sender) {
        (Some("1"), false) | (Some("2"), true) => {}
        (Some("1"), true) => return Err(bad("v is 1 but the record has a sender member (a version 2 member)".into())),
        (Some("2"), false) => return Err(bad("v is 2 without a sender member".into())),
        (other, _) => return Err(bad(format!("v is {}, not 1 or 2", other.unwrap_or("missing")))),
    }
    if body != 1 {
        return Err(bad("a record has exactly one of span, log and gap".into()));
    }
    let expected_parts = if gap { 0 } else { 2 };
    if item_parts != expected_parts {
        let message = if gap { "a gap record has no resource or scope" } else { "resource and scope are missing" };
        return Err(bad(message.into()));
    }
    let received_at = received_at.ok_or_else(|| bad("received_at is missing".into()))?;
    let received_at = match received_at {
        Cow::Borrowed(t) if is_rfc3339_nanos(t) => t,
        other => return Err(bad(format!("received_at {other:?} is not RFC 3339 UTC with nine fraction digits"))),
    };
    if chain.as_ref().is_none_or(|c| line[c.start] != b'{') {
        return Err(bad("chain is missing or not an object".into()));
    }
    let (mut id, mut seq, mut prev, mut key_id) = (None, None, None, None);
    for m in &members.chain {
        let value = string(line, &m.value);
        let value = value.ok_or_else(|| bad(format!("chain.{} is not a string", text(&m.key))))?;
        match text(&m.key) {
            "id" => id = Some(value),
            "seq" => {
                seq = Some(parse_seq(&value).ok_or_else(|| {
                    bad(format!("chain.seq {value:?} is not a decimal from 0 to 2^63-1 without leading zeros"))
                })?)
            }
            "prev" => {
                prev = Some(
                    parse_hash(&value)
                        .ok_or_else(|| bad(format!("chain.prev {value:?} is not 64 lowercase hex digits")))?,
                )
            }
            "key_id" => key_id = Some(value),
            other => return Err(bad(format!("unknown member chain.{other}"))),
        }
    }
    let chain_id = id.filter(|i| !i.is_empty()).ok_or_else(|| bad("chain.id is missing or empty".into()))?;
    let seq = seq.ok_or_else(|| bad("chain.seq is missing".into()))?;
    let prev = prev.ok_or_else(|| bad("chain.prev is missing".into()))?;
    let mac_hash = match &mac {
        Some(m) => {
            let text = string(line, &m.value).ok_or_else(|| bad("mac is not a string".into()))?;
            Some(parse_hash(&text).ok_or_else(|| bad(format!("mac {text:?} is not 64 lowercase hex digits")))?)
        }
        None => None,
    };
    if mac.is_some() && key_id.is_none() {
        return Err(bad("a mac without chain.key_id".into()));
    }
    let kind = if gap {
        if key_id.is_some() {
            return Err(bad("a gap record is not keyed (no chain.key_id, no mac)".into()));
        }
        gap_kind(line, members)?
    } else {
        Kind::Item
    };
    let leaf = match &mac {
        Some(m) => leaf_without(line, m.span.clone()),
        None => leaf_hash(line),
    };
    Ok(Record { chain_id, seq, prev, key_id, mac: mac_hash, received_at, kind, leaf })
}

fn gap_kind(line: &[u8], members: &Members) -> Result<Kind, LineError> {
    let bad = |m: String| LineError::Malformed(m);
    let (mut size, mut root, mut reason) = (None, None, None);
    for m in &members.gap {
        let key = std::str::from_utf8(&line[m.key.clone()]).expect("checked UTF-8");
        let value = string(line, &m.value).ok_or_else(|| bad(format!("gap.{key} is not a string")))?;
        match key {
            "checkpoint_size" => {
                size = Some(
                    parse_seq(&value).ok_or_else(|| bad(format!("gap.checkpoint_size {value:?} is not a decimal")))?,
                )
            }
            "checkpoint_root" => {
                root = Some(
                    parse_hash(&value)
                        .ok_or_else(|| bad(format!("gap.checkpoint_root {value:?} is not 64 lowercase hex digits")))?,
                )
            }
            "reason" => reason = Some(value.into_owned()),
            other => return Err(bad(format!("unknown member gap.{other}"))),
        }
    }
    match (size, root, reason) {
        (Some(checkpoint_size), Some(checkpoint_root), Some(reason)) => {
            Ok(Kind::Gap { checkpoint_size, checkpoint_root, reason })
        }
        _ => Err(bad("a gap record needs gap.checkpoint_size, gap.checkpoint_root and gap.reason".into())),
    }
}

/// Reads what it can of a line that failed [`parse`]: its seq and prev
/// (through an ordinary JSON parser) and the leaf of its bytes.
pub fn salvage(line: &[u8]) -> Option<Salvaged> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let seq = parse_seq(value.get("chain")?.get("seq")?.as_str()?)?;
    let prev = parse_hash(value["chain"].get("prev")?.as_str()?)?;
    let leaf = match value.get("mac").and_then(|m| m.as_str()) {
        Some(mac) => {
            let member = format!(",\"mac\":\"{mac}\"");
            match memchr::memmem::find(line, member.as_bytes()) {
                Some(at) => leaf_without(line, at..at + member.len()),
                None => leaf_hash(line),
            }
        }
        None => leaf_hash(line),
    };
    Some(Salvaged { seq, prev, leaf })
}

/// A string value (with quotes) decoded; `None` if it is not a string.
fn string<'a>(line: &'a [u8], range: &Range<usize>) -> Option<Cow<'a, str>> {
    let raw = &line[range.clone()];
    if raw.len() < 2 || raw[0] != b'"' {
        return None;
    }
    let inner = std::str::from_utf8(&raw[1..raw.len() - 1]).expect("checked UTF-8");
    Some(if inner.contains('\\') { Cow::Owned(jcs::unescape(inner)) } else { Cow::Borrowed(inner) })
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
fn is_rfc3339_nanos(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 30
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            29 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// A decimal from 0 to 2^63 - 1 without sign or leading zeros.
pub fn parse_seq(text: &str) -> Option<u64> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse::<u64>().ok()).flatten().filter(|n| *n < 1 << 63)
}

/// The value of each lowercase hex digit; 0x10 for every other byte.
const HEX: [u8; 256] = {
    let mut table = [0x10u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// 64 lowercase hex digits (branch-free: hex digits are random, so a
/// branch per digit would be mispredicted half the time).
pub fn parse_hash(text: &str) -> Option<Hash> {
    let bytes: &[u8; 64] = text.as_bytes().try_into().ok()?;
    let mut hash = [0u8; 32];
    let mut invalid = 0u8;
    for (out, pair) in hash.iter_mut().zip(bytes.chunks_exact(2)) {
        let (high, low) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
        invalid |= high | low;
        *out = (high << 4) | (low & 0x0f);
    }
    (invalid & 0x10 == 0).then_some(hash)
}

/// RFC 6962 leaf: `SHA-256(0x00 || bytes)`.
pub fn leaf_hash(bytes: &[u8]) -> Hash {
    Sha256::new().chain_update([0u8]).chain_update(bytes).finalize().into()
}

/// The leaf of `line` without the bytes of `cut` (the `mac` member): since
/// the line is canonical, what remains is the canonical form of the record
/// without `mac`, hashed here without copying it.
fn leaf_without(line: &[u8], cut: Range<usize>) -> Hash {
    Sha256::new().chain_update([0u8]).chain_update(&line[..cut.start]).chain_update(&line[cut.end..]).finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn line(extra: &str) -> String {
        format!(
            r#"{{"chain":{{"id":"c","prev":"{PREV}","seq":"0"}},"log":{{}},"received_at":"2026-01-01T00:00:00.000000000Z","resource":{{}},"scope":{{}}{extra},"v":1}}"#
        )
    }

    #[test]
    fn reads_a_record_and_its_leaf() {
        let text = line("");
        let record = parse(text.as_bytes(), &mut Members::default()).unwrap();
        assert_eq!((record.seq, record.prev, record.kind.clone()), (0, [0; 32], Kind::Item));
        assert_eq!(record.leaf, audit_format::hash::leaf_hash(text.as_bytes()));
        assert_eq!(record.received_at, "2026-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn the_leaf_of_a_keyed_record_leaves_out_the_mac() {
        let mac = "ab".repeat(32);
        let keyed = line("").replace(r#""id":"c","#, r#""id":"c","key_id":"k1","#);
        let with_mac = keyed.replace(r#","received_at""#, &format!(r#","mac":"{mac}","received_at""#));
        let record = parse(with_mac.as_bytes(), &mut Members::default()).unwrap();
        assert_eq!(record.leaf, leaf_hash(keyed.as_bytes()));
        assert_eq!(record.mac, parse_hash(&mac));
        assert_eq!(salvage(with_mac.as_bytes()).unwrap().leaf, record.leaf);
    }

    #[test]
    fn refuses_what_is_not_a_v1_record() {
        let cases = [
            (line("").replace(r#""v":1"#, r#""v":2"#), "v is 2"),
            (line(r#","u":1"#), "unknown top-level"),
            (line("").replace(r#""seq":"0""#, r#""seq":"01""#), "chain.seq"),
            (line("").replace(PREV, &"A".repeat(64)), "chain.prev"),
            (line("").replace(r#""log":{},"#, ""), "exactly one of"),
            (line("").replace(".000000000Z", "Z"), "received_at"),
        ];
        for (text, expected) in cases {
            match parse(text.as_bytes(), &mut Members::default()) {
                Err(LineError::Malformed(m)) => assert!(m.contains(expected), "{m} / {expected}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let with_sender = line(r#","sender":{"protocol":"grpc"}"#);
        assert!(parse(with_sender.replace(r#""v":1"#, r#""v":2"#).as_bytes(), &mut Members::default()).is_ok());
        match parse(with_sender.as_bytes(), &mut Members::default()) {
            Err(LineError::Malformed(m)) => assert!(m.contains("sender"), "{m}"),
            other => panic!("a v1 record with a sender: {other:?}"),
        }
        let spaced = line("").replace(r#""v":1"#, r#""v": 1"#);
        assert!(matches!(parse(spaced.as_bytes(), &mut Members::default()), Err(LineError::NonCanonical(_))));
        assert!(matches!(parse(b"{\"a\":", &mut Members::default()), Err(LineError::Malformed(_))));
    }
}
