//! Reserved attribute names (docs/chain-format.md §2 and §6).
//!
//! The processor writes these on every kept record and removes whatever a
//! client sent under them; the host names its own events with the event
//! names below. Nothing else may write them.

/// The pipeline name from `audit.pipeline`.
pub const PIPELINE: &str = "audit.pipeline";
/// Default attribute for the received-at time.
pub const DEFAULT_RECEIVED_AT: &str = "audit.collector_received_at";
/// Digest of the policy that processed the record.
pub const POLICY_DIGEST: &str = "audit.policy.digest";
/// Required attributes that a record lacked (an array of keys).
pub const REQUIRE_MISSING: &str = "audit.require.missing";
/// Chain id, on downstream copies.
pub const SEQUENCE_STREAM_ID: &str = "audit.sequence.stream_id";
/// Position in the chain, on downstream copies.
pub const SEQUENCE_NUMBER: &str = "audit.sequence.number";
/// Leaf hash of the previous record (hex), on downstream copies.
pub const SEQUENCE_PREV_HASH: &str = "audit.sequence.prev_hash";
/// Leaf hash of this record (hex), on downstream copies.
pub const INTEGRITY_VALUE: &str = "audit.integrity.value";
/// How `audit.integrity.value` was computed.
pub const INTEGRITY_ALGORITHM: &str = "audit.integrity.algorithm";
/// HMAC-SHA256 of the leaf (hex), on downstream copies of keyed chains.
pub const INTEGRITY_MAC: &str = "audit.integrity.mac";
/// Key id of `audit.integrity.mac`.
pub const INTEGRITY_KEY_ID: &str = "audit.integrity.key_id";

/// The chain attributes only the processor writes (on downstream copies).
pub const CHAIN_KEYS: [&str; 7] = [
    SEQUENCE_STREAM_ID,
    SEQUENCE_NUMBER,
    SEQUENCE_PREV_HASH,
    INTEGRITY_VALUE,
    INTEGRITY_ALGORITHM,
    INTEGRITY_MAC,
    INTEGRITY_KEY_ID,
];

/// Whether the processor owns `key`: the enrichment and chain attributes.
/// A client's value under such a key never reaches a record.
pub fn is_processor_key(key: &str) -> bool {
    key.starts_with("audit.")
        && (key == PIPELINE || key == POLICY_DIGEST || key == REQUIRE_MISSING || CHAIN_KEYS.contains(&key))
}

/// Span name / log event name of the host's record of a policy swap.
pub const POLICY_CHANGE: &str = "audit.policy_change";
/// Span name / log event name of the host's record of a refused swap.
pub const POLICY_REJECTED: &str = "audit.policy_rejected";
/// Log event name of a signed checkpoint forwarded downstream.
pub const CHECKPOINT: &str = "audit.checkpoint";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processor_keys_are_the_enrichment_and_chain_keys_only() {
        for key in CHAIN_KEYS.iter().chain(&[PIPELINE, POLICY_DIGEST, REQUIRE_MISSING]) {
            assert!(is_processor_key(key), "{key}");
        }
        // The received-at key is configurable, so it is checked by the
        // policy that names it, not here; user attributes are never ours.
        for key in [DEFAULT_RECEIVED_AT, "audit.action", "audit.pipeline.x", "pipeline"] {
            assert!(!is_processor_key(key), "{key}");
        }
    }
}
