//! The component and the same code built natively must agree byte for byte:
//! a corpus of 1,000 generated batches (traces and logs, every value kind,
//! keyed and unkeyed chains) through both, one continuous chain each.

mod support;

use audit_processor::Processor;
use audit_processor::api::{ChainHead, Context};
use otel_audit::loadgen::{self, BatchSpec};
use prost::Message;

const BATCHES: u64 = 1_000;

#[test]
fn wasm_and_native_agree_on_1000_batches() {
    let keyed = format!("{}  chain: {{key_id: k1}}\n", support::policy("soc2-audit.yaml"));
    let redacting = "filter:\n  spans:\n    exclude:\n      match_type: regexp\n      span_names: ['^GET /metrics']\n  logs:\n    exclude:\n      match_type: strict\n      severity_texts: ['']\nattributes:\n  actions:\n    - {key: app.attr1, action: hash}\n    - {key: app.attr2, converted_type: string, action: convert}\n    - {key: copied, from_attribute: app.attr3, action: upsert}\nredaction:\n  allow_all_keys: true\n  blocked_values: ['[0-9]{12,}']\n  blocked_key_patterns: ['^enduser\\.ip$']\n  summary: debug\n  hash_function: hmac-sha256\n  hash_key_id: k1\naudit:\n  require: [enduser.id]\n";
    let policies = [support::policy("soc2-audit.yaml"), keyed, redacting.to_owned()];
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
            let spec = BatchSpec {
                records: 1 + (seed as usize * 7919) % 40,
                audit_ratio: [0.05, 0.5, 1.0][i as usize % 3],
                attributes: 4 + (i as usize % 9),
                varied: true,
                seed,
            };
            let ctx = Context { received_at_unix_nano: 1_795_000_000_000_000_000 + seed, head: head.clone() };
            let (native_out, wasm_out) = if i % 2 == 0 {
                let request = loadgen::traces(&spec).encode_to_vec();
                (native.process_traces(&request, &ctx), wasm.process_traces(&request, &ctx))
            } else {
                let request = loadgen::logs(&spec).encode_to_vec();
                (native.process_logs(&request, &ctx), wasm.process_logs(&request, &ctx))
            };
            let native_out = native_out.unwrap_or_else(|e| panic!("policy {p} batch {i}: native refused: {e}"));
            let wasm_out = wasm_out.unwrap_or_else(|e| panic!("policy {p} batch {i}: wasm refused: {e}"));
            for (n, (a, b)) in native_out.records.iter().zip(&wasm_out.records).enumerate() {
                assert!(
                    a == b,
                    "policy {p} batch {i} record {n} differs:\nnative {}\nwasm   {}",
                    String::from_utf8_lossy(a),
                    String::from_utf8_lossy(b)
                );
            }
            assert_eq!(native_out, wasm_out, "policy {p} batch {i}: outputs differ");
            records += native_out.records.len();
            head = native_out.head;
        }
    }
    assert!(records > 5_000, "the corpus chained {records} records; expected a substantial corpus");
}
