//! What a decoded OTLP export request must also be for the processor to
//! take it (README, "Limits"): ids of their exact lengths
//! or empty (as the Collector's pdata reads them), and no string-table
//! references (`*_strindex`, valid only in profiles). The processor refuses
//! a batch that fails these before it processes any record; the host checks
//! a request it stores in parts the same way before it stores the first.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

/// Checks every record of a traces request; returns how many spans it holds,
/// or what is wrong and where (`resource_spans[0].scope_spans[1].spans[2]: …`).
pub fn traces(request: &ExportTraceServiceRequest) -> Result<u64, String> {
    let resources = request.resource_spans.iter().map(|r| {
        let scopes = r.scope_spans.iter().map(|s| (s.scope.as_ref(), s.spans.as_slice()));
        (r.resource.as_ref(), scopes)
    });
    walk(resources, ["resource_spans", "scope_spans", "spans"], check_span)
}

/// Checks every record of a logs request; returns how many log records it
/// holds, or what is wrong and where.
pub fn logs(request: &ExportLogsServiceRequest) -> Result<u64, String> {
    let resources = request.resource_logs.iter().map(|r| {
        let scopes = r.scope_logs.iter().map(|s| (s.scope.as_ref(), s.log_records.as_slice()));
        (r.resource.as_ref(), scopes)
    });
    walk(resources, ["resource_logs", "scope_logs", "log_records"], check_log)
}

/// The walk both signals share: each resource's and scope's attributes,
/// then each item, named by its place.
fn walk<'a, Item: 'a, Scopes>(
    resources: impl Iterator<Item = (Option<&'a Resource>, Scopes)>,
    [resources_field, scopes_field, items_field]: [&str; 3],
    check_item: impl Fn(&Item) -> Result<(), Invalid>,
) -> Result<u64, String>
where
    Scopes: Iterator<Item = (Option<&'a InstrumentationScope>, &'a [Item])> + Clone,
{
    let mut count = 0u64;
    for (r, (resource, scopes)) in resources.enumerate() {
        let place = || format!("{resources_field}[{r}]");
        if let Some(resource) = resource {
            check_attributes("attributes", &resource.attributes).map_err(|e| e.at(format!("{}.resource", place())))?;
        }
        for (s, (scope, _)) in scopes.clone().enumerate() {
            if let Some(scope) = scope {
                check_attributes("attributes", &scope.attributes)
                    .map_err(|e| e.at(format!("{}.{scopes_field}[{s}].scope", place())))?;
            }
        }
        for (s, (_, items)) in scopes.enumerate() {
            for (i, item) in items.iter().enumerate() {
                check_item(item).map_err(|e| e.at(format!("{}.{scopes_field}[{s}].{items_field}[{i}]", place())))?;
            }
            count += items.len() as u64;
        }
    }
    Ok(count)
}

/// What is wrong with a record that decoded; the caller adds where it is.
struct Invalid(String);

impl Invalid {
    fn at(self, place: String) -> String {
        format!("{place}: {}", self.0)
    }
}

fn check_span(span: &Span) -> Result<(), Invalid> {
    check_id("trace_id", &span.trace_id, 16)?;
    check_id("span_id", &span.span_id, 8)?;
    check_id("parent_span_id", &span.parent_span_id, 8)?;
    check_attributes("attributes", &span.attributes)?;
    for (i, event) in span.events.iter().enumerate() {
        if !attributes_ok(&event.attributes) {
            check_attributes(&format!("events[{i}].attributes"), &event.attributes)?;
        }
    }
    for (i, link) in span.links.iter().enumerate() {
        if !id_ok(&link.trace_id, 16) || !id_ok(&link.span_id, 8) || !attributes_ok(&link.attributes) {
            check_id(&format!("links[{i}].trace_id"), &link.trace_id, 16)?;
            check_id(&format!("links[{i}].span_id"), &link.span_id, 8)?;
            check_attributes(&format!("links[{i}].attributes"), &link.attributes)?;
        }
    }
    Ok(())
}

fn check_log(log: &LogRecord) -> Result<(), Invalid> {
    check_id("trace_id", &log.trace_id, 16)?;
    check_id("span_id", &log.span_id, 8)?;
    check_attributes("attributes", &log.attributes)?;
    if let Some(body) = &log.body {
        check_value("body", body)?;
    }
    Ok(())
}

fn id_ok(id: &[u8], len: usize) -> bool {
    id.is_empty() || id.len() == len
}

fn check_id(field: &str, id: &[u8], len: usize) -> Result<(), Invalid> {
    if id_ok(id, len) {
        return Ok(());
    }
    Err(Invalid(format!("{field} must be {len} bytes ({} hex digits) or empty, got {} bytes", len * 2, id.len())))
}

fn check_attributes(field: &str, attributes: &[KeyValue]) -> Result<(), Invalid> {
    // The common case allocates nothing; the place is spelled out only for
    // the error.
    if attributes_ok(attributes) {
        return Ok(());
    }
    for kv in attributes {
        if kv.key_strindex != 0 {
            return Err(Invalid(format!("{field}: key_strindex {} is allowed only in profiles", kv.key_strindex)));
        }
        if let Some(v) = &kv.value
            && !value_ok(v)
        {
            check_value(&format!("{field}[{:?}]", kv.key), v)?;
        }
    }
    Ok(())
}

fn check_value(field: &str, value: &AnyValue) -> Result<(), Invalid> {
    match &value.value {
        Some(Value::StringValueStrindex(i)) => {
            Err(Invalid(format!("{field}: string_value_strindex {i} is allowed only in profiles")))
        }
        Some(Value::ArrayValue(a)) => a.values.iter().try_for_each(|v| check_value(field, v)),
        Some(Value::KvlistValue(l)) => check_attributes(field, &l.values),
        _ => Ok(()),
    }
}

fn attributes_ok(attributes: &[KeyValue]) -> bool {
    attributes.iter().all(|kv| kv.key_strindex == 0 && kv.value.as_ref().is_none_or(value_ok))
}

fn value_ok(value: &AnyValue) -> bool {
    match &value.value {
        Some(Value::StringValueStrindex(_)) => false,
        Some(Value::ArrayValue(a)) => a.values.iter().all(value_ok),
        Some(Value::KvlistValue(l)) => attributes_ok(&l.values),
        _ => true,
    }
}
