//! Sends one OTLP export request downstream over gRPC or HTTP and sorts
//! the outcome into delivered, retryable or permanently rejected, with the
//! OTLP specification's retryable codes.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::grpc_codec::{LOGS_METHOD, RawCodec, TRACES_METHOD};
use crate::otlp::Signal;

/// Where and how an exporter sends.
#[derive(Debug, Clone)]
pub enum Destination {
    /// OTLP/gRPC to `endpoint` (`http://host:port`).
    Grpc {
        /// The endpoint URI.
        endpoint: String,
    },
    /// OTLP/HTTP protobuf to these URLs.
    Http {
        /// Full URL for traces.
        traces_url: String,
        /// Full URL for logs.
        logs_url: String,
    },
}

/// Connection settings shared by both protocols.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Extra request headers (gRPC metadata).
    pub headers: Vec<(String, String)>,
    /// gzip request bodies.
    pub gzip: bool,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Why a send did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Try again later (unavailable, timeout, throttled, connection error).
    #[error("{0}")]
    Retryable(String),
    /// The downstream refused the data; retrying cannot help.
    #[error("{0}")]
    Permanent(String),
}

/// A failed send, as the exporter sees it: the error, and whether the
/// downstream said the request was too large (HTTP 413, gRPC
/// `RESOURCE_EXHAUSTED` without retry advice), so smaller parts may pass.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: SendError,
    /// The downstream refused the request's size.
    pub too_large: bool,
}

impl From<SendError> for Failure {
    fn from(error: SendError) -> Self {
        Failure { error, too_large: false }
    }
}

/// What the downstream said about a delivered request.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Records it reported as rejected in a partial success.
    pub rejected: u64,
    /// Its message, if any.
    pub message: String,
}

/// gRPC metadata from the configured headers, checked once.
type Metadata = Vec<(MetadataKey<tonic::metadata::Ascii>, MetadataValue<tonic::metadata::Ascii>)>;

/// A connected (lazily) downstream client.
pub enum Client {
    /// gRPC.
    Grpc {
        /// The channel (reconnects by itself).
        channel: Channel,
        /// The headers as gRPC metadata.
        metadata: Metadata,
        /// Settings.
        options: ClientOptions,
    },
    /// HTTP.
    Http {
        /// The HTTP client.
        client: reqwest::Client,
        /// Traces URL.
        traces_url: String,
        /// Logs URL.
        logs_url: String,
        /// Settings.
        options: ClientOptions,
    },
}

impl Client {
    /// Creates a client; nothing connects until the first send. Headers
    /// that cannot be sent are refused here, not at every send.
    pub fn new(destination: &Destination, options: ClientOptions) -> Result<Self, ClientError> {
        Self::with_tls(destination, options, None)
    }

    /// [`Client::new`], speaking TLS to the downstream when `tls` is set.
    pub fn with_tls(
        destination: &Destination,
        options: ClientOptions,
        tls: Option<&crate::config::ClientTls>,
    ) -> Result<Self, ClientError> {
        match destination {
            Destination::Grpc { endpoint } => {
                let metadata = grpc_metadata(&options.headers)?;
                let endpoint = Endpoint::from_shared(endpoint.clone())
                    .map_err(|source| ClientError::Endpoint { endpoint: endpoint.clone(), source })?
                    .connect_timeout(options.timeout)
                    .timeout(options.timeout);
                let channel = match tls {
                    None => endpoint.connect_lazy(),
                    Some(tls) => {
                        // hyper-rustls offers h2 itself (it refuses a preset ALPN list).
                        let config = crate::tls::client_config(tls, &[])?;
                        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
                        http.enforce_http(false);
                        http.set_nodelay(true);
                        let connector = hyper_rustls::HttpsConnectorBuilder::new()
                            .with_tls_config(config)
                            .https_only()
                            .enable_http2()
                            .wrap_connector(http);
                        endpoint.connect_with_connector_lazy(connector)
                    }
                };
                Ok(Client::Grpc { channel, metadata, options })
            }
            Destination::Http { traces_url, logs_url } => {
                check_http_headers(&options.headers)?;
                let mut builder = reqwest::Client::builder();
                if let Some(tls) = tls {
                    builder = builder.use_preconfigured_tls(crate::tls::client_config(tls, &[b"h2", b"http/1.1"])?);
                }
                let client = builder
                    .timeout(options.timeout)
                    .connect_timeout(options.timeout)
                    .build()
                    .map_err(ClientError::Http)?;
                Ok(Client::Http { client, traces_url: traces_url.clone(), logs_url: logs_url.clone(), options })
            }
        }
    }

    /// Sends one protobuf export request.
    pub async fn send(&self, signal: Signal, payload: Bytes) -> Result<Delivered, SendError> {
        self.try_send(signal, payload).await.map_err(|failure| failure.error)
    }

    /// Sends one protobuf export request; a failure says whether the
    /// downstream refused the request's size.
    pub async fn try_send(&self, signal: Signal, payload: Bytes) -> Result<Delivered, Failure> {
        match self {
            Client::Grpc { channel, metadata, options } => {
                send_grpc(channel.clone(), metadata, options, signal, payload).await
            }
            Client::Http { client, traces_url, logs_url, options } => {
                let url = if signal == Signal::Traces { traces_url } else { logs_url };
                send_http(client, url, options, signal, payload).await
            }
        }
    }
}

/// Why an exporter's client cannot be made from its settings.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A configured header the protocol cannot carry.
    #[error("header {name:?} {problem}")]
    Header {
        /// The header's name as configured.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The gRPC endpoint is not a URI tonic takes.
    #[error("invalid gRPC endpoint {endpoint:?}: {source}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// Why tonic refused it.
        #[source]
        source: tonic::transport::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot create the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// The TLS settings do not load.
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

fn header_error(name: &str, problem: impl std::fmt::Display) -> ClientError {
    ClientError::Header { name: name.to_owned(), problem: problem.to_string() }
}

/// The headers as gRPC metadata (ASCII keys and values; `-bin` keys are binary and not supported).
pub fn grpc_metadata(headers: &[(String, String)]) -> Result<Metadata, ClientError> {
    headers
        .iter()
        .map(|(name, value)| {
            let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|e| {
                header_error(
                    name,
                    format!("is not a valid gRPC metadata key (binary `-bin` keys are not supported): {e}"),
                )
            })?;
            let value = MetadataValue::try_from(value.as_str())
                .map_err(|e| header_error(name, format!("has a value gRPC metadata cannot carry: {e}")))?;
            Ok((key, value))
        })
        .collect()
}

/// Checks that every header is one HTTP can carry.
pub fn check_http_headers(headers: &[(String, String)]) -> Result<(), ClientError> {
    for (name, value) in headers {
        http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| header_error(name, format!("is not a valid HTTP header name: {e}")))?;
        http::HeaderValue::from_str(value)
            .map_err(|e| header_error(name, format!("has a value HTTP cannot carry: {e}")))?;
    }
    Ok(())
}

async fn send_grpc(
    channel: Channel,
    metadata: &Metadata,
    options: &ClientOptions,
    signal: Signal,
    payload: Bytes,
) -> Result<Delivered, Failure> {
    let mut grpc = tonic::client::Grpc::new(channel);
    if options.gzip {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip).accept_compressed(CompressionEncoding::Gzip);
    }
    grpc.ready().await.map_err(|e| SendError::Retryable(format!("cannot connect: {e}")))?;
    let mut request = tonic::Request::new(payload);
    request.set_timeout(options.timeout);
    for (key, value) in metadata {
        request.metadata_mut().insert(key.clone(), value.clone());
    }
    let method = PathAndQuery::from_static(if signal == Signal::Traces { TRACES_METHOD } else { LOGS_METHOD });
    match grpc.unary(request, method, RawCodec).await {
        Ok(response) => Ok(partial_success(signal, &response.into_inner())),
        Err(status) => {
            let message = format!("gRPC {:?}: {}", status.code(), status.message());
            // The OTLP specification's retryable codes, plus UNKNOWN (what a
            // broken connection often surfaces as) and the codes that mean
            // "fix the configuration" (credentials, wrong endpoint). The
            // exporter retries a permanent refusal too (it never skips a
            // record), but logs and counts it as a stall.
            if status.code() == Code::ResourceExhausted && status.details().is_empty() {
                return Err(Failure { error: SendError::Permanent(message), too_large: true });
            }
            Err(Failure::from(match status.code() {
                Code::Unauthenticated | Code::PermissionDenied | Code::Unimplemented | Code::NotFound => {
                    SendError::Retryable(format!("{message} (check the exporter's endpoint and credentials)"))
                }
                // Throttling is retryable only when the server says when (RetryInfo).
                Code::ResourceExhausted => SendError::Retryable(message),
                Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unavailable
                | Code::DataLoss
                | Code::Unknown => SendError::Retryable(message),
                _ => SendError::Permanent(message),
            }))
        }
    }
}

async fn send_http(
    client: &reqwest::Client,
    url: &str,
    options: &ClientOptions,
    signal: Signal,
    payload: Bytes,
) -> Result<Delivered, Failure> {
    let mut request = client.post(url).header(http::header::CONTENT_TYPE, "application/x-protobuf");
    for (name, value) in &options.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let body = if options.gzip {
        request = request.header(http::header::CONTENT_ENCODING, "gzip");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder
            .write_all(&payload)
            .and_then(|()| encoder.finish())
            .map(Bytes::from)
            .map_err(|e| SendError::Retryable(format!("gzip: {e}")))?
    } else {
        payload
    };
    let response = request.body(body).send().await.map_err(|e| SendError::Retryable(format!("POST {url}: {e}")))?;
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_default();
    if status.is_success() {
        return Ok(partial_success(signal, &bytes));
    }
    let message = format!("POST {url}: HTTP {status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(512)]));
    Err(match status.as_u16() {
        429 | 502 | 503 | 504 => SendError::Retryable(message).into(),
        // Credentials or the URL are wrong: retried until the configuration
        // is fixed, so nothing is skipped meanwhile.
        401 | 403 | 404 | 405 | 407 => {
            SendError::Retryable(format!("{message} (check the exporter's endpoint and credentials)")).into()
        }
        413 => Failure { error: SendError::Permanent(message), too_large: true },
        _ => SendError::Permanent(message).into(),
    })
}

/// Reads a partial success out of an export response, if there is one.
fn partial_success(signal: Signal, body: &[u8]) -> Delivered {
    let decoded = match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
    };
    decoded
        .map_or_else(Delivered::default, |(rejected, message)| Delivered { rejected: rejected.max(0) as u64, message })
}
