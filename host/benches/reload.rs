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
//! Knobs: `OTEL_AUDIT_WASM` (the component), `OTEL_AUDIT_WASM_KEEP_ALL`
//! (the byte-different component swapped in, `make fixtures`; without it
//! only never-seen copies of the component are swapped in),
//! `OTEL_AUDIT_CACHE_DIR` (module cache), `BENCH_RELOAD_SECONDS` (load
//! time of each kind, without and with swaps; default 10).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    Process, client_loop, clock_ticks, cores, free_port, fs_type, http, http_get, keygen, millis, percentile,
    process_cpu, quoted, scratch_parent, serve, stat_cpu, system_cpu, thousands,
};
use otel_audit::loadgen::{self, BatchSpec};
use prost::Message;
use sha2::{Digest, Sha256};

/// Concurrent clients.
const CLIENTS: usize = 8;
/// Spans per request.
const SPANS: usize = 100;
/// Attributes per span.
const ATTRIBUTES: usize = 10;
/// Fraction of spans that are audit records (policy A keeps them all).
const AUDIT_RATIO: f64 = 0.05;
/// Distinct pre-encoded batches the clients rotate over.
const POOL: u64 = 64;
/// Chains of the pipeline: every swap switches each of them.
const SHARDS: u32 = 2;
/// Load before the measured slices.
const WARMUP: Duration = Duration::from_secs(2);
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
/// The longest a reload may take before the bench gives up on it (the
/// server waits 30 s for its chains).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Policies A and B: the shipped policy with its spans filter narrowed
/// to these `audit.action` values, each half of the actions the load
/// generator uses: both keep as many records, different ones.
const POLICY: &str = "collector-config/policies/soc2-audit.yaml";
const ACTIONS: [&str; 2] = ["^(login|role_update|config_change)$", "^(password_reset|export_data|api_key_create)$"];
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

/// Where everything is, resolved once.
struct Env {
    binary: PathBuf,
    wasm: PathBuf,
    keep_all: Option<PathBuf>,
    cache_dir: PathBuf,
    scratch: PathBuf,
    key: PathBuf,
    /// Policy A and B: text and digest.
    policies: [(String, String); 2],
}

fn run() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("host/ has no parent")?.to_path_buf();
    let slices = std::env::var("BENCH_RELOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(10, |s| (s / SLICE.as_secs_f64()).ceil() as u32);
    let binary = root.join("target/release/otel-audit");
    let wasm = std::env::var_os("OTEL_AUDIT_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/wasm32-wasip2/wasm/audit_processor.wasm"));
    for (path, what) in [(&binary, "the release binary"), (&wasm, "the component")] {
        if !path.exists() {
            return Err(format!("{what} {} does not exist: run `make bench` (it builds both)", path.display()));
        }
    }
    let keep_all = std::env::var_os("OTEL_AUDIT_WASM_KEEP_ALL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/wasm-fixtures/keep-all.wasm"));
    let keep_all = keep_all.exists().then_some(keep_all);
    let cache_dir =
        std::env::var_os("OTEL_AUDIT_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target/module-cache"));
    let scratch_parent = scratch_parent(&root)?;
    let scratch = tempfile::Builder::new()
        .prefix("otel-audit-reload-")
        .tempdir_in(&scratch_parent)
        .map_err(|e| format!("cannot create a scratch directory in {}: {e}", scratch_parent.display()))?;
    let key = keygen(&binary, scratch.path())?;
    let shipped = std::fs::read_to_string(root.join(POLICY)).map_err(|e| format!("{POLICY}: {e}"))?;
    let (a, b) = (narrowed(&shipped, ACTIONS[0])?, narrowed(&shipped, ACTIONS[1])?);
    let env = Env {
        binary,
        wasm,
        keep_all,
        cache_dir,
        scratch: scratch.path().to_owned(),
        key,
        policies: [(policy_digest(&a), a), (policy_digest(&b), b)],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the load generator's runtime: {e}"))?;

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
    println!("  store:     {} ({})", env.scratch.display(), fs_type(&env.scratch));
    for (name, (actions, (digest, _))) in ["A", "B"].iter().zip(ACTIONS.iter().zip(&env.policies)) {
        println!("  policy {name}:  {POLICY}, spans filter narrowed to audit.action ~ {actions} {}", short(digest));
    }
    println!(
        "  load:      {CLIENTS} clients, closed loop, one gRPC connection each, {SPANS}-span batches ({ATTRIBUTES} \
         attributes, {:.0} % audit records), {POOL} pre-encoded; warm-up {:.0} s, then {} slices of {:.0} s \
         alternating without and with swaps: {:.0} s of each (BENCH_RELOAD_SECONDS)",
        AUDIT_RATIO * 100.0,
        WARMUP.as_secs_f64(),
        2 * slices,
        SLICE.as_secs_f64(),
        (SLICE * slices).as_secs_f64()
    );
    println!();

    let pool: Arc<Vec<Bytes>> = Arc::new(
        (1..=POOL)
            .map(|seed| {
                let spec =
                    BatchSpec { records: SPANS, audit_ratio: AUDIT_RATIO, attributes: ATTRIBUTES, varied: true, seed };
                Bytes::from(loadgen::traces(&spec).encode_to_vec())
            })
            .collect(),
    );
    let mut failures = Vec::new();

    // ---- the admin server: load with and without swaps, idle and module swaps ----
    eprintln!("  [1/5] starting the server (reload.watch: false)");
    let mut server = Server::start(&env, "admin", false)?;
    eprintln!(
        "  [2/5] {CLIENTS} clients: {slices} s without swaps and {slices} s with a policy swap every {} ms, interleaved",
        SWAP_EVERY.as_millis()
    );
    let (quiet, swapping, loaded, outside) = interleaved(&runtime, &pool, slices, &mut server, &env)?;
    server.process.check_running()?;
    eprintln!("  [3/5] {IDLE_SWAPS} policy swaps, idle");
    let mut idle = Swaps::default();
    for _ in 0..IDLE_SWAPS {
        idle.record(server.swap_policy(&env));
        std::thread::sleep(IDLE_GAP);
    }
    eprintln!("  [4/5] module swaps, idle");
    let (cached, compiled, module_notes) = module_swaps(&env, &mut server)?;
    let admin_store = server.stop()?;

    // ---- the watching server: file-triggered swaps ----
    eprintln!("  [5/5] {FILE_SWAPS} file-triggered policy swaps, idle (reload.watch: true, debounce {DEBOUNCE:?})");
    let mut watching = Server::start(&env, "watch", true)?;
    let mut files = Swaps::default();
    for _ in 0..FILE_SWAPS {
        files.record(watching.swap_by_file(&env));
        std::thread::sleep(FILE_QUIET);
    }
    let watch_store = watching.stop()?;

    let verified: Vec<(String, Result<String, String>)> =
        [("admin server", &admin_store), ("watch server", &watch_store)]
            .into_iter()
            .map(|(name, store)| (format!("{name} {}", store.display()), verify(&env, store)))
            .collect();

    // ---- the report ----
    println!();
    println!(
        "Request latency, same server and load, without and with continuous policy swaps ({:.0} s slices, interleaved)",
        SLICE.as_secs_f64()
    );
    println!(
        "{:<24} | {:>7} {:>9} | {:>7} {:>7} {:>7} | {:>6} {:>7} | {:>6} | {:>6} {:>7} {:>6}",
        "slices",
        "req/s",
        "spans/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "failed",
        "kept %",
        "swaps",
        "server",
        "loadgen",
        "other"
    );
    println!("{}", "-".repeat(116));
    let phases = [("no swaps", &quiet, None), ("swap every 100 ms", &swapping, Some(&loaded))];
    for (name, r, swaps) in phases {
        let seconds = r.window.as_secs_f64();
        println!(
            "{:<24} | {:>7} {:>9} | {:>7.2} {:>7.2} {:>7.2} | {:>6} {:>7.2} | {:>6} | {:>5.0}% {:>6.0}% {:>5.0}%",
            name,
            thousands(r.ok as f64 / seconds),
            thousands(r.ok as f64 * SPANS as f64 / seconds),
            millis(percentile(&r.latencies, 0.50)),
            millis(percentile(&r.latencies, 0.99)),
            millis(r.latencies.last().copied()),
            r.errors,
            100.0 * r.kept / r.received.max(1.0),
            swaps.map_or("-".to_owned(), Swaps::count),
            100.0 * r.server_cpu / seconds,
            100.0 * r.loadgen_cpu / seconds,
            100.0 * r.other_cpu / seconds,
        );
    }
    let ratio = |q: f64| millis(percentile(&swapping.latencies, q)) / millis(percentile(&quiet.latencies, q));
    println!();
    println!("p99 with swaps / p99 without: {:.2}   (p50: {:.2})", ratio(0.99), ratio(0.50));
    println!(
        "req/s, spans/s: requests answered OK in the window, and their spans; latency: send to OK at the client; \
         failed: requests not answered OK; kept %: spans the policy kept (server metrics; A and B each keep about \
         half of the {:.0} % audit records); swaps: reloads applied in the window, each on every chain (and any that failed); server / loadgen / other: \
         CPU of the server, of this bench, and of every other process, as % of one core ({} cores: {} %).",
        AUDIT_RATIO * 100.0,
        cores(),
        100 * cores()
    );
    for (name, r) in [("without swaps", &quiet), ("with swaps", &swapping)] {
        if r.other_cpu > 0.2 * r.window.as_secs_f64() {
            println!(
                "  WARNING: other processes used {:.0} % of a core {name}: the figures are disturbed, rerun on an idle \
                 machine",
                100.0 * r.other_cpu / r.window.as_secs_f64()
            );
        }
    }

    println!();
    println!("Trigger -> new policy (or module) serving on every chain");
    println!(
        "{:<42} | {:>5} | {:>7} {:>7} {:>7} | {:>13}",
        "trigger", "swaps", "p50 ms", "p99 ms", "max ms", "server p50 ms"
    );
    println!("{}", "-".repeat(91));
    let rows: Vec<(String, &Swaps)> = vec![
        (format!("admin, under load ({CLIENTS} clients)"), &loaded),
        ("admin, idle".to_owned(), &idle),
        (format!("file rename, idle (debounce {} ms)", DEBOUNCE.as_millis()), &files),
        ("module swap, admin, from the module cache".to_owned(), &cached),
        ("module swap, admin, compiled (new module)".to_owned(), &compiled),
    ];
    for (name, swaps) in &rows {
        swaps.row(name);
    }
    println!();
    println!(
        "admin: the client's time for POST /admin/reload, which answers once every chain has appended its \
         policy_change record and serves the new policy (the candidate is read, configured and checked first). \
         file: from the rename of the policy file into place until GET /admin/status (polled every {} ms) shows \
         the new policy digest; it includes the {} ms debounce. server: the reload's own elapsed_ms (from the \
         trigger, i.e. after the debounce, to every chain serving). p99 of fewer than 100 swaps is their maximum.",
        POLL.as_millis(),
        DEBOUNCE.as_millis()
    );
    for note in &module_notes {
        println!("  {note}");
    }

    println!();
    for (name, outcome) in &verified {
        match outcome {
            Ok(summary) => println!("verify {name}: OK ({summary})"),
            Err(error) => println!("verify {name}: FAILED: {error}"),
        }
    }
    for (phase, r) in [("without swaps", &quiet), ("with swaps", &swapping)] {
        if r.errors > 0 {
            failures.push(format!("{phase}: {} failed requests", r.errors));
        }
    }
    if outside.errors > 0 {
        failures.push(format!("{} failed requests outside the measured slices (warm-up, the end)", outside.errors));
    }
    if let Some(error) = &outside.first_error {
        failures.push(format!("first failed request: {error}"));
    }
    for (name, swaps) in &rows {
        if swaps.failed > 0 {
            failures.push(format!(
                "{name}: {} swaps failed; first: {}",
                swaps.failed,
                swaps.first_error.as_deref().unwrap_or_default()
            ));
        }
    }
    if loaded.done() == 0 {
        failures.push("no swap was done under load".to_owned());
    }
    for (name, outcome) in &verified {
        if let Err(error) = outcome {
            failures.push(format!("verify {name}: {error}"));
        }
    }
    if !failures.is_empty() {
        return Err(format!("the hot swap failed:\n  {}", failures.join("\n  ")));
    }
    println!("OK: 0 failed requests with and without swaps, every swap applied, every store verifies");
    Ok(())
}

// ---- the server ----

#[derive(Clone, Copy)]
struct Ports {
    grpc: u16,
    metrics: u16,
    health: u16,
    admin: u16,
}

/// A running `otel-audit serve` whose module and policy files are the
/// bench's copies, and what serves now.
struct Server {
    process: Process,
    ports: Ports,
    store: PathBuf,
    policy_path: PathBuf,
    module_path: PathBuf,
    /// Index into `Env::policies` of the policy serving.
    policy: usize,
}

/// What the load measured in the slices of one kind.
struct LoadResult {
    window: Duration,
    ok: u64,
    errors: u64,
    /// Latencies of the OK requests, sorted.
    latencies: Vec<Duration>,
    /// Spans received and kept (server metrics).
    received: f64,
    kept: f64,
    /// CPU seconds of the server, of the bench process and of every other
    /// process.
    server_cpu: f64,
    loadgen_cpu: f64,
    other_cpu: f64,
}

impl LoadResult {
    fn new(window: Duration) -> Self {
        LoadResult {
            window,
            ok: 0,
            errors: 0,
            latencies: Vec::new(),
            received: 0.0,
            kept: 0.0,
            server_cpu: 0.0,
            loadgen_cpu: 0.0,
            other_cpu: 0.0,
        }
    }

    /// Adds what happened between two samples.
    fn add(&mut self, before: &Sample, after: &Sample) {
        self.received += after.received - before.received;
        self.kept += after.kept - before.kept;
        let (server, own, system) = (
            after.server_cpu - before.server_cpu,
            after.own_cpu - before.own_cpu,
            after.system_cpu - before.system_cpu,
        );
        self.server_cpu += server;
        self.loadgen_cpu += own;
        self.other_cpu += (system - server - own).max(0.0);
    }
}

/// Requests that failed outside the measured slices, and the first
/// failure of all.
#[derive(Default)]
struct Outside {
    errors: u64,
    first_error: Option<String>,
}

/// Counters and CPU times at one instant.
struct Sample {
    received: f64,
    kept: f64,
    server_cpu: f64,
    own_cpu: f64,
    system_cpu: f64,
}

impl Sample {
    fn take(ports: &Ports, pid: u32, ticks: f64) -> Result<Sample, String> {
        let metrics = common::scrape(ports.metrics)?;
        let counter = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
        Ok(Sample {
            received: counter("otel_audit_received_records_total"),
            kept: counter("otel_audit_kept_records_total"),
            server_cpu: process_cpu(pid, ticks),
            own_cpu: stat_cpu(Path::new("/proc/self/stat"), ticks).map_or(0.0, |(_, s)| s),
            system_cpu: system_cpu(ticks),
        })
    }
}

impl Server {
    /// Starts a server on a fresh store in `scratch/name`, serving policy A
    /// and the component, both from copies in their own directories.
    fn start(env: &Env, name: &str, watch: bool) -> Result<Server, String> {
        let dir = env.scratch.join(name);
        for sub in ["policy", "module"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let policy_path = dir.join("policy/policy.yaml");
        let module_path = dir.join("module/audit.wasm");
        install(&policy_path, env.policies[0].1.as_bytes())?;
        install(&module_path, &read(&env.wasm)?)?;
        let ports = Ports { grpc: free_port()?, metrics: free_port()?, health: free_port()?, admin: free_port()? };
        let store = dir.join("store");
        let config = dir.join("otel-audit.yaml");
        let text = format!(
            r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
processors:
  wasm/audit:
    module: {module}
    policy: {policy}
    reload: {{watch: {watch}, debounce: {debounce}ms}}
exporters:
  auditstore:
    directory: {store}
    instance_id: bench
    segment_size: 64MiB
    checkpoint: {{every_records: 1000, interval: 10s, heartbeat: 60s}}
    signing_key: {key}
extensions:
  health_check:
    endpoint: 127.0.0.1:{health}
  admin:
    endpoint: 127.0.0.1:{admin}
service:
  extensions: [health_check, admin]
  pipelines:
    traces/audit:
      receivers: [otlp]
      processors: [wasm/audit]
      exporters: [auditstore]
      shards: {SHARDS}
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics}
"#,
            grpc = ports.grpc,
            health = ports.health,
            admin = ports.admin,
            metrics = ports.metrics,
            module = quoted(&module_path),
            policy = quoted(&policy_path),
            debounce = DEBOUNCE.as_millis(),
            store = quoted(&store),
            key = quoted(&env.key),
        );
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        let process = serve(&env.binary, &env.cache_dir, &config, ports.health, dir.join("server.log"))?;
        Ok(Server { process, ports, store, policy_path, module_path, policy: 0 })
    }

    /// Replaces the policy file by the other policy and reloads by admin.
    fn swap_policy(&mut self, env: &Env) -> Result<Swap, String> {
        let next = 1 - self.policy;
        install(&self.policy_path, env.policies[next].1.as_bytes())?;
        let swap = self.admin_reload(&env.policies[next].0, None)?;
        self.policy = next;
        Ok(swap)
    }

    /// Replaces the module file by `bytes` and reloads by admin.
    fn swap_module(&mut self, bytes: &[u8]) -> Result<Swap, String> {
        install(&self.module_path, bytes)?;
        let policy = self.policy_digest();
        self.admin_reload(&policy, Some(&digest(bytes)))
    }

    fn policy_digest(&self) -> String {
        policy_digest(&std::fs::read_to_string(&self.policy_path).unwrap_or_default())
    }

    /// `POST /admin/reload`: it must answer 200 with the reload applied on
    /// every chain, serving `policy` (and `module`).
    fn admin_reload(&mut self, policy: &str, module: Option<&str>) -> Result<Swap, String> {
        let sent = Instant::now();
        let answer = http(self.ports.admin, "POST", "/admin/reload", ADMIN_TIMEOUT);
        let wall = sent.elapsed();
        let Some((code, body)) = answer else {
            self.process.check_running()?;
            return Err(format!("POST /admin/reload: no answer within {ADMIN_TIMEOUT:?}"));
        };
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("POST /admin/reload: HTTP {code}, {e}: {body}"))?;
        let report = &json["reloads"][0];
        if code != 200 || report["result"] != "applied" {
            return Err(format!("POST /admin/reload: HTTP {code}: {body}"));
        }
        let chains = report["chains"].as_array().map_or(0, |c| c.iter().filter(|c| c["seq"].is_u64()).count());
        if report["policy_digest"] != policy
            || module.is_some_and(|m| report["module_digest"] != m)
            || chains != SHARDS as usize
        {
            return Err(format!("POST /admin/reload applied something else (or not on {SHARDS} chains): {body}"));
        }
        Ok(Swap { wall, server: server_elapsed(report)? })
    }

    /// Replaces the policy file by the other policy and waits until the
    /// status shows it serving (the watch reloads it).
    fn swap_by_file(&mut self, env: &Env) -> Result<Swap, String> {
        let next = 1 - self.policy;
        let expected = &env.policies[next].0;
        let renamed = install(&self.policy_path, env.policies[next].1.as_bytes())?;
        let deadline = renamed + Duration::from_secs(10);
        loop {
            if let Some((200, body)) = http_get(self.ports.admin, "/admin/status") {
                let now = Instant::now();
                let status: serde_json::Value =
                    serde_json::from_str(&body).map_err(|e| format!("GET /admin/status: {e}: {body}"))?;
                let processor = &status["processors"][0];
                if processor["policy"]["digest"] == expected.as_str() {
                    let last = &processor["last_reload"];
                    if last["trigger"] != "file" || last["result"] != "applied" {
                        return Err(format!("the new policy serves, but not by a file reload: {body}"));
                    }
                    self.policy = next;
                    return Ok(Swap { wall: now - renamed, server: server_elapsed(last)? });
                }
            }
            if Instant::now() > deadline {
                self.process.check_running()?;
                return Err(format!("the renamed policy did not serve within 10 s:\n{}", self.process.log_tail()));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stops the server; returns its store.
    fn stop(self) -> Result<PathBuf, String> {
        self.process.stop()?;
        Ok(self.store)
    }
}

/// Runs the clients for a warm-up, then `2 * slices` slices alternately
/// without swaps and with a policy swap every [`SWAP_EVERY`]. Returns what
/// the load measured without and with swaps, the swaps, and the failures
/// outside the slices. A request counts in the slice it was answered in.
fn interleaved(
    runtime: &tokio::runtime::Runtime,
    pool: &Arc<Vec<Bytes>>,
    slices: u32,
    server: &mut Server,
    env: &Env,
) -> Result<(LoadResult, LoadResult, Swaps, Outside), String> {
    let (ports, pid, ticks) = (server.ports, server.process.pid(), clock_ticks());
    let endpoint = format!("http://127.0.0.1:{}", ports.grpc);
    let window_start = Instant::now() + WARMUP;
    let end = window_start + SLICE * (2 * slices);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|index| runtime.spawn(client_loop(endpoint.clone(), pool.clone(), index, CLIENTS, window_start, end)))
        .collect();
    std::thread::sleep(window_start.saturating_duration_since(Instant::now()));
    let mut results = [LoadResult::new(SLICE * slices), LoadResult::new(SLICE * slices)];
    let mut swaps = Swaps::default();
    let mut last = Sample::take(&ports, pid, ticks)?;
    for slice in 0..2 * slices {
        let slice_end = window_start + SLICE * (slice + 1);
        if slice % 2 == 1 {
            // Swaps start every SWAP_EVERY, none in the last half interval,
            // so that none runs into the next slice.
            let mut next = Instant::now();
            while next + SWAP_EVERY / 2 <= slice_end {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                swaps.record(server.swap_policy(env));
                next = (next + SWAP_EVERY).max(Instant::now());
            }
        }
        std::thread::sleep(slice_end.saturating_duration_since(Instant::now()));
        let sample = Sample::take(&ports, pid, ticks)?;
        results[(slice % 2) as usize].add(&last, &sample);
        last = sample;
    }
    let kind = |at: Instant| {
        let slice = (at.saturating_duration_since(window_start).as_nanos() / SLICE.as_nanos()) as u32;
        (slice.min(2 * slices - 1) % 2) as usize
    };
    let mut outside = Outside::default();
    for task in tasks {
        let stats = runtime.block_on(task).map_err(|e| format!("a client task failed: {e}"))??;
        for (latency, at) in stats.latencies.into_iter().zip(stats.answered) {
            results[kind(at)].ok += 1;
            results[kind(at)].latencies.push(latency);
        }
        for at in stats.failed_at {
            results[kind(at)].errors += 1;
        }
        outside.errors += stats.errors_outside;
        outside.first_error = outside.first_error.or(stats.first_error).or(stats.first_error_outside);
    }
    let [mut quiet, mut swapping] = results;
    quiet.latencies.sort_unstable();
    swapping.latencies.sort_unstable();
    Ok((quiet, swapping, swaps, outside))
}

fn server_elapsed(report: &serde_json::Value) -> Result<Duration, String> {
    report["elapsed_ms"]
        .as_f64()
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .ok_or_else(|| format!("a reload report without elapsed_ms: {report}"))
}

/// Swaps between the component and the keep-all build (each from the
/// module cache once it has been compiled), then to copies of the
/// component never seen before (compiled during the reload), each time
/// back to the component. Returns (cached, compiled, notes).
fn module_swaps(env: &Env, server: &mut Server) -> Result<(Swaps, Swaps, Vec<String>), String> {
    let component = read(&env.wasm)?;
    let mut cached = Swaps::default();
    let mut compiled = Swaps::default();
    let mut notes = Vec::new();
    let mut one = |bytes: &[u8], cached: &mut Swaps, compiled: &mut Swaps| {
        let was_cached = in_cache(&env.cache_dir, &digest(bytes));
        let swap = server.swap_module(bytes);
        if was_cached { cached.record(swap) } else { compiled.record(swap) }
    };
    match &env.keep_all {
        Some(path) => {
            let keep_all = read(path)?;
            notes.push(format!(
                "module swaps: the component ({} KiB) <-> {} ({} KiB), {MODULE_SWAPS} swaps, then each compiled \
                 one and back; a module not yet in the cache (e.g. a freshly built keep-all) counts as compiled",
                component.len() / 1024,
                path.display(),
                keep_all.len() / 1024
            ));
            for i in 0..MODULE_SWAPS {
                let bytes = if i % 2 == 0 { &keep_all } else { &component };
                one(bytes, &mut cached, &mut compiled);
                std::thread::sleep(IDLE_GAP);
            }
            if MODULE_SWAPS % 2 == 1 {
                one(&component, &mut cached, &mut compiled);
            }
        }
        None => notes.push(
            "module swaps from the cache skipped: no keep-all component (run `make fixtures`, or set \
             OTEL_AUDIT_WASM_KEEP_ALL)"
                .to_owned(),
        ),
    }
    // Copies of the component with a custom section of their own: a new
    // digest each, so not in the cache.
    let mut fresh = Vec::new();
    for i in 0..COMPILED_SWAPS {
        let copy = with_custom_section(&component, "otel-audit-bench", format!("{}-{i}", unique()).as_bytes());
        fresh.push(digest(&copy));
        one(&copy, &mut cached, &mut compiled);
        one(&component, &mut cached, &mut compiled);
    }
    notes.push(format!(
        "compiled: {COMPILED_SWAPS} swaps to copies of the component with a unique custom section (a new digest, so \
         compiled by the reload on {} cores); their cache entries are removed afterwards",
        cores()
    ));
    for digest in fresh {
        remove_from_cache(&env.cache_dir, &digest);
    }
    Ok((cached, compiled, notes))
}

// ---- swaps and their figures ----

/// One swap: the trigger-to-serving time the bench saw and the server's.
struct Swap {
    wall: Duration,
    server: Duration,
}

#[derive(Default)]
struct Swaps {
    wall: Vec<Duration>,
    server: Vec<Duration>,
    failed: usize,
    first_error: Option<String>,
}

impl Swaps {
    fn record(&mut self, swap: Result<Swap, String>) {
        match swap {
            Ok(swap) => {
                self.wall.push(swap.wall);
                self.server.push(swap.server);
            }
            Err(error) => {
                self.failed += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }

    fn done(&self) -> usize {
        self.wall.len()
    }

    /// Done, and failed if any.
    fn count(&self) -> String {
        match self.failed {
            0 => self.done().to_string(),
            failed => format!("{}+{failed} failed", self.done()),
        }
    }

    fn row(&self, name: &str) {
        let mut wall = self.wall.clone();
        let mut server = self.server.clone();
        wall.sort_unstable();
        server.sort_unstable();
        println!(
            "{:<42} | {:>5} | {:>7.1} {:>7.1} {:>7.1} | {:>13.1}",
            name,
            self.count(),
            millis(percentile(&wall, 0.50)),
            millis(percentile(&wall, 0.99)),
            millis(wall.last().copied()),
            millis(percentile(&server, 0.50)),
        );
    }
}

// ---- files ----

/// The shipped policy with its spans filter narrowed to `actions`.
fn narrowed(shipped: &str, actions: &str) -> Result<String, String> {
    const ANY: &str = "value: \".*\"";
    let Some(at) = shipped.find("spans:").and_then(|spans| shipped[spans..].find(ANY).map(|i| spans + i)) else {
        return Err(format!("{POLICY} has no spans filter with {ANY}: update the bench's policies"));
    };
    Ok(format!("{}value: \"{actions}\"{}", &shipped[..at], &shipped[at + ANY.len()..]))
}

/// Writes `bytes` beside `path` and renames them onto it; returns when
/// the rename was made.
fn install(path: &Path, bytes: &[u8]) -> Result<Instant, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.bench-tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let renamed = Instant::now();
    std::fs::rename(&tmp, path).map_err(|e| format!("rename to {}: {e}", path.display()))?;
    Ok(renamed)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `sha256:<hex>` of bytes: a module's digest.
fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A policy's digest: `sha256:<hex>` of the file's bytes.
fn policy_digest(text: &str) -> String {
    digest(text.as_bytes())
}

fn short(digest: &str) -> String {
    format!("({}...)", &digest[..digest.len().min(19)])
}

/// Whether the module cache holds a precompiled module of this digest.
fn in_cache(cache_dir: &Path, digest: &str) -> bool {
    cache_entries(cache_dir, digest).next().is_some()
}

fn remove_from_cache(cache_dir: &Path, digest: &str) {
    for entry in cache_entries(cache_dir, digest) {
        let _ = std::fs::remove_file(entry);
    }
}

/// The cache's files for a digest (`<hex>-<engine hash>.cwasm`).
fn cache_entries(cache_dir: &Path, digest: &str) -> impl Iterator<Item = PathBuf> {
    let prefix = format!("{}-", digest.trim_start_matches("sha256:"));
    std::fs::read_dir(cache_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(move |e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
}

/// The component with a custom section appended (valid anywhere in a
/// component): the same code under another digest.
fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb128(mut value: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut content = Vec::new();
    leb128(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0);
    leb128(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// Unique for this run: the pid and the time.
fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

/// `otel-audit verify` of a store with the bench's public key: its summary
/// line, or why it failed.
fn verify(env: &Env, store: &Path) -> Result<String, String> {
    let out = Command::new(&env.binary)
        .arg("verify")
        .arg(store)
        .arg("--public-key")
        .arg(env.key.with_extension("pub"))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", env.binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let last = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_owned();
    if out.status.success() { Ok(last) } else { Err(format!("exit {}: {text}", out.status)) }
}
