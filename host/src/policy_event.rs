//! The trail's records about its own configuration: `audit.policy_change`
//! when a hot swap is applied, `audit.policy_rejected` when a candidate is
//! refused. They are built here as OTLP (a span in a traces chain, a log
//! record in a logs chain, so a chain and its downstream copy keep one
//! signal) and chained by the processor's `chain-events`, which applies no
//! policy stage: no policy can drop what the trail says about itself.
//!
//! The reloader ([`crate::reload`]) builds them; each chain's worker
//! ([`crate::pipeline::chain`]) records them, and builds its own when a
//! restart finds the processor changed (trigger `startup`).

use std::path::PathBuf;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::SpanKind};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::otlp::Signal;
use audit_format::keys::{POLICY_CHANGE, POLICY_REJECTED};

/// What started a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A watched file changed (these paths).
    File(Vec<PathBuf>),
    /// SIGHUP.
    Signal,
    /// `POST /admin/reload`.
    Admin,
    /// A restart found the processor's files changed since the chain last
    /// ran (or a reload ordered before the stop was not applied).
    Startup,
}

impl Trigger {
    /// Which kind of trigger it is, without the paths.
    pub fn kind(&self) -> TriggerKind {
        match self {
            Trigger::File(_) => TriggerKind::File,
            Trigger::Signal => TriggerKind::Signal,
            Trigger::Admin => TriggerKind::Admin,
            Trigger::Startup => TriggerKind::Startup,
        }
    }

    /// `file`, `signal`, `admin` or `startup`: the `trigger` attribute and metric label.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// A [`Trigger`] without its details: what the admin endpoint reports as
/// `trigger` (`file`, `signal`, `admin` or `startup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// A watched file changed.
    File,
    /// SIGHUP.
    Signal,
    /// `POST /admin/reload`.
    Admin,
    /// What serves since the server started, or a change a restart found.
    Startup,
}

impl TriggerKind {
    /// `file`, `signal`, `admin` or `startup`.
    pub fn name(self) -> &'static str {
        match self {
            TriggerKind::File => "file",
            TriggerKind::Signal => "signal",
            TriggerKind::Admin => "admin",
            TriggerKind::Startup => "startup",
        }
    }
}

/// One event about a processor's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEvent {
    /// Processor id, e.g. `wasm/soc2`.
    pub processor: String,
    /// What started the reload.
    pub trigger: Trigger,
    /// Module digest in force before (set by the chain that records the
    /// event: it knows what it ran).
    pub old_module_digest: String,
    /// Policy digest in force before (likewise).
    pub old_policy_digest: String,
    /// Applied or rejected, with the details.
    pub kind: EventKind,
}

/// Whether the candidate was applied or rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The candidate serves from this record on.
    Change {
        /// The new module's digest.
        module_digest: String,
        /// The new policy's digest.
        policy_digest: String,
        /// Whether the secrets (key bytes) changed.
        secrets_changed: bool,
    },
    /// The candidate was refused; the old module and policy keep serving.
    Rejected {
        /// The candidate module's digest, when it could be read.
        module_digest: Option<String>,
        /// The candidate policy's digest, when it could be read.
        policy_digest: Option<String>,
        /// Why it was refused.
        reason: String,
    },
}

impl PolicyEvent {
    /// `audit.policy_change` or `audit.policy_rejected`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            EventKind::Change { .. } => POLICY_CHANGE,
            EventKind::Rejected { .. } => POLICY_REJECTED,
        }
    }

    /// The record's attributes, under the event's name
    /// (`audit.policy_change.trigger`, ...).
    pub fn attributes(&self) -> Vec<KeyValue> {
        let prefix = self.name();
        let mut attributes = Vec::new();
        let mut put = |key: &str, value: Value| {
            attributes.push(KeyValue {
                key: format!("{prefix}.{key}"),
                value: Some(AnyValue { value: Some(value) }),
                key_strindex: 0,
            });
        };
        let text = |s: &str| Value::StringValue(s.to_owned());
        put("processor", text(&self.processor));
        put("trigger", text(self.trigger.name()));
        if let Trigger::File(paths) = &self.trigger {
            let files = paths.iter().map(|p| AnyValue { value: Some(text(&p.display().to_string())) }).collect();
            put("files", Value::ArrayValue(ArrayValue { values: files }));
        }
        put("old_module_digest", text(&self.old_module_digest));
        put("old_policy_digest", text(&self.old_policy_digest));
        match &self.kind {
            EventKind::Change { module_digest, policy_digest, secrets_changed } => {
                put("new_module_digest", text(module_digest));
                put("new_policy_digest", text(policy_digest));
                put("secrets_changed", Value::BoolValue(*secrets_changed));
            }
            EventKind::Rejected { module_digest, policy_digest, reason } => {
                if let Some(digest) = module_digest {
                    put("candidate_module_digest", text(digest));
                }
                if let Some(digest) = policy_digest {
                    put("candidate_policy_digest", text(digest));
                }
                put("reason", text(reason));
            }
        }
        attributes
    }

    /// The event as an OTLP export request of `signal` (protobuf), for the
    /// chain `chain_id` at `seq`, at `at_unix_nano`. A span's ids are
    /// derived from the chain position, so each event has its own.
    pub fn export_request(&self, signal: Signal, chain_id: &str, seq: u64, at_unix_nano: u64) -> Vec<u8> {
        let resource = Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue { value: Some(Value::StringValue("otel-audit".into())) }),
                key_strindex: 0,
            }],
            dropped_attributes_count: 0,
            entity_refs: Vec::new(),
        });
        let scope = Some(InstrumentationScope {
            name: "otel-audit".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
        });
        match signal {
            Signal::Traces => {
                let ids = Sha256::new()
                    .chain_update(self.name())
                    .chain_update(chain_id)
                    .chain_update(seq.to_be_bytes())
                    .finalize();
                let span = Span {
                    trace_id: ids[..16].to_vec(),
                    span_id: ids[16..24].to_vec(),
                    name: self.name().into(),
                    kind: SpanKind::Internal as i32,
                    start_time_unix_nano: at_unix_nano,
                    end_time_unix_nano: at_unix_nano,
                    attributes: self.attributes(),
                    ..Span::default()
                };
                ExportTraceServiceRequest {
                    resource_spans: vec![ResourceSpans {
                        resource,
                        scope_spans: vec![ScopeSpans { scope, spans: vec![span], schema_url: String::new() }],
                        schema_url: String::new(),
                    }],
                }
                .encode_to_vec()
            }
            Signal::Logs => {
                let record = LogRecord {
                    time_unix_nano: at_unix_nano,
                    observed_time_unix_nano: at_unix_nano,
                    severity_number: 9, // INFO
                    severity_text: "INFO".into(),
                    event_name: self.name().into(),
                    body: Some(AnyValue { value: Some(Value::StringValue(self.summary())) }),
                    attributes: self.attributes(),
                    ..LogRecord::default()
                };
                ExportLogsServiceRequest {
                    resource_logs: vec![ResourceLogs {
                        resource,
                        scope_logs: vec![ScopeLogs { scope, log_records: vec![record], schema_url: String::new() }],
                        schema_url: String::new(),
                    }],
                }
                .encode_to_vec()
            }
        }
    }

    /// One line for logs and log record bodies.
    pub fn summary(&self) -> String {
        match &self.kind {
            EventKind::Change { module_digest, policy_digest, .. } => format!(
                "{}: policy {} -> {}, module {} -> {} ({})",
                self.processor,
                short(&self.old_policy_digest),
                short(policy_digest),
                short(&self.old_module_digest),
                short(module_digest),
                self.trigger.name()
            ),
            EventKind::Rejected { reason, .. } => {
                format!("{}: candidate rejected ({}): {reason}", self.processor, self.trigger.name())
            }
        }
    }
}

/// `sha256:0123456789ab`: enough of a digest for a log line.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min("sha256:".len() + 12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change() -> PolicyEvent {
        PolicyEvent {
            processor: "wasm/soc2".into(),
            trigger: Trigger::File(vec!["policies/a.yaml".into()]),
            old_module_digest: "sha256:aa".into(),
            old_policy_digest: "sha256:bb".into(),
            kind: EventKind::Change {
                module_digest: "sha256:aa".into(),
                policy_digest: "sha256:cc".into(),
                secrets_changed: false,
            },
        }
    }

    fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn change_span_carries_old_and_new_digests_and_the_trigger() {
        let bytes = change().export_request(Signal::Traces, "h/traces/a/0", 7, 1_000);
        let request = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name, POLICY_CHANGE);
        assert_eq!((span.trace_id.len(), span.span_id.len()), (16, 8));
        let attrs = &span.attributes;
        let text = |k: &str| match attribute(attrs, k) {
            Some(Value::StringValue(s)) => s.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(text("audit.policy_change.trigger"), "file");
        assert_eq!(text("audit.policy_change.old_policy_digest"), "sha256:bb");
        assert_eq!(text("audit.policy_change.new_policy_digest"), "sha256:cc");
        assert_eq!(text("audit.policy_change.new_module_digest"), "sha256:aa");
        // Another position gets other ids.
        let other = change().export_request(Signal::Traces, "h/traces/a/0", 8, 1_000);
        let other = ExportTraceServiceRequest::decode(other.as_slice()).unwrap();
        assert_ne!(other.resource_spans[0].scope_spans[0].spans[0].span_id, span.span_id);
    }

    #[test]
    fn rejection_log_names_the_reason() {
        let mut event = change();
        event.trigger = Trigger::Admin;
        event.kind =
            EventKind::Rejected { module_digest: None, policy_digest: Some("sha256:dd".into()), reason: "bad".into() };
        let bytes = event.export_request(Signal::Logs, "h/logs/a/0", 0, 5);
        let request = ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
        let record = &request.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.event_name, POLICY_REJECTED);
        assert_eq!(
            attribute(&record.attributes, "audit.policy_rejected.reason"),
            Some(&Value::StringValue("bad".into()))
        );
        assert!(attribute(&record.attributes, "audit.policy_rejected.candidate_module_digest").is_none());
        assert!(attribute(&record.attributes, "audit.policy_rejected.files").is_none());
    }
}
