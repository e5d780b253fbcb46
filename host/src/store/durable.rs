//! Durable file primitives: a file or directory entry is only trusted once
//! it, and the directory that names it, have been fsync'd. What they create
//! gets its directory's access ([`FileAccess::of_dir`]), whatever the umask.

use std::fs::{self, File};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::access::{self, FileAccess};
use super::error::{StoreError, io};

/// Mode of a sealed (read-only) file in `path`'s directory.
pub(super) fn sealed_mode(path: &Path) -> u32 {
    FileAccess::of_parent(path).sealed_mode()
}

/// Mode of a file the store still appends to, in `path`'s directory.
pub(super) fn active_mode(path: &Path) -> u32 {
    FileAccess::of_parent(path).file_mode()
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub(super) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory", dir))
}

/// Creates a directory (and its parents) if absent, making each new entry
/// durable in its parent.
pub(super) fn create_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir(parent)?;
    }
    let parent = parent.unwrap_or(Path::new("."));
    let mode = FileAccess::of_dir(parent).dir_mode();
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {
            access::set_mode(dir, mode).map_err(io("chmod", dir))?;
            fsync_dir(parent)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("create directory", dir)(e)),
    }
}

/// Opens `path` for positioned writes, creating it empty if absent; a new
/// file is fsync'd along with its directory. An existing file must be empty
/// (a rotation that failed half-way is retried with the file it left).
pub(super) fn create_empty(path: &Path) -> Result<File, StoreError> {
    let access = FileAccess::of_parent(path);
    let file = access.options().write(true).create(true).truncate(false).open(path).map_err(io("create", path))?;
    access.fix(&file).map_err(io("chmod", path))?;
    let len = file.metadata().map_err(io("stat", path))?.len();
    if len != 0 {
        return Err(StoreError::corrupt(
            path,
            super::error::Location::File,
            format!("expected a new, empty file but it holds {len} bytes"),
        ));
    }
    file.sync_all().map_err(io("fsync", path))?;
    fsync_dir(parent(path))?;
    Ok(file)
}

/// Replaces `path` with `bytes` atomically: temp file, fsync, rename, fsync
/// of the directory.
pub(super) fn replace(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let access = FileAccess::of_parent(path);
    let create = access.options().write(true).create(true).truncate(true).open(&tmp);
    let mut file = create.map_err(io("create", &tmp))?;
    access.fix(&file).map_err(io("chmod", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io("rename", path))?;
    fsync_dir(parent(path))
}

/// Drops the durable bytes `offset..offset + len` of `file` from the page
/// cache: records are written once and seldom read back soon (verify, the
/// SQL tables and the read API read them later, the exporters read the
/// outbox), and copying them into ever new cache pages was about a quarter
/// of a chain worker's CPU at 100 % audit on the benchmark machine; freed,
/// the pages are reused for the next writes. Only a hint: nothing fails if
/// the kernel ignores it.
pub(super) fn drop_cached(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else { return };
        // SAFETY: posix_fadvise only reads its integer arguments; `file`
        // keeps the descriptor open for the call.
        let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Truncates `file` to `len` bytes and makes that durable.
pub(super) fn truncate(file: &File, path: &Path, len: u64) -> Result<(), StoreError> {
    file.set_len(len).map_err(io("truncate", path))?;
    file.sync_all().map_err(io("fsync", path))
}

/// Whether the file is writable by its owner.
pub(super) fn is_writable(path: &Path) -> Result<bool, StoreError> {
    let mode = fs::metadata(path).map_err(io("stat", path))?.permissions().mode();
    Ok(mode & 0o222 != 0)
}

/// Sets a file's mode ([`sealed_mode`] or [`active_mode`]).
pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    access::set_mode(path, mode).map_err(io("chmod", path))
}

/// Names in `dir` of the form `<prefix><20 decimal digits><suffix>`, with
/// their numbers, sorted by number.
pub(super) fn numbered_files(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name.strip_prefix(prefix).and_then(|n| n.strip_suffix(suffix)) else { continue };
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(number) = digits.parse::<u64>() else { continue };
        found.push((number, entry.path()));
    }
    found.sort_unstable_by_key(|(number, _)| *number);
    Ok(found)
}

/// The directory a file is in.
pub(super) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
