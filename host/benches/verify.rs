//! `make bench`: `otel-audit verify` throughput on one core, in MB of store
//! per second, end to end (read the segments, check every line's canonical
//! form, recompute leaves, links and the Merkle tree, verify the signed
//! checkpoints), and records per second; beside it, plain SHA-256 over the
//! same bytes as the ceiling.
//!
//! The store is built first, quickly: the native processor chains
//! 10-attribute audit spans (the shipped soc2 policy) and the host's
//! `ChainStore` appends them and a signed checkpoint every 1000 records, as
//! `serve` would. The files are read from the page cache (the first,
//! untimed pass warms it), so the figure is the verifier's, not the disk's.
//!
//! Knobs: `BENCH_STORE_MB` (store size, default 256), `BENCH_RUNS` (timed
//! passes, default 3; the median is reported).

mod common;

use std::path::Path;
use std::time::Instant;

use common::figures::thousands;
use common::store::{EVERY_RECORDS, POLICY, build_store};
use otel_audit::checkpoint::SignerKey;
use otel_audit::store::ChainStore;
use otel_audit::verify::{self, Options, TrustedKey};
use sha2::{Digest, Sha256};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf();
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let target_bytes = env("BENCH_STORE_MB", 256) << 20;
    let runs = env("BENCH_RUNS", 3).max(1);
    let policy = std::fs::read_to_string(root.join(POLICY)).expect("the shipped policy");
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join(ChainStore::chain_dir_name("bench/traces/audit/0"));
    let signer = SignerKey::generate("bench-signer").expect("a key");

    let started = Instant::now();
    let (records, bytes) = build_store(&dir, &policy, &signer, target_bytes, u64::MAX);
    println!("otel-audit verify benchmark (single-threaded, page cache warm)");
    println!(
        "  store: 1 chain, {records} records, {:.1} MB, checkpoint every {EVERY_RECORDS} records; built in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let options = Options {
        keys: vec![TrustedKey { key: signer.verifier(), chain: None, from_size: 0, until_size: None }],
        hmac_keys: Vec::new(),
        anchors: Vec::new(),
        from: None,
        to: None,
        heartbeat: Some(std::time::Duration::from_secs(3600)),
        strict: true,
        witnesses: Vec::new(),
        quorum: 0,
        now_unix_nano: otel_audit::clock::now_unix_nano(),
    };
    let run = || {
        let started = Instant::now();
        let report = verify::verify(tmp.path(), &options, &mut |_| {}).expect("verify runs");
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(report.exit_code(), 0, "the benchmark store verifies:\n{}", report.to_text(false));
        assert_eq!(report.chains[0].records, records);
        seconds
    };
    run();
    let mut times: Vec<f64> = (0..runs).map(|_| run()).collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];

    // The ceiling: SHA-256 alone over the same bytes, already in memory.
    let segments: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    let started = Instant::now();
    for segment in &segments {
        std::hint::black_box(Sha256::digest(segment));
    }
    let sha = started.elapsed().as_secs_f64();

    println!();
    println!("{:<34} {:>10} {:>14} {:>10}", "", "MB/s", "records/s", "seconds");
    println!("{}", "-".repeat(72));
    println!(
        "{:<34} {:>10.0} {:>14} {:>10.3}",
        format!("verify, median of {runs}"),
        bytes as f64 / 1e6 / median,
        thousands(records as f64 / median),
        median
    );
    println!(
        "{:<34} {:>10.0} {:>14} {:>10.3}",
        "verify, best",
        bytes as f64 / 1e6 / times[0],
        thousands(records as f64 / times[0]),
        times[0]
    );
    println!("{:<34} {:>10.0} {:>14} {:>10.3}", "SHA-256 of the segments (ceiling)", bytes as f64 / 1e6 / sha, "", sha);
    println!();
    println!("MB are 10^6 bytes of segment files; records average {} bytes.", bytes / records.max(1));
}
