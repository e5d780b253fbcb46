//! The `attributes:` section (the Collector's attributes processor): its
//! include/exclude blocks and its actions, each action a rule.

use crate::pattern::Pattern;

use super::config::*;
use super::matcher::{Signal, describe_value, matcher};
use super::*;
use crate::attributes::ContextKey;

impl Compiler<'_> {
    pub(super) fn attributes(&mut self, a: AttributesConfig) -> Result<Attributes, PolicyError> {
        let Some(actions) = a.actions else {
            return Err(PolicyError::at("attributes.actions", "missing required field \"actions\""));
        };
        // The attributes processor's include/exclude use MatchProperties for
        // both signals; a property of the other signal makes a block not
        // match (see `filter`).
        let include = a.include.map(|m| (matcher("attributes.include", m, Signal::Any), "attributes.include"));
        let exclude = a.exclude.map(|m| (matcher("attributes.exclude", m, Signal::Any), "attributes.exclude"));
        let scope = self.register(include, exclude)?;
        let mut compiled = Vec::with_capacity(actions.len());
        for (i, action) in actions.into_iter().enumerate() {
            let path = format!("attributes.actions[{i}]");
            let (action, summary) = compile_action(&path, action)?;
            compiled.push((action, self.rule(path, summary)));
        }
        Ok(Attributes { scope, actions: compiled })
    }
}

pub(super) fn compile_action(path: &str, a: ActionConfig) -> Result<(Action, String), PolicyError> {
    let name = a.action.to_ascii_lowercase();
    let err = |field: &str, msg: String| Err(PolicyError::at(format!("{path}.{field}"), msg));
    let context = match &a.from_context {
        Some(text) => match ContextKey::parse(text) {
            Some(key) => Some(key),
            None => {
                return err(
                    "from_context",
                    format!(
                        "{text:?} is not a context key otel-audit records: use client.address, auth.principal or \
                         auth.subject (request headers, metadata.*, are not passed to the processor)"
                    ),
                );
            }
        },
        None => None,
    };
    let sources =
        usize::from(a.value.is_some()) + usize::from(a.from_attribute.is_some()) + usize::from(context.is_some());
    let key = || -> Result<String, PolicyError> {
        match &a.key {
            Some(k) if !k.is_empty() => Ok(k.clone()),
            _ => Err(PolicyError::at(
                format!("{path}.key"),
                format!("missing required field \"key\" for action \"{name}\""),
            )),
        }
    };
    let pattern = |required: bool| -> Result<Option<Pattern>, PolicyError> {
        match &a.pattern {
            Some(p) => compile_regex(&format!("{path}.pattern"), p).map(Some),
            None if required => Err(PolicyError::at(
                format!("{path}.pattern"),
                format!("missing required field \"pattern\" for action \"{name}\""),
            )),
            None => Ok(None),
        }
    };
    if a.converted_type.is_some() && name != "convert" {
        return err("converted_type", format!("action \"{name}\" does not use the \"converted_type\" field"));
    }
    match name.as_str() {
        "insert" | "update" | "upsert" => {
            if a.pattern.is_some() {
                return err("pattern", format!("action \"{name}\" does not use the \"pattern\" field"));
            }
            if sources == 0 {
                return err("value", "either \"value\", \"from_attribute\" or \"from_context\" must be set".into());
            }
            if sources > 1 {
                return err(
                    "from_attribute",
                    "two of \"value\", \"from_attribute\" and \"from_context\" (or all) are both set; set one".into(),
                );
            }
            let key = key()?;
            let (source, from) = match (a.value, a.from_attribute) {
                _ if context.is_some() => {
                    let text = a.from_context.clone().unwrap_or_default();
                    (Source::FromContext(context.expect("checked")), format!("the sender's {text}"))
                }
                (Some(v), _) => {
                    let value = yaml_to_value(&format!("{path}.value"), &v)?;
                    let text = describe_value(&value);
                    (Source::Value(value), text)
                }
                (None, Some(f)) => (Source::FromAttribute(f.clone()), format!("the value of {f}")),
                (None, None) => unreachable!("sources counted above"),
            };
            let summary = format!("{name} {key} = {from}");
            let action = match name.as_str() {
                "insert" => Action::Insert { key, source },
                "update" => Action::Update { key, source },
                _ => Action::Upsert { key, source },
            };
            Ok((action, summary))
        }
        "delete" | "hash" => {
            if sources > 0 {
                return err("value", format!("action \"{name}\" does not use a value source"));
            }
            let key = a.key.clone().filter(|k| !k.is_empty());
            let pattern = pattern(false)?;
            if key.is_none() && pattern.is_none() {
                return err("key", format!("action \"{name}\" needs \"key\" or \"pattern\" (or both)"));
            }
            let target =
                [key.as_ref().map(|k| k.to_string()), a.pattern.as_ref().map(|p| format!("keys matching /{p}/"))]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" and ");
            let summary = format!("{name} {target}");
            Ok((
                if name == "delete" { Action::Delete { key, pattern } } else { Action::Hash { key, pattern } },
                summary,
            ))
        }
        "extract" => {
            if sources > 0 {
                return err("value", "action \"extract\" does not use a value source".into());
            }
            let key = key()?;
            let re = pattern(true)?.expect("required");
            let names: Vec<_> = re.capture_names().skip(1).collect();
            if names.is_empty() {
                return err("pattern", "the pattern contains no named capture groups".into());
            }
            if names.iter().any(Option::is_none) {
                return err("pattern", "the pattern contains at least one unnamed capture group".into());
            }
            let summary =
                format!("extract {} from {key}", names.iter().flatten().copied().collect::<Vec<_>>().join(", "));
            Ok((Action::Extract { key, pattern: re }, summary))
        }
        "convert" => {
            if sources > 0 || a.pattern.is_some() {
                return err("value", "action \"convert\" does not use value sources or \"pattern\"".into());
            }
            let key = key()?;
            let to = match a.converted_type.as_deref() {
                Some("string") => ConvertTo::String,
                Some("int") => ConvertTo::Int,
                Some("double") => ConvertTo::Double,
                Some(other) => {
                    return err("converted_type", format!("invalid value \"{other}\": use string, int or double"));
                }
                None => return err("converted_type", "missing required field \"converted_type\"".into()),
            };
            let summary = format!("convert {key} to {}", a.converted_type.as_deref().unwrap_or_default());
            Ok((Action::Convert { key, to }, summary))
        }
        other => err(
            "action",
            format!("unsupported action \"{other}\"; use insert, update, upsert, delete, hash, extract or convert"),
        ),
    }
}
