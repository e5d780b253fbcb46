//! Declared gaps: the way on for a chain whose store cannot recover (a
//! complete line that does not chain, say after disk corruption), which
//! `serve` otherwise refuses to open.
//!
//! `otel-audit declare-gap` seals every segment as it is (the damaged lines
//! stay as evidence) and starts a new segment whose only line is a gap
//! record (docs/chain-format.md §1.8): at a seq past every line on disk,
//! with `prev` the leaf of the last checkpointed record and the
//! checkpoint's size and root inside. The seqs from the checkpoint up to
//! the gap record are declared lost; the Merkle tree counts them as gap
//! leaves, so later checkpoints extend the earlier ones. Only records no
//! checkpoint covers can ever be declared lost.

use std::fs;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use audit_format::hash::to_hex;

use super::checkpoints::CheckpointLog;
use super::durable;
use super::error::{Location, StoreError, io};
use super::segment;
use super::{ChainStore, StoreOptions, recovery};

/// What [`declare_gap`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredGap {
    /// The chain.
    pub chain_id: String,
    /// The size of the checkpoint the chain continues from.
    pub checkpoint_size: u64,
    /// The gap record's seq: seqs `checkpoint_size..seq` are declared lost.
    pub seq: u64,
    /// The new segment.
    pub segment: PathBuf,
}

/// Declares the records of the chain in `dir` after its last checkpoint
/// lost and lets the chain continue after a gap record. Refuses a chain
/// that recovers (nothing is lost), one without a checkpoint, and one whose
/// checkpointed records are themselves damaged or missing.
pub fn declare_gap(dir: &Path, reason: &str, received_at_unix_nano: u64) -> Result<DeclaredGap, StoreError> {
    let refuse = |message: String| StoreError::invalid("declare-gap", message);
    let chain_id = recovery::read_chain_id(dir)?;
    if reason.trim().is_empty() {
        return Err(refuse("give a reason: it is recorded in the gap record".into()));
    }
    match ChainStore::open(dir, &chain_id, StoreOptions { outbox: false, ..StoreOptions::default() }) {
        Ok((store, _)) => {
            return Err(refuse(format!(
                "chain {chain_id} recovers (next seq {}): nothing is lost, so there is no gap to declare",
                store.head().seq
            )));
        }
        Err(StoreError::Corrupt { .. }) => {}
        Err(other) => return Err(other),
    }
    let Some((_, last)) = CheckpointLog::open(dir)?.last else {
        return Err(refuse(format!(
            "chain {chain_id} has no checkpoint to continue from: move its directory aside and let serve start a new chain"
        )));
    };
    let size = last.size;
    if size == 0 {
        return Err(refuse(format!("chain {chain_id}'s last checkpoint covers no record: start a new chain instead")));
    }
    let segments = segment::list(dir)?;
    // The gap record goes past every line on disk, damaged or not, so no
    // seq is ever used twice.
    let mut end = 0;
    for seg in &segments {
        let bytes = fs::read(&seg.path).map_err(io("read", &seg.path))?;
        end = end.max(seg.first_seq + memchr::memchr_iter(b'\n', &bytes).count() as u64);
    }
    if end < size {
        return Err(refuse(format!(
            "the segments hold {end} lines but the last checkpoint covers {size} records: checkpointed records are missing, which no gap can excuse"
        )));
    }
    let prev = checkpointed_leaf(&segments, &chain_id, size - 1)?;
    let received_at = audit_format::rfc3339_nanos(received_at_unix_nano);
    let record = serde_json::json!({
        "chain": {"id": chain_id, "prev": to_hex(&prev), "seq": end.to_string()},
        "gap": {"checkpoint_root": to_hex(&last.root), "checkpoint_size": size.to_string(), "reason": reason},
        "received_at": received_at,
        "v": 1,
    });
    let mut line = serde_json_canonicalizer::to_vec(&record).map_err(|e| refuse(e.to_string()))?;
    line.push(b'\n');

    let path = dir.join(segment::name(end));
    for seg in segments.iter().filter(|s| s.path != path) {
        durable::set_mode(&seg.path, durable::sealed_mode(&seg.path))?;
    }
    let file = durable::create_empty(&path)?;
    durable::set_mode(&path, durable::active_mode(&path))?;
    file.write_all_at(&line, 0).map_err(io("write", &path))?;
    file.sync_all().map_err(io("fsync", &path))?;
    Ok(DeclaredGap { chain_id, checkpoint_size: size, seq: end, segment: path })
}

/// The leaf of record `seq`, which a checkpoint covers: it must read back.
fn checkpointed_leaf(segments: &[segment::SegmentFile], chain_id: &str, seq: u64) -> Result<[u8; 32], StoreError> {
    let seg = segments.iter().rev().find(|s| s.first_seq <= seq).ok_or_else(|| {
        StoreError::invalid("declare-gap", format!("no segment holds seq {seq}, the last checkpointed record"))
    })?;
    let bytes = fs::read(&seg.path).map_err(io("read", &seg.path))?;
    let index = (seq - seg.first_seq) as usize;
    let line = bytes.split(|b| *b == b'\n').nth(index).unwrap_or_default();
    let at = Location::Line { line: index as u64 + 1, seq: Some(seq) };
    let info = segment::parse_record(line, chain_id, &mut Vec::new())
        .and_then(|info| segment::check_link(&info, seq, None).map(|()| info))
        .map_err(|m| {
            StoreError::corrupt(
                &seg.path,
                at,
                format!("{m}: the last checkpointed record is damaged, so the chain cannot continue from it"),
            )
        })?;
    Ok(info.leaf)
}
