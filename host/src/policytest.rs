//! Policy unit tests (`otel-audit test`): YAML test files beside policies,
//! run against the real component through the same runtime path the server
//! uses, so a filter that would silently drop what an auditor needs fails
//! here instead of in production.
//!
//! A test file names its policy (relative to itself) and holds named tests:
//! input records in a compact form (or an OTLP/JSON file), an optional
//! context, and expectations (kept/dropped records, attributes present,
//! absent, equal or matching on kept records, counts, or a configure error).
//! [`run_suite`] is the library entry point; the hot-swap gate calls it with
//! a candidate module and policy.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use audit_format::{ChainHead, Context, values};

use crate::runtime::{Output, Rule};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use regex::Regex;
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value as Yaml};

use crate::otlp::{self, Encoding, Signal};
use crate::runtime::{Module, RuntimeError};

/// The file name suffix test files are discovered by.
pub const TEST_FILE_SUFFIX: &str = ".test.yaml";

/// The fixed default received-at time, so test results are reproducible.
const DEFAULT_RECEIVED_AT: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
/// Base timestamp of generated records.
const BASE_TIME: u64 = 1_767_225_500_000_000_000;

/// A test file that cannot be used: which file, which test, which key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {place}: {message}")]
pub struct TestFileError {
    /// The test file.
    pub file: PathBuf,
    /// Where in it: `tests[2] "name".expect.kept`, or the file itself.
    pub place: String,
    /// What is wrong.
    pub message: String,
}

/// A parsed test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The policy under test, relative to the test file.
    pub policy: PathBuf,
    /// The component, relative to the test file (the CLI's `--module` wins).
    pub module: Option<PathBuf>,
    /// Test-only secrets by key id, as text (never real keys).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// The tests.
    pub tests: Vec<TestCase>,
}

/// One named test.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Shown in reports.
    pub name: String,
    /// Another policy for this test only, relative to the test file.
    pub policy: Option<PathBuf>,
    /// The batch context; defaults are fixed so results are reproducible.
    #[serde(default)]
    pub context: ContextSpec,
    /// The records sent (not needed when a configure error is expected).
    pub input: Option<InputSpec>,
    /// What must come out.
    pub expect: Expect,
}

/// `context:` of a test.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextSpec {
    /// RFC 3339; default 2026-01-01T00:00:00Z.
    pub received_at: Option<String>,
    /// Default `policy-test`.
    pub chain_id: Option<String>,
    /// Default 0.
    pub seq: Option<u64>,
    /// Hex leaf of the previous record; default genesis.
    pub prev: Option<String>,
}

/// `input:` of a test: compact records or an OTLP/JSON file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// An OTLP/JSON export request, relative to the test file.
    pub otlp_json: Option<PathBuf>,
    /// `traces` or `logs`: needed with `otlp_json`, else implied.
    pub signal: Option<String>,
    /// Resource attributes.
    #[serde(default)]
    pub resource: Mapping,
    /// Instrumentation scope.
    pub scope: Option<ScopeSpec>,
    /// Spans.
    #[serde(default)]
    pub spans: Vec<SpanSpec>,
    /// Log records.
    #[serde(default)]
    pub logs: Vec<LogSpec>,
}

/// `scope:` of an input.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSpec {
    /// Scope name.
    #[serde(default)]
    pub name: String,
    /// Scope version.
    #[serde(default)]
    pub version: String,
    /// Scope attributes.
    #[serde(default)]
    pub attributes: Mapping,
}

/// A span in compact form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanSpec {
    /// Span name; also how expectations refer to it.
    pub name: String,
    /// `server`, `client`, `internal`, `producer`, `consumer` (or `SPAN_KIND_*`).
    pub kind: Option<String>,
    /// Status.
    pub status: Option<StatusSpec>,
    /// Attributes (YAML scalars keep their types; lists are arrays, maps are maps).
    #[serde(default)]
    pub attributes: Mapping,
    /// Hex trace id; default derived from the position.
    pub trace_id: Option<String>,
    /// Hex span id; default derived from the position (unique).
    pub span_id: Option<String>,
}

/// `status:` of a span.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSpec {
    /// `unset`, `ok` or `error`.
    pub code: String,
    /// Status message.
    #[serde(default)]
    pub message: String,
}

/// A log record in compact form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    /// A label expectations refer to it by (not sent).
    pub name: Option<String>,
    /// Severity name (`INFO`, `WARN2`, ...) setting both number and text.
    pub severity: Option<String>,
    /// Severity number (name or 1..24), overriding `severity`.
    pub severity_number: Option<Yaml>,
    /// Severity text, overriding `severity`.
    pub severity_text: Option<String>,
    /// Body (typed like attributes).
    pub body: Option<Yaml>,
    /// Attributes.
    #[serde(default)]
    pub attributes: Mapping,
}

/// A record named in an expectation: by name (span name or log label) or
/// by 0-based position in the input.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RecordRef {
    /// Input position.
    Index(usize),
    /// Span name or log label.
    Name(String),
}

impl std::fmt::Display for RecordRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordRef::Index(i) => write!(f, "#{i}"),
            RecordRef::Name(n) => write!(f, "{n:?}"),
        }
    }
}

/// `expect:` of a test.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Exactly these records are kept (every other input record dropped).
    pub kept: Option<Vec<RecordRef>>,
    /// These records are dropped.
    #[serde(default)]
    pub dropped: Vec<RecordRef>,
    /// How many records are chained.
    pub records: Option<u64>,
    /// How many values redaction masked or removed.
    pub redacted: Option<u64>,
    /// How many kept records broke `audit.require`.
    pub violations: Option<u64>,
    /// Conditions on kept records' attributes.
    #[serde(default)]
    pub attributes: Vec<AttributeExpect>,
    /// The policy must fail to configure with a message containing this.
    pub configure_error: Option<String>,
}

impl Expect {
    /// Whether the test expects something of the processed output.
    fn checks_output(&self) -> bool {
        self.kept.is_some()
            || !self.dropped.is_empty()
            || self.records.is_some()
            || self.redacted.is_some()
            || self.violations.is_some()
            || !self.attributes.is_empty()
    }

    /// Whether the test states no expectation at all.
    fn is_empty(&self) -> bool {
        !self.checks_output() && self.configure_error.is_none()
    }
}

/// Conditions on the attributes of kept records.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeExpect {
    /// Which record; default every kept record.
    pub record: Option<RecordRef>,
    /// Keys that must be present.
    #[serde(default)]
    pub present: Vec<String>,
    /// Keys that must be absent.
    #[serde(default)]
    pub absent: Vec<String>,
    /// Keys whose value must equal (typed: `3` is an int, `"3"` a string).
    #[serde(default)]
    pub equal: Mapping,
    /// Keys whose value, as text, must match a regex (unanchored).
    #[serde(default)]
    pub matches: BTreeMap<String, String>,
}

/// The outcome of one test.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// The test's name.
    pub name: String,
    /// Each unmet expectation; empty when the test passed.
    pub failures: Vec<String>,
    /// Rule ids the test's batch hit.
    pub rules_hit: Vec<String>,
    /// Wall time.
    pub duration: Duration,
}

impl TestResult {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The outcome of one test file.
#[derive(Debug, Clone)]
pub struct SuiteReport {
    /// The test file.
    pub file: PathBuf,
    /// The policy it tests.
    pub policy: PathBuf,
    /// The policy's rules (from the last successful configure).
    pub rules: Vec<Rule>,
    /// Hits per rule summed over all tests.
    pub hits: Vec<u64>,
    /// Per test.
    pub results: Vec<TestResult>,
}

impl SuiteReport {
    /// Rules no test hit.
    pub fn unexercised(&self) -> Vec<&Rule> {
        self.rules.iter().zip(&self.hits).filter(|(_, h)| **h == 0).map(|(r, _)| r).collect()
    }
}

/// Finds test files: files as given, directories searched (recursively)
/// for `*.test.yaml`, sorted.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TestFileError> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut found)?;
        } else if path.exists() {
            found.push(path.clone());
        } else {
            return Err(file_error(path, "(path)", "no such file or directory"));
        }
    }
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), TestFileError> {
    let entries = std::fs::read_dir(dir).map_err(|e| file_error(dir, "(directory)", e.to_string()))?;
    for entry in entries {
        let path = entry.map_err(|e| file_error(dir, "(directory)", e.to_string()))?.path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if path.to_string_lossy().ends_with(TEST_FILE_SUFFIX) {
            found.push(path);
        }
    }
    Ok(())
}

fn file_error(file: &Path, place: impl Into<String>, message: impl Into<String>) -> TestFileError {
    TestFileError { file: file.to_owned(), place: place.into(), message: message.into() }
}

/// Reads and parses a test file; errors name the file, the test and the key.
pub fn load(path: &Path) -> Result<TestFile, TestFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, "(file)", e.to_string()))?;
    let deserializer = serde_yaml_ng::Deserializer::from_str(&text);
    let file: TestFile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let e = values::yaml_error(e);
        let line = e.line.map(|(l, _)| format!(" (line {l})")).unwrap_or_default();
        file_error(path, describe_place(&text, &e.path), format!("{}{line}", e.message))
    })?;
    if file.tests.is_empty() {
        return Err(file_error(path, "tests", "the file has no tests"));
    }
    for (i, case) in file.tests.iter().enumerate() {
        let place = format!("test {:?} (tests[{i}].expect)", case.name);
        if case.expect.is_empty() {
            return Err(file_error(path, place, "expects nothing, so it could never fail: say what must come out"));
        }
        if let Some(needle) = &case.expect.configure_error {
            if needle.is_empty() {
                return Err(file_error(path, place, "configure_error is empty and would match any error"));
            }
            if case.expect.checks_output() {
                return Err(file_error(
                    path,
                    place,
                    "configure_error cannot be combined with other expectations: a policy that fails to configure processes nothing",
                ));
            }
        }
    }
    Ok(file)
}

/// Names a key path like `tests[2].expect.kep` with the test's name, read
/// leniently from the raw YAML, so the user finds it without counting.
fn describe_place(text: &str, key: &str) -> String {
    let Some(rest) = key.strip_prefix("tests[") else { return key.to_owned() };
    let Some((index, _)) = rest.split_once(']') else { return key.to_owned() };
    let name = index.parse::<usize>().ok().and_then(|i| {
        let doc: Yaml = serde_yaml_ng::from_str(text).ok()?;
        doc.get("tests")?.get(i)?.get("name")?.as_str().map(str::to_owned)
    });
    match name {
        Some(name) => format!("test {name:?} ({key})"),
        None => key.to_owned(),
    }
}

/// Runs every test of a loaded file against `module`. `policy_text`
/// replaces the file's policy (the hot-swap gate tests a candidate this
/// way); tests naming their own policy keep it.
pub fn run_suite(
    path: &Path,
    file: &TestFile,
    module: &Module,
    policy_text: Option<&str>,
) -> Result<SuiteReport, TestFileError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let policy_path = base.join(&file.policy);
    let default_policy = match policy_text {
        Some(text) => text.to_owned(),
        None => std::fs::read_to_string(&policy_path)
            .map_err(|e| file_error(path, "policy", format!("cannot read {}: {e}", policy_path.display())))?,
    };
    let secrets: Vec<(String, Vec<u8>)> =
        file.secrets.iter().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())).collect();
    let mut report = SuiteReport {
        file: path.to_owned(),
        policy: policy_path,
        rules: Vec::new(),
        hits: Vec::new(),
        results: Vec::new(),
    };
    for (i, case) in file.tests.iter().enumerate() {
        let place = format!("test {:?} (tests[{i}])", case.name);
        let policy = match &case.policy {
            Some(own) => std::fs::read_to_string(base.join(own)).map_err(|e| {
                file_error(path, format!("{place}.policy"), format!("cannot read {}: {e}", own.display()))
            })?,
            None => default_policy.clone(),
        };
        let started = Instant::now();
        let run = run_case(path, &place, case, module, &policy, &secrets)?;
        let mut result = TestResult {
            name: case.name.clone(),
            failures: run.failures,
            rules_hit: Vec::new(),
            duration: started.elapsed(),
        };
        if let Some((rules, hits)) = run.coverage {
            // Coverage is of the file's policy; a test with its own policy
            // does not count towards it.
            if case.policy.is_none() {
                if report.rules.is_empty() {
                    report.hits = vec![0; rules.len()];
                    report.rules = rules.clone();
                }
                for (total, hit) in report.hits.iter_mut().zip(&hits) {
                    *total += hit;
                }
            }
            result.rules_hit = rules.iter().zip(&hits).filter(|(_, h)| **h > 0).map(|(r, _)| r.id.clone()).collect();
        }
        report.results.push(result);
    }
    Ok(report)
}

struct CaseRun {
    failures: Vec<String>,
    coverage: Option<(Vec<Rule>, Vec<u64>)>,
}

fn run_case(
    path: &Path,
    place: &str,
    case: &TestCase,
    module: &Module,
    policy: &str,
    secrets: &[(String, Vec<u8>)],
) -> Result<CaseRun, TestFileError> {
    let fail = |message: String| Ok(CaseRun { failures: vec![message], coverage: None });
    let mut instance = match module.instantiate() {
        Ok(instance) => instance,
        Err(e) => return fail(format!("cannot instantiate the component: {e}")),
    };
    let info = match (&case.expect.configure_error, instance.configure(policy, secrets)) {
        (Some(needle), Err(RuntimeError::Policy(message))) => {
            return if message.contains(needle.as_str()) {
                Ok(CaseRun { failures: Vec::new(), coverage: None })
            } else {
                fail(format!("expected a configure error containing {needle:?}\n  got: {message}"))
            };
        }
        (Some(needle), Ok(_)) => {
            return fail(format!("expected a configure error containing {needle:?}, but the policy configured"));
        }
        (_, Err(e)) => return fail(format!("the policy failed to configure: {e}")),
        (None, Ok(info)) => info,
    };
    let input = case
        .input
        .as_ref()
        .ok_or_else(|| file_error(path, format!("{place}.input"), "missing: what records does the test send?"))?;
    let batch = build_input(path, place, input)?;
    let ctx = context(path, place, &case.context)?;
    let result = match batch.signal {
        Signal::Traces => instance.process_traces(&batch.request, &ctx),
        Signal::Logs => instance.process_logs(&batch.request, &ctx),
    };
    let output = match result {
        Ok(output) => output,
        Err(e) => return fail(format!("the component refused the batch: {e}")),
    };
    let failures = check(path, place, &case.expect, &batch, &output)?;
    Ok(CaseRun { failures, coverage: Some((info.rules, output.stats.rule_hits)) })
}

/// One input record: its names for expectations and the key that finds it
/// again in the output.
struct InputRecord {
    name: String,
    key: Vec<u8>,
}

struct Batch {
    signal: Signal,
    request: Vec<u8>,
    records: Vec<InputRecord>,
}

fn build_input(path: &Path, place: &str, input: &InputSpec) -> Result<Batch, TestFileError> {
    let err = |key: &str, message: String| file_error(path, format!("{place}.input{key}"), message);
    if let Some(json) = &input.otlp_json {
        if !input.spans.is_empty() || !input.logs.is_empty() {
            return Err(err("", "give either otlp_json or spans/logs, not both".into()));
        }
        let signal = match input.signal.as_deref() {
            Some("traces") => Signal::Traces,
            Some("logs") => Signal::Logs,
            other => return Err(err(".signal", format!("otlp_json needs signal: traces or logs (got {other:?})"))),
        };
        let file = path.parent().unwrap_or(Path::new(".")).join(json);
        let bytes =
            std::fs::read(&file).map_err(|e| err(".otlp_json", format!("cannot read {}: {e}", file.display())))?;
        let request =
            otlp::to_protobuf(signal, &bytes, Encoding::Json).map_err(|e| err(".otlp_json", e.to_string()))?;
        let records = match signal {
            Signal::Traces => spans_of(&ExportTraceServiceRequest::decode(request.as_slice()).expect("just encoded"))
                .iter()
                .map(|s| InputRecord { name: s.name.clone(), key: span_key(s) })
                .collect(),
            Signal::Logs => logs_of(&ExportLogsServiceRequest::decode(request.as_slice()).expect("just encoded"))
                .iter()
                .map(|l| InputRecord { name: String::new(), key: log_key(l) })
                .collect(),
        };
        let batch = Batch { signal, request, records };
        return unique_keys(batch).map_err(|m| err(".otlp_json", m));
    }
    let value = |key: String, yaml: &Yaml| {
        values::yaml_to_value(&key, yaml).map_err(|e| err(&format!(".{}", e.path), e.message))
    };
    let attributes = |prefix: String, map: &Mapping| -> Result<Vec<KeyValue>, TestFileError> {
        map.iter()
            .map(|(k, v)| {
                let key =
                    k.as_str().ok_or_else(|| err(&prefix, format!("attribute keys must be strings, got {k:?}")))?;
                Ok(KeyValue { key: key.to_owned(), value: Some(value(format!("{prefix}.{key}"), v)?), key_strindex: 0 })
            })
            .collect()
    };
    let resource = Resource { attributes: attributes("resource".into(), &input.resource)?, ..Resource::default() };
    let scope_spec = input.scope.as_ref();
    let scope = InstrumentationScope {
        name: scope_spec.map(|s| s.name.clone()).unwrap_or_default(),
        version: scope_spec.map(|s| s.version.clone()).unwrap_or_default(),
        attributes: attributes("scope.attributes".into(), scope_spec.map_or(&Mapping::new(), |s| &s.attributes))?,
        dropped_attributes_count: 0,
    };
    let signal = match (input.spans.is_empty(), input.logs.is_empty(), input.signal.as_deref()) {
        (false, true, None | Some("traces")) => Signal::Traces,
        (true, false, None | Some("logs")) => Signal::Logs,
        (true, true, _) => return Err(err("", "no spans or logs to send".into())),
        (false, false, _) => return Err(err("", "a test sends spans or logs, not both (write two tests)".into())),
        (_, _, Some(other)) => return Err(err(".signal", format!("'{other}' does not match the records given"))),
    };
    let batch = match signal {
        Signal::Traces => {
            let mut spans = Vec::new();
            for (i, spec) in input.spans.iter().enumerate() {
                let at = format!(".spans[{i}]");
                let position = i as u64 + 1;
                let span = Span {
                    trace_id: hex_id(spec.trace_id.as_deref(), 16, position)
                        .map_err(|m| err(&format!("{at}.trace_id"), m))?,
                    span_id: hex_id(spec.span_id.as_deref(), 8, position)
                        .map_err(|m| err(&format!("{at}.span_id"), m))?,
                    name: spec.name.clone(),
                    kind: span_kind(spec.kind.as_deref()).map_err(|m| err(&format!("{at}.kind"), m))?,
                    start_time_unix_nano: BASE_TIME + position * 1_000_000,
                    end_time_unix_nano: BASE_TIME + position * 1_000_000 + 500_000,
                    attributes: attributes(format!("spans[{i}].attributes"), &spec.attributes)?,
                    status: match &spec.status {
                        Some(s) => Some(Status {
                            code: status_code(&s.code).map_err(|m| err(&format!("{at}.status.code"), m))?,
                            message: s.message.clone(),
                        }),
                        None => None,
                    },
                    ..Span::default()
                };
                spans.push(span);
            }
            let records = spans.iter().map(|s| InputRecord { name: s.name.clone(), key: span_key(s) }).collect();
            let scope_spans = vec![ScopeSpans { scope: Some(scope), spans, schema_url: String::new() }];
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(resource),
                    scope_spans,
                    schema_url: String::new(),
                }],
            };
            Batch { signal, request: request.encode_to_vec(), records }
        }
        Signal::Logs => {
            let mut logs = Vec::new();
            let mut names = Vec::new();
            for (i, spec) in input.logs.iter().enumerate() {
                let at = format!(".logs[{i}]");
                let position = i as u64 + 1;
                let mut log = LogRecord {
                    time_unix_nano: BASE_TIME + position * 1_000_000,
                    observed_time_unix_nano: BASE_TIME + position * 1_000_000 + 1,
                    attributes: attributes(format!("logs[{i}].attributes"), &spec.attributes)?,
                    ..LogRecord::default()
                };
                if let Some(name) = &spec.severity {
                    log.severity_number = severity(&format!("{place}.input{at}.severity"), &Yaml::String(name.clone()))
                        .map_err(|m| err(&format!("{at}.severity"), m))?;
                    log.severity_text = name.clone();
                }
                if let Some(number) = &spec.severity_number {
                    log.severity_number = severity(&format!("{place}.input{at}.severity_number"), number)
                        .map_err(|m| err(&format!("{at}.severity_number"), m))?;
                }
                if let Some(text) = &spec.severity_text {
                    log.severity_text = text.clone();
                }
                if let Some(body) = &spec.body {
                    log.body = Some(value(format!("logs[{i}].body"), body)?);
                }
                names.push(spec.name.clone().unwrap_or_default());
                logs.push(log);
            }
            let records = logs.iter().zip(names).map(|(l, name)| InputRecord { name, key: log_key(l) }).collect();
            let scope_logs = vec![ScopeLogs { scope: Some(scope), log_records: logs, schema_url: String::new() }];
            let request = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs { resource: Some(resource), scope_logs, schema_url: String::new() }],
            };
            Batch { signal, request: request.encode_to_vec(), records }
        }
    };
    unique_keys(batch).map_err(|m| err("", m))
}

fn unique_keys(batch: Batch) -> Result<Batch, String> {
    let mut seen = std::collections::HashSet::new();
    for (i, record) in batch.records.iter().enumerate() {
        if !seen.insert(&record.key) {
            return Err(format!(
                "record #{i} cannot be told apart from an earlier one in the output: give every span a unique span id (every log record a unique observed time)"
            ));
        }
    }
    Ok(batch)
}

fn span_key(span: &Span) -> Vec<u8> {
    [span.trace_id.as_slice(), span.span_id.as_slice()].concat()
}

fn log_key(log: &LogRecord) -> Vec<u8> {
    log.observed_time_unix_nano.to_be_bytes().to_vec()
}

fn hex_id(given: Option<&str>, len: usize, position: u64) -> Result<Vec<u8>, String> {
    match given {
        Some(text) => {
            let bytes = hex::decode(text).map_err(|e| format!("not hex: {e}"))?;
            if bytes.len() != len {
                return Err(format!("must be {len} bytes ({} hex digits)", len * 2));
            }
            Ok(bytes)
        }
        None => {
            let mut id = vec![0u8; len];
            id[len - 8..].copy_from_slice(&position.to_be_bytes());
            Ok(id)
        }
    }
}

fn span_kind(kind: Option<&str>) -> Result<i32, String> {
    let Some(kind) = kind else { return Ok(0) };
    let upper = kind.to_ascii_uppercase();
    let name = upper.strip_prefix("SPAN_KIND_").unwrap_or(&upper);
    ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]
        .iter()
        .position(|k| *k == name)
        .map(|p| p as i32)
        .ok_or_else(|| format!("'{kind}' is not a span kind (server, client, internal, producer, consumer)"))
}

fn status_code(code: &str) -> Result<i32, String> {
    match code.to_ascii_lowercase().trim_start_matches("status_code_") {
        "unset" => Ok(0),
        "ok" => Ok(1),
        "error" => Ok(2),
        _ => Err(format!("'{code}' is not a status code (unset, ok, error)")),
    }
}

fn severity(path: &str, value: &Yaml) -> Result<i32, String> {
    values::parse_severity(path, value).map_err(|e| e.message)
}

fn context(path: &Path, place: &str, spec: &ContextSpec) -> Result<Context, TestFileError> {
    let err = |key: &str, message: String| file_error(path, format!("{place}.context.{key}"), message);
    let received_at_unix_nano = match &spec.received_at {
        Some(text) => crate::clock::parse_rfc3339(text).map_err(|m| err("received_at", m))?,
        None => DEFAULT_RECEIVED_AT,
    };
    let prev = match &spec.prev {
        Some(text) => hex::decode(text)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| err("prev", "must be 64 hex digits (a SHA-256 leaf)".into()))?,
        None => audit_format::GENESIS_PREV,
    };
    let chain_id = spec.chain_id.clone().unwrap_or_else(|| "policy-test".into());
    Ok(Context { received_at_unix_nano, head: ChainHead { chain_id, seq: spec.seq.unwrap_or(0), prev } })
}

fn spans_of(req: &ExportTraceServiceRequest) -> Vec<&Span> {
    req.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect()
}

fn logs_of(req: &ExportLogsServiceRequest) -> Vec<&LogRecord> {
    req.resource_logs.iter().flat_map(|r| &r.scope_logs).flat_map(|s| &s.log_records).collect()
}

/// Compares what came out with what the test expects; returns one message
/// per unmet expectation.
fn check(path: &Path, place: &str, expect: &Expect, batch: &Batch, out: &Output) -> Result<Vec<String>, TestFileError> {
    let mut failures = Vec::new();
    // Which input records were kept, and their attributes.
    let kept: Vec<(usize, Vec<KeyValue>)> = match batch.signal {
        Signal::Traces => {
            let req = ExportTraceServiceRequest::decode(out.otlp.as_slice())
                .map_err(|e| file_error(path, place, e.to_string()))?;
            spans_of(&req)
                .into_iter()
                .map(|s| (span_key(s), s.attributes.clone()))
                .filter_map(|(k, a)| locate(batch, &k).map(|i| (i, a)))
                .collect()
        }
        Signal::Logs => {
            let req = ExportLogsServiceRequest::decode(out.otlp.as_slice())
                .map_err(|e| file_error(path, place, e.to_string()))?;
            logs_of(&req)
                .into_iter()
                .map(|l| (log_key(l), l.attributes.clone()))
                .filter_map(|(k, a)| locate(batch, &k).map(|i| (i, a)))
                .collect()
        }
    };
    let kept_indexes: Vec<usize> = kept.iter().map(|(i, _)| *i).collect();
    let label = |i: usize| {
        let name = &batch.records[i].name;
        if name.is_empty() { format!("#{i}") } else { format!("{name:?}") }
    };
    let resolve = |r: &RecordRef, key: &str| -> Result<Vec<usize>, TestFileError> {
        let found: Vec<usize> = match r {
            RecordRef::Index(i) if *i < batch.records.len() => vec![*i],
            RecordRef::Index(_) => Vec::new(),
            RecordRef::Name(n) => (0..batch.records.len()).filter(|i| &batch.records[*i].name == n).collect(),
        };
        if found.is_empty() {
            return Err(file_error(path, format!("{place}.expect.{key}"), format!("{r} names no input record")));
        }
        Ok(found)
    };
    if let Some(expected) = &expect.kept {
        let mut want = Vec::new();
        for r in expected {
            want.extend(resolve(r, "kept")?);
        }
        want.sort_unstable();
        want.dedup();
        if want != kept_indexes {
            failures.push(format!(
                "kept records differ\n  expected: [{}]\n  got:      [{}]",
                want.iter().map(|i| label(*i)).collect::<Vec<_>>().join(", "),
                kept_indexes.iter().map(|i| label(*i)).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    for r in &expect.dropped {
        for i in resolve(r, "dropped")? {
            if kept_indexes.contains(&i) {
                failures.push(format!("expected {} to be dropped, but it was kept", label(i)));
            }
        }
    }
    for (what, want, got) in [
        ("chained records", expect.records, out.stats.kept),
        ("redacted values", expect.redacted, out.stats.redacted),
        ("require violations", expect.violations, out.stats.violations),
    ] {
        if let Some(want) = want
            && want != got
        {
            failures.push(format!("expected {want} {what}, got {got}"));
        }
    }
    for (n, condition) in expect.attributes.iter().enumerate() {
        let key = format!("attributes[{n}]");
        let targets: Vec<&(usize, Vec<KeyValue>)> = match &condition.record {
            Some(r) => {
                let wanted = resolve(r, &format!("{key}.record"))?;
                let targets: Vec<_> = kept.iter().filter(|(i, _)| wanted.contains(i)).collect();
                if targets.is_empty() {
                    failures.push(format!("{key}: {r} was not kept, so its attributes cannot be checked"));
                }
                targets
            }
            None => {
                if kept.is_empty() {
                    failures.push(format!("{key}: no record was kept, so no attribute could be checked"));
                }
                kept.iter().collect()
            }
        };
        let matchers = condition
            .matches
            .iter()
            .map(|(k, p)| {
                Regex::new(p).map(|re| (k, re)).map_err(|e| {
                    file_error(path, format!("{place}.expect.{key}.matches.{k}"), format!("invalid regex: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut equal = Vec::new();
        for (k, v) in &condition.equal {
            let k = k
                .as_str()
                .ok_or_else(|| file_error(path, format!("{place}.expect.{key}.equal"), "keys must be strings"))?;
            let v = values::yaml_to_value(k, v)
                .map_err(|e| file_error(path, format!("{place}.expect.{key}.equal.{k}"), e.message))?;
            equal.push((k, v));
        }
        for (i, attrs) in targets {
            let get = |k: &str| attrs.iter().find(|kv| kv.key == k).map(|kv| kv.value.clone().unwrap_or_default());
            for k in &condition.present {
                if get(k).is_none() {
                    failures.push(format!("record {}: expected attribute {k} to be present", label(*i)));
                }
            }
            for k in &condition.absent {
                if let Some(v) = get(k) {
                    failures.push(format!(
                        "record {}: expected attribute {k} to be absent, found {}",
                        label(*i),
                        show(&v)
                    ));
                }
            }
            for (k, want) in &equal {
                match get(k) {
                    Some(v) if v == *want => {}
                    Some(v) => failures.push(format!(
                        "record {}: {k}\n  expected: {}\n  got:      {}",
                        label(*i),
                        show(want),
                        show(&v)
                    )),
                    None => failures.push(format!(
                        "record {}: {k}\n  expected: {}\n  got:      (absent)",
                        label(*i),
                        show(want)
                    )),
                }
            }
            for (k, re) in &matchers {
                match get(k).as_ref().and_then(values::scalar_text) {
                    Some(text) if re.is_match(&text) => {}
                    Some(text) => failures.push(format!("record {}: {k} = {text:?} does not match /{re}/", label(*i))),
                    None => failures
                        .push(format!("record {}: {k} is absent or not a scalar; expected to match /{re}/", label(*i))),
                }
            }
        }
    }
    Ok(failures)
}

fn locate(batch: &Batch, key: &[u8]) -> Option<usize> {
    batch.records.iter().position(|r| r.key == key)
}

/// A value as a test author would write it.
fn show(v: &AnyValue) -> String {
    match &v.value {
        None => "(empty)".into(),
        Some(Value::StringValue(s)) => format!("{s:?}"),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => format!("{d:?}"),
        Some(Value::BytesValue(b)) => format!("bytes {}", hex::encode(b)),
        Some(Value::ArrayValue(a)) => format!("[{}]", a.values.iter().map(show).collect::<Vec<_>>().join(", ")),
        Some(Value::KvlistValue(m)) => format!(
            "{{{}}}",
            m.values
                .iter()
                .map(|kv| format!("{}: {}", kv.key, show(&kv.value.clone().unwrap_or_default())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(Value::StringValueStrindex(i)) => format!("strindex {i}"),
    }
}

/// Renders reports as text: a PASS/FAIL line per test, failures with what
/// was expected and what came out, with `coverage` the rules each test hit
/// and those no test hit, and the final `N passed, N failed` line.
pub fn render_text(reports: &[SuiteReport], errors: &[TestFileError], coverage: bool) -> String {
    let mut out = String::new();
    for report in reports {
        let _ = writeln!(out, "{} (policy {})", report.file.display(), report.policy.display());
        for result in &report.results {
            let verdict = if result.passed() { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "  {verdict}  {}", result.name);
            for failure in &result.failures {
                for (n, line) in failure.lines().enumerate() {
                    let _ = writeln!(out, "        {}{line}", if n == 0 { "" } else { "  " });
                }
            }
            if coverage && !result.rules_hit.is_empty() {
                let _ = writeln!(out, "        rules hit: {}", result.rules_hit.join(", "));
            }
        }
        if coverage {
            let missed = report.unexercised();
            let _ = writeln!(
                out,
                "  coverage: {}/{} rules exercised",
                report.rules.len() - missed.len(),
                report.rules.len()
            );
            for rule in missed {
                let _ = writeln!(out, "    not exercised: {}  ({})", rule.id, rule.description);
            }
        }
    }
    for error in errors {
        let _ = writeln!(out, "ERROR {error}");
    }
    let (passed, failed) = totals(reports);
    let _ = writeln!(out, "{passed} passed, {} failed", failed + errors.len());
    out
}

/// Passed and failed test counts.
pub fn totals(reports: &[SuiteReport]) -> (usize, usize) {
    let all = reports.iter().flat_map(|r| &r.results);
    let passed = all.clone().filter(|r| r.passed()).count();
    (passed, all.count() - passed)
}

/// Renders reports as JUnit XML: a test suite per file, a test case per
/// test, a failure per failed test, an error per unusable file.
pub fn render_junit(reports: &[SuiteReport], errors: &[TestFileError]) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase as JunitCase, TestCaseStatus, TestSuite};
    let mut junit = Report::new("otel-audit policy tests");
    for report in reports {
        let mut suite = TestSuite::new(report.file.display().to_string());
        for result in &report.results {
            let status = if result.passed() {
                TestCaseStatus::success()
            } else {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(
                    result.failures.first().cloned().unwrap_or_default().lines().next().unwrap_or_default().to_owned(),
                );
                status.set_description(result.failures.join("\n"));
                status
            };
            let mut case = JunitCase::new(result.name.clone(), status);
            case.set_classname(report.policy.display().to_string());
            case.set_time(result.duration);
            suite.add_test_case(case);
        }
        junit.add_test_suite(suite);
    }
    for error in errors {
        let mut suite = TestSuite::new(error.file.display().to_string());
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_message(error.to_string());
        suite.add_test_case(JunitCase::new(error.place.clone(), status));
        junit.add_test_suite(suite);
    }
    junit.to_string().unwrap_or_else(|e| format!("<!-- cannot render JUnit XML: {e} -->\n"))
}
