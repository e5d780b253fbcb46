//! One batch through the stages: decode -> filter -> attributes -> redaction
//! -> enrich -> canonical record -> chain -> encode. The host's own events
//! (`chain-events`) skip filter, attributes, redaction and `audit.require`.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::api::{ChainHead, Context, Output, ProcessError, Stats};
use audit_format::hash::{self as chain, Hash};
use audit_format::keys;

use crate::enrich;
use crate::policy::Policy;
use crate::record::{self, Body, Position};

/// Which stages a batch's records go through. Decoding, validation,
/// enrichment and chaining are the same for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stages {
    /// The policy's filter, attributes and redaction, and the `audit.require`
    /// check: what `process-traces` and `process-logs` do.
    Policy,
    /// None of them: every record is kept as it is and only enriched and
    /// chained. For the host's own events (`chain-events`), which no policy
    /// may drop or alter.
    EventsOnly,
}

/// Processes an `ExportTraceServiceRequest`.
pub fn traces(policy: &Policy, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
    traces_through(Stages::Policy, policy, request, ctx)
}

/// Processes an `ExportLogsServiceRequest`.
pub fn logs(policy: &Policy, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
    logs_through(Stages::Policy, policy, request, ctx)
}

/// Chains the host's own events carried by an `ExportTraceServiceRequest`:
/// every span is kept as it is, then enriched and chained.
pub fn trace_events(policy: &Policy, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
    traces_through(Stages::EventsOnly, policy, request, ctx)
}

/// Chains the host's own events carried by an `ExportLogsServiceRequest`:
/// every log record is kept as it is, then enriched and chained.
pub fn log_events(policy: &Policy, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
    logs_through(Stages::EventsOnly, policy, request, ctx)
}

/// Runs an `ExportTraceServiceRequest` through `stages`.
fn traces_through(stages: Stages, policy: &Policy, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
    let mut req =
        ExportTraceServiceRequest::decode(request).map_err(|e| decode_error("ExportTraceServiceRequest", e))?;
    let mut batch = Batch::new(stages, policy, ctx)?;
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
                if stages == Stages::Policy {
                    if !policy.filter.keep_span(resource, scope, span, &mut batch.stats.rule_hits) {
                        batch.stats.dropped += 1;
                        return false;
                    }
                    policy.attributes.apply_span(resource, scope, span, &mut batch.stats.rule_hits);
                    batch.stats.redacted += policy.redaction.redact_span(span, &mut batch.stats.rule_hits);
                }
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

/// Runs an `ExportLogsServiceRequest` through `stages`.
fn logs_through(stages: Stages, policy: &Policy, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
    let mut req = ExportLogsServiceRequest::decode(request).map_err(|e| decode_error("ExportLogsServiceRequest", e))?;
    let mut batch = Batch::new(stages, policy, ctx)?;
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
                if stages == Stages::Policy {
                    if !policy.filter.keep_log(resource, scope, log, &mut batch.stats.rule_hits) {
                        batch.stats.dropped += 1;
                        return false;
                    }
                    policy.attributes.apply_log(resource, scope, log, &mut batch.stats.rule_hits);
                    batch.stats.redacted += policy.redaction.redact_log(log, &mut batch.stats.rule_hits);
                }
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
    /// Whether enrichment checks `audit.require` (not for the host's events).
    check_require: bool,
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
    fn new(stages: Stages, policy: &'p Policy, ctx: &Context) -> Result<Self, ProcessError> {
        let received_at = audit_format::rfc3339_nanos(ctx.received_at_unix_nano);
        if ctx.head.chain_id.is_empty() {
            return Err(ProcessError::InvalidContext("chain id is empty".into()));
        }
        Ok(Batch {
            policy,
            check_require: stages == Stages::Policy,
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
        if enrich::stamp(self.policy, &self.received_at, self.check_require, attributes, &mut self.stats.rule_hits) {
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
        let mut add = |key: &str, value: Value| crate::kv::push(attributes, key, value);
        add(keys::SEQUENCE_STREAM_ID, Value::StringValue(self.chain_id.clone()));
        add(keys::SEQUENCE_NUMBER, Value::IntValue(link.seq as i64));
        add(keys::SEQUENCE_PREV_HASH, Value::StringValue(chain::to_hex(&link.prev)));
        add(keys::INTEGRITY_VALUE, Value::StringValue(chain::to_hex(&link.leaf)));
        add(keys::INTEGRITY_ALGORITHM, Value::StringValue(chain::LEAF_ALGORITHM.into()));
        if let (Some(mac), Some(key)) = (link.mac, &self.policy.key) {
            add(keys::INTEGRITY_MAC, Value::StringValue(chain::to_hex(&mac)));
            add(keys::INTEGRITY_KEY_ID, Value::StringValue(key.id.clone()));
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
mod tests;
