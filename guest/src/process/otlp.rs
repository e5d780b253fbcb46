//! The kept records' OTLP copy (`Output::otlp`): the request as the
//! stages left it, each record followed by its annotations (the enrichment
//! and chain attributes, already encoded as `attributes` fields).
//!
//! Protobuf appends a repeated field's entries in the order they occur,
//! wherever they are in a message, so a record's encoding followed by more
//! `attributes` entries decodes to the record with those attributes after
//! its own: what pushing them and encoding the whole request gave, without
//! building a `KeyValue` (and hex `String`s) per chain attribute. Each
//! message's length is computed once, bottom up, where encoding the request
//! with prost computes a value's length again at every level above it.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::Request;

/// The tag of `resource_spans` / `resource_logs`, `scope_spans` /
/// `scope_logs` and `spans` / `log_records` (each 1, 2, 2), and of the
/// `resource` / `scope` messages and `schema_url`s.
const RESOURCES: u32 = 1;
const RESOURCE: u32 = 1;
const SCOPES: u32 = 2;
const SCOPE: u32 = 1;
const ITEMS: u32 = 2;
const SCHEMA_URL: u32 = 3;

/// The encoded annotations of each kept record, in walk order.
pub(super) struct Annotations {
    /// The `attributes` tag of the records' message (span 9, log record 6).
    tag: u32,
    /// The attributes every record of the batch gets, encoded once.
    common: Vec<u8>,
    bytes: Vec<u8>,
    /// Where each record's annotations end in `bytes`.
    ends: Vec<usize>,
}

impl Annotations {
    /// Annotations of records whose attributes are field `tag`, `common`
    /// the attributes every record gets.
    pub(super) fn new(tag: u32, common: &[KeyValue]) -> Self {
        let mut encoded = Vec::new();
        for kv in common {
            prost::encoding::message::encode(tag, kv, &mut encoded);
        }
        Annotations { tag, common: encoded, bytes: Vec::new(), ends: Vec::new() }
    }

    /// Appends the attributes every record gets.
    pub(super) fn common(&mut self) {
        self.bytes.extend_from_slice(&self.common);
    }

    /// Appends an attribute with a string value.
    pub(super) fn string(&mut self, key: &str, value: &[u8]) {
        // AnyValue { string_value (1) }
        let any = key_len(1) + encoded_len_varint(value.len() as u64) + value.len();
        self.attribute_header(key, any);
        encode_key(1, WireType::LengthDelimited, &mut self.bytes);
        encode_varint(value.len() as u64, &mut self.bytes);
        self.bytes.extend_from_slice(value);
    }

    /// Appends an attribute with an int value.
    pub(super) fn int(&mut self, key: &str, value: i64) {
        // AnyValue { int_value (3) }
        let any = key_len(3) + encoded_len_varint(value as u64);
        self.attribute_header(key, any);
        encode_key(3, WireType::Varint, &mut self.bytes);
        encode_varint(value as u64, &mut self.bytes);
    }

    /// Appends an attribute as prost encodes it.
    pub(super) fn key_value(&mut self, kv: &KeyValue) {
        prost::encoding::message::encode(self.tag, kv, &mut self.bytes);
    }

    /// Ends the current record's annotations.
    pub(super) fn end_record(&mut self) {
        self.ends.push(self.bytes.len());
    }

    /// The `attributes` key and length, the `KeyValue`'s key and the key
    /// and length of its value, whose `AnyValue` is `any` bytes long.
    fn attribute_header(&mut self, key: &str, any: usize) {
        let kv = key_len(1)
            + encoded_len_varint(key.len() as u64)
            + key.len()
            + key_len(2)
            + encoded_len_varint(any as u64)
            + any;
        let out = &mut self.bytes;
        encode_key(self.tag, WireType::LengthDelimited, out);
        encode_varint(kv as u64, out);
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(key.len() as u64, out);
        out.extend_from_slice(key.as_bytes());
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(any as u64, out);
    }

    /// Record `i`'s annotations.
    fn of(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// The length of a length-delimited field of `len` bytes with `tag`.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(tag, s.len()) }
}

fn header(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn string(tag: u32, s: &str, out: &mut Vec<u8>) {
    if !s.is_empty() {
        header(tag, s.len(), out);
        out.extend_from_slice(s.as_bytes());
    }
}

/// Encodes `request` with each kept record followed by its annotations
/// (one per record, in walk order).
pub(super) fn encode<R: Request>(request: &mut R, annotations: &Annotations) -> Vec<u8> {
    // Lengths first, bottom up: each record's, scope's and resource's.
    let (mut items, mut scopes, mut resources) = (Vec::new(), Vec::new(), Vec::new());
    let mut total = 0;
    for resource in request.resources_mut().iter_mut() {
        let (r, r_schema, r_scopes) = R::resource_mut(resource);
        let mut r_len =
            r.as_ref().map_or(0, |r| field_len(RESOURCE, r.encoded_len())) + string_len(SCHEMA_URL, r_schema);
        for scope in r_scopes.iter_mut() {
            let (s, s_schema, s_items) = R::scope_mut(scope);
            let mut s_len =
                s.as_ref().map_or(0, |s| field_len(SCOPE, s.encoded_len())) + string_len(SCHEMA_URL, s_schema);
            for item in s_items.iter() {
                let len = item.encoded_len() + annotations.of(items.len()).len();
                items.push(len);
                s_len += field_len(ITEMS, len);
            }
            scopes.push(s_len);
            r_len += field_len(SCOPES, s_len);
        }
        resources.push(r_len);
        total += field_len(RESOURCES, r_len);
    }
    // Then the bytes, in prost's field order.
    let mut out = Vec::with_capacity(total);
    let (mut item_at, mut scope_at) = (0, 0);
    for (resource, r_len) in request.resources_mut().iter_mut().zip(resources) {
        let (r, r_schema, r_scopes) = R::resource_mut(resource);
        header(RESOURCES, r_len, &mut out);
        if let Some(r) = r {
            prost::encoding::message::encode(RESOURCE, r, &mut out);
        }
        for scope in r_scopes.iter_mut() {
            let (s, s_schema, s_items) = R::scope_mut(scope);
            header(SCOPES, scopes[scope_at], &mut out);
            scope_at += 1;
            if let Some(s) = s {
                prost::encoding::message::encode(SCOPE, s, &mut out);
            }
            for item in s_items.iter() {
                header(ITEMS, items[item_at], &mut out);
                item.encode_raw(&mut out);
                out.extend_from_slice(annotations.of(item_at));
                item_at += 1;
            }
            string(SCHEMA_URL, s_schema, &mut out);
        }
        string(SCHEMA_URL, r_schema, &mut out);
    }
    debug_assert_eq!(out.len(), total);
    out
}
