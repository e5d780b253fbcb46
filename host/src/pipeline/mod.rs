//! The pipeline stage: routes each received request to every pipeline of
//! its signal, to one of the pipeline's chains (shards), and waits until
//! each has made the request's records durable.
//!
//! A chain is served by one worker thread ([`chain::ChainWorker`]) behind a
//! bounded queue; a full queue, or an export backlog past its limit, is
//! back-pressure: the client gets a retryable error, nothing is dropped.

pub mod chain;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, SyncSender, TrySendError};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use crate::otlp::Signal;
use chain::{Committed, Control, Job, Work};

/// Why a request was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The request is malformed; retrying it cannot help (gRPC
    /// INVALID_ARGUMENT, HTTP 400).
    Invalid(String),
    /// Nothing of it was acknowledged; retry later (gRPC UNAVAILABLE,
    /// HTTP 503).
    Unavailable(String),
    /// The processor cannot handle a request this big within its limits;
    /// retrying it cannot help (gRPC RESOURCE_EXHAUSTED, HTTP 413).
    TooLarge(String),
}

impl Rejection {
    /// The message for the client.
    pub fn message(&self) -> &str {
        match self {
            Rejection::Invalid(m) | Rejection::Unavailable(m) | Rejection::TooLarge(m) => m,
        }
    }
}

/// A chain as the router sees it: its queue and how far its exporters lag.
pub struct ChainHandle {
    /// Chain id.
    pub chain_id: String,
    queue: SyncSender<Work>,
    controls: Sender<Control>,
    closing: Arc<AtomicBool>,
    /// What the chain has made durable.
    pub committed: watch::Receiver<Committed>,
    /// Each exporter's next undelivered seq.
    pub export_cursors: Vec<Arc<AtomicU64>>,
    /// Most records the slowest exporter may lag behind.
    pub max_backlog: u64,
}

impl ChainHandle {
    /// Creates a handle around a worker's queue and control channel.
    /// The worker stops once `closing` is set and its queue is empty.
    pub fn new(
        chain_id: String,
        queue: SyncSender<Work>,
        controls: Sender<Control>,
        committed: watch::Receiver<Committed>,
        closing: Arc<AtomicBool>,
    ) -> Self {
        ChainHandle { chain_id, queue, controls, closing, committed, export_cursors: Vec::new(), max_backlog: u64::MAX }
    }

    /// Orders the chain to apply `control` before its next group of
    /// requests, and wakes it if it is idle. False when the chain stopped.
    pub fn order(&self, control: Control) -> bool {
        if self.controls.send(control).is_err() {
            return false;
        }
        // A full queue means the worker is busy: it looks at its controls
        // before the next group anyway.
        let _ = self.queue.try_send(Work::Wake);
        true
    }

    /// Records stored but not yet delivered by the slowest exporter.
    pub fn backlog(&self) -> u64 {
        let next = self.committed.borrow().next_seq;
        self.export_cursors.iter().map(|c| next.saturating_sub(c.load(Ordering::Relaxed))).max().unwrap_or(0)
    }
}

/// One configured pipeline and its chains.
pub struct PipelineHandle {
    /// Pipeline id, e.g. `traces/audit`.
    pub id: String,
    /// Its signal.
    pub signal: Signal,
    /// Its processor's id (`wasm/soc2`): a reload of it applies to every chain here.
    pub processor_id: String,
    /// One chain per shard.
    pub chains: Vec<ChainHandle>,
    next: AtomicUsize,
}

impl PipelineHandle {
    /// A pipeline over its chains.
    pub fn new(id: String, signal: Signal, processor_id: String, chains: Vec<ChainHandle>) -> Self {
        PipelineHandle { id, signal, processor_id, chains, next: AtomicUsize::new(0) }
    }

    /// The next chain (round robin over the shards), if it takes requests
    /// now: not shutting down, its exporters' backlog within the limit.
    fn admit(&self) -> Result<&ChainHandle, Rejection> {
        let chain = &self.chains[self.next.fetch_add(1, Ordering::Relaxed) % self.chains.len()];
        if chain.closing.load(Ordering::Relaxed) {
            return Err(Rejection::Unavailable(format!("pipeline {}: shutting down", self.id)));
        }
        let backlog = chain.backlog();
        if backlog > chain.max_backlog {
            return Err(Rejection::Unavailable(format!(
                "pipeline {}: {backlog} records wait for a downstream exporter (limit {}); retry later",
                self.id, chain.max_backlog
            )));
        }
        Ok(chain)
    }

    /// Queues a request on an admitted chain. A full queue is a retryable
    /// refusal, unless `wait_for_room` (a later part of a request whose
    /// first parts are stored): then it waits until there is room.
    async fn enqueue(
        &self,
        chain: &ChainHandle,
        payload: Bytes,
        received_at: u64,
        sender: Option<audit_format::Sender>,
        wait_for_room: bool,
    ) -> Result<oneshot::Receiver<Result<(), Rejection>>, Rejection> {
        let (reply, outcome) = oneshot::channel();
        let mut work = Work::Job(Job { payload, received_at, sender, reply });
        loop {
            match chain.queue.try_send(work) {
                Ok(()) => return Ok(outcome),
                Err(TrySendError::Full(back)) if wait_for_room && !chain.closing.load(Ordering::Relaxed) => {
                    work = back;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(TrySendError::Full(_)) => {
                    return Err(Rejection::Unavailable(format!(
                        "pipeline {}: chain {} is busy; retry later",
                        self.id, chain.chain_id
                    )));
                }
                Err(TrySendError::Disconnected(_)) => {
                    return Err(Rejection::Unavailable(format!("pipeline {}: shutting down", self.id)));
                }
            }
        }
    }
}

/// Routes requests to pipelines.
pub struct Router {
    pipelines: Vec<PipelineHandle>,
}

impl Router {
    /// A router over the configured pipelines.
    pub fn new(pipelines: Vec<PipelineHandle>) -> Self {
        Router { pipelines }
    }

    /// The pipelines, for wiring exporters and metrics.
    pub fn pipelines(&self) -> &[PipelineHandle] {
        &self.pipelines
    }

    /// Hands a protobuf request to every pipeline of its signal and waits
    /// until all have stored its records. An error from any pipeline is the
    /// request's error; an invalid request is reported as such. `sender`
    /// is recorded in each of its records.
    ///
    /// A request larger than [`PART_BYTES`] is submitted in parts of about
    /// that size (whole spans or log records with their resource and
    /// scope), one after the other, each queued behind what arrived
    /// meanwhile: the component never holds more than a part, and a large
    /// request does not keep its chain from others for seconds. Invalid
    /// records are found before the first part is stored. It is answered
    /// once, when its last part is durable; if a part fails (the store, the
    /// component), the parts before it stay stored (the answer says so) and
    /// a retry stores them again, as any OTLP retry may.
    pub async fn submit(
        &self,
        signal: Signal,
        payload: Bytes,
        received_at: u64,
        sender: Option<audit_format::Sender>,
    ) -> Result<(), Rejection> {
        // Admission first, for every pipeline: a request one of them would
        // refuse is refused before any stores it (a retry must not leave
        // duplicates behind in the others). Its parts go to the same chains.
        let mut admitted = Vec::new();
        for pipeline in self.pipelines.iter().filter(|p| p.signal == signal) {
            admitted.push((pipeline, pipeline.admit()?));
        }
        if admitted.is_empty() {
            return Err(Rejection::Invalid(format!("no pipeline accepts {signal:?}")));
        }
        if payload.len() <= PART_BYTES {
            return submit_part(&admitted, payload, received_at, &sender, false).await;
        }
        let parts =
            tokio::task::spawn_blocking(move || crate::exporter::request::split_valid(signal, payload, PART_BYTES))
                .await
                .map_err(|e| Rejection::Unavailable(format!("splitting the request failed: {e}")))?
                .map_err(|message| Rejection::Invalid(format!("invalid OTLP request: {message}")))?;
        let count = parts.len();
        for (index, part) in parts.into_iter().enumerate() {
            submit_part(&admitted, part, received_at, &sender, index > 0).await.map_err(|rejection| {
                if index == 0 {
                    return rejection;
                }
                let stored = format!(
                    "{} (the first {index} of the {count} parts this request is stored in are stored; a retry stores them again)",
                    rejection.message()
                );
                match rejection {
                    Rejection::Invalid(_) => Rejection::Invalid(stored),
                    Rejection::Unavailable(_) => Rejection::Unavailable(stored),
                    Rejection::TooLarge(_) => Rejection::TooLarge(stored),
                }
            })?;
        }
        Ok(())
    }
}

/// Requests larger than this are stored in parts (see [`Router::submit`]).
pub const PART_BYTES: usize = 4 << 20;

/// Queues one request (or part of one) on each admitted chain and waits
/// until all have stored it. A later part (`continues`) waits for room in
/// a full queue rather than being refused: the first parts are stored.
async fn submit_part(
    admitted: &[(&PipelineHandle, &ChainHandle)],
    payload: Bytes,
    received_at: u64,
    sender: &Option<audit_format::Sender>,
    continues: bool,
) -> Result<(), Rejection> {
    let mut pending = Vec::new();
    let mut first_error = None;
    for (pipeline, chain) in admitted {
        match pipeline.enqueue(chain, payload.clone(), received_at, sender.clone(), continues).await {
            Ok(outcome) => pending.push(outcome),
            Err(rejection) => {
                first_error.get_or_insert(rejection);
            }
        }
    }
    for outcome in pending {
        let result = outcome.await.unwrap_or_else(|_| Err(Rejection::Unavailable("the chain stopped".into())));
        if let Err(rejection) = result {
            // A request refused for what it is (invalid, too large) is
            // refused everywhere; report that first.
            if !matches!(rejection, Rejection::Unavailable(_)) || first_error.is_none() {
                first_error = Some(rejection);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
