//! soc2-audit-ottl.yaml is soc2-audit.yaml written with OTTL: through the
//! real component, the same batches give the same records, byte for byte,
//! but for the two members that cannot agree. `audit.policy.digest` is the
//! digest of each policy's own bytes; and `chain.prev`, from the second
//! record on, is the leaf hash of the record before, which covers that
//! digest. Both are checked to be exactly that, not merely skipped.
//!
//! The corpus: generated batches of every value kind (traces and logs), the
//! mixed fixtures, and batches built here for what the two policies spell
//! differently: the credential headers, `user.id` with and without
//! `enduser.id`, and `audit.action` of every value kind (the legacy
//! regexp include matches only values that read as text). Left out on
//! purpose: an attribute present with an empty value. OTTL reads it as nil,
//! like a missing one, so `enduser.id == nil` cannot tell "present but
//! empty" from "absent" as the attributes processor's `insert` does.

mod support;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otel_audit::loadgen::{self, BatchSpec};
use otel_audit::otlp::{self, Encoding, Signal};
use otel_audit::runtime::{Instance, Output};
use prost::Message;

fn kv(key: &str, value: Option<Value>) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value }), key_strindex: 0 }
}

fn s(text: &str) -> Option<Value> {
    Some(Value::StringValue(text.to_owned()))
}

/// `audit.action` of every value kind, and no `audit.action` at all (its
/// outer value absent, as a decoder may leave it).
fn actions() -> Vec<Option<KeyValue>> {
    let list = Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: s("login") }] });
    let map = Value::KvlistValue(KeyValueList { values: vec![kv("name", s("login"))] });
    vec![
        Some(kv("audit.action", s("role_update"))),
        Some(kv("audit.action", s(""))),
        Some(kv("audit.action", Some(Value::IntValue(7)))),
        Some(kv("audit.action", Some(Value::DoubleValue(1.5)))),
        Some(kv("audit.action", Some(Value::BoolValue(false)))),
        Some(kv("audit.action", Some(Value::BytesValue(vec![1, 2])))),
        Some(kv("audit.action", Some(list))),
        Some(kv("audit.action", Some(map))),
        Some(kv("audit.action", None)),
        Some(KeyValue { key: "audit.action".into(), value: None, key_strindex: 0 }),
        None,
    ]
}

/// Every combination of an `audit.action`, who acted (`enduser.id`,
/// `user.id`, both, neither), credentials and a card number.
fn attribute_sets() -> Vec<Vec<KeyValue>> {
    let mut sets = Vec::new();
    for (i, action) in actions().into_iter().enumerate() {
        for who in 0..4 {
            let mut attrs: Vec<KeyValue> = action.iter().cloned().collect();
            if who & 1 != 0 {
                attrs.push(kv("enduser.id", s("alice@example.com")));
            }
            if who & 2 != 0 {
                attrs.push(kv("user.id", s("dave")));
            }
            if (i + who) % 2 == 0 {
                attrs.push(kv("http.request.header.authorization", s("Bearer eyJhbGciOi")));
                attrs.push(kv("http.request.header.cookie", s("session=abc")));
                attrs.push(kv("http.request.header.x-api-key", s("k-123")));
                // Not a credential the policy names: kept.
                attrs.push(kv("http.request.header.cookies", s("kept")));
            }
            if (i + who) % 3 == 0 {
                attrs.push(kv("audit.result", s("success")));
                attrs.push(kv("audit.note", s("visa 4111111111111111, mastercard 5500000000000004")));
            }
            sets.push(attrs);
        }
    }
    sets
}

fn resource() -> Option<Resource> {
    Some(Resource { attributes: vec![kv("service.name", s("identity-api"))], ..Resource::default() })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope { name: "identity.audit".into(), version: "1.4.0".into(), ..Default::default() })
}

fn built_traces() -> Vec<u8> {
    let spans = attribute_sets()
        .into_iter()
        .enumerate()
        .map(|(i, attributes)| Span {
            trace_id: vec![1; 16],
            span_id: vec![i as u8 + 1; 8],
            name: format!("span {i}"),
            kind: 2,
            start_time_unix_nano: 1_795_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_795_000_000_000_000_100 + i as u64,
            attributes,
            ..Span::default()
        })
        .collect();
    let scope_spans = vec![ScopeSpans { scope: scope(), spans, ..Default::default() }];
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans { resource: resource(), scope_spans, ..Default::default() }],
    };
    request.encode_to_vec()
}

fn built_logs() -> Vec<u8> {
    let log_records = attribute_sets()
        .into_iter()
        .enumerate()
        .map(|(i, attributes)| LogRecord {
            time_unix_nano: 1_795_000_000_000_000_000 + i as u64,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue { value: s(&format!("log {i}")) }),
            attributes,
            ..LogRecord::default()
        })
        .collect();
    let scope_logs = vec![ScopeLogs { scope: scope(), log_records, ..Default::default() }];
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs { resource: resource(), scope_logs, ..Default::default() }],
    };
    request.encode_to_vec()
}

/// The batches of one signal: built here, the fixture, generated.
fn corpus(signal: Signal) -> Vec<(String, Vec<u8>)> {
    let (built, fixture) = match signal {
        Signal::Traces => (built_traces(), "mixed-traces.json"),
        Signal::Logs => (built_logs(), "mixed-logs.json"),
    };
    let fixture_bytes = std::fs::read(support::fixture(fixture)).unwrap();
    let mut batches = vec![
        ("built".to_owned(), built),
        (fixture.to_owned(), otlp::to_protobuf(signal, &fixture_bytes, Encoding::Auto).unwrap()),
    ];
    for seed in 1..=60u64 {
        let spec = BatchSpec {
            records: 1 + (seed as usize * 7919) % 40,
            audit_ratio: [0.05, 0.5, 1.0][seed as usize % 3],
            attributes: 4 + (seed as usize % 9),
            varied: true,
            seed,
        };
        let bytes = match signal {
            Signal::Traces => loadgen::traces(&spec).encode_to_vec(),
            Signal::Logs => loadgen::logs(&spec).encode_to_vec(),
        };
        batches.push((format!("generated seed {seed}"), bytes));
    }
    batches
}

fn process(instance: &mut Instance, signal: Signal, request: &[u8], ctx: &audit_format::Context) -> Output {
    match signal {
        Signal::Traces => instance.process_traces(request, ctx),
        Signal::Logs => instance.process_logs(request, ctx),
    }
    .unwrap_or_else(|e| panic!("the batch is refused: {e}"))
}

/// Replaces every occurrence of `from` in `bytes` by `to` (same length).
fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let (from, to) = (from.as_bytes(), to.as_bytes());
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_ottl_policy_writes_the_legacy_policys_records() {
    let mut legacy = support::module().instantiate().unwrap();
    let mut ottl = support::module().instantiate().unwrap();
    let legacy_digest = legacy.configure(&support::policy("soc2-audit.yaml"), &[]).unwrap().digest;
    let ottl_digest = ottl.configure(&support::policy("soc2-audit-ottl.yaml"), &[]).unwrap().digest;
    assert_ne!(legacy_digest, ottl_digest);

    let (mut records, mut dropped, mut redacted, mut violations) = (0, 0, 0, 0);
    for signal in [Signal::Traces, Signal::Logs] {
        // One continuous chain per policy and signal, as a pipeline has.
        let mut legacy_ctx = support::genesis("soc2");
        let mut ottl_ctx = support::genesis("soc2");
        for (name, request) in corpus(signal) {
            let label = format!("{signal:?} {name}");
            let a = process(&mut legacy, signal, &request, &legacy_ctx);
            let b = process(&mut ottl, signal, &request, &ottl_ctx);
            let (sa, sb) = (&a.stats, &b.stats);
            assert_eq!(
                (sa.received, sa.kept, sa.dropped, sa.redacted, sa.violations),
                (sb.received, sb.kept, sb.dropped, sb.redacted, sb.violations),
                "{label}: received, kept, dropped, redacted, violations"
            );
            assert_eq!(a.records.len(), b.records.len(), "{label}");
            for (i, (ra, rb)) in a.records.iter().zip(&b.records).enumerate() {
                let text = String::from_utf8_lossy(rb);
                assert_eq!(text.matches(&ottl_digest).count(), 1, "{label} record {i}: its digest once\n{text}");
                // prev: the leaf hash of each chain's own record before.
                let (prev_a, prev_b) = (hex::encode(legacy_ctx.head.prev), hex::encode(ottl_ctx.head.prev));
                let prev_member = format!("\"prev\":\"{prev_b}\"");
                assert!(text.contains(&prev_member), "{label} record {i}: links to the one before\n{text}");
                let as_legacy = replace(&replace(rb, &ottl_digest, &legacy_digest), &prev_b, &prev_a);
                assert!(
                    as_legacy == *ra,
                    "{label} record {i} differs beyond the digest and prev:\nlegacy {}\nottl   {}",
                    String::from_utf8_lossy(ra),
                    String::from_utf8_lossy(&as_legacy)
                );
                legacy_ctx.head.prev = a.leaves[i];
                ottl_ctx.head.prev = b.leaves[i];
            }
            legacy_ctx.head = a.head.clone();
            ottl_ctx.head = b.head.clone();
            records += a.records.len();
            dropped += sa.dropped;
            redacted += sa.redacted;
            violations += sa.violations;
        }
    }
    // The corpus exercised what the policies do.
    assert!(records > 500, "{records} records");
    assert!(
        dropped > 500 && redacted > 10 && violations > 10,
        "{dropped} dropped, {redacted} redacted, {violations} flagged"
    );
}

#[test]
fn the_built_batch_keeps_exactly_the_actions_that_read_as_text() {
    // The comparison above is only as good as its corpus: the built batch
    // keeps the actions that are strings (empty or not), ints, doubles and
    // bools (5 of its 11 kinds, each with 4 combinations of who acted) and
    // drops the rest.
    let mut ottl = support::module().instantiate().unwrap();
    ottl.configure(&support::policy("soc2-audit-ottl.yaml"), &[]).unwrap();
    let out = ottl.process_traces(&built_traces(), &support::genesis("soc2")).unwrap();
    assert_eq!((out.stats.received, out.stats.kept), (44, 20));
    let kept = ExportTraceServiceRequest::decode(out.otlp.as_slice()).unwrap();
    let spans = &kept.resource_spans[0].scope_spans[0].spans;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("span {i}")).collect();
    assert_eq!(names, expected);
    for (i, span) in spans.iter().enumerate() {
        let value = |key: &str| span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone());
        for credential in
            ["http.request.header.authorization", "http.request.header.cookie", "http.request.header.x-api-key"]
        {
            assert_eq!(value(credential), None, "{}: {credential} deleted", span.name);
        }
        // attribute_sets: who acted is i % 4 (1: enduser.id, 2: user.id).
        let expected = match i % 4 {
            1 | 3 => s("alice@example.com"),
            2 => s("dave"),
            _ => None,
        };
        assert_eq!(value("enduser.id").and_then(|v| v.value), expected, "{}", span.name);
    }
}
