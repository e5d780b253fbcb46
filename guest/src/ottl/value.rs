//! The values OTTL expressions evaluate to, borrowed from the record where
//! they can be (no allocation to read an attribute), and OTTL's comparison
//! rules.

use std::borrow::Cow;
use std::cmp::Ordering;

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value};

use super::grammar::CompareOp;

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Absent (a missing attribute, `nil`).
    Nil,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer (ints, enums, timestamps).
    Int(i64),
    /// A double.
    Float(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// Bytes (ids, bytes attributes).
    Bytes(Cow<'a, [u8]>),
    /// A map (`pcommon.Map`): key/value pairs in order.
    Map(Cow<'a, [KeyValue]>),
    /// A list (`pcommon.Slice`).
    List(Cow<'a, [AnyValue]>),
}

impl<'a> Value<'a> {
    /// The value of an attribute (borrowed).
    pub fn of(any: &'a AnyValue) -> Value<'a> {
        match &any.value {
            // String-table references belong to profiles; validity checks
            // refuse them in traces and logs.
            None | Some(any_value::Value::StringValueStrindex(_)) => Value::Nil,
            Some(any_value::Value::StringValue(s)) => Value::Str(Cow::Borrowed(s)),
            Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
            Some(any_value::Value::IntValue(i)) => Value::Int(*i),
            Some(any_value::Value::DoubleValue(d)) => Value::Float(*d),
            Some(any_value::Value::BytesValue(b)) => Value::Bytes(Cow::Borrowed(b)),
            Some(any_value::Value::ArrayValue(a)) => Value::List(Cow::Borrowed(&a.values)),
            Some(any_value::Value::KvlistValue(m)) => Value::Map(Cow::Borrowed(&m.values)),
        }
    }

    /// Of an optional attribute value: `Nil` when absent.
    pub fn of_opt(any: Option<&'a AnyValue>) -> Value<'a> {
        any.map_or(Value::Nil, Value::of)
    }

    /// The same value, borrowing from this one.
    pub fn reborrow(&self) -> Value<'_> {
        match self {
            Value::Nil => Value::Nil,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::Float(x) => Value::Float(*x),
            Value::Str(s) => Value::Str(Cow::Borrowed(s)),
            Value::Bytes(b) => Value::Bytes(Cow::Borrowed(b)),
            Value::Map(m) => Value::Map(Cow::Borrowed(m)),
            Value::List(l) => Value::List(Cow::Borrowed(l)),
        }
    }

    /// The value as an OTLP `AnyValue` (`Nil` is an empty value).
    pub fn into_any(self) -> AnyValue {
        let value = match self {
            Value::Nil => None,
            Value::Bool(b) => Some(any_value::Value::BoolValue(b)),
            Value::Int(i) => Some(any_value::Value::IntValue(i)),
            Value::Float(x) => Some(any_value::Value::DoubleValue(x)),
            Value::Str(s) => Some(any_value::Value::StringValue(s.into_owned())),
            Value::Bytes(b) => Some(any_value::Value::BytesValue(b.into_owned())),
            Value::Map(m) => Some(any_value::Value::KvlistValue(KeyValueList { values: m.into_owned() })),
            Value::List(l) => Some(any_value::Value::ArrayValue(ArrayValue { values: l.into_owned() })),
        };
        AnyValue { value }
    }

    /// The type's name as errors say it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "double",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Map(_) => "map",
            Value::List(_) => "list",
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as text the way pcommon's `AsString` renders it: strings
    /// as they are, numbers and booleans as Go prints them, bytes as
    /// base64, maps and lists as JSON; `nil` as "".
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            Value::Str(s) => Cow::Borrowed(s),
            Value::Nil => Cow::Borrowed(""),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::Float(x) => Cow::Owned(go_float(*x)),
            Value::Bytes(b) => {
                use base64::Engine;
                Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b))
            }
            Value::Map(_) | Value::List(_) => {
                let mut out = String::new();
                json(self, &mut out);
                Cow::Owned(out)
            }
        }
    }
}

/// A double as Go's `strconv.FormatFloat(x, 'f', -1, 64)` writes it
/// (pcommon's `AsString`): the shortest digits, no exponent.
pub fn go_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    format!("{x}")
}

fn json(v: &Value, out: &mut String) {
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(_) | Value::Int(_) => out.push_str(&v.to_text()),
        Value::Float(x) if x.is_finite() => out.push_str(&go_float(*x)),
        Value::Float(_) => out.push_str("null"),
        Value::Str(s) => json_string(s, out),
        Value::Bytes(_) => json_string(&v.to_text(), out),
        Value::Map(m) => {
            out.push('{');
            for (i, kv) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(&kv.key, out);
                out.push(':');
                json(&Value::of_opt(kv.value.as_ref()), out);
            }
            out.push('}');
        }
        Value::List(l) => {
            out.push('[');
            for (i, item) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json(&Value::of(item), out);
            }
            out.push(']');
        }
    }
}

fn json_string(s: &str, out: &mut String) {
    let mut bytes = Vec::with_capacity(s.len() + 2);
    crate::jcs::write_str(&mut bytes, s);
    out.push_str(&String::from_utf8(bytes).expect("JSON text of a str is UTF-8"));
}

/// OTTL's comparison rules (the Collector's `pkg/ottl/compare.go`): `nil`
/// equals only `nil`; ints and doubles compare numerically with each
/// other; strings and bytes order lexically; booleans, maps and lists
/// support only `==` and `!=`; values of other differing types are not
/// equal and never ordered (`<` etc. are false).
pub fn compare(left: &Value, op: CompareOp, right: &Value) -> bool {
    use Value::*;
    let ordering: Option<Ordering> = match (left, right) {
        (Nil, Nil) => Some(Ordering::Equal),
        (Int(a), Int(b)) => Some(a.cmp(b)),
        (Int(a), Float(b)) => (*a as f64).partial_cmp(b),
        (Float(a), Int(b)) => a.partial_cmp(&(*b as f64)),
        (Float(a), Float(b)) => a.partial_cmp(b),
        (Str(a), Str(b)) => Some(a.as_ref().cmp(b.as_ref())),
        (Bytes(a), Bytes(b)) => Some(a.as_ref().cmp(b.as_ref())),
        (Bool(a), Bool(b)) => return equality_only(a == b, op),
        (Map(a), Map(b)) => return equality_only(maps_equal(a, b), op),
        (List(a), List(b)) => return equality_only(a == b, op),
        _ => return op == CompareOp::Ne,
    };
    match ordering {
        // NaN: unordered, so only != holds.
        None => op == CompareOp::Ne,
        Some(o) => match op {
            CompareOp::Eq => o == Ordering::Equal,
            CompareOp::Ne => o != Ordering::Equal,
            CompareOp::Lt => o == Ordering::Less,
            CompareOp::Le => o != Ordering::Greater,
            CompareOp::Gt => o == Ordering::Greater,
            CompareOp::Ge => o != Ordering::Less,
        },
    }
}

fn equality_only(equal: bool, op: CompareOp) -> bool {
    match op {
        CompareOp::Eq => equal,
        CompareOp::Ne => !equal,
        _ => false,
    }
}

/// Maps are equal with the same keys and values, in any order.
fn maps_equal(a: &[KeyValue], b: &[KeyValue]) -> bool {
    a.len() == b.len() && a.iter().all(|kv| b.iter().any(|other| other.key == kv.key && other.value == kv.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use CompareOp::*;

    fn s(x: &str) -> Value<'_> {
        Value::Str(Cow::Borrowed(x))
    }

    #[test]
    fn comparison_rules() {
        assert!(compare(&Value::Nil, Eq, &Value::Nil));
        assert!(!compare(&Value::Nil, Eq, &s("")));
        assert!(compare(&Value::Nil, Ne, &s("")));
        assert!(!compare(&Value::Nil, Lt, &Value::Int(1)));
        assert!(compare(&Value::Int(1), Eq, &Value::Float(1.0)));
        assert!(compare(&Value::Int(1), Lt, &Value::Float(1.5)));
        assert!(compare(&s("abc"), Lt, &s("abd")));
        assert!(!compare(&s("1"), Eq, &Value::Int(1)));
        assert!(compare(&s("1"), Ne, &Value::Int(1)));
        assert!(!compare(&s("1"), Lt, &Value::Int(2)));
        assert!(compare(&Value::Bool(true), Eq, &Value::Bool(true)));
        assert!(!compare(&Value::Bool(false), Lt, &Value::Bool(true)));
        assert!(!compare(&Value::Float(f64::NAN), Eq, &Value::Float(f64::NAN)));
        assert!(compare(&Value::Bytes(Cow::Borrowed(&[1, 2])), Gt, &Value::Bytes(Cow::Borrowed(&[1]))));
    }

    #[test]
    fn text_rendering() {
        assert_eq!(Value::Float(1.5).to_text(), "1.5");
        assert_eq!(Value::Float(3.0).to_text(), "3");
        assert_eq!(Value::Int(-3).to_text(), "-3");
        let list =
            vec![AnyValue { value: Some(any_value::Value::StringValue("a\"".into())) }, AnyValue { value: None }];
        assert_eq!(Value::List(Cow::Owned(list)).to_text(), r#"["a\"",null]"#);
    }
}
