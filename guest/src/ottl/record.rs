//! A record as OTTL statements see it: a [`View`] reads the fields a path
//! names (borrowing where it can), a [`Subject`] writes those of the
//! statement's own record, with the Collector's setter rules (a value of
//! the wrong type is ignored), and W3C trace state members.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::Event};

use super::context::{EventField, Field, LogField, SpanField};
use super::value::Value;

/// The record a read sees.
#[derive(Debug, Clone, Copy)]
pub struct View<'r> {
    /// The resource.
    pub resource: Option<&'r Resource>,
    /// The instrumentation scope.
    pub scope: Option<&'r InstrumentationScope>,
    /// The span or log record (none in the resource and scope contexts).
    pub item: Item<'r>,
    /// The record's cache.
    pub cache: &'r [KeyValue],
}

/// The item a view sees.
#[derive(Debug, Clone, Copy)]
pub enum Item<'r> {
    /// None (resource and scope contexts).
    None,
    /// A span.
    Span(&'r Span),
    /// A span's event, by index.
    SpanEvent(&'r Span, usize),
    /// A log record.
    Log(&'r LogRecord),
}

/// A record a statement may change: its own part mutably, the enclosing
/// records shared.
pub struct Subject<'r> {
    /// The resource.
    pub resource: Slot<'r, Resource>,
    /// The instrumentation scope.
    pub scope: Slot<'r, InstrumentationScope>,
    /// The item.
    pub item: ItemMut<'r>,
    /// The cache (empty at the start of each record's statements).
    pub cache: Vec<KeyValue>,
}

/// A record a subject holds shared or mutably.
pub enum Slot<'r, T> {
    /// Read only.
    Shared(Option<&'r T>),
    /// Writable (created on first write when absent).
    Mut(&'r mut Option<T>),
}

impl<T> Slot<'_, T> {
    fn get(&self) -> Option<&T> {
        match self {
            Slot::Shared(r) => *r,
            Slot::Mut(r) => r.as_ref(),
        }
    }
}

/// The item a subject holds mutably.
pub enum ItemMut<'r> {
    /// None (resource and scope contexts).
    None,
    /// A span.
    Span(&'r mut Span),
    /// A span's event, by index.
    SpanEvent(&'r mut Span, usize),
    /// A log record.
    Log(&'r mut LogRecord),
}

impl Subject<'_> {
    /// The subject as a read sees it.
    pub fn view(&self) -> View<'_> {
        let item = match &self.item {
            ItemMut::None => Item::None,
            ItemMut::Span(s) => Item::Span(s),
            ItemMut::SpanEvent(s, i) => Item::SpanEvent(s, *i),
            ItemMut::Log(l) => Item::Log(l),
        };
        View { resource: self.resource.get(), scope: self.scope.get(), item, cache: &self.cache }
    }
}

static EMPTY_ANY: AnyValue = AnyValue { value: None };

impl<'r> View<'r> {
    fn span(&self) -> Option<&'r Span> {
        match self.item {
            Item::Span(s) | Item::SpanEvent(s, _) => Some(s),
            _ => None,
        }
    }

    fn event(&self) -> Option<&'r Event> {
        match self.item {
            Item::SpanEvent(s, i) => s.events.get(i),
            _ => None,
        }
    }

    fn log(&self) -> Option<&'r LogRecord> {
        match self.item {
            Item::Log(l) => Some(l),
            _ => None,
        }
    }

    /// The value of a field (before keys).
    pub fn read(&self, field: Field) -> Value<'r> {
        let map = |m: Option<&'r Vec<KeyValue>>| Value::Map(Cow::Borrowed(m.map_or(&[][..], |m| &m[..])));
        let text = |s: Option<&'r String>| Value::Str(Cow::Borrowed(s.map_or("", |s| s.as_str())));
        let int = |i: Option<i64>| Value::Int(i.unwrap_or(0));
        match field {
            Field::Cache => Value::Map(Cow::Borrowed(self.cache)),
            Field::ResourceAttributes => map(self.resource.map(|r| &r.attributes)),
            Field::ResourceDropped => int(self.resource.map(|r| r.dropped_attributes_count.into())),
            Field::ScopeName => text(self.scope.map(|s| &s.name)),
            Field::ScopeVersion => text(self.scope.map(|s| &s.version)),
            Field::ScopeAttributes => map(self.scope.map(|s| &s.attributes)),
            Field::ScopeDropped => int(self.scope.map(|s| s.dropped_attributes_count.into())),
            Field::Span(f) => {
                let Some(s) = self.span() else { return Value::Nil };
                use SpanField::*;
                match f {
                    TraceId => Value::Bytes(Cow::Borrowed(&s.trace_id)),
                    TraceIdString => Value::Str(Cow::Owned(hex::encode(&s.trace_id))),
                    SpanId => Value::Bytes(Cow::Borrowed(&s.span_id)),
                    SpanIdString => Value::Str(Cow::Owned(hex::encode(&s.span_id))),
                    ParentSpanId => Value::Bytes(Cow::Borrowed(&s.parent_span_id)),
                    ParentSpanIdString => Value::Str(Cow::Owned(hex::encode(&s.parent_span_id))),
                    TraceState => Value::Str(Cow::Borrowed(&s.trace_state)),
                    Flags => Value::Int(s.flags.into()),
                    Name => Value::Str(Cow::Borrowed(&s.name)),
                    Kind => Value::Int(s.kind.into()),
                    KindString => Value::Str(Cow::Borrowed(kind_string(s.kind))),
                    StartTimeUnixNano => Value::Int(s.start_time_unix_nano as i64),
                    EndTimeUnixNano => Value::Int(s.end_time_unix_nano as i64),
                    Attributes => map(Some(&s.attributes)),
                    DroppedAttributesCount => Value::Int(s.dropped_attributes_count.into()),
                    DroppedEventsCount => Value::Int(s.dropped_events_count.into()),
                    DroppedLinksCount => Value::Int(s.dropped_links_count.into()),
                    StatusCode => Value::Int(s.status.as_ref().map_or(0, |st| st.code.into())),
                    StatusMessage => text(s.status.as_ref().map(|st| &st.message)),
                }
            }
            Field::Event(f) => {
                let Some(e) = self.event() else { return Value::Nil };
                match f {
                    EventField::Name => Value::Str(Cow::Borrowed(&e.name)),
                    EventField::TimeUnixNano => Value::Int(e.time_unix_nano as i64),
                    EventField::Attributes => map(Some(&e.attributes)),
                    EventField::DroppedAttributesCount => Value::Int(e.dropped_attributes_count.into()),
                }
            }
            Field::Log(f) => {
                let Some(l) = self.log() else { return Value::Nil };
                use LogField::*;
                match f {
                    TimeUnixNano => Value::Int(l.time_unix_nano as i64),
                    ObservedTimeUnixNano => Value::Int(l.observed_time_unix_nano as i64),
                    SeverityNumber => Value::Int(l.severity_number.into()),
                    SeverityText => Value::Str(Cow::Borrowed(&l.severity_text)),
                    Body => Value::of(l.body.as_ref().unwrap_or(&EMPTY_ANY)),
                    BodyString => match l.body.as_ref() {
                        None | Some(AnyValue { value: None }) => Value::Str(Cow::Borrowed("")),
                        Some(b) => match Value::of(b) {
                            Value::Str(s) => Value::Str(s),
                            other => Value::Str(Cow::Owned(other.to_text().into_owned())),
                        },
                    },
                    Attributes => map(Some(&l.attributes)),
                    DroppedAttributesCount => Value::Int(l.dropped_attributes_count.into()),
                    Flags => Value::Int(l.flags.into()),
                    TraceId => Value::Bytes(Cow::Borrowed(&l.trace_id)),
                    TraceIdString => Value::Str(Cow::Owned(hex::encode(&l.trace_id))),
                    SpanId => Value::Bytes(Cow::Borrowed(&l.span_id)),
                    SpanIdString => Value::Str(Cow::Owned(hex::encode(&l.span_id))),
                    EventName => Value::Str(Cow::Borrowed(&l.event_name)),
                }
            }
        }
    }
}

/// The Collector's names for span kinds (`kind.string`).
pub fn kind_string(kind: i32) -> &'static str {
    match kind {
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => "Unspecified",
    }
}

/// Where a write lands: a map (attributes, cache) or a single value (the
/// log body), or a scalar field.
pub enum Root<'s> {
    /// A map field.
    Map(&'s mut Vec<KeyValue>),
    /// The log body.
    Body(&'s mut Option<AnyValue>),
}

impl Subject<'_> {
    /// The map or body a keyed path starts from, for writing. `None` when
    /// the field's record is not writable here (the compiler refuses such
    /// paths, so this is defensive).
    pub fn root_mut(&mut self, field: Field) -> Option<Root<'_>> {
        match field {
            Field::Cache => Some(Root::Map(&mut self.cache)),
            Field::ResourceAttributes => match &mut self.resource {
                Slot::Mut(r) => Some(Root::Map(&mut r.get_or_insert_with(Resource::default).attributes)),
                Slot::Shared(_) => None,
            },
            Field::ScopeAttributes => match &mut self.scope {
                Slot::Mut(s) => Some(Root::Map(&mut s.get_or_insert_with(InstrumentationScope::default).attributes)),
                Slot::Shared(_) => None,
            },
            Field::Span(SpanField::Attributes) => match &mut self.item {
                ItemMut::Span(s) => Some(Root::Map(&mut s.attributes)),
                _ => None,
            },
            Field::Event(EventField::Attributes) => match &mut self.item {
                ItemMut::SpanEvent(s, i) => s.events.get_mut(*i).map(|e| Root::Map(&mut e.attributes)),
                _ => None,
            },
            Field::Log(LogField::Attributes) => match &mut self.item {
                ItemMut::Log(l) => Some(Root::Map(&mut l.attributes)),
                _ => None,
            },
            Field::Log(LogField::Body) => match &mut self.item {
                ItemMut::Log(l) => Some(Root::Body(&mut l.body)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Sets a field that takes no keys. A value of the wrong type is
    /// ignored, as the Collector's setters ignore it.
    pub fn write_scalar(&mut self, field: Field, value: Value) {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let int = |v: &Value| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        };
        let bytes = |v: &Value, len: usize| match v {
            Value::Bytes(b) if b.len() == len => Some(b.to_vec()),
            _ => None,
        };
        let hex_id = |v: &Value, len: usize| {
            v.as_str().and_then(|s| hex::decode(s).ok()).filter(|b| b.len() == len || (b.is_empty() && len == 0))
        };
        match field {
            Field::ResourceDropped => {
                if let (Slot::Mut(r), Some(i)) = (&mut self.resource, int(&value)) {
                    r.get_or_insert_with(Resource::default).dropped_attributes_count = i as u32;
                }
            }
            Field::ScopeName | Field::ScopeVersion | Field::ScopeDropped => {
                let Slot::Mut(s) = &mut self.scope else { return };
                let s = s.get_or_insert_with(InstrumentationScope::default);
                match field {
                    Field::ScopeName => text(&value).map(|t| s.name = t),
                    Field::ScopeVersion => text(&value).map(|t| s.version = t),
                    _ => int(&value).map(|i| s.dropped_attributes_count = i as u32),
                };
            }
            Field::Span(f) => {
                let ItemMut::Span(s) = &mut self.item else { return };
                use SpanField::*;
                match f {
                    TraceId => bytes(&value, 16).map(|b| s.trace_id = b),
                    TraceIdString => hex_id(&value, 16).map(|b| s.trace_id = b),
                    SpanId => bytes(&value, 8).map(|b| s.span_id = b),
                    SpanIdString => hex_id(&value, 8).map(|b| s.span_id = b),
                    ParentSpanId => bytes(&value, 8).map(|b| s.parent_span_id = b),
                    ParentSpanIdString => hex_id(&value, 8).map(|b| s.parent_span_id = b),
                    TraceState => text(&value).map(|t| s.trace_state = t),
                    Flags => int(&value).map(|i| s.flags = i as u32),
                    Name => text(&value).map(|t| s.name = t),
                    Kind => int(&value).map(|i| s.kind = i as i32),
                    KindString => text(&value).and_then(|t| (0..6).find(|k| kind_string(*k) == t)).map(|k| s.kind = k),
                    StartTimeUnixNano => int(&value).map(|i| s.start_time_unix_nano = i as u64),
                    EndTimeUnixNano => int(&value).map(|i| s.end_time_unix_nano = i as u64),
                    Attributes => map_value(value).map(|m| s.attributes = m),
                    DroppedAttributesCount => int(&value).map(|i| s.dropped_attributes_count = i as u32),
                    DroppedEventsCount => int(&value).map(|i| s.dropped_events_count = i as u32),
                    DroppedLinksCount => int(&value).map(|i| s.dropped_links_count = i as u32),
                    StatusCode => int(&value).map(|i| s.status.get_or_insert_with(Status::default).code = i as i32),
                    StatusMessage => text(&value).map(|t| s.status.get_or_insert_with(Status::default).message = t),
                };
            }
            Field::Event(f) => {
                let ItemMut::SpanEvent(s, i) = &mut self.item else { return };
                let Some(e) = s.events.get_mut(*i) else { return };
                match f {
                    EventField::Name => text(&value).map(|t| e.name = t),
                    EventField::TimeUnixNano => int(&value).map(|i| e.time_unix_nano = i as u64),
                    EventField::Attributes => map_value(value).map(|m| e.attributes = m),
                    EventField::DroppedAttributesCount => int(&value).map(|i| e.dropped_attributes_count = i as u32),
                };
            }
            Field::Log(f) => {
                let ItemMut::Log(l) = &mut self.item else { return };
                use LogField::*;
                match f {
                    TimeUnixNano => int(&value).map(|i| l.time_unix_nano = i as u64),
                    ObservedTimeUnixNano => int(&value).map(|i| l.observed_time_unix_nano = i as u64),
                    SeverityNumber => int(&value).map(|i| l.severity_number = i as i32),
                    SeverityText => text(&value).map(|t| l.severity_text = t),
                    Body => {
                        l.body = Some(value.into_any());
                        Some(())
                    }
                    BodyString => text(&value).map(|t| {
                        l.body = Some(AnyValue { value: Some(any_value::Value::StringValue(t)) });
                    }),
                    Attributes => map_value(value).map(|m| l.attributes = m),
                    DroppedAttributesCount => int(&value).map(|i| l.dropped_attributes_count = i as u32),
                    Flags => int(&value).map(|i| l.flags = i as u32),
                    TraceId => bytes(&value, 16).map(|b| l.trace_id = b),
                    TraceIdString => hex_id(&value, 16).map(|b| l.trace_id = b),
                    SpanId => bytes(&value, 8).map(|b| l.span_id = b),
                    SpanIdString => hex_id(&value, 8).map(|b| l.span_id = b),
                    EventName => text(&value).map(|t| l.event_name = t),
                };
            }
            Field::Cache | Field::ResourceAttributes | Field::ScopeAttributes => {
                if let Some(m) = map_value(value)
                    && let Some(Root::Map(target)) = self.root_mut(field)
                {
                    *target = m;
                }
            }
        }
    }
}

fn map_value(v: Value) -> Option<Vec<KeyValue>> {
    match v {
        Value::Map(m) => Some(m.into_owned()),
        _ => None,
    }
}

/// Makes an empty value into an empty map, so nested keys can be set
/// under it (`set(attributes["a"]["b"], 1)` creates `a`).
pub fn as_map_mut(v: &mut AnyValue) -> Option<&mut Vec<KeyValue>> {
    if v.value.is_none() {
        v.value = Some(any_value::Value::KvlistValue(KeyValueList::default()));
    }
    match &mut v.value {
        Some(any_value::Value::KvlistValue(m)) => Some(&mut m.values),
        _ => None,
    }
}

/// One member of a W3C trace state (`trace_state["key"]`), as the
/// Collector reads it (`trace.TraceState.Get`): `""` when the key is
/// absent, `None` when the trace state does not parse.
pub fn trace_state_get(raw: &str, key: &str) -> Option<String> {
    let members = trace_state_members(raw)?;
    Some(members.into_iter().find(|(k, _)| *k == key).map_or(String::new(), |(_, v)| v.to_owned()))
}

/// The trace state with `key` set to `value` and moved to the front, as
/// the Collector writes `trace_state["key"]` (`trace.TraceState.Insert`);
/// `None` (nothing written) when the trace state does not parse or the
/// key or value is not valid W3C.
pub fn trace_state_insert(raw: &str, key: &str, value: &str) -> Option<String> {
    let members = trace_state_members(raw)?;
    if !trace_state_key(key) || !trace_state_value(value) {
        return None;
    }
    let mut out = vec![format!("{key}={value}")];
    out.extend(members.into_iter().filter(|(k, _)| *k != key).map(|(k, v)| format!("{k}={v}")));
    if out.len() > 32 {
        return None;
    }
    Some(out.join(","))
}

fn trace_state_members(raw: &str) -> Option<Vec<(&str, &str)>> {
    let mut members = Vec::new();
    for member in raw.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let (k, v) = member.split_once('=')?;
        if !trace_state_key(k) || !trace_state_value(v) || members.iter().any(|(seen, _)| *seen == k) {
            return None;
        }
        members.push((k, v));
    }
    (members.len() <= 32).then_some(members)
}

/// A W3C trace-state key: `[a-z0-9][_0-9a-z-*/]*`, optionally `tenant@system`.
fn trace_state_key(k: &str) -> bool {
    let part = |p: &str, max: usize| {
        !p.is_empty()
            && p.len() <= max
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b))
    };
    match k.split_once('@') {
        Some((tenant, system)) => {
            part(tenant, 241)
                && part(system, 14)
                && system.starts_with(|c: char| c.is_ascii_lowercase())
                && tenant.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        }
        None => part(k, 256) && k.starts_with(|c: char| c.is_ascii_lowercase()),
    }
}

/// A W3C trace-state value: up to 256 printable ASCII characters but `,`
/// and `=`, not ending in a space.
fn trace_state_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && !v.ends_with(' ')
        && v.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}
