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
    /// transformprocessor config (OTTL statements).
    pub transform: Option<TransformConfig>,
    /// redactionprocessor config.
    pub redaction: Option<RedactionConfig>,
    /// What no Collector processor does.
    pub audit: Option<AuditConfig>,
}

/// `filter:` (filterprocessor).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// What a failing OTTL condition does: `propagate` (the default),
    /// `ignore` or `silent`.
    pub error_mode: Option<String>,
    /// Legacy span matching.
    pub spans: Option<SpanFilters>,
    /// Legacy log matching (and OTTL `log_record`).
    pub logs: Option<LogFilters>,
    /// OTTL conditions for traces, by context.
    pub traces: Option<TraceConditions>,
    /// OTTL conditions for traces with inferred contexts: strings or
    /// groups (`conditions:`, optional `context:` and `error_mode:`).
    pub trace_conditions: Option<Vec<Yaml>>,
    /// OTTL conditions for logs with inferred contexts.
    pub log_conditions: Option<Vec<Yaml>>,
    /// Metrics are not audit records.
    pub metrics: Option<Yaml>,
    /// Metrics are not audit records.
    pub metric_conditions: Option<Yaml>,
}

/// `filter.traces` (OTTL).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConditions {
    /// Conditions on spans: a span is dropped when any is true.
    #[serde(default)]
    pub span: Vec<String>,
    /// Conditions on span events: an event is dropped when any is true.
    #[serde(default)]
    pub spanevent: Vec<String>,
}

/// A group of OTTL conditions (`trace_conditions` / `log_conditions` entries).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionGroup {
    /// The context; inferred from path prefixes when absent.
    pub context: Option<String>,
    /// The conditions.
    pub conditions: Vec<String>,
    /// Overrides the section's `error_mode`.
    pub error_mode: Option<String>,
}

/// `transform:` (transformprocessor).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// What a failing statement does: `propagate` (the default), `ignore`
    /// or `silent`.
    pub error_mode: Option<String>,
    /// Statements for spans and span events: strings (context inferred
    /// from prefixes) or groups.
    #[serde(default)]
    pub trace_statements: Vec<Yaml>,
    /// Statements for log records.
    #[serde(default)]
    pub log_statements: Vec<Yaml>,
    /// Metrics are not audit records.
    pub metric_statements: Option<Yaml>,
    /// Profiles are not audit records.
    pub profile_statements: Option<Yaml>,
}

/// A group of OTTL statements.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementGroup {
    /// The context; inferred from path prefixes when absent.
    pub context: Option<String>,
    /// Conditions, any of which must hold for the statements to run.
    #[serde(default)]
    pub conditions: Vec<String>,
    /// The statements, in order.
    pub statements: Vec<String>,
    /// Overrides the section's `error_mode`.
    pub error_mode: Option<String>,
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
    /// OTTL conditions on log records: one is dropped when any is true.
    pub log_record: Option<Vec<String>>,
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
