//! Group commit: the requests queued while the chain was busy run through
//! the component one after the other, each from the head the previous one
//! produced; all their records are appended with one fsync, and only then
//! is each request answered. A request the component refuses is answered
//! at once and the others go on; a failed append answers every request of
//! the group with a retryable error and leaves the head where it was.
//!
//! Pipelined: while a group's fsync runs ([`super::syncer`]), the next
//! group already runs through the component from the head the first one
//! leads to. It is written only once the first is durable (and answered),
//! and if that fsync fails it is answered retryable too: its records would
//! follow ones the store no longer has.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use audit_format::{ChainHead, Context};

use super::syncer::Syncer;
use super::{ChainWorker, Job, Occasion, Unavailable, Work, configured_instance};
use crate::metrics;
use crate::otlp::Signal;
use crate::pipeline::Rejection;
use crate::runtime::{Output, ProcessError, RuntimeError};
use crate::store::{Append, AppendStats, StoreError, Unsynced};

/// At most this many requests are committed together.
pub(super) const MAX_GROUP_REQUESTS: usize = 256;
/// A group stops growing once its requests hold this many bytes: what
/// queues behind a group waits for about one request part
/// ([`crate::pipeline::PART_BYTES`]) to be processed, not for seconds.
pub(super) const MAX_GROUP_BYTES: usize = crate::pipeline::PART_BYTES;

/// `first` and the requests queued behind it, up to the group limits. A
/// wake-up in the queue is skipped: the loop looked at its orders already.
pub(super) fn gather(first: Job, queue: &Receiver<Work>) -> Vec<Job> {
    let mut bytes = first.payload.len();
    let mut group = vec![first];
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
    group
}

/// Answers every request of a group with a retryable error.
pub(super) fn reject_all(group: impl IntoIterator<Item = Job>, reason: &str) {
    for job in group {
        let _ = job.reply.send(Err(Rejection::Unavailable(reason.to_owned())));
    }
}

/// Why the component's output does not continue the chain where the host
/// said it starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Discontinuity {
    /// Every record needs its leaf.
    #[error("{records} records but {leaves} leaves")]
    Leaves {
        /// Records returned.
        records: usize,
        /// Leaves returned.
        leaves: usize,
    },
    /// The head is not the given one advanced by the records returned.
    #[error("head {}#{} does not follow {}#{} plus {records} records", got.0, got.1, from.0, from.1)]
    Head {
        /// Chain id and seq returned.
        got: (String, u64),
        /// Chain id and seq given.
        from: (String, u64),
        /// Records returned.
        records: u64,
    },
    /// `head.prev` must be the last record's leaf.
    #[error("head.prev is not the last leaf")]
    PrevNotLastLeaf,
    /// Without records, `head.prev` must stay.
    #[error("head.prev changed without records")]
    PrevChanged,
}

/// The guest's output must continue the chain exactly where the host said.
pub(super) fn check_output(output: &Output, ctx: &Context) -> Result<(), Discontinuity> {
    let n = output.records.len() as u64;
    if output.leaves.len() != output.records.len() {
        return Err(Discontinuity::Leaves { records: output.records.len(), leaves: output.leaves.len() });
    }
    if output.head.chain_id != ctx.head.chain_id || output.head.seq != ctx.head.seq + n {
        return Err(Discontinuity::Head {
            got: (output.head.chain_id.clone(), output.head.seq),
            from: (ctx.head.chain_id.clone(), ctx.head.seq),
            records: n,
        });
    }
    match output.leaves.last() {
        Some(last) if *last != output.head.prev => Err(Discontinuity::PrevNotLastLeaf),
        None if output.head.prev != ctx.head.prev => Err(Discontinuity::PrevChanged),
        _ => Ok(()),
    }
}

/// The requests of processed ones.
fn jobs(processed: Vec<(Job, Output)>) -> impl Iterator<Item = Job> {
    processed.into_iter().map(|(job, _)| job)
}

/// The records the component produced for processed requests.
fn records_in(processed: &[(Job, Output)]) -> usize {
    processed.iter().map(|(_, o)| o.records.len()).sum()
}

/// A group whose records are written and waiting for their fsync.
pub(super) struct InFlight {
    /// Its requests, each with the component's output.
    processed: Vec<(Job, Output)>,
    /// What makes them durable.
    unsynced: Arc<Unsynced>,
    /// The head after them: where the next group starts.
    head: ChainHead,
}

impl ChainWorker {
    /// Runs each request through the component, appends every record with
    /// one fsync, then answers: OK only when durable (the unit tests' way
    /// of running one group at a time).
    #[cfg(test)]
    pub(super) fn commit_group(&mut self, group: Vec<Job>) {
        self.start_group(group);
        self.settle();
    }

    /// Runs each request through the component, from the head after the
    /// group in flight if there is one, then settles that group and writes
    /// this one's records. When they fit before the next checkpoint is
    /// due, their fsync is begun and the group stays in flight until
    /// [`settle`](Self::settle) answers it (meanwhile the worker can run
    /// the next group); otherwise they are appended now, with a checkpoint
    /// signed where one falls due, and answered.
    pub(super) fn start_group(&mut self, group: Vec<Job>) {
        if let Err(reason) = self.ensure_ready() {
            self.settle();
            reject_all(group, &reason.to_string());
            return;
        }
        let mut head = match (&self.in_flight, &self.store) {
            (Some(flight), _) => flight.head.clone(),
            (None, Some(store)) => store.head().clone(),
            (None, None) => return,
        };
        let mut processed: Vec<(Job, Output)> = Vec::with_capacity(group.len());
        let mut durable_before = true;
        let mut not_run = Vec::new();
        for job in group {
            if !durable_before {
                not_run.push(job);
                continue;
            }
            let ctx =
                Context { received_at_unix_nano: job.received_at, head: head.clone(), sender: job.sender.clone() };
            match self.process(&job.payload, &ctx) {
                Ok(output) => {
                    head = output.head.clone();
                    processed.push((job, output));
                }
                Err(rejection) => {
                    let _ = job.reply.send(Err(rejection));
                }
            }
            // The group in flight is answered as soon as it is durable.
            if self.syncer.as_mut().is_some_and(Syncer::finished) {
                durable_before = self.settle();
            }
        }
        if !(durable_before && self.settle()) {
            // These records follow ones that are not durable.
            let group = jobs(processed).chain(not_run);
            reject_all(group, "the audit store could not make the records before these durable");
            return;
        }
        let records = records_in(&processed);
        if records > 0 && self.started && records as u64 <= self.room_before_checkpoint() {
            self.begin_write(processed, head);
            return;
        }
        if let Err(reason) = self.append(processed.iter().map(|(_, o)| o), processed.len()) {
            reject_all(jobs(processed), &reason.to_string());
            return;
        }
        self.answer_durable(processed, head.seq);
    }

    /// Writes a group's records and begins their fsync: the group is in
    /// flight.
    fn begin_write(&mut self, processed: Vec<(Job, Output)>, head: ChainHead) {
        let outbox = self.spec.store.outbox.then_some(self.spec.signal);
        let batch: Vec<Append<'_>> = processed
            .iter()
            .map(|(_, o)| Append {
                records: &o.records,
                leaves: &o.leaves,
                outbox: outbox.map(|signal| (signal, o.otlp.as_slice())),
                continues: 0,
            })
            .collect();
        let written = match self.store.as_mut() {
            Some(store) => store.write(&batch),
            None => Err(StoreError::Poisoned),
        };
        drop(batch);
        let unsynced = match written {
            Ok(Some(unsynced)) => Arc::new(unsynced),
            Ok(None) => return self.answer_durable(processed, head.seq),
            Err(error) => {
                let records = records_in(&processed);
                let reason = self.store_failed(error, processed.len(), records);
                reject_all(jobs(processed), &reason.to_string());
                return;
            }
        };
        if self.syncer.is_none() {
            let name = format!("{}-fsync", std::thread::current().name().unwrap_or("chain"));
            // Without the thread, `settle` fsyncs on this one.
            self.syncer = Syncer::start(name)
                .inspect_err(|error| tracing::warn!(chain = %self.spec.chain_id, %error, "cannot start the fsync thread; fsyncs run on the chain's"))
                .ok();
        }
        if let Some(syncer) = self.syncer.as_mut() {
            syncer.begin(unsynced.clone());
        }
        self.in_flight = Some(InFlight { processed, unsynced, head });
    }

    /// Waits for the fsync of the group in flight, if there is one, and
    /// answers it: OK once durable; retryable when the fsync failed (the
    /// store then goes back to before it and is reopened). Whether the
    /// chain goes on from the head after it.
    pub(super) fn settle(&mut self) -> bool {
        let Some(flight) = self.in_flight.take() else { return true };
        let synced = self.syncer.as_mut().and_then(Syncer::wait).unwrap_or_else(|| flight.unsynced.sync());
        let completed = match self.store.as_mut() {
            Some(store) => store.complete(synced),
            None => Err(StoreError::Poisoned),
        };
        let requests = flight.processed.len();
        match completed {
            Ok(stats) => {
                self.stored(&stats);
                self.metrics.group_size.get_or_create(&metrics::chain(&self.spec.chain_id)).observe(requests as f64);
                self.answer_durable(flight.processed, flight.head.seq);
                true
            }
            Err(error) => {
                let records = records_in(&flight.processed);
                let reason = self.store_failed(error, requests, records);
                reject_all(jobs(flight.processed), &reason.to_string());
                false
            }
        }
    }

    /// Counts and answers OK the requests of a group whose records are
    /// durable, up to `next_seq`.
    fn answer_durable(&mut self, processed: Vec<(Job, Output)>, next_seq: u64) {
        let labels = metrics::pipeline(&self.spec.pipeline_id);
        // Counted once durable: what the metrics say was kept is in the store.
        for (_, output) in &processed {
            let stats = &output.stats;
            self.metrics.received.get_or_create(&labels).inc_by(stats.received);
            self.metrics.kept.get_or_create(&labels).inc_by(stats.kept);
            self.metrics.dropped.get_or_create(&labels).inc_by(stats.dropped);
            self.metrics.redacted.get_or_create(&labels).inc_by(stats.redacted);
            self.metrics.violations.get_or_create(&labels).inc_by(stats.violations);
        }
        self.committed_to(next_seq);
        for (job, _) in processed {
            let _ = job.reply.send(Ok(()));
        }
    }

    /// Appends the records of `outputs` (from `requests` requests) with one
    /// fsync, or, where they would take the unsigned tail past
    /// `every_records`, in parts with a checkpoint signed between them (a
    /// request split so gets its outbox frame with its last part). On
    /// failure the head stays after the last part made durable, and the
    /// store is reopened before the next group if it cannot be trusted.
    pub(super) fn append<'a>(
        &mut self,
        outputs: impl Iterator<Item = &'a Output> + Clone,
        requests: usize,
    ) -> Result<(), Unavailable> {
        let records: usize = outputs.clone().map(|o| o.records.len()).sum();
        if records == 0 {
            return Ok(());
        }
        if !self.started {
            self.sign(Occasion::Start).map_err(Unavailable::CheckpointDue)?;
        }
        let outbox = self.spec.store.outbox;
        let signal = self.spec.signal;
        let mut part: Vec<Append<'_>> = Vec::new();
        let mut room = self.room_before_checkpoint();
        for output in outputs {
            let total = output.records.len();
            let mut done = 0;
            while done < total {
                if room == 0 {
                    self.append_part(&part, requests)?;
                    part.clear();
                    self.sign(Occasion::Schedule).map_err(Unavailable::CheckpointDue)?;
                    room = self.room_before_checkpoint();
                }
                let take = (total - done).min(usize::try_from(room).unwrap_or(usize::MAX));
                let last = done + take == total;
                part.push(Append {
                    records: &output.records[done..done + take],
                    leaves: &output.leaves[done..done + take],
                    outbox: (outbox && last).then_some((signal, output.otlp.as_slice())),
                    continues: done as u64,
                });
                done += take;
                room -= take as u64;
            }
        }
        self.append_part(&part, requests)?;
        self.metrics.group_size.get_or_create(&metrics::chain(&self.spec.chain_id)).observe(requests as f64);
        Ok(())
    }

    /// Appends one part of a group with one fsync.
    fn append_part(&mut self, part: &[Append<'_>], requests: usize) -> Result<(), Unavailable> {
        if part.is_empty() {
            return Ok(());
        }
        let Some(store) = self.store.as_mut() else { return Err(Unavailable::NoStore) };
        match store.append(part) {
            Ok(stats) => {
                self.stored(&stats);
                Ok(())
            }
            Err(error) => {
                let records = part.iter().map(|a| a.records.len()).sum();
                Err(self.store_failed(error, requests, records))
            }
        }
    }

    /// Counts what an append stored.
    fn stored(&self, stats: &AppendStats) {
        let chain_labels = metrics::chain(&self.spec.chain_id);
        self.metrics.stored_bytes.get_or_create(&chain_labels).inc_by(stats.bytes);
        self.metrics.stored_records.get_or_create(&chain_labels).inc_by(stats.records);
        self.metrics.fsync_seconds.get_or_create(&chain_labels).observe(stats.fsync.as_secs_f64());
    }

    /// Counts and logs a failed append (of `records` records from
    /// `requests` requests) and drops a store that cannot be trusted past
    /// it: it is reopened, recovering from what is on disk, before the
    /// next group. What the requests are answered.
    fn store_failed(&mut self, error: StoreError, requests: usize, records: usize) -> Unavailable {
        self.metrics.store_failures.get_or_create(&metrics::chain(&self.spec.chain_id)).inc();
        tracing::error!(chain = %self.spec.chain_id, %error, requests, records, "append failed; requests answered retryable");
        if self.store.as_ref().is_none_or(|store| store.is_poisoned()) || !matches!(error, StoreError::Io { .. }) {
            self.store = None;
        }
        Unavailable::NotDurable(error)
    }

    /// Runs one request. An invalid request is the client's problem. A trap
    /// (out of memory or time) replaces the instance and the request is
    /// tried once more on a fresh one: the component is a pure function, so
    /// a second trap means this request cannot be processed within the
    /// limits, and retrying it would only fail forever; it is refused as
    /// too large. A batch the policy refuses (an OTTL error under
    /// `error_mode: propagate`) is unavailable: the sender keeps it. Anything else (output that does not continue the chain)
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
                Err(RuntimeError::Process(ProcessError::Decode(message))) => {
                    return Err(Rejection::Invalid(format!("invalid OTLP request: {message}")));
                }
                // An OTTL condition or statement failed under `error_mode:
                // propagate`: the batch is refused and stays with the sender,
                // which retries; it goes through once the policy is fixed
                // (hot swap). The instance is sound and is kept.
                Err(RuntimeError::Process(ProcessError::Policy(message))) => {
                    self.metrics.processor_failures.get_or_create(&metrics::pipeline(&self.spec.pipeline_id)).inc();
                    tracing::warn!(chain = %self.spec.chain_id, seq = ctx.head.seq, %message, "the policy refused a batch");
                    return Err(Rejection::Unavailable(format!("the audit policy refused this batch: {message}")));
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
}
