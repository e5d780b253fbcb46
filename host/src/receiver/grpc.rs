//! OTLP/gRPC receiver: the `TraceService/Export` and `LogsService/Export`
//! methods, served by tonic with the pass-through [`RawCodec`], so the
//! request bytes reach the processor exactly as the client sent them.
//! gzip request compression and the message size limit (which also bounds
//! decompression) are tonic's.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::codec::CompressionEncoding;
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Status};

use super::{Admission, Ingest};
use crate::grpc_codec::{LOGS_METHOD, RawCodec, TRACES_METHOD};
use crate::listener::Peer;
use crate::otlp::Signal;
use crate::pipeline::Rejection;

/// The export service of one signal.
#[derive(Clone)]
pub struct ExportService<const LOGS: bool> {
    ingest: Arc<Ingest>,
    max_message_size: usize,
    admission: Arc<Admission>,
}

/// The traces service.
pub type TraceService = ExportService<false>;
/// The logs service.
pub type LogsService = ExportService<true>;

impl<const LOGS: bool> ExportService<LOGS> {
    /// A service that hands requests to `ingest`, refusing messages larger
    /// than `max_message_size` bytes (after decompression), and requests
    /// past what `admission` lets in at once or reads in time.
    pub fn new(ingest: Arc<Ingest>, max_message_size: usize, admission: Arc<Admission>) -> Self {
        ExportService { ingest, max_message_size, admission }
    }

    const fn signal() -> Signal {
        if LOGS { Signal::Logs } else { Signal::Traces }
    }

    const fn method() -> &'static str {
        if LOGS { LOGS_METHOD } else { TRACES_METHOD }
    }
}

impl NamedService for ExportService<false> {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl NamedService for ExportService<true> {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<const LOGS: bool> tower_service::Service<http::Request<tonic::body::Body>> for ExportService<LOGS> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if request.uri().path() != Self::method() {
                return Ok(Status::unimplemented(format!("unknown method {}", request.uri().path())).into_http());
            }
            let _admitted = match this.admission.admit(request.extensions().get::<Peer>()) {
                Ok(admitted) => admitted,
                Err(message) => {
                    this.ingest.count("grpc", Self::signal(), &Err(Rejection::Unavailable(message.into())));
                    return Ok(retryable_exhausted(message).into_http());
                }
            };
            let (parts, body) = request.into_parts();
            // The whole body, read here under a deadline and a size bound
            // (one message of the largest size and its frame header), so
            // that a slow or endless upload neither waits forever nor grows.
            let limited = http_body_util::Limited::new(body, this.max_message_size.saturating_add(5));
            let read = tokio::time::timeout(this.admission.read_timeout, http_body_util::BodyExt::collect(limited));
            let body = match read.await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(error)) => {
                    let status = if error.is::<http_body_util::LengthLimitError>() {
                        Status::resource_exhausted(format!(
                            "the request message is too large: more than max_recv_msg_size ({} bytes)",
                            this.max_message_size
                        ))
                    } else {
                        Status::invalid_argument(format!("cannot read the request: {error}"))
                    };
                    return Ok(status.into_http());
                }
                Err(_) => {
                    let message = format!("the request was not received within {:?}", this.admission.read_timeout);
                    return Ok(Status::deadline_exceeded(message).into_http());
                }
            };
            if let Some(count) = message_count(&body)
                && count != 1
            {
                let message = format!("a unary Export call carries exactly one message; this one has {count}");
                this.ingest.count("grpc", Self::signal(), &Err(Rejection::Invalid(message.clone())));
                return Ok(Status::invalid_argument(message).into_http());
            }
            let request = http::Request::from_parts(parts, tonic::body::Body::new(http_body_util::Full::new(body)));
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(this.max_message_size);
            let mut response = grpc.unary(Export(this), request).await;
            // tonic refuses an oversized message with OUT_OF_RANGE, which the
            // OTLP specification lists as retryable: a client would resend it
            // forever. Our handler never returns OUT_OF_RANGE, so any is
            // tonic's size check; report it as RESOURCE_EXHAUSTED without
            // retry info, which OTLP clients do not retry.
            let headers = response.headers_mut();
            if headers.get("grpc-status").is_some_and(|v| v == "11") {
                headers.insert("grpc-status", http::HeaderValue::from(Code::ResourceExhausted as i32));
            }
            Ok(response)
        })
    }
}

struct Export<const LOGS: bool>(ExportService<LOGS>);

impl<const LOGS: bool> UnaryService<Bytes> for Export<LOGS> {
    type Response = Bytes;
    type Future = BoxFuture<Result<tonic::Response<Bytes>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let ingest = self.0.ingest.clone();
        Box::pin(async move {
            let peer = request.extensions().get::<Peer>().cloned();
            let payload = request.into_inner();
            match ingest.submit("grpc", ExportService::<LOGS>::signal(), payload, peer.as_ref()).await {
                // An empty Export*ServiceResponse: everything accepted.
                Ok(()) => Ok(tonic::Response::new(Bytes::new())),
                Err(rejection) => Err(status(&rejection)),
            }
        })
    }
}

/// How many whole gRPC messages (5-byte header, then the length it says)
/// `body` holds; `None` when it ends inside one (tonic reports that).
fn message_count(body: &[u8]) -> Option<usize> {
    let (mut at, mut count) = (0usize, 0usize);
    while at < body.len() {
        let header = body.get(at..at + 5)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        at = at.checked_add(5 + len).filter(|end| *end <= body.len())?;
        count += 1;
    }
    Some(count)
}

/// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` detail, which the
/// OTLP specification makes retryable: the client backs off and resends.
pub fn retryable_exhausted(message: &str) -> Status {
    use prost::Message;
    #[derive(Clone, PartialEq, prost::Message)]
    struct Duration {
        #[prost(int64, tag = "1")]
        seconds: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        retry_delay: Option<Duration>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Any {
        #[prost(string, tag = "1")]
        type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
        #[prost(message, repeated, tag = "3")]
        details: Vec<Any>,
    }
    let retry = RetryInfo { retry_delay: Some(Duration { seconds: 1 }) };
    let details = RpcStatus {
        code: Code::ResourceExhausted as i32,
        message: message.to_owned(),
        details: vec![Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: retry.encode_to_vec(),
        }],
    };
    Status::with_details(Code::ResourceExhausted, message, details.encode_to_vec().into())
}

/// The gRPC status for a rejection, as the OTLP specification assigns them:
/// INVALID_ARGUMENT is not retryable, UNAVAILABLE is.
pub fn status(rejection: &Rejection) -> Status {
    match rejection {
        Rejection::Invalid(m) => Status::new(Code::InvalidArgument, m.clone()),
        Rejection::Unavailable(m) => Status::new(Code::Unavailable, m.clone()),
        Rejection::TooLarge(m) => Status::new(Code::ResourceExhausted, m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_by_their_frame_headers() {
        let frame = |len: u32| {
            let mut f = vec![0u8];
            f.extend(len.to_be_bytes());
            f.extend(vec![7u8; len as usize]);
            f
        };
        assert_eq!(message_count(&frame(3)), Some(1));
        assert_eq!(message_count(&[frame(3), frame(0)].concat()), Some(2));
        assert_eq!(message_count(&[]), Some(0));
        assert_eq!(message_count(&frame(3)[..6]), None, "ends inside a message");
    }
}
