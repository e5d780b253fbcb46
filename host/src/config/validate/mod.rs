//! The substituted tree -> the typed [`Config`]. Each component is read
//! with its own serde struct (one bad component does not hide another),
//! each value is parsed, each reference resolved and each cross-check run;
//! every problem is collected with its key path.
//!
//! [`components`] reads the four component sections, [`service`] the
//! pipelines that wire them.

mod components;
mod security;
mod service;

use std::collections::HashSet;
use std::path::Component;
use std::sync::LazyLock;

use regex::Regex;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Mapping;

use super::env::Substitution;
use super::file::*;
use super::values::{self, HostPort};
use super::*;

/// What a component is: the section it is defined in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Receiver,
    Processor,
    Exporter,
    Extension,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Receiver, Kind::Processor, Kind::Exporter, Kind::Extension];

    fn noun(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Processor => "processor",
            Kind::Exporter => "exporter",
            Kind::Extension => "extension",
        }
    }
}

/// The OTLP receiver, with the addresses it binds.
#[derive(Default)]
struct Receiver {
    grpc: Option<(GrpcReceiver, HostPort)>,
    http: Option<(HttpReceiver, HostPort)>,
}

/// A defined exporter, before a pipeline picks the URL for its signal.
#[allow(clippy::large_enum_variant)] // a few per config, read once
enum ExporterDef {
    Store(Store),
    Forward {
        /// `endpoint` is the gRPC target; empty for HTTP.
        exporter: Exporter,
        /// Every address it dials, with the key that names it.
        dials: Vec<(String, HostPort)>,
    },
}

/// Defined components by id, in file order; `None` when a component's own
/// config has problems (already reported), so that references to it are
/// not reported again.
type Defined<T> = Vec<(String, Option<T>)>;

fn find<'a, T>(defined: &'a Defined<T>, id: &str) -> Option<&'a Option<T>> {
    defined.iter().find(|(k, _)| k == id).map(|(_, v)| v)
}

struct Checker<'a> {
    problems: Vec<Problem>,
    /// Problems found, counting those suppressed: a component is built
    /// only if none was found while reading it.
    errors: usize,
    sub: &'a Substitution,
    receivers: Defined<Receiver>,
    processors: Defined<Processor>,
    exporters: Defined<ExporterDef>,
    extensions: Defined<Extension>,
    /// The `bearertokenauth` extensions, also in `extensions`.
    authenticators: Defined<Authenticator>,
}

/// A defined extension.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // a few per config, read once
enum Extension {
    /// `health_check`, `admin` or `read_api`: a listener (its `auth` unresolved).
    Listener(ExtensionType, HostPort, Listener),
    /// `bearertokenauth`: see [`Checker::authenticators`].
    Auth,
}

/// The extensions otel-audit has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtensionType {
    /// `health_check`: the Collector's health endpoint.
    HealthCheck,
    /// `admin`: `POST /admin/reload` and `GET /admin/status`.
    Admin,
    /// `read_api`: tiles, records with proofs and SQL for auditors.
    ReadApi,
}

/// Validates the substituted tree; `problems` holds substitution's.
pub(super) fn validate(
    root: Value,
    sub: &Substitution,
    problems: Vec<Problem>,
    origin: &str,
) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        errors: problems.len(),
        problems,
        sub,
        receivers: Vec::new(),
        processors: Vec::new(),
        exporters: Vec::new(),
        extensions: Vec::new(),
        authenticators: Vec::new(),
    };
    let root = match root {
        Value::Mapping(root) => root,
        Value::Null => return Err(vec![Problem::new("", format!("{origin} is empty"))]),
        _ => {
            let message =
                format!("{origin} must be a mapping of receivers, processors, exporters, extensions and service");
            return Err(vec![Problem::new("", message)]);
        }
    };
    let mut service = None;
    for (key, value) in root {
        let section = key_text(&key);
        match section.as_str() {
            "receivers" | "processors" | "exporters" | "extensions" => {
                for (id, path, body) in c.entries(&section, value) {
                    match section.as_str() {
                        "receivers" => c.receiver(id, path, body),
                        "processors" => c.processor(id, path, body),
                        "exporters" => c.exporter(id, path, body),
                        _ => c.extension(id, path, body),
                    }
                }
            }
            "service" => service = Some(value),
            "connectors" => c.problem(
                section,
                "connectors are not supported: a pipeline runs from the OTLP receiver to its exporters",
            ),
            _ => c.problem(
                section,
                "unknown section; expected one of receivers, processors, exporters, extensions, service",
            ),
        }
    }
    match c.service(service) {
        Some(config) if c.problems.is_empty() => Ok(config),
        _ if c.problems.is_empty() => Err(vec![Problem::new("", format!("{origin} is not a valid config"))]),
        _ => Err(c.problems),
    }
}

static TYPE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-zA-Z][0-9a-zA-Z_]{0,62}$").expect("valid regex"));
static NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[^\pZ\pC\pS]+$").expect("valid regex"));
static CHAIN_PART: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$").expect("valid regex"));

impl Checker<'_> {
    /// Records a problem, unless substitution already reported this key.
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        self.errors += 1;
        if !self.sub.failed.contains(&path) {
            self.problems.push(Problem::new(path, message));
        }
    }

    /// The entries of a mapping section; nothing written counts as empty.
    fn entries(&mut self, path: &str, value: Value) -> Vec<(String, String, Value)> {
        match value {
            Value::Null => Vec::new(),
            Value::Mapping(map) => map
                .into_iter()
                .map(|(key, value)| {
                    let key = key_text(&key);
                    let path = join_path(path, &key);
                    (key, path, value)
                })
                .collect(),
            _ => {
                self.problem(path, "expected a mapping");
                Vec::new()
            }
        }
    }

    /// Reads `value` into `T`, or reports why not at the key it concerns.
    fn de<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let mut at = match inner.as_str() {
                    "." => path.to_owned(),
                    _ if inner.starts_with('[') => format!("{path}{inner}"),
                    _ => join_path(path, &inner),
                };
                let mut message = e.into_inner().to_string();
                // Name the unknown key in the path, as the other problems do.
                if let Some(rest) = message.strip_prefix("unknown field `")
                    && let Some((key, expected)) = rest.split_once('`')
                {
                    if !at.ends_with(&format!(".{key}")) {
                        at = join_path(&at, key);
                    }
                    message = format!("unknown key{expected}");
                }
                self.problem(at, scrub(&message));
                None
            }
        }
    }

    /// An optional mapping, read without echoing what was written instead
    /// (it may be a secret or a token); `None`, reported, when not a mapping.
    fn mapping(&mut self, value: Option<Value>, path: &str, what: &str) -> Option<Mapping> {
        match value {
            None | Some(Value::Null) => Some(Mapping::new()),
            Some(Value::Mapping(map)) => Some(map),
            Some(_) => {
                self.problem(path, format!("expected {what}"));
                None
            }
        }
    }

    /// A value with a default.
    fn or<T>(
        &mut self,
        path: String,
        text: Option<Text>,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match text {
            None => Some(default),
            Some(Text(text)) => parse(&text).map_err(|message| self.problem(path, message)).ok(),
        }
    }

    /// A value that must be written.
    fn required<T>(
        &mut self,
        path: String,
        text: Option<Text>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match text {
            None => {
                self.problem(path, "required");
                None
            }
            Some(Text(text)) => parse(&text).map_err(|message| self.problem(path, message)).ok(),
        }
    }

    /// `type` or `type/name`, checked as the Collector does.
    fn component_id(&mut self, id: &str, path: &str) -> Option<(String, Option<String>)> {
        let (ty, name) = match id.split_once('/') {
            Some((ty, name)) => (ty, Some(name)),
            None => (id, None),
        };
        if !TYPE.is_match(ty) {
            self.problem(path, format!("`{ty}` is not a component type: a letter, then letters, digits or `_`"));
            return None;
        }
        if let Some(name) = name
            && !(name.len() <= 1024 && NAME.is_match(name))
        {
            self.problem(path, format!("`{name}` is not a component name: no spaces, control characters or symbols"));
            return None;
        }
        Some((ty.to_owned(), name.map(str::to_owned)))
    }
}

/// A component's body: nothing written reads as an empty mapping.
fn body_of(value: Value) -> Value {
    if value.is_null() { Value::Mapping(Mapping::new()) } else { value }
}

fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// A path as written; relative paths stay relative to the working directory.
fn file_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() { Err("must not be empty".to_owned()) } else { Ok(PathBuf::from(text)) }
}

/// The longest instance id and pipeline name: with the signal and shard,
/// a chain id stays within the 200 characters a chain directory is named
/// after.
const INSTANCE_ID_MAX: usize = 100;
const PIPELINE_NAME_MAX: usize = 64;

/// A part of a chain id (pipeline name, instance id): it also names files.
fn chain_part(text: &str, what: &str, max: usize) -> Result<String, String> {
    if text.len() <= max && CHAIN_PART.is_match(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` cannot be {what}: it is part of chain ids and file names \
             (up to {max} letters, digits, `_`, `-`, `.`)"
        ))
    }
}

fn positive(text: &str) -> Result<Duration, String> {
    let d = values::duration(text)?;
    if d.is_zero() { Err(format!("`{text}` must be more than 0")) } else { Ok(d) }
}

fn at_least(n: u64, min: u64, text: &str) -> Result<u64, String> {
    if n >= min { Ok(n) } else { Err(format!("`{text}` is less than the minimum, {min}")) }
}

fn at_most(n: u64, max: u64, text: &str, unit: &str) -> Result<u64, String> {
    if n <= max { Ok(n) } else { Err(format!("`{text}` is more than the maximum, {max} {unit}")) }
}

fn same_directory(a: &Path, b: &Path) -> bool {
    let normal = |p: &Path| p.components().filter(|c| *c != Component::CurDir).collect::<PathBuf>();
    normal(a) == normal(b)
}

/// Serde's message without the offending string (it may be a secret or a
/// token) and without our struct names.
fn scrub(message: &str) -> String {
    let mut message = message.to_owned();
    for prefix in ["invalid type: string \"", "invalid value: string \""] {
        if message.starts_with(prefix)
            && let Some(end) = message.rfind("\", expected")
        {
            message = format!("{}{}", &prefix[..prefix.len() - 2], &message[end + 1..]);
        }
    }
    if let Some(at) = message.find("expected struct ") {
        message.replace_range(at.., "expected a mapping");
    }
    message
}
