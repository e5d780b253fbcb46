//! The `filter:` section (the Collector's filter processor): include and
//! exclude blocks for spans and logs, each a rule.

use super::config::*;
use super::matcher::{LogNames, Signal, matcher, span_matcher};
use super::*;
use crate::ottl::ErrorMode;

impl Compiler<'_> {
    pub(super) fn filter(&mut self, mut f: FilterConfig) -> Result<Filter, PolicyError> {
        let mode = match f.error_mode.as_deref() {
            None => ErrorMode::Propagate,
            Some(m) => ErrorMode::parse(m).ok_or_else(|| {
                PolicyError::at("filter.error_mode", format!("'{m}' is not one of ignore, silent, propagate"))
            })?,
        };
        for (set, key) in
            [(f.metrics.is_some(), "filter.metrics"), (f.metric_conditions.is_some(), "filter.metric_conditions")]
        {
            if set {
                return Err(PolicyError::at(
                    key,
                    "metrics are not audit records; the audit processor handles traces and logs",
                ));
            }
        }
        // The Collector refuses a config mixing the two forms for a signal.
        let ottl_spans = f.traces.is_some() || f.trace_conditions.is_some();
        let ottl_logs = f.logs.as_ref().is_some_and(|l| l.log_record.is_some()) || f.log_conditions.is_some();
        if ottl_spans && f.spans.is_some() {
            return Err(PolicyError::at(
                "filter.spans",
                "cannot use OTTL conditions (traces / trace_conditions) and include/exclude for spans at the same time",
            ));
        }
        if ottl_logs && f.logs.as_ref().is_some_and(|l| l.include.is_some() || l.exclude.is_some()) {
            return Err(PolicyError::at(
                "filter.logs",
                "cannot use OTTL conditions (log_record / log_conditions) and include/exclude for logs at the same time",
            ));
        }
        let (trace_conditions, log_conditions) = self.filter_ottl(&mut f, mode)?;
        let mut filter = Filter { trace_conditions, log_conditions, ..Filter::default() };
        if let Some(spans) = f.spans {
            filter.spans = self.include_exclude_spans("filter.spans", spans.include, spans.exclude)?;
            if filter.spans.is_empty() {
                return Err(PolicyError::at("filter.spans", "neither include nor exclude is set"));
            }
        }
        if let Some(logs) = f.logs.filter(|l| l.include.is_some() || l.exclude.is_some() || !ottl_logs) {
            let include = logs.include.map(|m| (self.log_matcher("filter.logs.include", m), "filter.logs.include"));
            let exclude = logs.exclude.map(|m| (self.log_matcher("filter.logs.exclude", m), "filter.logs.exclude"));
            filter.logs = self.register(include, exclude)?;
            if filter.logs.is_empty() {
                return Err(PolicyError::at("filter.logs", "neither include nor exclude is set"));
            }
        }
        Ok(filter)
    }

    fn include_exclude_spans(
        &mut self,
        path: &str,
        include: Option<MatchProperties>,
        exclude: Option<MatchProperties>,
    ) -> Result<IncludeExclude, PolicyError> {
        let include_path = format!("{path}.include");
        let exclude_path = format!("{path}.exclude");
        let include = include.map(|m| (span_matcher(&include_path, m), include_path.as_str()));
        let exclude = exclude.map(|m| (span_matcher(&exclude_path, m), exclude_path.as_str()));
        self.register(include, exclude)
    }

    /// Adds the include/exclude rules in policy order.
    pub(super) fn register(
        &mut self,
        include: Option<(CompiledMatcher, &str)>,
        exclude: Option<(CompiledMatcher, &str)>,
    ) -> Result<IncludeExclude, PolicyError> {
        let mut out = IncludeExclude::default();
        if let Some((matcher, path)) = include {
            let (matcher, summary) = matcher?;
            out.include = Some((matcher, self.rule(path, format!("keep only records matching {summary}"))));
        }
        if let Some((matcher, path)) = exclude {
            let (matcher, summary) = matcher?;
            out.exclude = Some((matcher, self.rule(path, format!("drop records matching {summary}"))));
        }
        Ok(out)
    }

    fn log_matcher(&mut self, path: &str, m: LogMatchProperties) -> CompiledMatcher {
        let props = MatchProperties {
            match_type: m.match_type,
            attributes: m.record_attributes,
            resources: m.resource_attributes,
            log_bodies: m.bodies,
            log_severity_texts: m.severity_texts,
            log_severity_number: m.severity_number,
            ..MatchProperties::default()
        };
        let names = LogNames {
            attributes: "record_attributes",
            resources: "resource_attributes",
            bodies: "bodies",
            severity_texts: "severity_texts",
            severity_number: "severity_number",
        };
        matcher(path, props, Signal::Logs(names))
    }
}
