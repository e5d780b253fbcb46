//! The newest checkpoint of a chain, kept outside its store (one small
//! JSON file per chain, rewritten after each checkpoint): a store whose
//! checkpoints were cut back (or replaced) behind the host's back is
//! refused at start-up instead of being signed over.

use std::fmt;
use std::path::{Path, PathBuf};

use audit_format::hash::to_hex;
use sha2::{Digest, Sha256};

use crate::checkpoint::VerifierKey;
use crate::store::{ChainStore, CheckpointEntry};

#[derive(serde::Serialize, serde::Deserialize)]
struct Mirrored {
    size: u64,
    root: String,
    note: String,
}

/// The mirror file's name for the chain of `origin` signed by `key`: one
/// per chain identity and signing key, wherever the store lies, so that a
/// cut-back copy of a store served from another directory is still refused,
/// and a chain begun again (a new origin) starts a file of its own.
pub fn file_name(origin: &str, key: &VerifierKey) -> String {
    let digest =
        Sha256::new().chain_update(origin.as_bytes()).chain_update(b"\n").chain_update(key.encode()).finalize();
    let name = ChainStore::chain_dir_name(origin);
    let name: String = name.chars().take(120).collect();
    format!("{name}-{}.json", &hex::encode(digest)[..12])
}

/// Why a store may not be signed over.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The mirror file exists but cannot be read.
    #[error("cannot read the checkpoint mirror {}: {source}", path.display())]
    Read {
        /// The mirror file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The mirror file is not what this host writes.
    #[error("the checkpoint mirror {} is not readable: {source}", path.display())]
    Parse {
        /// The mirror file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The store's checkpoints end before (or differ from) the newest one
    /// this host signed: checkpoints or records were removed or replaced.
    #[error(
        "{found}, but this host last signed @{signed} (mirror {mirror}): checkpoints or records were removed or \
         replaced in the store. Refusing to sign over it; run `otel-audit verify` on the store. In production this \
         refusal means the store was cut back. If you deleted a development store on purpose, begin a new trail: \
         remove {mirror} and start again",
        mirror = path.display()
    )]
    CutBack {
        /// What the store has.
        found: Found,
        /// The size of the newest checkpoint this host signed.
        signed: u64,
        /// The mirror file.
        path: PathBuf,
    },
}

/// The store's newest checkpoint, where it does not reach the mirror's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The store has no checkpoint at all.
    Nothing,
    /// Its newest checkpoint is of this (smaller) size.
    Smaller(u64),
    /// Its checkpoint of the mirror's size has another root.
    OtherRoot(u64),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Nothing => write!(f, "the store has no checkpoint"),
            Found::Smaller(size) => write!(f, "the store's newest checkpoint is @{size}"),
            Found::OtherRoot(size) => write!(f, "the store's checkpoint @{size} has another root"),
        }
    }
}

/// Records `entry` as the newest checkpoint (temp file, fsync, rename).
pub(super) fn write(path: &Path, entry: &CheckpointEntry) -> std::io::Result<()> {
    let text = serde_json::to_vec(&Mirrored { size: entry.size, root: to_hex(&entry.root), note: entry.note.clone() })
        .map_err(std::io::Error::other)?;
    let temp = path.with_extension("tmp");
    // The mirror's files follow its directory's mode, set at start-up.
    let access = crate::store::FileAccess::of_parent(path);
    let mut file = access.options().write(true).create(true).truncate(true).open(&temp)?;
    access.fix(&file)?;
    std::io::Write::write_all(&mut file, &text)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

/// Whether the store's newest checkpoint is at least the mirrored one (no
/// mirror file: nothing signed yet for this chain and store).
pub(super) fn check(path: &Path, newest: Option<&CheckpointEntry>) -> Result<(), MirrorError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(MirrorError::Read { path: path.to_owned(), source }),
    };
    let mirrored: Mirrored =
        serde_json::from_slice(&bytes).map_err(|source| MirrorError::Parse { path: path.to_owned(), source })?;
    let found = match newest {
        None => Found::Nothing,
        Some(entry) if entry.size < mirrored.size => Found::Smaller(entry.size),
        Some(entry) if entry.size == mirrored.size && to_hex(&entry.root) != mirrored.root => {
            Found::OtherRoot(entry.size)
        }
        Some(_) => return Ok(()),
    };
    Err(MirrorError::CutBack { found, signed: mirrored.size, path: path.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u64, root: u8) -> CheckpointEntry {
        CheckpointEntry { size, root: [root; 32], time_unix_nano: 1, frontier: Vec::new(), note: "note".into() }
    }

    #[test]
    fn the_mirror_refuses_a_store_whose_checkpoints_end_before_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c.json");
        assert!(check(&path, None).is_ok(), "no mirror yet: nothing signed here");
        write(&path, &entry(12, 7)).unwrap();
        let found = |newest: Option<&CheckpointEntry>| match check(&path, newest) {
            Err(MirrorError::CutBack { found, signed: 12, path: named }) if named == path => Some(found),
            Err(other) => panic!("{other}"),
            Ok(()) => None,
        };
        assert_eq!(found(None), Some(Found::Nothing));
        assert_eq!(found(Some(&entry(5, 7))), Some(Found::Smaller(5)));
        assert_eq!(found(Some(&entry(12, 8))), Some(Found::OtherRoot(12)));
        assert_eq!(found(Some(&entry(12, 7))), None);
        assert_eq!(found(Some(&entry(13, 8))), None);

        let message = check(&path, Some(&entry(5, 7))).unwrap_err().to_string();
        assert!(message.starts_with("the store's newest checkpoint is @5, but this host last signed @12"), "{message}");
        assert!(message.contains("In production this refusal means the store was cut back"), "{message}");
        assert!(
            message.ends_with(&format!("begin a new trail: remove {} and start again", path.display())),
            "{message}"
        );

        std::fs::write(&path, b"{").unwrap();
        assert!(matches!(check(&path, None), Err(MirrorError::Parse { .. })));
    }

    #[test]
    fn each_chain_identity_and_signing_key_has_its_own_mirror_file() {
        let key = crate::checkpoint::SignerKey::generate("k").unwrap().verifier();
        let other = crate::checkpoint::SignerKey::generate("k").unwrap().verifier();
        let a = file_name("otel-audit/h/traces/audit/0/0123456789abcdef", &key);
        assert!(a.starts_with("otel-audit_h_traces_audit_0_0123456789abcdef-") && a.ends_with(".json"), "{a}");
        assert_eq!(a, file_name("otel-audit/h/traces/audit/0/0123456789abcdef", &key));
        assert_ne!(a, file_name("otel-audit/h/traces/audit/0/fedcba9876543210", &key), "a chain begun again");
        assert_ne!(a, file_name("otel-audit/h/traces/audit/0/0123456789abcdef", &other), "another key");
    }
}
