//! Policy files: parse the YAML ([`config`]), validate it once, and compile
//! it into a typed [`Policy`] the hot path trusts (compiled regexes, typed
//! values, rule indexes).

mod attributes;
pub mod config;
mod filter;
mod matcher;
mod ottl;
mod redaction;

use crate::pattern::Pattern;
use sha2::{Digest, Sha256};

use audit_format::values::ValueError;
pub use audit_format::values::{parse_severity, yaml_error, yaml_kind, yaml_to_value};

use crate::api::{PolicyInfo, Rule};
use crate::attributes::{Action, Attributes, ConvertTo, Source};
use crate::filter::{AttributeMatch, Filter, IncludeExclude, LibraryMatch, Matcher, Patterns, SPAN_KINDS, ValueMatch};
use crate::redaction::{Masking, Redaction, Summary};
use crate::transform::Transform;
use config::*;

/// A policy that failed to parse or validate: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}{}", .line.map(|(l, c)| format!(" (line {l}, column {c})")).unwrap_or_default())]
pub struct PolicyError {
    /// The key path, e.g. `filter.spans.include.match_type`.
    pub path: String,
    /// Line and column (1-based), where the YAML parser knows them.
    pub line: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl PolicyError {
    fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError { path: path.into(), line: None, message: message.into() }
    }
}

impl From<ValueError> for PolicyError {
    fn from(e: ValueError) -> Self {
        PolicyError { path: e.path, line: e.line, message: e.message }
    }
}

/// A host-supplied secret the chain MACs records with.
#[derive(Debug)]
pub struct ChainKey {
    /// Key id (`audit.chain.key_id`).
    pub id: String,
    /// Key bytes.
    pub secret: Vec<u8>,
}

/// The `audit:` section, compiled.
#[derive(Debug)]
pub struct Audit {
    /// `audit.pipeline` value, "" when unset.
    pub pipeline: String,
    /// Attribute key for the received-at time.
    pub received_at_key: String,
    /// Required attribute keys.
    pub require: Vec<String>,
    /// Rule index of `audit.require`, when set.
    pub require_rule: Option<usize>,
}

/// A validated, compiled policy.
#[derive(Debug)]
pub struct Policy {
    /// `sha256:<hex>` of the policy bytes.
    pub digest: String,
    /// `filter:`.
    pub filter: Filter,
    /// `attributes:`.
    pub attributes: Attributes,
    /// `transform:`.
    pub transform: Transform,
    /// `redaction:`.
    pub redaction: Redaction,
    /// `audit:`.
    pub audit: Audit,
    /// The record MAC key, when `audit.chain.key_id` names one.
    pub key: Option<ChainKey>,
    /// Every rule, in policy order.
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Parses and compiles a policy. `secrets` maps key ids to key bytes.
    pub fn parse(text: &str, secrets: &[(String, Vec<u8>)]) -> Result<Policy, PolicyError> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())));
        let file = parse_yaml(text)?;
        Compiler { rules: Vec::new(), secrets }.compile(file, digest)
    }

    /// What `configure` reports about this policy.
    pub fn info(&self) -> PolicyInfo {
        PolicyInfo {
            digest: self.digest.clone(),
            pipeline: self.audit.pipeline.clone(),
            key_id: self.key.as_ref().map(|k| k.id.clone()),
            rules: self.rules.clone(),
        }
    }
}

fn parse_yaml(text: &str) -> Result<PolicyFile, PolicyError> {
    if text.trim().is_empty() {
        return Err(PolicyError::at(
            "(policy)",
            "the policy is empty; an empty policy would keep every record unfiltered",
        ));
    }
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| yaml_error(e).into())
}

/// A compiled match block with a summary for its rule, or why it failed.
type CompiledMatcher = Result<(Matcher, String), PolicyError>;

struct Compiler<'s> {
    rules: Vec<Rule>,
    secrets: &'s [(String, Vec<u8>)],
}

impl Compiler<'_> {
    fn rule(&mut self, id: impl Into<String>, description: impl Into<String>) -> usize {
        self.rules.push(Rule { id: id.into(), description: description.into() });
        self.rules.len() - 1
    }

    fn secret(&self, id: &str, path: &str) -> Result<Vec<u8>, PolicyError> {
        self.secrets.iter().find(|(k, _)| k == id).map(|(_, v)| v.clone()).ok_or_else(|| {
            PolicyError::at(
                path,
                format!(
                    "key id '{id}' names no secret the host supplied (secrets come from the host, never the policy)"
                ),
            )
        })
    }

    fn compile(mut self, file: PolicyFile, digest: String) -> Result<Policy, PolicyError> {
        let filter = match file.filter {
            Some(f) => self.filter(f)?,
            None => Filter::default(),
        };
        let attributes = match file.attributes {
            Some(a) => self.attributes(a)?,
            None => Attributes::default(),
        };
        let transform = match file.transform {
            Some(t) => self.transform(t)?,
            None => Transform::default(),
        };
        let redaction = match file.redaction {
            Some(r) => self.redaction(r)?,
            None => Redaction::default(),
        };
        let (audit, key) = self.audit(file.audit)?;
        Ok(Policy { digest, filter, attributes, transform, redaction, audit, key, rules: self.rules })
    }

    fn audit(&mut self, a: Option<AuditConfig>) -> Result<(Audit, Option<ChainKey>), PolicyError> {
        let a = a.unwrap_or(AuditConfig { pipeline: None, received_at: None, require: Vec::new(), chain: None });
        let received_at_key = a.received_at.unwrap_or_else(|| audit_format::keys::DEFAULT_RECEIVED_AT.to_owned());
        if received_at_key.is_empty() {
            return Err(PolicyError::at("audit.received_at", "the attribute key must not be empty"));
        }
        if audit_format::keys::is_processor_key(&received_at_key) {
            return Err(PolicyError::at(
                "audit.received_at",
                format!("'{received_at_key}' is an attribute the processor itself writes; choose another key"),
            ));
        }
        for (i, key) in a.require.iter().enumerate() {
            if key.is_empty() {
                return Err(PolicyError::at(format!("audit.require[{i}]"), "the attribute key must not be empty"));
            }
        }
        let require_rule = (!a.require.is_empty())
            .then(|| self.rule("audit.require", format!("flag records missing any of {}", a.require.join(", "))));
        let key = match a.chain.and_then(|c| c.key_id) {
            Some(id) if id.is_empty() => return Err(PolicyError::at("audit.chain.key_id", "must not be empty")),
            Some(id) => {
                let secret = self.secret(&id, "audit.chain.key_id")?;
                Some(ChainKey { id, secret })
            }
            None => None,
        };
        let audit =
            Audit { pipeline: a.pipeline.unwrap_or_default(), received_at_key, require: a.require, require_rule };
        Ok((audit, key))
    }
}

fn compile_regex(path: &str, pattern: &str) -> Result<Pattern, PolicyError> {
    Pattern::new(pattern).map_err(|e| PolicyError::at(path, format!("invalid regular expression {pattern:?}: {e}")))
}

#[cfg(test)]
mod tests;
