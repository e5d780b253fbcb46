//! One chain's worker: a thread that owns the chain's processor instance
//! and its store. It takes the requests queued for the chain, runs them
//! through the component one after the other (each starts from the head
//! the previous one produced), appends all their records with one fsync
//! (group commit), and only then answers them. Between batches it signs
//! checkpoints (every N records, after T seconds with new records, as a
//! heartbeat while idle, and once more when it stops) and applies reload
//! orders: it appends the order's `audit.policy_change` (or
//! `audit.policy_rejected`) record and, for a change, swaps its instance.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use audit_format::{ChainHead, Context};

use crate::runtime::{Output, PolicyInfo};
use audit_format::hash::to_hex;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch};

use crate::checkpoint::{Checkpoint, SignedNote, SignerKey};
use crate::metrics::{self, Metrics};
use crate::otlp::Signal;
use crate::policy_event::{EventKind, PolicyEvent, Trigger};
use crate::runtime::{Instance, Module, RuntimeError};
use crate::store::{
    Append, ChainStore, CheckpointEntry, ServingDigests, StoreError, StoreOptions, key_check, last_policy_digest,
    read_serving, write_serving,
};
use crate::{clock, pipeline::Rejection};

/// At most this many requests are committed together.
const MAX_GROUP_REQUESTS: usize = 256;
/// A group stops growing once its requests hold this many bytes.
const MAX_GROUP_BYTES: usize = 32 << 20;

/// One queued request.
pub struct Job {
    /// The OTLP protobuf export request.
    pub payload: Bytes,
    /// When the receiver got it (Unix nanoseconds).
    pub received_at: u64,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<(), Rejection>>,
}

/// What a chain's queue carries.
pub enum Work {
    /// A request to process.
    Job(Job),
    /// Nothing to process: look at the control channel now (a reload was
    /// ordered) instead of at the next timer tick.
    Wake,
}

/// An order for a chain, applied between two groups of requests: the
/// requests already taken finish with what served them; the next group
/// sees the result.
pub struct Control {
    /// The record to append: `audit.policy_change` or `audit.policy_rejected`.
    pub event: PolicyEvent,
    /// For a change: the module and policy that serve from the event's
    /// record on (the event record is chained by the new instance, so it
    /// already carries the new policy digest).
    pub swap: Option<(Arc<Module>, Arc<PolicySource>)>,
    /// Gets the seq of the event's record once it is durable, or why the
    /// chain could not apply it yet (it keeps trying before each group).
    pub done: std::sync::mpsc::Sender<Result<u64, String>>,
}

/// How often a chain signs checkpoints.
#[derive(Clone)]
pub struct CheckpointPolicy {
    /// Sign after this many new records.
    pub every_records: u64,
    /// Sign when new records are older than this.
    pub interval: Duration,
    /// Sign at least this often, even when idle.
    pub heartbeat: Duration,
    /// The origin line of this chain's checkpoints.
    pub origin: String,
    /// The signing key.
    pub signer: Arc<SignerKey>,
    /// This chain's file in the checkpoint mirror (outside the store), if any.
    pub mirror: Option<std::path::PathBuf>,
}

/// What a chain's worker needs.
pub struct ChainSpec {
    /// Chain id (in every record).
    pub chain_id: String,
    /// Pipeline id, for metrics and logs.
    pub pipeline_id: String,
    /// Which signal the pipeline carries.
    pub signal: Signal,
    /// The chain's own directory in the store.
    pub dir: std::path::PathBuf,
    /// Store options.
    pub store: StoreOptions,
    /// Checkpoint schedule and key.
    pub checkpoints: CheckpointPolicy,
    /// The processor's id (`wasm/soc2`), for its event records.
    pub processor_id: String,
    /// The compiled component.
    pub module: Arc<Module>,
    /// The policy text and the secrets `configure` gets.
    pub policy: Arc<PolicySource>,
}

/// A policy as `configure` takes it.
pub struct PolicySource {
    /// The policy file's text.
    pub text: String,
    /// Secrets, by key id.
    pub secrets: Vec<(String, Vec<u8>)>,
}

/// What the chain has made durable so far; exporters wait on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// Records stored (the next seq).
    pub next_seq: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
}

/// Why a chain could not start.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The store could not be opened or recovered.
    #[error("chain {chain}: {source}")]
    Store {
        /// Chain id.
        chain: String,
        /// The store's error.
        source: StoreError,
    },
    /// The component could not be instantiated or rejected the policy.
    #[error("chain {chain}: {source}")]
    Processor {
        /// Chain id.
        chain: String,
        /// The runtime's error.
        source: RuntimeError,
    },
    /// The processor's files changed while the host was stopped in a way
    /// the chain cannot take, or the change could not be recorded.
    #[error("chain {chain}: the processor changed since the last run: {message}")]
    Changed {
        /// Chain id.
        chain: String,
        /// Why.
        message: String,
    },
    /// A checkpoint could not be signed or stored.
    #[error("chain {chain}: checkpoint: {message}")]
    Checkpoint {
        /// Chain id.
        chain: String,
        /// Why.
        message: String,
    },
}

/// The worker's state; lives on its own thread.
pub struct ChainWorker {
    spec: ChainSpec,
    store: Option<ChainStore>,
    instance: Option<Instance>,
    /// `audit.policy.digest` of the policy in force.
    policy_digest: String,
    /// The key its records are MACed with, if any.
    key_id: Option<String>,
    /// Every key id its records were MACed with, and the check value of
    /// its bytes (from `serving.json`).
    keys: BTreeMap<String, String>,
    /// Reload orders not yet applied, oldest first.
    pending: VecDeque<Control>,
    metrics: Arc<Metrics>,
    committed: watch::Sender<Committed>,
    last_checkpoint_size: u64,
    last_checkpoint_at: Instant,
    checkpoint_clock: Arc<AtomicU64>,
}

impl ChainWorker {
    /// Opens the store (recovering the head after a crash) and configures
    /// an instance, so that start-up problems are reported before serving.
    pub fn open(spec: ChainSpec, metrics: Arc<Metrics>) -> Result<(Self, watch::Receiver<Committed>), ChainError> {
        let chain = spec.chain_id.clone();
        let (store, recovery) = ChainStore::open(&spec.dir, &spec.chain_id, spec.store.clone())
            .map_err(|source| ChainError::Store { chain: chain.clone(), source })?;
        for note in &recovery.notes {
            tracing::warn!(chain = %chain, "{note}");
        }
        tracing::info!(
            chain = %chain,
            next_seq = recovery.next_seq,
            torn_bytes = recovery.torn_bytes,
            replayed_leaves = recovery.replayed_leaves,
            dir = %spec.dir.display(),
            "chain opened"
        );
        if let Some(mirror) = &spec.checkpoints.mirror {
            mirror::check(mirror, store.last_checkpoint())
                .map_err(|message| ChainError::Checkpoint { chain: chain.clone(), message })?;
        }
        let (instance, info) =
            configured_instance(&spec).map_err(|source| ChainError::Processor { chain: chain.clone(), source })?;
        tracing::info!(chain = %chain, module = %spec.module.digest(), policy = %info.digest, "processor configured");
        let (last_size, last_age) = match store.last_checkpoint() {
            Some(entry) => {
                (entry.size, Duration::from_nanos(clock::now_unix_nano().saturating_sub(entry.time_unix_nano)))
            }
            None => (0, spec.checkpoints.heartbeat),
        };
        let checkpoint_clock = metrics.checkpoint_clock(&spec.chain_id);
        if let Some(entry) = store.last_checkpoint() {
            checkpoint_clock.store(entry.time_unix_nano, Ordering::Relaxed);
        }
        let committed = Committed { next_seq: store.head().seq, checkpoints: 0 };
        metrics.chain_seq.get_or_create(&metrics::chain(&spec.chain_id)).set(committed.next_seq as i64);
        let (tx, rx) = watch::channel(committed);
        let mut worker = ChainWorker {
            store: Some(store),
            instance: Some(instance),
            policy_digest: info.digest,
            key_id: info.key_id,
            keys: BTreeMap::new(),
            pending: VecDeque::new(),
            metrics,
            committed: tx,
            last_checkpoint_size: last_size,
            last_checkpoint_at: Instant::now().checked_sub(last_age).unwrap_or_else(Instant::now),
            checkpoint_clock,
            spec,
        };
        worker
            .record_changes_while_stopped()
            .map_err(|message| ChainError::Changed { chain: chain.clone(), message })?;
        Ok((worker, rx))
    }

    /// Compares what the chain last ran with (the policy its newest record
    /// names; the module from `serving.json`) with what it runs now: a
    /// difference (files edited while the host was down, or a reload
    /// ordered but not applied before it stopped) is recorded as an
    /// `audit.policy_change` with trigger `startup`, so the policy digests
    /// in a chain change only at such records. A chain key that would drop
    /// the MACs or reuse a key id with other bytes is refused.
    fn record_changes_while_stopped(&mut self) -> Result<(), String> {
        let last = read_serving(&self.spec.dir).map_err(|e| e.to_string())?;
        self.keys = last.as_ref().map(|l| l.keys.clone()).unwrap_or_default();
        if let Some(key_id) = last.as_ref().and_then(|l| l.key_id.as_ref())
            && self.key_id.is_none()
        {
            return Err(format!(
                "the chain's records are MACed with key {key_id:?}, but the policy names no audit.chain.key_id: \
                 verify would report a MAC downgrade. Name a key, or start a new chain (another instance_id or store)"
            ));
        }
        // Records MACed before and after must stay verifiable (the rule hot swaps follow).
        let now = self.serving_digests()?;
        self.keys = now.keys.clone();
        // Which policy processed the newest record, by the record itself;
        // `serving.json` for the module (not in records), or for a chain
        // whose newest record names no policy.
        let record_policy = last_policy_digest(&self.spec.dir).map_err(|e| e.to_string())?;
        let old_policy = record_policy.or_else(|| last.as_ref().map(|l| l.policy_digest.clone()));
        let old_module = last.as_ref().map(|l| l.module_digest.clone());
        let policy_changed = old_policy.as_ref().is_some_and(|p| *p != now.policy_digest);
        let module_changed = old_module.as_ref().is_some_and(|m| *m != now.module_digest);
        if !policy_changed && !module_changed {
            if last.as_ref() != Some(&now) {
                write_serving(&self.spec.dir, &now).map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        let event = PolicyEvent {
            processor: self.spec.processor_id.clone(),
            trigger: Trigger::Startup,
            // Unknown for a store an older version wrote.
            old_module_digest: old_module.unwrap_or_default(),
            old_policy_digest: old_policy.unwrap_or_default(),
            kind: EventKind::Change {
                module_digest: now.module_digest.clone(),
                policy_digest: now.policy_digest.clone(),
                secrets_changed: last.as_ref().is_some_and(|l| l.keys != now.keys),
            },
        };
        let seq = self.append_event(event, None)?;
        tracing::info!(chain = %self.spec.chain_id, seq, "the processor changed while the host was stopped; recorded");
        Ok(())
    }

    /// What the chain runs with now, for `serving.json`; an error if its
    /// key id was used before with other bytes.
    fn serving_digests(&self) -> Result<ServingDigests, String> {
        let mut keys = self.keys.clone();
        if let Some(id) = &self.key_id {
            let bytes = self.spec.policy.secrets.iter().find(|(k, _)| k == id).map(|(_, b)| b.as_slice());
            let check = key_check(bytes.unwrap_or_default());
            if keys.get(id).is_some_and(|known| *known != check) {
                return Err(format!(
                    "key {id:?} has other bytes than this chain's records were MACed with under that id; records \
                     MACed with both could not be verified. Give the new key a new id"
                ));
            }
            keys.insert(id.clone(), check);
        }
        Ok(ServingDigests {
            module_digest: self.spec.module.digest().to_owned(),
            policy_digest: self.policy_digest.clone(),
            key_id: self.key_id.clone(),
            keys,
        })
    }

    /// Every key id this chain's records were MACed with, and the check
    /// value of its bytes: hot swaps may not reuse an id with other bytes.
    pub fn key_history(&self) -> &BTreeMap<String, String> {
        &self.keys
    }

    /// The chain's current head.
    pub fn head(&self) -> Option<&ChainHead> {
        self.store.as_ref().map(ChainStore::head)
    }

    /// Serves the queue until every sender is gone, or `closing` is set
    /// and the queue is empty, then signs a final checkpoint. Reload
    /// orders from `controls` are applied between two groups.
    pub fn run(mut self, queue: Receiver<Work>, controls: Receiver<Control>, closing: &AtomicBool) {
        loop {
            let first = match queue.recv_timeout(self.until_next_checkpoint()) {
                Ok(Work::Job(job)) => Some(job),
                Ok(Work::Wake) => None,
                Err(RecvTimeoutError::Timeout) => {
                    if closing.load(Ordering::Relaxed) {
                        break;
                    }
                    None
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.pending.extend(controls.try_iter());
            let controls_applied = self.apply_controls();
            let Some(first) = first else {
                self.checkpoint_if_due(false);
                continue;
            };
            let mut group = vec![first];
            let mut bytes = group[0].payload.len();
            while group.len() < MAX_GROUP_REQUESTS && bytes < MAX_GROUP_BYTES {
                match queue.try_recv() {
                    Ok(Work::Job(job)) => {
                        bytes += job.payload.len();
                        group.push(job);
                    }
                    Ok(Work::Wake) => {}
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            match controls_applied {
                Ok(()) => self.commit_group(group),
                // The next group must run with what was ordered; until the
                // order is applied, requests are retryable failures.
                Err(reason) => reject_all(group, &reason),
            }
            self.checkpoint_if_due(false);
        }
        self.checkpoint_if_due(true);
        tracing::info!(chain = %self.spec.chain_id, next_seq = ?self.head().map(|h| h.seq), "chain stopped");
    }

    /// Runs each request through the component, appends every record with
    /// one fsync, then answers: OK only when durable.
    fn commit_group(&mut self, group: Vec<Job>) {
        let labels = metrics::pipeline(&self.spec.pipeline_id);
        if let Err(reason) = self.ensure_ready() {
            reject_all(group, &reason);
            return;
        }
        let Some(store) = self.store.as_ref() else { return };
        let mut head = store.head().clone();
        let mut processed: Vec<(Job, Output)> = Vec::with_capacity(group.len());
        for job in group {
            let ctx = Context { received_at_unix_nano: job.received_at, head: head.clone() };
            match self.process(&job.payload, &ctx) {
                Ok(output) => {
                    head = output.head.clone();
                    processed.push((job, output));
                }
                Err(rejection) => {
                    let _ = job.reply.send(Err(rejection));
                }
            }
        }
        if let Err(reason) = self.append(processed.iter().map(|(_, o)| o), processed.len()) {
            for (job, _) in processed {
                let _ = job.reply.send(Err(Rejection::Unavailable(reason.clone())));
            }
            return;
        }
        // Counted once durable: what the metrics say was kept is in the store.
        for (_, output) in &processed {
            let stats = &output.stats;
            self.metrics.received.get_or_create(&labels).inc_by(stats.received);
            self.metrics.kept.get_or_create(&labels).inc_by(stats.kept);
            self.metrics.dropped.get_or_create(&labels).inc_by(stats.dropped);
            self.metrics.redacted.get_or_create(&labels).inc_by(stats.redacted);
            self.metrics.violations.get_or_create(&labels).inc_by(stats.violations);
        }
        self.committed_to(head.seq);
        for (job, _) in processed {
            let _ = job.reply.send(Ok(()));
        }
    }

    /// Appends the records of `outputs` (from `requests` requests) with one
    /// fsync. On failure the head stays put and the store is reopened
    /// before the next group if it cannot be trusted; the error is the
    /// reason for the clients.
    fn append<'a>(&mut self, outputs: impl Iterator<Item = &'a Output> + Clone, requests: usize) -> Result<(), String> {
        let records: usize = outputs.clone().map(|o| o.records.len()).sum();
        if records == 0 {
            return Ok(());
        }
        let chain_labels = metrics::chain(&self.spec.chain_id);
        let outbox = self.spec.store.outbox;
        let signal = self.spec.signal;
        let appends: Vec<Append<'_>> = outputs
            .map(|o| Append {
                records: &o.records,
                leaves: &o.leaves,
                outbox: (outbox && !o.records.is_empty()).then_some((signal, o.otlp.as_slice())),
            })
            .collect();
        let Some(store) = self.store.as_mut() else { return Err("the audit store is unavailable".into()) };
        match store.append(&appends) {
            Ok(stats) => {
                self.metrics.stored_bytes.get_or_create(&chain_labels).inc_by(stats.bytes);
                self.metrics.stored_records.get_or_create(&chain_labels).inc_by(stats.records);
                self.metrics.fsync_seconds.get_or_create(&chain_labels).observe(stats.fsync.as_secs_f64());
                self.metrics.group_size.get_or_create(&chain_labels).observe(requests as f64);
                Ok(())
            }
            Err(error) => {
                self.metrics.store_failures.get_or_create(&chain_labels).inc();
                tracing::error!(chain = %self.spec.chain_id, %error, requests, records, "append failed; requests answered retryable");
                if store.is_poisoned() || !matches!(error, StoreError::Io { .. }) {
                    // Recover from what is on disk before the next group.
                    self.store = None;
                }
                Err(format!("the audit store could not make the records durable: {error}"))
            }
        }
    }

    /// Tells the metrics and the exporters that records up to `next_seq` are durable.
    fn committed_to(&mut self, next_seq: u64) {
        self.metrics.chain_seq.get_or_create(&metrics::chain(&self.spec.chain_id)).set(next_seq as i64);
        self.committed.send_modify(|c| c.next_seq = next_seq);
    }

    /// Applies the pending reload orders, oldest first. One that cannot be
    /// applied now (the store or an instance failed) stays pending, and so
    /// do those after it: the chain never runs a batch with a policy other
    /// than the one its newest event record names. A pending swap that a
    /// newer swap supersedes is dropped (it never served here).
    fn apply_controls(&mut self) -> Result<(), String> {
        while let Some(control) = self.pending.pop_front() {
            // The event's "before" is what this chain runs, whatever the reloader thought.
            let mut event = control.event.clone();
            event.old_module_digest = self.spec.module.digest().to_owned();
            event.old_policy_digest = self.policy_digest.clone();
            let applied = self.ensure_ready().and_then(|()| self.append_event(event, control.swap.as_ref()));
            match applied {
                Ok(seq) => {
                    let _ = control.done.send(Ok(seq));
                }
                Err(reason) if control.swap.is_some() && self.pending.iter().any(|c| c.swap.is_some()) => {
                    tracing::warn!(chain = %self.spec.chain_id, %reason, "a reload that could not be applied is superseded by a newer one");
                    let _ = control.done.send(Err(format!("{reason}; superseded by a newer reload")));
                }
                Err(reason) => {
                    tracing::error!(chain = %self.spec.chain_id, %reason, event = control.event.name(), "cannot apply the reload yet; retrying before the next batch");
                    let _ = control.done.send(Err(reason.clone()));
                    self.pending.push_front(control);
                    return Err(format!("a policy reload is pending on this chain: {reason}"));
                }
            }
        }
        Ok(())
    }

    /// Appends `event` and, with
    /// `swap`, replaces the instance: the record is chained by the new
    /// instance, so it is the first one with the new policy digest. Returns
    /// the record's seq.
    fn append_event(
        &mut self,
        event: PolicyEvent,
        swap: Option<&(Arc<Module>, Arc<PolicySource>)>,
    ) -> Result<u64, String> {
        let Some(store) = self.store.as_ref() else { return Err("the audit store is unavailable".into()) };
        let head = store.head().clone();
        let now = clock::now_unix_nano();
        let request = event.export_request(self.spec.signal, &head.chain_id, head.seq, now);
        let ctx = Context { received_at_unix_nano: now, head };
        let mut fresh = match swap {
            Some((module, policy)) => {
                let mut instance = module.instantiate().map_err(|e| format!("new instance: {e}"))?;
                let info = instance
                    .configure(&policy.text, &policy.secrets)
                    .map_err(|e| format!("new instance: configure: {e}"))?;
                Some((instance, info))
            }
            None => None,
        };
        let signal = self.spec.signal;
        let instance = match (&mut fresh, &mut self.instance) {
            (Some((instance, _)), _) | (None, Some(instance)) => instance,
            (None, None) => return Err("the processor is unavailable".into()),
        };
        let output = instance.chain_events(signal, &request, &ctx);
        if instance.is_poisoned() && fresh.is_none() {
            self.instance = None;
        }
        let output = output.map_err(|e| format!("chain-events: {e}"))?;
        check_output(&output, &ctx).map_err(|e| format!("chain-events output does not continue the chain: {e}"))?;
        if output.records.len() != 1 {
            return Err(format!("chain-events returned {} records for one event", output.records.len()));
        }
        self.append(std::iter::once(&output), 1)?;
        if let (Some((instance, info)), Some((module, policy))) = (fresh, swap) {
            // The old instance is idle (batches run one at a time on this
            // thread): dropping it here frees it.
            self.instance = Some(instance);
            self.spec.module = module.clone();
            self.spec.policy = policy.clone();
            self.policy_digest = info.digest;
            self.key_id = info.key_id;
        }
        self.committed_to(output.head.seq);
        tracing::info!(chain = %self.spec.chain_id, seq = ctx.head.seq, event = event.name(), "{}", event.summary());
        if let EventKind::Change { .. } = event.kind {
            match self.serving_digests() {
                Ok(now) => {
                    self.keys = now.keys.clone();
                    if let Err(error) = write_serving(&self.spec.dir, &now) {
                        // The record is durable; a restart may only record the change again.
                        tracing::error!(chain = %self.spec.chain_id, %error, "cannot note what the chain runs with");
                    }
                }
                // The gate checks the same against every chain's history.
                Err(error) => tracing::error!(chain = %self.spec.chain_id, %error, "key reused with other bytes"),
            }
        }
        Ok(ctx.head.seq)
    }

    /// Runs one request. An invalid request is the client's problem. A trap
    /// (out of memory or time) replaces the instance and the request is
    /// tried once more on a fresh one: the component is a pure function, so
    /// a second trap means this request cannot be processed within the
    /// limits, and retrying it would only fail forever; it is refused as
    /// too large. Anything else (output that does not continue the chain)
    /// is a retryable failure.
    fn process(&mut self, payload: &[u8], ctx: &Context) -> Result<Output, Rejection> {
        let mut trapped = String::new();
        for attempt in 1..=2 {
            if self.instance.is_none() {
                let (instance, _) = configured_instance(&self.spec)
                    .map_err(|e| Rejection::Unavailable(format!("the processor is not available: {e}")))?;
                self.instance = Some(instance);
            }
            let Some(instance) = self.instance.as_mut() else { unreachable!("set above") };
            let result = match self.spec.signal {
                Signal::Traces => instance.process_traces(payload, ctx),
                Signal::Logs => instance.process_logs(payload, ctx),
            };
            let (failure, is_trap) = match result {
                Ok(output) => match check_output(&output, ctx) {
                    Ok(()) => return Ok(output),
                    Err(message) => (format!("its output does not continue the chain: {message}"), false),
                },
                Err(RuntimeError::Process(crate::runtime::ProcessError::Decode(message))) => {
                    return Err(Rejection::Invalid(format!("invalid OTLP request: {message}")));
                }
                Err(error @ RuntimeError::Trap(_)) => (error.to_string(), true),
                Err(error) => (error.to_string(), false),
            };
            self.metrics.processor_failures.get_or_create(&metrics::pipeline(&self.spec.pipeline_id)).inc();
            tracing::error!(chain = %self.spec.chain_id, seq = ctx.head.seq, attempt, message = %failure, "processor failed; instance replaced");
            self.instance = None;
            // The first line names the trap; the rest is a wasm backtrace for the log only.
            let summary = failure.lines().next().unwrap_or_default().to_owned();
            if !is_trap {
                return Err(Rejection::Unavailable(format!("the audit processor failed: {summary}")));
            }
            trapped = summary;
        }
        Err(Rejection::TooLarge(format!(
            "the audit processor could not process this request within its memory and time limits, twice ({trapped}); \
             send it in smaller batches"
        )))
    }

    /// Reopens the store or re-instantiates the processor after a failure.
    fn ensure_ready(&mut self) -> Result<(), String> {
        if self.store.is_none() {
            match ChainStore::open(&self.spec.dir, &self.spec.chain_id, self.spec.store.clone()) {
                Ok((store, recovery)) => {
                    tracing::warn!(chain = %self.spec.chain_id, next_seq = recovery.next_seq, torn_bytes = recovery.torn_bytes, "store reopened after a failure");
                    self.store = Some(store);
                }
                Err(error) => return Err(format!("the audit store is unavailable: {error}")),
            }
        }
        if self.instance.is_none() {
            let (instance, _) =
                configured_instance(&self.spec).map_err(|e| format!("the processor is unavailable: {e}"))?;
            self.instance = Some(instance);
        }
        Ok(())
    }

    fn until_next_checkpoint(&self) -> Duration {
        let policy = &self.spec.checkpoints;
        let pending = self.store.as_ref().is_some_and(|s| s.head().seq > self.last_checkpoint_size);
        let wait = if pending { policy.interval.min(policy.heartbeat) } else { policy.heartbeat };
        wait.saturating_sub(self.last_checkpoint_at.elapsed())
            .clamp(Duration::from_millis(5), Duration::from_millis(250))
    }

    /// Signs and stores a checkpoint if one is due (always at `shutdown`).
    fn checkpoint_if_due(&mut self, shutdown: bool) {
        let policy = &self.spec.checkpoints;
        let Some(store) = self.store.as_mut() else { return };
        let size = store.frontier().size();
        let new_records = size - self.last_checkpoint_size.min(size);
        let elapsed = self.last_checkpoint_at.elapsed();
        let due = shutdown
            || new_records >= policy.every_records
            || (new_records > 0 && elapsed >= policy.interval)
            || elapsed >= policy.heartbeat;
        if !due {
            return;
        }
        match sign_checkpoint(store, policy, shutdown) {
            Ok(entry) => {
                if let Some(mirror) = &policy.mirror
                    && let Err(error) = mirror::write(mirror, &entry)
                {
                    tracing::error!(chain = %self.spec.chain_id, %error, "cannot update the checkpoint mirror");
                }
                self.last_checkpoint_size = entry.size;
                self.last_checkpoint_at = Instant::now();
                self.checkpoint_clock.store(entry.time_unix_nano, Ordering::Relaxed);
                self.metrics.checkpoints.get_or_create(&metrics::chain(&self.spec.chain_id)).inc();
                self.committed.send_modify(|c| c.checkpoints += 1);
                tracing::debug!(chain = %self.spec.chain_id, size = entry.size, root = %to_hex(&entry.root), "checkpoint signed");
            }
            Err(error) => {
                // Retried at the next tick; records stay durable meanwhile.
                self.last_checkpoint_at = Instant::now();
                tracing::error!(chain = %self.spec.chain_id, %error, "cannot write checkpoint");
            }
        }
    }
}

/// Signs the store's current Merkle root and appends it to the store. The
/// final checkpoint of a clean shutdown says so (`shutdown` line), so that
/// verify can tell a closed chain from one whose newest checkpoints were
/// removed.
fn sign_checkpoint(
    store: &mut ChainStore,
    policy: &CheckpointPolicy,
    shutdown: bool,
) -> Result<CheckpointEntry, ChainError> {
    let chain = store.head().chain_id.clone();
    let frontier = store.frontier();
    let now = clock::now_unix_nano();
    let time = audit_format::rfc3339_nanos(now);
    // Each checkpoint names the one before it, so none can be removed
    // from the middle unnoticed (docs/store-format.md §3).
    let mut extensions = vec![format!("time {time}")];
    if let Some(last) = store.last_checkpoint() {
        let note = SignedNote::parse(&last.note).map_err(|e| ChainError::Checkpoint {
            chain: chain.clone(),
            message: format!("the last checkpoint: {e}"),
        })?;
        extensions.push(format!("prev {}", B64.encode(Sha256::digest(note.text.as_bytes()))));
    }
    if shutdown {
        extensions.push("shutdown".to_owned());
    }
    let body =
        Checkpoint { origin: policy.origin.clone(), size: frontier.size(), root: frontier.root(), extensions }.body();
    let note = policy
        .signer
        .sign_note(&body)
        .map_err(|e| ChainError::Checkpoint { chain: chain.clone(), message: e.to_string() })?;
    let entry = CheckpointEntry {
        size: frontier.size(),
        root: frontier.root(),
        time_unix_nano: now,
        frontier: frontier.nodes().to_vec(),
        note,
    };
    store.append_checkpoint(&entry).map_err(|e| ChainError::Checkpoint { chain, message: e.to_string() })?;
    Ok(entry)
}

/// A fresh instance of the spec's module, configured with its policy.
fn configured_instance(spec: &ChainSpec) -> Result<(Instance, PolicyInfo), RuntimeError> {
    let mut instance = spec.module.instantiate()?;
    let info = instance.configure(&spec.policy.text, &spec.policy.secrets)?;
    Ok((instance, info))
}

/// Answers every request of a group with a retryable error.
fn reject_all(group: Vec<Job>, reason: &str) {
    for job in group {
        let _ = job.reply.send(Err(Rejection::Unavailable(reason.to_owned())));
    }
}

/// The newest checkpoint of a chain, kept outside its store: a store whose
/// checkpoints were cut back (or replaced) behind the host's back is
/// refused at start-up instead of being signed over.
mod mirror {
    use std::path::Path;

    use audit_format::hash::to_hex;

    use crate::store::CheckpointEntry;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Mirrored {
        size: u64,
        root: String,
        note: String,
    }

    /// Records `entry` as the newest checkpoint (temp file, fsync, rename).
    pub fn write(path: &Path, entry: &CheckpointEntry) -> std::io::Result<()> {
        let text =
            serde_json::to_vec(&Mirrored { size: entry.size, root: to_hex(&entry.root), note: entry.note.clone() })
                .map_err(std::io::Error::other)?;
        let temp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&temp)?;
        std::io::Write::write_all(&mut file, &text)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    }

    /// Whether the store's newest checkpoint is at least the mirrored one.
    pub fn check(path: &Path, newest: Option<&CheckpointEntry>) -> Result<(), String> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot read the checkpoint mirror {}: {e}", path.display())),
        };
        let mirrored: Mirrored = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the checkpoint mirror {} is not readable: {e}", path.display()))?;
        let refuse = |what: String| {
            Err(format!(
                "{what}, but this host last signed @{} (mirror {}): checkpoints or records were removed or replaced \
                 in the store. Refusing to sign over it; run `otel-audit verify` on the store",
                mirrored.size,
                path.display()
            ))
        };
        match newest {
            None => refuse("the store has no checkpoint".into()),
            Some(entry) if entry.size < mirrored.size => {
                refuse(format!("the store's newest checkpoint is @{}", entry.size))
            }
            Some(entry) if entry.size == mirrored.size && to_hex(&entry.root) != mirrored.root => {
                refuse(format!("the store's checkpoint @{} has another root", entry.size))
            }
            Some(_) => Ok(()),
        }
    }
}

/// The guest's output must continue the chain exactly where the host said.
fn check_output(output: &Output, ctx: &Context) -> Result<(), String> {
    let n = output.records.len() as u64;
    if output.leaves.len() != output.records.len() {
        return Err(format!("{} records but {} leaves", output.records.len(), output.leaves.len()));
    }
    if output.head.chain_id != ctx.head.chain_id || output.head.seq != ctx.head.seq + n {
        return Err(format!(
            "head {}#{} does not follow {}#{} plus {n} records",
            output.head.chain_id, output.head.seq, ctx.head.chain_id, ctx.head.seq
        ));
    }
    match output.leaves.last() {
        Some(last) if *last != output.head.prev => Err("head.prev is not the last leaf".into()),
        None if output.head.prev != ctx.head.prev => Err("head.prev changed without records".into()),
        _ => Ok(()),
    }
}
