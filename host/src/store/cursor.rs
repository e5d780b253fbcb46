//! Exporter cursors: `cursor-<exporter>.json` holds `{"next_seq":N}`, the
//! first seq the exporter has not delivered yet, so a restart resumes where
//! delivery stopped (records after it may be delivered twice, never lost).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ChainStore;
use super::durable;
use super::error::{Location, StoreError, io};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    next_seq: u64,
}

/// The cursor file of `exporter` (its name made file-system safe).
fn path(chain_dir: &Path, exporter: &str) -> PathBuf {
    chain_dir.join(format!("cursor-{}.json", ChainStore::chain_dir_name(exporter)))
}

/// The next seq `exporter` has to deliver, if it has a cursor.
pub fn read_cursor(chain_dir: &Path, exporter: &str) -> Result<Option<u64>, StoreError> {
    let path = path(chain_dir, exporter);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", &path)(e)),
    };
    let cursor: Cursor = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::corrupt(&path, Location::File, format!("not a cursor: {e}")))?;
    Ok(Some(cursor.next_seq))
}

/// Durably records that `exporter` has delivered everything before `next_seq`.
pub fn write_cursor(chain_dir: &Path, exporter: &str, next_seq: u64) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(&Cursor { next_seq }).expect("a cursor serializes");
    durable::replace(&path(chain_dir, exporter), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_absent_at_first() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_cursor(dir.path(), "otlp/backend").unwrap(), None);
        write_cursor(dir.path(), "otlp/backend", 42).unwrap();
        write_cursor(dir.path(), "otlp/backend", 43).unwrap();
        assert_eq!(read_cursor(dir.path(), "otlp/backend").unwrap(), Some(43));
        assert_eq!(read_cursor(dir.path(), "other").unwrap(), None);
        let file = dir.path().join("cursor-otlp_backend.json");
        assert_eq!(fs::read_to_string(&file).unwrap(), r#"{"next_seq":43}"#);
        fs::write(&file, "{").unwrap();
        let error = read_cursor(dir.path(), "otlp/backend").unwrap_err().to_string();
        assert!(error.contains("cursor-otlp_backend.json") && error.contains("not a cursor"), "{error}");
    }
}
