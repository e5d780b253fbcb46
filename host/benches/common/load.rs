//! The load: closed-loop OTLP/gRPC clients, each on its own connection,
//! sending its next batch when the previous one is answered, from a pool
//! of pre-encoded batches (generation is not measured). A request counts
//! if it is answered inside the measured window; errors are counted apart,
//! never as throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use otel_audit::exporter::client::{Client, ClientOptions, Destination};
use otel_audit::loadgen::{self, BatchSpec};
use otel_audit::otlp::Signal;
use prost::Message;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Spans per request.
pub const SPANS: usize = 100;
/// Attributes per span.
pub const ATTRIBUTES: usize = 10;
/// Distinct pre-encoded batches the clients rotate over.
pub const POOL: u64 = 64;
/// Load before the measured window (connections, caches, first segment).
pub const WARMUP: Duration = Duration::from_secs(2);
/// Per-request timeout of the clients.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// A client that got an error waits this long before its next request,
/// as an OTLP exporter backs off on a retryable error.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// The load generator's runtime.
pub fn runtime() -> Result<Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the load generator's runtime: {e}"))
}

/// [`POOL`] pre-encoded trace requests of [`SPANS`] spans with
/// [`ATTRIBUTES`] varied attributes each, `audit_ratio` of them audit records.
pub fn pool(audit_ratio: f64) -> Arc<Vec<Bytes>> {
    let batch = |seed| {
        let spec = BatchSpec { records: SPANS, audit_ratio, attributes: ATTRIBUTES, varied: true, seed };
        Bytes::from(loadgen::traces(&spec).encode_to_vec())
    };
    Arc::new((1..=POOL).map(batch).collect())
}

/// The clients of one load, running on a runtime.
pub struct Clients {
    tasks: Vec<JoinHandle<Result<ClientStats, String>>>,
}

impl Clients {
    /// Starts `clients` clients sending `pool`'s batches to the gRPC
    /// `endpoint` until `end`, counting what is answered from `window_start`.
    pub fn start(
        runtime: &Runtime,
        endpoint: &str,
        pool: &Arc<Vec<Bytes>>,
        clients: usize,
        window_start: Instant,
        end: Instant,
    ) -> Clients {
        Self::start_tls(runtime, endpoint, None, pool, clients, window_start, end)
    }

    /// [`Clients::start`] speaking TLS with `tls` when given.
    pub fn start_tls(
        runtime: &Runtime,
        endpoint: &str,
        tls: Option<&otel_audit::config::ClientTls>,
        pool: &Arc<Vec<Bytes>>,
        clients: usize,
        window_start: Instant,
        end: Instant,
    ) -> Clients {
        let client =
            |index| client_loop(endpoint.to_owned(), tls.cloned(), pool.clone(), index, clients, window_start, end);
        Clients { tasks: (0..clients).map(|index| runtime.spawn(client(index))).collect() }
    }

    /// Waits for every client to end; what each did.
    pub fn finish(self, runtime: &Runtime) -> Result<Vec<ClientStats>, String> {
        self.tasks
            .into_iter()
            .map(|task| runtime.block_on(task).map_err(|e| format!("a client task failed: {e}"))?)
            .collect()
    }
}

/// What one client did.
#[derive(Default)]
pub struct ClientStats {
    /// Requests answered OK inside the window.
    pub ok: u64,
    /// Requests not answered OK inside the window.
    pub errors: u64,
    /// Requests not answered OK before or after the window (warm-up, the
    /// last one in flight).
    pub errors_outside: u64,
    /// The first error inside the window, and the first outside it.
    pub first_error: Option<String>,
    pub first_error_outside: Option<String>,
    /// Latencies of the OK requests inside the window, and when each was
    /// answered.
    pub latencies: Vec<Duration>,
    pub answered: Vec<Instant>,
    /// When each error inside the window came.
    pub failed_at: Vec<Instant>,
}

/// Sends batches back to back over its own gRPC connection until `end`;
/// counts what is answered inside [`window_start`, `end`].
async fn client_loop(
    endpoint: String,
    tls: Option<otel_audit::config::ClientTls>,
    pool: Arc<Vec<Bytes>>,
    index: usize,
    clients: usize,
    window_start: Instant,
    end: Instant,
) -> Result<ClientStats, String> {
    let options = ClientOptions { headers: Vec::new(), gzip: false, timeout: TIMEOUT };
    let client = Client::with_tls(&Destination::Grpc { endpoint }, options, tls.as_ref()).map_err(|e| e.to_string())?;
    let mut stats = ClientStats::default();
    let mut next = index;
    loop {
        let sent = Instant::now();
        if sent >= end {
            return Ok(stats);
        }
        let payload = pool[next % pool.len()].clone();
        next += clients;
        let result = client.send(Signal::Traces, payload).await;
        let answered = Instant::now();
        let counted = answered >= window_start && answered <= end;
        let error = match result {
            Ok(delivered) if delivered.rejected == 0 => {
                if counted {
                    stats.ok += 1;
                    stats.latencies.push(answered - sent);
                    stats.answered.push(answered);
                }
                continue;
            }
            Ok(delivered) => format!("partial success: {} rejected: {}", delivered.rejected, delivered.message),
            Err(error) => {
                tokio::time::sleep(ERROR_BACKOFF).await;
                error.to_string()
            }
        };
        stats.error(counted.then_some(answered), error);
    }
}

impl ClientStats {
    /// Counts a request not answered OK: answered at `inside` the window,
    /// or outside it.
    fn error(&mut self, inside: Option<Instant>, error: String) {
        if let Some(answered) = inside {
            self.errors += 1;
            self.failed_at.push(answered);
            self.first_error.get_or_insert(error);
        } else {
            self.errors_outside += 1;
            self.first_error_outside.get_or_insert(error);
        }
    }
}
