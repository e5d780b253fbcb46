//! OTTL from a generator, through the real component: a few thousand
//! statements and conditions built from the grammar's pieces (paths of
//! every context with keys and prefixes, every kind of literal, enums,
//! converters and editors with right and wrong arguments, math, `and`/`or`/
//! `not`, parentheses, `where` clauses), and as many random mutations and
//! truncations of them, each put into a policy (`filter.traces.span`,
//! `filter.traces.spanevent`, `filter.logs.log_record`, `trace_conditions`,
//! `log_conditions`, `transform` trace and log statements, flat or in
//! groups, `error_mode` ignore or propagate) that configures the `.wasm`.
//!
//! Whatever the text, `configure` answers or refuses with a policy error,
//! and a configured policy processes the fixture batches or refuses them as
//! a policy error: the component never traps. The same build natively must
//! give the same answers, byte for byte. The seed is printed;
//! `OTTL_FUZZ_SEED=<n>` replays a run, `OTTL_FUZZ_CASES=<n>` changes its
//! size.

mod support;

use std::time::Instant;

use audit_processor::Processor;
use audit_processor::api::ProcessError;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use otel_audit::otlp::{self, Encoding, Signal};
use otel_audit::runtime::{self, RuntimeError};
use prost::Message;
use serde_json::json;

const DEFAULT_SEED: u64 = 0x0771_f022_5eed_0001;
const DEFAULT_CASES: usize = 20_000;

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ctx {
    Resource,
    Scope,
    Span,
    SpanEvent,
    Log,
}

impl Ctx {
    fn name(self) -> &'static str {
        match self {
            Ctx::Resource => "resource",
            Ctx::Scope => "scope",
            Ctx::Span => "span",
            Ctx::SpanEvent => "spanevent",
            Ctx::Log => "log",
        }
    }
}

const KEYS: &[&str] = &[
    "enduser.id",
    "audit.action",
    "audit.note",
    "payment.amount",
    "payment.attempt",
    "http.route",
    "service.name",
    "reason",
    "missing",
    "",
    "k\\\"q",
    "ü",
];

/// The generator: texts that are mostly well-formed, sometimes not.
struct Gen<'r> {
    rng: &'r mut Rng,
    depth: usize,
    /// Whether paths name their context (a flat list, with no `context:`,
    /// needs one that does).
    prefixed: bool,
}

impl Gen<'_> {
    fn string(&mut self) -> String {
        let s = self.rng.pick(&[
            "alice@example.com",
            "",
            "role_update",
            "GET /api/users",
            "fo\\\"o",
            "tab\\there",
            "line\\nbreak",
            "\\u00e9t\\u00e9",
            "ünïcode ✓",
            "card 4111111111111111",
            "$1-$2",
            "%s!",
            "a.b.c",
        ]);
        format!("\"{s}\"")
    }

    fn regex(&mut self) -> String {
        let r = self.rng.pick(&[
            "^GET",
            ".*",
            "([a-z]+)@([a-z.]+)",
            "[0-9]{12,}",
            "(",
            "\\\\d+",
            "audit\\\\..*",
            "",
            "(?P<x>a)|b",
            "[",
        ]);
        format!("\"{r}\"")
    }

    fn int(&mut self) -> String {
        self.rng
            .pick(&[
                "0",
                "1",
                "-1",
                "2",
                "7",
                "100",
                "9223372036854775807",
                "-9223372036854775808",
                "403",
                "+3",
                "1000000",
            ])
            .to_owned()
    }

    fn float(&mut self) -> String {
        self.rng.pick(&["1.5", "-0.0", "0.1", "1e308", "2.5e-3", ".5", "-12.5", "1.7976931348623157e308"]).to_owned()
    }

    fn enum_(&mut self) -> String {
        self.rng
            .pick(&[
                "SPAN_KIND_SERVER",
                "SPAN_KIND_CLIENT",
                "SPAN_KIND_INTERNAL",
                "STATUS_CODE_ERROR",
                "STATUS_CODE_OK",
                "SEVERITY_NUMBER_WARN",
                "SEVERITY_NUMBER_INFO",
                "SEVERITY_NUMBER_ERROR4",
                "NOT_AN_ENUM",
                "SHA256",
            ])
            .to_owned()
    }

    fn key(&mut self) -> String {
        match self.rng.below(10) {
            0 => format!("[{}]", self.rng.pick(&["0", "1", "-1", "99"])),
            1 if self.depth < 3 => {
                self.depth += 1;
                let k = format!("[{}]", self.path(Ctx::Span));
                self.depth -= 1;
                k
            }
            2 if self.depth < 3 => {
                self.depth += 1;
                let k = "[Concat([\"audit\", \"action\"], \".\")]".to_owned();
                self.depth -= 1;
                k
            }
            _ => format!("[\"{}\"]", self.rng.pick(KEYS)),
        }
    }

    fn keys(&mut self, most: usize) -> String {
        (0..self.rng.below(most + 1)).map(|_| self.key()).collect()
    }

    /// A map-valued path (for the editors that take one).
    fn map_path(&mut self, ctx: Ctx) -> String {
        let own = match ctx {
            Ctx::Resource => "resource.attributes",
            Ctx::Scope => "instrumentation_scope.attributes",
            Ctx::Span => "span.attributes",
            Ctx::SpanEvent => "spanevent.attributes",
            Ctx::Log => "log.attributes",
        };
        match self.rng.below(8) {
            0 => own.to_owned(),
            1 => format!("{own}[\"{}\"]", self.rng.pick(KEYS)),
            2 if ctx == Ctx::Log => "body".to_owned(),
            3 => "cache".to_owned(),
            4 => self.path(ctx),
            _ if self.prefixed => own.to_owned(),
            _ => "attributes".to_owned(),
        }
    }

    fn path(&mut self, ctx: Ctx) -> String {
        let resource = ["resource.attributes", "resource.dropped_attributes_count"];
        let scope = [
            "instrumentation_scope.name",
            "instrumentation_scope.version",
            "instrumentation_scope.attributes",
            "scope.name",
            "instrumentation_scope.dropped_attributes_count",
        ];
        let span = [
            "trace_id",
            "trace_id.string",
            "span_id",
            "span_id.string",
            "parent_span_id",
            "parent_span_id.string",
            "trace_state",
            "flags",
            "name",
            "kind",
            "kind.string",
            "start_time_unix_nano",
            "end_time_unix_nano",
            "attributes",
            "dropped_attributes_count",
            "dropped_events_count",
            "dropped_links_count",
            "status.code",
            "status.message",
        ];
        let event = ["name", "time_unix_nano", "attributes", "dropped_attributes_count"];
        let log = [
            "time_unix_nano",
            "observed_time_unix_nano",
            "severity_number",
            "severity_text",
            "body",
            "body.string",
            "attributes",
            "dropped_attributes_count",
            "flags",
            "trace_id",
            "trace_id.string",
            "span_id",
            "span_id.string",
            "event_name",
        ];
        // Now and then a path of another context, a time path this build
        // refuses, or one that exists nowhere.
        if self.rng.chance(6) {
            return self
                .rng
                .pick(&["start_time", "time", "log.body", "span.name", "spanevent.name", "foo.bar", "resource.name"])
                .to_owned();
        }
        let (prefix, field) = match (ctx, self.rng.below(10)) {
            (_, 0) => ("", self.rng.pick(&resource)),
            (_, 1) => ("", self.rng.pick(&scope)),
            (_, 2) => ("", "cache"),
            (Ctx::Span, _) => {
                (if self.prefixed { "span." } else { self.rng.pick(&["", "span."]) }, self.rng.pick(&span))
            }
            (Ctx::SpanEvent, 3) => ("span.", self.rng.pick(&span)),
            (Ctx::SpanEvent, _) => {
                (if self.prefixed { "spanevent." } else { self.rng.pick(&["", "spanevent."]) }, self.rng.pick(&event))
            }
            (Ctx::Log, _) => (if self.prefixed { "log." } else { self.rng.pick(&["", "log."]) }, self.rng.pick(&log)),
            (Ctx::Resource, _) => ("", self.rng.pick(&resource)),
            (Ctx::Scope, _) => ("", self.rng.pick(&scope)),
        };
        let keys = if field.ends_with("attributes") || field == "cache" || field == "body" {
            if self.rng.chance(85) { format!("[\"{}\"]{}", self.rng.pick(KEYS), self.keys(1)) } else { String::new() }
        } else if self.rng.chance(5) {
            self.keys(1)
        } else {
            String::new()
        };
        format!("{prefix}{field}{keys}")
    }

    fn list(&mut self, ctx: Ctx) -> String {
        let n = self.rng.below(4);
        let items: Vec<String> = (0..n).map(|_| self.value(ctx)).collect();
        format!("[{}]", items.join(", "))
    }

    fn map(&mut self, ctx: Ctx) -> String {
        let n = self.rng.below(4);
        let items: Vec<String> = (0..n).map(|_| format!("\"{}\": {}", self.rng.pick(KEYS), self.value(ctx))).collect();
        format!("{{{}}}", items.join(", "))
    }

    fn literal(&mut self, ctx: Ctx) -> String {
        match self.rng.below(11) {
            0 | 1 => self.string(),
            2 => self.int(),
            3 => self.float(),
            4 => self.rng.pick(&["true", "false"]).to_owned(),
            5 => "nil".to_owned(),
            6 => {
                self.rng.pick(&["0x0102", "0x5b8efff798038103d269b633813fc60c", "0xeee19b7ec3c1b174", "0x"]).to_owned()
            }
            7 => self.enum_(),
            8 if self.depth < 3 => {
                self.depth += 1;
                let l = self.list(ctx);
                self.depth -= 1;
                l
            }
            9 if self.depth < 3 => {
                self.depth += 1;
                let m = self.map(ctx);
                self.depth -= 1;
                m
            }
            _ => self.string(),
        }
    }

    fn value(&mut self, ctx: Ctx) -> String {
        if self.depth >= 4 {
            return if self.rng.chance(50) { self.path(ctx) } else { self.literal(ctx) };
        }
        self.depth += 1;
        let v = match self.rng.below(10) {
            0..=2 => self.path(ctx),
            3..=5 => self.literal(ctx),
            6 | 7 => self.converter(ctx),
            _ => self.math(ctx),
        };
        self.depth -= 1;
        v
    }

    fn number(&mut self, ctx: Ctx) -> String {
        match self.rng.below(6) {
            0 => self.float(),
            1 => self.path(ctx),
            2 => format!("Len({})", self.value(ctx)),
            3 => format!("({})", self.math(ctx)),
            _ => self.int(),
        }
    }

    fn math(&mut self, ctx: Ctx) -> String {
        let op = self.rng.pick(&["+", "-", "*", "/"]);
        let (l, r) = if self.depth >= 4 { (self.int(), self.int()) } else { (self.number(ctx), self.number(ctx)) };
        match self.rng.below(8) {
            0 => format!("{l} {op} 0"),
            1 => format!("{l}{op}{r}"),
            2 => format!("{l} {op} {r} {} {}", self.rng.pick(&["*", "-"]), self.int()),
            _ => format!("{l} {op} {r}"),
        }
    }

    /// A converter call, usually with the arguments it takes.
    fn converter(&mut self, ctx: Ctx) -> String {
        // Every converter this build knows, and names it refuses.
        let names: Vec<&str> =
            audit_processor::ottl::converters::NAMES.iter().copied().chain(["Now", "UUID", "Nope"]).collect();
        let name = self.rng.pick(&names);
        let keys = if self.rng.chance(8) { self.keys(2) } else { String::new() };
        if self.rng.chance(20) {
            // Any number of arguments of any kind.
            let args: Vec<String> = (0..self.rng.below(4)).map(|_| self.value(ctx)).collect();
            return format!("{name}({}){keys}", args.join(", "));
        }
        let args = match name {
            "Concat" => format!("{}, {}", self.list(ctx), self.string()),
            "HasPrefix" | "HasSuffix" | "Split" => format!("{}, {}", self.value(ctx), self.string()),
            "IsMatch" => format!("{}, {}", self.value(ctx), self.regex()),
            "IsRootSpan" | "Now" | "UUID" => String::new(),
            "Substring" => format!("{}, {}, {}", self.value(ctx), self.number(ctx), self.number(ctx)),
            "Trim" if self.rng.chance(50) => format!("{}, {}", self.value(ctx), self.string()),
            _ => self.value(ctx),
        };
        format!("{name}({args}){keys}")
    }

    fn comparison(&mut self, ctx: Ctx) -> String {
        let op = self.rng.pick(&["==", "!=", "<", "<=", ">", ">="]);
        format!("{} {op} {}", self.value(ctx), self.value(ctx))
    }

    fn condition(&mut self, ctx: Ctx) -> String {
        if self.depth >= 4 {
            return self.comparison(ctx);
        }
        self.depth += 1;
        let c = match self.rng.below(12) {
            0..=4 => self.comparison(ctx),
            5 => self.rng.pick(&["true", "false"]).to_owned(),
            6 => match self.rng.below(5) {
                0 => format!("IsMatch({}, {})", self.value(ctx), self.regex()),
                1 => format!("HasPrefix({}, {})", self.value(ctx), self.string()),
                2 => "IsRootSpan()".to_owned(),
                3 => format!("IsString({})", self.value(ctx)),
                _ => self.converter(ctx),
            },
            7 => format!("not {}", self.condition(ctx)),
            8 => format!("({})", self.condition(ctx)),
            9 => format!("{} and {}", self.condition(ctx), self.condition(ctx)),
            10 => format!("{} or {}", self.condition(ctx), self.condition(ctx)),
            _ => format!("not ({} or {}) and {}", self.condition(ctx), self.condition(ctx), self.comparison(ctx)),
        };
        self.depth -= 1;
        c
    }

    /// An editor call, usually with the arguments it takes, and now and
    /// then a `where` clause.
    fn statement(&mut self, ctx: Ctx) -> String {
        let name = self.rng.pick(&[
            "set",
            "set",
            "set",
            "delete_key",
            "delete_matching_keys",
            "keep_keys",
            "keep_matching_keys",
            "replace_pattern",
            "replace_match",
            "replace_all_patterns",
            "replace_all_matches",
            "truncate_all",
            "limit",
            "merge_maps",
            "flatten",
            "append",
            "Set",
        ]);
        let args = if self.rng.chance(15) {
            let args: Vec<String> = (0..self.rng.below(5)).map(|_| self.value(ctx)).collect();
            args.join(", ")
        } else {
            let function = |g: &mut Self| {
                if g.rng.chance(40) {
                    format!(", {}", g.rng.pick(&["SHA256", "SHA1", "MD5", "SHA512", "Sha256", "FNV"]))
                } else {
                    String::new()
                }
            };
            match name {
                "set" if self.rng.chance(10) => format!("target = {}, value = {}", self.path(ctx), self.value(ctx)),
                "set" => format!("{}, {}", self.path(ctx), self.value(ctx)),
                "delete_key" => format!("{}, {}", self.map_path(ctx), self.string()),
                "delete_matching_keys" | "keep_matching_keys" => format!("{}, {}", self.map_path(ctx), self.regex()),
                "keep_keys" => format!("{}, [{}, {}]", self.map_path(ctx), self.string(), self.string()),
                "replace_pattern" => {
                    let f = function(self);
                    format!("{}, {}, {}{f}", self.path(ctx), self.regex(), self.string())
                }
                "replace_match" => {
                    let f = function(self);
                    format!("{}, \"*{}*\", {}{f}", self.path(ctx), self.rng.pick(KEYS), self.string())
                }
                "replace_all_patterns" => {
                    let f = function(self);
                    let mode = self.rng.pick(&["\"key\"", "\"value\"", "\"both\""]);
                    format!("{}, {mode}, {}, {}{f}", self.map_path(ctx), self.regex(), self.string())
                }
                "replace_all_matches" => format!("{}, \"*.*\", {}", self.map_path(ctx), self.string()),
                "truncate_all" => {
                    let extra = match self.rng.below(3) {
                        0 => String::new(),
                        1 => ", true".to_owned(),
                        _ => format!(", false, {}", self.string()),
                    };
                    format!("{}, {}{extra}", self.map_path(ctx), self.int())
                }
                "limit" => format!("{}, {}, [{}]", self.map_path(ctx), self.int(), self.string()),
                "merge_maps" => format!(
                    "{}, {}, {}",
                    self.map_path(ctx),
                    if self.rng.chance(50) { self.map(ctx) } else { self.path(ctx) },
                    self.rng.pick(&["\"insert\"", "\"update\"", "\"upsert\"", "\"merge\""])
                ),
                "flatten" => match self.rng.below(4) {
                    0 => self.map_path(ctx),
                    1 => format!("{}, {}", self.map_path(ctx), self.string()),
                    2 => format!("{}, {}, {}", self.map_path(ctx), self.string(), self.int()),
                    _ => format!("{}, {}, {}, true", self.map_path(ctx), self.string(), self.int()),
                },
                _ => self.value(ctx),
            }
        };
        let mut s = format!("{name}({args})");
        if self.rng.chance(40) {
            s.push_str(" where ");
            s.push_str(&self.condition(ctx));
        }
        s
    }
}

/// A random edit of a text: a character dropped, doubled or swapped, a
/// token inserted, the text cut short.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(3) {
        let at = if chars.is_empty() { 0 } else { rng.below(chars.len() + 1) };
        match rng.below(6) {
            0 if at < chars.len() => {
                chars.remove(at);
            }
            1 if at < chars.len() => {
                let c = chars[at];
                chars.insert(at, c);
            }
            2 if at + 1 < chars.len() => chars.swap(at, at + 1),
            3 => chars.truncate(at),
            _ => {
                let token = rng.pick(&[
                    "(",
                    ")",
                    "[",
                    "]",
                    "{",
                    "}",
                    "\"",
                    ",",
                    ".",
                    "=",
                    "==",
                    "<",
                    "!",
                    "+",
                    "-",
                    "*",
                    "/",
                    " and ",
                    " or ",
                    " not ",
                    " where ",
                    "nil",
                    "0x",
                    "\\",
                    ":",
                    "|",
                    "SPAN_KIND_SERVER",
                    "Foo",
                    "1e",
                ]);
                for (i, c) in token.chars().enumerate() {
                    chars.insert(at + i, c);
                }
            }
        }
    }
    chars.into_iter().collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Condition,
    Statement,
}

/// One generated policy.
struct Case {
    policy: String,
    /// Whether the texts were mutated (expected to fail more often).
    mutated: bool,
}

fn error_mode(rng: &mut Rng) -> &'static str {
    rng.pick(&["ignore", "propagate", "propagate", "silent"])
}

/// A policy holding one or a few generated texts in one of the places
/// OTTL goes.
fn case(rng: &mut Rng) -> Case {
    let kind = if rng.chance(50) { Kind::Condition } else { Kind::Statement };
    let logs = rng.chance(40);
    let ctx = if logs {
        rng.pick(&[Ctx::Log, Ctx::Log, Ctx::Log, Ctx::Resource, Ctx::Scope])
    } else {
        rng.pick(&[Ctx::Span, Ctx::Span, Ctx::SpanEvent, Ctx::SpanEvent, Ctx::Resource, Ctx::Scope])
    };
    let mutated = rng.chance(35);
    // Flat lists infer their context from the paths' prefixes.
    let flat = rng.chance(30);
    let n = if rng.chance(25) { 2 + rng.below(3) } else { 1 };
    let mut texts = Vec::new();
    for _ in 0..n {
        let mut g = Gen { rng: &mut *rng, depth: 0, prefixed: flat };
        let text = match kind {
            Kind::Condition => g.condition(ctx),
            Kind::Statement => g.statement(ctx),
        };
        texts.push(if mutated { mutate(rng, &text) } else { text });
    }
    let mode = error_mode(rng);
    let policy = match (kind, ctx) {
        (Kind::Condition, Ctx::Span) if rng.chance(60) => {
            json!({"filter": {"error_mode": mode, "traces": {"span": texts}}})
        }
        (Kind::Condition, Ctx::SpanEvent) if rng.chance(60) => {
            json!({"filter": {"error_mode": mode, "traces": {"spanevent": texts}}})
        }
        (Kind::Condition, Ctx::Log) if rng.chance(60) => {
            json!({"filter": {"error_mode": mode, "logs": {"log_record": texts}}})
        }
        (Kind::Condition, _) => {
            let key = if logs { "log_conditions" } else { "trace_conditions" };
            if flat {
                json!({"filter": {"error_mode": mode, key: texts}})
            } else {
                json!({"filter": {key: [{"context": ctx.name(), "conditions": texts, "error_mode": mode}]}})
            }
        }
        (Kind::Statement, _) => {
            let key = if logs { "log_statements" } else { "trace_statements" };
            if flat {
                json!({"transform": {"error_mode": mode, key: texts}})
            } else {
                let mut group = json!({"context": ctx.name(), "statements": texts});
                if rng.chance(30) {
                    let mut g = Gen { rng: &mut *rng, depth: 0, prefixed: false };
                    group["conditions"] = json!([g.condition(ctx)]);
                }
                if rng.chance(30) {
                    group["error_mode"] = json!(error_mode(rng));
                }
                json!({"transform": {"error_mode": mode, key: [group]}})
            }
        }
    };
    // JSON is YAML: every text arrives exactly as generated.
    Case { policy: serde_json::to_string_pretty(&policy).expect("json"), mutated }
}

fn string_value(s: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::StringValue(s.into())) })
}

/// The fixture batches, the traces with span events added (the fixture
/// has none), so the spanevent context has something to read.
fn requests() -> (Vec<u8>, Vec<u8>) {
    let read = |name: &str, signal| {
        let bytes = std::fs::read(support::fixture(name)).unwrap();
        otlp::to_protobuf(signal, &bytes, Encoding::Auto).unwrap()
    };
    let mut traces = ExportTraceServiceRequest::decode(read("mixed-traces.json", Signal::Traces).as_slice()).unwrap();
    let spans = &mut traces.resource_spans[0].scope_spans[0].spans;
    spans[0].events = vec![
        Event {
            time_unix_nano: 1_795_000_000_001_000_000,
            name: "grpc.call".into(),
            attributes: vec![KeyValue { key: "reason".into(), value: string_value("denied"), key_strindex: 0 }],
            dropped_attributes_count: 0,
        },
        Event { time_unix_nano: 1_795_000_000_002_000_000, name: "exception".into(), ..Event::default() },
    ];
    spans[1].events = vec![Event { name: "refund.issued".into(), ..Event::default() }];
    (traces.encode_to_vec(), read("mixed-logs.json", Signal::Logs))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok().and_then(|n| n.to_string().parse().ok()),
                None => v.parse().ok(),
            };
            parsed.unwrap_or_else(|| panic!("{name}={v} is not a number"))
        }
        Err(_) => default,
    }
}

#[derive(Default, Debug)]
struct Tally {
    configured: usize,
    refused: usize,
    processed: usize,
    process_refused: usize,
    changed: usize,
    mutated_configured: usize,
}

#[test]
fn generated_ottl_never_traps_the_component_and_native_agrees() {
    let seed: u64 = env_or("OTTL_FUZZ_SEED", DEFAULT_SEED);
    let cases: usize = env_or("OTTL_FUZZ_CASES", DEFAULT_CASES);
    println!("ottl_fuzz: seed {seed:#x}, {cases} cases (replay: OTTL_FUZZ_SEED={seed:#x})");
    let mut rng = Rng(seed.max(1));
    let (traces, logs) = requests();
    let ctx = support::genesis("ottl-fuzz");

    // What the batches become under a policy that does nothing to them, so
    // a policy that changed them can be counted.
    let mut baseline = Processor::new();
    let base_digest = baseline.configure("{}", &[]).expect("an empty policy").digest;
    let base_traces = baseline.process_traces(&traces, &ctx).unwrap();
    let base_logs = baseline.process_logs(&logs, &ctx).unwrap();

    let mut instance = support::module().instantiate().unwrap();
    let mut tally = Tally::default();
    let started = Instant::now();
    for i in 0..cases {
        let case = case(&mut rng);
        let at = format!("case {i} (seed {seed:#x}), policy:\n{}", case.policy);
        let mut native = Processor::new();
        let native_configured = native.configure(&case.policy, &[]);
        let digest = match instance.configure(&case.policy, &[]) {
            Ok(info) => {
                let n = native_configured.unwrap_or_else(|e| panic!("{at}\nwasm configured, native refused: {e}"));
                assert_eq!(info.digest, n.digest, "{at}");
                assert_eq!(info.rules.len(), n.rules.len(), "{at}");
                info.digest
            }
            Err(RuntimeError::Policy(message)) => {
                let n = native_configured.err().unwrap_or_else(|| panic!("{at}\nwasm refused, native configured"));
                assert_eq!(message, n.to_string(), "{at}");
                assert!(!message.is_empty(), "{at}");
                tally.refused += 1;
                continue;
            }
            Err(e) => panic!("{at}\nconfigure did not answer: {e}"),
        };
        tally.configured += 1;
        // Records carry the policy's digest, and so do the chain links
        // after the first: compare them without either.
        let plain = |record: &[u8], digest: &str| {
            let mut json: serde_json::Value = serde_json::from_slice(record).expect("a record is JSON");
            json.as_object_mut().expect("a record is an object").remove("chain");
            json.to_string().replace(digest, "D")
        };
        let same = |a: &[Vec<u8>], b: &[Vec<u8>]| {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| plain(a, &digest) == plain(b, &base_digest))
        };
        tally.mutated_configured += usize::from(case.mutated);
        for (signal, request, base) in [("traces", &traces, &base_traces), ("logs", &logs, &base_logs)] {
            let (wasm, nat) = if signal == "traces" {
                (instance.process_traces(request, &ctx), native.process_traces(request, &ctx))
            } else {
                (instance.process_logs(request, &ctx), native.process_logs(request, &ctx))
            };
            match wasm {
                Ok(out) => {
                    let out = support::as_native(out);
                    let n = nat.unwrap_or_else(|e| panic!("{at}\n{signal}: wasm processed, native refused: {e}"));
                    assert!(out == n, "{at}\n{signal}: wasm and native outputs differ");
                    tally.processed += 1;
                    tally.changed += usize::from(!same(&out.records, &base.records));
                }
                Err(RuntimeError::Process(runtime::ProcessError::Policy(message))) => {
                    let n = nat.err().unwrap_or_else(|| panic!("{at}\n{signal}: wasm refused, native processed"));
                    assert_eq!(ProcessError::Policy(message), n, "{at}\n{signal}");
                    tally.process_refused += 1;
                }
                Err(e) => panic!("{at}\n{signal}: processing did not answer with output or a policy error: {e}"),
            }
        }
        assert!(!instance.is_poisoned(), "{at}");
    }
    let elapsed = started.elapsed();
    println!("ottl_fuzz: {tally:?} in {:.1} s", elapsed.as_secs_f64());
    // Not vacuous: the generator reaches every outcome, often.
    assert!(tally.configured > cases / 5, "only {} of {cases} policies configured", tally.configured);
    assert!(tally.refused > cases / 5, "only {} of {cases} policies were refused", tally.refused);
    assert!(tally.mutated_configured > 20, "only {} mutated policies configured", tally.mutated_configured);
    assert!(tally.changed > cases / 25, "only {} outputs differ from the unchanged batch", tally.changed);
    assert!(tally.process_refused > 20, "only {} batches were refused (error_mode propagate)", tally.process_refused);
}
