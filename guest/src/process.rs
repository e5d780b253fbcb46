//! One batch through the stages: decode -> filter -> attributes -> redaction
//! -> enrich -> canonical record -> chain -> encode.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::api::{ChainHead, Context, Output, ProcessError, Stats};
use crate::chain::{self, Hash};
use crate::enrich;
use crate::policy::Policy;
use crate::record::{self, Body, Position};

/// Processes an `ExportTraceServiceRequest`.
pub fn traces(policy: &Policy, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
    let mut req =
        ExportTraceServiceRequest::decode(request).map_err(|e| decode_error("ExportTraceServiceRequest", e))?;
    let mut batch = Batch::new(policy, ctx)?;
    let mut count = 0u64;
    for (r, rs) in req.resource_spans.iter().enumerate() {
        check_containers(
            rs.resource.as_ref(),
            rs.scope_spans.iter().map(|ss| ss.scope.as_ref()),
            &format!("resource_spans[{r}]"),
            "scope_spans",
        )?;
        for (s, ss) in rs.scope_spans.iter().enumerate() {
            for (i, span) in ss.spans.iter().enumerate() {
                check_span(span).map_err(|e| e.at(format!("resource_spans[{r}].scope_spans[{s}].spans[{i}]")))?;
            }
            count += ss.spans.len() as u64;
        }
    }
    check_room(ctx, count)?;
    req.resource_spans.retain_mut(|rs| {
        let resource_member = record::resource_member(rs.resource.as_ref(), &rs.schema_url);
        let resource = rs.resource.as_ref();
        rs.scope_spans.retain_mut(|ss| {
            let scope_member = record::scope_member(ss.scope.as_ref(), &ss.schema_url);
            let scope = ss.scope.as_ref();
            ss.spans.retain_mut(|span| {
                batch.stats.received += 1;
                if !policy.filter.keep_span(resource, scope, span, &mut batch.stats.rule_hits) {
                    batch.stats.dropped += 1;
                    return false;
                }
                policy.attributes.apply_span(resource, scope, span, &mut batch.stats.rule_hits);
                batch.stats.redacted += policy.redaction.redact_span(span, &mut batch.stats.rule_hits);
                batch.enrich(&mut span.attributes);
                let link = batch.chain(&resource_member, &scope_member, Body::Span(span));
                batch.annotate(&link, &mut span.attributes);
                true
            });
            !ss.spans.is_empty()
        });
        !rs.scope_spans.is_empty()
    });
    Ok(batch.finish(req.encode_to_vec()))
}

/// Processes an `ExportLogsServiceRequest`.
pub fn logs(policy: &Policy, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
    let mut req = ExportLogsServiceRequest::decode(request).map_err(|e| decode_error("ExportLogsServiceRequest", e))?;
    let mut batch = Batch::new(policy, ctx)?;
    let mut count = 0u64;
    for (r, rl) in req.resource_logs.iter().enumerate() {
        check_containers(
            rl.resource.as_ref(),
            rl.scope_logs.iter().map(|sl| sl.scope.as_ref()),
            &format!("resource_logs[{r}]"),
            "scope_logs",
        )?;
        for (s, sl) in rl.scope_logs.iter().enumerate() {
            for (i, log) in sl.log_records.iter().enumerate() {
                check_log(log).map_err(|e| e.at(format!("resource_logs[{r}].scope_logs[{s}].log_records[{i}]")))?;
            }
            count += sl.log_records.len() as u64;
        }
    }
    check_room(ctx, count)?;
    req.resource_logs.retain_mut(|rl| {
        let resource_member = record::resource_member(rl.resource.as_ref(), &rl.schema_url);
        let resource = rl.resource.as_ref();
        rl.scope_logs.retain_mut(|sl| {
            let scope_member = record::scope_member(sl.scope.as_ref(), &sl.schema_url);
            let scope = sl.scope.as_ref();
            sl.log_records.retain_mut(|log| {
                batch.stats.received += 1;
                if !policy.filter.keep_log(resource, scope, log, &mut batch.stats.rule_hits) {
                    batch.stats.dropped += 1;
                    return false;
                }
                policy.attributes.apply_log(resource, scope, log, &mut batch.stats.rule_hits);
                batch.stats.redacted += policy.redaction.redact_log(log, &mut batch.stats.rule_hits);
                batch.enrich(&mut log.attributes);
                let link = batch.chain(&resource_member, &scope_member, Body::Log(log));
                batch.annotate(&link, &mut log.attributes);
                true
            });
            !sl.log_records.is_empty()
        });
        !rl.scope_logs.is_empty()
    });
    Ok(batch.finish(req.encode_to_vec()))
}

fn decode_error(what: &str, e: prost::DecodeError) -> ProcessError {
    ProcessError::Decode(format!("{what}: {e}"))
}

/// Refuses a batch whose records could not all get a sequence number.
/// Sequence numbers stop at 2^63 - 1, the largest `audit.sequence.number`
/// an OTLP (signed 64-bit) int attribute carries; a chain's seq never wraps.
fn check_room(ctx: &Context, records: u64) -> Result<(), ProcessError> {
    const LIMIT: u64 = 1 << 63;
    match ctx.head.seq.checked_add(records) {
        Some(end) if end <= LIMIT => Ok(()),
        _ => Err(ProcessError::InvalidContext(format!(
            "seq {} cannot take {records} more records: sequence numbers overflow at 2^63",
            ctx.head.seq
        ))),
    }
}

/// Checks the resource's and the scopes' attributes as records' are checked.
fn check_containers<'a>(
    resource: Option<&Resource>,
    scopes: impl Iterator<Item = Option<&'a InstrumentationScope>>,
    place: &str,
    scopes_field: &str,
) -> Result<(), ProcessError> {
    if let Some(resource) = resource {
        check_attributes("attributes", &resource.attributes).map_err(|e| e.at(format!("{place}.resource")))?;
    }
    for (s, scope) in scopes.enumerate() {
        if let Some(scope) = scope {
            check_attributes("attributes", &scope.attributes)
                .map_err(|e| e.at(format!("{place}.{scopes_field}[{s}].scope")))?;
        }
    }
    Ok(())
}

/// What is wrong with a record that decoded but is not valid OTLP; the
/// caller adds where it is.
struct Invalid(String);

impl Invalid {
    fn at(self, place: String) -> ProcessError {
        ProcessError::Decode(format!("{place}: {}", self.0))
    }
}

/// Checks what protobuf decoding cannot: id lengths (as the Collector's
/// pdata does) and the string-table references OTLP allows only in
/// profiles. Runs before any processing, so a refused batch leaves no
/// partial output.
fn check_span(span: &Span) -> Result<(), Invalid> {
    check_id("trace_id", &span.trace_id, 16)?;
    check_id("span_id", &span.span_id, 8)?;
    check_id("parent_span_id", &span.parent_span_id, 8)?;
    check_attributes("attributes", &span.attributes)?;
    for (i, event) in span.events.iter().enumerate() {
        if !attributes_ok(&event.attributes) {
            check_attributes(&format!("events[{i}].attributes"), &event.attributes)?;
        }
    }
    for (i, link) in span.links.iter().enumerate() {
        if !id_ok(&link.trace_id, 16) || !id_ok(&link.span_id, 8) || !attributes_ok(&link.attributes) {
            check_id(&format!("links[{i}].trace_id"), &link.trace_id, 16)?;
            check_id(&format!("links[{i}].span_id"), &link.span_id, 8)?;
            check_attributes(&format!("links[{i}].attributes"), &link.attributes)?;
        }
    }
    Ok(())
}

fn check_log(log: &LogRecord) -> Result<(), Invalid> {
    check_id("trace_id", &log.trace_id, 16)?;
    check_id("span_id", &log.span_id, 8)?;
    check_attributes("attributes", &log.attributes)?;
    if let Some(body) = &log.body {
        check_value("body", body)?;
    }
    Ok(())
}

fn id_ok(id: &[u8], len: usize) -> bool {
    id.is_empty() || id.len() == len
}

fn check_id(field: &str, id: &[u8], len: usize) -> Result<(), Invalid> {
    if id_ok(id, len) {
        return Ok(());
    }
    Err(Invalid(format!("{field} must be {len} bytes ({} hex digits) or empty, got {} bytes", len * 2, id.len())))
}

fn check_attributes(field: &str, attributes: &[KeyValue]) -> Result<(), Invalid> {
    // The common case allocates nothing; the place is spelled out only for
    // the error.
    if attributes_ok(attributes) {
        return Ok(());
    }
    for kv in attributes {
        if kv.key_strindex != 0 {
            return Err(Invalid(format!("{field}: key_strindex {} is allowed only in profiles", kv.key_strindex)));
        }
        if let Some(v) = &kv.value
            && !value_ok(v)
        {
            check_value(&format!("{field}[{:?}]", kv.key), v)?;
        }
    }
    Ok(())
}

fn check_value(field: &str, value: &AnyValue) -> Result<(), Invalid> {
    match &value.value {
        Some(Value::StringValueStrindex(i)) => {
            Err(Invalid(format!("{field}: string_value_strindex {i} is allowed only in profiles")))
        }
        Some(Value::ArrayValue(a)) => a.values.iter().try_for_each(|v| check_value(field, v)),
        Some(Value::KvlistValue(l)) => check_attributes(field, &l.values),
        _ => Ok(()),
    }
}

fn attributes_ok(attributes: &[KeyValue]) -> bool {
    attributes.iter().all(|kv| kv.key_strindex == 0 && kv.value.as_ref().is_none_or(value_ok))
}

fn value_ok(value: &AnyValue) -> bool {
    match &value.value {
        Some(Value::StringValueStrindex(_)) => false,
        Some(Value::ArrayValue(a)) => a.values.iter().all(value_ok),
        Some(Value::KvlistValue(l)) => attributes_ok(&l.values),
        _ => true,
    }
}

/// The running state of one batch: chain position, counters, output.
struct Batch<'p> {
    policy: &'p Policy,
    chain_id: String,
    seq: u64,
    prev: Hash,
    received_at: String,
    stats: Stats,
    records: Vec<Vec<u8>>,
    leaves: Vec<Hash>,
    scratch: Vec<u8>,
}

/// The chain position and hashes of one record, for its downstream copy.
struct Link {
    seq: u64,
    prev: Hash,
    leaf: Hash,
    mac: Option<Hash>,
}

impl<'p> Batch<'p> {
    fn new(policy: &'p Policy, ctx: &Context) -> Result<Self, ProcessError> {
        let received_at = enrich::rfc3339_nanos(ctx.received_at_unix_nano).map_err(|e| {
            ProcessError::InvalidContext(format!("received-at-unix-nano {}: {e}", ctx.received_at_unix_nano))
        })?;
        if ctx.head.chain_id.is_empty() {
            return Err(ProcessError::InvalidContext("chain id is empty".into()));
        }
        Ok(Batch {
            policy,
            chain_id: ctx.head.chain_id.clone(),
            seq: ctx.head.seq,
            prev: ctx.head.prev,
            received_at,
            stats: Stats { rule_hits: vec![0; policy.rules.len()], ..Stats::default() },
            records: Vec::new(),
            leaves: Vec::new(),
            scratch: Vec::with_capacity(2048),
        })
    }

    fn enrich(&mut self, attributes: &mut Vec<KeyValue>) {
        if enrich::stamp(self.policy, &self.received_at, attributes, &mut self.stats.rule_hits) {
            self.stats.violations += 1;
        }
    }

    /// Writes the canonical record, hashes it, links it and returns its
    /// position for the downstream copy.
    fn chain(&mut self, resource: &[u8], scope: &[u8], body: Body) -> Link {
        let key = self.policy.key.as_ref();
        let pos =
            Position { chain_id: &self.chain_id, seq: self.seq, prev: &self.prev, key_id: key.map(|k| k.id.as_str()) };
        let mac_at = record::write(&mut self.scratch, &pos, &self.received_at, resource, scope, body);
        let leaf = chain::leaf_hash(&self.scratch);
        let mac = key.map(|k| chain::record_mac(&k.secret, &leaf));
        let stored = match &mac {
            Some(mac) => {
                let member = record::mac_member(mac);
                let mut stored = Vec::with_capacity(self.scratch.len() + member.len());
                stored.extend_from_slice(&self.scratch[..mac_at]);
                stored.extend_from_slice(&member);
                stored.extend_from_slice(&self.scratch[mac_at..]);
                stored
            }
            // Hand the written buffer over instead of copying it; the next
            // record gets a fresh one of the same size.
            None => {
                let fresh = Vec::with_capacity(self.scratch.capacity());
                std::mem::replace(&mut self.scratch, fresh)
            }
        };
        self.records.push(stored);
        self.leaves.push(leaf);
        let link = Link { seq: self.seq, prev: self.prev, leaf, mac };
        self.seq += 1;
        self.prev = leaf;
        self.stats.kept += 1;
        link
    }

    /// Adds the chain attributes to a kept record's downstream copy. They
    /// are not part of the canonical record: they describe it. (Any value a
    /// client sent under these keys was removed by [`enrich::stamp`].)
    fn annotate(&self, link: &Link, attributes: &mut Vec<KeyValue>) {
        let mut add = |key: &str, value: Value| enrich::push(attributes, key, value);
        add(enrich::SEQUENCE_STREAM_ID, Value::StringValue(self.chain_id.clone()));
        add(enrich::SEQUENCE_NUMBER, Value::IntValue(link.seq as i64));
        add(enrich::SEQUENCE_PREV_HASH, Value::StringValue(chain::to_hex(&link.prev)));
        add(enrich::INTEGRITY_VALUE, Value::StringValue(chain::to_hex(&link.leaf)));
        add(enrich::INTEGRITY_ALGORITHM, Value::StringValue(chain::LEAF_ALGORITHM.into()));
        if let (Some(mac), Some(key)) = (link.mac, &self.policy.key) {
            add(enrich::INTEGRITY_MAC, Value::StringValue(chain::to_hex(&mac)));
            add(enrich::INTEGRITY_KEY_ID, Value::StringValue(key.id.clone()));
        }
    }

    fn finish(self, otlp: Vec<u8>) -> Output {
        Output {
            otlp,
            records: self.records,
            leaves: self.leaves,
            head: ChainHead { chain_id: self.chain_id, seq: self.seq, prev: self.prev },
            stats: self.stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ChainHead;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    const POLICY: &str = "filter:\n  spans:\n    include:\n      match_type: regexp\n      attributes: [{key: audit.action, value: '.*'}]\naudit:\n  pipeline: p\n";

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
            key_strindex: 0,
        }
    }

    fn request(spans: Vec<Vec<Span>>) -> Vec<u8> {
        let resource_spans = spans
            .into_iter()
            .map(|spans| ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }.encode_to_vec()
    }

    fn ctx() -> Context {
        Context { received_at_unix_nano: 1, head: ChainHead::genesis("c") }
    }

    fn audit_span(action: &str) -> Span {
        Span {
            name: action.into(),
            span_id: vec![1; 8],
            attributes: vec![kv("audit.action", action)],
            ..Span::default()
        }
    }

    #[test]
    fn keeps_chains_and_drops_empty_containers() {
        let policy = Policy::parse(POLICY, &[]).unwrap();
        let plain = Span { name: "GET /".into(), ..Span::default() };
        let req = request(vec![vec![plain.clone()], vec![audit_span("login"), plain, audit_span("logout")]]);
        let out = traces(&policy, &req, &ctx()).unwrap();
        assert_eq!((out.stats.received, out.stats.kept, out.stats.dropped), (4, 2, 2));
        assert_eq!(out.records.len(), 2);
        assert_eq!(out.leaves[0], chain::leaf_hash(&out.records[0]));
        assert_eq!(out.head, ChainHead { chain_id: "c".into(), seq: 2, prev: out.leaves[1] });
        let second = String::from_utf8(out.records[1].clone()).unwrap();
        assert!(
            second.starts_with(&format!(
                "{{\"chain\":{{\"id\":\"c\",\"prev\":\"{}\",\"seq\":\"1\"}}",
                hex::encode(out.leaves[0])
            )),
            "{second}"
        );
        let kept = ExportTraceServiceRequest::decode(out.otlp.as_slice()).unwrap();
        assert_eq!(kept.resource_spans.len(), 1, "the resource with no kept span is removed");
        let spans = &kept.resource_spans[0].scope_spans[0].spans;
        let number = spans[1].attributes.iter().find(|kv| kv.key == enrich::SEQUENCE_NUMBER).unwrap();
        assert_eq!(number.value, Some(AnyValue { value: Some(Value::IntValue(1)) }));
    }

    #[test]
    fn records_are_their_own_jcs_form() {
        let policy = Policy::parse(POLICY, &[]).unwrap();
        let mut span = audit_span("login");
        span.attributes.push(kv("é", "\u{1}\"\\"));
        span.attributes.push(kv("😀", "x"));
        span.attributes.push(kv("\u{fb33}", "y"));
        span.attributes.push(KeyValue {
            key: "d".into(),
            value: Some(AnyValue { value: Some(Value::DoubleValue(1e21)) }),
            key_strindex: 0,
        });
        let out = traces(&policy, &request(vec![vec![span]]), &ctx()).unwrap();
        let record = &out.records[0];
        let parsed: serde_json::Value = serde_json::from_slice(record).unwrap();
        let canonical = serde_json_canonicalizer::to_vec(&parsed).unwrap();
        assert_eq!(String::from_utf8_lossy(&canonical), String::from_utf8_lossy(record));
    }

    #[test]
    fn keyed_chain_inserts_the_mac_outside_the_leaf() {
        let policy =
            Policy::parse(&format!("{POLICY}  chain: {{key_id: k1}}\n"), &[("k1".into(), b"key".to_vec())]).unwrap();
        let out = traces(&policy, &request(vec![vec![audit_span("a")]]), &ctx()).unwrap();
        let mut record: serde_json::Value = serde_json::from_slice(&out.records[0]).unwrap();
        let mac = record.as_object_mut().unwrap().remove("mac").unwrap();
        let body = serde_json_canonicalizer::to_vec(&record).unwrap();
        let leaf = chain::leaf_hash(&body);
        assert_eq!(leaf, out.leaves[0]);
        assert_eq!(mac.as_str().unwrap(), hex::encode(chain::record_mac(b"key", &leaf)));
        assert_eq!(record["chain"]["key_id"], "k1");
    }

    #[test]
    fn client_values_under_processor_keys_never_reach_the_record() {
        let policy = Policy::parse(POLICY, &[]).unwrap();
        let mut span = audit_span("login");
        for key in [enrich::INTEGRITY_VALUE, enrich::SEQUENCE_NUMBER, enrich::POLICY_DIGEST, enrich::PIPELINE] {
            span.attributes.push(kv(key, "spoofed"));
        }
        let out = traces(&policy, &request(vec![vec![span]]), &ctx()).unwrap();
        let record = String::from_utf8(out.records[0].clone()).unwrap();
        assert!(!record.contains("spoofed") && !record.contains(enrich::INTEGRITY_VALUE), "{record}");
        let kept = ExportTraceServiceRequest::decode(out.otlp.as_slice()).unwrap();
        let attrs = &kept.resource_spans[0].scope_spans[0].spans[0].attributes;
        for key in [enrich::INTEGRITY_VALUE, enrich::SEQUENCE_NUMBER, enrich::POLICY_DIGEST, enrich::PIPELINE] {
            let values: Vec<_> = attrs.iter().filter(|a| a.key == key).collect();
            assert_eq!(values.len(), 1, "{key} once");
            assert_ne!(values[0].value, Some(AnyValue { value: Some(Value::StringValue("spoofed".into())) }), "{key}");
        }
    }

    /// Regressions from review: each of these once leaked into a record.
    #[test]
    fn reviewed_leaks_stay_closed() {
        // A client's audit.pipeline is dropped even when the policy sets none.
        let no_pipeline = Policy::parse("audit:\n  require: [enduser.id]\n", &[]).unwrap();
        let mut span = audit_span("a");
        span.attributes.push(kv(enrich::PIPELINE, "spoofed"));
        let out = traces(&no_pipeline, &request(vec![vec![span]]), &ctx()).unwrap();
        assert!(!String::from_utf8_lossy(&out.records[0]).contains("spoofed"));

        // An attributes exclude about services does not match log records,
        // so the action still runs on them.
        let policy = Policy::parse(
            "attributes:\n  exclude: {match_type: strict, services: [other]}\n  actions: [{key: password, action: delete}]\n",
            &[],
        )
        .unwrap();
        let log = LogRecord { attributes: vec![kv("password", "hunter2")], ..LogRecord::default() };
        let req = ExportLogsServiceRequest {
            resource_logs: vec![opentelemetry_proto::tonic::logs::v1::ResourceLogs {
                scope_logs: vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
                    log_records: vec![log],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let out = logs(&policy, &req.encode_to_vec(), &ctx()).unwrap();
        assert!(!String::from_utf8_lossy(&out.records[0]).contains("hunter2"));

        // redaction.* keys get no pass through allowed_keys.
        let redacting = Policy::parse("redaction:\n  allowed_keys: [audit.action]\n", &[]).unwrap();
        let mut span = audit_span("a");
        span.attributes.push(kv("redaction.ssn", "123-45-6789"));
        let out = traces(&redacting, &request(vec![vec![span]]), &ctx()).unwrap();
        assert!(!String::from_utf8_lossy(&out.records[0]).contains("123-45-6789"));

        // String-table references in resource attributes are refused.
        let mut req = ExportTraceServiceRequest::decode(request(vec![vec![audit_span("a")]]).as_slice()).unwrap();
        req.resource_spans[0].resource = Some(Resource {
            attributes: vec![KeyValue { key: "k".into(), value: None, key_strindex: 7 }],
            ..Resource::default()
        });
        let err = traces(&no_pipeline, &req.encode_to_vec(), &ctx()).unwrap_err();
        assert_eq!(
            err,
            ProcessError::Decode(
                "resource_spans[0].resource: attributes: key_strindex 7 is allowed only in profiles".into()
            )
        );

        // Sequence numbers stop at 2^63 - 1 (audit.sequence.number is an int64).
        let edge = Context {
            received_at_unix_nano: 1,
            head: ChainHead { chain_id: "c".into(), seq: (1 << 63) - 1, prev: [0; 32] },
        };
        assert!(traces(&no_pipeline, &request(vec![vec![audit_span("a")]]), &edge).is_ok());
        let past = Context { head: ChainHead { seq: 1 << 63, ..edge.head.clone() }, ..edge };
        assert!(matches!(
            traces(&no_pipeline, &request(vec![vec![audit_span("a")]]), &past),
            Err(ProcessError::InvalidContext(_))
        ));
    }

    #[test]
    fn invalid_input_is_refused_whole() {
        let policy = Policy::parse(POLICY, &[]).unwrap();
        let mut bad = audit_span("b");
        bad.trace_id = vec![1; 12];
        let err = traces(&policy, &request(vec![vec![audit_span("a"), bad]]), &ctx()).unwrap_err();
        assert_eq!(
            err,
            ProcessError::Decode("resource_spans[0].scope_spans[0].spans[1]: trace_id must be 16 bytes (32 hex digits) or empty, got 12 bytes".into())
        );
        let truncated = &request(vec![vec![audit_span("a")]])[..10];
        assert!(
            matches!(traces(&policy, truncated, &ctx()), Err(ProcessError::Decode(m)) if m.starts_with("ExportTraceServiceRequest: "))
        );
        let empty_chain = Context { received_at_unix_nano: 1, head: ChainHead::genesis("") };
        assert!(matches!(traces(&policy, &[], &empty_chain), Err(ProcessError::InvalidContext(_))));
    }
}
