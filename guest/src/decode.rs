//! Decoding a kept span or log record straight from its bytes into the
//! OTLP types, the result prost's decoding gives, in about half the time in
//! wasm.
//!
//! In an all-audit stream every record is kept and decoded whole, and
//! prost's generic decoding (a `Buf` per message, a `String` grown through
//! `reserve` per key and value, a `Vec` grown one attribute at a time) was
//! about 40 % of a kept record's time in wasm. Here the fields are read
//! from the slice ([`Reader`]), each text or byte field is copied once
//! into a buffer of its exact size and each attribute list is allocated
//! once, at its final length.
//!
//! Only the plain form is taken: the fields the message defines, each
//! with its own wire type, a singular message field once, a value's oneof
//! set once, nesting no deeper than [`MAX_DEPTH`]. Anything else (an
//! unknown or deprecated field, a message field merged from two parts, a
//! profiles-only string-table reference, malformed bytes) returns `None`,
//! and the caller decodes with prost as before, so its results and errors
//! are prost's, byte for byte.

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span};

use crate::copy;
use crate::prefilter::MAX_DEPTH;
use crate::wire::Reader;

/// Decodes a span (`opentelemetry.proto.trace.v1.Span`); `None` when it is
/// not in the plain form (see the module docs).
pub(crate) fn span(bytes: &[u8]) -> Option<Span> {
    let mut span = Span { attributes: Vec::with_capacity(count(bytes, 9)?), ..Span::default() };
    let mut r = Reader::new(bytes);
    while let Some((tag, wire)) = r.key()? {
        match tag {
            1 => span.trace_id = bytes_field(&mut r, wire)?,
            2 => span.span_id = bytes_field(&mut r, wire)?,
            3 => span.trace_state = string(&mut r, wire)?,
            4 => span.parent_span_id = bytes_field(&mut r, wire)?,
            5 => span.name = string(&mut r, wire)?,
            6 => span.kind = r.varint_field(wire)? as i32,
            7 => span.start_time_unix_nano = r.fixed64(wire)?,
            8 => span.end_time_unix_nano = r.fixed64(wire)?,
            9 => span.attributes.push(key_value(r.len_delimited(wire)?, 1)?),
            10 => span.dropped_attributes_count = r.varint_field(wire)? as u32,
            11 => span.events.push(event(r.len_delimited(wire)?)?),
            12 => span.dropped_events_count = r.varint_field(wire)? as u32,
            13 => span.links.push(link(r.len_delimited(wire)?)?),
            14 => span.dropped_links_count = r.varint_field(wire)? as u32,
            15 if span.status.is_none() => span.status = Some(status(r.len_delimited(wire)?)?),
            16 => span.flags = r.fixed32(wire)?,
            _ => return None,
        }
    }
    Some(span)
}

/// Decodes a log record (`opentelemetry.proto.logs.v1.LogRecord`); `None`
/// when it is not in the plain form (see the module docs).
pub(crate) fn log(bytes: &[u8]) -> Option<LogRecord> {
    let mut log = LogRecord { attributes: Vec::with_capacity(count(bytes, 6)?), ..LogRecord::default() };
    let mut r = Reader::new(bytes);
    while let Some((tag, wire)) = r.key()? {
        match tag {
            1 => log.time_unix_nano = r.fixed64(wire)?,
            2 => log.severity_number = r.varint_field(wire)? as i32,
            3 => log.severity_text = string(&mut r, wire)?,
            5 if log.body.is_none() => log.body = Some(any_value(r.len_delimited(wire)?, 1)?),
            6 => log.attributes.push(key_value(r.len_delimited(wire)?, 1)?),
            7 => log.dropped_attributes_count = r.varint_field(wire)? as u32,
            8 => log.flags = r.fixed32(wire)?,
            9 => log.trace_id = bytes_field(&mut r, wire)?,
            10 => log.span_id = bytes_field(&mut r, wire)?,
            11 => log.observed_time_unix_nano = r.fixed64(wire)?,
            12 => log.event_name = string(&mut r, wire)?,
            _ => return None,
        }
    }
    Some(log)
}

fn event(bytes: &[u8]) -> Option<span::Event> {
    let mut event = span::Event { attributes: Vec::with_capacity(count(bytes, 3)?), ..span::Event::default() };
    let mut r = Reader::new(bytes);
    while let Some((tag, wire)) = r.key()? {
        match tag {
            1 => event.time_unix_nano = r.fixed64(wire)?,
            2 => event.name = string(&mut r, wire)?,
            3 => event.attributes.push(key_value(r.len_delimited(wire)?, 2)?),
            4 => event.dropped_attributes_count = r.varint_field(wire)? as u32,
            _ => return None,
        }
    }
    Some(event)
}

fn link(bytes: &[u8]) -> Option<span::Link> {
    let mut link = span::Link { attributes: Vec::with_capacity(count(bytes, 4)?), ..span::Link::default() };
    let mut r = Reader::new(bytes);
    while let Some((tag, wire)) = r.key()? {
        match tag {
            1 => link.trace_id = bytes_field(&mut r, wire)?,
            2 => link.span_id = bytes_field(&mut r, wire)?,
            3 => link.trace_state = string(&mut r, wire)?,
            4 => link.attributes.push(key_value(r.len_delimited(wire)?, 2)?),
            5 => link.dropped_attributes_count = r.varint_field(wire)? as u32,
            6 => link.flags = r.fixed32(wire)?,
            _ => return None,
        }
    }
    Some(link)
}

fn status(bytes: &[u8]) -> Option<Status> {
    let mut status = Status::default();
    let mut r = Reader::new(bytes);
    while let Some((tag, wire)) = r.key()? {
        match tag {
            2 => status.message = string(&mut r, wire)?,
            3 => status.code = r.varint_field(wire)? as i32,
            _ => return None,
        }
    }
    Some(status)
}

/// A `KeyValue` at `depth` messages below its record.
fn key_value(bytes: &[u8], depth: u32) -> Option<KeyValue> {
    let mut kv = KeyValue::default();
    let mut r = Reader::new(bytes);
    while let Some((tag, wire)) = r.key()? {
        match tag {
            1 => kv.key = string(&mut r, wire)?,
            2 if kv.value.is_none() => kv.value = Some(any_value(r.len_delimited(wire)?, depth + 1)?),
            _ => return None,
        }
    }
    Some(kv)
}

/// An `AnyValue` at `depth` messages below its record; at most one field.
fn any_value(bytes: &[u8], depth: u32) -> Option<AnyValue> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut r = Reader::new(bytes);
    let Some((tag, wire)) = r.key()? else {
        return Some(AnyValue { value: None });
    };
    let value = match tag {
        1 => Value::StringValue(string(&mut r, wire)?),
        2 => Value::BoolValue(r.varint_field(wire)? != 0),
        3 => Value::IntValue(r.varint_field(wire)? as i64),
        4 => Value::DoubleValue(f64::from_bits(r.fixed64(wire)?)),
        5 => Value::ArrayValue(ArrayValue { values: list(r.len_delimited(wire)?, |v| any_value(v, depth + 2))? }),
        6 => Value::KvlistValue(KeyValueList { values: list(r.len_delimited(wire)?, |kv| key_value(kv, depth + 2))? }),
        7 => Value::BytesValue(bytes_field(&mut r, wire)?),
        _ => return None,
    };
    r.key()?.is_none().then_some(AnyValue { value: Some(value) })
}

/// The items of an `ArrayValue` or a `KeyValueList` (field 1, repeated).
fn list<T>(bytes: &[u8], item: impl Fn(&[u8]) -> Option<T>) -> Option<Vec<T>> {
    let mut items = Vec::with_capacity(count(bytes, 1)?);
    let mut r = Reader::new(bytes);
    while let Some((tag, wire)) = r.key()? {
        if tag != 1 {
            return None;
        }
        items.push(item(r.len_delimited(wire)?)?);
    }
    Some(items)
}

/// How many fields with `tag` a message has, to allocate its list once.
fn count(bytes: &[u8], tag: u32) -> Option<usize> {
    let mut r = Reader::new(bytes);
    let mut n = 0;
    while let Some((t, wire)) = r.key()? {
        n += usize::from(t == tag);
        r.skip(wire)?;
    }
    Some(n)
}

fn string(r: &mut Reader, wire: u8) -> Option<String> {
    let text = r.string(wire)?;
    // SAFETY: the bytes of a `str`, copied.
    Some(unsafe { String::from_utf8_unchecked(copy::to_vec(text.as_bytes())) })
}

fn bytes_field(r: &mut Reader, wire: u8) -> Option<Vec<u8>> {
    r.len_delimited(wire).map(copy::to_vec)
}

#[cfg(test)]
mod tests;
