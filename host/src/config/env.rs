//! `${env:VAR}` substitution, done as the Collector does it but on the
//! parsed YAML tree rather than the raw text, so every substituted value
//! knows its key path (for messages, and to tell a secret that came from
//! the environment from one written inline).
//!
//! - `${env:VAR}` and `${env:VAR:-default}` in any string value; keys are
//!   never substituted. The default applies only when `VAR` is unset (a set
//!   but empty variable gives ""), as in the Collector.
//! - The bare `${VAR}` (and `${VAR:-default}`) means the same: the
//!   Collector's default scheme is `env`. Other schemes (`${file:...}`,
//!   `${http:...}`) are refused; `$VAR` without braces is left as written,
//!   as the Collector now does.
//! - `$$` is a literal `$`: `$${env:X}` is the text `${env:X}`.
//! - A value that is exactly one reference takes the type its text has as
//!   a YAML scalar (`${env:PORT}` with `PORT=4317` is an integer); the text
//!   is kept as a string unless it reads back identically, so `007` stays
//!   `007`.
//! - Stricter than the Collector: an unset variable without a default is
//!   an error naming the variable and the key path. The Collector
//!   substitutes an empty string and logs a warning, which for an audit
//!   trail turns a missing key or directory into a silent misconfiguration.

use std::collections::{HashMap, HashSet};
use std::env::VarError;

use serde_yaml_ng::Value;

use super::{Problem, join_path, key_text};

/// How the environment is read: `std::env::var`, or a map in tests.
pub(super) type Lookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

/// A value that was exactly one reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WholeRef {
    /// The variable.
    pub var: String,
    /// Whether the reference carries a `:-default`.
    pub has_default: bool,
}

/// What substitution learnt about the tree.
#[derive(Debug, Default)]
pub(super) struct Substitution {
    /// Key paths of values that were exactly one reference.
    pub whole: HashMap<String, WholeRef>,
    /// Key paths whose substitution failed (already reported; the raw text
    /// is left in place and later complaints about it are suppressed).
    pub failed: HashSet<String>,
    /// Every key path, numbered in document order: problems are sorted by it.
    pub order: HashMap<String, usize>,
}

impl Substitution {
    /// Where `path` (or, for a key that is not written, its nearest
    /// written parent) sits in the document.
    pub fn rank(&self, path: &str) -> usize {
        let mut path = path;
        loop {
            if let Some(&rank) = self.order.get(path) {
                return rank;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return 0,
            }
        }
    }
}

/// Substitutes every string value under `value`; problems are appended.
pub(super) fn substitute(value: &mut Value, env: Lookup, problems: &mut Vec<Problem>) -> Substitution {
    let mut out = Substitution::default();
    walk(value, String::new(), env, problems, &mut out);
    out
}

fn walk(value: &mut Value, path: String, env: Lookup, problems: &mut Vec<Problem>, out: &mut Substitution) {
    let rank = out.order.len();
    out.order.entry(path.clone()).or_insert(rank);
    match value {
        Value::String(text) => match expand(text, env) {
            Ok(Expanded::Unchanged) => {}
            Ok(Expanded::Text(new)) => *text = new,
            Ok(Expanded::Whole { var, has_default, text }) => {
                out.whole.insert(path, WholeRef { var, has_default });
                *value = typed(text);
            }
            Err(message) => {
                problems.push(Problem { path: path.clone(), message });
                out.failed.insert(path);
            }
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{i}]"), env, problems, out);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                walk(item, join_path(&path, &key_text(key)), env, problems, out);
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, env, problems, out),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The result of expanding one string.
#[derive(Debug, PartialEq)]
enum Expanded {
    /// No `$` at all.
    Unchanged,
    /// Text with references and escapes resolved.
    Text(String),
    /// The string was exactly one reference; this is its value.
    Whole { var: String, has_default: bool, text: String },
}

fn expand(text: &str, env: Lookup) -> Result<Expanded, String> {
    if !text.contains('$') {
        return Ok(Expanded::Unchanged);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut literal = false;
    let mut last = None;
    let mut refs = 0;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        literal |= at > 0;
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            literal = true;
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or("unterminated `${`: close the reference with `}`, or write `$$` for a literal `$`")?;
            let (var, default) = reference(&body[..end])?;
            let value = match env(var) {
                Ok(value) => value,
                Err(VarError::NotPresent) => match default {
                    Some(default) => default.to_owned(),
                    None => {
                        return Err(format!(
                            "environment variable {var} is not set and `${{env:{var}}}` has no default \
                             (write `${{env:{var}:-DEFAULT}}` for one)"
                        ));
                    }
                },
                Err(VarError::NotUnicode(_)) => return Err(format!("environment variable {var} is not valid UTF-8")),
            };
            out.push_str(&value);
            refs += 1;
            last = Some((var.to_owned(), default.is_some()));
            rest = &body[end + 1..];
        } else {
            out.push('$');
            literal = true;
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    literal |= !rest.is_empty();
    match last {
        Some((var, has_default)) if refs == 1 && !literal => Ok(Expanded::Whole { var, has_default, text: out }),
        _ => Ok(Expanded::Text(out)),
    }
}

/// Splits the inside of `${...}` into the variable and its default.
fn reference(inner: &str) -> Result<(&str, Option<&str>), String> {
    if inner.contains("${") {
        return Err("nested references are not supported".to_owned());
    }
    let spec = match inner.split_once(':') {
        Some(("env", spec)) => spec,
        // `${VAR:-default}`: the default scheme.
        Some((_, rest)) if rest.starts_with('-') => inner,
        Some((scheme, _)) => {
            return Err(format!("`${{{scheme}:...}}` is not supported: otel-audit substitutes `${{env:VAR}}` only"));
        }
        None => inner,
    };
    let (var, default) = match spec.split_once(":-") {
        Some((var, default)) => (var, Some(default)),
        None => (spec, None),
    };
    let valid = var.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!(
            "`${{{inner}}}` does not name an environment variable: write `${{env:VAR}}` or `${{env:VAR:-default}}` \
             (VAR: letters, digits and `_`)"
        ));
    }
    Ok((var, default))
}

/// A whole-reference value typed as the YAML scalar its text spells, when
/// the text reads back identically; otherwise the text.
fn typed(text: String) -> Value {
    match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(Value::Bool(b)) if b.to_string() == text => Value::Bool(b),
        Ok(Value::Number(n)) if n.to_string() == text => Value::Number(n),
        _ => Value::String(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Result<String, VarError> {
        match var {
            "PORT" => Ok("4317".into()),
            "HOST" => Ok("collector".into()),
            "EMPTY" => Ok(String::new()),
            "ZERO_PADDED" => Ok("007".into()),
            "FLAG" => Ok("true".into()),
            _ => Err(VarError::NotPresent),
        }
    }

    fn run(text: &str) -> Result<Expanded, String> {
        expand(text, &env)
    }

    fn whole(var: &str, has_default: bool, text: &str) -> Expanded {
        Expanded::Whole { var: var.into(), has_default, text: text.into() }
    }

    #[test]
    fn forms() {
        assert_eq!(run("plain"), Ok(Expanded::Unchanged));
        assert_eq!(run("${env:PORT}"), Ok(whole("PORT", false, "4317")));
        assert_eq!(run("${PORT}"), Ok(whole("PORT", false, "4317")));
        assert_eq!(run("${env:NOPE:-9}"), Ok(whole("NOPE", true, "9")));
        assert_eq!(run("${NOPE:-a:b}"), Ok(whole("NOPE", true, "a:b")));
        assert_eq!(run("${env:NOPE:-http://h:1/x}"), Ok(whole("NOPE", true, "http://h:1/x")));
        assert_eq!(run("${env:NOPE:-}"), Ok(whole("NOPE", true, "")));
        // Set but empty: the value, not the default (the Collector's rule).
        assert_eq!(run("${env:EMPTY:-x}"), Ok(whole("EMPTY", true, "")));
        assert_eq!(run("http://${env:HOST}:${env:PORT}/"), Ok(Expanded::Text("http://collector:4317/".into())));
        assert_eq!(run(" ${env:PORT}"), Ok(Expanded::Text(" 4317".into())));
    }

    #[test]
    fn escapes() {
        assert_eq!(run("$${env:PORT}"), Ok(Expanded::Text("${env:PORT}".into())));
        assert_eq!(run("a$$b"), Ok(Expanded::Text("a$b".into())));
        assert_eq!(run("$$$${env:PORT}"), Ok(Expanded::Text("$${env:PORT}".into())));
        assert_eq!(run("$$${env:PORT}"), Ok(Expanded::Text("$4317".into())));
        assert_eq!(run("cost: $5"), Ok(Expanded::Text("cost: $5".into())));
        assert_eq!(run("$HOME"), Ok(Expanded::Text("$HOME".into())));
        assert_eq!(run("$"), Ok(Expanded::Text("$".into())));
    }

    #[test]
    fn refusals() {
        let err = run("${env:NOPE}").unwrap_err();
        assert!(err.contains("NOPE is not set"), "{err}");
        assert!(run("${env:PORT").unwrap_err().contains("unterminated"));
        assert!(run("${file:/etc/x}").unwrap_err().contains("`${file:...}` is not supported"));
        assert!(run("${env:A:-${env:B}}").unwrap_err().contains("nested"));
        assert!(run("${env:1X}").unwrap_err().contains("does not name an environment variable"));
        assert!(run("${}").unwrap_err().contains("does not name"));
    }

    #[test]
    fn typing() {
        assert_eq!(typed("4317".into()), Value::Number(4317.into()));
        assert_eq!(typed("true".into()), Value::Bool(true));
        assert_eq!(typed("007".into()), Value::String("007".into()));
        assert_eq!(typed("1.5".into()), Value::Number(serde_yaml_ng::Number::from(1.5)));
        assert_eq!(typed("".into()), Value::String("".into()));
        assert_eq!(typed("null".into()), Value::String("null".into()));
        assert_eq!(typed("a: b".into()), Value::String("a: b".into()));
        assert_eq!(typed("[1, 2]".into()), Value::String("[1, 2]".into()));
    }

    #[test]
    fn tree_paths_and_types() {
        let mut value: Value = serde_yaml_ng::from_str(
            "a:\n  port: ${env:PORT}\n  keep: $${env:PORT}\n  ${env:PORT}: key\nlist: [x, '${env:FLAG}', '${env:NOPE}']\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        let out = substitute(&mut value, &env, &mut problems);
        assert_eq!(value["a"]["port"], Value::Number(4317.into()));
        assert_eq!(value["a"]["keep"], Value::String("${env:PORT}".into()));
        // Keys are never substituted.
        assert_eq!(value["a"]["${env:PORT}"], Value::String("key".into()));
        assert_eq!(value["list"][1], Value::Bool(true));
        assert_eq!(out.whole["a.port"], WholeRef { var: "PORT".into(), has_default: false });
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "list[2]");
        assert!(problems[0].message.contains("NOPE"));
        assert!(out.failed.contains("list[2]"));
    }
}
