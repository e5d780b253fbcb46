//! Segment files: naming, and reading records back (parsing a record's
//! chain position and recomputing its leaf) for recovery.
//!
//! Appends never parse records; only recovery does, and only the records
//! it must: the whole active segment, the first and last line of sealed
//! ones, and whatever follows the last checkpoint.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use audit_format::hash::{Hash, leaf_hash, to_hex};
use serde::Deserialize;

use super::durable;
use super::error::{Location, StoreError, io};

/// File name of the segment whose first record has `first_seq`.
pub(super) fn name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.jsonl")
}

/// A segment file and the seq its name says it starts at.
#[derive(Debug, Clone)]
pub(super) struct SegmentFile {
    pub first_seq: u64,
    pub path: PathBuf,
}

/// The chain directory's segments, by first seq.
pub(super) fn list(dir: &Path) -> Result<Vec<SegmentFile>, StoreError> {
    Ok(durable::numbered_files(dir, "seg-", ".jsonl")?
        .into_iter()
        .map(|(first_seq, path)| SegmentFile { first_seq, path })
        .collect())
}

/// A record's chain position and leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordInfo {
    pub seq: u64,
    pub prev: Hash,
    pub leaf: Hash,
}

#[derive(Deserialize)]
struct RecordHead<'a> {
    #[serde(borrow)]
    chain: Position<'a>,
    #[serde(borrow, default)]
    mac: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Position<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(borrow)]
    seq: Cow<'a, str>,
}

/// Parses one stored line (without its `\n`): checks its `chain.id` and the
/// form of `chain.seq` and `chain.prev`, and computes its leaf.
/// `scratch` is reused for the bytes of keyed records without their MAC.
pub(super) fn parse_record(line: &[u8], chain_id: &str, scratch: &mut Vec<u8>) -> Result<RecordInfo, String> {
    let head: RecordHead = serde_json::from_slice(line).map_err(|e| format!("not a JSON record: {e}"))?;
    let pos = head.chain;
    if pos.id != chain_id {
        return Err(format!("chain.id is {:?}, not {chain_id:?}", pos.id));
    }
    let seq = parse_seq(&pos.seq).ok_or_else(|| format!("chain.seq {:?} is not a decimal integer", pos.seq))?;
    let prev =
        parse_hex(&pos.prev).ok_or_else(|| format!("chain.prev {:?} is not 64 lowercase hex digits", pos.prev))?;
    let leaf = record_leaf(line, head.mac.as_deref(), scratch)?;
    Ok(RecordInfo { seq, prev, leaf })
}

/// The leaf of a stored record: the hash of its bytes without the top-level
/// `mac` member (docs/chain-format.md §2.1).
///
/// The member is removed as the exact bytes `,"mac":"<hex>"`. A record is
/// JCS, so the member has exactly that form, and it never comes first
/// (`chain` sorts before it); inside a JSON string every `"` is escaped, so
/// the bytes cannot occur within a string, and no nested object of the
/// format has a `mac` member with a string value.
fn record_leaf(line: &[u8], mac: Option<&str>, scratch: &mut Vec<u8>) -> Result<Hash, String> {
    let Some(mac) = mac else { return Ok(leaf_hash(line)) };
    if parse_hex(mac).is_none() {
        return Err(format!("mac {mac:?} is not 64 lowercase hex digits"));
    }
    let mut member = [0u8; 73];
    member[..8].copy_from_slice(b",\"mac\":\"");
    member[8..72].copy_from_slice(mac.as_bytes());
    member[72] = b'"';
    let at = line
        .windows(member.len())
        .position(|w| w == member)
        .ok_or("the mac member is not in canonical form (,\"mac\":\"<hex>\")")?;
    scratch.clear();
    scratch.extend_from_slice(&line[..at]);
    scratch.extend_from_slice(&line[at + member.len()..]);
    Ok(leaf_hash(scratch))
}

/// Where a gap record (docs/chain-format.md §1.8) puts the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GapStart {
    /// The gap record's seq.
    pub seq: u64,
    /// The size of the checkpoint it continues from.
    pub checkpoint_size: u64,
}

/// The place of a gap record, if `line` is one.
pub(super) fn gap_start(line: &[u8]) -> Option<GapStart> {
    #[derive(Deserialize)]
    struct Gap<'a> {
        #[serde(borrow)]
        checkpoint_size: Cow<'a, str>,
    }
    #[derive(Deserialize)]
    struct GapRecord<'a> {
        #[serde(borrow)]
        chain: Position<'a>,
        #[serde(borrow)]
        gap: Option<Gap<'a>>,
    }
    let record: GapRecord = serde_json::from_slice(line).ok()?;
    let gap = record.gap?;
    Some(GapStart { seq: parse_seq(&record.chain.seq)?, checkpoint_size: parse_seq(&gap.checkpoint_size)? })
}

/// A decimal seq without sign or leading zeros.
fn parse_seq(text: &str) -> Option<u64> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// 64 lowercase hex digits.
fn parse_hex(text: &str) -> Option<Hash> {
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash).ok()?;
    Some(hash)
}

/// Checks a parsed record against the seq and `prev` it must have.
pub(super) fn check_link(info: &RecordInfo, seq: u64, prev: Option<&Hash>) -> Result<(), String> {
    if info.seq != seq {
        return Err(format!("chain.seq is {} where {seq} belongs", info.seq));
    }
    match prev {
        Some(prev) if info.prev != *prev => Err(format!(
            "chain.prev {} is not the leaf of seq {} ({})",
            to_hex(&info.prev),
            seq.wrapping_sub(1),
            to_hex(prev)
        )),
        _ => Ok(()),
    }
}

/// The end of a file that holds `\n`-terminated lines.
pub(super) struct Tail {
    /// Bytes up to and including the last `\n`.
    pub complete_len: u64,
    /// Bytes after it: a write a crash cut short.
    pub torn: u64,
    /// The last complete line, without its `\n`, and its 0-based byte offset.
    pub last_line: Option<(u64, Vec<u8>)>,
}

/// Reads a file backwards to its last complete line, in bounded chunks, so
/// that a long file costs one line, not a full read.
pub(super) fn read_tail(path: &Path) -> Result<Tail, StoreError> {
    const CHUNK: u64 = 64 << 10;
    let file = File::open(path).map_err(io("open", path))?;
    let len = file.metadata().map_err(io("stat", path))?.len();
    // Bytes from `start` to `len`, read so far (backwards, in chunks).
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    let mut last_newline: Option<u64> = None;
    loop {
        if let Some(end) = last_newline {
            // Looking for the newline before the last one.
            let before = buf[..(end - start) as usize].iter().rposition(|&b| b == b'\n');
            if let Some(i) = before {
                let line_start = start + i as u64 + 1;
                let line = buf[(line_start - start) as usize..(end - start) as usize].to_vec();
                return Ok(Tail { complete_len: end + 1, torn: len - end - 1, last_line: Some((line_start, line)) });
            }
            if start == 0 {
                let line = buf[..(end - start) as usize].to_vec();
                return Ok(Tail { complete_len: end + 1, torn: len - end - 1, last_line: Some((0, line)) });
            }
        } else if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            last_newline = Some(start + i as u64);
            continue;
        } else if start == 0 {
            return Ok(Tail { complete_len: 0, torn: len, last_line: None });
        }
        let from = start.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (start - from) as usize];
        file.read_exact_at(&mut chunk, from).map_err(io("read", path))?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
    }
}

/// The first line of a file without its `\n`; `None` if the file is empty
/// or its first line is not terminated.
pub(super) fn read_first_line(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let file = File::open(path).map_err(io("open", path))?;
    let mut line = Vec::new();
    BufReader::new(file).read_until(b'\n', &mut line).map_err(io("read", path))?;
    Ok(line.pop().filter(|b| *b == b'\n').map(|_| line))
}

/// What [`scan`] found in one segment.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Complete lines.
    pub lines: u64,
    /// Bytes of complete lines.
    pub complete_len: u64,
    /// Bytes after the last `\n`.
    pub torn: u64,
    /// The last complete line's record, if it was verified.
    pub last: Option<RecordInfo>,
}

/// Which lines of a segment [`scan`] verifies and whose leaves it yields.
pub(super) struct ScanRange {
    /// Lines with a seq below this are only counted.
    pub verify_from: u64,
    /// Leaves of verified lines from this seq on go to the callback.
    pub leaves_from: u64,
    /// The leaf the first verified line's `prev` must equal, when known.
    pub prev: Option<Hash>,
}

/// Reads a segment line by line, verifying every complete line from
/// `range.verify_from` on (chain id, seq in file order from the name's
/// first seq, `prev` = leaf of the line before) and passing the leaves from
/// `range.leaves_from` on to `on_leaf`.
pub(super) fn scan(
    segment: &SegmentFile,
    chain_id: &str,
    range: ScanRange,
    mut on_leaf: impl FnMut(Hash),
) -> Result<Scan, StoreError> {
    let path = &segment.path;
    let file = File::open(path).map_err(io("open", path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut scratch = Vec::new();
    let mut prev = range.prev;
    let mut scan = Scan::default();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io("read", path))?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            scan.torn = n as u64;
            break;
        }
        let seq = segment.first_seq + scan.lines;
        scan.lines += 1;
        scan.complete_len += n as u64;
        if seq < range.verify_from {
            continue;
        }
        let at = Location::Line { line: scan.lines, seq: Some(seq) };
        let record = &line[..n - 1];
        let info = parse_record(record, chain_id, &mut scratch)
            .and_then(|info| check_link(&info, seq, prev.as_ref()).map(|()| info))
            .map_err(|mut message| {
                if record.contains(&0) {
                    message.push_str(" (the line holds NUL bytes: data lost in a power failure?)");
                }
                StoreError::corrupt(path, at, message)
            })?;
        if seq >= range.leaves_from {
            on_leaf(info.leaf);
        }
        prev = Some(info.leaf);
        scan.last = Some(info);
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_seq() {
        assert_eq!(name(0), "seg-00000000000000000000.jsonl");
        assert_eq!(name(u64::MAX), "seg-18446744073709551615.jsonl");
    }

    #[test]
    fn seq_and_hex_forms_are_strict() {
        assert_eq!(parse_seq("0"), Some(0));
        assert_eq!(parse_seq("120"), Some(120));
        for bad in ["", "01", "+1", "-1", "1.0", "18446744073709551616"] {
            assert_eq!(parse_seq(bad), None, "{bad}");
        }
        assert!(parse_hex(&"ab".repeat(32)).is_some());
        assert!(parse_hex(&"AB".repeat(32)).is_none());
        assert!(parse_hex(&"ab".repeat(31)).is_none());
    }

    #[test]
    fn unkeyed_leaf_is_the_line_hash() {
        let line = br#"{"chain":{"id":"c","prev":"0000000000000000000000000000000000000000000000000000000000000000","seq":"0"},"v":1}"#;
        let info = parse_record(line, "c", &mut Vec::new()).unwrap();
        assert_eq!((info.seq, info.prev, info.leaf), (0, [0; 32], leaf_hash(line)));
        let error = parse_record(line, "other", &mut Vec::new()).unwrap_err();
        assert!(error.contains("chain.id is \"c\", not \"other\""), "{error}");
    }

    #[test]
    fn tail_finds_the_last_complete_line_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let long = "x".repeat(200_000);
        std::fs::write(&path, format!("a\n{long}\nto")).unwrap();
        let tail = read_tail(&path).unwrap();
        assert_eq!((tail.complete_len, tail.torn), (2 + 200_001, 2));
        assert_eq!(tail.last_line, Some((2, long.into_bytes())));
        std::fs::write(&path, "only\n").unwrap();
        assert_eq!(read_tail(&path).unwrap().last_line, Some((0, b"only".to_vec())));
        std::fs::write(&path, "torn").unwrap();
        let tail = read_tail(&path).unwrap();
        assert_eq!((tail.complete_len, tail.torn, tail.last_line), (0, 4, None));
        std::fs::write(&path, "").unwrap();
        assert_eq!(read_tail(&path).unwrap().torn, 0);
    }
}
