//! The outbox: the OTLP request of every acknowledged append, kept as
//! frames beside the records so that downstream exporters deliver from disk
//! and nothing acknowledged is lost to a slow or dead downstream.
//!
//! `outbox/<20-digit first seq>.frames` holds frames back to back:
//!
//! ```text
//! "OAF1" | signal u8 (0 traces, 1 logs) | first_seq u64 LE | count u32 LE
//!        | payload length u32 LE | crc32 u32 LE | payload
//! ```
//!
//! The CRC (crc32fast) covers signal, first_seq, count, length and payload.
//! A file is named by the chain's next seq when it was started; all its
//! frames start at or after that seq and end at or before the next file's.
//! The chain worker appends; exporters read on other threads with
//! [`OutboxReader`], trusting only frames that end at or before the seq the
//! worker published after its fsync.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::otlp::Signal;

use super::durable;
use super::error::{Location, StoreError, io};

/// Directory of the outbox in a chain directory.
pub(super) const DIR: &str = "outbox";
const MAGIC: &[u8; 4] = b"OAF1";
/// Bytes before a frame's payload.
pub(super) const HEADER_LEN: usize = 25;

/// File name of the outbox file started when the chain's next seq was `first_seq`.
pub(super) fn name(first_seq: u64) -> String {
    format!("{first_seq:020}.frames")
}

fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    durable::numbered_files(dir, "", ".frames")
}

/// One frame: the OTLP request whose records have seqs
/// `first_seq..first_seq + count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Which export request the payload is.
    pub signal: Signal,
    /// Seq of the request's first record.
    pub first_seq: u64,
    /// How many records the request produced.
    pub count: u32,
    /// The OTLP protobuf export request.
    pub payload: Vec<u8>,
}

impl Frame {
    /// One past the seq of the frame's last record.
    pub fn end(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }
}

/// Appends one encoded frame to `out`.
pub(super) fn encode(out: &mut Vec<u8>, signal: Signal, first_seq: u64, count: u32, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.push(match signal {
        Signal::Traces => 0,
        Signal::Logs => 1,
    });
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = crc(&out[start + 4..start + 21], payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

fn crc(fields: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(fields);
    hasher.update(payload);
    hasher.finalize()
}

/// A decoded frame header.
struct Header {
    raw: [u8; HEADER_LEN],
    signal: Signal,
    first_seq: u64,
    count: u32,
    len: u32,
    end: u64,
}

impl Header {
    fn decode(raw: [u8; HEADER_LEN]) -> Result<Header, String> {
        if &raw[..4] != MAGIC {
            return Err(format!("bad frame magic {:?}", &raw[..4]));
        }
        let signal = match raw[4] {
            0 => Signal::Traces,
            1 => Signal::Logs,
            other => return Err(format!("unknown signal {other}")),
        };
        let le64 = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
        let le32 = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
        let (first_seq, count, len) = (le64(5), le32(13), le32(17));
        let end = first_seq.checked_add(u64::from(count)).ok_or("first_seq + count overflows")?;
        Ok(Header { raw, signal, first_seq, count, len, end })
    }

    fn payload_crc_ok(&self, payload: &[u8]) -> bool {
        crc(&self.raw[4..21], payload) == u32::from_le_bytes(self.raw[21..25].try_into().expect("4 bytes"))
    }

    fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// What is at an offset of an outbox file.
enum HeaderRead {
    /// Nothing: the end of the file.
    Eof,
    /// Fewer bytes than a header (a write in progress, or torn by a crash).
    Partial,
    /// A whole header, not yet validated.
    Whole([u8; HEADER_LEN]),
}

fn read_header(file: &File, path: &Path, offset: u64) -> Result<HeaderRead, StoreError> {
    let mut raw = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match file.read_at(&mut raw[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io("read", path)(e)),
        }
    }
    Ok(match got {
        0 => HeaderRead::Eof,
        HEADER_LEN => HeaderRead::Whole(raw),
        _ => HeaderRead::Partial,
    })
}

/// The outbox file the chain worker appends to.
pub(super) struct OutboxWriter {
    pub dir: PathBuf,
    pub path: PathBuf,
    pub file: File,
    /// The seq the file is named by.
    pub first_seq: u64,
    /// Bytes of whole, durable frames.
    pub len: u64,
}

impl OutboxWriter {
    /// Starts a new outbox file at `next_seq`, unless the current one
    /// already starts there (and so holds no frame yet).
    pub fn rotate(&mut self, next_seq: u64) -> Result<(), StoreError> {
        if self.first_seq == next_seq {
            return Ok(());
        }
        let path = self.dir.join(name(next_seq));
        self.file = durable::create_empty(&path)?;
        self.path = path;
        self.first_seq = next_seq;
        self.len = 0;
        Ok(())
    }
}

/// What recovering the outbox did.
pub(super) struct OutboxRecovery {
    pub writer: OutboxWriter,
    pub dropped_frames: u64,
    pub notes: Vec<String>,
}

/// Opens (or starts) the outbox of a chain whose records end before
/// `next_seq`: drops a torn or corrupt tail of the newest file and every
/// frame whose records were not all written.
pub(super) fn recover(chain_dir: &Path, next_seq: u64) -> Result<OutboxRecovery, StoreError> {
    let dir = chain_dir.join(DIR);
    durable::create_dir(&dir)?;
    let mut notes = Vec::new();
    let Some((first_seq, path)) = list(&dir)?.pop() else {
        let path = dir.join(name(next_seq));
        let file = durable::create_empty(&path)?;
        let writer = OutboxWriter { dir, path, file, first_seq: next_seq, len: 0 };
        return Ok(OutboxRecovery { writer, dropped_frames: 0, notes });
    };
    if first_seq > next_seq {
        let message = format!("the outbox file starts at seq {first_seq}, after the last record (next seq {next_seq})");
        return Err(StoreError::corrupt(&path, Location::File, message));
    }
    let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io("open", &path))?;
    let file_len = file.metadata().map_err(io("stat", &path))?.len();
    let mut offset = 0;
    let mut frames_end = first_seq;
    // Where the file is cut, and why.
    let mut cut: Option<(u64, String)> = None;
    let mut dropped = 0;
    let mut payload = Vec::new();
    while offset < file_len {
        let header = match read_header(&file, &path, offset)? {
            HeaderRead::Whole(raw) => Header::decode(raw),
            HeaderRead::Eof | HeaderRead::Partial => Err("a torn frame header".to_owned()),
        };
        let checked = header.and_then(|h| {
            if offset + h.frame_len() > file_len {
                return Err(format!("a torn frame (payload of {} bytes past the end)", h.len));
            }
            payload.resize(h.len as usize, 0);
            file.read_exact_at(&mut payload, offset + HEADER_LEN as u64).map_err(|e| format!("unreadable: {e}"))?;
            if !h.payload_crc_ok(&payload) { Err("a frame with a bad CRC".to_owned()) } else { Ok(h) }
        });
        let h = match checked {
            Ok(h) => h,
            Err(problem) => {
                // Torn by a crash: nothing after it can be found.
                dropped += 1;
                cut.get_or_insert((offset, problem));
                break;
            }
        };
        if cut.is_none() && h.first_seq < frames_end {
            let message = format!("frame of seqs {}..{} overlaps the frame before it", h.first_seq, h.end);
            return Err(StoreError::corrupt(&path, Location::Offset { offset, seq: Some(h.first_seq) }, message));
        }
        if h.end > next_seq || cut.is_some() {
            dropped += 1;
            let why = format!("frames from seq {} whose records were not written", h.first_seq);
            cut.get_or_insert((offset, why));
        } else {
            frames_end = h.end;
        }
        offset += h.frame_len();
    }
    let len = match cut {
        Some((at, why)) => {
            durable::truncate(&file, &path, at)?;
            notes.push(format!(
                "dropped {dropped} unacknowledged outbox frame(s) ({} bytes) at the end of {}, starting with {why}",
                file_len - at,
                path.display()
            ));
            at
        }
        None => file_len,
    };
    if frames_end < next_seq {
        notes.push(format!(
            "records {frames_end}..{next_seq} have no outbox frame (written without one, or not acknowledged \
             before a crash); exporters skip them"
        ));
    }
    let writer = OutboxWriter { dir, path, file, first_seq, len };
    Ok(OutboxRecovery { writer, dropped_frames: dropped, notes })
}

/// Where an [`OutboxReader`] is.
struct ReadPos {
    /// The seq the file is named by.
    file_seq: u64,
    path: PathBuf,
    file: File,
    /// Offset of the next frame.
    offset: u64,
    /// The seq a call that continues sequential reading asks for.
    next_seq: u64,
}

/// Reads outbox frames for an exporter, concurrently with the chain's
/// appends. Keeps its place between calls, so reading on from where the
/// last call ended costs only the new frames.
pub struct OutboxReader {
    dir: PathBuf,
    pos: Option<ReadPos>,
}

impl OutboxReader {
    /// A reader of the outbox of the chain in `chain_dir` (the store must
    /// have been opened with the outbox on).
    pub fn open(chain_dir: &Path) -> Result<Self, StoreError> {
        let dir = chain_dir.join(DIR);
        fs::metadata(&dir).map_err(io("open outbox directory", &dir))?;
        Ok(OutboxReader { dir, pos: None })
    }

    /// Frames at or after `from_seq` that end at or before `committed` (the
    /// next seq the chain published after its last successful append), with
    /// up to `max_bytes` of payload (always at least one frame when one is
    /// available). Records without a frame are skipped: a `from_seq` in
    /// such a gap reads from the next frame. A `from_seq` inside a frame is
    /// an error ([`StoreError::InsideFrame`]).
    pub fn read(&mut self, from_seq: u64, committed: u64, max_bytes: usize) -> Result<Vec<Frame>, StoreError> {
        let mut frames = Vec::new();
        if from_seq >= committed {
            return Ok(frames);
        }
        if self.pos.as_ref().is_none_or(|p| p.next_seq != from_seq) {
            self.pos = self.locate(from_seq)?;
        }
        let Some(pos) = self.pos.as_mut() else { return Ok(frames) };
        let mut bytes = 0usize;
        loop {
            let mut read = read_header(&pos.file, &pos.path, pos.offset)?;
            if !matches!(read, HeaderRead::Whole(_)) {
                // The end of what is written. Committed records may be in a
                // later file; once one exists, this file is finished, so
                // what it holds now is final.
                if pos.next_seq >= committed {
                    break;
                }
                let Some((file_seq, path)) = list(&self.dir)?.into_iter().find(|(seq, _)| *seq > pos.file_seq) else {
                    break;
                };
                read = read_header(&pos.file, &pos.path, pos.offset)?;
                match read {
                    HeaderRead::Whole(_) => {}
                    HeaderRead::Partial => {
                        let at = Location::Offset { offset: pos.offset, seq: None };
                        return Err(StoreError::corrupt(&pos.path, at, "a finished outbox file ends inside a frame"));
                    }
                    HeaderRead::Eof => {
                        let file = File::open(&path).map_err(io("open", &path))?;
                        *pos = ReadPos { file_seq, path, file, offset: 0, next_seq: pos.next_seq };
                        continue;
                    }
                }
            }
            let HeaderRead::Whole(raw) = read else { continue };
            let at = Location::Offset { offset: pos.offset, seq: None };
            let header = Header::decode(raw).map_err(|m| StoreError::corrupt(&pos.path, at.clone(), m))?;
            if header.end > committed || (!frames.is_empty() && bytes + header.len as usize > max_bytes) {
                break;
            }
            if header.first_seq < pos.next_seq {
                let message =
                    format!("frame of seqs {}..{} goes back before seq {}", header.first_seq, header.end, pos.next_seq);
                return Err(StoreError::corrupt(&pos.path, at, message));
            }
            let mut payload = vec![0u8; header.len as usize];
            pos.file.read_exact_at(&mut payload, pos.offset + HEADER_LEN as u64).map_err(io("read", &pos.path))?;
            if !header.payload_crc_ok(&payload) {
                return Err(StoreError::corrupt(
                    &pos.path,
                    at,
                    format!("frame of seq {} has a bad CRC", header.first_seq),
                ));
            }
            bytes += payload.len();
            frames.push(Frame { signal: header.signal, first_seq: header.first_seq, count: header.count, payload });
            pos.offset += header.frame_len();
            pos.next_seq = header.end;
        }
        Ok(frames)
    }

    /// Positions the reader at the first frame that ends after `from_seq`.
    fn locate(&self, from_seq: u64) -> Result<Option<ReadPos>, StoreError> {
        let files = list(&self.dir)?;
        // Frames of a file end at or before the next file's seq, so the
        // frame holding `from_seq` (or the next one) is in the last file
        // starting at or before it, or a later one.
        let first = files.iter().rposition(|(seq, _)| *seq <= from_seq).unwrap_or(0);
        let last = files.len().saturating_sub(1);
        for (i, (file_seq, path)) in files.iter().enumerate().skip(first) {
            let file = File::open(path).map_err(io("open", path))?;
            let mut offset = 0;
            loop {
                let raw = match read_header(&file, path, offset)? {
                    HeaderRead::Whole(raw) => raw,
                    HeaderRead::Partial if i < last => {
                        let at = Location::Offset { offset, seq: None };
                        return Err(StoreError::corrupt(path, at, "a finished outbox file ends inside a frame"));
                    }
                    HeaderRead::Eof | HeaderRead::Partial => break,
                };
                let at = Location::Offset { offset, seq: None };
                let header = Header::decode(raw).map_err(|m| StoreError::corrupt(path, at, m))?;
                if header.end <= from_seq {
                    offset += header.frame_len();
                    continue;
                }
                if header.first_seq < from_seq {
                    return Err(StoreError::InsideFrame {
                        path: path.clone(),
                        seq: from_seq,
                        first_seq: header.first_seq,
                        end: header.end,
                    });
                }
                return Ok(Some(ReadPos { file_seq: *file_seq, path: path.clone(), file, offset, next_seq: from_seq }));
            }
            if i == last {
                return Ok(Some(ReadPos { file_seq: *file_seq, path: path.clone(), file, offset, next_seq: from_seq }));
            }
        }
        Ok(None)
    }
}

/// Deletes the outbox files of the chain in `chain_dir` whose frames all end
/// at or before `below_seq` (every exporter has delivered them), never the
/// newest file. Returns how many files were removed.
pub fn prune_outbox(chain_dir: &Path, below_seq: u64) -> Result<u64, StoreError> {
    let dir = chain_dir.join(DIR);
    if !dir.exists() {
        return Ok(0);
    }
    let files = list(&dir)?;
    let mut removed = 0;
    // A file's frames end at or before the next file's first seq.
    for pair in files.windows(2) {
        if pair[1].0 > below_seq {
            break;
        }
        fs::remove_file(&pair[0].1).map_err(io("remove", &pair[0].1))?;
        removed += 1;
    }
    if removed > 0 {
        durable::fsync_dir(&dir)?;
    }
    Ok(removed)
}
