//! The otel-audit processor: keeps the audit-relevant spans and log records
//! of OTLP batches, enriches and redacts them as a policy says, and chains
//! them into tamper-evident canonical records.
//!
//! It builds two ways: as a wasm32-wasip2 component exporting
//! `wit/audit-processor.wit` (the glue is `component.rs`, the only module
//! that knows wit-bindgen), and as a native library for the host's
//! differential tests, known answers and native benchmarks only. The host
//! runs the component through the WIT contract; the verifier shares none of
//! this crate's code (what both must agree on is the `audit-format` crate).
//! It is a pure function of (policy, request, context): no clock, no
//! randomness, no I/O.
//!
//! Stages, in flow order: [`policy`] (parse once; one module per section),
//! [`filter`], [`attributes`], [`redaction`], [`enrich`], [`record`]
//! (canonical JSON), then the chain's hashes (`audit_format::hash`);
//! [`process`] runs a batch through them. [`kv`] holds the attribute-list
//! edits several stages share, so stages do not import each other.
#![deny(missing_docs)]

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod alloc;
pub mod api;
pub mod attributes;
mod copy;
mod decode;
pub mod enrich;
pub mod filter;
pub mod jcs;
pub mod kv;
pub mod ottl;
pub mod pattern;
pub mod policy;
mod prefilter;
pub mod process;
pub mod record;
pub mod redaction;
pub mod transform;
mod wire;

#[cfg(target_arch = "wasm32")]
mod component;

/// The component's allocator: small blocks from free lists (see [`alloc`]).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses<std::alloc::System> = alloc::SizeClasses::new(std::alloc::System);

/// Runs `allocate` with its allocations cut from the component's request
/// region (see [`alloc`]): the request's decoded records. What it
/// allocates must be dropped before the next request starts. Natively,
/// just `allocate`.
#[inline(always)]
fn in_request_region<T>(allocate: impl FnOnce() -> T) -> T {
    #[cfg(target_arch = "wasm32")]
    {
        let was_open = ALLOCATOR.open_region();
        let allocated = allocate();
        ALLOCATOR.close_region(was_open);
        allocated
    }
    #[cfg(not(target_arch = "wasm32"))]
    allocate()
}

/// Starts a request: the request region is reused from its beginning.
///
/// # Safety
/// Nothing [`in_request_region`] allocated for an earlier request is
/// still in use.
unsafe fn start_request() {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the caller's promise.
    unsafe {
        ALLOCATOR.reset_region()
    }
}

/// A record's RFC 6962 leaf hash: in the component, computed by the host
/// (the WIT `hashing` import: native SHA-256 is several times faster than
/// wasm's); natively, here. The same bytes either way.
fn leaf_hash(record: &[u8]) -> audit_format::Hash {
    #[cfg(target_arch = "wasm32")]
    return component::leaf_hash(record);
    #[cfg(not(target_arch = "wasm32"))]
    return audit_format::hash::leaf_hash(record);
}

pub use api::{ChainHead, Context, Output, PolicyInfo, ProcessError, Rule, Signal, Stats};
pub use policy::{Policy, PolicyError};
use process::{Copies, Stages};

/// The processor with its configured policy: the state a component
/// instance holds between calls.
#[derive(Default)]
pub struct Processor {
    policy: Option<Policy>,
    /// Whether outputs leave out the kept records' OTLP copy.
    without_copies: bool,
}

impl Processor {
    /// A processor with no policy yet; every batch is refused until
    /// [`Processor::configure`] succeeds.
    pub fn new() -> Self {
        Processor::default()
    }

    /// Installs a policy. On error the previous policy stays in force.
    pub fn configure(&mut self, policy: &str, secrets: &[(String, Vec<u8>)]) -> Result<PolicyInfo, PolicyError> {
        let policy = Policy::parse(policy, secrets)?;
        let info = policy.info();
        self.policy = Some(policy);
        Ok(info)
    }

    /// Whether outputs carry the kept records' OTLP copy (`Output::otlp`),
    /// as they do until turned off: a host that forwards nothing turns it
    /// off. Records, leaves, head and stats are the same either way.
    pub fn forward_copies(&mut self, enabled: bool) {
        self.without_copies = !enabled;
    }

    /// Processes an OTLP `ExportTraceServiceRequest`.
    pub fn process_traces(&self, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
        process::batch(Signal::Traces, Stages::Policy, self.copies(), self.policy()?, request, ctx)
    }

    /// Processes an OTLP `ExportLogsServiceRequest`.
    pub fn process_logs(&self, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
        process::batch(Signal::Logs, Stages::Policy, self.copies(), self.policy()?, request, ctx)
    }

    /// Chains the host's own audit events (`chain-events` in the WIT):
    /// every span or log record of `request` is kept as it is (no filter,
    /// attributes or redaction rule, no `audit.require` check), then
    /// enriched and chained like any kept record under the configured
    /// policy's pipeline, digest and key.
    pub fn chain_events(&self, signal: Signal, request: &[u8], ctx: &Context) -> Result<Output, ProcessError> {
        process::batch(signal, Stages::EventsOnly, self.copies(), self.policy()?, request, ctx)
    }

    fn copies(&self) -> Copies {
        if self.without_copies { Copies::None } else { Copies::Otlp }
    }

    fn policy(&self) -> Result<&Policy, ProcessError> {
        self.policy.as_ref().ok_or_else(|| ProcessError::Policy("no policy is configured; call configure first".into()))
    }
}
