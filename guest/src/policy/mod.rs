//! Policy files: parse the YAML ([`config`]), validate it once, and compile
//! it into a typed [`Policy`] the hot path trusts (compiled regexes, typed
//! values, rule indexes).

pub mod config;

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use regex::Regex;
use serde_yaml_ng::Value as Yaml;
use sha2::{Digest, Sha256};

use audit_format::values::ValueError;
pub use audit_format::values::{parse_severity, yaml_error, yaml_kind, yaml_to_value};

use crate::api::{PolicyInfo, Rule};
use crate::attributes::{Action, Attributes, ConvertTo, Source};
use crate::filter::{AttributeMatch, Filter, IncludeExclude, LibraryMatch, Matcher, Patterns, SPAN_KINDS, ValueMatch};
use crate::redaction::{Masking, Redaction, Summary};
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
        let redaction = match file.redaction {
            Some(r) => self.redaction(r)?,
            None => Redaction::default(),
        };
        let (audit, key) = self.audit(file.audit)?;
        Ok(Policy { digest, filter, attributes, redaction, audit, key, rules: self.rules })
    }

    fn filter(&mut self, f: FilterConfig) -> Result<Filter, PolicyError> {
        if let Some(mode) = &f.error_mode
            && !["ignore", "silent", "propagate"].contains(&mode.as_str())
        {
            return Err(PolicyError::at(
                "filter.error_mode",
                format!("'{mode}' is not one of ignore, silent, propagate"),
            ));
        }
        if f.traces.is_some() {
            return Err(PolicyError::at(
                "filter.traces",
                "OTTL conditions are not supported yet; use filter.spans.include / filter.spans.exclude",
            ));
        }
        if f.metrics.is_some() {
            return Err(PolicyError::at(
                "filter.metrics",
                "metrics are not audit records; the audit processor handles traces and logs",
            ));
        }
        let mut filter = Filter::default();
        if let Some(spans) = f.spans {
            filter.spans = self.include_exclude_spans("filter.spans", spans.include, spans.exclude)?;
            if filter.spans.is_empty() {
                return Err(PolicyError::at("filter.spans", "neither include nor exclude is set"));
            }
        }
        if let Some(logs) = f.logs {
            if logs.log_record.is_some() {
                return Err(PolicyError::at(
                    "filter.logs.log_record",
                    "OTTL conditions are not supported yet; use filter.logs.include / filter.logs.exclude",
                ));
            }
            let include = logs.include.map(|m| (self.log_matcher("filter.logs.include", m), "filter.logs.include"));
            let exclude = logs.exclude.map(|m| (self.log_matcher("filter.logs.exclude", m), "filter.logs.exclude"));
            filter.logs = self.register(include, exclude)?;
            if filter.logs.is_empty() {
                return Err(PolicyError::at("filter.logs", "neither include nor exclude is set"));
            }
        }
        Ok(filter)
    }

    fn include_exclude_spans(
        &mut self,
        path: &str,
        include: Option<MatchProperties>,
        exclude: Option<MatchProperties>,
    ) -> Result<IncludeExclude, PolicyError> {
        let include_path = format!("{path}.include");
        let exclude_path = format!("{path}.exclude");
        let include = include.map(|m| (span_matcher(&include_path, m), include_path.as_str()));
        let exclude = exclude.map(|m| (span_matcher(&exclude_path, m), exclude_path.as_str()));
        self.register(include, exclude)
    }

    /// Adds the include/exclude rules in policy order.
    fn register(
        &mut self,
        include: Option<(CompiledMatcher, &str)>,
        exclude: Option<(CompiledMatcher, &str)>,
    ) -> Result<IncludeExclude, PolicyError> {
        let mut out = IncludeExclude::default();
        if let Some((matcher, path)) = include {
            let (matcher, summary) = matcher?;
            out.include = Some((matcher, self.rule(path, format!("keep only records matching {summary}"))));
        }
        if let Some((matcher, path)) = exclude {
            let (matcher, summary) = matcher?;
            out.exclude = Some((matcher, self.rule(path, format!("drop records matching {summary}"))));
        }
        Ok(out)
    }

    fn log_matcher(&mut self, path: &str, m: LogMatchProperties) -> CompiledMatcher {
        let props = MatchProperties {
            match_type: m.match_type,
            attributes: m.record_attributes,
            resources: m.resource_attributes,
            log_bodies: m.bodies,
            log_severity_texts: m.severity_texts,
            log_severity_number: m.severity_number,
            ..MatchProperties::default()
        };
        let names = LogNames {
            attributes: "record_attributes",
            resources: "resource_attributes",
            bodies: "bodies",
            severity_texts: "severity_texts",
            severity_number: "severity_number",
        };
        matcher(path, props, Signal::Logs(names))
    }

    fn attributes(&mut self, a: AttributesConfig) -> Result<Attributes, PolicyError> {
        let Some(actions) = a.actions else {
            return Err(PolicyError::at("attributes.actions", "missing required field \"actions\""));
        };
        // The attributes processor's include/exclude use MatchProperties for
        // both signals; a property of the other signal makes a block not
        // match (see `filter`).
        let include = a.include.map(|m| (matcher("attributes.include", m, Signal::Any), "attributes.include"));
        let exclude = a.exclude.map(|m| (matcher("attributes.exclude", m, Signal::Any), "attributes.exclude"));
        let scope = self.register(include, exclude)?;
        let mut compiled = Vec::with_capacity(actions.len());
        for (i, action) in actions.into_iter().enumerate() {
            let path = format!("attributes.actions[{i}]");
            let (action, summary) = compile_action(&path, action)?;
            compiled.push((action, self.rule(path, summary)));
        }
        Ok(Attributes { scope, actions: compiled })
    }

    fn redaction(&mut self, r: RedactionConfig) -> Result<Redaction, PolicyError> {
        let masking = match r.hash_function.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("") => Masking::Mask,
            Some("md5") => Masking::Md5,
            Some("sha1") => Masking::Sha1,
            Some("sha3") => Masking::Sha3,
            Some("hmac-sha256") => {
                let Some(id) = &r.hash_key_id else {
                    return Err(PolicyError::at(
                        "redaction.hash_key_id",
                        "hash_function hmac-sha256 needs hash_key_id naming a host secret",
                    ));
                };
                Masking::HmacSha256(self.secret(id, "redaction.hash_key_id")?)
            }
            Some(other) => {
                return Err(PolicyError::at(
                    "redaction.hash_function",
                    format!("unknown hash function '{other}', allowed: md5, sha1, sha3, hmac-sha256"),
                ));
            }
        };
        if r.hash_key_id.is_some() && !matches!(masking, Masking::HmacSha256(_)) {
            return Err(PolicyError::at("redaction.hash_key_id", "only used with hash_function: hmac-sha256"));
        }
        let summary = match r.summary.as_deref() {
            None | Some("") | Some("silent") => Summary::Silent,
            Some("info") => Summary::Info,
            Some("debug") => Summary::Debug,
            Some(other) => {
                return Err(PolicyError::at(
                    "redaction.summary",
                    format!("'{other}' is not one of silent, info, debug"),
                ));
            }
        };
        // With allow_all_keys nothing is ever removed: no rule to cover.
        let allowed_keys = (!r.allow_all_keys).then(|| {
            let rule = self.rule("redaction.allowed_keys", "remove keys not listed in allowed_keys");
            (r.allowed_keys, rule)
        });
        let mut blocked_key_patterns = Vec::new();
        for (i, p) in r.blocked_key_patterns.iter().enumerate() {
            let path = format!("redaction.blocked_key_patterns[{i}]");
            let re = compile_regex(&path, p)?;
            blocked_key_patterns.push((re, self.rule(path, format!("mask values of keys matching /{p}/"))));
        }
        let mut blocked_values = Vec::new();
        for (i, p) in r.blocked_values.iter().enumerate() {
            let path = format!("redaction.blocked_values[{i}]");
            let re = compile_regex(&path, p)?;
            blocked_values.push((re, self.rule(path, format!("mask values matching /{p}/"))));
        }
        let allowed_values = r
            .allowed_values
            .iter()
            .enumerate()
            .map(|(i, p)| compile_regex(&format!("redaction.allowed_values[{i}]"), p))
            .collect::<Result<_, _>>()?;
        Ok(Redaction {
            active: true,
            allowed_keys,
            ignored_keys: r.ignored_keys,
            blocked_key_patterns,
            blocked_values,
            allowed_values,
            masking,
            summary,
        })
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

/// Key names of the log-only properties, which differ between the filter
/// processor's `logs` block and `MatchProperties`.
struct LogNames {
    attributes: &'static str,
    resources: &'static str,
    bodies: &'static str,
    severity_texts: &'static str,
    severity_number: &'static str,
}

enum Signal {
    Spans,
    Logs(LogNames),
    /// The attributes processor: one config for both signals.
    Any,
}

fn span_matcher(path: &str, m: MatchProperties) -> CompiledMatcher {
    matcher(path, m, Signal::Spans)
}

/// Validates and compiles one match block; returns it with a summary.
fn matcher(path: &str, m: MatchProperties, signal: Signal) -> CompiledMatcher {
    let default_names = LogNames {
        attributes: "attributes",
        resources: "resources",
        bodies: "log_bodies",
        severity_texts: "log_severity_texts",
        severity_number: "log_severity_number",
    };
    let names = match &signal {
        Signal::Logs(n) => n,
        _ => &default_names,
    };
    let regexp = match m.match_type.as_deref() {
        Some("strict") => false,
        Some("regexp") => true,
        other => {
            return Err(PolicyError::at(
                format!("{path}.match_type"),
                format!("unrecognized match_type: '{}', valid types are: [regexp strict]", other.unwrap_or("")),
            ));
        }
    };
    if !m.metric_names.is_empty() {
        return Err(PolicyError::at(
            format!("{path}.metric_names"),
            "metric_names is not valid for spans or log records",
        ));
    }
    match signal {
        Signal::Spans => {
            for (key, set) in [
                ("log_bodies", !m.log_bodies.is_empty()),
                ("log_severity_texts", !m.log_severity_texts.is_empty()),
                ("log_severity_number", m.log_severity_number.is_some()),
            ] {
                if set {
                    return Err(PolicyError::at(
                        format!("{path}.{key}"),
                        format!("{key} should not be specified for trace spans"),
                    ));
                }
            }
        }
        Signal::Logs(_) | Signal::Any => {}
    }
    let patterns = |key: &str, list: &[String]| -> Result<Option<Patterns>, PolicyError> {
        if list.is_empty() {
            return Ok(None);
        }
        Ok(Some(if regexp {
            let compiled = list
                .iter()
                .enumerate()
                .map(|(i, p)| compile_regex(&format!("{path}.{key}[{i}]"), p))
                .collect::<Result<_, _>>()?;
            Patterns::Regexp(compiled)
        } else {
            Patterns::Strict(list.to_vec())
        }))
    };
    if !regexp {
        for (i, kind) in m.span_kinds.iter().enumerate() {
            if !SPAN_KINDS[1..].contains(&kind.as_str()) {
                return Err(PolicyError::at(
                    format!("{path}.span_kinds[{i}]"),
                    format!(
                        "'{kind}' is not a span kind; with match_type strict use one of {}",
                        SPAN_KINDS[1..].join(", ")
                    ),
                ));
            }
        }
    }
    let mut libraries = Vec::with_capacity(m.libraries.len());
    for (i, lib) in m.libraries.iter().enumerate() {
        let lib_path = format!("{path}.libraries[{i}]");
        if lib.name.is_empty() {
            return Err(PolicyError::at(format!("{lib_path}.name"), "can't have empty name in the list of libraries"));
        }
        let name = patterns("libraries.name", std::slice::from_ref(&lib.name))?.expect("one pattern");
        let version = match &lib.version {
            Some(v) => Some(
                patterns("libraries.version", std::slice::from_ref(v))?
                    .unwrap_or(Patterns::Strict(vec![String::new()])),
            ),
            None => None,
        };
        libraries.push(LibraryMatch { name, version });
    }
    let severity_number = match m.log_severity_number {
        Some(s) => Some((parse_severity(&format!("{path}.{}.min", names.severity_number), &s.min)?, s.match_undefined)),
        None => None,
    };
    let compiled = Matcher {
        services: patterns("services", &m.services)?,
        span_names: patterns("span_names", &m.span_names)?,
        span_kinds: patterns("span_kinds", &m.span_kinds)?,
        libraries,
        resources: attribute_matches(&format!("{path}.{}", names.resources), &m.resources, regexp)?,
        attributes: attribute_matches(&format!("{path}.{}", names.attributes), &m.attributes, regexp)?,
        bodies: patterns(names.bodies, &m.log_bodies)?,
        severity_texts: patterns(names.severity_texts, &m.log_severity_texts)?,
        severity_number,
    };
    let mut parts = Vec::new();
    let mut describe = |key: &str, list: &[String]| {
        if !list.is_empty() {
            parts.push(format!("{key} [{}]", list.join(", ")));
        }
    };
    describe("services", &m.services);
    describe("span_names", &m.span_names);
    describe("span_kinds", &m.span_kinds);
    describe(names.bodies, &m.log_bodies);
    describe(names.severity_texts, &m.log_severity_texts);
    let keys = |list: &[AttributeConfig]| list.iter().map(|a| a.key.clone()).collect::<Vec<_>>();
    describe(names.resources, &keys(&m.resources));
    describe(names.attributes, &keys(&m.attributes));
    describe("libraries", &m.libraries.iter().map(|l| l.name.clone()).collect::<Vec<_>>());
    if compiled.severity_number.is_some() {
        parts.push(names.severity_number.to_owned());
    }
    if parts.is_empty() {
        return Err(PolicyError::at(
            path,
            "no property to match on: set at least one of services, span_names, span_kinds, attributes, resources, libraries (spans) or record_attributes, resource_attributes, bodies, severity_texts, severity_number (logs)",
        ));
    }
    let summary = format!("({}: {})", if regexp { "regexp" } else { "strict" }, parts.join(" and "));
    Ok((compiled, summary))
}

fn attribute_matches(path: &str, list: &[AttributeConfig], regexp: bool) -> Result<Vec<AttributeMatch>, PolicyError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let entry = format!("{path}[{i}]");
            if a.key.is_empty() {
                return Err(PolicyError::at(format!("{entry}.key"), "can't have empty key in the list of attributes"));
            }
            let value = match &a.value {
                None => ValueMatch::Exists,
                Some(Yaml::String(pattern)) if regexp => {
                    ValueMatch::Regexp(compile_regex(&format!("{entry}.value"), pattern)?)
                }
                Some(other) if regexp => {
                    return Err(PolicyError::at(
                        format!("{entry}.value"),
                        format!(
                            "match_type=regexp for \"{}\" only supports strings, but found {}",
                            a.key,
                            yaml_kind(other)
                        ),
                    ));
                }
                Some(v) => ValueMatch::Equals(yaml_to_value(&format!("{entry}.value"), v)?),
            };
            Ok(AttributeMatch { key: a.key.clone(), value })
        })
        .collect()
}

fn compile_action(path: &str, a: ActionConfig) -> Result<(Action, String), PolicyError> {
    let name = a.action.to_ascii_lowercase();
    let err = |field: &str, msg: String| Err(PolicyError::at(format!("{path}.{field}"), msg));
    if a.from_context.is_some() {
        return err(
            "from_context",
            "from_context reads request metadata (client address, auth), which an audit processor never receives; use from_attribute or value".into(),
        );
    }
    let sources = usize::from(a.value.is_some()) + usize::from(a.from_attribute.is_some());
    let key = || -> Result<String, PolicyError> {
        match &a.key {
            Some(k) if !k.is_empty() => Ok(k.clone()),
            _ => Err(PolicyError::at(
                format!("{path}.key"),
                format!("missing required field \"key\" for action \"{name}\""),
            )),
        }
    };
    let pattern = |required: bool| -> Result<Option<Regex>, PolicyError> {
        match &a.pattern {
            Some(p) => compile_regex(&format!("{path}.pattern"), p).map(Some),
            None if required => Err(PolicyError::at(
                format!("{path}.pattern"),
                format!("missing required field \"pattern\" for action \"{name}\""),
            )),
            None => Ok(None),
        }
    };
    if a.converted_type.is_some() && name != "convert" {
        return err("converted_type", format!("action \"{name}\" does not use the \"converted_type\" field"));
    }
    match name.as_str() {
        "insert" | "update" | "upsert" => {
            if a.pattern.is_some() {
                return err("pattern", format!("action \"{name}\" does not use the \"pattern\" field"));
            }
            if sources == 0 {
                return err("value", "either \"value\" or \"from_attribute\" must be set".into());
            }
            if sources > 1 {
                return err("from_attribute", "\"value\" and \"from_attribute\" are both set; set one".into());
            }
            let key = key()?;
            let (source, from) = match (a.value, a.from_attribute) {
                (Some(v), _) => {
                    let value = yaml_to_value(&format!("{path}.value"), &v)?;
                    let text = describe_value(&value);
                    (Source::Value(value), text)
                }
                (None, Some(f)) => (Source::FromAttribute(f.clone()), format!("the value of {f}")),
                (None, None) => unreachable!("sources counted above"),
            };
            let summary = format!("{name} {key} = {from}");
            let action = match name.as_str() {
                "insert" => Action::Insert { key, source },
                "update" => Action::Update { key, source },
                _ => Action::Upsert { key, source },
            };
            Ok((action, summary))
        }
        "delete" | "hash" => {
            if sources > 0 {
                return err("value", format!("action \"{name}\" does not use \"value\" or \"from_attribute\""));
            }
            let key = a.key.clone().filter(|k| !k.is_empty());
            let pattern = pattern(false)?;
            if key.is_none() && pattern.is_none() {
                return err("key", format!("action \"{name}\" needs \"key\" or \"pattern\" (or both)"));
            }
            let target =
                [key.as_ref().map(|k| k.to_string()), a.pattern.as_ref().map(|p| format!("keys matching /{p}/"))]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" and ");
            let summary = format!("{name} {target}");
            Ok((
                if name == "delete" { Action::Delete { key, pattern } } else { Action::Hash { key, pattern } },
                summary,
            ))
        }
        "extract" => {
            if sources > 0 {
                return err("value", "action \"extract\" does not use a value source".into());
            }
            let key = key()?;
            let re = pattern(true)?.expect("required");
            let names: Vec<_> = re.capture_names().skip(1).collect();
            if names.is_empty() {
                return err("pattern", "the pattern contains no named capture groups".into());
            }
            if names.iter().any(Option::is_none) {
                return err("pattern", "the pattern contains at least one unnamed capture group".into());
            }
            let summary =
                format!("extract {} from {key}", names.iter().flatten().copied().collect::<Vec<_>>().join(", "));
            Ok((Action::Extract { key, pattern: re }, summary))
        }
        "convert" => {
            if sources > 0 || a.pattern.is_some() {
                return err("value", "action \"convert\" does not use value sources or \"pattern\"".into());
            }
            let key = key()?;
            let to = match a.converted_type.as_deref() {
                Some("string") => ConvertTo::String,
                Some("int") => ConvertTo::Int,
                Some("double") => ConvertTo::Double,
                Some(other) => {
                    return err("converted_type", format!("invalid value \"{other}\": use string, int or double"));
                }
                None => return err("converted_type", "missing required field \"converted_type\"".into()),
            };
            let summary = format!("convert {key} to {}", a.converted_type.as_deref().unwrap_or_default());
            Ok((Action::Convert { key, to }, summary))
        }
        other => err(
            "action",
            format!("unsupported action \"{other}\"; use insert, update, upsert, delete, hash, extract or convert"),
        ),
    }
}

fn compile_regex(path: &str, pattern: &str) -> Result<Regex, PolicyError> {
    Regex::new(pattern).map_err(|e| PolicyError::at(path, format!("invalid regular expression {pattern:?}: {e}")))
}

fn describe_value(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => format!("{s:?}"),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::ArrayValue(_)) => "a list".into(),
        Some(Value::KvlistValue(_)) => "a map".into(),
        _ => "a value".into(),
    }
}

#[cfg(test)]
mod tests;
