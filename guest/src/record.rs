//! The canonical audit record (v1): one RFC 8785 JSON object per kept span or
//! log record, written member by member in canonical order.
//!
//! docs/chain-format.md is the specification; this writer is one
//! implementation of it. Conventions: member names in `snake_case` as in the
//! OTLP protobuf; a member whose value is empty (empty string, zero, empty
//! list or object, absent message) is omitted; ids are lowercase hex; 64-bit
//! integers are decimal strings; attribute values are typed objects
//! (`{"s":..}`, `{"i":"<int64>"}`, ...). Within one attribute list the first
//! occurrence of a key wins, as in the Collector's pdata.

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, EntityRef, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span};

use audit_format::Hash;

use crate::{copy, jcs};

/// Version of the record format, written as the member `"v"`: 1, or 2 for
/// a record with a `sender` member.
pub use audit_format::{FORMAT_VERSION, FORMAT_VERSION_SENDER};

/// The chain position written into a record.
pub struct Position<'a> {
    /// Chain id.
    pub chain_id: &'a str,
    /// Sequence number of this record.
    pub seq: u64,
    /// Leaf hash of the previous record.
    pub prev: &'a Hash,
    /// Key id of the record MAC, when the chain is keyed.
    pub key_id: Option<&'a str>,
}

/// The body of a record: what was kept.
pub enum Body<'a> {
    /// A span.
    Span(&'a Span),
    /// A log record.
    Log(&'a LogRecord),
}

/// Attributes the processor adds to a record (enrichment), written among
/// the record's own in canonical order without being pushed into it. None
/// of their keys is among the record's own (enrichment removed those).
#[derive(Clone, Copy, Default)]
pub struct Added<'a> {
    /// A record's own addition (`audit.require.missing`).
    pub first: Option<&'a KeyValue>,
    /// The additions every record of the batch gets.
    pub rest: &'a [KeyValue],
}

/// The members a record shares with the other records of its batch,
/// resource or scope: pre-rendered once ([`resource_member`],
/// [`scope_member`], [`sender_member`]).
pub struct Shared<'a> {
    /// The batch's received-at time (RFC 3339).
    pub received_at: &'a str,
    /// The complete `"resource":{...}` member.
    pub resource: &'a [u8],
    /// The complete `"scope":{...}` member.
    pub scope: &'a [u8],
    /// The complete `"sender":{...}` member; empty when the batch has no
    /// sender (it is left out, and the record is version 1).
    pub sender: &'a [u8],
}

/// Writes one record into `out` (cleared first) without its `mac` member and
/// returns the byte offset where the `mac` member belongs, so the caller can
/// insert it once the leaf hash is known. `added` joins the span's or log
/// record's attributes.
pub fn write(out: &mut Vec<u8>, pos: &Position, shared: &Shared, body: Body, added: Added) -> usize {
    let Shared { received_at, resource, scope, sender } = *shared;
    out.clear();
    out.extend_from_slice(b"{\"chain\":{\"id\":");
    jcs::write_str(out, pos.chain_id);
    if let Some(key_id) = pos.key_id {
        out.extend_from_slice(b",\"key_id\":");
        jcs::write_str(out, key_id);
    }
    out.extend_from_slice(b",\"prev\":\"");
    push_hex(out, pos.prev);
    out.extend_from_slice(b"\",\"seq\":");
    jcs::write_int_str(out, pos.seq);
    out.push(b'}');
    if let Body::Log(log) = body {
        out.extend_from_slice(b",\"log\":");
        write_log(out, log, added);
    }
    let mac_at = out.len();
    out.extend_from_slice(b",\"received_at\":");
    jcs::write_str(out, received_at);
    out.push(b',');
    out.extend_from_slice(resource);
    out.push(b',');
    out.extend_from_slice(scope);
    if !sender.is_empty() {
        out.push(b',');
        out.extend_from_slice(sender);
    }
    if let Body::Span(span) = body {
        out.extend_from_slice(b",\"span\":");
        write_span(out, span, added);
    }
    out.extend_from_slice(b",\"v\":");
    jcs::write_small_uint(out, if sender.is_empty() { FORMAT_VERSION } else { FORMAT_VERSION_SENDER });
    out.push(b'}');
    mac_at
}

/// The bytes of the `mac` member (with its leading comma) for insertion at
/// the offset [`write`] returned.
pub fn mac_member(mac: &Hash) -> [u8; 73] {
    let mut member = [0u8; 73];
    member[..8].copy_from_slice(b",\"mac\":\"");
    hex::encode_to_slice(mac, &mut member[8..72]).expect("64 hex digits fit");
    member[72] = b'"';
    member
}

/// Renders the `"resource":{...}` member of every record of one resource.
pub fn resource_member(resource: Option<&Resource>, schema_url: &str) -> Vec<u8> {
    let mut out = b"\"resource\":".to_vec();
    let mut obj = Object::new(&mut out);
    if let Some(r) = resource {
        obj.attributes("attributes", &r.attributes);
        obj.count("dropped_attributes_count", r.dropped_attributes_count);
        if !r.entity_refs.is_empty() {
            let out = obj.key("entity_refs");
            out.push(b'[');
            for (i, e) in r.entity_refs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_entity_ref(out, e);
            }
            out.push(b']');
        }
    }
    obj.string("schema_url", schema_url);
    obj.end();
    out
}

/// Renders the `"sender":{...}` member of every record of one batch:
/// `address`, `certificate` (`sans`, `subject`), `principal`, `protocol`,
/// `tls`, each left out when empty.
pub fn sender_member(sender: &audit_format::Sender) -> Vec<u8> {
    let mut out = b"\"sender\":".to_vec();
    let mut obj = Object::new(&mut out);
    obj.string("address", &sender.address);
    if !sender.certificate_subject.is_empty() || !sender.certificate_sans.is_empty() {
        let mut certificate = Object::new(obj.key("certificate"));
        certificate.strings("sans", &sender.certificate_sans);
        certificate.string("subject", &sender.certificate_subject);
        certificate.end();
    }
    obj.string("principal", &sender.principal);
    obj.string("protocol", &sender.protocol);
    obj.string("tls", &sender.tls);
    obj.end();
    out
}

/// Renders the `"scope":{...}` member of every record of one scope.
pub fn scope_member(scope: Option<&InstrumentationScope>, schema_url: &str) -> Vec<u8> {
    let mut out = b"\"scope\":".to_vec();
    let mut obj = Object::new(&mut out);
    if let Some(s) = scope {
        obj.attributes("attributes", &s.attributes);
        obj.count("dropped_attributes_count", s.dropped_attributes_count);
        obj.string("name", &s.name);
    }
    obj.string("schema_url", schema_url);
    if let Some(s) = scope {
        obj.string("version", &s.version);
    }
    obj.end();
    out
}

fn write_entity_ref(out: &mut Vec<u8>, e: &EntityRef) {
    let mut obj = Object::new(out);
    obj.strings("description_keys", &e.description_keys);
    obj.strings("id_keys", &e.id_keys);
    obj.string("schema_url", &e.schema_url);
    obj.string("type", &e.r#type);
    obj.end();
}

fn write_span(out: &mut Vec<u8>, s: &Span, added: Added) {
    let mut obj = Object::new(out);
    obj.attributes_with("attributes", &s.attributes, added);
    obj.count("dropped_attributes_count", s.dropped_attributes_count);
    obj.count("dropped_events_count", s.dropped_events_count);
    obj.count("dropped_links_count", s.dropped_links_count);
    obj.time("end_time_unix_nano", s.end_time_unix_nano);
    if !s.events.is_empty() {
        let out = obj.key("events");
        out.push(b'[');
        for (i, e) in s.events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_event(out, e);
        }
        out.push(b']');
    }
    obj.count("flags", s.flags);
    obj.enumeration("kind", s.kind);
    if !s.links.is_empty() {
        let out = obj.key("links");
        out.push(b'[');
        for (i, l) in s.links.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_link(out, l);
        }
        out.push(b']');
    }
    obj.string("name", &s.name);
    obj.id("parent_span_id", &s.parent_span_id);
    obj.id("span_id", &s.span_id);
    obj.time("start_time_unix_nano", s.start_time_unix_nano);
    if let Some(status) = s.status.as_ref().filter(|st| **st != Status::default()) {
        let out = obj.key("status");
        let mut st = Object::new(out);
        st.enumeration("code", status.code);
        st.string("message", &status.message);
        st.end();
    }
    obj.id("trace_id", &s.trace_id);
    obj.string("trace_state", &s.trace_state);
    obj.end();
}

fn write_event(out: &mut Vec<u8>, e: &span::Event) {
    let mut obj = Object::new(out);
    obj.attributes("attributes", &e.attributes);
    obj.count("dropped_attributes_count", e.dropped_attributes_count);
    obj.string("name", &e.name);
    obj.time("time_unix_nano", e.time_unix_nano);
    obj.end();
}

fn write_link(out: &mut Vec<u8>, l: &span::Link) {
    let mut obj = Object::new(out);
    obj.attributes("attributes", &l.attributes);
    obj.count("dropped_attributes_count", l.dropped_attributes_count);
    obj.count("flags", l.flags);
    obj.id("span_id", &l.span_id);
    obj.id("trace_id", &l.trace_id);
    obj.string("trace_state", &l.trace_state);
    obj.end();
}

fn write_log(out: &mut Vec<u8>, r: &LogRecord, added: Added) {
    let mut obj = Object::new(out);
    obj.attributes_with("attributes", &r.attributes, added);
    if let Some(body) = &r.body {
        let out = obj.key("body");
        write_value(out, body);
    }
    obj.count("dropped_attributes_count", r.dropped_attributes_count);
    obj.string("event_name", &r.event_name);
    obj.count("flags", r.flags);
    obj.time("observed_time_unix_nano", r.observed_time_unix_nano);
    obj.enumeration("severity_number", r.severity_number);
    obj.string("severity_text", &r.severity_text);
    obj.id("span_id", &r.span_id);
    obj.time("time_unix_nano", r.time_unix_nano);
    obj.id("trace_id", &r.trace_id);
    obj.end();
}

/// Writes an attribute list as a JSON object with members in canonical
/// order; for a repeated key the first occurrence wins.
fn write_attributes(out: &mut Vec<u8>, attributes: &[KeyValue], added: Added) {
    // A stable sort keeps the first of equal keys first. For ASCII keys
    // (nearly all) UTF-16 order is byte order, decided mostly by the first
    // sixteen bytes as one number (keys often share their first eight:
    // `enduser.id`, `enduser.role`).
    let mut every = attributes.iter().chain(added.first).chain(added.rest);
    let mut sorted: Vec<(u128, &KeyValue)> = every.clone().map(|kv| (prefix(&kv.key), kv)).collect();
    if every.all(|kv| kv.key.is_ascii()) {
        sorted.sort_by(|(pa, a), (pb, b)| pa.cmp(pb).then_with(|| a.key.as_bytes().cmp(b.key.as_bytes())));
    } else {
        sorted.sort_by(|(_, a), (_, b)| jcs::cmp_keys(&a.key, &b.key));
    }
    out.push(b'{');
    let mut previous: Option<&str> = None;
    for (_, kv) in sorted {
        if previous == Some(kv.key.as_str()) {
            continue;
        }
        if previous.is_some() {
            out.push(b',');
        }
        previous = Some(&kv.key);
        jcs::write_str(out, &kv.key);
        out.push(b':');
        match &kv.value {
            Some(v) => write_value(out, v),
            None => out.extend_from_slice(b"{}"),
        }
    }
    out.push(b'}');
}

/// The first sixteen bytes of a key as a big-endian number, zero-padded:
/// keys whose numbers differ are in the same order as their bytes.
///
/// Read with whole-word loads (overlapping for short keys), not by copying
/// into a zeroed array: in wasm that copy is a `memory.copy` call, and the
/// load after it stalled on the bytes it had just stored.
fn prefix(key: &str) -> u128 {
    let b = key.as_bytes();
    let n = b.len();
    let word = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("eight bytes"));
    let half = |at: usize| u64::from(u32::from_be_bytes(b[at..at + 4].try_into().expect("four bytes")));
    let (high, low) = match n {
        16.. => (word(0), word(8)),
        // The last eight bytes end at n: shifted up, the bytes from 8 on
        // lead and zeros follow (nothing is left of them at n == 8).
        8..16 => (word(0), word(n - 8).checked_shl(8 * (16 - n) as u32).unwrap_or(0)),
        // Likewise within the high word: the first four bytes, then the
        // last four moved to end at byte n (overlapping the first four).
        4..8 => ((half(0) << 32) | (half(n - 4) << (64 - 8 * n)), 0),
        _ => (b.iter().enumerate().fold(0, |v, (i, &c)| v | (u64::from(c) << (56 - 8 * i))), 0),
    };
    (u128::from(high) << 64) | u128::from(low)
}

/// Writes a typed attribute value (`{"s":"text"}`, `{"i":"42"}`, ...).
fn write_value(out: &mut Vec<u8>, value: &AnyValue) {
    match &value.value {
        None => out.extend_from_slice(b"{}"),
        Some(Value::StringValue(s)) => {
            out.extend_from_slice(b"{\"s\":");
            jcs::write_str(out, s);
            out.push(b'}');
        }
        Some(Value::BoolValue(b)) => {
            out.extend_from_slice(if *b { b"{\"b\":true}" } else { b"{\"b\":false}" });
        }
        Some(Value::IntValue(i)) => {
            out.extend_from_slice(b"{\"i\":");
            jcs::write_int_str(out, *i);
            out.push(b'}');
        }
        Some(Value::DoubleValue(d)) => {
            out.extend_from_slice(b"{\"d\":");
            if !jcs::write_f64(out, *d) {
                // JSON has no NaN or infinities: the proto3 JSON spellings.
                let name = if d.is_nan() {
                    "NaN"
                } else if *d > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                };
                jcs::write_str(out, name);
            }
            out.push(b'}');
        }
        Some(Value::BytesValue(bytes)) => {
            out.extend_from_slice(b"{\"x\":\"");
            let start = out.len();
            let encoded_len = base64::encoded_len(bytes.len(), true).expect("attribute sizes fit in usize");
            out.resize(start + encoded_len, 0);
            base64::engine::general_purpose::STANDARD
                .encode_slice(bytes, &mut out[start..])
                .expect("buffer sized by encoded_len");
            out.extend_from_slice(b"\"}");
        }
        Some(Value::ArrayValue(array)) => {
            out.extend_from_slice(b"{\"a\":[");
            for (i, v) in array.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, v);
            }
            out.extend_from_slice(b"]}");
        }
        Some(Value::KvlistValue(list)) => {
            out.extend_from_slice(b"{\"m\":");
            write_attributes(out, &list.values, Added::default());
            out.push(b'}');
        }
        // Rejected when the request is decoded (profiles only); written
        // distinctly rather than dropped should one ever get here.
        Some(Value::StringValueStrindex(i)) => {
            out.extend_from_slice(b"{\"string_value_strindex\":");
            jcs::write_int_str(out, *i);
            out.push(b'}');
        }
    }
}

/// Appends lowercase hex.
pub(crate) fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Written into the spare capacity, not zeroed first (in wasm, a
    // `memory.fill` call per ID).
    let n = bytes.len() * 2;
    out.reserve(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    for (pair, &b) in spare.chunks_exact_mut(2).zip(bytes) {
        pair[0].write(DIGITS[usize::from(b >> 4)]);
        pair[1].write(DIGITS[usize::from(b & 0xf)]);
    }
    // SAFETY: the n bytes after the length were written just above.
    unsafe { out.set_len(out.len() + n) };
}

/// A JSON object being written. Callers add members in canonical order;
/// empty values are skipped, which is how the "omit empty" rule is kept in
/// one place.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    #[cfg(debug_assertions)]
    last_key: &'static str,
}

impl<'a> Object<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object {
            out,
            first: true,
            #[cfg(debug_assertions)]
            last_key: "",
        }
    }

    /// Starts a member and returns the buffer to write its value into.
    fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        #[cfg(debug_assertions)]
        {
            debug_assert!(self.first || jcs::cmp_keys(self.last_key, key).is_lt(), "{key} after {}", self.last_key);
            self.last_key = key;
        }
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        copy::append(self.out, key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn string(&mut self, key: &'static str, value: &str) {
        if !value.is_empty() {
            let out = self.key(key);
            jcs::write_str(out, value);
        }
    }

    fn strings(&mut self, key: &'static str, values: &[String]) {
        if !values.is_empty() {
            let out = self.key(key);
            out.push(b'[');
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                jcs::write_str(out, v);
            }
            out.push(b']');
        }
    }

    fn count(&mut self, key: &'static str, value: u32) {
        if value != 0 {
            let out = self.key(key);
            jcs::write_small_uint(out, value);
        }
    }

    /// A protobuf enum: a small signed number.
    fn enumeration(&mut self, key: &'static str, value: i32) {
        if value != 0 {
            let out = self.key(key);
            let mut buffer = itoa::Buffer::new();
            out.extend_from_slice(buffer.format(value).as_bytes());
        }
    }

    fn time(&mut self, key: &'static str, unix_nano: u64) {
        if unix_nano != 0 {
            let out = self.key(key);
            jcs::write_int_str(out, unix_nano);
        }
    }

    fn id(&mut self, key: &'static str, id: &[u8]) {
        if !id.is_empty() {
            let out = self.key(key);
            out.push(b'"');
            push_hex(out, id);
            out.push(b'"');
        }
    }

    fn attributes(&mut self, key: &'static str, attributes: &[KeyValue]) {
        self.attributes_with(key, attributes, Added::default());
    }

    fn attributes_with(&mut self, key: &'static str, attributes: &[KeyValue], added: Added) {
        if !attributes.is_empty() || added.first.is_some() || !added.rest.is_empty() {
            let out = self.key(key);
            write_attributes(out, attributes, added);
        }
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::{prefix, push_hex};

    #[test]
    fn ids_are_appended_as_lowercase_hex_after_what_was_there() {
        let bytes: Vec<u8> = (0..=255).collect();
        for n in [0, 1, 8, 16, 32, 256] {
            let mut out = b"x".to_vec();
            push_hex(&mut out, &bytes[256 - n..]);
            assert_eq!(out, [b"x".to_vec(), hex::encode(&bytes[256 - n..]).into_bytes()].concat());
        }
    }

    #[test]
    fn a_keys_prefix_is_its_first_sixteen_bytes_zero_padded_at_every_length() {
        let text = "abcdefghijklmnopqrstu\u{e9}\u{10000}";
        for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            for start in (0..end.min(6)).filter(|&i| text.is_char_boundary(i)) {
                let key = &text[start..end];
                let mut first = [0u8; 16];
                let n = key.len().min(16);
                first[..n].copy_from_slice(&key.as_bytes()[..n]);
                assert_eq!(prefix(key), u128::from_be_bytes(first), "{key:?}");
            }
        }
    }
}
