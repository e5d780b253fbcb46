//! Match blocks as the Collector's `MatchProperties` has them (services,
//! span names and kinds, attributes, resources, libraries, log bodies and
//! severities), shared by the filter and attributes sections.

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use serde_yaml_ng::Value as Yaml;

use super::config::*;
use super::*;

/// Key names of the log-only properties, which differ between the filter
/// processor's `logs` block and `MatchProperties`.
pub(super) struct LogNames {
    pub(super) attributes: &'static str,
    pub(super) resources: &'static str,
    pub(super) bodies: &'static str,
    pub(super) severity_texts: &'static str,
    pub(super) severity_number: &'static str,
}

pub(super) enum Signal {
    Spans,
    Logs(LogNames),
    /// The attributes processor: one config for both signals.
    Any,
}

pub(super) fn span_matcher(path: &str, m: MatchProperties) -> CompiledMatcher {
    matcher(path, m, Signal::Spans)
}

/// Validates and compiles one match block; returns it with a summary.
pub(super) fn matcher(path: &str, m: MatchProperties, signal: Signal) -> CompiledMatcher {
    let default_names = LogNames {
        attributes: "attributes",
        resources: "resources",
        bodies: "log_bodies",
        severity_texts: "log_severity_texts",
        severity_number: "log_severity_number",
    };
    let names = match &signal {
        Signal::Logs(n) => n,
        _ => &default_names,
    };
    let regexp = match m.match_type.as_deref() {
        Some("strict") => false,
        Some("regexp") => true,
        other => {
            return Err(PolicyError::at(
                format!("{path}.match_type"),
                format!("unrecognized match_type: '{}', valid types are: [regexp strict]", other.unwrap_or("")),
            ));
        }
    };
    if !m.metric_names.is_empty() {
        return Err(PolicyError::at(
            format!("{path}.metric_names"),
            "metric_names is not valid for spans or log records",
        ));
    }
    match signal {
        Signal::Spans => {
            for (key, set) in [
                ("log_bodies", !m.log_bodies.is_empty()),
                ("log_severity_texts", !m.log_severity_texts.is_empty()),
                ("log_severity_number", m.log_severity_number.is_some()),
            ] {
                if set {
                    return Err(PolicyError::at(
                        format!("{path}.{key}"),
                        format!("{key} should not be specified for trace spans"),
                    ));
                }
            }
        }
        Signal::Logs(_) | Signal::Any => {}
    }
    let patterns = |key: &str, list: &[String]| -> Result<Option<Patterns>, PolicyError> {
        if list.is_empty() {
            return Ok(None);
        }
        Ok(Some(if regexp {
            let compiled = list
                .iter()
                .enumerate()
                .map(|(i, p)| compile_regex(&format!("{path}.{key}[{i}]"), p))
                .collect::<Result<_, _>>()?;
            Patterns::Regexp(compiled)
        } else {
            Patterns::Strict(list.to_vec())
        }))
    };
    if !regexp {
        for (i, kind) in m.span_kinds.iter().enumerate() {
            if !SPAN_KINDS[1..].contains(&kind.as_str()) {
                return Err(PolicyError::at(
                    format!("{path}.span_kinds[{i}]"),
                    format!(
                        "'{kind}' is not a span kind; with match_type strict use one of {}",
                        SPAN_KINDS[1..].join(", ")
                    ),
                ));
            }
        }
    }
    let mut libraries = Vec::with_capacity(m.libraries.len());
    for (i, lib) in m.libraries.iter().enumerate() {
        let lib_path = format!("{path}.libraries[{i}]");
        if lib.name.is_empty() {
            return Err(PolicyError::at(format!("{lib_path}.name"), "can't have empty name in the list of libraries"));
        }
        let name = patterns("libraries.name", std::slice::from_ref(&lib.name))?.expect("one pattern");
        let version = match &lib.version {
            Some(v) => Some(
                patterns("libraries.version", std::slice::from_ref(v))?
                    .unwrap_or(Patterns::Strict(vec![String::new()])),
            ),
            None => None,
        };
        libraries.push(LibraryMatch { name, version });
    }
    let severity_number = match m.log_severity_number {
        Some(s) => Some((parse_severity(&format!("{path}.{}.min", names.severity_number), &s.min)?, s.match_undefined)),
        None => None,
    };
    let compiled = Matcher {
        services: patterns("services", &m.services)?,
        span_names: patterns("span_names", &m.span_names)?,
        span_kinds: patterns("span_kinds", &m.span_kinds)?,
        libraries,
        resources: attribute_matches(&format!("{path}.{}", names.resources), &m.resources, regexp)?,
        attributes: attribute_matches(&format!("{path}.{}", names.attributes), &m.attributes, regexp)?,
        bodies: patterns(names.bodies, &m.log_bodies)?,
        severity_texts: patterns(names.severity_texts, &m.log_severity_texts)?,
        severity_number,
    };
    let mut parts = Vec::new();
    let mut describe = |key: &str, list: &[String]| {
        if !list.is_empty() {
            parts.push(format!("{key} [{}]", list.join(", ")));
        }
    };
    describe("services", &m.services);
    describe("span_names", &m.span_names);
    describe("span_kinds", &m.span_kinds);
    describe(names.bodies, &m.log_bodies);
    describe(names.severity_texts, &m.log_severity_texts);
    let keys = |list: &[AttributeConfig]| list.iter().map(|a| a.key.clone()).collect::<Vec<_>>();
    describe(names.resources, &keys(&m.resources));
    describe(names.attributes, &keys(&m.attributes));
    describe("libraries", &m.libraries.iter().map(|l| l.name.clone()).collect::<Vec<_>>());
    if compiled.severity_number.is_some() {
        parts.push(names.severity_number.to_owned());
    }
    if parts.is_empty() {
        return Err(PolicyError::at(
            path,
            "no property to match on: set at least one of services, span_names, span_kinds, attributes, resources, libraries (spans) or record_attributes, resource_attributes, bodies, severity_texts, severity_number (logs)",
        ));
    }
    let summary = format!("({}: {})", if regexp { "regexp" } else { "strict" }, parts.join(" and "));
    Ok((compiled, summary))
}

pub(super) fn attribute_matches(
    path: &str,
    list: &[AttributeConfig],
    regexp: bool,
) -> Result<Vec<AttributeMatch>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let entry = format!("{path}[{i}]");
            if a.key.is_empty() {
                return Err(PolicyError::at(format!("{entry}.key"), "can't have empty key in the list of attributes"));
            }
            let value = match &a.value {
                None => ValueMatch::Exists,
                Some(Yaml::String(pattern)) if regexp => {
                    ValueMatch::Regexp(compile_regex(&format!("{entry}.value"), pattern)?)
                }
                Some(other) if regexp => {
                    return Err(PolicyError::at(
                        format!("{entry}.value"),
                        format!(
                            "match_type=regexp for \"{}\" only supports strings, but found {}",
                            a.key,
                            yaml_kind(other)
                        ),
                    ));
                }
                Some(v) => ValueMatch::Equals(yaml_to_value(&format!("{entry}.value"), v)?),
            };
            Ok(AttributeMatch { key: a.key.clone(), value })
        })
        .collect()
}

pub(super) fn describe_value(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => format!("{s:?}"),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::ArrayValue(_)) => "a list".into(),
        Some(Value::KvlistValue(_)) => "a map".into(),
        _ => "a value".into(),
    }
}
