//! Expectations held against the component's output: kept and dropped
//! records, attributes present, absent, equal or matching, counts.

use std::path::Path;

use audit_format::values;

use crate::runtime::Output;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use prost::Message;
use regex::Regex;

use crate::otlp::Signal;

use super::file::{Expect, RecordRef, TestFileError, file_error};
use super::input::{Batch, log_key, logs_of, span_key, spans_of};

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
