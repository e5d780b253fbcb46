//! Known-answer vectors for the chain format (docs/chain-format.md): fixed
//! inputs, context and keys -> exact record bytes, leaves, MACs and head,
//! under tests/fixtures/known-answers/. Both builds of the processor must
//! reproduce them, and the vectors themselves are re-derived here with
//! independent code (another JCS implementation, plain SHA-256 and HMAC).
//!
//! Regenerate on purpose with `BLESS=1 cargo test --test known_answers` and
//! review the diff: a change here is a change of the chain format.

mod support;

use std::path::{Path, PathBuf};

use audit_processor::Processor;
use audit_processor::api::{ChainHead, Context, Output};
use hmac::{KeyInit, Mac};
use otel_audit::otlp::{self, Encoding, Signal};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

struct Case {
    path: PathBuf,
    doc: Json,
    policy: String,
    signal: Signal,
    request: Vec<u8>,
    secrets: Vec<(String, Vec<u8>)>,
    ctx: Context,
}

fn str_field<'a>(doc: &'a Json, key: &str, path: &Path) -> &'a str {
    doc[key].as_str().unwrap_or_else(|| panic!("{}: `{key}` must be a string", path.display()))
}

fn load(path: &Path) -> Case {
    let doc: Json = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let signal = match str_field(&doc, "signal", path) {
        "traces" => Signal::Traces,
        "logs" => Signal::Logs,
        other => panic!("{}: unknown signal {other}", path.display()),
    };
    let request_bytes = std::fs::read(support::root().join(str_field(&doc, "request_file", path))).unwrap();
    let request = otlp::to_protobuf(signal, &request_bytes, Encoding::Json).unwrap();
    let secrets = doc["secrets"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, key)| (id.clone(), hex::decode(key.as_str().unwrap()).unwrap()))
        .collect();
    let c = &doc["context"];
    let ctx = Context {
        received_at_unix_nano: str_field(c, "received_at_unix_nano", path).parse().unwrap(),
        head: ChainHead {
            chain_id: str_field(c, "chain_id", path).to_owned(),
            seq: str_field(c, "seq", path).parse().unwrap(),
            prev: hex::decode(str_field(c, "prev", path)).unwrap().try_into().unwrap(),
        },
        sender: None,
    };
    let policy = str_field(&doc, "policy", path).to_owned();
    Case { path: path.to_owned(), doc, policy, signal, request, secrets, ctx }
}

fn run_wasm(case: &Case) -> Output {
    let mut instance = support::module().instantiate().unwrap();
    instance.configure(&case.policy, &case.secrets).unwrap();
    let out = match case.signal {
        Signal::Traces => instance.process_traces(&case.request, &case.ctx),
        Signal::Logs => instance.process_logs(&case.request, &case.ctx),
    };
    support::as_native(out.unwrap())
}

fn run_native(case: &Case) -> Output {
    let mut processor = Processor::new();
    processor.configure(&case.policy, &case.secrets).unwrap();
    match case.signal {
        Signal::Traces => processor.process_traces(&case.request, &case.ctx),
        Signal::Logs => processor.process_logs(&case.request, &case.ctx),
    }
    .unwrap()
}

/// The expected answers, computed from an output.
fn answers(out: &Output, case: &Case) -> Json {
    let key = case.secrets.first().map(|(_, k)| k.as_slice());
    json!({
        "records": out.records.iter().map(|r| String::from_utf8(r.clone()).unwrap()).collect::<Vec<_>>(),
        "leaves": out.leaves.iter().map(hex::encode).collect::<Vec<_>>(),
        "macs": out.leaves.iter().map(|l| key.map(|k| hex::encode(hmac_sha256(k, l)))).collect::<Vec<_>>(),
        "head": {"seq": out.head.seq.to_string(), "prev": hex::encode(out.head.prev)},
    })
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Re-derives each vector from its record text alone, as an independent
/// verifier would: the line is its own JCS form; the leaf hashes the record
/// without its `mac` member; `prev` links; the MAC keys the leaf.
fn check_independently(expected: &Json, case: &Case) {
    let key = case.secrets.first().map(|(_, k)| k.as_slice());
    let mut prev = hex::encode(case.ctx.head.prev);
    for (i, line) in expected["records"].as_array().unwrap().iter().enumerate() {
        let line = line.as_str().unwrap();
        let mut record: Json = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json_canonicalizer::to_string(&record).unwrap(), line, "record {i} is not its own JCS form");
        assert_eq!(record["chain"]["prev"], prev.as_str(), "record {i} links to the previous leaf");
        assert_eq!(record["chain"]["seq"], (case.ctx.head.seq + i as u64).to_string());
        let mac = record.as_object_mut().unwrap().remove("mac");
        let body = serde_json_canonicalizer::to_vec(&record).unwrap();
        let leaf = Sha256::new().chain_update([0u8]).chain_update(&body).finalize();
        assert_eq!(hex::encode(leaf), expected["leaves"][i].as_str().unwrap(), "leaf {i}");
        match key {
            Some(key) => {
                let mac_hex = hex::encode(hmac_sha256(key, &leaf));
                assert_eq!(mac.as_ref().and_then(Json::as_str), Some(mac_hex.as_str()), "mac {i}");
                assert_eq!(expected["macs"][i], mac_hex.as_str());
            }
            None => assert!(mac.is_none(), "record {i} of an unkeyed chain has no mac"),
        }
        prev = hex::encode(leaf);
    }
    assert_eq!(expected["head"]["prev"], prev.as_str());
}

#[test]
fn known_answer_vectors() {
    let dir = support::root().join("tests/fixtures/known-answers");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 3, "expected the known-answer vectors in {}", dir.display());
    let bless = std::env::var_os("BLESS").is_some();
    for path in paths {
        let mut case = load(&path);
        let wasm = run_wasm(&case);
        let native = run_native(&case);
        assert_eq!(wasm, native, "{}: wasm and native differ", path.display());
        let got = answers(&wasm, &case);
        assert!(!wasm.records.is_empty(), "{}: a vector must chain something", path.display());
        if bless {
            case.doc["expected"] = got;
            let text = serde_json::to_string_pretty(&case.doc).unwrap() + "\n";
            std::fs::write(&case.path, text).unwrap();
            continue;
        }
        let expected = &case.doc["expected"];
        assert!(
            !expected.is_null(),
            "{}: no `expected` answers; generate them with BLESS=1 and review the diff",
            path.display()
        );
        for (i, (want, have)) in
            expected["records"].as_array().unwrap().iter().zip(got["records"].as_array().unwrap()).enumerate()
        {
            assert_eq!(want, have, "{}: record {i} drifted (the chain format changed?)", path.display());
        }
        assert_eq!(expected, &got, "{}: answers drifted", path.display());
        check_independently(expected, &case);
    }
}
