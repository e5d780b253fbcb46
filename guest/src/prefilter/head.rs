//! A span's usual first fields read in one straight pass, before the
//! scan's field loop (see [`span_head`]).

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use super::{Wants, attribute_bytes, short_key_value, short_string_value};

/// Takes and checks the fields most spans start with, in the order
/// encoders write them (ids, trace state, parent id, name, kind, times,
/// then the attributes), without the field loop; the loop reads on from
/// the offset returned. Stops at the first field out of that order or not
/// in its common form (a length or kind of more than one byte, an id of
/// another length, ...), which the loop then reads as any other: only
/// fields that are certainly valid are passed. An attribute whose value is
/// a short string is checked by its shape here and its bytes being ASCII,
/// looked at once for a run of such attributes; a run with other bytes is
/// left to the loop. `None` when an attribute is certainly invalid.
#[inline(never)]
pub(super) fn span_head(bytes: &[u8], wants: &Wants, span: &mut Span) -> Option<usize> {
    let mut at = 0;
    let field = |at: usize, key: u8| short_field(bytes, at, key);
    let id = |at: usize, key: u8, len: usize| field(at, key).filter(|id| id.len() == len).map(|id| at + 2 + id.len());
    let text = |at: usize, key: u8| field(at, key).and_then(|t| crate::wire::utf8(t).map(|t| (t, at + 2 + t.len())));
    at = id(at, 0x0a, 16).unwrap_or(at);
    at = id(at, 0x12, 8).unwrap_or(at);
    at = text(at, 0x1a).map_or(at, |(_, end)| end);
    at = id(at, 0x22, 8).unwrap_or(at);
    if let Some((name, end)) = text(at, 0x2a) {
        if wants.name {
            span.name = name.to_owned();
        }
        at = end;
    }
    if let [0x30, kind, ..] = bytes[at..]
        && kind < 0x80
    {
        span.kind = i32::from(kind);
        at += 2;
    }
    for key in [0x39, 0x41] {
        if bytes[at..].len() >= 9 && bytes[at] == key {
            at += 9;
        }
    }
    // The attributes, in runs of short string values.
    let (mut run, mut taken) = (at, span.attributes.len());
    let run_is_ascii = |at: usize, run: usize, taken: usize, span: &mut Span| {
        let ascii = crate::wire::is_ascii(&bytes[run..at]);
        if !ascii {
            span.attributes.truncate(taken);
        }
        ascii
    };
    while let Some(kv) = field(at, 0x4a) {
        let end = at + 2 + kv.len();
        match short_key_value(kv) {
            Some((key, value)) if short_string_value(value).is_some() => {
                if wants.key(key) {
                    span.attributes.push(KeyValue::decode(kv).ok()?);
                }
            }
            _ => {
                if !run_is_ascii(at, run, taken, span) {
                    return Some(run);
                }
                attribute_bytes(kv, wants, &mut span.attributes, true)?;
                (run, taken) = (end, span.attributes.len());
            }
        }
        at = end;
    }
    Some(if run_is_ascii(at, run, taken, span) { at } else { run })
}

/// The bytes of the field at `at` when it has the one-byte `key` and a
/// one-byte length.
#[inline(always)]
fn short_field(bytes: &[u8], at: usize, key: u8) -> Option<&[u8]> {
    match bytes.get(at..)? {
        [k, len, rest @ ..] if *k == key && *len < 0x80 => rest.get(..usize::from(*len)),
        _ => None,
    }
}
