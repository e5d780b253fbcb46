//! The redactionprocessor's key and value rules, applied to each kept
//! record's attributes (span attributes and span event attributes, log
//! record attributes and a string log body) and, once per resource, to the
//! resource's attributes ([`Redaction::redact_resource`]).
//!
//! Per attribute, in the Collector's order: an `ignored_keys` key is left
//! alone; a key that is not allowed (unless `allow_all_keys`) is removed; a
//! string value matching an `allowed_values` pattern is kept; a key matching
//! `blocked_key_patterns` has its whole value masked; otherwise every match of
//! each `blocked_values` pattern in a string value is masked. Masking writes
//! `****`, or the hex digest of the masked text when `hash_function` is set.
//! `hmac-sha256` (keyed by a host secret named in `hash_key_id`) is this
//! project's addition: unkeyed digests of short values such as card numbers
//! are reversible by brute force. `summary` adds the Collector's
//! `redaction.*` attributes.

use crate::pattern::Pattern;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use sha2::Digest;

/// The text that replaces masked values when no hash function is set.
pub const MASK: &str = "****";

/// How masked text is replaced.
#[derive(Debug, Default)]
pub enum Masking {
    /// With `****`.
    #[default]
    Mask,
    /// With the MD5 hex digest of the text.
    Md5,
    /// With the SHA-1 hex digest of the text.
    Sha1,
    /// With the SHA3-256 hex digest of the text.
    Sha3,
    /// With HMAC-SHA256 of the text under a host-supplied key.
    HmacSha256(Vec<u8>),
}

impl Masking {
    fn replace(&self, text: &str) -> String {
        match self {
            Masking::Mask => MASK.to_owned(),
            Masking::Md5 => hex::encode(md5::Md5::digest(text)),
            Masking::Sha1 => hex::encode(sha1::Sha1::digest(text)),
            Masking::Sha3 => hex::encode(sha3::Sha3_256::digest(text)),
            Masking::HmacSha256(key) => hex::encode(audit_format::hash::hmac_sha256(key, text.as_bytes())),
        }
    }
}

/// How much of what was redacted is written back as `redaction.*` attributes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// Nothing.
    #[default]
    Silent,
    /// Counts.
    Info,
    /// Counts and key lists.
    Debug,
}

/// The `redaction:` section; inactive when the policy has none.
#[derive(Debug, Default)]
pub struct Redaction {
    /// Whether the section is present.
    pub active: bool,
    /// `allowed_keys` with the rule index that counts removals; `None`
    /// for `allow_all_keys`.
    pub allowed_keys: Option<(Vec<String>, usize)>,
    /// `ignored_keys`.
    pub ignored_keys: Vec<String>,
    /// `blocked_key_patterns` with rule indexes.
    pub blocked_key_patterns: Vec<(Pattern, usize)>,
    /// `blocked_values` with rule indexes.
    pub blocked_values: Vec<(Pattern, usize)>,
    /// All of `blocked_values` as one regex, when there are several: a
    /// value it does not match (nearly all) is passed after one search
    /// instead of one per pattern.
    pub any_blocked: Option<Pattern>,
    /// `allowed_values`.
    pub allowed_values: Vec<Pattern>,
    /// `hash_function`.
    pub masking: Masking,
    /// `summary`.
    pub summary: Summary,
}

/// What one attribute list's pass redacted.
#[derive(Default)]
struct Outcome {
    removed: Vec<String>,
    masked: Vec<String>,
    allowed: Vec<String>,
    ignored: usize,
}

impl Redaction {
    /// Redacts a span's and its events' attributes; returns how many values
    /// were masked or removed.
    pub fn redact_span(&self, span: &mut Span, hits: &mut [u64]) -> u64 {
        if !self.active {
            return 0;
        }
        let mut count = self.redact_attributes(&mut span.attributes, hits);
        for event in &mut span.events {
            count += self.redact_attributes(&mut event.attributes, hits);
        }
        count
    }

    /// Redacts a log record's attributes and string body; returns how many
    /// values were masked or removed.
    pub fn redact_log(&self, log: &mut LogRecord, hits: &mut [u64]) -> u64 {
        if !self.active {
            return 0;
        }
        let mut count = self.redact_attributes(&mut log.attributes, hits);
        if let Some(AnyValue { value: Some(Value::StringValue(body)) }) = &mut log.body
            && !self.allowed_values.iter().any(|re| re.is_match(body))
            && let Some(masked) = self.mask_values(body, hits)
        {
            *body = masked;
            count += 1;
        }
        count
    }

    /// Redacts a resource's attributes; returns how many values were
    /// masked or removed.
    ///
    /// This is what the Collector's redactionprocessor does: its
    /// `processResourceSpan` and `processResourceLog` pass
    /// `Resource().Attributes()` to the same `processAttrs` as span and log
    /// record attributes, so the same lists apply (`ignored_keys`,
    /// `allowed_keys`/`allow_all_keys`, `allowed_values`,
    /// `blocked_key_patterns`, `blocked_values`, `hash_function`) and the
    /// `redaction.*` summary is written onto the resource itself. Hence
    /// with `allow_all_keys: false`, resource keys such as `service.name`
    /// are removed unless `allowed_keys` or `ignored_keys` lists them: the
    /// list fails closed for resources as for records, and an audit policy
    /// has to name the resource keys its records need.
    ///
    /// The caller runs this once per resource, before the resource's
    /// record member is written; every record of the resource then carries
    /// the redacted resource and its summary.
    ///
    /// One deliberate difference, the same as for records: the Collector
    /// adds its counts to a `redaction.*.count` already on the map (and
    /// merges key lists into an existing `redaction.*.keys`), so a value a
    /// client sent under that key would be summed into the evidence of what
    /// was redacted. Here the summary replaces any such value.
    pub fn redact_resource(&self, resource: &mut Resource, hits: &mut [u64]) -> u64 {
        if !self.active {
            return 0;
        }
        self.redact_attributes(&mut resource.attributes, hits)
    }

    /// Redacts an instrumentation scope's attributes, as
    /// [`Redaction::redact_resource`] does a resource's (the Collector's
    /// processor passes scope attributes to the same `processAttrs`); run
    /// once per scope, before its member is written.
    pub fn redact_scope(&self, scope: &mut InstrumentationScope, hits: &mut [u64]) -> u64 {
        if !self.active {
            return 0;
        }
        self.redact_attributes(&mut scope.attributes, hits)
    }

    fn redact_attributes(&self, attributes: &mut Vec<KeyValue>, hits: &mut [u64]) -> u64 {
        // Without key lists or allowed values only a blocked value changes
        // anything (or writes a summary): a list with none, nearly every
        // list, is told in one pass of searches.
        let values_only = self.allowed_keys.is_none()
            && self.ignored_keys.is_empty()
            && self.blocked_key_patterns.is_empty()
            && self.allowed_values.is_empty();
        if values_only && !attributes.iter().any(|kv| self.any_value_blocked(text_of(kv))) {
            return 0;
        }
        let mut outcome = Outcome::default();
        attributes.retain_mut(|kv| {
            if self.ignored_keys.contains(&kv.key) {
                outcome.ignored += 1;
                return true;
            }
            // The summary attributes are written after this pass, so no
            // client key gets past `allowed_keys` by its name.
            let allowed = |(keys, _): &(Vec<String>, usize)| keys.contains(&kv.key);
            if !self.allowed_keys.as_ref().is_none_or(allowed) {
                outcome.removed.push(kv.key.clone());
                return false;
            }
            let text = text_of(kv);
            if self.allowed_values.iter().any(|re| re.is_match(text)) {
                outcome.allowed.push(kv.key.clone());
                return true;
            }
            if let Some((_, rule)) = self.blocked_key_patterns.iter().find(|(re, _)| re.is_match(&kv.key)) {
                hits[*rule] += 1;
                let masked = self.masking.replace(text);
                kv.value = Some(AnyValue { value: Some(Value::StringValue(masked)) });
                outcome.masked.push(kv.key.clone());
                return true;
            }
            if let Some(masked) = self.mask_values(text, hits) {
                kv.value = Some(AnyValue { value: Some(Value::StringValue(masked)) });
                outcome.masked.push(kv.key.clone());
            }
            true
        });
        if let Some((_, rule)) = self.allowed_keys
            && !outcome.removed.is_empty()
        {
            hits[rule] += 1;
        }
        let count = (outcome.removed.len() + outcome.masked.len()) as u64;
        self.write_summary(attributes, outcome);
        count
    }

    /// Whether a `blocked_values` pattern matches `text` (what
    /// [`Redaction::mask_values`] would mask).
    fn any_value_blocked(&self, text: &str) -> bool {
        match &self.any_blocked {
            Some(any) => any.is_match(text),
            None => self.blocked_values.iter().any(|(re, _)| re.is_match(text)),
        }
    }

    /// Masks every match of every `blocked_values` pattern; `None` when
    /// nothing matched.
    fn mask_values(&self, text: &str, hits: &mut [u64]) -> Option<String> {
        if self.any_blocked.as_ref().is_some_and(|any| !any.is_match(text)) {
            return None;
        }
        let mut current = std::borrow::Cow::Borrowed(text);
        for (re, rule) in &self.blocked_values {
            if re.is_match(&current) {
                hits[*rule] += 1;
                let replaced =
                    re.replace_all(&current, |caps: &regex::Captures| self.masking.replace(&caps[0])).into_owned();
                current = std::borrow::Cow::Owned(replaced);
            }
        }
        match current {
            std::borrow::Cow::Owned(s) if s != text => Some(s),
            _ => None,
        }
    }

    fn write_summary(&self, attributes: &mut Vec<KeyValue>, outcome: Outcome) {
        if self.summary == Summary::Silent {
            return;
        }
        let lists = [
            ("redaction.redacted", outcome.removed),
            ("redaction.masked", outcome.masked),
            ("redaction.allowed", outcome.allowed),
        ];
        for (prefix, mut keys) in lists {
            if keys.is_empty() {
                continue;
            }
            if self.summary == Summary::Debug {
                keys.sort();
                put(attributes, &format!("{prefix}.keys"), Value::StringValue(keys.join(",")));
            }
            put(attributes, &format!("{prefix}.count"), Value::IntValue(keys.len() as i64));
        }
        if outcome.ignored > 0 {
            put(attributes, "redaction.ignored.count", Value::IntValue(outcome.ignored as i64));
        }
    }
}

/// The text redaction reads from an attribute: its string value, or
/// nothing.
fn text_of(kv: &KeyValue) -> &str {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.as_str(),
        _ => "",
    }
}

fn put(attributes: &mut Vec<KeyValue>, key: &str, value: Value) {
    crate::kv::upsert(attributes, key, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue { key: k.into(), value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }), key_strindex: 0 }
    }

    fn value(attrs: &[KeyValue], k: &str) -> Option<String> {
        attrs.iter().find(|a| a.key == k).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        })
    }

    #[test]
    fn with_only_blocked_values_a_list_is_changed_exactly_when_one_matches() {
        let card = r"\b4[0-9]{12}(?:[0-9]{3})?\b";
        for (patterns, any) in [(vec![card], false), (vec![card, "x*"], true)] {
            let redaction = Redaction {
                active: true,
                blocked_values: patterns.iter().enumerate().map(|(i, p)| (Pattern::new(p).unwrap(), i)).collect(),
                any_blocked: any.then(|| Pattern::new(&patterns.join("|")).unwrap()),
                summary: Summary::Info,
                ..Redaction::default()
            };
            let int = KeyValue {
                key: "n".into(),
                value: Some(AnyValue { value: Some(Value::IntValue(7)) }),
                key_strindex: 0,
            };
            let clean = vec![kv("a", "short"), kv("b", "a longer value without digits"), int];
            let mut attrs = clean.clone();
            let mut hits = vec![0; patterns.len()];
            let changed = redaction.redact_attributes(&mut attrs, &mut hits);
            // "x*" matches every text, an int's empty one too.
            assert_eq!((changed > 0, attrs != clean, hits.iter().sum::<u64>() > 0), (any, any, any), "{patterns:?}");
            let mut attrs = vec![kv("a", "short"), kv("card", "paid with 4111111111111111")];
            assert!(redaction.redact_attributes(&mut attrs, &mut hits) >= 1);
            if !any {
                assert_eq!(value(&attrs, "card").as_deref(), Some("paid with ****"));
            }
            assert!(value(&attrs, "redaction.masked.count").is_some());
        }
    }

    #[test]
    fn masks_blocked_values_and_removes_unlisted_keys() {
        let redaction = Redaction {
            active: true,
            allowed_keys: Some((vec!["card".into(), "note".into()], 0)),
            blocked_values: vec![(Pattern::new(r"4[0-9]{12}(?:[0-9]{3})?").unwrap(), 1)],
            summary: Summary::Debug,
            ..Redaction::default()
        };
        let mut hits = vec![0; 2];
        let mut attrs = vec![kv("card", "paid with 4111111111111111 ok"), kv("note", "fine"), kv("secret", "x")];
        assert_eq!(redaction.redact_attributes(&mut attrs, &mut hits), 2);
        assert_eq!(value(&attrs, "card").as_deref(), Some("paid with **** ok"));
        assert_eq!(value(&attrs, "note").as_deref(), Some("fine"));
        assert_eq!(value(&attrs, "secret"), None);
        assert_eq!(value(&attrs, "redaction.redacted.keys").as_deref(), Some("secret"));
        assert_eq!(value(&attrs, "redaction.masked.count").as_deref(), Some("1"));
        assert_eq!(hits, vec![1, 1]);
    }

    fn resource(attributes: Vec<KeyValue>) -> Resource {
        Resource { attributes, ..Resource::default() }
    }

    fn int(k: &str, i: i64) -> KeyValue {
        KeyValue { key: k.into(), value: Some(AnyValue { value: Some(Value::IntValue(i)) }), key_strindex: 0 }
    }

    /// Every list applies to resource attributes, and the summary lands on
    /// the resource, as in the Collector's `processAttrs`.
    #[test]
    fn resource_attributes_get_the_record_rules_and_the_summary() {
        let redaction = Redaction {
            active: true,
            allowed_keys: Some((
                vec!["service.name".into(), "host.name".into(), "deploy.token".into(), "owner".into()],
                0,
            )),
            ignored_keys: vec!["k8s.pod.uid".into()],
            blocked_key_patterns: vec![(Pattern::new(r"token").unwrap(), 1)],
            blocked_values: vec![(Pattern::new(r"4[0-9]{12}(?:[0-9]{3})?").unwrap(), 2)],
            allowed_values: vec![Pattern::new(r"@example\.com$").unwrap()],
            summary: Summary::Debug,
            ..Redaction::default()
        };
        let mut hits = vec![0; 3];
        let mut r = resource(vec![
            kv("service.name", "payments"),
            kv("host.name", "card-4111111111111111-box"),
            kv("deploy.token", "tok_live_abc"),
            kv("k8s.pod.uid", "4111111111111111"),
            kv("cloud.account.id", "123456"),
            kv("owner", "4111111111111111@example.com"),
        ]);
        assert_eq!(redaction.redact_resource(&mut r, &mut hits), 3, "one removed, two masked");
        assert_eq!(
            r.attributes,
            vec![
                kv("service.name", "payments"),
                kv("host.name", "card-****-box"),
                kv("deploy.token", "****"),
                kv("k8s.pod.uid", "4111111111111111"),
                kv("owner", "4111111111111111@example.com"),
                kv("redaction.redacted.keys", "cloud.account.id"),
                int("redaction.redacted.count", 1),
                kv("redaction.masked.keys", "deploy.token,host.name"),
                int("redaction.masked.count", 2),
                kv("redaction.allowed.keys", "owner"),
                int("redaction.allowed.count", 1),
                int("redaction.ignored.count", 1),
            ],
            "ignored and allowed values kept whole, the unlisted key removed, the summary on the resource"
        );
        assert_eq!(hits, vec![1, 1, 1], "allowed_keys, the key pattern and the value pattern each hit once");

        // `info` writes only the counts. A count a client sent under a
        // summary key is replaced, where the Collector would add to it (41).
        let info = Redaction { summary: Summary::Info, allowed_keys: None, ..redaction };
        let mut hits = vec![0; 3];
        let mut r = resource(vec![
            kv("service.name", "4111111111111111"),
            int("redaction.masked.count", 40),
            kv("secret", "x"),
        ]);
        assert_eq!(info.redact_resource(&mut r, &mut hits), 1);
        assert_eq!(
            r.attributes,
            vec![kv("service.name", "****"), int("redaction.masked.count", 1), kv("secret", "x")],
            "allow_all_keys keeps every key; the real count replaces the client's"
        );
        assert_eq!(hits, vec![0, 0, 1]);
    }

    #[test]
    fn resource_attributes_with_all_keys_allowed_or_no_section() {
        let redaction = Redaction {
            active: true,
            blocked_values: vec![(Pattern::new(r"[0-9]{6}").unwrap(), 0)],
            ..Redaction::default()
        };
        let mut hits = vec![0];
        let mut r = resource(vec![kv("service.name", "svc"), kv("cloud.account.id", "acct 123456")]);
        assert_eq!(redaction.redact_resource(&mut r, &mut hits), 1);
        assert_eq!(r.attributes, vec![kv("service.name", "svc"), kv("cloud.account.id", "acct ****")]);
        assert_eq!(hits, vec![1], "silent: no summary attribute, the hit still counted");

        let before = resource(vec![kv("cloud.account.id", "acct 123456")]);
        let mut r = before.clone();
        assert_eq!(Redaction::default().redact_resource(&mut r, &mut hits), 0);
        assert_eq!(r, before, "no redaction section: untouched");
        assert_eq!(hits, vec![1]);
    }

    #[test]
    fn hmac_masking_is_keyed() {
        let a = Masking::HmacSha256(b"k1".to_vec()).replace("4111111111111111");
        let b = Masking::HmacSha256(b"k2".to_vec()).replace("4111111111111111");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(Masking::Sha3.replace(""), "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a");
    }
}
