//! The kept records' OTLP copy (`Output::otlp`): the request as the
//! stages left it, each record followed by its annotations (the enrichment
//! and chain attributes, already encoded as `attributes` fields).
//!
//! Protobuf appends a repeated field's entries in the order they occur,
//! wherever they are in a message, so a record's encoding followed by more
//! `attributes` entries decodes to the record with those attributes after
//! its own: what pushing them and encoding the whole request gave, without
//! building a `KeyValue` (and hex `String`s) per chain attribute. A
//! record's own attributes are written the same way, after its other
//! fields. Each message's length is computed once, bottom up, where
//! encoding the request with prost computes a value's length again at
//! every level above it.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use audit_format::hash::{self as chain, Hash};
use audit_format::keys;

use super::{Item, Request};
use crate::record::push_hex;

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
    /// What is the same for every record of the batch, encoded once: the
    /// enrichment's attributes and the stream id; the hash attributes up
    /// to their 64 hex digits; the algorithm; when the chain is keyed, the
    /// MAC's up to its digits and the key id.
    shared: Vec<u8>,
    prev_hash: Vec<u8>,
    leaf_hash: Vec<u8>,
    algorithm: Vec<u8>,
    keyed: Option<(Vec<u8>, Vec<u8>)>,
    bytes: Vec<u8>,
    /// Where each record's annotations end in `bytes`.
    ends: Vec<usize>,
}

/// Hex digits of a SHA-256 hash or HMAC.
const HASH_DIGITS: usize = 64;

impl Annotations {
    /// Annotations for records whose message has `attributes` under `tag`,
    /// enriched with `common`, in the chain `chain_id`, MACed under `key_id`.
    pub(super) fn new(tag: u32, common: &[KeyValue], chain_id: &str, key_id: Option<&str>) -> Self {
        let encoded = |write: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            write(&mut out);
            out
        };
        let shared = encoded(&|out| {
            for kv in common {
                prost::encoding::message::encode(tag, kv, out);
            }
            string_attribute(tag, keys::SEQUENCE_STREAM_ID, chain_id.as_bytes(), out);
        });
        let hash = |key: &str| encoded(&|out| string_header(tag, key, HASH_DIGITS, out));
        Annotations {
            tag,
            shared,
            prev_hash: hash(keys::SEQUENCE_PREV_HASH),
            leaf_hash: hash(keys::INTEGRITY_VALUE),
            algorithm: encoded(&|out| {
                string_attribute(tag, keys::INTEGRITY_ALGORITHM, chain::LEAF_ALGORITHM.as_bytes(), out)
            }),
            keyed: key_id.map(|id| {
                (
                    hash(keys::INTEGRITY_MAC),
                    encoded(&|out| string_attribute(tag, keys::INTEGRITY_KEY_ID, id.as_bytes(), out)),
                )
            }),
            bytes: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Annotates the next record: `missing` (its own enrichment), the
    /// batch's enrichment, then its chain attributes (stream id, sequence
    /// number, previous hash, leaf hash, algorithm; MAC and key id when
    /// keyed).
    pub(super) fn record(
        &mut self,
        missing: Option<&KeyValue>,
        seq: u64,
        prev: &Hash,
        leaf: &Hash,
        mac: Option<&Hash>,
    ) {
        if let Some(missing) = missing {
            prost::encoding::message::encode(self.tag, missing, &mut self.bytes);
        }
        let out = &mut self.bytes;
        out.extend_from_slice(&self.shared);
        int_attribute(self.tag, keys::SEQUENCE_NUMBER, seq as i64, out);
        out.extend_from_slice(&self.prev_hash);
        push_hex(out, prev);
        out.extend_from_slice(&self.leaf_hash);
        push_hex(out, leaf);
        out.extend_from_slice(&self.algorithm);
        if let (Some(mac), Some((header, key_id))) = (mac, &self.keyed) {
            out.extend_from_slice(header);
            push_hex(out, mac);
            out.extend_from_slice(key_id);
        }
        self.ends.push(self.bytes.len());
    }

    fn of(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// The length of a length-delimited field of `len` bytes with `tag`.
/// An attribute (`KeyValue` under `tag`) with a string value, up to the
/// value's `len` bytes, which the caller appends.
fn string_header(tag: u32, key: &str, len: usize, out: &mut Vec<u8>) {
    attribute_header(tag, key, field_len(1, len), out);
    header(1, len, out);
}

/// An attribute with a string value.
fn string_attribute(tag: u32, key: &str, value: &[u8], out: &mut Vec<u8>) {
    string_header(tag, key, value.len(), out);
    out.extend_from_slice(value);
}

/// An attribute with an int value.
fn int_attribute(tag: u32, key: &str, value: i64, out: &mut Vec<u8>) {
    attribute_header(tag, key, key_len(3) + encoded_len_varint(value as u64), out);
    encode_key(3, WireType::Varint, out);
    encode_varint(value as u64, out);
}

/// An attribute up to its value's contents (an `AnyValue` of `any` bytes).
fn attribute_header(tag: u32, key: &str, any: usize, out: &mut Vec<u8>) {
    header(tag, field_len(1, key.len()) + field_len(2, any), out);
    header(1, key.len(), out);
    out.extend_from_slice(key.as_bytes());
    header(2, any, out);
}

fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(tag, s.len()) }
}

/// The key and length of a length-delimited field; two bytes for the
/// usual small tag and short content.
#[inline]
fn header(tag: u32, len: usize, out: &mut Vec<u8>) {
    if tag < 16 && len < 0x80 {
        out.extend_from_slice(&[(tag << 3 | WireType::LengthDelimited as u32) as u8, len as u8]);
    } else {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
    }
}

/// A record's own attributes as fields `tag`: the bytes prost writes, with
/// a scalar value's lengths computed once here (prost computes each
/// nested length again for every level above it); lists, maps and string
/// table references (rare) by prost.
fn own_attributes_len(tag: u32, attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|kv| match scalar_key_value_len(kv) {
            Some(len) => field_len(tag, len),
            None => prost::encoding::message::encoded_len(tag, kv),
        })
        .sum()
}

/// Writes what [`own_attributes_len`] measures.
fn own_attributes(tag: u32, attributes: &[KeyValue], out: &mut Vec<u8>) {
    for kv in attributes {
        let Some(len) = scalar_key_value_len(kv) else {
            prost::encoding::message::encode(tag, kv, out);
            continue;
        };
        header(tag, len, out);
        string(1, &kv.key, out);
        let Some(any) = &kv.value else { continue };
        header(2, scalar_value_len(any).expect("a scalar value"), out);
        match &any.value {
            None => {}
            Some(Value::StringValue(s)) => string_value(1, s.as_bytes(), out),
            Some(Value::BoolValue(b)) => out.extend_from_slice(&[2 << 3, u8::from(*b)]),
            Some(Value::IntValue(i)) => {
                out.push(3 << 3);
                encode_varint(*i as u64, out);
            }
            Some(Value::DoubleValue(d)) => {
                out.push(4 << 3 | WireType::SixtyFourBit as u8);
                out.extend_from_slice(&d.to_le_bytes());
            }
            Some(Value::BytesValue(b)) => string_value(7, b, out),
            Some(_) => unreachable!("scalar_value_len takes only the kinds above"),
        }
    }
}

/// A oneof's bytes field: written even when empty.
fn string_value(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    header(tag, bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// A `KeyValue`'s encoded length when its value is a scalar (or absent)
/// and it has no string table reference.
fn scalar_key_value_len(kv: &KeyValue) -> Option<usize> {
    if kv.key_strindex != 0 {
        return None;
    }
    let value = match &kv.value {
        None => 0,
        Some(any) => field_len(2, scalar_value_len(any)?),
    };
    Some(string_len(1, &kv.key) + value)
}

/// An `AnyValue`'s encoded length when it is a scalar (its oneof field is
/// written even when it holds the default).
fn scalar_value_len(any: &AnyValue) -> Option<usize> {
    Some(match &any.value {
        None => 0,
        Some(Value::StringValue(s)) => field_len(1, s.len()),
        Some(Value::BoolValue(_)) => 2,
        Some(Value::IntValue(i)) => 1 + encoded_len_varint(*i as u64),
        Some(Value::DoubleValue(_)) => 9,
        Some(Value::BytesValue(b)) => field_len(7, b.len()),
        Some(_) => return None,
    })
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
    let tag = <R::Item as Item>::ATTRIBUTES;
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
            for item in s_items.iter_mut() {
                let own = std::mem::take(item.attributes_mut());
                let len = item.encoded_len() + own_attributes_len(tag, &own) + annotations.of(items.len()).len();
                *item.attributes_mut() = own;
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
            for item in s_items.iter_mut() {
                header(ITEMS, items[item_at], &mut out);
                // The record without its own attributes, then them: after
                // its other fields, as the annotations come after them.
                let own = std::mem::take(item.attributes_mut());
                item.encode_raw(&mut out);
                own_attributes(tag, &own, &mut out);
                *item.attributes_mut() = own;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefilter::tests::{Rng, attributes};

    #[test]
    fn own_attributes_are_the_bytes_prost_writes() {
        let mut rng = Rng(0x5eed);
        let long = "a value longer than one hundred and twenty-seven bytes, so its length takes two bytes of varint: "
            .repeat(2);
        for round in 0..3000 {
            let mut list = attributes(&mut rng, 0);
            // Long keys and values, string table references, empty values.
            if round % 7 == 0 {
                list.push(KeyValue {
                    key: long.clone(),
                    value: Some(AnyValue { value: Some(Value::StringValue(long.clone())) }),
                    key_strindex: 0,
                });
            }
            if round % 11 == 0 {
                list.push(KeyValue { key: String::new(), value: Some(AnyValue { value: None }), key_strindex: 3 });
            }
            if round % 13 == 0 {
                let int = Value::IntValue(-(round as i64));
                list.push(KeyValue { key: "n".into(), value: Some(AnyValue { value: Some(int) }), key_strindex: 0 });
            }
            for tag in [9, 6, 200] {
                let mut expected = Vec::new();
                for kv in &list {
                    prost::encoding::message::encode(tag, kv, &mut expected);
                }
                let mut ours = vec![0xee];
                own_attributes(tag, &list, &mut ours);
                assert_eq!(&ours[1..], &expected[..], "{list:?}");
                assert_eq!(own_attributes_len(tag, &list), expected.len());
            }
        }
    }
}
