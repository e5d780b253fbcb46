//! Opening a chain's store: claim the directory, find the head, rebuild the
//! Merkle frontier and repair what a crash may have left (a torn last line,
//! unacknowledged outbox frames). Anything else that does not chain is an
//! error naming the file and line: acknowledged records are never dropped.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::path::Path;

use audit_format::ChainHead;
use audit_format::GENESIS_PREV;
use serde::{Deserialize, Serialize};

use super::checkpoints::CheckpointLog;
use super::durable;
use super::error::{Location, StoreError, io};
use super::lock;
use super::outbox;
use super::segment::{self, RecordInfo, ScanRange, SegmentFile};
use super::tiles::TileWriter;
use super::{ActiveSegment, ChainStore, Recovery, StoreOptions};
use crate::merkle::Frontier;

/// File name of the chain's identity file.
const CHAIN_FILE: &str = "chain.json";
/// The store layout version `chain.json` names: 2 since chains have an
/// origin of their own, fixed at creation.
const FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainFile {
    chain_id: String,
    origin: String,
    format: u32,
}

/// A new chain's origin: `<prefix>/<chain id>/<16 random hex digits>`, so a
/// chain begun again in the same place (its directory moved aside, or a
/// second host with the same instance id) is a different log whose
/// checkpoints cannot pass for the first one's.
fn new_origin(prefix: &str, chain_id: &str) -> Result<String, StoreError> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce)
        .map_err(|e| StoreError::invalid("create", format!("no randomness for the origin: {e}")))?;
    Ok(format!("{prefix}/{chain_id}/{}", hex::encode(nonce)))
}

pub(super) fn open(dir: &Path, chain_id: &str, options: StoreOptions) -> Result<(ChainStore, Recovery), StoreError> {
    let mut recovery = Recovery::default();
    durable::create_dir(dir)?;
    // Modes first: whatever is created from here on follows the directory.
    options.access.apply(dir).map_err(io("set the modes of", dir))?;
    let lock = lock::acquire(dir)?;
    let origin = claim(dir, chain_id, &options.origin_prefix)?;

    let mut segments = segment::list(dir)?;
    if segments.is_empty() {
        let path = dir.join(segment::name(0));
        durable::create_empty(&path)?;
        segments.push(SegmentFile { first_seq: 0, path });
    }
    if segments[0].first_seq != 0 {
        let message =
            format!("the first segment starts at seq {}: the segments before it are missing", segments[0].first_seq);
        return Err(StoreError::corrupt(&segments[0].path, Location::File, message));
    }
    let active = segments.len() - 1;
    fix_modes(&segments, &mut recovery.notes)?;

    // The last checkpoint's frontier saves replaying the leaves before it.
    let loaded = CheckpointLog::open(dir)?;
    let checkpoints_path = loaded.log.path().to_path_buf();
    if loaded.torn > 0 {
        recovery.notes.push(format!(
            "truncated a torn checkpoint line of {} bytes at the end of {} (never acknowledged)",
            loaded.torn,
            checkpoints_path.display()
        ));
    }
    let (mut frontier, start) = match &loaded.last {
        Some((offset, entry)) => {
            let at = || Location::Offset { offset: *offset, seq: None };
            let frontier = Frontier::from_parts(entry.size, entry.frontier.clone())
                .map_err(|m| StoreError::corrupt(&checkpoints_path, at(), m))?;
            if frontier.root() != entry.root {
                let message =
                    format!("the root of the checkpoint of size {} is not the root of its frontier", entry.size);
                return Err(StoreError::corrupt(&checkpoints_path, at(), message));
            }
            (frontier, entry.size)
        }
        None => (Frontier::new(), 0),
    };
    let mut tiles = TileWriter::open(dir, start)?;
    if tiles.size() < start {
        rebuild_tiles(&mut tiles, &segments, chain_id, start)?;
        recovery.notes.push(format!("rebuilt the tiles of the first {start} records from the segments"));
    }

    // After a declared gap (store/gap.rs) the chain goes on from the last
    // gap record's segment: the segments before it are never read again
    // here (verify reads them). If no checkpoint covers the gap record yet,
    // the one it continues from must be the last, and the seqs it declares
    // lost enter the tree as gap leaves.
    let mut start = start;
    let base = match last_gap(&segments)? {
        Some((index, gap)) => {
            if start <= gap.seq {
                if start != gap.checkpoint_size {
                    let message = format!(
                        "the last checkpoint covers {start} records, but the gap record at seq {} continues from the checkpoint of {}",
                        gap.seq, gap.checkpoint_size
                    );
                    return Err(StoreError::corrupt(
                        &segments[index].path,
                        Location::Line { line: 1, seq: Some(gap.seq) },
                        message,
                    ));
                }
                frontier.push_gap(gap.seq - start);
                let gap_leaf = audit_format::hash::leaf_hash(b"");
                (start..gap.seq).for_each(|_| tiles.push(gap_leaf));
                recovery.notes.push(format!(
                    "continuing after the declared gap of seqs {start}..{} in {}",
                    gap.seq.saturating_sub(1),
                    segments[index].path.display()
                ));
                start = gap.seq;
            }
            index
        }
        None => 0,
    };

    // Segments before the one holding `start` are checked only at their
    // seams; from there on every record is read and its leaf replayed.
    let scan_from = segments.iter().rposition(|s| s.first_seq <= start).unwrap_or(0).max(base);
    let mut last: Option<RecordInfo> = check_seams(&segments[base..], scan_from - base, chain_id)?;
    let mut prev = match last {
        Some(record) => Some(record.leaf),
        None => (segments[scan_from].first_seq == 0).then_some(GENESIS_PREV),
    };
    let mut next_seq = 0;
    let mut active_len = 0;
    for (i, seg) in segments.iter().enumerate().skip(scan_from) {
        let verify_from =
            if i == scan_from && i != active { start.saturating_sub(1).max(seg.first_seq) } else { seg.first_seq };
        let range =
            ScanRange { verify_from, leaves_from: start, prev: if verify_from == seg.first_seq { prev } else { None } };
        let scan = segment::scan(seg, chain_id, range, |leaf| {
            frontier.push(leaf);
            tiles.push(leaf);
            recovery.replayed_leaves += 1;
        })?;
        next_seq = seg.first_seq + scan.lines;
        if i < active {
            if scan.torn > 0 || scan.lines == 0 {
                let at = Location::Offset { offset: scan.complete_len, seq: None };
                let message =
                    if scan.lines == 0 { "a sealed segment is empty" } else { "a sealed segment ends inside a line" };
                return Err(StoreError::corrupt(&seg.path, at, message));
            }
            let next = &segments[i + 1];
            if next.first_seq != next_seq {
                let message =
                    format!("starts at seq {} but the segment before it ends at seq {}", next.first_seq, next_seq - 1);
                return Err(StoreError::corrupt(&next.path, Location::File, message));
            }
        } else {
            active_len = scan.complete_len;
            recovery.torn_bytes = scan.torn;
        }
        if let Some(record) = scan.last {
            prev = Some(record.leaf);
            last = Some(record);
        }
    }
    if frontier.size() != next_seq {
        let message = format!(
            "the last checkpoint covers {start} records but the segments hold {next_seq}: acknowledged records are missing"
        );
        return Err(StoreError::corrupt(&checkpoints_path, Location::File, message));
    }
    // The replayed leaves go to the tile files now, not with the next append.
    tiles.write()?;

    let seg = &segments[active];
    let file = OpenOptions::new().write(true).open(&seg.path).map_err(io("open", &seg.path))?;
    if recovery.torn_bytes > 0 {
        durable::truncate(&file, &seg.path, active_len)?;
        recovery.notes.push(format!(
            "truncated a torn write of {} bytes at the end of {} (seq {next_seq} was never acknowledged)",
            recovery.torn_bytes,
            seg.path.display()
        ));
    }
    let segment = ActiveSegment { path: seg.path.clone(), file, len: active_len };

    let outbox = if options.outbox {
        let found = outbox::recover(dir, next_seq)?;
        recovery.dropped_outbox_frames = found.dropped_frames;
        recovery.notes.extend(found.notes);
        Some(found.writer)
    } else {
        None
    };

    recovery.next_seq = next_seq;
    let head = ChainHead { chain_id: chain_id.to_owned(), seq: next_seq, prev: last.map_or(GENESIS_PREV, |r| r.leaf) };
    let store = ChainStore {
        _lock: lock,
        dir: dir.to_path_buf(),
        origin,
        options,
        head,
        frontier,
        tiles,
        segment,
        outbox,
        checkpoints: loaded.log,
        last_checkpoint: loaded.last.map(|(_, entry)| entry),
        poisoned: false,
        rotation_pending: false,
        records_buf: Vec::new(),
        frames_buf: Vec::new(),
        unsynced: None,
        #[cfg(test)]
        fault: None,
    };
    Ok((store, recovery))
}

/// Pushes the leaves of seqs `tiles.size()..size` into tiles that lost them
/// (deleted, say), reading every segment that holds one.
fn rebuild_tiles(
    tiles: &mut TileWriter,
    segments: &[SegmentFile],
    chain_id: &str,
    size: u64,
) -> Result<(), StoreError> {
    if let Some((index, _)) = last_gap(segments)? {
        let message = "the tiles are missing and the chain has a declared gap: they cannot be rebuilt from the \
                       segments; restore the chain's tiles/ directory";
        return Err(StoreError::corrupt(&segments[index].path, Location::File, message));
    }
    let from = tiles.size();
    for (i, seg) in segments.iter().enumerate() {
        let end = segments.get(i + 1).map_or(u64::MAX, |next| next.first_seq);
        if end <= from || seg.first_seq >= size {
            continue;
        }
        let range = ScanRange { verify_from: seg.first_seq, leaves_from: from, prev: None };
        let mut seq = from.max(seg.first_seq);
        segment::scan(seg, chain_id, range, |leaf| {
            if seq < size {
                tiles.push(leaf);
            }
            seq += 1;
        })?;
    }
    tiles.sync()
}

/// The last segment that opens with a gap record, and that record's place.
fn last_gap(segments: &[SegmentFile]) -> Result<Option<(usize, segment::GapStart)>, StoreError> {
    for (index, seg) in segments.iter().enumerate().skip(1).rev() {
        if let Some(gap) = segment::read_first_line(&seg.path)?.and_then(|line| segment::gap_start(&line)) {
            return Ok(Some((index, gap)));
        }
    }
    Ok(None)
}

/// The chain id a chain directory's `chain.json` names.
pub(super) fn read_chain_id(dir: &Path) -> Result<String, StoreError> {
    Ok(read_chain_file(&dir.join(CHAIN_FILE))?.chain_id)
}

pub(super) fn read_chain_origin(dir: &Path) -> Result<String, StoreError> {
    Ok(read_chain_file(&dir.join(CHAIN_FILE))?.origin)
}

fn read_chain_file(path: &Path) -> Result<ChainFile, StoreError> {
    let bytes = fs::read(path).map_err(io("read", path))?;
    let format = |e: serde_json::Error| {
        // A chain file of another layout version says so, not "unknown field".
        match serde_json::from_slice::<serde_json::Value>(&bytes).ok().and_then(|v| v["format"].as_u64()) {
            Some(found) if found != u64::from(FORMAT) => {
                format!(
                    "store format {found} is not supported (this build reads {FORMAT}; format 1 stores predate chain origins)"
                )
            }
            _ => format!("not a chain file: {e}"),
        }
    };
    let found: ChainFile =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(path, Location::File, format(e)))?;
    if found.format != FORMAT {
        let message = format!("store format {} is not supported (this build reads {FORMAT})", found.format);
        return Err(StoreError::corrupt(path, Location::File, message));
    }
    Ok(found)
}

/// Creates the directory and its `chain.json` with a new origin, or checks
/// that an existing one belongs to `chain_id`; returns the chain's origin.
fn claim(dir: &Path, chain_id: &str, origin_prefix: &str) -> Result<String, StoreError> {
    durable::create_dir(dir)?;
    let path = dir.join(CHAIN_FILE);
    match fs::symlink_metadata(&path) {
        Ok(_) => {
            let found = read_chain_file(&path)?;
            if found.chain_id != chain_id {
                return Err(StoreError::WrongChain { path, expected: chain_id.to_owned(), found: found.chain_id });
            }
            Ok(found.origin)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if !segment::list(dir)?.is_empty() {
                let message = "missing, but the directory holds segments: whose chain they are is unknown";
                return Err(StoreError::corrupt(&path, Location::File, message));
            }
            let file = ChainFile {
                chain_id: chain_id.to_owned(),
                origin: new_origin(origin_prefix, chain_id)?,
                format: FORMAT,
            };
            durable::replace(&path, &serde_json::to_vec(&file).expect("chain.json serializes"))?;
            Ok(file.origin)
        }
        Err(e) => Err(io("read", &path)(e)),
    }
}

/// Sealed segments are read-only; the active one must be writable (a crash
/// between sealing a segment and starting the next leaves it read-only).
fn fix_modes(segments: &[SegmentFile], notes: &mut Vec<String>) -> Result<(), StoreError> {
    let active = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        let writable = durable::is_writable(&seg.path)?;
        if i < active && writable {
            durable::set_mode(&seg.path, durable::sealed_mode(&seg.path))?;
            notes.push(format!("sealed {} (made read-only)", seg.path.display()));
        } else if i == active && !writable {
            durable::set_mode(&seg.path, durable::active_mode(&seg.path))?;
            notes.push(format!("{} is the last segment: made writable again to append to it", seg.path.display()));
        }
    }
    Ok(())
}

/// Checks the segments before `segments[upto]` where they meet: each one's
/// first line is at the seq its name says and chains to the last line of
/// the one before, and each one's last line is the seq before the next
/// segment's first. Returns the last record before `segments[upto]`.
fn check_seams(segments: &[SegmentFile], upto: usize, chain_id: &str) -> Result<Option<RecordInfo>, StoreError> {
    let mut scratch = Vec::new();
    let mut last: Option<RecordInfo> = None;
    let active = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate().take(upto + 1) {
        let prev = if seg.first_seq == 0 { Some(GENESIS_PREV) } else { last.map(|r| r.leaf) };
        match segment::read_first_line(&seg.path)? {
            Some(line) => {
                segment::parse_record(&line, chain_id, &mut scratch)
                    .and_then(|info| segment::check_link(&info, seg.first_seq, prev.as_ref()))
                    .map_err(|m| {
                        StoreError::corrupt(&seg.path, Location::Line { line: 1, seq: Some(seg.first_seq) }, m)
                    })?;
            }
            // An empty or torn active segment is the scan's to handle.
            None if i == active => {}
            None => {
                return Err(StoreError::corrupt(&seg.path, Location::File, "a sealed segment has no complete line"));
            }
        }
        if i == upto {
            break;
        }
        let tail = segment::read_tail(&seg.path)?;
        let Some((offset, line)) = tail.last_line.filter(|_| tail.torn == 0) else {
            let at = Location::Offset { offset: tail.complete_len, seq: None };
            return Err(StoreError::corrupt(&seg.path, at, "a sealed segment ends inside a line"));
        };
        let seq = segments[i + 1].first_seq - 1;
        let info = segment::parse_record(&line, chain_id, &mut scratch)
            .and_then(|info| segment::check_link(&info, seq, None).map(|()| info))
            .map_err(|m| StoreError::corrupt(&seg.path, Location::Offset { offset, seq: Some(seq) }, m))?;
        last = Some(info);
    }
    Ok(last)
}
