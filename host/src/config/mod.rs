//! The `otel-audit serve` configuration, in the OpenTelemetry Collector's
//! own shape (`receivers`, `processors`, `exporters`, `extensions`,
//! `service.pipelines`), so that a Collector user can read and write it.
//!
//! [`load`] and [`parse`] read the file, substitute environment variables
//! on the parsed tree, mirror it in serde structs that refuse unknown keys,
//! and validate it once into the typed [`Config`] the server trusts:
//! parsed durations and sizes, normalised endpoints, one resolved
//! [`Pipeline`] per `service.pipelines` entry with its processor, store and
//! exporters. Every problem found is reported with its key path
//! (`exporters.otlp/downstream.timeout`), in file order, not only the
//! first. [`validate_files`] then checks the files the config names.
//!
//! Substitution is the Collector's: `${env:VAR}` and `${env:VAR:-default}`
//! in any value (never in keys; the default applies when VAR is unset),
//! the bare `${VAR}` alike, `$$` for a literal `$`; a value that is exactly
//! one reference takes the YAML type of its text (`${env:PORT}` can be an
//! integer).
//!
//! What differs from the Collector, on purpose:
//! - an unset variable without a default is an error naming it and the
//!   key path (the Collector substitutes "" and logs a warning, which for
//!   an audit trail turns a missing key or directory into a silent
//!   misconfiguration); `${file:...}` and other sources are refused;
//! - secrets never sit in the file: `value:` must be exactly one
//!   `${env:VAR}` reference without a default;
//! - a pipeline runs exactly one `wasm` processor and writes to exactly
//!   one `auditstore` exporter; there is one OTLP receiver; `metrics`
//!   pipelines are refused (metrics are not audit records);
//! - a gRPC exporter with a bare `host:port` and no `tls:` speaks plaintext
//!   (the Collector defaults to TLS there); `https://` or a `tls:` section
//!   without `insecure: true` speaks TLS. Bearer tokens (`token`, `tokens`)
//!   come from `${env:VAR}` only, like secrets;
//! - `retry_on_failure` never gives up (`enabled` cannot be false,
//!   `max_elapsed_time` must be 0), also when the downstream refuses the
//!   data (the exporter stalls), and
//!   `sending_queue.queue_size` counts records, not batches: the store is
//!   the queue (see [`Exporter::max_backlog_records`]);
//! - bare numbers are refused as durations (`10` would be 10 ns in the
//!   Collector): write `10s`.
//!
//! Not this module: starting anything, or configuring the component with
//! the policies (the `validate` command does that with [`crate::runtime`]).

mod env;
mod file;
mod transport;
mod validate;
mod values;

pub use transport::{Authenticator, ClientTls, Listener, Security, ServerLimits, ServerTls, TlsVersion, TokenSource};
pub use values::duration as parse_duration;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::Value;

use crate::checkpoint::SignerKey;
use crate::otlp::Signal;
use crate::secrets::SecretError;
use crate::store::FileAccess;

/// The default config `otel-audit serve` uses without `--config`
/// (`collector-config/otel-audit.yaml`, embedded in the binary). Its
/// relative paths assume the repository root as the working directory.
pub const DEFAULT_CONFIG: &str = include_str!("../../../collector-config/otel-audit.yaml");

/// One thing wrong with a config, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, e.g. `exporters.otlp/downstream.timeout` or
    /// `service.pipelines.traces/audit.processors[0]`; empty for the file
    /// as a whole (unreadable, not YAML), whose message then names it.
    pub path: String,
    /// What is wrong. Never contains a secret's value.
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Every problem found in one config, in file order as far as it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    /// One line per problem: `key.path: message`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A validated config: what `otel-audit serve` runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `receivers.otlp.protocols.grpc`, when enabled.
    pub grpc: Option<GrpcReceiver>,
    /// `receivers.otlp.protocols.http`, when enabled.
    pub http: Option<HttpReceiver>,
    /// `service.pipelines`, in file order. A batch of a signal goes to
    /// every pipeline of that signal, as in the Collector.
    pub pipelines: Vec<Pipeline>,
    /// Where Prometheus `/metrics` is served (`service.telemetry.metrics.address`,
    /// with its `tls` and `auth`); none when unset.
    pub metrics: Option<Listener>,
    /// Where the health check is served, when `health_check` is listed in
    /// `service.extensions`.
    pub health: Option<Listener>,
    /// Where `POST /admin/reload` and `GET /admin/status` are served, when
    /// `admin` is listed in `service.extensions` (`localhost:13134` by
    /// default: reloads are not for other hosts).
    pub admin: Option<Listener>,
    /// Where the read API is served (tiles, records with proofs, SQL), when
    /// `read_api` is listed in `service.extensions` (`localhost:13135` by
    /// default), under its own read-only tokens.
    pub read_api: Option<Listener>,
    /// `service.telemetry.logs.level`: `trace`, `debug`, `info` (default),
    /// `warn` or `error`.
    pub log_level: String,
}

/// The OTLP/gRPC receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcReceiver {
    /// `host:port` to bind (`localhost:4317` by default, as in the
    /// Collector; `:4317` is written `0.0.0.0:4317`; port 0 is any free
    /// port). A host name needs resolving before binding.
    pub endpoint: String,
    /// Largest request message in bytes (`max_recv_msg_size_mib`, default 4 MiB).
    pub max_recv_msg_size: usize,
    /// `tls` and `auth`.
    pub security: Security,
    /// Connection, stream and time limits.
    pub limits: ServerLimits,
}

/// The OTLP/HTTP receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReceiver {
    /// `host:port` to bind (`localhost:4318` by default).
    pub endpoint: String,
    /// Largest request body in bytes, before and after decompression
    /// (`max_request_body_size`, default 20 MiB as in the Collector), so a
    /// gzip bomb stops at this size.
    pub max_request_body_size: usize,
    /// `tls` and `auth`.
    pub security: Security,
    /// Connection, stream and time limits.
    pub limits: ServerLimits,
}

/// One `service.pipelines` entry, with its components resolved.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// `traces/audit`: the signal, then the name. Part of every chain id
    /// of this pipeline, so it is limited to letters, digits, `_`, `-`
    /// and `.` after the `/`.
    pub id: String,
    /// The signal, from the id's type.
    pub signal: Signal,
    /// Independent chains run for this pipeline (`shards`, 1..=64 or
    /// `auto`, the default: one per core).
    pub shards: u32,
    /// The one `wasm` processor.
    pub processor: Processor,
    /// The one `auditstore` exporter.
    pub store: Store,
    /// The forwarding exporters, in the order listed.
    pub exporters: Vec<Exporter>,
}

/// A `wasm/<name>` processor: the component and its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processor {
    /// `wasm/soc2`.
    pub id: String,
    /// The component (`.wasm`), relative to the working directory unless absolute.
    pub module: PathBuf,
    /// The policy file.
    pub policy: PathBuf,
    /// The keys `configure` gets, in file order.
    pub secrets: Vec<Secret>,
    /// Policy test files (`tests:`), for gating hot swaps.
    pub tests: Vec<PathBuf>,
    /// How changes to its files are picked up (`reload:`).
    pub reload: Reload,
    /// What one component instance may use (`limits:`).
    pub limits: GuestLimits,
}

/// `limits:` of a processor: each instance's linear memory and the time
/// one call may take. A request past them is refused as too large (413 /
/// RESOURCE_EXHAUSTED) after a second try on a fresh instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Largest linear memory (`memory`, default 512MiB, 16MiB..=4GiB).
    pub memory: usize,
    /// Longest call (`timeout`, default 10s).
    pub timeout: Duration,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits { memory: 512 << 20, timeout: Duration::from_secs(10) }
    }
}

/// `reload:` of a processor: hot swaps triggered by its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// Watch the module, policy, secret and test files (`watch`, default
    /// true); SIGHUP and `POST /admin/reload` work either way.
    pub watch: bool,
    /// Quiet time after the last change before reloading (`debounce`,
    /// default 500ms), so an editor's or a deploy's several writes make
    /// one reload.
    pub debounce: Duration,
}

/// A key for the processor (an HMAC key id and where its bytes come from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// The key id policies name (`audit.chain.key_id`, `hash_key_id`).
    pub id: String,
    /// Where the bytes come from.
    pub source: SecretSource,
}

/// Where a secret's bytes come from. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `file: PATH`: the file's exact bytes, read when needed.
    File(PathBuf),
    /// `value: ${env:VAR}`: the variable's bytes, read when the config was.
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: Vec<u8>,
    },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            SecretSource::File(path) => f.debug_tuple("File").field(path).finish(),
            SecretSource::Env { var, .. } => {
                f.debug_struct("Env").field("var", var).field("value", &format_args!("<redacted>")).finish()
            }
        }
    }
}

impl Secret {
    /// The key's bytes; a file is read now. Errors never hold the value.
    pub fn read(&self) -> Result<Vec<u8>, SecretError> {
        match &self.source {
            SecretSource::Env { value, .. } => Ok(value.clone()),
            SecretSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
                    id: self.id.clone(),
                    path: path.clone(),
                    source,
                })?;
                if bytes.is_empty() {
                    return Err(SecretError::Empty { id: self.id.clone(), path: path.clone() });
                }
                Ok(bytes)
            }
        }
    }
}

impl GuestLimits {
    /// As the runtime takes them.
    pub fn runtime(&self) -> crate::runtime::Limits {
        crate::runtime::Limits { max_memory_bytes: self.memory, call_timeout: self.timeout }
    }
}

impl Processor {
    /// The `(id, bytes)` list `configure` takes, reading key files now.
    pub fn read_secrets(&self) -> Result<Vec<(String, Vec<u8>)>, SecretError> {
        self.secrets.iter().map(|s| Ok((s.id.clone(), s.read()?))).collect()
    }
}

/// An `auditstore[/<name>]` exporter: the durable chained store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// `auditstore`.
    pub id: String,
    /// The store directory (created if missing). Chains inside it are
    /// told apart by pipeline id, instance id and shard; two `auditstore`
    /// exporters may not share a directory.
    pub directory: PathBuf,
    /// This host's part of each chain id (`instance_id`, default the
    /// machine's host name): letters, digits, `_`, `-` and `.`.
    pub instance_id: String,
    /// Segment size in bytes at which a segment is sealed (default 64 MiB, at least 4 KiB).
    pub segment_size: u64,
    /// Sign a checkpoint after this many new records (`checkpoint.every_records`, default 10,000).
    pub every_records: u64,
    /// Also sign when this much time has passed since the last checkpoint
    /// and new records exist (`checkpoint.interval`, default 10s).
    pub interval: Duration,
    /// Sign even when idle, this often (`checkpoint.heartbeat`, default 60s).
    pub heartbeat: Duration,
    /// Where the newest checkpoint of each chain is also kept, outside the
    /// store (`checkpoint.mirror`; default: `<signing_key>.checkpoints/`
    /// beside the key, if it can be created). At start-up a store whose
    /// checkpoints end before the mirror's is refused: someone removed
    /// checkpoints or records, and the host must not sign over that.
    pub mirror: Option<PathBuf>,
    /// The Ed25519 signer key file (`otel-audit keygen`'s `NAME.key`).
    pub signing_key: PathBuf,
    /// Prefix of the checkpoint origin lines (default `otel-audit`): no
    /// spaces and no `+`, as C2SP origins.
    pub origin: String,
    /// Witnesses each checkpoint is submitted to (`witnesses`), in the
    /// background: one that is down never blocks ingestion.
    pub witnesses: Vec<WitnessDef>,
    /// Who may read the store's and the mirror's files (`file_mode`:
    /// `private`, the default, 0700/0600; `group-read`, 0750/0640).
    pub access: FileAccess,
}

/// A witness of `exporters.auditstore.witnesses` (C2SP tlog-witness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessDef {
    /// Its submission prefix (`POST <url>/add-checkpoint`).
    pub url: String,
    /// Its cosignature verifier key file (`keygen --witness`'s NAME.pub).
    pub public_key: PathBuf,
}

/// How an exporter speaks OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportProtocol {
    /// `otlp`: OTLP/gRPC.
    Grpc,
    /// `otlphttp`: OTLP/HTTP, protobuf.
    Http,
}

/// Request compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `none` (or "").
    None,
    /// `gzip`, the Collector's default.
    Gzip,
}

/// `retry_on_failure`: exponential backoff between attempts. Every failed
/// attempt is retried (`enabled: false` is refused): an exporter never
/// skips a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// First wait (default 5s).
    pub initial_interval: Duration,
    /// Longest wait (default 30s), at least `initial_interval`.
    pub max_interval: Duration,
    /// Growth of the wait per attempt (default 1.5, at least 1).
    pub multiplier: f64,
    /// Jitter: each wait is drawn from ±this fraction (default 0.5, 0..=1).
    pub randomization_factor: f64,
}

/// A forwarding exporter (`otlp[/<name>]` or `otlphttp[/<name>]`) as one
/// pipeline uses it.
#[derive(Clone, PartialEq)]
pub struct Exporter {
    /// `otlp/downstream`.
    pub id: String,
    /// gRPC or HTTP.
    pub protocol: ExportProtocol,
    /// Where to send this pipeline's signal: for gRPC `http://host:port`;
    /// for HTTP the full URL for the pipeline's signal (one of the two below).
    pub endpoint: String,
    /// HTTP: the traces URL (`traces_endpoint`, or `endpoint` +
    /// `/v1/traces`, as the Collector composes it); "" for gRPC, or when
    /// only `logs_endpoint` is set (then no traces pipeline uses it).
    pub traces_url: String,
    /// HTTP: the logs URL (`logs_endpoint`, or `endpoint` + `/v1/logs`);
    /// "" for gRPC, or when no logs pipeline can use it.
    pub logs_url: String,
    /// Extra request headers (gRPC metadata), in file order. `Debug`
    /// shows their names only: they often carry tokens.
    pub headers: Vec<(String, String)>,
    /// Request compression (default gzip).
    pub compression: Compression,
    /// Per-request timeout (default 5s for `otlp`, 30s for `otlphttp`, as in the Collector).
    pub timeout: Duration,
    /// Backoff between failed attempts.
    pub retry: Retry,
    /// TLS to the downstream: `https://` endpoints, or `tls:` without
    /// `insecure: true`; plaintext when none.
    pub tls: Option<ClientTls>,
    /// `auth: {authenticator: bearertokenauth/...}`: its (first) token is
    /// sent with every request.
    pub auth: Option<Authenticator>,
    /// `sending_queue.queue_size`, in records (default 1,000,000): how far
    /// this exporter may fall behind the store. The store is the queue, so
    /// nothing waits in memory; past this backlog, upstream gets retryable
    /// errors until the exporter catches up.
    pub max_backlog_records: u64,
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Exporter")
            .field("id", &self.id)
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field("traces_url", &self.traces_url)
            .field("logs_url", &self.logs_url)
            .field("headers", &format_args!("{names:?} (values redacted)"))
            .field("compression", &self.compression)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .field("max_backlog_records", &self.max_backlog_records)
            .finish()
    }
}

/// Reads, substitutes, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &path.display().to_string()),
        Err(e) => Err(ConfigErrors(vec![Problem::new("", format!("cannot read the config {}: {e}", path.display()))])),
    }
}

/// Substitutes, parses and validates config text; `origin` names it in
/// messages. Environment variables are read from the process.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    parse_with_env(text, origin, &|var| std::env::var(var))
}

fn parse_with_env(text: &str, origin: &str, lookup: env::Lookup) -> Result<Config, ConfigErrors> {
    let fail = ConfigErrors;
    let mut root: Value = match serde_yaml_ng::from_str(text) {
        Ok(root) => root,
        Err(e) => {
            let at = e.location().map(|l| format!(" (line {}, column {})", l.line(), l.column())).unwrap_or_default();
            let mut message = e.to_string();
            if let Some(cut) = message.rfind(" at line ") {
                message.truncate(cut);
            }
            return Err(fail(vec![Problem::new("", format!("{origin} is not valid YAML: {message}{at}"))]));
        }
    };
    if let Err(e) = root.apply_merge() {
        return Err(fail(vec![Problem::new("", format!("{origin}: cannot apply a YAML merge key (<<): {e}"))]));
    }
    let mut problems = Vec::new();
    let substitution = env::substitute(&mut root, lookup, &mut problems);
    validate::validate(root, &substitution, problems, origin).map_err(|mut problems| {
        // Substitution's problems came first; put all in document order.
        problems.sort_by_key(|p| substitution.rank(&p.path));
        fail(problems)
    })
}

/// Checks the files a config names, without starting anything: each
/// processor's module, policy and test files are readable, each secret
/// reads (its value is never shown), each signing key parses as an
/// `otel-audit keygen` signer key, and each store directory, if it exists,
/// is a directory. A component shared by pipelines is checked once.
pub fn validate_files(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for pipeline in &config.pipelines {
        let p = &pipeline.processor;
        if seen.insert(format!("processors.{}", p.id)) {
            let base = format!("processors.{}", p.id);
            readable(&p.module, &format!("{base}.module"), &mut problems);
            if readable(&p.policy, &format!("{base}.policy"), &mut problems)
                && let Err(e) = std::fs::read_to_string(&p.policy)
            {
                problems.push(Problem::new(format!("{base}.policy"), format!("{}: {e}", p.policy.display())));
            }
            for (i, test) in p.tests.iter().enumerate() {
                readable(test, &format!("{base}.tests[{i}]"), &mut problems);
            }
            for secret in &p.secrets {
                if let Err(e) = secret.read() {
                    problems.push(Problem::new(format!("{base}.secrets.{}", secret.id), e.to_string()));
                }
            }
        }
        let s = &pipeline.store;
        if seen.insert(format!("exporters.{}", s.id)) {
            let base = format!("exporters.{}", s.id);
            if readable(&s.signing_key, &format!("{base}.signing_key"), &mut problems) {
                let parsed = std::fs::read_to_string(&s.signing_key)
                    .map_err(|e| e.to_string())
                    .and_then(|text| SignerKey::parse(&text).map(drop).map_err(|e| e.to_string()));
                if let Err(e) = parsed {
                    problems.push(Problem::new(
                        format!("{base}.signing_key"),
                        format!(
                            "{} is not a signer key as `otel-audit keygen` writes it: {e}",
                            s.signing_key.display()
                        ),
                    ));
                }
            }
            if s.directory.exists() && !s.directory.is_dir() {
                problems.push(Problem::new(
                    format!("{base}.directory"),
                    format!("{} exists and is not a directory", s.directory.display()),
                ));
            }
        }
    }
    problems
}

/// Whether `path` is a file that opens for reading; a problem if not.
fn readable(path: &Path, key: &str, problems: &mut Vec<Problem>) -> bool {
    let result = std::fs::File::open(path)
        .and_then(|f| f.metadata())
        .and_then(|m| if m.is_file() { Ok(()) } else { Err(std::io::Error::other("not a regular file")) });
    match result {
        Ok(()) => true,
        Err(e) => {
            problems.push(Problem::new(key, format!("cannot read {}: {e}", path.display())));
            false
        }
    }
}

/// `parent.key`, or `key` at the root.
fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

/// A mapping key as text, for key paths.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other).map(|s| s.trim_end().to_owned()).unwrap_or_else(|_| "?".to_owned()),
    }
}

/// `shards: auto` (the default): one chain per core this process may use,
/// as many chain workers as there are cores to run them. A request goes to
/// one chain of its pipeline (round robin), so each chain holds part of the
/// records; each is verified and checkpointed on its own.
pub fn auto_shards() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(64) as u32)
}
