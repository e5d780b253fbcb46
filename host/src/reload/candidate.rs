//! A reload candidate: the processor's files as they are now, compiled,
//! configured and tested off the hot path. Only a candidate that passes
//! every gate may serve.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use audit_format::{ChainHead, Context};

use crate::config;
use crate::otlp::Signal;
use crate::pipeline::chain::PolicySource;
use crate::policy_event::{EventKind, PolicyEvent, Trigger, TriggerKind};
use crate::policytest;
use crate::runtime::{Instance, Module, Runtime, RuntimeError};

/// What serves a processor: its module and policy, and since when.
#[derive(Clone)]
pub struct Serving {
    /// The compiled component.
    pub module: Arc<Module>,
    /// The policy text and secrets.
    pub policy: Arc<PolicySource>,
    /// `sha256:<hex>` of the policy text (the records' `audit.policy.digest`).
    pub policy_digest: String,
    /// SHA-256 over the secrets, to notice a key change under the same id.
    pub secrets_digest: [u8; 32],
    /// When it began serving (Unix nanoseconds).
    pub since_unix_nano: u64,
    /// What made it serve.
    pub trigger: TriggerKind,
    /// Every key id the processor's chains were MACed with, and the check
    /// value of its bytes (`store::key_check`): an id may not come back
    /// with other bytes.
    pub key_history: BTreeMap<String, String>,
}

impl Serving {
    /// What serves at start-up.
    pub fn startup(module: Arc<Module>, policy: Arc<PolicySource>) -> Self {
        Serving {
            policy_digest: policy_digest(&policy.text),
            secrets_digest: secrets_digest(&policy.secrets),
            module,
            policy,
            since_unix_nano: crate::clock::now_unix_nano(),
            trigger: TriggerKind::Startup,
            key_history: BTreeMap::new(),
        }
    }
}

/// What building a candidate came to.
pub enum Outcome {
    /// Module, policy and secrets are what already serves.
    Unchanged,
    /// It passed every gate.
    Accepted {
        /// The compiled module and the policy to serve.
        module: Arc<Module>,
        /// The policy and secrets.
        policy: Arc<PolicySource>,
        /// The policy's digest.
        policy_digest: String,
        /// Whether the secrets changed.
        secrets_changed: bool,
        /// The chain key it MACs with (id, check value), if any.
        key: Option<(String, String)>,
    },
    /// It failed a gate; the old module and policy keep serving.
    Rejected(Rejected),
}

/// A refused candidate.
pub struct Rejected {
    /// Why, naming the file and the gate.
    pub reason: String,
    /// Its module's digest, if the file could be read.
    pub module_digest: Option<String>,
    /// Its policy's digest, if the file could be read.
    pub policy_digest: Option<String>,
    /// SHA-256 over every input file, so that a file watch does not record
    /// the same refused candidate twice.
    pub fingerprint: [u8; 32],
}

/// `sha256:<hex>` of a policy's exact bytes, as the processor computes it.
pub fn policy_digest(text: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// SHA-256 over secrets (ids and bytes, length-prefixed).
pub fn secrets_digest(secrets: &[(String, Vec<u8>)]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for (id, bytes) in secrets {
        // Length-prefixed, so that no two lists hash alike.
        hasher.update((id.len() as u64).to_be_bytes());
        hasher.update(id.as_bytes());
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    }
    hasher.finalize().into()
}

/// Reads the processor's files and runs the candidate through the gates:
/// the module compiles as an audit processor component, an instance of it
/// accepts the policy (no error, no trap) and can chain the swap's event
/// record, the chains' MACs stay verifiable, and every policy test file of
/// the processor passes against this module and policy.
pub fn build(runtime: &Runtime, processor: &config::Processor, serving: &Serving) -> Outcome {
    let mut fingerprint = Sha256::new();
    let mut rejected =
        Rejected { reason: String::new(), module_digest: None, policy_digest: None, fingerprint: [0; 32] };
    let result = (|| {
        let module_bytes = std::fs::read(&processor.module)
            .map_err(|e| format!("cannot read module {}: {e}", processor.module.display()))?;
        let module_digest = format!("sha256:{}", hex::encode(Sha256::digest(&module_bytes)));
        fingerprint.update(module_digest.as_bytes());
        rejected.module_digest = Some(module_digest.clone());
        let text = std::fs::read_to_string(&processor.policy)
            .map_err(|e| format!("cannot read policy {}: {e}", processor.policy.display()))?;
        let digest = policy_digest(&text);
        fingerprint.update(digest.as_bytes());
        rejected.policy_digest = Some(digest.clone());
        let secrets = processor.read_secrets().map_err(|e| format!("secrets: {e}"))?;
        let secrets_digest = secrets_digest(&secrets);
        fingerprint.update(secrets_digest);
        for test in &processor.tests {
            // A test file that changed can turn a rejected candidate into an accepted one.
            let bytes = std::fs::read(test).unwrap_or_default();
            fingerprint.update(Sha256::digest(&bytes));
        }
        let secrets_changed = secrets_digest != serving.secrets_digest;
        if module_digest == serving.module.digest() && digest == serving.policy_digest && !secrets_changed {
            return Ok(None);
        }
        let module = if module_digest == serving.module.digest() {
            serving.module.clone()
        } else {
            Arc::new(
                runtime.load(&processor.module).map_err(|e| e.to_string())?.with_limits(processor.limits.runtime()),
            )
        };
        let mut instance = module.instantiate().map_err(|e| e.to_string())?;
        let info = instance.configure(&text, &secrets).map_err(|e| match e {
            RuntimeError::Policy(message) => format!("policy {}: {message}", processor.policy.display()),
            RuntimeError::Trap(message) => format!(
                "module {} trapped in configure: {}",
                processor.module.display(),
                message.lines().next().unwrap_or_default()
            ),
            other => format!("configure: {other}"),
        })?;
        if info.digest != digest {
            return Err(format!(
                "module {} reports policy digest {} for a policy whose digest is {digest}",
                processor.module.display(),
                info.digest
            ));
        }
        check_chain_events(&mut instance, processor)?;
        drop(instance);
        let key = check_chain_key(serving, &info, &secrets, processor)?;
        run_policy_tests(processor, &module, &text)?;
        let policy = Arc::new(PolicySource { text, secrets });
        Ok(Some((module, policy, digest, secrets_changed, key)))
    })();
    match result {
        Ok(None) => Outcome::Unchanged,
        Ok(Some((module, policy, policy_digest, secrets_changed, key))) => {
            Outcome::Accepted { module, policy, policy_digest, secrets_changed, key }
        }
        Err(reason) => {
            // One line: it goes into the log, the admin answer and a record.
            rejected.reason = one_line(&reason);
            rejected.fingerprint = fingerprint.finalize().into();
            Outcome::Rejected(rejected)
        }
    }
}

/// `reason` on one line (errors from the wasm toolchain span several),
/// at most 2,000 characters.
fn one_line(reason: &str) -> String {
    let line = reason.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(2000) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// Every chain records the swap with the candidate's `chain-events`: a
/// module that cannot must not pass, or each chain would refuse requests
/// until the swap can be recorded.
fn check_chain_events(instance: &mut Instance, processor: &config::Processor) -> Result<(), String> {
    let event = PolicyEvent {
        processor: processor.id.clone(),
        trigger: Trigger::Admin,
        old_module_digest: String::new(),
        old_policy_digest: String::new(),
        kind: EventKind::Change { module_digest: String::new(), policy_digest: String::new(), secrets_changed: false },
    };
    for signal in Signal::ALL {
        let head = ChainHead::genesis("candidate-check");
        let ctx = Context { received_at_unix_nano: crate::clock::now_unix_nano(), head, sender: None };
        let request = event.export_request(signal, "candidate-check", 0, ctx.received_at_unix_nano);
        let output = instance
            .chain_events(signal, &request, &ctx)
            .map_err(|e| format!("module {} cannot record the swap (chain-events): {e}", processor.module.display()))?;
        if output.records.len() != 1 || output.head.seq != 1 {
            return Err(format!(
                "module {} chained {} records for one event (chain-events)",
                processor.module.display(),
                output.records.len()
            ));
        }
    }
    Ok(())
}

/// A chain's record MACs must stay verifiable: a key id its records were
/// ever MACed with cannot come back with other bytes (verify takes one key
/// per id; rotate to a new id), and a keyed chain cannot become unkeyed
/// (verify reports that as a MAC downgrade). Returns the candidate's chain
/// key (id, check value).
fn check_chain_key(
    serving: &Serving,
    candidate: &crate::runtime::PolicyInfo,
    secrets: &[(String, Vec<u8>)],
    processor: &config::Processor,
) -> Result<Option<(String, String)>, String> {
    let mut instance = serving.module.instantiate().map_err(|e| e.to_string())?;
    let current = instance
        .configure(&serving.policy.text, &serving.policy.secrets)
        .map_err(|e| format!("the serving policy: {e}"))?;
    let Some(key_id) = &candidate.key_id else {
        return match current.key_id {
            Some(current) => Err(format!(
                "policy {}: the chains are MACed with key {current:?}; a policy without audit.chain.key_id would \
                 downgrade them (verify reports MISSING_MAC). Rotate to another key id instead",
                processor.policy.display()
            )),
            None => Ok(None),
        };
    };
    let bytes = secrets.iter().find(|(id, _)| id == key_id).map(|(_, b)| b.as_slice()).unwrap_or_default();
    let check = crate::store::key_check(bytes);
    let mut known = serving.key_history.get(key_id).cloned();
    if current.key_id.as_ref() == Some(key_id) {
        let serving_bytes = serving.policy.secrets.iter().find(|(id, _)| id == key_id).map(|(_, b)| b.as_slice());
        known = Some(crate::store::key_check(serving_bytes.unwrap_or_default()));
    }
    match known {
        Some(known) if known != check => Err(format!(
            "secrets: key {key_id:?} has other bytes than the chains' records were MACed with under that id; \
             records MACed with both could not be verified. Give the new key a new id (and name it in \
             audit.chain.key_id)"
        )),
        _ => Ok(Some((key_id.clone(), check))),
    }
}

/// Runs the processor's policy test files against the candidate; the
/// error lists each failed test with its first unmet expectation.
fn run_policy_tests(processor: &config::Processor, module: &Module, policy: &str) -> Result<(), String> {
    let mut failed = Vec::new();
    let mut total = 0;
    for path in &processor.tests {
        let file = policytest::load(path).map_err(|e| format!("policy tests: {e}"))?;
        let report =
            policytest::run_suite(path, &file, module, Some(policy)).map_err(|e| format!("policy tests: {e}"))?;
        total += report.results.len();
        for result in report.results.iter().filter(|r| !r.passed()) {
            let first = result.failures.first().map(String::as_str).unwrap_or_default();
            failed.push(format!("{}: {:?}: {first}", path.display(), result.name));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(format!("policy tests failed ({} of {total}): {}", failed.len(), failed.join("; ")))
}
