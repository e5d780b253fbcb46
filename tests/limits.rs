//! Bounded resources of `otel-audit serve`, tried the way an attacker or an
//! unlucky operator would: a hardened host's `ulimit -v`, a request as large
//! as the configured limit, uploads that stall, more connections than the
//! limit. Real processes, real sockets.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use otel_audit::loadgen::{self, BatchSpec};
use prost::Message;
use support::admin::{metric, metrics};
use support::server::{Server, Setup, http_post};

fn stored(setup: &Setup) -> f64 {
    metric(&metrics(setup.ports[2]), "otel_audit_stored_records_total", &[("chain", "test/traces/audit/0")])
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Starts the setup's server under `ulimit -v` (KiB of address space).
fn start_under_ulimit(setup: &Setup, kib: u64) -> Server {
    let config = setup.dir.join("otel-audit.yaml");
    std::fs::write(&config, setup.config()).unwrap();
    let mut command = std::process::Command::new("bash");
    command
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec {} serve --config {}", support::server::binary(), config.display()))
        .env("OTEL_AUDIT_CACHE_DIR", support::cache_dir())
        .env("OTEL_AUDIT_LOG", "info");
    Server::start_command(command, &setup.dir.join("server.log"), setup.ports[3])
}

const RECORDS: usize = 260_000;

/// `n` minimal audit spans (ids, a name and `audit.action`), one resource;
/// span ids start at `first_id`.
fn small_spans(n: usize, first_id: u64) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let spans = (first_id..first_id + n as u64)
        .map(|i| Span {
            trace_id: [&[7u8; 8][..], &i.to_be_bytes()].concat(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: "login".into(),
            attributes: vec![KeyValue {
                key: "audit.action".into(),
                value: Some(AnyValue { value: Some(Value::StringValue("login".into())) }),
                key_strindex: 0,
            }],
            ..Default::default()
        })
        .collect();
    let scope = ScopeSpans { spans, ..Default::default() };
    ExportTraceServiceRequest { resource_spans: vec![ResourceSpans { scope_spans: vec![scope], ..Default::default() }] }
}

fn post_traces(setup: &Setup, body: &[u8]) -> (u16, String) {
    let (code, _, answer) =
        http_post(setup.ports[1], "/v1/traces", &[("Content-Type", "application/x-protobuf")], body);
    (code, String::from_utf8_lossy(&answer).into_owned())
}

fn large_setup(dir: &std::path::Path) -> Setup {
    let mut setup = Setup::new(dir);
    setup.max_body = 20 << 20;
    setup.segment_size = "256MiB".into();
    setup.checkpoint = "{every_records: 1000000, interval: 1s, heartbeat: 5s}".into();
    setup
}

#[test]
fn serves_under_a_hardened_address_space_limit_and_takes_a_request_of_the_configured_size() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = large_setup(tmp.path());
    // 4 GiB of address space: wasmtime's default reservations (4 GiB per
    // memory slot) would not fit even one instance.
    let server = start_under_ulimit(&setup, 4 << 20);
    // About 16 MiB of small audit spans, under the 20 MiB body limit: their
    // records and kept copy are more than wasmtime lets a guest hand back
    // by default (128 MiB).
    let body = small_spans(RECORDS, 0).encode_to_vec();
    assert!(body.len() > 14 << 20 && body.len() < 20 << 20, "{} bytes", body.len());
    let large = std::thread::scope(|scope| {
        let large = scope.spawn(|| post_traces(&setup, &body));
        // Once its first part is stored, a small request on the same chain
        // is taken before the large one's last part: the chain is not
        // held for the whole of it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while stored(&setup) == 0.0 {
            assert!(Instant::now() < deadline && !large.is_finished(), "the first part was not stored");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (code, answer) = post_traces(&setup, &small_spans(5, 1 << 40).encode_to_vec());
        assert_eq!(code, 200, "{answer}");
        large.join().unwrap()
    });
    assert_eq!(large.0, 200, "{}", large.1);
    assert_eq!(stored(&setup), (RECORDS + 5) as f64);
    assert!(server.stop().success());
    // Processed in parts with the small request between two of them; the
    // trail verifies.
    let stored_ids: Vec<String> = support::trail::read_store(&setup.store).iter().flat_map(|c| c.span_ids()).collect();
    let small_at = stored_ids.iter().position(|id| *id == hex::encode(((1u64 << 40) + 1).to_be_bytes())).unwrap();
    let large_last = stored_ids.iter().position(|id| *id == hex::encode((RECORDS as u64).to_be_bytes())).unwrap();
    assert!(small_at > 0 && small_at < large_last, "small request at {small_at}, large one ends at {large_last}");
    setup.assert_verifies();
}

#[test]
fn a_large_request_with_an_invalid_record_in_its_last_part_is_refused_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = large_setup(tmp.path());
    let server = setup.start();
    let mut request = small_spans(RECORDS, 0);
    request.resource_spans[0].scope_spans[0].spans[RECORDS - 1].trace_id.truncate(12);
    let (code, answer) = post_traces(&setup, &request.encode_to_vec());
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer.contains(&format!(
            "resource_spans[0].scope_spans[0].spans[{}]: trace_id must be 16 bytes (32 hex digits) or empty, got 12 bytes",
            RECORDS - 1
        )),
        "{answer}"
    );
    // None of its parts was stored; the chain goes on.
    assert_eq!(stored(&setup), 0.0);
    let (code, answer) = post_traces(&setup, &small_spans(5, 0).encode_to_vec());
    assert_eq!(code, 200, "{answer}");
    assert_eq!(stored(&setup), 5.0);
    assert!(server.stop().success());
    setup.assert_verifies();
}

#[test]
fn stalled_uploads_are_bounded_refused_past_the_limit_and_timed_out() {
    let tmp = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(tmp.path());
    setup.max_body = 20 << 20;
    setup.receiver_extra = [
        String::new(),
        "        max_in_flight_requests: 4\n        max_in_flight_requests_per_client: 4\n        read_timeout: 3s\n        \
         max_connections: 64\n"
            .into(),
    ];
    let server = setup.start();
    let port = setup.ports[1];
    let before = rss_kib(server.pid());

    // 4 uploads announce 19 MiB, send 1 MiB and stall: they hold the slots.
    let chunk = vec![b'x'; 1 << 20];
    let mut stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let head = format!(
                "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n\
                 Content-Length: {}\r\n\r\n",
                19 << 20
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&chunk).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Past the limit: refused at once, retryable, not held.
    let began = Instant::now();
    let (code, _, _) = http_post(port, "/v1/traces", &[("Content-Type", "application/x-protobuf")], b"");
    assert_eq!(code, 503, "a fifth request while four uploads stall");
    assert!(began.elapsed() < Duration::from_secs(2), "refused only after {:?}", began.elapsed());
    // gRPC has its own slots: it is served meanwhile.
    let spec = BatchSpec { records: 5, audit_ratio: 1.0, ..Default::default() };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let grpc = otel_audit::exporter::client::Client::new(
        &otel_audit::exporter::client::Destination::Grpc { endpoint: setup.grpc_uri() },
        otel_audit::exporter::client::ClientOptions { headers: vec![], gzip: false, timeout: Duration::from_secs(5) },
    )
    .unwrap();
    runtime
        .block_on(grpc.send(otel_audit::otlp::Signal::Traces, loadgen::traces(&spec).encode_to_vec().into()))
        .unwrap();

    // The read timeout ends the stalled uploads (408) and frees the slots.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = [0u8; 64];
        let n = s.read(&mut answer).unwrap_or(0);
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 408"), "a stalled upload got {text:?}");
    }
    let body = loadgen::traces(&spec).encode_to_vec();
    let (code, _, _) = http_post(port, "/v1/traces", &[("Content-Type", "application/x-protobuf")], &body);
    assert_eq!(code, 200, "served again once the stalled uploads timed out");
    assert_eq!(stored(&setup), 10.0, "nothing of the stalled uploads was stored");
    let after = rss_kib(server.pid());
    eprintln!("RSS before {before} KiB, after four stalled 19 MiB uploads {after} KiB");
    assert!(after < before + 200 * 1024, "RSS grew from {before} to {after} KiB");
    drop(stalled);
    assert!(server.stop().success());
}

#[test]
fn connections_past_the_limit_get_one_busy_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(tmp.path());
    setup.receiver_extra = [String::new(), "        max_connections: 3\n".into()];
    let server = setup.start();
    let port = setup.ports[1];
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, _) = http_post(port, "/v1/traces", &[("Content-Type", "application/x-protobuf")], b"");
    assert_eq!(code, 503, "a fourth connection");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let spec = BatchSpec { records: 3, audit_ratio: 1.0, ..Default::default() };
    let body = loadgen::traces(&spec).encode_to_vec();
    let (code, _, _) = http_post(port, "/v1/traces", &[("Content-Type", "application/x-protobuf")], &body);
    assert_eq!(code, 200, "served once the others closed");
    assert!(server.stop().success());
}

#[test]
fn with_authentication_an_unauthenticated_upload_holds_no_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(tmp.path());
    setup.max_body = 20 << 20;
    let token = "writer-token-for-limits-0123456789";
    let token_file = tmp.path().join("writers.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    setup.extensions = vec![("bearertokenauth/writers".into(), format!("    filename: {}", token_file.display()))];
    setup.receiver_extra = [
        String::new(),
        "        max_in_flight_requests: 2\n        auth:\n          authenticator: bearertokenauth/writers\n".into(),
    ];
    let server = setup.start();
    let port = setup.ports[1];
    // Eight uploads without a token announce 19 MiB and stall: each is
    // answered 401 from its headers, before a slot or its body is taken.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            19 << 20
        );
        s.write_all(head.as_bytes()).unwrap();
        let _ = s.write_all(&[b'x'; 16 << 10]);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = [0u8; 64];
        let n = s.read(&mut answer).unwrap_or(0);
        let text = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(text.starts_with("HTTP/1.1 401"), "an upload without a token got {text:?}");
        stalled.push(s);
    }
    // With them still connected, a writer is served on both of the two slots.
    let body = loadgen::traces(&BatchSpec { records: 5, audit_ratio: 1.0, ..Default::default() }).encode_to_vec();
    let bearer = format!("Bearer {token}");
    for _ in 0..2 {
        let headers = [("Content-Type", "application/x-protobuf"), ("Authorization", bearer.as_str())];
        let (code, _, answer) = http_post(port, "/v1/traces", &headers, &body);
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&answer));
    }
    assert_eq!(stored(&setup), 10.0);
    drop(stalled);
    assert!(server.stop().success());
}

/// An upload to the HTTP receiver from `source` (a loopback address) that
/// announces 19 MiB, sends 1 MiB and stalls.
fn stalled_upload(runtime: &tokio::runtime::Runtime, source: &str, port: u16) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = runtime.block_on(socket.connect(([127, 0, 0, 1], port).into())).unwrap().into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    let mut s = stream;
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        19 << 20
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&vec![b'x'; 1 << 20]).unwrap();
    s
}

#[test]
fn a_client_stalling_its_uploads_leaves_a_share_of_the_slots_to_others() {
    let tmp = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(tmp.path());
    setup.max_body = 20 << 20;
    // Eight slots; one client address may hold six (the default, 3/4).
    setup.receiver_extra = [String::new(), "        max_in_flight_requests: 8\n".into()];
    let server = setup.start();
    let port = setup.ports[1];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stalled: Vec<TcpStream> = (0..6).map(|_| stalled_upload(&runtime, "127.0.0.1", port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // The stalling address gets no seventh slot.
    let (code, _, answer) = http_post(port, "/v1/traces", &[("Content-Type", "application/x-protobuf")], b"");
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("from this client address"), "{answer:?}");
    // Another address is served meanwhile, on the slots left.
    let body = loadgen::traces(&BatchSpec { records: 5, audit_ratio: 1.0, ..Default::default() }).encode_to_vec();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = runtime.block_on(socket.connect(([127, 0, 0, 1], port).into())).unwrap().into_std().unwrap();
    other.set_nonblocking(false).unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    other.write_all(head.as_bytes()).unwrap();
    other.write_all(&body).unwrap();
    other.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let _ = other.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "another client address got {answer:?}");
    assert_eq!(stored(&setup), 5.0);
    drop(stalled);
    assert!(server.stop().success());
}
