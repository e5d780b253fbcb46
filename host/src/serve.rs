//! `otel-audit serve`: wires the stages together from a validated config
//! (receivers → pipeline → chain workers with their stores → exporters,
//! plus metrics and health), and shuts them down in order: stop accepting,
//! finish the requests in flight, stop the chains (each signs a final
//! checkpoint), then let the exporters deliver what is stored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::auth::{Access, Guard, Tokens};
use crate::checkpoint::SignerKey;
use crate::config::{self, Authenticator, Config, Security, ServerLimits};
use crate::exporter::ExportTask;
use crate::exporter::client::{Client, ClientOptions, Destination};
use crate::listener::{self, ListenerSpec};
use crate::metrics::Metrics;
use crate::pipeline::chain::{ChainSpec, ChainWorker, CheckpointPolicy, FinalCheckpointError, PolicySource};
use crate::pipeline::{ChainHandle, PipelineHandle, Router};
use crate::preflight;
use crate::receiver::{self, Admission, Ingest};
use crate::reload::{self, Reloader, candidate::Serving};
use crate::runtime::{Limits, Module, Runtime};
use crate::store::{ChainStore, StoreOptions};
use crate::tls::ServerTlsSource;

/// Requests a chain may have queued before clients get retryable errors.
const CHAIN_QUEUE: usize = 1024;
/// How long exporters may keep delivering after the chains stopped.
const EXPORT_DRAIN: Duration = Duration::from_secs(10);
/// How long the witnesses get, at shutdown, for the final checkpoints.
const WITNESS_GRACE: Duration = Duration::from_secs(3);
/// How long receivers may take to finish the requests in flight.
const RECEIVER_DRAIN: Duration = Duration::from_secs(30);
/// How long answered connections may take to close by themselves.
const CONNECTION_GRACE: Duration = Duration::from_millis(500);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The config names files, modules, policies or headers that cannot
    /// serve: what `otel-audit validate` reports, one problem a line.
    #[error("cannot start:\n{0}")]
    Preflight(config::ConfigErrors),
    /// A component, policy, key or store could not be set up.
    #[error("{0}")]
    Setup(String),
    /// A listener could not be bound.
    #[error("cannot listen on {endpoint} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The configured endpoint.
        endpoint: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Chains stopped without their final checkpoint (one line each, naming the chain).
    #[error("{}", lines(.0))]
    FinalCheckpoints(Vec<FinalCheckpointError>),
}

fn lines(errors: &[FinalCheckpointError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// Listeners bound before anything else starts, so that a second instance
/// on the same ports fails before it touches a store.
struct Listeners {
    grpc: Option<(std::net::TcpListener, ListenerSpec)>,
    http: Option<(std::net::TcpListener, ListenerSpec)>,
    metrics: Option<(std::net::TcpListener, ListenerSpec)>,
    health: Option<(std::net::TcpListener, ListenerSpec)>,
    admin: Option<(std::net::TcpListener, ListenerSpec)>,
    read_api: Option<(std::net::TcpListener, ListenerSpec)>,
}

/// A chain worker's thread: says whether its final checkpoint was stored.
type ChainThread = JoinHandle<Result<(), FinalCheckpointError>>;

/// A started server: its chains, exporters and listeners.
pub struct Server {
    listeners: Option<Listeners>,
    router: Option<Arc<Router>>,
    chains: Vec<(Arc<AtomicBool>, ChainThread)>,
    exports: Vec<ExportTask>,
    /// One per chain and witness: submits checkpoints for cosigning.
    witnessing: Vec<crate::witness::submit::Submitter>,
    metrics: Arc<Metrics>,
    runtime: Arc<Runtime>,
    /// Each processor and what serves it at start-up, for reloads.
    processors: Vec<(config::Processor, Serving)>,
    /// Every chain's directory, for the tiles the admin endpoint serves.
    chain_dirs: Vec<std::path::PathBuf>,
    /// SIGHUP, caught from the start: its default action would end the process.
    hangup: Option<tokio::signal::unix::Signal>,
    config: Config,
}

impl Server {
    /// Runs the [`preflight`] checks, binds the listeners (before anything
    /// else: a second instance on the same ports fails before it touches a
    /// store), loads policies and keys, opens (and recovers) every chain.
    /// Nothing is served until [`Server::run`].
    pub fn start(config: Config) -> Result<Self, ServeError> {
        // Address space is reserved for the largest memory any processor may use.
        let largest = config.pipelines.iter().map(|p| p.processor.limits.memory).max().unwrap_or(0);
        let limits = Limits { max_memory_bytes: largest.max(Limits::default().max_memory_bytes), ..Limits::default() };
        let runtime =
            Arc::new(Runtime::new(limits, Runtime::default_cache_dir()).map_err(|e| ServeError::Setup(e.to_string()))?);
        let checked = preflight::check(&config, &runtime);
        if !checked.problems.is_empty() {
            return Err(ServeError::Preflight(config::ConfigErrors(checked.problems)));
        }
        let mut compiled: BTreeMap<String, Module> = checked.processors.into_iter().map(|p| (p.id, p.module)).collect();
        let listeners = Listeners {
            grpc: config
                .grpc
                .as_ref()
                .map(|g| secured("OTLP/gRPC", &g.endpoint, &g.security, None, g.limits.clone()))
                .transpose()?,
            http: config
                .http
                .as_ref()
                .map(|h| secured("OTLP/HTTP", &h.endpoint, &h.security, None, h.limits.clone()))
                .transpose()?,
            metrics: config
                .metrics
                .as_ref()
                .map(|m| secured("metrics", &m.endpoint, &m.security, None, ServerLimits::with_in_flight(4)))
                .transpose()?,
            health: config
                .health
                .as_ref()
                .map(|h| secured("health_check", &h.endpoint, &h.security, None, ServerLimits::with_in_flight(4)))
                .transpose()?,
            admin: config
                .admin
                .as_ref()
                .map(|a| {
                    let limits = ServerLimits::with_in_flight(4);
                    secured("admin", &a.endpoint, &a.security, a.read_auth.as_ref(), limits)
                })
                .transpose()?,
            read_api: config
                .read_api
                .as_ref()
                .map(|r| secured("read_api", &r.endpoint, &r.security, None, ServerLimits::with_in_flight(8)))
                .transpose()?,
        };
        separate_writers(&listeners)?;
        // Before anything slow: from here on SIGHUP reloads instead of killing.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| ServeError::Setup(format!("cannot handle SIGHUP: {e}")))?;
        let metrics = Metrics::new();
        let mut processors = Vec::new();
        let mut modules: BTreeMap<String, (Arc<Module>, Arc<PolicySource>)> = BTreeMap::new();
        let mut signers: BTreeMap<std::path::PathBuf, Arc<SignerKey>> = BTreeMap::new();
        let mut pipelines = Vec::new();
        let mut chains = Vec::new();
        let mut chain_dirs = Vec::new();
        let mut exports = Vec::new();
        let mut witnessing = Vec::new();
        for pipeline in &config.pipelines {
            let processor = &pipeline.processor;
            let (module, policy) = match modules.get(&processor.id) {
                Some(loaded) => loaded.clone(),
                None => {
                    let setup = |what: &str, e: &dyn std::fmt::Display| {
                        ServeError::Setup(format!("processors.{}: {what}: {e}", processor.id))
                    };
                    let module = match compiled.remove(&processor.id) {
                        Some(module) => module,
                        None => runtime.load(&processor.module).map_err(|e| setup("module", &e))?,
                    };
                    let module = Arc::new(module.with_limits(processor.limits.runtime()));
                    let text = std::fs::read_to_string(&processor.policy)
                        .map_err(|e| setup(&format!("cannot read policy {}", processor.policy.display()), &e))?;
                    let secrets = processor.read_secrets().map_err(|e| setup("secrets", &e))?;
                    let loaded = (module, Arc::new(PolicySource { text, secrets }));
                    tracing::info!(processor = %processor.id, module = %processor.module.display(), digest = %loaded.0.digest(), policy = %processor.policy.display(), "processor loaded");
                    modules.insert(processor.id.clone(), loaded.clone());
                    processors.push((processor.clone(), Serving::startup(loaded.0.clone(), loaded.1.clone())));
                    loaded
                }
            };
            let store = &pipeline.store;
            let signer = match signers.get(&store.signing_key) {
                Some(signer) => signer.clone(),
                None => {
                    let text = std::fs::read_to_string(&store.signing_key).map_err(|e| {
                        ServeError::Setup(format!(
                            "exporters.{}.signing_key: cannot read {}: {e}",
                            store.id,
                            store.signing_key.display()
                        ))
                    })?;
                    let signer = Arc::new(SignerKey::parse(text.trim()).map_err(|e| {
                        ServeError::Setup(format!(
                            "exporters.{}.signing_key {}: {e}",
                            store.id,
                            store.signing_key.display()
                        ))
                    })?);
                    signers.insert(store.signing_key.clone(), signer.clone());
                    signer
                }
            };
            store.access.create_dir(&store.directory).map_err(|e| {
                ServeError::Setup(format!(
                    "exporters.{}.directory: cannot create {} or set its mode: {e}",
                    store.id,
                    store.directory.display()
                ))
            })?;
            let mirror_dir = checkpoint_mirror(store)?;
            let witness_keys = witness_keys(store)?;
            let mut handles = Vec::new();
            for shard in 0..pipeline.shards {
                let chain_id = format!("{}/{}/{shard}", store.instance_id, pipeline.id);
                let dir = store.directory.join(ChainStore::chain_dir_name(&chain_id));
                chain_dirs.push(dir.clone());
                let spec = ChainSpec {
                    chain_id: chain_id.clone(),
                    pipeline_id: pipeline.id.clone(),
                    signal: pipeline.signal,
                    dir: dir.clone(),
                    store: StoreOptions {
                        segment_size: store.segment_size,
                        outbox: !pipeline.exporters.is_empty(),
                        origin_prefix: store.origin.clone(),
                        access: store.access,
                    },
                    checkpoints: CheckpointPolicy {
                        every_records: store.every_records,
                        interval: store.interval,
                        heartbeat: store.heartbeat,
                        signer: signer.clone(),
                        mirror_dir: mirror_dir.clone(),
                    },
                    processor_id: processor.id.clone(),
                    module: module.clone(),
                    policy: policy.clone(),
                };
                let closing = Arc::new(AtomicBool::new(false));
                let (worker, committed) =
                    ChainWorker::open(spec, metrics.clone()).map_err(|e| ServeError::Setup(e.to_string()))?;
                if let Some((_, serving)) = processors.iter_mut().find(|(p, _)| p.id == processor.id) {
                    merge_key_history(&mut serving.key_history, worker.key_history());
                }
                let (queue, jobs) = std::sync::mpsc::sync_channel(CHAIN_QUEUE);
                let (controls, orders) = std::sync::mpsc::channel();
                let mut handle =
                    ChainHandle::new(chain_id.clone(), queue, controls, committed.clone(), closing.clone());
                let mut cursors = Vec::new();
                for exporter in &pipeline.exporters {
                    let cursor = Arc::new(AtomicU64::new(0));
                    cursors.push(cursor.clone());
                    handle.max_backlog = handle.max_backlog.min(exporter.max_backlog_records);
                    let destination = match exporter.protocol {
                        config::ExportProtocol::Grpc => Destination::Grpc { endpoint: exporter.endpoint.clone() },
                        config::ExportProtocol::Http => Destination::Http {
                            traces_url: exporter.traces_url.clone(),
                            logs_url: exporter.logs_url.clone(),
                        },
                    };
                    let mut headers = exporter.headers.clone();
                    if let Some(auth) = &exporter.auth {
                        headers.push(
                            crate::auth::client_header(auth)
                                .map_err(|e| ServeError::Setup(format!("exporters.{}.auth: {e}", exporter.id)))?,
                        );
                    }
                    let options = ClientOptions {
                        headers,
                        gzip: exporter.compression == config::Compression::Gzip,
                        timeout: exporter.timeout,
                    };
                    let client = Client::with_tls(&destination, options, exporter.tls.as_ref())
                        .map_err(|e| ServeError::Setup(format!("exporters.{}: {e}", exporter.id)))?;
                    let mut task = ExportTask {
                        exporter_id: exporter.id.clone(),
                        chain_id: chain_id.clone(),
                        chain_dir: dir.clone(),
                        client,
                        retry: exporter.retry.clone(),
                        committed: committed.clone(),
                        cursor,
                        chain_cursors: Vec::new(),
                        metrics: metrics.clone(),
                        resumed: false,
                    };
                    task.load_cursor().map_err(|e| ServeError::Setup(format!("exporters.{}: {e}", exporter.id)))?;
                    exports.push(task);
                }
                for (witness, key) in &witness_keys {
                    witnessing.push(crate::witness::submit::Submitter {
                        chain_id: chain_id.clone(),
                        chain_dir: dir.clone(),
                        url: witness.url.clone(),
                        key: key.clone(),
                        committed: committed.clone(),
                        metrics: metrics.clone(),
                    });
                }
                for task in exports.iter_mut().rev().take(cursors.len()) {
                    task.chain_cursors = cursors.clone();
                }
                handle.export_cursors = cursors;
                let thread = std::thread::Builder::new()
                    .name(format!("chain-{}", chains.len()))
                    .spawn({
                        let closing = closing.clone();
                        move || worker.run(jobs, orders, &closing)
                    })
                    .map_err(|e| ServeError::Setup(format!("cannot start the chain thread: {e}")))?;
                chains.push((closing, thread));
                handles.push(handle);
            }
            pipelines.push(PipelineHandle::new(pipeline.id.clone(), pipeline.signal, processor.id.clone(), handles));
        }
        Ok(Server {
            listeners: Some(listeners),
            router: Some(Arc::new(Router::new(pipelines))),
            chains,
            exports,
            witnessing,
            metrics,
            runtime,
            processors,
            chain_dirs,
            hangup: Some(hangup),
            config,
        })
    }

    /// Serves until SIGTERM or SIGINT (or `shutdown` is cancelled), then
    /// shuts down in order.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let router = self.router.take().expect("run is called once");
        let listeners = self.listeners.take().expect("run is called once");
        let ingest = Arc::new(Ingest::new(router.clone(), self.metrics.clone()));
        let accepting = CancellationToken::new();
        let ready = Arc::new(AtomicBool::new(false));
        let mut receivers = JoinSet::new();
        if let (Some(grpc), Some((listener, spec))) = (&self.config.grpc, listeners.grpc) {
            let listener = to_tokio("OTLP/gRPC", &grpc.endpoint, listener)?;
            let admission = Arc::new(Admission::new(
                grpc.limits.max_in_flight_requests,
                grpc.limits.max_in_flight_requests_per_client,
                grpc.limits.read_timeout,
            ));
            let app = tonic::service::Routes::new(receiver::grpc::TraceService::new(
                ingest.clone(),
                grpc.max_recv_msg_size,
                admission.clone(),
            ))
            .add_service(receiver::grpc::LogsService::new(ingest.clone(), grpc.max_recv_msg_size, admission))
            .into_axum_router();
            receivers.spawn(listener::serve(listener, app, spec, accepting.clone()));
        }
        if let (Some(http), Some((listener, spec))) = (&self.config.http, listeners.http) {
            let listener = to_tokio("OTLP/HTTP", &http.endpoint, listener)?;
            let admission = Arc::new(Admission::new(
                http.limits.max_in_flight_requests,
                http.limits.max_in_flight_requests_per_client,
                http.limits.read_timeout,
            ));
            let app = receiver::http::router(ingest.clone(), http.max_request_body_size, admission);
            receivers.spawn(listener::serve(listener, app, spec, accepting.clone()));
        }
        let mut admin = JoinSet::new();
        let admin_stop = CancellationToken::new();
        if let (Some(metrics), Some((listener, spec))) = (&self.config.metrics, listeners.metrics) {
            let listener = to_tokio("metrics", &metrics.endpoint, listener)?;
            let metrics = self.metrics.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let metrics = metrics.clone();
                    async move {
                        (
                            [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                            metrics.render(),
                        )
                    }
                }),
            );
            admin.spawn(listener::serve(listener, app, spec, admin_stop.clone()));
        }
        if let (Some(health), Some((listener, spec))) = (&self.config.health, listeners.health) {
            let listener = to_tokio("health_check", &health.endpoint, listener)?;
            let app = health_router(ready.clone());
            admin.spawn(listener::serve(listener, app, spec, admin_stop.clone()));
        }
        let reloader = Arc::new(Reloader::new(
            self.runtime.clone(),
            router.clone(),
            self.metrics.clone(),
            std::mem::take(&mut self.processors),
        ));
        let reloads_stop = CancellationToken::new();
        let watchers = reload::watch::watch_files(&reloader, &reloads_stop).map_err(ServeError::Setup)?;
        if let Some(hangup) = self.hangup.take() {
            tokio::spawn(reload::watch::reload_on_sighup(reloader.clone(), hangup, reloads_stop.clone()));
        }
        if let (Some(endpoint), Some((listener, spec))) = (&self.config.admin, listeners.admin) {
            let listener = to_tokio("admin", &endpoint.endpoint, listener)?;
            let mut hosts: Vec<String> = gethostname::gethostname().into_string().into_iter().collect();
            hosts.extend(endpoint.endpoint.rsplit_once(':').map(|(host, _)| host.to_owned()));
            let app = admin::router(reloader.clone(), hosts, self.chain_dirs.clone());
            admin.spawn(listener::serve(listener, app, spec, admin_stop.clone()));
        }
        if let (Some(endpoint), Some((listener, spec))) = (&self.config.read_api, listeners.read_api) {
            let listener = to_tokio("read_api", &endpoint.endpoint, listener)?;
            let app = crate::read_api::router(self.chain_dirs.clone());
            admin.spawn(listener::serve(listener, app, spec, admin_stop.clone()));
        }
        let witnesses_stop = CancellationToken::new();
        let mut witnesses = JoinSet::new();
        for submitter in std::mem::take(&mut self.witnessing) {
            witnesses.spawn(submitter.run(witnesses_stop.clone()));
        }
        let exports_drain = CancellationToken::new();
        let exports_stop = CancellationToken::new();
        let mut exporters = JoinSet::new();
        for task in std::mem::take(&mut self.exports) {
            exporters.spawn(task.run(exports_drain.clone(), exports_stop.clone()));
        }
        ready.store(true, Ordering::Relaxed);
        tracing::info!(
            grpc = ?self.config.grpc.as_ref().map(|g| &g.endpoint),
            http = ?self.config.http.as_ref().map(|h| &h.endpoint),
            chains = self.chains.len(),
            "otel-audit serving"
        );

        wait_for_signal(&shutdown).await;
        let began = Instant::now();
        tracing::info!("shutting down: no new requests; finishing those in flight");
        ready.store(false, Ordering::Relaxed);
        accepting.cancel();
        reloads_stop.cancel();
        drop(watchers);
        if !ingest.drain(RECEIVER_DRAIN).await {
            tracing::warn!("requests still in flight after {RECEIVER_DRAIN:?}; they get retryable errors");
        }
        // Every request has its answer; give the servers a moment to send
        // them, then close the connections clients keep open.
        let servers_done = async { while receivers.join_next().await.is_some() {} };
        if tokio::time::timeout(CONNECTION_GRACE, servers_done).await.is_err() {
            receivers.abort_all();
            while receivers.join_next().await.is_some() {}
        }
        drop(ingest);
        drop(router);
        for (closing, _) in &self.chains {
            closing.store(true, Ordering::Relaxed);
        }
        let chains = std::mem::take(&mut self.chains);
        let unsigned = tokio::task::spawn_blocking(move || {
            let joined =
                chains.into_iter().map(|(_, thread)| (thread.thread().name().map(str::to_owned), thread.join()));
            joined
                .filter_map(|(name, result)| match result {
                    Ok(signed) => signed.err(),
                    Err(_) => Some(FinalCheckpointError {
                        chain: name.unwrap_or_default(),
                        reason: "its thread panicked".to_owned(),
                    }),
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        tracing::info!("chains stopped; exporters deliver what is stored");
        exports_drain.cancel();
        if tokio::time::timeout(EXPORT_DRAIN, async { while exporters.join_next().await.is_some() {} }).await.is_err() {
            tracing::warn!("exporters did not catch up in time; the rest is sent after the next start");
            exports_stop.cancel();
            while exporters.join_next().await.is_some() {}
        }
        // Witnesses get a moment for the final checkpoints; one that is
        // down gets them after the next start.
        if tokio::time::timeout(WITNESS_GRACE, async { while witnesses.join_next().await.is_some() {} }).await.is_err()
        {
            witnesses_stop.cancel();
            while witnesses.join_next().await.is_some() {}
        }
        admin_stop.cancel();
        while admin.join_next().await.is_some() {}
        tracing::info!(elapsed_ms = began.elapsed().as_millis() as u64, "stopped");
        if unsigned.is_empty() { Ok(()) } else { Err(ServeError::FinalCheckpoints(unsigned)) }
    }
}

/// Adds a chain's key history to its processor's. An id two chains know
/// with different bytes may not be used again at all (no check value
/// matches the empty one).
fn merge_key_history(
    into: &mut std::collections::BTreeMap<String, String>,
    chain: &std::collections::BTreeMap<String, String>,
) {
    for (id, check) in chain {
        let known = into.entry(id.clone()).or_insert_with(|| check.clone());
        if known != check {
            known.clear();
        }
    }
}

/// The keys of a store's witnesses, read once.
fn witness_keys(
    store: &crate::config::Store,
) -> Result<Vec<(crate::config::WitnessDef, crate::cosignature::WitnessKey)>, ServeError> {
    store
        .witnesses
        .iter()
        .map(|witness| {
            let path = &witness.public_key;
            let text = std::fs::read_to_string(path).map_err(|e| {
                ServeError::Setup(format!("exporters.{}.witnesses: cannot read {}: {e}", store.id, path.display()))
            })?;
            let key = crate::cosignature::WitnessKey::parse(text.trim())
                .map_err(|e| ServeError::Setup(format!("exporters.{}.witnesses: {}: {e}", store.id, path.display())))?;
            Ok((witness.clone(), key))
        })
        .collect()
}

/// The checkpoint mirror directory of a store: the configured one (which
/// must be usable), or `<signing_key>.checkpoints` beside the key when it
/// can be created (a read-only key mount disables it, with a warning). It
/// and its files get the store's modes.
fn checkpoint_mirror(store: &crate::config::Store) -> Result<Option<std::path::PathBuf>, ServeError> {
    let (dir, explicit) = match &store.mirror {
        Some(dir) => (dir.clone(), true),
        None => (store.signing_key.with_extension("checkpoints"), false),
    };
    match store.access.create_dir(&dir).and_then(|()| store.access.apply(&dir)) {
        Ok(()) => Ok(Some(dir)),
        Err(e) if explicit => Err(ServeError::Setup(format!(
            "exporters.{}.checkpoint.mirror: cannot create {} or set its modes: {e}",
            store.id,
            dir.display()
        ))),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "no checkpoint mirror (set checkpoint.mirror): a store whose newest checkpoints are removed is not noticed at start-up");
            Ok(None)
        }
    }
}

fn bind(what: &'static str, endpoint: &str) -> Result<std::net::TcpListener, ServeError> {
    let bind_error = |source| ServeError::Bind { what, endpoint: endpoint.to_owned(), source };
    let listener = std::net::TcpListener::bind(endpoint).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(listener = what, address = ?local, "listening");
    Ok(listener)
}

fn to_tokio(what: &'static str, endpoint: &str, listener: std::net::TcpListener) -> Result<TcpListener, ServeError> {
    TcpListener::from_std(listener).map_err(|source| ServeError::Bind { what, endpoint: endpoint.to_owned(), source })
}

/// Binds a listener and loads what secures it (TLS files, token files):
/// a bad certificate or token file stops the start, naming it.
fn secured(
    what: &'static str,
    endpoint: &str,
    security: &Security,
    read_auth: Option<&Authenticator>,
    limits: ServerLimits,
) -> Result<(std::net::TcpListener, ListenerSpec), ServeError> {
    let setup = |e: &dyn std::fmt::Display| ServeError::Setup(format!("{what} listener ({endpoint}): {e}"));
    let tls =
        security.tls.as_ref().map(|t| ServerTlsSource::load(t).map(Arc::new)).transpose().map_err(|e| setup(&e))?;
    let mut authenticators = Vec::new();
    if let Some(auth) = &security.auth {
        authenticators.push(Tokens::new(auth, Access::Full).map_err(|e| setup(&e))?);
    }
    if let Some(auth) = read_auth {
        authenticators.push(Tokens::new(auth, Access::Read).map_err(|e| setup(&e))?);
    }
    let loopback = endpoint.starts_with("127.") || endpoint.starts_with("localhost:") || endpoint.starts_with("[::1]");
    if !loopback && (tls.is_none() || authenticators.is_empty()) {
        tracing::warn!(
            listener = what,
            endpoint,
            tls = tls.is_some(),
            auth = !authenticators.is_empty(),
            "listening beyond loopback without TLS and a bearertokenauth authenticator"
        );
    }
    let listener = bind(what, endpoint)?;
    Ok((listener, ListenerSpec { name: what, tls, guard: Arc::new(Guard::new(authenticators)), limits }))
}

/// The admin endpoint and the read API take their own tokens: refuse to
/// start when one of them is also a writer's, or the read API's is the
/// admin endpoint's (a token file may hold the same token as a variable,
/// which the config check cannot see).
fn separate_writers(listeners: &Listeners) -> Result<(), ServeError> {
    let guards = |l: &Option<(std::net::TcpListener, ListenerSpec)>| {
        l.as_ref().map(|(_, spec)| spec.guard.clone()).into_iter().collect::<Vec<_>>()
    };
    let writers: Vec<Arc<Guard>> = guards(&listeners.grpc).into_iter().chain(guards(&listeners.http)).collect();
    let admins = guards(&listeners.admin);
    let writers_and_admins: Vec<(&str, Arc<Guard>)> = writers
        .iter()
        .map(|w| ("writers", w.clone()))
        .chain(admins.iter().map(|a| ("admin endpoint", a.clone())))
        .collect();
    refuse_shared_tokens("admin", &admins, &writers_and_admins[..writers.len()])?;
    refuse_shared_tokens("read_api", &guards(&listeners.read_api), &writers_and_admins)
}

/// Refuses to start when a token of the `name` endpoint's `own` guards is
/// also one of the `others`' (each named by whose it is).
fn refuse_shared_tokens(name: &str, own: &[Arc<Guard>], others: &[(&str, Arc<Guard>)]) -> Result<(), ServeError> {
    for token in own.iter().flat_map(|g| g.authenticators()) {
        for (whose, guard) in others {
            if let Some(other) = guard.authenticators().iter().find(|o| token.shares_token_with(o)) {
                return Err(ServeError::Setup(format!(
                    "extensions.{name}: `{}` shares a token with `{}` of the {whose}: give the {name} endpoint its \
                     own tokens",
                    token.id(),
                    other.id()
                )));
            }
        }
    }
    Ok(())
}

/// The health endpoint in the shape of the Collector's `health_check`
/// extension: 200 while serving, 503 while starting or shutting down.
fn health_router(ready: Arc<AtomicBool>) -> axum::Router {
    let since = crate::clock::now_unix_nano();
    let handler = move || {
        let ready = ready.load(Ordering::Relaxed);
        async move {
            let (status, text) = if ready {
                (StatusCode::OK, "Server available")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "Server not available")
            };
            let body = serde_json::json!({ "status": text, "upSince": since.to_string() });
            (status, axum::Json(body)).into_response()
        }
    };
    axum::Router::new().route("/", axum::routing::get(handler.clone())).route("/health", axum::routing::get(handler))
}

/// Makes SIGXFSZ harmless for the whole process, so that hitting a file
/// size limit is a write error the store handles (the request gets a
/// retryable error) rather than a crash. Call inside the Tokio runtime,
/// before [`Server::start`].
pub fn survive_file_size_limit() {
    // Once Tokio installs its handler it stays for the life of the process.
    let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25));
}

/// Waits for SIGTERM, SIGINT or `shutdown`.
pub async fn wait_for_signal(shutdown: &CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {
            tracing::info!("SIGTERM");
        }
        _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {
            tracing::info!("SIGINT");
        }
        _ = shutdown.cancelled() => {}
    }
}
