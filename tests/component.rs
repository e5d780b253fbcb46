//! The real component through the host's wasmtime runtime: a realistic mixed
//! batch, the configure contract, the host's own events (`chain-events`),
//! and bad input that must be refused cleanly without ever taking the
//! instance down. Also the test-only components of `make fixtures`.

mod support;

use std::path::PathBuf;

use audit_format::hash as chain;
use audit_format::{ChainHead, Context};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use otel_audit::otlp::{self, Encoding, Signal};
use otel_audit::runtime::{Limits, Module, Output, ProcessError, Runtime, RuntimeError};
use prost::Message;
use serde_json::Value as Json;

fn fixture_request(name: &str, signal: Signal) -> Vec<u8> {
    let bytes = std::fs::read(support::fixture(name)).unwrap();
    otlp::to_protobuf(signal, &bytes, Encoding::Auto).unwrap()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn string(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key) {
        Some(Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Checks what every chained output must satisfy: leaves hash the records,
/// each record's chain position links to the one before, the head follows.
fn assert_chained(out: &Output, ctx: &Context) {
    let mut prev = ctx.head.prev;
    for (i, record) in out.records.iter().enumerate() {
        assert_eq!(out.leaves[i], chain::leaf_hash(record), "leaf {i}");
        let json: Json = serde_json::from_slice(record).unwrap();
        assert_eq!(json["chain"]["id"], ctx.head.chain_id.as_str());
        assert_eq!(json["chain"]["seq"], (ctx.head.seq + i as u64).to_string());
        assert_eq!(json["chain"]["prev"], hex::encode(prev));
        assert_eq!(json["v"], 1);
        prev = out.leaves[i];
    }
    assert_eq!(
        out.head,
        ChainHead { chain_id: ctx.head.chain_id.clone(), seq: ctx.head.seq + out.records.len() as u64, prev }
    );
}

#[test]
fn mixed_trace_batch_keeps_only_audit_spans_enriched_and_chained() {
    let mut instance = support::module().instantiate().unwrap();
    let info = instance.configure(&support::policy("soc2-audit.yaml"), &[]).unwrap();
    assert_eq!(info.pipeline, "soc2-audit-trail");
    let ctx = support::genesis("traces-1");
    let out = instance.process_traces(&fixture_request("mixed-traces.json", Signal::Traces), &ctx).unwrap();

    assert_eq!((out.stats.received, out.stats.kept, out.stats.dropped), (4, 2, 2));
    assert_eq!(out.stats.violations, 1, "payment.refund lacks audit.result");
    assert_eq!(out.stats.redacted, 1, "one card number masked");
    assert_chained(&out, &ctx);

    let kept = ExportTraceServiceRequest::decode(out.otlp.as_slice()).unwrap();
    assert_eq!(kept.resource_spans.len(), 1);
    assert_eq!(kept.resource_spans[0].scope_spans.len(), 1, "the scope with no audit span is removed");
    let spans = &kept.resource_spans[0].scope_spans[0].spans;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["user.role.update", "payment.refund"]);

    let role = &spans[0].attributes;
    for key in [
        "enduser.id",
        "enduser.role",
        "enduser.ip",
        "audit.target_user",
        "audit.old_value",
        "audit.new_value",
        "audit.resource_type",
    ] {
        assert!(attr(role, key).is_some(), "{key} kept");
    }
    assert_eq!(string(role, "audit.action").as_deref(), Some("role_update"));
    assert_eq!(attr(role, "http.request.header.authorization"), None, "credentials deleted");
    assert_eq!(string(role, "audit.pipeline").as_deref(), Some("soc2-audit-trail"));
    assert_eq!(string(role, "audit.collector_received_at").as_deref(), Some("2026-11-18T11:06:40.123456789Z"));
    assert_eq!(string(role, "audit.policy.digest"), Some(info.digest.clone()));
    assert_eq!(string(role, "audit.sequence.stream_id").as_deref(), Some("traces-1"));
    assert_eq!(attr(role, "audit.sequence.number"), Some(&Value::IntValue(0)));
    assert_eq!(string(role, "audit.sequence.prev_hash"), Some("0".repeat(64)));
    assert_eq!(string(role, "audit.integrity.value"), Some(hex::encode(out.leaves[0])));
    assert_eq!(string(role, "audit.integrity.algorithm").as_deref(), Some("sha256"));
    assert_eq!(attr(role, "audit.integrity.mac"), None, "unkeyed chain");

    let refund = &spans[1].attributes;
    assert_eq!(string(refund, "audit.note").as_deref(), Some("card **** refunded"));
    assert!(matches!(attr(refund, "audit.require.missing"), Some(Value::ArrayValue(a)) if a.values.len() == 1));
    assert_eq!(string(refund, "audit.sequence.prev_hash"), Some(hex::encode(out.leaves[0])));

    // The stored record is what was kept, minus the chain attributes that
    // describe it (they cannot be inside what they hash).
    let record: Json = serde_json::from_slice(&out.records[0]).unwrap();
    let attributes = &record["span"]["attributes"];
    assert_eq!(attributes["enduser.id"], serde_json::json!({"s": "alice@example.com"}));
    assert_eq!(attributes["audit.policy.digest"]["s"], info.digest.as_str());
    assert!(attributes.get("audit.integrity.value").is_none());
    assert!(attributes.get("http.request.header.authorization").is_none());
    assert_eq!(record["span"]["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(record["span"]["start_time_unix_nano"], "1795000000000000000");
    assert_eq!(record["resource"]["attributes"]["service.name"]["s"], "identity-api");
    assert_eq!(record["received_at"], "2026-11-18T11:06:40.123456789Z");
    let refund_record: Json = serde_json::from_slice(&out.records[1]).unwrap();
    assert_eq!(refund_record["span"]["attributes"]["payment.attempt"], serde_json::json!({"i": "9007199254740993"}));
    assert_eq!(refund_record["span"]["attributes"]["payment.amount"], serde_json::json!({"d": 12.5}));
}

#[test]
fn mixed_log_batch_keeps_audit_logs_and_continues_the_chain() {
    let mut instance = support::module().instantiate().unwrap();
    instance.configure(&support::policy("soc2-audit.yaml"), &[]).unwrap();
    let ctx = Context {
        received_at_unix_nano: 7,
        head: ChainHead { chain_id: "logs-1".into(), seq: 41, prev: [9; 32] },
        sender: None,
    };
    let out = instance.process_logs(&fixture_request("mixed-logs.json", Signal::Logs), &ctx).unwrap();
    assert_eq!((out.stats.received, out.stats.kept, out.stats.dropped), (3, 2, 1));
    assert_chained(&out, &ctx);
    let kept = ExportLogsServiceRequest::decode(out.otlp.as_slice()).unwrap();
    let logs = &kept.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(string(&logs[0].attributes, "audit.action").as_deref(), Some("config_change"));
    assert_eq!(string(&logs[0].attributes, "audit.changed_by").as_deref(), Some("ops-bot"));
    assert_eq!(attr(&logs[0].attributes, "audit.sequence.number"), Some(&Value::IntValue(41)));
    assert_eq!(string(&logs[1].attributes, "audit.action").as_deref(), Some("login"));
    let record: Json = serde_json::from_slice(&out.records[1]).unwrap();
    assert_eq!(record["log"]["body"], serde_json::json!({"m": {"reason": {"s": "denied"}}}));
}

#[test]
fn keyed_chain_carries_macs_downstream() {
    let mut instance = support::module().instantiate().unwrap();
    let policy = format!("{}  chain: {{key_id: k1}}\n", support::policy("soc2-audit.yaml"));
    let info = instance.configure(&policy, &support::test_secrets()).unwrap();
    assert_eq!(info.key_id.as_deref(), Some("k1"));
    let out = instance
        .process_traces(&fixture_request("mixed-traces.json", Signal::Traces), &support::genesis("keyed"))
        .unwrap();
    let key = &support::test_secrets()[0].1;
    let kept = ExportTraceServiceRequest::decode(out.otlp.as_slice()).unwrap();
    for (i, span) in kept.resource_spans[0].scope_spans[0].spans.iter().enumerate() {
        let mac = hex::encode(chain::record_mac(key, &out.leaves[i]));
        assert_eq!(string(&span.attributes, "audit.integrity.mac"), Some(mac.clone()));
        assert_eq!(string(&span.attributes, "audit.integrity.key_id").as_deref(), Some("k1"));
        let record: Json = serde_json::from_slice(&out.records[i]).unwrap();
        assert_eq!(record["mac"], mac.as_str());
        assert_eq!(record["chain"]["key_id"], "k1");
    }
    // Without the secret the policy is refused rather than chaining unkeyed.
    let mut other = support::module().instantiate().unwrap();
    let err = other.configure(&policy, &[]).unwrap_err();
    assert!(matches!(&err, RuntimeError::Policy(m) if m.contains("audit.chain.key_id") && m.contains("'k1'")), "{err}");
}

#[test]
fn failed_configure_keeps_the_previous_policy() {
    let mut instance = support::module().instantiate().unwrap();
    let request = fixture_request("mixed-traces.json", Signal::Traces);
    let err = instance.process_traces(&request, &support::genesis("c")).unwrap_err();
    assert!(matches!(err, RuntimeError::Process(ProcessError::Policy(_))), "no policy yet: {err}");

    let good = instance.configure(&support::policy("soc2-audit.yaml"), &[]).unwrap();
    let err = instance
        .configure("filter:\n  spans:\n    include:\n      match_type: strict\n      span_name: [x]\n", &[])
        .unwrap_err();
    match &err {
        RuntimeError::Policy(m) => assert!(m.contains("filter.spans.include.span_name") && m.contains("line 5"), "{m}"),
        other => panic!("expected a policy error, got {other}"),
    }
    let out = instance.process_traces(&request, &support::genesis("c")).unwrap();
    assert_eq!(out.stats.kept, 2);
    let kept = ExportTraceServiceRequest::decode(out.otlp.as_slice()).unwrap();
    let digest = string(&kept.resource_spans[0].scope_spans[0].spans[0].attributes, "audit.policy.digest");
    assert_eq!(digest, Some(good.digest));
}

#[test]
fn bad_input_is_refused_and_the_instance_keeps_serving() {
    let mut instance = support::module().instantiate().unwrap();
    instance.configure(&support::policy("soc2-audit.yaml"), &[]).unwrap();
    let good = fixture_request("mixed-traces.json", Signal::Traces);
    let ctx = support::genesis("c");

    let mut garbage = vec![0xff; 64];
    garbage[0] = 0x0a;
    let cases: Vec<(&str, Vec<u8>, Context)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), ctx.clone()),
        ("garbage", garbage, ctx.clone()),
        ("wrong signal", fixture_request("mixed-logs.json", Signal::Logs), ctx.clone()),
    ];
    for (name, bytes, ctx) in cases {
        match instance.process_traces(&bytes, &ctx) {
            Err(RuntimeError::Process(ProcessError::Decode(m))) => assert!(!m.is_empty(), "{name}"),
            // A logs request can decode as a traces request with unknown
            // fields; what matters is that nothing is invented from it.
            Ok(out) if name == "wrong signal" => assert_eq!(out.stats.kept, 0, "{name}"),
            other => panic!("{name}: expected a decode error, got {other:?}"),
        }
        assert!(!instance.is_poisoned(), "{name} must not trap");
    }
    let no_chain = Context { received_at_unix_nano: 1, head: ChainHead::genesis(""), sender: None };
    let err = instance.process_traces(&good, &no_chain).unwrap_err();
    assert!(matches!(&err, RuntimeError::Process(ProcessError::InvalidContext(m)) if m.contains("chain id")), "{err}");

    let out = instance.process_traces(&good, &ctx).unwrap();
    assert_eq!(out.stats.kept, 2, "still serving after bad input");

    let empty = instance.process_traces(&[], &ctx).unwrap();
    assert_eq!((empty.stats.received, empty.records.len()), (0, 0));
    assert_eq!(empty.head, ctx.head, "an empty batch leaves the head where it was");
}

#[test]
fn every_shipped_policy_configures_in_the_component() {
    let dir = support::root().join("collector-config/policies");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.to_string_lossy();
        if name.ends_with(".yaml") && !name.ends_with(".test.yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let mut instance = support::module().instantiate().unwrap();
            let info = instance
                .configure(&text, &support::test_secrets())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!info.rules.is_empty(), "{}: a shipped policy should have rules", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 1, "no policies under {}", dir.display());
}

#[test]
fn invalid_utf8_in_a_protobuf_string_is_refused() {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let span = Span { name: "AUDIT-NAME".into(), ..Span::default() };
    let scope_spans = vec![ScopeSpans { spans: vec![span], ..Default::default() }];
    let request =
        ExportTraceServiceRequest { resource_spans: vec![ResourceSpans { scope_spans, ..Default::default() }] };
    let mut bytes = request.encode_to_vec();
    let at = bytes.windows(10).position(|w| w == b"AUDIT-NAME").unwrap();
    bytes[at + 5] = 0xff; // not UTF-8
    let mut instance = support::module().instantiate().unwrap();
    instance.configure("audit:\n  pipeline: p\n", &[]).unwrap();
    match instance.process_traces(&bytes, &support::genesis("utf8")) {
        Err(RuntimeError::Process(ProcessError::Decode(m))) => assert!(m.contains("UTF-8"), "{m}"),
        other => panic!("expected a decode error naming UTF-8, got {other:?}"),
    }
}

#[test]
fn a_batch_that_would_overflow_the_sequence_is_refused() {
    let mut instance = support::module().instantiate().unwrap();
    instance.configure(&support::policy("soc2-audit.yaml"), &[]).unwrap();
    let request = fixture_request("mixed-traces.json", Signal::Traces);
    let near_end = Context {
        received_at_unix_nano: 1,
        head: ChainHead { chain_id: "c".into(), seq: u64::MAX - 1, prev: [0; 32] },
        sender: None,
    };
    let err = instance.process_traces(&request, &near_end).unwrap_err();
    assert!(matches!(&err, RuntimeError::Process(ProcessError::InvalidContext(m)) if m.contains("overflow")), "{err}");
}

#[test]
fn compiled_modules_are_cached_by_digest_and_a_bad_cache_entry_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(Limits::default(), Some(cache.path().to_owned())).unwrap();
    let module = runtime.load(&support::wasm_path()).unwrap();
    let digest = module.digest().trim_start_matches("sha256:").to_owned();
    let entries: Vec<_> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let name = entries[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&digest) && name.ends_with(".cwasm"), "{name}");

    // A damaged entry is never trusted: the module is compiled again.
    std::fs::write(&entries[0], b"garbage").unwrap();
    let again = runtime.load(&support::wasm_path()).unwrap();
    let mut instance = again.instantiate().unwrap();
    instance.configure(&support::policy("soc2-audit.yaml"), &[]).unwrap();
    let out =
        instance.process_traces(&fixture_request("mixed-traces.json", Signal::Traces), &support::genesis("c")).unwrap();
    assert_eq!(out.stats.kept, 2);
    assert!(std::fs::read(&entries[0]).unwrap().len() > 1000, "the entry was rewritten");
}

#[test]
fn host_events_are_kept_whole_and_chained_on() {
    let mut instance = support::module().instantiate().unwrap();
    let info = instance.configure(&support::policy("soc2-audit.yaml"), &[]).unwrap();
    let request = fixture_request("mixed-traces.json", Signal::Traces);
    let ctx = Context {
        received_at_unix_nano: 1_795_000_000_123_456_789,
        head: ChainHead { chain_id: "events".into(), seq: 7, prev: [3; 32] },
        sender: None,
    };
    let out = instance.chain_events(Signal::Traces, &request, &ctx).unwrap();
    assert_eq!((out.stats.received, out.stats.kept, out.stats.dropped), (4, 4, 0), "the policy keeps 2 of them");
    assert_eq!((out.stats.redacted, out.stats.violations), (0, 0));
    assert_chained(&out, &ctx);
    let kept = ExportTraceServiceRequest::decode(out.otlp.as_slice()).unwrap();
    for span in kept.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans) {
        assert_eq!(string(&span.attributes, "audit.policy.digest"), Some(info.digest.clone()), "{}", span.name);
        assert_eq!(string(&span.attributes, "audit.pipeline").as_deref(), Some("soc2-audit-trail"));
        assert_eq!(
            attr(&span.attributes, "audit.require.missing"),
            None,
            "{}: audit.require is not checked",
            span.name
        );
    }

    let logs = fixture_request("mixed-logs.json", Signal::Logs);
    let out = instance.chain_events(Signal::Logs, &logs, &support::genesis("events")).unwrap();
    assert_eq!((out.stats.received, out.stats.kept), (3, 3));
    let err = instance.chain_events(Signal::Logs, &logs[..logs.len() - 3], &ctx).unwrap_err();
    assert!(matches!(err, RuntimeError::Process(ProcessError::Decode(_))), "{err}");
    assert!(!instance.is_poisoned());
}

/// A test-only component (`make fixtures`, see guest/Cargo.toml):
/// `$var` (set by the Makefile), else where `make fixtures` puts it.
/// Missing is a failure, never a skip.
fn test_only_module(var: &str, file: &str) -> Module {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| support::root().join("target/wasm-fixtures").join(file));
    assert!(
        path.exists(),
        "the test-only component {} does not exist (${var}): build it with `make fixtures` (make test does)",
        path.display()
    );
    let runtime = Runtime::new(Limits::default(), Some(support::cache_dir())).expect("wasm runtime");
    runtime.load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn keep_all_fixture_keeps_what_the_policy_drops() {
    let module = test_only_module("OTEL_AUDIT_WASM_KEEP_ALL", "keep-all.wasm");
    assert_ne!(module.digest(), support::module().digest(), "a different build than the shipped component");
    let policy = support::policy("soc2-audit.yaml");
    let request = fixture_request("mixed-traces.json", Signal::Traces);
    let ctx = support::genesis("keep-all");

    let mut shipped = support::module().instantiate().unwrap();
    shipped.configure(&policy, &[]).unwrap();
    let filtered = shipped.process_traces(&request, &ctx).unwrap();
    assert_eq!((filtered.stats.kept, filtered.stats.dropped), (2, 2));

    let mut instance = module.instantiate().unwrap();
    let info = instance.configure(&policy, &[]).unwrap();
    let out = instance.process_traces(&request, &ctx).unwrap();
    assert_eq!((out.stats.received, out.stats.kept, out.stats.dropped), (4, 4, 0), "every span kept");
    assert_chained(&out, &ctx);
    let kept = ExportTraceServiceRequest::decode(out.otlp.as_slice()).unwrap();
    let names: Vec<&str> = kept
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.as_str())
        .collect();
    assert!(names.contains(&"GET /healthz"), "the span soc2 drops is kept: {names:?}");
    let first = &kept.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(string(first, "audit.policy.digest"), Some(info.digest));
    let logs = instance.process_logs(&fixture_request("mixed-logs.json", Signal::Logs), &ctx).unwrap();
    assert_eq!((logs.stats.kept, logs.stats.dropped), (3, 0));
}

#[test]
fn trap_in_configure_fixture_traps_and_poisons_the_instance() {
    let module = test_only_module("OTEL_AUDIT_WASM_TRAP_CONFIGURE", "trap-in-configure.wasm");
    let mut instance = module.instantiate().unwrap();
    let err = instance.configure(&support::policy("soc2-audit.yaml"), &[]).unwrap_err();
    assert!(matches!(&err, RuntimeError::Trap(m) if m.contains("unreachable")), "{err}");
    assert!(instance.is_poisoned());
    let again = instance.process_traces(&fixture_request("mixed-traces.json", Signal::Traces), &support::genesis("c"));
    assert!(matches!(&again, Err(RuntimeError::Trap(m)) if m.contains("trapped earlier")), "{again:?}");
}

#[test]
fn without_forward_copies_the_records_are_the_same_and_the_otlp_copy_is_empty() {
    let policy = support::policy("soc2-audit.yaml");
    let mut with = support::module().instantiate().unwrap();
    let mut without = support::module().instantiate().unwrap();
    with.configure(&policy, &[]).unwrap();
    without.configure(&policy, &[]).unwrap();
    without.forward_copies(false).unwrap();
    let ctx = support::genesis("copies");
    let runs: [(&str, Signal, bool); 3] = [
        ("mixed-traces.json", Signal::Traces, false),
        ("mixed-logs.json", Signal::Logs, false),
        ("mixed-traces.json", Signal::Traces, true),
    ];
    for (name, signal, events) in runs {
        let request = fixture_request(name, signal);
        let run = |instance: &mut otel_audit::runtime::Instance| match (events, signal) {
            (true, _) => instance.chain_events(signal, &request, &ctx).unwrap(),
            (false, Signal::Traces) => instance.process_traces(&request, &ctx).unwrap(),
            (false, Signal::Logs) => instance.process_logs(&request, &ctx).unwrap(),
        };
        let (full, lean) = (run(&mut with), run(&mut without));
        assert!(!full.records.is_empty() && !full.otlp.is_empty(), "{name}");
        assert!(lean.otlp.is_empty(), "{name}: an OTLP copy although forward-copies is off");
        assert_eq!(
            (&lean.records, &lean.leaves, &lean.head, &lean.stats),
            (&full.records, &full.leaves, &full.head, &full.stats),
            "{name}"
        );
    }
    // Turned on again, the copy is back.
    without.forward_copies(true).unwrap();
    let request = fixture_request("mixed-traces.json", Signal::Traces);
    assert_eq!(without.process_traces(&request, &ctx).unwrap(), with.process_traces(&request, &ctx).unwrap());
}
