use super::record::{ItemMut, Slot};
use super::*;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value as V,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, span::Event};

fn kv(key: &str, value: V) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), key_strindex: 0 }
}

fn s(x: &str) -> V {
    V::StringValue(x.into())
}

fn span() -> Span {
    Span {
        name: "GET /users".into(),
        kind: 2,
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        start_time_unix_nano: 100,
        attributes: vec![
            kv("http.route", s("/users/{id}")),
            kv("enduser.id", s("Alice")),
            kv("code", V::IntValue(403)),
            kv(
                "nested",
                V::KvlistValue(KeyValueList {
                    values: vec![kv("a", V::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(s("x")) }] }))],
                }),
            ),
        ],
        events: vec![Event { name: "exception".into(), ..Event::default() }],
        ..Span::default()
    }
}

fn resource() -> Resource {
    Resource { attributes: vec![kv("service.name", s("identity-api"))], ..Resource::default() }
}

fn holds(text: &str, span: &Span) -> Result<bool, EvalError> {
    let check = Check::compile(Context::Span, text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let r = resource();
    let scope = InstrumentationScope { name: "app.audit".into(), ..Default::default() };
    check.eval(&View { resource: Some(&r), scope: Some(&scope), item: record::Item::Span(span), cache: &[] })
}

fn run(text: &str, span: &mut Span) -> Result<bool, EvalError> {
    let st = Statement::compile(Context::Span, text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let r = resource();
    let mut subject = Subject {
        resource: Slot::Shared(Some(&r)),
        scope: Slot::Shared(None),
        item: ItemMut::Span(span),
        cache: Vec::new(),
    };
    st.run(&mut subject)
}

fn attr<'s>(span: &'s Span, key: &str) -> Option<&'s V> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

#[test]
fn conditions_read_paths_enums_and_converters() {
    let sp = span();
    for (text, expected) in [
        (r#"name == "GET /users""#, true),
        (r#"span.name == "GET /users""#, true),
        ("kind == SPAN_KIND_SERVER", true),
        ("kind == SPAN_KIND_CLIENT", false),
        (r#"kind.string == "Server""#, true),
        (r#"attributes["code"] == 403"#, true),
        (r#"attributes["code"] == "403""#, false),
        (r#"attributes["code"] >= 400 and attributes["code"] < 500"#, true),
        (r#"attributes["missing"] == nil"#, true),
        (r#"attributes["nested"]["a"][0] == "x""#, true),
        (r#"resource.attributes["service.name"] == "identity-api""#, true),
        (r#"instrumentation_scope.name == "app.audit""#, true),
        (r#"IsMatch(attributes["http.route"], "^/users")"#, true),
        (r#"not IsMatch(name, "^POST")"#, true),
        (r#"trace_id.string == "01010101010101010101010101010101""#, true),
        ("trace_id == 0x01010101010101010101010101010101", true),
        ("start_time_unix_nano + 1 == 101", true),
        (r#"Len(attributes) == 4"#, true),
        (r#"ToLowerCase(attributes["enduser.id"]) == "alice""#, true),
        (r#"Concat([name, attributes["code"]], "|") == "GET /users|403""#, true),
        (r#"Split(name, " ")[1] == "/users""#, true),
        (r#"Substring(name, 0, 3) == "GET""#, true),
        (r#"SHA256("a") == "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb""#, true),
        (r#"Int("12") == 12 and Int("x") == nil"#, true),
        (r#"IsString(name) and IsInt(attributes["code"]) and IsMap(attributes["nested"])"#, true),
        ("IsRootSpan()", true),
        (r#"(name == "x" or kind == 2) and true"#, true),
        ("status.code == STATUS_CODE_UNSET", true),
    ] {
        assert_eq!(holds(text, &sp), Ok(expected), "{text}");
    }
    // Indexing a string is an error, not false.
    assert!(holds(r#"attributes["enduser.id"]["x"] == 1"#, &sp).is_err());
    assert!(holds(r#"Substring(name, 5, 100) == "x""#, &sp).is_err());
}

#[test]
fn editors_change_the_record() {
    let mut sp = span();
    assert_eq!(run(r#"set(attributes["audit.action"], "read") where kind == SPAN_KIND_SERVER"#, &mut sp), Ok(true));
    assert_eq!(attr(&sp, "audit.action"), Some(&s("read")));
    assert_eq!(run(r#"set(name, "x") where kind == SPAN_KIND_CLIENT"#, &mut sp), Ok(false));
    run(r#"set(attributes["deep"]["er"], 1)"#, &mut sp).unwrap();
    assert!(matches!(attr(&sp, "deep"), Some(V::KvlistValue(_))));
    run(r#"set(attributes["nil"], attributes["missing"])"#, &mut sp).unwrap();
    assert_eq!(attr(&sp, "nil"), None, "set with a nil value does nothing");
    run(r#"delete_key(attributes, "code")"#, &mut sp).unwrap();
    assert_eq!(attr(&sp, "code"), None);
    run(r#"replace_pattern(attributes["enduser.id"], "^(A)lice$", "$1.")"#, &mut sp).unwrap();
    assert_eq!(attr(&sp, "enduser.id"), Some(&s("A.")));
    run(r#"replace_pattern(attributes["enduser.id"], ".*", "$0", SHA256, "sha256:%s")"#, &mut sp).unwrap();
    let Some(V::StringValue(hashed)) = attr(&sp, "enduser.id") else { panic!() };
    assert!(hashed.starts_with("sha256:") && hashed.len() == 7 + 64, "{hashed}");
    run(r#"replace_match(attributes["http.route"], "/users/*", "/users/{userId}")"#, &mut sp).unwrap();
    assert_eq!(attr(&sp, "http.route"), Some(&s("/users/{userId}")));
    run(r#"truncate_all(attributes, 3)"#, &mut sp).unwrap();
    assert_eq!(attr(&sp, "http.route"), Some(&s("/us")));
    run(r#"keep_keys(attributes, ["http.route", "nested"])"#, &mut sp).unwrap();
    assert_eq!(sp.attributes.len(), 2);
    run(r#"flatten(attributes)"#, &mut sp).unwrap();
    assert_eq!(attr(&sp, "nested.a.0"), Some(&s("x")));
    run(r#"limit(attributes, 1, ["nested.a.0"])"#, &mut sp).unwrap();
    assert_eq!(sp.attributes.len(), 1);
    assert_eq!(sp.attributes[0].key, "nested.a.0");
    run(r#"merge_maps(attributes, {"a": 1, "nested.a.0": "y"}, "insert")"#, &mut sp).unwrap();
    assert_eq!(attr(&sp, "nested.a.0"), Some(&s("x")));
    assert_eq!(attr(&sp, "a"), Some(&V::IntValue(1)));
    run(r#"set(status.code, STATUS_CODE_ERROR)"#, &mut sp).unwrap();
    assert_eq!(sp.status.as_ref().map(|s| s.code), Some(2));
    assert!(run(r#"delete_key(attributes["a"], "x")"#, &mut sp).is_err(), "an int is not a map");
}

#[test]
fn compile_errors_name_the_column_and_what_was_expected() {
    let err = |ctx, text| Statement::compile(ctx, text).unwrap_err();
    let e = err(Context::Span, r#"set(resource.attributes["x"], "y")"#);
    assert!(e.message.contains("read-only in the span context"), "{e}");
    assert_eq!(e.column, 5);
    let e = err(Context::Span, r#"set(attributes["x"], Now())"#);
    assert!(e.message.contains("no clock"), "{e}");
    let e = err(Context::Span, r#"set(attributes["x"], Nope(1))"#);
    assert!(e.message.contains("undefined function \"Nope\""), "{e}");
    assert_eq!(e.column, 22);
    let e = err(Context::Log, r#"set(severity_texts, "x")"#);
    assert!(e.message.contains("has no path \"severity_texts\""), "{e}");
    let e = err(Context::Span, r#"replace_pattern(name, "(", "x")"#);
    assert!(e.message.contains("invalid regular expression"), "{e}");
    let e = err(Context::Span, r#"limit(attributes, 1, ["a", "b"])"#);
    assert!(e.message.contains("priority keys"), "{e}");
    let e = err(Context::Span, "set(name)");
    assert!(e.message.contains("value is missing"), "{e}");
    let e = Check::compile(Context::Span, "kind == SPAN_KIND_NOPE").unwrap_err();
    assert!(e.message.contains("unknown enum symbol SPAN_KIND_NOPE"), "{e}");
    let e = Check::compile(Context::Span, r#"Len(name)"#).unwrap_err();
    assert!(e.message.contains("does not return a boolean"), "{e}");
}

#[test]
fn log_and_span_event_contexts() {
    let log = LogRecord {
        severity_number: 13,
        severity_text: "WARN".into(),
        body: Some(AnyValue { value: Some(s("login failed for bob")) }),
        attributes: vec![kv("audit.action", s("login"))],
        ..LogRecord::default()
    };
    let check = |text: &str| {
        Check::compile(Context::Log, text).unwrap().eval(&View {
            resource: None,
            scope: None,
            item: record::Item::Log(&log),
            cache: &[],
        })
    };
    assert_eq!(check("severity_number >= SEVERITY_NUMBER_WARN"), Ok(true));
    assert_eq!(check("severity_number >= SEVERITY_NUMBER_ERROR"), Ok(false));
    assert_eq!(check(r#"IsMatch(body, "failed")"#), Ok(true));
    assert_eq!(check(r#"log.attributes["audit.action"] == "login""#), Ok(true));
    let sp = span();
    let ev = Check::compile(Context::SpanEvent, r#"name == "exception" and span.name == "GET /users""#).unwrap();
    let view = View { resource: None, scope: None, item: record::Item::SpanEvent(&sp, 0), cache: &[] };
    assert_eq!(ev.eval(&view), Ok(true));
}

#[test]
fn contexts_are_inferred_from_prefixes() {
    assert_eq!(infer_context(r#"set(span.attributes["a"], resource.attributes["b"])"#, true), Ok(Some(Context::Span)));
    assert_eq!(infer_context(r#"set(resource.attributes["a"], "b")"#, true), Ok(Some(Context::Resource)));
    assert_eq!(infer_context(r#"spanevent.name == "x" and span.name == "y""#, false), Ok(Some(Context::SpanEvent)));
    assert_eq!(infer_context(r#"name == "x""#, false), Ok(None));
}

#[test]
fn mixed_case_names_are_function_references_only_as_a_whole_argument() {
    // The Collector's enum symbols are `[A-Z][A-Z0-9_]*`: `Foo` compared
    // with a value is a syntax error (its parser_test: `"test" == Foo`).
    let e = grammar::condition(r#""test" == Foo"#).unwrap_err();
    assert_eq!(e.column, 11, "{e}");
    assert!(e.message.contains("neither an enum"), "{e}");
    assert!(grammar::condition("name == Foo_Bar").is_err());
    assert!(grammar::statement(r#"set(attributes["x"], [Sha256])"#).is_err());
    assert!(grammar::statement(r#"set(attributes["x"], Sha256 + 1)"#).is_err());
    // As a whole argument it parses (a function name), and compiling says
    // which function is unknown; all upper case stays an enum.
    assert!(grammar::statement(r#"replace_pattern(attributes["message"], Sha256)"#).is_ok());
    let e = Statement::compile(Context::Span, r#"replace_pattern(attributes["m"], "a", "b", Sha256)"#).unwrap_err();
    assert_eq!(e.column, 44, "{e}");
    assert!(grammar::condition("kind == SPAN_KIND_SERVER").is_ok());
    assert!(Statement::compile(Context::Span, r#"replace_pattern(attributes["m"], "a", "b", SHA256)"#).is_ok());
}

// Found by the Collector-docs conformance corpus
// (collector-config/policies/examples/ottl-conformance).

#[test]
fn a_context_names_its_own_cache_with_its_prefix() {
    // transformprocessor README: set(resource.cache["attrs"], resource.attributes) in a resource group.
    let mut resource = Some(resource());
    let mut subject = Subject {
        resource: Slot::Mut(&mut resource),
        scope: Slot::Shared(None),
        item: ItemMut::None,
        cache: Vec::new(),
    };
    for text in [
        r#"set(resource.cache["attrs"], resource.attributes)"#,
        r#"keep_matching_keys(resource.cache["attrs"], "^service\\.")"#,
        r#"set(resource.attributes["copy"], resource.cache["attrs"])"#,
    ] {
        Statement::compile(Context::Resource, text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .run(&mut subject)
            .unwrap();
    }
    let attrs = &resource.as_ref().unwrap().attributes;
    assert!(matches!(attrs.iter().find(|kv| kv.key == "copy").and_then(|kv| kv.value.as_ref()?.value.as_ref()),
        Some(V::KvlistValue(m)) if m.values.len() == 1 && m.values[0].key == "service.name"));
    // Only the context's own prefix: a span statement cannot name the resource's cache.
    assert!(Statement::compile(Context::Span, r#"set(attributes["x"], resource.cache["a"])"#).is_err());
    assert!(Statement::compile(Context::Span, r#"set(span.cache["a"], 1)"#).is_ok());
}

#[test]
fn trace_state_members_are_read_and_written_by_key() {
    // ottlfuncs README: set(span.trace_state["svc"], "example") and
    // set(span.attributes["source"], span.trace_state["source"]).
    let mut sp = Span { trace_state: "source=edge,vendor=x".into(), ..span() };
    run(r#"set(span.trace_state["svc"], "example")"#, &mut sp).unwrap();
    assert_eq!(sp.trace_state, "svc=example,source=edge,vendor=x", "a new member goes first");
    run(r#"set(span.trace_state["vendor"], "y")"#, &mut sp).unwrap();
    assert_eq!(sp.trace_state, "vendor=y,svc=example,source=edge", "an updated member moves first");
    run(r#"set(span.attributes["source"], span.trace_state["source"])"#, &mut sp).unwrap();
    assert_eq!(attr(&sp, "source"), Some(&s("edge")));
    run(r#"set(span.attributes["absent"], span.trace_state["nope"])"#, &mut sp).unwrap();
    assert_eq!(attr(&sp, "absent"), Some(&s("")), "an absent member reads as \"\", as trace.TraceState.Get");
    run(r#"set(span.trace_state["Bad Key"], "v")"#, &mut sp).unwrap();
    assert_eq!(sp.trace_state, "vendor=y,svc=example,source=edge", "an invalid key writes nothing");
    assert!(Statement::compile(Context::Span, r#"set(trace_state["a"]["b"], "v")"#).is_err());
    assert!(Statement::compile(Context::Span, r#"delete_key(trace_state, "a")"#).is_err(), "not a map");
}

#[test]
fn is_root_span_takes_an_all_zero_parent_as_none() {
    let with_parent = |parent: Vec<u8>| Span { parent_span_id: parent, ..span() };
    assert_eq!(holds("IsRootSpan()", &with_parent(Vec::new())), Ok(true));
    assert_eq!(holds("IsRootSpan()", &with_parent(vec![0; 8])), Ok(true));
    assert_eq!(holds("IsRootSpan()", &with_parent(vec![0, 0, 0, 0, 0, 0, 0, 1])), Ok(false));
}

#[test]
fn hex_of_nil_is_nil() {
    let mut sp = span();
    run(r#"set(attributes["h"], Hex(attributes["missing"]))"#, &mut sp).unwrap();
    assert_eq!(attr(&sp, "h"), None);
    run(r#"set(attributes["h"], Hex(2.0))"#, &mut sp).unwrap();
    assert_eq!(attr(&sp, "h"), Some(&s("4000000000000000")));
}

#[test]
fn substring_errors_name_the_values_as_written_in_both_builds() {
    // usize is 32 bits in the component: the message once said length
    // 4294967295 there and 9223372036854775807 natively (found by
    // tests/ottl_fuzz.rs).
    let e = holds(r#"Substring(name, 1, 9223372036854775807) == "x""#, &span()).unwrap_err();
    assert!(e.0.contains("start 1 + length 9223372036854775807 is beyond"), "{e}");
    let e = holds(r#"Substring(name, 4294967296, 1) == "x""#, &span()).unwrap_err();
    assert!(e.0.contains("start 4294967296 + length 1"), "{e}");
    assert_eq!(holds(r#"Substring(name, 4, 6) == "/users""#, &span()), Ok(true));
}

#[test]
fn parse_json_keys_values_contains_and_index() {
    let mut sp = span();
    sp.attributes
        .push(kv("payload", s(r#"{"user": {"id": "bob", "roles": ["admin", "dev"]}, "n": 3, "ok": true, "z": null}"#)));
    for (text, expected) in [
        (r#"ParseJSON(attributes["payload"])["user"]["id"] == "bob""#, true),
        (r#"ParseJSON(attributes["payload"])["n"] == 3.0"#, true),
        (r#"IsDouble(ParseJSON(attributes["payload"])["n"])"#, true),
        (r#"ParseJSON(attributes["payload"])["z"] == nil"#, true),
        (r#"ContainsValue(ParseJSON(attributes["payload"])["user"]["roles"], "admin")"#, true),
        (r#"Index(ParseJSON(attributes["payload"])["user"]["roles"], "dev") == 1"#, true),
        (r#"Index(name, "/users") == 4 and Index(name, "nope") == -1"#, true),
        (r#"Len(Keys(attributes)) == 5 and Keys(attributes)[0] == "http.route""#, true),
        (r#"ContainsValue(Values(resource.attributes), "identity-api")"#, true),
        (r#"ParseJSON("[1, 2]")[1] == 2.0"#, true),
    ] {
        assert_eq!(holds(text, &sp), Ok(expected), "{text}");
    }
    assert!(holds(r#"ParseJSON(name) == nil"#, &sp).is_err(), "not JSON");
    assert!(holds(r#"ParseJSON("3") == nil"#, &sp).is_err(), "neither an object nor an array");
    assert!(holds(r#"Keys(name) == nil"#, &sp).is_err());
    run(r#"merge_maps(attributes, ParseJSON(attributes["payload"])["user"], "upsert")"#, &mut sp).unwrap();
    assert_eq!(attr(&sp, "id"), Some(&s("bob")));
}

#[test]
fn a_nil_test_holds_as_the_comparison_with_nil_does() {
    let mut sp = span();
    sp.attributes.push(KeyValue { key: "empty".into(), value: None, key_strindex: 0 });
    sp.attributes.push(kv("enduser.id", s("second")));
    let paths = [
        r#"attributes["missing"]"#,
        r#"attributes["empty"]"#,
        r#"attributes["enduser.id"]"#,
        r#"attributes["code"]"#,
        r#"attributes["nested"]["a"]"#,
        r#"attributes["nested"]["b"]"#,
        "name",
        r#"Int("x")"#,
    ];
    let nil = |text: &str| holds(text, &sp).unwrap_or_else(|e| panic!("{text}: {e}"));
    for path in paths {
        let is_nil = nil(&format!("{path} == nil"));
        assert_eq!(nil(&format!("nil == {path}")), is_nil, "{path}");
        assert_eq!(nil(&format!("{path} != nil")), !is_nil, "{path}");
        assert_eq!(nil(&format!("not ({path} == nil)")), !is_nil, "{path}");
        let missing = ["missing", "empty", "\"b\"", "Int"].iter().any(|m| path.contains(m));
        assert_eq!(is_nil, missing, "{path}");
    }
    // The first of a repeated key is read.
    assert!(nil(r#"attributes["enduser.id"] == "Alice""#));
    // Indexing what is not a map is still an error.
    assert!(holds(r#"attributes["code"]["x"] == nil"#, &sp).is_err());
    // The test compiles to the nil check, either way round.
    for text in [r#"attributes["x"] == nil"#, r#"nil != attributes["x"]"#] {
        let compiled = format!("{:?}", Check::compile(Context::Span, text).unwrap());
        assert!(compiled.contains("IsNil"), "{text}: {compiled}");
    }
}
