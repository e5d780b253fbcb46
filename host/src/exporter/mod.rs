//! The exporter stage: forwards what a chain stored to a downstream OTLP
//! endpoint, reading from the store's outbox (never from memory), in order,
//! with a persisted cursor and retry with backoff. A slow or dead
//! downstream only grows the backlog; the router turns a backlog past its
//! limit into retryable errors upstream. Signed checkpoints go downstream
//! too, as OTLP log records, so a copy lives outside the store.

pub mod client;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ExporterLabels, Metrics};
use crate::otlp::Signal;
use crate::pipeline::chain::Committed;
use crate::store::{self, CursorKind, Frame, OutboxReader};
use client::{Client, SendError};

/// Largest payload one export request carries (frames are merged up to it).
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The retry schedule: the config's `retry_on_failure`.
pub use crate::config::Retry;

/// One exporter of one chain.
pub struct ExportTask {
    /// Exporter id, e.g. `otlp/downstream`.
    pub exporter_id: String,
    /// Chain id.
    pub chain_id: String,
    /// The chain's directory in the store.
    pub chain_dir: PathBuf,
    /// The downstream client.
    pub client: Client,
    /// Retry schedule.
    pub retry: Retry,
    /// What the chain has made durable.
    pub committed: watch::Receiver<Committed>,
    /// This exporter's next undelivered seq (the router reads it for back-pressure).
    pub cursor: Arc<AtomicU64>,
    /// Every exporter cursor of the chain (the outbox is pruned below the lowest).
    pub chain_cursors: Vec<Arc<AtomicU64>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Whether a persisted cursor was found (set by [`ExportTask::load_cursor`]).
    pub resumed: bool,
}

/// Outcome of trying to deliver one request.
enum Attempt {
    Delivered,
    GivenUp,
    Stopped,
}

impl ExportTask {
    /// Loads the persisted cursor (before serving, so back-pressure is right from the start).
    pub fn load_cursor(&mut self) -> Result<(), store::StoreError> {
        let persisted = store::read_cursor(&self.chain_dir, &self.exporter_id, CursorKind::Records)?;
        self.resumed = persisted.is_some();
        self.cursor.store(persisted.unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    /// Delivers until `stop` is cancelled; after `drain` is cancelled it
    /// delivers what is committed, then returns.
    pub async fn run(mut self, drain: CancellationToken, stop: CancellationToken) {
        let labels = ExporterLabels { chain: self.chain_id.clone(), exporter: self.exporter_id.clone() };
        let (committed, cursor) = (self.committed.clone(), self.cursor.clone());
        self.metrics.backlog_probe(
            labels.clone(),
            Box::new(move || committed.borrow().next_seq.saturating_sub(cursor.load(Ordering::Relaxed))),
        );
        let dir = self.chain_dir.clone();
        let mut reader = match tokio::task::spawn_blocking(move || OutboxReader::open(&dir)).await {
            Ok(Ok(reader)) => reader,
            Ok(Err(error)) => {
                tracing::error!(chain = %self.chain_id, exporter = %self.exporter_id, %error, "cannot open the outbox; exporter stopped");
                return;
            }
            Err(_) => return,
        };
        let mut checkpoints = CheckpointFeed::open(&self.chain_dir, &self.exporter_id);
        let mut last_prune = Instant::now();
        let mut pruned_below = 0;
        let mut resumed = self.resumed;
        loop {
            let committed = *self.committed.borrow_and_update();
            let cursor = self.cursor.load(Ordering::Relaxed);
            // Checkpoints go out as soon as the records they cover have, also
            // while a backlog remains, so anchors leave the host under load.
            if let Some(pending) = checkpoints.pending(&self.chain_id, cursor, committed.checkpoints) {
                match self.deliver(Signal::Logs, pending.payload.clone(), &labels, &stop).await {
                    Attempt::Stopped => return,
                    _ => checkpoints.delivered(&pending),
                }
                continue;
            }
            if cursor < committed.next_seq {
                let read = tokio::task::spawn_blocking(move || {
                    let frames = reader.read(cursor, committed.next_seq, MAX_REQUEST_BYTES);
                    (reader, frames)
                })
                .await;
                let Ok((returned, frames)) = read else { return };
                reader = returned;
                let frames = match frames {
                    Ok(frames) => frames,
                    Err(error) => {
                        tracing::error!(chain = %self.chain_id, exporter = %self.exporter_id, %error, "cannot read the outbox; retrying");
                        if sleep_or_stop(Duration::from_secs(1), &stop).await {
                            return;
                        }
                        continue;
                    }
                };
                let start = frames.first().map_or(committed.next_seq, |f| f.first_seq);
                if start > cursor {
                    if resumed {
                        tracing::warn!(chain = %self.chain_id, exporter = %self.exporter_id, from = cursor, to = start, "records without a downstream copy (written but never acknowledged before a crash); skipped");
                    } else {
                        tracing::info!(chain = %self.chain_id, exporter = %self.exporter_id, seq = start, "new exporter: forwarding starts here (earlier records are in the store only)");
                    }
                    self.advance(start).await;
                }
                resumed = true;
                for (signal, payload, end, records) in merge(&frames) {
                    let mut outcome = Attempt::Delivered;
                    for request in split(signal, payload, MAX_REQUEST_BYTES) {
                        match self.deliver(signal, request, &labels, &stop).await {
                            Attempt::Delivered => {}
                            Attempt::GivenUp => outcome = Attempt::GivenUp,
                            Attempt::Stopped => return,
                        }
                    }
                    let counter = match outcome {
                        Attempt::GivenUp => &self.metrics.export_rejected,
                        _ => &self.metrics.exported_records,
                    };
                    counter.get_or_create(&labels).inc_by(records);
                    self.advance(end).await;
                }
                if last_prune.elapsed() > Duration::from_secs(10) {
                    last_prune = Instant::now();
                    pruned_below = self.prune().await;
                }
                continue;
            }
            if pruned_below < cursor {
                // Caught up: drop what every exporter of the chain has delivered.
                last_prune = Instant::now();
                pruned_below = self.prune().await;
            }
            if drain.is_cancelled() {
                tracing::info!(chain = %self.chain_id, exporter = %self.exporter_id, next_seq = cursor, "exporter drained");
                return;
            }
            tokio::select! {
                changed = self.committed.changed() => if changed.is_err() {
                    // The chain stopped: deliver what is left, then stop.
                    if drain.is_cancelled() { continue }
                    drain.cancelled().await;
                },
                _ = drain.cancelled() => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Sends one request, retrying retryable failures with backoff.
    async fn deliver(
        &self,
        signal: Signal,
        payload: Bytes,
        labels: &ExporterLabels,
        stop: &CancellationToken,
    ) -> Attempt {
        let mut backoff = self.retry.initial_interval;
        loop {
            let outcome = tokio::select! {
                outcome = self.client.send(signal, payload.clone()) => outcome,
                _ = stop.cancelled() => return Attempt::Stopped,
            };
            match outcome {
                Ok(delivered) => {
                    if delivered.rejected > 0 {
                        tracing::warn!(chain = %self.chain_id, exporter = %self.exporter_id, rejected = delivered.rejected, message = %delivered.message, "downstream rejected part of a request");
                    }
                    return Attempt::Delivered;
                }
                Err(SendError::Retryable(message)) if self.retry.enabled => {
                    self.metrics.export_retries.get_or_create(labels).inc();
                    tracing::warn!(chain = %self.chain_id, exporter = %self.exporter_id, %message, backoff_ms = backoff.as_millis() as u64, "export failed; retrying");
                    let spread = self.retry.randomization_factor.clamp(0.0, 1.0);
                    let jitter = if spread > 0.0 { rand::rng().random_range(1.0 - spread..=1.0 + spread) } else { 1.0 };
                    if sleep_or_stop(backoff.mul_f64(jitter), stop).await {
                        return Attempt::Stopped;
                    }
                    backoff = backoff.mul_f64(self.retry.multiplier.max(1.0)).min(self.retry.max_interval);
                }
                Err(error) => {
                    tracing::error!(chain = %self.chain_id, exporter = %self.exporter_id, %error, "downstream refused a request; it stays in the store but is not forwarded");
                    return Attempt::GivenUp;
                }
            }
        }
    }

    /// Moves the cursor and persists it.
    async fn advance(&self, next_seq: u64) {
        self.cursor.store(next_seq, Ordering::Relaxed);
        let (dir, id) = (self.chain_dir.clone(), self.exporter_id.clone());
        let written =
            tokio::task::spawn_blocking(move || store::write_cursor(&dir, &id, CursorKind::Records, next_seq)).await;
        if let Ok(Err(error)) = written {
            // Only a restart is affected: it re-sends from the older cursor.
            tracing::warn!(chain = %self.chain_id, exporter = %self.exporter_id, %error, "cannot persist the export cursor");
        }
    }

    /// Removes outbox files every exporter of the chain has delivered;
    /// returns the bound used.
    async fn prune(&self) -> u64 {
        let below = self.chain_cursors.iter().map(|c| c.load(Ordering::Relaxed)).min().unwrap_or(0);
        let dir = self.chain_dir.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || store::prune_outbox(&dir, below)).await {
            tracing::warn!(chain = %self.chain_id, %error, "cannot prune the outbox");
        }
        below
    }
}

/// Merges runs of frames of the same signal into requests: concatenated
/// protobuf messages of one type are one message with the repeated fields
/// appended. Yields (signal, payload, next seq after it, records).
fn merge(frames: &[Frame]) -> Vec<(Signal, Bytes, u64, u64)> {
    let mut out: Vec<(Signal, BytesMut, u64, u64)> = Vec::new();
    for frame in frames {
        let end = frame.first_seq + u64::from(frame.count);
        match out.last_mut() {
            Some((signal, payload, last_end, records)) if *signal == frame.signal => {
                payload.extend_from_slice(&frame.payload);
                *last_end = end;
                *records += u64::from(frame.count);
            }
            _ => out.push((frame.signal, BytesMut::from(frame.payload.as_slice()), end, u64::from(frame.count))),
        }
    }
    out.into_iter().map(|(s, p, e, r)| (s, p.freeze(), e, r)).collect()
}

/// Splits a request larger than `max` bytes into several of at most about
/// `max` (a single record larger than that goes alone), keeping each
/// record's resource and scope. Order is kept. Downstream receivers refuse
/// messages past their limit (4 MiB by default in gRPC), and a request
/// that is never accepted would never be forwarded.
fn split(signal: Signal, payload: Bytes, max: usize) -> Vec<Bytes> {
    if payload.len() <= max {
        return vec![payload];
    }
    match signal {
        Signal::Traces => match ExportTraceServiceRequest::decode(payload.clone()) {
            Ok(request) => split_traces(request, max),
            Err(_) => vec![payload],
        },
        Signal::Logs => match ExportLogsServiceRequest::decode(payload.clone()) {
            Ok(request) => split_logs(request, max),
            Err(_) => vec![payload],
        },
    }
}

fn split_traces(request: ExportTraceServiceRequest, max: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut current = ExportTraceServiceRequest::default();
    let mut size = 0;
    for resource in request.resource_spans {
        for scope in &resource.scope_spans {
            for span in &scope.spans {
                let len = span.encoded_len() + 16;
                if size + len > max && size > 0 {
                    out.push(Bytes::from(std::mem::take(&mut current).encode_to_vec()));
                    size = 0;
                }
                let same_resource = current
                    .resource_spans
                    .last()
                    .is_some_and(|r| r.resource == resource.resource && r.schema_url == resource.schema_url);
                if !same_resource {
                    current.resource_spans.push(ResourceSpans {
                        resource: resource.resource.clone(),
                        scope_spans: vec![],
                        schema_url: resource.schema_url.clone(),
                    });
                    size += resource.resource.as_ref().map_or(0, |r| r.encoded_len());
                }
                let target = current.resource_spans.last_mut().expect("pushed above");
                let same_scope = target
                    .scope_spans
                    .last()
                    .is_some_and(|s| s.scope == scope.scope && s.schema_url == scope.schema_url);
                if !same_scope {
                    target.scope_spans.push(ScopeSpans {
                        scope: scope.scope.clone(),
                        spans: vec![],
                        schema_url: scope.schema_url.clone(),
                    });
                    size += scope.scope.as_ref().map_or(0, |s| s.encoded_len());
                }
                target.scope_spans.last_mut().expect("pushed above").spans.push(span.clone());
                size += len;
            }
        }
    }
    if size > 0 {
        out.push(Bytes::from(current.encode_to_vec()));
    }
    out
}

fn split_logs(request: ExportLogsServiceRequest, max: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut current = ExportLogsServiceRequest::default();
    let mut size = 0;
    for resource in request.resource_logs {
        for scope in &resource.scope_logs {
            for record in &scope.log_records {
                let len = record.encoded_len() + 16;
                if size + len > max && size > 0 {
                    out.push(Bytes::from(std::mem::take(&mut current).encode_to_vec()));
                    size = 0;
                }
                let same_resource = current
                    .resource_logs
                    .last()
                    .is_some_and(|r| r.resource == resource.resource && r.schema_url == resource.schema_url);
                if !same_resource {
                    current.resource_logs.push(ResourceLogs {
                        resource: resource.resource.clone(),
                        scope_logs: vec![],
                        schema_url: resource.schema_url.clone(),
                    });
                    size += resource.resource.as_ref().map_or(0, |r| r.encoded_len());
                }
                let target = current.resource_logs.last_mut().expect("pushed above");
                let same_scope = target
                    .scope_logs
                    .last()
                    .is_some_and(|s| s.scope == scope.scope && s.schema_url == scope.schema_url);
                if !same_scope {
                    target.scope_logs.push(ScopeLogs {
                        scope: scope.scope.clone(),
                        log_records: vec![],
                        schema_url: scope.schema_url.clone(),
                    });
                    size += scope.scope.as_ref().map_or(0, |s| s.encoded_len());
                }
                target.scope_logs.last_mut().expect("pushed above").log_records.push(record.clone());
                size += len;
            }
        }
    }
    if size > 0 {
        out.push(Bytes::from(current.encode_to_vec()));
    }
    out
}

async fn sleep_or_stop(duration: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = stop.cancelled() => true,
    }
}

/// The chain's signed checkpoints not yet sent by one exporter, read from
/// the store's checkpoints file.
struct CheckpointFeed {
    path: PathBuf,
    dir: PathBuf,
    exporter_id: String,
    /// Checkpoints delivered (persisted).
    delivered: u64,
    /// Byte offset of the first undelivered line, once known.
    offset: Option<u64>,
    /// (checkpoints signed, exporter cursor) when the feed last found
    /// nothing to send: the file is read again only when either changes.
    idle_at: Option<(u64, u64)>,
}

/// Undelivered checkpoints as one logs request.
struct PendingCheckpoints {
    payload: Bytes,
    count: u64,
    bytes: u64,
}

impl CheckpointFeed {
    fn open(chain_dir: &std::path::Path, exporter_id: &str) -> Self {
        let delivered = store::read_cursor(chain_dir, exporter_id, CursorKind::Checkpoints).ok().flatten().unwrap_or(0);
        CheckpointFeed {
            path: chain_dir.join("checkpoints.jsonl"),
            dir: chain_dir.to_owned(),
            exporter_id: exporter_id.to_owned(),
            delivered,
            offset: None,
            idle_at: None,
        }
    }

    /// The undelivered checkpoints covering at most `cursor` records. The
    /// file is read only when the chain signed something or the cursor moved.
    fn pending(&mut self, chain_id: &str, cursor: u64, signed: u64) -> Option<PendingCheckpoints> {
        if self.idle_at == Some((signed, cursor)) {
            return None;
        }
        let found = self.read(chain_id, cursor);
        if found.is_none() {
            self.idle_at = Some((signed, cursor));
        }
        found
    }

    fn read(&mut self, chain_id: &str, cursor: u64) -> Option<PendingCheckpoints> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(&self.path).ok()?;
        let mut text = String::new();
        let skip = match self.offset {
            Some(offset) => {
                file.seek(SeekFrom::Start(offset)).ok()?;
                0
            }
            None => self.delivered as usize,
        };
        file.read_to_string(&mut text).ok()?;
        let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
        let mut consumed = 0u64;
        let mut records = Vec::new();
        let mut bytes = 0u64;
        for (index, line) in complete.split_inclusive('\n').enumerate() {
            consumed += line.len() as u64;
            if index < skip {
                continue;
            }
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else { break };
            if entry["size"].as_u64().is_none_or(|size| size > cursor) {
                break;
            }
            bytes = consumed;
            records.push(checkpoint_log_record(chain_id, &entry));
        }
        if self.offset.is_none() {
            // Byte offset of the first undelivered line.
            let skipped: u64 = complete.split_inclusive('\n').take(skip).map(|l| l.len() as u64).sum();
            self.offset = Some(skipped);
            bytes = bytes.saturating_sub(skipped);
        }
        if records.is_empty() {
            return None;
        }
        let count = records.len() as u64;
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![string_attr("service.name", "otel-audit")],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope { name: "otel-audit.checkpoint".into(), ..Default::default() }),
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Some(PendingCheckpoints { payload: Bytes::from(request.encode_to_vec()), count, bytes })
    }

    fn delivered(&mut self, pending: &PendingCheckpoints) {
        self.delivered += pending.count;
        self.offset = self.offset.map(|o| o + pending.bytes);
        if let Err(error) = store::write_cursor(&self.dir, &self.exporter_id, CursorKind::Checkpoints, self.delivered) {
            tracing::warn!(%error, "cannot persist the checkpoint cursor");
        }
    }
}

/// A signed checkpoint as an OTLP log record: the note is the body, so a
/// downstream copy can be verified with the public key alone.
fn checkpoint_log_record(chain_id: &str, entry: &serde_json::Value) -> LogRecord {
    let time = entry["time_unix_nano"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
    let note = entry["note"].as_str().unwrap_or_default().to_owned();
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: time,
        severity_number: SeverityNumber::Info as i32,
        severity_text: "INFO".into(),
        event_name: "audit.checkpoint".into(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(note)) }),
        attributes: vec![
            string_attr("audit.sequence.stream_id", chain_id),
            KeyValue {
                key: "audit.checkpoint.size".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(entry["size"].as_i64().unwrap_or_default())),
                }),
                ..Default::default()
            },
            string_attr("audit.checkpoint.root", entry["root"].as_str().unwrap_or_default()),
        ],
        ..Default::default()
    }
}

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::{self, BatchSpec};

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
        let request =
            loadgen::traces(&BatchSpec { records: 3000, audit_ratio: 1.0, attributes: 10, varied: true, seed: 5 });
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
        let request =
            loadgen::logs(&BatchSpec { records: 2000, audit_ratio: 1.0, attributes: 10, varied: true, seed: 6 });
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
}
