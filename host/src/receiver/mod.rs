//! The receiver stage: OTLP over gRPC ([`grpc`]) and HTTP ([`http`]).
//! Both turn a request into protobuf bytes, hand it to the pipeline
//! ([`Ingest`]) and answer only when its records are durable, with the
//! status codes and retryable/non-retryable semantics of the OTLP
//! specification.

pub mod grpc;
pub mod http;

use std::sync::Arc;

use bytes::Bytes;

use crate::clock;
use crate::metrics::{Metrics, RequestLabels};
use crate::otlp::Signal;
use crate::pipeline::{Rejection, Router};

/// The receivers' way into the pipeline: stamps the received-at time,
/// submits, and counts the outcome.
pub struct Ingest {
    router: Arc<Router>,
    metrics: Arc<Metrics>,
}

impl Ingest {
    /// Wraps the router.
    pub fn new(router: Arc<Router>, metrics: Arc<Metrics>) -> Self {
        Ingest { router, metrics }
    }

    /// Submits one protobuf export request received over `protocol`.
    pub async fn submit(&self, protocol: &str, signal: Signal, payload: Bytes) -> Result<(), Rejection> {
        let result = self.router.submit(signal, payload, clock::now_unix_nano()).await;
        self.count(protocol, signal, &result);
        result
    }

    /// Counts a request's outcome (also for requests refused before submit).
    pub fn count(&self, protocol: &str, signal: Signal, result: &Result<(), Rejection>) {
        let outcome = match result {
            Ok(()) => "ok",
            Err(Rejection::Invalid(_)) => "invalid",
            Err(Rejection::Unavailable(_)) => "unavailable",
        };
        if let Err(rejection) = result {
            tracing::debug!(protocol, ?signal, outcome, reason = rejection.message(), "request refused");
        }
        let labels = RequestLabels {
            protocol: protocol.to_owned(),
            signal: signal_name(signal).to_owned(),
            outcome: outcome.to_owned(),
        };
        self.metrics.requests.get_or_create(&labels).inc();
    }
}

/// `traces` or `logs`.
pub fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "traces",
        Signal::Logs => "logs",
    }
}
