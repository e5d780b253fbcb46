//! A chain's fsyncs on a thread of their own: while one group's records are
//! made durable, the chain worker already runs the next group through the
//! component (pipelined group commit). The worker still answers a group
//! only once its fsync has returned, and writes the next group only after
//! that: one group at a time is waiting for the disk.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use crate::store::{StoreError, Unsynced};

/// The fsync thread of one chain; it ends when this is dropped.
pub(super) struct Syncer {
    orders: Sender<Arc<Unsynced>>,
    done: Receiver<Result<Duration, StoreError>>,
    /// An fsync was handed over and its outcome not yet taken.
    busy: bool,
    /// The outcome of that fsync, once [`finished`](Syncer::finished) saw it.
    outcome: Option<Result<Duration, StoreError>>,
}

impl Syncer {
    /// Starts the thread, named `name`.
    pub(super) fn start(name: String) -> std::io::Result<Syncer> {
        let (orders, incoming) = mpsc::channel::<Arc<Unsynced>>();
        let (outcomes, done) = mpsc::channel();
        std::thread::Builder::new().name(name).spawn(move || {
            for unsynced in incoming {
                if outcomes.send(unsynced.sync()).is_err() {
                    break;
                }
            }
        })?;
        Ok(Syncer { orders, done, busy: false, outcome: None })
    }

    /// Starts the fsync of a written batch.
    pub(super) fn begin(&mut self, unsynced: Arc<Unsynced>) {
        self.busy = self.orders.send(unsynced).is_ok();
    }

    /// Whether the fsync begun last has returned (without waiting).
    pub(super) fn finished(&mut self) -> bool {
        if self.busy && self.outcome.is_none() {
            self.outcome = self.done.try_recv().ok();
        }
        self.outcome.is_some()
    }

    /// The outcome of the fsync begun last, once it is done; `None` if
    /// none was begun or the thread is gone (the caller syncs itself).
    pub(super) fn wait(&mut self) -> Option<Result<Duration, StoreError>> {
        if !std::mem::take(&mut self.busy) {
            return None;
        }
        self.outcome.take().or_else(|| self.done.recv().ok())
    }
}
