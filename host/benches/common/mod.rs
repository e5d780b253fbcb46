//! What the benches that drive the real `otel-audit serve` share (`e2e`,
//! `reload`): server processes, loopback HTTP, closed-loop OTLP/gRPC
//! clients, scratch directories and the figures' formatting. Each bench is
//! its own binary and uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use otel_audit::exporter::client::{Client, ClientOptions, Destination};
use otel_audit::otlp::Signal;

/// Per-request timeout of the clients.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// A client that got an error waits this long before its next request,
/// as an OTLP exporter backs off on a retryable error.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(20);

// ---- the load ----

/// What one client did.
#[derive(Default)]
pub struct ClientStats {
    /// Requests answered OK inside the window.
    pub ok: u64,
    /// Requests not answered OK inside the window.
    pub errors: u64,
    /// Requests not answered OK before or after the window (warm-up, the
    /// last one in flight).
    pub errors_outside: u64,
    /// The first error inside the window, and the first outside it.
    pub first_error: Option<String>,
    pub first_error_outside: Option<String>,
    /// Latencies of the OK requests inside the window, and when each was
    /// answered.
    pub latencies: Vec<Duration>,
    pub answered: Vec<Instant>,
    /// When each error inside the window came.
    pub failed_at: Vec<Instant>,
}

/// Sends batches back to back over its own gRPC connection until `end`;
/// counts what is answered inside [`window_start`, `end`].
pub async fn client_loop(
    endpoint: String,
    pool: Arc<Vec<Bytes>>,
    index: usize,
    clients: usize,
    window_start: Instant,
    end: Instant,
) -> Result<ClientStats, String> {
    let options = ClientOptions { headers: Vec::new(), gzip: false, timeout: TIMEOUT };
    let client = Client::new(&Destination::Grpc { endpoint }, options).map_err(|e| e.to_string())?;
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
        let error = match result {
            Ok(delivered) if delivered.rejected == 0 => {
                if counted {
                    stats.ok += 1;
                    stats.latencies.push(answered - sent);
                    stats.answered.push(answered);
                }
                continue;
            }
            Ok(delivered) => format!("partial success: {} rejected: {}", delivered.rejected, delivered.message),
            Err(error) => {
                tokio::time::sleep(ERROR_BACKOFF).await;
                error.to_string()
            }
        };
        if counted {
            stats.errors += 1;
            stats.failed_at.push(answered);
            stats.first_error.get_or_insert(error);
        } else {
            stats.errors_outside += 1;
            stats.first_error_outside.get_or_insert(error);
        }
    }
}

// ---- the servers ----

/// A started server process; killed if dropped without `stop`.
pub struct Process {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    pub fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> Result<Self, String> {
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let stderr = file.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        let child = command
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", command.get_program()))?;
        Ok(Process { name, child: Some(child), log })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else { return Err(format!("{} is not running", self.name)) };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{} exited with {status}:\n{}", self.name, self.log_tail())),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then wait (at most 60 s) for the exit.
    pub fn stop(mut self) -> Result<(), String> {
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

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Starts `otel-audit serve --config config` (log in `log`) with the module
/// cache `cache_dir` and waits until the health endpoint on `health_port`
/// says it serves.
pub fn serve(
    binary: &Path,
    cache_dir: &Path,
    config: &Path,
    health_port: u16,
    log: PathBuf,
) -> Result<Process, String> {
    let mut command = Command::new(binary);
    command
        .args(["serve", "--config"])
        .arg(config)
        .env("OTEL_AUDIT_CACHE_DIR", cache_dir)
        .env("OTEL_AUDIT_LOG", "info");
    let mut process = Process::spawn("otel-audit serve", command, log)?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        process.check_running()?;
        if http_get(health_port, "/").is_some_and(|(code, _)| code == 200) {
            return Ok(process);
        }
        if Instant::now() > deadline {
            return Err(format!("otel-audit serve not healthy after 90 s:\n{}", process.log_tail()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A checkpoint signing key (`dir/bench.key`, `dir/bench.pub`) for the
/// servers.
pub fn keygen(binary: &Path, dir: &Path) -> Result<PathBuf, String> {
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

/// A path as a YAML (JSON) string.
pub fn quoted(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).unwrap_or_default()
}

// ---- loopback HTTP ----

/// A plain HTTP/1.0 GET on loopback: (status, body), or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http(port, "GET", path, Duration::from_secs(5))
}

/// A plain HTTP/1.0 request without a body on loopback, answered within
/// `timeout`: (status, body), or None if nothing answers.
pub fn http(port: u16, method: &str, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let length = if method == "GET" { "" } else { "Content-Length: 0\r\n" };
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{length}\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}

/// Reads `/metrics` (Prometheus text) and sums each series over its labels.
pub fn scrape(port: u16) -> Result<HashMap<String, f64>, String> {
    let (code, body) = http_get(port, "/metrics").ok_or("the metrics endpoint did not answer")?;
    if code != 200 {
        return Err(format!("GET /metrics: HTTP {code}"));
    }
    let mut sums: HashMap<String, f64> = HashMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        if let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *sums.entry(name.to_owned()).or_default() += value;
        }
    }
    Ok(sums)
}

// ---- CPU times ----

/// (comm, user + system CPU seconds) from a `/proc/.../stat` file.
pub fn stat_cpu(path: &Path, clock_ticks: f64) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    // Fields after the comm start at field 3 (state); utime and stime are 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((comm, ticks as f64 / clock_ticks))
}

/// CPU seconds of a whole process (every thread, live or exited).
pub fn process_cpu(pid: u32, clock_ticks: f64) -> f64 {
    stat_cpu(Path::new(&format!("/proc/{pid}/stat")), clock_ticks).map_or(0.0, |(_, s)| s)
}

/// Busy CPU seconds of the whole machine (every core, every process).
pub fn system_cpu(clock_ticks: f64) -> f64 {
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
    ticks as f64 / clock_ticks
}

/// Clock ticks per second of `/proc` CPU times.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

// ---- where the store goes ----

/// The system temp directory if it is on the repository's file system (a
/// store on tmpfs would measure memory, not fsync), else `target/bench-tmp`.
pub fn scratch_parent(root: &Path) -> Result<PathBuf, String> {
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
pub fn fs_type(path: &Path) -> String {
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

// ---- the figures ----

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn millis(value: Option<Duration>) -> f64 {
    value.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(value: f64) -> String {
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
