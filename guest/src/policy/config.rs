//! The policy file as written: serde structs whose keys are the Collector's
//! own processor configs. Unknown keys are errors; `super::compile` turns
//! these into the typed [`super::Policy`].

use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

/// The whole policy file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// filterprocessor config.
    pub filter: Option<FilterConfig>,
    /// attributesprocessor config.
    pub attributes: Option<AttributesConfig>,
    /// redactionprocessor config.
    pub redaction: Option<RedactionConfig>,
    /// What no Collector processor does.
    pub audit: Option<AuditConfig>,
}

/// `filter:` (filterprocessor).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Accepted for compatibility; only OTTL conditions use it.
    pub error_mode: Option<String>,
    /// Legacy span matching.
    pub spans: Option<SpanFilters>,
    /// Legacy log matching (and OTTL `log_record`).
    pub logs: Option<LogFilters>,
    /// OTTL conditions for traces.
    pub traces: Option<Yaml>,
    /// Metrics are not audit records.
    pub metrics: Option<Yaml>,
}

/// `filter.spans`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanFilters {
    /// Keep only matching spans.
    pub include: Option<MatchProperties>,
    /// Drop matching spans.
    pub exclude: Option<MatchProperties>,
}

/// `filter.logs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFilters {
    /// Keep only matching log records.
    pub include: Option<LogMatchProperties>,
    /// Drop matching log records.
    pub exclude: Option<LogMatchProperties>,
    /// OTTL conditions.
    pub log_record: Option<Yaml>,
}

/// `filterconfig.MatchProperties`: span matching, and the attributes
/// processor's `include`/`exclude`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchProperties {
    /// `strict` or `regexp`.
    pub match_type: Option<String>,
    /// Regexp cache settings; accepted, no effect here.
    pub regexp: Option<RegexpConfig>,
    /// `service.name` patterns.
    #[serde(default)]
    pub services: Vec<String>,
    /// Span name patterns.
    #[serde(default)]
    pub span_names: Vec<String>,
    /// Span kinds (`SPAN_KIND_SERVER`, ...).
    #[serde(default)]
    pub span_kinds: Vec<String>,
    /// Record attributes that must all match.
    #[serde(default)]
    pub attributes: Vec<AttributeConfig>,
    /// Resource attributes that must all match.
    #[serde(default)]
    pub resources: Vec<AttributeConfig>,
    /// Instrumentation scopes, any of which may match.
    #[serde(default)]
    pub libraries: Vec<LibraryConfig>,
    /// Log body patterns (logs only).
    #[serde(default)]
    pub log_bodies: Vec<String>,
    /// Severity text patterns (logs only).
    #[serde(default)]
    pub log_severity_texts: Vec<String>,
    /// Minimum severity (logs only).
    pub log_severity_number: Option<SeverityNumberConfig>,
    /// Metric names: never valid here.
    #[serde(default)]
    pub metric_names: Vec<String>,
}

/// `filterprocessor.LogMatchProperties`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogMatchProperties {
    /// `strict` or `regexp`.
    pub match_type: Option<String>,
    /// Resource attributes that must all match.
    #[serde(default)]
    pub resource_attributes: Vec<AttributeConfig>,
    /// Log record attributes that must all match.
    #[serde(default)]
    pub record_attributes: Vec<AttributeConfig>,
    /// Severity text patterns.
    #[serde(default)]
    pub severity_texts: Vec<String>,
    /// Minimum severity.
    pub severity_number: Option<SeverityNumberConfig>,
    /// Body patterns.
    #[serde(default)]
    pub bodies: Vec<String>,
}

/// `regexp:` cache settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexpConfig {
    /// Accepted, no effect.
    pub cacheenabled: Option<bool>,
    /// Accepted, no effect.
    pub cachemaxnumentries: Option<u64>,
}

/// One attribute condition.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeConfig {
    /// Attribute key.
    pub key: String,
    /// Expected value; absent means "key present".
    pub value: Option<Yaml>,
}

/// One library (instrumentation scope) condition.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryConfig {
    /// Scope name pattern.
    pub name: String,
    /// Scope version pattern; absent matches any.
    pub version: Option<String>,
}

/// `severity_number:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityNumberConfig {
    /// A severity name (`INFO`, `warn2`, ...) or number 1..24.
    pub min: Yaml,
    /// Whether records without a severity match.
    #[serde(default)]
    pub match_undefined: bool,
}

/// `attributes:` (attributesprocessor).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    /// The actions, applied in order.
    pub actions: Option<Vec<ActionConfig>>,
    /// Apply only to matching records.
    pub include: Option<MatchProperties>,
    /// Do not apply to matching records.
    pub exclude: Option<MatchProperties>,
}

/// One attributes action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// Target key.
    pub key: Option<String>,
    /// Literal value.
    pub value: Option<Yaml>,
    /// Key pattern (delete, hash) or extraction pattern (extract).
    pub pattern: Option<String>,
    /// Copy the value of another attribute.
    pub from_attribute: Option<String>,
    /// Request metadata: not available to an audit processor.
    pub from_context: Option<String>,
    /// `string`, `int` or `double` (convert).
    pub converted_type: Option<String>,
    /// The action name.
    pub action: String,
}

/// `redaction:` (redactionprocessor).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Keep every key (only values are redacted).
    #[serde(default)]
    pub allow_all_keys: bool,
    /// Keys kept when `allow_all_keys` is false.
    #[serde(default)]
    pub allowed_keys: Vec<String>,
    /// Keys never redacted.
    #[serde(default)]
    pub ignored_keys: Vec<String>,
    /// Keys whose whole value is masked.
    #[serde(default)]
    pub blocked_key_patterns: Vec<String>,
    /// Value patterns to mask.
    #[serde(default)]
    pub blocked_values: Vec<String>,
    /// Value patterns that exempt a value.
    #[serde(default)]
    pub allowed_values: Vec<String>,
    /// `md5`, `sha1`, `sha3` or `hmac-sha256`; absent masks with `****`.
    pub hash_function: Option<String>,
    /// Key id of the HMAC secret for `hmac-sha256`.
    pub hash_key_id: Option<String>,
    /// `silent`, `info` or `debug`.
    pub summary: Option<String>,
}

/// `audit:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Value of `audit.pipeline`.
    pub pipeline: Option<String>,
    /// Attribute that receives the received-at time.
    pub received_at: Option<String>,
    /// Attributes every kept record must carry.
    #[serde(default)]
    pub require: Vec<String>,
    /// Chain settings.
    pub chain: Option<ChainConfig>,
}

/// `audit.chain`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// Id of the host secret that MACs every record.
    pub key_id: Option<String>,
}
