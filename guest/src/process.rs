//! One batch through the stages: decode -> filter -> attributes -> transform
//! -> redaction -> enrich -> canonical record -> chain -> encode, in the
//! Collector's processor order: the filter and the attributes actions see
//! the records as received, the transform's resource and scope statements
//! run once per resource and scope, and the resource is redacted once,
//! before its records are written. The host's own events (`chain-events`)
//! skip filter, attributes, transform, redaction and `audit.require`.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::api::{ChainHead, Context, Output, ProcessError, Stats};
use audit_format::hash::{self as chain, Hash};

use crate::enrich::Stamp;
use crate::policy::Policy;
use crate::prefilter::{self, Assemble};
use crate::record::{self, Added, Body, Position, Shared};

mod otlp;
use otlp::Annotations;

/// Which stages a batch's records go through. Decoding, validation,
/// enrichment and chaining are the same for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stages {
    /// The policy's filter, attributes and redaction, and the `audit.require`
    /// check: what `process-traces` and `process-logs` do.
    Policy,
    /// None of them: every record is kept as it is and only enriched and
    /// chained. For the host's own events (`chain-events`), which no policy
    /// may drop or alter.
    EventsOnly,
}

/// What an output carries besides the records, their leaves and the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies {
    /// The kept records' OTLP copy, annotated with their chain position,
    /// for forwarding downstream.
    Otlp,
    /// Nothing: `Output::otlp` is empty (no downstream to forward to).
    None,
}

/// Runs an export request of `signal` through `stages`.
pub fn batch(
    signal: crate::Signal,
    stages: Stages,
    copies: Copies,
    policy: &Policy,
    request: &[u8],
    ctx: &Context,
) -> Result<Output, ProcessError> {
    match signal {
        crate::Signal::Traces => run::<ExportTraceServiceRequest>(stages, copies, policy, request, ctx),
        crate::Signal::Logs => run::<ExportLogsServiceRequest>(stages, copies, policy, request, ctx),
    }
}

/// Processes an `ExportTraceServiceRequest`.
pub fn traces(policy: &Policy, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
    batch(crate::Signal::Traces, Stages::Policy, Copies::Otlp, policy, request, ctx)
}

/// Processes an `ExportLogsServiceRequest`.
pub fn logs(policy: &Policy, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
    batch(crate::Signal::Logs, Stages::Policy, Copies::Otlp, policy, request, ctx)
}

/// Chains the host's own events carried by an `ExportTraceServiceRequest`:
/// every span is kept as it is, then enriched and chained.
pub fn trace_events(policy: &Policy, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
    batch(crate::Signal::Traces, Stages::EventsOnly, Copies::Otlp, policy, request, ctx)
}

/// Chains the host's own events carried by an `ExportLogsServiceRequest`:
/// every log record is kept as it is, then enriched and chained.
pub fn log_events(policy: &Policy, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
    batch(crate::Signal::Logs, Stages::EventsOnly, Copies::Otlp, policy, request, ctx)
}

/// One walk for both signals: decode, check every record before any is
/// processed (a refused batch leaves no partial output), then each record
/// through the stages in order; empty scopes and resources are dropped.
fn run<R: Request + Assemble>(
    stages: Stages,
    copies: Copies,
    policy: &Policy,
    request: &[u8],
    ctx: &Context,
) -> Result<Output, ProcessError> {
    // SAFETY: what was decoded for an earlier request was dropped by the
    // end of its run: the output holds only what the stages wrote anew.
    unsafe { crate::start_request() };
    // The records the filter drops are recognised without being decoded
    // when it can tell from a scan (crate::prefilter).
    let prefiltered = match stages {
        Stages::Policy => prefilter::decode::<R>(request, &policy.filter, policy.rules.len()),
        Stages::EventsOnly => None,
    };
    let (mut req, dropped) = match prefiltered {
        Some(p) => (p.request, Some((p.dropped, p.hits))),
        None => (crate::in_request_region(|| R::decode(request)).map_err(|e| decode_error(R::NAME, e))?, None),
    };
    let mut batch = Batch::new(stages, policy, ctx)?;
    let mut count = req.validate().map_err(ProcessError::Decode)?;
    if let Some((dropped, hits)) = dropped {
        count += dropped;
        batch.stats.received += dropped;
        batch.stats.dropped += dropped;
        batch.stats.rule_hits.iter_mut().zip(hits).for_each(|(total, h)| *total += h);
    }
    check_room(ctx, count)?;
    let traces = R::NAME == ExportTraceServiceRequest::NAME;
    let hits = &mut batch.stats.rule_hits;
    for (r, resource) in req.resources_mut().iter_mut().enumerate() {
        let (resource, _, scopes) = R::resource_mut(resource);
        if stages == Stages::Policy {
            let at = |s: usize, i: usize, e: String| {
                ProcessError::Policy(format!("{e} (resource {r}, scope {s}, record {i})"))
            };
            // filter, then attributes: they see the records as received.
            for (s, scope) in scopes.iter_mut().enumerate() {
                let (scope, _, items) = R::scope_mut(scope);
                let scope = scope.as_ref();
                let mut i = 0;
                let mut failure = None;
                items.retain_mut(|item| {
                    i += 1;
                    batch.stats.received += 1;
                    if failure.is_some() {
                        return true;
                    }
                    match item.keep(policy, resource.as_ref(), scope, hits) {
                        Ok(true) => {
                            item.apply_attributes(policy, resource.as_ref(), scope, ctx.sender.as_ref(), hits);
                            true
                        }
                        Ok(false) => {
                            batch.stats.dropped += 1;
                            false
                        }
                        Err(e) => {
                            failure = Some(at(s, i - 1, e));
                            true
                        }
                    }
                });
                if let Some(e) = failure {
                    return Err(e);
                }
            }
            // transform: resource and scope groups once each, then the
            // records' groups; then redaction.
            let transform = &policy.transform;
            transform
                .resource(traces, resource, hits)
                .map_err(|e| ProcessError::Policy(format!("{e} (resource {r})")))?;
            for (s, scope) in scopes.iter_mut().enumerate() {
                let (scope, _, items) = R::scope_mut(scope);
                transform
                    .scope(traces, resource.as_ref(), scope, hits)
                    .map_err(|e| ProcessError::Policy(format!("{e} (resource {r}, scope {s})")))?;
                for (i, item) in items.iter_mut().enumerate() {
                    item.transform(policy, resource.as_ref(), scope.as_ref(), hits).map_err(|e| at(s, i, e))?;
                    batch.stats.redacted += item.redact(policy, hits);
                }
                batch.stats.redacted += scope.as_mut().map_or(0, |s| policy.redaction.redact_scope(s, hits));
            }
            batch.stats.redacted += resource.as_mut().map_or(0, |r| policy.redaction.redact_resource(r, hits));
        }
    }
    let mut annotations = (copies == Copies::Otlp).then(|| {
        let key_id = policy.key.as_ref().map(|k| k.id.as_str());
        Annotations::new(<R as Request>::Item::ATTRIBUTES, batch.stamp.common(), &batch.chain_id, key_id)
    });
    req.resources_mut().retain_mut(|resource| {
        let (resource, schema_url, scopes) = R::resource_mut(resource);
        let resource_member = record::resource_member(resource.as_ref(), schema_url);
        scopes.retain_mut(|scope| {
            let (scope, schema_url, items) = R::scope_mut(scope);
            let scope_member = record::scope_member(scope.as_ref(), schema_url);
            for item in items.iter_mut() {
                if stages == Stages::EventsOnly {
                    batch.stats.received += 1;
                }
                let missing = batch.prepare(item.attributes_mut());
                let link = batch.chain(&resource_member, &scope_member, item.body(), missing.as_ref());
                if let Some(annotations) = &mut annotations {
                    batch.annotate(&link, missing.as_ref(), annotations);
                }
            }
            !items.is_empty()
        });
        !scopes.is_empty()
    });
    let otlp = annotations.map_or_else(Vec::new, |annotations| otlp::encode(&mut req, &annotations));
    Ok(batch.finish(otlp))
}

/// A signal's export request as the walk sees it: resources holding scopes
/// holding items, each level with its schema URL.
trait Request: Message + Default {
    /// The message name, for decode errors.
    const NAME: &'static str;
    type Resource;
    type Scope;
    type Item: Item + Message;

    /// Checks every record ([`audit_format::validity`]); how many there are.
    fn validate(&self) -> Result<u64, String>;
    fn resources_mut(&mut self) -> &mut Vec<Self::Resource>;
    fn resource_mut(r: &mut Self::Resource) -> (&mut Option<Resource>, &str, &mut Vec<Self::Scope>);
    fn scope_mut(s: &mut Self::Scope) -> (&mut Option<InstrumentationScope>, &str, &mut Vec<Self::Item>);
}

/// A span or a log record: what each policy stage does to it.
trait Item {
    /// The tag of the record's `attributes` field.
    const ATTRIBUTES: u32;
    /// The filter: whether the record is kept (a span's dropped events are
    /// removed); an error when a condition failed under `propagate`.
    fn keep(
        &mut self,
        policy: &Policy,
        r: Option<&Resource>,
        s: Option<&InstrumentationScope>,
        hits: &mut [u64],
    ) -> Result<bool, String>;
    /// The attributes actions (`sender` for `from_context`).
    fn apply_attributes(
        &mut self,
        policy: &Policy,
        r: Option<&Resource>,
        s: Option<&InstrumentationScope>,
        sender: Option<&audit_format::Sender>,
        hits: &mut [u64],
    );
    /// The transform statements of the record's contexts.
    fn transform(
        &mut self,
        policy: &Policy,
        r: Option<&Resource>,
        s: Option<&InstrumentationScope>,
        hits: &mut [u64],
    ) -> Result<(), String>;
    /// Redaction; returns the values redacted.
    fn redact(&mut self, policy: &Policy, hits: &mut [u64]) -> u64;
    fn attributes_mut(&mut self) -> &mut Vec<KeyValue>;
    fn body(&self) -> Body<'_>;
}

impl Request for ExportTraceServiceRequest {
    const NAME: &'static str = "ExportTraceServiceRequest";
    type Resource = ResourceSpans;
    type Scope = ScopeSpans;
    type Item = Span;

    fn validate(&self) -> Result<u64, String> {
        audit_format::validity::traces(self)
    }
    fn resources_mut(&mut self) -> &mut Vec<ResourceSpans> {
        &mut self.resource_spans
    }
    fn resource_mut(r: &mut ResourceSpans) -> (&mut Option<Resource>, &str, &mut Vec<ScopeSpans>) {
        (&mut r.resource, &r.schema_url, &mut r.scope_spans)
    }
    fn scope_mut(s: &mut ScopeSpans) -> (&mut Option<InstrumentationScope>, &str, &mut Vec<Span>) {
        (&mut s.scope, &s.schema_url, &mut s.spans)
    }
}

impl Request for ExportLogsServiceRequest {
    const NAME: &'static str = "ExportLogsServiceRequest";
    type Resource = ResourceLogs;
    type Scope = ScopeLogs;
    type Item = LogRecord;

    fn validate(&self) -> Result<u64, String> {
        audit_format::validity::logs(self)
    }
    fn resources_mut(&mut self) -> &mut Vec<ResourceLogs> {
        &mut self.resource_logs
    }
    fn resource_mut(r: &mut ResourceLogs) -> (&mut Option<Resource>, &str, &mut Vec<ScopeLogs>) {
        (&mut r.resource, &r.schema_url, &mut r.scope_logs)
    }
    fn scope_mut(s: &mut ScopeLogs) -> (&mut Option<InstrumentationScope>, &str, &mut Vec<LogRecord>) {
        (&mut s.scope, &s.schema_url, &mut s.log_records)
    }
}

impl Item for Span {
    const ATTRIBUTES: u32 = 9;
    fn keep(
        &mut self,
        policy: &Policy,
        r: Option<&Resource>,
        s: Option<&InstrumentationScope>,
        hits: &mut [u64],
    ) -> Result<bool, String> {
        policy.filter.keep_span(r, s, self, hits)
    }
    fn apply_attributes(
        &mut self,
        policy: &Policy,
        r: Option<&Resource>,
        s: Option<&InstrumentationScope>,
        sender: Option<&audit_format::Sender>,
        hits: &mut [u64],
    ) {
        policy.attributes.apply_span(r, s, self, sender, hits);
    }
    fn transform(
        &mut self,
        policy: &Policy,
        r: Option<&Resource>,
        s: Option<&InstrumentationScope>,
        hits: &mut [u64],
    ) -> Result<(), String> {
        policy.transform.span(r, s, self, hits)
    }
    fn redact(&mut self, policy: &Policy, hits: &mut [u64]) -> u64 {
        policy.redaction.redact_span(self, hits)
    }
    fn attributes_mut(&mut self) -> &mut Vec<KeyValue> {
        &mut self.attributes
    }
    fn body(&self) -> Body<'_> {
        Body::Span(self)
    }
}

impl Item for LogRecord {
    const ATTRIBUTES: u32 = 6;
    fn keep(
        &mut self,
        policy: &Policy,
        r: Option<&Resource>,
        s: Option<&InstrumentationScope>,
        hits: &mut [u64],
    ) -> Result<bool, String> {
        policy.filter.keep_log(r, s, self, hits)
    }
    fn apply_attributes(
        &mut self,
        policy: &Policy,
        r: Option<&Resource>,
        s: Option<&InstrumentationScope>,
        sender: Option<&audit_format::Sender>,
        hits: &mut [u64],
    ) {
        policy.attributes.apply_log(r, s, self, sender, hits);
    }
    fn transform(
        &mut self,
        policy: &Policy,
        r: Option<&Resource>,
        s: Option<&InstrumentationScope>,
        hits: &mut [u64],
    ) -> Result<(), String> {
        policy.transform.log(r, s, self, hits)
    }
    fn redact(&mut self, policy: &Policy, hits: &mut [u64]) -> u64 {
        policy.redaction.redact_log(self, hits)
    }
    fn attributes_mut(&mut self) -> &mut Vec<KeyValue> {
        &mut self.attributes
    }
    fn body(&self) -> Body<'_> {
        Body::Log(self)
    }
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

/// The running state of one batch: chain position, counters, output.
struct Batch<'p> {
    policy: &'p Policy,
    /// What enrichment adds to each kept record.
    stamp: Stamp<'p>,
    chain_id: String,
    seq: u64,
    prev: Hash,
    received_at: String,
    /// The pre-rendered `sender` member; empty when the batch has no sender.
    sender: Vec<u8>,
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
            stamp: Stamp::new(policy, &received_at, stages == Stages::Policy),
            chain_id: ctx.head.chain_id.clone(),
            seq: ctx.head.seq,
            prev: ctx.head.prev,
            received_at,
            sender: ctx.sender.as_ref().map(record::sender_member).unwrap_or_default(),
            stats: Stats { rule_hits: vec![0; policy.rules.len()], ..Stats::default() },
            records: Vec::new(),
            leaves: Vec::new(),
            scratch: Vec::with_capacity(2048),
        })
    }

    /// Prepares a kept record for enrichment ([`Stamp::prepare`]) and
    /// counts a broken `audit.require`.
    fn prepare(&mut self, attributes: &mut Vec<KeyValue>) -> Option<KeyValue> {
        let missing = self.stamp.prepare(attributes, &mut self.stats.rule_hits);
        self.stats.violations += u64::from(missing.is_some());
        missing
    }

    /// Writes the canonical record (the body's attributes joined by the
    /// enrichment's and `missing`), hashes it, links it and returns its
    /// position for the downstream copy.
    fn chain(&mut self, resource: &[u8], scope: &[u8], body: Body, missing: Option<&KeyValue>) -> Link {
        let added = Added { first: missing, rest: self.stamp.common() };
        let shared = Shared { received_at: &self.received_at, resource, scope, sender: &self.sender };
        let key = self.policy.key.as_ref();
        let pos =
            Position { chain_id: &self.chain_id, seq: self.seq, prev: &self.prev, key_id: key.map(|k| k.id.as_str()) };
        let mac_at = record::write(&mut self.scratch, &pos, &shared, body, added);
        let leaf = crate::leaf_hash(&self.scratch);
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

    /// Annotates a kept record's downstream copy: the enrichment's
    /// attributes (`missing`, then the batch's), then the chain attributes,
    /// which are not part of the canonical record: they describe it. (Any
    /// value a client sent under these keys was removed by
    /// [`Stamp::prepare`].)
    fn annotate(&self, link: &Link, missing: Option<&KeyValue>, annotations: &mut Annotations) {
        annotations.record(missing, link.seq, &link.prev, &link.leaf, link.mac.as_ref());
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
