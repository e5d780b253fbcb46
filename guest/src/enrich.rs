//! The `audit:` section's enrichment: pipeline, received-at time, policy
//! digest and required-attribute checks. The attribute names are the
//! chain format's (`audit_format::keys`).

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};

use audit_format::keys::{PIPELINE, POLICY_DIGEST, REQUIRE_MISSING, is_processor_key};

use crate::kv::push;
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
