//! Runs the real `otel-audit serve` binary for end-to-end tests and the
//! benches: writes a config with free loopback ports, starts it, waits
//! until its health endpoint says it serves, and stops it with SIGTERM or
//! SIGKILL.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use super::process::Process;

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_otel-audit")
}

/// A loopback port nobody listens on right now, and never handed out
/// before in this process (the kernel may offer a just-released port
/// again, and one setup takes several before anything binds them).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Writes a signing key pair named `name` into `dir`; returns (private, public) paths.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = Command::new(binary()).args(["keygen", "--name", name, "--out"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")))
}

/// What a test server runs with.
pub struct Setup {
    /// Working directory for the config, log and (by default) the store.
    pub dir: PathBuf,
    /// The policy file.
    pub policy: PathBuf,
    /// The component the processor runs (default: the built one).
    pub module: PathBuf,
    /// More keys of the processor, as YAML lines indented for it (e.g.
    /// `    tests: [...]\n    reload: {...}\n`).
    pub processor_extra: String,
    /// Extra keys of the `auditstore` exporter (indented four spaces, each
    /// line ending with a newline), e.g. `witnesses`.
    pub store_extra: String,
    /// Port of the `admin` extension (reloads and status); none by default.
    pub admin: Option<u16>,
    /// More keys of the admin extension (indented four spaces, each line
    /// ending with a newline), e.g. `tls` and `auth`.
    pub admin_extra: String,
    /// More keys of the gRPC and HTTP receivers (indented eight spaces,
    /// each line ending with a newline), e.g. `tls` and `auth`.
    pub receiver_extra: [String; 2],
    /// More extensions (YAML, indented for `extensions:`), and their ids
    /// to list in `service.extensions`.
    pub extensions: Vec<(String, String)>,
    /// Store directory.
    pub store: PathBuf,
    /// The store's instance id (the first part of every chain's name).
    pub instance_id: String,
    /// Signing key.
    pub key: PathBuf,
    /// Extra exporter definitions (YAML, indented for `exporters:`), and their ids.
    pub exporters: Vec<(String, String)>,
    /// The signals with an audit pipeline (`traces`, `logs`).
    pub signals: Vec<&'static str>,
    /// Chains per pipeline.
    pub shards: u32,
    /// `checkpoint:` block of the store.
    pub checkpoint: String,
    /// Segment size.
    pub segment_size: String,
    /// HTTP body limit.
    pub max_body: usize,
    /// Ports: grpc, http, metrics, health.
    pub ports: [u16; 4],
}

impl Setup {
    /// A setup in `dir` with the shipped soc2 policy and a fresh key.
    pub fn new(dir: &Path) -> Self {
        let (key, _) = keygen(dir, "test-signer");
        Setup {
            dir: dir.to_owned(),
            policy: super::root().join("collector-config/policies/soc2-audit.yaml"),
            module: super::wasm_path(),
            processor_extra: String::new(),
            store_extra: String::new(),
            admin: None,
            admin_extra: String::new(),
            receiver_extra: [String::new(), String::new()],
            extensions: Vec::new(),
            store: dir.join("store"),
            instance_id: "test".into(),
            key,
            exporters: Vec::new(),
            signals: vec!["traces", "logs"],
            shards: 1,
            checkpoint: "{every_records: 50, interval: 1s, heartbeat: 5s}".into(),
            segment_size: "64KiB".into(),
            max_body: 4 << 20,
            ports: [free_port(), free_port(), free_port(), free_port()],
        }
    }

    /// A setup in `dir` (created) whose policy keeps every record it
    /// receives: a downstream archive of an upstream's forwarded copies.
    pub fn keep_all(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let policy = dir.join("keep-all.yaml");
        std::fs::write(&policy, "# Keeps every record: an archive of forwarded copies.\naudit:\n  pipeline: archive\n")
            .unwrap();
        let mut setup = Setup::new(dir);
        setup.policy = policy;
        setup
    }

    /// The shipped default's store settings (collector-config/otel-audit.yaml):
    /// 64 MiB segments, a checkpoint every 10,000 records or 10 s, a heartbeat
    /// every 60 s.
    pub fn shipped_store(&mut self) {
        self.segment_size = "64MiB".into();
        self.checkpoint = "{every_records: 10000, interval: 10s, heartbeat: 60s}".into();
    }

    /// Runs `otel-audit verify` on the store with the setup's public key
    /// and fails the test unless the trail verifies.
    pub fn assert_verifies(&self) {
        let out = Command::new(binary())
            .arg("verify")
            .arg(&self.store)
            .arg("--public-key")
            .arg(self.public_key())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "verify: {text}");
    }

    /// The public key next to the signing key.
    pub fn public_key(&self) -> PathBuf {
        self.key.with_extension("pub")
    }

    /// OTLP/gRPC endpoint URI.
    pub fn grpc_uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    /// OTLP/HTTP base URI.
    pub fn http_uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[1])
    }

    /// The config text.
    pub fn config(&self) -> String {
        let [grpc, http, metrics, health] = self.ports;
        let mut exporters = String::new();
        let mut ids = vec!["auditstore".to_owned()];
        let (mut admin, mut extensions) = match self.admin {
            Some(port) => (
                format!("  admin:\n    endpoint: 127.0.0.1:{port}\n{}", self.admin_extra),
                "health_check, admin".to_owned(),
            ),
            None => (String::new(), "health_check".to_owned()),
        };
        for (id, body) in &self.extensions {
            admin.push_str(&format!("  {id}:\n{body}\n"));
            extensions.push_str(&format!(", {id}"));
        }
        let [grpc_extra, http_extra] = &self.receiver_extra;
        for (id, body) in &self.exporters {
            exporters.push_str(&format!("  {id}:\n{body}\n"));
            ids.push(id.clone());
        }
        let pipelines = self.pipelines(&ids.join(", "));
        format!(
            r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
{grpc_extra}      http:
        endpoint: 127.0.0.1:{http}
        max_request_body_size: {max_body}
{http_extra}processors:
  wasm/audit:
    module: {module}
    policy: {policy}
{processor_extra}exporters:
  auditstore:
    directory: {store}
    instance_id: {instance_id}
    segment_size: {segment}
    checkpoint: {checkpoint}
    signing_key: {key}
{store_extra}{exporters}extensions:
  health_check:
    endpoint: 127.0.0.1:{health}
{admin}service:
  extensions: [{extensions}]
  pipelines:
{pipelines}  telemetry:
    metrics:
      address: 127.0.0.1:{metrics}
"#,
            max_body = self.max_body,
            module = self.module.display(),
            policy = self.policy.display(),
            processor_extra = self.processor_extra,
            store_extra = self.store_extra,
            store = self.store.display(),
            instance_id = self.instance_id,
            segment = self.segment_size,
            checkpoint = self.checkpoint,
            key = self.key.display(),
        )
    }

    /// One audit pipeline a signal, each exporting to `ids`.
    fn pipelines(&self, ids: &str) -> String {
        let shards = self.shards;
        self.signals
            .iter()
            .map(|signal| {
                format!(
                    "    {signal}/audit:\n      receivers: [otlp]\n      processors: [wasm/audit]\n      \
                     exporters: [{ids}]\n      shards: {shards}\n"
                )
            })
            .collect()
    }

    /// Writes the config and starts the server.
    pub fn start(&self) -> Server {
        Server { process: self.serve().unwrap_or_else(|e| panic!("{e}")) }
    }

    /// Writes the config and starts the server; says why it could not.
    pub fn serve(&self) -> Result<Process, String> {
        let config = self.dir.join("otel-audit.yaml");
        std::fs::write(&config, self.config()).map_err(|e| format!("{}: {e}", config.display()))?;
        serve(&config, &self.dir.join("server.log"), self.ports[3], &[])
    }
}

/// Starts `otel-audit serve --config config` (its output appended to
/// `log`, `env` added to its environment) and waits until the health
/// endpoint on `health` answers 200.
pub fn serve(config: &Path, log: &Path, health: u16, env: &[(&str, &str)]) -> Result<Process, String> {
    let mut command = Command::new(binary());
    command
        .args(["serve", "--config"])
        .arg(config)
        .env("OTEL_AUDIT_CACHE_DIR", super::cache_dir())
        .env("OTEL_AUDIT_LOG", "info")
        .envs(env.iter().copied());
    healthy(Process::spawn(SERVE, command, log)?, health)
}

/// What [`Process`] calls the server in its messages.
const SERVE: &str = "otel-audit serve";

/// Waits (at most 90 s) until the health endpoint on `health` answers 200.
fn healthy(mut process: Process, health: u16) -> Result<Process, String> {
    let answers = || http_get(health, "/").is_some_and(|(code, _)| code == 200);
    process.wait_until(Duration::from_secs(90), "not healthy", answers)?;
    Ok(process)
}

/// A running `otel-audit serve` that fails the test when it does.
pub struct Server {
    process: Process,
}

impl Server {
    /// Starts the binary on `config` (its output appended to `log`) and
    /// waits until the health endpoint answers 200.
    pub fn start(config: &Path, log: &Path, health: u16, env: &[(&str, &str)]) -> Server {
        Server { process: serve(config, log, health, env).unwrap_or_else(|e| panic!("{e}")) }
    }

    /// Starts an arbitrary command line (e.g. under `ulimit`) that execs the server.
    pub fn start_command(command: Command, log: &Path, health: u16) -> Server {
        let process = Process::spawn(SERVE, command, log).and_then(|p| healthy(p, health));
        Server { process: process.unwrap_or_else(|e| panic!("{e}")) }
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        self.process.log()
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends `signal` (a `kill` name: `HUP`, `TERM`, ...) to the server.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal).unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGTERM, then wait for the exit (at most 60 s).
    pub fn stop(self) -> ExitStatus {
        self.process.stop().unwrap_or_else(|e| panic!("{e}"))
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(self) {
        self.process.kill9();
    }
}

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

/// A raw HTTP/1.1 POST on loopback: (status, content-type, body).
pub fn http_post(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head =
        format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading everything; ignore a reset here.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let mut body = response[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (code, content_type, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
    out
}

/// The Python interpreter of the end-to-end venv (`make venv`).
pub fn python() -> PathBuf {
    let path = super::root().join(".venv/bin/python");
    assert!(path.exists(), "{} is missing: run `make venv` (make test does)", path.display());
    path
}
