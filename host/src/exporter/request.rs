//! Shaping export requests for the wire: outbox frames of one signal are
//! merged into one request, and a request past the size limit is split into
//! several. Both signals share one split, over the three levels every OTLP
//! export request has (resources, their scopes, their spans or log records).

use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::otlp::Signal;
use crate::store::Frame;

/// A run of frames of one signal, merged into one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Merged {
    /// The signal of every frame in the run.
    pub signal: Signal,
    /// The frames' payloads, back to back.
    pub payload: Bytes,
    /// The seq of the run's first record.
    pub start: u64,
    /// One past the seq of the run's last record.
    pub end: u64,
    /// Records in the run.
    pub records: u64,
}

/// Merges runs of frames of the same signal into requests: concatenated
/// protobuf messages of one type are one message with the repeated fields
/// appended. Order is kept.
pub(super) fn merge(frames: &[Frame]) -> Vec<Merged> {
    let mut out: Vec<(Signal, BytesMut, u64, u64, u64)> = Vec::new();
    for frame in frames {
        let end = frame.end();
        match out.last_mut() {
            Some((signal, payload, _, last_end, records)) if *signal == frame.signal => {
                payload.extend_from_slice(&frame.payload);
                *last_end = end;
                *records += u64::from(frame.count);
            }
            _ => out.push((
                frame.signal,
                BytesMut::from(frame.payload.as_slice()),
                frame.first_seq,
                end,
                u64::from(frame.count),
            )),
        }
    }
    out.into_iter()
        .map(|(signal, payload, start, end, records)| Merged { signal, payload: payload.freeze(), start, end, records })
        .collect()
}

/// Splits a request larger than `max` bytes into several of at most about
/// `max` (a single record larger than that goes alone), keeping each
/// record's resource and scope. Order is kept. Downstream receivers refuse
/// messages past their limit (4 MiB by default in gRPC), and a request
/// that is never accepted would never be forwarded. A payload that does
/// not decode goes as it is (the downstream says what is wrong with it).
pub(crate) fn split(signal: Signal, payload: Bytes, max: usize) -> Vec<Bytes> {
    split_checked(signal, payload.clone(), max, false).unwrap_or_else(|_| vec![payload])
}

/// [`split`] for a request the receivers took, before any of it is stored:
/// one that decodes but fails [`audit_format::validity`] is refused here
/// with the component's message, so that no part of it is stored. One that
/// does not decode goes whole (the component says what is wrong with it).
pub(crate) fn split_valid(signal: Signal, payload: Bytes, max: usize) -> Result<Vec<Bytes>, String> {
    split_checked(signal, payload, max, true)
}

/// [`split`], first checking the request's validity if `check`.
fn split_checked(signal: Signal, payload: Bytes, max: usize, check: bool) -> Result<Vec<Bytes>, String> {
    fn pieces<R: Request>(payload: &Bytes, max: usize, check: bool) -> Option<Result<Vec<Bytes>, String>> {
        let request = R::decode(payload.clone()).ok()?;
        if check && let Err(invalid) = request.validate() {
            return Some(Err(invalid));
        }
        Some(Ok(split_request(&request, max)))
    }
    if payload.len() <= max {
        return Ok(vec![payload]);
    }
    let pieces = match signal {
        Signal::Traces => pieces::<ExportTraceServiceRequest>(&payload, max, check),
        Signal::Logs => pieces::<ExportLogsServiceRequest>(&payload, max, check),
    };
    pieces.unwrap_or_else(|| Ok(vec![payload]))
}

/// Halves a request by its records (spans or log records), keeping each
/// record's resource and scope: for a downstream that refused the
/// request's size (HTTP 413). None when it holds one record or does not
/// decode: it cannot be made smaller.
pub(super) fn halve(signal: Signal, payload: &Bytes) -> Option<[Bytes; 2]> {
    fn two<R: Request>(request: &R) -> Option<[Bytes; 2]> {
        let items: usize = request.resources().iter().flat_map(|r| r.children()).map(|s| s.children().len()).sum();
        if items < 2 {
            return None;
        }
        let half = items / 2;
        let pieces = regroup(request, |index, _, _| index == half);
        <[Bytes; 2]>::try_from(pieces).ok()
    }
    match signal {
        Signal::Traces => two(&ExportTraceServiceRequest::decode(payload.clone()).ok()?),
        Signal::Logs => two(&ExportLogsServiceRequest::decode(payload.clone()).ok()?),
    }
}

/// An OTLP export request: resources, each holding scopes, each holding
/// items (spans or log records).
trait Request: Message + Default {
    type Resource: Level<Child = Self::Scope>;
    type Scope: Level<Child = Self::Item>;
    type Item: Message + Clone;

    fn resources(&self) -> &[Self::Resource];
    fn resources_mut(&mut self) -> &mut Vec<Self::Resource>;
    /// [`audit_format::validity`] of the request: its records, or what is wrong.
    fn validate(&self) -> Result<u64, String>;
}

/// A resource or scope level of a request: a header (the resource or scope,
/// and its schema URL) over a list of children.
trait Level: Message + Clone + PartialEq {
    type Child;

    fn children(&self) -> &[Self::Child];
    fn children_mut(&mut self) -> &mut Vec<Self::Child>;
    /// The same header without children.
    fn header(&self) -> Self;
    fn same_header(&self, other: &Self) -> bool;
    /// Encoded size of the header's resource or scope.
    fn header_len(&self) -> usize;
}

impl Request for ExportTraceServiceRequest {
    type Resource = ResourceSpans;
    type Scope = ScopeSpans;
    type Item = Span;

    fn resources(&self) -> &[ResourceSpans] {
        &self.resource_spans
    }

    fn resources_mut(&mut self) -> &mut Vec<ResourceSpans> {
        &mut self.resource_spans
    }

    fn validate(&self) -> Result<u64, String> {
        audit_format::validity::traces(self)
    }
}

impl Request for ExportLogsServiceRequest {
    type Resource = ResourceLogs;
    type Scope = ScopeLogs;
    type Item = LogRecord;

    fn resources(&self) -> &[ResourceLogs] {
        &self.resource_logs
    }

    fn resources_mut(&mut self) -> &mut Vec<ResourceLogs> {
        &mut self.resource_logs
    }

    fn validate(&self) -> Result<u64, String> {
        audit_format::validity::logs(self)
    }
}

/// Implements [`Level`] for a message with fields `$header` (an optional
/// message), `$children` and `schema_url`, and no others.
macro_rules! level {
    ($level:ty, $header:ident, $children:ident: $child:ty) => {
        impl Level for $level {
            type Child = $child;

            fn children(&self) -> &[$child] {
                &self.$children
            }

            fn children_mut(&mut self) -> &mut Vec<$child> {
                &mut self.$children
            }

            fn header(&self) -> Self {
                Self { $header: self.$header.clone(), $children: Vec::new(), schema_url: self.schema_url.clone() }
            }

            fn same_header(&self, other: &Self) -> bool {
                self.$header == other.$header && self.schema_url == other.schema_url
            }

            fn header_len(&self) -> usize {
                self.$header.as_ref().map_or(0, |h| h.encoded_len())
            }
        }
    };
}

level!(ResourceSpans, resource, scope_spans: ScopeSpans);
level!(ScopeSpans, scope, spans: Span);
level!(ResourceLogs, resource, scope_logs: ScopeLogs);
level!(ScopeLogs, scope, log_records: LogRecord);

fn split_request<R: Request>(request: &R, max: usize) -> Vec<Bytes> {
    regroup(request, |_, size, len| size + len > max && size > 0)
}

/// The request's items in order, in pieces: a new piece starts before an
/// item when `cut(item index, bytes so far in the piece, item bytes)` says so.
fn regroup<R: Request>(request: &R, mut cut: impl FnMut(usize, usize, usize) -> bool) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut current = R::default();
    let mut size = 0;
    let mut index = 0;
    for resource in request.resources() {
        for scope in resource.children() {
            for item in scope.children() {
                // An item's own bytes plus its tag and length prefixes.
                let len = item.encoded_len() + 16;
                if cut(index, size, len) && size > 0 {
                    out.push(Bytes::from(std::mem::take(&mut current).encode_to_vec()));
                    size = 0;
                }
                index += 1;
                let resources = current.resources_mut();
                if !resources.last().is_some_and(|r| r.same_header(resource)) {
                    resources.push(resource.header());
                    size += resource.header_len();
                }
                let scopes = resources.last_mut().expect("pushed above").children_mut();
                if !scopes.last().is_some_and(|s| s.same_header(scope)) {
                    scopes.push(scope.header());
                    size += scope.header_len();
                }
                scopes.last_mut().expect("pushed above").children_mut().push(item.clone());
                size += len;
            }
        }
    }
    if size > 0 {
        out.push(Bytes::from(current.encode_to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::{self, BatchSpec};

    fn spec(records: usize, seed: u64) -> BatchSpec {
        BatchSpec { records, audit_ratio: 1.0, attributes: 10, varied: true, seed }
    }

    fn span_ids(payloads: &[Bytes]) -> Vec<Vec<u8>> {
        payloads
            .iter()
            .flat_map(|p| ExportTraceServiceRequest::decode(p.clone()).unwrap().resource_spans)
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .map(|s| s.span_id)
            .collect()
    }

    #[test]
    fn large_requests_are_split_in_order_with_their_resources() {
        let request = loadgen::traces(&spec(3000, 5));
        let payload = Bytes::from(request.encode_to_vec());
        let max = payload.len() / 5;
        let pieces = split(Signal::Traces, payload.clone(), max);
        assert!(pieces.len() >= 5, "{} pieces", pieces.len());
        for piece in &pieces {
            assert!(piece.len() <= max + max / 10, "{} > {max}", piece.len());
            let decoded = ExportTraceServiceRequest::decode(piece.clone()).unwrap();
            assert!(decoded.resource_spans.iter().all(|r| r.resource.is_some()));
        }
        assert_eq!(span_ids(&pieces), span_ids(std::slice::from_ref(&payload)));
        assert_eq!(split(Signal::Traces, payload.clone(), payload.len()), vec![payload]);
    }

    #[test]
    fn logs_are_split_too() {
        let request = loadgen::logs(&spec(2000, 6));
        let payload = Bytes::from(request.encode_to_vec());
        let pieces = split(Signal::Logs, payload.clone(), payload.len() / 4);
        assert!(pieces.len() >= 4);
        let count = |p: &Bytes| -> usize {
            ExportLogsServiceRequest::decode(p.clone())
                .unwrap()
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum()
        };
        assert_eq!(pieces.iter().map(count).sum::<usize>(), 2000);
    }

    /// Every item with its resource and scope, in order.
    fn flatten<R: Request>(request: &R) -> Vec<(R::Resource, R::Scope, R::Item)> {
        let mut out = Vec::new();
        for resource in request.resources() {
            for scope in resource.children() {
                for item in scope.children() {
                    out.push((resource.header(), scope.header(), item.clone()));
                }
            }
        }
        out
    }

    /// Splits `request` into about `parts` pieces through [`split`], checks
    /// each against the limit, and that merging the pieces (as frames are
    /// merged: back to back) gives every item back in order, under its own
    /// resource and scope.
    fn round_trip<R>(signal: Signal, request: &R, parts: usize)
    where
        R: Request,
    {
        let payload = Bytes::from(request.encode_to_vec());
        let max = payload.len() / parts;
        let pieces = split(signal, payload, max);
        assert!(pieces.len() >= parts, "{signal:?}: {} pieces", pieces.len());
        for piece in &pieces {
            assert!(piece.len() <= max + max / 10, "{signal:?}: {} > {max}", piece.len());
        }
        let merged = R::decode(pieces.concat().as_slice()).unwrap();
        // Compared as bytes: the generated attributes include NaN, which is
        // not equal to itself.
        let encoded = |request: &R| -> Vec<[Vec<u8>; 3]> {
            flatten(request).iter().map(|(r, s, i)| [r.encode_to_vec(), s.encode_to_vec(), i.encode_to_vec()]).collect()
        };
        let (got, want) = (encoded(&merged), encoded(request));
        assert_eq!(got.len(), want.len(), "{signal:?}");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!("{signal:?}: item {i} differs from the request's");
        }
    }

    #[test]
    fn split_then_merged_is_the_request_for_both_signals() {
        round_trip(Signal::Traces, &loadgen::traces(&spec(500, 7)), 3);
        round_trip(Signal::Logs, &loadgen::logs(&spec(500, 8)), 3);
    }

    #[test]
    fn a_record_past_the_limit_goes_alone() {
        let traces = loadgen::traces(&spec(20, 9));
        let pieces = split(Signal::Traces, Bytes::from(traces.encode_to_vec()), 1);
        assert_eq!(pieces.len(), 20);
        assert!(pieces.iter().all(|p| span_ids(std::slice::from_ref(p)).len() == 1));
        let logs = loadgen::logs(&spec(20, 10));
        let pieces = split(Signal::Logs, Bytes::from(logs.encode_to_vec()), 1);
        assert_eq!(pieces.len(), 20);
        for piece in &pieces {
            assert_eq!(flatten(&ExportLogsServiceRequest::decode(piece.clone()).unwrap()).len(), 1);
        }
    }

    #[test]
    fn halving_keeps_every_record_in_order_down_to_one() {
        let request = loadgen::traces(&spec(5, 11));
        let payload = Bytes::from(request.encode_to_vec());
        let [first, second] = halve(Signal::Traces, &payload).expect("five spans halve");
        assert_eq!(span_ids(std::slice::from_ref(&first)).len(), 2);
        assert_eq!(span_ids(&[first.clone(), second.clone()]), span_ids(std::slice::from_ref(&payload)));
        let [one, _] = halve(Signal::Traces, &first).expect("two spans halve");
        assert_eq!(halve(Signal::Traces, &one), None, "one span cannot be halved");
        let logs = Bytes::from(loadgen::logs(&spec(3, 12)).encode_to_vec());
        let [a, b] = halve(Signal::Logs, &logs).expect("three log records halve");
        let count = |p: &Bytes| flatten(&ExportLogsServiceRequest::decode(p.clone()).unwrap()).len();
        assert_eq!((count(&a), count(&b)), (1, 2));
        assert_eq!(halve(Signal::Logs, &Bytes::from_static(b"\x0a\xff not protobuf")), None);
    }

    #[test]
    fn a_payload_that_does_not_decode_goes_as_it_is() {
        let garbage = Bytes::from_static(b"\x0a\xff\xff\xff\xff\x0f not protobuf");
        for signal in [Signal::Traces, Signal::Logs] {
            assert_eq!(split(signal, garbage.clone(), 4), vec![garbage.clone()], "{signal:?}");
        }
    }

    #[test]
    fn frames_merge_in_runs_of_one_signal() {
        let frame =
            |signal, first_seq, count, payload: &[u8]| Frame { signal, first_seq, count, payload: payload.to_vec() };
        let frames = [
            frame(Signal::Traces, 0, 3, b"ab"),
            frame(Signal::Traces, 3, 2, b"c"),
            frame(Signal::Logs, 7, 1, b"d"),
            frame(Signal::Traces, 8, 4, b"ef"),
        ];
        let merged = merge(&frames);
        let got: Vec<_> = merged.iter().map(|m| (m.signal, &m.payload[..], m.end, m.records)).collect();
        assert_eq!(
            got,
            [(Signal::Traces, &b"abc"[..], 5, 5), (Signal::Logs, &b"d"[..], 8, 1), (Signal::Traces, &b"ef"[..], 12, 4)]
        );
        assert!(merge(&[]).is_empty());
    }
}
