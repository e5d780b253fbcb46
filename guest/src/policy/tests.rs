use opentelemetry_proto::tonic::common::v1::any_value::Value;

use super::*;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(text, &[("k1".to_owned(), b"secret".to_vec())])
}

fn error(text: &str) -> PolicyError {
    match parse(text) {
        Ok(_) => panic!("policy unexpectedly accepted:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn collector_filter_block_is_accepted_unchanged() {
    // Pasted from a real collector config (filterprocessor, legacy syntax).
    let policy = parse(
        r#"
filter:
  spans:
    include:
      match_type: regexp
      attributes:
        - key: audit.action
          value: ".*"
"#,
    )
    .unwrap();
    assert_eq!(policy.rules.len(), 1);
    assert_eq!(policy.rules[0].id, "filter.spans.include");
    assert!(policy.rules[0].description.contains("audit.action"), "{}", policy.rules[0].description);
    assert!(policy.digest.starts_with("sha256:") && policy.digest.len() == 71);
}

#[test]
fn every_section_compiles_and_rules_are_in_policy_order() {
    let policy = parse(
        r#"
filter:
  error_mode: ignore
  spans:
    include:
      match_type: strict
      services: [identity-api]
      span_kinds: [SPAN_KIND_SERVER]
      libraries: [{name: app.audit, version: "1.2.3"}]
    exclude:
      match_type: regexp
      span_names: ["^GET /healthz$"]
      resources: [{key: deployment.environment.name, value: "^dev"}]
  logs:
    include:
      match_type: strict
      record_attributes: [{key: audit.action}]
      severity_number: {min: WARN, match_undefined: true}
      severity_texts: [WARN, ERROR]
      bodies: [denied]
attributes:
  include:
    match_type: strict
    attributes: [{key: audit.action}]
  actions:
    - {key: env, value: prod, action: insert}
    - {key: user, from_attribute: enduser.id, action: upsert}
    - {key: count, value: 3, action: update}
    - {pattern: ^secret\., action: delete}
    - {key: enduser.email, action: hash}
    - {key: http.url, pattern: '^https://(?P<host>[^/]+)', action: extract}
    - {key: count, converted_type: string, action: convert}
redaction:
  allow_all_keys: true
  blocked_values: ["4[0-9]{15}"]
  blocked_key_patterns: [password]
  hash_function: hmac-sha256
  hash_key_id: k1
  summary: debug
audit:
  pipeline: soc2
  received_at: audit.received
  require: [enduser.id]
  chain: {key_id: k1}
"#,
    )
    .unwrap();
    let ids: Vec<&str> = policy.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "filter.spans.include",
            "filter.spans.exclude",
            "filter.logs.include",
            "attributes.include",
            "attributes.actions[0]",
            "attributes.actions[1]",
            "attributes.actions[2]",
            "attributes.actions[3]",
            "attributes.actions[4]",
            "attributes.actions[5]",
            "attributes.actions[6]",
            "redaction.blocked_key_patterns[0]",
            "redaction.blocked_values[0]",
            "audit.require",
        ]
    );
    assert_eq!(policy.audit.pipeline, "soc2");
    assert_eq!(policy.audit.received_at_key, "audit.received");
    assert_eq!(policy.key.as_ref().map(|k| k.id.as_str()), Some("k1"));
    assert_eq!(policy.filter.logs.include.as_ref().unwrap().0.severity_number, Some((13, true)));
}

#[test]
fn unknown_key_names_path_and_line() {
    let e = error("filter:\n  spans:\n    include:\n      match_type: strict\n      span_name: [x]\n");
    assert_eq!(e.path, "filter.spans.include.span_name");
    assert!(e.message.contains("unknown field `span_name`"), "{e}");
    assert_eq!(e.line.map(|l| l.0), Some(5), "{e}");
    let shown = e.to_string();
    assert!(shown.contains("filter.spans.include.span_name") && shown.contains("line 5"), "{shown}");
}

#[test]
fn wrong_type_names_path() {
    let e = error("audit:\n  require: enduser.id\n");
    assert_eq!(e.path, "audit.require");
    assert!(e.message.contains("invalid type"), "{e}");
}

#[test]
fn bad_regex_names_path_and_pattern() {
    let e = error("filter:\n  spans:\n    include:\n      match_type: regexp\n      span_names: [ok, '([unclosed']\n");
    assert_eq!(e.path, "filter.spans.include.span_names[1]");
    assert!(e.message.contains("([unclosed"), "{e}");
}

#[test]
fn validation_errors_name_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "filter:\n  spans:\n    include:\n      span_names: [x]\n",
            "filter.spans.include.match_type",
            "unrecognized match_type: ''",
        ),
        (
            "filter:\n  spans:\n    include:\n      match_type: regex\n      span_names: [x]\n",
            "filter.spans.include.match_type",
            "'regex'",
        ),
        ("filter:\n  spans:\n    include:\n      match_type: strict\n", "filter.spans.include", "no property to match"),
        (
            "filter:\n  spans:\n    include:\n      match_type: strict\n      span_kinds: [server]\n",
            "filter.spans.include.span_kinds[0]",
            "not a span kind",
        ),
        (
            "filter:\n  spans:\n    include:\n      match_type: regexp\n      attributes: [{key: n, value: 3}]\n",
            "filter.spans.include.attributes[0].value",
            "only supports strings, but found an integer",
        ),
        (
            "filter:\n  spans:\n    include:\n      match_type: strict\n      attributes: [{key: ''}]\n",
            "filter.spans.include.attributes[0].key",
            "empty key",
        ),
        (
            "filter:\n  spans:\n    include:\n      match_type: strict\n      log_bodies: [x]\n",
            "filter.spans.include.log_bodies",
            "trace spans",
        ),
        (
            "filter:\n  logs:\n    include:\n      match_type: strict\n      severity_number: {min: WARNING}\n",
            "filter.logs.include.severity_number.min",
            "not a valid severity",
        ),
        (
            "filter:\n  traces:\n    span: ['attributes[\"x\"] = nil']\n",
            "filter.traces.span[0]",
            "column 17: expected a comparison operator",
        ),
        (
            "filter:\n  logs:\n    log_record: ['true', 'severity == 1']\n",
            "filter.logs.log_record[1]",
            "a log record has no path \"severity\"",
        ),
        (
            "transform:\n  trace_statements: ['set(name, \"x\")']\n",
            "transform.trace_statements[0]",
            "context cannot be inferred",
        ),
        (
            "transform:\n  trace_statements:\n    - context: span\n      statements: ['set(resource.attributes[\"a\"], \"b\")']\n",
            "transform.trace_statements[0].statements[0]",
            "read-only in the span context",
        ),
        (
            "transform:\n  log_statements:\n    - context: span\n      statements: ['set(name, \"b\")']\n",
            "transform.log_statements[0].context",
            "not one of resource, scope, log",
        ),
        (
            "filter:\n  spans: {include: {match_type: strict, span_names: [a]}}\n  traces: {span: ['true']}\n",
            "filter.spans",
            "at the same time",
        ),
        (
            "transform:\n  trace_statements: ['set(span.name, \"${env:NAME}\")']\n",
            "transform.trace_statements[0]",
            "column 17: `${...}` is a Collector config reference",
        ),
        ("filter:\n  metrics: {}\n", "filter.metrics", "not audit records"),
        ("filter:\n  spans: {}\n", "filter.spans", "neither include nor exclude"),
        (
            "attributes:\n  include:\n    match_type: strict\n    services: [a]\n",
            "attributes.actions",
            "missing required field",
        ),
        ("attributes:\n  actions:\n    - {key: a, action: insert}\n", "attributes.actions[0].value", "either"),
        (
            "attributes:\n  actions:\n    - {key: a, value: 1, from_attribute: b, action: upsert}\n",
            "attributes.actions[0].from_attribute",
            "both",
        ),
        (
            "attributes:\n  actions:\n    - {key: a, from_context: metadata.x-tenant, action: insert}\n",
            "attributes.actions[0].from_context",
            "metadata.*, are not passed",
        ),
        ("attributes:\n  actions:\n    - {action: delete}\n", "attributes.actions[0].key", "\"key\" or \"pattern\""),
        (
            "attributes:\n  actions:\n    - {key: a, pattern: 'x', action: extract}\n",
            "attributes.actions[0].pattern",
            "no named capture",
        ),
        (
            "attributes:\n  actions:\n    - {key: a, pattern: '(?P<n>x)(y)', action: extract}\n",
            "attributes.actions[0].pattern",
            "unnamed",
        ),
        (
            "attributes:\n  actions:\n    - {key: a, action: convert}\n",
            "attributes.actions[0].converted_type",
            "missing",
        ),
        (
            "attributes:\n  actions:\n    - {key: a, converted_type: bool, action: convert}\n",
            "attributes.actions[0].converted_type",
            "\"bool\"",
        ),
        (
            "attributes:\n  actions:\n    - {key: a, value: 1, converted_type: int, action: insert}\n",
            "attributes.actions[0].converted_type",
            "does not use",
        ),
        (
            "attributes:\n  actions:\n    - {key: a, action: rename}\n",
            "attributes.actions[0].action",
            "unsupported action \"rename\"",
        ),
        ("redaction:\n  hash_function: sha256\n", "redaction.hash_function", "unknown hash function"),
        ("redaction:\n  hash_function: hmac-sha256\n", "redaction.hash_key_id", "needs hash_key_id"),
        ("redaction:\n  summary: loud\n", "redaction.summary", "'loud'"),
        ("audit:\n  chain: {key_id: nope}\n", "audit.chain.key_id", "'nope' names no secret"),
        ("audit:\n  require: ['']\n", "audit.require[0]", "must not be empty"),
        ("audit:\n  received_at: audit.policy.digest\n", "audit.received_at", "the processor itself writes"),
        ("audit:\n  received_at: audit.integrity.value\n", "audit.received_at", "the processor itself writes"),
        ("", "(policy)", "empty"),
    ];
    for (text, path, needle) in cases {
        let e = error(text);
        assert_eq!(e.path, *path, "for policy:\n{text}\ngot: {e}");
        assert!(e.message.contains(needle), "for policy:\n{text}\nexpected {needle:?} in: {e}");
    }
}

#[test]
fn severity_names_and_numbers() {
    let min = |v: &str| parse_severity("p", &serde_yaml_ng::from_str(v).unwrap());
    assert_eq!(min("INFO"), Ok(9));
    assert_eq!(min("warn"), Ok(13));
    assert_eq!(min("ERROR3"), Ok(19));
    assert_eq!(min("FATAL4"), Ok(24));
    assert_eq!(min("24"), Ok(24));
    assert_eq!(min("\"7\""), Ok(7));
    assert!(min("0").is_err());
    assert!(min("INFO5").is_err());
}

#[test]
fn yaml_values_keep_their_types() {
    let y = |v: &str| yaml_to_value("p", &serde_yaml_ng::from_str(v).unwrap()).unwrap().value.unwrap();
    assert_eq!(y("true"), Value::BoolValue(true));
    assert_eq!(y("42"), Value::IntValue(42));
    assert_eq!(y("1.5"), Value::DoubleValue(1.5));
    assert_eq!(y("'42'"), Value::StringValue("42".into()));
    assert!(matches!(y("[1, a]"), Value::ArrayValue(a) if a.values.len() == 2));
    assert!(yaml_to_value("p", &serde_yaml_ng::from_str("18446744073709551615").unwrap()).is_err());
}

#[test]
fn ottl_text_takes_dollars_as_a_collector_config_does() {
    // `$$` is a literal `$` after the Collector's config expansion, so the
    // README's `"$$1"` is the regex group 1 here too.
    let policy = Policy::parse(
        "transform:\n  trace_statements:\n    - 'replace_pattern(span.name, \"^(GET) .*$\", \"$$1 $$$$\")'\n",
        &[],
    )
    .unwrap();
    assert_eq!(policy.rules[0].description, r#"span statement: replace_pattern(span.name, "^(GET) .*$", "$1 $$")"#);
}

#[test]
fn several_blocked_values_are_searched_as_one_and_masked_each() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    let policy =
        parse("redaction:\n  allow_all_keys: true\n  blocked_values: ['(?i)secret', '\\b5[1-5][0-9]{2}\\b']\n")
            .unwrap();
    let any = policy.redaction.any_blocked.as_ref().expect("two patterns have a union");
    assert!(any.is_match("a SECRET") && any.is_match("pin 5123") && !any.is_match("pin 5923, (?i)"));
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
        key_strindex: 0,
    };
    let mut span = opentelemetry_proto::tonic::trace::v1::Span {
        attributes: vec![kv("a", "Secret 5123 ok"), kv("b", "pin 5923"), kv("c", "5234")],
        ..Default::default()
    };
    let mut hits = vec![0; policy.rules.len()];
    assert_eq!(policy.redaction.redact_span(&mut span, &mut hits), 2);
    let text = |i: usize| match span.attributes[i].value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!((text(0), text(1), text(2)), ("**** **** ok".into(), "pin 5923".into(), "****".into()));
    assert_eq!(hits, vec![1, 2], "each pattern's rule counts the values it masked");
}
