//! What a run measures: `otel-audit serve` with the shipped default's
//! store and checkpoint settings, or rotel as an OTLP passthrough.

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
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Rotel => "rotel",
            Target::OtelAudit => "otel-audit",
        }
    }

    /// Starts the server in `dir` and waits until it serves.
    pub fn start(self, env: &Env, dir: &Path) -> Result<Started, String> {
        match self {
            Target::Rotel => start_rotel(env, dir),
            Target::OtelAudit => start_otel_audit(env, dir),
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
}

/// `otel-audit serve` with a fresh store in `dir/store`: the shipped
/// default's store and checkpoint settings (collector-config/otel-audit.yaml)
/// on free loopback ports.
fn start_otel_audit(env: &Env, dir: &Path) -> Result<Started, String> {
    let mut setup = Setup::new(dir);
    setup.shipped_store();
    setup.instance_id = "bench".into();
    setup.shards = env.shards;
    let process = setup.serve()?;
    Ok(Started { process, endpoint: setup.grpc_uri(), metrics: Some(setup.ports[2]), store: Some(setup.store) })
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
    Ok(Started { process, endpoint: format!("http://127.0.0.1:{grpc}"), metrics: None, store: None })
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
