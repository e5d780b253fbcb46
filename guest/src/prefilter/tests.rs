//! The scan against the full walk: the same records kept, the same drops
//! and rule hits counted, and anything decoding or the validity rules would
//! refuse left to them.

use super::*;
use crate::policy::Policy;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValueList, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{Status, span};

/// Policies whose filters the scan decides, covering every property a
/// match block reads and the fields an OTTL condition may read.
const SCANNED: [&str; 10] = [
    "filter:\n  traces:\n    span:\n      - 'attributes[\"audit.action\"] == nil'\n      - 'IsMatch(name, \"^GET\") and kind == SPAN_KIND_SERVER'\n",
    "filter:\n  error_mode: ignore\n  trace_conditions:\n    - 'resource.attributes[\"env\"] == \"dev\" or instrumentation_scope.name == \"http\"'\n    - 'Len(span.attributes[\"n\"]) > 3'\n",
    "filter:\n  logs:\n    log_record:\n      - 'IsMatch(body, \"denied\")'\n      - 'severity_number < SEVERITY_NUMBER_WARN and severity_text != \"WARN\"'\n",
    "filter:\n  traces:\n    span: ['attributes[\"audit.action\"] == nil']\n    spanevent: ['name == \"e\"']\n",
    "filter:\n  spans:\n    include:\n      match_type: regexp\n      attributes: [{key: audit.action, value: '.*'}]\n",
    "filter:\n  spans:\n    include:\n      match_type: strict\n      attributes: [{key: audit.action}, {key: n, value: 7}]\n    exclude:\n      match_type: regexp\n      span_names: ['^GET']\n",
    "filter:\n  spans:\n    exclude:\n      match_type: strict\n      span_kinds: [SPAN_KIND_CLIENT]\n      services: [billing]\n",
    "filter:\n  spans:\n    include:\n      match_type: regexp\n      resources: [{key: env, value: prod}]\n      libraries: [{name: '^audit'}]\n",
    "filter:\n  logs:\n    include:\n      match_type: regexp\n      bodies: ['denied']\n      record_attributes: [{key: audit.action}]\n",
    "filter:\n  logs:\n    exclude:\n      match_type: strict\n      severity_texts: [DEBUG]\n      severity_number: {min: WARN, match_undefined: false}\n",
];

/// A small deterministic generator (xorshift64*); the records below are
/// also [`crate::decode`]'s test inputs.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(crate) fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

pub(crate) fn value(rng: &mut Rng, depth: u32) -> AnyValue {
    let value = match rng.below(if depth > 2 { 5 } else { 7 }) {
        0 => Value::StringValue(rng.pick(&["prod", "login", "denied here", "", "é"]).into()),
        1 => Value::BoolValue(rng.below(2) == 0),
        2 => Value::IntValue(rng.below(10) as i64),
        3 => Value::DoubleValue(rng.below(10) as f64 / 2.0),
        4 => Value::BytesValue(vec![7; rng.below(3) as usize]),
        5 => Value::ArrayValue(ArrayValue { values: (0..rng.below(3)).map(|_| value(rng, depth + 1)).collect() }),
        _ => Value::KvlistValue(KeyValueList { values: attributes(rng, depth + 1) }),
    };
    AnyValue { value: Some(value) }
}

pub(crate) fn attributes(rng: &mut Rng, depth: u32) -> Vec<KeyValue> {
    (0..rng.below(5))
        .map(|_| KeyValue {
            key: rng.pick(&["audit.action", "n", "env", "user", "audit.action"]).into(),
            value: (rng.below(8) != 0).then(|| value(rng, depth)),
            key_strindex: 0,
        })
        .collect()
}

pub(crate) fn id(rng: &mut Rng, len: usize) -> Vec<u8> {
    if rng.below(4) == 0 { Vec::new() } else { (0..len).map(|_| rng.next() as u8).collect() }
}

pub(crate) fn span(rng: &mut Rng) -> Span {
    Span {
        trace_id: id(rng, 16),
        span_id: id(rng, 8),
        parent_span_id: id(rng, 8),
        name: rng.pick(&["GET /", "login", "GET /admin", ""]).into(),
        kind: rng.below(6) as i32,
        start_time_unix_nano: rng.next(),
        attributes: attributes(rng, 0),
        events: (0..rng.below(2))
            .map(|_| span::Event { name: "e".into(), attributes: attributes(rng, 1), ..Default::default() })
            .collect(),
        links: (0..rng.below(2))
            .map(|_| span::Link { trace_id: id(rng, 16), span_id: id(rng, 8), ..Default::default() })
            .collect(),
        status: (rng.below(2) == 0).then(|| Status { message: "m".into(), code: 2 }),
        ..Default::default()
    }
}

pub(crate) fn log(rng: &mut Rng) -> LogRecord {
    LogRecord {
        time_unix_nano: rng.next(),
        severity_number: rng.below(25) as i32,
        severity_text: rng.pick(&["DEBUG", "INFO", "WARN", ""]).into(),
        body: (rng.below(4) != 0).then(|| value(rng, 1)),
        attributes: attributes(rng, 0),
        trace_id: id(rng, 16),
        span_id: id(rng, 8),
        ..Default::default()
    }
}

fn resource(rng: &mut Rng) -> Option<Resource> {
    let env = KeyValue {
        key: "env".into(),
        value: Some(AnyValue { value: Some(Value::StringValue(rng.pick(&["prod", "dev"]).into())) }),
        key_strindex: 0,
    };
    let service = KeyValue {
        key: "service.name".into(),
        value: Some(AnyValue { value: Some(Value::StringValue(rng.pick(&["billing", "web"]).into())) }),
        key_strindex: 0,
    };
    (rng.below(4) != 0).then(|| Resource { attributes: vec![env, service], ..Default::default() })
}

fn scope(rng: &mut Rng) -> Option<InstrumentationScope> {
    (rng.below(4) != 0)
        .then(|| InstrumentationScope { name: rng.pick(&["audit-lib", "http"]).into(), ..Default::default() })
}

pub(crate) fn traces(rng: &mut Rng) -> ExportTraceServiceRequest {
    let resource_spans = (0..1 + rng.below(3))
        .map(|_| ResourceSpans {
            resource: resource(rng),
            scope_spans: (0..1 + rng.below(2))
                .map(|_| ScopeSpans {
                    scope: scope(rng),
                    spans: (0..rng.below(6)).map(|_| span(rng)).collect(),
                    schema_url: "s".into(),
                })
                .collect(),
            schema_url: String::new(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

pub(crate) fn logs(rng: &mut Rng) -> ExportLogsServiceRequest {
    let resource_logs = (0..1 + rng.below(3))
        .map(|_| ResourceLogs {
            resource: resource(rng),
            scope_logs: (0..1 + rng.below(2))
                .map(|_| ScopeLogs {
                    scope: scope(rng),
                    log_records: (0..rng.below(6)).map(|_| log(rng)).collect(),
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: "r".into(),
        })
        .collect();
    ExportLogsServiceRequest { resource_logs }
}

/// What the full walk makes of a request: decoded whole, checked, then
/// each record through the filter (with the rule hits of the dropped
/// ones); `None` when it refuses the request.
fn full_walk<R: Assemble + Reference>(bytes: &[u8], policy: &Policy) -> Option<Prefiltered<R>> {
    let mut request = R::decode(bytes).ok()?;
    request.check().ok()?;
    let mut hits = vec![0; policy.rules.len()];
    let dropped = request.keep(policy, &mut hits);
    Some(Prefiltered { request, dropped, hits })
}

/// The full walk's side of each signal.
trait Reference: prost::Message + Sized {
    fn check(&self) -> Result<u64, String>;
    /// Keeps the records the filter keeps; how many it dropped.
    fn keep(&mut self, policy: &Policy, hits: &mut [u64]) -> u64;
}

impl Reference for ExportTraceServiceRequest {
    fn check(&self) -> Result<u64, String> {
        audit_format::validity::traces(self)
    }
    fn keep(&mut self, policy: &Policy, hits: &mut [u64]) -> u64 {
        let mut dropped = 0;
        for r in &mut self.resource_spans {
            for s in &mut r.scope_spans {
                s.spans.retain_mut(|span| {
                    let mut own = vec![0; hits.len()];
                    let kept = policy.filter.keep_span(r.resource.as_ref(), s.scope.as_ref(), span, &mut own).unwrap();
                    count_drop(kept, &own, hits, &mut dropped)
                });
            }
        }
        dropped
    }
}

impl Reference for ExportLogsServiceRequest {
    fn check(&self) -> Result<u64, String> {
        audit_format::validity::logs(self)
    }
    fn keep(&mut self, policy: &Policy, hits: &mut [u64]) -> u64 {
        let mut dropped = 0;
        for r in &mut self.resource_logs {
            for s in &mut r.scope_logs {
                s.log_records.retain(|log| {
                    let mut own = vec![0; hits.len()];
                    let kept = policy.filter.keep_log(r.resource.as_ref(), s.scope.as_ref(), log, &mut own).unwrap();
                    count_drop(kept, &own, hits, &mut dropped)
                });
            }
        }
        dropped
    }
}

/// Counts a dropped record and its rule hits (a kept record's hits are
/// counted when the batch walks it); whether it was kept.
fn count_drop(kept: bool, own: &[u64], hits: &mut [u64], dropped: &mut u64) -> bool {
    if !kept {
        *dropped += 1;
        hits.iter_mut().zip(own).for_each(|(h, o)| *h += o);
    }
    kept
}

/// The scan either leaves the request to the full walk or agrees with it.
fn agrees<R: Assemble + Reference + std::fmt::Debug + PartialEq>(bytes: &[u8], policy: &Policy) -> bool {
    let Some(scanned) = decode::<R>(bytes, &policy.filter, policy.rules.len()) else {
        return false;
    };
    let full = full_walk::<R>(bytes, policy).expect("the scan took a request the full walk refuses");
    // The batch's walk then filters the records the scan kept or passed
    // over (after a run of kept ones), as it filters every record of a
    // request it decodes whole.
    let mut kept = scanned.request;
    let mut hits = scanned.hits;
    let dropped = scanned.dropped + kept.keep(policy, &mut hits);
    assert_eq!(kept, full.request);
    assert_eq!((dropped, hits), (full.dropped, full.hits));
    true
}

#[test]
fn the_scan_keeps_and_counts_what_the_full_walk_does() {
    let mut rng = Rng(0x5eed);
    for text in SCANNED {
        let policy = Policy::parse(text, &[]).unwrap();
        let mut dropped = 0;
        for _ in 0..300 {
            let scanned = if text.contains("logs:") && !text.contains("spans:") {
                let request = logs(&mut rng);
                dropped += full_walk::<ExportLogsServiceRequest>(&request.encode_to_vec(), &policy).unwrap().dropped;
                agrees::<ExportLogsServiceRequest>(&request.encode_to_vec(), &policy)
            } else {
                let request = traces(&mut rng);
                dropped += full_walk::<ExportTraceServiceRequest>(&request.encode_to_vec(), &policy).unwrap().dropped;
                agrees::<ExportTraceServiceRequest>(&request.encode_to_vec(), &policy)
            };
            assert!(scanned, "a valid request is scanned under {text}");
        }
        assert!(dropped > 50, "the generated records exercise the filter of {text}: {dropped} dropped");
    }
}

#[test]
fn damaged_requests_are_left_to_the_full_walk() {
    let mut rng = Rng(0xbad);
    let (mut scanned, mut refused) = (0, 0);
    for i in 0..3000 {
        // An OTTL filter and a match block.
        let policy = Policy::parse(SCANNED[if i % 2 == 0 { 0 } else { 4 }], &[]).unwrap();
        let mut bytes = traces(&mut rng).encode_to_vec();
        if bytes.is_empty() {
            continue;
        }
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(bytes.len() as u64) as usize;
            match rng.below(3) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next() as u8,
                _ => bytes.truncate(at),
            }
            if bytes.is_empty() {
                break;
            }
        }
        // Whatever the scan takes, the full walk takes alike.
        if agrees::<ExportTraceServiceRequest>(&bytes, &policy) {
            scanned += 1;
        } else if full_walk::<ExportTraceServiceRequest>(&bytes, &policy).is_none() {
            refused += 1;
        }
    }
    assert!(scanned > 300 && refused > 300, "both outcomes exercised: {scanned} scanned, {refused} refused");
}

#[test]
fn what_decoding_or_the_validity_rules_refuse_is_never_scanned_past() {
    let policy = Policy::parse(SCANNED[0], &[]).unwrap();
    let dropped = |span: Span| {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                ..Default::default()
            }],
        };
        decode::<ExportTraceServiceRequest>(&request.encode_to_vec(), &policy.filter, policy.rules.len())
    };
    assert_eq!(dropped(Span::default()).map(|p| p.dropped), Some(1));
    assert!(dropped(Span { trace_id: vec![1; 15], ..Default::default() }).is_none(), "a short trace id");
    let link = span::Link { span_id: vec![1; 9], ..Default::default() };
    assert!(dropped(Span { links: vec![link], ..Default::default() }).is_none(), "a long link span id");
    let strindex = AnyValue { value: Some(Value::StringValueStrindex(3)) };
    let kv = KeyValue { key: "k".into(), value: Some(strindex), key_strindex: 0 };
    assert!(dropped(Span { attributes: vec![kv], ..Default::default() }).is_none(), "a string-table value");
    let kv = KeyValue { key: "k".into(), value: None, key_strindex: 2 };
    let event = span::Event { attributes: vec![kv], ..Default::default() };
    assert!(dropped(Span { events: vec![event], ..Default::default() }).is_none(), "a string-table key");
    let mut deep = AnyValue { value: Some(Value::IntValue(1)) };
    for _ in 0..40 {
        deep = AnyValue { value: Some(Value::ArrayValue(ArrayValue { values: vec![deep] })) };
    }
    let kv = KeyValue { key: "k".into(), value: Some(deep), key_strindex: 0 };
    assert!(dropped(Span { attributes: vec![kv.clone()], ..Default::default() }).is_none(), "deep nesting");
    // Kept records too, also those taken without a check (after a kept one).
    let login = AnyValue { value: Some(Value::StringValue("login".into())) };
    let action = KeyValue { key: "audit.action".into(), value: Some(login), key_strindex: 0 };
    let kept = Span { attributes: vec![action], ..Default::default() };
    let deep = Span { attributes: vec![kept.attributes[0].clone(), kv], ..Default::default() };
    let request = |spans: Vec<Span>| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    let scan = |r: ExportTraceServiceRequest| {
        decode::<ExportTraceServiceRequest>(&r.encode_to_vec(), &policy.filter, policy.rules.len())
    };
    assert_eq!(scan(request(vec![kept.clone(), kept.clone()])).map(|p| p.dropped), Some(0));
    assert!(scan(request(vec![deep.clone()])).is_none());
    assert!(scan(request(vec![kept.clone(), deep])).is_none());
    // A damaged record dropped after a kept one is checked all the same.
    // (Span bytes: field 15, the status, holding one byte that is no field.)
    let mut scope = ScopeSpans { spans: vec![kept], ..Default::default() }.encode_to_vec();
    scope.extend_from_slice(&[0x12, 3, 0x7a, 1, 0xff]);
    let resource = [&[0x12, scope.len() as u8][..], &scope].concat();
    let bytes = [&[0x0a, resource.len() as u8][..], &resource].concat();
    assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err());
    assert!(decode::<ExportTraceServiceRequest>(&bytes, &policy.filter, policy.rules.len()).is_none());
    // A group (wire type 3) in a span: decoding knows how to skip it, the
    // scan leaves it to decoding.
    let mut request = ExportTraceServiceRequest::default().encode_to_vec();
    request.extend_from_slice(&[0x0a, 0x08, 0x12, 0x06, 0x12, 0x04, 0x8b, 0x01, 0x8c, 0x01]);
    assert!(ExportTraceServiceRequest::decode(request.as_slice()).is_ok());
    assert!(decode::<ExportTraceServiceRequest>(&request, &policy.filter, policy.rules.len()).is_none());
}

#[test]
fn filters_the_scan_cannot_decide_are_not_scanned() {
    let request = traces(&mut Rng(7)).encode_to_vec();
    for text in [
        "audit:\n  pipeline: p\n",
        "filter:\n  traces:\n    span: ['Len(attributes) > 3']\n",
        "filter:\n  traces:\n    span: ['trace_id.string == \"00\"']\n",
        "filter:\n  traces:\n    span: ['attributes[attributes[\"n\"]] == nil']\n",
        "filter:\n  logs:\n    include:\n      match_type: strict\n      record_attributes: [{key: a}]\n",
    ] {
        let policy = Policy::parse(text, &[]).unwrap();
        assert!(decode::<ExportTraceServiceRequest>(&request, &policy.filter, policy.rules.len()).is_none(), "{text}");
    }
}

#[test]
fn an_evaluation_error_under_propagate_is_left_to_the_full_walk() {
    let policy = Policy::parse("filter:\n  traces:\n    span: ['Len(attributes[\"n\"]) > 0']\n", &[]).unwrap();
    let with = |value: Value| {
        let kv = KeyValue { key: "n".into(), value: Some(AnyValue { value: Some(value) }), key_strindex: 0 };
        let span = Span { attributes: vec![kv], ..Default::default() };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                ..Default::default()
            }],
        };
        decode::<ExportTraceServiceRequest>(&request.encode_to_vec(), &policy.filter, policy.rules.len())
    };
    assert_eq!(with(Value::StringValue("abc".into())).map(|p| p.dropped), Some(1));
    // Len of an int is an error: the batch is refused by the full walk,
    // with the record's place.
    assert!(with(Value::IntValue(3)).is_none());
}

#[test]
fn after_a_run_of_kept_records_the_next_are_decoded_whole_and_the_walk_filters_them() {
    let policy = Policy::parse(SCANNED[4], &[]).unwrap();
    let mut rng = Rng(11);
    let audit = |i: usize| {
        let value = AnyValue { value: Some(Value::StringValue(format!("a{i}"))) };
        let mut span = span(&mut Rng(i as u64 + 1));
        span.attributes = vec![KeyValue { key: "audit.action".into(), value: Some(value), key_strindex: 0 }];
        span
    };
    // 20 audit spans, then a mix: the scan passes over some of the mix.
    let spans: Vec<Span> =
        (0..200).map(|i| if i < 20 || rng.below(2) == 0 { audit(i) } else { Span::default() }).collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    let bytes = request.encode_to_vec();
    assert!(agrees::<ExportTraceServiceRequest>(&bytes, &policy));
    let scanned = decode::<ExportTraceServiceRequest>(&bytes, &policy.filter, policy.rules.len()).unwrap();
    let full = full_walk::<ExportTraceServiceRequest>(&bytes, &policy).unwrap();
    assert!(0 < scanned.dropped && scanned.dropped < full.dropped, "{} of {}", scanned.dropped, full.dropped);
}

#[test]
fn an_evaluation_error_names_the_record_by_its_place_in_the_request() {
    let policy = "filter:\n  traces:\n    span: ['attributes[\"drop\"] != nil', 'Len(attributes[\"n\"]) > 100']\n";
    let policy = Policy::parse(policy, &[]).unwrap();
    let with = |key: &str, value: Value| Span {
        attributes: vec![KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), key_strindex: 0 }],
        ..Default::default()
    };
    // One dropped, ten kept, then one whose condition fails (Len of an int).
    let mut spans = vec![with("drop", Value::BoolValue(true))];
    spans.extend((0..10).map(|_| with("n", Value::StringValue("x".into()))));
    spans.push(with("n", Value::IntValue(1)));
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    let ctx = crate::api::Context { received_at_unix_nano: 1, head: crate::api::ChainHead::genesis("c"), sender: None };
    let error = crate::process::traces(&policy, &request.encode_to_vec(), &ctx).unwrap_err().to_string();
    assert!(error.contains("(resource 0, scope 0, record 11)"), "{error}");
}

/// The plain-form decoder and prost with the depth walk refuse a record
/// at the same nesting, wherever the nested value is.
#[test]
fn a_record_decoded_whole_is_refused_at_the_same_depth_either_way() {
    fn reference<R: Assemble>(bytes: &[u8]) -> Option<R::Item> {
        let item = R::Item::decode(bytes).ok()?;
        let deep = R::values(&item).any(|v| too_deep(v, 2));
        (!deep).then_some(item)
    }
    let (mut plain, mut refused) = (0, 0);
    for n in 0..20 {
        for as_list in [false, true] {
            let mut v = AnyValue { value: Some(Value::IntValue(1)) };
            for _ in 0..n {
                v = AnyValue {
                    value: Some(if as_list {
                        Value::KvlistValue(KeyValueList {
                            values: vec![KeyValue { key: "k".into(), value: Some(v), key_strindex: 0 }],
                        })
                    } else {
                        Value::ArrayValue(ArrayValue { values: vec![v] })
                    }),
                };
            }
            let kv = KeyValue { key: "k".into(), value: Some(v.clone()), key_strindex: 0 };
            let event = span::Event { attributes: vec![kv.clone()], ..Default::default() };
            let spans = [
                Span { attributes: vec![kv.clone()], ..Default::default() },
                Span { events: vec![event], ..Default::default() },
            ];
            for span in spans {
                let bytes = span.encode_to_vec();
                assert_eq!(whole::<ExportTraceServiceRequest>(&bytes), reference::<ExportTraceServiceRequest>(&bytes));
                plain += usize::from(crate::decode::span(&bytes).is_some());
                refused += usize::from(reference::<ExportTraceServiceRequest>(&bytes).is_none());
            }
            let logs = [
                LogRecord { attributes: vec![kv], ..Default::default() },
                LogRecord { body: Some(v), ..Default::default() },
            ];
            for log in logs {
                let bytes = log.encode_to_vec();
                assert_eq!(whole::<ExportLogsServiceRequest>(&bytes), reference::<ExportLogsServiceRequest>(&bytes));
                plain += usize::from(crate::decode::log(&bytes).is_some());
                refused += usize::from(reference::<ExportLogsServiceRequest>(&bytes).is_none());
            }
        }
    }
    assert!(plain > 40 && refused > 20, "both depths exercised: {plain} decoded plainly, {refused} refused");
}

#[test]
fn the_span_head_passes_only_certainly_valid_fields_and_the_loop_reads_the_rest() {
    let policy = Policy::parse(SCANNED[0], &[]).unwrap();
    let wants = Wants::of(&policy.filter.spans, &policy.filter.trace_conditions).unwrap();
    let text = |s: &str| Some(AnyValue { value: Some(Value::StringValue(s.into())) });
    let kv = |k: &str, value| KeyValue { key: k.into(), value, key_strindex: 0 };
    // The common form is read to its end; the wanted key is taken.
    let common = Span {
        trace_id: vec![0xfe; 16],
        span_id: vec![0xfd; 8],
        parent_span_id: vec![0xfc; 8],
        name: "GET /users".into(),
        kind: 2,
        start_time_unix_nano: u64::MAX,
        end_time_unix_nano: u64::MAX,
        attributes: vec![kv("http.route", text("/users")), kv("audit.action", text("login"))],
        ..Default::default()
    };
    let bytes = common.encode_to_vec();
    let mut head = Span::default();
    assert_eq!(span_head(&bytes, &wants, &mut head), Some(bytes.len()));
    assert_eq!((head.kind, &head.attributes[..]), (2, &common.attributes[1..]));
    // A run holding non-ASCII text is left to the loop, and what it took
    // is given back; an attribute of another value ends the run before it.
    for (attributes, stop) in [
        (vec![kv("audit.action", text("login")), kv("k", text("é"))], 0),
        (vec![kv("audit.action", text("a")), kv("n", Some(AnyValue { value: Some(Value::IntValue(300)) }))], 2),
    ] {
        let span = Span { attributes, ..Default::default() };
        let bytes = span.encode_to_vec();
        let mut taken = Span::default();
        let end = if stop == 0 { 0 } else { bytes.len() };
        assert_eq!(span_head(&bytes, &wants, &mut taken), Some(end), "{span:?}");
        assert_eq!(taken.attributes.len(), if stop == 0 { 0 } else { 1 });
    }
    // Whatever the head passes, the scan refuses exactly what the checks
    // refuse, and takes what the field loop alone takes.
    let mut rng = Rng(0x4ead);
    let (mut refused, mut taken) = (0, 0);
    for _ in 0..20_000 {
        let mut record = span(&mut rng);
        if rng.below(2) == 0 {
            record.trace_id = vec![rng.next() as u8; 16];
            record.attributes.push(kv("audit.action", text(rng.pick(&["login", "é", ""]))));
        }
        let mut bytes = record.encode_to_vec();
        if !bytes.is_empty() && rng.below(2) == 0 {
            let at = rng.below(bytes.len() as u64) as usize;
            match rng.below(3) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next() as u8,
                _ => bytes.truncate(at),
            }
        }
        let checked = <ExportTraceServiceRequest as Assemble>::slim(&bytes, &wants, true);
        assert_eq!(checked.is_some(), check(&bytes, Part::Span, 0).is_some(), "{bytes:?}");
        if let Some(checked) = checked {
            assert_eq!(
                Some(checked),
                <ExportTraceServiceRequest as Assemble>::slim(&bytes, &wants, false),
                "{bytes:?}"
            );
            taken += 1;
        } else {
            refused += 1;
        }
    }
    assert!(taken > 5_000 && refused > 2_000, "both outcomes exercised: {taken} taken, {refused} refused");
}
