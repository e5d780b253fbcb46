//! The transformprocessor's OTTL statements, in groups (`context:`,
//! `conditions:`, `statements:`, `error_mode:`): each group runs on every
//! record of its context, its statements in order, when any of its
//! conditions holds (or it has none).
//!
//! Resource and scope groups run once per resource and scope of the batch,
//! after the filter and the attributes actions and before the span, span
//! event and log groups (whatever their order in the policy): a resource
//! is hashed into each of its records, so it is settled before any record
//! is written. Span event groups run on every event of each kept span.

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::ottl::record::{ItemMut, Slot};
use crate::ottl::{Check, Context, ErrorMode, EvalError, Statement, Subject};

/// One group of statements.
#[derive(Debug)]
pub struct Group {
    /// The context its statements run in.
    pub context: Context,
    /// Any of these must hold for the statements to run (none: always).
    pub conditions: Vec<Check>,
    /// The statements with their rule indexes (hits count the records a
    /// statement changed, i.e. its `where` held).
    pub statements: Vec<(Statement, usize)>,
    /// What an evaluation error does.
    pub error_mode: ErrorMode,
    /// Its policy key path, for errors.
    pub id: String,
}

/// The `transform:` section.
#[derive(Debug, Default)]
pub struct Transform {
    /// `trace_statements`, in policy order.
    pub traces: Vec<Group>,
    /// `log_statements`, in policy order.
    pub logs: Vec<Group>,
    /// The rule counting evaluation errors `ignore`/`silent` skipped.
    pub error_rule: Option<usize>,
}

impl Group {
    fn run(&self, subject: &mut Subject, error_rule: Option<usize>, hits: &mut [u64]) -> Result<(), String> {
        let failed = |text: &str, e: EvalError, hits: &mut [u64]| {
            self.error_mode.on_error(error_rule, hits, || format!("{} `{text}` failed: {e}", self.id))
        };
        if !self.conditions.is_empty() {
            let mut any = false;
            for c in &self.conditions {
                match c.eval(&subject.view()) {
                    Ok(true) => {
                        any = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => failed(&c.text, e, hits)?,
                }
            }
            if !any {
                return Ok(());
            }
        }
        for (statement, rule) in &self.statements {
            match statement.run(subject) {
                Ok(true) => hits[*rule] += 1,
                Ok(false) => {}
                Err(e) => failed(&statement.text, e, hits)?,
            }
        }
        Ok(())
    }
}

impl Transform {
    /// Whether the section has no statements for `groups`.
    fn groups(&self, traces: bool) -> &[Group] {
        if traces { &self.traces } else { &self.logs }
    }

    /// Runs the resource groups on a resource.
    pub fn resource(&self, traces: bool, resource: &mut Option<Resource>, hits: &mut [u64]) -> Result<(), String> {
        for g in self.groups(traces).iter().filter(|g| g.context == Context::Resource) {
            let mut subject = Subject {
                resource: Slot::Mut(resource),
                scope: Slot::Shared(None),
                item: ItemMut::None,
                cache: Vec::new(),
            };
            g.run(&mut subject, self.error_rule, hits)?;
        }
        Ok(())
    }

    /// Runs the scope groups on a scope.
    pub fn scope(
        &self,
        traces: bool,
        resource: Option<&Resource>,
        scope: &mut Option<InstrumentationScope>,
        hits: &mut [u64],
    ) -> Result<(), String> {
        for g in self.groups(traces).iter().filter(|g| g.context == Context::Scope) {
            let mut subject = Subject {
                resource: Slot::Shared(resource),
                scope: Slot::Mut(scope),
                item: ItemMut::None,
                cache: Vec::new(),
            };
            g.run(&mut subject, self.error_rule, hits)?;
        }
        Ok(())
    }

    /// Runs the span and span event groups on a span, in policy order.
    pub fn span(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        span: &mut Span,
        hits: &mut [u64],
    ) -> Result<(), String> {
        for g in &self.traces {
            match g.context {
                Context::Span => {
                    let mut subject = Subject {
                        resource: Slot::Shared(resource),
                        scope: Slot::Shared(scope),
                        item: ItemMut::Span(span),
                        cache: Vec::new(),
                    };
                    g.run(&mut subject, self.error_rule, hits)?;
                }
                Context::SpanEvent => {
                    for i in 0..span.events.len() {
                        let mut subject = Subject {
                            resource: Slot::Shared(resource),
                            scope: Slot::Shared(scope),
                            item: ItemMut::SpanEvent(span, i),
                            cache: Vec::new(),
                        };
                        g.run(&mut subject, self.error_rule, hits)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs the log groups on a log record.
    pub fn log(
        &self,
        resource: Option<&Resource>,
        scope: Option<&InstrumentationScope>,
        log: &mut LogRecord,
        hits: &mut [u64],
    ) -> Result<(), String> {
        for g in self.logs.iter().filter(|g| g.context == Context::Log) {
            let mut subject = Subject {
                resource: Slot::Shared(resource),
                scope: Slot::Shared(scope),
                item: ItemMut::Log(log),
                cache: Vec::new(),
            };
            g.run(&mut subject, self.error_rule, hits)?;
        }
        Ok(())
    }
}
