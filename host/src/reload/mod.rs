//! Hot swap of a processor's module and policy while serving.
//!
//! A reload starts from a trigger (a watched file changed, SIGHUP, or
//! `POST /admin/reload`). The candidate is compiled, configured and
//! policy-tested off the hot path ([`candidate`]); then every chain of the
//! processor is ordered to switch between two groups of requests, and to
//! append an `audit.policy_change` record chained by the new instance
//! ([`crate::policy_event`]). A refused candidate leaves the old one serving and is
//! recorded as `audit.policy_rejected`. Reloads run one at a time.

pub mod candidate;
pub mod report;
pub mod watch;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config;
use crate::metrics::{Metrics, ProcessorLabels, ReloadLabels};
use crate::pipeline::Router;
use crate::pipeline::chain::Control;
use crate::policy_event::{EventKind, PolicyEvent, Trigger};
use crate::runtime::Runtime;
use candidate::{Outcome, Serving};
pub use report::{ChainReport, FileStatus, ProcessorStatus, ReloadReport, ReloadResult, Status};

/// How long a reload waits for every chain to apply it before answering;
/// a chain that has not applied it by then still does before its next batch.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One processor: its config (where its files are), the chains it serves
/// and what serves now.
struct Slot {
    config: config::Processor,
    state: Mutex<SlotState>,
}

struct SlotState {
    serving: Serving,
    last: Option<ReloadReport>,
    /// The last refused candidate recorded, so that a file watch does not
    /// record the same one again.
    last_rejected: Option<[u8; 32]>,
}

/// Runs reloads for every processor of a server.
pub struct Reloader {
    runtime: Arc<Runtime>,
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    slots: Vec<Slot>,
    /// One reload at a time.
    busy: tokio::sync::Mutex<()>,
}

/// A reload asked for a processor the config does not have.
#[derive(Debug, thiserror::Error)]
#[error("no processor `{0}`; the config has: {1}")]
pub struct UnknownProcessor(pub String, pub String);

impl Reloader {
    /// A reloader over the processors in `serving` (id, config, what serves
    /// since start-up) and the chains of `router`.
    pub fn new(
        runtime: Arc<Runtime>,
        router: Arc<Router>,
        metrics: Arc<Metrics>,
        serving: Vec<(config::Processor, Serving)>,
    ) -> Self {
        let slots = serving
            .into_iter()
            .map(|(config, serving)| Slot {
                config,
                state: Mutex::new(SlotState { serving, last: None, last_rejected: None }),
            })
            .collect();
        Reloader { runtime, router, metrics, slots, busy: tokio::sync::Mutex::new(()) }
    }

    /// The processors' configs, for the file watchers.
    pub fn processors(&self) -> impl Iterator<Item = &config::Processor> {
        self.slots.iter().map(|s| &s.config)
    }

    /// Reloads one processor (`Some(id)`) or all, one after the other.
    pub async fn reload(
        &self,
        processor: Option<&str>,
        trigger: Trigger,
    ) -> Result<Vec<ReloadReport>, UnknownProcessor> {
        let started = Instant::now();
        let at = crate::clock::now_unix_nano();
        let slots: Vec<&Slot> = match processor {
            Some(id) => match self.slots.iter().find(|s| s.config.id == id) {
                Some(slot) => vec![slot],
                None => {
                    let known = self.slots.iter().map(|s| s.config.id.as_str()).collect::<Vec<_>>().join(", ");
                    return Err(UnknownProcessor(id.to_owned(), known));
                }
            },
            None => self.slots.iter().collect(),
        };
        let _one_at_a_time = self.busy.lock().await;
        let mut reports = Vec::new();
        for slot in slots {
            reports.push(self.reload_slot(slot, &trigger, at, started).await);
        }
        Ok(reports)
    }

    async fn reload_slot(&self, slot: &Slot, trigger: &Trigger, at: u64, started: Instant) -> ReloadReport {
        let serving = lock(&slot.state).serving.clone();
        let outcome = {
            let (runtime, config, serving) = (self.runtime.clone(), slot.config.clone(), serving.clone());
            tokio::task::spawn_blocking(move || candidate::build(&runtime, &config, &serving)).await
        };
        let processor = slot.config.id.clone();
        let base = PolicyEvent {
            processor: processor.clone(),
            trigger: trigger.clone(),
            old_module_digest: serving.module.digest().to_owned(),
            old_policy_digest: serving.policy_digest.clone(),
            kind: EventKind::Rejected { module_digest: None, policy_digest: None, reason: String::new() },
        };
        let mut report = ReloadReport {
            processor: processor.clone(),
            trigger: trigger.kind(),
            at: rfc3339(at),
            result: ReloadResult::Unchanged,
            reason: None,
            module_digest: serving.module.digest().to_owned(),
            policy_digest: serving.policy_digest.clone(),
            chains: Vec::new(),
            elapsed_ms: 0.0,
        };
        let mut now_serving = None;
        match outcome {
            Err(panic) => {
                report.result = ReloadResult::Rejected;
                report.reason = Some(format!("the candidate check failed: {panic}"));
            }
            Ok(Outcome::Unchanged) => {
                // Back to what serves: the next refusal of the same files is news again.
                lock(&slot.state).last_rejected = None;
                tracing::info!(processor = %processor, trigger = trigger.name(), "reload: module, policy and secrets unchanged");
            }
            Ok(Outcome::Rejected(rejected)) => {
                report.result = ReloadResult::Rejected;
                report.reason = Some(rejected.reason.clone());
                tracing::warn!(processor = %processor, trigger = trigger.name(), reason = %rejected.reason, "reload rejected; the serving module and policy stay");
                let repeated = matches!(trigger, Trigger::File(_))
                    && lock(&slot.state).last_rejected == Some(rejected.fingerprint);
                if !repeated {
                    let event = PolicyEvent {
                        kind: EventKind::Rejected {
                            module_digest: rejected.module_digest,
                            policy_digest: rejected.policy_digest,
                            reason: rejected.reason,
                        },
                        ..base
                    };
                    report.chains = self.order_chains(&processor, &event, None).await;
                    lock(&slot.state).last_rejected = Some(rejected.fingerprint);
                }
            }
            Ok(Outcome::Accepted { module, policy, policy_digest, secrets_changed, key }) => {
                report.result = ReloadResult::Applied;
                report.module_digest = module.digest().to_owned();
                report.policy_digest = policy_digest.clone();
                let event = PolicyEvent {
                    kind: EventKind::Change {
                        module_digest: module.digest().to_owned(),
                        policy_digest: policy_digest.clone(),
                        secrets_changed,
                    },
                    ..base
                };
                tracing::info!(processor = %processor, "reload: {}", event.summary());
                report.chains = self.order_chains(&processor, &event, Some((module.clone(), policy.clone()))).await;
                let secrets_digest = candidate::secrets_digest(&policy.secrets);
                let mut key_history = serving.key_history.clone();
                key_history.extend(key);
                // Ordered on every chain: each applies it before its next batch.
                now_serving = Some(Serving {
                    key_history,
                    module,
                    policy,
                    policy_digest,
                    secrets_digest,
                    since_unix_nano: at,
                    trigger: trigger.kind(),
                });
            }
        }
        let pending: Vec<String> =
            report.chains.iter().filter_map(|c| c.error.as_ref().map(|e| format!("{}: {e}", c.chain))).collect();
        if !pending.is_empty() {
            if report.result == ReloadResult::Applied {
                // Ordered everywhere; these chains switch (and record it)
                // before their next batch, or at their next start.
                report.result = ReloadResult::Pending;
            }
            report.reason.get_or_insert_with(|| format!("not yet recorded on every chain: {}", pending.join("; ")));
        }
        let elapsed = started.elapsed();
        report.elapsed_ms = elapsed.as_secs_f64() * 1e3;
        self.metrics
            .reloads
            .get_or_create(&ReloadLabels {
                processor: processor.clone(),
                trigger: trigger.name().to_owned(),
                result: report.result.name().to_owned(),
            })
            .inc();
        if report.result == ReloadResult::Applied {
            self.metrics.reload_seconds.get_or_create(&ProcessorLabels { processor }).observe(elapsed.as_secs_f64());
        }
        // What serves and the report that says so change together.
        let mut state = lock(&slot.state);
        if let Some(serving) = now_serving {
            state.serving = serving;
            state.last_rejected = None;
        }
        // A watcher seeing a write that a signal or admin reload already
        // applied is not news: keep that reload's report.
        if !(report.result == ReloadResult::Unchanged && matches!(trigger, Trigger::File(_))) {
            state.last = Some(report.clone());
        }
        drop(state);
        report
    }

    /// Orders every chain of `processor` to record `event` (and, with
    /// `swap`, to switch), and waits until each has made the record durable.
    async fn order_chains(
        &self,
        processor: &str,
        event: &PolicyEvent,
        swap: Option<(Arc<crate::runtime::Module>, Arc<crate::pipeline::chain::PolicySource>)>,
    ) -> Vec<ChainReport> {
        let mut waiting = Vec::new();
        for pipeline in self.router.pipelines().iter().filter(|p| p.processor_id == processor) {
            for chain in &pipeline.chains {
                let (done, outcome) = std::sync::mpsc::channel();
                let control = Control { event: event.clone(), swap: swap.clone(), done };
                if chain.order(control) {
                    waiting.push((chain.chain_id.clone(), outcome));
                } else {
                    waiting.push((chain.chain_id.clone(), std::sync::mpsc::channel().1));
                }
            }
        }
        let wait = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + APPLY_TIMEOUT;
            waiting
                .into_iter()
                .map(|(chain, outcome)| {
                    let mut last_error = None;
                    loop {
                        match outcome.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                            Ok(Ok(seq)) => return ChainReport { chain, seq: Some(seq), error: None },
                            Ok(Err(error)) => last_error = Some(error.to_string()),
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                                let error =
                                    last_error.unwrap_or_else(|| format!("not applied after {APPLY_TIMEOUT:?}"));
                                return ChainReport { chain, seq: None, error: Some(error) };
                            }
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                                let error = last_error.unwrap_or_else(|| "the chain stopped".into());
                                return ChainReport { chain, seq: None, error: Some(error) };
                            }
                        }
                    }
                })
                .collect::<Vec<_>>()
        });
        wait.await.unwrap_or_default()
    }

    /// Every processor's module and policy in force, since when, and the
    /// last reload.
    pub fn status(&self) -> Status {
        let processors = self
            .slots
            .iter()
            .map(|slot| {
                let state = lock(&slot.state);
                let chains = self
                    .router
                    .pipelines()
                    .iter()
                    .filter(|p| p.processor_id == slot.config.id)
                    .flat_map(|p| p.chains.iter().map(|c| c.chain_id.clone()))
                    .collect();
                ProcessorStatus {
                    id: slot.config.id.clone(),
                    module: FileStatus {
                        path: slot.config.module.display().to_string(),
                        digest: state.serving.module.digest().to_owned(),
                    },
                    policy: FileStatus {
                        path: slot.config.policy.display().to_string(),
                        digest: state.serving.policy_digest.clone(),
                    },
                    since: rfc3339(state.serving.since_unix_nano),
                    trigger: state.serving.trigger,
                    chains,
                    last_reload: state.last.clone(),
                }
            })
            .collect();
        Status { processors }
    }
}

fn rfc3339(unix_nano: u64) -> String {
    audit_format::rfc3339_nanos(unix_nano)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
