//! Output files of the commands (`process --out/--records`, `test
//! --output`) that appear whole or not at all: the bytes go to a temporary
//! name beside the destination and are renamed into place once every
//! output of the command is staged. A destination that exists and is not a
//! regular file (`/dev/null`, a FIFO, a terminal) cannot be renamed over:
//! its bytes are held until then and written to it directly.

use std::io;
use std::path::{Path, PathBuf};

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}", path.display())]
pub struct WriteError {
    /// The file (the temporary one while staging).
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

/// Writes `bytes` to `path` so that readers see the old file or the whole
/// new one, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    Staged::write(path, bytes)?.commit()
}

/// Writes each `(path, bytes)` so that none changes unless all could be
/// staged; then puts them in place one after the other.
pub fn write_together(files: &[(&Path, &[u8])]) -> Result<(), WriteError> {
    let staged = files.iter().map(|(path, bytes)| Staged::write(path, bytes)).collect::<Result<Vec<_>, _>>()?;
    staged.into_iter().try_for_each(Staged::commit)
}

/// An output waiting for [`Staged::commit`]; dropping it uncommitted
/// leaves the destination untouched and removes the temporary file.
struct Staged {
    path: PathBuf,
    pending: Pending,
}

enum Pending {
    /// Written under this temporary name, to be renamed.
    Renamed(PathBuf),
    /// For a destination that is not a regular file: written on commit.
    Direct(Vec<u8>),
    Committed,
}

impl Staged {
    /// Stages `bytes` for `path`.
    fn write(path: &Path, bytes: &[u8]) -> Result<Staged, WriteError> {
        let pending = if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            Pending::Direct(bytes.to_vec())
        } else {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
            let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes).map_err(|source| WriteError { path: tmp.clone(), source })?;
            Pending::Renamed(tmp)
        };
        Ok(Staged { path: path.to_owned(), pending })
    }

    /// Puts the bytes in place.
    fn commit(mut self) -> Result<(), WriteError> {
        let result = match std::mem::replace(&mut self.pending, Pending::Committed) {
            Pending::Renamed(tmp) => {
                let renamed = std::fs::rename(&tmp, &self.path);
                if renamed.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                renamed
            }
            Pending::Direct(bytes) => std::fs::write(&self.path, bytes),
            Pending::Committed => Ok(()),
        };
        result.map_err(|source| WriteError { path: self.path.clone(), source })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Pending::Renamed(tmp) = &self.pending {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Writes `bytes` to `path` so that after a crash the old file or the
/// whole new one is there (temporary file fsync'd, renamed, directory
/// fsync'd): for state a process must not lose once it acted on it. The
/// file is readable and writable by its owner only (0600), whatever the umask.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    use std::io::Write as _;
    let temp = path.with_extension("tmp");
    let error = |path: &Path| {
        let path = path.to_owned();
        move |source| WriteError { path, source }
    };
    let access = crate::store::FileAccess::Private;
    let mut file = access.options().write(true).create(true).truncate(true).open(&temp).map_err(error(&temp))?;
    access.fix(&file).map_err(error(&temp))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(error(&temp))?;
    std::fs::rename(&temp, path).map_err(error(path))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_destination_changes_only_on_commit_and_no_temporary_file_remains() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.pb");
        std::fs::write(&path, b"old").unwrap();
        let staged = Staged::write(&path, b"new bytes").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()).len(), 2, "the new bytes wait beside it: {:?}", names(dir.path()));
        staged.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new bytes");
        assert_eq!(names(dir.path()), ["out.pb"]);
    }

    #[test]
    fn an_uncommitted_output_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        drop(Staged::write(&path, b"{}\n").unwrap());
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }

    #[cfg(unix)]
    #[test]
    fn a_device_is_written_directly_on_commit() {
        // `/dev` is not ours to write temporary files in; a rename over the
        // device would replace it.
        let staged = Staged::write(Path::new("/dev/null"), b"discarded").unwrap();
        assert!(matches!(staged.pending, Pending::Direct(_)));
        staged.commit().unwrap();
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
    }

    #[test]
    fn outputs_written_together_appear_only_if_all_can_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let (out, records) = (dir.path().join("out.pb"), dir.path().join("records.jsonl"));
        let missing = dir.path().join("missing/records.jsonl");
        assert!(write_together(&[(&out, b"otlp"), (&missing, b"{}\n")]).is_err());
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
        write_together(&[(&out, b"otlp"), (&records, b"{}\n")]).unwrap();
        assert_eq!(
            (std::fs::read(&out).unwrap(), std::fs::read(&records).unwrap()),
            (b"otlp".to_vec(), b"{}\n".to_vec())
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/out.pb");
        let error = write_atomically(&path, b"x").unwrap_err();
        assert_eq!(error.source.kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().starts_with("cannot write ") && error.to_string().contains("missing"), "{error}");
    }
}
