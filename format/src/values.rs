//! Values in policy YAML, as policies and policy tests both read them: a
//! YAML scalar, list or map becomes the OTLP `AnyValue` a record carries,
//! severities are named as the Collector's `filter` names them, and a
//! scalar attribute matches a regexp by its text. The component compiles
//! policies with these functions and `otel-audit test` builds test inputs
//! and expectations with them, so a test means what the policy means.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value};
use serde_yaml_ng::Value as Yaml;

/// A YAML value that is not what its place takes: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The key path, e.g. `filter.spans.include.attributes[0].value`.
    pub path: String,
    /// Line and column (1-based), where the YAML parser knows them.
    pub line: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl ValueError {
    fn at(path: &str, message: impl Into<String>) -> Self {
        ValueError { path: path.to_owned(), line: None, message: message.into() }
    }
}

/// Turns a YAML deserialization error into a [`ValueError`] naming the key
/// path, the line and column, and the problem once (serde_yaml_ng puts its
/// own path and position into the message too; those are taken out). The
/// document itself is the path `(policy)`.
pub fn yaml_error(e: serde_path_to_error::Error<serde_yaml_ng::Error>) -> ValueError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let line = inner.location().map(|l| (l.line(), l.column()));
    let mut message = inner.to_string();
    if line.is_some()
        && let Some(at) = message.rfind(" at line ")
    {
        message.truncate(at);
    }
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.contains(' ')
        && path.starts_with(prefix)
    {
        message = rest.to_owned();
    }
    let path = if path == "." { "(policy)".to_owned() } else { path };
    ValueError { path, line, message }
}

/// The OTLP value a YAML value stands for: strings, booleans, integers
/// (signed 64-bit), doubles, lists and maps with string keys. Null and
/// tagged values are refused, naming `path`.
pub fn yaml_to_value(path: &str, v: &Yaml) -> Result<AnyValue, ValueError> {
    let value = match v {
        Yaml::Bool(b) => Value::BoolValue(*b),
        Yaml::String(s) => Value::StringValue(s.clone()),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::IntValue(i)
            } else if n.is_u64() {
                return Err(ValueError::at(path, format!("{n} does not fit a signed 64-bit integer")));
            } else {
                Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Yaml::Sequence(items) => Value::ArrayValue(ArrayValue {
            values: items
                .iter()
                .enumerate()
                .map(|(i, item)| yaml_to_value(&format!("{path}[{i}]"), item))
                .collect::<Result<_, _>>()?,
        }),
        Yaml::Mapping(map) => {
            let mut values = Vec::with_capacity(map.len());
            for (k, item) in map {
                let Yaml::String(key) = k else {
                    return Err(ValueError::at(path, format!("map keys must be strings, found {}", yaml_kind(k))));
                };
                values.push(KeyValue {
                    key: key.clone(),
                    value: Some(yaml_to_value(&format!("{path}.{key}"), item)?),
                    key_strindex: 0,
                });
            }
            Value::KvlistValue(KeyValueList { values })
        }
        Yaml::Null => return Err(ValueError::at(path, "the value is null; give a value or leave the key out")),
        Yaml::Tagged(t) => return Err(ValueError::at(path, format!("YAML tags ({}) are not supported", t.tag))),
    };
    Ok(AnyValue { value: Some(value) })
}

/// What kind of YAML value `v` is, for messages ("a list", "an integer").
pub fn yaml_kind(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "null",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(n) if n.is_f64() => "a double",
        Yaml::Number(_) => "an integer",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a map",
        Yaml::Tagged(_) => "a tagged value",
    }
}

/// Severity names as the Collector's filter accepts them (case-insensitive)
/// and their numbers; a number from 1 to 24 is taken as it is.
pub fn parse_severity(path: &str, v: &Yaml) -> Result<i32, ValueError> {
    const NAMES: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let text = match v {
        Yaml::Number(n) => n.to_string(),
        Yaml::String(s) => s.to_ascii_uppercase(),
        other => {
            return Err(ValueError::at(
                path,
                format!("expected a severity name or number, found {}", yaml_kind(other)),
            ));
        }
    };
    if let Ok(n) = text.parse::<i32>()
        && (1..=24).contains(&n)
    {
        return Ok(n);
    }
    for (i, name) in NAMES.iter().enumerate() {
        let base = i as i32 * 4 + 1;
        if text == *name {
            return Ok(base);
        }
        if let Some(level) = text.strip_prefix(name).and_then(|rest| rest.parse::<i32>().ok())
            && (2..=4).contains(&level)
        {
            return Ok(base + level - 1);
        }
    }
    Err(ValueError::at(
        path,
        format!("'{text}' is not a valid severity: use TRACE..FATAL (optionally 2-4, e.g. WARN2) or 1..24"),
    ))
}

/// The text of a scalar value as the Collector's matchers see it: strings
/// as they are, booleans as `true`/`false`, integers in decimal, doubles in
/// their shortest decimal form without an exponent. Other kinds have none.
pub fn scalar_text(value: &AnyValue) -> Option<Cow<'_, str>> {
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(Cow::Borrowed(s)),
        Value::BoolValue(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::IntValue(i) => Some(Cow::Owned(i.to_string())),
        Value::DoubleValue(d) => Some(Cow::Owned(d.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Yaml {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn yaml_values_become_otlp_values() {
        let v = |text: &str| yaml_to_value("p", &yaml(text)).unwrap().value.unwrap();
        assert_eq!(v("true"), Value::BoolValue(true));
        assert_eq!(v("'7'"), Value::StringValue("7".into()));
        assert_eq!(v("-7"), Value::IntValue(-7));
        assert_eq!(v("1.5"), Value::DoubleValue(1.5));
        let Value::KvlistValue(map) = v("{a: [1, x]}") else { panic!("a map") };
        assert_eq!(map.values[0].key, "a");
        let Some(Value::ArrayValue(list)) = map.values[0].value.clone().unwrap().value else { panic!("a list") };
        assert_eq!(list.values.len(), 2);
    }

    #[test]
    fn values_without_an_otlp_form_are_refused_naming_the_place() {
        let e = |text: &str| yaml_to_value("p", &yaml(text)).unwrap_err();
        assert_eq!(e("18446744073709551615").message, "18446744073709551615 does not fit a signed 64-bit integer");
        assert_eq!(e("{a: [1, ~]}").path, "p.a[1]");
        assert!(e("~").message.contains("null"));
        assert_eq!(e("{1: x}").message, "map keys must be strings, found an integer");
        assert!(e("!tag x").message.contains("tags (!tag)"));
    }

    #[test]
    fn severities_are_named_as_the_collector_names_them() {
        let s = |text: &str| parse_severity("p", &yaml(text));
        assert_eq!(s("info"), Ok(9));
        assert_eq!(s("WARN2"), Ok(14));
        assert_eq!(s("24"), Ok(24));
        assert!(s("WARN5").unwrap_err().message.contains("not a valid severity"));
        assert!(s("25").is_err());
        assert_eq!(s("[1]").unwrap_err().message, "expected a severity name or number, found a list");
    }

    #[test]
    fn scalars_have_text_lists_do_not() {
        let text = |v: Value| scalar_text(&AnyValue { value: Some(v) }).map(Cow::into_owned);
        assert_eq!(text(Value::IntValue(42)).as_deref(), Some("42"));
        assert_eq!(text(Value::BoolValue(false)).as_deref(), Some("false"));
        assert_eq!(text(Value::DoubleValue(0.5)).as_deref(), Some("0.5"));
        assert_eq!(text(Value::ArrayValue(ArrayValue { values: vec![] })), None);
    }

    #[test]
    fn a_yaml_error_names_path_and_line_once() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct File {
            a: Inner,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            n: u32,
        }
        let error = serde_path_to_error::deserialize::<_, File>(serde_yaml_ng::Deserializer::from_str("a:\n  n: x\n"))
            .unwrap_err();
        let e = yaml_error(error);
        assert_eq!(e.path, "a.n");
        assert_eq!(e.line, Some((2, 6)));
        assert!(!e.message.contains("at line"), "{}", e.message);
    }
}
