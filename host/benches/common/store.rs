//! A store built quickly for benches: the native processor chains
//! 10-attribute audit spans (the shipped soc2 policy, `loadgen` batches)
//! and the host's `ChainStore` appends them and signs a checkpoint every
//! [`EVERY_RECORDS`], as `serve` would.

use std::path::Path;

use audit_processor::Processor;
use audit_processor::api::{ChainHead, Context};
use base64::Engine as _;
use otel_audit::checkpoint::{Checkpoint, SignedNote, SignerKey};
use otel_audit::loadgen::{self, BatchSpec};
use otel_audit::store::{Append, ChainStore, CheckpointEntry, StoreOptions};
use prost::Message;
use sha2::{Digest, Sha256};

/// The policy the records go through.
pub const POLICY: &str = "collector-config/policies/soc2-audit.yaml";
/// Records between checkpoints.
pub const EVERY_RECORDS: u64 = 1000;

/// Chains audit spans with the native processor into chain
/// `bench/traces/audit/0` in `dir` until its segments hold about `target`
/// bytes (or `max_records` records), signing checkpoints as the host does:
/// (records, bytes).
pub fn build_store(dir: &Path, policy: &str, signer: &SignerKey, target: u64, max_records: u64) -> (u64, u64) {
    let mut processor = Processor::new();
    processor.configure(policy, &[]).expect("the policy configures");
    let options = StoreOptions { segment_size: 64 << 20, ..StoreOptions::default() };
    let (mut store, _) = ChainStore::open(dir, "bench/traces/audit/0", options).expect("a store");
    // The genesis checkpoint, as `serve` signs it before any record.
    sign(&mut store, signer, otel_audit::clock::now_unix_nano());
    let batches: Vec<Vec<u8>> = (0..16)
        .map(|seed| {
            let spec = BatchSpec { records: 1000, audit_ratio: 1.0, attributes: 10, varied: true, seed };
            loadgen::traces(&spec).encode_to_vec()
        })
        .collect();
    let mut head = ChainHead::genesis("bench/traces/audit/0");
    let (mut bytes, mut received_at) = (0u64, otel_audit::clock::now_unix_nano());
    let mut last_checkpoint = 0;
    let mut i = 0;
    while bytes < target && head.seq < max_records {
        let ctx = Context { received_at_unix_nano: received_at, head: head.clone(), sender: None };
        let output = processor.process_traces(&batches[i % batches.len()], &ctx).expect("the batch processes");
        let stats = store
            .append(&[Append { records: &output.records, leaves: &output.leaves, outbox: None, continues: 0 }])
            .expect("the store appends");
        bytes += stats.bytes;
        head = output.head;
        received_at += 1_000;
        i += 1;
        if head.seq - last_checkpoint >= EVERY_RECORDS {
            sign(&mut store, signer, received_at);
            last_checkpoint = head.seq;
        }
    }
    sign(&mut store, signer, received_at);
    (head.seq, bytes)
}

/// A checkpoint as `serve` signs it: origin, size, root, time, prev, schedule.
fn sign(store: &mut ChainStore, signer: &SignerKey, now: u64) {
    let frontier = store.frontier().clone();
    let mut extensions = vec![format!("time {}", audit_format::rfc3339_nanos(now))];
    if let Some(last) = store.last_checkpoint() {
        let text = SignedNote::parse(&last.note).unwrap().text;
        extensions.push(format!(
            "prev {}",
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
        ));
    }
    extensions.push(format!("schedule records={EVERY_RECORDS} interval_ms=10000 heartbeat_ms=3600000"));
    let body =
        Checkpoint { origin: store.origin().to_owned(), size: frontier.size(), root: frontier.root(), extensions }
            .body();
    let entry = CheckpointEntry {
        size: frontier.size(),
        root: frontier.root(),
        time_unix_nano: now,
        frontier: frontier.nodes().to_vec(),
        note: signer.sign_note(&body).unwrap(),
    };
    store.append_checkpoint(&entry).expect("the checkpoint is stored");
}
