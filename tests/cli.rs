//! The `otel-audit` binary as a user runs it: `process` and `check` on the
//! real component, with the exit codes and messages the README promises,
//! and no output file left behind by a refused batch.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fn otel_audit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_otel-audit"))
        .args(args)
        .env("OTEL_AUDIT_CACHE_DIR", support::cache_dir())
        .output()
        .expect("run otel-audit")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn policy_path() -> String {
    support::root().join("collector-config/policies/soc2-audit.yaml").display().to_string()
}

fn process(input: &Path, dir: &Path, extra: &[&str]) -> Output {
    let wasm = support::wasm_path();
    let (out, records) = (dir.join("out.pb"), dir.join("records.jsonl"));
    let mut args = vec![
        "process",
        "--module",
        wasm.to_str().unwrap(),
        "--policy",
        &policy_path(),
        "--in",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--records",
        records.to_str().unwrap(),
        "--received-at",
        "2026-11-23T10:00:00.5Z",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    otel_audit(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn process_writes_kept_otlp_and_chained_records() {
    let dir = tempfile::tempdir().unwrap();
    let out = process(&support::fixture("mixed-traces.json"), dir.path(), &["--signal", "traces", "--chain-id", "cli"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("processed 4 spans: kept 2, dropped 2"), "{}", stderr(&out));
    let records = std::fs::read_to_string(dir.path().join("records.jsonl")).unwrap();
    let lines: Vec<&str> = records.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains("\"received_at\":\"2026-11-23T10:00:00.500000000Z\""), "{}", lines[0]);
    assert!(lines[1].starts_with("{\"chain\":{\"id\":\"cli\",\"prev\":\""), "{}", lines[1]);
    let kept = ExportTraceServiceRequest::decode(std::fs::read(dir.path().join("out.pb")).unwrap().as_slice()).unwrap();
    assert_eq!(kept.resource_spans[0].scope_spans[0].spans.len(), 2);

    // Continuing the chain from the printed head gives seq 2 linked to it.
    let head = stderr(&out).rsplit("head ").next().unwrap().trim().to_owned();
    let next = process(
        &support::fixture("mixed-traces.json"),
        dir.path(),
        &["--signal", "traces", "--chain-id", "cli", "--seq", "2", "--prev", &head, "--out-format", "json"],
    );
    assert!(next.status.success(), "{}", stderr(&next));
    let records = std::fs::read_to_string(dir.path().join("records.jsonl")).unwrap();
    assert!(
        records.starts_with(&format!("{{\"chain\":{{\"id\":\"cli\",\"prev\":\"{head}\",\"seq\":\"2\"}}")),
        "{records}"
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out.pb")).unwrap()).unwrap();
    assert_eq!(json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"], "5b8efff798038103d269b633813fc60c");
}

#[test]
fn refused_input_names_the_problem_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "base64 ids",
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA==","name":"x"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId",
        ),
        ("invalid JSON", b"{\"resourceSpans\": [", "invalid OTLP/JSON ExportTraceServiceRequest"),
        (
            "short id",
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"0102","name":"x"}]}]}]}"#,
            "span_id must be 8 bytes",
        ),
        ("malformed protobuf", &[0x0a, 0x05, 0x01], "invalid OTLP request"),
        (
            "wrong field type",
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_SERVER"}]}]}]}"#,
            "kind",
        ),
    ];
    for (name, bytes, needle) in cases {
        let input = dir.path().join("input");
        std::fs::write(&input, bytes).unwrap();
        let out = process(&input, dir.path(), &["--signal", "traces"]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{name}: expected {needle:?} in {}", stderr(&out));
        assert!(!dir.path().join("records.jsonl").exists(), "{name}: no records file");
        assert!(!dir.path().join("out.pb").exists(), "{name}: no output file");
    }
}

#[test]
fn check_reports_rules_or_the_broken_key() {
    let wasm = support::wasm_path();
    let ok = otel_audit(&["check", "--module", wasm.to_str().unwrap(), "--policy", &policy_path()]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.contains("digest   sha256:") && text.contains("filter.spans.include"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "filter:\n  spans:\n    include:\n      match_type: strict\n      span_name: [x]\n").unwrap();
    let out = otel_audit(&["check", "--module", wasm.to_str().unwrap(), "--policy", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("filter.spans.include.span_name") && stderr(&out).contains("line 5"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unusable_modules_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    for (module, needle) in [
        (core.as_path(), "not a component"),
        (junk.as_path(), "not a usable audit processor component"),
        (Path::new("/nonexistent.wasm"), "cannot read module"),
    ] {
        let out = otel_audit(&["check", "--module", module.to_str().unwrap(), "--policy", &policy_path()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(needle), "expected {needle:?} in {}", stderr(&out));
    }
}

#[test]
fn keygen_writes_a_private_signer_and_a_public_verifier_key() {
    use otel_audit::checkpoint::{SignedNote, SignerKey, VerifierKey};
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("keys");
    let run = || otel_audit(&["keygen", "--name", "otel-audit-test", "--out", out_dir.to_str().unwrap()]);
    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
    let private = std::fs::read_to_string(out_dir.join("otel-audit-test.key")).unwrap();
    let public = std::fs::read_to_string(out_dir.join("otel-audit-test.pub")).unwrap();
    let signer = SignerKey::parse(&private).unwrap();
    let verifier = VerifierKey::parse(&public).unwrap();
    assert_eq!(signer.verifier(), verifier);
    let note = signer.sign_note("otel-audit/test\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    assert_eq!(SignedNote::parse(&note).unwrap().verify(&[verifier]).unwrap(), vec!["otel-audit-test"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out_dir.join("otel-audit-test.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = run();
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("refusing to overwrite"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(out_dir.join("otel-audit-test.key")).unwrap(), private, "the key is untouched");
}

/// `otel-audit <command> --config CONFIG` from the repository root, with
/// the shipped config's variables set.
fn with_config(command: &str, config: &Path, key: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_otel-audit"));
    cmd.args([command, "--config"])
        .arg(config)
        .current_dir(support::root())
        .env("OTEL_AUDIT_CACHE_DIR", support::cache_dir())
        .env("OTEL_AUDIT_WASM", support::wasm_path())
        .env("OTEL_AUDIT_SIGNING_KEY", key);
    cmd
}

fn validate(config: &Path, key: &Path) -> Output {
    with_config("validate", config, key).output().expect("run otel-audit validate")
}

#[test]
fn validate_accepts_the_shipped_config_and_configures_its_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, _) = support::server::keygen(tmp.path(), "validate-test");
    let out = validate(&support::root().join("collector-config/otel-audit.yaml"), &key);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(
        stdout.contains("processor wasm/soc2: policy collector-config/policies/soc2-audit.yaml (sha256:"),
        "{stdout}"
    );
    // `shards: auto` (the default): one chain per core and pipeline.
    let chains = 2 * otel_audit::config::auto_shards();
    assert!(stdout.contains(&format!("is valid: 2 pipeline(s), {chains} chain(s)")), "{stdout}");
}

#[test]
fn validate_reports_every_problem_with_its_key_path() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, _) = support::server::keygen(tmp.path(), "validate-test");
    let config = tmp.path().join("broken.yaml");
    std::fs::write(
        &config,
        r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
        max_recv_msg_size: 4
processors:
  wasm/a:
    module: ${env:OTEL_AUDIT_WASM}
    policy: does/not/exist.yaml
exporters:
  auditstore:
    directory: ./audit-data
    signing_key: ${env:OTEL_AUDIT_SIGNING_KEY}
    checkpoint: {every_records: 10, interval: ten seconds, heartbeat: 60s}
  otlp/down:
    endpoint: 127.0.0.1:14317
    timeout: 5s
service:
  pipelines:
    traces/a:
      receivers: [otlp]
      processors: [wasm/a]
      exporters: [auditstore, otlp/missing]
    metrics/a:
      receivers: [otlp]
      processors: [wasm/a]
      exporters: [auditstore]
"#,
    )
    .unwrap();
    let out = validate(&config, &key);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for path in [
        "receivers.otlp.protocols.grpc",
        "exporters.auditstore.checkpoint.interval",
        "service.pipelines.traces/a.exporters[1]",
        "service.pipelines.metrics/a",
    ] {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("error: {path}"))), "no problem at {path}:\n{stdout}");
    }

    // A config that parses but whose policy the component refuses.
    let policy = tmp.path().join("bad-policy.yaml");
    std::fs::write(&policy, "filter:\n  spans:\n    include:\n      match_type: strict\n").unwrap();
    let config = tmp.path().join("bad-policy-config.yaml");
    let text = std::fs::read_to_string(support::root().join("collector-config/otel-audit.yaml"))
        .unwrap()
        .replace("policy: collector-config/policies/soc2-audit.yaml", &format!("policy: {}", policy.display()));
    std::fs::write(&config, text).unwrap();
    let out = validate(&config, &key);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", stderr(&out));
    assert!(stdout.contains("error: processors.wasm/soc2.policy: "), "{stdout}");
}

#[test]
fn serve_refuses_to_start_with_the_problems_validate_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, _) = support::server::keygen(tmp.path(), "preflight-test");
    let policy = tmp.path().join("bad-policy.yaml");
    std::fs::write(&policy, "filter:\n  spans:\n    include:\n      match_type: strict\n").unwrap();
    // A policy the component refuses, and a header gRPC cannot carry.
    let text = std::fs::read_to_string(support::root().join("collector-config/otel-audit.yaml"))
        .unwrap()
        .replace("policy: collector-config/policies/soc2-audit.yaml", &format!("policy: {}", policy.display()))
        .replace("\nexporters:\n", "\nexporters:\n  otlp/down: {endpoint: 127.0.0.1:9, headers: {X-Trace-Bin: x}}\n")
        .replace("exporters: [auditstore]", "exporters: [auditstore, otlp/down]");
    let config = tmp.path().join("config.yaml");
    std::fs::write(&config, text).unwrap();

    let out = validate(&config, &key);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let problems: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("error: ").map(str::to_owned))
        .collect();
    let paths: Vec<&str> = problems.iter().map(|p| p.split(": ").next().unwrap()).collect();
    assert_eq!(paths, ["processors.wasm/soc2.policy", "exporters.otlp/down.headers"], "{problems:#?}");

    let mut serve = with_config("serve", &config, &key)
        .env("OTEL_AUDIT_STORE", tmp.path().join("store"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run otel-audit serve");
    let started = std::time::Instant::now();
    while serve.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            serve.kill().unwrap();
            panic!("serve started with a config validate refuses");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = serve.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    for problem in &problems {
        assert!(stderr(&out).lines().any(|l| l == problem), "serve should say {problem:?}:\n{}", stderr(&out));
    }
    assert!(!tmp.path().join("store").exists(), "nothing touched the store");
}

/// `otel-audit <command> --module <the component> --policy <soc2-audit.yaml> <args>`.
fn with_soc2(command: &str, args: &[&str]) -> Output {
    let wasm = support::wasm_path();
    otel_audit(&[&[command, "--module", wasm.to_str().unwrap(), "--policy", &policy_path()], args].concat())
}

#[test]
fn outputs_may_be_devices() {
    // `/dev/null` cannot be replaced by a renamed temporary file: it is written directly.
    let input = support::fixture("mixed-traces.json");
    let input = ["--signal", "traces", "--in", input.to_str().unwrap()];
    let out = with_soc2("process", &[&input[..], &["--out", "/dev/null", "--records", "/dev/null"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("processed 4 spans: kept 2"), "{}", stderr(&out));
    assert!(!std::fs::metadata("/dev/null").unwrap().is_file(), "/dev/null is still the device");
}

#[test]
fn out_format_offers_only_what_an_output_can_be() {
    let help = String::from_utf8_lossy(&otel_audit(&["process", "--help"]).stdout).into_owned();
    let section = |flag: &str| {
        let start = help.find(&format!("{flag} <")).unwrap_or_else(|| panic!("no {flag} in:\n{help}"));
        let rest = &help[start..];
        rest[..rest[2..].find("\n      --").map_or(rest.len(), |end| end + 2)].to_owned()
    };
    let (input, output) = (section("--input-format"), section("--out-format"));
    assert!(input.contains("auto"), "input can be detected:\n{input}");
    assert!(output.contains("protobuf") && output.contains("json") && !output.contains("auto"), "{output}");

    let input = support::fixture("mixed-traces.json");
    let out = with_soc2("process", &["--signal", "traces", "--in", input.to_str().unwrap(), "--out-format", "auto"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid value 'auto'"), "{}", stderr(&out));
}

#[test]
fn logs_are_plain_text_when_stderr_is_not_a_terminal() {
    // A module cache others may write to is refused with a warning.
    let dir = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let out = with_soc2("check", &["--cache-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("WARN") && stderr(&out).contains("module cache is writable by others"),
        "{}",
        stderr(&out)
    );
    assert!(!out.stderr.contains(&0x1b), "no terminal escape codes in a file: {:?}", stderr(&out));
}
