//! What can go wrong in a store, and where.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Where in a file a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole (its name, its first bytes, its place among others).
    File,
    /// A line (1-based) of a segment or checkpoints file, with the seq the
    /// line holds or should hold, when that is known.
    Line {
        /// 1-based line number.
        line: u64,
        /// The record's seq (the expected one when the line does not parse).
        seq: Option<u64>,
    },
    /// A byte offset (the last line of a file read from its end, outbox
    /// frames), with the seq there when known.
    Offset {
        /// 0-based byte offset.
        offset: u64,
        /// The seq of the record or frame there.
        seq: Option<u64>,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File => Ok(()),
            Location::Line { line, seq: Some(seq) } => write!(f, ", line {line} (seq {seq})"),
            Location::Line { line, seq: None } => write!(f, ", line {line}"),
            Location::Offset { offset, seq: Some(seq) } => write!(f, ", offset {offset} (seq {seq})"),
            Location::Offset { offset, seq: None } => write!(f, ", offset {offset}"),
        }
    }
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system call failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`write`, `fsync`, `open`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A file holds something the store did not write, or lost something it
    /// acknowledged. Never repaired silently: an operator must look.
    #[error("corrupt store file {}{location}: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where in it.
        location: Location,
        /// What is wrong.
        message: String,
    },
    /// The directory belongs to another chain.
    #[error("{} belongs to chain {found:?}, not {expected:?}", path.display())]
    WrongChain {
        /// The `chain.json` read.
        path: PathBuf,
        /// The chain id the caller asked for.
        expected: String,
        /// The chain id the directory holds.
        found: String,
    },
    /// Another writer (another `otel-audit serve` on the same store) holds
    /// the chain.
    #[error("{} is locked: another otel-audit process is writing this chain (one writer per chain; give each instance its own directory or instance_id)", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An earlier fsync failed, so what the page cache holds can no longer
    /// be trusted; reopen the store to recover from what is on disk.
    #[error("the store is poisoned by an earlier failed fsync or rollback; reopen it to recover from disk")]
    Poisoned,
    /// The caller passed something the store refuses (a record with a
    /// newline, records and leaves of different lengths, a checkpoint that
    /// does not fit the chain). Nothing was written.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// What was refused (`append`, `checkpoint`).
        what: &'static str,
        /// Why.
        message: String,
    },
    /// An outbox read started in the middle of a frame: the caller's seq is
    /// not a frame boundary.
    #[error("seq {seq} falls inside the outbox frame of seqs {first_seq}..{end} in {}", path.display())]
    InsideFrame {
        /// The outbox file.
        path: PathBuf,
        /// The seq asked for.
        seq: u64,
        /// First seq of the frame.
        first_seq: u64,
        /// One past the frame's last seq.
        end: u64,
    },
}

impl StoreError {
    pub(super) fn corrupt(path: &Path, location: Location, message: impl Into<String>) -> Self {
        StoreError::Corrupt { path: path.to_path_buf(), location, message: message.into() }
    }

    pub(super) fn invalid(what: &'static str, message: impl Into<String>) -> Self {
        StoreError::Invalid { what, message: message.into() }
    }
}

/// Wraps an I/O error with the operation and path: `.map_err(io("write", &path))`.
pub(super) fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.to_path_buf(), source }
}
