//! Evidence bundles: a query's answer with the proof that it is made of
//! unaltered records of the trail (`otel-audit evidence`), checked offline
//! with the checkpoint public key and without the store
//! (`otel-audit evidence verify`).
//!
//! A bundle is a directory (docs/evidence-format.md):
//! - `query.sql`: the query, as given;
//! - `answer.json`: its rows (as `otel-audit sql --format json` writes them);
//! - `records.jsonl`: the record behind each row, exactly as stored, in row order;
//! - `proofs/<chain dir>/<seq>.json`: an inclusion proof (docs/proof-format.md)
//!   of each record against its chain's newest checkpoint;
//! - `checkpoints/<chain dir>.checkpoint`: those checkpoints, signed, with
//!   the cosignatures their witnesses gave them;
//! - `manifest.json`: the query, the answer's SHA-256, each row's chain, seq
//!   and leaf, the checkpoints and the fingerprints of the keys that signed them;
//! - `manifest.sig`: a C2SP signed note over the manifest's SHA-256, by the
//!   checkpoint signing key, so no row can be removed or added unnoticed;
//! - `README.md`: what the auditor has and how to check it.
//!
//! [`make`] writes one, [`check`] checks one.

pub mod check;
pub mod make;

use serde::{Deserialize, Serialize};

/// The `format` of the manifests this build writes and reads.
pub const FORMAT: u32 = 1;

/// The first line of the signed note in `manifest.sig`.
pub const SIGNATURE_ORIGIN: &str = "otel-audit evidence manifest v1";

/// The files of a bundle.
pub mod files {
    /// The query.
    pub const QUERY: &str = "query.sql";
    /// The answer.
    pub const ANSWER: &str = "answer.json";
    /// The records, one per line.
    pub const RECORDS: &str = "records.jsonl";
    /// The inclusion proofs' directory.
    pub const PROOFS: &str = "proofs";
    /// The checkpoints' directory.
    pub const CHECKPOINTS: &str = "checkpoints";
    /// The manifest.
    pub const MANIFEST: &str = "manifest.json";
    /// The manifest's signature.
    pub const SIGNATURE: &str = "manifest.sig";
    /// The auditor's README.
    pub const README: &str = "README.md";
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The query, as given.
    pub query: String,
    /// When the bundle was made (RFC 3339, UTC).
    pub generated_at: String,
    /// Lowercase hex SHA-256 of `answer.json`.
    pub answer_sha256: String,
    /// The checkpoints the proofs are against, one per chain.
    pub checkpoints: Vec<CheckpointRef>,
    /// One per row of the answer, in its order.
    pub rows: Vec<Row>,
}

/// A checkpoint of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRef {
    /// The chain id.
    pub chain: String,
    /// The file, relative to the bundle.
    pub file: String,
    /// Records the checkpoint covers.
    pub size: u64,
    /// The keys that signed it (the checkpoint key, then witnesses):
    /// C2SP note key name and key id (8 hex digits).
    pub signers: Vec<Signer>,
}

/// A signature line's key: what an auditor compares with the published keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signer {
    /// The key's name.
    pub name: String,
    /// The C2SP key id, lowercase hex.
    pub key_id: String,
}

/// A row of the answer and the record behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// The chain id.
    pub chain: String,
    /// The record's seq.
    pub seq: u64,
    /// Its leaf hash, lowercase hex.
    pub leaf: String,
    /// Its inclusion proof, relative to the bundle.
    pub proof: String,
}

/// The path of a row's proof in a bundle.
pub fn proof_file(chain_dir_name: &str, seq: u64) -> String {
    format!("{}/{chain_dir_name}/{seq}.json", files::PROOFS)
}

/// The path of a chain's checkpoint in a bundle.
pub fn checkpoint_file(chain_dir_name: &str) -> String {
    format!("{}/{chain_dir_name}.checkpoint", files::CHECKPOINTS)
}

/// The body of the note `manifest.sig` signs: [`SIGNATURE_ORIGIN`] and the
/// manifest's SHA-256.
pub fn signed_body(manifest: &[u8]) -> String {
    format!("{SIGNATURE_ORIGIN}\nsha256 {}\n", sha256_hex(manifest))
}

/// Lowercase hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
