//! Prometheus metrics of `otel-audit serve`: what was received, kept,
//! dropped, stored and forwarded, per pipeline, chain and exporter, in the
//! text exposition format served on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::clock;

/// Labels of per-pipeline series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    /// Pipeline id, e.g. `traces/audit`.
    pub pipeline: String,
}

/// Labels of per-chain series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChainLabels {
    /// Chain id.
    pub chain: String,
}

/// Labels of per-exporter series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExporterLabels {
    /// Chain id.
    pub chain: String,
    /// Exporter id, e.g. `otlp/downstream`.
    pub exporter: String,
}

/// Labels of request outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `grpc` or `http`.
    pub protocol: String,
    /// `traces` or `logs`.
    pub signal: String,
    /// `ok`, `invalid` (non-retryable) or `unavailable` (retryable).
    pub outcome: String,
}

/// Labels of per-processor series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessorLabels {
    /// Processor id, e.g. `wasm/soc2`.
    pub processor: String,
}

/// Labels of hot-swap attempts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// Processor id, e.g. `wasm/soc2`.
    pub processor: String,
    /// `file`, `signal` or `admin`.
    pub trigger: String,
    /// `applied`, `pending`, `rejected` or `unchanged`.
    pub result: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Requests answered, by protocol, signal and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Spans and log records the processor received.
    pub received: Family<PipelineLabels, Counter>,
    /// Records the processor kept (stored and chained).
    pub kept: Family<PipelineLabels, Counter>,
    /// Records the processor dropped by policy.
    pub dropped: Family<PipelineLabels, Counter>,
    /// Attribute values redacted.
    pub redacted: Family<PipelineLabels, Counter>,
    /// Records kept although a `require`d attribute was missing.
    pub violations: Family<PipelineLabels, Counter>,
    /// Processor failures (traps, timeouts, malformed output), by pipeline.
    pub processor_failures: Family<PipelineLabels, Counter>,
    /// Bytes appended to segment files.
    pub stored_bytes: Family<ChainLabels, Counter>,
    /// Records appended to segment files.
    pub stored_records: Family<ChainLabels, Counter>,
    /// Appends that failed (write or fsync errors): their requests got a retryable error.
    pub store_failures: Family<ChainLabels, Counter>,
    /// fsync latency of group commits.
    pub fsync_seconds: Family<ChainLabels, Histogram>,
    /// Requests committed together per group commit.
    pub group_size: Family<ChainLabels, Histogram>,
    /// Next sequence number of each chain (records stored).
    pub chain_seq: Family<ChainLabels, Gauge>,
    /// Signed checkpoints written.
    pub checkpoints: Family<ChainLabels, Counter>,
    /// Seconds since each chain's last signed checkpoint (set at scrape time).
    pub checkpoint_age: Family<ChainLabels, Gauge<f64, AtomicU64>>,
    /// Records stored but not yet delivered by an exporter.
    pub export_backlog: Family<ExporterLabels, Gauge>,
    /// Records delivered downstream.
    pub exported_records: Family<ExporterLabels, Counter>,
    /// Export attempts that failed and will be retried (refusals included).
    pub export_retries: Family<ExporterLabels, Counter>,
    /// Export attempts the downstream refused (HTTP 400, 500, ..., a
    /// non-retryable gRPC code): the exporter stalls and retries them.
    pub export_refusals: Family<ExporterLabels, Counter>,
    /// 1 while an exporter stalls on a request the downstream refuses, else 0.
    pub exporter_stalled: Family<ExporterLabels, Gauge>,
    /// Records the downstream reported rejected in a partial success (its
    /// own decision, in an OK answer; they stay in the store).
    pub export_rejected: Family<ExporterLabels, Counter>,
    /// Cosignatures received from a witness (`exporter` is `witness/<name>`).
    pub witness_cosignatures: Family<ExporterLabels, Counter>,
    /// Submissions to a witness that failed (down, refused) and are retried.
    pub witness_failures: Family<ExporterLabels, Counter>,
    /// Hot-swap attempts, by processor, trigger and result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Seconds from a reload's trigger until every chain serves the new
    /// module and policy.
    pub reload_seconds: Family<ProcessorLabels, Histogram>,
    checkpoint_times: Mutex<Vec<(String, Arc<AtomicU64>)>>,
    backlog_probes: Mutex<Vec<(ExporterLabels, BacklogProbe)>>,
}

/// Reads an exporter's backlog (records stored but not delivered) at scrape time.
pub type BacklogProbe = Box<dyn Fn() -> u64 + Send + Sync>;

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Self> {
        let fsync = || Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let groups = || Histogram::new(exponential_buckets(1.0, 2.0, 10));
        let metrics = Metrics {
            registry: Mutex::new(Registry::with_prefix("otel_audit")),
            requests: Family::default(),
            received: Family::default(),
            kept: Family::default(),
            dropped: Family::default(),
            redacted: Family::default(),
            violations: Family::default(),
            processor_failures: Family::default(),
            stored_bytes: Family::default(),
            stored_records: Family::default(),
            store_failures: Family::default(),
            fsync_seconds: Family::new_with_constructor(fsync),
            group_size: Family::new_with_constructor(groups),
            chain_seq: Family::default(),
            checkpoints: Family::default(),
            checkpoint_age: Family::default(),
            export_backlog: Family::default(),
            exported_records: Family::default(),
            export_retries: Family::default(),
            export_refusals: Family::default(),
            exporter_stalled: Family::default(),
            export_rejected: Family::default(),
            witness_cosignatures: Family::default(),
            witness_failures: Family::default(),
            reloads: Family::default(),
            reload_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16))),
            checkpoint_times: Mutex::new(Vec::new()),
            backlog_probes: Mutex::new(Vec::new()),
        };
        {
            let mut r = metrics.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register("requests", "OTLP export requests answered", metrics.requests.clone());
            r.register("received_records", "Spans and log records received", metrics.received.clone());
            r.register("kept_records", "Records kept, chained and stored", metrics.kept.clone());
            r.register("dropped_records", "Records dropped by policy", metrics.dropped.clone());
            r.register("redacted_values", "Attribute values redacted", metrics.redacted.clone());
            r.register("require_violations", "Records missing a required attribute", metrics.violations.clone());
            r.register(
                "processor_failures",
                "Processor traps, timeouts and bad output",
                metrics.processor_failures.clone(),
            );
            r.register("stored_bytes", "Bytes appended to segments", metrics.stored_bytes.clone());
            r.register("stored_records", "Records appended to segments", metrics.stored_records.clone());
            r.register("store_failures", "Failed group commits (write or fsync)", metrics.store_failures.clone());
            r.register("fsync_seconds", "fsync latency per group commit", metrics.fsync_seconds.clone());
            r.register("group_commit_requests", "Requests per group commit", metrics.group_size.clone());
            r.register("chain_seq", "Next sequence number of the chain", metrics.chain_seq.clone());
            r.register("checkpoints", "Signed checkpoints written", metrics.checkpoints.clone());
            r.register(
                "checkpoint_age_seconds",
                "Seconds since the last signed checkpoint",
                metrics.checkpoint_age.clone(),
            );
            r.register("export_backlog_records", "Stored records not yet delivered", metrics.export_backlog.clone());
            r.register("exported_records", "Records delivered downstream", metrics.exported_records.clone());
            r.register("export_retries", "Failed export attempts that are retried", metrics.export_retries.clone());
            r.register(
                "witness_cosignatures",
                "Cosignatures received from witnesses",
                metrics.witness_cosignatures.clone(),
            );
            r.register(
                "witness_failures",
                "Witness submissions that failed and are retried",
                metrics.witness_failures.clone(),
            );
            r.register(
                "export_refusals",
                "Export attempts the downstream refused; the exporter stalls and retries them",
                metrics.export_refusals.clone(),
            );
            r.register(
                "exporter_stalled",
                "1 while the exporter stalls on a request the downstream refuses",
                metrics.exporter_stalled.clone(),
            );
            r.register(
                "export_rejected_records",
                "Records the downstream reported rejected in a partial success",
                metrics.export_rejected.clone(),
            );
            r.register("reloads", "Hot-swap attempts of a processor's module and policy", metrics.reloads.clone());
            r.register(
                "reload_seconds",
                "Time from a reload's trigger until every chain serves the new policy",
                metrics.reload_seconds.clone(),
            );
        }
        Arc::new(metrics)
    }

    /// The clock cell a chain updates whenever it signs a checkpoint; the
    /// age gauge is computed from it at scrape time.
    pub fn checkpoint_clock(&self, chain: &str) -> Arc<AtomicU64> {
        let cell = Arc::new(AtomicU64::new(0));
        self.checkpoint_times.lock().unwrap_or_else(|e| e.into_inner()).push((chain.to_owned(), cell.clone()));
        cell
    }

    /// Registers how to read an exporter's backlog; the gauge is set from it at scrape time.
    pub fn backlog_probe(&self, labels: ExporterLabels, probe: BacklogProbe) {
        self.backlog_probes.lock().unwrap_or_else(|e| e.into_inner()).push((labels, probe));
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        for (labels, probe) in self.backlog_probes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            self.export_backlog.get_or_create(labels).set(probe() as i64);
        }
        let now = clock::now_unix_nano();
        for (chain, cell) in self.checkpoint_times.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let at = cell.load(Ordering::Relaxed);
            if at > 0 {
                let age = now.saturating_sub(at) as f64 / 1e9;
                self.checkpoint_age.get_or_create(&ChainLabels { chain: chain.clone() }).set(age);
            }
        }
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// Shorthand for a pipeline label set.
pub fn pipeline(id: &str) -> PipelineLabels {
    PipelineLabels { pipeline: id.to_owned() }
}

/// Shorthand for a chain label set.
pub fn chain(id: &str) -> ChainLabels {
    ChainLabels { chain: id.to_owned() }
}
