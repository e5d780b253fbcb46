//! Plain Rust mirrors of the WIT types (wit/audit-processor.wit).
//!
//! The processor logic speaks only these; `component.rs` converts them to and
//! from the generated bindings. The chain's own types (`Signal`,
//! `ChainHead`, `Context`, `Hash`) come from the `audit-format` crate the
//! host shares; the host speaks the WIT bindings, never these.

pub use audit_format::{ChainHead, Context, Hash, Signal};

/// One policy rule, for coverage reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The policy key path of the rule, e.g. `attributes.actions[2]`.
    pub id: String,
    /// What the rule does, in a few words.
    pub description: String,
}

/// What a successful `configure` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    /// `sha256:<hex>` of the exact policy bytes.
    pub digest: String,
    /// The `audit.pipeline` value ("" when unset).
    pub pipeline: String,
    /// The HMAC key id records are MACed with, if any.
    pub key_id: Option<String>,
    /// Every rule in policy order; `Stats::rule_hits` is indexed alike.
    pub rules: Vec<Rule>,
}

/// Counters for one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Spans or log records in the request.
    pub received: u64,
    /// Records kept and chained.
    pub kept: u64,
    /// Records dropped by the filter.
    pub dropped: u64,
    /// Attribute values masked, hashed or removed by redaction.
    pub redacted: u64,
    /// Kept records flagged for breaking `audit.require`.
    pub violations: u64,
    /// Hits per rule, in `PolicyInfo::rules` order.
    pub rule_hits: Vec<u64>,
}

/// The result of processing one batch.
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

/// Why a batch was refused; nothing of it was chained.
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
