//! The `filter:` section (the Collector's filter processor): include and
//! exclude blocks for spans and logs, each a rule.

use super::config::*;
use super::matcher::{LogNames, Signal, matcher, span_matcher};
use super::*;

impl Compiler<'_> {
    pub(super) fn filter(&mut self, f: FilterConfig) -> Result<Filter, PolicyError> {
        if let Some(mode) = &f.error_mode
            && !["ignore", "silent", "propagate"].contains(&mode.as_str())
        {
            return Err(PolicyError::at(
                "filter.error_mode",
                format!("'{mode}' is not one of ignore, silent, propagate"),
            ));
        }
        if f.traces.is_some() {
            return Err(PolicyError::at(
                "filter.traces",
                "OTTL conditions are not supported yet; use filter.spans.include / filter.spans.exclude",
            ));
        }
        if f.metrics.is_some() {
            return Err(PolicyError::at(
                "filter.metrics",
                "metrics are not audit records; the audit processor handles traces and logs",
            ));
        }
        let mut filter = Filter::default();
        if let Some(spans) = f.spans {
            filter.spans = self.include_exclude_spans("filter.spans", spans.include, spans.exclude)?;
            if filter.spans.is_empty() {
                return Err(PolicyError::at("filter.spans", "neither include nor exclude is set"));
            }
        }
        if let Some(logs) = f.logs {
            if logs.log_record.is_some() {
                return Err(PolicyError::at(
                    "filter.logs.log_record",
                    "OTTL conditions are not supported yet; use filter.logs.include / filter.logs.exclude",
                ));
            }
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
