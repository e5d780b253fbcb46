//! `make bench`, end to end: OTLP/gRPC from concurrent clients into the real
//! `otel-audit serve` (receiver -> chain worker -> component -> durable
//! store, fsync'd by group commit -> OK), against rotel as an OTLP
//! passthrough (no processing, no durability, acks before it exports) on
//! the same machine in the same run: the ceiling of one OTLP hop here.
//!
//! Each run starts a fresh server, so peak RSS is per run. The load is a
//! closed loop: every client has its own gRPC connection and sends its next
//! batch when the previous one is answered, from a pool of pre-encoded
//! batches (generation is not measured). Requests answered within the
//! measured window count; errors are counted apart, never as throughput.
//! The load generator shares the machine's cores with the server, and its
//! CPU is printed too. Nothing is asserted: this measures.
//!
//! Besides the figures it prints where the server's time goes (CPU by
//! thread, the chain worker's scheduler times, group commits, fsyncs) and
//! how much CPU other processes took, since that lowers every figure.
//!
//! The bench in files: `servers` starts what a run measures, `measure`
//! runs the load against it and `sample` reads the server and the machine
//! at the window's edges; `report` prints the tables.
//!
//! Knobs: `OTEL_AUDIT_WASM` (the component), `OTEL_AUDIT_CACHE_DIR` (module
//! cache), `BENCH_E2E_SECONDS` (measured time per run, default 10),
//! `BENCH_E2E_SHARDS` (chains per pipeline, default `auto` as shipped: one per core).

#[path = "../common/mod.rs"]
mod common;
mod measure;
mod report;
mod sample;
mod servers;
#[path = "../../../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use common::cpu::{clock_ticks, cores};
use common::load::{self, ATTRIBUTES, POOL, SPANS, WARMUP};
use common::scratch::{fs_type, scratch};
use report::Row;
use servers::Target;
use tempfile::TempDir;

/// Concurrent clients of each scenario.
const CLIENTS: [usize; 2] = [8, 32];
/// Audit mixes: typical, and everything kept (the store's worst case).
const MIXES: [(&str, f64); 2] = [("5 %", 0.05), ("100 %", 1.0)];
/// What each scenario runs: the baseline, otel-audit, otel-audit with two
/// witnesses cosigning every checkpoint (their cost must stay off the
/// request path), and otel-audit serving TLS (its cost against plaintext).
const TARGETS: [Target; 4] = [Target::Rotel, Target::OtelAudit, Target::Witnessed, Target::Tls];
/// The shipped policy the server runs (tests/support's `Setup` default).
const POLICY: &str = "collector-config/policies/soc2-audit.yaml";

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

/// Where everything is, resolved once, and the knobs.
struct Env {
    binary: PathBuf,
    rotel: PathBuf,
    /// Removed when the bench ends.
    scratch: TempDir,
    clock_ticks: f64,
    shards: u32,
    /// Measured time per run.
    measure: Duration,
}

impl Env {
    fn resolve() -> Result<Env, String> {
        let root = support::root();
        // Before anything runs: the component must exist.
        let _ = support::wasm_path();
        let shards = std::env::var("BENCH_E2E_SHARDS")
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(otel_audit::config::auto_shards);
        Ok(Env {
            binary: PathBuf::from(support::server::binary()),
            rotel: servers::rotel_path(&root)?,
            scratch: scratch(&root, "otel-audit-e2e-")?,
            clock_ticks: clock_ticks(),
            shards,
            measure: common::seconds("BENCH_E2E_SECONDS").unwrap_or(Duration::from_secs(10)),
        })
    }
}

fn run() -> Result<(), String> {
    let env = Env::resolve()?;
    let runtime = load::runtime()?;
    print_setting(&env);
    let total = MIXES.len() * CLIENTS.len() * TARGETS.len();
    let mut results = Vec::new();
    for (mix, audit_ratio) in MIXES {
        let pool = load::pool(audit_ratio);
        let request_bytes = pool.iter().map(Bytes::len).sum::<usize>() / pool.len();
        for clients in CLIENTS {
            for target in TARGETS {
                let run = results.len() + 1;
                eprintln!(
                    "  [{run}/{total}] {} {mix} audit, {clients} clients ({} KiB requests)",
                    target.name(),
                    request_bytes / 1024
                );
                let dir = env.scratch.path().join(format!("run-{run}"));
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let result = measure::one_run(&env, &runtime, target, &dir, clients, &pool)?;
                results.push(Row { mix, clients, target, result });
            }
        }
    }
    println!();
    report::print(&results, env.shards);
    Ok(())
}

/// What runs, where, and the load.
fn print_setting(env: &Env) {
    let (cores, scratch) = (cores(), env.scratch.path());
    println!("otel-audit end-to-end benchmark: OTLP/gRPC -> otel-audit serve -> durable store (fsync) -> OK");
    println!("  reproduce: make bench   (this part alone: cargo bench -p otel-audit --bench e2e)");
    println!("  machine:   {cores} cores; load generator and server share them");
    println!(
        "  server:    {} serve; policy {POLICY}; {} chain(s) per pipeline (BENCH_E2E_SHARDS)",
        env.binary.display(),
        env.shards
    );
    println!("  store:     {} ({})", scratch.display(), fs_type(scratch));
    println!(
        "  baseline:  {} ({}): OTLP passthrough, blackhole exporter",
        env.rotel.display(),
        servers::rotel_version(&env.rotel)
    );
    println!(
        "  load:      closed loop, one gRPC connection per client, {SPANS}-span batches ({ATTRIBUTES} attributes, \
         varied values), {POOL} pre-encoded per mix; warm-up {:.0} s, measured {:.0} s per run",
        WARMUP.as_secs_f64(),
        env.measure.as_secs_f64()
    );
    println!();
}
