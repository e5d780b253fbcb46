//! The OTTL forms of `filter:` (the filterprocessor's `traces.span`,
//! `traces.spanevent`, `logs.log_record`, `trace_conditions`,
//! `log_conditions`) and the `transform:` section (the
//! transformprocessor's `trace_statements` and `log_statements`, flat or in
//! groups). Each condition and statement is a rule; a statement that does
//! not compile names its key path, column and what was expected.

use serde_yaml_ng::Value as Yaml;

use super::config::*;
use super::*;
use crate::filter::{OttlCondition, OttlConditions};
use crate::ottl::{self, Check, CompileError, Context, ErrorMode, Statement};
use crate::transform::{Group, Transform};

/// The signal a list of conditions or statements applies to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signal {
    Traces,
    Logs,
}

impl Signal {
    fn allows(self, c: Context) -> bool {
        match self {
            Signal::Traces => matches!(c, Context::Resource | Context::Scope | Context::Span | Context::SpanEvent),
            Signal::Logs => matches!(c, Context::Resource | Context::Scope | Context::Log),
        }
    }

    fn contexts(self) -> &'static str {
        match self {
            Signal::Traces => "resource, scope, span, spanevent",
            Signal::Logs => "resource, scope, log",
        }
    }

    fn records(c: Context) -> &'static str {
        match c {
            Context::Resource => "every record of resources",
            Context::Scope => "every record of scopes",
            Context::Span => "spans",
            Context::SpanEvent => "span events",
            Context::Log => "log records",
        }
    }
}

fn error_mode(path: &str, mode: Option<&str>, default: ErrorMode) -> Result<ErrorMode, PolicyError> {
    match mode {
        None => Ok(default),
        Some(m) => ErrorMode::parse(m)
            .ok_or_else(|| PolicyError::at(path, format!("'{m}' is not one of ignore, silent, propagate"))),
    }
}

/// An OTTL text as the Collector's OTTL sees it after config expansion:
/// `$$` is a literal `$` (the READMEs write `"$$1"` for a regex group), so
/// processor blocks paste unchanged. `${...}` would be an environment or
/// config reference, which a policy cannot make: refused, not kept literal.
fn collector_text(path: &str, text: &str) -> Result<String, PolicyError> {
    if let Some(at) = text.replace("$$", "\0\0").find("${") {
        return Err(PolicyError::at(
            path,
            format!(
                "column {}: `${{...}}` is a Collector config reference, which a policy cannot expand (secrets come \
                 from the host); write `$${{` for a literal `${{`, in `{text}`",
                text[..at].chars().count() + 1
            ),
        ));
    }
    Ok(text.replace("$$", "$"))
}

fn compile_error(path: &str, text: &str, e: CompileError) -> PolicyError {
    PolicyError::at(path, format!("{e}, in `{text}`"))
}

fn context(path: &str, name: &str, signal: Signal) -> Result<Context, PolicyError> {
    match Context::parse(name) {
        Some(c) if signal.allows(c) => Ok(c),
        _ => Err(PolicyError::at(format!("{path}.context"), format!("'{name}' is not one of {}", signal.contexts()))),
    }
}

/// The context of statements or conditions without a `context:`, inferred
/// from their path prefixes.
fn inferred(path: &str, texts: &[(String, String)], statements: bool, signal: Signal) -> Result<Context, PolicyError> {
    let mut found: Option<Context> = None;
    for (p, text) in texts {
        let text = &collector_text(p, text)?;
        let c = ottl::infer_context(text, statements).map_err(|e| compile_error(p, text, e))?;
        found = match (found, c) {
            (None, c) | (c, None) => c,
            (Some(a), Some(b)) => Some(if rank(b) > rank(a) { b } else { a }),
        };
    }
    match found {
        Some(c) if signal.allows(c) => Ok(c),
        Some(c) => {
            Err(PolicyError::at(path, format!("the {} context does not apply here ({})", c.name(), signal.contexts())))
        }
        None => Err(PolicyError::at(
            path,
            "the context cannot be inferred: prefix the paths (span.attributes[...], log.body, resource.attributes[...]) \
             or give the group a context",
        )),
    }
}

fn rank(c: Context) -> u8 {
    match c {
        Context::Resource => 0,
        Context::Scope => 1,
        Context::Span | Context::Log => 2,
        Context::SpanEvent => 3,
    }
}

impl Compiler<'_> {
    /// Compiles the OTTL conditions of `filter:`.
    pub(super) fn filter_ottl(
        &mut self,
        f: &mut FilterConfig,
        default_mode: ErrorMode,
    ) -> Result<(OttlConditions, OttlConditions), PolicyError> {
        let mut traces = OttlConditions::default();
        let mut logs = OttlConditions::default();
        if let Some(t) = f.traces.take() {
            for (i, text) in t.span.iter().enumerate() {
                self.condition(&mut traces, format!("filter.traces.span[{i}]"), Context::Span, text, default_mode)?;
            }
            for (i, text) in t.spanevent.iter().enumerate() {
                let path = format!("filter.traces.spanevent[{i}]");
                self.condition(&mut traces, path, Context::SpanEvent, text, default_mode)?;
            }
        }
        if let Some(log_record) = f.logs.as_mut().and_then(|l| l.log_record.take()) {
            for (i, text) in log_record.iter().enumerate() {
                let path = format!("filter.logs.log_record[{i}]");
                self.condition(&mut logs, path, Context::Log, text, default_mode)?;
            }
        }
        for (entries, key, signal, out) in [
            (f.trace_conditions.take(), "trace_conditions", Signal::Traces, &mut traces),
            (f.log_conditions.take(), "log_conditions", Signal::Logs, &mut logs),
        ] {
            for (i, entry) in entries.unwrap_or_default().into_iter().enumerate() {
                let path = format!("filter.{key}[{i}]");
                match entry {
                    Yaml::String(text) => {
                        let c = inferred(&path, &[(path.clone(), text.clone())], false, signal)?;
                        self.condition(out, path, c, &text, default_mode)?;
                    }
                    group => {
                        let g: ConditionGroup = from_yaml(&path, group)?;
                        let mode = error_mode(&format!("{path}.error_mode"), g.error_mode.as_deref(), default_mode)?;
                        let texts: Vec<(String, String)> = g
                            .conditions
                            .iter()
                            .enumerate()
                            .map(|(j, t)| (format!("{path}.conditions[{j}]"), t.clone()))
                            .collect();
                        let c = match &g.context {
                            Some(name) => context(&path, name, signal)?,
                            None => inferred(&path, &texts, false, signal)?,
                        };
                        for (p, text) in texts {
                            self.condition(out, p, c, &text, mode)?;
                        }
                    }
                }
            }
        }
        for set in [&mut traces, &mut logs] {
            if set.conditions.iter().any(|c| c.error_mode != ErrorMode::Propagate) && set.error_rule.is_none() {
                set.error_rule = Some(self.rule(
                    "filter.error_mode",
                    "OTTL conditions that failed to evaluate and were taken as false (error_mode ignore/silent)",
                ));
            }
        }
        Ok((traces, logs))
    }

    fn condition(
        &mut self,
        out: &mut OttlConditions,
        path: String,
        context: Context,
        text: &str,
        error_mode: ErrorMode,
    ) -> Result<(), PolicyError> {
        let text = &collector_text(&path, text)?;
        let check = Check::compile(context, text).map_err(|e| compile_error(&path, text, e))?;
        let rule = self.rule(path.clone(), format!("drop {} where {text}", Signal::records(context)));
        out.conditions.push(OttlCondition { check, context, rule, error_mode, id: path });
        Ok(())
    }

    /// Compiles `transform:`.
    pub(super) fn transform(&mut self, t: TransformConfig) -> Result<Transform, PolicyError> {
        if t.metric_statements.is_some() {
            return Err(PolicyError::at(
                "transform.metric_statements",
                "metrics are not audit records; the audit processor handles traces and logs",
            ));
        }
        if t.profile_statements.is_some() {
            return Err(PolicyError::at(
                "transform.profile_statements",
                "profiles are not audit records; the audit processor handles traces and logs",
            ));
        }
        let mode = error_mode("transform.error_mode", t.error_mode.as_deref(), ErrorMode::Propagate)?;
        let mut transform = Transform::default();
        for (entries, key, signal) in [
            (t.trace_statements, "trace_statements", Signal::Traces),
            (t.log_statements, "log_statements", Signal::Logs),
        ] {
            for (i, entry) in entries.into_iter().enumerate() {
                let path = format!("transform.{key}[{i}]");
                let group = match entry {
                    Yaml::String(text) => {
                        let c = inferred(&path, &[(path.clone(), text.clone())], true, signal)?;
                        self.group(&path, c, Vec::new(), vec![(path.clone(), text)], mode)?
                    }
                    group => {
                        let g: StatementGroup = from_yaml(&path, group)?;
                        if g.statements.is_empty() {
                            return Err(PolicyError::at(format!("{path}.statements"), "a group needs statements"));
                        }
                        let mode = error_mode(&format!("{path}.error_mode"), g.error_mode.as_deref(), mode)?;
                        let statements: Vec<(String, String)> = g
                            .statements
                            .into_iter()
                            .enumerate()
                            .map(|(j, t)| (format!("{path}.statements[{j}]"), t))
                            .collect();
                        let conditions: Vec<(String, String)> = g
                            .conditions
                            .into_iter()
                            .enumerate()
                            .map(|(j, t)| (format!("{path}.conditions[{j}]"), t))
                            .collect();
                        let c = match &g.context {
                            Some(name) => context(&path, name, signal)?,
                            None => {
                                let mut all = statements.clone();
                                all.extend(conditions.iter().cloned());
                                inferred(&path, &all, true, signal)
                                    .or_else(|_| inferred(&path, &statements, true, signal))?
                            }
                        };
                        self.group(&path, c, conditions, statements, mode)?
                    }
                };
                match signal {
                    Signal::Traces => transform.traces.push(group),
                    Signal::Logs => transform.logs.push(group),
                }
            }
        }
        let any_lenient = transform.traces.iter().chain(&transform.logs).any(|g| g.error_mode != ErrorMode::Propagate);
        if any_lenient {
            transform.error_rule = Some(self.rule(
                "transform.error_mode",
                "OTTL statements that failed to evaluate and were skipped (error_mode ignore/silent)",
            ));
        }
        Ok(transform)
    }

    fn group(
        &mut self,
        path: &str,
        context: Context,
        conditions: Vec<(String, String)>,
        statements: Vec<(String, String)>,
        error_mode: ErrorMode,
    ) -> Result<Group, PolicyError> {
        let conditions = conditions
            .into_iter()
            .map(|(p, text)| {
                let text = collector_text(&p, &text)?;
                Check::compile(context, &text).map_err(|e| compile_error(&p, &text, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut compiled = Vec::with_capacity(statements.len());
        for (p, text) in statements {
            let text = collector_text(&p, &text)?;
            let statement = Statement::compile(context, &text).map_err(|e| compile_error(&p, &text, e))?;
            let rule = self.rule(p, format!("{} statement: {text}", context.name()));
            compiled.push((statement, rule));
        }
        Ok(Group { context, conditions, statements: compiled, error_mode, id: path.to_owned() })
    }
}

fn from_yaml<T: serde::de::DeserializeOwned>(path: &str, v: Yaml) -> Result<T, PolicyError> {
    if !matches!(v, Yaml::Mapping(_)) {
        return Err(PolicyError::at(path, format!("expected a string or a mapping, found {}", yaml_kind(&v))));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.path().to_string();
        let at = if inner == "." || inner.is_empty() { path.to_owned() } else { format!("{path}.{inner}") };
        PolicyError::at(at, e.into_inner().to_string())
    })
}
