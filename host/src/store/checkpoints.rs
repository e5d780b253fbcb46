//! `checkpoints.jsonl`: one JSON object per signed checkpoint, with the
//! Merkle frontier it was signed over, so that recovery replays only the
//! leaves after the last one.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use audit_format::Hash;
use audit_format::hash::to_hex;
use serde::{Deserialize, Serialize};

use super::CheckpointEntry;
use super::durable;
use super::error::{Location, StoreError, io};
use super::segment;

/// File name of the checkpoint log in a chain directory.
pub(super) const FILE_NAME: &str = "checkpoints.jsonl";

/// One line of the file, as written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    size: u64,
    root: String,
    time_unix_nano: String,
    frontier: Vec<String>,
    note: String,
}

/// The line for `entry`, with its `\n`.
pub(super) fn encode(entry: &CheckpointEntry) -> Vec<u8> {
    let line = Line {
        size: entry.size,
        root: to_hex(&entry.root),
        time_unix_nano: entry.time_unix_nano.to_string(),
        frontier: entry.frontier.iter().map(to_hex).collect(),
        note: entry.note.clone(),
    };
    let mut bytes = serde_json::to_vec(&line).expect("a checkpoint line serializes");
    bytes.push(b'\n');
    bytes
}

/// Parses one line (without its `\n`).
pub(super) fn decode(bytes: &[u8]) -> Result<CheckpointEntry, String> {
    let line: Line = serde_json::from_slice(bytes).map_err(|e| format!("not a checkpoint line: {e}"))?;
    let hash = |what: &str, text: &str| -> Result<Hash, String> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(text, &mut hash).map_err(|e| format!("{what} {text:?} is not 64 hex digits: {e}"))?;
        Ok(hash)
    };
    Ok(CheckpointEntry {
        size: line.size,
        root: hash("root", &line.root)?,
        time_unix_nano: line
            .time_unix_nano
            .parse()
            .map_err(|e| format!("time_unix_nano {:?} is not a decimal integer: {e}", line.time_unix_nano))?,
        frontier: line.frontier.iter().map(|h| hash("frontier node", h)).collect::<Result<_, _>>()?,
        note: line.note,
    })
}

/// The append-only checkpoint log of one chain.
pub(super) struct CheckpointLog {
    path: PathBuf,
    /// Opened on first use, so a chain without checkpoints has no file.
    file: Option<File>,
    len: u64,
}

/// What opening the log found.
pub(super) struct Loaded {
    pub log: CheckpointLog,
    /// The last complete entry, with the offset of its line.
    pub last: Option<(u64, CheckpointEntry)>,
    /// Bytes of a torn last line that were truncated away.
    pub torn: u64,
}

impl CheckpointLog {
    /// Opens the log in `dir`, truncating a torn last line (a crash during
    /// an append that was never acknowledged), and reads its last entry.
    pub fn open(dir: &Path) -> Result<Loaded, StoreError> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(Loaded { log: CheckpointLog { path, file: None, len: 0 }, last: None, torn: 0 });
        }
        let tail = segment::read_tail(&path)?;
        let file = OpenOptions::new().write(true).open(&path).map_err(io("open", &path))?;
        if tail.torn > 0 {
            durable::truncate(&file, &path, tail.complete_len)?;
        }
        let last = match tail.last_line {
            Some((offset, line)) => Some((
                offset,
                decode(&line).map_err(|m| StoreError::corrupt(&path, Location::Offset { offset, seq: None }, m))?,
            )),
            None => None,
        };
        let log = CheckpointLog { path, file: Some(file), len: tail.complete_len };
        Ok(Loaded { log, last, torn: tail.torn })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line and fsyncs it. On failure the file is cut back to
    /// its previous length; `poisoned` is set when that cannot be trusted.
    pub fn append(&mut self, line: &[u8], poisoned: &mut bool) -> Result<(), StoreError> {
        let file = match &self.file {
            Some(file) => file,
            None => &*self.file.insert(durable::create_empty(&self.path)?),
        };
        if let Err(e) = file.write_all_at(line, self.len) {
            if durable::truncate(file, &self.path, self.len).is_err() {
                *poisoned = true;
            }
            return Err(io("write", &self.path)(e));
        }
        if let Err(e) = file.sync_data() {
            let _ = file.set_len(self.len);
            *poisoned = true;
            return Err(io("fsync", &self.path)(e));
        }
        self.len += line.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let entry = CheckpointEntry {
            size: 5,
            root: [7; 32],
            time_unix_nano: 1_795_000_000_123_456_789,
            frontier: vec![[1; 32], [2; 32]],
            note: "origin\n5\nroot=\n\n— key sig\n".into(),
        };
        let line = encode(&entry);
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.starts_with(r#"{"size":5,"root":"0707"#), "{text}");
        assert!(text.contains(r#""time_unix_nano":"1795000000123456789""#), "{text}");
        assert_eq!(text.matches('\n').count(), 1, "the note's newlines are escaped");
        assert_eq!(decode(&line[..line.len() - 1]).unwrap(), entry);
        assert!(decode(br#"{"size":1}"#).unwrap_err().contains("missing field"));
    }
}
