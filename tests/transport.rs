//! Secure transport of `otel-audit serve`, with real clients over real
//! sockets and certificates made in the test: TLS and mutual TLS on the
//! OTLP receivers (the OpenTelemetry Python SDK, rotel, otel-audit's own
//! exporter), bearer tokens for writers and separate ones for the admin
//! endpoint, refusals that store nothing, and a certificate rotated on disk
//! served without a restart.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use otel_audit::config::ClientTls;
use otel_audit::exporter::client::{Client, ClientOptions, Destination, SendError};
use otel_audit::loadgen::{self, BatchSpec};
use otel_audit::otlp::Signal;
use prost::Message;
use support::admin::{metric, metrics};
use support::pki::{Pair, Pki};
use support::server::{Server, Setup, python};

const WRITER_TOKEN: &str = "writer-7f3a";
const ADMIN_TOKEN: &str = "admin-c41d";
const READER_TOKEN: &str = "reader-99e0";
const UPSTREAM_TOKEN: &str = "upstream-51b2";

/// The CA, the server's certificate and the clients' certificates.
struct Certificates {
    pki: Pki,
    other_ca: Pki,
    server: Pair,
    client: Pair,
    expired: Pair,
    stranger: Pair,
}

fn certificates(dir: &Path) -> Certificates {
    let pki = Pki::new(&dir.join("pki"), "audit-ca");
    let other_ca = Pki::new(&dir.join("other"), "other-ca");
    Certificates {
        server: pki.server("server", "otel-audit-1"),
        client: pki.client("client", "collector-7", "collector-7.example", false),
        expired: pki.client("expired", "collector-old", "collector-old.example", true),
        stranger: other_ca.client("stranger", "collector-x", "collector-x.example", false),
        pki,
        other_ca,
    }
}

/// `tls:` and `auth:` of a receiver protocol (mutual TLS and a token).
fn receiver_security(certs: &Certificates) -> String {
    format!(
        "        tls:\n          cert_file: {}\n          key_file: {}\n          client_ca_file: {}\n          \
         reload_interval: 1s\n        auth:\n          authenticator: bearertokenauth/writers\n",
        certs.server.cert.display(),
        certs.server.key.display(),
        certs.pki.ca.display()
    )
}

/// Writes the setup's config and starts it with the tokens in its environment.
fn start(setup: &Setup, env: &[(&str, &str)]) -> Server {
    let config = setup.dir.join("otel-audit.yaml");
    std::fs::write(&config, setup.config()).unwrap();
    Server::start(&config, &setup.dir.join("server.log"), setup.ports[3], env)
}

fn stored(setup: &Setup) -> f64 {
    let text = metrics(setup.ports[2]);
    metric(&text, "otel_audit_stored_records_total", &[("chain", "test/traces/audit/0")])
        + metric(&text, "otel_audit_stored_records_total", &[("chain", "test/logs/audit/0")])
}

fn wait_stored(setup: &Setup, at_least: f64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored(setup) < at_least {
        assert!(Instant::now() < deadline, "{what}: {} of {at_least} records stored", stored(setup));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Client TLS trusting `ca`, presenting `identity` if given.
fn tls(ca: &Path, identity: Option<&Pair>) -> ClientTls {
    ClientTls {
        ca_file: Some(ca.to_owned()),
        cert_file: identity.map(|p| p.cert.clone()),
        key_file: identity.map(|p| p.key.clone()),
        ..Default::default()
    }
}

fn client(grpc: bool, port: u16, tls: Option<&ClientTls>, token: Option<&str>) -> Client {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let destination = if grpc {
        Destination::Grpc { endpoint: format!("{scheme}://127.0.0.1:{port}") }
    } else {
        let base = format!("{scheme}://127.0.0.1:{port}");
        Destination::Http { traces_url: format!("{base}/v1/traces"), logs_url: format!("{base}/v1/logs") }
    };
    let headers = token.map(|t| ("authorization".to_owned(), format!("Bearer {t}"))).into_iter().collect();
    let options = ClientOptions { headers, gzip: false, timeout: Duration::from_secs(5) };
    Client::with_tls(&destination, options, tls).unwrap()
}

/// Five audit spans (all kept by the soc2 policy).
fn spans(seed: u64) -> bytes::Bytes {
    let spec = BatchSpec { records: 5, audit_ratio: 1.0, seed, ..Default::default() };
    loadgen::traces(&spec).encode_to_vec().into()
}

fn send(runtime: &tokio::runtime::Runtime, client: &Client, seed: u64) -> Result<(), SendError> {
    runtime.block_on(client.send(Signal::Traces, spans(seed))).map(drop)
}

/// Runs the SDK app over `protocol` against `endpoint` with the SDK's TLS
/// variables and a bearer header; asserts every export was acknowledged.
fn run_sdk_app(protocol: &str, endpoint: &str, dir: &Path, certs: &Certificates) -> usize {
    let report = dir.join(format!("sdk-{protocol}.json"));
    let out = Command::new(python())
        .arg(support::root().join("tests/e2e/sdk_app.py"))
        .args(["--protocol", protocol, "--endpoint", endpoint, "--rounds", "3"])
        .args(["--header", &format!("Authorization=Bearer {WRITER_TOKEN}"), "--out"])
        .arg(&report)
        .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &certs.pki.ca)
        .env("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &certs.client.cert)
        .env("OTEL_EXPORTER_OTLP_CLIENT_KEY", &certs.client.key)
        // requests lets these override the exporter's CA file (its session
        // verify setting loses to them): a machine that sets them would
        // make the SDK distrust our CA.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sdk_app.py over {protocol} with TLS failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    report["audit_spans"].as_array().unwrap().len() + report["audit_logs"].as_array().unwrap().len()
}

fn write_token(dir: &Path, name: &str, token: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

fn otel_audit(args: &[&str]) -> std::process::Output {
    Command::new(support::server::binary()).args(args).output().unwrap()
}

#[test]
fn tls_mutual_tls_and_tokens_guard_the_receivers_and_the_admin_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = certificates(tmp.path());
    let mut setup = Setup::new(tmp.path());
    setup.receiver_extra = [receiver_security(&certs), receiver_security(&certs)];
    // The soc2 policy, also stamping the sender's principal and address
    // (the attributes processor's from_context).
    let soc2 = std::fs::read_to_string(&setup.policy).unwrap();
    let with_context = soc2.replacen(
        "  actions:\n",
        "  actions:\n    - {key: audit.principal, from_context: auth.principal, action: upsert}\n    \
         - {key: audit.client, from_context: client.address, action: insert}\n",
        1,
    );
    assert_ne!(soc2, with_context);
    setup.policy = tmp.path().join("soc2-with-context.yaml");
    std::fs::write(&setup.policy, with_context).unwrap();
    let readers = write_token(tmp.path(), "readers.token", READER_TOKEN);
    setup.extensions = vec![
        ("bearertokenauth/writers".into(), "    token: ${env:WRITER_TOKEN}".into()),
        ("bearertokenauth/admin".into(), "    token: ${env:ADMIN_TOKEN}".into()),
        ("bearertokenauth/readers".into(), format!("    filename: {}", readers.display())),
    ];
    let admin_port = support::server::free_port();
    setup.admin = Some(admin_port);
    setup.admin_extra = "    auth: {authenticator: bearertokenauth/admin}\n    \
                         read_auth: {authenticator: bearertokenauth/readers}\n"
        .into();
    let server = start(&setup, &[("WRITER_TOKEN", WRITER_TOKEN), ("ADMIN_TOKEN", ADMIN_TOKEN)]);
    let (grpc_port, http_port) = (setup.ports[0], setup.ports[1]);

    // The OpenTelemetry Python SDK, over TLS with a client certificate and
    // the writers' token, on both protocols.
    let grpc_records = run_sdk_app("grpc", &format!("https://127.0.0.1:{grpc_port}"), tmp.path(), &certs);
    let http_records = run_sdk_app("http", &format!("https://127.0.0.1:{http_port}"), tmp.path(), &certs);
    assert!(grpc_records > 0 && http_records > 0);
    wait_stored(&setup, (grpc_records + http_records) as f64, "the SDK's records over TLS");

    // otel-audit's own client, accepted the same way.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let trusted = tls(&certs.pki.ca, Some(&certs.client));
    for grpc in [true, false] {
        let port = if grpc { grpc_port } else { http_port };
        send(&runtime, &client(grpc, port, Some(&trusted), Some(WRITER_TOKEN)), 1).unwrap();
    }
    let accepted = (grpc_records + http_records + 10) as f64;
    wait_stored(&setup, accepted, "two accepted batches");

    // Refused, each without anything stored.
    let no_identity = tls(&certs.pki.ca, None);
    let expired = tls(&certs.pki.ca, Some(&certs.expired));
    let stranger = tls(&certs.pki.ca, Some(&certs.stranger));
    let wrong_ca = tls(&certs.other_ca.ca, Some(&certs.client));
    for grpc in [true, false] {
        let port = if grpc { grpc_port } else { http_port };
        let cases: [(&str, Client); 7] = [
            ("plaintext to a TLS port", client(grpc, port, None, Some(WRITER_TOKEN))),
            (
                "a server certificate from a CA the client does not trust",
                client(grpc, port, Some(&wrong_ca), Some(WRITER_TOKEN)),
            ),
            ("no client certificate under mTLS", client(grpc, port, Some(&no_identity), Some(WRITER_TOKEN))),
            ("an expired client certificate", client(grpc, port, Some(&expired), Some(WRITER_TOKEN))),
            ("a client certificate of another CA", client(grpc, port, Some(&stranger), Some(WRITER_TOKEN))),
            ("no token", client(grpc, port, Some(&trusted), None)),
            ("a wrong token", client(grpc, port, Some(&trusted), Some("writer-guess"))),
        ];
        for (i, (case, client)) in cases.iter().enumerate() {
            let outcome = send(&runtime, client, 100 + i as u64);
            assert!(outcome.is_err(), "{case} over {} was accepted", if grpc { "gRPC" } else { "HTTP" });
            if case.contains("token") {
                let message = outcome.unwrap_err().to_string().to_lowercase();
                assert!(
                    message.contains("unauthenticated") || message.contains("401"),
                    "{case}: not refused as unauthenticated: {message}"
                );
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stored(&setup), accepted, "a refused request stored something");
    let text = metrics(setup.ports[2]);
    assert!(text.contains("otel_audit_requests_total"), "{text}");

    // The admin endpoint: its own tokens, read-only or full; no writer's
    // token, no browser, no foreign Host.
    let admin = format!("127.0.0.1:{admin_port}");
    let writers = write_token(tmp.path(), "writers.token", WRITER_TOKEN);
    let admins = write_token(tmp.path(), "admins.token", ADMIN_TOKEN);
    let status = |token: &Path| otel_audit(&["status", "--admin", &admin, "--token-file", token.to_str().unwrap()]);
    let reload = |token: &Path| otel_audit(&["reload", "--admin", &admin, "--token-file", token.to_str().unwrap()]);
    let out = status(&writers);
    assert!(!out.status.success(), "a writer's token read the admin status");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(status(&readers).status.success(), "{}", String::from_utf8_lossy(&status(&readers).stderr));
    let out = reload(&readers);
    assert!(!out.status.success(), "a read-only token reloaded");
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = reload(&admins);
    assert!(out.status.success(), "the admin token cannot reload: {}", String::from_utf8_lossy(&out.stderr));
    let out = otel_audit(&["status", "--admin", &admin]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "no token: {}", String::from_utf8_lossy(&out.stderr));

    let http = reqwest::Client::new();
    let post = |headers: &[(&str, &str)]| {
        let mut request = http
            .post(format!("http://{admin}/admin/reload"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "text/plain")
            .body("x");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        runtime.block_on(async { request.send().await.unwrap().status().as_u16() })
    };
    assert_eq!(post(&[("origin", "http://evil.example")]), 403, "a cross-origin POST");
    assert_eq!(post(&[("sec-fetch-site", "cross-site")]), 403, "a cross-site fetch");
    assert_eq!(post(&[("host", "rebound.evil.example:13134")]), 421, "a foreign Host");
    assert_eq!(post(&[]), 200, "the admin token, as curl sends it");
    assert!(server.stop().success());

    // Every accepted record names its sender: protocol, TLS, the token's
    // principal and the client certificate; the host's own events do not.
    let chains = support::trail::read_store(&setup.store);
    let sent: Vec<&serde_json::Value> =
        chains.iter().flat_map(|c| &c.records).filter(|r| r.get("sender").is_some()).collect();
    assert_eq!(sent.len() as f64, accepted, "records with a sender");
    for record in &sent {
        let sender = &record["sender"];
        assert_eq!(record["v"], 2, "{record}");
        assert_eq!(sender["principal"], "bearertokenauth/writers", "{record}");
        assert_eq!(sender["tls"], "TLSv1.3", "{record}");
        assert_eq!(sender["certificate"]["subject"], "CN=collector-7, O=Example Audit", "{record}");
        assert_eq!(sender["certificate"]["sans"], serde_json::json!(["DNS:collector-7.example"]), "{record}");
        assert!(sender["address"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{record}");
        let item = record.get("span").or_else(|| record.get("log")).unwrap();
        assert_eq!(item["attributes"]["audit.principal"]["s"], "bearertokenauth/writers", "{record}");
        assert_eq!(item["attributes"]["audit.client"]["s"], sender["address"], "{record}");
    }
    for protocol in ["grpc", "http"] {
        assert!(sent.iter().any(|r| r["sender"]["protocol"] == protocol), "no record came over {protocol}");
    }
    setup.assert_verifies();
}

#[test]
fn a_certificate_rotated_on_disk_is_served_to_new_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = certificates(tmp.path());
    let mut setup = Setup::new(tmp.path());
    let tls_only = format!(
        "        tls: {{cert_file: {}, key_file: {}, reload_interval: 1s}}\n",
        certs.server.cert.display(),
        certs.server.key.display()
    );
    setup.receiver_extra = [tls_only.clone(), tls_only];
    let server = start(&setup, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let served = || runtime.block_on(served_certificate(setup.ports[1], &certs.pki.ca));
    assert_eq!(served(), "CN=otel-audit-1");
    // A connection opened before the rotation.
    let trusted = tls(&certs.pki.ca, None);
    let open = client(false, setup.ports[1], Some(&trusted), None);
    send(&runtime, &open, 1).unwrap();

    let rotated = certs.pki.server("rotated", "otel-audit-2");
    std::fs::copy(&rotated.key, &certs.server.key).unwrap();
    std::fs::copy(&rotated.cert, &certs.server.cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while served() != "CN=otel-audit-2" {
        assert!(Instant::now() < deadline, "the rotated certificate is not served");
        std::thread::sleep(Duration::from_millis(200));
    }
    send(&runtime, &open, 2).unwrap();
    send(&runtime, &client(false, setup.ports[1], Some(&trusted), None), 3).unwrap();
    wait_stored(&setup, 15.0, "batches before and after the rotation");
    assert!(server.log_text().contains("TLS certificate reloaded"), "{}", server.log_text());
    assert!(server.stop().success());
}

/// The common name of the certificate a new TLS connection to `port` is served.
async fn served_certificate(port: u16, ca: &Path) -> String {
    let config = otel_audit::tls::client_config(&tls(ca, None), &[b"http/1.1"]).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    otel_audit::tls::ClientIdentity::of(&leaf).unwrap().subject
}

#[test]
fn rotel_exports_over_tls_and_serve_forwards_over_mutual_tls_with_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = certificates(tmp.path());
    // The downstream: mutual TLS and a token on both protocols.
    let mut down = Setup::keep_all(&tmp.path().join("downstream"));
    down.receiver_extra = [receiver_security(&certs), receiver_security(&certs)];
    down.extensions = vec![("bearertokenauth/writers".into(), "    token: ${env:WRITER_TOKEN}".into())];
    let down_server = start(&down, &[("WRITER_TOKEN", WRITER_TOKEN)]);

    // The upstream forwards over gRPC and HTTP with its client certificate
    // and the downstream's token.
    let up_dir = tmp.path().join("upstream");
    std::fs::create_dir_all(&up_dir).unwrap();
    let mut up = Setup::new(&up_dir);
    let client_tls = format!(
        "    tls: {{ca_file: {}, cert_file: {}, key_file: {}}}\n    auth: {{authenticator: bearertokenauth/down}}\n    \
         retry_on_failure: {{initial_interval: 100ms, max_interval: 1s}}",
        certs.pki.ca.display(),
        certs.client.cert.display(),
        certs.client.key.display()
    );
    up.exporters = vec![
        ("otlp/down".into(), format!("    endpoint: 127.0.0.1:{}\n{client_tls}", down.ports[0])),
        ("otlphttp/down".into(), format!("    endpoint: https://127.0.0.1:{}\n{client_tls}", down.ports[1])),
    ];
    // Its receivers: TLS (no client certificates) and a token.
    let server_tls = format!(
        "        tls: {{cert_file: {}, key_file: {}}}\n        auth: {{authenticator: bearertokenauth/writers}}\n",
        certs.server.cert.display(),
        certs.server.key.display()
    );
    up.receiver_extra = [server_tls.clone(), server_tls];
    up.extensions = vec![
        ("bearertokenauth/down".into(), "    token: ${env:DOWN_TOKEN}".into()),
        ("bearertokenauth/writers".into(), "    token: ${env:WRITER_TOKEN}".into()),
    ];
    let up_server = start(&up, &[("DOWN_TOKEN", WRITER_TOKEN), ("WRITER_TOKEN", UPSTREAM_TOKEN)]);

    // rotel exports to the upstream over TLS with the upstream's token. It
    // checks the certificate against the system roots (rotel 0.0.1a15
    // refuses its own CA flags: "Either both or neither of cert and key must
    // be provided"), which SSL_CERT_FILE points at our CA.
    let agent =
        Command::new(python()).args(["-c", "import rotel.agent as a; print(a.Agent.agent_path)"]).output().unwrap();
    assert!(agent.status.success(), "rotel is not installed in .venv: {}", String::from_utf8_lossy(&agent.stderr));
    let agent = String::from_utf8(agent.stdout).unwrap().trim().to_owned();
    let rotel_grpc = support::server::free_port();
    let log = std::fs::File::create(tmp.path().join("rotel.log")).unwrap();
    let mut rotel = Command::new(&agent)
        .args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{rotel_grpc}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{}", support::server::free_port())])
        .args(["--exporter", "otlp", "--otlp-exporter-protocol", "grpc"])
        .args(["--otlp-exporter-endpoint", &format!("https://localhost:{}", up.ports[0])])
        .args(["--otlp-exporter-custom-headers", &format!("authorization=Bearer {UPSTREAM_TOKEN}")])
        .args(["--batch-timeout", "100ms", "--pid-file"])
        .arg(tmp.path().join("rotel.pid"))
        .env("SSL_CERT_FILE", &certs.pki.ca)
        .env_remove("SSL_CERT_DIR")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", rotel_grpc)).is_err() {
        assert!(
            Instant::now() < deadline && rotel.try_wait().unwrap().is_none(),
            "rotel did not start: {}",
            std::fs::read_to_string(tmp.path().join("rotel.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    // 20 audit spans into the upstream over TLS with its token, 10 through rotel.
    let trusted = tls(&certs.pki.ca, None);
    for seed in 0..4 {
        send(&runtime, &client(true, up.ports[0], Some(&trusted), Some(UPSTREAM_TOKEN)), seed).unwrap();
    }
    for seed in 10..12 {
        send(&runtime, &client(true, rotel_grpc, None, None), seed).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let traces = |setup: &Setup| {
        metric(&metrics(setup.ports[2]), "otel_audit_stored_records_total", &[("chain", "test/traces/audit/0")])
    };
    while traces(&up) < 30.0 {
        assert!(
            Instant::now() < deadline,
            "the upstream stored {} spans of 30; rotel log:\n{}",
            traces(&up),
            std::fs::read_to_string(tmp.path().join("rotel.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Both exporters forward each of the 30 over mutual TLS with the
    // downstream's token (checkpoints ride along as logs).
    while traces(&down) < 60.0 {
        assert!(Instant::now() < deadline, "the downstream stored {} spans of 60", traces(&down));
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = rotel.kill();
    let _ = rotel.wait();
    assert!(up_server.stop().success());
    assert!(down_server.stop().success());
}
