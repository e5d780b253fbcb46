//! The component and the same code built natively must agree byte for byte:
//! a corpus of 1,000 generated batches (traces and logs, every value kind,
//! keyed and unkeyed chains) through both, one continuous chain each; and
//! the host's own events (`chain-events`, no policy stage) interleaved with
//! ordinary batches on one chain.

mod support;

use audit_processor::Processor;
use audit_processor::api::{ChainHead, Context, Output, ProcessError, Signal};
use otel_audit::loadgen::{self, BatchSpec};
use otel_audit::runtime::{self, RuntimeError};
use prost::Message;

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
