//! Where a bench's stores go: a scratch directory on a real disk, and
//! what file system that is.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A fresh directory named `prefix...` under [`scratch_parent`], removed
/// when dropped.
pub fn scratch(root: &Path, prefix: &str) -> Result<TempDir, String> {
    let parent = scratch_parent(root)?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .map_err(|e| format!("cannot create a scratch directory in {}: {e}", parent.display()))
}

/// The system temp directory if it is on the repository's file system (a
/// store on tmpfs would measure memory, not fsync), else `target/bench-tmp`.
pub fn scratch_parent(root: &Path) -> Result<PathBuf, String> {
    let temp = std::env::temp_dir();
    let device = |path: &Path| std::fs::metadata(path).map(|m| m.dev()).ok();
    if device(&temp).is_some() && device(&temp) == device(root) {
        return Ok(temp);
    }
    let local = root.join("target/bench-tmp");
    std::fs::create_dir_all(&local).map_err(|e| format!("{}: {e}", local.display()))?;
    Ok(local)
}

/// The file system type of the mount holding `path`, from /proc/self/mounts.
pub fn fs_type(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, mount, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount).then(|| (mount.len(), format!("{kind} on {device}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "file system unknown".to_owned(), |(_, kind)| kind)
}
