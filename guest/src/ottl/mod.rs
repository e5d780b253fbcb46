//! OTTL, the OpenTelemetry Transformation Language, as the Collector's
//! `filter` and `transform` processors use it: statements and conditions
//! are parsed and compiled once, at `configure`, and evaluated per record
//! reading the record in place (a path or a literal allocates nothing).
//!
//! [`grammar`] parses (over `lexer`'s tokens) into an [`ast`], [`expr`]
//! compiles and evaluates values and conditions over the paths of a
//! [`Context`] ([`context`]) on a [`record`] it reads or writes,
//! [`converters`] and [`editors`] are the functions. What the Collector
//! does and this does not (`Now()`, time paths, writes to a resource from
//! a span statement) is refused at configure time with the reason.

mod args;
pub mod ast;
pub mod context;
pub mod converters;
pub mod editors;
pub mod expr;
pub mod grammar;
mod lexer;
pub mod reads;
pub mod record;
pub mod value;

pub use context::Context;
use editors::Editor;
use expr::{Compiler, Condition};
pub use record::{Subject, View};

/// A statement or condition that does not compile: the 1-based column and
/// what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// 1-based column in the statement.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl CompileError {
    fn at(column: usize, message: impl Into<String>) -> Self {
        CompileError { column, message: message.into() }
    }
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl From<grammar::SyntaxError> for CompileError {
    fn from(e: grammar::SyntaxError) -> Self {
        CompileError { column: e.column, message: e.message }
    }
}

/// A failure while evaluating a statement or condition on one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError(pub String);

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a condition or statement that fails to evaluate does, as the
/// Collector's `error_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorMode {
    /// Refuse the batch with the error (the default).
    #[default]
    Propagate,
    /// Treat the condition as false, skip the statement; counted.
    Ignore,
    /// As `Ignore` (the Collector does not log it; both are counted here).
    Silent,
}

impl ErrorMode {
    /// The mode a config names.
    pub fn parse(name: &str) -> Option<ErrorMode> {
        match name {
            "propagate" => Some(ErrorMode::Propagate),
            "ignore" => Some(ErrorMode::Ignore),
            "silent" => Some(ErrorMode::Silent),
            _ => None,
        }
    }

    /// What a failed evaluation does: under `propagate` it is the error
    /// (`describe` says which and why); otherwise it counts under
    /// `error_rule` and processing goes on.
    pub fn on_error(
        self,
        error_rule: Option<usize>,
        hits: &mut [u64],
        describe: impl FnOnce() -> String,
    ) -> Result<(), String> {
        match self {
            ErrorMode::Propagate => Err(describe()),
            ErrorMode::Ignore | ErrorMode::Silent => {
                if let Some(rule) = error_rule {
                    hits[rule] += 1;
                }
                Ok(())
            }
        }
    }
}

/// A compiled condition, with its text for messages.
#[derive(Debug)]
pub struct Check {
    condition: Condition,
    /// The condition as written.
    pub text: String,
}

impl Check {
    /// Compiles a condition in `context`.
    pub fn compile(context: Context, text: &str) -> Result<Check, CompileError> {
        let parsed = grammar::condition(text)?;
        let condition = Compiler { context }.condition(&parsed)?;
        Ok(Check { condition, text: text.to_owned() })
    }

    /// Whether the condition holds for a record.
    pub fn eval(&self, v: &View) -> Result<bool, EvalError> {
        self.condition.eval(v)
    }
}

/// A compiled statement: an editor and its optional `where` condition.
#[derive(Debug)]
pub struct Statement {
    editor: Editor,
    condition: Option<Condition>,
    /// The statement as written.
    pub text: String,
}

impl Statement {
    /// Compiles a statement in `context`.
    pub fn compile(context: Context, text: &str) -> Result<Statement, CompileError> {
        let parsed = grammar::statement(text)?;
        let compiler = Compiler { context };
        let editor = Editor::compile(&compiler, &parsed.editor)?;
        let condition = parsed.condition.as_ref().map(|c| compiler.condition(c)).transpose()?;
        Ok(Statement { editor, condition, text: text.to_owned() })
    }

    /// Runs the statement on a record; whether its condition held (and so
    /// the editor ran).
    pub fn run(&self, s: &mut Subject) -> Result<bool, EvalError> {
        if let Some(c) = &self.condition
            && !c.eval(&s.view())?
        {
            return Ok(false);
        }
        self.editor.run(s)?;
        Ok(true)
    }
}

/// The context a statement or condition written without a group runs in,
/// inferred from its paths' prefixes as the Collector does: the most
/// specific context any path names (`spanevent` over `span` over `scope`
/// over `resource`; `log` over `scope`). `None` when no path has a prefix.
pub fn infer_context(text: &str, statement: bool) -> Result<Option<Context>, CompileError> {
    let mut prefixes = Vec::new();
    if statement {
        let s = grammar::statement(text)?;
        s.editor.args.iter().for_each(|a| collect_prefixes(&a.value, &mut prefixes));
        if let Some(c) = &s.condition {
            collect_condition_prefixes(c, &mut prefixes);
        }
    } else {
        collect_condition_prefixes(&grammar::condition(text)?, &mut prefixes);
    }
    let rank = |c: Context| match c {
        Context::Resource => 0,
        Context::Scope => 1,
        Context::Span | Context::Log => 2,
        Context::SpanEvent => 3,
    };
    if prefixes.contains(&Context::Span) && prefixes.contains(&Context::Log) {
        return Err(CompileError::at(1, "paths name both span and log: one statement runs on one kind of record"));
    }
    Ok(prefixes.into_iter().max_by_key(|c| rank(*c)))
}

fn collect_condition_prefixes(c: &grammar::Condition, out: &mut Vec<Context>) {
    use grammar::Condition as C;
    match c {
        C::Or(cs) | C::And(cs) => cs.iter().for_each(|c| collect_condition_prefixes(c, out)),
        C::Not(c) => collect_condition_prefixes(c, out),
        C::Const(_) => {}
        C::Compare(l, _, r) => {
            collect_prefixes(l, out);
            collect_prefixes(r, out);
        }
        C::Call(call) => call.args.iter().for_each(|a| collect_prefixes(&a.value, out)),
    }
}

fn collect_prefixes(v: &grammar::Value, out: &mut Vec<Context>) {
    use grammar::Value as V;
    match v {
        V::Path(p) => {
            let first = p.fields[0].name.as_str();
            if p.fields.len() > 1
                && let Some(c) = Context::parse(first)
            {
                out.push(c);
            }
            for f in &p.fields {
                for k in &f.keys {
                    if let grammar::Key::Expr(e) = k {
                        collect_prefixes(e, out);
                    }
                }
            }
        }
        V::Call(c) => c.args.iter().for_each(|a| collect_prefixes(&a.value, out)),
        V::List(items) => items.iter().for_each(|i| collect_prefixes(i, out)),
        V::Map(entries) => entries.iter().for_each(|(_, v)| collect_prefixes(v, out)),
        V::Math(l, _, r, _) => {
            collect_prefixes(l, out);
            collect_prefixes(r, out);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
