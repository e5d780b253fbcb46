//! `make bench`: the auditor's question on a big store. The seed query
//! (docs/auditors.md, "permission changes") on a chain of 1,000,000
//! records, cold (the segments dropped from the page cache with
//! `posix_fadvise(DONTNEED)`) and warm (median of `BENCH_RUNS`), in
//! process with the library `otel-audit sql` runs; then evidence for
//! 10,000 matching records (the same query with `LIMIT 10000`): proofs,
//! bundle written, and the bundle checked offline.
//!
//! The store is built first (benches/common/store.rs): loadgen audit spans
//! through the native processor and the soc2 policy, a checkpoint every
//! 1000 records. A sixth of them are role updates, all within the last 90
//! days of 2026-11-18 (loadgen's clock): the matching rows are reported.
//!
//! Knobs: `BENCH_SQL_RECORDS` (default 1000000), `BENCH_RUNS` (warm runs,
//! default 3), `BENCH_EVIDENCE_ROWS` (default 10000).

mod common;

use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::time::Instant;

use common::figures::thousands;
use common::store::{POLICY, build_store};
use otel_audit::checkpoint::SignerKey;
use otel_audit::sql::{self, Scope};
use otel_audit::store::ChainStore;
use otel_audit::verify::TrustedKey;

/// The seed query: the first question of docs/auditors.md (tests/sql.rs
/// holds it to the guide's text, verbatim).
fn seed_query(root: &Path) -> String {
    let guide = std::fs::read_to_string(root.join("docs/auditors.md")).expect("docs/auditors.md");
    let block = guide.split("```sql\n-- permission-changes\n").nth(1).expect("the permission-changes question");
    block.split("```").next().unwrap().trim_end().trim_end_matches(';').to_owned()
}

/// Drops the segments' pages from the page cache (they are clean: the
/// store fsyncs what it writes).
fn drop_cache(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let file = std::fs::File::open(entry.path()).unwrap();
        file.sync_all().ok();
        // SAFETY: a valid open descriptor; the advice only drops cached pages.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf();
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let wanted = env("BENCH_SQL_RECORDS", 1_000_000);
    let runs = env("BENCH_RUNS", 3).max(1) as usize;
    let evidence_rows = env("BENCH_EVIDENCE_ROWS", 10_000);
    let policy = std::fs::read_to_string(root.join(POLICY)).expect("the shipped policy");
    let target = root.join("target");
    let tmp = tempfile::tempdir_in(&target).expect("a temporary directory under target/");
    let store = tmp.path().join("store");
    let dir = store.join(ChainStore::chain_dir_name("bench/traces/audit/0"));
    let signer = SignerKey::generate("bench-signer").expect("a key");
    let commit = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output();
    let commit = commit.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();

    let started = Instant::now();
    let (records, bytes) = build_store(&dir, &policy, &signer, u64::MAX, wanted);
    println!("otel-audit sql and evidence (commit {commit}; `cargo bench -p otel-audit --bench sql`)");
    println!(
        "  store: 1 chain, {} records, {:.0} MB; built in {:.1} s",
        thousands(records as f64),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let ask = |query: &str| {
        let started = Instant::now();
        let ctx = sql::session(&store, Scope::All).expect("a session");
        let (_, batches) = runtime.block_on(sql::query(&ctx, query)).expect("the query runs");
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        (started.elapsed().as_secs_f64(), rows)
    };
    drop_cache(&dir);
    let seed = seed_query(&root);
    let (cold, rows) = ask(&seed);
    let mut warm: Vec<f64> = (0..runs).map(|_| ask(&seed).0).collect();
    warm.sort_by(f64::total_cmp);
    let warm = warm[warm.len() / 2];
    println!();
    println!("{:<44} {:>10} {:>14} {:>10}", "seed query (permission changes, 90 days)", "seconds", "records/s", "rows");
    println!("{}", "-".repeat(82));
    println!(
        "{:<44} {:>10.2} {:>14} {:>10}",
        "cold (page cache dropped)",
        cold,
        thousands(records as f64 / cold),
        rows
    );
    println!(
        "{:<44} {:>10.2} {:>14} {:>10}",
        format!("warm, median of {runs}"),
        warm,
        thousands(records as f64 / warm),
        rows
    );

    let bundle = tmp.path().join("evidence");
    let query = format!("{seed} LIMIT {evidence_rows}");
    let started = Instant::now();
    let made = runtime
        .block_on(otel_audit::evidence::make::make(&store, &query, &bundle, &signer))
        .expect("the evidence is written");
    let make = started.elapsed().as_secs_f64();
    let size: u64 = walk(&bundle);
    let keys = [TrustedKey { key: signer.verifier(), chain: None, from_size: 0, until_size: None }];
    let started = Instant::now();
    let checked = otel_audit::evidence::check::check(&bundle, &keys, &[], 0);
    let check = started.elapsed().as_secs_f64();
    assert!(checked.is_ok(), "the bundle verifies: {:?}", checked.err());
    println!();
    println!("{:<44} {:>10} {:>14} {:>10}", format!("evidence for {} rows", made.rows), "seconds", "rows/s", "MB");
    println!("{}", "-".repeat(82));
    println!(
        "{:<44} {:>10.2} {:>14} {:>10.1}",
        "make (query, proofs, bundle written)",
        make,
        thousands(made.rows as f64 / make),
        size as f64 / 1e6
    );
    println!("{:<44} {:>10.2} {:>14} {:>10}", "verify offline", check, thousands(made.rows as f64 / check), "");
}

/// Bytes of the files under `dir`.
fn walk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| if e.file_type().unwrap().is_dir() { walk(&e.path()) } else { e.metadata().unwrap().len() })
        .sum()
}
