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

use super::Ingest;
use crate::grpc_codec::{LOGS_METHOD, RawCodec, TRACES_METHOD};
use crate::otlp::Signal;
use crate::pipeline::Rejection;

/// The export service of one signal.
#[derive(Clone)]
pub struct ExportService<const LOGS: bool> {
    ingest: Arc<Ingest>,
    max_message_size: usize,
}

/// The traces service.
pub type TraceService = ExportService<false>;
/// The logs service.
pub type LogsService = ExportService<true>;

impl<const LOGS: bool> ExportService<LOGS> {
    /// A service that hands requests to `ingest`, refusing messages larger
    /// than `max_message_size` bytes (after decompression).
    pub fn new(ingest: Arc<Ingest>, max_message_size: usize) -> Self {
        ExportService { ingest, max_message_size }
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
            let payload = request.into_inner();
            match ingest.submit("grpc", ExportService::<LOGS>::signal(), payload).await {
                // An empty Export*ServiceResponse: everything accepted.
                Ok(()) => Ok(tonic::Response::new(Bytes::new())),
                Err(rejection) => Err(status(&rejection)),
            }
        })
    }
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
