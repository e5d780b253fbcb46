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

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use otel_audit::exporter::client::{Client, ClientOptions, Destination};
use otel_audit::loadgen::{self, BatchSpec};
use otel_audit::otlp::Signal;
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
/// Per-request timeout of the clients.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A client that got an error waits this long before its next request,
/// as an OTLP exporter backs off on a retryable error.
const ERROR_BACKOFF: Duration = Duration::from_millis(20);
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
            server_cpu: process_cpu(pid, env),
            threads: thread_cpu(pid, env),
            chain_sched: sched(pid, "chain-"),
            loadgen_cpu: stat_cpu(Path::new("/proc/self/stat"), env).map_or(0.0, |(_, s)| s),
            system_cpu: system_cpu(env),
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

/// What one client did inside the window.
#[derive(Default)]
struct ClientStats {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
}

/// Sends batches back to back until `end`; counts what is answered inside
/// [`window_start`, `end`].
async fn client_loop(
    endpoint: String,
    pool: Arc<Vec<Bytes>>,
    index: usize,
    clients: usize,
    window_start: Instant,
    end: Instant,
) -> Result<ClientStats, String> {
    let options = ClientOptions { headers: Vec::new(), gzip: false, timeout: TIMEOUT };
    let client = Client::new(&Destination::Grpc { endpoint }, options)?;
    let mut stats = ClientStats::default();
    let mut next = index;
    loop {
        let sent = Instant::now();
        if sent >= end {
            return Ok(stats);
        }
        let payload = pool[next % pool.len()].clone();
        next += clients;
        let result = client.send(Signal::Traces, payload).await;
        let answered = Instant::now();
        let counted = answered >= window_start && answered <= end;
        match result {
            Ok(delivered) if delivered.rejected == 0 => {
                if counted {
                    stats.ok += 1;
                    stats.latencies.push(answered - sent);
                }
            }
            Ok(delivered) => {
                if counted {
                    stats.errors += 1;
                    stats.first_error.get_or_insert_with(|| {
                        format!("partial success: {} rejected: {}", delivered.rejected, delivered.message)
                    });
                }
            }
            Err(error) => {
                if counted {
                    stats.errors += 1;
                    stats.first_error.get_or_insert_with(|| error.to_string());
                }
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
}

// ---- the servers ----

/// A started server process; killed if dropped without `stop`.
struct Process {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> Result<Self, String> {
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let stderr = file.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        let child = command
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", command.get_program()))?;
        Ok(Process { name, child: Some(child), log })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails with the log's tail if the process has exited.
    fn check_running(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else { return Err(format!("{} is not running", self.name)) };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{} exited with {status}:\n{}", self.name, self.log_tail())),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then wait (at most 60 s) for the exit.
    fn stop(mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{} ignored SIGTERM for 60 s:\n{}", self.name, self.log_tail()));
                }
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Ports {
    grpc: u16,
    metrics: u16,
    health: u16,
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Starts `otel-audit serve` with a fresh store in `dir/store` and waits
/// until its health endpoint says it serves.
fn start_otel_audit(env: &Env, dir: &Path) -> Result<(Process, Ports, PathBuf), String> {
    let ports = Ports { grpc: free_port()?, metrics: free_port()?, health: free_port()? };
    let store = dir.join("store");
    let config = dir.join("otel-audit.yaml");
    std::fs::write(&config, server_config(env, &ports, &store)).map_err(|e| format!("{}: {e}", config.display()))?;
    let mut command = Command::new(&env.binary);
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("OTEL_AUDIT_CACHE_DIR", &env.cache_dir)
        .env("OTEL_AUDIT_LOG", "info");
    let mut process = Process::spawn("otel-audit serve", command, dir.join("server.log"))?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        process.check_running()?;
        if http_get(ports.health, "/").is_some_and(|(code, _)| code == 200) {
            return Ok((process, ports, store));
        }
        if Instant::now() > deadline {
            return Err(format!("otel-audit serve not healthy after 90 s:\n{}", process.log_tail()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server's config: the shipped default's store and checkpoint
/// settings (collector-config/otel-audit.yaml), on free loopback ports.
fn server_config(env: &Env, ports: &Ports, store: &Path) -> String {
    let quoted = |path: &Path| serde_json::to_string(&path.display().to_string()).unwrap_or_default();
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

/// A checkpoint signing key for every run's server.
fn keygen(binary: &Path, dir: &Path) -> Result<PathBuf, String> {
    let out = Command::new(binary)
        .args(["keygen", "--name", "bench", "--out"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if !out.status.success() {
        return Err(format!("keygen: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(dir.join("bench.key"))
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

/// A plain HTTP/1.0 GET on loopback: (status, body), or None if nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
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
    let (code, body) = http_get(port, "/metrics").ok_or("the metrics endpoint did not answer")?;
    if code != 200 {
        return Err(format!("GET /metrics: HTTP {code}"));
    }
    let mut sums: HashMap<&str, f64> = HashMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        if let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *sums.entry(name).or_default() += value;
        }
    }
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

/// (comm, user + system CPU seconds) from a `/proc/.../stat` file.
fn stat_cpu(path: &Path, env: &Env) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    // Fields after the comm start at field 3 (state); utime and stime are 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((comm, ticks as f64 / env.clock_ticks))
}

/// CPU seconds of a whole process (every thread, live or exited).
fn process_cpu(pid: u32, env: &Env) -> f64 {
    stat_cpu(Path::new(&format!("/proc/{pid}/stat")), env).map_or(0.0, |(_, s)| s)
}

/// Busy CPU seconds of the whole machine (every core, every process).
fn system_cpu(env: &Env) -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    ticks as f64 / env.clock_ticks
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
        if let Some((comm, seconds)) = stat_cpu(&task.path().join("stat"), env) {
            let entry = by_name.entry(comm).or_default();
            entry.0 += 1;
            entry.1 += seconds;
        }
    }
    by_name
}

/// Clock ticks per second of `/proc` CPU times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
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

// ---- where the store goes ----

/// The system temp directory if it is on the repository's file system (a
/// store on tmpfs would measure memory, not fsync), else `target/bench-tmp`.
fn scratch_parent(root: &Path) -> Result<PathBuf, String> {
    let temp = std::env::temp_dir();
    let device = |path: &Path| std::fs::metadata(path).map(|m| m.dev()).ok();
    if device(&temp).is_some() && device(&temp) == device(root) {
        return Ok(temp);
    }
    let local = root.join("target/bench-tmp");
    std::fs::create_dir_all(&local).map_err(|e| format!("{}: {e}", local.display()))?;
    Ok(local)
}

/// The file system type of the mount holding `path`, from /proc/self/mounts.
fn fs_type(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, mount, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount).then(|| (mount.len(), format!("{kind} on {device}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "file system unknown".to_owned(), |(_, kind)| kind)
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

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn millis(value: Option<Duration>) -> f64 {
    value.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// `1234567.8` as `1,234,568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
