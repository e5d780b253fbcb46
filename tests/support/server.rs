//! Runs the real `otel-audit serve` binary for end-to-end tests: writes a
//! config with free loopback ports, starts it, waits until its health
//! endpoint says it serves, and stops it with SIGTERM or SIGKILL.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
    /// Port of the `admin` extension (reloads and status); none by default.
    pub admin: Option<u16>,
    /// Store directory.
    pub store: PathBuf,
    /// Signing key.
    pub key: PathBuf,
    /// Extra exporter definitions (YAML, indented for `exporters:`), and their ids.
    pub exporters: Vec<(String, String)>,
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
            admin: None,
            store: dir.join("store"),
            key,
            exporters: Vec::new(),
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
        let (admin, extensions) = match self.admin {
            Some(port) => (format!("  admin:\n    endpoint: 127.0.0.1:{port}\n"), "health_check, admin"),
            None => (String::new(), "health_check"),
        };
        for (id, body) in &self.exporters {
            exporters.push_str(&format!("  {id}:\n{body}\n"));
            ids.push(id.clone());
        }
        format!(
            r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
      http:
        endpoint: 127.0.0.1:{http}
        max_request_body_size: {max_body}
processors:
  wasm/audit:
    module: {module}
    policy: {policy}
{processor_extra}exporters:
  auditstore:
    directory: {store}
    instance_id: test
    segment_size: {segment}
    checkpoint: {checkpoint}
    signing_key: {key}
{exporters}extensions:
  health_check:
    endpoint: 127.0.0.1:{health}
{admin}service:
  extensions: [{extensions}]
  pipelines:
    traces/audit:
      receivers: [otlp]
      processors: [wasm/audit]
      exporters: [{ids}]
      shards: {shards}
    logs/audit:
      receivers: [otlp]
      processors: [wasm/audit]
      exporters: [{ids}]
      shards: {shards}
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics}
"#,
            max_body = self.max_body,
            module = self.module.display(),
            policy = self.policy.display(),
            processor_extra = self.processor_extra,
            store = self.store.display(),
            segment = self.segment_size,
            checkpoint = self.checkpoint,
            key = self.key.display(),
            ids = ids.join(", "),
            shards = self.shards,
        )
    }

    /// Writes the config and starts the server.
    pub fn start(&self) -> Server {
        let config = self.dir.join("otel-audit.yaml");
        std::fs::write(&config, self.config()).unwrap();
        Server::start(&config, &self.dir.join("server.log"), self.ports[3], &[])
    }
}

/// A running `otel-audit serve`.
pub struct Server {
    child: Option<Child>,
    /// Its log file (stderr).
    pub log: PathBuf,
    health: u16,
}

impl Server {
    /// Starts the binary on `config` (stderr appended to `log`) and waits
    /// until the health endpoint answers 200.
    pub fn start(config: &Path, log: &Path, health: u16, env: &[(&str, &str)]) -> Server {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut command = Command::new(binary());
        command
            .args(["serve", "--config"])
            .arg(config)
            .env("OTEL_AUDIT_CACHE_DIR", super::cache_dir())
            .env("OTEL_AUDIT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        let mut server = Server { child: Some(child), log: log.to_owned(), health };
        server.wait_healthy();
        server
    }

    /// Starts an arbitrary command line (e.g. under `ulimit`) that execs the server.
    pub fn start_command(mut command: Command, log: &Path, health: u16) -> Server {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = command.stdout(Stdio::null()).stderr(log_file).spawn().unwrap();
        let mut server = Server { child: Some(child), log: log.to_owned(), health };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("otel-audit serve exited with {status} while starting:\n{}", self.log_text());
            }
            if http_get(self.health, "/").is_some_and(|(code, _)| code == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "server not healthy after 90 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the server's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `signal` (a `kill` name: `HUP`, `TERM`, ...) to the server.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
        assert!(status.success(), "kill -{signal} {pid}: {status}");
    }

    /// SIGTERM, then wait for the exit (at most 60 s).
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server ignored SIGTERM for 60 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A plain HTTP/1.0 GET on loopback: (status, body), or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
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
