//! Proofs that one record is in a chain, and that one signed checkpoint
//! extends another, which anyone checks offline with the public key and
//! without the store (docs/proof-format.md).
//!
//! - [`make`]: `otel-audit prove`, from the chain's stored tree state (its
//!   hash tiles, [`crate::store::tiles`]) and its signed checkpoints: a few
//!   dozen subtree hashes read, never the chain rehashed;
//! - [`check`]: `otel-audit verify-proof`, the RFC 9162 §2.1.3.2 and
//!   §2.1.4.2 verification algorithms and the checkpoint signatures.

pub mod check;
pub mod make;

use serde::{Deserialize, Serialize};

/// The `format` of the proof documents this build writes and reads.
pub const FORMAT: u32 = 1;

/// A proof document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "proof", rename_all = "lowercase", deny_unknown_fields)]
pub enum Proof {
    /// One record is leaf `leaf_index` of the tree a signed checkpoint names.
    Inclusion(Inclusion),
    /// The tree of one signed checkpoint is a prefix of another's.
    Consistency(Consistency),
}

/// An inclusion proof (RFC 9162 §2.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inclusion {
    /// [`FORMAT`].
    pub format: u32,
    /// The chain id.
    pub chain_id: String,
    /// The record's seq: its leaf index.
    pub leaf_index: u64,
    /// The size of the tree the proof is against (the checkpoint's).
    pub tree_size: u64,
    /// The record, exactly as stored (one line, without its newline).
    pub record: String,
    /// The audit path, leaf to root, lowercase hex.
    pub audit_path: Vec<String>,
    /// The signed checkpoint (C2SP signed note) of `tree_size`.
    pub checkpoint: String,
}

/// A consistency proof (RFC 9162 §2.1.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consistency {
    /// [`FORMAT`].
    pub format: u32,
    /// The chain id.
    pub chain_id: String,
    /// The older tree's size.
    pub old_size: u64,
    /// The newer tree's size.
    pub new_size: u64,
    /// The consistency path, lowercase hex.
    pub consistency_path: Vec<String>,
    /// The signed checkpoint of `old_size`.
    pub old_checkpoint: String,
    /// The signed checkpoint of `new_size`.
    pub new_checkpoint: String,
}

impl Proof {
    /// The document as written: pretty JSON and a newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a proof serializes") + "\n"
    }
}
