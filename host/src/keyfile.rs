//! A checkpoint signing key pair on disk, as `otel-audit keygen` writes it:
//! `NAME.key` holds the signer key (`PRIVATE+KEY+NAME+<id>+<base64>`, mode
//! 0600 on Unix) and `NAME.pub` the verifier key (`NAME+<id>+<base64>`),
//! one line each. An existing key is never overwritten.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::SignerKey;

/// Why a key pair could not be written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// One of the two files exists already; neither was written.
    #[error("{} exists; refusing to overwrite a key", .0.display())]
    Exists(PathBuf),
    /// The directory could not be created.
    #[error("cannot create {}", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A key file could not be created or written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// Where a key pair was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    /// `NAME.key`: the signer key, for `serve` (`signing_key:`).
    pub private: PathBuf,
    /// `NAME.pub`: the verifier key, for `verify --public-key`.
    pub public: PathBuf,
}

/// Writes `signer` as `NAME.key` and `NAME.pub` in `dir` (created if
/// missing), named after the key.
pub fn write(dir: &Path, signer: &SignerKey) -> Result<KeyFiles, KeyFileError> {
    let verifier = signer.verifier();
    write_texts(dir, verifier.name(), &signer.encode(), &verifier.encode())
}

/// Writes a witness's cosigning key pair (signature type 0x04) likewise.
pub fn write_witness(dir: &Path, signer: &crate::cosignature::WitnessSigner) -> Result<KeyFiles, KeyFileError> {
    let verifier = signer.verifier();
    write_texts(dir, verifier.name(), &signer.encode(), &verifier.encode())
}

/// Writes `NAME.key` (mode 0600) and `NAME.pub` in `dir`, neither if
/// either exists. A name with `/` (a URL-like witness name) is written
/// with `_` in its file names.
fn write_texts(dir: &Path, name: &str, private: &str, public: &str) -> Result<KeyFiles, KeyFileError> {
    std::fs::create_dir_all(dir).map_err(|source| KeyFileError::Directory { path: dir.to_owned(), source })?;
    let file_name = name.replace('/', "_");
    let files =
        KeyFiles { private: dir.join(format!("{file_name}.key")), public: dir.join(format!("{file_name}.pub")) };
    for path in [&files.private, &files.public] {
        if path.exists() {
            return Err(KeyFileError::Exists(path.clone()));
        }
    }
    write_new(&files.private, private, 0o600)?;
    write_new(&files.public, public, 0o666)?;
    Ok(files)
}

/// Creates `path` (never replacing a file) holding `line` and a newline,
/// durably, with `mode` (less the umask) on Unix.
fn write_new(path: &Path, line: &str, mode: u32) -> Result<(), KeyFileError> {
    let error = |source| KeyFileError::Write { path: path.to_owned(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => KeyFileError::Exists(path.to_owned()),
        _ => error(source),
    })?;
    writeln!(file, "{line}").and_then(|()| file.sync_all()).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::VerifierKey;

    #[test]
    fn writes_the_signer_and_its_verifier_one_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let signer = SignerKey::generate("audit-test").unwrap();
        let files = write(&dir.path().join("keys"), &signer).unwrap();
        assert_eq!(files.private, dir.path().join("keys/audit-test.key"));
        assert_eq!(files.public, dir.path().join("keys/audit-test.pub"));
        let private = std::fs::read_to_string(&files.private).unwrap();
        assert_eq!(private, format!("{}\n", signer.encode()));
        assert!(private.starts_with("PRIVATE+KEY+audit-test+"), "{private}");
        let public = std::fs::read_to_string(&files.public).unwrap();
        assert_eq!(public.lines().count(), 1, "{public:?}");
        // NAME+<key id, 8 hex digits>+<base64 of 0x01 and the 32-byte key> (base64 may hold '+').
        let fields: Vec<&str> = public.trim_end_matches('\n').splitn(3, '+').collect();
        assert_eq!((fields[0], fields[1].len(), fields[2].len()), ("audit-test", 8, 44), "{public}");
        assert_eq!(VerifierKey::parse(&public).unwrap(), signer.verifier());
        assert_eq!(SignerKey::parse(&private).unwrap().encode(), signer.encode());
    }

    #[cfg(unix)]
    #[test]
    fn only_the_owner_may_read_the_signer_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), &SignerKey::generate("private").unwrap()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.private), 0o600);
    }

    #[test]
    fn an_existing_key_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let first = SignerKey::generate("once").unwrap();
        let files = write(dir.path(), &first).unwrap();
        let error = write(dir.path(), &SignerKey::generate("once").unwrap()).unwrap_err();
        assert!(matches!(&error, KeyFileError::Exists(path) if *path == files.private), "{error}");
        assert!(error.to_string().ends_with("exists; refusing to overwrite a key"), "{error}");
        assert_eq!(std::fs::read_to_string(&files.private).unwrap(), format!("{}\n", first.encode()));

        // A public key alone blocks the pair too, and no signer key appears.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("lone.pub"), "someone else's\n").unwrap();
        let error = write(other.path(), &SignerKey::generate("lone").unwrap()).unwrap_err();
        assert!(matches!(&error, KeyFileError::Exists(path) if path.ends_with("lone.pub")), "{error}");
        assert!(!other.path().join("lone.key").exists());
    }
}
