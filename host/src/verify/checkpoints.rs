//! A chain's `checkpoints.jsonl`, line by line: the line's form, its signed
//! note, the signatures under the trusted keys, the `prev` link to the line
//! before, and what two checkpoints must agree on (docs/store-format.md §3).
//! The roots are checked against the stored leaves by the chain walk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::files::{self, FileError, Lines, Next};
use super::record::{Hash, parse_hash};
use super::report::{ChainReport, Code, Position};
use super::tree::{frontier_ranges, node_hash};
use super::{ChainName, TrustedKey, VerifyError};
use crate::checkpoint::{Checkpoint, SignedNote};

/// One line of the file, exactly as the host writes it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    size: u64,
    root: String,
    time_unix_nano: String,
    frontier: Vec<String>,
    note: String,
}

/// A checkpoint line that parsed, with what verify learned of it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// 1-based line in `checkpoints.jsonl`.
    pub line: u64,
    /// Records covered.
    pub size: u64,
    /// The signed root.
    pub root: Hash,
    /// Signing time, Unix nanoseconds.
    pub time_unix_nano: u64,
    /// The signing time as the note says it.
    pub time: String,
    /// Well-formed and signed by a key trusted at its size.
    pub valid: bool,
    /// Names of the trusted keys whose signatures verified.
    pub signers: Vec<String>,
    /// The note has the `shutdown` extension line: the host's last
    /// checkpoint before a clean shutdown.
    pub shutdown: bool,
    /// The note has the `start` extension line: the first checkpoint the
    /// host signed when it started (the genesis checkpoint, or a restart).
    pub start: bool,
    /// The signed checkpoint schedule (absent only on a malformed line).
    pub schedule: Option<SignedSchedule>,
    /// The note's signed text (what cosignatures cover).
    pub text: String,
}

/// The `schedule` extension line: how often the host that signed the
/// checkpoint signs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedSchedule {
    /// At most this many records are left without a checkpoint.
    pub records: u64,
    /// New records wait at most this long for one.
    pub interval: std::time::Duration,
    /// A checkpoint at least this often while the host runs.
    pub heartbeat: std::time::Duration,
}

impl SignedSchedule {
    /// Parses `records=N interval_ms=N heartbeat_ms=N` (after `schedule `).
    pub fn parse(text: &str) -> Option<Self> {
        let mut fields = text.split(' ');
        let mut number = |name: &str| -> Option<u64> {
            let value = fields.next()?.strip_prefix(name)?.strip_prefix('=')?;
            if value.is_empty()
                || !value.bytes().all(|b| b.is_ascii_digit())
                || (value.len() > 1 && value.starts_with('0'))
            {
                return None;
            }
            value.parse().ok()
        };
        let records = number("records").filter(|n| *n > 0)?;
        let interval = std::time::Duration::from_millis(number("interval_ms")?);
        let heartbeat = std::time::Duration::from_millis(number("heartbeat_ms")?);
        fields.next().is_none().then_some(SignedSchedule { records, interval, heartbeat })
    }
}

/// The extension line naming the previous checkpoint.
pub const PREV_PREFIX: &str = "prev ";
/// The extension line with the signing time.
pub const TIME_PREFIX: &str = "time ";
/// The extension line of the checkpoint a host signs at a clean shutdown.
pub const SHUTDOWN_LINE: &str = "shutdown";
/// The extension line of the first checkpoint a host signs when it starts.
pub const START_LINE: &str = "start";
/// The extension line with the checkpoint schedule.
pub const SCHEDULE_PREFIX: &str = "schedule ";

/// The longest `checkpoints.jsonl` line the verifier reads (a line is a few
/// kilobytes at most: 64 frontier nodes and a few signatures).
pub const MAX_LINE: usize = 1 << 20;

/// Which keys trusted only from a size above 0 have been handed over to
/// (docs/store-format.md §2.3), by index into the trusted keys.
#[derive(Default)]
struct Handover {
    established: BTreeSet<usize>,
}

/// SHA-256 of a checkpoint body: what the next checkpoint's `prev` names.
pub fn body_hash(body: &str) -> Hash {
    Sha256::digest(body.as_bytes()).into()
}

/// Reads and checks every line; findings go to `report`.
pub fn read(
    dir: &Path,
    chain: &ChainName<'_>,
    keys: &[TrustedKey],
    report: &mut ChainReport,
) -> Result<Vec<Entry>, VerifyError> {
    let path = dir.join("checkpoints.jsonl");
    let io = |source| VerifyError::Io { path: path.clone(), source };
    let file = match files::open_regular(&path) {
        Ok(file) => file,
        Err(FileError::Missing) => return Ok(Vec::new()),
        Err(FileError::Io(source)) => return Err(io(source)),
        Err(e) => {
            report.add(Code::Malformed, Position::Chain, format!("checkpoints.jsonl: {e}"));
            return Ok(Vec::new());
        }
    };
    let mut entries: Vec<Entry> = Vec::new();
    // The body of the line before, for the `prev` check (None if unreadable).
    let mut previous_body: Option<Option<String>> = None;
    let mut origin: Option<String> = None;
    let mut handover = Handover::default();
    let mut frontiers: Vec<(u64, Vec<Hash>)> = Vec::new();
    let mut lines = Lines::new(file, MAX_LINE);
    let mut raw = Vec::new();
    let mut line = 0u64;
    loop {
        let next = lines.next(&mut raw).map_err(io)?;
        line += 1;
        match next {
            Next::End => break,
            Next::Torn(torn) => {
                report.add(
                    Code::Malformed,
                    Position::Checkpoint { size: None, line },
                    format!("the file ends inside a line ({torn} bytes after the last newline)"),
                );
                break;
            }
            Next::TooLong(length) => {
                report.add(
                    Code::Malformed,
                    Position::Checkpoint { size: None, line },
                    format!("a line of {length} bytes, longer than any checkpoint (not read)"),
                );
                previous_body = Some(None);
                handover.established.clear();
                continue;
            }
            Next::Line => {}
        }
        let state = State { origin: &mut origin, previous_body: previous_body.as_ref(), handover: &mut handover };
        let body = check_line(&raw, line, chain, keys, state, report, &mut entries);
        match body {
            Some((body, frontier)) => {
                if let Some(entry) = entries.last().filter(|e| e.line == line && e.valid) {
                    frontiers.push((entry.size, frontier));
                }
                previous_body = Some(Some(body));
            }
            None => {
                previous_body = Some(None);
                handover.established.clear();
            }
        }
    }
    consistency(&entries, &frontiers, report);
    Ok(entries)
}

/// What one line's check carries over from the lines before.
struct State<'a> {
    /// The origin of the first checkpoint.
    origin: &'a mut Option<String>,
    /// The body of the line before (None: none; Some(None): unreadable).
    previous_body: Option<&'a Option<String>>,
    handover: &'a mut Handover,
}

/// Checks one line; returns its note body and frontier when they could be
/// read, and pushes an [`Entry`] when its size and root could.
fn check_line(
    raw: &[u8],
    line: u64,
    chain: &ChainName<'_>,
    keys: &[TrustedKey],
    state: State<'_>,
    report: &mut ChainReport,
    entries: &mut Vec<Entry>,
) -> Option<(String, Vec<Hash>)> {
    let State { origin, previous_body, handover } = state;
    let at = |size: Option<u64>| Position::Checkpoint { size, line };
    let parsed: Line = match serde_json::from_slice(raw) {
        Ok(parsed) => parsed,
        Err(e) => {
            report.add(Code::Malformed, at(None), format!("not a checkpoint line: {e}"));
            return None;
        }
    };
    let size = parsed.size;
    let mut problems: Vec<String> = Vec::new();
    if serde_json::to_vec(&parsed).ok().as_deref() != Some(raw) {
        problems.push("the line is not in the exact form the host writes".into());
    }
    let root = parse_hash(&parsed.root);
    if root.is_none() {
        problems.push(format!("root {:?} is not 64 lowercase hex digits", parsed.root));
    }
    let frontier: Vec<Hash> = parsed.frontier.iter().filter_map(|h| parse_hash(h)).collect();
    if frontier.len() != parsed.frontier.len() {
        problems.push("a frontier node is not 64 lowercase hex digits".into());
    } else if frontier.len() != size.count_ones() as usize {
        problems.push(format!("a frontier of size {size} has {} nodes, not {}", frontier.len(), size.count_ones()));
    } else if root.is_some() && frontier_root(&frontier) != root.unwrap_or_default() {
        problems.push("the frontier does not hash to the root".into());
    }
    let note = match SignedNote::parse(&parsed.note) {
        Ok(note) => note,
        Err(e) => {
            problems.push(e.to_string());
            report.add(Code::Malformed, at(Some(size)), problems.join("; "));
            return None;
        }
    };
    let body = match Checkpoint::parse(&note.text) {
        Ok(body) => body,
        Err(e) => {
            problems.push(e.to_string());
            report.add(Code::Malformed, at(Some(size)), problems.join("; "));
            return Some((note.text, frontier));
        }
    };
    if body.size != size || Some(body.root) != root {
        problems.push(format!("the line's size and root are not those of its signed note (@{})", body.size));
    }
    match chain.origin {
        Some(expected) if body.origin != expected => {
            problems.push(format!("origin {:?} is not the chain's, {expected:?} (chain.json)", body.origin))
        }
        None if !body.origin.contains(&format!("/{}/", chain.id)) => {
            problems.push(format!("origin {:?} is not that of chain {:?}", body.origin, chain.id))
        }
        _ => {}
    }
    if origin.as_ref().is_some_and(|o| *o != body.origin) {
        problems.push(format!("origin {:?} differs from the chain's first checkpoint's {:?}", body.origin, origin));
    }
    origin.get_or_insert_with(|| body.origin.clone());
    let time = body.extensions.iter().find_map(|l| l.strip_prefix(TIME_PREFIX)).map(str::to_owned);
    let time_unix_nano = time.as_deref().and_then(|t| crate::clock::parse_rfc3339(t).ok());
    match (&time, time_unix_nano) {
        (Some(_), Some(ns)) if parsed.time_unix_nano == ns.to_string() => {}
        (Some(t), Some(_)) => {
            problems.push(format!("time_unix_nano {} is not the signed time {t}", parsed.time_unix_nano))
        }
        _ => problems.push("the note has no valid `time` line".into()),
    }
    let schedule = body.extensions.iter().find_map(|l| l.strip_prefix(SCHEDULE_PREFIX)).and_then(SignedSchedule::parse);
    if schedule.is_none() {
        problems.push("the note has no valid `schedule` line".into());
    }
    let prev = body.extensions.iter().find_map(|l| l.strip_prefix(PREV_PREFIX));
    if previous_body.is_none() && prev.is_none() && size > 0 {
        report.add(
            Code::MissingCheckpoint,
            at(Some(size)),
            "the first checkpoint in the file is not the chain's genesis checkpoint @0: a chain this host makes begins with one",
        );
    }
    let linked = match (previous_body, prev) {
        (None, None) => true,
        (None, Some(_)) => {
            report.add(
                Code::MissingCheckpoint,
                at(Some(size)),
                "the first checkpoint in the file names a previous one (`prev`): checkpoints before it were removed",
            );
            false
        }
        (Some(_), None) => {
            report.add(
                Code::MissingCheckpoint,
                at(Some(size)),
                "no `prev` line naming the checkpoint before it: the chain of checkpoints restarts here",
            );
            false
        }
        (Some(Some(before)), Some(prev)) => {
            let ok = B64.decode(prev).ok().as_deref() == Some(&body_hash(before)[..]);
            if !ok {
                report.add(
                    Code::MissingCheckpoint,
                    at(Some(size)),
                    "`prev` does not name the checkpoint on the line before: a checkpoint was removed or inserted",
                );
            }
            ok
        }
        // The line before could not be read; it was reported.
        (Some(None), Some(_)) => false,
    };
    // A handover holds only along an unbroken `prev` chain.
    if !linked {
        handover.established.clear();
    }
    let signers = signatures(&note, chain, size, keys, &handover.established);
    let signed = match &signers {
        Ok(_) => true,
        Err((code, detail)) => {
            report.add(*code, at(Some(size)), detail.clone());
            false
        }
    };
    if !problems.is_empty() {
        report.add(Code::Malformed, at(Some(size)), problems.join("; "));
    }
    let signers = signers.unwrap_or_default();
    if signed && problems.is_empty() {
        // This valid checkpoint hands over to every key trusted from a
        // size it reaches, if a key trusted below that size signed it.
        for (i, key) in keys.iter().enumerate() {
            if key.from_size > 0
                && key.applies_to(chain)
                && size >= key.from_size
                && signers.iter().any(|(j, _)| keys[*j].from_size < key.from_size)
            {
                handover.established.insert(i);
            }
        }
    }
    let shutdown = body.extensions.iter().any(|l| l == SHUTDOWN_LINE);
    let start = body.extensions.iter().any(|l| l == START_LINE);
    let mut names: Vec<String> = Vec::new();
    for (_, name) in signers {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if let Some(root) = root {
        entries.push(Entry {
            line,
            size,
            root,
            time_unix_nano: time_unix_nano.unwrap_or(0),
            time: time.unwrap_or_default(),
            valid: signed && problems.is_empty(),
            signers: names,
            shutdown,
            start,
            schedule,
            text: note.text.clone(),
        });
    }
    Some((note.text, frontier))
}

/// The trusted keys (index, name) whose signatures verify and count, or
/// the finding. A key trusted only from a size above 0 counts only once
/// handed over to (`handed_over`).
fn signatures(
    note: &SignedNote,
    chain: &ChainName<'_>,
    size: u64,
    keys: &[TrustedKey],
    handed_over: &BTreeSet<usize>,
) -> Result<Vec<(usize, String)>, (Code, String)> {
    let mut signers = Vec::new();
    let mut outside = Vec::new();
    let mut no_handover = Vec::new();
    for signature in &note.signatures {
        for (index, trusted) in keys.iter().enumerate() {
            match trusted.key.check(&note.text, signature) {
                None => {}
                Some(_) if !trusted.covers(chain, size) => {
                    outside.push(format!("{} ({})", signature.name, trusted.validity()))
                }
                Some(false) => {
                    return Err((
                        Code::BadSignature,
                        format!("the signature of trusted key {} does not verify", signature.name),
                    ));
                }
                Some(true) if trusted.from_size > 0 && !handed_over.contains(&index) => no_handover.push(format!(
                    "{} is trusted from size {from} only after a handover: no valid checkpoint of size {from} or more signed by a key trusted below {from} precedes it in an unbroken `prev` chain",
                    signature.name,
                    from = trusted.from_size
                )),
                Some(true) if !signers.iter().any(|(i, _)| *i == index) => {
                    signers.push((index, signature.name.clone()))
                }
                Some(true) => {}
            }
        }
    }
    if signers.is_empty() {
        let by: Vec<String> = note.signatures.iter().map(|s| format!("{}+{}", s.name, hex::encode(s.key_id))).collect();
        let mut detail = format!("signed only by keys not trusted at this size: {}", by.join(", "));
        if !outside.is_empty() {
            detail.push_str(&format!(" (trusted only for other sizes: {})", outside.join(", ")));
        }
        if !no_handover.is_empty() {
            detail.push_str(&format!(" ({})", no_handover.join("; ")));
        }
        return Err((Code::UnknownKey, detail));
    }
    Ok(signers)
}

fn frontier_root(nodes: &[Hash]) -> Hash {
    match nodes.split_last() {
        None => Sha256::digest([]).into(),
        Some((last, rest)) => rest.iter().rev().fold(*last, |right, left| node_hash(left, &right)),
    }
}

/// What valid checkpoints must agree on among themselves, whatever the
/// records say: in file order sizes and times never decrease; one size has
/// one root; and where two frontiers cover the same range of leaves, they
/// hold the same hash there.
fn consistency(entries: &[Entry], frontiers: &[(u64, Vec<Hash>)], report: &mut ChainReport) {
    let mut roots: BTreeMap<u64, (Hash, u64)> = BTreeMap::new();
    let mut before: Option<&Entry> = None;
    for entry in entries.iter().filter(|e| e.valid) {
        let at = Position::Checkpoint { size: Some(entry.size), line: entry.line };
        if let Some(prev) = before {
            if entry.size < prev.size {
                report.add(
                    Code::InconsistentCheckpoints,
                    at.clone(),
                    format!("the tree shrinks from {} (line {}) to {}", prev.size, prev.line, entry.size),
                );
            }
            if entry.time_unix_nano < prev.time_unix_nano {
                report.add(
                    Code::InconsistentCheckpoints,
                    at.clone(),
                    format!("signed at {}, before the checkpoint on line {} ({})", entry.time, prev.line, prev.time),
                );
            }
        }
        match roots.get(&entry.size) {
            Some((root, line)) if *root != entry.root => report.add(
                Code::InconsistentCheckpoints,
                at.clone(),
                format!("a different root than the checkpoint of the same size on line {line}: the chain forked"),
            ),
            Some(_) => {}
            None => {
                roots.insert(entry.size, (entry.root, entry.line));
            }
        }
        before = Some(entry);
    }
    for pair in frontiers.windows(2) {
        let ((a_size, a), (b_size, b)) = (&pair[0], &pair[1]);
        if a_size == b_size {
            // Same size: the roots were compared above.
            continue;
        }
        let a_ranges = frontier_ranges(*a_size);
        let b_ranges = frontier_ranges(*b_size);
        let clash = a_ranges
            .iter()
            .zip(a)
            .any(|(range, hash)| b_ranges.iter().position(|r| r == range).is_some_and(|j| b[j] != *hash));
        if clash {
            let entry = entries.iter().find(|e| e.valid && e.size == *b_size);
            let line = entry.map_or(0, |e| e.line);
            report.add(
                Code::InconsistentCheckpoints,
                Position::Checkpoint { size: Some(*b_size), line },
                format!("its Merkle frontier disagrees with that of the checkpoint @{a_size} on leaves both cover"),
            );
        }
    }
}
