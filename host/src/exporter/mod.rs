//! The exporter stage: forwards what a chain stored to a downstream OTLP
//! endpoint, reading from the store's outbox (never from memory), in order,
//! with a persisted cursor and retry with backoff. No record is skipped: a
//! slow, dead or refusing downstream only grows the backlog (a refusal
//! stalls the exporter, logged and counted, until the downstream takes the
//! request; one refused as too large is sent in halves first); the router
//! turns a backlog past its limit into retryable errors upstream. Signed
//! checkpoints go downstream too, as OTLP log records, so a copy lives
//! outside the store ([`checkpoints`]). Requests are shaped for the wire in [`request`] and
//! sent by [`client`].

mod checkpoints;
pub mod client;
pub(crate) mod request;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ExporterLabels, Metrics};
use crate::otlp::Signal;
use crate::pipeline::chain::Committed;
use crate::store::{self, CursorKind, OutboxReader};
use checkpoints::CheckpointFeed;
use client::{Client, Failure, SendError};
use request::{merge, split};

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

/// Outcome of delivering one request.
enum Attempt {
    Delivered,
    /// Refused as too large: send these two instead, in order.
    Halved([Bytes; 2]),
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
        self.metrics.exporter_stalled.get_or_create(&labels).set(0);
        let dir = self.chain_dir.clone();
        let mut reader = match tokio::task::spawn_blocking(move || OutboxReader::open(&dir)).await {
            Ok(Ok(reader)) => reader,
            Ok(Err(error)) => {
                tracing::error!(chain = %self.chain_id, exporter = %self.exporter_id, %error, "cannot open the outbox; exporter stopped");
                return;
            }
            Err(_) => return,
        };
        let mut checkpoints = CheckpointFeed::open(&self.chain_dir, &self.chain_id, &self.exporter_id);
        let mut last_prune = Instant::now();
        let mut pruned_below = 0;
        let mut resumed = self.resumed;
        loop {
            let committed = *self.committed.borrow_and_update();
            let cursor = self.cursor.load(Ordering::Relaxed);
            // Checkpoints go out as soon as the records they cover have, also
            // while a backlog remains, so anchors leave the host under load.
            if let Some(pending) = checkpoints.pending(&self.chain_id, cursor, committed.checkpoints) {
                let what = format!("the checkpoints of the records before seq {cursor}");
                if !self.deliver_all(Signal::Logs, vec![pending.payload.clone()], &labels, &stop, &what).await {
                    return;
                }
                checkpoints.delivered(&pending);
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
                for merged in merge(&frames) {
                    let what = format!("records {}..{}", merged.start, merged.end);
                    let requests = split(merged.signal, merged.payload, MAX_REQUEST_BYTES);
                    if !self.deliver_all(merged.signal, requests, &labels, &stop, &what).await {
                        return;
                    }
                    self.metrics.exported_records.get_or_create(&labels).inc_by(merged.records);
                    self.advance(merged.end).await;
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

    /// Delivers the requests in order, each halved as often as the
    /// downstream refuses its size; false when stopped first.
    async fn deliver_all(
        &self,
        signal: Signal,
        requests: Vec<Bytes>,
        labels: &ExporterLabels,
        stop: &CancellationToken,
        what: &str,
    ) -> bool {
        let mut requests = VecDeque::from(requests);
        while let Some(request) = requests.pop_front() {
            match self.deliver(signal, request, labels, stop, what).await {
                Attempt::Delivered => {}
                Attempt::Halved([first, second]) => {
                    requests.push_front(second);
                    requests.push_front(first);
                }
                Attempt::Stopped => return false,
            }
        }
        true
    }

    /// Sends one request until the downstream takes it: every failure is
    /// retried with backoff, a refusal too (the exporter stalls rather than
    /// skip a record; the backlog limit then turns it into back-pressure
    /// upstream). A request refused as too large comes back halved, while it
    /// holds more than one record. `what` names the request in the log.
    async fn deliver(
        &self,
        signal: Signal,
        payload: Bytes,
        labels: &ExporterLabels,
        stop: &CancellationToken,
        what: &str,
    ) -> Attempt {
        let mut backoff = self.retry.initial_interval;
        let mut refused = 0u64;
        loop {
            let outcome = tokio::select! {
                outcome = self.client.try_send(signal, payload.clone()) => outcome,
                _ = stop.cancelled() => return Attempt::Stopped,
            };
            match outcome {
                Ok(delivered) => {
                    if delivered.rejected > 0 {
                        self.metrics.export_rejected.get_or_create(labels).inc_by(delivered.rejected);
                        tracing::warn!(chain = %self.chain_id, exporter = %self.exporter_id, rejected = delivered.rejected, message = %delivered.message, "downstream rejected part of a request");
                    }
                    if refused > 0 {
                        self.metrics.exporter_stalled.get_or_create(labels).set(0);
                        tracing::info!(chain = %self.chain_id, exporter = %self.exporter_id, request = %what, refused_attempts = refused, "downstream took the request it refused; exporter goes on");
                    }
                    return Attempt::Delivered;
                }
                Err(Failure { error: SendError::Permanent(message), too_large }) => {
                    if too_large && let Some(halves) = request::halve(signal, &payload) {
                        tracing::info!(chain = %self.chain_id, exporter = %self.exporter_id, request = %what, %message, "downstream refused the request as too large; sending it in halves");
                        return Attempt::Halved(halves);
                    }
                    self.metrics.export_refusals.get_or_create(labels).inc();
                    if refused == 0 {
                        self.metrics.exporter_stalled.get_or_create(labels).set(1);
                        tracing::warn!(chain = %self.chain_id, exporter = %self.exporter_id, request = %what, %message, "downstream refused a request; the exporter stalls and retries it (nothing is skipped; past the backlog limit clients get retryable errors)");
                    } else {
                        tracing::debug!(chain = %self.chain_id, exporter = %self.exporter_id, request = %what, %message, "downstream refused the request again");
                    }
                    refused += 1;
                }
                Err(Failure { error: SendError::Retryable(message), .. }) => {
                    tracing::warn!(chain = %self.chain_id, exporter = %self.exporter_id, request = %what, %message, backoff_ms = backoff.as_millis() as u64, "export failed; retrying");
                }
            }
            self.metrics.export_retries.get_or_create(labels).inc();
            let spread = self.retry.randomization_factor.clamp(0.0, 1.0);
            let jitter = if spread > 0.0 { rand::rng().random_range(1.0 - spread..=1.0 + spread) } else { 1.0 };
            if sleep_or_stop(backoff.mul_f64(jitter).min(self.retry.max_interval), stop).await {
                return Attempt::Stopped;
            }
            backoff = backoff.mul_f64(self.retry.multiplier.max(1.0)).min(self.retry.max_interval);
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

async fn sleep_or_stop(duration: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = stop.cancelled() => true,
    }
}
