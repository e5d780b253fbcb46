//! Stored records as Arrow rows: the columns of `audit_spans` and
//! `audit_logs` (README "Querying the trail"). A record is read as the
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

/// The columns of a signal's table, in order.
pub fn schema(signal: Signal) -> SchemaRef {
    let mut fields = vec![
        timestamp("timestamp"),
        timestamp("received_at"),
        Field::new("chain", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("leaf", DataType::Utf8, false),
        Field::new("sealed", DataType::Boolean, false),
        text("name"),
        string_map("attributes"),
        text("attributes_typed"),
        string_map("resource"),
        text("resource_typed"),
        text("scope_name"),
        text("scope_version"),
        text("trace_id"),
        text("span_id"),
        text("sender"),
    ];
    match signal {
        Signal::Spans => fields.extend([
            text("parent_span_id"),
            Field::new("kind", DataType::Int32, true),
            Field::new("status_code", DataType::Int32, true),
            text("status_message"),
            timestamp("start_time"),
            timestamp("end_time"),
        ]),
        Signal::Logs => fields.extend([
            Field::new("severity_number", DataType::Int32, true),
            text("severity_text"),
            text("body"),
            text("body_typed"),
            timestamp("observed_time"),
        ]),
    }
    fields.push(Field::new("record", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
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

/// Rows being collected into one batch of a signal's table.
pub struct Rows {
    signal: Signal,
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
    /// No rows yet.
    pub fn new(signal: Signal) -> Self {
        let map = || MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        Rows {
            signal,
            schema: schema(signal),
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
        self.timestamp.append_value(event_time.unwrap_or(received_at));
        self.received_at.append_value(received_at);
        self.chain.append_value(chain_id);
        self.seq.append_value(seq);
        self.leaf.append_value(hex::encode(audit_format::hash::leaf_hash(record)));
        self.sealed.append_value(sealed);
        self.name.append_option(name);
        let attributes = body.get("attributes").and_then(Value::as_object);
        append_attributes(&mut self.attributes, &mut self.attributes_typed, attributes)?;
        let resource = top.get("resource").and_then(|r| r.get("attributes")).and_then(Value::as_object);
        append_attributes(&mut self.resource, &mut self.resource_typed, resource)?;
        let scope = top.get("scope").and_then(Value::as_object);
        self.scope_name.append_option(scope.and_then(|s| string(s, "name")));
        self.scope_version.append_option(scope.and_then(|s| string(s, "version")));
        self.trace_id.append_option(string(body, "trace_id"));
        self.span_id.append_option(string(body, "span_id"));
        self.sender.append_option(top.get("sender").map(Value::to_string));
        match self.signal {
            Signal::Spans => {
                self.parent_span_id.append_option(string(body, "parent_span_id"));
                self.kind.append_option(small(body, "kind"));
                let status = body.get("status").and_then(Value::as_object);
                self.status_code.append_option(status.and_then(|s| small(s, "code")));
                self.status_message.append_option(status.and_then(|s| string(s, "message")));
                self.start_time.append_option(event_time);
                self.end_time.append_option(nanos(body, "end_time_unix_nano")?);
            }
            Signal::Logs => {
                self.severity_number.append_option(small(body, "severity_number"));
                self.severity_text.append_option(string(body, "severity_text"));
                let value = body.get("body");
                self.body.append_option(value.and_then(display));
                self.body_typed.append_option(value.map(Value::to_string));
                self.observed_time.append_option(nanos(body, "observed_time_unix_nano")?);
            }
        }
        self.record.append_value(text);
        self.len += 1;
        Ok(true)
    }

    /// The rows collected as one batch; starts over empty.
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.chain.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.leaf.finish()),
            Arc::new(self.sealed.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.attributes_typed.finish()),
            Arc::new(self.resource.finish()),
            Arc::new(self.resource_typed.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.sender.finish()),
        ];
        match self.signal {
            Signal::Spans => columns.extend::<[ArrayRef; 6]>([
                Arc::new(self.parent_span_id.finish()),
                Arc::new(self.kind.finish()),
                Arc::new(self.status_code.finish()),
                Arc::new(self.status_message.finish()),
                Arc::new(self.start_time.finish()),
                Arc::new(self.end_time.finish()),
            ]),
            Signal::Logs => columns.extend::<[ArrayRef; 5]>([
                Arc::new(self.severity_number.finish()),
                Arc::new(self.severity_text.finish()),
                Arc::new(self.body.finish()),
                Arc::new(self.body_typed.finish()),
                Arc::new(self.observed_time.finish()),
            ]),
        }
        columns.push(Arc::new(self.record.finish()));
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), columns).expect("the columns follow the schema")
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

fn append_attributes(
    map: &mut StringMapBuilder,
    typed: &mut StringBuilder,
    attributes: Option<&Map<String, Value>>,
) -> Result<(), BadRecord> {
    for (key, value) in attributes.into_iter().flatten() {
        map.keys().append_value(key);
        map.values().append_option(display(value));
    }
    map.append(true).map_err(|e| bad(e.to_string()))?;
    typed.append_option(attributes.map(|a| Value::Object(a.clone()).to_string()));
    Ok(())
}
