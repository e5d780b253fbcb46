//! One chain directory, walked once from genesis: every segment line is
//! checked as a record (canonical form, chain id, seq, `prev`, MAC) and its
//! leaf goes into the verifier's Merkle tree, whose root is taken at every
//! size a checkpoint, anchor or gap names. Then the checkpoints are held
//! against those roots, and the tail and the checkpoint age are judged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::checkpoints::{self, Entry};
use super::files::{self, FileError, Lines, Next};
use super::jcs::Members;
use super::record::{self, Hash, Kind, LineError, Record};
use super::report::{ChainReport, Code, Position, SeqRange};
use super::tree::Tree;
use super::{Anchor, Bound, Options, VerifyError};

const ZERO: Hash = [0; 32];

/// Progress is reported after this many bytes of a segment.
const PROGRESS_STEP: u64 = 4 << 20;

/// The longest segment line the verifier reads (a record is one OTLP item
/// of a request, far smaller); a longer line is `MALFORMED`, never held.
pub const MAX_LINE: usize = 256 << 20;

/// The most of `chain.json` the verifier reads (the host writes ~50 bytes).
pub const MAX_CHAIN_FILE: u64 = 64 << 10;

/// A segment file.
struct Segment {
    path: PathBuf,
    name: String,
}

/// A gap record found at the start of a segment.
#[derive(Debug, Clone)]
struct GapStart {
    segment: usize,
    checkpoint_size: u64,
}

/// A break between record `seq - 1` and record `seq`, judged once the
/// record after `seq` shows which of the two changed.
struct Break {
    seq: u64,
    place: Place,
    in_range: bool,
    prev: Hash,
    /// The record before: its place, leaf, whether it was flagged already,
    /// whether it is in the requested range.
    before: (Place, Hash, bool, bool),
}

/// Where a record is, cheaply (a [`Position`] is made only for a finding).
#[derive(Debug, Clone, Copy)]
struct Place {
    seq: Option<u64>,
    segment: usize,
    line: u64,
}

/// What is known at a size the tree passes: its root, how many stored
/// records came before, and the first stored record from there on.
#[derive(Default, Clone)]
struct AtSize {
    root: Option<Hash>,
    records_before: u64,
    first_after: Option<(u64, String)>,
}

struct Walk<'o> {
    options: &'o Options,
    report: ChainReport,
    chain_id: String,
    tree: Tree,
    /// Sizes to take the root at, ascending, and what was seen there.
    targets: Vec<u64>,
    next_target: usize,
    next_first_after: usize,
    at_size: BTreeMap<u64, AtSize>,
    /// Leaf of record `tree.size() - 1`, if it is a stored record.
    last_leaf: Option<Hash>,
    last_place: Option<Place>,
    /// Segment file names, by index.
    files: Vec<String>,
    last_flagged: bool,
    last_in_range: bool,
    pending: Option<Break>,
    /// Lines since the last record that could not be read as one.
    unreadable: u64,
    /// Stored records pushed into the tree.
    records: u64,
    /// Seq and `received_at` (always 30 bytes) of the last stored record.
    last_received: Option<(u64, [u8; 30])>,
    macs: BTreeMap<String, Hmac>,
    unchecked: BTreeSet<String>,
    /// The first keyed record: its seq and key id (a later record without
    /// a key is a MAC downgrade).
    keyed_since: Option<(u64, String)>,
    valid_checkpoints: BTreeMap<u64, Hash>,
    gaps: Vec<GapStart>,
    members: Members,
}

type Hmac = hmac::Hmac<Sha256>;

/// Verifies the chain in `dir`.
pub fn verify(
    dir: &Path,
    options: &Options,
    anchors: &[&Anchor],
    progress: &mut dyn FnMut(u64),
) -> Result<ChainReport, VerifyError> {
    let mut report = ChainReport::new(String::new(), dir.to_path_buf());
    let chain_id = match read_chain_file(dir) {
        Ok(id) => {
            report.named = true;
            id
        }
        Err(message) => {
            let fallback = dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            report.chain = fallback.clone();
            report.add(Code::Malformed, Position::Chain, format!("chain.json: {message}"));
            fallback
        }
    };
    report.chain = chain_id.clone();
    let (segments, odd) = list_segments(dir)?;
    for (name, what) in odd {
        report.add(
            Code::Malformed,
            Position::Chain,
            format!("{name:?} is named like a segment but is {what}, not a regular file: not read"),
        );
    }
    let entries = checkpoints::read(dir, &chain_id, &options.keys, &mut report)?;
    report.checkpoints = entries.len() as u64;
    report.valid_checkpoints = entries.iter().filter(|e| e.valid).count() as u64;
    let gaps = find_gaps(&segments)?;

    // Size 0 is always a target: the tail of a chain with no valid checkpoint starts there.
    let mut targets: BTreeSet<u64> = entries.iter().filter(|e| e.valid).map(|e| e.size).collect();
    targets.insert(0);
    targets.extend(anchors.iter().map(|a| a.checkpoint.size));
    targets.extend(gaps.iter().map(|g| g.checkpoint_size));
    let mut valid_checkpoints = BTreeMap::new();
    for entry in entries.iter().filter(|e| e.valid) {
        valid_checkpoints.entry(entry.size).or_insert(entry.root);
    }
    let macs = options
        .hmac_keys
        .iter()
        .map(|(id, key)| (id.clone(), <Hmac as KeyInit>::new_from_slice(key).expect("HMAC takes any key")))
        .collect();
    let mut walk = Walk {
        options,
        report,
        chain_id,
        tree: Tree::default(),
        targets: targets.into_iter().collect(),
        next_target: 0,
        next_first_after: 0,
        at_size: BTreeMap::new(),
        last_leaf: None,
        last_place: None,
        files: segments.iter().map(|s| s.name.clone()).collect(),
        last_flagged: false,
        last_in_range: true,
        pending: None,
        unreadable: 0,
        records: 0,
        last_received: None,
        macs,
        unchecked: BTreeSet::new(),
        keyed_since: None,
        valid_checkpoints,
        gaps,
        members: Members::default(),
    };
    walk.reached_size();

    let mut line = Vec::new();
    let mut torn_bytes = 0;
    for (index, segment) in segments.iter().enumerate() {
        let io = |source| VerifyError::Io { path: segment.path.clone(), source };
        let file = match files::open_regular(&segment.path) {
            Ok(file) => file,
            Err(FileError::Io(source)) => return Err(io(source)),
            Err(e) => {
                walk.report.add(Code::Malformed, Position::Chain, format!("{}: {e}", segment.name));
                continue;
            }
        };
        walk.report.segments += 1;
        let is_last = index + 1 == segments.len();
        let mut lines = Lines::new(file, MAX_LINE);
        let mut line_no = 0u64;
        let mut reported = 0;
        loop {
            let next = lines.next(&mut line).map_err(io)?;
            if lines.consumed - reported >= PROGRESS_STEP {
                progress(lines.consumed - reported);
                reported = lines.consumed;
            }
            match next {
                Next::End => break,
                Next::Line => {
                    line_no += 1;
                    walk.line(&line, index, line_no);
                }
                Next::TooLong(length) => {
                    line_no += 1;
                    let place = Place { seq: None, segment: index, line: line_no };
                    let detail = format!("a line of {length} bytes, longer than any record (not read)");
                    walk.record_finding(true, Code::Malformed, place, detail);
                    walk.unreadable += 1;
                }
                Next::Torn(torn) => {
                    if is_last {
                        torn_bytes = torn;
                    } else {
                        walk.report.add(
                            Code::Malformed,
                            Position::Record { seq: None, file: segment.name.clone(), line: line_no + 1 },
                            format!("a sealed segment ends inside a line ({torn} bytes after the last newline)"),
                        );
                    }
                    break;
                }
            }
        }
        walk.report.bytes += lines.consumed;
        progress(lines.consumed - reported);
    }
    walk.resolve_pending(None);
    Ok(walk.finish(&entries, anchors, torn_bytes))
}

impl Walk<'_> {
    fn in_range(&self, seq: u64, received_at: &str) -> bool {
        let after = |bound: &Option<Bound>, above: bool| match bound {
            None => true,
            Some(Bound::Seq(n)) => {
                if above {
                    seq >= *n
                } else {
                    seq <= *n
                }
            }
            Some(Bound::Time(t)) => {
                if above {
                    received_at >= t.as_str()
                } else {
                    received_at <= t.as_str()
                }
            }
        };
        after(&self.options.from, true) && after(&self.options.to, false)
    }

    /// A finding on a record; outside the requested range it is only counted.
    fn record_finding(&mut self, in_range: bool, code: Code, place: Place, detail: String) {
        if in_range {
            let position =
                Position::Record { seq: place.seq, file: self.files[place.segment].clone(), line: place.line };
            self.report.add(code, position, detail);
        } else {
            // Counted (and so in the exit status), not listed.
            self.report.count(code);
            self.report.outside_range += 1;
        }
    }

    /// The gap whose superseded lines segment `index` may hold.
    fn superseding_gap(&self, index: usize) -> Option<&GapStart> {
        self.gaps.iter().find(|g| g.segment > index)
    }

    fn line(&mut self, bytes: &[u8], segment: usize, line: u64) {
        let expected = self.tree.size();
        if self.superseding_gap(segment).is_some_and(|g| expected >= g.checkpoint_size) {
            self.report.superseded_lines += 1;
            return;
        }
        let mut members = std::mem::take(&mut self.members);
        let parsed = record::parse(bytes, &mut members);
        match parsed {
            Ok(record) => self.record(&record, Place { seq: Some(record.seq), segment, line }),
            Err(error) => self.unreadable_line(bytes, error, segment, line),
        }
        self.members = members;
    }

    fn unreadable_line(&mut self, bytes: &[u8], error: LineError, segment: usize, line: u64) {
        let salvaged = record::salvage(bytes);
        let position = Place { seq: salvaged.map(|s| s.seq), segment, line };
        let (code, detail) = match error {
            LineError::NonCanonical(d) => (Code::NonCanonical, format!("not its own RFC 8785 form at {d}")),
            LineError::Malformed(d) => (Code::Malformed, d),
        };
        self.record_finding(true, code, position, detail);
        // A line whose place can still be read keeps the walk in step.
        match salvaged {
            Some(s) if s.seq == self.tree.size() => {
                let link_ok = match (s.seq, self.last_leaf) {
                    (0, _) => s.prev == ZERO,
                    (_, Some(leaf)) => s.prev == leaf,
                    (_, None) => true,
                };
                self.resolve_pending(Some(link_ok));
                self.push(s.leaf, position, true, true);
            }
            _ => self.unreadable += 1,
        }
    }

    fn record(&mut self, r: &Record<'_>, position: Place) {
        let in_range = self.in_range(r.seq, r.received_at);
        if r.chain_id != self.chain_id {
            let detail = format!("chain.id is {:?}: the record belongs to another chain", r.chain_id);
            self.record_finding(in_range, Code::Malformed, position, detail);
            self.unreadable += 1;
            return;
        }
        let expected = self.tree.size();
        if r.seq < expected {
            let detail = format!(
                "seq {} after seq {}: a record repeated or out of order (it is not counted)",
                r.seq,
                expected.wrapping_sub(1)
            );
            self.record_finding(in_range, Code::SeqDup, position, detail);
            return;
        }
        let mut flagged = false;
        if in_range {
            self.report.verified += 1;
            let seqs = self.report.verified_seqs.get_or_insert(SeqRange { first: r.seq, last: r.seq });
            seqs.last = r.seq;
        }
        if let (None, Kind::Item, Some((since, first_key))) = (&r.key_id, &r.kind, &self.keyed_since) {
            let detail = format!(
                "the chain is keyed since seq {since} (chain.key_id {first_key:?}) but this record has no chain.key_id and no mac: a MAC downgrade"
            );
            self.record_finding(in_range, Code::MissingMac, position, detail);
            flagged = true;
        }
        if let Some(key_id) = &r.key_id {
            if self.keyed_since.is_none() {
                self.keyed_since = Some((r.seq, key_id.to_string()));
            }
            match (&r.mac, self.macs.get(key_id.as_ref())) {
                (None, _) => {
                    let detail = format!("the chain is keyed (chain.key_id {key_id:?}) but the record has no mac");
                    self.record_finding(in_range, Code::MissingMac, position, detail);
                    flagged = true;
                }
                (Some(mac), Some(hmac)) => {
                    let mut hmac = hmac.clone();
                    hmac.update(&r.leaf);
                    if hmac.verify_slice(mac).is_err() {
                        let detail = format!("the mac is not HMAC-SHA256 of the leaf under key {key_id:?}");
                        self.record_finding(in_range, Code::BadMac, position, detail);
                        flagged = true;
                    }
                }
                (Some(_), None) if !self.macs.is_empty() => {
                    let given: Vec<&str> = self.macs.keys().map(String::as_str).collect();
                    let detail = format!(
                        "the mac is under key {key_id:?}, not among the --hmac-key ids given ({}): it cannot be checked",
                        given.join(", ")
                    );
                    self.record_finding(in_range, Code::BadMac, position, detail);
                    flagged = true;
                }
                (Some(_), None) => {
                    self.unchecked.insert(key_id.to_string());
                }
            }
        }
        match &r.kind {
            Kind::Gap { checkpoint_size, checkpoint_root, reason } => {
                self.resolve_pending(None);
                self.gap(r, *checkpoint_size, checkpoint_root, reason, position, in_range);
                self.push(r.leaf, position, true, in_range);
                self.last_received = Some((r.seq, stamp(r.received_at)));
                self.record_first_after(r.seq, r.received_at);
                return;
            }
            Kind::Item => {}
        }
        if r.seq > expected {
            self.resolve_pending(None);
            if self.unreadable < r.seq - expected {
                let detail = format!(
                    "seq {} follows seq {}: seqs {}..{} are missing",
                    r.seq,
                    expected.wrapping_sub(1),
                    expected,
                    r.seq - 1
                );
                self.record_finding(in_range, Code::SeqGap, position, detail);
            }
            self.push_gap(r.seq - expected);
        } else {
            let link_ok = match (expected, self.last_leaf) {
                (0, _) => r.prev == ZERO,
                (_, Some(leaf)) => r.prev == leaf,
                // The record before is missing: its leaf is unknown.
                (_, None) => true,
            };
            self.resolve_pending(Some(link_ok));
            if !link_ok {
                if r.prev == ZERO {
                    let detail = format!(
                        "chain.prev is all zeros at seq {}: the chain starts over without referencing its head",
                        r.seq
                    );
                    self.record_finding(in_range, Code::UnanchoredGenesis, position, detail);
                    flagged = true;
                } else if let (Some(leaf), Some(before)) = (self.last_leaf, self.last_place) {
                    self.pending = Some(Break {
                        seq: r.seq,
                        place: position,
                        in_range,
                        prev: r.prev,
                        before: (before, leaf, self.last_flagged, self.last_in_range),
                    });
                } else {
                    let detail = "chain.prev of the first record is not all zeros".to_owned();
                    self.record_finding(in_range, Code::LinkBroken, position, detail);
                    flagged = true;
                }
            }
        }
        self.push(r.leaf, position, flagged, in_range);
        self.last_received = Some((r.seq, stamp(r.received_at)));
        self.record_first_after(r.seq, r.received_at);
    }

    /// Judges the pending break at `seq` now that the link after it is
    /// known (`Some(ok)`) or will never be (`None`).
    fn resolve_pending(&mut self, next_link_ok: Option<bool>) {
        let Some(b) = self.pending.take() else { return };
        let (before_position, before_leaf, before_flagged, before_in_range) = b.before;
        match next_link_ok {
            // The record after links to this one: this one is as written,
            // so the one before it changed since.
            Some(true) => {
                if !before_flagged {
                    let detail = format!(
                        "the record hashes to {}, but seq {} links to {}: it was changed after seq {} was written",
                        hex::encode(before_leaf),
                        b.seq,
                        hex::encode(b.prev),
                        b.seq
                    );
                    self.record_finding(before_in_range, Code::LeafMismatch, before_position, detail);
                }
            }
            _ => {
                let detail = format!(
                    "chain.prev {} is not the leaf of seq {} ({}){}",
                    hex::encode(b.prev),
                    b.seq - 1,
                    hex::encode(before_leaf),
                    if next_link_ok == Some(false) { "; the record after it does not link to it either" } else { "" }
                );
                self.record_finding(b.in_range, Code::LinkBroken, b.place, detail);
                // The break after this record is explained by this one.
                if next_link_ok == Some(false) {
                    self.last_flagged = true;
                }
            }
        }
    }

    fn gap(&mut self, r: &Record<'_>, size: u64, root: &Hash, reason: &str, position: Place, in_range: bool) {
        let expected = self.tree.size();
        let mut problems = Vec::new();
        if size == 0 {
            problems.push("it continues from no checkpoint (size 0)".to_owned());
        }
        if expected != size {
            problems.push(format!("the chain holds {expected} records before it, not the {size} it continues from"));
        }
        if size > r.seq {
            problems.push(format!("its checkpoint size {size} is past its own seq {}", r.seq));
        }
        match self.valid_checkpoints.get(&size) {
            Some(signed) if signed == root => {}
            Some(_) => problems.push(format!("the valid checkpoint @{size} has another root")),
            None => problems.push(format!("no valid checkpoint @{size}")),
        }
        if self.at_size.get(&size).and_then(|a| a.root).is_some_and(|computed| computed != *root) {
            problems.push(format!("the stored records do not hash to its root at size {size}"));
        }
        if expected == size && size > 0 && self.last_leaf != Some(r.prev) {
            problems.push(format!("chain.prev is not the leaf of seq {}", size - 1));
        }
        if problems.is_empty() {
            let detail =
                format!("seqs {size}..{} declared lost after checkpoint @{size}: {reason:?}", r.seq.saturating_sub(1));
            self.record_finding(in_range, Code::DeclaredGap, position, detail);
        } else {
            let detail = format!("a gap record that references no verified checkpointed head: {}", problems.join("; "));
            self.record_finding(in_range, Code::UnanchoredGenesis, position, detail);
        }
        if r.seq > expected {
            self.push_gap(r.seq - expected);
        }
    }

    fn push(&mut self, leaf: Hash, position: Place, flagged: bool, in_range: bool) {
        self.tree.push(leaf);
        self.records += 1;
        self.unreadable = 0;
        self.last_leaf = Some(leaf);
        self.last_place = Some(position);
        self.last_flagged = flagged;
        self.last_in_range = in_range;
        self.reached_size();
    }

    /// Adds gap leaves for `count` seqs without a record, stopping at each
    /// target size on the way.
    fn push_gap(&mut self, count: u64) {
        let end = self.tree.size() + count;
        while self.tree.size() < end {
            let stop = self.targets.get(self.next_target).copied().filter(|t| *t < end).unwrap_or(end);
            self.tree.push_gap(stop.max(self.tree.size() + 1) - self.tree.size());
            self.reached_size();
        }
        self.last_leaf = None;
        self.unreadable = 0;
    }

    /// Notes the root and counts at a target size the tree just reached.
    fn reached_size(&mut self) {
        let size = self.tree.size();
        while let Some(&target) = self.targets.get(self.next_target) {
            if target > size {
                break;
            }
            self.next_target += 1;
            if target == size {
                let at = self.at_size.entry(size).or_default();
                at.root = Some(self.tree.root());
                at.records_before = self.records;
            }
        }
    }

    /// Notes the first stored record at or after each target size.
    fn record_first_after(&mut self, seq: u64, received_at: &str) {
        while let Some(&target) = self.targets.get(self.next_first_after) {
            if target > seq {
                break;
            }
            self.next_first_after += 1;
            self.at_size.entry(target).or_default().first_after = Some((seq, received_at.to_owned()));
        }
    }

    fn finish(mut self, entries: &[Entry], anchors: &[&Anchor], torn_bytes: u64) -> ChainReport {
        let stored = self.tree.size();
        let at_size = std::mem::take(&mut self.at_size);
        let root_at = |size: u64| at_size.get(&size).and_then(|a| a.root);
        let mut sealed: Option<&Entry> = None;
        for entry in entries.iter().filter(|e| e.valid) {
            let at = Position::Checkpoint { size: Some(entry.size), line: entry.line };
            if entry.size > stored {
                let detail = format!(
                    "covers {} records but the store holds {stored}: records were removed from the end",
                    entry.size
                );
                self.report.add(Code::Truncated, at, detail);
            } else if root_at(entry.size) != Some(entry.root) {
                let detail = format!(
                    "the signed root {} is not the root of the stored records 0..{} ({})",
                    hex::encode(entry.root),
                    entry.size.saturating_sub(1),
                    root_at(entry.size).map_or_else(|| "?".into(), hex::encode)
                );
                self.report.add(Code::RootMismatch, at, detail);
            } else {
                self.report.valid.push((entry.size, entry.line, entry.signers.clone()));
            }
            // What a trusted signature covers is sealed, whether or not the
            // records still match it (a mismatch is reported above).
            if sealed.is_none_or(|s| entry.size >= s.size) {
                sealed = Some(entry);
            }
        }
        for anchor in anchors {
            let size = anchor.checkpoint.size;
            let at = Position::Anchor { size, file: anchor.file.clone() };
            let covered = if size > stored {
                let detail = format!(
                    "the anchor covers {size} records but the store holds {stored}: records were removed from the end"
                );
                self.report.add(Code::Truncated, at, detail);
                false
            } else if root_at(size) != Some(anchor.checkpoint.root) {
                let detail = format!(
                    "the anchor's root {} is not the root of the stored records at size {size} ({})",
                    hex::encode(anchor.checkpoint.root),
                    root_at(size).map_or_else(|| "?".into(), hex::encode)
                );
                self.report.add(Code::AnchorMismatch, at, detail);
                false
            } else {
                true
            };
            self.report.anchors.push((size, covered));
        }

        // The tail: stored records after the last checkpoint that checked out.
        let sealed_size = sealed.map_or(0, |e| e.size);
        let at_sealed = at_size.get(&sealed_size).cloned().unwrap_or_default();
        let tail_records = if sealed_size > stored { 0 } else { self.records - at_sealed.records_before };
        let tail = &mut self.report.tail;
        tail.records = tail_records;
        tail.torn_bytes = torn_bytes;
        let first = at_sealed.first_after.clone();
        let last = self.last_received.map(|(seq, at)| (seq, String::from_utf8_lossy(&at).into_owned()));
        if let (Some((first_seq, first_at)), Some((last_seq, last_at))) = (first, last)
            && tail_records > 0
        {
            tail.seqs = Some(SeqRange { first: first_seq, last: last_seq });
            tail.received = Some((first_at, last_at));
        }
        if tail_records > 0 || torn_bytes > 0 {
            let mut detail = match (&tail.seqs, &tail.received) {
                (Some(seqs), Some((from, to))) => format!(
                    "{tail_records} record(s), seq {}..{}, received {from} .. {to}, are not covered by a valid checkpoint{}",
                    seqs.first,
                    seqs.last,
                    if sealed.is_none() { " (there is none)" } else { "" }
                ),
                _ => "no record after the last valid checkpoint".to_owned(),
            };
            if torn_bytes > 0 {
                detail.push_str(&format!(
                    "; the last segment ends with a torn line of {torn_bytes} bytes (a write a crash cut short, never acknowledged)"
                ));
            }
            self.report.add(Code::UnsealedTail, Position::Chain, detail);
        }

        // Age of the newest valid checkpoint against the heartbeat.
        let newest = entries.iter().filter(|e| e.valid).max_by_key(|e| e.time_unix_nano);
        let limit = self.options.heartbeat.saturating_mul(2);
        match newest {
            // Closed cleanly: the host signed its last checkpoint at
            // shutdown, and nothing was stored after it.
            Some(entry) if entry.shutdown && tail_records == 0 && entry.size == stored => {}
            Some(entry) => {
                let age =
                    std::time::Duration::from_nanos(self.options.now_unix_nano.saturating_sub(entry.time_unix_nano));
                if age > limit {
                    let detail = format!(
                        "the newest valid checkpoint (@{}, signed {}) is {} old; the host signs one at least every {} while it runs (stopped, or checkpoints removed?)",
                        entry.size,
                        entry.time,
                        humantime(age),
                        humantime(self.options.heartbeat)
                    );
                    self.report.add(Code::Stale, Position::Chain, detail);
                }
            }
            None if self.records > 0 => {
                self.report.add(Code::Stale, Position::Chain, "the chain has records but no valid checkpoint");
            }
            None => {}
        }
        if let Some(entry) = entries.iter().filter(|e| e.valid).max_by_key(|e| (e.size, e.time_unix_nano)) {
            self.report.last_checkpoint = Some((entry.size, entry.time.clone(), entry.signers.clone()));
        }
        self.report.records = self.records;
        self.report.unchecked_mac_keys = self.unchecked.into_iter().collect();
        self.report
    }
}

/// A `received_at` (checked: 30 ASCII bytes) without an allocation.
fn stamp(received_at: &str) -> [u8; 30] {
    received_at.as_bytes().try_into().unwrap_or([b'?'; 30])
}

/// `1h2m3s`.
fn humantime(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn read_chain_file(dir: &Path) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ChainFile {
        chain_id: String,
        format: u32,
    }
    let bytes = files::read_small(&dir.join("chain.json"), MAX_CHAIN_FILE).map_err(|e| e.to_string())?;
    let file: ChainFile = serde_json::from_slice(&bytes).map_err(|e| format!("not a chain file: {e}"))?;
    if serde_json::to_vec(&serde_json::json!({"chain_id": file.chain_id, "format": file.format})).ok().as_deref()
        != Some(bytes.as_slice())
    {
        return Err("not in the exact form the host writes".into());
    }
    if file.format != 1 {
        return Err(format!("store format {} is not 1", file.format));
    }
    if file.chain_id.is_empty() {
        return Err("the chain id is empty".into());
    }
    Ok(file.chain_id)
}

/// Segment files and what they hold.
type Segments = (Vec<Segment>, Vec<(String, &'static str)>);

/// `seg-<20 digits>.jsonl` regular files, by first seq; and the entries so
/// named that are not regular files (a FIFO, a symlink, a directory, a
/// device), with what they are.
fn list_segments(dir: &Path) -> Result<Segments, VerifyError> {
    let io = |source| VerifyError::Io { path: dir.to_path_buf(), source };
    let mut found = Vec::new();
    let mut odd = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(digits) = name.strip_prefix("seg-").and_then(|n| n.strip_suffix(".jsonl")) else { continue };
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(first) = digits.parse::<u64>() else { continue };
        if let Some(what) = files::kind(entry.file_type().map_err(io)?) {
            odd.push((name, what));
            continue;
        }
        found.push((first, Segment { path: entry.path(), name }));
    }
    found.sort_by_key(|(first, _)| *first);
    odd.sort();
    Ok((found.into_iter().map(|(_, s)| s).collect(), odd))
}

/// Gap records that open a segment (where `otel-audit declare-gap` puts
/// them): the lines before them from their checkpoint on are superseded.
fn find_gaps(segments: &[Segment]) -> Result<Vec<GapStart>, VerifyError> {
    let mut gaps = Vec::new();
    let mut members = Members::default();
    for (index, segment) in segments.iter().enumerate().skip(1) {
        let io = |source| VerifyError::Io { path: segment.path.clone(), source };
        let file = match files::open_regular(&segment.path) {
            Ok(file) => file,
            Err(FileError::Io(source)) => return Err(io(source)),
            // Reported when the walk reads it.
            Err(_) => continue,
        };
        let mut first = Vec::new();
        if Lines::new(file, MAX_LINE).next(&mut first).map_err(io)? != Next::Line {
            continue;
        }
        if let Ok(Record { seq, kind: Kind::Gap { checkpoint_size, .. }, .. }) = record::parse(&first, &mut members)
            && checkpoint_size <= seq
        {
            gaps.push(GapStart { segment: index, checkpoint_size });
        }
    }
    Ok(gaps)
}
