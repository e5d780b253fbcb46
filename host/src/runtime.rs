//! The wasmtime wrapper: narrows the engine to what otel-audit uses.
//!
//! One [`Runtime`] per process owns the `Engine` (instances allocated on
//! demand, each reserving only its memory limit of address space; epoch
//! interruption driven by a ticker thread). A [`Module`] is a component
//! compiled once (through an on-disk cache of precompiled code keyed by the
//! module digest and the engine's compatibility hash) and pre-instantiated
//! (`InstancePre`). Each [`Instance`] gets a fresh `Store` with memory
//! limits and a deadline per call, so a runaway or trapping guest costs one
//! instance, never the host. The WIT file is the only contract; the
//! generated bindings stay in this module.

use std::path::{Path, PathBuf};
use std::time::Duration;

use audit_format::{ChainHead, Context, Hash, Signal};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "audit-processor",
        additional_derives: [PartialEq, Eq],
    });
}

use bindings::otel_audit::processor::types as wit;

/// The `hashing` import: SHA-256 in native code (the CPU's SHA instructions
/// where it has them), the same function the verifier uses. Linked by hand
/// rather than through the generated `Host` trait so the record is hashed
/// where it lies in the guest's memory: the generated binding copied every
/// record into a fresh `Vec` first.
fn link_hashing(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::component::WasmList;
    linker.instance("otel-audit:processor/hashing@0.1.0")?.func_wrap(
        "leaf-hash",
        |store: wasmtime::StoreContextMut<HostState>, (record,): (WasmList<u8>,)| {
            Ok((audit_format::hash::leaf_hash(record.as_le_slice(&store)).to_vec(),))
        },
    )
}

/// What a successful `configure` reports (WIT `policy-info`).
pub use wit::PolicyInfo;
/// One policy rule, for coverage reports (WIT `rule`).
pub use wit::Rule;
/// Counters for one batch (WIT `stats`).
pub use wit::Stats;

/// The result of processing one batch: the WIT `output`, with its hashes
/// checked to be 32 bytes each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// OTLP export request (protobuf) with only the kept, enriched records.
    pub otlp: Vec<u8>,
    /// Canonical records in chain order.
    pub records: Vec<Vec<u8>>,
    /// Leaf hash of each record, in chain order.
    pub leaves: Vec<Hash>,
    /// The head after this batch.
    pub head: ChainHead,
    /// Counters.
    pub stats: Stats,
}

/// Why the processor refused a batch (WIT `error`); nothing of it was chained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// The request is not a valid OTLP export request.
    #[error("invalid OTLP request: {0}")]
    Decode(String),
    /// No policy is configured, or it cannot process this batch.
    #[error("policy error: {0}")]
    Policy(String),
    /// The context is unusable.
    #[error("invalid context: {0}")]
    InvalidContext(String),
}

/// How often the epoch ticks; deadlines are counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Guard region after each linear memory under an address-space limit
/// (wasmtime's default is 32 MiB).
const GUARD_BYTES: u64 = 2 << 20;

/// Whether this process runs under an address-space limit (RLIMIT_AS).
fn address_space_limited() -> bool {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) };
    read == 0 && limit.rlim_cur != libc::RLIM_INFINITY
}

/// Limits applied to every instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest linear memory one instance may grow to.
    pub max_memory_bytes: usize,
    /// Longest one call (configure or a batch) may run.
    pub call_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_memory_bytes: 512 << 20, call_timeout: Duration::from_secs(10) }
    }
}

/// Errors at the runtime's edge: loading, instantiating and calling.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The module file could not be read.
    #[error("cannot read module {path}: {source}")]
    Read {
        /// The module path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a valid component, or compilation failed.
    #[error("{path} is not a usable audit processor component: {message}")]
    Compile {
        /// The module path.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The engine could not be created or an instance could not be made.
    #[error("wasm runtime: {0}")]
    Engine(String),
    /// The guest trapped or ran out of time or memory. The instance is
    /// unusable afterwards; make a new one.
    #[error("the processor trapped: {0}")]
    Trap(String),
    /// `configure` rejected the policy (the previous policy stays in force).
    #[error("policy rejected: {0}")]
    Policy(String),
    /// The processor refused the batch.
    #[error(transparent)]
    Process(#[from] ProcessError),
}

fn engine_error(e: wasmtime::Error) -> RuntimeError {
    RuntimeError::Engine(format!("{e:#}"))
}

/// The process-wide engine.
pub struct Runtime {
    engine: Engine,
    limits: Limits,
    cache_dir: Option<PathBuf>,
}

impl Runtime {
    /// Creates the engine and starts its epoch ticker. `cache_dir` holds
    /// precompiled modules; `None` disables the cache.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Self, RuntimeError> {
        let mut config = Config::new();
        // wasmtime's default reservation (4 GiB + a guard per instance) lets
        // it leave out bounds checks: the component runs 15-30 % faster
        // (`make bench`). Under an address-space limit (`ulimit -v`, common
        // on hardened hosts) that would not fit a few instances, so there
        // each instance reserves only its memory limit (+ 2 MiB) and bounds
        // checks are explicit.
        if address_space_limited() {
            config.memory_reservation(limits.max_memory_bytes as u64).memory_guard_size(GUARD_BYTES);
        }
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::OnDemand);
        let engine = Engine::new(&config).map_err(engine_error)?;
        // The ticker lives as long as the engine does (every `Module` holds
        // a clone), not as long as this `Runtime`.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Runtime { engine, limits, cache_dir })
    }

    /// The default cache directory: `$OTEL_AUDIT_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/otel-audit`, else `~/.cache/otel-audit`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("OTEL_AUDIT_CACHE_DIR") {
            return Some(dir.into());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("otel-audit"))
    }

    /// Loads, compiles (or fetches from the cache) and pre-instantiates a
    /// component.
    pub fn load(&self, path: &Path) -> Result<Module, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Read { path: path.to_owned(), source })?;
        self.load_bytes(path, &bytes)
    }

    /// Compiles (or fetches from the cache) and pre-instantiates `bytes`;
    /// `path` names them in errors.
    fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Module, RuntimeError> {
        let compile_error =
            |e: wasmtime::Error| RuntimeError::Compile { path: path.to_owned(), message: format!("{e:#}") };
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        if is_core_module(bytes) {
            return Err(RuntimeError::Compile {
                path: path.to_owned(),
                message: "this is a core wasm module, not a component (build with --target wasm32-wasip2)".into(),
            });
        }
        let component = match self.cached_path(&digest) {
            Some(cached) if cached.exists() => {
                // SAFETY: the file was written by `Engine::precompile_component`
                // of an engine with the same compatibility hash (it is in the
                // file name), in a directory no one else may write to
                // (`is_private_or_absent`); wasmtime also checks the header
                // and the engine settings.
                match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                    Ok(component) => component,
                    Err(_) => self.compile_and_cache(bytes, &cached).map_err(compile_error)?,
                }
            }
            Some(cached) => self.compile_and_cache(bytes, &cached).map_err(compile_error)?,
            None => Component::new(&self.engine, bytes).map_err(compile_error)?,
        };
        let mut linker = Linker::<HostState>::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_error)?;
        link_hashing(&mut linker).map_err(engine_error)?;
        let pre = linker.instantiate_pre(&component).map_err(compile_error)?;
        let pre = bindings::AuditProcessorPre::new(pre).map_err(compile_error)?;
        Ok(Module { engine: self.engine.clone(), pre, digest, limits: self.limits.clone() })
    }

    fn cached_path(&self, digest: &str) -> Option<PathBuf> {
        use std::hash::{Hash, Hasher};
        let dir = self.cache_dir.as_ref()?;
        if !is_private_or_absent(dir) {
            tracing::warn!(dir = %dir.display(), "module cache is writable by others; compiling without it");
            return None;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        let hex = digest.trim_start_matches("sha256:");
        Some(dir.join(format!("{hex}-{:016x}.cwasm", hasher.finish())))
    }

    fn compile_and_cache(&self, bytes: &[u8], cached: &Path) -> wasmtime::Result<Component> {
        let compiled = self.engine.precompile_component(bytes)?;
        // A cache we cannot write is only slower, never wrong.
        if let Some(dir) = cached.parent()
            && create_private_dir(dir).is_ok()
        {
            let tmp = cached.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, &compiled).is_ok() {
                let _ = std::fs::rename(&tmp, cached);
            }
        }
        // SAFETY: the bytes come from `precompile_component` of this engine.
        unsafe { Component::deserialize(&self.engine, &compiled) }
    }
}

/// Precompiled modules are native code: a cache directory that others can
/// write to would let them run code in this process, so it is not used.
fn is_private_or_absent(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(dir) {
            Ok(meta) => meta.mode() & 0o022 == 0,
            Err(_) => true,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        true
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Whether `bytes` is a core module rather than a component: both start
/// with `\0asm`; the 16-bit version/layer field after it differs.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// A compiled, pre-instantiated component.
#[derive(Clone)]
pub struct Module {
    engine: Engine,
    pre: bindings::AuditProcessorPre<HostState>,
    digest: String,
    limits: Limits,
}

impl Module {
    /// The same module, its instances held to `limits` (a processor's own).
    pub fn with_limits(mut self, limits: Limits) -> Module {
        self.limits = limits;
        self
    }

    /// `sha256:<hex>` of the module bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// A fresh instance with no policy.
    pub fn instantiate(&self) -> Result<Instance, RuntimeError> {
        let state = HostState {
            // The guest gets no environment, arguments, files or sockets.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(self.limits.max_memory_bytes).instances(16).build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // What the guest may hand back in one call (the kept OTLP, the
        // records, their leaves) is bounded by its memory; wasmtime's default
        // (128 MiB) would refuse the output of a request the receivers accept
        // (a 20 MiB body of small spans makes more than that).
        store.set_hostcall_fuel(self.limits.max_memory_bytes.saturating_mul(2));
        store.set_epoch_deadline(self.deadline_ticks());
        store.epoch_deadline_trap();
        let bindings =
            self.pre.instantiate(&mut store).map_err(|e| RuntimeError::Engine(format!("instantiate: {e:#}")))?;
        Ok(Instance { store, bindings, deadline: self.deadline_ticks(), poisoned: false })
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }
}

/// The state a guest's store owns.
struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// One live instance of the processor.
pub struct Instance {
    store: Store<HostState>,
    bindings: bindings::AuditProcessor,
    deadline: u64,
    poisoned: bool,
}

impl Instance {
    /// Installs a policy. Secrets map key ids to key bytes.
    pub fn configure(&mut self, policy: &str, secrets: &[(String, Vec<u8>)]) -> Result<PolicyInfo, RuntimeError> {
        self.ready()?;
        let result = self.bindings.otel_audit_processor_processor().call_configure(&mut self.store, policy, secrets);
        self.trapped(result)?.map_err(RuntimeError::Policy)
    }

    /// Whether outputs carry the kept records' OTLP copy (`forward-copies`):
    /// on until turned off; a chain with nothing to forward turns it off.
    pub fn forward_copies(&mut self, enabled: bool) -> Result<(), RuntimeError> {
        self.ready()?;
        let result = self.bindings.otel_audit_processor_processor().call_forward_copies(&mut self.store, enabled);
        self.trapped(result)
    }

    /// Processes an `ExportTraceServiceRequest`.
    pub fn process_traces(&mut self, request: &[u8], ctx: &Context) -> Result<Output, RuntimeError> {
        self.call_batch(ctx, |processor, store, ctx| processor.call_process_traces(store, request, ctx))
    }

    /// Processes an `ExportLogsServiceRequest`.
    pub fn process_logs(&mut self, request: &[u8], ctx: &Context) -> Result<Output, RuntimeError> {
        self.call_batch(ctx, |processor, store, ctx| processor.call_process_logs(store, request, ctx))
    }

    /// Chains the host's own audit events (`chain-events`): every span or
    /// log record of `request` (an OTLP export request of `signal`) is kept
    /// as it is, with no policy stage applied, then enriched and chained
    /// like any kept record.
    pub fn chain_events(&mut self, signal: Signal, request: &[u8], ctx: &Context) -> Result<Output, RuntimeError> {
        let signal = match signal {
            Signal::Traces => wit::Signal::Traces,
            Signal::Logs => wit::Signal::Logs,
        };
        self.call_batch(ctx, |processor, store, ctx| processor.call_chain_events(store, signal, request, ctx))
    }

    /// One batch call: the deadline, the trap handling and the conversion
    /// of the output are the same whichever function `call` invokes. An
    /// output that breaks the contract poisons the instance like a trap.
    fn call_batch(
        &mut self,
        ctx: &Context,
        call: impl FnOnce(
            &bindings::exports::otel_audit::processor::processor::Guest,
            &mut Store<HostState>,
            &wit::Context,
        ) -> wasmtime::Result<Result<wit::Output, wit::Error>>,
    ) -> Result<Output, RuntimeError> {
        self.ready()?;
        let ctx = wit_context(ctx);
        let result = call(self.bindings.otel_audit_processor_processor(), &mut self.store, &ctx);
        let output = from_wit(self.trapped(result)?);
        self.poisoned |= matches!(output, Err(RuntimeError::Trap(_)));
        output
    }

    /// Whether a trap has made this instance unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn ready(&mut self) -> Result<(), RuntimeError> {
        if self.poisoned {
            return Err(RuntimeError::Trap("this instance trapped earlier and cannot be used again".into()));
        }
        self.store.set_epoch_deadline(self.deadline);
        Ok(())
    }

    fn trapped<T>(&mut self, result: wasmtime::Result<T>) -> Result<T, RuntimeError> {
        result.map_err(|e| {
            self.poisoned = true;
            // The trap code first (the guest aborts with `unreachable` when
            // it runs out of memory), then the full chain with the wasm
            // backtrace, which callers keep for their logs.
            let reason = match e.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::Interrupt) => "the call ran past its deadline".to_owned(),
                Some(trap) => format!("{trap}\n{e:?}"),
                None => format!("{e:#}"),
            };
            RuntimeError::Trap(reason)
        })
    }
}

fn wit_context(ctx: &Context) -> wit::Context {
    wit::Context {
        received_at_unix_nano: ctx.received_at_unix_nano,
        head: wit::ChainHead { chain_id: ctx.head.chain_id.clone(), seq: ctx.head.seq, prev: ctx.head.prev.to_vec() },
        sender: ctx.sender.as_ref().map(|s| wit::Sender {
            protocol: s.protocol.clone(),
            address: s.address.clone(),
            tls: s.tls.clone(),
            principal: s.principal.clone(),
            certificate_subject: s.certificate_subject.clone(),
            certificate_sans: s.certificate_sans.clone(),
        }),
    }
}

fn from_wit(result: Result<wit::Output, wit::Error>) -> Result<Output, RuntimeError> {
    let out = result.map_err(|e| match e {
        wit::Error::Decode(m) => ProcessError::Decode(m),
        wit::Error::Policy(m) => ProcessError::Policy(m),
        wit::Error::InvalidContext(m) => ProcessError::InvalidContext(m),
    })?;
    let hash = |bytes: &[u8], what: &str| -> Result<Hash, RuntimeError> {
        bytes.try_into().map_err(|_| {
            RuntimeError::Trap(format!("the processor returned a {what} of {} bytes, not 32", bytes.len()))
        })
    };
    if out.leaves.len() != out.records.len() * 32 {
        return Err(RuntimeError::Trap(format!(
            "the processor returned {} records but {} bytes of leaves",
            out.records.len(),
            out.leaves.len()
        )));
    }
    let leaves = out.leaves.chunks_exact(32).map(|c| hash(c, "leaf")).collect::<Result<_, _>>()?;
    Ok(Output {
        otlp: out.otlp,
        records: out.records,
        leaves,
        head: ChainHead { chain_id: out.head.chain_id, seq: out.head.seq, prev: hash(&out.head.prev, "head")? },
        stats: out.stats,
    })
}
