//! The wit-bindgen glue: converts between the generated WIT types and the
//! plain Rust API, and holds the instance's processor. Nothing else in the
//! crate knows about the component model.

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
        PROCESSOR.with(|p| p.borrow_mut().configure(&policy, &secrets)).map(policy_info).map_err(|e| e.to_string())
    }

    fn process_traces(request: Vec<u8>, ctx: wit::Context) -> Result<wit::Output, wit::Error> {
        let ctx = context(ctx)?;
        PROCESSOR.with(|p| p.borrow().process_traces(&request, &ctx)).map(output).map_err(error)
    }

    fn process_logs(request: Vec<u8>, ctx: wit::Context) -> Result<wit::Output, wit::Error> {
        let ctx = context(ctx)?;
        PROCESSOR.with(|p| p.borrow().process_logs(&request, &ctx)).map(output).map_err(error)
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
