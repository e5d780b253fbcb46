//! `serving.json`: the module and policy digests a chain last ran with.
//! It lets a restart notice that the processor's files changed while the
//! host was down (or that a reload was ordered but not applied before it
//! stopped), so that the chain records that change like a hot swap.
//! Written after the record that made it true, so a crash in between
//! repeats the change record rather than losing it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::durable;
use super::error::StoreError;

const FILE: &str = "serving.json";

/// What a chain's records are processed with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServingDigests {
    /// `sha256:<hex>` of the component.
    pub module_digest: String,
    /// `sha256:<hex>` of the policy (the records' `audit.policy.digest`).
    pub policy_digest: String,
    /// The id of the key the records are MACed with now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Every key id the chain's records were ever MACed with, and a check
    /// value of its bytes ([`key_check`]): an id may not come back with
    /// other bytes (verify takes one key per id).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, String>,
}

/// A key check value: the first 8 bytes of HMAC-SHA256(key, "otel-audit
/// key check"), in hex. It tells keys apart without revealing them.
pub fn key_check(key: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(b"otel-audit key check");
    hex::encode(&mac.finalize().into_bytes()[..8])
}

/// The digests the chain in `chain_dir` last ran with, if recorded.
pub fn read_serving(chain_dir: &Path) -> Result<Option<ServingDigests>, StoreError> {
    let path = chain_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Corrupt {
            path,
            location: super::Location::File,
            message: format!("not the digests the chain runs with: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io { op: "read", path, source }),
    }
}

/// The `audit.policy.digest` of the chain's newest record, if it has
/// records and the newest carries one: the store's own word on which
/// policy processed its last record (`serving.json` may be missing, from
/// an older version, or behind after a crash).
pub fn last_policy_digest(chain_dir: &Path) -> Result<Option<String>, StoreError> {
    for segment in super::segment::list(chain_dir)?.iter().rev() {
        let Some((_, line)) = super::segment::read_tail(&segment.path)?.last_line else { continue };
        let record: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
        let attributes = record.get("span").or_else(|| record.get("log")).and_then(|body| body.get("attributes"));
        let digest = attributes.and_then(|a| a.get("audit.policy.digest")).and_then(|v| v.get("s"));
        return Ok(digest.and_then(|d| d.as_str()).map(str::to_owned));
    }
    Ok(None)
}

/// Records (durably) what the chain in `chain_dir` runs with from now on.
pub fn write_serving(chain_dir: &Path, digests: &ServingDigests) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(digests).map_err(|e| StoreError::invalid("serving digests", e.to_string()))?;
    durable::replace(&chain_dir.join(FILE), &bytes)
}
