//! OTTL's grammar: a recursive-descent parser over the lexer's tokens,
//! producing the [`ast`](super::ast) that
//! [`expr`](super::expr) compiles into executable code.
//!
//! It follows the Collector's `pkg/ottl/grammar.go` (a participle grammar):
//! a statement is an editor call (`lower_case(...)`) with an optional
//! `where` condition; a condition is `or` of `and` of optionally negated
//! comparisons, booleans, converter calls (`UpperCase(...)`) and
//! parenthesised conditions; a value is `nil`, a string, an int, a float,
//! bytes (`0x…`), a boolean, an enum (`SPAN_KIND_SERVER`), a path
//! (`resource.attributes["k"][0]`), a converter call with optional keys, a
//! list `[…]`, a map `{"k": v}`, or a math expression (`+ - * /`). Errors
//! carry the 1-based column of the offending token.

use std::fmt;

pub use super::ast::*;
use super::lexer::{Tok, lex};

/// A syntax error: the 1-based column and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based column (in characters) of the offending token.
    pub column: usize,
    /// What is wrong, e.g. `expected a value, found "=="`.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

/// Parses a statement (`set(name, "x") where kind == SPAN_KIND_SERVER`).
pub fn statement(text: &str) -> Result<Statement, SyntaxError> {
    let mut p = Parser::new(text)?;
    let editor = match p.peek() {
        Tok::Lower(_) => p.call()?,
        Tok::Upper(name) => {
            return Err(p.error_here(format!(
                "{name:?} is a converter (upper case); a statement starts with an editor (lower case), e.g. set(...)"
            )));
        }
        _ => return Err(p.expected("an editor call, e.g. set(...)")),
    };
    if !editor.keys.is_empty() {
        return Err(SyntaxError { column: editor.column, message: "an editor's result cannot be indexed".into() });
    }
    let condition = match p.peek() {
        Tok::Lower(w) if w == "where" => {
            p.next();
            Some(p.condition()?)
        }
        _ => None,
    };
    p.end()?;
    Ok(Statement { editor, condition })
}

/// Parses a condition (`attributes["x"] == "y" and not IsMatch(name, "^GET")`).
pub fn condition(text: &str) -> Result<Condition, SyntaxError> {
    let mut p = Parser::new(text)?;
    let c = p.condition()?;
    p.end()?;
    Ok(c)
}

/// What a parenthesised part of a condition turned out to be.
enum Atom {
    Cond(Condition),
    Val(Value),
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
    /// How deeply values and conditions nest here, bounded so a hostile
    /// policy cannot exhaust the stack.
    depth: usize,
}

/// The deepest nesting of parentheses, lists, maps and calls accepted.
const MAX_DEPTH: usize = 64;

impl Parser {
    fn new(text: &str) -> Result<Parser, SyntaxError> {
        Ok(Parser { toks: lex(text)?, at: 0, depth: 0 })
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        &self.toks[(self.at + ahead).min(self.toks.len() - 1)].0
    }

    fn column(&self) -> usize {
        self.toks[self.at].1
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.at].0.clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }

    fn error_here(&self, message: String) -> SyntaxError {
        SyntaxError { column: self.column(), message }
    }

    fn expected(&self, what: &str) -> SyntaxError {
        self.error_here(format!("expected {what}, found {}", self.peek()))
    }

    fn expect(&mut self, tok: Tok) -> Result<(), SyntaxError> {
        if *self.peek() == tok {
            self.next();
            Ok(())
        } else {
            Err(self.expected(&tok.to_string()))
        }
    }

    fn end(&self) -> Result<(), SyntaxError> {
        match self.peek() {
            Tok::End => Ok(()),
            t => Err(self.error_here(format!("unexpected {t} after a complete expression"))),
        }
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Lower(w) if w == word)
    }

    fn nested<T>(&mut self, parse: impl FnOnce(&mut Self) -> Result<T, SyntaxError>) -> Result<T, SyntaxError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error_here(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn condition(&mut self) -> Result<Condition, SyntaxError> {
        self.nested(Self::or_terms)
    }

    fn or_terms(&mut self) -> Result<Condition, SyntaxError> {
        let mut any = vec![self.and_term()?];
        while self.is_word("or") {
            self.next();
            any.push(self.and_term()?);
        }
        Ok(if any.len() == 1 { any.pop().expect("one term") } else { Condition::Or(any) })
    }

    fn and_term(&mut self) -> Result<Condition, SyntaxError> {
        let mut all = vec![self.bool_value()?];
        while self.is_word("and") {
            self.next();
            all.push(self.bool_value()?);
        }
        Ok(if all.len() == 1 { all.pop().expect("one term") } else { Condition::And(all) })
    }

    fn bool_value(&mut self) -> Result<Condition, SyntaxError> {
        let column = self.column();
        match self.bool_atom()? {
            Atom::Cond(c) => Ok(c),
            Atom::Val(v) => self.as_condition(v, column),
        }
    }

    /// A bare value where a condition is due: booleans and converter calls
    /// are conditions, anything else lacks a comparison.
    fn as_condition(&self, v: Value, column: usize) -> Result<Condition, SyntaxError> {
        match v {
            Value::Bool(b) => Ok(Condition::Const(b)),
            Value::Call(call) => Ok(Condition::Call(call)),
            _ if !matches!(self.peek(), Tok::End | Tok::RParen) => {
                Err(self.expected("a comparison operator (==, !=, <, <=, >, >=) after the value"))
            }
            _ => Err(SyntaxError {
                column,
                message: "expected a condition (a comparison, true/false or a converter call), found a value; \
                          a comparison operator is missing"
                    .into(),
            }),
        }
    }

    /// A negation, a parenthesised condition or value, or a comparison; a
    /// value with no comparison after it is returned as such, so the
    /// caller decides (a parenthesised value may go on into math and a
    /// comparison: `(1 + 2) * 3 == 9`). One pass, no backtracking.
    fn bool_atom(&mut self) -> Result<Atom, SyntaxError> {
        if self.is_word("not") {
            self.next();
            return Ok(Atom::Cond(Condition::Not(Box::new(self.nested(Self::bool_value)?))));
        }
        if *self.peek() == Tok::LParen {
            self.next();
            let inner = self.nested(Self::condition_or_value)?;
            self.expect(Tok::RParen)?;
            return match inner {
                Atom::Cond(c) => {
                    if matches!(self.peek(), Tok::Cmp(_) | Tok::Plus | Tok::Minus | Tok::Star | Tok::Slash) {
                        return Err(self.error_here(format!("a condition cannot be an operand of {}", self.peek())));
                    }
                    Ok(Atom::Cond(c))
                }
                Atom::Val(v) => {
                    let product = self.term_from(v)?;
                    let left = self.sum_from(product)?;
                    self.comparison_from(left)
                }
            };
        }
        let left = self.value()?;
        self.comparison_from(left)
    }

    fn comparison_from(&mut self, left: Value) -> Result<Atom, SyntaxError> {
        if let Tok::Cmp(op) = *self.peek() {
            self.next();
            let right = self.value()?;
            return Ok(Atom::Cond(Condition::Compare(left, op, right)));
        }
        Ok(Atom::Val(left))
    }

    /// Inside parentheses: a condition (`a == 1 or b`), or a lone value.
    fn condition_or_value(&mut self) -> Result<Atom, SyntaxError> {
        let column = self.column();
        let first = self.bool_atom()?;
        if !self.is_word("and") && !self.is_word("or") {
            return Ok(first);
        }
        let first = match first {
            Atom::Cond(c) => c,
            Atom::Val(v) => self.as_condition(v, column)?,
        };
        let mut all = vec![first];
        while self.is_word("and") {
            self.next();
            all.push(self.bool_value()?);
        }
        let mut any = vec![if all.len() == 1 { all.pop().expect("one term") } else { Condition::And(all) }];
        while self.is_word("or") {
            self.next();
            any.push(self.and_term()?);
        }
        Ok(Atom::Cond(if any.len() == 1 { any.pop().expect("one term") } else { Condition::Or(any) }))
    }

    /// A value, with math (`+ -` over `* /`, left-associative).
    fn value(&mut self) -> Result<Value, SyntaxError> {
        self.nested(Self::sum)
    }

    fn sum(&mut self) -> Result<Value, SyntaxError> {
        let first = self.term()?;
        self.sum_from(first)
    }

    /// `+ -` terms after `left`.
    fn sum_from(&mut self, mut left: Value) -> Result<Value, SyntaxError> {
        loop {
            let op = match self.peek() {
                Tok::Plus => MathOp::Add,
                Tok::Minus => MathOp::Sub,
                _ => return Ok(left),
            };
            let column = self.column();
            self.next();
            let right = self.term()?;
            check_math_operand(&left, column)?;
            check_math_operand(&right, column)?;
            left = Value::Math(Box::new(left), op, Box::new(right), column);
        }
    }

    fn term(&mut self) -> Result<Value, SyntaxError> {
        let first = self.factor()?;
        self.term_from(first)
    }

    /// `* /` factors after `left`.
    fn term_from(&mut self, mut left: Value) -> Result<Value, SyntaxError> {
        loop {
            let op = match self.peek() {
                Tok::Star => MathOp::Mul,
                Tok::Slash => MathOp::Div,
                _ => return Ok(left),
            };
            let column = self.column();
            self.next();
            let right = self.factor()?;
            check_math_operand(&left, column)?;
            check_math_operand(&right, column)?;
            left = Value::Math(Box::new(left), op, Box::new(right), column);
        }
    }

    fn factor(&mut self) -> Result<Value, SyntaxError> {
        let column = self.column();
        match self.peek().clone() {
            Tok::Lower(w) if w == "nil" => {
                self.next();
                Ok(Value::Nil)
            }
            Tok::Lower(w) if w == "true" || w == "false" => {
                self.next();
                Ok(Value::Bool(w == "true"))
            }
            Tok::Lower(w) if matches!(w.as_str(), "and" | "or" | "not" | "where") => {
                Err(self.error_here(format!("expected a value, found the keyword {w:?}")))
            }
            Tok::Lower(_) => {
                if *self.peek_at(1) == Tok::LParen {
                    let call = self.call()?;
                    return Err(SyntaxError {
                        column: call.column,
                        message: format!(
                            "{:?} is an editor (lower case) and cannot be used as a value; converters start upper case",
                            call.name
                        ),
                    });
                }
                Ok(Value::Path(self.path()?))
            }
            Tok::Upper(name) => {
                if *self.peek_at(1) == Tok::LParen {
                    return Ok(Value::Call(self.call()?));
                }
                if name.bytes().any(|b| b.is_ascii_lowercase()) {
                    // The Collector's enum symbols are `[A-Z][A-Z0-9_]*`; a
                    // mixed-case name is a function reference, which only a
                    // whole argument may be (see `call`).
                    return Err(self.error_here(format!(
                        "{name:?} is neither an enum (all upper case, e.g. SPAN_KIND_SERVER) nor a converter call \
                         (add parentheses: {name}(...))"
                    )));
                }
                self.next();
                Ok(Value::Enum(name, column))
            }
            Tok::Str(s) => {
                self.next();
                Ok(Value::Str(s))
            }
            Tok::Int(i) => {
                self.next();
                Ok(Value::Int(i))
            }
            Tok::Float(x) => {
                self.next();
                Ok(Value::Float(x))
            }
            Tok::Bytes(b) => {
                self.next();
                Ok(Value::Bytes(b))
            }
            Tok::LBracket => {
                self.next();
                let mut items = Vec::new();
                if *self.peek() != Tok::RBracket {
                    loop {
                        items.push(self.value()?);
                        if *self.peek() == Tok::Comma {
                            self.next();
                            continue;
                        }
                        break;
                    }
                }
                self.expect(Tok::RBracket)?;
                Ok(Value::List(items))
            }
            Tok::LBrace => {
                self.next();
                let mut entries = Vec::new();
                if *self.peek() != Tok::RBrace {
                    loop {
                        let Tok::Str(key) = self.peek().clone() else {
                            return Err(self.expected("a string key of the map"));
                        };
                        self.next();
                        self.expect(Tok::Colon)?;
                        entries.push((key, self.value()?));
                        if *self.peek() == Tok::Comma {
                            self.next();
                            continue;
                        }
                        break;
                    }
                }
                self.expect(Tok::RBrace)?;
                Ok(Value::Map(entries))
            }
            Tok::LParen => {
                self.next();
                let inner = self.value()?;
                if !matches!(inner, Value::Math(..)) {
                    check_math_operand(&inner, column)?;
                }
                self.expect(Tok::RParen)?;
                Ok(inner)
            }
            _ => Err(self.expected("a value")),
        }
    }

    fn path(&mut self) -> Result<Path, SyntaxError> {
        let column = self.column();
        let mut fields = vec![self.field()?];
        while *self.peek() == Tok::Dot {
            self.next();
            fields.push(self.field()?);
        }
        Ok(Path { column, fields })
    }

    fn field(&mut self) -> Result<Field, SyntaxError> {
        let Tok::Lower(name) = self.peek().clone() else {
            return Err(self.expected("a lower-case path field"));
        };
        self.next();
        Ok(Field { name, keys: self.keys()? })
    }

    fn keys(&mut self) -> Result<Vec<Key>, SyntaxError> {
        let mut keys = Vec::new();
        while *self.peek() == Tok::LBracket {
            self.next();
            let key = match self.peek().clone() {
                Tok::Str(s) => {
                    self.next();
                    Key::Str(s)
                }
                Tok::Int(i) => {
                    self.next();
                    Key::Int(i)
                }
                Tok::Lower(_) => Key::Expr(Box::new(Value::Path(self.path()?))),
                Tok::Upper(_) if *self.peek_at(1) == Tok::LParen => Key::Expr(Box::new(Value::Call(self.call()?))),
                _ => return Err(self.expected("a key: a string, an integer, a path or a converter")),
            };
            self.expect(Tok::RBracket)?;
            keys.push(key);
        }
        Ok(keys)
    }

    fn call(&mut self) -> Result<Call, SyntaxError> {
        let column = self.column();
        let name = match self.next() {
            Tok::Lower(n) | Tok::Upper(n) => n,
            _ => unreachable!("call() is entered on a name"),
        };
        self.expect(Tok::LParen)?;
        let mut args = Vec::new();
        if *self.peek() != Tok::RParen {
            loop {
                let column = self.column();
                let name = match (self.peek().clone(), self.peek_at(1)) {
                    (Tok::Lower(n), Tok::Equal) => {
                        self.next();
                        self.next();
                        Some(n)
                    }
                    _ => None,
                };
                if name.is_none() && args.iter().any(|a: &Arg| a.name.is_some()) {
                    return Err(self.error_here("a positional argument cannot follow a named one".into()));
                }
                let value = match (self.peek().clone(), self.peek_at(1)) {
                    // A mixed-case name alone is a function reference
                    // (`replace_pattern(..., Sha256)`): the Collector's
                    // argument takes a FunctionName where a value would not
                    // parse. An all-upper-case name is an enum either way.
                    (Tok::Upper(f), Tok::Comma | Tok::RParen) if f.bytes().any(|b| b.is_ascii_lowercase()) => {
                        let at = self.column();
                        self.next();
                        Value::Enum(f, at)
                    }
                    _ => self.value()?,
                };
                args.push(Arg { name, column, value });
                if *self.peek() == Tok::Comma {
                    self.next();
                    continue;
                }
                break;
            }
        }
        if *self.peek() != Tok::RParen {
            return Err(self.expected("\",\" or \")\" after an argument"));
        }
        self.next();
        let keys = self.keys()?;
        Ok(Call { column, name, args, keys })
    }
}

/// Math applies to numbers (and what computes them): literals other than
/// numbers are refused as the Collector's grammar does.
fn check_math_operand(v: &Value, column: usize) -> Result<(), SyntaxError> {
    match v {
        Value::Int(_) | Value::Float(_) | Value::Path(_) | Value::Call(_) | Value::Math(..) => Ok(()),
        other => Err(SyntaxError {
            column,
            message: format!("a math expression takes numbers, paths and converters, not {}", describe(other)),
        }),
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Bool(_) => "a boolean",
        Value::Str(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Enum(..) => "an enum",
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        _ => "this value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_and_conditions_parse() {
        let s = statement(r#"set(attributes["a"]["b"][0], Concat([name, "x"], "-")) where kind == SPAN_KIND_SERVER and not (attributes["x"] == nil or IsMatch(name, "^GET"))"#).unwrap();
        assert_eq!(s.editor.name, "set");
        assert_eq!(s.editor.args.len(), 2);
        assert!(matches!(s.condition, Some(Condition::And(_))));
        let c = condition("1 + 2 * 3 == 7").unwrap();
        let Condition::Compare(Value::Math(l, MathOp::Add, r, _), CompareOp::Eq, Value::Int(7)) = c else {
            panic!("{c:?}")
        };
        assert_eq!(*l, Value::Int(1));
        assert!(matches!(*r, Value::Math(_, MathOp::Mul, _, _)));
        assert!(condition("attributes[\"x\"] == -1").is_ok());
        assert!(condition("start_time_unix_nano - 1 > 0").is_ok());
        assert!(condition("(1 + 2) * 3 == 9").is_ok());
        assert!(condition("trace_id == 0x0102").is_ok());
        assert!(condition(r#"attributes == {"a": [1, 2.5, true, nil]}"#).is_ok());
        assert!(
            statement(r#"replace_pattern(target = name, regex = "a", replacement = "b", function = SHA256)"#).is_ok()
        );
    }

    #[test]
    fn errors_name_the_column() {
        let e = statement("set(name, ) ").unwrap_err();
        assert_eq!(e.column, 11, "{e}");
        let e = condition("name = \"x\"").unwrap_err();
        assert_eq!(e.column, 6, "{e}");
        let e = condition("name == ").unwrap_err();
        assert!(e.message.contains("expected a value"), "{e}");
        assert!(statement("Set(name, \"x\")").unwrap_err().message.contains("converter"));
        assert!(condition("name").unwrap_err().message.contains("comparison operator is missing"));
        assert!(condition("\"abc").unwrap_err().message.contains("unterminated"));
        assert!(condition("x == 0x123").is_err());
        assert!(condition("\"a\" + 1 == 2").is_err());
        let deep = format!("{}true{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(condition(&deep).unwrap_err().message.contains("nested more than"));
        let deep = format!("name == {}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(condition(&deep).unwrap_err().message.contains("nested more than"));
        // Parentheses around values inside a condition parse in one pass
        // (a backtracking parser takes 2^depth here).
        let deep = format!("{}1{} == 1", "(".repeat(60), ")".repeat(60));
        assert!(condition(&deep).is_ok());
        assert!(condition("((1 + 2) * 3) + 1 == 10 and (name == \"x\" or (kind) == 2)").is_ok());
        assert!(condition("(name == \"x\") == true").is_err());
        let deep = format!("{}true", "not ".repeat(100_000));
        assert!(condition(&deep).unwrap_err().message.contains("nested more than"));
    }
}
