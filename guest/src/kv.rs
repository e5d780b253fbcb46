//! Edits of an attribute list that several stages make (enrichment, the
//! redaction summary): a leaf module, so the stages need not import each
//! other.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// An attribute.
pub fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), key_strindex: 0 }
}

/// Sets `key` to `value`, replacing every existing occurrence (the
/// redaction summary attributes are written this way).
pub fn upsert(attributes: &mut Vec<KeyValue>, key: &str, value: Value) {
    let mut found = false;
    attributes.retain_mut(|kv| {
        if kv.key != key {
            return true;
        }
        if found {
            return false;
        }
        found = true;
        kv.value = Some(AnyValue { value: Some(value.clone()) });
        true
    });
    if !found {
        attributes.push(attribute(key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_replaces_all_duplicates() {
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
            key_strindex: 0,
        };
        let mut attrs = vec![kv("a", "1"), kv("audit.pipeline", "spoofed"), kv("audit.pipeline", "again")];
        upsert(&mut attrs, "audit.pipeline", Value::StringValue("real".into()));
        assert_eq!(attrs, vec![kv("a", "1"), kv("audit.pipeline", "real")]);
        upsert(&mut attrs, "b", Value::StringValue("2".into()));
        assert_eq!(attrs.last(), Some(&kv("b", "2")));
    }
}
