use std::env::VarError;

use super::*;

/// An environment holding only `vars`.
fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Result<String, VarError> {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |var| vars.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()).ok_or(VarError::NotPresent)
}

fn parse_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    parse_with_env(text, "test.yaml", &env(vars))
}

fn ok(text: &str) -> Config {
    parse_env(text, &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// The problems, as (path, message).
fn problems(text: &str, vars: &[(&str, &str)]) -> Vec<(String, String)> {
    match parse_env(text, vars) {
        Ok(config) => panic!("expected problems, got {config:#?}"),
        Err(e) => e.0.into_iter().map(|p| (p.path, p.message)).collect(),
    }
}

fn paths(text: &str) -> Vec<String> {
    problems(text, &[]).into_iter().map(|(path, _)| path).collect()
}

/// The one problem of `text`, which must be at `path`; its message.
fn only(text: &str, path: &str) -> String {
    let found = problems(text, &[]);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].0, path, "{found:#?}");
    found[0].1.clone()
}

const MINIMAL: &str = "
receivers:
  otlp:
    protocols:
      grpc:
processors:
  wasm/p:
    module: m.wasm
    policy: p.yaml
exporters:
  auditstore:
    directory: d
    instance_id: host-1
    signing_key: k.key
service:
  pipelines:
    traces/a:
      receivers: [otlp]
      processors: [wasm/p]
      exporters: [auditstore]
";

/// MINIMAL with `old` replaced by `new` (which must occur once).
fn with(old: &str, new: &str) -> String {
    assert_eq!(MINIMAL.matches(old).count(), 1, "{old}");
    MINIMAL.replace(old, new)
}

const FULL: &str = r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
        max_recv_msg_size_mib: 8
      http:
        endpoint: ":4318"
        max_request_body_size: 1048576
processors:
  wasm/soc2:
    module: target/wasm32-wasip2/wasm/audit_processor.wasm
    policy: collector-config/policies/soc2-audit.yaml
    secrets:
      k1: {file: /run/secrets/audit-k1}
      k2: {value: "${env:AUDIT_K2}"}
    tests: [collector-config/policies/soc2-audit.test.yaml]
    reload: {watch: false, debounce: 2s}
exporters:
  auditstore:
    directory: ./audit-data
    instance_id: ${env:HOSTNAME}
    segment_size: 16MiB
    checkpoint:
      every_records: 500
      interval: 1m30s
      heartbeat: 2m
    signing_key: dev-keys/otel-audit-dev.key
    origin: audit.example/prod
  otlp/downstream:
    endpoint: collector.example:4317
    headers: {X-Audit-Pipeline: soc2, Authorization: "Bearer ${env:TOKEN}"}
    compression: none
    timeout: 2s
    retry_on_failure: {enabled: true, initial_interval: 1s, max_interval: 10s}
    sending_queue: {queue_size: 100000}
    tls: {insecure: true}
  otlphttp/archive:
    endpoint: http://archive.example:4318/otlp/
    logs_endpoint: http://logs.example:9000/ingest
extensions:
  health_check: {endpoint: 127.0.0.1:13133}
  admin: {}
service:
  extensions: [health_check, admin]
  pipelines:
    traces/audit:
      receivers: [otlp]
      processors: [wasm/soc2]
      exporters: [auditstore, otlp/downstream, otlphttp/archive]
      shards: 4
    logs/audit:
      receivers: [otlp]
      processors: [wasm/soc2]
      exporters: [otlphttp/archive, auditstore]
  telemetry:
    logs: {level: DEBUG}
    metrics: {address: 127.0.0.1:8888}
"#;

const FULL_ENV: &[(&str, &str)] = &[("AUDIT_K2", "s3cr3t-hmac-key"), ("HOSTNAME", "node-7"), ("TOKEN", "tok-123")];

#[test]
fn the_shipped_default_parses_with_its_defaults() {
    let config = parse_env(DEFAULT_CONFIG, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.grpc.as_ref().map(|g| (g.endpoint.as_str(), g.max_recv_msg_size)),
        Some(("127.0.0.1:4317", 4 << 20))
    );
    assert_eq!(
        config.http.as_ref().map(|h| (h.endpoint.as_str(), h.max_request_body_size)),
        Some(("127.0.0.1:4318", 20 << 20))
    );
    assert_eq!(config.metrics.as_ref().map(|m| m.endpoint.as_str()), Some("127.0.0.1:8888"));
    assert_eq!(config.health.as_ref().map(|h| h.endpoint.as_str()), Some("127.0.0.1:13133"));
    assert_eq!(config.admin.as_ref().map(|a| a.endpoint.as_str()), Some("127.0.0.1:13134"));
    assert_eq!(config.read_api.as_ref().map(|r| r.endpoint.as_str()), Some("127.0.0.1:13135"));
    assert_eq!(config.log_level, "info");
    let ids: Vec<(&str, Signal)> = config.pipelines.iter().map(|p| (p.id.as_str(), p.signal)).collect();
    assert_eq!(ids, [("traces/audit", Signal::Traces), ("logs/audit", Signal::Logs)]);
    for p in &config.pipelines {
        // `shards: auto`: one chain per core.
        assert_eq!(p.shards, std::thread::available_parallelism().unwrap().get() as u32);
        assert!(p.exporters.is_empty());
        assert_eq!(p.processor.id, "wasm/soc2");
        assert_eq!(p.processor.module, Path::new("target/wasm32-wasip2/wasm/audit_processor.wasm"));
        assert_eq!(p.processor.policy, Path::new("collector-config/policies/soc2-audit.yaml"));
        assert_eq!(p.processor.tests, [Path::new("collector-config/policies/soc2-audit.test.yaml")]);
        assert!(p.processor.secrets.is_empty());
        assert_eq!(p.processor.reload, Reload { watch: true, debounce: Duration::from_millis(500) });
        let s = &p.store;
        assert_eq!((s.id.as_str(), s.directory.as_path()), ("auditstore", Path::new("./audit-data")));
        assert_eq!(s.signing_key, Path::new("dev-keys/otel-audit-dev.key"));
        assert_eq!((s.segment_size, s.every_records), (64 << 20, 10_000));
        assert_eq!((s.interval, s.heartbeat), (Duration::from_secs(10), Duration::from_secs(60)));
        assert_eq!(s.origin, "otel-audit");
        assert!(!s.instance_id.is_empty(), "the host name");
    }
    // The files it names are in the repository.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = &config.pipelines[0].processor;
    assert!(root.join(&p.policy).is_file() && root.join(&p.tests[0]).is_file());

    let vars =
        [("OTEL_AUDIT_STORE", "/var/lib/audit"), ("OTEL_AUDIT_WASM", "/opt/a.wasm"), ("OTEL_AUDIT_SIGNING_KEY", "/k")];
    let config = parse_env(DEFAULT_CONFIG, &vars).unwrap_or_else(|e| panic!("{e}"));
    let p = &config.pipelines[1];
    assert_eq!(p.store.directory, Path::new("/var/lib/audit"));
    assert_eq!(p.store.signing_key, Path::new("/k"));
    assert_eq!(p.processor.module, Path::new("/opt/a.wasm"));
}

#[test]
fn the_upstream_example_points_at_the_default_receiver() {
    let text = include_str!("../../../collector-config/examples/upstream-collector.yaml");
    let upstream: Value = serde_yaml_ng::from_str(text).expect("valid YAML");
    let endpoint = upstream["exporters"]["otlp/otel-audit"]["endpoint"].as_str().expect("an otlp exporter");
    let ours = parse_env(DEFAULT_CONFIG, &[]).expect("default").grpc.expect("grpc").endpoint;
    assert_eq!(endpoint.rsplit(':').next(), ours.rsplit(':').next());
    for signal in ["traces", "logs"] {
        let exporters = &upstream["service"]["pipelines"][signal]["exporters"];
        assert!(exporters.as_sequence().expect("a list").iter().any(|e| e == "otlp/otel-audit"), "{signal}");
    }
}

#[test]
fn a_full_config_is_typed_and_normalised() {
    let config = parse_env(FULL, FULL_ENV).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.grpc.as_ref().map(|g| g.max_recv_msg_size), Some(8 << 20));
    assert_eq!(
        config.http.as_ref().map(|h| (h.endpoint.as_str(), h.max_request_body_size)),
        Some(("0.0.0.0:4318", 1 << 20))
    );
    assert_eq!(config.log_level, "debug");
    let [traces, logs] = config.pipelines.as_slice() else { panic!("two pipelines") };
    assert_eq!((traces.shards, logs.shards), (4, crate::config::auto_shards()), "logs has no `shards`: auto");

    assert_eq!(config.admin.as_ref().map(|a| a.endpoint.as_str()), Some("localhost:13134"));
    let p = &traces.processor;
    assert_eq!(p.reload, Reload { watch: false, debounce: Duration::from_secs(2) });
    assert_eq!(p.secrets.len(), 2);
    assert_eq!(p.secrets[0], Secret { id: "k1".into(), source: SecretSource::File("/run/secrets/audit-k1".into()) });
    assert_eq!(
        p.secrets[1],
        Secret {
            id: "k2".into(),
            source: SecretSource::Env { var: "AUDIT_K2".into(), value: b"s3cr3t-hmac-key".to_vec() }
        }
    );

    let s = &traces.store;
    assert_eq!((s.instance_id.as_str(), s.segment_size, s.every_records), ("node-7", 16 << 20, 500));
    assert_eq!((s.interval, s.heartbeat), (Duration::from_secs(90), Duration::from_secs(120)));
    assert_eq!(s.origin, "audit.example/prod");

    let [grpc, http] = traces.exporters.as_slice() else { panic!("two exporters") };
    assert_eq!(
        *grpc,
        Exporter {
            id: "otlp/downstream".into(),
            protocol: ExportProtocol::Grpc,
            endpoint: "http://collector.example:4317".into(),
            traces_url: String::new(),
            logs_url: String::new(),
            headers: vec![
                ("X-Audit-Pipeline".into(), "soc2".into()),
                ("Authorization".into(), "Bearer tok-123".into())
            ],
            compression: Compression::None,
            timeout: Duration::from_secs(2),
            retry: Retry {
                initial_interval: Duration::from_secs(1),
                max_interval: Duration::from_secs(10),
                multiplier: 1.5,
                randomization_factor: 0.5,
            },
            tls: None,
            auth: None,
            max_backlog_records: 100_000,
        }
    );
    assert_eq!(http.protocol, ExportProtocol::Http);
    assert_eq!(http.endpoint, "http://archive.example:4318/otlp/v1/traces");
    assert_eq!((http.compression, http.timeout), (Compression::Gzip, Duration::from_secs(30)));
    assert_eq!(http.max_backlog_records, 1_000_000);
    assert_eq!(logs.exporters[0].endpoint, "http://logs.example:9000/ingest");
}

#[test]
fn debug_never_shows_secrets_or_header_values() {
    let config = parse_env(FULL, FULL_ENV).unwrap_or_else(|e| panic!("{e}"));
    let debug = format!("{config:?} {config:#?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
    assert!(!debug.contains("tok-123"), "{debug}");
    assert!(debug.contains("AUDIT_K2") && debug.contains("Authorization"), "{debug}");
}

#[test]
fn env_substitution_is_typed_escaped_and_strict() {
    let text = with(
        "      grpc:\n",
        "      grpc:\n        max_recv_msg_size_mib: ${env:MIB}\n        endpoint: ${LISTEN:-127.0.0.1:0}\n",
    );
    let text = text.replace("signing_key: k.key", "signing_key: $${env:LITERAL}");
    let config = parse_env(&text, &[("MIB", "16")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.grpc.as_ref().map(|g| (g.endpoint.as_str(), g.max_recv_msg_size)),
        Some(("127.0.0.1:0", 16 << 20))
    );
    assert_eq!(config.pipelines[0].store.signing_key, Path::new("${env:LITERAL}"));

    // A variable's text may fill a string field even when it looks like a number.
    let text = with("instance_id: host-1", "instance_id: ${env:ID}");
    let config = parse_env(&text, &[("ID", "0042")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.pipelines[0].store.instance_id, "0042");
    let config = parse_env(&text, &[("ID", "42")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.pipelines[0].store.instance_id, "42");

    let text = with("directory: d", "directory: ${env:STORE_DIR}");
    let found = problems(&text, &[]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "exporters.auditstore.directory");
    assert!(found[0].1.contains("STORE_DIR is not set"), "{}", found[0].1);

    let text = with("directory: d", "directory: ${file:/etc/dir}");
    assert!(only(&text, "exporters.auditstore.directory").contains("${env:VAR}` only"));
    // A failed substitution is not reported a second time as a bad value.
    let text = with("instance_id: host-1", "instance_id: host-1\n    segment_size: ${env:SEGMENT}");
    assert!(only(&text, "exporters.auditstore.segment_size").contains("SEGMENT"));
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = r#"
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "localhost"}
      http: {max_request_body_size: 10 parsecs}
processors:
  wasm/p:
    policy: p.yaml
    tests: [""]
  batch: {}
exporters:
  auditstore:
    directory: d
    instance_id: "my host"
    signing_key: k.key
    segment_size: 1KiB
    checkpoint: {every_records: 0, interval: 10, heartbeat: 1d}
  otlp/down:
    endpoint: ftp://down:4317
    headers: {X-Token: "${env:NOPE_TOKEN}"}
    timeout: 5 seconds
    compression: zstd
    retry_on_failure: {initial_interval: 10s, max_interval: 1s, max_elapsed_time: 300s}
service:
  pipelines:
    traces/a:
      receivers: [otlp]
      processors: [wasm/p, batch]
      exporters: [auditstore, otlp/down, otlp/missing]
      shards: 65
  telemetry:
    logs: {level: loud}
"#;
    assert_eq!(
        paths(text),
        [
            "receivers.otlp.protocols.grpc.endpoint",
            "receivers.otlp.protocols.http.max_request_body_size",
            "processors.wasm/p.module",
            "processors.wasm/p.tests[0]",
            "processors.batch",
            "exporters.auditstore.instance_id",
            "exporters.auditstore.segment_size",
            "exporters.auditstore.checkpoint.every_records",
            "exporters.auditstore.checkpoint.interval",
            "exporters.auditstore.checkpoint.heartbeat",
            "exporters.otlp/down.endpoint",
            "exporters.otlp/down.headers.X-Token",
            "exporters.otlp/down.timeout",
            "exporters.otlp/down.compression",
            "exporters.otlp/down.retry_on_failure.max_elapsed_time",
            "service.pipelines.traces/a.processors",
            "service.pipelines.traces/a.exporters[2]",
            "service.pipelines.traces/a.shards",
            "service.telemetry.logs.level",
        ]
    );
}

#[test]
fn the_messages_say_what_to_write() {
    let found =
        problems(&with("directory: d", "directory: d\n    segment_size: 64M\n    checkpoint: {interval: 10}"), &[]);
    assert_eq!(found[0].1, "`64M` is not a size: write bytes, or a whole number with a unit, e.g. 64MiB, 512KiB, 1GB");
    assert_eq!(found[1].1, "`10` has no unit: write e.g. 10s or 10ms");
    assert_eq!(
        only(
            &with("instance_id: host-1", "instance_id: host-1\n    segment_size: 1000"),
            "exporters.auditstore.segment_size"
        ),
        "`1000` is less than the minimum, 4096"
    );
    let found = problems(&with("processors: [wasm/p]", "processors: [wasm/p]\n      shards: 0"), &[]);
    assert_eq!(found, [("service.pipelines.traces/a.shards".into(), "`0` is not `auto` or from 1 to 64".into())]);
}

#[test]
fn unknown_keys_are_named_in_the_path() {
    let message = only(
        &with("      grpc:\n", "      grpc:\n        transport: tcp\n"),
        "receivers.otlp.protocols.grpc.transport",
    );
    assert!(message.starts_with("unknown key, expected one of `endpoint`"), "{message}");
    only(
        &with("    directory: d", "    directory: d\n    checkpoint: {every: 5}"),
        "exporters.auditstore.checkpoint.every",
    );
    only(
        &with("    policy: p.yaml", "    policy: p.yaml\n    secrets: {k: {file: f, mode: x}}"),
        "processors.wasm/p.secrets.k.mode",
    );
    only(
        &with("      exporters: [auditstore]", "      exporters: [auditstore]\n      exporter: [x]"),
        "service.pipelines.traces/a.exporter",
    );
    only(&format!("{MINIMAL}  telemetry: {{traces: {{}}}}\n"), "service.telemetry.traces");
    only(&format!("{MINIMAL}  other: 1\n"), "service.other");
    only(&format!("{MINIMAL}connectors: {{}}\n"), "connectors");
    assert!(only(&format!("{MINIMAL}extra: 1\n"), "extra").contains("unknown section"));
}

#[test]
fn unknown_component_types_are_refused() {
    let message = only(&with("  wasm/p:", "  filter/p: {}\n  wasm/p:"), "processors.filter/p");
    assert!(message.contains("unknown processor type `filter`"), "{message}");
    let found = problems(
        &with(
            "  auditstore:",
            "  auditstore:\n    directory: d\n    instance_id: h\n    signing_key: k\n  kafka:\n    brokers: [b]\n  old:",
        ),
        &[],
    );
    let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["exporters.kafka", "exporters.old"]);
    assert!(found[0].1.contains("unknown exporter type `kafka`: use auditstore, otlp or otlphttp"));
    let found = problems(&with("  otlp:", "  zipkin:"), &[]);
    assert_eq!(
        found[0],
        ("receivers.zipkin".into(), "unknown receiver type `zipkin`: otel-audit receives OTLP; use `otlp`".into())
    );
    // The pipeline still names `otlp`, which is now undefined.
    assert_eq!(
        found[1],
        ("service.pipelines.traces/a.receivers[0]".into(), "no receiver `otlp` is defined (defined: zipkin)".into())
    );
    assert_eq!(found.len(), 2);
    let message = only(&format!("{MINIMAL}extensions: {{pprof: {{}}}}\n"), "extensions.pprof");
    assert!(message.contains("unknown extension type `pprof`"), "{message}");
    let message = only(
        &with("    policy: p.yaml\n", "    policy: p.yaml\n    reload: {debounce: soon}\n"),
        "processors.wasm/p.reload.debounce",
    );
    assert!(message.contains("soon"), "{message}");
    let message = only(
        &with("    policy: p.yaml\n", "    policy: p.yaml\n    reload: {watch: maybe}\n"),
        "processors.wasm/p.reload.watch",
    );
    assert!(message.contains("maybe"), "{message}");
    let message = only(&with("  wasm/p:", "  wasm/has space: {}\n  wasm/p:"), "processors.wasm/has space");
    assert!(message.contains("not a component name"), "{message}");
}

#[test]
fn references_must_name_defined_components_of_the_right_kind() {
    let message =
        only(&with("processors: [wasm/p]", "processors: [wasm/q]"), "service.pipelines.traces/a.processors[0]");
    assert_eq!(message, "no processor `wasm/q` is defined (defined: wasm/p)");
    let message = only(
        &with("exporters: [auditstore]", "exporters: [auditstore, wasm/p]"),
        "service.pipelines.traces/a.exporters[1]",
    );
    assert_eq!(message, "`wasm/p` is a processor, not an exporter");
    let message =
        only(&with("receivers: [otlp]", "receivers: [auditstore]"), "service.pipelines.traces/a.receivers[0]");
    assert_eq!(message, "`auditstore` is an exporter, not a receiver");
    let message =
        only(&with("receivers: [otlp]", "receivers: [otlp, otlp]"), "service.pipelines.traces/a.receivers[1]");
    assert_eq!(message, "`otlp` is listed twice");
    only(&with("receivers: [otlp]", "receivers: []"), "service.pipelines.traces/a.receivers");
    let message = only(&format!("{MINIMAL}  extensions: [health_check]\n"), "service.extensions[0]");
    assert_eq!(message, "no extension `health_check` is defined (none is defined)");
    let two = with("  wasm/p:", "  wasm/p:\n    module: a\n    policy: b\n  wasm/q:");
    let two = two.replace("processors: [wasm/p]", "processors: [wasm/p, wasm/q]");
    let message = only(&two, "service.pipelines.traces/a.processors");
    assert_eq!(message, "a pipeline runs exactly one wasm processor; 2 listed");
}

#[test]
fn a_pipeline_has_exactly_one_auditstore() {
    let two = with(
        "  auditstore:",
        "  auditstore/b:\n    directory: e\n    instance_id: h\n    signing_key: k\n  auditstore:",
    );
    let two = two.replace("exporters: [auditstore]", "exporters: [auditstore, auditstore/b]");
    let message = only(&two, "service.pipelines.traces/a.exporters");
    assert_eq!(message, "a pipeline writes to exactly one auditstore exporter; auditstore, auditstore/b listed");
    let none = with("exporters: [auditstore]", "exporters: []");
    assert_eq!(
        only(&none, "service.pipelines.traces/a.exporters"),
        "a pipeline writes to exactly one auditstore exporter; none listed"
    );
    // A broken store is reported where it is defined, not again in the pipeline.
    only(&with("directory: d", "directory: \"\""), "exporters.auditstore.directory");
}

#[test]
fn stores_and_chains_do_not_collide() {
    let text = with(
        "  auditstore:",
        "  auditstore/b:\n    directory: ./d/\n    instance_id: h\n    signing_key: k\n  auditstore:",
    );
    let text = text.replace(
        "      exporters: [auditstore]\n",
        "      exporters: [auditstore]\n    logs/b:\n      receivers: [otlp]\n      processors: [wasm/p]\n      exporters: [auditstore/b]\n",
    );
    let message = only(&text, "exporters.auditstore/b.directory");
    assert_eq!(message, "also the directory of `auditstore`: give each auditstore its own directory");

    // traces/a and logs/a share a store: different chains. Case twins would not be.
    let text = MINIMAL.replace(
        "      exporters: [auditstore]\n",
        "      exporters: [auditstore]\n    logs/a:\n      receivers: [otlp]\n      processors: [wasm/p]\n      exporters: [auditstore]\n    TRACES/A:\n      receivers: [otlp]\n      processors: [wasm/p]\n      exporters: [auditstore]\n",
    );
    // Pipeline types are lower case in the Collector; the check is on the name too.
    assert_eq!(paths(&text), ["service.pipelines.TRACES/A"]);
    let text = text.replace("TRACES/A", "traces/A");
    let message = only(&text, "service.pipelines.traces/A");
    assert!(message.contains("same chains in `auditstore` as `traces/a`"), "{message}");
}

#[test]
fn metrics_pipelines_and_unknown_signals_are_refused() {
    let message = only(&with("traces/a:", "metrics/a:"), "service.pipelines.metrics/a");
    assert_eq!(message, "metrics pipelines are not supported: metrics are not audit records");
    let message = only(&with("traces/a:", "profiles:"), "service.pipelines.profiles");
    assert!(message.contains("unknown signal `profiles`"), "{message}");
    let message = only(&with("traces/a:", "traces/a b:"), "service.pipelines.traces/a b");
    assert!(message.contains("not a component name"), "{message}");
    let message = only(&with("traces/a:", "traces/a,b:"), "service.pipelines.traces/a,b");
    assert!(message.contains("cannot be a pipeline name"), "{message}");
    let long = format!("traces/{}", "n".repeat(65));
    let message = only(&with("traces/a:", &format!("{long}:")), &format!("service.pipelines.{long}"));
    assert!(message.contains("up to 64 letters"), "{message}");
    ok(&with("traces/a:", &format!("traces/{}:", "n".repeat(64))));
}

#[test]
fn a_config_needs_a_pipeline() {
    let components = &MINIMAL[..MINIMAL.find("service:").expect("a service section")];
    assert_eq!(
        only(&format!("{components}service:\n  pipelines: {{}}\n"), "service.pipelines"),
        "at least one pipeline is required"
    );
    assert_eq!(only(&format!("{components}service:\n"), "service.pipelines"), "required: at least one pipeline");
    assert_eq!(only(components, "service"), "required: service.pipelines says what runs");
}

#[test]
fn inline_secrets_are_refused() {
    let base = "    policy: p.yaml\n    secrets:\n";
    let secret = |entry: &str| with("    policy: p.yaml\n", &format!("{base}      {entry}\n"));

    let message = only(&secret("k1: {value: hunter2}"), "processors.wasm/p.secrets.k1.value");
    assert!(message.starts_with("inline secret values are refused"), "{message}");
    assert!(!message.contains("hunter2"));
    let message = only(&secret("k1: hunter2"), "processors.wasm/p.secrets.k1");
    assert!(message.contains("inline secret values are refused") && !message.contains("hunter2"), "{message}");
    let message = only(&secret("k1: {value: \"key-${env:K:-x}\"}"), "processors.wasm/p.secrets.k1.value");
    assert!(message.starts_with("inline secret values are refused"), "{message}");
    let message = only(&secret("k1: {value: \"${env:K:-hunter2}\"}"), "processors.wasm/p.secrets.k1.value");
    assert!(
        message.contains("a default would put the secret in the file") && !message.contains("hunter2"),
        "{message}"
    );
    let message = only(&secret("k1: {file: f, value: x}"), "processors.wasm/p.secrets.k1");
    assert!(message.contains("write `{file: PATH}`"), "{message}");
    let text = secret("k1: {value: \"${env:K}\"}");
    let found = problems(&text, &[("K", "")]);
    assert_eq!(found, [("processors.wasm/p.secrets.k1.value".into(), "environment variable K is empty".into())]);
    let found = problems(&text, &[]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].1.contains("K is not set"));
    let config = parse_env(&text, &[("K", "hunter2")]).unwrap_or_else(|e| panic!("{e}"));
    let secrets = config.pipelines[0].processor.read_secrets().expect("env secrets need no files");
    assert_eq!(secrets, [("k1".to_owned(), b"hunter2".to_vec())]);
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn exporters_speak_the_collectors_keys() {
    let exporter = |body: &str| {
        let text = with("  auditstore:", &format!("  otlp/d:\n{body}\n  auditstore:"));
        text.replace("exporters: [auditstore]", "exporters: [auditstore, otlp/d]")
    };
    let config = ok(&exporter("    endpoint: http://down:4317\n    tls: {insecure: true}"));
    assert_eq!(config.pipelines[0].exporters[0].endpoint, "http://down:4317");
    let config = ok(&exporter("    endpoint: down:4317\n    tls: {insecure: false, ca_file: ca.pem}"));
    let tls = config.pipelines[0].exporters[0].tls.clone().expect("TLS");
    assert_eq!(config.pipelines[0].exporters[0].endpoint, "https://down:4317");
    assert_eq!((tls.ca_file.as_deref(), tls.include_system_ca_certs_pool), (Some(Path::new("ca.pem")), false));
    let config = ok(&exporter("    endpoint: https://down:4317"));
    assert!(config.pipelines[0].exporters[0].tls.as_ref().is_some_and(|t| t.include_system_ca_certs_pool));
    let message =
        only(&exporter("    endpoint: https://down:4317\n    tls: {insecure: true}"), "exporters.otlp/d.tls.insecure");
    assert!(message.contains("write http://"), "{message}");
    only(&exporter("    endpoint: down:4317\n    tls: {cert_file: c.pem}"), "exporters.otlp/d.tls.key_file");
    only(&exporter("    endpoint: down:4317\n    tls: {client_ca_file: c.pem}"), "exporters.otlp/d.tls.client_ca_file");
    let message = only(
        &exporter("    endpoint: down:4317\n    sending_queue: {enabled: false}"),
        "exporters.otlp/d.sending_queue.enabled",
    );
    assert!(message.contains("the store is the queue"), "{message}");
    only(&exporter("    endpoint: down:4317\n    traces_endpoint: http://x:1"), "exporters.otlp/d.traces_endpoint");
    only(&exporter("    endpoint: down:4317\n    headers: {\"bad header\": x}"), "exporters.otlp/d.headers.bad header");
    let message =
        only(&exporter("    endpoint: down:4317\n    headers: {X-A: \"a\\nb\"}"), "exporters.otlp/d.headers.X-A");
    assert!(message.contains("control characters"), "{message}");
    let message = only(
        &exporter("    endpoint: down:4317\n    headers: \"Authorization: Bearer tok\""),
        "exporters.otlp/d.headers",
    );
    assert!(!message.contains("tok"), "{message}");
    // The exporter must not send the records back into this otel-audit.
    let message = only(&exporter("    endpoint: localhost:4317"), "exporters.otlp/d.endpoint");
    assert!(message.contains("records would loop"), "{message}");
}

#[test]
fn otlphttp_needs_a_url_for_each_signal_it_carries() {
    let text = with("  auditstore:", "  otlphttp/t:\n    traces_endpoint: http://t:4318/v1/traces\n  auditstore:");
    let text = text.replace("exporters: [auditstore]", "exporters: [auditstore, otlphttp/t]");
    assert_eq!(ok(&text).pipelines[0].exporters[0].endpoint, "http://t:4318/v1/traces");
    let message = only(&text.replace("traces/a:", "logs/a:"), "service.pipelines.logs/a.exporters[1]");
    assert_eq!(message, "`otlphttp/t` has no URL for this signal: set its endpoint or logs_endpoint");
    only(&text.replace("    traces_endpoint: http://t:4318/v1/traces\n", ""), "exporters.otlphttp/t.endpoint");
}

#[test]
fn listen_addresses_do_not_clash() {
    let text = format!("{MINIMAL}  telemetry: {{metrics: {{address: \"localhost:4317\"}}}}\n");
    let message = only(&text, "service.telemetry.metrics.address");
    assert_eq!(message, "`localhost:4317` is also receivers.otlp.protocols.grpc.endpoint");
    let text = format!("{MINIMAL}  telemetry: {{metrics: {{address: \"localhost:0\"}}}}\n")
        .replace("grpc:", "grpc: {endpoint: \"localhost:0\"}");
    assert_eq!(ok(&text).metrics.as_ref().map(|m| m.endpoint.as_str()), Some("localhost:0"));
}

#[test]
fn file_level_errors() {
    let e = parse_env("receivers: [", &[]).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].message.starts_with("test.yaml is not valid YAML") && e.0[0].message.contains("(line "), "{e}");
    assert_eq!(paths(""), [""]);
    assert_eq!(paths("- a"), [""]);
    let e = load(Path::new("/nonexistent/otel-audit.yaml")).unwrap_err();
    assert!(e.to_string().starts_with("cannot read the config /nonexistent/otel-audit.yaml: "), "{e}");
}

#[test]
fn errors_print_one_line_per_problem() {
    let e = parse_env(&with("traces/a:", "metrics/a:").replace("directory: d", "directory: \"\""), &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "exporters.auditstore.directory: must not be empty\n\
         service.pipelines.metrics/a: metrics pipelines are not supported: metrics are not audit records"
    );
}

#[test]
fn validate_files_checks_what_the_config_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let key = crate::checkpoint::SignerKey::generate("test").expect("key").encode();
    std::fs::write(d.join("good.key"), key).expect("write");
    std::fs::write(d.join("bad.key"), "PRIVATE+KEY+nope").expect("write");
    std::fs::write(d.join("m.wasm"), b"\0asm").expect("write");
    std::fs::write(d.join("p.yaml"), "filter: {}\n").expect("write");
    std::fs::write(d.join("empty"), "").expect("write");
    std::fs::write(d.join("store"), "a file").expect("write");
    let text = MINIMAL
            .replace("module: m.wasm", &format!("module: {}", d.join("m.wasm").display()))
            .replace("policy: p.yaml", &format!(
                "policy: {}\n    tests: [{}]\n    secrets:\n      k1: {{file: {}}}\n      k2: {{value: \"${{env:K2}}\"}}",
                d.join("p.yaml").display(),
                d.join("missing.test.yaml").display(),
                d.join("empty").display()
            ))
            .replace("signing_key: k.key", &format!("signing_key: {}", d.join("good.key").display()))
            .replace("directory: d", &format!("directory: {}", d.display()));
    let config = parse_env(&text, &[("K2", "very-secret")]).unwrap_or_else(|e| panic!("{e}"));
    let found: Vec<(String, String)> = validate_files(&config).into_iter().map(|p| (p.path, p.message)).collect();
    let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["processors.wasm/p.tests[0]", "processors.wasm/p.secrets.k1"], "{found:#?}");
    assert!(found[1].1.contains("is empty"), "{found:?}");
    assert!(found.iter().all(|(_, m)| !m.contains("very-secret")));

    let text = text
        .replace(&d.join("good.key").display().to_string(), &d.join("bad.key").display().to_string())
        .replace(&format!("directory: {}", d.display()), &format!("directory: {}", d.join("store").display()));
    let config = parse_env(&text, &[("K2", "very-secret")]).unwrap_or_else(|e| panic!("{e}"));
    let found: Vec<(String, String)> = validate_files(&config).into_iter().map(|p| (p.path, p.message)).collect();
    let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "processors.wasm/p.tests[0]",
            "processors.wasm/p.secrets.k1",
            "exporters.auditstore.signing_key",
            "exporters.auditstore.directory"
        ]
    );
    assert!(found[2].1.contains("is not a signer key as `otel-audit keygen` writes it"), "{found:?}");
}

#[test]
fn retry_on_failure_cannot_be_turned_off() {
    let exporter = |retry: &str| {
        let body = format!("    endpoint: down:4317\n    retry_on_failure: {{{retry}}}");
        let text = with("  auditstore:", &format!("  otlp/d:\n{body}\n  auditstore:"));
        text.replace("exporters: [auditstore]", "exporters: [auditstore, otlp/d]")
    };
    let message = only(&exporter("enabled: false"), "exporters.otlp/d.retry_on_failure.enabled");
    assert!(message.contains("never skips a record"), "{message}");
    let config = ok(&exporter("enabled: true, initial_interval: 1s, max_interval: 2s"));
    assert_eq!(config.pipelines[0].exporters[0].retry.max_interval, Duration::from_secs(2));
}

#[test]
fn processor_limits_are_read_and_bounded() {
    let config = ok(&with("    policy: p.yaml", "    policy: p.yaml\n    limits: {memory: 64MiB, timeout: 2s}"));
    let limits = config.pipelines[0].processor.limits;
    assert_eq!((limits.memory, limits.timeout), (64 << 20, Duration::from_secs(2)));
    assert_eq!(ok(MINIMAL).pipelines[0].processor.limits, GuestLimits::default());
    only(
        &with("    policy: p.yaml", "    policy: p.yaml\n    limits: {memory: 1MiB}"),
        "processors.wasm/p.limits.memory",
    );
    only(
        &with("    policy: p.yaml", "    policy: p.yaml\n    limits: {memory: 8GiB}"),
        "processors.wasm/p.limits.memory",
    );
    only(
        &with("    policy: p.yaml", "    policy: p.yaml\n    limits: {timeout: 0s}"),
        "processors.wasm/p.limits.timeout",
    );
}

/// MINIMAL with writers' tokens on the receiver, an admin endpoint and a
/// read API whose authenticator is `read_api_auth`; the auditors' token is
/// the variable `auditors_token`.
fn with_read_api(read_api_auth: &str, auditors_token: &str) -> String {
    let text = with("      grpc:\n", "      grpc:\n        auth: {authenticator: bearertokenauth/writers}\n");
    let listed =
        "  extensions: [bearertokenauth/writers, bearertokenauth/admin, bearertokenauth/auditors, admin, read_api]";
    text.replacen("service:\n", &format!("service:\n{listed}\n"), 1)
        + &format!(
            "extensions:
  bearertokenauth/writers: {{token: \"${{env:WRITER}}\"}}
  bearertokenauth/admin: {{token: \"${{env:ADMIN}}\"}}
  bearertokenauth/auditors: {{token: \"${{env:{auditors_token}}}\"}}
  admin: {{auth: {{authenticator: bearertokenauth/admin}}}}
  read_api: {{auth: {{authenticator: {read_api_auth}}}}}
"
        )
}

#[test]
fn the_read_api_has_its_own_listener_and_tokens() {
    let vars = [("WRITER", "w-token"), ("ADMIN", "a-token"), ("AUDITOR", "r-token")];
    let config =
        parse_env(&with_read_api("bearertokenauth/auditors", "AUDITOR"), &vars).unwrap_or_else(|e| panic!("{e}"));
    let read_api = config.read_api.expect("the read API is configured");
    assert_eq!(read_api.endpoint, "localhost:13135", "loopback by default");
    assert_eq!(read_api.security.auth.as_ref().map(|a| a.id.as_str()), Some("bearertokenauth/auditors"));

    for (auth, token, expected) in [
        ("bearertokenauth/writers", "AUDITOR", "authenticates writers"),
        ("bearertokenauth/admin", "AUDITOR", "authenticates the admin endpoint"),
        ("bearertokenauth/auditors", "ADMIN", "shares a token with `bearertokenauth/admin`"),
        ("bearertokenauth/auditors", "WRITER", "shares a token with `bearertokenauth/writers`"),
    ] {
        let found = problems(&with_read_api(auth, token), &vars);
        assert_eq!(found.len(), 1, "{auth} {token}: {found:#?}");
        assert_eq!(found[0].0, "extensions.read_api.auth.authenticator");
        assert!(found[0].1.contains(expected), "{auth} {token}: {}", found[0].1);
    }
}
