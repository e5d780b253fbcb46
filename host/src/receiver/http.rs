//! OTLP/HTTP receiver: `POST /v1/traces` and `POST /v1/logs` with
//! `application/x-protobuf` or `application/json` bodies, optionally
//! gzip-compressed. The body limit applies to the bytes on the wire and
//! again to the decompressed bytes, so a gzip bomb stops at the limit.
//! Errors carry a `google.rpc.Status` in the request's encoding, as the
//! OTLP specification says.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use prost::Message;

use super::{Admission, Ingest};
use crate::listener::Peer;
use crate::otlp::{self, Encoding, Signal};
use crate::pipeline::Rejection;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// Shared state of the HTTP handlers.
#[derive(Clone)]
struct Receiver {
    ingest: Arc<Ingest>,
    max_body: usize,
    admission: Arc<Admission>,
}

/// The routes: `/v1/traces` and `/v1/logs`. `max_body` bounds both the
/// received and the decompressed body, in bytes; `admission` how many
/// requests are read at once and for how long.
pub fn router(ingest: Arc<Ingest>, max_body: usize, admission: Arc<Admission>) -> axum::Router {
    axum::Router::new().route("/v1/traces", post(traces)).route("/v1/logs", post(logs)).with_state(Receiver {
        ingest,
        max_body,
        admission,
    })
}

async fn traces(
    State(receiver): State<Receiver>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receiver.export(Signal::Traces, peer.map(|p| p.0).as_ref(), &headers, body).await
}

async fn logs(
    State(receiver): State<Receiver>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receiver.export(Signal::Logs, peer.map(|p| p.0).as_ref(), &headers, body).await
}

/// A refusal before the request reached the pipeline.
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal { status, message: message.into() }
    }
}

impl Receiver {
    /// A retryable refusal: no slot for this request now.
    fn busy(&self, signal: Signal, message: &str, encoding: Encoding) -> Response {
        self.ingest.count("http", signal, &Err(Rejection::Unavailable(message.into())));
        let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, message, encoding);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }

    async fn export(&self, signal: Signal, peer: Option<&Peer>, headers: &HeaderMap, body: Body) -> Response {
        let encoding = match content_type(headers) {
            Ok(encoding) => encoding,
            Err(refusal) => {
                self.ingest.count("http", signal, &Err(Rejection::Invalid(refusal.message.clone())));
                return error_response(refusal.status, &refusal.message, Encoding::Protobuf);
            }
        };
        let _admitted = match self.admission.admit(peer) {
            Ok(admitted) => admitted,
            Err(message) => return self.busy(signal, message, encoding),
        };
        let read = self.read_payload(signal, headers, body, encoding);
        let read = match tokio::time::timeout(self.admission.read_timeout, read).await {
            Ok(read) => read,
            Err(_) => Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body was not received within {:?}", self.admission.read_timeout),
            )),
        };
        let payload = match read {
            Ok(payload) => payload,
            Err(refusal) => {
                self.ingest.count("http", signal, &Err(Rejection::Invalid(refusal.message.clone())));
                return error_response(refusal.status, &refusal.message, encoding);
            }
        };
        match self.ingest.submit("http", signal, payload, peer).await {
            Ok(()) => success_response(encoding),
            Err(Rejection::Invalid(message)) => error_response(StatusCode::BAD_REQUEST, &message, encoding),
            Err(Rejection::TooLarge(message)) => error_response(StatusCode::PAYLOAD_TOO_LARGE, &message, encoding),
            Err(Rejection::Unavailable(message)) => {
                let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, &message, encoding);
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
        }
    }

    /// Reads, decompresses and (for JSON) converts the body to protobuf.
    async fn read_payload(
        &self,
        signal: Signal,
        headers: &HeaderMap,
        body: Body,
        encoding: Encoding,
    ) -> Result<Bytes, Refusal> {
        let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("").trim()) {
            None | Some("") | Some("identity") => false,
            Some(e) if e.eq_ignore_ascii_case("gzip") => true,
            Some(other) => {
                return Err(Refusal::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("unsupported Content-Encoding {other:?}; use gzip or none"),
                ));
            }
        };
        let limit = self.max_body;
        let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
            if is_length_limit(&e) {
                Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than {limit} bytes"))
            } else {
                Refusal::new(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))
            }
        })?;
        let bytes = if gzip { gunzip(&raw, limit)? } else { raw };
        match encoding {
            Encoding::Json => otlp::to_protobuf(signal, &bytes, Encoding::Json)
                .map(Bytes::from)
                .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string())),
            _ => Ok(bytes),
        }
    }
}

/// Whether reading a body failed because it passed the limit: axum wraps
/// http-body-util's `LengthLimitError`, found by type in the source chain.
fn is_length_limit(error: &axum::Error) -> bool {
    std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| e.source())
        .any(|e| e.is::<http_body_util::LengthLimitError>())
}

/// Decompresses a gzip body, refusing to produce more than `limit` bytes.
fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, Refusal> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("the gzip body does not decompress: {e}")))?;
    if out.len() > limit {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the gzip body decompresses to more than {limit} bytes"),
        ));
    }
    Ok(Bytes::from(out))
}

fn content_type(headers: &HeaderMap) -> Result<Encoding, Refusal> {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = value.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(PROTOBUF) {
        Ok(Encoding::Protobuf)
    } else if media.eq_ignore_ascii_case(JSON) {
        Ok(Encoding::Json)
    } else {
        Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Type {value:?}; OTLP/HTTP takes {PROTOBUF} or {JSON}"),
        ))
    }
}

/// `google.rpc.Status`, as OTLP/HTTP error bodies carry it.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn success_response(encoding: Encoding) -> Response {
    // An empty Export*ServiceResponse: everything was accepted.
    match encoding {
        Encoding::Json => ([(header::CONTENT_TYPE, JSON)], "{}").into_response(),
        _ => ([(header::CONTENT_TYPE, PROTOBUF)], Vec::<u8>::new()).into_response(),
    }
}

fn error_response(status: StatusCode, message: &str, encoding: Encoding) -> Response {
    let code = match status {
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted,
        _ => tonic::Code::InvalidArgument,
    } as i32;
    let rpc = RpcStatus { code, message: message.to_owned() };
    match encoding {
        Encoding::Json => {
            let body = serde_json::json!({ "code": rpc.code, "message": rpc.message }).to_string();
            (status, [(header::CONTENT_TYPE, JSON)], body).into_response()
        }
        _ => (status, [(header::CONTENT_TYPE, PROTOBUF)], rpc.encode_to_vec()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_past_the_limit_is_told_apart_by_type() {
        let error = axum::body::to_bytes(Body::from(vec![0u8; 10]), 5).await.unwrap_err();
        assert!(is_length_limit(&error), "{error:?}");
        let other = axum::Error::new(std::io::Error::other("connection reset; length limit"));
        assert!(!is_length_limit(&other), "a message mentioning a limit is not the limit");
    }
}
