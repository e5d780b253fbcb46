//! Reload orders and the chain's records of them. An order is applied
//! between two groups of requests: the chain appends its
//! `audit.policy_change` (chained by the new instance, so it is the first
//! record with the new policy digest) or `audit.policy_rejected` record,
//! and only then serves the next group. At start-up, a processor that
//! changed while the host was stopped is recorded the same way (trigger
//! `startup`), so a chain's policy digests change only at such records.

use std::sync::Arc;

use audit_format::Context;

use super::commit::{Discontinuity, check_output};
use super::{ChainWorker, PolicySource, Unavailable};
use crate::clock;
use crate::policy_event::{EventKind, PolicyEvent, Trigger};
use crate::runtime::{Module, RuntimeError};
use crate::store::{ServingDigests, StoreError, key_check, last_policy_digest, read_serving, write_serving};

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
    pub done: std::sync::mpsc::Sender<Result<u64, ApplyError>>,
}

/// Why a chain could not append an event record (and, for a change, swap).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The store or the serving instance failed and is not back yet.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// The new module could not be instantiated.
    #[error("new instance: {0}")]
    Instantiate(RuntimeError),
    /// The new instance refused the new policy.
    #[error("new instance: configure: {0}")]
    Configure(RuntimeError),
    /// `chain-events` failed.
    #[error("chain-events: {0}")]
    ChainEvents(RuntimeError),
    /// `chain-events` returned output that does not continue the chain.
    #[error("chain-events output does not continue the chain: {0}")]
    Discontinuous(#[from] Discontinuity),
    /// `chain-events` returned other than one record for one event.
    #[error("chain-events returned {0} records for one event")]
    NotOneRecord(usize),
    /// This swap failed and a newer one is ordered: it is dropped.
    #[error("{0}; superseded by a newer reload")]
    Superseded(Box<ApplyError>),
}

/// A reload order this chain has not applied yet: until it has, the
/// chain refuses requests (retryable), so none runs with a policy other
/// than the one its newest event record names.
#[derive(Debug, thiserror::Error)]
#[error("a policy reload is pending on this chain: {0}")]
pub struct ReloadPending(String);

/// A key id that names other bytes than the chain's records were MACed
/// with under it: records MACed with both could not be verified.
#[derive(Debug, thiserror::Error)]
#[error(
    "key {0:?} has other bytes than this chain's records were MACed with under that id; records MACed with both \
     could not be verified. Give the new key a new id"
)]
pub struct KeyReused(String);

/// Why a chain cannot start with a processor that changed since it last ran.
#[derive(Debug, thiserror::Error)]
pub enum ChangedError {
    /// What the chain last ran with could not be read or noted.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain's records are MACed, the new policy names no key.
    #[error(
        "the chain's records are MACed with key {0:?}, but the policy names no audit.chain.key_id: verify would \
         report a MAC downgrade. Name a key, or start a new chain (another instance_id or store)"
    )]
    MacDowngrade(String),
    /// The new key reuses an id with other bytes.
    #[error(transparent)]
    KeyReused(#[from] KeyReused),
    /// The change could not be recorded.
    #[error(transparent)]
    Record(#[from] ApplyError),
}

impl ChainWorker {
    /// Applies the pending reload orders, oldest first. One that cannot be
    /// applied now (the store or an instance failed) stays pending, and so
    /// do those after it: the chain never runs a group with a policy other
    /// than the one its newest event record names. A pending swap that a
    /// newer swap supersedes is dropped (it never served here).
    pub(super) fn apply_controls(&mut self) -> Result<(), ReloadPending> {
        while let Some(control) = self.pending.pop_front() {
            // The event's "before" is what this chain runs, whatever the reloader thought.
            let mut event = control.event.clone();
            event.old_module_digest = self.spec.module.digest().to_owned();
            event.old_policy_digest = self.policy_digest.clone();
            let applied = self
                .ensure_ready()
                .map_err(ApplyError::from)
                .and_then(|()| self.append_event(event, control.swap.as_ref()));
            match applied {
                Ok(seq) => {
                    let _ = control.done.send(Ok(seq));
                }
                Err(reason) if control.swap.is_some() && self.pending.iter().any(|c| c.swap.is_some()) => {
                    tracing::warn!(chain = %self.spec.chain_id, %reason, "a reload that could not be applied is superseded by a newer one");
                    let _ = control.done.send(Err(ApplyError::Superseded(Box::new(reason))));
                }
                Err(reason) => {
                    tracing::error!(chain = %self.spec.chain_id, %reason, event = control.event.name(), "cannot apply the reload yet; retrying before the next batch");
                    let pending = ReloadPending(reason.to_string());
                    let _ = control.done.send(Err(reason));
                    self.pending.push_front(control);
                    return Err(pending);
                }
            }
        }
        Ok(())
    }

    /// Appends `event` and, with `swap`, replaces the instance: the record
    /// is chained by the new instance, so it is the first one with the new
    /// policy digest. Returns the record's seq.
    fn append_event(
        &mut self,
        event: PolicyEvent,
        swap: Option<&(Arc<Module>, Arc<PolicySource>)>,
    ) -> Result<u64, ApplyError> {
        let Some(store) = self.store.as_ref() else { return Err(Unavailable::NoStore.into()) };
        let head = store.head().clone();
        let now = clock::now_unix_nano();
        let request = event.export_request(self.spec.signal, &head.chain_id, head.seq, now);
        let ctx = Context { received_at_unix_nano: now, head, sender: None };
        let mut fresh = match swap {
            Some((module, policy)) => {
                let mut instance = module.instantiate().map_err(ApplyError::Instantiate)?;
                let info = instance.configure(&policy.text, &policy.secrets).map_err(ApplyError::Configure)?;
                if !self.spec.store.outbox {
                    instance.forward_copies(false).map_err(ApplyError::Configure)?;
                }
                Some((instance, info))
            }
            None => None,
        };
        let signal = self.spec.signal;
        let instance = match (&mut fresh, &mut self.instance) {
            (Some((instance, _)), _) | (None, Some(instance)) => instance,
            (None, None) => return Err(Unavailable::NoProcessor.into()),
        };
        let output = instance.chain_events(signal, &request, &ctx);
        if instance.is_poisoned() && fresh.is_none() {
            self.instance = None;
        }
        let output = output.map_err(ApplyError::ChainEvents)?;
        check_output(&output, &ctx)?;
        if output.records.len() != 1 {
            return Err(ApplyError::NotOneRecord(output.records.len()));
        }
        self.append(std::iter::once(&output), 1)?;
        if let (Some((instance, info)), Some((module, policy))) = (fresh, swap) {
            // The old instance is idle (groups run one at a time on this
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

    /// Compares what the chain last ran with (the policy its newest record
    /// names; the module from `serving.json`) with what it runs now: a
    /// difference (files edited while the host was down, or a reload
    /// ordered but not applied before it stopped) is recorded as an
    /// `audit.policy_change` with trigger `startup`, so the policy digests
    /// in a chain change only at such records. A chain key that would drop
    /// the MACs or reuse a key id with other bytes is refused.
    pub(super) fn record_changes_while_stopped(&mut self) -> Result<(), ChangedError> {
        let last = read_serving(&self.spec.dir)?;
        self.keys = last.as_ref().map(|l| l.keys.clone()).unwrap_or_default();
        if let Some(key_id) = last.as_ref().and_then(|l| l.key_id.as_ref())
            && self.key_id.is_none()
        {
            return Err(ChangedError::MacDowngrade(key_id.clone()));
        }
        // Records MACed before and after must stay verifiable (the rule hot swaps follow).
        let now = self.serving_digests()?;
        self.keys = now.keys.clone();
        // Which policy processed the newest record, by the record itself;
        // `serving.json` for the module (not in records), or for a chain
        // whose newest record names no policy.
        let record_policy = last_policy_digest(&self.spec.dir)?;
        let old_policy = record_policy.or_else(|| last.as_ref().map(|l| l.policy_digest.clone()));
        let old_module = last.as_ref().map(|l| l.module_digest.clone());
        let policy_changed = old_policy.as_ref().is_some_and(|p| *p != now.policy_digest);
        let module_changed = old_module.as_ref().is_some_and(|m| *m != now.module_digest);
        if !policy_changed && !module_changed {
            if last.as_ref() != Some(&now) {
                write_serving(&self.spec.dir, &now)?;
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
    fn serving_digests(&self) -> Result<ServingDigests, KeyReused> {
        let mut keys = self.keys.clone();
        if let Some(id) = &self.key_id {
            let bytes = self.spec.policy.secrets.iter().find(|(k, _)| k == id).map(|(_, b)| b.as_slice());
            let check = key_check(bytes.unwrap_or_default());
            if keys.get(id).is_some_and(|known| *known != check) {
                return Err(KeyReused(id.clone()));
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
}
