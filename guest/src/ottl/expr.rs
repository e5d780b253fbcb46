//! Compiled OTTL expressions: paths, literals, converter calls, lists,
//! maps and math, checked once at configure time and evaluated per record
//! against a [`View`], borrowing from the record where they can.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

use super::context::{self, Context, Field};
use super::converters::Converter;
use super::grammar::{self, MathOp};
use super::record::{self, Root, Subject, View};
use super::value::{Value, compare};
use super::{CompileError, EvalError};

/// An expression.
#[derive(Debug)]
pub enum Expr {
    /// A literal (or enum) value.
    Lit(Value<'static>),
    /// A path.
    Path(Path),
    /// A converter call, with keys indexing its result.
    Call(Box<Converter>, Vec<Key>),
    /// A list literal.
    List(Vec<Expr>),
    /// A map literal.
    Map(Vec<(String, Expr)>),
    /// Math over two numbers.
    Math(Box<Expr>, MathOp, Box<Expr>),
}

/// A compiled path.
#[derive(Debug)]
pub struct Path {
    /// The field.
    pub field: Field,
    /// Keys after the field.
    pub keys: Vec<Key>,
    /// The path as written, for errors.
    pub text: String,
}

/// A key of a path or converter result.
#[derive(Debug)]
pub enum Key {
    /// `["k"]`
    Str(String),
    /// `[0]`
    Int(i64),
    /// `[expression]`, a string or int per record.
    Expr(Box<Expr>),
}

/// A key with its value for one record.
#[derive(Debug, Clone)]
pub enum KeyValueOf<'a> {
    /// A map key.
    Str(Cow<'a, str>),
    /// A list index.
    Int(i64),
}

/// A compiled condition.
#[derive(Debug)]
pub enum Condition {
    /// Any is true.
    Or(Vec<Condition>),
    /// All are true.
    And(Vec<Condition>),
    /// Negation.
    Not(Box<Condition>),
    /// A constant.
    Const(bool),
    /// A comparison.
    Compare(Expr, grammar::CompareOp, Expr),
    /// `value == nil` (`true`) or `value != nil` (`false`): the usual
    /// filter test for a missing attribute, without a comparison.
    IsNil(Expr, bool),
    /// A converter returning a boolean.
    Call(Expr),
}

/// Compiles expressions for one context.
pub struct Compiler {
    /// The context paths resolve in.
    pub context: Context,
}

impl Compiler {
    /// Compiles a value expression.
    pub fn expr(&self, v: &grammar::Value) -> Result<Expr, CompileError> {
        use grammar::Value as G;
        Ok(match v {
            G::Nil => Expr::Lit(Value::Nil),
            G::Bool(b) => Expr::Lit(Value::Bool(*b)),
            G::Int(i) => Expr::Lit(Value::Int(*i)),
            G::Float(x) => Expr::Lit(Value::Float(*x)),
            G::Str(s) => Expr::Lit(Value::Str(Cow::Owned(s.clone()))),
            G::Bytes(b) => Expr::Lit(Value::Bytes(Cow::Owned(b.clone()))),
            G::Enum(name, column) => match enum_value(name) {
                Some(i) => Expr::Lit(Value::Int(i)),
                None if super::converters::is_converter(name) => {
                    return Err(CompileError::at(
                        *column,
                        format!(
                            "{name} is a converter: call it, e.g. {name}(...); a bare name is only a function argument"
                        ),
                    ));
                }
                None => return Err(CompileError::at(*column, format!("unknown enum symbol {name}"))),
            },
            G::Path(p) => Expr::Path(self.path(p)?),
            G::Call(c) => {
                let keys = self.keys(&c.keys)?;
                Expr::Call(Box::new(Converter::compile(self, c)?), keys)
            }
            G::List(items) => Expr::List(items.iter().map(|i| self.expr(i)).collect::<Result<_, _>>()?),
            G::Map(entries) => Expr::Map(
                entries.iter().map(|(k, v)| Ok((k.clone(), self.expr(v)?))).collect::<Result<_, CompileError>>()?,
            ),
            G::Math(l, op, r, _) => Expr::Math(Box::new(self.expr(l)?), *op, Box::new(self.expr(r)?)),
        })
    }

    /// Compiles a path.
    pub fn path(&self, p: &grammar::Path) -> Result<Path, CompileError> {
        // Keys may only follow the last field (`attributes["a"]`), never a
        // middle one.
        let (last, init) = p.fields.split_last().expect("a path has a field");
        if let Some(f) = init.iter().find(|f| !f.keys.is_empty()) {
            return Err(CompileError::at(p.column, format!("field {:?} cannot take keys", f.name)));
        }
        let names: Vec<&str> = p.fields.iter().map(|f| f.name.as_str()).collect();
        let field = context::resolve(self.context, &names).map_err(|m| CompileError::at(p.column, m))?;
        if !last.keys.is_empty() && !field.indexable() {
            return Err(CompileError::at(
                p.column,
                format!("{} is not a map or list and cannot take keys", names.join(".")),
            ));
        }
        if field == context::Field::Span(context::SpanField::TraceState) && last.keys.len() > 1 {
            return Err(CompileError::at(p.column, "must provide exactly 1 key when accessing trace_state"));
        }
        let text = render_path(p);
        Ok(Path { field, keys: self.keys(&last.keys)?, text })
    }

    fn keys(&self, keys: &[grammar::Key]) -> Result<Vec<Key>, CompileError> {
        keys.iter()
            .map(|k| {
                Ok(match k {
                    grammar::Key::Str(s) => Key::Str(s.clone()),
                    grammar::Key::Int(i) => Key::Int(*i),
                    grammar::Key::Expr(e) => Key::Expr(Box::new(self.expr(e)?)),
                })
            })
            .collect()
    }

    /// Compiles a condition.
    pub fn condition(&self, c: &grammar::Condition) -> Result<Condition, CompileError> {
        use grammar::Condition as G;
        Ok(match c {
            G::Or(any) => Condition::Or(any.iter().map(|c| self.condition(c)).collect::<Result<_, _>>()?),
            G::And(all) => Condition::And(all.iter().map(|c| self.condition(c)).collect::<Result<_, _>>()?),
            G::Not(c) => Condition::Not(Box::new(self.condition(c)?)),
            G::Const(b) => Condition::Const(*b),
            G::Compare(l, op, r) => match (self.expr(l)?, op, self.expr(r)?) {
                // Only nil compares equal to nil (see `compare`).
                (value, grammar::CompareOp::Eq | grammar::CompareOp::Ne, Expr::Lit(Value::Nil))
                | (Expr::Lit(Value::Nil), grammar::CompareOp::Eq | grammar::CompareOp::Ne, value) => {
                    Condition::IsNil(value, *op == grammar::CompareOp::Eq)
                }
                (l, op, r) => Condition::Compare(l, *op, r),
            },
            G::Call(call) => {
                let keys = self.keys(&call.keys)?;
                let conv = Converter::compile(self, call)?;
                if keys.is_empty() && !conv.may_return_bool() {
                    return Err(CompileError::at(
                        call.column,
                        format!("{} does not return a boolean, so it cannot be a condition; compare it", call.name),
                    ));
                }
                Condition::Call(Expr::Call(Box::new(conv), keys))
            }
        })
    }

    /// A path an editor writes: it must be one of the context's own
    /// fields (or the cache).
    pub fn target(&self, v: &grammar::Value, column: usize) -> Result<Path, CompileError> {
        let grammar::Value::Path(p) = v else {
            return Err(CompileError::at(column, "the target must be a path, e.g. attributes[\"key\"]"));
        };
        let path = self.path(p)?;
        if !context::writable(self.context, path.field.owner()) {
            return Err(CompileError::at(
                p.column,
                format!(
                    "{} is read-only in the {} context: one {} is shared by many records and hashed into each; \
                     change it in a `context: {}` group",
                    path.text,
                    self.context.name(),
                    owner_name(path.field.owner()),
                    owner_name(path.field.owner()),
                ),
            ));
        }
        Ok(path)
    }
}

fn owner_name(o: context::Owner) -> &'static str {
    match o {
        context::Owner::Resource => "resource",
        context::Owner::Scope => "scope",
        context::Owner::Span => "span",
        context::Owner::Event => "spanevent",
        context::Owner::Log => "log",
        context::Owner::Cache => "cache",
    }
}

fn render_path(p: &grammar::Path) -> String {
    let mut out = String::new();
    for (i, f) in p.fields.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&f.name);
        for k in &f.keys {
            match k {
                grammar::Key::Str(s) => out.push_str(&format!("[{s:?}]")),
                grammar::Key::Int(i) => out.push_str(&format!("[{i}]")),
                grammar::Key::Expr(_) => out.push_str("[…]"),
            }
        }
    }
    out
}

/// OTTL's enums: span kinds, status codes and severity numbers.
pub fn enum_value(name: &str) -> Option<i64> {
    const SEVERITIES: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let v = match name {
        "SPAN_KIND_UNSPECIFIED" => 0,
        "SPAN_KIND_INTERNAL" => 1,
        "SPAN_KIND_SERVER" => 2,
        "SPAN_KIND_CLIENT" => 3,
        "SPAN_KIND_PRODUCER" => 4,
        "SPAN_KIND_CONSUMER" => 5,
        "STATUS_CODE_UNSET" => 0,
        "STATUS_CODE_OK" => 1,
        "STATUS_CODE_ERROR" => 2,
        "SEVERITY_NUMBER_UNSPECIFIED" => 0,
        _ => {
            let rest = name.strip_prefix("SEVERITY_NUMBER_")?;
            let level = rest.trim_end_matches(['2', '3', '4']);
            let base = SEVERITIES.iter().position(|s| *s == level)? as i64 * 4 + 1;
            match &rest[level.len()..] {
                "" => base,
                "2" => base + 1,
                "3" => base + 2,
                "4" => base + 3,
                _ => return None,
            }
        }
    };
    Some(v)
}

impl Expr {
    /// Evaluates the expression for one record.
    pub fn eval<'a>(&'a self, v: &View<'a>) -> Result<Value<'a>, EvalError> {
        match self {
            Expr::Lit(l) => Ok(l.reborrow()),
            Expr::Path(p) => p.get(v),
            Expr::Call(c, keys) => {
                let mut value = c.eval(v)?;
                for k in keys {
                    value = index(value, k.eval(v)?)?;
                }
                Ok(value)
            }
            Expr::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(i.eval(v)?.into_any());
                }
                Ok(Value::List(Cow::Owned(out)))
            }
            Expr::Map(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for (k, e) in entries {
                    out.push(KeyValue { key: k.clone(), value: Some(e.eval(v)?.into_any()), key_strindex: 0 });
                }
                Ok(Value::Map(Cow::Owned(out)))
            }
            Expr::Math(l, op, r) => math(l.eval(v)?, *op, r.eval(v)?),
        }
    }

    /// Whether the expression is nil for one record, as [`Expr::eval`]
    /// would say; a path is asked without building its value.
    fn is_nil(&self, v: &View) -> Result<bool, EvalError> {
        match self {
            Expr::Path(p) => p.is_nil(v),
            other => Ok(matches!(other.eval(v)?, Value::Nil)),
        }
    }

    /// The literal string, if the expression is one.
    pub fn literal_str(&self) -> Option<&str> {
        match self {
            Expr::Lit(Value::Str(s)) => Some(s),
            _ => None,
        }
    }
}

fn math<'a>(l: Value<'a>, op: MathOp, r: Value<'a>) -> Result<Value<'a>, EvalError> {
    let result = match (&l, &r) {
        (Value::Int(a), Value::Int(b)) => {
            let (a, b) = (*a, *b);
            Value::Int(match op {
                MathOp::Add => a.wrapping_add(b),
                MathOp::Sub => a.wrapping_sub(b),
                MathOp::Mul => a.wrapping_mul(b),
                MathOp::Div if b == 0 => return Err(EvalError("attempted to divide by 0".into())),
                MathOp::Div => a.wrapping_div(b),
            })
        }
        (Value::Float(a), Value::Float(b)) => {
            let (a, b) = (*a, *b);
            Value::Float(match op {
                MathOp::Add => a + b,
                MathOp::Sub => a - b,
                MathOp::Mul => a * b,
                MathOp::Div if b == 0.0 => return Err(EvalError("attempted to divide by 0".into())),
                MathOp::Div => a / b,
            })
        }
        _ => {
            return Err(EvalError(format!(
                "math takes two ints or two doubles (convert with Int() or Double()), got {} and {}",
                l.type_name(),
                r.type_name()
            )));
        }
    };
    Ok(result)
}

impl Key {
    fn eval<'a>(&'a self, v: &View<'a>) -> Result<KeyValueOf<'a>, EvalError> {
        match self {
            Key::Str(s) => Ok(KeyValueOf::Str(Cow::Borrowed(s))),
            Key::Int(i) => Ok(KeyValueOf::Int(*i)),
            Key::Expr(e) => match e.eval(v)? {
                Value::Str(s) => Ok(KeyValueOf::Str(s)),
                Value::Int(i) => Ok(KeyValueOf::Int(i)),
                other => Err(EvalError(format!("a key must be a string or an int, got {}", other.type_name()))),
            },
        }
    }
}

/// Indexes a map by a string key or a list by an int index; a missing key
/// (or indexing nil) is nil.
pub fn index<'a>(value: Value<'a>, key: KeyValueOf<'_>) -> Result<Value<'a>, EvalError> {
    match (value, key) {
        (Value::Nil, _) => Ok(Value::Nil),
        (Value::Map(Cow::Borrowed(m)), KeyValueOf::Str(k)) => {
            Ok(m.iter().find(|kv| kv.key == k).map_or(Value::Nil, |kv| Value::of_opt(kv.value.as_ref())))
        }
        (Value::Map(Cow::Owned(m)), KeyValueOf::Str(k)) => {
            Ok(m.into_iter().find(|kv| kv.key == k).and_then(|kv| kv.value).map_or(Value::Nil, owned))
        }
        (Value::List(l), KeyValueOf::Int(i)) => {
            let len = l.len();
            let at = usize::try_from(i)
                .ok()
                .filter(|i| *i < len)
                .ok_or_else(|| EvalError(format!("index {i} out of bounds of a list of length {len}")))?;
            Ok(match l {
                Cow::Borrowed(l) => Value::of(&l[at]),
                Cow::Owned(mut l) => owned(l.swap_remove(at)),
            })
        }
        (Value::Map(_), KeyValueOf::Int(i)) => Err(EvalError(format!("a map is indexed by string keys, not [{i}]"))),
        (Value::List(_), KeyValueOf::Str(k)) => Err(EvalError(format!("a list is indexed by ints, not [{k:?}]"))),
        (other, _) => Err(EvalError(format!("type {} does not support indexing", other.type_name()))),
    }
}

/// A value owning its data.
pub fn owned(any: AnyValue) -> Value<'static> {
    match any.value {
        None | Some(any_value::Value::StringValueStrindex(_)) => Value::Nil,
        Some(any_value::Value::StringValue(s)) => Value::Str(Cow::Owned(s)),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(b),
        Some(any_value::Value::IntValue(i)) => Value::Int(i),
        Some(any_value::Value::DoubleValue(d)) => Value::Float(d),
        Some(any_value::Value::BytesValue(b)) => Value::Bytes(Cow::Owned(b)),
        Some(any_value::Value::ArrayValue(a)) => Value::List(Cow::Owned(a.values)),
        Some(any_value::Value::KvlistValue(m)) => Value::Map(Cow::Owned(m.values)),
    }
}

impl Path {
    /// Reads the path.
    pub fn get<'a>(&'a self, v: &View<'a>) -> Result<Value<'a>, EvalError> {
        let mut value = v.read(self.field);
        // `attributes["key"]`, the most common path, as `index` reads it.
        if let ([Key::Str(key)], Value::Map(Cow::Borrowed(map))) = (&self.keys[..], &value) {
            return Ok(map.iter().find(|kv| kv.key == *key).map_or(Value::Nil, |kv| Value::of_opt(kv.value.as_ref())));
        }
        if let (Some(k), true) = (self.keys.first(), self.is_trace_state_key()) {
            let KeyValueOf::Str(key) = k.eval(v)? else {
                return Err(EvalError("trace_state indexing type must be a string".into()));
            };
            return Ok(match value {
                Value::Str(raw) => {
                    record::trace_state_get(&raw, &key).map_or(Value::Nil, |m| Value::Str(Cow::Owned(m)))
                }
                _ => Value::Nil,
            });
        }
        for k in &self.keys {
            value = index(value, k.eval(v)?)?;
        }
        Ok(value)
    }

    /// Whether the path reads nil, as [`Path::get`] would say; for
    /// `attributes["key"]` without building the value.
    fn is_nil(&self, v: &View) -> Result<bool, EvalError> {
        if let [Key::Str(key)] = &self.keys[..]
            && let Value::Map(Cow::Borrowed(map)) = v.read(self.field)
        {
            let first = map.iter().find(|kv| kv.key == *key);
            return Ok(first.is_none_or(|kv| matches!(Value::of_opt(kv.value.as_ref()), Value::Nil)));
        }
        Ok(matches!(self.get(v)?, Value::Nil))
    }

    /// `trace_state["key"]`: one member of the W3C trace state.
    fn is_trace_state_key(&self) -> bool {
        !self.keys.is_empty() && self.field == context::Field::Span(context::SpanField::TraceState)
    }

    /// The keys' values for one record, owned (they are computed before
    /// the record is changed).
    fn resolved_keys(&self, s: &Subject) -> Result<Vec<KeyValueOf<'static>>, EvalError> {
        let view = s.view();
        self.keys
            .iter()
            .map(|k| {
                Ok(match k.eval(&view)? {
                    KeyValueOf::Str(s) => KeyValueOf::Str(Cow::Owned(s.into_owned())),
                    KeyValueOf::Int(i) => KeyValueOf::Int(i),
                })
            })
            .collect()
    }

    /// Writes the path; nested maps are created as needed.
    pub fn set(&self, s: &mut Subject, value: Value) -> Result<(), EvalError> {
        if self.keys.is_empty() {
            s.write_scalar(self.field, value);
            return Ok(());
        }
        let keys = self.resolved_keys(s)?;
        if self.is_trace_state_key() {
            let KeyValueOf::Str(key) = &keys[0] else {
                return Err(EvalError("trace_state indexing type must be a string".into()));
            };
            let Value::Str(member) = value else {
                return Err(EvalError(format!("expected a string for {}, got {}", self.text, value.type_name())));
            };
            let updated = match s.view().read(self.field) {
                Value::Str(raw) => record::trace_state_insert(&raw, key, &member),
                _ => None,
            };
            if let Some(updated) = updated {
                s.write_scalar(self.field, Value::Str(Cow::Owned(updated)));
            }
            return Ok(());
        }
        if let Some(target) = self.slot_mut(s, &keys, true)? {
            *target = value.into_any();
        }
        Ok(())
    }

    /// The map the path names, for editors that change a map in place.
    /// A path to something other than a map is an error, as in the
    /// Collector (`expected pcommon.Map`).
    pub fn map_mut<'s>(&self, s: &'s mut Subject) -> Result<&'s mut Vec<KeyValue>, EvalError> {
        let keys = self.resolved_keys(s)?;
        if keys.is_empty() {
            return match s.root_mut(self.field) {
                Some(Root::Map(m)) => Ok(m),
                Some(Root::Body(b)) => match b.as_mut().and_then(|b| b.value.as_mut()) {
                    Some(any_value::Value::KvlistValue(m)) => Ok(&mut m.values),
                    _ => Err(EvalError(format!("{} is not a map", self.text))),
                },
                None => Err(EvalError(format!("{} cannot be changed here", self.text))),
            };
        }
        match self.slot_mut(s, &keys, false)? {
            Some(AnyValue { value: Some(any_value::Value::KvlistValue(m)) }) => Ok(&mut m.values),
            Some(other) => {
                Err(EvalError(format!("expected a map at {}, got {}", self.text, Value::of(other).type_name())))
            }
            None => Err(EvalError(format!("expected a map at {}, got nil", self.text))),
        }
    }

    /// Walks the keys to the value they name; with `create`, missing map
    /// entries (and maps under empty values) are created.
    fn slot_mut<'s>(
        &self,
        s: &'s mut Subject,
        keys: &[KeyValueOf],
        create: bool,
    ) -> Result<Option<&'s mut AnyValue>, EvalError> {
        let text = &self.text;
        let Some(root) = s.root_mut(self.field) else {
            return Err(EvalError(format!("{text} cannot be changed here")));
        };
        let (mut current, rest): (&mut AnyValue, &[KeyValueOf]) = match root {
            Root::Body(body) => (body.get_or_insert_with(AnyValue::default), keys),
            Root::Map(map) => {
                let (first, rest) = keys.split_first().expect("keys are not empty");
                let KeyValueOf::Str(k) = first else {
                    return Err(EvalError(format!("{text}: a map is indexed by string keys")));
                };
                match entry(map, k, create) {
                    Some(v) => (v, rest),
                    None => return Ok(None),
                }
            }
        };
        for key in rest {
            let kind = Value::of(current).type_name();
            current = match key {
                KeyValueOf::Str(k) => {
                    let map = if create {
                        record::as_map_mut(current)
                    } else {
                        match &mut current.value {
                            Some(any_value::Value::KvlistValue(m)) => Some(&mut m.values),
                            None => return Ok(None),
                            _ => None,
                        }
                    };
                    let Some(map) = map else {
                        return Err(EvalError(format!("{text}: type {kind} does not support string indexing")));
                    };
                    match entry(map, k, create) {
                        Some(v) => v,
                        None => return Ok(None),
                    }
                }
                KeyValueOf::Int(i) => match &mut current.value {
                    Some(any_value::Value::ArrayValue(a)) => {
                        let len = a.values.len();
                        let at = usize::try_from(*i).ok().filter(|i| *i < len).ok_or_else(|| {
                            EvalError(format!("{text}: index {i} out of bounds of a list of length {len}"))
                        })?;
                        &mut a.values[at]
                    }
                    _ => return Err(EvalError(format!("{text}: type {kind} does not support int indexing"))),
                },
            };
        }
        Ok(Some(current))
    }
}

/// The value under `key` (the first occurrence), created empty if absent
/// and `create`.
fn entry<'m>(map: &'m mut Vec<KeyValue>, key: &str, create: bool) -> Option<&'m mut AnyValue> {
    let at = match map.iter().position(|kv| kv.key == key) {
        Some(at) => at,
        None if create => {
            map.push(KeyValue { key: key.to_owned(), value: Some(AnyValue::default()), key_strindex: 0 });
            map.len() - 1
        }
        None => return None,
    };
    Some(map[at].value.get_or_insert_with(AnyValue::default))
}

impl Condition {
    /// Evaluates the condition for one record.
    pub fn eval(&self, v: &View) -> Result<bool, EvalError> {
        match self {
            Condition::Or(any) => {
                for c in any {
                    if c.eval(v)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Condition::And(all) => {
                for c in all {
                    if !c.eval(v)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Condition::Not(c) => Ok(!c.eval(v)?),
            Condition::Const(b) => Ok(*b),
            Condition::Compare(l, op, r) => Ok(compare(&l.eval(v)?, *op, &r.eval(v)?)),
            Condition::IsNil(value, nil) => Ok(value.is_nil(v)? == *nil),
            Condition::Call(e) => match e.eval(v)? {
                Value::Bool(b) => Ok(b),
                other => Err(EvalError(format!("a condition must be a boolean, got {}", other.type_name()))),
            },
        }
    }
}
