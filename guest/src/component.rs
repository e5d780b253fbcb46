//! The wit-bindgen glue: converts between the generated WIT types and the
//! plain Rust API, and holds the instance's processor. Nothing else in the
//! crate knows about the component model.
//!
//! It is also the only place that knows the test-only features (see
//! guest/Cargo.toml; `make fixtures` builds them for the host's hot-swap
//! tests): `test-keep-all` makes `process-traces` and `process-logs` keep
//! every record, as `chain-events` does; `test-trap-in-configure` makes
//! `configure` trap; `test-no-chain-events` refuses every `chain-events`
//! call. A shipped build has none of them.

use std::cell::RefCell;

use crate::Processor;
use crate::api;

wit_bindgen::generate!({
    path: "../wit",
    world: "audit-processor",
});

use exports::otel_audit::processor::processor::Guest;
use otel_audit::processor::types as wit;

thread_local! {
    // A component instance is single-threaded; this is its only state.
    static PROCESSOR: RefCell<Processor> = RefCell::new(Processor::new());
}

struct Component;

impl Guest for Component {
    fn configure(policy: String, secrets: Vec<(String, Vec<u8>)>) -> Result<wit::PolicyInfo, String> {
        // `cfg!`, not `#[cfg]`: every build compiles (and lints) both paths.
        if cfg!(feature = "test-trap-in-configure") {
            core::arch::wasm32::unreachable();
        }
        PROCESSOR.with(|p| p.borrow_mut().configure(&policy, &secrets)).map(policy_info).map_err(|e| e.to_string())
    }

    fn forward_copies(enabled: bool) {
        PROCESSOR.with(|p| p.borrow_mut().forward_copies(enabled));
    }

    fn process_traces(request: Vec<u8>, ctx: wit::Context) -> Result<wit::Output, wit::Error> {
        process(api::Signal::Traces, &request, ctx)
    }

    fn process_logs(request: Vec<u8>, ctx: wit::Context) -> Result<wit::Output, wit::Error> {
        process(api::Signal::Logs, &request, ctx)
    }

    fn chain_events(signal: wit::Signal, request: Vec<u8>, ctx: wit::Context) -> Result<wit::Output, wit::Error> {
        if cfg!(feature = "test-no-chain-events") {
            return Err(wit::Error::Policy("this test build refuses chain-events".into()));
        }
        let ctx = context(ctx)?;
        let signal = match signal {
            wit::Signal::Traces => api::Signal::Traces,
            wit::Signal::Logs => api::Signal::Logs,
        };
        PROCESSOR.with(|p| p.borrow().chain_events(signal, &request, &ctx)).map(output).map_err(error)
    }
}

/// `process-traces` and `process-logs`; under `test-keep-all` they keep
/// every record instead, as `chain-events` does.
fn process(signal: api::Signal, request: &[u8], ctx: wit::Context) -> Result<wit::Output, wit::Error> {
    let ctx = context(ctx)?;
    PROCESSOR
        .with(|p| {
            let processor = p.borrow();
            if cfg!(feature = "test-keep-all") {
                return processor.chain_events(signal, request, &ctx);
            }
            match signal {
                api::Signal::Traces => processor.process_traces(request, &ctx),
                api::Signal::Logs => processor.process_logs(request, &ctx),
            }
        })
        .map(output)
        .map_err(error)
}

/// A record's leaf hash, computed by the host (the `hashing` import). A
/// host that answers with anything but 32 bytes broke the contract: the
/// call traps, and nothing of the batch is chained.
pub(crate) fn leaf_hash(record: &[u8]) -> audit_format::Hash {
    let leaf = otel_audit::processor::hashing::leaf_hash(record);
    match <[u8; 32]>::try_from(leaf.as_slice()) {
        Ok(leaf) => leaf,
        Err(_) => panic!("the host's leaf-hash returned {} bytes, not 32", leaf.len()),
    }
}

fn context(ctx: wit::Context) -> Result<api::Context, wit::Error> {
    let prev = ctx.head.prev.as_slice().try_into().map_err(|_| {
        wit::Error::InvalidContext(format!(
            "head.prev must be 32 bytes (a SHA-256 leaf hash), got {}",
            ctx.head.prev.len()
        ))
    })?;
    Ok(api::Context {
        received_at_unix_nano: ctx.received_at_unix_nano,
        head: api::ChainHead { chain_id: ctx.head.chain_id, seq: ctx.head.seq, prev },
        sender: ctx.sender.map(|s| audit_format::Sender {
            protocol: s.protocol,
            address: s.address,
            tls: s.tls,
            principal: s.principal,
            certificate_subject: s.certificate_subject,
            certificate_sans: s.certificate_sans,
        }),
    })
}

fn policy_info(info: api::PolicyInfo) -> wit::PolicyInfo {
    wit::PolicyInfo {
        digest: info.digest,
        pipeline: info.pipeline,
        key_id: info.key_id,
        rules: info.rules.into_iter().map(|r| wit::Rule { id: r.id, description: r.description }).collect(),
    }
}

fn output(out: api::Output) -> wit::Output {
    wit::Output {
        otlp: out.otlp,
        records: out.records,
        leaves: out.leaves.concat(),
        head: wit::ChainHead { chain_id: out.head.chain_id, seq: out.head.seq, prev: out.head.prev.to_vec() },
        stats: wit::Stats {
            received: out.stats.received,
            kept: out.stats.kept,
            dropped: out.stats.dropped,
            redacted: out.stats.redacted,
            violations: out.stats.violations,
            rule_hits: out.stats.rule_hits,
        },
    }
}

fn error(e: api::ProcessError) -> wit::Error {
    match e {
        api::ProcessError::Decode(m) => wit::Error::Decode(m),
        api::ProcessError::Policy(m) => wit::Error::Policy(m),
        api::ProcessError::InvalidContext(m) => wit::Error::InvalidContext(m),
    }
}

export!(Component);
