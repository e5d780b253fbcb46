//! OTLP payloads as they arrive from files or the wire: protobuf passes
//! through untouched (the processor decodes it); OTLP/JSON is parsed per
//! the OTLP specification (lowerCamelCase names, hex trace and span ids,
//! 64-bit integers as strings or numbers, enums as integers) and re-encoded
//! as protobuf, so the processor sees one encoding.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

pub use audit_format::Signal;

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Encoding {
    /// Decide from the content: OTLP/JSON starts with `{`.
    Auto,
    /// Binary protobuf.
    Protobuf,
    /// OTLP/JSON.
    Json,
}

/// A payload that is not valid OTLP of the expected kind.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The JSON does not parse as the expected request.
    #[error("invalid OTLP/JSON {what} at {path}: {message}")]
    Json {
        /// The request type.
        what: &'static str,
        /// JSON path of the problem (`resourceSpans[0].scopeSpans[0]...`).
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The protobuf does not decode as the expected request.
    #[error("invalid OTLP protobuf {what}: {message}")]
    Protobuf {
        /// The request type.
        what: &'static str,
        /// The decoder's message.
        message: String,
    },
}

/// The OTLP message a payload of `signal` must be.
fn request_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "ExportTraceServiceRequest",
        Signal::Logs => "ExportLogsServiceRequest",
    }
}

/// Resolves `Auto` from the payload's first non-blank byte.
pub fn detect(bytes: &[u8], encoding: Encoding) -> Encoding {
    match encoding {
        Encoding::Auto => match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Encoding::Json,
            _ => Encoding::Protobuf,
        },
        known => known,
    }
}

/// Returns the payload as protobuf bytes for the processor.
pub fn to_protobuf(signal: Signal, bytes: &[u8], encoding: Encoding) -> Result<Vec<u8>, PayloadError> {
    match detect(bytes, encoding) {
        Encoding::Json => {
            let camel;
            let bytes = if uses_proto_field_names(bytes) {
                camel = camel_case_keys(signal, bytes)?;
                camel.as_slice()
            } else {
                bytes
            };
            match signal {
                Signal::Traces => Ok(parse_json::<ExportTraceServiceRequest>(signal, bytes)?.encode_to_vec()),
                Signal::Logs => Ok(parse_json::<ExportLogsServiceRequest>(signal, bytes)?.encode_to_vec()),
            }
        }
        _ => Ok(bytes.to_vec()),
    }
}

/// Whether OTLP/JSON uses the proto field names (`resource_spans`) rather
/// than lowerCamelCase. The OTLP specification asks for lowerCamelCase, and
/// unknown fields must be ignored, so such a request would silently decode
/// as empty; proto3 JSON parsers (and the Collector's) accept both.
fn uses_proto_field_names(bytes: &[u8]) -> bool {
    let needle: &[&[u8]] = &[b"\"resource_spans\"", b"\"resource_logs\""];
    needle.iter().any(|n| bytes.windows(n.len()).any(|w| w == *n))
}

/// Rewrites every object key from snake_case to lowerCamelCase. Safe for
/// OTLP/JSON: all object keys are field names (attribute keys are values).
fn camel_case_keys(signal: Signal, bytes: &[u8]) -> Result<Vec<u8>, PayloadError> {
    fn walk(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                serde_json::Value::Object(map.into_iter().map(|(k, v)| (camel(&k), walk(v))).collect())
            }
            serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(walk).collect()),
            other => other,
        }
    }
    fn camel(key: &str) -> String {
        let mut out = String::with_capacity(key.len());
        let mut upper = false;
        for c in key.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.extend(c.to_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| PayloadError::Json {
        what: request_name(signal),
        path: "(document)".into(),
        message: e.to_string(),
    })?;
    Ok(serde_json::to_vec(&walk(value)).expect("a JSON value serializes"))
}

/// Renders protobuf request bytes as OTLP/JSON.
pub fn to_json(signal: Signal, protobuf: &[u8]) -> Result<Vec<u8>, PayloadError> {
    let invalid = |e: prost::DecodeError| PayloadError::Protobuf { what: request_name(signal), message: e.to_string() };
    let json = match signal {
        Signal::Traces => serde_json::to_vec(&ExportTraceServiceRequest::decode(protobuf).map_err(invalid)?),
        Signal::Logs => serde_json::to_vec(&ExportLogsServiceRequest::decode(protobuf).map_err(invalid)?),
    };
    Ok(json.expect("OTLP messages serialize to JSON"))
}

fn parse_json<T: serde::de::DeserializeOwned>(signal: Signal, bytes: &[u8]) -> Result<T, PayloadError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| PayloadError::Json {
        what: request_name(signal),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    deserializer.end().map_err(|e| PayloadError::Json {
        what: request_name(signal),
        path: "(end)".into(),
        message: format!("trailing data after the request: {e}"),
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_json_by_first_byte() {
        assert_eq!(detect(b"  \n{\"resourceSpans\":[]}", Encoding::Auto), Encoding::Json);
        assert_eq!(detect(&[0x0a, 0x00], Encoding::Auto), Encoding::Protobuf);
        assert_eq!(detect(b"{", Encoding::Protobuf), Encoding::Protobuf);
    }

    #[test]
    fn json_ids_are_hex_and_errors_name_the_path() {
        let ok = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x","startTimeUnixNano":"1"}]}]}]}"#;
        let bytes = to_protobuf(Signal::Traces, ok, Encoding::Auto).unwrap();
        let req = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(hex::encode(&span.trace_id), "5b8efff798038103d269b633813fc60c");
        assert_eq!(span.start_time_unix_nano, 1);

        let base64_ids =
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA==","name":"x"}]}]}]}"#;
        let err = to_protobuf(Signal::Traces, base64_ids, Encoding::Auto).unwrap_err().to_string();
        assert!(err.contains("resourceSpans[0].scopeSpans[0].spans[0].traceId"), "{err}");
    }

    #[test]
    fn proto_field_names_are_accepted_too() {
        let snake = br#"{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"5b8efff798038103d269b633813fc60c","span_id":"eee19b7ec3c1b174","name":"x","start_time_unix_nano":"7","attributes":[{"key":"audit.action","value":{"string_value":"a_b"}}]}]}]}]}"#;
        let req =
            ExportTraceServiceRequest::decode(to_protobuf(Signal::Traces, snake, Encoding::Auto).unwrap().as_slice())
                .unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!((span.name.as_str(), span.start_time_unix_nano), ("x", 7));
        // Attribute keys and string values are data, never renamed.
        assert_eq!(span.attributes[0].key, "audit.action");
        let value = span.attributes[0].value.as_ref().unwrap().value.as_ref().unwrap();
        assert_eq!(*value, opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("a_b".into()));
    }
}
