//! OTTL converters (upper-case functions returning values) an audit policy
//! needs, with the Collector's `ottlfuncs` semantics. `Now()` is left out
//! on purpose: the component has no clock (records carry the host's
//! received-at time instead; compare `time_unix_nano` with literals).

use std::borrow::Cow;

use crate::pattern::Pattern;
use sha2::Digest;

use super::args::{Args, HashFn};
use super::expr::{Compiler, Expr};
use super::grammar;
use super::record::Item;
use super::value::Value;
use super::{CompileError, EvalError};

/// The converters this build knows, for messages.
pub const NAMES: &[&str] = &[
    "Concat",
    "ContainsValue",
    "Double",
    "HasPrefix",
    "HasSuffix",
    "Hex",
    "Index",
    "Int",
    "IsBool",
    "IsDouble",
    "IsInt",
    "IsList",
    "IsMap",
    "IsMatch",
    "IsRootSpan",
    "IsString",
    "Keys",
    "Len",
    "MD5",
    "ParseJSON",
    "SHA1",
    "SHA256",
    "SHA512",
    "Split",
    "String",
    "Substring",
    "ToLowerCase",
    "ToUpperCase",
    "Trim",
    "Values",
];

/// Whether `name` is a converter this build knows.
pub fn is_converter(name: &str) -> bool {
    NAMES.contains(&name)
}

/// A type test (`IsString`, ...).
#[derive(Debug, Clone, Copy)]
pub enum TypeTest {
    /// `IsString`
    String,
    /// `IsInt`
    Int,
    /// `IsDouble`
    Double,
    /// `IsBool`
    Bool,
    /// `IsMap`
    Map,
    /// `IsList`
    List,
}

/// A compiled converter call.
#[derive(Debug)]
pub enum Converter {
    /// `IsMatch(target, pattern)`
    IsMatch(Expr, Pattern),
    /// `IsString(value)` and the other type tests.
    Is(TypeTest, Expr),
    /// `IsRootSpan()`
    IsRootSpan,
    /// `Len(target)`
    Len(Expr),
    /// `Concat(vals, delimiter)`
    Concat(Vec<Expr>, String),
    /// `ToLowerCase(target)` / `ToUpperCase(target)` (`true` = upper).
    Case(Expr, bool),
    /// `Substring(target, start, length)`
    Substring(Expr, Expr, Expr),
    /// `SHA256(value)` and the other digests.
    Hash(HashFn, Expr),
    /// `Split(target, delimiter)`
    Split(Expr, String),
    /// `Int(value)`
    Int(Expr),
    /// `Double(value)`
    Double(Expr),
    /// `String(value)`
    String(Expr),
    /// `Hex(value)`
    Hex(Expr),
    /// `HasPrefix(target, prefix)` / `HasSuffix(target, suffix)` (`true` = suffix).
    Affix(Expr, Expr, bool),
    /// `Trim(target, Optional[replacement])`
    Trim(Expr, String),
    /// `ParseJSON(target)`
    ParseJson(Expr),
    /// `Keys(target)`
    Keys(Expr),
    /// `Values(target)`
    Values(Expr),
    /// `ContainsValue(target, item)`
    ContainsValue(Expr, Expr),
    /// `Index(target, value)`
    Index(Expr, Expr),
}

impl Converter {
    /// Compiles a converter call; unknown names and wrong arguments are
    /// errors naming the column.
    pub fn compile(c: &Compiler, call: &grammar::Call) -> Result<Converter, CompileError> {
        let name = call.name.as_str();
        let one = |param: &str| -> Result<Expr, CompileError> { Args::bind(call, &[param], 1)?.expr(c, 0) };
        Ok(match name {
            "IsMatch" => {
                let a = Args::bind(call, &["target", "pattern"], 2)?;
                let pattern = a.string_literal(1)?;
                let re = Pattern::new(&pattern)
                    .map_err(|e| a.error(1, format!("invalid regular expression {pattern:?}: {e}")))?;
                Converter::IsMatch(a.expr(c, 0)?, re)
            }
            "IsString" => Converter::Is(TypeTest::String, one("value")?),
            "IsInt" => Converter::Is(TypeTest::Int, one("value")?),
            "IsDouble" => Converter::Is(TypeTest::Double, one("value")?),
            "IsBool" => Converter::Is(TypeTest::Bool, one("value")?),
            "IsMap" => Converter::Is(TypeTest::Map, one("value")?),
            "IsList" => Converter::Is(TypeTest::List, one("value")?),
            "IsRootSpan" => {
                Args::bind(call, &[], 0)?;
                if !matches!(c.context, super::Context::Span | super::Context::SpanEvent) {
                    return Err(CompileError::at(call.column, "IsRootSpan() is only available for spans"));
                }
                Converter::IsRootSpan
            }
            "Len" => Converter::Len(one("target")?),
            "Concat" => {
                let a = Args::bind(call, &["vals", "delimiter"], 2)?;
                let grammar::Value::List(items) = &a.get(0).expect("bound").value else {
                    return Err(a.error(0, "Concat takes a list of values, e.g. Concat([name, \"x\"], \"-\")".into()));
                };
                let items = items.iter().map(|i| c.expr(i)).collect::<Result<_, _>>()?;
                Converter::Concat(items, a.string_literal(1)?)
            }
            "ToLowerCase" | "ToUpperCase" => Converter::Case(one("target")?, name == "ToUpperCase"),
            "Substring" => {
                let a = Args::bind(call, &["target", "start", "length"], 3)?;
                Converter::Substring(a.expr(c, 0)?, a.expr(c, 1)?, a.expr(c, 2)?)
            }
            "SHA256" | "SHA1" | "MD5" | "SHA512" => {
                Converter::Hash(HashFn::parse(name).expect("a digest name"), one("value")?)
            }
            "Split" => {
                let a = Args::bind(call, &["target", "delimiter"], 2)?;
                Converter::Split(a.expr(c, 0)?, a.string_literal(1)?)
            }
            "Int" => Converter::Int(one("value")?),
            "Double" => Converter::Double(one("value")?),
            "String" => Converter::String(one("value")?),
            "Hex" => Converter::Hex(one("value")?),
            "HasPrefix" | "HasSuffix" => {
                let params: &[&str] = if name == "HasPrefix" { &["target", "prefix"] } else { &["target", "suffix"] };
                let a = Args::bind(call, params, 2)?;
                Converter::Affix(a.expr(c, 0)?, a.expr(c, 1)?, name == "HasSuffix")
            }
            "Trim" => {
                let a = Args::bind(call, &["target", "replacement"], 1)?;
                let cut = if a.get(1).is_some() { a.string_literal(1)? } else { " ".to_owned() };
                Converter::Trim(a.expr(c, 0)?, cut)
            }
            "ParseJSON" => Converter::ParseJson(one("target")?),
            "Keys" => Converter::Keys(one("target")?),
            "Values" => Converter::Values(one("target")?),
            "ContainsValue" => {
                let a = Args::bind(call, &["target", "item"], 2)?;
                Converter::ContainsValue(a.expr(c, 0)?, a.expr(c, 1)?)
            }
            "Index" => {
                let a = Args::bind(call, &["target", "value"], 2)?;
                Converter::Index(a.expr(c, 0)?, a.expr(c, 1)?)
            }
            "Now" => {
                return Err(CompileError::at(
                    call.column,
                    "Now() is not available: the audit component has no clock, so records stay reproducible; \
                     compare time_unix_nano with a literal, or use the received-at attribute the audit section adds",
                ));
            }
            _ if name.starts_with(|c: char| c.is_ascii_lowercase()) => {
                return Err(CompileError::at(
                    call.column,
                    format!("{name} is an editor; a value needs a converter (upper case)"),
                ));
            }
            _ => {
                return Err(CompileError::at(
                    call.column,
                    format!("undefined function {name:?}; known converters: {}", NAMES.join(", ")),
                ));
            }
        })
    }

    /// Whether the converter can return a boolean (to be a condition).
    pub fn may_return_bool(&self) -> bool {
        matches!(
            self,
            Converter::IsMatch(..)
                | Converter::Is(..)
                | Converter::IsRootSpan
                | Converter::Affix(..)
                | Converter::ContainsValue(..)
        )
    }

    /// Calls the converter for one record.
    pub fn eval<'a>(&'a self, v: &View<'a>) -> Result<Value<'a>, EvalError> {
        Ok(match self {
            Converter::IsMatch(target, re) => match target.eval(v)? {
                Value::Nil => Value::Bool(false),
                // Bytes as base64, as the Collector's IsMatch renders them.
                value => Value::Bool(re.is_match(&value.to_text())),
            },
            Converter::Is(test, e) => {
                let value = e.eval(v)?;
                Value::Bool(matches!(
                    (test, &value),
                    (TypeTest::String, Value::Str(_))
                        | (TypeTest::Int, Value::Int(_))
                        | (TypeTest::Double, Value::Float(_))
                        | (TypeTest::Bool, Value::Bool(_))
                        | (TypeTest::Map, Value::Map(_))
                        | (TypeTest::List, Value::List(_))
                ))
            }
            Converter::IsRootSpan => Value::Bool(match v.item {
                // An absent parent and an all-zero one are the same
                // (pdata's empty SpanID).
                Item::Span(s) | Item::SpanEvent(s, _) => s.parent_span_id.iter().all(|b| *b == 0),
                _ => false,
            }),
            Converter::Len(e) => Value::Int(match e.eval(v)? {
                // Go's len: bytes.
                Value::Str(s) => s.len() as i64,
                Value::Bytes(b) => b.len() as i64,
                Value::Map(m) => m.len() as i64,
                Value::List(l) => l.len() as i64,
                other => return Err(EvalError(format!("Len: unsupported type {}", other.type_name()))),
            }),
            Converter::Concat(items, delimiter) => {
                let mut out = String::new();
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(delimiter);
                    }
                    match item.eval(v)? {
                        Value::Nil => out.push_str("<nil>"),
                        // Lists and maps are left out, as the Collector's Concat does.
                        Value::Map(_) | Value::List(_) => {}
                        value => out.push_str(&string_like(&value, "Concat")?),
                    }
                }
                Value::Str(Cow::Owned(out))
            }
            Converter::Case(e, upper) => {
                let value = e.eval(v)?;
                let s = string(&value, if *upper { "ToUpperCase" } else { "ToLowerCase" })?;
                Value::Str(Cow::Owned(if *upper { s.to_uppercase() } else { s.to_lowercase() }))
            }
            Converter::Substring(target, start, length) => {
                let value = target.eval(v)?;
                let s = string(&value, "Substring")?;
                let start = int(&start.eval(v)?, "Substring start")?;
                let length = int(&length.eval(v)?, "Substring length")?;
                if start < 0 {
                    return Err(EvalError(format!("Substring: invalid start {start}")));
                }
                if length <= 0 {
                    return Err(EvalError(format!("Substring: invalid length {length}")));
                }
                // Checked: usize is 32 bits in the component, 64 natively,
                // and both must give the same answer.
                let end =
                    usize::try_from(start).ok().zip(usize::try_from(length).ok()).and_then(|(a, b)| a.checked_add(b));
                if end.is_none_or(|end| end > s.len()) {
                    // The i64s as written: `as usize` would differ between
                    // the builds.
                    return Err(EvalError(format!(
                        "Substring: start {start} + length {length} is beyond the string's length {}",
                        s.len()
                    )));
                }
                let (start, length) = (start as usize, length as usize);
                match s.get(start..start + length) {
                    Some(sub) => Value::Str(Cow::Owned(sub.to_owned())),
                    None => return Err(EvalError("Substring: the range splits a UTF-8 character".into())),
                }
            }
            Converter::Hash(f, e) => match e.eval(v)? {
                Value::Nil => Value::Nil,
                value => Value::Str(Cow::Owned(f.digest(string(&value, f.name())?))),
            },
            Converter::Split(e, delimiter) => {
                let value = e.eval(v)?;
                let s = string(&value, "Split")?;
                // Go's strings.Split: "" splits into [""], an empty
                // delimiter into characters.
                let parts: Vec<&str> = if delimiter.is_empty() {
                    s.split("").filter(|p| !p.is_empty()).collect()
                } else {
                    s.split(delimiter.as_str()).collect()
                };
                let values =
                    parts.into_iter().map(|p| Value::Str(Cow::Owned(p.to_owned())).into_any()).collect::<Vec<_>>();
                Value::List(Cow::Owned(values))
            }
            Converter::Int(e) => match e.eval(v)? {
                Value::Int(i) => Value::Int(i),
                Value::Float(x) => Value::Int(x as i64),
                Value::Bool(b) => Value::Int(b.into()),
                Value::Str(s) => s.parse::<i64>().map_or(Value::Nil, Value::Int),
                _ => Value::Nil,
            },
            Converter::Double(e) => match e.eval(v)? {
                Value::Int(i) => Value::Float(i as f64),
                Value::Float(x) => Value::Float(x),
                Value::Bool(b) => Value::Float(if b { 1.0 } else { 0.0 }),
                Value::Str(s) => s.parse::<f64>().map_or(Value::Nil, Value::Float),
                _ => Value::Nil,
            },
            Converter::String(e) => match e.eval(v)? {
                Value::Nil => Value::Nil,
                Value::Str(s) => Value::Str(s),
                Value::Bytes(b) => Value::Str(Cow::Owned(hex::encode(b))),
                value => Value::Str(Cow::Owned(value.to_text().into_owned())),
            },
            Converter::Hex(e) => Value::Str(Cow::Owned(match e.eval(v)? {
                Value::Str(s) => hex::encode(s.as_bytes()),
                Value::Bytes(b) => hex::encode(b),
                Value::Int(i) => hex::encode(i.to_be_bytes()),
                Value::Float(x) => hex::encode(x.to_bits().to_be_bytes()),
                Value::Bool(b) => hex::encode([u8::from(b)]),
                // A missing value is nil, not an error (the Collector's
                // ByteSliceLikeGetter passes nil through).
                Value::Nil => return Ok(Value::Nil),
                other => return Err(EvalError(format!("Hex: unsupported type {}", other.type_name()))),
            })),
            Converter::Affix(target, affix, suffix) => {
                let (t, a) = (target.eval(v)?, affix.eval(v)?);
                let name = if *suffix { "HasSuffix" } else { "HasPrefix" };
                let (t, a) = (string(&t, name)?, string(&a, name)?);
                Value::Bool(if *suffix { t.ends_with(a) } else { t.starts_with(a) })
            }
            Converter::ParseJson(e) => {
                let value = e.eval(v)?;
                let text = string(&value, "ParseJSON")?;
                let parsed: serde_json::Value =
                    serde_json::from_str(text).map_err(|err| EvalError(format!("ParseJSON: {err}")))?;
                match parsed {
                    serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                        super::expr::owned(json_to_any(parsed))
                    }
                    _ => return Err(EvalError("ParseJSON: the JSON is neither an object nor an array".into())),
                }
            }
            Converter::Keys(e) => match e.eval(v)? {
                Value::Map(m) => Value::List(Cow::Owned(
                    m.iter().map(|kv| Value::Str(Cow::Owned(kv.key.clone())).into_any()).collect(),
                )),
                other => return Err(EvalError(format!("Keys: expected a map but got {}", other.type_name()))),
            },
            Converter::Values(e) => match e.eval(v)? {
                Value::Map(m) => {
                    Value::List(Cow::Owned(m.iter().map(|kv| kv.value.clone().unwrap_or_default()).collect()))
                }
                other => return Err(EvalError(format!("Values: expected a map but got {}", other.type_name()))),
            },
            Converter::ContainsValue(target, item) => {
                let item = item.eval(v)?;
                match target.eval(v)? {
                    Value::List(l) => Value::Bool(l.iter().any(|x| compare(&Value::of(x), CompareOp::Eq, &item))),
                    other => {
                        return Err(EvalError(format!("ContainsValue: expected a list but got {}", other.type_name())));
                    }
                }
            }
            Converter::Index(target, needle) => {
                let needle = needle.eval(v)?;
                Value::Int(match target.eval(v)? {
                    Value::Str(s) => match &needle {
                        Value::Str(n) => s.find(n.as_ref()).map_or(-1, |i| i as i64),
                        other => {
                            return Err(EvalError(format!(
                                "Index: a string is searched for a string, not {}",
                                other.type_name()
                            )));
                        }
                    },
                    Value::List(l) => {
                        l.iter().position(|x| compare(&Value::of(x), CompareOp::Eq, &needle)).map_or(-1, |i| i as i64)
                    }
                    other => {
                        return Err(EvalError(format!(
                            "Index: expected a string or a list but got {}",
                            other.type_name()
                        )));
                    }
                })
            }
            Converter::Trim(e, cut) => {
                let value = e.eval(v)?;
                let s = string(&value, "Trim")?;
                let cut: Vec<char> = cut.chars().collect();
                Value::Str(Cow::Owned(s.trim_matches(&cut[..]).to_owned()))
            }
        })
    }
}

use super::grammar::CompareOp;
use super::record::View;
use super::value::compare;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value};

/// A parsed JSON value as OTLP, the way pdata's `FromRaw` takes what
/// jsoniter decodes: objects become maps, arrays lists, numbers doubles,
/// `null` an empty value.
fn json_to_any(v: serde_json::Value) -> AnyValue {
    use serde_json::Value as J;
    let value = match v {
        J::Null => None,
        J::Bool(b) => Some(any_value::Value::BoolValue(b)),
        J::Number(n) => Some(any_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN))),
        J::String(s) => Some(any_value::Value::StringValue(s)),
        J::Array(items) => {
            Some(any_value::Value::ArrayValue(ArrayValue { values: items.into_iter().map(json_to_any).collect() }))
        }
        J::Object(map) => Some(any_value::Value::KvlistValue(KeyValueList {
            values: map
                .into_iter()
                .map(|(key, v)| KeyValue { key, value: Some(json_to_any(v)), key_strindex: 0 })
                .collect(),
        })),
    };
    AnyValue { value }
}

/// A `StringGetter` argument: the value must be a string.
pub fn string<'v>(value: &'v Value, function: &str) -> Result<&'v str, EvalError> {
    match value {
        Value::Str(s) => Ok(s),
        other => Err(EvalError(format!("{function}: expected a string but got {}", other.type_name()))),
    }
}

/// An `IntGetter` argument.
pub fn int(value: &Value, what: &str) -> Result<i64, EvalError> {
    match value {
        Value::Int(i) => Ok(*i),
        other => Err(EvalError(format!("{what}: expected an int but got {}", other.type_name()))),
    }
}

/// A `StringLikeGetter` argument: strings as they are, other values as
/// text (bytes as hex, maps and lists as JSON).
pub fn string_like<'v>(value: &'v Value, function: &str) -> Result<Cow<'v, str>, EvalError> {
    match value {
        Value::Nil => Err(EvalError(format!("{function}: expected a string-like value but got nil"))),
        Value::Bytes(b) => Ok(Cow::Owned(hex::encode(b))),
        other => Ok(other.to_text()),
    }
}

impl HashFn {
    /// The lowercase hex digest of `text`.
    pub fn digest(self, text: &str) -> String {
        match self {
            HashFn::Sha256 => hex::encode(sha2::Sha256::digest(text)),
            HashFn::Sha512 => hex::encode(sha2::Sha512::digest(text)),
            HashFn::Sha1 => hex::encode(sha1::Sha1::digest(text)),
            HashFn::Md5 => hex::encode(md5::Md5::digest(text)),
        }
    }
}
