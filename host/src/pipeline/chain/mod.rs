//! One chain's worker: a thread that owns the chain's processor instance
//! and its store. It takes the requests queued for the chain, runs them
//! through the component one after the other (each starts from the head
//! the previous one produced), appends all their records with one fsync
//! (group commit), and only then answers them. Between groups it applies
//! reload orders and signs checkpoints.
//!
//! - this file: what the worker needs, its start-up and its loop;
//! - [`commit`]: a group of requests, processed and made durable together;
//! - [`policy_change`]: reload orders, and the `audit.policy_change` /
//!   `audit.policy_rejected` records the chain appends for them (or for a
//!   processor that changed while the host was stopped);
//! - [`checkpointer`]: when checkpoints are signed (every N records, after
//!   T seconds with new records, as a heartbeat while idle, and once more
//!   when the worker stops) and what they say;
//! - [`checkpoint_mirror`]: the newest checkpoint kept outside the store,
//!   so that a store cut back behind the host's back is refused.

pub mod checkpoint_mirror;
mod checkpointer;
mod commit;
mod policy_change;
mod syncer;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};

use audit_format::ChainHead;
use bytes::Bytes;
use tokio::sync::{oneshot, watch};

pub use checkpoint_mirror::MirrorError;
use checkpointer::Schedule;
pub use checkpointer::{CheckpointPolicy, Occasion, SCHEDULE_PREFIX, SignError};
pub use commit::Discontinuity;
pub use policy_change::{ApplyError, ChangedError, Control, KeyReused};

use crate::metrics::{self, Metrics};
use crate::otlp::Signal;
use crate::pipeline::Rejection;
use crate::runtime::{Instance, Module, PolicyInfo, RuntimeError};
use crate::store::{ChainStore, StoreError, StoreOptions};

/// One queued request.
pub struct Job {
    /// The OTLP protobuf export request.
    pub payload: Bytes,
    /// When the receiver got it (Unix nanoseconds).
    pub received_at: u64,
    /// Who sent it, recorded in each of its records.
    pub sender: Option<audit_format::Sender>,
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
    #[error("chain {chain}: the processor changed since the last run: {source}")]
    Changed {
        /// Chain id.
        chain: String,
        /// Why.
        source: ChangedError,
    },
    /// The store's checkpoints end before the ones this host signed.
    #[error("chain {chain}: checkpoint: {source}")]
    Checkpoint {
        /// Chain id.
        chain: String,
        /// What the mirror says.
        source: MirrorError,
    },
    /// The chain has records but no checkpoint, which a chain this host
    /// made never has (its first checkpoint, at size 0, precedes every
    /// record): its `checkpoints.jsonl` was removed or emptied.
    #[error(
        "chain {chain}: {records} records but no checkpoint in {}: every chain this host makes begins with a \
         signed checkpoint at size 0, so its checkpoints were removed. Refusing to sign over it; run \
         `otel-audit verify` on the store",
        dir.display()
    )]
    Unsigned {
        /// Chain id.
        chain: String,
        /// Records stored.
        records: u64,
        /// The chain directory.
        dir: std::path::PathBuf,
    },
}

/// A chain stopped without its final (`shutdown`) checkpoint: the records
/// since its last checkpoint are not signed, and verify will not see a
/// closed chain.
#[derive(Debug, thiserror::Error)]
#[error("chain {chain}: the final checkpoint {reason}")]
pub struct FinalCheckpointError {
    /// Chain id.
    pub chain: String,
    /// What went wrong ("could not be written: " the store's or the
    /// signer's error, or "is stored, but" the mirror's).
    pub reason: String,
}

/// Why a chain cannot take a group or an order right now. The store or
/// the instance that failed is replaced before the next one; the clients
/// get this as a retryable error.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The store failed earlier and is not open.
    #[error("the audit store is unavailable")]
    NoStore,
    /// The store failed earlier and cannot be opened again.
    #[error("the audit store is unavailable: {0}")]
    Reopen(StoreError),
    /// The records could not be appended with their fsync; the head stays.
    #[error("the audit store could not make the records durable: {0}")]
    NotDurable(StoreError),
    /// The instance failed earlier and is not replaced.
    #[error("the processor is unavailable")]
    NoProcessor,
    /// The instance failed earlier and a new one cannot be configured.
    #[error("the processor is unavailable: {0}")]
    Processor(RuntimeError),
    /// A checkpoint must be signed before more records (the chain's start
    /// checkpoint, or `every_records` reached) and could not be.
    #[error("the audit store cannot take records until a checkpoint is signed: {0}")]
    CheckpointDue(SignError),
}

/// The worker's state; lives on its own thread.
pub struct ChainWorker {
    spec: ChainSpec,
    /// `None` after a failure it cannot be trusted past; reopened (and
    /// recovered from disk) before the next group.
    store: Option<ChainStore>,
    /// `None` after a trap; a fresh one is configured before the next use.
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
    checkpoints: Schedule,
    /// This chain's file in the checkpoint mirror, if any.
    mirror: Option<std::path::PathBuf>,
    /// Why the newest checkpoint is not in the mirror, if it is not.
    mirror_behind: Option<std::io::Error>,
    /// Whether this run's `start` checkpoint is signed: no record is
    /// appended before it.
    started: bool,
    /// The group written and waiting for its fsync, answered by
    /// [`ChainWorker::settle`].
    in_flight: Option<commit::InFlight>,
    /// The thread that fsyncs groups in flight, started with the first.
    syncer: Option<syncer::Syncer>,
    /// A request taken from the queue while a group was in flight: the
    /// first of the next group.
    next: Option<Job>,
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
        let mirror = spec
            .checkpoints
            .mirror_dir
            .as_ref()
            .map(|dir| dir.join(checkpoint_mirror::file_name(store.origin(), &spec.checkpoints.signer.verifier())));
        if let Some(mirror) = &mirror {
            checkpoint_mirror::check(mirror, store.last_checkpoint())
                .map_err(|source| ChainError::Checkpoint { chain: chain.clone(), source })?;
        }
        if store.last_checkpoint().is_none() && store.head().seq > 0 {
            return Err(ChainError::Unsigned { chain, records: store.head().seq, dir: spec.dir.clone() });
        }
        let (instance, info) =
            configured_instance(&spec).map_err(|source| ChainError::Processor { chain: chain.clone(), source })?;
        tracing::info!(chain = %chain, module = %spec.module.digest(), policy = %info.digest, "processor configured");
        let checkpoints = Schedule::after(
            store.last_checkpoint(),
            spec.checkpoints.heartbeat,
            crate::clock::now_unix_nano(),
            metrics.checkpoint_clock(&spec.chain_id),
        );
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
            checkpoints,
            mirror,
            mirror_behind: None,
            started: false,
            in_flight: None,
            syncer: None,
            next: None,
            spec,
        };
        // The genesis checkpoint of a new chain, or the first after a
        // restart: signed before any record (tried again before the first
        // append if the disk refuses it now).
        let _ = worker.sign(Occasion::Start);
        worker.record_changes_while_stopped().map_err(|source| ChainError::Changed { chain: chain.clone(), source })?;
        Ok((worker, rx))
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
    /// and the queue is empty, then signs a final checkpoint, and says
    /// whether it was signed and stored. Reload orders from `controls` are
    /// applied between two groups.
    pub fn run(
        mut self,
        queue: Receiver<Work>,
        controls: Receiver<Control>,
        closing: &AtomicBool,
    ) -> Result<(), FinalCheckpointError> {
        loop {
            let received = match self.next.take() {
                Some(job) => Ok(Work::Job(job)),
                None => queue.recv_timeout(self.until_next_checkpoint()),
            };
            let first = match received {
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
            if !self.pending.is_empty() {
                // Orders apply between groups: the one in flight is answered first.
                self.settle();
            }
            let controls_applied = self.apply_controls();
            let Some(first) = first else {
                self.checkpoint_if_due(false);
                continue;
            };
            let group = commit::gather(first, &queue);
            match controls_applied {
                Ok(()) => self.start_group(group),
                // The next group must run with what was ordered; until the
                // order is applied, requests are retryable failures.
                Err(pending) => commit::reject_all(group, &pending.to_string()),
            }
            if self.in_flight.is_some() {
                // With more requests waiting, the next group runs while
                // this one's fsync does; with none, it is answered now.
                match queue.try_recv() {
                    Ok(Work::Job(job)) => self.next = Some(job),
                    Ok(Work::Wake) => {
                        self.settle();
                        self.pending.extend(controls.try_iter());
                        let _ = self.apply_controls();
                    }
                    Err(_) => {
                        self.settle();
                    }
                }
            }
            self.checkpoint_if_due(false);
        }
        self.settle();
        let last = self.final_checkpoint();
        match &last {
            Ok(()) => {
                tracing::info!(chain = %self.spec.chain_id, next_seq = ?self.head().map(|h| h.seq), "chain stopped")
            }
            Err(error) => {
                tracing::error!(chain = %self.spec.chain_id, next_seq = ?self.head().map(|h| h.seq), %error, "chain stopped without its final checkpoint")
            }
        }
        last
    }

    /// Reopens the store or re-instantiates the processor after a failure.
    fn ensure_ready(&mut self) -> Result<(), Unavailable> {
        if self.store.is_none() {
            let (store, recovery) = ChainStore::open(&self.spec.dir, &self.spec.chain_id, self.spec.store.clone())
                .map_err(Unavailable::Reopen)?;
            tracing::warn!(chain = %self.spec.chain_id, next_seq = recovery.next_seq, torn_bytes = recovery.torn_bytes, "store reopened after a failure");
            self.store = Some(store);
        }
        if self.instance.is_none() {
            let (instance, _) = configured_instance(&self.spec).map_err(Unavailable::Processor)?;
            self.instance = Some(instance);
        }
        Ok(())
    }

    /// Tells the metrics and the exporters that records up to `next_seq` are durable.
    fn committed_to(&mut self, next_seq: u64) {
        self.metrics.chain_seq.get_or_create(&metrics::chain(&self.spec.chain_id)).set(next_seq as i64);
        self.committed.send_modify(|c| c.next_seq = next_seq);
    }
}

/// A fresh instance of the spec's module, configured with its policy.
fn configured_instance(spec: &ChainSpec) -> Result<(Instance, PolicyInfo), RuntimeError> {
    let mut instance = spec.module.instantiate()?;
    let info = instance.configure(&spec.policy.text, &spec.policy.secrets)?;
    // The OTLP copy of the kept records only serves the exporters' outbox.
    if !spec.store.outbox {
        instance.forward_copies(false)?;
    }
    Ok((instance, info))
}
