//! What reloads came to and what serves: the bodies of `POST /admin/reload`
//! and `GET /admin/status`, which the server writes and `otel-audit
//! reload` / `otel-audit status` read (see [`crate::admin`]).

use serde::{Deserialize, Serialize};

use crate::policy_event::TriggerKind;

/// What one reload of one processor came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadResult {
    /// Every chain serves the candidate.
    Applied,
    /// Every chain was ordered to switch, but some has not recorded it yet
    /// (see [`ReloadReport::chains`]); it does before its next batch.
    Pending,
    /// The candidate was refused; the old module and policy keep serving.
    Rejected,
    /// Module, policy and secrets are what already serves.
    Unchanged,
}

impl ReloadResult {
    /// `applied`, `pending`, `rejected` or `unchanged`: the JSON value and
    /// the metric label.
    pub fn name(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Pending => "pending",
            ReloadResult::Rejected => "rejected",
            ReloadResult::Unchanged => "unchanged",
        }
    }
}

/// The outcome of one reload of one processor: what `POST /admin/reload`
/// returns and `GET /admin/status` shows as `last_reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Processor id.
    pub processor: String,
    /// What started it: `file`, `signal` or `admin`.
    pub trigger: TriggerKind,
    /// When the trigger came (RFC 3339).
    pub at: String,
    /// What it came to.
    pub result: ReloadResult,
    /// Why a candidate was refused, or why a chain has not applied it yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Module digest serving afterwards.
    pub module_digest: String,
    /// Policy digest serving afterwards.
    pub policy_digest: String,
    /// Where each chain recorded the event (`seq`), or why it has not yet.
    pub chains: Vec<ChainReport>,
    /// From the trigger until every chain serves (or recorded the refusal).
    pub elapsed_ms: f64,
}

impl ReloadReport {
    /// `2026-11-25T10:00:00Z admin: applied in 12.3 ms`, then `: ` and the
    /// reason if there is one.
    pub fn line(&self) -> String {
        let mut line =
            format!("{} {}: {} in {:.1} ms", self.at, self.trigger.name(), self.result.name(), self.elapsed_ms);
        if let Some(reason) = &self.reason {
            line.push_str(": ");
            line.push_str(reason);
        }
        line
    }
}

/// One chain's part of a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    /// Chain id.
    pub chain: String,
    /// The seq of its `audit.policy_change` / `audit.policy_rejected` record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Why it has not applied the reload (it retries before its next batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `GET /admin/status` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Per processor, in config order.
    pub processors: Vec<ProcessorStatus>,
}

impl Status {
    /// For people: per processor its module, policy, since when, chains
    /// and last reload, one per line.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for processor in &self.processors {
            let last = processor.last_reload.as_ref().map_or_else(|| "none".to_owned(), ReloadReport::line);
            text.push_str(&format!(
                "{}\n  module  {}  {}\n  policy  {}  {}\n  since   {} ({})\n  chains  {}\n  last reload  {last}\n",
                processor.id,
                processor.module.digest,
                processor.module.path,
                processor.policy.digest,
                processor.policy.path,
                processor.since,
                processor.trigger.name(),
                processor.chains.join(", "),
            ));
        }
        text
    }
}

/// One processor's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessorStatus {
    /// Processor id.
    pub id: String,
    /// The module file and the digest of the module serving.
    pub module: FileStatus,
    /// The policy file and the digest of the policy serving.
    pub policy: FileStatus,
    /// Since when they serve (RFC 3339).
    pub since: String,
    /// What made them serve: `startup`, `file`, `signal` or `admin`.
    pub trigger: TriggerKind,
    /// Its chains.
    pub chains: Vec<String>,
    /// The last reload, if any (`null` in JSON before the first).
    pub last_reload: Option<ReloadReport>,
}

/// A file and the digest of what serves from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStatus {
    /// The configured path.
    pub path: String,
    /// `sha256:<hex>`.
    pub digest: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ReloadReport {
        ReloadReport {
            processor: "wasm/soc2".into(),
            trigger: TriggerKind::Admin,
            at: "2026-11-25T10:00:00Z".into(),
            result: ReloadResult::Rejected,
            reason: Some("policy p.yaml: line 2".into()),
            module_digest: "sha256:aa".into(),
            policy_digest: "sha256:bb".into(),
            chains: vec![ChainReport { chain: "h/traces/a/0".into(), seq: Some(7), error: None }],
            elapsed_ms: 12.34,
        }
    }

    #[test]
    fn the_json_names_triggers_and_results_in_lowercase_and_reads_back() {
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "processor": "wasm/soc2", "trigger": "admin", "at": "2026-11-25T10:00:00Z", "result": "rejected",
                "reason": "policy p.yaml: line 2", "module_digest": "sha256:aa", "policy_digest": "sha256:bb",
                "chains": [{"chain": "h/traces/a/0", "seq": 7}], "elapsed_ms": 12.34
            })
        );
        assert_eq!(serde_json::from_value::<ReloadReport>(json).unwrap(), report());
        for result in [ReloadResult::Applied, ReloadResult::Pending, ReloadResult::Rejected, ReloadResult::Unchanged] {
            assert_eq!(serde_json::to_value(result).unwrap(), result.name());
        }
    }

    #[test]
    fn status_text_shows_each_processor_and_its_last_reload() {
        let file = |path: &str, digest: &str| FileStatus { path: path.into(), digest: digest.into() };
        let mut processor = ProcessorStatus {
            id: "wasm/soc2".into(),
            module: file("m.wasm", "sha256:aa"),
            policy: file("p.yaml", "sha256:bb"),
            since: "2026-11-25T09:00:00Z".into(),
            trigger: TriggerKind::Startup,
            chains: vec!["h/traces/a/0".into(), "h/logs/a/0".into()],
            last_reload: None,
        };
        let text = Status { processors: vec![processor.clone()] }.to_text();
        assert_eq!(
            text,
            "wasm/soc2\n  module  sha256:aa  m.wasm\n  policy  sha256:bb  p.yaml\n  since   2026-11-25T09:00:00Z (startup)\n  \
             chains  h/traces/a/0, h/logs/a/0\n  last reload  none\n"
        );
        processor.last_reload = Some(report());
        let text = Status { processors: vec![processor] }.to_text();
        assert!(
            text.ends_with("  last reload  2026-11-25T10:00:00Z admin: rejected in 12.3 ms: policy p.yaml: line 2\n"),
            "{text}"
        );
    }
}
