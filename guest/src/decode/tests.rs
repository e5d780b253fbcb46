//! The plain-form decoder against prost: whatever it decodes, prost
//! decodes alike; what it leaves to prost is only what it must.

use super::*;
use crate::prefilter::tests::{Rng, attributes, log as any_log, span as any_span};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;

/// A span with every field set, attributes on its events and links too.
fn full_span(rng: &mut Rng) -> Span {
    let mut span = any_span(rng);
    span.trace_state = "vendor=value".into();
    span.flags = 0x101;
    span.end_time_unix_nano = rng.next();
    span.dropped_attributes_count = rng.below(3) as u32;
    span.dropped_events_count = rng.below(3) as u32;
    span.dropped_links_count = u32::MAX;
    span.events.push(span::Event {
        time_unix_nano: 7,
        name: "x".into(),
        attributes: attributes(rng, 1),
        dropped_attributes_count: 2,
    });
    span.links.push(span::Link {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        trace_state: "k=v".into(),
        attributes: attributes(rng, 1),
        dropped_attributes_count: 1,
        flags: 0x300,
    });
    span
}

/// A log record with every field set.
fn full_log(rng: &mut Rng) -> LogRecord {
    let mut log = any_log(rng);
    log.observed_time_unix_nano = rng.next();
    log.dropped_attributes_count = 4;
    log.flags = 1;
    log.event_name = "audit.event".into();
    log
}

/// Each decoder either leaves the bytes to prost or decodes what prost does.
fn agrees(bytes: &[u8]) -> (bool, bool) {
    let spans = span(bytes).inspect(|s| assert_eq!(Ok(s), Span::decode(bytes).as_ref(), "span {bytes:?}"));
    let logs = log(bytes).inspect(|l| assert_eq!(Ok(l), LogRecord::decode(bytes).as_ref(), "log {bytes:?}"));
    (spans.is_some(), logs.is_some())
}

#[test]
fn plain_records_decode_as_prost_decodes_them() {
    let mut rng = Rng(0xdec0de);
    for _ in 0..2000 {
        let span = full_span(&mut rng);
        let bytes = span.encode_to_vec();
        assert_eq!(super::span(&bytes).as_ref(), Some(&span));
        let log = full_log(&mut rng);
        let bytes = log.encode_to_vec();
        assert_eq!(super::log(&bytes).as_ref(), Some(&log));
    }
    // The empty message; values of every kind at the deepest nesting taken.
    assert_eq!(super::span(&[]), Some(Span::default()));
    assert_eq!(super::log(&[]), Some(LogRecord::default()));
    let mut deep = AnyValue { value: Some(any_value::Value::IntValue(-1)) };
    for _ in 0..(MAX_DEPTH - 2) / 2 {
        deep = AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![deep] })) };
    }
    let kv = KeyValue { key: "k".into(), value: Some(deep), key_strindex: 0 };
    let span = Span { attributes: vec![kv.clone(), kv], ..Span::default() };
    assert_eq!(super::span(&span.encode_to_vec()), Some(span));
}

#[test]
fn damaged_bytes_are_decoded_as_prost_decodes_them_or_left_to_it() {
    let mut rng = Rng(0xbadbad);
    let (mut decoded, mut left) = (0, 0);
    for i in 0..20_000 {
        let mut bytes =
            if i % 2 == 0 { full_span(&mut rng).encode_to_vec() } else { full_log(&mut rng).encode_to_vec() };
        for _ in 0..1 + rng.below(3) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len() as u64) as usize;
            match rng.below(4) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next() as u8,
                2 => bytes.truncate(at),
                _ => bytes.insert(at, rng.next() as u8),
            }
        }
        match agrees(&bytes) {
            (false, false) => left += 1,
            _ => decoded += 1,
        }
    }
    assert!(decoded > 2000 && left > 2000, "both outcomes exercised: {decoded} decoded, {left} left to prost");
}

#[test]
fn what_is_not_the_plain_form_is_left_to_prost() {
    let kv = |key: &str, value: any_value::Value| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    };
    let plain =
        Span { name: "n".into(), attributes: vec![kv("a", any_value::Value::BoolValue(true))], ..Span::default() };
    let base = plain.encode_to_vec();
    let with = |extra: &[u8]| [base.as_slice(), extra].concat();
    let cases: [(&str, Vec<u8>); 7] = [
        // status twice: prost merges the two parts
        ("a message field twice", with(&[0x7a, 0x02, 0x18, 0x01, 0x7a, 0x03, 0x12, 0x01, b'm'])),
        ("an unknown field", with(&[0xa8, 0x01, 0x05])),
        ("status's deprecated field 1", with(&[0x7a, 0x02, 0x08, 0x01])),
        // attribute {key "k", value {string "s", int 1}}: the oneof set twice
        ("a value set twice", with(&[0x4a, 0x0a, 0x0a, 0x01, b'k', 0x12, 0x05, 0x0a, 0x01, b's', 0x18, 0x01])),
        // attribute {key "k", value {string_value_strindex 3}}
        ("a string-table reference", with(&[0x4a, 0x07, 0x0a, 0x01, b'k', 0x12, 0x02, 0x40, 0x03])),
        // attribute {key "k", key_strindex 1}
        ("a key string-table reference", with(&[0x4a, 0x05, 0x0a, 0x01, b'k', 0x18, 0x01])),
        ("a group", with(&[0xab, 0x01, 0xac, 0x01])),
    ];
    for (what, bytes) in cases {
        assert!(Span::decode(bytes.as_slice()).is_ok(), "prost decodes {what}");
        assert_eq!(span(&bytes), None, "{what}");
    }
    assert_eq!(span(&base), Some(plain));
    // Text that is not UTF-8, an id cut short by the end of the bytes.
    assert_eq!(span(&[0x2a, 0x01, 0xff]), None);
    assert_eq!(span(&[0x0a, 0x10, 0x01]), None);
    // Nesting deeper than the scan follows.
    let mut deep = AnyValue { value: Some(any_value::Value::IntValue(1)) };
    for _ in 0..MAX_DEPTH {
        deep = AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![deep] })) };
    }
    let span =
        Span { attributes: vec![KeyValue { key: "k".into(), value: Some(deep), key_strindex: 0 }], ..Span::default() };
    assert_eq!(super::span(&span.encode_to_vec()), None);
}
