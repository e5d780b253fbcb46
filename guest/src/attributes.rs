//! The attributesprocessor's `actions`, applied in order to each kept span's
//! or log record's attributes, with its optional `include` / `exclude`.
//!
//! Semantics follow the Collector's `attraction` package: `insert` only adds
//! a missing key, `update` only changes a present one, `upsert` does either;
//! a missing `from_attribute` source does nothing; `delete` and `hash` take a
//! `key` and/or a key `pattern`; `hash` is SHA-256 over the value's bytes
//! (strings as UTF-8, booleans as one byte, integers and doubles as 8 bytes
//! little-endian), as lowercase hex; `extract` writes one string attribute per
//! named group of the first match; `convert` leaves a value it cannot
//! convert unchanged. `from_context` reads who sent the batch (the host's
//! `sender`): `client.address`, `auth.principal` (the token's
//! authenticator) and `auth.subject` (the client certificate's subject); a
//! value the sender lacks does nothing, like a missing `from_attribute`.

use crate::pattern::Pattern;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use sha2::{Digest, Sha256};

use audit_format::Sender;

use crate::filter::{IncludeExclude, scalar_text};

/// Where an inserted or updated value comes from.
#[derive(Debug)]
pub enum Source {
    /// A literal from the policy.
    Value(AnyValue),
    /// Another attribute of the same record.
    FromAttribute(String),
    /// What the host knows about the batch's sender (`from_context`).
    FromContext(ContextKey),
}

/// The `from_context` keys: parts of the batch's [`Sender`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextKey {
    /// `client.address`: the client's `ip:port`.
    ClientAddress,
    /// `auth.principal`: the authenticator that accepted its token.
    AuthPrincipal,
    /// `auth.subject`: its client certificate's subject.
    AuthSubject,
}

impl ContextKey {
    /// The key as written in a policy, if it is one.
    pub fn parse(text: &str) -> Option<ContextKey> {
        match text {
            "client.address" => Some(ContextKey::ClientAddress),
            "auth.principal" => Some(ContextKey::AuthPrincipal),
            "auth.subject" => Some(ContextKey::AuthSubject),
            _ => None,
        }
    }

    fn of(self, sender: &Sender) -> &str {
        match self {
            ContextKey::ClientAddress => &sender.address,
            ContextKey::AuthPrincipal => &sender.principal,
            ContextKey::AuthSubject => &sender.certificate_subject,
        }
    }
}

/// The target type of `convert`.
#[derive(Debug, Clone, Copy)]
pub enum ConvertTo {
    /// `string`
    String,
    /// `int`
    Int,
    /// `double`
    Double,
}

/// One compiled action; each variant's doc names what its fields mean.
#[derive(Debug)]
#[allow(missing_docs)]
pub enum Action {
    /// `insert`: set `key` only if absent.
    Insert { key: String, source: Source },
    /// `update`: set `key` only if present.
    Update { key: String, source: Source },
    /// `upsert`: set `key` either way.
    Upsert { key: String, source: Source },
    /// `delete`: remove `key` and every key matching `pattern`.
    Delete { key: Option<String>, pattern: Option<Pattern> },
    /// `hash`: replace values of `key` / keys matching `pattern` by SHA-256 hex.
    Hash { key: Option<String>, pattern: Option<Pattern> },
    /// `extract`: named groups of `pattern` matched in the string `key`.
    Extract { key: String, pattern: Pattern },
    /// `convert`: change the type of `key`.
    Convert { key: String, to: ConvertTo },
}

/// The `attributes:` section.
#[derive(Debug, Default)]
pub struct Attributes {
    /// Which records the actions apply to.
    pub scope: IncludeExclude,
    /// The actions with their rule indexes.
    pub actions: Vec<(Action, usize)>,
}

impl Attributes {
    /// Applies the actions to a span if it is in scope.
    pub fn apply_span(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        span: &mut Span,
        sender: Option<&Sender>,
        hits: &mut [u64],
    ) {
        if self.actions.is_empty() || !self.scope.passes_span(resource, scope, span, hits) {
            return;
        }
        self.apply(&mut span.attributes, sender, hits);
    }

    /// Applies the actions to a log record if it is in scope.
    pub fn apply_log(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        log: &mut LogRecord,
        sender: Option<&Sender>,
        hits: &mut [u64],
    ) {
        if self.actions.is_empty() || !self.scope.passes_log(resource, scope, log, hits) {
            return;
        }
        self.apply(&mut log.attributes, sender, hits);
    }

    /// Applies every action in order; a rule hits when its action changed
    /// the attributes.
    pub fn apply(&self, attributes: &mut Vec<KeyValue>, sender: Option<&Sender>, hits: &mut [u64]) {
        for (action, rule) in &self.actions {
            if action.apply(attributes, sender) {
                hits[*rule] += 1;
            }
        }
    }
}

impl Action {
    /// Applies this action (`sender`: for `from_context`); returns whether
    /// anything changed.
    fn apply(&self, attrs: &mut Vec<KeyValue>, sender: Option<&Sender>) -> bool {
        match self {
            Action::Insert { key, source } => {
                if position(attrs, key).is_some() {
                    return false;
                }
                let Some(value) = resolve(attrs, source, sender) else { return false };
                attrs.push(KeyValue { key: key.clone(), value: Some(value), key_strindex: 0 });
                true
            }
            Action::Update { key, source } => {
                let Some(at) = position(attrs, key) else { return false };
                let Some(value) = resolve(attrs, source, sender) else { return false };
                attrs[at].value = Some(value);
                true
            }
            Action::Upsert { key, source } => {
                let Some(value) = resolve(attrs, source, sender) else { return false };
                match position(attrs, key) {
                    Some(at) => attrs[at].value = Some(value),
                    None => attrs.push(KeyValue { key: key.clone(), value: Some(value), key_strindex: 0 }),
                }
                true
            }
            Action::Delete { key, pattern } => {
                let before = attrs.len();
                attrs.retain(|kv| !selects(key, pattern, &kv.key));
                attrs.len() != before
            }
            Action::Hash { key, pattern } => {
                let mut changed = false;
                for kv in attrs.iter_mut().filter(|kv| selects(key, pattern, &kv.key)) {
                    let hashed = hash_value(kv.value.as_ref());
                    kv.value = Some(AnyValue { value: Some(Value::StringValue(hashed)) });
                    changed = true;
                }
                changed
            }
            Action::Extract { key, pattern } => {
                let Some(at) = position(attrs, key) else { return false };
                let Some(Value::StringValue(text)) = attrs[at].value.as_ref().and_then(|v| v.value.as_ref()) else {
                    return false;
                };
                let Some(captures) = pattern.captures(text) else { return false };
                let extracted: Vec<(String, String)> = pattern
                    .capture_names()
                    .flatten()
                    .map(|name| (name.to_owned(), captures.name(name).map_or("", |m| m.as_str()).to_owned()))
                    .collect();
                for (name, value) in extracted {
                    let value = Some(AnyValue { value: Some(Value::StringValue(value)) });
                    match position(attrs, &name) {
                        Some(i) => attrs[i].value = value,
                        None => attrs.push(KeyValue { key: name, value, key_strindex: 0 }),
                    }
                }
                true
            }
            Action::Convert { key, to } => {
                let Some(at) = position(attrs, key) else { return false };
                let Some(current) = attrs[at].value.as_ref() else { return false };
                match convert(current, *to) {
                    Some(converted) if converted != *current => {
                        attrs[at].value = Some(converted);
                        true
                    }
                    _ => false,
                }
            }
        }
    }
}

fn position(attrs: &[KeyValue], key: &str) -> Option<usize> {
    attrs.iter().position(|kv| kv.key == key)
}

fn resolve(attrs: &[KeyValue], source: &Source, sender: Option<&Sender>) -> Option<AnyValue> {
    match source {
        Source::Value(v) => Some(v.clone()),
        Source::FromContext(key) => {
            let text = key.of(sender?);
            (!text.is_empty()).then(|| AnyValue { value: Some(Value::StringValue(text.to_owned())) })
        }
        Source::FromAttribute(from) => {
            attrs.iter().find(|kv| &kv.key == from).map(|kv| kv.value.clone().unwrap_or_default())
        }
    }
}

fn selects(key: &Option<String>, pattern: &Option<Pattern>, candidate: &str) -> bool {
    key.as_deref() == Some(candidate) || pattern.as_ref().is_some_and(|p| p.is_match(candidate))
}

/// The Collector's `hash` action: SHA-256 hex of the value's bytes; values
/// without a byte form (arrays, maps, bytes, empty) become "".
pub fn hash_value(value: Option<&AnyValue>) -> String {
    let bytes: Vec<u8> = match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.as_bytes().to_vec(),
        Some(Value::BoolValue(b)) => vec![u8::from(*b)],
        Some(Value::IntValue(i)) => i.to_le_bytes().to_vec(),
        Some(Value::DoubleValue(d)) => d.to_bits().to_le_bytes().to_vec(),
        _ => return String::new(),
    };
    hex::encode(Sha256::digest(&bytes))
}

fn convert(value: &AnyValue, to: ConvertTo) -> Option<AnyValue> {
    let v = value.value.as_ref()?;
    let converted = match (to, v) {
        (ConvertTo::String, _) => Value::StringValue(scalar_text(value)?.into_owned()),
        (ConvertTo::Int, Value::IntValue(i)) => Value::IntValue(*i),
        (ConvertTo::Int, Value::DoubleValue(d)) => Value::IntValue(*d as i64),
        (ConvertTo::Int, Value::BoolValue(b)) => Value::IntValue(i64::from(*b)),
        (ConvertTo::Int, Value::StringValue(s)) => Value::IntValue(s.parse().ok()?),
        (ConvertTo::Double, Value::DoubleValue(d)) => Value::DoubleValue(*d),
        (ConvertTo::Double, Value::IntValue(i)) => Value::DoubleValue(*i as f64),
        (ConvertTo::Double, Value::BoolValue(b)) => Value::DoubleValue(f64::from(u8::from(*b))),
        (ConvertTo::Double, Value::StringValue(s)) => Value::DoubleValue(s.parse().ok()?),
        _ => return None,
    };
    Some(AnyValue { value: Some(converted) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<AnyValue> {
        Some(AnyValue { value: Some(Value::StringValue(v.into())) })
    }

    #[test]
    fn hash_matches_collector_byte_forms() {
        // sha256("") / sha256([1]) / sha256(le64(1)).
        assert_eq!(hash_value(s("").as_ref()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(
            hash_value(Some(&AnyValue { value: Some(Value::BoolValue(true)) })),
            hex::encode(Sha256::digest([1u8]))
        );
        assert_eq!(
            hash_value(Some(&AnyValue { value: Some(Value::IntValue(1)) })),
            hex::encode(Sha256::digest(1i64.to_le_bytes()))
        );
        assert_eq!(hash_value(None), "");
    }

    #[test]
    fn extract_writes_named_groups() {
        let action = Action::Extract {
            key: "http.url".into(),
            pattern: Pattern::new(r"^https://(?P<host>[^/]+)/(?P<path>.*)$").unwrap(),
        };
        let mut attrs = vec![KeyValue { key: "http.url".into(), value: s("https://example.org/a/b"), key_strindex: 0 }];
        assert!(action.apply(&mut attrs, None));
        assert_eq!(attrs.len(), 3);
        assert_eq!(attrs[1].value, s("example.org"));
        assert_eq!(attrs[2].value, s("a/b"));
    }

    #[test]
    fn convert_leaves_unparsable_values() {
        let action = Action::Convert { key: "n".into(), to: ConvertTo::Int };
        let mut attrs = vec![KeyValue { key: "n".into(), value: s("twelve"), key_strindex: 0 }];
        assert!(!action.apply(&mut attrs, None));
        assert_eq!(attrs[0].value, s("twelve"));
        attrs[0].value = s("12");
        assert!(action.apply(&mut attrs, None));
        assert_eq!(attrs[0].value, Some(AnyValue { value: Some(Value::IntValue(12)) }));
    }

    #[test]
    fn from_context_reads_the_sender_and_does_nothing_without_it() {
        let action =
            Action::Upsert { key: "enduser.id".into(), source: Source::FromContext(ContextKey::AuthPrincipal) };
        let sender = Sender { principal: "bearertokenauth/writers".into(), ..Sender::default() };
        let mut attrs = Vec::new();
        assert!(!action.apply(&mut attrs, None), "no sender");
        assert!(!action.apply(&mut attrs, Some(&Sender::default())), "no principal");
        assert!(action.apply(&mut attrs, Some(&sender)));
        assert_eq!(attrs[0].value, s("bearertokenauth/writers"));
        assert_eq!(ContextKey::parse("client.address"), Some(ContextKey::ClientAddress));
        assert_eq!(ContextKey::parse("metadata.x-tenant"), None);
    }
}
