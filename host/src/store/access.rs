//! Who may read the store's files: modes are set explicitly, whatever the
//! umask. Directories are 0700 and files 0600 (sealed segments 0400); with
//! `file_mode: group-read` (auditors in the owner's group) 0750, 0640 and
//! 0440. The store directory, each chain directory and the checkpoint
//! mirror get the configured mode at start-up; a directory or file created
//! later inside one takes its directory's ([`FileAccess::of_dir`]), so
//! cursors, tiles, outbox files and cosignatures follow the store without
//! being told. A store or mirror that others may write is refused
//! ([`check_not_writable_by_others`]).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Who may read a store's files besides their owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FileAccess {
    /// The owner only: directories 0700, files 0600 (the default).
    #[default]
    Private,
    /// The owner's group reads too: directories 0750, files 0640.
    GroupRead,
}

impl FileAccess {
    /// The mode of a directory.
    pub const fn dir_mode(self) -> u32 {
        match self {
            FileAccess::Private => 0o700,
            FileAccess::GroupRead => 0o750,
        }
    }

    /// The mode of a file that is written to.
    pub const fn file_mode(self) -> u32 {
        match self {
            FileAccess::Private => 0o600,
            FileAccess::GroupRead => 0o640,
        }
    }

    /// The mode of a sealed (read-only) file.
    pub const fn sealed_mode(self) -> u32 {
        self.file_mode() & !0o222
    }

    /// The access a directory grants: group-read when its group may list
    /// it (0750), else private (also when it cannot be read).
    pub fn of_dir(dir: &Path) -> FileAccess {
        match fs::metadata(dir) {
            Ok(meta) if meta.permissions().mode() & 0o050 == 0o050 => FileAccess::GroupRead,
            _ => FileAccess::Private,
        }
    }

    /// The access of the directory `path` is in.
    pub fn of_parent(path: &Path) -> FileAccess {
        FileAccess::of_dir(parent(path))
    }

    /// Creates `dir` and its missing parents with this access, and sets
    /// it on `dir` if it exists.
    pub fn create_dir(self, dir: &Path) -> io::Result<()> {
        fs::DirBuilder::new().recursive(true).mode(self.dir_mode()).create(dir)?;
        set_mode(dir, self.dir_mode())
    }

    /// Options that create a file with this access's mode (before the
    /// umask: call [`FileAccess::fix`] on the file after).
    pub fn options(self) -> OpenOptions {
        let mut options = OpenOptions::new();
        options.mode(self.file_mode());
        options
    }

    /// Sets an open file's mode to this access's file mode, whatever the umask made it.
    pub fn fix(self, file: &File) -> io::Result<()> {
        file.set_permissions(Permissions::from_mode(self.file_mode()))
    }

    /// Sets the modes of a directory and of everything in it (one level of
    /// subdirectories deep, as in a chain directory): directories get the
    /// directory mode; files keep being read-only if they are (sealed),
    /// else get the file mode. Symbolic links are left alone.
    pub fn apply(self, dir: &Path) -> io::Result<()> {
        set_mode(dir, self.dir_mode())?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                self.apply_files(&entry.path())?;
            } else if kind.is_file() {
                self.apply_file(&entry.path())?;
            }
        }
        Ok(())
    }

    fn apply_files(self, dir: &Path) -> io::Result<()> {
        set_mode(dir, self.dir_mode())?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                self.apply_file(&entry.path())?;
            }
        }
        Ok(())
    }

    fn apply_file(self, path: &Path) -> io::Result<()> {
        let mode = fs::symlink_metadata(path)?.permissions().mode();
        let want = if mode & 0o200 == 0 { self.sealed_mode() } else { self.file_mode() };
        if mode & 0o777 != want { set_mode(path, want) } else { Ok(()) }
    }
}

/// Sets `path`'s permission bits to `mode`.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, Permissions::from_mode(mode))
}

/// The directory a file is in.
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A directory or file anyone may write to, where only the owner may.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} is writable by others (mode {mode:04o}): anyone on the host could change or remove audit records; \
     fix it with `chmod o-w {}`",
    path.display(),
    path.display()
)]
pub struct WritableByOthers {
    /// The directory or file.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

/// Refuses `dir` (when it exists) if it, or a directory or file up to
/// two levels below it (chain directories and their `tiles/`, `outbox/`),
/// is writable by others. Symbolic links are not followed.
pub fn check_not_writable_by_others(dir: &Path) -> Result<(), WritableByOthers> {
    fn check(path: &Path, depth: u32) -> Result<(), WritableByOthers> {
        let Ok(meta) = fs::symlink_metadata(path) else { return Ok(()) };
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o002 != 0 {
            return Err(WritableByOthers { path: path.to_owned(), mode });
        }
        if meta.is_dir()
            && depth < 3
            && let Ok(entries) = fs::read_dir(path)
        {
            for entry in entries.flatten() {
                check(&entry.path(), depth + 1)?;
            }
        }
        Ok(())
    }
    check(dir, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn modes_are_set_whatever_they_were_and_files_follow_their_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store/chain");
        FileAccess::GroupRead.create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o750);
        assert_eq!(FileAccess::of_dir(&dir), FileAccess::GroupRead);
        let file =
            FileAccess::of_parent(&dir.join("f")).options().write(true).create(true).open(dir.join("f")).unwrap();
        FileAccess::of_parent(&dir.join("f")).fix(&file).unwrap();
        assert_eq!(mode(&dir.join("f")), 0o640);
        fs::write(dir.join("sealed"), "x").unwrap();
        set_mode(&dir.join("sealed"), 0o444).unwrap();
        fs::create_dir(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/g"), "x").unwrap();
        set_mode(&dir.join("sub/g"), 0o666).unwrap();
        FileAccess::Private.apply(&dir).unwrap();
        let found: Vec<u32> = ["", "f", "sealed", "sub", "sub/g"].iter().map(|n| mode(&dir.join(n))).collect();
        assert_eq!(found, [0o700, 0o600, 0o400, 0o700, 0o600]);
        assert_eq!(FileAccess::of_dir(&dir), FileAccess::Private);
    }

    #[test]
    fn a_store_others_may_write_is_named_with_its_mode_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        assert!(check_not_writable_by_others(&store).is_ok(), "a missing store is created later");
        FileAccess::Private.create_dir(&store.join("chain/tiles")).unwrap();
        fs::write(store.join("chain/tiles/level-0.hashes"), "").unwrap();
        set_mode(&store.join("chain/tiles/level-0.hashes"), 0o646).unwrap();
        let error = check_not_writable_by_others(&store).unwrap_err();
        assert_eq!(error.path, store.join("chain/tiles/level-0.hashes"));
        set_mode(&store.join("chain/tiles/level-0.hashes"), 0o600).unwrap();
        assert!(check_not_writable_by_others(&store).is_ok());
        set_mode(&store, 0o777).unwrap();
        let message = check_not_writable_by_others(&store).unwrap_err().to_string();
        assert!(
            message.contains("mode 0777") && message.contains(&format!("chmod o-w {}", store.display())),
            "{message}"
        );
    }
}
