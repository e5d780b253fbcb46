//! The filter before decoding: records the `filter:` section drops are
//! recognised from a scan of their protobuf bytes and never decoded.
//!
//! Behind an upstream Collector, or with a typical audit mix, most records
//! of a batch are dropped; decoding each (a `String` per attribute key and
//! value) only to throw it away was most of their cost. Whether a record
//! passes the include/exclude blocks depends only on its resource and
//! scope, which are decoded as usual, and on a few of its own fields: the
//! attributes the blocks name, the span name and kind, the log body and
//! severity; so does an OTTL condition that reads no more than these
//! (`attributes["k"]` with a literal key, `name`, `kind`, `body`,
//! `severity_*`, anything of the resource or scope). The scan checks
//! each record's bytes as thoroughly as decoding and
//! [`audit_format::validity`] would, builds a slim record of just those
//! fields and asks the same filter code; a record it drops is counted (the
//! rule hits included) exactly as the full walk would count it, and a
//! record it keeps is decoded whole.
//!
//! A kept record is decoded twice over (its few fields, then whole), so
//! after a run of kept records, as in an all-audit stream, the scan mostly
//! stands aside (see [`Pace`]).
//!
//! Anything the scan does not take as certainly valid (a malformed field, an
//! id of a wrong length, a profiles-only string-table reference, a group,
//! deep nesting) abandons it for the whole request: the request is decoded
//! as before, so its errors and results are the full walk's, byte for byte.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

use crate::filter::{Filter, IncludeExclude, Matcher, OttlConditions};
use crate::ottl::Context;
use crate::ottl::context::{Field, LogField, SpanField};
use crate::wire::Reader;
use head::span_head;

/// A request decoded with only the records the filter may keep, and what
/// the scan dropped.
pub(crate) struct Prefiltered<R> {
    /// The request; its records are decoded whole.
    pub request: R,
    /// Records dropped without being decoded.
    pub dropped: u64,
    /// The rule hits of those drops, indexed like the policy's rules.
    pub hits: Vec<u64>,
}

/// Decodes `request` with the records the filter drops left out, when the
/// filter of this signal can be decided from a scan; `None` when it cannot
/// or the scan met anything it does not take as certainly valid (then the
/// caller decodes the request whole).
pub(crate) fn decode<R: Assemble>(request: &[u8], filter: &Filter, rules: usize) -> Option<Prefiltered<R>> {
    let wants = Wants::of(R::blocks(filter), R::conditions(filter))?;
    let mut out = Prefiltered { request: R::default(), dropped: 0, hits: vec![0; rules] };
    let mut scratch = vec![0; rules];
    let mut pace = Pace { kept_in_a_row: 0, dropped_in_scope: false, unscanned: 0 };
    let mut top = Reader::new(request);
    while let Some((tag, wire)) = top.key()? {
        if tag != 1 {
            top.skip(wire)?;
            continue;
        }
        let mut r = Reader::new(top.len_delimited(wire)?);
        let mut resource: Option<Resource> = None;
        let mut schema_url = String::new();
        let mut scopes = Vec::new();
        while let Some((tag, wire)) = r.key()? {
            match tag {
                1 if resource.is_none() => {
                    let bytes = r.len_delimited(wire)?;
                    check(bytes, Part::Resource, 0)?;
                    resource = Some(Resource::decode(bytes).ok()?);
                }
                2 => scopes.push(r.len_delimited(wire)?),
                3 => schema_url = r.string(wire)?.to_owned(),
                1 => return None,
                _ => r.skip(wire)?,
            }
        }
        out.request.push_resource(resource.clone(), schema_url);
        for bytes in scopes {
            let mut s = Reader::new(bytes);
            let mut scope: Option<InstrumentationScope> = None;
            let mut schema_url = String::new();
            let mut items = Vec::new();
            while let Some((tag, wire)) = s.key()? {
                match tag {
                    1 if scope.is_none() => {
                        let bytes = s.len_delimited(wire)?;
                        check(bytes, Part::Scope, 0)?;
                        scope = Some(InstrumentationScope::decode(bytes).ok()?);
                    }
                    2 => items.push(s.len_delimited(wire)?),
                    3 => schema_url = s.string(wire)?.to_owned(),
                    1 => return None,
                    _ => s.skip(wire)?,
                }
            }
            out.request.push_scope(scope.clone(), schema_url);
            pace.dropped_in_scope = false;
            for bytes in items {
                if pace.unscanned > 0 {
                    pace.unscanned -= 1;
                    out.request.push_item(whole::<R>(bytes)?);
                    continue;
                }
                let checking = pace.kept_in_a_row == 0;
                let mut slim = R::slim(bytes, &wants, checking)?;
                scratch.fill(0);
                // An evaluation error is left to the full walk, which reports it.
                if R::keep(filter, resource.as_ref(), scope.as_ref(), &mut slim, &mut scratch).ok()? {
                    out.request.push_item(whole::<R>(bytes)?);
                    pace.kept();
                } else {
                    if !checking {
                        check(bytes, R::PART, 0)?;
                    }
                    out.dropped += 1;
                    out.hits.iter_mut().zip(&scratch).for_each(|(h, s)| *h += s);
                    pace.kept_in_a_row = 0;
                    pace.dropped_in_scope = true;
                }
            }
        }
    }
    Some(out)
}

/// How much of a request is scanned. A record is checked while its fields
/// are taken when the one before it was dropped; after a kept one, only if
/// it is dropped (decoding checks a kept record again). After a run of kept
/// records (an all-audit stream) the next ones are decoded whole without a
/// scan, which would only cost time: the batch's walk filters every record
/// anyway; one record in [`UNSCANNED`] + 1 is still scanned, so a stream
/// that starts dropping again is scanned again. Only in a scope the scan
/// has dropped nothing from: there a record's place among those the walk
/// sees is its place in the request, which an OTTL error names.
struct Pace {
    kept_in_a_row: u32,
    /// Whether the scan dropped a record of the current scope.
    dropped_in_scope: bool,
    /// Records still to decode whole without a scan.
    unscanned: u32,
}

/// Kept records in a row after which records are decoded without a scan.
const KEPT_IN_A_ROW: u32 = 8;
/// How many records are then decoded without a scan before the next one
/// is scanned.
const UNSCANNED: u32 = 64;

impl Pace {
    fn kept(&mut self) {
        self.kept_in_a_row += 1;
        if self.kept_in_a_row >= KEPT_IN_A_ROW && !self.dropped_in_scope {
            self.unscanned = UNSCANNED;
        }
    }
}

/// Decodes a record the scan keeps or passes over: decoding checks it, but
/// for the depth of nesting, which decoding counts from the request. The
/// plain-form decoder refuses values nested deeper than [`MAX_DEPTH`]
/// itself (counting as [`check`] does, never more leniently than
/// [`too_deep`]), so only what prost decoded is walked for its depth.
fn whole<R: Assemble>(bytes: &[u8]) -> Option<R::Item> {
    if let Some(item) = crate::in_request_region(|| R::decode_plain(bytes)) {
        return Some(item);
    }
    let item = crate::in_request_region(|| R::Item::decode(bytes)).ok()?;
    if R::values(&item).any(|v| too_deep(v, 2)) {
        return None;
    }
    Some(item)
}

/// What the scan must take from a record for the filter.
pub(crate) struct Wants<'f> {
    /// Attribute keys the filter reads.
    keys: Vec<&'f str>,
    /// Bit `n` set when a key of `n` bytes is among them (bit 63: one of
    /// 63 bytes or more), so most attributes are passed over without
    /// comparing their key with each.
    key_lengths: u64,
    /// The span name.
    name: bool,
    /// The log body.
    body: bool,
    /// The log severity text.
    severity_text: bool,
}

impl<'f> Wants<'f> {
    /// What the match blocks and the record-level OTTL conditions read;
    /// `None` when the signal has no filter or a condition reads more than
    /// a scan takes (ids, times, the whole attribute map, ...).
    fn of(blocks: &'f IncludeExclude, conditions: &'f OttlConditions) -> Option<Self> {
        if blocks.is_empty() && conditions.conditions.is_empty() {
            return None;
        }
        let mut wants = Wants { keys: Vec::new(), key_lengths: 0, name: false, body: false, severity_text: false };
        for (m, _) in blocks.include.iter().chain(&blocks.exclude) {
            let m: &Matcher = m;
            wants.keys.extend(m.attributes.iter().map(|a| a.key.as_str()));
            wants.name |= m.span_names.is_some();
            wants.body |= m.bodies.is_some();
            wants.severity_text |= m.severity_texts.is_some();
        }
        // Span event conditions only remove events of kept spans, which
        // are decoded whole.
        for c in conditions.conditions.iter().filter(|c| c.context != Context::SpanEvent) {
            for read in c.check.reads() {
                match (read.field, read.key) {
                    (
                        Field::ResourceAttributes
                        | Field::ResourceDropped
                        | Field::ScopeName
                        | Field::ScopeVersion
                        | Field::ScopeAttributes
                        | Field::ScopeDropped
                        | Field::Cache
                        | Field::Span(SpanField::Kind | SpanField::KindString)
                        | Field::Log(LogField::SeverityNumber),
                        _,
                    ) => {}
                    (Field::Span(SpanField::Attributes) | Field::Log(LogField::Attributes), Some(key)) => {
                        wants.keys.push(key)
                    }
                    (Field::Span(SpanField::Name), _) => wants.name = true,
                    (Field::Log(LogField::Body | LogField::BodyString), _) => wants.body = true,
                    (Field::Log(LogField::SeverityText), _) => wants.severity_text = true,
                    _ => return None,
                }
            }
        }
        wants.key_lengths = wants.keys.iter().fold(0, |lengths, k| lengths | length_bit(k.as_bytes()));
        Some(wants)
    }

    /// Whether the filter reads the attribute of this key.
    #[inline(always)]
    fn key(&self, key: &[u8]) -> bool {
        self.key_lengths & length_bit(key) != 0 && self.keys.iter().any(|k| k.as_bytes() == key)
    }
}

/// A key's bit in [`Wants::key_lengths`].
#[inline(always)]
fn length_bit(key: &[u8]) -> u64 {
    1 << key.len().min(63)
}

/// A signal's export request as the scan assembles it.
pub(crate) trait Assemble: Default {
    /// A span or a log record.
    type Item: prost::Message + Default;
    /// The include/exclude blocks of this signal.
    fn blocks(filter: &Filter) -> &IncludeExclude;
    /// The OTTL conditions of this signal.
    fn conditions(filter: &Filter) -> &OttlConditions;
    /// The record's message.
    const PART: Part;
    /// Takes the fields the filter reads from a record's bytes, checking
    /// all of them when `checking` (else only the fields it takes); `None`
    /// when they are not certainly valid.
    fn slim(bytes: &[u8], wants: &Wants, checking: bool) -> Option<Self::Item>;
    /// Decodes a record in the plain form ([`crate::decode`]); `None` leaves
    /// it to prost.
    fn decode_plain(bytes: &[u8]) -> Option<Self::Item>;
    /// The record's attribute values (and body).
    fn values(item: &Self::Item) -> impl Iterator<Item = &AnyValue>;
    /// Whether the filter keeps the slim record.
    fn keep(
        filter: &Filter,
        r: Option<&Resource>,
        s: Option<&InstrumentationScope>,
        item: &mut Self::Item,
        hits: &mut [u64],
    ) -> Result<bool, String>;
    fn push_resource(&mut self, resource: Option<Resource>, schema_url: String);
    fn push_scope(&mut self, scope: Option<InstrumentationScope>, schema_url: String);
    fn push_item(&mut self, item: Self::Item);
}

impl Assemble for ExportTraceServiceRequest {
    type Item = Span;
    fn blocks(filter: &Filter) -> &IncludeExclude {
        &filter.spans
    }
    fn conditions(filter: &Filter) -> &OttlConditions {
        &filter.trace_conditions
    }
    const PART: Part = Part::Span;
    fn decode_plain(bytes: &[u8]) -> Option<Span> {
        crate::decode::span(bytes)
    }
    fn values(span: &Span) -> impl Iterator<Item = &AnyValue> {
        let events = span.events.iter().flat_map(|e| &e.attributes);
        let links = span.links.iter().flat_map(|l| &l.attributes);
        span.attributes.iter().chain(events).chain(links).filter_map(|kv| kv.value.as_ref())
    }
    fn slim(bytes: &[u8], wants: &Wants, checking: bool) -> Option<Span> {
        let mut span = Span::default();
        let head = if checking { span_head(bytes, wants, &mut span)? } else { 0 };
        let mut r = Reader::new(&bytes[head..]);
        while let Some((tag, wire)) = r.key()? {
            match tag {
                5 if wants.name => span.name = r.string(wire)?.to_owned(),
                6 => span.kind = r.varint_field(wire)? as i32,
                9 => attribute(&mut r, wire, wants, &mut span.attributes, checking)?,
                _ if checking => check_field(&mut r, Part::Span, tag, wire, 0)?,
                _ => r.skip(wire)?,
            }
        }
        Some(span)
    }
    fn keep(
        filter: &Filter,
        r: Option<&Resource>,
        s: Option<&InstrumentationScope>,
        span: &mut Span,
        hits: &mut [u64],
    ) -> Result<bool, String> {
        filter.keep_span(r, s, span, hits)
    }
    fn push_resource(&mut self, resource: Option<Resource>, schema_url: String) {
        self.resource_spans.push(ResourceSpans { resource, scope_spans: Vec::new(), schema_url });
    }
    fn push_scope(&mut self, scope: Option<InstrumentationScope>, schema_url: String) {
        let resource = self.resource_spans.last_mut().expect("a scope is pushed into its resource");
        resource.scope_spans.push(ScopeSpans { scope, spans: Vec::new(), schema_url });
    }
    fn push_item(&mut self, span: Span) {
        let resource = self.resource_spans.last_mut().expect("a span is pushed into its resource");
        resource.scope_spans.last_mut().expect("a span is pushed into its scope").spans.push(span);
    }
}

impl Assemble for ExportLogsServiceRequest {
    type Item = LogRecord;
    fn blocks(filter: &Filter) -> &IncludeExclude {
        &filter.logs
    }
    fn conditions(filter: &Filter) -> &OttlConditions {
        &filter.log_conditions
    }
    const PART: Part = Part::Log;
    fn decode_plain(bytes: &[u8]) -> Option<LogRecord> {
        crate::decode::log(bytes)
    }
    fn values(log: &LogRecord) -> impl Iterator<Item = &AnyValue> {
        log.attributes.iter().filter_map(|kv| kv.value.as_ref()).chain(&log.body)
    }
    fn slim(bytes: &[u8], wants: &Wants, checking: bool) -> Option<LogRecord> {
        let mut log = LogRecord::default();
        let mut r = Reader::new(bytes);
        while let Some((tag, wire)) = r.key()? {
            match tag {
                2 => log.severity_number = r.varint_field(wire)? as i32,
                3 if wants.severity_text => log.severity_text = r.string(wire)?.to_owned(),
                5 if wants.body => {
                    let bytes = r.len_delimited(wire)?;
                    check(bytes, Part::AnyValue, 1)?;
                    // A repeated message field merges, as decoding does.
                    log.body.get_or_insert_default().merge(bytes).ok()?;
                }
                6 => attribute(&mut r, wire, wants, &mut log.attributes, checking)?,
                _ if checking => check_field(&mut r, Part::Log, tag, wire, 0)?,
                _ => r.skip(wire)?,
            }
        }
        Some(log)
    }
    fn keep(
        filter: &Filter,
        r: Option<&Resource>,
        s: Option<&InstrumentationScope>,
        log: &mut LogRecord,
        hits: &mut [u64],
    ) -> Result<bool, String> {
        filter.keep_log(r, s, log, hits)
    }
    fn push_resource(&mut self, resource: Option<Resource>, schema_url: String) {
        self.resource_logs.push(ResourceLogs { resource, scope_logs: Vec::new(), schema_url });
    }
    fn push_scope(&mut self, scope: Option<InstrumentationScope>, schema_url: String) {
        let resource = self.resource_logs.last_mut().expect("a scope is pushed into its resource");
        resource.scope_logs.push(ScopeLogs { scope, log_records: Vec::new(), schema_url });
    }
    fn push_item(&mut self, log: LogRecord) {
        let resource = self.resource_logs.last_mut().expect("a log record is pushed into its resource");
        resource.scope_logs.last_mut().expect("a log record is pushed into its scope").log_records.push(log);
    }
}

/// Takes one attribute (a `KeyValue`) of a record: decoded into
/// `attributes` when the filter reads its key (in record order, so the
/// first of a repeated key stays first); checked when `checking`.
#[inline(always)]
fn attribute(r: &mut Reader, wire: u8, wants: &Wants, attributes: &mut Vec<KeyValue>, checking: bool) -> Option<()> {
    attribute_bytes(r.len_delimited(wire)?, wants, attributes, checking)
}

/// [`attribute`] of the `KeyValue`'s bytes.
#[inline(always)]
fn attribute_bytes(bytes: &[u8], wants: &Wants, attributes: &mut Vec<KeyValue>, checking: bool) -> Option<()> {
    // Compared as bytes: a key the filter names is valid UTF-8.
    let key = match short_key_value(bytes) {
        // Most attributes, read without the field loop (checked as it
        // checks them).
        Some((key, value)) => {
            if checking {
                crate::wire::utf8(key)?;
                check_any_value(value, 2)?;
            }
            key
        }
        None => {
            let mut kv = Reader::new(bytes);
            let mut key: &[u8] = &[];
            while let Some((tag, wire)) = kv.key()? {
                match tag {
                    1 if checking => key = kv.string(wire)?.as_bytes(),
                    1 => key = kv.len_delimited(wire)?,
                    _ if checking => check_field(&mut kv, Part::KeyValue, tag, wire, 1)?,
                    _ => kv.skip(wire)?,
                }
            }
            key
        }
    };
    if wants.key(key) {
        attributes.push(KeyValue::decode(bytes).ok()?);
    }
    Some(())
}

/// Whether a value at `depth` (messages below its record) nests deeper
/// than the scan follows.
fn too_deep(value: &AnyValue, depth: u32) -> bool {
    if depth > MAX_DEPTH {
        return true;
    }
    match &value.value {
        Some(any_value::Value::ArrayValue(a)) => a.values.iter().any(|v| too_deep(v, depth + 2)),
        Some(any_value::Value::KvlistValue(l)) => {
            l.values.iter().filter_map(|kv| kv.value.as_ref()).any(|v| too_deep(v, depth + 2))
        }
        _ => false,
    }
}

/// The messages a record is made of, for the scan's checks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part {
    Resource,
    EntityRef,
    Scope,
    Span,
    Event,
    Link,
    Status,
    Log,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

/// What a known field holds, as decoding and the validity rules read it.
#[derive(Debug, Clone, Copy)]
enum Content {
    /// Any bytes.
    Bytes,
    /// An id: empty or exactly this many bytes.
    Id(usize),
    /// UTF-8 text.
    Str,
    /// A varint of any value.
    Varint,
    /// A varint that must be zero (`key_strindex`).
    Zero,
    Fixed32,
    Fixed64,
    /// A nested message.
    Nested(Part),
    /// Allowed only in profiles (`string_value_strindex`).
    Refused,
}

/// The fields of each message (docs: opentelemetry-proto); `None` for an
/// unknown field, which decoding skips.
#[inline(always)]
fn schema(message: Part, tag: u32) -> Option<Content> {
    use Content::*;
    Some(match (message, tag) {
        (Part::Resource, 1) => Nested(Part::KeyValue),
        (Part::Resource, 2) => Varint,
        (Part::Resource, 3) => Nested(Part::EntityRef),
        (Part::EntityRef, 1..=4) => Str,
        (Part::Scope, 1 | 2) => Str,
        (Part::Scope, 3) => Nested(Part::KeyValue),
        (Part::Scope, 4) => Varint,
        (Part::Span, 1) => Id(16),
        (Part::Span, 2 | 4) => Id(8),
        (Part::Span, 3 | 5) => Str,
        (Part::Span, 6 | 10 | 12 | 14) => Varint,
        (Part::Span, 7 | 8) => Fixed64,
        (Part::Span, 9) => Nested(Part::KeyValue),
        (Part::Span, 11) => Nested(Part::Event),
        (Part::Span, 13) => Nested(Part::Link),
        (Part::Span, 15) => Nested(Part::Status),
        (Part::Span, 16) => Fixed32,
        (Part::Event, 1) => Fixed64,
        (Part::Event, 2) => Str,
        (Part::Event, 3) => Nested(Part::KeyValue),
        (Part::Event, 4) => Varint,
        (Part::Link, 1) => Id(16),
        (Part::Link, 2) => Id(8),
        (Part::Link, 3) => Str,
        (Part::Link, 4) => Nested(Part::KeyValue),
        (Part::Link, 5) => Varint,
        (Part::Link, 6) => Fixed32,
        (Part::Status, 2) => Str,
        (Part::Status, 3) => Varint,
        (Part::Log, 1 | 11) => Fixed64,
        (Part::Log, 2 | 7) => Varint,
        (Part::Log, 3 | 12) => Str,
        (Part::Log, 5) => Nested(Part::AnyValue),
        (Part::Log, 6) => Nested(Part::KeyValue),
        (Part::Log, 8) => Fixed32,
        (Part::Log, 9) => Id(16),
        (Part::Log, 10) => Id(8),
        (Part::KeyValue, 1) => Str,
        (Part::KeyValue, 2) => Nested(Part::AnyValue),
        (Part::KeyValue, 3) => Zero,
        (Part::AnyValue, 1) => Str,
        (Part::AnyValue, 2 | 3) => Varint,
        (Part::AnyValue, 4) => Fixed64,
        (Part::AnyValue, 5) => Nested(Part::ArrayValue),
        (Part::AnyValue, 6) => Nested(Part::KeyValueList),
        (Part::AnyValue, 7) => Bytes,
        (Part::AnyValue, 8) => Refused,
        (Part::ArrayValue, 1) => Nested(Part::AnyValue),
        (Part::KeyValueList, 1) => Nested(Part::KeyValue),
        _ => return None,
    })
}

/// Nesting below a record the scan follows; deeper values are left to
/// decoding (whose own limit is 100 levels from the request).
pub(crate) const MAX_DEPTH: u32 = 32;

/// Checks a whole message.
fn check(bytes: &[u8], message: Part, depth: u32) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut r = Reader::new(bytes);
    while let Some((tag, wire)) = r.key()? {
        check_field(&mut r, message, tag, wire, depth)?;
    }
    Some(())
}

/// Checks the field whose key was just read, and moves past it.
#[inline(always)]
fn check_field(r: &mut Reader, message: Part, tag: u32, wire: u8, depth: u32) -> Option<()> {
    match schema(message, tag) {
        None => r.skip(wire),
        Some(Content::Bytes) => r.len_delimited(wire).map(drop),
        Some(Content::Id(len)) => r.len_delimited(wire).filter(|id| id.is_empty() || id.len() == len).map(drop),
        Some(Content::Str) => r.string(wire).map(drop),
        Some(Content::Varint) => r.varint_field(wire).map(drop),
        Some(Content::Zero) => r.varint_field(wire).filter(|v| *v == 0).map(drop),
        Some(Content::Fixed32) => r.fixed32(wire).map(drop),
        Some(Content::Fixed64) => r.fixed64(wire).map(drop),
        Some(Content::Nested(Part::AnyValue)) => check_any_value(r.len_delimited(wire)?, depth + 1),
        Some(Content::Nested(nested)) => check(r.len_delimited(wire)?, nested, depth + 1),
        Some(Content::Refused) => None,
    }
}

/// Checks an `AnyValue` at `depth`, as [`check`] does; one that is only a
/// short string value without a call to it.
#[inline(always)]
fn check_any_value(bytes: &[u8], depth: u32) -> Option<()> {
    match short_string_value(bytes) {
        Some(text) => crate::wire::utf8(text).map(drop),
        None => check(bytes, Part::AnyValue, depth),
    }
}

/// The key and value bytes of a `KeyValue` that is a key shorter than 128
/// bytes followed by a value shorter than 128 bytes (most attributes).
#[inline(always)]
fn short_key_value(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let [0x0a, key_len, rest @ ..] = bytes else { return None };
    let (key, rest) = rest.split_at_checked(usize::from(*key_len)).filter(|_| *key_len < 0x80)?;
    match rest {
        // Field 2, length-delimited, its one-byte length covering the rest.
        [0x12, len, value @ ..] if usize::from(*len) == value.len() && *len < 0x80 => Some((key, value)),
        _ => None,
    }
}

/// The text of an `AnyValue` that is only a string value shorter than 128
/// bytes (most attribute values), checked here without a call to [`check`],
/// which reads it the same way.
#[inline(always)]
fn short_string_value(bytes: &[u8]) -> Option<&[u8]> {
    match bytes {
        // Field 1, length-delimited; a one-byte length covering the rest.
        [0x0a, len, text @ ..] if usize::from(*len) == text.len() && *len < 0x80 => Some(text),
        _ => None,
    }
}

mod head;
#[cfg(test)]
pub(crate) mod tests;
