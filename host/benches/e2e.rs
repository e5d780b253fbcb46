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
//! Knobs: `OTEL_AUDIT_WASM` (the component), `OTEL_AUDIT_CACHE_DIR` (module
//! cache), `BENCH_E2E_SECONDS` (measured time per run, default 10),
//! `BENCH_E2E_SHARDS` (chains per pipeline, default 1 as shipped).

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    Process, client_loop, clock_ticks, cores, free_port, fs_type, keygen, millis, percentile, process_cpu, quoted,
    scratch_parent, serve, stat_cpu, system_cpu, thousands,
};
use otel_audit::loadgen::{self, BatchSpec};
use prost::Message;

/// Concurrent clients of each scenario.
const CLIENTS: [usize; 2] = [8, 32];
/// Audit mixes: typical, and everything kept (the store's worst case).
const MIXES: [(&str, f64); 2] = [("5 %", 0.05), ("100 %", 1.0)];
/// Spans per request.
const SPANS: usize = 100;
/// Attributes per span.
const ATTRIBUTES: usize = 10;
/// Distinct pre-encoded batches the clients rotate over.
const POOL: u64 = 64;
/// Load before the measured window (connections, caches, first segment).
const WARMUP: Duration = Duration::from_secs(2);
/// The shipped policy the server runs.
const POLICY: &str = "collector-config/policies/soc2-audit.yaml";

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

/// Where everything is, resolved once.
struct Env {
    binary: PathBuf,
    wasm: PathBuf,
    cache_dir: PathBuf,
    policy: PathBuf,
    rotel: PathBuf,
    scratch: PathBuf,
    key: PathBuf,
    clock_ticks: f64,
    shards: u32,
}

fn run() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("host/ has no parent")?.to_path_buf();
    let shards =
        std::env::var("BENCH_E2E_SHARDS").ok().and_then(|s| s.parse::<u32>().ok()).filter(|n| *n > 0).unwrap_or(1);
    let measure = std::env::var("BENCH_E2E_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(10), Duration::from_secs_f64);
    let binary = root.join("target/release/otel-audit");
    let wasm = std::env::var_os("OTEL_AUDIT_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/wasm32-wasip2/wasm/audit_processor.wasm"));
    for (path, what) in [(&binary, "the release binary"), (&wasm, "the component")] {
        if !path.exists() {
            return Err(format!("{what} {} does not exist: run `make bench` (it builds both)", path.display()));
        }
    }
    let cache_dir =
        std::env::var_os("OTEL_AUDIT_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target/module-cache"));
    let rotel = rotel_path(&root)?;
    let scratch_parent = scratch_parent(&root)?;
    let scratch = tempfile::Builder::new()
        .prefix("otel-audit-e2e-")
        .tempdir_in(&scratch_parent)
        .map_err(|e| format!("cannot create a scratch directory in {}: {e}", scratch_parent.display()))?;
    let key = keygen(&binary, scratch.path())?;
    let env = Env {
        binary,
        wasm,
        cache_dir,
        policy: root.join(POLICY),
        rotel,
        scratch: scratch.path().to_owned(),
        key,
        clock_ticks: clock_ticks(),
        shards,
    };
    let cores = cores();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the load generator's runtime: {e}"))?;

    println!("otel-audit end-to-end benchmark: OTLP/gRPC -> otel-audit serve -> durable store (fsync) -> OK");
    println!("  reproduce: make bench   (this part alone: cargo bench -p otel-audit --bench e2e)");
    println!("  machine:   {cores} cores; load generator and server share them");
    println!(
        "  server:    {} serve; policy {POLICY}; {shards} chain(s) per pipeline (BENCH_E2E_SHARDS)",
        env.binary.display()
    );
    println!("  store:     {} ({})", env.scratch.display(), fs_type(&env.scratch));
    println!("  baseline:  {} ({}): OTLP passthrough, blackhole exporter", env.rotel.display(), rotel_version(&env));
    println!(
        "  load:      closed loop, one gRPC connection per client, {SPANS}-span batches ({ATTRIBUTES} attributes, \
         varied values), {POOL} pre-encoded per mix; warm-up {:.0} s, measured {:.0} s per run",
        WARMUP.as_secs_f64(),
        measure.as_secs_f64()
    );
    println!();

    let total = MIXES.len() * CLIENTS.len() * 2;
    let mut results = Vec::new();
    for (mix, audit_ratio) in MIXES {
        let pool: Arc<Vec<Bytes>> = Arc::new(
            (1..=POOL)
                .map(|seed| {
                    let spec = BatchSpec { records: SPANS, audit_ratio, attributes: ATTRIBUTES, varied: true, seed };
                    Bytes::from(loadgen::traces(&spec).encode_to_vec())
                })
                .collect(),
        );
        let request_bytes = pool.iter().map(Bytes::len).sum::<usize>() / pool.len();
        for clients in CLIENTS {
            for target in [Target::Rotel, Target::OtelAudit] {
                eprintln!(
                    "  [{}/{total}] {} {mix} audit, {clients} clients ({} KiB requests)",
                    results.len() + 1,
                    target.name(),
                    request_bytes / 1024
                );
                let dir = env.scratch.join(format!("run-{}", results.len() + 1));
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let result = one_run(&env, &runtime, target, &dir, clients, &pool, measure)?;
                results.push(Row { mix, clients, target, result });
            }
        }
    }
    println!();
    print_tables(&results, env.shards);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Rotel,
    OtelAudit,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Rotel => "rotel",
            Target::OtelAudit => "otel-audit",
        }
    }
}

struct Row {
    mix: &'static str,
    clients: usize,
    target: Target,
    result: RunResult,
}

/// What one run measured.
struct RunResult {
    window: Duration,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    /// Latencies of the OK requests, sorted.
    latencies: Vec<Duration>,
    /// Server counters over the window (otel-audit only).
    counters: Option<Counters>,
    /// Disk bytes of the store per stored record, after the server stopped.
    store_bytes_per_record: Option<f64>,
    /// VmHWM, bytes.
    peak_rss: u64,
    /// CPU seconds over the window of the server, of its threads by name
    /// (name, count, seconds), of the bench process, and of the whole machine.
    server_cpu: f64,
    threads: Vec<(String, usize, f64)>,
    loadgen_cpu: f64,
    system_cpu: f64,
    /// The busiest chain worker thread's scheduler times (schedstat).
    chain_sched: Sched,
}

/// What the bench reads at the edges of the measured window.
struct Sample {
    counters: Option<Counters>,
    server_cpu: f64,
    threads: BTreeMap<String, (usize, f64)>,
    chain_sched: BTreeMap<String, Sched>,
    loadgen_cpu: f64,
    system_cpu: f64,
}

impl Sample {
    fn take(pid: u32, metrics_port: Option<u16>, env: &Env) -> Result<Sample, String> {
        Ok(Sample {
            counters: metrics_port.map(scrape_metrics).transpose()?,
            server_cpu: process_cpu(pid, env.clock_ticks),
            threads: thread_cpu(pid, env),
            chain_sched: sched(pid, "chain-"),
            loadgen_cpu: stat_cpu(Path::new("/proc/self/stat"), env.clock_ticks).map_or(0.0, |(_, s)| s),
            system_cpu: system_cpu(env.clock_ticks),
        })
    }
}

fn one_run(
    env: &Env,
    runtime: &tokio::runtime::Runtime,
    target: Target,
    dir: &Path,
    clients: usize,
    pool: &Arc<Vec<Bytes>>,
    measure: Duration,
) -> Result<RunResult, String> {
    let (process, endpoint, metrics_port, store) = match target {
        Target::Rotel => {
            let (process, grpc) = start_rotel(env, dir)?;
            (process, format!("http://127.0.0.1:{grpc}"), None, None)
        }
        Target::OtelAudit => {
            let (process, ports, store) = start_otel_audit(env, dir)?;
            (process, format!("http://127.0.0.1:{}", ports.grpc), Some(ports.metrics), Some(store))
        }
    };
    let pid = process.pid();

    let start = Instant::now();
    let window_start = start + WARMUP;
    let end = window_start + measure;
    let tasks: Vec<_> = (0..clients)
        .map(|index| runtime.spawn(client_loop(endpoint.clone(), pool.clone(), index, clients, window_start, end)))
        .collect();
    std::thread::sleep(window_start.saturating_duration_since(Instant::now()));
    let before = Sample::take(pid, metrics_port, env)?;
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let after = Sample::take(pid, metrics_port, env)?;

    let mut ok = 0;
    let mut errors = 0;
    let mut first_error = None;
    let mut latencies = Vec::new();
    for task in tasks {
        let stats = runtime.block_on(task).map_err(|e| format!("a client task failed: {e}"))??;
        ok += stats.ok;
        errors += stats.errors;
        first_error = first_error.or(stats.first_error);
        latencies.extend(stats.latencies);
    }
    latencies.sort_unstable();
    let last = metrics_port.map(scrape_metrics).transpose()?;
    let peak_rss = peak_rss(pid);
    process.stop()?;

    let counters = match (before.counters, after.counters) {
        (Some(b), Some(a)) => Some(a.minus(&b)),
        _ => None,
    };
    let store_bytes_per_record = match (&store, &last) {
        (Some(store), Some(last)) if last.stored_records > 0.0 => {
            let bytes = dir_bytes(store);
            // The stores of earlier runs would only fill the disk.
            let _ = std::fs::remove_dir_all(store);
            Some(bytes as f64 / last.stored_records)
        }
        _ => None,
    };
    let threads = after
        .threads
        .iter()
        .map(|(name, (count, seconds))| {
            let before = before.threads.get(name).map_or(0.0, |(_, s)| *s);
            (name.clone(), *count, seconds - before)
        })
        .collect();
    Ok(RunResult {
        window: measure,
        ok,
        errors,
        first_error,
        latencies,
        counters,
        store_bytes_per_record,
        peak_rss,
        server_cpu: after.server_cpu - before.server_cpu,
        threads,
        loadgen_cpu: after.loadgen_cpu - before.loadgen_cpu,
        system_cpu: after.system_cpu - before.system_cpu,
        chain_sched: after
            .chain_sched
            .iter()
            .map(|(tid, a)| {
                let b = before.chain_sched.get(tid).copied().unwrap_or_default();
                Sched { running: a.running - b.running, waiting: a.waiting - b.waiting }
            })
            .max_by(|x, y| x.running.total_cmp(&y.running))
            .unwrap_or_default(),
    })
}

// ---- the servers ----

struct Ports {
    grpc: u16,
    metrics: u16,
    health: u16,
}

/// Starts `otel-audit serve` with a fresh store in `dir/store` and waits
/// until its health endpoint says it serves.
fn start_otel_audit(env: &Env, dir: &Path) -> Result<(Process, Ports, PathBuf), String> {
    let ports = Ports { grpc: free_port()?, metrics: free_port()?, health: free_port()? };
    let store = dir.join("store");
    let config = dir.join("otel-audit.yaml");
    std::fs::write(&config, server_config(env, &ports, &store)).map_err(|e| format!("{}: {e}", config.display()))?;
    let process = serve(&env.binary, &env.cache_dir, &config, ports.health, dir.join("server.log"))?;
    Ok((process, ports, store))
}

/// The server's config: the shipped default's store and checkpoint
/// settings (collector-config/otel-audit.yaml), on free loopback ports.
fn server_config(env: &Env, ports: &Ports, store: &Path) -> String {
    format!(
        r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
processors:
  wasm/audit:
    module: {module}
    policy: {policy}
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
service:
  extensions: [health_check]
  pipelines:
    traces/audit:
      receivers: [otlp]
      processors: [wasm/audit]
      exporters: [auditstore]
      shards: {shards}
    logs/audit:
      receivers: [otlp]
      processors: [wasm/audit]
      exporters: [auditstore]
      shards: {shards}
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics}
"#,
        grpc = ports.grpc,
        health = ports.health,
        metrics = ports.metrics,
        module = quoted(&env.wasm),
        policy = quoted(&env.policy),
        store = quoted(store),
        key = quoted(&env.key),
        shards = env.shards,
    )
}

/// The rotel binary shipped in the venv's `rotel` wheel (`make venv`).
fn rotel_path(root: &Path) -> Result<PathBuf, String> {
    let python = root.join(".venv/bin/python");
    let out = Command::new(&python)
        .args(["-c", "import rotel.agent as a; print(a.Agent.agent_path)"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}; run `make venv` (make bench does)", python.display()))?;
    if !out.status.success() {
        return Err(format!("rotel is not installed in .venv: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn rotel_version(env: &Env) -> String {
    Command::new(&env.rotel)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Starts rotel as a passthrough and waits until its gRPC port accepts.
fn start_rotel(env: &Env, dir: &Path) -> Result<(Process, u16), String> {
    let (grpc, http) = (free_port()?, free_port()?);
    let mut command = Command::new(&env.rotel);
    command
        .args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
        .args(["--exporter", "blackhole", "--pid-file"])
        .arg(dir.join("rotel.pid"));
    let mut process = Process::spawn("rotel", command, dir.join("rotel.log"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        process.check_running()?;
        if TcpStream::connect(("127.0.0.1", grpc)).is_ok() {
            return Ok((process, grpc));
        }
        if Instant::now() > deadline {
            return Err(format!("rotel did not listen within 30 s:\n{}", process.log_tail()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- what the server reports ----

/// The server's counters (summed over chains and pipelines).
#[derive(Clone, Copy)]
struct Counters {
    received: f64,
    kept: f64,
    stored_records: f64,
    stored_bytes: f64,
    commits: f64,
    fsync_seconds: f64,
    committed_requests: f64,
    checkpoints: f64,
}

impl Counters {
    fn minus(&self, earlier: &Counters) -> Counters {
        Counters {
            received: self.received - earlier.received,
            kept: self.kept - earlier.kept,
            stored_records: self.stored_records - earlier.stored_records,
            stored_bytes: self.stored_bytes - earlier.stored_bytes,
            commits: self.commits - earlier.commits,
            fsync_seconds: self.fsync_seconds - earlier.fsync_seconds,
            committed_requests: self.committed_requests - earlier.committed_requests,
            checkpoints: self.checkpoints - earlier.checkpoints,
        }
    }
}

/// Reads `/metrics` (Prometheus text) and sums each series over its labels.
fn scrape_metrics(port: u16) -> Result<Counters, String> {
    let sums = common::scrape(port)?;
    let get = |name: &str| sums.get(name).copied().unwrap_or(0.0);
    Ok(Counters {
        received: get("otel_audit_received_records_total"),
        kept: get("otel_audit_kept_records_total"),
        stored_records: get("otel_audit_stored_records_total"),
        stored_bytes: get("otel_audit_stored_bytes_total"),
        commits: get("otel_audit_fsync_seconds_count"),
        fsync_seconds: get("otel_audit_fsync_seconds_sum"),
        committed_requests: get("otel_audit_group_commit_requests_sum"),
        checkpoints: get("otel_audit_checkpoints_total"),
    })
}

/// Peak resident set (VmHWM) in bytes, 0 if unreadable.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Seconds on a CPU and seconds runnable but waiting for one.
#[derive(Clone, Copy, Default)]
struct Sched {
    running: f64,
    waiting: f64,
}

/// Scheduler times of each thread whose name starts with `prefix`, by
/// thread id (`/proc/<pid>/task/<tid>/schedstat`: run ns, run-queue wait ns).
fn sched(pid: u32, prefix: &str) -> BTreeMap<String, Sched> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return threads };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let mut fields = text.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0) as f64 / 1e9);
        let sched = Sched { running: fields.next().unwrap_or(0.0), waiting: fields.next().unwrap_or(0.0) };
        threads.insert(task.file_name().to_string_lossy().into_owned(), sched);
    }
    threads
}

/// CPU seconds by thread name: (threads with that name, seconds).
fn thread_cpu(pid: u32, env: &Env) -> BTreeMap<String, (usize, f64)> {
    let mut by_name: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by_name };
    for task in tasks.flatten() {
        if let Some((comm, seconds)) = stat_cpu(&task.path().join("stat"), env.clock_ticks) {
            let entry = by_name.entry(comm).or_default();
            entry.0 += 1;
            entry.1 += seconds;
        }
    }
    by_name
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

// ---- the report ----

fn print_tables(rows: &[Row], shards: u32) {
    println!(
        "{:<6} {:>7} {:<10} | {:>9} {:>9} {:>7} | {:>7} {:>7} {:>7} | {:>6} | {:>8} {:>6} | {:>8}",
        "audit",
        "clients",
        "server",
        "spans/s",
        "stored/s",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "errors",
        "peak RSS",
        "B/rec",
        "vs rotel"
    );
    println!("{}", "-".repeat(122));
    for row in rows {
        let r = &row.result;
        let seconds = r.window.as_secs_f64();
        let spans = r.ok as f64 * SPANS as f64 / seconds;
        let stored = r.counters.map_or("-".to_owned(), |c| thousands(c.stored_records / seconds));
        let ratio = match row.target {
            Target::Rotel => "1".to_owned(),
            Target::OtelAudit => rows
                .iter()
                .find(|b| b.target == Target::Rotel && b.mix == row.mix && b.clients == row.clients)
                .map(|b| b.result.ok as f64 / b.result.window.as_secs_f64())
                .filter(|base| *base > 0.0)
                .map_or("-".to_owned(), |base| format!("{:.2}", r.ok as f64 / seconds / base)),
        };
        println!(
            "{:<6} {:>7} {:<10} | {:>9} {:>9} {:>7} | {:>7.2} {:>7.2} {:>7.2} | {:>6} | {:>4} MiB {:>6} | {:>8}",
            row.mix,
            row.clients,
            row.target.name(),
            thousands(spans),
            stored,
            thousands(r.ok as f64 / seconds),
            millis(percentile(&r.latencies, 0.50)),
            millis(percentile(&r.latencies, 0.99)),
            millis(percentile(&r.latencies, 0.999)),
            r.errors,
            r.peak_rss >> 20,
            r.store_bytes_per_record.map_or("-".to_owned(), |b| format!("{b:.0}")),
            ratio,
        );
    }
    println!();
    println!(
        "spans/s: spans in requests answered OK (received, kept or dropped); stored/s: records the store appended \
         (server metrics); req/s: OK requests; latency: send to OK at the client; errors: requests not answered OK; \
         peak RSS: the server's VmHWM; B/rec: store directory bytes per record (segments, checkpoints); \
         vs rotel: OK requests/s over rotel's with the same load. rotel acknowledges before it exports and keeps \
         nothing; otel-audit acknowledges after processing and fsync."
    );
    for row in rows.iter().filter(|r| r.result.first_error.is_some()) {
        println!(
            "  first error, {} {} audit {} clients: {}",
            row.target.name(),
            row.mix,
            row.clients,
            row.result.first_error.as_deref().unwrap_or_default()
        );
    }

    println!();
    println!(
        "Where the time goes, as % of one core over the measured window ({} cores: the machine has {} %)",
        cores(),
        100 * cores()
    );
    println!(
        "{:<6} {:>7} {:<10} | {:>6} {:>7} {:>6} | {:>9} {:>8} {:>8} {:>6} | {:>5} {:>5} {:>5} {:>5} | server threads",
        "audit",
        "clients",
        "server",
        "server",
        "loadgen",
        "other",
        "commits/s",
        "req/comm",
        "fsync ms",
        "ckpt/s",
        "run",
        "queue",
        "off",
        "fsync",
    );
    println!("{}", "-".repeat(140));
    for row in rows {
        let r = &row.result;
        let seconds = r.window.as_secs_f64();
        let percent = |cpu: f64| format!("{:.0}%", 100.0 * cpu / seconds);
        let other = (r.system_cpu - r.server_cpu - r.loadgen_cpu).max(0.0);
        let (store, chain) = match r.counters {
            Some(c) if c.commits > 0.0 => {
                let sched = r.chain_sched;
                let off = (seconds - sched.running - sched.waiting).max(0.0);
                (
                    format!(
                        "{:>9.0} {:>8.1} {:>8.2} {:>6.0}",
                        c.commits / seconds,
                        c.committed_requests / c.commits,
                        1e3 * c.fsync_seconds / c.commits,
                        c.checkpoints / seconds
                    ),
                    format!(
                        "{:>5} {:>5} {:>5} {:>5}",
                        percent(sched.running),
                        percent(sched.waiting),
                        percent(off),
                        percent(c.fsync_seconds / f64::from(shards))
                    ),
                )
            }
            _ => (
                format!("{:>9} {:>8} {:>8} {:>6}", "-", "-", "-", "-"),
                format!("{:>5} {:>5} {:>5} {:>5}", "-", "-", "-", "-"),
            ),
        };
        let mut threads: Vec<&(String, usize, f64)> = r.threads.iter().filter(|t| t.2 > 0.005 * seconds).collect();
        threads.sort_by(|a, b| b.2.total_cmp(&a.2));
        let threads: Vec<String> = threads
            .iter()
            .take(3)
            .map(|(name, count, cpu)| {
                if *count > 1 {
                    format!("{name} x{count}: {}", percent(*cpu))
                } else {
                    format!("{name}: {}", percent(*cpu))
                }
            })
            .collect();
        println!(
            "{:<6} {:>7} {:<10} | {:>6} {:>7} {:>6} | {store} | {chain} | {}",
            row.mix,
            row.clients,
            row.target.name(),
            percent(r.server_cpu),
            percent(r.loadgen_cpu),
            percent(other),
            threads.join(", ")
        );
    }
    println!();
    println!(
        "server / loadgen: CPU of the server and of this bench process; other: every other process on the machine \
         (noise: a busy machine lowers every figure above). commits/s: group commits with records, one fsync each; \
         req/comm: requests per group commit; fsync ms: mean group-commit fsync; ckpt/s: signed checkpoints (each \
         also fsyncs). run / queue / off: the busiest chain worker thread (it processes and commits serially) on a CPU, \
         runnable but waiting for one, and off CPU (in fsync, or idle waiting for requests); fsync: its wall time \
         in group-commit fsync (overlapping the others). off near fsync: the worker never waits for work, it is the \
         bottleneck."
    );
    let disturbed: Vec<String> = rows
        .iter()
        .filter(|r| {
            r.result.system_cpu - r.result.server_cpu - r.result.loadgen_cpu > 0.2 * r.result.window.as_secs_f64()
        })
        .map(|r| format!("{} {} audit {} clients", r.target.name(), r.mix, r.clients))
        .collect();
    if !disturbed.is_empty() {
        println!(
            "  WARNING: other processes used over 20 % of a core during: {}; those figures are low, rerun on an idle machine",
            disturbed.join("; ")
        );
    }
    for row in rows.iter().filter(|r| r.result.counters.is_some()) {
        if let Some(c) = row.result.counters {
            println!(
                "  {} audit, {} clients: kept {:.1} % of {} spans received in the window; {:.0} bytes per record appended",
                row.mix,
                row.clients,
                100.0 * c.kept / c.received.max(1.0),
                thousands(c.received),
                c.stored_bytes / c.stored_records.max(1.0)
            );
        }
    }
}
