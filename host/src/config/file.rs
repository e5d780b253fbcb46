//! The file as written: serde structs that mirror the Collector's YAML
//! shapes, refusing unknown keys. Every scalar is read as [`Text`] and
//! parsed during validation, so that all bad values of a component are
//! reported together rather than only the first one serde meets.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_yaml_ng::Value;

/// A scalar as the text it was written as. Numbers and booleans are taken
/// as text too, the way the Collector decodes a string field: a value that
/// came from `${env:PORT}` is typed by substitution but may still fill a
/// string field with exactly the variable's text.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
        Ok(Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
        Ok(Text(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
        Ok(Text(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
        Ok(Text(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
        Ok(Text(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
        // The YAML library's own spelling, which substitution compared the
        // variable's text against before typing it.
        Ok(Text(serde_yaml_ng::Number::from(v).to_string()))
    }
}

/// `grpc:` or `http:` written with no body enables the protocol with its
/// defaults, as in the Collector; an absent key leaves it off.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(deserializer)?.unwrap_or_default()))
}

/// `receivers.otlp`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct OtlpReceiverFile {
    pub protocols: Option<ProtocolsFile>,
}

/// `receivers.otlp.protocols`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ProtocolsFile {
    #[serde(default, deserialize_with = "present")]
    pub grpc: Option<GrpcFile>,
    #[serde(default, deserialize_with = "present")]
    pub http: Option<HttpFile>,
}

/// `receivers.otlp.protocols.grpc`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct GrpcFile {
    pub endpoint: Option<Text>,
    pub max_recv_msg_size_mib: Option<Text>,
    pub tls: Option<TlsFile>,
    pub auth: Option<AuthFile>,
    pub max_concurrent_streams: Option<Text>,
    pub keepalive: Option<KeepaliveFile>,
    pub max_connections: Option<Text>,
    pub max_in_flight_requests: Option<Text>,
    pub max_in_flight_requests_per_client: Option<Text>,
    pub read_header_timeout: Option<Text>,
    pub read_timeout: Option<Text>,
}

/// `keepalive` of a gRPC receiver.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct KeepaliveFile {
    pub server_parameters: Option<ServerParametersFile>,
}

/// `keepalive.server_parameters`: the HTTP/2 pings otel-audit sends.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerParametersFile {
    pub time: Option<Text>,
    pub timeout: Option<Text>,
}

/// `auth:` of a listener or exporter.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthFile {
    pub authenticator: Option<Text>,
}

/// `extensions.bearertokenauth[/<name>]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct BearerTokenFile {
    pub header: Option<Text>,
    pub scheme: Option<Text>,
    pub token: Option<Text>,
    pub tokens: Option<Vec<Text>>,
    pub filename: Option<Text>,
}

/// `receivers.otlp.protocols.http`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpFile {
    pub endpoint: Option<Text>,
    pub max_request_body_size: Option<Text>,
    pub tls: Option<TlsFile>,
    pub auth: Option<AuthFile>,
    pub max_connections: Option<Text>,
    pub max_in_flight_requests: Option<Text>,
    pub max_in_flight_requests_per_client: Option<Text>,
    pub read_header_timeout: Option<Text>,
    pub read_timeout: Option<Text>,
}

/// `processors.wasm/<name>`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct WasmFile {
    pub module: Option<Text>,
    pub policy: Option<Text>,
    /// A mapping, read entry by entry (in order) to report every bad one,
    /// and never echoed: an entry may be a secret written inline.
    pub secrets: Option<Value>,
    pub tests: Option<Vec<Text>>,
    pub reload: Option<ReloadFile>,
    pub limits: Option<GuestLimitsFile>,
}

/// `processors.wasm/<name>.limits`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct GuestLimitsFile {
    pub memory: Option<Text>,
    pub timeout: Option<Text>,
}

/// `processors.wasm/<name>.reload`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ReloadFile {
    pub watch: Option<Text>,
    pub debounce: Option<Text>,
}

/// One entry of `secrets:`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct SecretFile {
    pub file: Option<Text>,
    pub value: Option<Text>,
}

/// `exporters.auditstore[/<name>]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditStoreFile {
    pub directory: Option<Text>,
    pub instance_id: Option<Text>,
    pub segment_size: Option<Text>,
    pub checkpoint: Option<CheckpointFile>,
    pub signing_key: Option<Text>,
    pub origin: Option<Text>,
    pub witnesses: Option<Vec<WitnessFile>>,
    pub file_mode: Option<Text>,
}

/// One of `exporters.auditstore.witnesses`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct WitnessFile {
    pub url: Option<Text>,
    pub public_key: Option<Text>,
}

/// `exporters.auditstore.checkpoint`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckpointFile {
    pub every_records: Option<Text>,
    pub interval: Option<Text>,
    pub heartbeat: Option<Text>,
    pub mirror: Option<Text>,
}

/// `exporters.otlp[/<name>]` and `exporters.otlphttp[/<name>]`; the
/// per-signal URLs are `otlphttp` keys, refused for `otlp` in validation.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ExporterFile {
    pub endpoint: Option<Text>,
    pub traces_endpoint: Option<Text>,
    pub logs_endpoint: Option<Text>,
    /// A mapping, read entry by entry (in order); values are never echoed.
    pub headers: Option<Value>,
    pub compression: Option<Text>,
    pub timeout: Option<Text>,
    pub retry_on_failure: Option<RetryFile>,
    pub sending_queue: Option<QueueFile>,
    pub tls: Option<TlsFile>,
    pub auth: Option<AuthFile>,
}

/// `retry_on_failure`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryFile {
    pub enabled: Option<Text>,
    pub initial_interval: Option<Text>,
    pub max_interval: Option<Text>,
    pub multiplier: Option<Text>,
    pub randomization_factor: Option<Text>,
    pub max_elapsed_time: Option<Text>,
}

/// `sending_queue`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct QueueFile {
    pub enabled: Option<Text>,
    pub queue_size: Option<Text>,
}

/// `tls`: the Collector's configtls keys; which apply depends on the side
/// (listener or exporter), checked in validation.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    pub insecure: Option<Text>,
    pub insecure_skip_verify: Option<Text>,
    pub ca_file: Option<Text>,
    pub cert_file: Option<Text>,
    pub key_file: Option<Text>,
    pub client_ca_file: Option<Text>,
    pub min_version: Option<Text>,
    pub max_version: Option<Text>,
    pub reload_interval: Option<Text>,
    pub server_name_override: Option<Text>,
    pub include_system_ca_certs_pool: Option<Text>,
}

/// `extensions.health_check` and `extensions.admin`: a listener.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerFile {
    pub endpoint: Option<Text>,
    pub tls: Option<TlsFile>,
    pub auth: Option<AuthFile>,
    pub read_auth: Option<AuthFile>,
}

/// `service.pipelines.<signal>[/<name>]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct PipelineFile {
    pub receivers: Option<Vec<Text>>,
    pub processors: Option<Vec<Text>>,
    pub exporters: Option<Vec<Text>>,
    pub shards: Option<Text>,
}

/// `service.telemetry`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TelemetryFile {
    pub logs: Option<LogsFile>,
    pub metrics: Option<MetricsFile>,
}

/// `service.telemetry.logs`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsFile {
    pub level: Option<Text>,
}

/// `service.telemetry.metrics`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct MetricsFile {
    pub address: Option<Text>,
    pub tls: Option<TlsFile>,
    pub auth: Option<AuthFile>,
}
