//! One chain directory, walked once from genesis: every segment line is
//! checked as a record (canonical form, chain id, seq, `prev`, MAC) and its
//! leaf goes into the verifier's Merkle tree, whose root is taken at every
//! size a checkpoint, anchor or gap names. Then the checkpoints are held
//! against those roots, and the tail and the checkpoint age are judged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hmac::KeyInit;
use sha2::Sha256;

use super::checkpoints;
use super::files::{self, FileError, Lines, Next};
use super::jcs::Members;
use super::record::Hash;
use super::report::{ChainReport, Code, Position};
use super::tree::Tree;
use super::{Anchor, ChainName, Options, VerifyError};
use layout::{find_gaps, list_segments, read_chain_file};

mod layout;
mod records;
mod verdict;
mod witnessed;

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
    let (chain_id, origin) = match read_chain_file(dir) {
        Ok(file) => {
            report.named = true;
            (file.chain_id, Some(file.origin))
        }
        Err(message) => {
            let fallback = dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            report.chain = fallback.clone();
            report.add(Code::Malformed, Position::Chain, format!("chain.json: {message}"));
            (fallback, None)
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
    let name = ChainName { id: &chain_id, origin: origin.as_deref() };
    let entries = checkpoints::read(dir, &name, &options.keys, &mut report)?;
    report.origin = origin.clone();
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
    let mut report = walk.finish(&entries, anchors, torn_bytes);
    if !options.witnesses.is_empty() {
        witnessed::check(dir, &entries, options, &mut report)?;
    }
    Ok(report)
}
