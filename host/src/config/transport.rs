//! The typed security and limit settings of listeners and exporters:
//! `tls` (the Collector's configtls), `auth` (configauth with a
//! `bearertokenauth` extension) and the connection and request limits.
//! Read from the file by `validate::security`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How a listener is secured: `tls` (the Collector's configtls server
/// keys) and `auth` (a `bearertokenauth` extension). Neither by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// Serve TLS with this certificate; plaintext when none.
    pub tls: Option<ServerTls>,
    /// Require a bearer token of this authenticator; anyone when none.
    pub auth: Option<Authenticator>,
}

/// A TLS protocol version otel-audit speaks (rustls: 1.2 and 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `"1.2"`.
    V1_2,
    /// `"1.3"`.
    V1_3,
}

/// `tls:` of a listener, with the Collector's keys and meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate issued by one of these
    /// CAs (PEM): mutual TLS.
    pub client_ca_file: Option<PathBuf>,
    /// Oldest version accepted (`min_version`, default "1.2").
    pub min_version: TlsVersion,
    /// Newest version offered (`max_version`, default "1.3").
    pub max_version: TlsVersion,
    /// How often the certificate, key and client CA files are checked for
    /// changes (`reload_interval`, default 10s); a change is served to new
    /// connections, the open ones keep theirs.
    pub reload_interval: Duration,
}

/// `tls:` of an exporter: how it checks the downstream and (mTLS) proves
/// itself, with the Collector's keys and meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// `insecure: true`: plaintext (the Collector's default for `http://`
    /// endpoints is decided by the scheme; for gRPC by this key).
    pub insecure: bool,
    /// CAs (PEM) the downstream's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Also trust the system's CAs (`include_system_ca_certs_pool`; they
    /// are the only ones when `ca_file` is unset).
    pub include_system_ca_certs_pool: bool,
    /// Client certificate (PEM) for mutual TLS, with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate (`insecure_skip_verify`): encrypted
    /// but not authenticated; for tests only.
    pub insecure_skip_verify: bool,
    /// The name the server certificate is checked against, instead of the
    /// endpoint's host (`server_name_override`).
    pub server_name_override: Option<String>,
    /// Oldest version accepted (default "1.2").
    pub min_version: Option<TlsVersion>,
    /// Newest version offered (default "1.3").
    pub max_version: Option<TlsVersion>,
}

/// A `bearertokenauth[/<name>]` extension: the tokens a listener accepts
/// (`token`, `tokens`, or `filename`, re-read when it changes), or the
/// token an exporter sends.
#[derive(Clone, PartialEq, Eq)]
pub struct Authenticator {
    /// `bearertokenauth/writers`: also the principal recorded for a
    /// request it authenticated (with `[i]` for the i-th of `tokens`).
    pub id: String,
    /// The header carrying the token (`header`, default `Authorization`).
    pub header: String,
    /// The scheme before the token (`scheme`, default `Bearer`; "" for none).
    pub scheme: String,
    /// Where the tokens come from.
    pub tokens: Vec<TokenSource>,
}

/// Where one bearer token comes from. `Debug` never shows a value.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `token: ${env:VAR}` or an entry of `tokens:`.
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
    },
    /// `filename: PATH`: the file's first line, re-read when it changes.
    File(PathBuf),
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let sources: Vec<String> = self
            .tokens
            .iter()
            .map(|t| match t {
                TokenSource::Env { var, .. } => format!("env:{var}"),
                TokenSource::File(path) => format!("file:{}", path.display()),
            })
            .collect();
        f.debug_struct("Authenticator")
            .field("id", &self.id)
            .field("header", &self.header)
            .field("scheme", &self.scheme)
            .field("tokens", &format_args!("{sources:?} (values redacted)"))
            .finish()
    }
}

/// Limits of one listener: past them a connection or request is refused
/// (503 / RESOURCE_EXHAUSTED) rather than held in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections at once (`max_connections`, default 256); past
    /// it a new connection gets one 503 / RESOURCE_EXHAUSTED and is closed.
    pub max_connections: usize,
    /// Requests being read or processed at once (`max_in_flight_requests`,
    /// default 64 for gRPC, 16 for HTTP): with the size limit, this bounds
    /// the memory requests hold.
    pub max_in_flight_requests: usize,
    /// Of those, at most this many from one client IP address
    /// (`max_in_flight_requests_per_client`, default three quarters of
    /// `max_in_flight_requests`, rounded up): a client that stalls its
    /// uploads leaves the rest to others.
    pub max_in_flight_requests_per_client: usize,
    /// HTTP/2 streams per connection (`max_concurrent_streams`, default 100).
    pub max_concurrent_streams: u32,
    /// Time to read a request's headers, and the TLS handshake
    /// (`read_header_timeout`, default 10s).
    pub read_header_timeout: Duration,
    /// Time to read a whole request body (`read_timeout`, default 30s).
    pub read_timeout: Duration,
    /// HTTP/2 keepalive ping interval (`keepalive.server_parameters.time`, default 2h as gRPC's).
    pub keepalive_time: Duration,
    /// How long a keepalive ping may go unanswered before the connection
    /// is closed (`keepalive.server_parameters.timeout`, default 20s).
    pub keepalive_timeout: Duration,
}

/// Three quarters of `max_in_flight`, rounded up.
pub fn per_client_default(max_in_flight: usize) -> usize {
    max_in_flight.saturating_mul(3).div_ceil(4).max(1)
}

impl ServerLimits {
    /// The defaults of a receiver protocol, or of the admin, health and
    /// metrics listeners (`in_flight`).
    pub fn with_in_flight(max_in_flight_requests: usize) -> Self {
        ServerLimits {
            max_connections: 256,
            max_in_flight_requests,
            max_in_flight_requests_per_client: per_client_default(max_in_flight_requests),
            max_concurrent_streams: 100,
            read_header_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            keepalive_time: Duration::from_secs(2 * 3600),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// An admin, health or metrics listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// `host:port` to bind.
    pub endpoint: String,
    /// `tls` and `auth`; for the admin endpoint `auth` may reload.
    pub security: Security,
    /// Admin only: a second authenticator whose tokens may read
    /// `/admin/status` but not reload (`read_auth`).
    pub read_auth: Option<Authenticator>,
}
