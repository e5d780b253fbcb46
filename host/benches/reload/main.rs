//! `make bench`, hot swap: what swapping the policy or the module of a
//! loaded `otel-audit serve` costs its clients, and how long a trigger
//! takes until the new policy serves.
//!
//! 1. Latency during continuous swaps: one server (one traces pipeline, two
//!    chains), one load (closed loop, one gRPC connection per client,
//!    pre-encoded batches, as in the e2e bench), measured in 1 s slices
//!    that alternate between no swaps and a swap every 100 ms between two
//!    policies that keep different records (each swap: the policy file
//!    replaced by rename, then `POST /admin/reload`, which answers once
//!    every chain has appended its `policy_change` record and serves the
//!    new policy). Interleaving makes whatever else runs on the machine
//!    weigh on both alike; a request counts in the slice it was answered in.
//! 2. Trigger to serving: the elapsed time of `POST /admin/reload` under
//!    that load and idle; for a file change (the policy renamed into place,
//!    watched with a 50 ms debounce), the time from the rename until
//!    `GET /admin/status` shows the new policy digest; for a swap of the
//!    .wasm itself, the elapsed time of `POST /admin/reload`, with the
//!    module from the cache or compiled.
//! 3. Then every store must verify (`otel-audit verify` exits 0), no request
//!    may have failed and every swap must have applied; else it exits 1.
//!
//! The admin swaps run on a server with `reload.watch: false`, so that each
//! swap is one reload (with the watch on, every rename would also start a
//! file-triggered reload, which finds the files unchanged but holds the
//! reload lock meanwhile); the file trigger is measured on a second server
//! with `reload: {watch: true, debounce: 50ms}`.
//!
//! The bench in files: `scenario` runs the steps above on `server`s (the
//! swaps themselves), `slices` measures the load, `modules` swaps the
//! .wasm, `swaps` collects trigger-to-serving times, `policies` makes
//! policies A and B; `report` prints and judges.
//!
//! Knobs: `OTEL_AUDIT_WASM` (the component), `OTEL_AUDIT_WASM_KEEP_ALL`
//! (the byte-different component swapped in, `make fixtures`; without it
//! only never-seen copies of the component are swapped in),
//! `OTEL_AUDIT_CACHE_DIR` (module cache), `BENCH_RELOAD_SECONDS` (load
//! time of each kind, without and with swaps; default 10).

#[path = "../common/mod.rs"]
mod common;
mod modules;
mod policies;
mod report;
mod scenario;
mod server;
mod slices;
#[path = "../../../tests/support/mod.rs"]
mod support;
mod swaps;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cpu::cores;
use common::load::{self, ATTRIBUTES, POOL, SPANS, WARMUP};
use common::scratch::{fs_type, scratch};
use policies::{ACTIONS, POLICY, Policy};
use tempfile::TempDir;

/// Concurrent clients.
const CLIENTS: usize = 8;
/// Fraction of spans that are audit records (policy A keeps them all).
const AUDIT_RATIO: f64 = 0.05;
/// Chains of the pipeline: every swap switches each of them.
const SHARDS: u32 = 2;
/// One swap starts this long after the previous one started (or at once
/// when that one took longer).
const SWAP_EVERY: Duration = Duration::from_millis(100);
/// Admin swaps on the idle server, and the pause between two.
const IDLE_SWAPS: usize = 50;
const IDLE_GAP: Duration = Duration::from_millis(20);
/// File-triggered swaps, the watch's debounce, the quiet time between two
/// swaps (so that each is its own debounced change) and how often the
/// status is polled.
const FILE_SWAPS: usize = 20;
const DEBOUNCE: Duration = Duration::from_millis(50);
const FILE_QUIET: Duration = Duration::from_millis(200);
const POLL: Duration = Duration::from_millis(1);
/// Swaps between the component and the keep-all build, and swaps to a
/// never-seen copy of the component (compiled, not in the cache).
const MODULE_SWAPS: usize = 10;
const COMPILED_SWAPS: usize = 3;
/// The load alternates between slices without and with swaps, so that
/// whatever else runs on the machine weighs on both alike.
const SLICE: Duration = Duration::from_secs(1);

fn main() {
    let started = Instant::now();
    let result = run();
    println!("(the reload bench took {:.0} s)", started.elapsed().as_secs_f64());
    if let Err(message) = result {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

/// Where everything is, resolved once, and the knobs.
struct Env {
    binary: PathBuf,
    wasm: PathBuf,
    keep_all: Option<PathBuf>,
    cache_dir: PathBuf,
    /// Removed when the bench ends.
    scratch: TempDir,
    /// Policy A and B.
    policies: [Policy; 2],
    /// Slices of each kind (without and with swaps).
    slices: u32,
}

impl Env {
    fn resolve() -> Result<Env, String> {
        let root = support::root();
        let keep_all = std::env::var_os("OTEL_AUDIT_WASM_KEEP_ALL")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/wasm-fixtures/keep-all.wasm"));
        Ok(Env {
            binary: PathBuf::from(support::server::binary()),
            wasm: support::wasm_path(),
            keep_all: keep_all.exists().then_some(keep_all),
            cache_dir: support::cache_dir(),
            scratch: scratch(&root, "otel-audit-reload-")?,
            policies: policies::a_and_b(&root)?,
            slices: common::seconds("BENCH_RELOAD_SECONDS")
                .map_or(10, |s| (s.as_secs_f64() / SLICE.as_secs_f64()).ceil() as u32),
        })
    }
}

fn run() -> Result<(), String> {
    let env = Env::resolve()?;
    let runtime = load::runtime()?;
    print_setting(&env);
    let outcome = scenario::run(&env, &runtime)?;
    report::print(&outcome);
    let failures = report::failures(&outcome);
    if !failures.is_empty() {
        return Err(format!("the hot swap failed:\n  {}", failures.join("\n  ")));
    }
    println!("OK: 0 failed requests with and without swaps, every swap applied, every store verifies");
    Ok(())
}

/// What runs, where, and the load.
fn print_setting(env: &Env) {
    let scratch = env.scratch.path();
    println!(
        "otel-audit hot-swap benchmark: request latency during continuous swaps, and trigger -> new policy serving"
    );
    println!("  reproduce: make bench   (this part alone: cargo bench -p otel-audit --bench reload)");
    println!("  machine:   {} cores; load generator and server share them", cores());
    println!(
        "  server:    {} serve; one traces pipeline, {SHARDS} chains; module cache {}",
        env.binary.display(),
        env.cache_dir.display()
    );
    println!("  store:     {} ({})", scratch.display(), fs_type(scratch));
    for (name, (actions, policy)) in ["A", "B"].iter().zip(ACTIONS.iter().zip(&env.policies)) {
        println!(
            "  policy {name}:  {POLICY}, spans filter narrowed to audit.action ~ {actions} {}",
            policies::short(&policy.digest)
        );
    }
    println!(
        "  load:      {CLIENTS} clients, closed loop, one gRPC connection each, {SPANS}-span batches ({ATTRIBUTES} \
         attributes, {:.0} % audit records), {POOL} pre-encoded; warm-up {:.0} s, then {} slices of {:.0} s \
         alternating without and with swaps: {:.0} s of each (BENCH_RELOAD_SECONDS)",
        AUDIT_RATIO * 100.0,
        WARMUP.as_secs_f64(),
        2 * env.slices,
        SLICE.as_secs_f64(),
        (SLICE * env.slices).as_secs_f64()
    );
    println!();
}
