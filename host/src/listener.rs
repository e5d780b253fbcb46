//! Serves an axum router on a bound socket, the same way for every
//! listener (OTLP gRPC and HTTP, admin, health, metrics): optional TLS
//! (certificates reloaded as they rotate), bearer-token authentication
//! before any handler runs, and limits on connections, the TLS handshake
//! and header read time, HTTP/2 streams and keepalive. Each request carries
//! a [`Peer`] (address, TLS session, principal) in its extensions.
//! A connection past `max_connections` gets one 503 / RESOURCE_EXHAUSTED
//! answer and is closed; a request without a valid token gets 401 /
//! UNAUTHENTICATED and reaches no handler.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::auth::{Guard, Principal};
use crate::config::ServerLimits;
use crate::tls::{ClientIdentity, ServerTlsSource};

/// Who sent a request, as the transport knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The client's address.
    pub address: SocketAddr,
    /// The TLS session, when the listener serves TLS.
    pub tls: Option<TlsSession>,
    /// The principal its bearer token names, when the listener checks tokens.
    pub principal: Option<Principal>,
}

/// What the TLS handshake established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The client certificate's identity, under mutual TLS.
    pub client: Option<ClientIdentity>,
}

impl Peer {
    /// The name the sender is recorded by: its token's principal, else its
    /// client certificate's subject; `None` for an anonymous sender.
    pub fn principal_name(&self) -> Option<String> {
        self.principal
            .as_ref()
            .map(|p| p.name.clone())
            .or_else(|| self.tls.as_ref()?.client.as_ref().map(|c| c.subject.clone()))
    }
}

/// How one listener serves.
pub struct ListenerSpec {
    /// `OTLP/gRPC`, `admin`...: names the listener in logs.
    pub name: &'static str,
    /// TLS, when configured.
    pub tls: Option<Arc<ServerTlsSource>>,
    /// The tokens it accepts (none: anyone).
    pub guard: Arc<Guard>,
    /// Its limits.
    pub limits: ServerLimits,
}

/// Accepts connections until `stop`, then lets the open ones finish their
/// requests (the caller bounds how long by aborting the task).
pub async fn serve(listener: TcpListener, app: axum::Router, spec: ListenerSpec, stop: CancellationToken) {
    let spec = Arc::new(spec);
    let slots = Arc::new(Semaphore::new(spec.limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or a connection reset before
                    // accept: wait a moment rather than spin.
                    tracing::warn!(listener = spec.name, %error, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let slot = slots.clone().try_acquire_owned().ok();
        if slot.is_none() {
            tracing::debug!(listener = spec.name, %address, "connection limit reached; answering busy");
        }
        let watcher = graceful.watcher();
        let (spec, app) = (spec.clone(), app.clone());
        tokio::spawn(async move {
            let _slot = slot.as_ref();
            let busy = slot.is_none();
            let limits = &spec.limits;
            let mut peer = Peer { address, tls: None, principal: None };
            let io = match &spec.tls {
                None => tokio_util::either::Either::Left(tcp),
                Some(tls) => {
                    let handshake = tls.acceptor().accept(tcp);
                    let stream = match tokio::time::timeout(limits.read_header_timeout, handshake).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::info!(listener = spec.name, %address, %error, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(listener = spec.name, %address, "TLS handshake timed out");
                            return;
                        }
                    };
                    let (_, session) = stream.get_ref();
                    peer.tls = Some(TlsSession {
                        version: session
                            .protocol_version()
                            .and_then(|v| v.as_str())
                            .unwrap_or("TLS")
                            .replace("TLSv1_", "TLSv1."),
                        client: session.peer_certificates().and_then(|c| c.first()).and_then(ClientIdentity::of),
                    });
                    tokio_util::either::Either::Right(stream)
                }
            };
            let guard = spec.guard.clone();
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let (app, guard, mut peer) = (app.clone(), guard.clone(), peer.clone());
                async move {
                    if busy {
                        return Ok::<_, Infallible>(refusal(&request, Refused::Busy));
                    }
                    match guard.check(request.headers()) {
                        Ok(principal) => peer.principal = principal,
                        Err(()) => return Ok(refusal(&request, Refused::Unauthenticated)),
                    }
                    let mut request = request.map(Body::new);
                    request.extensions_mut().insert(peer);
                    app.oneshot(request).await
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.read_header_timeout).keep_alive(!busy);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(if busy { 1 } else { limits.max_concurrent_streams })
                .keep_alive_interval(limits.keepalive_time)
                .keep_alive_timeout(limits.keepalive_timeout);
            let connection = builder.serve_connection(TokioIo::new(io), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(listener = spec.name, %address, %error, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}

/// Why a request was answered by the listener itself.
enum Refused {
    Busy,
    Unauthenticated,
}

/// The answer to a refused request, in its protocol: gRPC status in
/// headers for gRPC, else an HTTP status with a text body.
fn refusal<B>(request: &Request<B>, why: Refused) -> Response<Body> {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let (status, code, message) = match why {
        Refused::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::ResourceExhausted,
            "too many connections to this listener; retry later",
        ),
        Refused::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            tonic::Code::Unauthenticated,
            "a valid bearer token is required (Authorization: Bearer <token>)",
        ),
    };
    let mut response = if grpc {
        tonic::Status::new(code, message).into_http()
    } else {
        let mut response = Response::new(Body::from(format!("{message}\n")));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response
    };
    if matches!(why, Refused::Unauthenticated) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    } else {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response.map(Body::new)
}
