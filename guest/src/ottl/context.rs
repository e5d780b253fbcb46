//! OTTL contexts and their paths: what `name`, `attributes["k"]`,
//! `resource.attributes["k"]` or `status.code` mean for the record a
//! statement runs on ([`record`](super::record) reads and writes them).
//!
//! Contexts are the Collector's `ottlresource`, `ottlscope`, `ottlspan`,
//! `ottlspanevent` and `ottllog`. A path may start with its context's name
//! (`span.name`, the Collector's context prefix) or leave it out (`name`);
//! the enclosing records are reached as `resource.…`,
//! `instrumentation_scope.…` (or `scope.…`) and, from a span event,
//! `span.…`. Only the context's own record is written: a span statement
//! that sets `resource.attributes[…]` is refused, since one resource is
//! shared by every span of the batch and is hashed into each record (use
//! a `context: resource` group for that).

/// An OTTL context: which record a statement or condition runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// `resource`
    Resource,
    /// `scope` (instrumentation scope)
    Scope,
    /// `span`
    Span,
    /// `spanevent`
    SpanEvent,
    /// `log`
    Log,
}

impl Context {
    /// The context named in a config (`context: span`).
    pub fn parse(name: &str) -> Option<Context> {
        match name {
            "resource" => Some(Context::Resource),
            "scope" | "instrumentation_scope" => Some(Context::Scope),
            "span" => Some(Context::Span),
            "spanevent" => Some(Context::SpanEvent),
            "log" | "log_record" => Some(Context::Log),
            _ => None,
        }
    }

    /// The name as configs write it.
    pub fn name(self) -> &'static str {
        match self {
            Context::Resource => "resource",
            Context::Scope => "scope",
            Context::Span => "span",
            Context::SpanEvent => "spanevent",
            Context::Log => "log",
        }
    }
}

/// A field of a record that a path names (before any keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `resource.attributes`
    ResourceAttributes,
    /// `resource.dropped_attributes_count`
    ResourceDropped,
    /// `instrumentation_scope.name`
    ScopeName,
    /// `instrumentation_scope.version`
    ScopeVersion,
    /// `instrumentation_scope.attributes`
    ScopeAttributes,
    /// `instrumentation_scope.dropped_attributes_count`
    ScopeDropped,
    /// A span field.
    Span(SpanField),
    /// A span event field.
    Event(EventField),
    /// A log record field.
    Log(LogField),
    /// `cache`: a map living for one record's statements.
    Cache,
}

/// Span fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum SpanField {
    TraceId,
    TraceIdString,
    SpanId,
    SpanIdString,
    ParentSpanId,
    ParentSpanIdString,
    TraceState,
    Flags,
    Name,
    Kind,
    KindString,
    StartTimeUnixNano,
    EndTimeUnixNano,
    Attributes,
    DroppedAttributesCount,
    DroppedEventsCount,
    DroppedLinksCount,
    StatusCode,
    StatusMessage,
}

/// Span event fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum EventField {
    Name,
    TimeUnixNano,
    Attributes,
    DroppedAttributesCount,
}

/// Log record fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum LogField {
    TimeUnixNano,
    ObservedTimeUnixNano,
    SeverityNumber,
    SeverityText,
    Body,
    BodyString,
    Attributes,
    DroppedAttributesCount,
    Flags,
    TraceId,
    TraceIdString,
    SpanId,
    SpanIdString,
    EventName,
}

/// Which record a field belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The resource.
    Resource,
    /// The instrumentation scope.
    Scope,
    /// The span (or, from a span event, its span).
    Span,
    /// The span event.
    Event,
    /// The log record.
    Log,
    /// The cache.
    Cache,
}

impl Field {
    /// The record the field belongs to.
    pub fn owner(self) -> Owner {
        match self {
            Field::ResourceAttributes | Field::ResourceDropped => Owner::Resource,
            Field::ScopeName | Field::ScopeVersion | Field::ScopeAttributes | Field::ScopeDropped => Owner::Scope,
            Field::Span(_) => Owner::Span,
            Field::Event(_) => Owner::Event,
            Field::Log(_) => Owner::Log,
            Field::Cache => Owner::Cache,
        }
    }

    /// Whether keys (`["k"]`, `[0]`) may follow the field.
    pub fn indexable(self) -> bool {
        matches!(
            self,
            Field::ResourceAttributes
                | Field::ScopeAttributes
                | Field::Span(SpanField::Attributes)
                | Field::Event(EventField::Attributes)
                | Field::Log(LogField::Attributes)
                | Field::Log(LogField::Body)
                | Field::Cache
                | Field::Span(SpanField::TraceState)
        )
    }

    /// Whether the field is a map (editors such as `delete_key` take one).
    pub fn is_map(self) -> bool {
        self.indexable() && !matches!(self, Field::Log(LogField::Body) | Field::Span(SpanField::TraceState))
    }
}

/// Whether a statement in `context` may write fields of `owner`.
pub fn writable(context: Context, owner: Owner) -> bool {
    matches!(
        (context, owner),
        (_, Owner::Cache)
            | (Context::Resource, Owner::Resource)
            | (Context::Scope, Owner::Scope)
            | (Context::Span, Owner::Span)
            | (Context::SpanEvent, Owner::Event)
            | (Context::Log, Owner::Log)
    )
}

/// Resolves a path's field names (keys aside) in `context`; the error
/// says what the context offers.
pub fn resolve(context: Context, names: &[&str]) -> Result<Field, String> {
    let (owner, rest) = split_prefix(context, names)?;
    let unknown = |what: &str, known: &str| Err(format!("{what} has no path {:?}; it has {known}", rest.join(".")));
    let one = |rest: &[&str]| -> Option<String> { Some(rest.join(".")) };
    let path = one(rest).unwrap_or_default();
    match owner {
        Owner::Cache => Ok(Field::Cache),
        Owner::Resource => match path.as_str() {
            "attributes" => Ok(Field::ResourceAttributes),
            "dropped_attributes_count" => Ok(Field::ResourceDropped),
            _ => unknown("the resource", "attributes, dropped_attributes_count"),
        },
        Owner::Scope => match path.as_str() {
            "name" => Ok(Field::ScopeName),
            "version" => Ok(Field::ScopeVersion),
            "attributes" => Ok(Field::ScopeAttributes),
            "dropped_attributes_count" => Ok(Field::ScopeDropped),
            _ => unknown("the instrumentation scope", "name, version, attributes, dropped_attributes_count"),
        },
        Owner::Span => {
            use SpanField::*;
            let f = match path.as_str() {
                "trace_id" => TraceId,
                "trace_id.string" => TraceIdString,
                "span_id" => SpanId,
                "span_id.string" => SpanIdString,
                "parent_span_id" => ParentSpanId,
                "parent_span_id.string" => ParentSpanIdString,
                "trace_state" => TraceState,
                "flags" => Flags,
                "name" => Name,
                "kind" => Kind,
                "kind.string" => KindString,
                "start_time_unix_nano" => StartTimeUnixNano,
                "end_time_unix_nano" => EndTimeUnixNano,
                "attributes" => Attributes,
                "dropped_attributes_count" => DroppedAttributesCount,
                "dropped_events_count" => DroppedEventsCount,
                "dropped_links_count" => DroppedLinksCount,
                "status.code" => StatusCode,
                "status.message" => StatusMessage,
                "start_time" | "end_time" => {
                    return Err(format!(
                        "span path {path:?} (a time.Time) is not supported; use {path}_unix_nano (an int)"
                    ));
                }
                _ => {
                    return unknown(
                        "a span",
                        "trace_id[.string], span_id[.string], parent_span_id[.string], trace_state, flags, name, \
                         kind[.string], start_time_unix_nano, end_time_unix_nano, attributes, \
                         dropped_attributes_count, dropped_events_count, dropped_links_count, status.code, \
                         status.message",
                    );
                }
            };
            Ok(Field::Span(f))
        }
        Owner::Event => {
            use EventField::*;
            let f = match path.as_str() {
                "name" => Name,
                "time_unix_nano" => TimeUnixNano,
                "attributes" => Attributes,
                "dropped_attributes_count" => DroppedAttributesCount,
                _ => return unknown("a span event", "name, time_unix_nano, attributes, dropped_attributes_count"),
            };
            Ok(Field::Event(f))
        }
        Owner::Log => {
            use LogField::*;
            let f = match path.as_str() {
                "time_unix_nano" => TimeUnixNano,
                "observed_time_unix_nano" => ObservedTimeUnixNano,
                "severity_number" => SeverityNumber,
                "severity_text" => SeverityText,
                "body" => Body,
                "body.string" => BodyString,
                "attributes" => Attributes,
                "dropped_attributes_count" => DroppedAttributesCount,
                "flags" => Flags,
                "trace_id" => TraceId,
                "trace_id.string" => TraceIdString,
                "span_id" => SpanId,
                "span_id.string" => SpanIdString,
                "event_name" => EventName,
                "time" | "observed_time" => {
                    return Err(format!(
                        "log path {path:?} (a time.Time) is not supported; use {path}_unix_nano (an int)"
                    ));
                }
                _ => {
                    return unknown(
                        "a log record",
                        "time_unix_nano, observed_time_unix_nano, severity_number, severity_text, body[.string], \
                         attributes, dropped_attributes_count, flags, trace_id[.string], span_id[.string], \
                         event_name",
                    );
                }
            };
            Ok(Field::Log(f))
        }
    }
}

/// Splits a context prefix (`resource.`, `span.`, ...) off a path; no
/// prefix means the context's own record.
fn split_prefix<'n>(context: Context, names: &'n [&'n str]) -> Result<(Owner, &'n [&'n str]), String> {
    let own = match context {
        Context::Resource => Owner::Resource,
        Context::Scope => Owner::Scope,
        Context::Span => Owner::Span,
        Context::SpanEvent => Owner::Event,
        Context::Log => Owner::Log,
    };
    let Some((first, rest)) = names.split_first() else {
        return Err("empty path".into());
    };
    let prefixed = match *first {
        "cache" => return Ok((Owner::Cache, rest)),
        "resource" => Some(Owner::Resource),
        "instrumentation_scope" | "scope" => Some(Owner::Scope),
        "span" => Some(Owner::Span),
        "spanevent" => Some(Owner::Event),
        "log" => Some(Owner::Log),
        _ => None,
    };
    match prefixed {
        // `resource` alone would be the whole resource: not a value here.
        Some(_) if rest.is_empty() => Err(format!("path {first:?} names a whole record; name one of its fields")),
        // The context's own cache may be named with its prefix
        // (`resource.cache` in the resource context), as in the Collector.
        Some(owner) if owner == own && rest[0] == "cache" => Ok((Owner::Cache, &rest[1..])),
        Some(owner) => {
            let reachable = match (context, owner) {
                (_, o) if o == own => true,
                (Context::Resource, _) => false,
                (Context::Scope, Owner::Resource) => true,
                (Context::Span | Context::Log, Owner::Resource | Owner::Scope) => true,
                (Context::SpanEvent, Owner::Resource | Owner::Scope | Owner::Span) => true,
                _ => false,
            };
            if reachable {
                Ok((owner, rest))
            } else {
                Err(format!("the {} context cannot reach {first:?} paths", context.name()))
            }
        }
        None => Ok((own, names)),
    }
}
