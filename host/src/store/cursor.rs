//! Exporter cursors: `cursor-<exporter>.json` holds `{"next_seq":N}`, the
//! first seq the exporter has not delivered yet, so a restart resumes where
//! delivery stopped (records after it may be delivered twice, never lost).
//! `cursor-<exporter>.checkpoints.json` counts the checkpoints it forwarded.
//! The exporter id is encoded injectively (letters, digits and `-` kept,
//! every other byte as `_XX`), so two exporters never share a file.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::durable;
use super::error::{Location, StoreError, io};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    next_seq: u64,
}

/// What an exporter's cursor counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// The next record seq to deliver.
    Records,
    /// How many checkpoints were delivered.
    Checkpoints,
}

/// The cursor file of `exporter`.
fn path(chain_dir: &Path, exporter: &str, kind: CursorKind) -> PathBuf {
    let mut name = String::from("cursor-");
    for byte in exporter.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            name.push(byte as char);
        } else {
            name.push_str(&format!("_{byte:02X}"));
        }
    }
    name.push_str(match kind {
        CursorKind::Records => ".json",
        CursorKind::Checkpoints => ".checkpoints.json",
    });
    chain_dir.join(name)
}

/// The cursor of `exporter`, if it has one.
pub fn read_cursor(chain_dir: &Path, exporter: &str, kind: CursorKind) -> Result<Option<u64>, StoreError> {
    let path = path(chain_dir, exporter, kind);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", &path)(e)),
    };
    let cursor: Cursor = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::corrupt(&path, Location::File, format!("not a cursor: {e}")))?;
    Ok(Some(cursor.next_seq))
}

/// Durably records `exporter`'s cursor (for records: everything before
/// `next_seq` is delivered).
pub fn write_cursor(chain_dir: &Path, exporter: &str, kind: CursorKind, next_seq: u64) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(&Cursor { next_seq }).expect("a cursor serializes");
    durable::replace(&path(chain_dir, exporter, kind), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_absent_at_first() {
        let dir = tempfile::tempdir().unwrap();
        let records = CursorKind::Records;
        assert_eq!(read_cursor(dir.path(), "otlp/backend", records).unwrap(), None);
        write_cursor(dir.path(), "otlp/backend", records, 42).unwrap();
        write_cursor(dir.path(), "otlp/backend", records, 43).unwrap();
        assert_eq!(read_cursor(dir.path(), "otlp/backend", records).unwrap(), Some(43));
        assert_eq!(read_cursor(dir.path(), "other", records).unwrap(), None);
        assert_eq!(read_cursor(dir.path(), "otlp/backend", CursorKind::Checkpoints).unwrap(), None);
        let file = dir.path().join("cursor-otlp_2Fbackend.json");
        assert_eq!(fs::read_to_string(&file).unwrap(), r#"{"next_seq":43}"#);
        fs::write(&file, "{").unwrap();
        let error = read_cursor(dir.path(), "otlp/backend", records).unwrap_err().to_string();
        assert!(error.contains("cursor-otlp_2Fbackend.json") && error.contains("not a cursor"), "{error}");
    }

    #[test]
    fn distinct_exporters_never_share_a_cursor_file() {
        let ids = ["otlp/x:y", "otlp/x_y", "otlp/x.y", "otlp/x/y", "otlp/x", "otlp/x.checkpoints", "otlphttp/é"];
        let mut files = std::collections::BTreeSet::new();
        for id in ids {
            for kind in [CursorKind::Records, CursorKind::Checkpoints] {
                let file = path(Path::new("."), id, kind);
                let name = file.file_name().unwrap().to_str().unwrap().to_owned();
                assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{name}");
                files.insert(name);
            }
        }
        assert_eq!(files.len(), ids.len() * 2, "{files:?}");
        assert_eq!(path(Path::new("."), "otlp/down-1", CursorKind::Records), Path::new("./cursor-otlp_2Fdown-1.json"));
    }
}
