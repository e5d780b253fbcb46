//! When a chain signs checkpoints, and what they say. A checkpoint is
//! signed after `every_records` new records, when new records are older
//! than `interval`, as a heartbeat every `heartbeat` while idle, and once
//! more when the worker stops. Each names the one before it; the last of
//! a clean stop says `shutdown`.

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
    /// The origin line of this chain's checkpoints.
    pub origin: String,
    /// The signing key.
    pub signer: Arc<SignerKey>,
    /// This chain's file in the checkpoint mirror (outside the store), if any.
    pub mirror: Option<std::path::PathBuf>,
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
/// final checkpoint of a clean shutdown says so (`shutdown` line), so that
/// verify can tell a closed chain from one whose newest checkpoints were
/// removed.
pub(super) fn sign_checkpoint(
    store: &mut ChainStore,
    policy: &CheckpointPolicy,
    shutdown: bool,
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
    if shutdown {
        extensions.push("shutdown".to_owned());
    }
    let body =
        Checkpoint { origin: policy.origin.clone(), size: frontier.size(), root: frontier.root(), extensions }.body();
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
    /// and copies it to the mirror.
    pub(super) fn checkpoint_if_due(&mut self, shutdown: bool) {
        let policy = &self.spec.checkpoints;
        let Some(store) = self.store.as_mut() else { return };
        if !self.checkpoints.due(policy, store.frontier().size(), shutdown) {
            return;
        }
        match sign_checkpoint(store, policy, shutdown, clock::now_unix_nano()) {
            Ok(entry) => {
                if let Some(mirror) = &policy.mirror
                    && let Err(error) = checkpoint_mirror::write(mirror, &entry)
                {
                    tracing::error!(chain = %self.spec.chain_id, %error, "cannot update the checkpoint mirror");
                }
                self.checkpoints.signed(&entry);
                self.metrics.checkpoints.get_or_create(&metrics::chain(&self.spec.chain_id)).inc();
                self.committed.send_modify(|c| c.checkpoints += 1);
                tracing::debug!(chain = %self.spec.chain_id, size = entry.size, root = %to_hex(&entry.root), "checkpoint signed");
            }
            Err(error) => {
                // Tried again when due again; records stay durable meanwhile.
                self.checkpoints.failed();
                tracing::error!(chain = %self.spec.chain_id, %error, "cannot write checkpoint");
            }
        }
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
            origin: "otel-audit/c".into(),
            signer: Arc::new(SignerKey::generate("test").unwrap()),
            mirror: None,
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
