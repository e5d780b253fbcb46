//! Stored records as Arrow rows: the columns of `audit_spans` and
//! `audit_logs` (docs/auditors.md lists them). A record is read as the
//! chain format defines it (docs/chain-format.md): typed attribute values
//! become strings in `attributes` (so `attributes['x']` compares with a
//! string literal) and stay whole, as JSON, in `attributes_typed`.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, MapBuilder, RecordBatch, StringBuilder,
    TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::{Map, Value};

/// The time zone of the timestamp columns (what DataFusion's `NOW()` carries).
const UTC: &str = "+00:00";

/// Which records a table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Span records: `audit_spans`.
    Spans,
    /// Log records: `audit_logs`.
    Logs,
}

impl Signal {
    /// The table's name.
    pub fn table(self) -> &'static str {
        match self {
            Signal::Spans => "audit_spans",
            Signal::Logs => "audit_logs",
        }
    }

    /// The record member that holds this signal's body.
    fn member(self) -> &'static str {
        match self {
            Signal::Spans => "span",
            Signal::Logs => "log",
        }
    }
}

fn timestamp(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Nanosecond, Some(UTC.into())), true)
}

fn string_map(name: &str) -> Field {
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![Field::new("keys", DataType::Utf8, false), Field::new("values", DataType::Utf8, true)].into(),
        ),
        false,
    );
    Field::new(name, DataType::Map(Arc::new(entries), false), false)
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

/// A column of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Timestamp,
    ReceivedAt,
    Chain,
    Seq,
    Leaf,
    Sealed,
    Name,
    Attributes,
    AttributesTyped,
    Resource,
    ResourceTyped,
    ScopeName,
    ScopeVersion,
    TraceId,
    SpanId,
    Sender,
    ParentSpanId,
    Kind,
    StatusCode,
    StatusMessage,
    StartTime,
    EndTime,
    SeverityNumber,
    SeverityText,
    Body,
    BodyTyped,
    ObservedTime,
    Record,
}

impl Col {
    fn field(self) -> Field {
        match self {
            Col::Timestamp => timestamp("timestamp"),
            Col::ReceivedAt => timestamp("received_at"),
            Col::Chain => Field::new("chain", DataType::Utf8, false),
            Col::Seq => Field::new("seq", DataType::Int64, false),
            Col::Leaf => Field::new("leaf", DataType::Utf8, false),
            Col::Sealed => Field::new("sealed", DataType::Boolean, false),
            Col::Name => text("name"),
            Col::Attributes => string_map("attributes"),
            Col::AttributesTyped => text("attributes_typed"),
            Col::Resource => string_map("resource"),
            Col::ResourceTyped => text("resource_typed"),
            Col::ScopeName => text("scope_name"),
            Col::ScopeVersion => text("scope_version"),
            Col::TraceId => text("trace_id"),
            Col::SpanId => text("span_id"),
            Col::Sender => text("sender"),
            Col::ParentSpanId => text("parent_span_id"),
            Col::Kind => Field::new("kind", DataType::Int32, true),
            Col::StatusCode => Field::new("status_code", DataType::Int32, true),
            Col::StatusMessage => text("status_message"),
            Col::StartTime => timestamp("start_time"),
            Col::EndTime => timestamp("end_time"),
            Col::SeverityNumber => Field::new("severity_number", DataType::Int32, true),
            Col::SeverityText => text("severity_text"),
            Col::Body => text("body"),
            Col::BodyTyped => text("body_typed"),
            Col::ObservedTime => timestamp("observed_time"),
            Col::Record => Field::new("record", DataType::Utf8, false),
        }
    }
}

/// The columns of a signal's table, in order.
fn columns(signal: Signal) -> Vec<Col> {
    use Col::*;
    let mut cols = vec![
        Timestamp,
        ReceivedAt,
        Chain,
        Seq,
        Leaf,
        Sealed,
        Name,
        Attributes,
        AttributesTyped,
        Resource,
        ResourceTyped,
        ScopeName,
        ScopeVersion,
        TraceId,
        SpanId,
        Sender,
    ];
    match signal {
        Signal::Spans => cols.extend([ParentSpanId, Kind, StatusCode, StatusMessage, StartTime, EndTime]),
        Signal::Logs => cols.extend([SeverityNumber, SeverityText, Body, BodyTyped, ObservedTime]),
    }
    cols.push(Record);
    cols
}

/// The columns of a signal's table, in order.
pub fn schema(signal: Signal) -> SchemaRef {
    Arc::new(Schema::new(columns(signal).into_iter().map(Col::field).collect::<Vec<_>>()))
}

/// Why a stored line is not a record the table can hold.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRecord(String);

fn bad(reason: impl Into<String>) -> BadRecord {
    BadRecord(reason.into())
}

type StringMapBuilder = MapBuilder<StringBuilder, StringBuilder>;

fn timestamp_builder() -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::new().with_timezone(UTC)
}

/// Rows being collected into one batch of a signal's table, with only the
/// columns a query reads (the rest is never computed).
pub struct Rows {
    signal: Signal,
    cols: Vec<Col>,
    schema: SchemaRef,
    len: usize,
    timestamp: TimestampNanosecondBuilder,
    received_at: TimestampNanosecondBuilder,
    chain: StringBuilder,
    seq: Int64Builder,
    leaf: StringBuilder,
    sealed: BooleanBuilder,
    name: StringBuilder,
    attributes: StringMapBuilder,
    attributes_typed: StringBuilder,
    resource: StringMapBuilder,
    resource_typed: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    sender: StringBuilder,
    // Spans.
    parent_span_id: StringBuilder,
    kind: Int32Builder,
    status_code: Int32Builder,
    status_message: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    // Logs.
    severity_number: Int32Builder,
    severity_text: StringBuilder,
    body: StringBuilder,
    body_typed: StringBuilder,
    observed_time: TimestampNanosecondBuilder,
    record: StringBuilder,
}

impl Rows {
    /// No rows yet, of the columns `projection` picks from the signal's
    /// schema (all of them with `None`).
    pub fn new(signal: Signal, projection: Option<&[usize]>) -> Self {
        let all = columns(signal);
        let cols: Vec<Col> = match projection {
            Some(indexes) => indexes.iter().map(|i| all[*i]).collect(),
            None => all,
        };
        let schema = Arc::new(Schema::new(cols.iter().map(|c| c.field()).collect::<Vec<_>>()));
        let map = || MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        Rows {
            signal,
            cols,
            schema,
            len: 0,
            timestamp: timestamp_builder(),
            received_at: timestamp_builder(),
            chain: StringBuilder::new(),
            seq: Int64Builder::new(),
            leaf: StringBuilder::new(),
            sealed: BooleanBuilder::new(),
            name: StringBuilder::new(),
            attributes: map(),
            attributes_typed: StringBuilder::new(),
            resource: map(),
            resource_typed: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            sender: StringBuilder::new(),
            parent_span_id: StringBuilder::new(),
            kind: Int32Builder::new(),
            status_code: Int32Builder::new(),
            status_message: StringBuilder::new(),
            start_time: timestamp_builder(),
            end_time: timestamp_builder(),
            severity_number: Int32Builder::new(),
            severity_text: StringBuilder::new(),
            body: StringBuilder::new(),
            body_typed: StringBuilder::new(),
            observed_time: timestamp_builder(),
            record: StringBuilder::new(),
        }
    }

    /// The schema of the batches: the projected columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows collected so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no row has been collected.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `record` (one stored line) if it is of this table's signal and,
    /// with `only_sealed`, covered by a checkpoint of `sealed_size` records;
    /// `Ok(false)` if it is not.
    pub fn push(&mut self, record: &[u8], sealed_size: u64, only_sealed: bool) -> Result<bool, BadRecord> {
        let text = std::str::from_utf8(record).map_err(|e| bad(format!("not UTF-8: {e}")))?;
        let parsed: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let top = parsed.as_object().ok_or_else(|| bad("not a JSON object"))?;
        let Some(body) = top.get(self.signal.member()) else {
            return Ok(false);
        };
        let body = body.as_object().ok_or_else(|| bad(format!("`{}` is not an object", self.signal.member())))?;
        let chain = top.get("chain").and_then(Value::as_object).ok_or_else(|| bad("no `chain` object"))?;
        let chain_id = chain.get("id").and_then(Value::as_str).ok_or_else(|| bad("no `chain.id`"))?;
        let seq = chain
            .get("seq")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| bad("no decimal `chain.seq`"))?;
        let sealed = (seq as u64) < sealed_size;
        if only_sealed && !sealed {
            return Ok(false);
        }
        let received_at = top
            .get("received_at")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no `received_at`"))
            .and_then(|s| rfc3339_nanos(s).ok_or_else(|| bad(format!("`received_at` {s:?} is not RFC 3339"))))?;
        let (event_time, name) = match self.signal {
            Signal::Spans => (nanos(body, "start_time_unix_nano")?, string(body, "name")),
            Signal::Logs => {
                (nanos(body, "time_unix_nano")?.or(nanos(body, "observed_time_unix_nano")?), string(body, "event_name"))
            }
        };
        let attributes = body.get("attributes").and_then(Value::as_object);
        let resource = top.get("resource").and_then(|r| r.get("attributes")).and_then(Value::as_object);
        let scope = top.get("scope").and_then(Value::as_object);
        let status = body.get("status").and_then(Value::as_object);
        for col in 0..self.cols.len() {
            match self.cols[col] {
                Col::Timestamp => self.timestamp.append_value(event_time.unwrap_or(received_at)),
                Col::ReceivedAt => self.received_at.append_value(received_at),
                Col::Chain => self.chain.append_value(chain_id),
                Col::Seq => self.seq.append_value(seq),
                Col::Leaf => self.leaf.append_value(hex::encode(audit_format::hash::leaf_hash(record))),
                Col::Sealed => self.sealed.append_value(sealed),
                Col::Name => self.name.append_option(name),
                Col::Attributes => append_map(&mut self.attributes, attributes)?,
                Col::AttributesTyped => self.attributes_typed.append_option(attributes.map(typed_json)),
                Col::Resource => append_map(&mut self.resource, resource)?,
                Col::ResourceTyped => self.resource_typed.append_option(resource.map(typed_json)),
                Col::ScopeName => self.scope_name.append_option(scope.and_then(|s| string(s, "name"))),
                Col::ScopeVersion => self.scope_version.append_option(scope.and_then(|s| string(s, "version"))),
                Col::TraceId => self.trace_id.append_option(string(body, "trace_id")),
                Col::SpanId => self.span_id.append_option(string(body, "span_id")),
                Col::Sender => self.sender.append_option(top.get("sender").map(Value::to_string)),
                Col::ParentSpanId => self.parent_span_id.append_option(string(body, "parent_span_id")),
                Col::Kind => self.kind.append_option(small(body, "kind")),
                Col::StatusCode => self.status_code.append_option(status.and_then(|s| small(s, "code"))),
                Col::StatusMessage => self.status_message.append_option(status.and_then(|s| string(s, "message"))),
                Col::StartTime => self.start_time.append_option(event_time),
                Col::EndTime => self.end_time.append_option(nanos(body, "end_time_unix_nano")?),
                Col::SeverityNumber => self.severity_number.append_option(small(body, "severity_number")),
                Col::SeverityText => self.severity_text.append_option(string(body, "severity_text")),
                Col::Body => self.body.append_option(body.get("body").and_then(display)),
                Col::BodyTyped => self.body_typed.append_option(body.get("body").map(Value::to_string)),
                Col::ObservedTime => self.observed_time.append_option(nanos(body, "observed_time_unix_nano")?),
                Col::Record => self.record.append_value(text),
            }
        }
        self.len += 1;
        Ok(true)
    }

    /// The rows collected as one batch; starts over empty.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = self
            .cols
            .clone()
            .into_iter()
            .map(|col| -> ArrayRef {
                match col {
                    Col::Timestamp => Arc::new(self.timestamp.finish()),
                    Col::ReceivedAt => Arc::new(self.received_at.finish()),
                    Col::Chain => Arc::new(self.chain.finish()),
                    Col::Seq => Arc::new(self.seq.finish()),
                    Col::Leaf => Arc::new(self.leaf.finish()),
                    Col::Sealed => Arc::new(self.sealed.finish()),
                    Col::Name => Arc::new(self.name.finish()),
                    Col::Attributes => Arc::new(self.attributes.finish()),
                    Col::AttributesTyped => Arc::new(self.attributes_typed.finish()),
                    Col::Resource => Arc::new(self.resource.finish()),
                    Col::ResourceTyped => Arc::new(self.resource_typed.finish()),
                    Col::ScopeName => Arc::new(self.scope_name.finish()),
                    Col::ScopeVersion => Arc::new(self.scope_version.finish()),
                    Col::TraceId => Arc::new(self.trace_id.finish()),
                    Col::SpanId => Arc::new(self.span_id.finish()),
                    Col::Sender => Arc::new(self.sender.finish()),
                    Col::ParentSpanId => Arc::new(self.parent_span_id.finish()),
                    Col::Kind => Arc::new(self.kind.finish()),
                    Col::StatusCode => Arc::new(self.status_code.finish()),
                    Col::StatusMessage => Arc::new(self.status_message.finish()),
                    Col::StartTime => Arc::new(self.start_time.finish()),
                    Col::EndTime => Arc::new(self.end_time.finish()),
                    Col::SeverityNumber => Arc::new(self.severity_number.finish()),
                    Col::SeverityText => Arc::new(self.severity_text.finish()),
                    Col::Body => Arc::new(self.body.finish()),
                    Col::BodyTyped => Arc::new(self.body_typed.finish()),
                    Col::ObservedTime => Arc::new(self.observed_time.finish()),
                    Col::Record => Arc::new(self.record.finish()),
                }
            })
            .collect();
        let rows = self.len;
        self.len = 0;
        let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .expect("the columns follow the schema")
    }
}

/// An RFC 3339 time as Unix nanoseconds.
fn rfc3339_nanos(text: &str) -> Option<i64> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos()).ok()
}

fn string<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

fn small(object: &Map<String, Value>, key: &str) -> Option<i32> {
    object.get(key).and_then(Value::as_i64).and_then(|n| i32::try_from(n).ok())
}

/// A 64-bit Unix-nanosecond member (a decimal string); absent is `None`.
fn nanos(object: &Map<String, Value>, key: &str) -> Result<Option<i64>, BadRecord> {
    let Some(value) = object.get(key) else { return Ok(None) };
    value
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|n| Some(i64::try_from(n).unwrap_or(i64::MAX)))
        .ok_or_else(|| bad(format!("`{key}` is not a decimal string")))
}

/// A typed value (chain format §1.3) as the string `attributes['k']` gives:
/// strings as they are, ints in decimal, doubles and bools as JSON writes
/// them, bytes in base64; arrays and maps as their typed JSON. No value is
/// NULL.
fn display(typed: &Value) -> Option<String> {
    let (tag, value) = typed.as_object()?.iter().next()?;
    Some(match (tag.as_str(), value) {
        ("s" | "i" | "x", Value::String(s)) => s.clone(),
        ("d", Value::String(s)) => s.clone(),
        ("a" | "m", _) => typed.to_string(),
        (_, other) => other.to_string(),
    })
}

/// An attribute object as a row of a string map column (empty when absent).
fn append_map(map: &mut StringMapBuilder, attributes: Option<&Map<String, Value>>) -> Result<(), BadRecord> {
    for (key, value) in attributes.into_iter().flatten() {
        map.keys().append_value(key);
        map.values().append_option(display(value));
    }
    map.append(true).map_err(|e| bad(e.to_string()))
}

/// An attribute object as its typed JSON.
fn typed_json(attributes: &Map<String, Value>) -> String {
    serde_json::to_string(attributes).expect("a JSON map serializes")
}
