//! `checkpoints.jsonl`: one JSON object per signed checkpoint, with the
//! Merkle frontier it was signed over, so that recovery replays only the
//! leaves after the last one. The chain worker appends ([`CheckpointLog`]);
//! exporters read it on other threads ([`CheckpointReader`]).

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::num::ParseIntError;
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

/// Why a line of the file is not a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointLineError {
    /// Not JSON, or not the fields of a checkpoint line.
    #[error("not a checkpoint line: {0}")]
    Json(#[from] serde_json::Error),
    /// `root` or a frontier node is not a hash.
    #[error("{what} {text:?} is not 64 hex digits: {source}")]
    Hash {
        /// `root` or `frontier node`.
        what: &'static str,
        /// The text found.
        text: String,
        /// Why it is not a hash.
        #[source]
        source: hex::FromHexError,
    },
    /// `time_unix_nano` is not a number.
    #[error("time_unix_nano {text:?} is not a decimal integer: {source}")]
    Time {
        /// The text found.
        text: String,
        /// Why it is not a number.
        #[source]
        source: ParseIntError,
    },
}

/// Parses one line (without its `\n`).
pub fn parse_checkpoint_line(bytes: &[u8]) -> Result<CheckpointEntry, CheckpointLineError> {
    let line: Line = serde_json::from_slice(bytes)?;
    let hash = |what: &'static str, text: &str| -> Result<Hash, CheckpointLineError> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(text, &mut hash).map_err(|source| CheckpointLineError::Hash {
            what,
            text: text.to_owned(),
            source,
        })?;
        Ok(hash)
    };
    Ok(CheckpointEntry {
        size: line.size,
        root: hash("root", &line.root)?,
        time_unix_nano: line
            .time_unix_nano
            .parse()
            .map_err(|source| CheckpointLineError::Time { text: line.time_unix_nano.clone(), source })?,
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
                parse_checkpoint_line(&line)
                    .map_err(|e| StoreError::corrupt(&path, Location::Offset { offset, seq: None }, e.to_string()))?,
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

/// A place in the file: a line's 0-based number and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPos {
    /// Lines before it: the checkpoints a reader at this place has passed.
    pub line: u64,
    /// Its byte offset.
    pub offset: u64,
}

/// Where a [`CheckpointReader`] is.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// After this many lines; the offset is found by the first read.
    Line(u64),
    /// Found.
    Pos(CheckpointPos),
}

/// Reads the checkpoints of a chain from a line on, beside the chain's
/// worker, which may be appending: only complete lines are read, so an
/// append in progress (or a torn last line, which the next open of the
/// store truncates) waits for a later read. A missing file has no
/// checkpoints yet.
#[derive(Debug)]
pub struct CheckpointReader {
    path: PathBuf,
    place: Place,
}

impl CheckpointReader {
    /// A reader of the chain in `chain_dir`, placed after its first `line`
    /// checkpoints.
    pub fn new(chain_dir: &Path, line: u64) -> Self {
        CheckpointReader { path: chain_dir.join(FILE_NAME), place: Place::Line(line) }
    }

    /// The checkpoints from the reader's place on that cover at most
    /// `max_size` records, in file order, and the place after them. The
    /// reader stays where it is ([`CheckpointReader::seek`] moves it).
    /// Reading stops before a line that does not parse; it is an error
    /// (naming file and line) when it is the first one to read.
    pub fn read(&mut self, max_size: u64) -> Result<(Vec<CheckpointEntry>, CheckpointPos), StoreError> {
        let start = match self.place {
            Place::Pos(pos) => pos,
            Place::Line(line) => CheckpointPos { line, offset: 0 },
        };
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), start)),
            Err(e) => return Err(io("open", &self.path)(e)),
        };
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(start.offset))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(io("read", &self.path))?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(&bytes[..0], |end| &bytes[..=end]);
        let mut lines = complete.split_inclusive(|b| *b == b'\n');
        let mut pos = start;
        if let Place::Line(skip) = self.place {
            // A file with fewer lines than the reader passed (cut back
            // since) is read on from its end.
            pos.offset = lines.by_ref().take(skip as usize).map(|l| l.len() as u64).sum();
            self.place = Place::Pos(pos);
        }
        let mut entries = Vec::new();
        for line in lines {
            let entry = match parse_checkpoint_line(&line[..line.len() - 1]) {
                Ok(entry) => entry,
                Err(_) if !entries.is_empty() => break,
                Err(e) => {
                    let at = Location::Line { line: pos.line + 1, seq: None };
                    return Err(StoreError::corrupt(&self.path, at, e.to_string()));
                }
            };
            if entry.size > max_size {
                break;
            }
            entries.push(entry);
            pos = CheckpointPos { line: pos.line + 1, offset: pos.offset + line.len() as u64 };
        }
        Ok((entries, pos))
    }

    /// Moves the reader to `pos` (a place a [`CheckpointReader::read`] returned).
    pub fn seek(&mut self, pos: CheckpointPos) {
        self.place = Place::Pos(pos);
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
        assert_eq!(parse_checkpoint_line(&line[..line.len() - 1]).unwrap(), entry);
        assert!(parse_checkpoint_line(br#"{"size":1}"#).unwrap_err().to_string().contains("missing field"));
    }

    fn entry(size: u64) -> CheckpointEntry {
        CheckpointEntry {
            size,
            root: [size as u8; 32],
            time_unix_nano: size,
            frontier: vec![],
            note: format!("n{size}"),
        }
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let line = |root: &str, time: &str| {
            format!(r#"{{"size":1,"root":"{root}","time_unix_nano":"{time}","frontier":[],"note":""}}"#)
        };
        let error = |text: &str| parse_checkpoint_line(text.as_bytes()).unwrap_err();
        let hex = "ab".repeat(32);
        assert!(parse_checkpoint_line(line(&hex, "7").as_bytes()).is_ok());
        let e = error(&line("xyz", "7"));
        assert!(matches!(e, CheckpointLineError::Hash { what: "root", .. }), "{e:?}");
        assert!(e.to_string().starts_with(r#"root "xyz" is not 64 hex digits: "#), "{e}");
        let e = error(&line(&hex, "-7"));
        assert!(matches!(e, CheckpointLineError::Time { .. }), "{e:?}");
        assert!(e.to_string().starts_with(r#"time_unix_nano "-7" is not a decimal integer: "#), "{e}");
        let e = error(&line(&hex, "7").replace("[]", r#"["00"]"#));
        assert!(e.to_string().starts_with(r#"frontier node "00" is not 64 hex digits"#), "{e}");
        let e = error(r#"{"size":1,"extra":2}"#);
        assert!(matches!(e, CheckpointLineError::Json(_)), "{e:?}");
        assert!(e.to_string().starts_with("not a checkpoint line: "), "{e}");
    }

    #[test]
    fn a_reader_reads_complete_lines_up_to_a_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = CheckpointReader::new(dir.path(), 0);
        assert_eq!(reader.read(u64::MAX).unwrap(), (vec![], CheckpointPos { line: 0, offset: 0 }));
        let lines: Vec<Vec<u8>> = [10, 20, 30].map(|size| encode(&entry(size))).into();
        let mut text = lines.concat();
        text.extend_from_slice(br#"{"size":40,"ro"#);
        std::fs::write(dir.path().join(FILE_NAME), &text).unwrap();
        let (entries, pos) = reader.read(25).unwrap();
        assert_eq!(entries, [entry(10), entry(20)]);
        assert_eq!(pos, CheckpointPos { line: 2, offset: (lines[0].len() + lines[1].len()) as u64 });
        // Reading again without a seek reads the same.
        assert_eq!(reader.read(25).unwrap().0.len(), 2);
        reader.seek(pos);
        // The torn last line is not read.
        let (entries, end) = reader.read(u64::MAX).unwrap();
        assert_eq!(entries, [entry(30)]);
        assert_eq!(end, CheckpointPos { line: 3, offset: lines.concat().len() as u64 });
        // A reader placed after two lines finds their offset.
        let mut later = CheckpointReader::new(dir.path(), 2);
        assert_eq!(later.read(u64::MAX).unwrap(), (vec![entry(30)], end));
    }

    #[test]
    fn a_line_that_does_not_parse_is_an_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut text = [encode(&entry(10)), encode(&entry(20))].concat();
        text.extend_from_slice(b"{\"size\":30}\n");
        text.extend_from_slice(&encode(&entry(40)));
        std::fs::write(&path, &text).unwrap();
        let mut reader = CheckpointReader::new(dir.path(), 0);
        // What comes before the damaged line is read.
        let (entries, pos) = reader.read(u64::MAX).unwrap();
        assert_eq!((entries.len(), pos.line), (2, 2));
        reader.seek(pos);
        let error = reader.read(u64::MAX).unwrap_err();
        match &error {
            StoreError::Corrupt { path: p, location: Location::Line { line: 3, seq: None }, message } => {
                assert_eq!(p, &path);
                assert!(message.starts_with("not a checkpoint line: missing field"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let shown = error.to_string();
        assert!(shown.starts_with(&format!("corrupt store file {}, line 3: ", path.display())), "{shown}");
    }
}
