//! The `audit:` section's enrichment: pipeline, received-at time, policy
//! digest and required-attribute checks. The attribute names are the
//! chain format's (`audit_format::keys`).

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};

use audit_format::keys::{PIPELINE, POLICY_DIGEST, REQUIRE_MISSING, is_processor_key};

use crate::policy::Policy;

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
