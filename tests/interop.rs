//! `otel-audit serve` with the clients users run: the OpenTelemetry Python
//! SDK (its OTLP gRPC and HTTP exporters, traces and the logs SDK) and an
//! upstream collector (rotel), over real sockets. A second `otel-audit`
//! is the downstream receiver of the first one's forwarded records and
//! checkpoints.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use otel_audit::checkpoint::{Checkpoint, SignedNote, VerifierKey};
use serde_json::Value;
use support::server::{Server, Setup, free_port, http_get, python};
use support::trail::{self, Chain};

/// A downstream otel-audit that keeps everything it receives.
fn downstream(dir: &Path) -> (Setup, Server) {
    let setup = Setup::keep_all(dir);
    let server = setup.start();
    (setup, server)
}

/// An upstream otel-audit with the soc2 policy forwarding to `exporter`.
fn upstream(dir: &Path, exporter: (&str, String)) -> (Setup, Server) {
    std::fs::create_dir_all(dir).unwrap();
    let mut setup = Setup::new(dir);
    setup.exporters.push((exporter.0.to_owned(), exporter.1));
    let server = setup.start();
    (setup, server)
}

/// Runs the SDK app against `endpoint`; returns its report.
fn run_sdk_app(protocol: &str, endpoint: &str, dir: &Path) -> Value {
    let report = dir.join(format!("sdk-{protocol}.json"));
    let out = Command::new(python())
        .arg(support::root().join("tests/e2e/sdk_app.py"))
        .args(["--protocol", protocol, "--endpoint", endpoint, "--rounds", "10", "--out"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sdk_app.py failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap()
}

fn strings(report: &Value, list: &str, field: &str) -> BTreeSet<String> {
    report[list].as_array().unwrap().iter().map(|v| v[field].as_str().unwrap().to_owned()).collect()
}

fn chain<'a>(chains: &'a [Chain], id: &str) -> &'a Chain {
    chains.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no chain {id}"))
}

fn event_ids(chain: &Chain) -> Vec<String> {
    (0..chain.records.len()).filter_map(|i| chain.attr(i, "audit.event_id").map(str::to_owned)).collect()
}

/// Waits until a server's metrics say it stored at least `records`.
fn wait_stored(metrics_port: u16, records: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = http_get(metrics_port, "/metrics")
            .map(|(_, body)| {
                body.lines()
                    .filter(|l| l.starts_with("otel_audit_stored_records_total"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>()
            })
            .unwrap_or(0.0);
        if stored as usize >= records {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {stored} of {records} records stored after 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What both SDK tests check: the upstream kept exactly the audit records,
/// enriched, redacted, chained and checkpointed; the downstream got the
/// same records in the same order, and the checkpoints.
fn check_sdk_run(report: &Value, up: &Setup, down: &Setup) {
    let key = VerifierKey::parse(std::fs::read_to_string(up.public_key()).unwrap().trim()).unwrap();
    let chains = trail::read_store(&up.store);
    let traces = chain(&chains, "test/traces/audit/0");
    let logs = chain(&chains, "test/logs/audit/0");

    // Exactly the audit spans and logs, none of the ordinary ones.
    let stored_spans: BTreeSet<String> = traces.span_ids().into_iter().collect();
    assert_eq!(stored_spans, strings(report, "audit_spans", "span_id"));
    assert_eq!(traces.records.len(), stored_spans.len(), "no span stored twice");
    assert!(strings(report, "ordinary_spans", "span_id").is_disjoint(&stored_spans));
    let acked: BTreeSet<String> =
        report["acked_span_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    assert!(stored_spans.is_subset(&acked));
    let stored_logs: BTreeSet<String> = event_ids(logs).into_iter().collect();
    assert_eq!(stored_logs, strings(report, "audit_logs", "event_id"));
    assert_eq!(logs.records.len(), stored_logs.len());

    // Enriched and redacted as the policy says.
    for (i, record) in traces.records.iter().enumerate() {
        assert_eq!(traces.attr(i, "audit.pipeline"), Some("soc2-audit-trail"));
        assert!(traces.attr(i, "audit.collector_received_at").is_some());
        assert!(traces.attr(i, "audit.policy.digest").is_some_and(|d| d.starts_with("sha256:")));
        assert!(record["span"]["attributes"].get("http.request.header.authorization").is_none());
        if record["span"]["name"] == "payment.refund" {
            let note = traces.attr(i, "audit.note").unwrap();
            assert!(note.contains("****") && !note.contains("4111"), "{note}");
        }
    }
    assert_eq!(logs.attr(0, "audit.action"), Some("config_change"));
    assert!(logs.records[0]["log"]["attributes"].get("http.request.header.x-api-key").is_none());

    // Signed checkpoints verify with the public key; the final one covers everything.
    assert_eq!(trail::verify_checkpoints(traces, &key), traces.records.len() as u64);
    assert_eq!(trail::verify_checkpoints(logs, &key), logs.records.len() as u64);

    // The downstream received the same records, in chain order.
    let archived = trail::read_store(&down.store);
    let down_traces = chain(&archived, "test/traces/audit/0");
    assert_eq!(down_traces.span_ids(), traces.span_ids());
    let down_logs = chain(&archived, "test/logs/audit/0");
    let forwarded: Vec<String> = event_ids(down_logs);
    assert_eq!(forwarded, event_ids(logs));
    // ... and the signed checkpoints of both upstream chains, as log records.
    let mut anchored = BTreeSet::new();
    for record in &down_logs.records {
        let log = &record["log"];
        if log["event_name"] != "audit.checkpoint" {
            continue;
        }
        let note = SignedNote::parse(log["body"]["s"].as_str().unwrap()).unwrap();
        note.verify(std::slice::from_ref(&key)).expect("the downstream copy of a checkpoint verifies");
        let checkpoint = Checkpoint::parse(&note.text).unwrap();
        let upstream_chain = if checkpoint.origin.contains("/traces/audit/0/") { traces } else { logs };
        assert_eq!(checkpoint.root, trail::merkle_root(&upstream_chain.leaves[..checkpoint.size as usize]));
        anchored.insert((checkpoint.origin.clone(), checkpoint.size));
    }
    eprintln!(
        "upstream stored {} spans and {} logs; the downstream got them and {} checkpoints",
        traces.records.len(),
        logs.records.len(),
        anchored.len()
    );
    assert!(
        anchored.iter().any(|(o, s)| o.contains("/traces/audit/0/") && *s == traces.records.len() as u64),
        "the final traces checkpoint reached the downstream: {anchored:?}"
    );
}

fn sdk_test(protocol: &str, exporter_id: &str, exporter: impl Fn(&Setup) -> String) {
    let tmp = tempfile::tempdir().unwrap();
    let (down, down_server) = downstream(&tmp.path().join("downstream"));
    let (up, up_server) = upstream(&tmp.path().join("upstream"), (exporter_id, exporter(&down)));
    let endpoint = if protocol == "grpc" { up.grpc_uri() } else { up.http_uri() };
    let report = run_sdk_app(protocol, &endpoint, tmp.path());
    let expected = report["audit_spans"].as_array().unwrap().len() + report["audit_logs"].as_array().unwrap().len();
    assert!(expected >= 40, "the app sent {expected} audit records");
    // SIGTERM: the final checkpoints are signed and the exporters drain.
    assert!(up_server.stop().success());
    wait_stored(down.ports[2], expected + 2, "downstream");
    assert!(down_server.stop().success());
    check_sdk_run(&report, &up, &down);
}

#[test]
fn python_sdk_over_grpc_is_chained_stored_and_forwarded() {
    sdk_test("grpc", "otlp/downstream", |down| {
        format!(
            "    endpoint: 127.0.0.1:{}\n    headers: {{X-Audit-Pipeline: soc2}}\n    compression: gzip\n    timeout: 5s\n    retry_on_failure: {{enabled: true, initial_interval: 100ms, max_interval: 1s}}",
            down.ports[0]
        )
    });
}

#[test]
fn python_sdk_over_http_is_chained_stored_and_forwarded() {
    sdk_test("http", "otlphttp/archive", |down| {
        format!(
            "    endpoint: http://127.0.0.1:{}\n    headers: {{X-Audit-Pipeline: soc2}}\n    compression: gzip\n    timeout: 5s\n    retry_on_failure: {{enabled: true, initial_interval: 100ms, max_interval: 1s}}",
            down.ports[1]
        )
    });
}

/// Kills the child on drop.
struct Rotel(Child);

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_upstream_rotel_collector_forwards_to_otel_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    let server = setup.start();
    let agent =
        Command::new(python()).args(["-c", "import rotel.agent as a; print(a.Agent.agent_path)"]).output().unwrap();
    assert!(agent.status.success(), "rotel is not installed in .venv: {}", String::from_utf8_lossy(&agent.stderr));
    let agent = String::from_utf8(agent.stdout).unwrap().trim().to_owned();
    let (grpc, http) = (free_port(), free_port());
    let log = std::fs::File::create(tmp.path().join("rotel.log")).unwrap();
    let rotel = Rotel(
        Command::new(&agent)
            .args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .args(["--exporter", "otlp", "--otlp-exporter-protocol", "grpc"])
            .args(["--otlp-exporter-endpoint", &setup.grpc_uri()])
            .args(["--batch-timeout", "100ms", "--pid-file"])
            .arg(tmp.path().join("rotel.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // rotel is up when its gRPC port accepts connections.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
        assert!(Instant::now() < deadline, "rotel did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = run_sdk_app("grpc", &format!("http://127.0.0.1:{grpc}"), tmp.path());
    let expected = report["audit_spans"].as_array().unwrap().len() + report["audit_logs"].as_array().unwrap().len();
    // rotel acknowledges the app before it forwards: wait for the records.
    wait_stored(setup.ports[2], expected, "otel-audit behind rotel");
    drop(rotel);
    assert!(server.stop().success());
    let chains = trail::read_store(&setup.store);
    let traces: BTreeSet<String> = chain(&chains, "test/traces/audit/0").span_ids().into_iter().collect();
    assert_eq!(traces, strings(&report, "audit_spans", "span_id"));
    let logs: BTreeSet<String> = event_ids(chain(&chains, "test/logs/audit/0")).into_iter().collect();
    assert_eq!(logs, strings(&report, "audit_logs", "event_id"));
}
