//! The filterprocessor's legacy `include` / `exclude` match configuration,
//! for spans and logs, with the Collector's semantics:
//!
//! - properties of one match block are ANDed;
//! - `services`, `span_names`, `span_kinds`, `bodies`, `severity_texts` match
//!   if any listed pattern matches; `attributes`/`record_attributes` and
//!   `resources`/`resource_attributes` match only if every listed attribute
//!   matches; `libraries` match if any listed library matches;
//! - `regexp` is Go/RE2 `MatchString`: an unanchored search;
//! - `strict` attribute values compare typed (`"1"` is not `1`);
//! - a record is kept when it matches `include` (if given) and does not match
//!   `exclude` (if given).
//!
//! OTTL conditions (`traces.span`, `logs.log_record`, ...) drop a record
//! when any holds, as the filterprocessor's OTTL form does.
//!
//! The matcher is shared with the `attributes:` section's own
//! `include`/`exclude`, which applies to both signals: a block with a
//! property of the other signal (`services` for a log record, `log_bodies`
//! for a span) does not match that record.

use crate::pattern::Pattern;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::ottl::record::Item;
use crate::ottl::{Check, Context, ErrorMode, View};
pub use audit_format::values::scalar_text;

/// Patterns that match a string if any of them does.
#[derive(Debug)]
pub enum Patterns {
    /// Exact equality with one of the strings.
    Strict(Vec<String>),
    /// An unanchored regular expression search, one of which must hit.
    Regexp(Vec<Pattern>),
}

impl Patterns {
    /// Whether `s` matches any pattern.
    pub fn matches(&self, s: &str) -> bool {
        match self {
            Patterns::Strict(list) => list.iter().any(|p| p == s),
            Patterns::Regexp(list) => list.iter().any(|r| r.is_match(s)),
        }
    }
}

/// How one listed attribute must match.
#[derive(Debug)]
pub enum ValueMatch {
    /// The key must be present; any value.
    Exists,
    /// The value must equal this one, type included.
    Equals(AnyValue),
    /// The value, as text (strings, booleans, integers and doubles only),
    /// must contain a match of this expression.
    Regexp(Pattern),
}

/// One entry of `attributes` / `resources`.
#[derive(Debug)]
pub struct AttributeMatch {
    /// The attribute key.
    pub key: String,
    /// The condition on its value.
    pub value: ValueMatch,
}

/// One entry of `libraries`.
#[derive(Debug)]
pub struct LibraryMatch {
    /// Scope name patterns.
    pub name: Patterns,
    /// Scope version patterns; `None` matches any version.
    pub version: Option<Patterns>,
}

/// A compiled match block: every property that is set must match.
#[derive(Debug, Default)]
pub struct Matcher {
    /// `services`: resource attribute `service.name`.
    pub services: Option<Patterns>,
    /// `span_names`.
    pub span_names: Option<Patterns>,
    /// `span_kinds`, as `SPAN_KIND_SERVER` etc.
    pub span_kinds: Option<Patterns>,
    /// `libraries`: any entry matching the scope.
    pub libraries: Vec<LibraryMatch>,
    /// `resources` / `resource_attributes`: all must match.
    pub resources: Vec<AttributeMatch>,
    /// `attributes` / `record_attributes`: all must match.
    pub attributes: Vec<AttributeMatch>,
    /// `bodies` / `log_bodies`: the log body as text.
    pub bodies: Option<Patterns>,
    /// `severity_texts` / `log_severity_texts`.
    pub severity_texts: Option<Patterns>,
    /// `severity_number`: `(min, match_undefined)`.
    pub severity_number: Option<(i32, bool)>,
}

/// The Collector's value for `services` when a resource has no `service.name`.
const NIL_SERVICE_NAME: &str = "<nil-service-name>";

impl Matcher {
    /// Whether a span matches.
    pub fn matches_span(&self, resource: Option<&Resource>, scope: Option<&InstrumentationScope>, span: &Span) -> bool {
        // A block that asks about log bodies or severities says nothing
        // about spans: it does not match them.
        if self.bodies.is_some() || self.severity_texts.is_some() || self.severity_number.is_some() {
            return false;
        }
        if let Some(services) = &self.services
            && !services.matches(&service_name(resource))
        {
            return false;
        }
        if let Some(names) = &self.span_names
            && !names.matches(&span.name)
        {
            return false;
        }
        if let Some(kinds) = &self.span_kinds
            && !kinds.matches(span_kind_name(span.kind))
        {
            return false;
        }
        self.matches_common(resource, scope, &span.attributes)
    }

    /// Whether a log record matches.
    pub fn matches_log(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        log: &LogRecord,
    ) -> bool {
        // Likewise a block about services, span names or kinds does not
        // match log records.
        if self.services.is_some() || self.span_names.is_some() || self.span_kinds.is_some() {
            return false;
        }
        if let Some(bodies) = &self.bodies {
            match log.body.as_ref().and_then(scalar_text) {
                Some(text) if bodies.matches(&text) => {}
                _ => return false,
            }
        }
        if let Some(texts) = &self.severity_texts
            && !texts.matches(&log.severity_text)
        {
            return false;
        }
        if let Some((min, match_undefined)) = self.severity_number {
            let matched = if log.severity_number == 0 { match_undefined } else { log.severity_number >= min };
            if !matched {
                return false;
            }
        }
        self.matches_common(resource, scope, &log.attributes)
    }

    fn matches_common(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        attributes: &[KeyValue],
    ) -> bool {
        if !self.libraries.is_empty() {
            let (name, version) = scope.map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
            let any = self
                .libraries
                .iter()
                .any(|lib| lib.name.matches(name) && lib.version.as_ref().is_none_or(|v| v.matches(version)));
            if !any {
                return false;
            }
        }
        let resource_attributes = resource.map_or(&[][..], |r| &r.attributes[..]);
        all_match(&self.resources, resource_attributes) && all_match(&self.attributes, attributes)
    }
}

/// Include/exclude for one signal, with the rule indexes their hits count under.
#[derive(Debug, Default)]
pub struct IncludeExclude {
    /// Keep only what matches (with its rule index).
    pub include: Option<(Matcher, usize)>,
    /// Drop what matches (with its rule index).
    pub exclude: Option<(Matcher, usize)>,
}

impl IncludeExclude {
    /// Whether a record passes, given a function that tells whether it
    /// matches a block. Counts a hit on each block that matched it.
    fn passes(&self, hits: &mut [u64], matches: impl Fn(&Matcher) -> bool) -> bool {
        if let Some((include, rule)) = &self.include {
            if !matches(include) {
                return false;
            }
            hits[*rule] += 1;
        }
        if let Some((exclude, rule)) = &self.exclude
            && matches(exclude)
        {
            hits[*rule] += 1;
            return false;
        }
        true
    }

    /// Whether a span passes (kept), counting rule hits.
    pub fn passes_span(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        span: &Span,
        hits: &mut [u64],
    ) -> bool {
        self.passes(hits, |m| m.matches_span(resource, scope, span))
    }

    /// Whether a log record passes (kept), counting rule hits.
    pub fn passes_log(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        log: &LogRecord,
        hits: &mut [u64],
    ) -> bool {
        self.passes(hits, |m| m.matches_log(resource, scope, log))
    }

    /// Whether neither block is configured.
    pub fn is_empty(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }
}

/// One OTTL condition of the `filter:` section: a record is dropped when
/// it holds.
#[derive(Debug)]
pub struct OttlCondition {
    /// The compiled condition.
    pub check: Check,
    /// Its context: a `resource` or `scope` condition drops every record of
    /// the resource or scope, a `spanevent` condition drops span events.
    pub context: Context,
    /// Its rule index (hits count the records it dropped).
    pub rule: usize,
    /// What an evaluation error does.
    pub error_mode: ErrorMode,
    /// Its policy key path, for errors.
    pub id: String,
}

/// The OTTL conditions of one signal (the filterprocessor's `traces.span`,
/// `traces.spanevent`, `logs.log_record`, `trace_conditions`,
/// `log_conditions`): any true condition drops the record.
#[derive(Debug, Default)]
pub struct OttlConditions {
    /// The conditions, in policy order.
    pub conditions: Vec<OttlCondition>,
    /// The rule counting evaluation errors that `ignore`/`silent` turned
    /// into false.
    pub error_rule: Option<usize>,
}

impl OttlConditions {
    /// Whether any record-level condition (every context but `spanevent`)
    /// drops the item `item` of `resource` and `scope`.
    pub fn drops(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        item: Item,
        hits: &mut [u64],
    ) -> Result<bool, String> {
        for c in &self.conditions {
            let item = match c.context {
                Context::Resource | Context::Scope => Item::None,
                Context::Span | Context::Log => item,
                Context::SpanEvent => continue,
            };
            match c.check.eval(&View { resource, scope, item, cache: &[] }) {
                Ok(true) => {
                    hits[c.rule] += 1;
                    return Ok(true);
                }
                Ok(false) => {}
                Err(e) => self.failed(c, &e, hits)?,
            }
        }
        Ok(false)
    }

    /// Removes the span events a `spanevent` condition drops.
    pub fn drop_events(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        span: &mut Span,
        hits: &mut [u64],
    ) -> Result<(), String> {
        if !self.conditions.iter().any(|c| c.context == Context::SpanEvent) || span.events.is_empty() {
            return Ok(());
        }
        let mut dropped = vec![false; span.events.len()];
        for (i, drop) in dropped.iter_mut().enumerate() {
            for c in self.conditions.iter().filter(|c| c.context == Context::SpanEvent) {
                match c.check.eval(&View { resource, scope, item: Item::SpanEvent(span, i), cache: &[] }) {
                    Ok(true) => {
                        hits[c.rule] += 1;
                        *drop = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => self.failed(c, &e, hits)?,
                }
            }
        }
        let mut i = 0;
        span.events.retain(|_| {
            i += 1;
            !dropped[i - 1]
        });
        Ok(())
    }

    fn failed(&self, c: &OttlCondition, e: &crate::ottl::EvalError, hits: &mut [u64]) -> Result<(), String> {
        c.error_mode.on_error(self.error_rule, hits, || format!("{} `{}` failed: {e}", c.id, c.check.text))
    }
}

/// The `filter:` section.
#[derive(Debug, Default)]
pub struct Filter {
    /// `filter.spans`.
    pub spans: IncludeExclude,
    /// `filter.logs`.
    pub logs: IncludeExclude,
    /// OTTL conditions on traces.
    pub trace_conditions: OttlConditions,
    /// OTTL conditions on logs.
    pub log_conditions: OttlConditions,
}

impl Filter {
    /// Whether a span is kept (its events dropped by `spanevent`
    /// conditions are removed); an error when a condition failed under
    /// `error_mode: propagate`.
    pub fn keep_span(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        span: &mut Span,
        hits: &mut [u64],
    ) -> Result<bool, String> {
        if !self.spans.passes_span(resource, scope, span, hits)
            || self.trace_conditions.drops(resource, scope, Item::Span(span), hits)?
        {
            return Ok(false);
        }
        self.trace_conditions.drop_events(resource, scope, span, hits)?;
        Ok(true)
    }

    /// Whether a log record is kept.
    pub fn keep_log(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        log: &LogRecord,
        hits: &mut [u64],
    ) -> Result<bool, String> {
        Ok(self.logs.passes_log(resource, scope, log, hits)
            && !self.log_conditions.drops(resource, scope, Item::Log(log), hits)?)
    }
}

fn all_match(matches: &[AttributeMatch], attributes: &[KeyValue]) -> bool {
    matches.iter().all(|m| {
        // pdata's Get: the first occurrence of a key.
        let Some(kv) = attributes.iter().find(|kv| kv.key == m.key) else {
            return false;
        };
        match &m.value {
            ValueMatch::Exists => true,
            ValueMatch::Equals(expected) => kv.value.as_ref().is_some_and(|v| typed_equal(v, expected)),
            ValueMatch::Regexp(re) => kv.value.as_ref().and_then(scalar_text).is_some_and(|text| re.is_match(&text)),
        }
    })
}

/// Typed equality: the same kind of value and the same contents (doubles by
/// `==`, so `NaN` never matches).
fn typed_equal(a: &AnyValue, b: &AnyValue) -> bool {
    a.value == b.value
}

fn service_name(resource: Option<&Resource>) -> std::borrow::Cow<'_, str> {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .and_then(scalar_text)
        .unwrap_or(std::borrow::Cow::Borrowed(NIL_SERVICE_NAME))
}

/// The span kind names `span_kinds` matches against.
pub const SPAN_KINDS: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];

fn span_kind_name(kind: i32) -> &'static str {
    usize::try_from(kind).ok().and_then(|k| SPAN_KINDS.get(k)).copied().unwrap_or("SPAN_KIND_UNSPECIFIED")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), key_strindex: 0 }
    }

    fn span(name: &str, attributes: Vec<KeyValue>) -> Span {
        Span { name: name.into(), kind: 2, attributes, ..Span::default() }
    }

    fn resource(service: Option<&str>) -> Resource {
        let attributes = service.map(|s| kv("service.name", Value::StringValue(s.into()))).into_iter().collect();
        Resource { attributes, ..Resource::default() }
    }

    fn keeps(policy: &str, resource: &Resource, scope: &InstrumentationScope, span: &Span) -> bool {
        let policy = Policy::parse(policy, &[]).unwrap();
        let mut hits = vec![0; policy.rules.len()];
        policy.filter.keep_span(Some(resource), Some(scope), &mut span.clone(), &mut hits).unwrap()
    }

    #[test]
    fn regexp_is_an_unanchored_search_and_strict_is_typed() {
        let res = resource(Some("identity-api"));
        let scope = InstrumentationScope::default();
        let regexp = "filter:\n  spans:\n    include:\n      match_type: regexp\n      attributes: [{key: audit.action, value: role}]\n";
        assert!(keeps(
            regexp,
            &res,
            &scope,
            &span("s", vec![kv("audit.action", Value::StringValue("user_role_update".into()))])
        ));
        assert!(!keeps(regexp, &res, &scope, &span("s", vec![kv("audit.other", Value::StringValue("role".into()))])));
        // Non-string values are matched as text.
        let numeric = "filter:\n  spans:\n    include:\n      match_type: regexp\n      attributes: [{key: code, value: '^40[13]$'}]\n";
        assert!(keeps(numeric, &res, &scope, &span("s", vec![kv("code", Value::IntValue(403))])));
        let strict =
            "filter:\n  spans:\n    include:\n      match_type: strict\n      attributes: [{key: code, value: 403}]\n";
        assert!(keeps(strict, &res, &scope, &span("s", vec![kv("code", Value::IntValue(403))])));
        assert!(!keeps(strict, &res, &scope, &span("s", vec![kv("code", Value::StringValue("403".into()))])));
    }

    #[test]
    fn attributes_are_all_of_and_lists_are_any_of() {
        let res = resource(Some("identity-api"));
        let scope = InstrumentationScope { name: "app.audit".into(), version: "2.0".into(), ..Default::default() };
        let both =
            "filter:\n  spans:\n    include:\n      match_type: strict\n      attributes: [{key: a}, {key: b}]\n";
        let a = kv("a", Value::BoolValue(true));
        let b = kv("b", Value::BoolValue(true));
        assert!(keeps(both, &res, &scope, &span("s", vec![a.clone(), b.clone()])));
        assert!(!keeps(both, &res, &scope, &span("s", vec![a.clone()])));
        let names = "filter:\n  spans:\n    include:\n      match_type: strict\n      span_names: [x, s]\n      services: [other, identity-api]\n";
        assert!(keeps(names, &res, &scope, &span("s", vec![])));
        assert!(!keeps(names, &resource(Some("billing")), &scope, &span("s", vec![])));
        let libraries = "filter:\n  spans:\n    include:\n      match_type: strict\n      libraries: [{name: nope}, {name: app.audit, version: '2.0'}]\n";
        assert!(keeps(libraries, &res, &scope, &span("s", vec![])));
        let wrong_version = "filter:\n  spans:\n    include:\n      match_type: strict\n      libraries: [{name: app.audit, version: '1.0'}]\n";
        assert!(!keeps(wrong_version, &res, &scope, &span("s", vec![])));
        let kinds = "filter:\n  spans:\n    include:\n      match_type: strict\n      span_kinds: [SPAN_KIND_SERVER]\n";
        assert!(keeps(kinds, &res, &scope, &span("s", vec![])));
    }

    #[test]
    fn missing_service_name_is_the_collectors_placeholder() {
        let scope = InstrumentationScope::default();
        let policy =
            "filter:\n  spans:\n    include:\n      match_type: strict\n      services: ['<nil-service-name>']\n";
        assert!(keeps(policy, &resource(None), &scope, &span("s", vec![])));
        assert!(!keeps(policy, &resource(Some("svc")), &scope, &span("s", vec![])));
    }

    #[test]
    fn include_then_exclude_and_hits_are_counted() {
        let policy = Policy::parse(
            "filter:\n  spans:\n    include:\n      match_type: regexp\n      span_names: ['^audit\\.']\n    exclude:\n      match_type: strict\n      span_names: [audit.noise]\n",
            &[],
        )
        .unwrap();
        let mut hits = vec![0; 2];
        let res = resource(Some("x"));
        let keep = |name: &str, hits: &mut Vec<u64>| {
            policy.filter.keep_span(Some(&res), None, &mut span(name, vec![]), hits).unwrap()
        };
        assert!(keep("audit.login", &mut hits));
        assert!(!keep("audit.noise", &mut hits));
        assert!(!keep("GET /", &mut hits));
        assert_eq!(hits, vec![2, 1]);
    }

    #[test]
    fn log_severity_bodies_and_undefined() {
        let policy = Policy::parse(
            "filter:\n  logs:\n    include:\n      match_type: regexp\n      severity_number: {min: WARN, match_undefined: false}\n      bodies: [denied]\n",
            &[],
        )
        .unwrap();
        let log = |severity: i32, body: &str| LogRecord {
            severity_number: severity,
            body: Some(AnyValue { value: Some(Value::StringValue(body.into())) }),
            ..LogRecord::default()
        };
        let mut hits = vec![0; 1];
        assert!(policy.filter.keep_log(None, None, &log(17, "access denied"), &mut hits).unwrap());
        assert!(!policy.filter.keep_log(None, None, &log(9, "access denied"), &mut hits).unwrap());
        assert!(!policy.filter.keep_log(None, None, &log(0, "access denied"), &mut hits).unwrap());
        assert!(!policy.filter.keep_log(None, None, &log(17, "ok"), &mut hits).unwrap());
    }
}
