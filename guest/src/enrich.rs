//! The `audit:` section's enrichment: pipeline, received-at time, policy
//! digest and required-attribute checks, plus the attribute names the
//! downstream copy of each record carries.

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};

use crate::policy::Policy;

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

/// Formats Unix nanoseconds as RFC 3339 UTC with exactly nine fractional
/// digits (`2026-11-23T09:30:00.000000001Z`), so the text sorts as time does.
pub fn rfc3339_nanos(unix_nano: u64) -> Result<String, String> {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_nano)).map_err(|e| e.to_string())?;
    at.format(&format).map_err(|e| e.to_string())
}

/// The chain attributes only the processor writes (on downstream copies).
const CHAIN_KEYS: [&str; 7] = [
    SEQUENCE_STREAM_ID,
    SEQUENCE_NUMBER,
    SEQUENCE_PREV_HASH,
    INTEGRITY_VALUE,
    INTEGRITY_ALGORITHM,
    INTEGRITY_MAC,
    INTEGRITY_KEY_ID,
];

/// Stamps a kept record's attributes as the `audit:` section says and
/// returns whether the record broke `audit.require` (it is flagged with
/// `audit.require.missing`, never dropped). With `check_require` false
/// (the host's own events) `audit.require` is not checked.
///
/// Whatever a client sent under a key the processor owns (the enrichment
/// keys and the chain keys) is removed first, in one pass: it can neither
/// survive into the record nor be mistaken for the processor's own value.
pub fn stamp(
    policy: &Policy,
    received_at: &str,
    check_require: bool,
    attributes: &mut Vec<KeyValue>,
    hits: &mut [u64],
) -> bool {
    let audit = &policy.audit;
    attributes.retain(|kv| kv.key != audit.received_at_key && !is_processor_key(&kv.key));
    let missing: Vec<AnyValue> = if check_require {
        audit
            .require
            .iter()
            .filter(|key| !attributes.iter().any(|kv| &kv.key == *key))
            .map(|key| AnyValue { value: Some(Value::StringValue(key.clone())) })
            .collect()
    } else {
        Vec::new()
    };
    let violated = !missing.is_empty();
    if violated {
        if let Some(rule) = audit.require_rule {
            hits[rule] += 1;
        }
        push(attributes, REQUIRE_MISSING, Value::ArrayValue(ArrayValue { values: missing }));
    }
    if !audit.pipeline.is_empty() {
        push(attributes, PIPELINE, Value::StringValue(audit.pipeline.clone()));
    }
    push(attributes, &audit.received_at_key, Value::StringValue(received_at.to_owned()));
    push(attributes, POLICY_DIGEST, Value::StringValue(policy.digest.clone()));
    violated
}

/// Whether the processor owns `key`: the enrichment and chain attributes.
/// A client's value under such a key never reaches a record.
pub fn is_processor_key(key: &str) -> bool {
    key.starts_with("audit.")
        && (key == PIPELINE || key == POLICY_DIGEST || key == REQUIRE_MISSING || CHAIN_KEYS.contains(&key))
}

/// Appends an attribute the caller knows is absent.
pub fn push(attributes: &mut Vec<KeyValue>, key: &str, value: Value) {
    attributes.push(KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), key_strindex: 0 });
}

/// Sets `key` to `value`, replacing every existing occurrence (the
/// redaction summary attributes are written this way).
pub fn upsert(attributes: &mut Vec<KeyValue>, key: &str, value: Value) {
    let mut found = false;
    attributes.retain_mut(|kv| {
        if kv.key != key {
            return true;
        }
        if found {
            return false;
        }
        found = true;
        kv.value = Some(AnyValue { value: Some(value.clone()) });
        true
    });
    if !found {
        push(attributes, key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_nine_fraction_digits() {
        assert_eq!(rfc3339_nanos(0).unwrap(), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339_nanos(1_795_000_000_123_456_789).unwrap(), "2026-11-18T11:06:40.123456789Z");
        assert_eq!(rfc3339_nanos(u64::MAX).unwrap(), "2554-07-21T23:34:33.709551615Z");
    }

    #[test]
    fn upsert_replaces_all_duplicates() {
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
            key_strindex: 0,
        };
        let mut attrs = vec![kv("a", "1"), kv(PIPELINE, "spoofed"), kv(PIPELINE, "again")];
        upsert(&mut attrs, PIPELINE, Value::StringValue("real".into()));
        assert_eq!(attrs, vec![kv("a", "1"), kv(PIPELINE, "real")]);
        upsert(&mut attrs, "b", Value::StringValue("2".into()));
        assert_eq!(attrs.last(), Some(&kv("b", "2")));
    }
}
