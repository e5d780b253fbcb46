//! The Collector's own OTTL parser tests, as a corpus: every statement (`S `)
//! and condition (`C `) of `tests/fixtures/ottl/grammar-valid.txt` and
//! `grammar-invalid.txt` (taken from `pkg/ottl/parser_test.go` and
//! `LANGUAGE.md`; their comments say where each came from).
//!
//! A valid line must parse, and compile in its context (inferred from its
//! path prefixes as a flat policy statement is, else `span`), unless it is
//! listed in [`SEMANTIC`] with the reason our build refuses it: those are
//! checked to parse, and to be refused with that reason. A line whose paths
//! or functions exist only in the Collector's test harness is adapted in the
//! fixture, with the line as the Collector wrote it in a `# original:`
//! comment above; the original must still parse.
//!
//! An invalid line must be refused by the parser, as a statement or a
//! condition, and so by `compile` in every context, with a column inside the
//! line (or one past its end: "expected …, found the end of the
//! statement"). Where the Collector's test names the message, ours must say
//! the same thing in our words ([`SAME_MESSAGE`]).
//!
//! What the corpus found: `"test" == Foo` parsed (a mixed-case name was
//! taken as an enum); it is now refused as the Collector refuses it, and a
//! mixed-case name is a function reference only as a whole argument.
//! Deviations kept: the messages are ours; where the Collector's test
//! asserts two messages for one line (two of its test rows), ours names
//! the first problem met; a trailing space is insignificant, as there.

use audit_processor::ottl::{Check, CompileError, Context, Statement, grammar, infer_context};

/// Valid lines our build refuses at compile time: (line, what the error
/// says, why). The Collector accepts each of them at the grammar level
/// (they come from its grammar tests).
const SEMANTIC: &[(&str, &str, &str)] = &[
    (
        r#"S set(attributes["test"], 1000 - 600) where 1 + 1 * 2 == attributes["three"] / Now()"#,
        "Now() is not available",
        "Now() is refused: the component has no clock (a deliberate difference, see the README)",
    ),
    (
        r#"C 1 + 1 * 2 == attributes["three"] / Now()"#,
        "Now() is not available",
        "Now() is refused: the component has no clock (a deliberate difference, see the README)",
    ),
    (
        r#"S set(span.attributes["x"]["y"], UUID()[0]["pass"])"#,
        "undefined function \"UUID\"",
        "UUID() is not implemented: the component is deterministic (a pure function of policy and batch)",
    ),
    (
        r#"C UUID() == 1"#,
        "undefined function \"UUID\"",
        "UUID() is not implemented: the component is deterministic (a pure function of policy and batch)",
    ),
    (
        r#"S convert_gauge_to_sum("cumulative", false)"#,
        "undefined function \"convert_gauge_to_sum\"",
        "a metrics-only editor; the component processes spans and logs",
    ),
    (
        r#"S convert_gauge_to_sum("cumulative", true)"#,
        "undefined function \"convert_gauge_to_sum\"",
        "a metrics-only editor; the component processes spans and logs",
    ),
    (
        r#"S replace_pattern(attributes["message"], "device=*", "$$1", Sha256)"#,
        "Sha256 is not a function this build can apply",
        "a mixed-case function reference parses (the grammar test's point) but names no hash function; \
         the Collector's full parser refuses it too",
    ),
];

/// A Collector error message named by an `# error contains:` comment, and
/// what ours says instead.
const SAME_MESSAGE: &[(&str, &str)] = &[
    ("converter names must start with an uppercase letter", "converters start upper case"),
    ("only paths and converters may be indexed", "cannot be indexed"),
];

#[derive(Debug)]
struct Line {
    /// 1-based line number in the fixture.
    number: usize,
    statement: bool,
    text: String,
    /// The Collector's line, when this one is adapted.
    original: Option<String>,
    /// `# error contains:` comments above the line.
    error_contains: Vec<String>,
}

fn corpus(file: &str) -> Vec<Line> {
    let path = format!("{}/../tests/fixtures/ottl/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = Vec::new();
    let mut original = None;
    let mut error_contains = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            if let Some(o) = comment.strip_prefix("original: ") {
                assert!(o.starts_with("S ") || o.starts_with("C "), "{file}:{}: original without S/C", i + 1);
                original = Some(o.to_owned());
            }
            if let Some(m) = comment.strip_prefix("error contains") {
                error_contains.push(m.to_owned());
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let (statement, text) = match line.split_at_checked(2) {
            Some(("S ", t)) => (true, t),
            Some(("C ", t)) => (false, t),
            _ => panic!("{file}:{}: neither `S `, `C ` nor a comment: {line:?}", i + 1),
        };
        lines.push(Line {
            number: i + 1,
            statement,
            text: text.to_owned(),
            original: original.take(),
            error_contains: std::mem::take(&mut error_contains),
        });
    }
    lines
}

fn prefixed(l: &Line) -> String {
    format!("{} {}", if l.statement { "S" } else { "C" }, l.text)
}

fn parse(statement: bool, text: &str) -> Result<(), grammar::SyntaxError> {
    if statement { grammar::statement(text).map(|_| ()) } else { grammar::condition(text).map(|_| ()) }
}

fn compile(statement: bool, context: Context, text: &str) -> Result<(), CompileError> {
    if statement { Statement::compile(context, text).map(|_| ()) } else { Check::compile(context, text).map(|_| ()) }
}

/// The column is inside the line, or one past its end.
fn assert_column(where_: &str, text: &str, column: usize, message: &str) {
    let len = text.chars().count();
    assert!((1..=len + 1).contains(&column), "{where_}: column {column} outside 1..={} ({message})", len + 1);
}

#[test]
fn valid_lines_parse_and_compile() {
    let lines = corpus("grammar-valid.txt");
    let mut compiled = 0;
    let mut semantic = 0;
    let mut used = vec![false; SEMANTIC.len()];
    for l in &lines {
        let at = format!("grammar-valid.txt:{} `{}`", l.number, prefixed(l));
        if let Some(o) = &l.original {
            let (kind, text) = o.split_at(2);
            parse(kind == "S ", text).unwrap_or_else(|e| panic!("{at}: the original `{o}` does not parse: {e}"));
        }
        parse(l.statement, &l.text).unwrap_or_else(|e| panic!("{at}: does not parse: {e}"));
        let context = infer_context(&l.text, l.statement)
            .unwrap_or_else(|e| panic!("{at}: no context: {e}"))
            .unwrap_or(Context::Span);
        let result = compile(l.statement, context, &l.text);
        match SEMANTIC.iter().position(|(line, ..)| *line == prefixed(l)) {
            Some(i) => {
                used[i] = true;
                let (_, says, why) = SEMANTIC[i];
                let e = result.err().unwrap_or_else(|| panic!("{at}: listed as refused ({why}) but compiles"));
                assert!(e.message.contains(says), "{at}: refused for another reason than {says:?}: {e}");
                assert_column(&at, &l.text, e.column, &e.message);
                semantic += 1;
            }
            None => {
                result.unwrap_or_else(|e| panic!("{at}: does not compile in the {} context: {e}", context.name()));
                compiled += 1;
            }
        }
    }
    for (i, (line, ..)) in SEMANTIC.iter().enumerate() {
        assert!(used[i], "SEMANTIC lists a line the corpus does not have: {line}");
    }
    assert_eq!(compiled + semantic, lines.len());
    assert!(lines.len() >= 100 && compiled >= 93, "only {compiled} of {} valid lines compiled", lines.len());
    println!(
        "grammar-valid.txt: {} lines, {compiled} compile, {semantic} parse but are refused (SEMANTIC)",
        lines.len()
    );
}

#[test]
fn invalid_lines_are_refused_with_a_column() {
    let lines = corpus("grammar-invalid.txt");
    for l in &lines {
        let at = format!("grammar-invalid.txt:{} `{}`", l.number, prefixed(l));
        assert!(l.original.is_none(), "{at}: invalid lines are not adapted");
        let e = parse(l.statement, &l.text).err().unwrap_or_else(|| panic!("{at}: parses"));
        assert_column(&at, &l.text, e.column, &e.message);
        for context in [Context::Resource, Context::Scope, Context::Span, Context::SpanEvent, Context::Log] {
            let c = compile(l.statement, context, &l.text)
                .err()
                .unwrap_or_else(|| panic!("{at}: compiles in the {} context", context.name()));
            assert_eq!((c.column, &c.message), (e.column, &e.message), "{at}: compile and parse disagree");
        }
        // The Collector's message, in our words: for a line whose test
        // names two messages (two test rows), ours is the first we meet.
        let expected: Vec<&str> = SAME_MESSAGE
            .iter()
            .filter(|(theirs, _)| l.error_contains.iter().any(|c| c.contains(theirs)))
            .map(|(_, ours)| *ours)
            .collect();
        let named_but_unmapped = l
            .error_contains
            .iter()
            .any(|c| !SAME_MESSAGE.iter().any(|(theirs, _)| c.contains(theirs)) && !c.contains("invalid syntax"));
        assert!(!named_but_unmapped, "{at}: {:?} has no counterpart in SAME_MESSAGE", l.error_contains);
        assert!(
            expected.is_empty() || expected.iter().any(|ours| e.message.contains(ours)),
            "{at}: the Collector says {:?}, ours {:?}",
            l.error_contains,
            e.message
        );
    }
    assert!(lines.len() >= 74, "only {} invalid lines", lines.len());
    println!("grammar-invalid.txt: {} lines, all refused", lines.len());
}
