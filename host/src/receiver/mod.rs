//! The receiver stage: OTLP over gRPC ([`grpc`]) and HTTP ([`http`]).
//! Both turn a request into protobuf bytes, hand it to the pipeline
//! ([`Ingest`]) and answer only when its records are durable, with the
//! status codes and retryable/non-retryable semantics of the OTLP
//! specification.

pub mod grpc;
pub mod http;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::clock;
use crate::listener::Peer;
use crate::metrics::{Metrics, RequestLabels};
use crate::otlp::Signal;
use crate::pipeline::{Rejection, Router};

/// What the records of a request say about who sent it.
pub fn sender(protocol: &str, peer: &Peer) -> audit_format::Sender {
    let tls = peer.tls.as_ref();
    let certificate = tls.and_then(|t| t.client.as_ref());
    audit_format::Sender {
        protocol: protocol.to_owned(),
        address: peer.address.to_string(),
        tls: tls.map(|t| t.version.clone()).unwrap_or_default(),
        principal: peer.principal.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
        certificate_subject: certificate.map(|c| c.subject.clone()).unwrap_or_default(),
        certificate_sans: certificate.map(|c| c.sans.clone()).unwrap_or_default(),
    }
}

/// How many requests a receiver reads and processes at once, in all and
/// from one client address, and how long it waits for a request body: with
/// the size limit, what bounds the memory requests hold. Past it, requests
/// get a retryable refusal. The per-client share leaves room for others
/// when one address holds its slots with uploads it never finishes.
pub struct Admission {
    slots: Arc<Semaphore>,
    per_client: usize,
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Time to receive a whole request body.
    pub read_timeout: Duration,
}

/// A request's slot, given back when dropped.
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    client: Option<IpAddr>,
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let Some(client) = self.client else { return };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = clients.get_mut(&client) {
            *held -= 1;
            if *held == 0 {
                clients.remove(&client);
            }
        }
    }
}

impl Admission {
    /// At most `max_in_flight` requests at once, `per_client` of them from
    /// one client address.
    pub fn new(max_in_flight: usize, per_client: usize, read_timeout: Duration) -> Self {
        Admission { slots: Arc::new(Semaphore::new(max_in_flight)), per_client, clients: Arc::default(), read_timeout }
    }

    /// A slot for one request from `peer`, held until dropped; why not
    /// when all are taken, or the peer's share is.
    pub fn admit(&self, peer: Option<&Peer>) -> Result<Admitted, &'static str> {
        let client = peer.map(|p| p.address.ip());
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let held = client.map_or(0, |c| clients.get(&c).copied().unwrap_or(0));
        if held >= self.per_client {
            return Err("too many requests in flight from this client address; retry later");
        }
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| "too many requests in flight on this receiver; retry later")?;
        if let Some(client) = client {
            *clients.entry(client).or_default() += 1;
        }
        Ok(Admitted { _slot: slot, client, clients: self.clients.clone() })
    }
}

/// The receivers' way into the pipeline: stamps the received-at time,
/// submits, and counts the outcome. At shutdown it is closed: new requests
/// get a retryable error and [`Ingest::drain`] waits for those in flight.
/// (The servers' own connection draining cannot be relied on: an idle
/// client connection can keep it waiting indefinitely.)
pub struct Ingest {
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    open: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a Ingest);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Ingest {
    /// Wraps the router.
    pub fn new(router: Arc<Router>, metrics: Arc<Metrics>) -> Self {
        Ingest { router, metrics, open: AtomicBool::new(true), in_flight: AtomicUsize::new(0), idle: Notify::new() }
    }

    /// Submits one protobuf export request received over `protocol` from
    /// `peer` (recorded in each of its records).
    pub async fn submit(
        &self,
        protocol: &str,
        signal: Signal,
        payload: Bytes,
        peer: Option<&Peer>,
    ) -> Result<(), Rejection> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(self);
        let result = if self.open.load(Ordering::SeqCst) {
            let sender = peer.map(|peer| sender(protocol, peer));
            self.router.submit(signal, payload, clock::now_unix_nano(), sender).await
        } else {
            Err(Rejection::Unavailable("otel-audit is shutting down; retry with another instance or later".into()))
        };
        self.count(protocol, signal, &result);
        result
    }

    /// Refuses new requests and waits (at most `timeout`) until every
    /// request in flight has its answer. Returns false on timeout.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.open.store(false, Ordering::SeqCst);
        tokio::time::timeout(timeout, async {
            loop {
                let notified = self.idle.notified();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    /// Counts a request's outcome (also for requests refused before submit).
    pub fn count(&self, protocol: &str, signal: Signal, result: &Result<(), Rejection>) {
        let outcome = match result {
            Ok(()) => "ok",
            Err(Rejection::Invalid(_) | Rejection::TooLarge(_)) => "invalid",
            Err(Rejection::Unavailable(_)) => "unavailable",
        };
        if let Err(rejection) = result {
            tracing::debug!(protocol, ?signal, outcome, reason = rejection.message(), "request refused");
        }
        let labels = RequestLabels {
            protocol: protocol.to_owned(),
            signal: signal.as_str().to_owned(),
            outcome: outcome.to_owned(),
        };
        self.metrics.requests.get_or_create(&labels).inc();
    }
}
