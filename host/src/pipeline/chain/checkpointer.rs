//! When a chain signs checkpoints, and what they say. A checkpoint is
//! signed when the chain is created (the genesis checkpoint, size 0) and
//! each time the worker starts (`start`), after `every_records` new records
//! (a hard bound: a group that would go past it is appended in parts with
//! a checkpoint between them, see [`super::commit`]), when new records are
//! older than `interval`, as a heartbeat every `heartbeat` while idle, and
//! once more when the worker stops (`shutdown`). Each names the one before
//! it and carries the schedule, so that verify knows how many records may
//! lawfully be left uncovered (docs/store-format.md §2).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use audit_format::hash::to_hex;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use super::{ChainWorker, checkpoint_mirror};
use crate::checkpoint::{self, Checkpoint, SignedNote, SignerKey};
use crate::store::{ChainStore, CheckpointEntry, StoreError};
use crate::{clock, metrics};

/// How often a chain signs checkpoints.
#[derive(Clone)]
pub struct CheckpointPolicy {
    /// Sign after this many new records.
    pub every_records: u64,
    /// Sign when new records are older than this.
    pub interval: Duration,
    /// Sign at least this often, even when idle.
    pub heartbeat: Duration,
    /// The signing key.
    pub signer: Arc<SignerKey>,
    /// The checkpoint mirror directory (outside the store), if any; each
    /// chain and key has its own file there ([`checkpoint_mirror::file_name`]).
    pub mirror_dir: Option<std::path::PathBuf>,
}

impl CheckpointPolicy {
    /// The signed `schedule` extension line: what verify holds the
    /// unsealed tail and the checkpoint age against.
    pub fn schedule_line(&self) -> String {
        format!(
            "{SCHEDULE_PREFIX}records={} interval_ms={} heartbeat_ms={}",
            self.every_records,
            self.interval.as_millis(),
            self.heartbeat.as_millis()
        )
    }
}

/// The extension line carrying the checkpoint schedule.
pub const SCHEDULE_PREFIX: &str = "schedule ";

/// Why a checkpoint is signed, as far as its note says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occasion {
    /// The schedule (records, interval, heartbeat).
    Schedule,
    /// The worker started: the first checkpoint of a chain (size 0), or the
    /// first after a restart. Extension line `start`.
    Start,
    /// The worker stops cleanly. Extension line `shutdown`.
    Shutdown,
}

/// The shortest and longest the worker waits for requests between two
/// looks at the schedule.
const WAIT: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(250));

/// Where the chain's newest checkpoint is, and so when the next one is due.
pub(super) struct Schedule {
    /// Records the newest checkpoint covers.
    last_size: u64,
    /// When it was signed (or a signing failed: retried after a full wait).
    last_at: Instant,
    /// Its time, for the checkpoint age gauge.
    clock: Arc<AtomicU64>,
}

impl Schedule {
    /// The schedule after the store's newest checkpoint, signed at its
    /// recorded time; without one, a checkpoint is due at once.
    pub fn after(
        newest: Option<&CheckpointEntry>,
        heartbeat: Duration,
        now_unix_nano: u64,
        clock: Arc<AtomicU64>,
    ) -> Self {
        let (last_size, age) = match newest {
            Some(entry) => {
                clock.store(entry.time_unix_nano, Ordering::Relaxed);
                (entry.size, Duration::from_nanos(now_unix_nano.saturating_sub(entry.time_unix_nano)))
            }
            None => (0, heartbeat),
        };
        let last_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        Schedule { last_size, last_at, clock }
    }

    /// Whether a checkpoint of a store of `size` records is due now
    /// (always at `shutdown`).
    pub fn due(&self, policy: &CheckpointPolicy, size: u64, shutdown: bool) -> bool {
        let new_records = size - self.last_size.min(size);
        let elapsed = self.last_at.elapsed();
        shutdown
            || new_records >= policy.every_records
            || (new_records > 0 && elapsed >= policy.interval)
            || elapsed >= policy.heartbeat
    }

    /// How long to wait for requests before looking again, with the head
    /// at `seq`.
    pub fn wait(&self, policy: &CheckpointPolicy, seq: u64) -> Duration {
        let wait = if seq > self.last_size { policy.interval.min(policy.heartbeat) } else { policy.heartbeat };
        wait.saturating_sub(self.last_at.elapsed()).clamp(WAIT.0, WAIT.1)
    }

    /// `entry` was signed and stored.
    fn signed(&mut self, entry: &CheckpointEntry) {
        self.last_size = entry.size;
        self.last_at = Instant::now();
        self.clock.store(entry.time_unix_nano, Ordering::Relaxed);
    }

    /// Signing failed: the time triggers wait a full interval before the
    /// next try (the record trigger stays due).
    fn failed(&mut self) {
        self.last_at = Instant::now();
    }
}

/// Why a checkpoint could not be signed or stored.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The newest checkpoint's note, which the new one names, is unreadable.
    #[error("the last checkpoint: {0}")]
    LastNote(checkpoint::CheckpointError),
    /// The key could not sign.
    #[error(transparent)]
    Sign(checkpoint::CheckpointError),
    /// The store refused or could not write it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Signs the store's current Merkle root and appends it to the store. The
/// first checkpoint after a start says `start` and the final one of a clean
/// shutdown says `shutdown`, so that verify can tell a closed chain from one
/// whose newest checkpoints were removed, and records appended after a
/// shutdown by the host from records appended by someone else.
pub(super) fn sign_checkpoint(
    store: &mut ChainStore,
    policy: &CheckpointPolicy,
    occasion: Occasion,
    now_unix_nano: u64,
) -> Result<CheckpointEntry, SignError> {
    let frontier = store.frontier();
    let time = audit_format::rfc3339_nanos(now_unix_nano);
    // Each checkpoint names the one before it, so none can be removed
    // from the middle unnoticed (docs/store-format.md §3).
    let mut extensions = vec![format!("time {time}")];
    if let Some(last) = store.last_checkpoint() {
        let note = SignedNote::parse(&last.note).map_err(SignError::LastNote)?;
        extensions.push(format!("prev {}", B64.encode(Sha256::digest(note.text.as_bytes()))));
    }
    extensions.push(policy.schedule_line());
    match occasion {
        Occasion::Schedule => {}
        Occasion::Start => extensions.push("start".to_owned()),
        Occasion::Shutdown => extensions.push("shutdown".to_owned()),
    }
    let body =
        Checkpoint { origin: store.origin().to_owned(), size: frontier.size(), root: frontier.root(), extensions }
            .body();
    let note = policy.signer.sign_note(&body).map_err(SignError::Sign)?;
    let entry = CheckpointEntry {
        size: frontier.size(),
        root: frontier.root(),
        time_unix_nano: now_unix_nano,
        frontier: frontier.nodes().to_vec(),
        note,
    };
    store.append_checkpoint(&entry)?;
    Ok(entry)
}

impl ChainWorker {
    /// How long the loop may wait for a request before a checkpoint is due.
    pub(super) fn until_next_checkpoint(&self) -> Duration {
        let seq = self.store.as_ref().map_or(0, |s| s.head().seq);
        self.checkpoints.wait(&self.spec.checkpoints, seq)
    }

    /// Signs and stores a checkpoint if one is due (always at `shutdown`),
    /// and copies it to the mirror. A failure is logged and tried again
    /// when due again; records stay durable meanwhile.
    pub(super) fn checkpoint_if_due(&mut self, shutdown: bool) {
        let Some(store) = self.store.as_ref() else { return };
        if !self.checkpoints.due(&self.spec.checkpoints, store.frontier().size(), shutdown) {
            return;
        }
        // It covers the group in flight too.
        if !self.settle() {
            return;
        }
        let occasion = if shutdown { Occasion::Shutdown } else { Occasion::Schedule };
        let _ = self.sign(occasion);
    }

    /// Signs and stores the final (`shutdown`) checkpoint, reopening a
    /// store that failed before; says why when it cannot.
    pub(super) fn final_checkpoint(&mut self) -> Result<(), super::FinalCheckpointError> {
        let chain = self.spec.chain_id.clone();
        let failed = move |reason: String| super::FinalCheckpointError { chain: chain.clone(), reason };
        if self.store.as_ref().is_some_and(ChainStore::is_poisoned) {
            // Dropped first: it holds the directory's lock.
            self.store = None;
        }
        if self.store.is_none() {
            let reopened = ChainStore::open(&self.spec.dir, &self.spec.chain_id, self.spec.store.clone());
            match reopened {
                Ok((store, _)) => self.store = Some(store),
                Err(error) => {
                    return Err(failed(format!("could not be written: the store cannot be reopened: {error}")));
                }
            }
        }
        self.sign(Occasion::Shutdown).map_err(|error| failed(format!("could not be written: {error}")))?;
        match self.mirror_behind.take() {
            Some(error) => Err(failed(format!("is stored, but the checkpoint mirror could not be updated: {error}"))),
            None => Ok(()),
        }
    }

    /// Signs and stores a checkpoint now, copies it to the mirror and
    /// counts it.
    pub(super) fn sign(&mut self, occasion: Occasion) -> Result<(), SignError> {
        let policy = &self.spec.checkpoints;
        let Some(store) = self.store.as_mut() else { return Err(SignError::Store(StoreError::Poisoned)) };
        match sign_checkpoint(store, policy, occasion, clock::now_unix_nano()) {
            Ok(entry) => {
                if let Some(mirror) = &self.mirror {
                    self.mirror_behind = checkpoint_mirror::write(mirror, &entry).err();
                    if let Some(error) = &self.mirror_behind {
                        tracing::error!(chain = %self.spec.chain_id, %error, "cannot update the checkpoint mirror");
                    }
                }
                self.checkpoints.signed(&entry);
                if occasion == Occasion::Start {
                    self.started = true;
                }
                self.metrics.checkpoints.get_or_create(&metrics::chain(&self.spec.chain_id)).inc();
                self.committed.send_modify(|c| c.checkpoints += 1);
                tracing::debug!(chain = %self.spec.chain_id, size = entry.size, root = %to_hex(&entry.root), ?occasion, "checkpoint signed");
                Ok(())
            }
            Err(error) => {
                self.checkpoints.failed();
                tracing::error!(chain = %self.spec.chain_id, %error, ?occasion, "cannot write checkpoint");
                Err(error)
            }
        }
    }

    /// Records the chain may still take before a checkpoint must be
    /// signed: `every_records` is a hard bound on the unsigned tail.
    pub(super) fn room_before_checkpoint(&self) -> u64 {
        let size = self.store.as_ref().map_or(0, |s| s.frontier().size());
        self.spec.checkpoints.every_records.saturating_sub(size.saturating_sub(self.checkpoints.last_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn policy(every_records: u64, interval: u64, heartbeat: u64) -> CheckpointPolicy {
        CheckpointPolicy {
            every_records,
            interval: Duration::from_secs(interval),
            heartbeat: Duration::from_secs(heartbeat),
            signer: Arc::new(SignerKey::generate("test").unwrap()),
            mirror_dir: None,
        }
    }

    /// The schedule after a checkpoint of `size` records signed `age` seconds ago.
    fn signed(policy: &CheckpointPolicy, size: u64, age: u64) -> Schedule {
        let now = clock::now_unix_nano();
        let entry = CheckpointEntry {
            size,
            root: [7; 32],
            time_unix_nano: now - age * SECOND,
            frontier: vec![],
            note: "n".into(),
        };
        Schedule::after(Some(&entry), policy.heartbeat, now, Arc::default())
    }

    #[test]
    fn a_checkpoint_is_due_after_every_records_new_records() {
        let policy = policy(5, 3600, 3600);
        let schedule = signed(&policy, 10, 0);
        assert!(!schedule.due(&policy, 10, false), "nothing new");
        assert!(!schedule.due(&policy, 14, false), "4 new records, interval not over");
        assert!(schedule.due(&policy, 15, false), "5 new records");
        assert!(schedule.due(&policy, 10, true), "always at shutdown");
    }

    #[test]
    fn a_checkpoint_is_due_when_new_records_are_older_than_the_interval() {
        let policy = policy(1000, 10, 3600);
        let schedule = signed(&policy, 10, 11);
        assert!(schedule.due(&policy, 11, false), "one record, 11s old");
        assert!(!schedule.due(&policy, 10, false), "no new record: only the heartbeat");
        // New records waiting: the worker looks again at once; none: at most 250ms later.
        assert_eq!(schedule.wait(&policy, 11), WAIT.0);
        assert_eq!(schedule.wait(&policy, 10), WAIT.1);
        assert!(!signed(&policy, 10, 0).due(&policy, 11, false), "one record, just signed");
    }

    #[test]
    fn a_heartbeat_checkpoint_is_due_while_idle_and_at_once_without_any() {
        let policy = policy(1000, 10, 60);
        assert!(signed(&policy, 10, 61).due(&policy, 10, false), "idle past the heartbeat");
        assert!(!signed(&policy, 10, 59).due(&policy, 10, false));
        let none = Schedule::after(None, policy.heartbeat, clock::now_unix_nano(), Arc::default());
        assert!(none.due(&policy, 0, false), "a store without checkpoints gets one at once");
    }

    #[test]
    fn the_age_gauge_starts_from_the_stores_newest_checkpoint_and_follows_each_signed() {
        let clock = Arc::new(AtomicU64::new(0));
        let entry = CheckpointEntry { size: 3, root: [7; 32], time_unix_nano: 42, frontier: vec![], note: "n".into() };
        let mut schedule = Schedule::after(Some(&entry), Duration::from_secs(60), 43, clock.clone());
        assert_eq!(clock.load(Ordering::Relaxed), 42);
        schedule.signed(&CheckpointEntry { size: 5, time_unix_nano: 50, ..entry });
        assert_eq!(clock.load(Ordering::Relaxed), 50);
        assert!(!schedule.due(&policy(5, 10, 60), 9, false), "4 records after the one just signed");
    }
}
