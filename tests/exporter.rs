//! The exporter never skips a record: a real `otel-audit serve` forwards
//! to a real downstream (a small OTLP server in this test, over HTTP or
//! gRPC on a real socket) that answers 500, then 400, then 413 for requests
//! of more than two records, then OK. The exporter stalls on the refusals
//! (logged, counted, `exporter_stalled` 1), the backlog limit turns the
//! stall into retryable errors for clients, requests refused as too large
//! are halved, and in the end the downstream holds every acknowledged
//! record, in order, once.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use otel_audit::exporter::client::{Client, ClientOptions, Destination, SendError};
use otel_audit::grpc_codec::{LOGS_METHOD, RawCodec, TRACES_METHOD};
use otel_audit::loadgen::{self, BatchSpec};
use otel_audit::otlp::Signal;
use prost::Message;
use support::server::{Setup, http_get};
use support::trail;

/// What the downstream does with the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// HTTP 500 / gRPC INTERNAL.
    Fail500,
    /// HTTP 400 / gRPC INVALID_ARGUMENT.
    Fail400,
    /// Takes requests of at most two records; larger ones get HTTP 413 /
    /// gRPC RESOURCE_EXHAUSTED.
    SmallOnly,
}

/// The answer to one request.
enum Answer {
    Ok,
    Refused(Mode),
    TooLarge,
}

/// The downstream's state: its mode, and the span ids of the traces
/// requests it took, in the order it took them.
struct Downstream {
    mode: Mutex<Mode>,
    accepted: Mutex<Vec<String>>,
    too_large: Mutex<u64>,
}

impl Downstream {
    fn answer(&self, traces: bool, body: &[u8]) -> Answer {
        let mode = *self.mode.lock().unwrap();
        if mode != Mode::SmallOnly {
            return Answer::Refused(mode);
        }
        if !traces {
            return Answer::Ok;
        }
        let request = ExportTraceServiceRequest::decode(body).expect("the exporter sends valid OTLP");
        let ids: Vec<String> = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| hex::encode(&s.span_id))
            .collect();
        if ids.len() > 2 {
            *self.too_large.lock().unwrap() += 1;
            return Answer::TooLarge;
        }
        self.accepted.lock().unwrap().extend(ids);
        Answer::Ok
    }
}

async fn serve_http(down: Arc<Downstream>, listener: tokio::net::TcpListener) {
    use axum::http::{StatusCode, Uri};
    let handler = move |uri: Uri, body: Bytes| {
        let down = down.clone();
        async move {
            let status = match down.answer(uri.path() == "/v1/traces", &body) {
                Answer::Ok => StatusCode::OK,
                Answer::Refused(Mode::Fail500) => StatusCode::INTERNAL_SERVER_ERROR,
                Answer::Refused(_) => StatusCode::BAD_REQUEST,
                Answer::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            };
            (status, [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")], Vec::<u8>::new())
        }
    };
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(handler.clone()))
        .route("/v1/logs", axum::routing::post(handler));
    axum::serve(listener, app).await.unwrap();
}

/// The gRPC downstream's export method of one signal, bytes through [`RawCodec`].
#[derive(Clone)]
struct GrpcDownstream<const LOGS: bool>(Arc<Downstream>);

impl tonic::server::NamedService for GrpcDownstream<false> {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tonic::server::NamedService for GrpcDownstream<true> {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<const LOGS: bool> tower_service::Service<http::Request<tonic::body::Body>> for GrpcDownstream<LOGS> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let down = self.0.clone();
        Box::pin(async move {
            let traces = !LOGS;
            assert_eq!(request.uri().path(), if LOGS { LOGS_METHOD } else { TRACES_METHOD });
            let mut grpc = tonic::server::Grpc::new(RawCodec);
            Ok(grpc.unary(Export { down, traces }, request).await)
        })
    }
}

struct Export {
    down: Arc<Downstream>,
    traces: bool,
}

impl tonic::server::UnaryService<Bytes> for Export {
    type Response = Bytes;
    type Future = BoxFuture<Result<tonic::Response<Bytes>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let answer = self.down.answer(self.traces, request.get_ref());
        Box::pin(async move {
            use tonic::{Code, Status};
            match answer {
                Answer::Ok => Ok(tonic::Response::new(Bytes::new())),
                Answer::Refused(Mode::Fail500) => Err(Status::new(Code::Internal, "downstream broke")),
                Answer::Refused(_) => Err(Status::new(Code::InvalidArgument, "downstream dislikes it")),
                Answer::TooLarge => Err(Status::new(Code::ResourceExhausted, "message too large")),
            }
        })
    }
}

async fn serve_grpc(down: Arc<Downstream>, listener: tokio::net::TcpListener) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .add_service(GrpcDownstream::<false>(down.clone()))
        .add_service(GrpcDownstream::<true>(down))
        .serve_with_incoming(incoming)
        .await
        .unwrap();
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

fn metrics(setup: &Setup) -> String {
    http_get(setup.ports[2], "/metrics").expect("metrics answer").1
}

/// Polls `ready` every 50 ms for at most 30 s.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A batch of five audit spans and their ids.
fn batch(seed: u64) -> (Bytes, Vec<String>) {
    let request = loadgen::traces(&BatchSpec { records: 5, audit_ratio: 1.0, attributes: 2, varied: false, seed });
    let ids = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| hex::encode(&s.span_id))
        .collect();
    (Bytes::from(request.encode_to_vec()), ids)
}

fn refusing_downstream_stalls_the_exporter_and_loses_nothing(grpc_downstream: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let down = Arc::new(Downstream {
        mode: Mutex::new(Mode::Fail500),
        accepted: Mutex::new(Vec::new()),
        too_large: Mutex::new(0),
    });
    // Bound on port 0 here: a port picked earlier may be taken by a parallel test meanwhile.
    let listener = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0))).unwrap();
    let port = listener.local_addr().unwrap().port();
    if grpc_downstream {
        rt.spawn(serve_grpc(down.clone(), listener));
    } else {
        rt.spawn(serve_http(down.clone(), listener));
    }

    let mut setup = Setup::new(tmp.path());
    setup.signals = vec!["traces"];
    let (id, endpoint) = if grpc_downstream {
        ("otlp/down", format!("127.0.0.1:{port}"))
    } else {
        ("otlphttp/down", format!("http://127.0.0.1:{port}"))
    };
    setup.exporters.push((
        id.into(),
        format!(
            "    endpoint: {endpoint}\n    compression: none\n    retry_on_failure: {{initial_interval: 20ms, max_interval: 100ms}}\n    sending_queue: {{queue_size: 20}}"
        ),
    ));
    let server = setup.start();
    let _entered = rt.enter();
    let client = Client::new(
        &Destination::Grpc { endpoint: setup.grpc_uri() },
        ClientOptions { headers: vec![], gzip: false, timeout: Duration::from_secs(10) },
    )
    .unwrap();

    // The downstream answers 500: the exporter stalls, the backlog grows to
    // its limit, then clients get retryable errors.
    let (mut acked, mut refused) = (Vec::new(), 0);
    for seed in 0..12 {
        let (payload, ids) = batch(seed);
        match rt.block_on(client.send(Signal::Traces, payload)) {
            Ok(_) => acked.extend(ids),
            Err(SendError::Retryable(m)) => {
                assert!(m.contains("wait for a downstream exporter (limit 20)"), "{m}");
                refused += 1;
            }
            Err(other) => panic!("expected UNAVAILABLE, got {other}"),
        }
    }
    assert!(acked.len() >= 20 && refused > 0, "{} acked, {refused} refused", acked.len());
    wait_for("the stall gauge", || metric(&metrics(&setup), "otel_audit_exporter_stalled") == 1.0);
    let refusals = metric(&metrics(&setup), "otel_audit_export_refusals_total");
    assert!(refusals >= 1.0, "{}", metrics(&setup));

    // Then 400 for a while: still stalled, still refused, nothing skipped.
    *down.mode.lock().unwrap() = Mode::Fail400;
    wait_for("more refusals", || metric(&metrics(&setup), "otel_audit_export_refusals_total") >= refusals + 3.0);
    assert_eq!(metric(&metrics(&setup), "otel_audit_exporter_stalled"), 1.0);
    assert!(down.accepted.lock().unwrap().is_empty());

    // Then it takes requests of at most two records: the exporter halves
    // what is refused as too large, delivers everything and goes on.
    *down.mode.lock().unwrap() = Mode::SmallOnly;
    wait_for("the backlog to drain", || down.accepted.lock().unwrap().len() == acked.len());
    let (payload, ids) = batch(100);
    rt.block_on(client.send(Signal::Traces, payload)).expect("ingestion resumes");
    acked.extend(ids);
    wait_for("the last batch downstream", || down.accepted.lock().unwrap().len() == acked.len());
    let text = metrics(&setup);
    assert_eq!(metric(&text, "otel_audit_exporter_stalled"), 0.0, "{text}");
    assert_eq!(metric(&text, "otel_audit_export_backlog_records"), 0.0, "{text}");
    assert_eq!(metric(&text, "otel_audit_exported_records_total"), acked.len() as f64, "{text}");
    assert!(*down.too_large.lock().unwrap() > 0, "no request was halved");
    let log = server.log_text();
    assert!(server.stop().success());

    // Every acknowledged record reached the downstream, in order, once.
    assert_eq!(*down.accepted.lock().unwrap(), acked);
    let stored: Vec<String> = trail::read_store(&setup.store).iter().flat_map(|c| c.span_ids()).collect();
    assert_eq!(stored, acked);
    // The stall was logged once when it started, naming exporter, chain,
    // the request and the downstream's answer, and its end.
    let starts: Vec<&str> =
        log.lines().filter(|l| l.contains("downstream refused a request; the exporter stalls")).collect();
    let answer = if grpc_downstream { "Internal" } else { "HTTP 500" };
    assert!(starts.iter().any(|l| l.contains(id) && l.contains("test/traces/audit/0") && l.contains(answer)), "{log}");
    // The request it stalled on first: the start checkpoint or the first records.
    assert!(
        starts.iter().all(|l| l.contains("request=records ") || l.contains("request=the checkpoints of the records")),
        "{starts:#?}"
    );
    assert!(starts.len() <= 4, "the stall is logged when it starts, not at every attempt: {starts:#?}");
    assert!(log.contains("downstream took the request it refused"), "{log}");
    assert!(log.contains("sending it in halves"), "{log}");
}

#[test]
fn an_http_downstream_refusing_for_a_while_gets_every_acknowledged_record_in_order() {
    refusing_downstream_stalls_the_exporter_and_loses_nothing(false);
}

#[test]
fn a_grpc_downstream_refusing_for_a_while_gets_every_acknowledged_record_in_order() {
    refusing_downstream_stalls_the_exporter_and_loses_nothing(true);
}
