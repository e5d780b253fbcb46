//! A test's input as the component takes it: compact records (or an
//! OTLP/JSON file) built into one export request, each record keyed so it
//! can be found again in the output; and the batch's context.

use std::path::Path;

use audit_format::{ChainHead, Context, values};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::Event};
use prost::Message;
use serde_yaml_ng::{Mapping, Value as Yaml};

use crate::otlp::{self, Encoding, Signal};

use super::file::{ContextSpec, InputSpec, TestFileError, file_error};

/// The fixed default received-at time, so test results are reproducible.
pub(super) const DEFAULT_RECEIVED_AT: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
/// Base timestamp of generated records.
pub(super) const BASE_TIME: u64 = 1_767_225_500_000_000_000;

/// One input record: its names for expectations and the key that finds it
/// again in the output.
#[derive(Debug)]
pub(super) struct InputRecord {
    pub(super) name: String,
    pub(super) key: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct Batch {
    pub(super) signal: Signal,
    pub(super) request: Vec<u8>,
    pub(super) records: Vec<InputRecord>,
}

pub(super) fn build_input(path: &Path, place: &str, input: &InputSpec) -> Result<Batch, TestFileError> {
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
                    parent_span_id: match &spec.parent_span_id {
                        Some(_) => hex_id(spec.parent_span_id.as_deref(), 8, 0)
                            .map_err(|m| err(&format!("{at}.parent_span_id"), m))?,
                        None => Vec::new(),
                    },
                    trace_state: spec.trace_state.clone(),
                    events: spec
                        .events
                        .iter()
                        .enumerate()
                        .map(|(j, e)| {
                            Ok(Event {
                                name: e.name.clone(),
                                time_unix_nano: BASE_TIME + position * 1_000_000 + j as u64 + 1,
                                attributes: attributes(format!("spans[{i}].events[{j}].attributes"), &e.attributes)?,
                                dropped_attributes_count: 0,
                            })
                        })
                        .collect::<Result<_, TestFileError>>()?,
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

pub(super) fn unique_keys(batch: Batch) -> Result<Batch, String> {
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

pub(super) fn span_key(span: &Span) -> Vec<u8> {
    [span.trace_id.as_slice(), span.span_id.as_slice()].concat()
}

pub(super) fn log_key(log: &LogRecord) -> Vec<u8> {
    log.observed_time_unix_nano.to_be_bytes().to_vec()
}

pub(super) fn hex_id(given: Option<&str>, len: usize, position: u64) -> Result<Vec<u8>, String> {
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

pub(super) fn span_kind(kind: Option<&str>) -> Result<i32, String> {
    let Some(kind) = kind else { return Ok(0) };
    let upper = kind.to_ascii_uppercase();
    let name = upper.strip_prefix("SPAN_KIND_").unwrap_or(&upper);
    ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]
        .iter()
        .position(|k| *k == name)
        .map(|p| p as i32)
        .ok_or_else(|| format!("'{kind}' is not a span kind (server, client, internal, producer, consumer)"))
}

pub(super) fn status_code(code: &str) -> Result<i32, String> {
    match code.to_ascii_lowercase().trim_start_matches("status_code_") {
        "unset" => Ok(0),
        "ok" => Ok(1),
        "error" => Ok(2),
        _ => Err(format!("'{code}' is not a status code (unset, ok, error)")),
    }
}

pub(super) fn severity(path: &str, value: &Yaml) -> Result<i32, String> {
    values::parse_severity(path, value).map_err(|e| e.message)
}

pub(super) fn context(path: &Path, place: &str, spec: &ContextSpec) -> Result<Context, TestFileError> {
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
    Ok(Context { received_at_unix_nano, head: ChainHead { chain_id, seq: spec.seq.unwrap_or(0), prev }, sender: None })
}

pub(super) fn spans_of(req: &ExportTraceServiceRequest) -> Vec<&Span> {
    req.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect()
}

pub(super) fn logs_of(req: &ExportLogsServiceRequest) -> Vec<&LogRecord> {
    req.resource_logs.iter().flat_map(|r| &r.scope_logs).flat_map(|s| &s.log_records).collect()
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    use super::*;

    fn input(yaml: &str) -> InputSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn build(yaml: &str) -> Result<Batch, TestFileError> {
        build_input(Path::new("dir/x.test.yaml"), "test \"t\" (tests[0])", &input(yaml))
    }

    #[test]
    fn compact_spans_become_one_request_with_their_fields() {
        let batch = build(
            "resource: {service.name: api}\nscope: {name: s}\nspans:\n  - {name: a, kind: server, status: {code: error}, attributes: {n: 7, ok: true}}\n  - {name: b}\n",
        )
        .unwrap();
        assert_eq!(batch.signal, Signal::Traces);
        let request = ExportTraceServiceRequest::decode(batch.request.as_slice()).unwrap();
        let spans = spans_of(&request);
        assert_eq!(spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((spans[0].kind, spans[0].status.as_ref().unwrap().code), (2, 2));
        assert_eq!(spans[0].attributes[0].value.as_ref().unwrap().value, Some(Value::IntValue(7)));
        assert_ne!(spans[0].span_id, spans[1].span_id, "generated ids differ");
        assert_eq!(batch.records.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let resource = request.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
    }

    #[test]
    fn a_bad_field_is_named_by_its_place() {
        let error = build("spans: [{name: a, kind: sideways}]\n").unwrap_err();
        assert_eq!(error.place, "test \"t\" (tests[0]).input.spans[0].kind");
        assert!(error.message.starts_with("'sideways' is not a span kind"), "{error}");
        let error = build("spans: [{name: a, span_id: abcd}]\n").unwrap_err();
        assert_eq!(error.message, "must be 8 bytes (16 hex digits)");
        let error = build("spans: [{name: a, attributes: {n: ~}}]\n").unwrap_err();
        assert!(error.place.ends_with(".input.spans[0].attributes.n"), "{}", error.place);
    }

    #[test]
    fn names_of_kinds_and_codes_read_as_the_collector_writes_them() {
        assert_eq!(span_kind(Some("SPAN_KIND_CLIENT")), Ok(3));
        assert_eq!(span_kind(None), Ok(0));
        assert_eq!(status_code("STATUS_CODE_OK"), Ok(1));
        assert!(status_code("fine").is_err());
        assert_eq!(hex_id(None, 8, 5).unwrap(), 5u64.to_be_bytes());
    }

    #[test]
    fn a_context_defaults_to_a_fixed_time_and_genesis() {
        let at = Path::new("x.test.yaml");
        let ctx = context(at, "t", &ContextSpec::default()).unwrap();
        assert_eq!(ctx.received_at_unix_nano, DEFAULT_RECEIVED_AT);
        assert_eq!(
            (ctx.head.chain_id.as_str(), ctx.head.seq, ctx.head.prev),
            ("policy-test", 0, audit_format::GENESIS_PREV)
        );
        let bad = ContextSpec { prev: Some("00".into()), ..ContextSpec::default() };
        assert_eq!(context(at, "t", &bad).unwrap_err().place, "t.context.prev");
    }
}
