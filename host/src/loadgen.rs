//! Deterministic OTLP batches for load generation, benchmarks and
//! differential tests: a seed and a [`BatchSpec`] always give the same
//! bytes.
//!
//! Audit records look like what applications send (`enduser.*` and
//! `audit.*` attributes); the rest are ordinary HTTP spans and application
//! logs. With `varied` set, attribute values also cover every OTLP value
//! kind and the awkward corners of the canonical form: control characters,
//! non-BMP text, integers beyond 2^53, NaN and infinities, bytes, nested
//! arrays and maps, repeated keys, events, links and status.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The shape of a generated batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchSpec {
    /// Records in the batch.
    pub records: usize,
    /// Fraction (0..=1) of records that are audit records.
    pub audit_ratio: f64,
    /// Attributes per record (at least the audit attributes on audit records).
    pub attributes: usize,
    /// Cover every value kind and canonical-form corner case.
    pub varied: bool,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec { records: 100, audit_ratio: 0.05, attributes: 10, varied: false, seed: 1 }
    }
}

const ACTIONS: [&str; 6] = ["role_update", "login", "config_change", "password_reset", "export_data", "api_key_create"];
const USERS: [&str; 4] = ["alice@example.com", "bob@example.com", "ops-bot", "carol@example.com"];
const ROUTES: [&str; 5] = ["/healthz", "/api/users", "/api/orders/{id}", "/metrics", "/api/search"];
const TRICKY: [&str; 10] = [
    "plain",
    // Escapes past the first 16 bytes (the component scans 16 at a time),
    // and in the last 16 of a string that is no whole number of 16.
    "sixteen clean bytes, then \"quotes\", a \u{1} and a backslash \\ late in a long value",
    "seventeen bytes, \"quoted\"",
    "quote \" backslash \\ slash /",
    "control \u{1} \u{8} \u{c} \n \r \t \u{1f} \u{7f}",
    "non-BMP 😀 and U+FB33 \u{fb33} and é",
    "",
    "card 4111111111111111 inside",
    "line\nbreak",
    "\u{2028}\u{2029}",
];

/// A generated `ExportTraceServiceRequest`.
pub fn traces(spec: &BatchSpec) -> ExportTraceServiceRequest {
    let mut g = Gen::new(spec);
    let mut resource_spans = Vec::new();
    let mut remaining = spec.records;
    while remaining > 0 {
        let mut scope_spans = Vec::new();
        for scope_index in 0..g.rng.random_range(1..=2usize) {
            let n = if remaining <= 1 { remaining } else { g.rng.random_range(1..=remaining.min(64)) };
            remaining -= n;
            let spans = (0..n).map(|_| g.span()).collect();
            scope_spans.push(ScopeSpans { scope: Some(g.scope(scope_index)), spans, schema_url: g.schema_url() });
            if remaining == 0 {
                break;
            }
        }
        resource_spans.push(ResourceSpans { resource: Some(g.resource()), scope_spans, schema_url: g.schema_url() });
    }
    ExportTraceServiceRequest { resource_spans }
}

/// A generated `ExportLogsServiceRequest`.
pub fn logs(spec: &BatchSpec) -> ExportLogsServiceRequest {
    let mut g = Gen::new(spec);
    let mut resource_logs = Vec::new();
    let mut remaining = spec.records;
    while remaining > 0 {
        let n = if remaining <= 1 { remaining } else { g.rng.random_range(1..=remaining.min(64)) };
        remaining -= n;
        let log_records = (0..n).map(|_| g.log()).collect();
        let scope_logs = vec![ScopeLogs { scope: Some(g.scope(0)), log_records, schema_url: g.schema_url() }];
        resource_logs.push(ResourceLogs { resource: Some(g.resource()), scope_logs, schema_url: String::new() });
    }
    ExportLogsServiceRequest { resource_logs }
}

struct Gen {
    rng: ChaCha8Rng,
    spec: BatchSpec,
    clock: u64,
}

impl Gen {
    fn new(spec: &BatchSpec) -> Self {
        Gen {
            rng: ChaCha8Rng::seed_from_u64(spec.seed),
            spec: *spec,
            clock: 1_795_000_000_000_000_000 + spec.seed * 1_000,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += self.rng.random_range(1_000..5_000_000);
        self.clock
    }

    fn id(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.rng.random()).collect()
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.random_range(0..from.len())]
    }

    fn schema_url(&mut self) -> String {
        if self.spec.varied && self.rng.random_bool(0.3) {
            "https://opentelemetry.io/schemas/1.26.0".into()
        } else {
            String::new()
        }
    }

    fn resource(&mut self) -> Resource {
        let service = self.pick(&["identity-api", "billing", "config-service", "gateway"]);
        let mut attributes = vec![kv("service.name", s(service)), kv("host.name", s("node-7"))];
        if self.spec.varied {
            attributes.push(kv("process.pid", Value::IntValue(self.rng.random_range(1..99_999))));
        }
        Resource { attributes, dropped_attributes_count: 0, entity_refs: Vec::new() }
    }

    fn scope(&mut self, index: usize) -> InstrumentationScope {
        InstrumentationScope {
            name: if index == 0 { "app.audit".into() } else { "opentelemetry.instrumentation.http".into() },
            version: if self.spec.varied && self.rng.random_bool(0.5) { String::new() } else { "1.2.3".into() },
            attributes: Vec::new(),
            dropped_attributes_count: 0,
        }
    }

    fn audit_attributes(&mut self) -> Vec<KeyValue> {
        let mut attrs = vec![
            kv("audit.action", s(self.pick(&ACTIONS))),
            kv("enduser.id", s(self.pick(&USERS))),
            kv("audit.result", s(self.pick(&["success", "failure", "denied"]))),
            kv("enduser.role", s(self.pick(&["admin", "viewer", "editor"]))),
            kv("enduser.ip", s("203.0.113.7")),
            kv("audit.resource_type", s("user")),
        ];
        if self.rng.random_bool(0.5) {
            attrs.push(kv("audit.target_user", s(self.pick(&USERS))));
            attrs.push(kv("audit.old_value", s("viewer")));
            attrs.push(kv("audit.new_value", s("admin")));
        }
        if self.rng.random_bool(0.1) {
            // Some audit events lack what `audit.require` asks for.
            attrs.retain(|kv| kv.key != "audit.result");
        }
        attrs
    }

    fn filler(&mut self, attrs: &mut Vec<KeyValue>) {
        let mut i = 0;
        while attrs.len() < self.spec.attributes {
            let value = if self.spec.varied { self.varied_value(0) } else { s(self.pick(&ROUTES)) };
            attrs.push(kv(&format!("app.attr{i}"), value));
            i += 1;
        }
        if self.spec.varied && self.rng.random_bool(0.05) {
            // A repeated key: the first occurrence wins in the record.
            attrs.push(kv("app.attr0", s("repeated")));
        }
    }

    fn varied_value(&mut self, depth: u32) -> Value {
        match self.rng.random_range(0..if depth < 2 { 10 } else { 7 }) {
            0 => s(self.pick(&TRICKY)),
            1 => Value::BoolValue(self.rng.random()),
            2 => Value::IntValue(
                *[i64::MIN, i64::MAX, 9_007_199_254_740_993, -1, 0, 42].get(self.rng.random_range(0..6)).unwrap_or(&0),
            ),
            3 => Value::DoubleValue(
                *[f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e21, 1e-7, 0.1, 333333333.3333333, 5e-324]
                    .get(self.rng.random_range(0..9))
                    .unwrap_or(&0.0),
            ),
            4 => {
                let len = self.rng.random_range(0..20);
                Value::BytesValue(self.id(len))
            }
            5 => Value::IntValue(self.rng.random()),
            6 => Value::DoubleValue(self.rng.random::<f64>() * 1e6),
            7 => Value::ArrayValue(ArrayValue {
                values: (0..self.rng.random_range(0..4))
                    .map(|_| AnyValue { value: Some(self.varied_value(depth + 1)) })
                    .collect(),
            }),
            8 => Value::KvlistValue(KeyValueList {
                values: (0..self.rng.random_range(0..4))
                    .map(|i| {
                        let key = format!("{}{i}", self.pick(&["k", "é", "😀", "\u{fb33}", "a\"b"]));
                        kv(&key, self.varied_value(depth + 1))
                    })
                    .collect(),
            }),
            _ => s(&format!("user-{}", self.rng.random_range(0..1000))),
        }
    }

    fn span(&mut self) -> Span {
        let audit = self.rng.random_bool(self.spec.audit_ratio);
        let mut attributes = if audit {
            self.audit_attributes()
        } else {
            vec![kv("http.request.method", s("GET")), kv("http.route", s(self.pick(&ROUTES)))]
        };
        self.filler(&mut attributes);
        let start = self.tick();
        let varied = self.spec.varied;
        let mut span = Span {
            trace_id: self.id(16),
            span_id: self.id(8),
            name: if audit { format!("audit.{}", self.pick(&ACTIONS)) } else { format!("GET {}", self.pick(&ROUTES)) },
            kind: self.rng.random_range(0..6),
            start_time_unix_nano: start,
            end_time_unix_nano: start + self.rng.random_range(1_000..50_000_000),
            attributes,
            ..Span::default()
        };
        if varied {
            if self.rng.random_bool(0.5) {
                span.parent_span_id = self.id(8);
            }
            if self.rng.random_bool(0.3) {
                span.status = Some(Status { message: self.pick(&TRICKY).into(), code: self.rng.random_range(0..3) });
            }
            if self.rng.random_bool(0.3) {
                let time_unix_nano = self.tick();
                let attributes = vec![kv("exception.message", s(self.pick(&TRICKY)))];
                span.events.push(span::Event {
                    time_unix_nano,
                    name: "exception".into(),
                    attributes,
                    dropped_attributes_count: 0,
                });
            }
            if self.rng.random_bool(0.2) {
                let (trace_id, span_id) = (self.id(16), self.id(8));
                span.links.push(span::Link { trace_id, span_id, flags: 1, ..Default::default() });
            }
            span.dropped_attributes_count = self.rng.random_range(0..2);
            span.flags = self.rng.random_range(0..2) * 0x100;
            span.trace_state = if self.rng.random_bool(0.2) { "vendor=value".into() } else { String::new() };
        }
        span
    }

    fn log(&mut self) -> LogRecord {
        let audit = self.rng.random_bool(self.spec.audit_ratio);
        let mut attributes = if audit { self.audit_attributes() } else { vec![kv("cache.name", s("sessions"))] };
        self.filler(&mut attributes);
        let time = self.tick();
        let body = if self.spec.varied && self.rng.random_bool(0.3) {
            self.varied_value(0)
        } else {
            s(if audit { "audit event" } else { "cache miss ratio high" })
        };
        LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: time + 1,
            severity_number: self.rng.random_range(0..25),
            severity_text: self.pick(&["INFO", "WARN", "ERROR", ""]).into(),
            body: Some(AnyValue { value: Some(body) }),
            attributes,
            trace_id: if self.rng.random_bool(0.5) { self.id(16) } else { Vec::new() },
            span_id: if self.rng.random_bool(0.5) { self.id(8) } else { Vec::new() },
            event_name: if self.spec.varied && self.rng.random_bool(0.2) {
                "audit.event".into()
            } else {
                String::new()
            },
            ..LogRecord::default()
        }
    }
}

fn s(text: &str) -> Value {
    Value::StringValue(text.to_owned())
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), key_strindex: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_batch_and_the_ratio_holds() {
        let spec = BatchSpec { records: 2_000, audit_ratio: 0.05, ..BatchSpec::default() };
        assert_eq!(traces(&spec), traces(&spec));
        let req = traces(&spec);
        let spans: Vec<&Span> = req.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
        assert_eq!(spans.len(), 2_000);
        let audit = spans.iter().filter(|s| s.attributes.iter().any(|kv| kv.key == "audit.action")).count();
        assert!((50..=150).contains(&audit), "{audit} audit spans of 2000 at 5 %");
        assert!(spans.iter().all(|s| s.attributes.len() >= 10));
    }
}
