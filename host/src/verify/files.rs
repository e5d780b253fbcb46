//! Reading store files as an attacker may have left them: only regular
//! files are opened (a FIFO would block the open, a device or a symlink to
//! one never ends), and no line is held beyond a cap (a sparse file of
//! zeros is one endless line).

use std::fs::File;
use std::io::{BufRead, BufReader, Read as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;

/// Why a store file could not be opened as one.
#[derive(Debug)]
pub enum FileError {
    /// It does not exist.
    Missing,
    /// It is not a regular file: what it is instead.
    NotRegular(&'static str),
    /// Larger than the verifier reads of such a file.
    TooLarge(u64),
    /// The operating system's error.
    Io(std::io::Error),
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Missing => write!(f, "missing"),
            FileError::NotRegular(what) => write!(f, "{what}, not a regular file (not read)"),
            FileError::TooLarge(len) => write!(f, "{len} bytes, more than the verifier reads of it"),
            FileError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// What a directory entry is, when it is not a regular file.
pub fn kind(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_symlink() {
        Some("a symbolic link")
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_block_device() || file_type.is_char_device() {
        Some("a device")
    } else {
        Some("not a regular file")
    }
}

/// Opens `path` only if it is a regular file (not following a symlink),
/// and only if what was opened is what was checked.
pub fn open_regular(path: &Path) -> Result<File, FileError> {
    let before = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FileError::Missing),
        Err(e) => return Err(FileError::Io(e)),
    };
    if let Some(what) = kind(before.file_type()) {
        return Err(FileError::NotRegular(what));
    }
    let file = File::open(path).map_err(FileError::Io)?;
    let after = file.metadata().map_err(FileError::Io)?;
    if !after.file_type().is_file() || after.dev() != before.dev() || after.ino() != before.ino() {
        return Err(FileError::NotRegular("replaced while being opened"));
    }
    Ok(file)
}

/// Reads a small regular file whole, at most `cap` bytes.
pub fn read_small(path: &Path, cap: u64) -> Result<Vec<u8>, FileError> {
    let file = open_regular(path)?;
    let len = file.metadata().map_err(FileError::Io)?.len();
    if len > cap {
        return Err(FileError::TooLarge(len));
    }
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes).map_err(FileError::Io)?;
    if bytes.len() as u64 > cap {
        return Err(FileError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// One read of [`Lines::next`].
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A complete line (without its `\n`) is in the buffer.
    Line,
    /// A complete line of this many bytes, longer than the cap: not kept.
    TooLong(u64),
    /// Bytes after the last `\n` (kept in the buffer if within the cap).
    Torn(u64),
    /// The end.
    End,
}

/// Lines of a file, each kept only up to a cap.
pub struct Lines<R> {
    reader: BufReader<R>,
    cap: usize,
    /// Bytes consumed so far.
    pub consumed: u64,
}

impl<R: std::io::Read> Lines<R> {
    /// Lines of `reader`, none kept beyond `cap` bytes.
    pub fn new(reader: R, cap: usize) -> Self {
        Lines { reader: BufReader::with_capacity(1 << 20, reader), cap, consumed: 0 }
    }

    /// Reads the next line into `line` (cleared first).
    pub fn next(&mut self, line: &mut Vec<u8>) -> std::io::Result<Next> {
        line.clear();
        let mut length: u64 = 0;
        loop {
            let buffer = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buffer.is_empty() {
                return Ok(match length {
                    0 => Next::End,
                    n => Next::Torn(n),
                });
            }
            let (chunk, done) = match memchr::memchr(b'\n', buffer) {
                Some(i) => (&buffer[..i], Some(i + 1)),
                None => (buffer, None),
            };
            length += chunk.len() as u64;
            if length <= self.cap as u64 {
                line.extend_from_slice(chunk);
            } else if !line.is_empty() {
                line.clear();
                line.shrink_to(self.cap.min(1 << 20));
            }
            let used = done.unwrap_or(buffer.len());
            self.reader.consume(used);
            self.consumed += used as u64;
            if done.is_some() {
                return Ok(if length > self.cap as u64 { Next::TooLong(length) } else { Next::Line });
            }
        }
    }
}
