//! What a run measures: `otel-audit serve` with the shipped default's
//! store and checkpoint settings (also with two witnesses cosigning every
//! checkpoint, each its own `otel-audit witness` process), or rotel as an
//! OTLP passthrough.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Env;
use crate::support::process::Process;
use crate::support::server::{Setup, free_port};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Rotel,
    OtelAudit,
    /// otel-audit submitting every checkpoint to two witnesses.
    Witnessed,
    /// otel-audit with TLS on its receivers (certificates made for the run).
    Tls,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Rotel => "rotel",
            Target::OtelAudit => "otel-audit",
            Target::Witnessed => "+witnesses",
            Target::Tls => "+tls",
        }
    }

    /// Starts the server in `dir` and waits until it serves.
    pub fn start(self, env: &Env, dir: &Path) -> Result<Started, String> {
        match self {
            Target::Rotel => start_rotel(env, dir),
            Target::OtelAudit => start_otel_audit(env, dir, 0),
            Target::Witnessed => start_otel_audit(env, dir, 2),
            Target::Tls => start_otel_audit_tls(env, dir),
        }
    }
}

/// A server that serves.
pub struct Started {
    pub process: Process,
    /// Its OTLP/gRPC endpoint.
    pub endpoint: String,
    /// Its metrics port and its store (otel-audit only).
    pub metrics: Option<u16>,
    pub store: Option<PathBuf>,
    /// Processes it needs while it runs (witnesses); stopped when dropped.
    pub _companions: Vec<Process>,
    /// How clients reach it over TLS, when it serves TLS.
    pub tls: Option<otel_audit::config::ClientTls>,
}

/// `otel-audit serve` with a fresh store in `dir/store`: the shipped
/// default's store and checkpoint settings (collector-config/otel-audit.yaml)
/// on free loopback ports, with `witnesses` witness processes.
fn start_otel_audit(env: &Env, dir: &Path, witnesses: usize) -> Result<Started, String> {
    let mut setup = Setup::new(dir);
    setup.shipped_store();
    setup.instance_id = "bench".into();
    setup.shards = env.shards;
    let mut companions = Vec::new();
    if witnesses > 0 {
        setup.store_extra.push_str("    witnesses:\n");
    }
    for i in 0..witnesses {
        let (witness, url, public_key) = start_witness(env, dir, &setup.public_key(), i)?;
        setup.store_extra.push_str(&format!("      - {{url: {url}, public_key: {}}}\n", public_key.display()));
        companions.push(witness);
    }
    let process = setup.serve()?;
    Ok(Started {
        process,
        endpoint: setup.grpc_uri(),
        metrics: Some(setup.ports[2]),
        store: Some(setup.store),
        _companions: companions,
        tls: None,
    })
}

/// `otel-audit serve` as [`start_otel_audit`], its receivers serving TLS
/// with a certificate of a CA made for the run.
fn start_otel_audit_tls(env: &Env, dir: &Path) -> Result<Started, String> {
    let pki = crate::support::pki::Pki::new(&dir.join("pki"), "bench-ca");
    let server = pki.server("server", "otel-audit-bench");
    let mut setup = Setup::new(dir);
    setup.shipped_store();
    setup.instance_id = "bench".into();
    setup.shards = env.shards;
    let tls = format!("        tls: {{cert_file: {}, key_file: {}}}\n", server.cert.display(), server.key.display());
    setup.receiver_extra = [tls.clone(), tls];
    let process = setup.serve()?;
    Ok(Started {
        process,
        endpoint: format!("https://127.0.0.1:{}", setup.ports[0]),
        metrics: Some(setup.ports[2]),
        store: Some(setup.store),
        _companions: Vec::new(),
        tls: Some(otel_audit::config::ClientTls { ca_file: Some(pki.ca.clone()), ..Default::default() }),
    })
}

/// An `otel-audit witness` of the log key `log_key`, with a fresh key in
/// `dir`: the process, its URL and its public key file.
fn start_witness(env: &Env, dir: &Path, log_key: &Path, i: usize) -> Result<(Process, String, PathBuf), String> {
    let name = format!("w{i}.bench");
    let out = Command::new(&env.binary)
        .args(["keygen", "--witness", "--name", &name, "--out"])
        .arg(dir)
        .output()
        .map_err(|e| format!("keygen --witness: {e}"))?;
    if !out.status.success() {
        return Err(format!("keygen --witness: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let port = free_port();
    let mut command = Command::new(&env.binary);
    command
        .args(["witness", "--key"])
        .arg(dir.join(format!("{name}.key")))
        .arg("--log-key")
        .arg(log_key)
        .arg("--state")
        .arg(dir.join(format!("{name}.state")))
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let mut process = Process::spawn("otel-audit witness", command, &dir.join(format!("{name}.log")))?;
    let listens = || TcpStream::connect(("127.0.0.1", port)).is_ok();
    process.wait_until(Duration::from_secs(30), "did not listen", listens)?;
    Ok((process, format!("http://127.0.0.1:{port}"), dir.join(format!("{name}.pub"))))
}

/// rotel as a passthrough to its blackhole exporter, once its gRPC port
/// accepts.
fn start_rotel(env: &Env, dir: &Path) -> Result<Started, String> {
    let (grpc, http) = (free_port(), free_port());
    let mut command = Command::new(&env.rotel);
    command
        .args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
        .args(["--exporter", "blackhole", "--pid-file"])
        .arg(dir.join("rotel.pid"));
    let mut process = Process::spawn("rotel", command, &dir.join("rotel.log"))?;
    let listens = || TcpStream::connect(("127.0.0.1", grpc)).is_ok();
    process.wait_until(Duration::from_secs(30), "did not listen", listens)?;
    Ok(Started {
        process,
        endpoint: format!("http://127.0.0.1:{grpc}"),
        metrics: None,
        store: None,
        _companions: vec![],
        tls: None,
    })
}

/// The rotel binary shipped in the venv's `rotel` wheel (`make venv`).
pub fn rotel_path(root: &Path) -> Result<PathBuf, String> {
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

pub fn rotel_version(rotel: &Path) -> String {
    Command::new(rotel)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
