//! The `audit:` section's enrichment: pipeline, received-at time, policy
//! digest and required-attribute checks. The attribute names are the
//! chain format's (`audit_format::keys`).
//!
//! The added attributes are the same for every record of a batch except
//! `audit.require.missing`, so they are built once per batch ([`Stamp`])
//! and written into each canonical record beside the record's own
//! attributes (`record::Added`), and appended to its OTLP copy already
//! encoded (`process::otlp`).

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};

use audit_format::keys::{PIPELINE, POLICY_DIGEST, REQUIRE_MISSING, is_processor_key};

use crate::kv::attribute;
use crate::policy::Policy;

/// What enrichment adds to the kept records of one batch.
pub struct Stamp<'p> {
    policy: &'p Policy,
    /// Whether `audit.require` is checked (not for the host's own events).
    check_require: bool,
    /// `audit.pipeline` (when set), the received-at time and the policy
    /// digest, in that order: the same for every record of the batch.
    common: Vec<KeyValue>,
}

impl<'p> Stamp<'p> {
    /// The enrichment of a batch received at `received_at` (RFC 3339). With
    /// `check_require` false (the host's own events) `audit.require` is not
    /// checked.
    pub fn new(policy: &'p Policy, received_at: &str, check_require: bool) -> Self {
        let audit = &policy.audit;
        let mut common = Vec::with_capacity(3);
        if !audit.pipeline.is_empty() {
            common.push(attribute(PIPELINE, Value::StringValue(audit.pipeline.clone())));
        }
        common.push(attribute(&audit.received_at_key, Value::StringValue(received_at.to_owned())));
        common.push(attribute(POLICY_DIGEST, Value::StringValue(policy.digest.clone())));
        Stamp { policy, check_require, common }
    }

    /// Prepares a kept record's attributes for the added ones: whatever a
    /// client sent under a key the processor owns (the enrichment keys and
    /// the chain keys) is removed, in one pass, so it can neither survive
    /// into the record nor be mistaken for the processor's own value. Returns
    /// the record's `audit.require.missing` attribute when it broke
    /// `audit.require` (it is flagged, never dropped).
    pub fn prepare(&self, attributes: &mut Vec<KeyValue>, hits: &mut [u64]) -> Option<KeyValue> {
        let audit = &self.policy.audit;
        attributes.retain(|kv| kv.key != audit.received_at_key && !is_processor_key(&kv.key));
        if !self.check_require {
            return None;
        }
        let missing: Vec<AnyValue> = audit
            .require
            .iter()
            .filter(|key| !attributes.iter().any(|kv| &kv.key == *key))
            .map(|key| AnyValue { value: Some(Value::StringValue(key.clone())) })
            .collect();
        if missing.is_empty() {
            return None;
        }
        if let Some(rule) = audit.require_rule {
            hits[rule] += 1;
        }
        Some(attribute(REQUIRE_MISSING, Value::ArrayValue(ArrayValue { values: missing })))
    }

    /// The attributes added to every record of the batch, in order.
    pub fn common(&self) -> &[KeyValue] {
        &self.common
    }
}
