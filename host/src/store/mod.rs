//! The durable store of one chain: append-only segment files of canonical
//! records, signed checkpoints with their Merkle frontier, and (when
//! exporters are configured) an outbox of the OTLP requests to deliver.
//!
//! Layout of a chain directory:
//!
//! ```text
//! chain.json                      {"chain_id":"...","origin":"...","format":2}
//! seg-<20-digit first seq>.jsonl  one canonical record per line; sealed segments are read-only (0400)
//! checkpoints.jsonl               {"size":N,"root":"<hex>","time_unix_nano":"<n>","frontier":[..],"note":".."}
//! outbox/<20-digit seq>.frames    OTLP requests as frames (see [`OutboxReader`])
//! tiles/level-<L>.hashes          the Merkle tree's hashes, for proofs ([`tiles`])
//! cursor-<exporter>.json          {"next_seq":N}
//! ```
//!
//! The contract ([`ChainStore::append`]): a batch's records are acknowledged
//! only once written and fsync'd; a failed batch leaves neither bytes nor a
//! moved head behind, and after a failed fsync the store refuses further
//! appends until it is reopened, because the page cache can no longer be
//! trusted. [`ChainStore::open`] recovers from a crash at any point: it
//! drops a torn last line (never acknowledged) and refuses, naming file and
//! line, anything else that does not chain.
//!
//! A chain that cannot recover can go on after a declared gap
//! ([`declare_gap`]); open then starts from the gap record's segment.
//!
//! This is not the verifier: open checks the active segment and the seams
//! between segments; `otel-audit verify` checks everything.

mod access;
mod checkpoints;
mod cursor;
mod durable;
mod error;
mod gap;
mod lock;
mod outbox;
mod recovery;
mod segment;
mod serving;
#[cfg(test)]
mod tests;
pub mod tiles;

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use audit_format::ChainHead;
use audit_format::Hash;

use crate::merkle::Frontier;
use crate::otlp::Signal;

pub use access::{FileAccess, WritableByOthers, check_not_writable_by_others};
pub use checkpoints::{CheckpointLineError, CheckpointPos, CheckpointReader, parse_checkpoint_line};
pub use cursor::{CursorKind, read_cursor, write_cursor};
pub use error::{Location, StoreError};
pub use gap::{DeclaredGap, declare_gap};
pub use outbox::{Frame, OutboxReader, prune_outbox};
pub use serving::{ServingDigests, key_check, last_policy_digest, read_serving, write_serving};

use checkpoints::CheckpointLog;
use error::io;
use outbox::OutboxWriter;

/// The highest next seq a chain may reach (seqs run to 2^63 - 1).
const MAX_NEXT_SEQ: u64 = 1 << 63;

/// How a chain's store is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// A segment is sealed and a new one started before a batch would take
    /// it past this many bytes (a batch is never split, so one larger than
    /// this gets a segment of its own).
    pub segment_size: u64,
    /// Keep an outbox of OTLP requests for downstream exporters.
    pub outbox: bool,
    /// A chain created by [`ChainStore::open`] gets the origin
    /// `<prefix>/<chain id>/<random>`; an existing chain keeps its own.
    pub origin_prefix: String,
    /// Who may read the chain's files: set on the chain directory and
    /// everything in it at open; what is created later follows.
    pub access: FileAccess,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_size: 128 << 20,
            outbox: false,
            origin_prefix: "otel-audit".to_owned(),
            access: FileAccess::Private,
        }
    }
}

/// The records of one client request, as the processor produced them.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// Canonical records in chain order (no `\n` inside).
    pub records: &'a [Vec<u8>],
    /// Their leaf hashes, as the processor computed them.
    pub leaves: &'a [Hash],
    /// The OTLP request to keep in the outbox for exporters (ignored when
    /// the store has no outbox, and for a request that produced no record).
    /// A request appended in parts gives it with its last part only.
    pub outbox: Option<(Signal, &'a [u8])>,
    /// Records of the same request appended by the call before (a request
    /// split around a checkpoint): its frame covers them too, and the
    /// segment is not rotated between the parts. Only the first append of
    /// a call may continue a request.
    pub continues: u64,
}

/// What one [`ChainStore::append`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendStats {
    /// Records appended.
    pub records: u64,
    /// Bytes appended to the segment (records and their newlines).
    pub bytes: u64,
    /// Bytes appended to the outbox.
    pub outbox_bytes: u64,
    /// Wall time of the fsyncs that made them durable.
    pub fsync: Duration,
}

/// A batch written into a chain's files but not yet durable
/// ([`ChainStore::write`]): [`sync`](Unsynced::sync) makes it so, on any
/// thread, and [`ChainStore::complete`] takes the outcome.
#[derive(Debug)]
pub struct Unsynced {
    /// The files written, each with its path (for errors); the segment first.
    files: Vec<(File, PathBuf)>,
    /// Where the records went in the segment: offset and length.
    records_at: (u64, u64),
    /// The fsync fails, as a failing disk's does (unit tests).
    #[cfg(test)]
    fault: bool,
}

impl Unsynced {
    /// Fsyncs the written files' data, then lets the records go from the
    /// page cache; how long the fsyncs took.
    pub fn sync(&self) -> Result<Duration, StoreError> {
        let started = Instant::now();
        #[cfg(test)]
        if self.fault {
            let path = &self.files[0].1;
            return Err(io("fsync", path)(std::io::Error::other("injected fsync failure")));
        }
        for (file, path) in &self.files {
            file.sync_data().map_err(io("fsync", path))?;
        }
        let fsync = started.elapsed();
        let (offset, len) = self.records_at;
        durable::drop_cached(&self.files[0].0, offset, len);
        Ok(fsync)
    }
}

/// What a written batch moves once it is durable.
#[derive(Debug)]
struct Written {
    records: u64,
    bytes: u64,
    outbox_bytes: u64,
    next_seq: u64,
    leaves: Vec<Hash>,
}

/// One line of `checkpoints.jsonl`: a signed checkpoint and the frontier
/// it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointEntry {
    /// Records covered: seqs `0..size`.
    pub size: u64,
    /// The RFC 6962 Merkle root over their leaves.
    pub root: Hash,
    /// When it was signed, Unix nanoseconds.
    pub time_unix_nano: u64,
    /// The Merkle frontier of `size` leaves ([`Frontier::nodes`]).
    pub frontier: Vec<Hash>,
    /// The full signed note.
    pub note: String,
}

/// What [`ChainStore::open`] found and did, for logging.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The seq the next record gets.
    pub next_seq: u64,
    /// Bytes of a torn last segment line (a write a crash cut short, never
    /// acknowledged) that were truncated away.
    pub torn_bytes: u64,
    /// Outbox frames dropped: torn, or for records that were not written.
    pub dropped_outbox_frames: u64,
    /// Leaves hashed again to rebuild the Merkle frontier after the last
    /// checkpoint.
    pub replayed_leaves: u64,
    /// One line per notable thing found or repaired.
    pub notes: Vec<String>,
}

/// The segment being appended to.
struct ActiveSegment {
    path: PathBuf,
    file: File,
    /// Bytes of whole, durable lines.
    len: u64,
}

/// A failure injected by unit tests after a batch's segment bytes are
/// written.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The outbox write fails (as with ENOSPC).
    Write,
    /// The fsync fails.
    Fsync,
    /// A rotation fails after sealing the old segment.
    Rotate,
}

/// The store of one chain, owned by the chain's worker thread.
pub struct ChainStore {
    /// Held while the store is open: one writer per chain.
    _lock: lock::DirLock,
    dir: PathBuf,
    /// The origin line of the chain's checkpoints, fixed at its creation.
    origin: String,
    options: StoreOptions,
    head: ChainHead,
    frontier: Frontier,
    /// The tree's hashes for proofs; always as many leaves as `frontier`.
    tiles: tiles::TileWriter,
    segment: ActiveSegment,
    outbox: Option<OutboxWriter>,
    checkpoints: CheckpointLog,
    last_checkpoint: Option<CheckpointEntry>,
    /// Set when an fsync (or undoing a failed write) failed.
    poisoned: bool,
    /// Set while a rotation is unfinished: the old segment may already be
    /// sealed, so nothing more may go into it.
    rotation_pending: bool,
    /// Reused for each batch's segment bytes.
    records_buf: Vec<u8>,
    /// Reused for each batch's outbox frames.
    frames_buf: Vec<u8>,
    /// The batch [`ChainStore::write`] wrote that waits for its fsync.
    unsynced: Option<Written>,
    #[cfg(test)]
    fault: Option<Fault>,
}

impl ChainStore {
    /// The directory name for a chain id: `[A-Za-z0-9._-]` kept, anything
    /// else `_`, at most 200 bytes, never `.` or `..`. Different ids can
    /// share a name; `chain.json` holds the exact id, so opening the wrong
    /// one fails with [`StoreError::WrongChain`].
    pub fn chain_dir_name(chain_id: &str) -> String {
        let mut name: String = chain_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
            .take(200)
            .collect();
        if name.bytes().all(|b| b == b'.') {
            name = "_".repeat(name.len().max(1));
        }
        name
    }

    /// Opens the store of `chain_id` in `chain_dir`, creating it if absent
    /// and recovering it after a crash (see the module docs).
    pub fn open(chain_dir: &Path, chain_id: &str, options: StoreOptions) -> Result<(Self, Recovery), StoreError> {
        recovery::open(chain_dir, chain_id, options)
    }

    /// Whether a failed fsync (or rollback) made the store unusable: it must
    /// be reopened, which recovers from what is on disk.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The chain's head: the next seq and the leaf of the last record.
    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    /// The Merkle frontier over every record.
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// The last checkpoint stored.
    pub fn last_checkpoint(&self) -> Option<&CheckpointEntry> {
        self.last_checkpoint.as_ref()
    }

    /// The origin line of the chain's checkpoints (from `chain.json`): its
    /// identity, fixed when the chain was created.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The chain directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends the records of a group of requests with one write and one
    /// fsync per file; the outbox gets one frame per request. The head and
    /// frontier move only once everything is durable. On a write error the
    /// files are cut back to where they were and the store stays usable; on
    /// an fsync error it is also poisoned (every later append returns
    /// [`StoreError::Poisoned`] until it is reopened).
    pub fn append(&mut self, batch: &[Append<'_>]) -> Result<AppendStats, StoreError> {
        match self.write(batch)? {
            Some(unsynced) => {
                let synced = unsynced.sync();
                self.complete(synced)
            }
            None => Ok(AppendStats::default()),
        }
    }

    /// [`append`](Self::append) in two halves, so that the fsync can run on
    /// another thread while the store's owner goes on (the chain worker
    /// processes its next group meanwhile): writes the batch into the files
    /// (page cache) and returns what [`Unsynced::sync`] must make durable,
    /// or `None` for a batch without records. Until [`complete`](Self::complete)
    /// takes the result, the head stays and the store refuses anything else.
    /// A write error cuts the files back, as in `append`.
    pub fn write(&mut self, batch: &[Append<'_>]) -> Result<Option<Unsynced>, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if self.unsynced.is_some() {
            return Err(StoreError::invalid("append", "the previous append is still waiting for its fsync"));
        }
        let (records, bytes) = validate(batch)?;
        if records == 0 {
            return Ok(None);
        }
        let next_seq = self.head.seq.checked_add(records).filter(|n| *n <= MAX_NEXT_SEQ).ok_or_else(|| {
            StoreError::invalid("append", format!("{records} records after seq {} overflow the chain", self.head.seq))
        })?;
        let continues = batch.first().map_or(0, |a| a.continues);
        if continues > 0 && self.rotation_pending {
            // The frame of the request would straddle two outbox files.
            return Err(StoreError::invalid("append", "a request cannot go on after a failed segment rotation"));
        }
        if self.rotation_pending
            || (continues == 0
                && self.segment.len > 0
                && self.segment.len.saturating_add(bytes) > self.options.segment_size)
        {
            self.rotate()?;
        }
        self.encode(batch, bytes);
        let written = self.write_encoded().and_then(|()| self.sync_handles());
        let files = match written {
            Ok(files) => files,
            Err(error) => {
                self.roll_back();
                return Err(error);
            }
        };
        let leaves = batch.iter().flat_map(|a| a.leaves.iter().copied()).collect();
        let outbox_bytes = self.frames_buf.len() as u64;
        self.unsynced = Some(Written { records, bytes, outbox_bytes, next_seq, leaves });
        #[cfg(test)]
        let fault = self.fault.take_if(|f| *f == Fault::Fsync).is_some();
        Ok(Some(Unsynced {
            files,
            records_at: (self.segment.len, bytes),
            #[cfg(test)]
            fault,
        }))
    }

    /// Ends the last [`write`](Self::write) with the outcome of its
    /// [`Unsynced::sync`]: once durable, the head and frontier move past its
    /// records; after a failed fsync the files are cut back and the store is
    /// poisoned, as in [`append`](Self::append).
    pub fn complete(&mut self, synced: Result<Duration, StoreError>) -> Result<AppendStats, StoreError> {
        let Some(written) = self.unsynced.take() else {
            return Err(StoreError::invalid("append", "no append is waiting for its fsync"));
        };
        let fsync = match synced {
            Ok(fsync) => fsync,
            Err(error) => {
                self.poisoned = true;
                self.roll_back();
                return Err(error);
            }
        };
        self.segment.len += written.bytes;
        if let Some(outbox) = self.outbox.as_mut() {
            outbox.len += written.outbox_bytes;
        }
        for leaf in &written.leaves {
            self.frontier.push(*leaf);
            self.tiles.push(*leaf);
        }
        if let Some(last) = written.leaves.last() {
            self.head.prev = *last;
        }
        self.head.seq = written.next_seq;
        // The records are durable; the tiles are derived from them. A write
        // that fails here is tried again, and must succeed, before the next
        // checkpoint (which fsyncs them) is written.
        let _ = self.tiles.write();
        Ok(AppendStats { records: written.records, bytes: written.bytes, outbox_bytes: written.outbox_bytes, fsync })
    }

    /// Makes the next append's fsync fail, as a failing disk does (for
    /// the tests of the chain worker, which owns the store).
    #[cfg(test)]
    pub(crate) fn fail_next_fsync(&mut self) {
        self.fault = Some(Fault::Fsync);
    }

    /// Appends a checkpoint line and fsyncs it. The entry must fit the
    /// chain: its size at most the head, its frontier of that size and with
    /// that root.
    pub fn append_checkpoint(&mut self, entry: &CheckpointEntry) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let invalid = |message: String| StoreError::invalid("checkpoint", message);
        if self.unsynced.is_some() {
            return Err(invalid("an append is still waiting for its fsync".into()));
        }
        if entry.size > self.head.seq {
            return Err(invalid(format!("size {} is past the head (next seq {})", entry.size, self.head.seq)));
        }
        let frontier = Frontier::from_parts(entry.size, entry.frontier.clone()).map_err(invalid)?;
        if frontier.root() != entry.root || (entry.size == self.frontier.size() && entry.root != self.frontier.root()) {
            return Err(invalid(format!("the root of size {} is not the root of the chain's records", entry.size)));
        }
        // What a checkpoint covers is provable from durable tiles.
        self.tiles.sync()?;
        self.checkpoints.append(&checkpoints::encode(entry), &mut self.poisoned)?;
        self.last_checkpoint = Some(entry.clone());
        Ok(())
    }

    /// Seals the active segment and starts the next one (and a new outbox
    /// file) at the head. A rotation that fails half-way is finished by the
    /// next append (the head has not moved, so the names are the same).
    fn rotate(&mut self) -> Result<(), StoreError> {
        let next_seq = self.head.seq;
        self.rotation_pending = true;
        let result = (|| {
            let old = &self.segment;
            old.file.sync_all().map_err(io("fsync", &old.path))?;
            durable::set_mode(&old.path, durable::sealed_mode(&old.path))?;
            let path = self.dir.join(segment::name(next_seq));
            #[cfg(test)]
            if self.fault.take_if(|f| *f == Fault::Rotate).is_some() {
                return Err(io("create", &path)(std::io::Error::from(std::io::ErrorKind::StorageFull)));
            }
            let file = durable::create_empty(&path)?;
            if let Some(outbox) = self.outbox.as_mut() {
                outbox.rotate(next_seq)?;
            }
            self.segment = ActiveSegment { path, file, len: 0 };
            self.rotation_pending = false;
            Ok(())
        })();
        if let Err(StoreError::Io { op, .. }) = &result
            && op.starts_with("fsync")
        {
            self.poisoned = true;
        }
        result
    }

    /// Fills the reused buffers with the batch's segment lines and frames.
    fn encode(&mut self, batch: &[Append<'_>], bytes: u64) {
        self.records_buf.clear();
        self.records_buf.reserve(bytes as usize);
        self.frames_buf.clear();
        let mut seq = self.head.seq;
        for append in batch {
            for record in append.records {
                self.records_buf.extend_from_slice(record);
                self.records_buf.push(b'\n');
            }
            if let (Some(_), Some((signal, payload)), false) = (&self.outbox, append.outbox, append.records.is_empty())
            {
                let count = append.continues + append.records.len() as u64;
                outbox::encode(&mut self.frames_buf, signal, seq - append.continues, count as u32, payload);
            }
            seq += append.records.len() as u64;
        }
    }

    fn write_encoded(&mut self) -> Result<(), StoreError> {
        let segment = &self.segment;
        segment.file.write_all_at(&self.records_buf, segment.len).map_err(io("write", &segment.path))?;
        let Some(outbox) = self.outbox.as_ref().filter(|_| !self.frames_buf.is_empty()) else { return Ok(()) };
        #[cfg(test)]
        if self.fault == Some(Fault::Write) {
            self.fault = None;
            return Err(io("write", &outbox.path)(std::io::Error::from(std::io::ErrorKind::StorageFull)));
        }
        outbox.file.write_all_at(&self.frames_buf, outbox.len).map_err(io("write", &outbox.path))
    }

    /// Handles on the files the encoded batch went into, for its fsync.
    fn sync_handles(&self) -> Result<Vec<(File, PathBuf)>, StoreError> {
        let handle = |file: &File, path: &Path| Ok((file.try_clone().map_err(io("duplicate", path))?, path.to_owned()));
        let mut files = vec![handle(&self.segment.file, &self.segment.path)?];
        if let Some(outbox) = self.outbox.as_ref().filter(|_| !self.frames_buf.is_empty()) {
            files.push(handle(&outbox.file, &outbox.path)?);
        }
        Ok(files)
    }

    /// Cuts the segment and outbox back to their last durable length after
    /// a failed batch; poisons the store if even that fails.
    fn roll_back(&mut self) {
        let segment = durable::truncate(&self.segment.file, &self.segment.path, self.segment.len);
        let outbox = match &self.outbox {
            Some(outbox) => durable::truncate(&outbox.file, &outbox.path, outbox.len),
            None => Ok(()),
        };
        if segment.is_err() || outbox.is_err() {
            self.poisoned = true;
        }
    }
}

/// The chain id the `chain.json` of `chain_dir` names.
pub fn chain_id(chain_dir: &Path) -> Result<String, StoreError> {
    recovery::read_chain_id(chain_dir)
}

/// The checkpoint origin the `chain.json` of `chain_dir` names
/// (`<origin prefix>/<chain id>/<nonce>`).
pub fn chain_origin(chain_dir: &Path) -> Result<String, StoreError> {
    recovery::read_chain_origin(chain_dir)
}

/// The segments of the chain in `chain_dir`, in order: each one's first seq and path.
pub fn segments(chain_dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    Ok(segment::list(chain_dir)?.into_iter().map(|s| (s.first_seq, s.path)).collect())
}

/// The segment of the chain in `chain_dir` that holds `seq` if any: its
/// first seq and path (the last segment starting at or before `seq`).
pub fn segment_of(chain_dir: &Path, seq: u64) -> Result<Option<(u64, PathBuf)>, StoreError> {
    Ok(segment::list(chain_dir)?.into_iter().rev().find(|s| s.first_seq <= seq).map(|s| (s.first_seq, s.path)))
}

/// Checks a batch before anything is written; returns its record count and
/// segment bytes.
fn validate(batch: &[Append<'_>]) -> Result<(u64, u64), StoreError> {
    let mut records = 0u64;
    let mut bytes = 0u64;
    for (i, append) in batch.iter().enumerate() {
        if append.records.len() != append.leaves.len() {
            let message =
                format!("request {i} has {} records but {} leaves", append.records.len(), append.leaves.len());
            return Err(StoreError::invalid("append", message));
        }
        if u32::try_from(append.continues + append.records.len() as u64).is_err()
            || append.outbox.is_some_and(|(_, payload)| u32::try_from(payload.len()).is_err())
        {
            return Err(StoreError::invalid("append", format!("request {i} is too large for one outbox frame")));
        }
        if append.continues > 0 && i > 0 {
            return Err(StoreError::invalid("append", format!("request {i} continues a request but is not the first")));
        }
        for (j, record) in append.records.iter().enumerate() {
            if record.is_empty() || record.contains(&b'\n') {
                let problem = if record.is_empty() { "is empty" } else { "contains a newline" };
                return Err(StoreError::invalid("append", format!("request {i}, record {j} {problem}")));
            }
            bytes += record.len() as u64 + 1;
        }
        records += append.records.len() as u64;
    }
    Ok((records, bytes))
}
