//! Expectations held against the component's output: kept and dropped
//! records, attributes present, absent, equal or matching, counts.

use std::path::Path;

use audit_format::values;

use crate::runtime::Output;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use regex::Regex;

use crate::otlp::Signal;

use super::file::{AttributesOf, Expect, RecordRef, TestFileError, file_error};
use super::input::{Batch, log_key, span_key};

/// Compares what came out with what the test expects; returns one message
/// per unmet expectation.
pub(super) fn check(
    path: &Path,
    place: &str,
    expect: &Expect,
    batch: &Batch,
    out: &Output,
) -> Result<Vec<String>, TestFileError> {
    let mut failures = Vec::new();
    // Which input records were kept, with what they carry.
    let kept: Vec<(usize, Kept)> = match batch.signal {
        Signal::Traces => {
            let req = ExportTraceServiceRequest::decode(out.otlp.as_slice())
                .map_err(|e| file_error(path, place, e.to_string()))?;
            let mut kept = Vec::new();
            for rs in &req.resource_spans {
                let resource = rs.resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default();
                for ss in &rs.scope_spans {
                    let scope = ss.scope.as_ref().map(|s| s.attributes.clone()).unwrap_or_default();
                    for s in &ss.spans {
                        if let Some(i) = locate(batch, &span_key(s)) {
                            kept.push((i, Kept::span(s, &resource, &scope)));
                        }
                    }
                }
            }
            kept
        }
        Signal::Logs => {
            let req = ExportLogsServiceRequest::decode(out.otlp.as_slice())
                .map_err(|e| file_error(path, place, e.to_string()))?;
            let mut kept = Vec::new();
            for rl in &req.resource_logs {
                let resource = rl.resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default();
                for sl in &rl.scope_logs {
                    let scope = sl.scope.as_ref().map(|s| s.attributes.clone()).unwrap_or_default();
                    for l in &sl.log_records {
                        if let Some(i) = locate(batch, &log_key(l)) {
                            kept.push((i, Kept::log(l, &resource, &scope)));
                        }
                    }
                }
            }
            kept
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
    // The kept records a condition checks: those it names, else all.
    let targets = |record: Option<&RecordRef>,
                   key: &str,
                   (plural, singular): (&str, &str),
                   failures: &mut Vec<String>|
     -> Result<Vec<&(usize, Kept)>, TestFileError> {
        Ok(match record {
            Some(r) => {
                let wanted = resolve(r, &format!("{key}.record"))?;
                let targets: Vec<_> = kept.iter().filter(|(i, _)| wanted.contains(i)).collect();
                if targets.is_empty() {
                    failures.push(format!("{key}: {r} was not kept, so its {plural} cannot be checked"));
                }
                targets
            }
            None => {
                if kept.is_empty() {
                    failures.push(format!("{key}: no record was kept, so no {singular} could be checked"));
                }
                kept.iter().collect()
            }
        })
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
        let targets = targets(condition.record.as_ref(), &key, ("attributes", "attribute"), &mut failures)?;
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
        for (i, record) in targets {
            let attrs: &[KeyValue] = match (&condition.event, condition.of) {
                (Some(name), AttributesOf::Record) => match record.events.iter().find(|(n, _)| n == name) {
                    Some((_, attrs)) => attrs,
                    None => {
                        failures.push(format!("record {}: has no event {name:?}", label(*i)));
                        continue;
                    }
                },
                (Some(_), _) => {
                    return Err(file_error(
                        path,
                        format!("{place}.expect.{key}.event"),
                        "an event's attributes are the record's: drop `of`",
                    ));
                }
                (None, AttributesOf::Record) => &record.attributes,
                (None, AttributesOf::Resource) => &record.resource,
                (None, AttributesOf::Scope) => &record.scope,
            };
            let whose = match (&condition.event, condition.of) {
                (Some(name), _) => format!("event {name:?} of record {}", label(*i)),
                (None, AttributesOf::Record) => format!("record {}", label(*i)),
                (None, AttributesOf::Resource) => format!("resource of record {}", label(*i)),
                (None, AttributesOf::Scope) => format!("scope of record {}", label(*i)),
            };
            let own: Vec<&str> = attrs
                .iter()
                .map(|kv| kv.key.as_str())
                .filter(|k| !audit_format::keys::is_processor_key(k) && *k != audit_format::keys::DEFAULT_RECEIVED_AT)
                .collect();
            if let Some(want) = &condition.keys {
                let (mut want, mut got) = (want.iter().map(String::as_str).collect::<Vec<_>>(), own.clone());
                want.sort_unstable();
                got.sort_unstable();
                if want != got {
                    failures.push(format!("{whose}: keys\n  expected: {want:?}\n  got:      {got:?}"));
                }
            }
            if let Some(want) = condition.count
                && want != own.len()
            {
                failures.push(format!("{whose}: expected {want} attributes, got {}: {own:?}", own.len()));
            }
            let get = |k: &str| attrs.iter().find(|kv| kv.key == k).map(|kv| kv.value.clone().unwrap_or_default());
            for k in &condition.present {
                if get(k).is_none() {
                    failures.push(format!("{whose}: expected attribute {k} to be present"));
                }
            }
            for k in &condition.absent {
                if let Some(v) = get(k) {
                    failures.push(format!("{whose}: expected attribute {k} to be absent, found {}", show(&v)));
                }
            }
            for (k, want) in &equal {
                match get(k) {
                    Some(v) if same(&v, want) => {}
                    Some(v) => {
                        failures.push(format!("{whose}: {k}\n  expected: {}\n  got:      {}", show(want), show(&v)))
                    }
                    None => failures.push(format!("{whose}: {k}\n  expected: {}\n  got:      (absent)", show(want))),
                }
            }
            for (k, re) in &matchers {
                match get(k).as_ref().and_then(values::scalar_text) {
                    Some(text) if re.is_match(&text) => {}
                    Some(text) => failures.push(format!("{whose}: {k} = {text:?} does not match /{re}/")),
                    None => failures.push(format!("{whose}: {k} is absent or not a scalar; expected to match /{re}/")),
                }
            }
        }
    }
    for (n, condition) in expect.fields.iter().enumerate() {
        let key = format!("fields[{n}]");
        let targets = targets(condition.record.as_ref(), &key, ("fields", "field"), &mut failures)?;
        let known = match batch.signal {
            Signal::Traces => &SPAN_FIELDS[..],
            Signal::Logs => &LOG_FIELDS[..],
        };
        let field_name = |k: &str, at: &str| -> Result<&'static str, TestFileError> {
            known.iter().find(|f| **f == k).copied().ok_or_else(|| {
                file_error(
                    path,
                    format!("{place}.expect.{key}.{at}"),
                    format!("unknown field {k:?}; {} records have {}", batch.signal, known.join(", ")),
                )
            })
        };
        let mut equal = Vec::new();
        for (k, v) in &condition.equal {
            let k = k
                .as_str()
                .ok_or_else(|| file_error(path, format!("{place}.expect.{key}.equal"), "keys must be strings"))?;
            let name = field_name(k, "equal")?;
            let v = values::yaml_to_value(k, v)
                .map_err(|e| file_error(path, format!("{place}.expect.{key}.equal.{k}"), e.message))?;
            equal.push((name, v));
        }
        let absent = condition.absent.iter().map(|k| field_name(k, "absent")).collect::<Result<Vec<_>, _>>()?;
        for (i, record) in targets {
            let get = |k: &str| record.fields.iter().find(|(f, _)| *f == k).and_then(|(_, v)| v.clone());
            for (k, want) in &equal {
                match get(k) {
                    Some(v) if same(&v, want) => {}
                    Some(v) => failures.push(format!(
                        "record {}: field {k}\n  expected: {}\n  got:      {}",
                        label(*i),
                        show(want),
                        show(&v)
                    )),
                    None => failures.push(format!(
                        "record {}: field {k}\n  expected: {}\n  got:      (absent)",
                        label(*i),
                        show(want)
                    )),
                }
            }
            for k in &absent {
                if let Some(v) = get(k) {
                    failures.push(format!("record {}: expected field {k} to be absent, found {}", label(*i), show(&v)));
                }
            }
        }
    }
    Ok(failures)
}

/// The fields of a span `fields:` can check.
const SPAN_FIELDS: [&str; 7] =
    ["name", "kind", "trace_state", "parent_span_id", "status.code", "status.message", "events"];
/// The fields of a log record `fields:` can check.
const LOG_FIELDS: [&str; 3] = ["body", "severity_number", "severity_text"];

/// A kept record as expectations see it: its attributes, its resource's
/// and scope's, its span events' and its other fields (`None` = absent).
pub(super) struct Kept {
    attributes: Vec<KeyValue>,
    resource: Vec<KeyValue>,
    scope: Vec<KeyValue>,
    events: Vec<(String, Vec<KeyValue>)>,
    fields: Vec<(&'static str, Option<AnyValue>)>,
}

fn any(value: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(value) })
}

impl Kept {
    fn span(s: &Span, resource: &[KeyValue], scope: &[KeyValue]) -> Kept {
        let status = s.status.clone().unwrap_or_default();
        let names = s.events.iter().map(|e| AnyValue { value: Some(Value::StringValue(e.name.clone())) }).collect();
        Kept {
            attributes: s.attributes.clone(),
            resource: resource.to_vec(),
            scope: scope.to_vec(),
            events: s.events.iter().map(|e| (e.name.clone(), e.attributes.clone())).collect(),
            fields: vec![
                ("name", any(Value::StringValue(s.name.clone()))),
                ("kind", any(Value::IntValue(s.kind.into()))),
                ("trace_state", any(Value::StringValue(s.trace_state.clone()))),
                ("parent_span_id", any(Value::StringValue(hex::encode(&s.parent_span_id)))),
                ("status.code", any(Value::IntValue(status.code.into()))),
                ("status.message", any(Value::StringValue(status.message))),
                ("events", any(Value::ArrayValue(ArrayValue { values: names }))),
            ],
        }
    }

    fn log(l: &LogRecord, resource: &[KeyValue], scope: &[KeyValue]) -> Kept {
        Kept {
            attributes: l.attributes.clone(),
            resource: resource.to_vec(),
            scope: scope.to_vec(),
            events: Vec::new(),
            fields: vec![
                ("body", l.body.clone().filter(|b| b.value.is_some())),
                ("severity_number", any(Value::IntValue(l.severity_number.into()))),
                ("severity_text", any(Value::StringValue(l.severity_text.clone()))),
            ],
        }
    }
}

/// Typed equality where maps are equal whatever the order of their keys
/// (OTLP key-value lists are ordered; OTTL maps are not).
fn same(a: &AnyValue, b: &AnyValue) -> bool {
    match (&a.value, &b.value) {
        (Some(Value::KvlistValue(x)), Some(Value::KvlistValue(y))) => {
            x.values.len() == y.values.len()
                && x.values.iter().all(|kv| {
                    y.values.iter().find(|other| other.key == kv.key).is_some_and(|other| {
                        same(&kv.value.clone().unwrap_or_default(), &other.value.clone().unwrap_or_default())
                    })
                })
        }
        (Some(Value::ArrayValue(x)), Some(Value::ArrayValue(y))) => {
            x.values.len() == y.values.len() && x.values.iter().zip(&y.values).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

pub(super) fn locate(batch: &Batch, key: &[u8]) -> Option<usize> {
    batch.records.iter().position(|r| r.key == key)
}

/// A value as a test author would write it.
pub(super) fn show(v: &AnyValue) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policytest::input::{build_input, context};
    use crate::testing::{component, repo};

    /// The shipped SOC 2 policy's output for one role-change span and one
    /// health check, checked against `expect` (YAML).
    fn failures(expect: &str) -> Result<Vec<String>, TestFileError> {
        let path = Path::new("x.test.yaml");
        let input = serde_yaml_ng::from_str(
            "spans:\n  - {name: role, attributes: {enduser.id: a, audit.action: role_update, audit.result: success}}\n  - {name: GET /healthz}\n",
        )
        .unwrap();
        let batch = build_input(path, "t", &input).unwrap();
        let ctx = context(path, "t", &Default::default()).unwrap();
        let policy = std::fs::read_to_string(repo().join("collector-config/policies/soc2-audit.yaml")).unwrap();
        let mut instance = component().instantiate().unwrap();
        instance.configure(&policy, &[]).unwrap();
        let output = instance.process_traces(&batch.request, &ctx).unwrap();
        check(path, "t", &serde_yaml_ng::from_str(expect).unwrap(), &batch, &output)
    }

    #[test]
    fn met_expectations_report_nothing() {
        let met = failures(
            "{kept: [role], dropped: [GET /healthz], records: 1, attributes: [{record: role, present: [audit.pipeline], equal: {audit.action: role_update}, matches: {audit.integrity.value: '^[0-9a-f]{64}$'}}]}",
        );
        assert_eq!(met.unwrap(), Vec::<String>::new());
    }

    #[test]
    fn each_unmet_expectation_says_what_was_expected_and_found() {
        let found = failures(
            "{kept: [GET /healthz], records: 2, attributes: [{record: role, absent: [audit.action], equal: {audit.result: failure}, matches: {audit.action: '^login$'}}]}",
        )
        .unwrap();
        let want = [
            "kept records differ\n  expected: [\"GET /healthz\"]\n  got:      [\"role\"]",
            "expected 2 chained records, got 1",
            "record \"role\": expected attribute audit.action to be absent, found \"role_update\"",
            "record \"role\": audit.result\n  expected: \"failure\"\n  got:      \"success\"",
            "record \"role\": audit.action = \"role_update\" does not match /^login$/",
        ];
        for (found, want) in found.iter().zip(want) {
            assert!(found.starts_with(want), "{found:?} is not {want:?}");
        }
        assert_eq!(found.len(), want.len(), "{found:#?}");
    }

    #[test]
    fn an_expectation_naming_no_input_is_a_file_error() {
        let error = failures("{kept: [nothing]}").unwrap_err();
        assert_eq!(error.place, "t.expect.kept");
        assert!(error.message.contains("names no input record"), "{error}");
    }
}
