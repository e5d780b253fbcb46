//! A batch through every stage: what is kept, chained and refused.

use super::*;
use crate::api::ChainHead;
use audit_format::keys;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

const POLICY: &str = "filter:\n  spans:\n    include:\n      match_type: regexp\n      attributes: [{key: audit.action, value: '.*'}]\naudit:\n  pipeline: p\n";

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        key_strindex: 0,
    }
}

fn request(spans: Vec<Vec<Span>>) -> Vec<u8> {
    let resource_spans = spans
        .into_iter()
        .map(|spans| ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
}

fn ctx() -> Context {
    Context { received_at_unix_nano: 1, head: ChainHead::genesis("c"), sender: None }
}

fn audit_span(action: &str) -> Span {
    Span { name: action.into(), span_id: vec![1; 8], attributes: vec![kv("audit.action", action)], ..Span::default() }
}

#[test]
fn keeps_chains_and_drops_empty_containers() {
    let policy = Policy::parse(POLICY, &[]).unwrap();
    let plain = Span { name: "GET /".into(), ..Span::default() };
    let req = request(vec![vec![plain.clone()], vec![audit_span("login"), plain, audit_span("logout")]]);
    let out = traces(&policy, &req, &ctx()).unwrap();
    assert_eq!((out.stats.received, out.stats.kept, out.stats.dropped), (4, 2, 2));
    assert_eq!(out.records.len(), 2);
    assert_eq!(out.leaves[0], chain::leaf_hash(&out.records[0]));
    assert_eq!(out.head, ChainHead { chain_id: "c".into(), seq: 2, prev: out.leaves[1] });
    let second = String::from_utf8(out.records[1].clone()).unwrap();
    assert!(
        second.starts_with(&format!(
            "{{\"chain\":{{\"id\":\"c\",\"prev\":\"{}\",\"seq\":\"1\"}}",
            hex::encode(out.leaves[0])
        )),
        "{second}"
    );
    let kept = ExportTraceServiceRequest::decode(out.otlp.as_slice()).unwrap();
    assert_eq!(kept.resource_spans.len(), 1, "the resource with no kept span is removed");
    let spans = &kept.resource_spans[0].scope_spans[0].spans;
    let number = spans[1].attributes.iter().find(|kv| kv.key == keys::SEQUENCE_NUMBER).unwrap();
    assert_eq!(number.value, Some(AnyValue { value: Some(Value::IntValue(1)) }));
}

#[test]
fn records_are_their_own_jcs_form() {
    let policy = Policy::parse(POLICY, &[]).unwrap();
    let mut span = audit_span("login");
    span.attributes.push(kv("é", "\u{1}\"\\"));
    span.attributes.push(kv("😀", "x"));
    span.attributes.push(kv("\u{fb33}", "y"));
    span.attributes.push(KeyValue {
        key: "d".into(),
        value: Some(AnyValue { value: Some(Value::DoubleValue(1e21)) }),
        key_strindex: 0,
    });
    let out = traces(&policy, &request(vec![vec![span]]), &ctx()).unwrap();
    let record = &out.records[0];
    let parsed: serde_json::Value = serde_json::from_slice(record).unwrap();
    let canonical = serde_json_canonicalizer::to_vec(&parsed).unwrap();
    assert_eq!(String::from_utf8_lossy(&canonical), String::from_utf8_lossy(record));
}

#[test]
fn keyed_chain_inserts_the_mac_outside_the_leaf() {
    let policy =
        Policy::parse(&format!("{POLICY}  chain: {{key_id: k1}}\n"), &[("k1".into(), b"key".to_vec())]).unwrap();
    let out = traces(&policy, &request(vec![vec![audit_span("a")]]), &ctx()).unwrap();
    let mut record: serde_json::Value = serde_json::from_slice(&out.records[0]).unwrap();
    let mac = record.as_object_mut().unwrap().remove("mac").unwrap();
    let body = serde_json_canonicalizer::to_vec(&record).unwrap();
    let leaf = chain::leaf_hash(&body);
    assert_eq!(leaf, out.leaves[0]);
    assert_eq!(mac.as_str().unwrap(), hex::encode(chain::record_mac(b"key", &leaf)));
    assert_eq!(record["chain"]["key_id"], "k1");
}

#[test]
fn client_values_under_processor_keys_never_reach_the_record() {
    let policy = Policy::parse(POLICY, &[]).unwrap();
    let mut span = audit_span("login");
    for key in [keys::INTEGRITY_VALUE, keys::SEQUENCE_NUMBER, keys::POLICY_DIGEST, keys::PIPELINE] {
        span.attributes.push(kv(key, "spoofed"));
    }
    let out = traces(&policy, &request(vec![vec![span]]), &ctx()).unwrap();
    let record = String::from_utf8(out.records[0].clone()).unwrap();
    assert!(!record.contains("spoofed") && !record.contains(keys::INTEGRITY_VALUE), "{record}");
    let kept = ExportTraceServiceRequest::decode(out.otlp.as_slice()).unwrap();
    let attrs = &kept.resource_spans[0].scope_spans[0].spans[0].attributes;
    for key in [keys::INTEGRITY_VALUE, keys::SEQUENCE_NUMBER, keys::POLICY_DIGEST, keys::PIPELINE] {
        let values: Vec<_> = attrs.iter().filter(|a| a.key == key).collect();
        assert_eq!(values.len(), 1, "{key} once");
        assert_ne!(values[0].value, Some(AnyValue { value: Some(Value::StringValue("spoofed".into())) }), "{key}");
    }
}

/// Regressions from review: each of these once leaked into a record.
#[test]
fn reviewed_leaks_stay_closed() {
    // A client's audit.pipeline is dropped even when the policy sets none.
    let no_pipeline = Policy::parse("audit:\n  require: [enduser.id]\n", &[]).unwrap();
    let mut span = audit_span("a");
    span.attributes.push(kv(keys::PIPELINE, "spoofed"));
    let out = traces(&no_pipeline, &request(vec![vec![span]]), &ctx()).unwrap();
    assert!(!String::from_utf8_lossy(&out.records[0]).contains("spoofed"));

    // An attributes exclude about services does not match log records,
    // so the action still runs on them.
    let policy = Policy::parse(
        "attributes:\n  exclude: {match_type: strict, services: [other]}\n  actions: [{key: password, action: delete}]\n",
        &[],
    )
    .unwrap();
    let log = LogRecord { attributes: vec![kv("password", "hunter2")], ..LogRecord::default() };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![opentelemetry_proto::tonic::logs::v1::ResourceLogs {
            scope_logs: vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
                log_records: vec![log],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let out = logs(&policy, &req.encode_to_vec(), &ctx()).unwrap();
    assert!(!String::from_utf8_lossy(&out.records[0]).contains("hunter2"));

    // redaction.* keys get no pass through allowed_keys.
    let redacting = Policy::parse("redaction:\n  allowed_keys: [audit.action]\n", &[]).unwrap();
    let mut span = audit_span("a");
    span.attributes.push(kv("redaction.ssn", "123-45-6789"));
    let out = traces(&redacting, &request(vec![vec![span]]), &ctx()).unwrap();
    assert!(!String::from_utf8_lossy(&out.records[0]).contains("123-45-6789"));

    // String-table references in resource attributes are refused.
    let mut req = ExportTraceServiceRequest::decode(request(vec![vec![audit_span("a")]]).as_slice()).unwrap();
    req.resource_spans[0].resource = Some(Resource {
        attributes: vec![KeyValue { key: "k".into(), value: None, key_strindex: 7 }],
        ..Resource::default()
    });
    let err = traces(&no_pipeline, &req.encode_to_vec(), &ctx()).unwrap_err();
    assert_eq!(
        err,
        ProcessError::Decode(
            "resource_spans[0].resource: attributes: key_strindex 7 is allowed only in profiles".into()
        )
    );

    // Sequence numbers stop at 2^63 - 1 (audit.sequence.number is an int64).
    let edge = Context {
        received_at_unix_nano: 1,
        head: ChainHead { chain_id: "c".into(), seq: (1 << 63) - 1, prev: [0; 32] },
        sender: None,
    };
    assert!(traces(&no_pipeline, &request(vec![vec![audit_span("a")]]), &edge).is_ok());
    let past = Context { head: ChainHead { seq: 1 << 63, ..edge.head.clone() }, ..edge };
    assert!(matches!(
        traces(&no_pipeline, &request(vec![vec![audit_span("a")]]), &past),
        Err(ProcessError::InvalidContext(_))
    ));
}

#[test]
fn invalid_input_is_refused_whole() {
    let policy = Policy::parse(POLICY, &[]).unwrap();
    let mut bad = audit_span("b");
    bad.trace_id = vec![1; 12];
    let err = traces(&policy, &request(vec![vec![audit_span("a"), bad]]), &ctx()).unwrap_err();
    assert_eq!(
        err,
        ProcessError::Decode("resource_spans[0].scope_spans[0].spans[1]: trace_id must be 16 bytes (32 hex digits) or empty, got 12 bytes".into())
    );
    let truncated = &request(vec![vec![audit_span("a")]])[..10];
    assert!(
        matches!(traces(&policy, truncated, &ctx()), Err(ProcessError::Decode(m)) if m.starts_with("ExportTraceServiceRequest: "))
    );
    let empty_chain = Context { received_at_unix_nano: 1, head: ChainHead::genesis(""), sender: None };
    assert!(matches!(traces(&policy, &[], &empty_chain), Err(ProcessError::InvalidContext(_))));
}

/// A policy every stage of which would touch the events below: the filters
/// drop them, an action deletes `secret`, redaction masks the card number
/// and `audit.require` names an attribute they lack.
const STRICT: &str = "\
filter:
  spans:
    include:
      match_type: regexp
      attributes: [{key: audit.action, value: '.*'}]
  logs:
    include:
      match_type: regexp
      record_attributes: [{key: audit.action, value: '.*'}]
attributes:
  actions: [{key: secret, action: delete}]
redaction:
  allow_all_keys: true
  blocked_values: ['4[0-9]{15}']
  summary: debug
audit:
  pipeline: p
  require: [enduser.id]
";

fn event_attributes() -> Vec<KeyValue> {
    vec![kv("secret", "s3cr3t"), kv("card", "4111111111111111"), kv(keys::PIPELINE, "spoofed")]
}

fn continued() -> Context {
    Context { received_at_unix_nano: 1, head: ChainHead { chain_id: "c".into(), seq: 41, prev: [9; 32] }, sender: None }
}

fn string_attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// What every host event must show, whatever the signal: kept as it was
/// sent, enriched, no rule hit, chained on from `ctx.head`.
fn assert_event_kept(policy: &Policy, out: &Output, ctx: &Context, attributes: &[KeyValue]) {
    assert_eq!(
        out.stats,
        Stats { received: 1, kept: 1, rule_hits: vec![0; policy.rules.len()], ..Stats::default() },
        "kept whole, no rule hit"
    );
    assert!(!policy.rules.is_empty());
    assert_eq!(string_attr(attributes, "secret"), Some("s3cr3t"), "no attributes action");
    assert_eq!(string_attr(attributes, "card"), Some("4111111111111111"), "no redaction");
    assert!(!attributes.iter().any(|kv| kv.key.starts_with("redaction.")), "no redaction summary");
    assert!(!attributes.iter().any(|kv| kv.key == keys::REQUIRE_MISSING), "audit.require not checked");
    assert_eq!(string_attr(attributes, keys::PIPELINE), Some("p"));
    assert_eq!(string_attr(attributes, keys::DEFAULT_RECEIVED_AT), Some("1970-01-01T00:00:00.000000001Z"));
    assert_eq!(string_attr(attributes, keys::POLICY_DIGEST), Some(policy.digest.as_str()));
    let number = attributes.iter().find(|kv| kv.key == keys::SEQUENCE_NUMBER).unwrap();
    assert_eq!(number.value, Some(AnyValue { value: Some(Value::IntValue(41)) }));

    assert_eq!(out.leaves, vec![chain::leaf_hash(&out.records[0])]);
    assert_eq!(out.head, ChainHead { chain_id: "c".into(), seq: 42, prev: out.leaves[0] });
    let record: serde_json::Value = serde_json::from_slice(&out.records[0]).unwrap();
    assert_eq!(record["chain"], serde_json::json!({"id": "c", "seq": "41", "prev": hex::encode(ctx.head.prev)}));
    let item = if record.get("span").is_some() { &record["span"] } else { &record["log"] };
    assert_eq!(item["attributes"]["secret"]["s"], "s3cr3t");
    assert_eq!(item["attributes"]["card"]["s"], "4111111111111111");
    assert_eq!(item["attributes"][keys::PIPELINE]["s"], "p");
    assert_eq!(item["attributes"][keys::POLICY_DIGEST]["s"], policy.digest.as_str());
    assert!(item["attributes"].get(keys::REQUIRE_MISSING).is_none());
}

#[test]
fn host_span_events_pass_every_policy_stage_untouched() {
    let mut processor = crate::Processor::new();
    processor.configure(STRICT, &[]).unwrap();
    let policy = Policy::parse(STRICT, &[]).unwrap();
    let span = Span { name: "audit.policy_change".into(), attributes: event_attributes(), ..Span::default() };
    let req = request(vec![vec![span]]);
    let ctx = continued();

    let filtered = processor.process_traces(&req, &ctx).unwrap();
    assert_eq!((filtered.stats.kept, filtered.stats.dropped), (0, 1), "the policy itself drops the span");
    // Let through, the same span would lose `secret`, have its card masked
    // and be flagged for lacking enduser.id.
    let mut audited = Span { attributes: event_attributes(), ..Span::default() };
    audited.attributes.push(kv("audit.action", "x"));
    let acted = processor.process_traces(&request(vec![vec![audited]]), &ctx).unwrap();
    assert_eq!((acted.stats.kept, acted.stats.redacted, acted.stats.violations), (1, 1, 1));
    let acted = String::from_utf8(acted.records[0].clone()).unwrap();
    assert!(!acted.contains("s3cr3t") && !acted.contains("4111111111111111"), "{acted}");

    let out = processor.chain_events(crate::Signal::Traces, &req, &ctx).unwrap();
    let kept = ExportTraceServiceRequest::decode(out.otlp.as_slice()).unwrap();
    let span = &kept.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.name, "audit.policy_change");
    assert_event_kept(&policy, &out, &ctx, &span.attributes);
    assert_eq!(out, trace_events(&policy, &req, &ctx).unwrap(), "Processor and process agree");
}

#[test]
fn host_log_events_pass_every_policy_stage_untouched() {
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    let mut processor = crate::Processor::new();
    processor.configure(STRICT, &[]).unwrap();
    let policy = Policy::parse(STRICT, &[]).unwrap();
    let log = LogRecord {
        body: Some(AnyValue { value: Some(Value::StringValue("policy rejected".into())) }),
        attributes: event_attributes(),
        ..LogRecord::default()
    };
    let scope_logs = vec![ScopeLogs { log_records: vec![log], ..Default::default() }];
    let req = ExportLogsServiceRequest { resource_logs: vec![ResourceLogs { scope_logs, ..Default::default() }] };
    let req = req.encode_to_vec();
    let ctx = continued();

    let filtered = processor.process_logs(&req, &ctx).unwrap();
    assert_eq!((filtered.stats.kept, filtered.stats.dropped), (0, 1), "the policy itself drops the log");

    let out = processor.chain_events(crate::Signal::Logs, &req, &ctx).unwrap();
    let kept = ExportLogsServiceRequest::decode(out.otlp.as_slice()).unwrap();
    let log = &kept.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(log.body, Some(AnyValue { value: Some(Value::StringValue("policy rejected".into())) }));
    assert_event_kept(&policy, &out, &ctx, &log.attributes);
    assert_eq!(out, log_events(&policy, &req, &ctx).unwrap(), "Processor and process agree");
}

#[test]
fn host_events_are_keyed_and_validated_like_any_batch() {
    let policy =
        Policy::parse(&format!("{STRICT}  chain: {{key_id: k1}}\n"), &[("k1".into(), b"key".to_vec())]).unwrap();
    let span = Span { name: "audit.policy_rejected".into(), ..Span::default() };
    let out = trace_events(&policy, &request(vec![vec![span]]), &ctx()).unwrap();
    let record: serde_json::Value = serde_json::from_slice(&out.records[0]).unwrap();
    assert_eq!(record["mac"], hex::encode(chain::record_mac(b"key", &out.leaves[0])));

    let mut bad = audit_span("b");
    bad.trace_id = vec![1; 12];
    let bad = request(vec![vec![audit_span("a"), bad]]);
    assert_eq!(trace_events(&policy, &bad, &ctx()), traces(&policy, &bad, &ctx()), "the same refusal");
    assert!(matches!(trace_events(&policy, &bad, &ctx()), Err(ProcessError::Decode(_))));

    let unconfigured = crate::Processor::new();
    let err = unconfigured.chain_events(crate::Signal::Logs, &[], &ctx()).unwrap_err();
    assert!(matches!(err, ProcessError::Policy(_)), "{err}");
}

#[test]
fn a_sender_is_recorded_in_canonical_order_and_makes_the_record_version_2() {
    let policy = Policy::parse(POLICY, &[]).unwrap();
    let req = request(vec![vec![audit_span("login")]]);
    let sender = audit_format::Sender {
        protocol: "grpc".into(),
        address: "10.0.0.7:50123".into(),
        tls: "TLSv1.3".into(),
        principal: "bearertokenauth/writers".into(),
        certificate_subject: "CN=collector-7".into(),
        certificate_sans: vec!["DNS:collector-7.example".into()],
    };
    let with = Context { sender: Some(sender), ..ctx() };
    let record = String::from_utf8(traces(&policy, &req, &with).unwrap().records.remove(0)).unwrap();
    let member = r#","sender":{"address":"10.0.0.7:50123","certificate":{"sans":["DNS:collector-7.example"],"subject":"CN=collector-7"},"principal":"bearertokenauth/writers","protocol":"grpc","tls":"TLSv1.3"},"span":"#;
    assert!(record.contains(member), "{record}");
    assert!(record.ends_with(r#","v":2}"#), "{record}");
    // Unknown parts are left out; without a sender the record stays version 1.
    let plain =
        Context { sender: Some(audit_format::Sender { protocol: "http".into(), ..Default::default() }), ..ctx() };
    let record = String::from_utf8(traces(&policy, &req, &plain).unwrap().records.remove(0)).unwrap();
    assert!(record.contains(r#","sender":{"protocol":"http"},"span":"#), "{record}");
    let record = String::from_utf8(traces(&policy, &req, &ctx()).unwrap().records.remove(0)).unwrap();
    assert!(!record.contains("sender") && record.ends_with(r#","v":1}"#), "{record}");
}

#[test]
fn without_forward_copies_only_the_otlp_copy_is_left_out() {
    let mut processor = crate::Processor::new();
    processor.configure(POLICY, &[]).unwrap();
    let audited = Span { attributes: vec![kv("audit.action", "login")], ..Span::default() };
    let req = request(vec![vec![audited]]);
    let full = processor.process_traces(&req, &ctx()).unwrap();
    processor.forward_copies(false);
    let lean = processor.process_traces(&req, &ctx()).unwrap();
    assert!(!full.otlp.is_empty() && lean.otlp.is_empty());
    assert_eq!(lean, Output { otlp: Vec::new(), ..full.clone() });
    let events = processor.chain_events(crate::Signal::Traces, &req, &ctx()).unwrap();
    assert!(events.otlp.is_empty() && events.records.len() == 1);
    processor.forward_copies(true);
    assert_eq!(processor.process_traces(&req, &ctx()).unwrap(), full);
}

/// Resource attributes are redacted once per resource, before the record's
/// resource member is written: a kept span's record and its downstream copy
/// carry the masked resource and the Collector's summary on it, while the
/// filter still matched the resource as it was received.
#[test]
fn resource_attributes_are_redacted_in_the_record() {
    let policy = Policy::parse(
        "\
filter:
  spans:
    include:
      match_type: strict
      resources: [{key: deployment.environment, value: prod}]
redaction:
  allowed_keys: [audit.action, service.name, billing.card]
  blocked_values: ['4[0-9]{15}']
  summary: debug
audit:
  pipeline: p
",
        &[],
    )
    .unwrap();
    let mut req = ExportTraceServiceRequest::decode(
        request(vec![vec![audit_span("charge"), audit_span("refund")], vec![audit_span("login")]]).as_slice(),
    )
    .unwrap();
    req.resource_spans[0].resource = Some(Resource {
        attributes: vec![
            kv("service.name", "payments"),
            kv("deployment.environment", "prod"),
            kv("billing.card", "card 4111111111111111"),
        ],
        ..Resource::default()
    });
    req.resource_spans[1].resource =
        Some(Resource { attributes: vec![kv("deployment.environment", "staging")], ..Resource::default() });
    let out = traces(&policy, &req.encode_to_vec(), &ctx()).unwrap();

    assert_eq!((out.stats.kept, out.stats.dropped), (2, 1), "the filter saw deployment.environment before redaction");
    // Once per resource, not per span: 1 removed + 1 masked on the kept
    // resource, and 1 removed on the staging one, whose span was dropped.
    assert_eq!(out.stats.redacted, 3);
    let hits = |path: &str| out.stats.rule_hits[policy.rules.iter().position(|r| r.id == path).unwrap()];
    assert_eq!(hits("redaction.allowed_keys"), 2, "one removal per resource");
    assert_eq!(hits("redaction.blocked_values[0]"), 1, "the card, once for both spans");

    let expected = serde_json::json!({
        "service.name": {"s": "payments"},
        "billing.card": {"s": "card ****"},
        "redaction.redacted.keys": {"s": "deployment.environment"},
        "redaction.redacted.count": {"i": "1"},
        "redaction.masked.keys": {"s": "billing.card"},
        "redaction.masked.count": {"i": "1"},
    });
    for record in &out.records {
        assert!(!String::from_utf8_lossy(record).contains("4111111111111111"));
        let record: serde_json::Value = serde_json::from_slice(record).unwrap();
        assert_eq!(record["resource"]["attributes"], expected, "{record}");
    }
    let kept = ExportTraceServiceRequest::decode(out.otlp.as_slice()).unwrap();
    assert_eq!(kept.resource_spans.len(), 1);
    let resource = kept.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(string_attr(&resource.attributes, "billing.card"), Some("card ****"));
    assert_eq!(string_attr(&resource.attributes, "deployment.environment"), None);

    // The host's own events keep their resource as sent.
    let out = trace_events(&policy, &req.encode_to_vec(), &ctx()).unwrap();
    assert!(String::from_utf8_lossy(&out.records[0]).contains("card 4111111111111111"));
}

#[test]
fn scope_attributes_are_redacted_and_transform_runs_in_processor_order() {
    let policy = Policy::parse(
        r#"
filter:
  traces:
    span: ['attributes["audit.action"] == "refund"']
attributes:
  actions:
    - {key: copied, from_attribute: audit.action, action: insert}
transform:
  trace_statements:
    - context: scope
      statements: ['set(attributes["team"], "payments")']
    - context: span
      statements: ['set(attributes["card"], Concat([attributes["copied"], "4111111111111111"], " "))']
redaction:
  allow_all_keys: true
  blocked_values: ['4[0-9]{15}']
"#,
        &[],
    )
    .unwrap();
    let mut req =
        ExportTraceServiceRequest::decode(request(vec![vec![audit_span("charge"), audit_span("refund")]]).as_slice())
            .unwrap();
    req.resource_spans[0].scope_spans[0].scope = Some(InstrumentationScope {
        name: "billing".into(),
        attributes: vec![kv("owner.card", "4111111111111111")],
        ..InstrumentationScope::default()
    });
    let out = traces(&policy, &req.encode_to_vec(), &ctx()).unwrap();
    assert_eq!((out.stats.kept, out.stats.dropped), (1, 1), "the OTTL condition dropped the refund");
    let record: serde_json::Value = serde_json::from_slice(&out.records[0]).unwrap();
    // The span statement saw the attributes action's result; redaction saw
    // the span statement's result; the scope got its statement and was
    // redacted once.
    assert_eq!(record["span"]["attributes"]["card"], serde_json::json!({"s": "charge ****"}), "{record}");
    assert_eq!(record["scope"]["attributes"]["owner.card"], serde_json::json!({"s": "****"}), "{record}");
    assert_eq!(record["scope"]["attributes"]["team"], serde_json::json!({"s": "payments"}), "{record}");
    assert_eq!(out.stats.redacted, 2);
}

/// Each record of the OTLP copy is the record as received, its own
/// attributes first, then the enrichment's, then the chain's.
#[test]
fn the_otlp_copy_appends_the_added_attributes_to_each_records_own() {
    use crate::prefilter::tests::{Rng, logs as any_logs, traces as any_traces};
    let secrets = [("k1".to_owned(), b"key".to_vec())];
    let policy =
        Policy::parse("audit:\n  pipeline: p\n  require: [enduser.id]\n  chain: {key_id: k1}\n", &secrets).unwrap();
    let common = crate::enrich::Stamp::new(&policy, &audit_format::rfc3339_nanos(1), true).common().to_vec();
    let string = |value: String| Some(AnyValue { value: Some(Value::StringValue(value)) });
    // The added attributes of the record at `seq` whose leaf is `leaf`.
    let added = |seq: usize, prev: Hash, leaf: Hash| {
        let missing = KeyValue {
            key: keys::REQUIRE_MISSING.into(),
            value: Some(AnyValue {
                value: Some(Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                    values: vec![string("enduser.id".into()).unwrap()],
                })),
            }),
            key_strindex: 0,
        };
        let chain = [
            (keys::SEQUENCE_STREAM_ID, string("c".into())),
            (keys::SEQUENCE_NUMBER, Some(AnyValue { value: Some(Value::IntValue(seq as i64)) })),
            (keys::SEQUENCE_PREV_HASH, string(hex::encode(prev))),
            (keys::INTEGRITY_VALUE, string(hex::encode(leaf))),
            (keys::INTEGRITY_ALGORITHM, string(chain::LEAF_ALGORITHM.into())),
            (keys::INTEGRITY_MAC, string(hex::encode(chain::record_mac(b"key", &leaf)))),
            (keys::INTEGRITY_KEY_ID, string("k1".into())),
        ];
        let chain = chain.into_iter().map(|(key, value)| KeyValue { key: key.into(), value, key_strindex: 0 });
        std::iter::once(missing).chain(common.iter().cloned()).chain(chain).collect::<Vec<_>>()
    };
    let prev = |out: &Output, seq: usize| if seq == 0 { ctx().head.prev } else { out.leaves[seq - 1] };
    let mut rng = Rng(0xc0b1);
    let mut records = 0;
    for _ in 0..40 {
        let mut expected = any_traces(&mut rng);
        let out = traces(&policy, &expected.encode_to_vec(), &ctx()).unwrap();
        expected.resource_spans.iter_mut().for_each(|r| r.scope_spans.retain(|s| !s.spans.is_empty()));
        expected.resource_spans.retain(|r| !r.scope_spans.is_empty());
        let spans = expected.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans);
        for (seq, span) in spans.enumerate() {
            span.attributes.extend(added(seq, prev(&out, seq), out.leaves[seq]));
            records += 1;
        }
        assert_eq!(ExportTraceServiceRequest::decode(out.otlp.as_slice()).unwrap(), expected);

        let mut expected = any_logs(&mut rng);
        let out = super::logs(&policy, &expected.encode_to_vec(), &ctx()).unwrap();
        expected.resource_logs.iter_mut().for_each(|r| r.scope_logs.retain(|s| !s.log_records.is_empty()));
        expected.resource_logs.retain(|r| !r.scope_logs.is_empty());
        let logs = expected.resource_logs.iter_mut().flat_map(|r| &mut r.scope_logs).flat_map(|s| &mut s.log_records);
        for (seq, log) in logs.enumerate() {
            log.attributes.extend(added(seq, prev(&out, seq), out.leaves[seq]));
            records += 1;
        }
        assert_eq!(ExportLogsServiceRequest::decode(out.otlp.as_slice()).unwrap(), expected);
    }
    assert!(records > 200, "{records} records compared");
}
