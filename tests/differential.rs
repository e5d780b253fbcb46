//! The component and the same code built natively must agree byte for byte:
//! a corpus of 1,000 generated batches (traces and logs, every value kind,
//! keyed and unkeyed chains) through both, one continuous chain each; and
//! the host's own events (`chain-events`, no policy stage) interleaved with
//! ordinary batches on one chain; and records written through OTTL
//! (tests/fixtures/ottl-differential.yaml), with what the policy did checked.

mod support;

use audit_processor::Processor;
use audit_processor::api::{ChainHead, Context, Output, ProcessError, Signal};
use otel_audit::loadgen::{self, BatchSpec};
use otel_audit::runtime::{self, RuntimeError};
use prost::Message;
use serde_json::json;

const BATCHES: u64 = 1_000;

/// The shipped policy, the same with a keyed chain, and one that filters,
/// hashes (HMAC), converts, redacts and requires, over a keyed chain.
fn policies() -> [String; 3] {
    let keyed = format!("{}  chain: {{key_id: k1}}\n", support::policy("soc2-audit.yaml"));
    let redacting = "filter:\n  spans:\n    exclude:\n      match_type: regexp\n      span_names: ['^GET /metrics']\n  logs:\n    exclude:\n      match_type: strict\n      severity_texts: ['']\nattributes:\n  actions:\n    - {key: app.attr1, action: hash}\n    - {key: app.attr2, converted_type: string, action: convert}\n    - {key: copied, from_attribute: app.attr3, action: upsert}\nredaction:\n  allow_all_keys: true\n  blocked_values: ['[0-9]{12,}']\n  blocked_key_patterns: ['^enduser\\.ip$']\n  summary: debug\n  hash_function: hmac-sha256\n  hash_key_id: k1\naudit:\n  require: [enduser.id]\n";
    [support::policy("soc2-audit.yaml"), keyed, redacting.to_owned()]
}

/// Asserts that both runs gave the same output (naming the first record
/// that differs) and returns it.
fn agree(label: &str, native: Result<Output, ProcessError>, wasm: Result<runtime::Output, RuntimeError>) -> Output {
    let native = native.unwrap_or_else(|e| panic!("{label}: native refused: {e}"));
    let wasm = support::as_native(wasm.unwrap_or_else(|e| panic!("{label}: wasm refused: {e}")));
    for (n, (a, b)) in native.records.iter().zip(&wasm.records).enumerate() {
        assert!(
            a == b,
            "{label} record {n} differs:\nnative {}\nwasm   {}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
    }
    assert_eq!(native, wasm, "{label}: outputs differ");
    native
}

fn spec(seed: u64, i: u64) -> BatchSpec {
    BatchSpec {
        records: 1 + (seed as usize * 7919) % 40,
        audit_ratio: [0.05, 0.5, 1.0][i as usize % 3],
        attributes: 4 + (i as usize % 9),
        varied: true,
        seed,
    }
}

fn request(signal: Signal, spec: &BatchSpec) -> Vec<u8> {
    match signal {
        Signal::Traces => loadgen::traces(spec).encode_to_vec(),
        Signal::Logs => loadgen::logs(spec).encode_to_vec(),
    }
}

#[test]
fn wasm_and_native_agree_on_1000_batches() {
    let policies = policies();
    let secrets = support::test_secrets();

    let mut records = 0usize;
    for (p, policy) in policies.iter().enumerate() {
        let mut native = Processor::new();
        native.configure(policy, &secrets).unwrap();
        let mut wasm = support::module().instantiate().unwrap();
        wasm.configure(policy, &secrets).unwrap();
        let mut head = ChainHead::genesis(format!("diff-{p}"));
        let share = BATCHES / policies.len() as u64 + u64::from(p == 0) * (BATCHES % policies.len() as u64);
        for i in 0..share {
            let seed = (p as u64) << 32 | i;
            let spec = spec(seed, i);
            let ctx =
                Context { received_at_unix_nano: 1_795_000_000_000_000_000 + seed, head: head.clone(), sender: None };
            let (native_out, wasm_out) = if i % 2 == 0 {
                let request = request(Signal::Traces, &spec);
                (native.process_traces(&request, &ctx), wasm.process_traces(&request, &ctx))
            } else {
                let request = request(Signal::Logs, &spec);
                (native.process_logs(&request, &ctx), wasm.process_logs(&request, &ctx))
            };
            let out = agree(&format!("policy {p} batch {i}"), native_out, wasm_out);
            records += out.records.len();
            head = out.head;
        }
    }
    assert!(records > 5_000, "the corpus chained {records} records; expected a substantial corpus");
}

/// The host's own events through `chain-events`, every third call an
/// ordinary batch on the same chain, under all three policies (two keyed):
/// both builds agree, and every event is kept whatever the policy says.
#[test]
fn wasm_and_native_agree_on_chained_host_events() {
    let secrets = support::test_secrets();
    let (mut events, mut dropped_by_policy) = (0u64, 0u64);
    for (p, policy) in policies().iter().enumerate() {
        let mut native = Processor::new();
        native.configure(policy, &secrets).unwrap();
        let mut wasm = support::module().instantiate().unwrap();
        wasm.configure(policy, &secrets).unwrap();
        let mut head = ChainHead::genesis(format!("events-{p}"));
        for i in 0..60u64 {
            let seed = 0xe0e0_0000 | (p as u64) << 16 | i;
            let spec = spec(seed, i);
            let signal = if i % 2 == 0 { Signal::Traces } else { Signal::Logs };
            let request = request(signal, &spec);
            let ctx =
                Context { received_at_unix_nano: 1_795_000_000_000_000_000 + seed, head: head.clone(), sender: None };
            let label = format!("policy {p} call {i} ({signal:?})");
            let out = if i % 3 == 2 {
                let (n, w) = match signal {
                    Signal::Traces => (native.process_traces(&request, &ctx), wasm.process_traces(&request, &ctx)),
                    Signal::Logs => (native.process_logs(&request, &ctx), wasm.process_logs(&request, &ctx)),
                };
                agree(&label, n, w)
            } else {
                let (n, w) = (native.chain_events(signal, &request, &ctx), wasm.chain_events(signal, &request, &ctx));
                let out = agree(&format!("{label}, chain-events"), n, w);
                assert_eq!((out.stats.kept, out.stats.dropped), (spec.records as u64, 0), "{label}: every event kept");
                assert_eq!((out.stats.redacted, out.stats.violations), (0, 0), "{label}: no policy stage");
                assert!(out.stats.rule_hits.iter().all(|&h| h == 0), "{label}: no rule hit");
                let by_policy = match signal {
                    Signal::Traces => native.process_traces(&request, &ctx),
                    Signal::Logs => native.process_logs(&request, &ctx),
                };
                dropped_by_policy += by_policy.unwrap().stats.dropped;
                events += out.stats.kept;
                out
            };
            head = out.head;
        }
    }
    assert!(events > 1_000, "only {events} events were chained");
    assert!(dropped_by_policy > 100, "the policies would have dropped only {dropped_by_policy} of the events");
}

/// tests/fixtures/ottl-differential.yaml: OTTL filter conditions and a
/// transform in every context.
fn ottl_policy() -> String {
    let path = support::fixture("ottl-differential.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_request(name: &str, signal: Signal) -> Vec<u8> {
    let bytes = std::fs::read(support::fixture(name)).unwrap();
    let signal = match signal {
        Signal::Traces => otel_audit::otlp::Signal::Traces,
        Signal::Logs => otel_audit::otlp::Signal::Logs,
    };
    otel_audit::otlp::to_protobuf(signal, &bytes, otel_audit::otlp::Encoding::Json).unwrap()
}

/// Records through OTTL are the same bytes natively and in the component:
/// the fixtures (whose records are checked for what the policy does) and
/// 300 generated batches of every value kind on one chain, every
/// statement and condition of the policy taking effect somewhere.
#[test]
fn wasm_and_native_agree_under_ottl_policies() {
    let policy = ottl_policy();
    let mut native = Processor::new();
    let info = native.configure(&policy, &[]).unwrap_or_else(|e| panic!("ottl-differential.yaml: {e}"));
    let mut wasm = support::module().instantiate().unwrap();
    wasm.configure(&policy, &[]).unwrap();

    let ctx = support::genesis("ottl-fixtures");
    let traces = fixture_request("mixed-traces.json", Signal::Traces);
    let t = agree("ottl mixed-traces.json", native.process_traces(&traces, &ctx), wasm.process_traces(&traces, &ctx));
    let logs = fixture_request("mixed-logs.json", Signal::Logs);
    let l = agree("ottl mixed-logs.json", native.process_logs(&logs, &ctx), wasm.process_logs(&logs, &ctx));
    // What the policy does, so agreeing cannot be vacuous.
    let json = |r: &[u8]| serde_json::from_slice::<serde_json::Value>(r).unwrap();
    let (role, refund, other) = (json(&t.records[0]), json(&t.records[1]), json(&t.records[2]));
    assert_eq!((t.stats.received, t.stats.kept, t.stats.dropped), (4, 3, 1), "GET /healthz dropped");
    let sha256_hex = |s: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(s.as_bytes()));
    for (path, expected) in [
        ("/resource/attributes/service.name/s", json!("IDENTITY-API")),
        ("/resource/attributes/deployment.tier/s", json!("prod")),
        ("/scope/attributes/scope.id/s", json!("identity.audit@1.4.0")),
        ("/span/attributes/enduser.id/s", json!(sha256_hex("alice")[..48])),
        ("/span/attributes/audit.summary/s", json!("user.role.update | Server | 1")),
        ("/span/attributes/name.parts/a", json!([{"s": "user"}, {"s": "role"}, {"s": "update"}])),
        ("/span/attributes/name.head/s", json!("user.")),
        ("/span/attributes/duration.ms/d", json!(4.2)),
        ("/span/attributes/trace.hex/s", json!("5b8efff798038103d269b633813fc60c")),
        ("/span/attributes/x/m/flat.z.1/d", json!(2.5)),
        ("/span/attributes/enduser.role/s", json!("admin")),
    ] {
        assert_eq!(role.pointer(path), Some(&expected), "user.role.update {path}: {role}");
    }
    assert_eq!(refund.pointer("/span/attributes/audit.note/s"), Some(&json!("card 4111111111111111 refunded")));
    assert_eq!(other.pointer("/span/name"), Some(&json!("GET /api/users")));
    assert_eq!(other.pointer("/span/attributes/audit.summary"), None, "the group's condition excludes it");
    assert_eq!(other.pointer("/scope/attributes/scope.id/s"), Some(&json!("opentelemetry.instrumentation.flask@")));
    let (change, login) = (json(&l.records[0]), json(&l.records[1]));
    assert_eq!((l.stats.received, l.stats.kept, l.stats.dropped), (3, 2, 1), "the cache-miss log dropped");
    for (record, path, expected) in [
        (&change, "/log/body/s", json!("retention changed from 90 days to 365 days")),
        (&change, "/log/attributes/body.text/s", json!("retention changed from 90d to 36")), // truncate_all 32
        (&change, "/log/attributes/severity.x10/i", json!("91")),
        (&change, "/resource/attributes/service.name/s", json!("config-service/logs")),
        (&login, "/log/body/m", json!({"body.reason": {"s": "denied"}})),
        (&login, "/log/attributes/body.text/s", json!("{\"reason\":\"denied\"}")),
    ] {
        assert_eq!(record.pointer(path), Some(&expected), "{path}: {record}");
    }

    let mut hits = vec![0u64; info.rules.len()];
    let mut head = ChainHead::genesis("ottl-generated");
    let (mut received, mut kept) = (0, 0);
    for i in 0..300u64 {
        let seed = 0x0771_0000 | i;
        let spec = spec(seed, i);
        let ctx = Context { received_at_unix_nano: 1_795_000_000_000_000_000 + seed, head: head.clone(), sender: None };
        let signal = if i % 2 == 0 { Signal::Traces } else { Signal::Logs };
        let request = request(signal, &spec);
        let (n, w) = match signal {
            Signal::Traces => (native.process_traces(&request, &ctx), wasm.process_traces(&request, &ctx)),
            Signal::Logs => (native.process_logs(&request, &ctx), wasm.process_logs(&request, &ctx)),
        };
        let out = agree(&format!("ottl batch {i} ({signal:?})"), n, w);
        hits.iter_mut().zip(&out.stats.rule_hits).for_each(|(h, n)| *h += n);
        (received, kept) = (received + out.stats.received, kept + out.stats.kept);
        head = out.head;
    }
    // Every condition and statement took effect somewhere in the corpus,
    // and none failed (error_mode ignore would have hidden it).
    for (rule, h) in info.rules.iter().zip(&hits) {
        if rule.id.ends_with("error_mode") {
            assert_eq!(*h, 0, "{}: evaluation errors", rule.id);
        } else {
            assert!(*h > 0, "{} never took effect in 300 batches", rule.id);
        }
    }
    assert!(info.rules.len() > 30, "{} rules", info.rules.len());
    assert!(kept > 1_000 && kept < received, "kept {kept} of {received}");

    // A statement failing on one span: under error_mode propagate both
    // refuse the batch with the same message; under ignore both keep it
    // and count the error.
    let failing = |mode: &str| {
        format!(
            "transform:\n  error_mode: {mode}\n  trace_statements:\n    - context: span\n      statements:\n        \
             - set(attributes[\"head\"], Substring(name, 0, 15))\n"
        )
    };
    native.configure(&failing("propagate"), &[]).unwrap();
    wasm.configure(&failing("propagate"), &[]).unwrap();
    let n = native.process_traces(&traces, &ctx).expect_err("payment.refund is 14 characters");
    let w = wasm.process_traces(&traces, &ctx).map_err(|e| match e {
        RuntimeError::Process(e) => support::as_native_error(e),
        e => panic!("wasm: {e}"),
    });
    assert!(matches!(&n, ProcessError::Policy(m) if m.contains("Substring")), "{n}");
    assert_eq!(w.expect_err("wasm refuses too"), n);
    let rules = native.configure(&failing("ignore"), &[]).unwrap().rules;
    wasm.configure(&failing("ignore"), &[]).unwrap();
    let out = agree("ottl error_mode ignore", native.process_traces(&traces, &ctx), wasm.process_traces(&traces, &ctx));
    let hits = |id: &str| out.stats.rule_hits[rules.iter().position(|r| r.id == id).expect(id)];
    assert_eq!(out.stats.kept, 4);
    assert_eq!(hits("transform.trace_statements[0].statements[0]"), 1, "user.role.update is long enough");
    assert_eq!(hits("transform.error_mode"), 3, "three spans' errors ignored and counted");
}
