//! The test file format: the serde types of a `*.test.yaml` file, loading
//! it, and errors that name the file, the test and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use audit_format::values;

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value as Yaml};

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
    /// Rules of the policy no input can hit, by id, each with the reason
    /// (`transform.error_mode` when no statement can fail): coverage
    /// lists them apart and `--fail-uncovered` does not count them; a
    /// test that hits one is an error of the file.
    #[serde(default)]
    pub unreachable: BTreeMap<String, String>,
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
    /// Hex parent span id; default none (a root span).
    pub parent_span_id: Option<String>,
    /// W3C trace state (`key=value,...`).
    #[serde(default)]
    pub trace_state: String,
    /// Span events.
    #[serde(default)]
    pub events: Vec<EventSpec>,
}

/// A span event in compact form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// Event name; also how expectations refer to it.
    pub name: String,
    /// Attributes.
    #[serde(default)]
    pub attributes: Mapping,
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
    /// Conditions on kept records' attributes (or their resource's,
    /// scope's or an event's).
    #[serde(default)]
    pub attributes: Vec<AttributeExpect>,
    /// Conditions on kept records' other fields (name, body, status, ...).
    #[serde(default)]
    pub fields: Vec<FieldExpect>,
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
            || !self.fields.is_empty()
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
    /// Exactly these keys, besides the processor's own (`audit.policy.digest`, ...).
    pub keys: Option<Vec<String>>,
    /// How many keys, besides the processor's own.
    pub count: Option<usize>,
    /// Whose attributes: `record` (default), `resource` or `scope` (of the record).
    #[serde(default)]
    pub of: AttributesOf,
    /// A span event of the record, by name: its attributes instead.
    pub event: Option<String>,
}

/// Whose attributes an [`AttributeExpect`] checks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttributesOf {
    /// The record's own.
    #[default]
    Record,
    /// Its resource's.
    Resource,
    /// Its instrumentation scope's.
    Scope,
}

/// Conditions on a kept record's fields other than attributes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldExpect {
    /// Which record; default every kept record.
    pub record: Option<RecordRef>,
    /// Fields whose value must equal (typed): spans `name`, `kind`,
    /// `trace_state`, `parent_span_id` (hex), `status.code`,
    /// `status.message`, `events` (the names, in order); logs `body`,
    /// `severity_number`, `severity_text`.
    #[serde(default)]
    pub equal: Mapping,
    /// Fields that must be absent (logs: `body`).
    #[serde(default)]
    pub absent: Vec<String>,
}

pub(super) fn file_error(file: &Path, place: impl Into<String>, message: impl Into<String>) -> TestFileError {
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
    if let Some((id, _)) = file.unreachable.iter().find(|(_, why)| why.trim().is_empty()) {
        return Err(file_error(path, format!("unreachable.{id}"), "say why no input can hit the rule"));
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
pub(super) fn describe_place(text: &str, key: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<TestFile, TestFileError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.test.yaml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn a_test_file_reads_into_its_parts() {
        let file = load_text(
            "policy: p.yaml\ntests:\n  - name: one\n    input: {spans: [{name: s, attributes: {a: 1}}]}\n    expect: {kept: [s], records: 1}\n",
        )
        .unwrap();
        assert_eq!(file.policy, Path::new("p.yaml"));
        assert_eq!(file.tests.len(), 1);
        let case = &file.tests[0];
        assert_eq!(case.name, "one");
        assert_eq!(case.input.as_ref().unwrap().spans[0].name, "s");
        assert_eq!(case.expect.records, Some(1));
    }

    #[test]
    fn a_mistyped_key_is_named_with_its_test_and_line() {
        let error = load_text("policy: p.yaml\ntests:\n  - name: role change\n    expect: {kep: [s]}\n").unwrap_err();
        assert_eq!(error.place, r#"test "role change" (tests[0].expect.kep)"#);
        assert!(error.message.contains("unknown field `kep`") && error.message.contains("(line 4)"), "{error}");
        let error = load_text("policy: p.yaml\ntests: []\n").unwrap_err();
        assert!(error.to_string().contains("x.test.yaml"), "the file is named: {error}");
    }

    #[test]
    fn places_outside_a_test_stay_key_paths() {
        assert_eq!(describe_place("policy: 1\n", "policy"), "policy");
        assert_eq!(describe_place("tests: [{name: a}]\n", "tests[0].input"), r#"test "a" (tests[0].input)"#);
        assert_eq!(describe_place("tests: []\n", "tests[3].input"), "tests[3].input");
    }
}
