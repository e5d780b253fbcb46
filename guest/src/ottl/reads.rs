//! What a compiled condition reads: the field of every path it evaluates,
//! with the path's first key when it is a constant (`attributes["k"]`).
//! The prefilter (crate::prefilter) decides from this whether a condition
//! can be evaluated on the few fields a scan takes from a record.

use super::Check;
use super::context::{Field, SpanField};
use super::converters::Converter;
use super::expr::{Condition, Expr, Key};

/// One field a condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read<'a> {
    /// The field.
    pub field: Field,
    /// The path's first key, when it is a string literal; `None` for a path
    /// without keys or with a computed or numeric first key.
    pub key: Option<&'a str>,
}

impl Check {
    /// Every field the condition may read, in no particular order.
    pub fn reads(&self) -> Vec<Read<'_>> {
        let mut out = Vec::new();
        condition(&self.condition, &mut out);
        out
    }
}

fn condition<'a>(c: &'a Condition, out: &mut Vec<Read<'a>>) {
    match c {
        Condition::Or(all) | Condition::And(all) => all.iter().for_each(|c| condition(c, out)),
        Condition::Not(c) => condition(c, out),
        Condition::Const(_) => {}
        Condition::Compare(a, _, b) => {
            expr(a, out);
            expr(b, out);
        }
        Condition::Call(e) | Condition::IsNil(e, _) => expr(e, out),
    }
}

fn expr<'a>(e: &'a Expr, out: &mut Vec<Read<'a>>) {
    match e {
        Expr::Lit(_) => {}
        Expr::Path(path) => {
            let key = match path.keys.first() {
                Some(Key::Str(k)) => Some(k.as_str()),
                _ => None,
            };
            out.push(Read { field: path.field, key });
            keys(&path.keys, out);
        }
        Expr::Call(converter, k) => {
            converter_args(converter, out);
            keys(k, out);
        }
        Expr::List(items) => items.iter().for_each(|e| expr(e, out)),
        Expr::Map(members) => members.iter().for_each(|(_, e)| expr(e, out)),
        Expr::Math(a, _, b) => {
            expr(a, out);
            expr(b, out);
        }
    }
}

fn keys<'a>(keys: &'a [Key], out: &mut Vec<Read<'a>>) {
    for key in keys {
        if let Key::Expr(e) = key {
            expr(e, out);
        }
    }
}

fn converter_args<'a>(c: &'a Converter, out: &mut Vec<Read<'a>>) {
    match c {
        Converter::IsRootSpan => out.push(Read { field: Field::Span(SpanField::ParentSpanId), key: None }),
        Converter::IsMatch(e, _)
        | Converter::Is(_, e)
        | Converter::Len(e)
        | Converter::Case(e, _)
        | Converter::Hash(_, e)
        | Converter::Split(e, _)
        | Converter::Int(e)
        | Converter::Double(e)
        | Converter::String(e)
        | Converter::Hex(e)
        | Converter::Trim(e, _)
        | Converter::ParseJson(e)
        | Converter::Keys(e)
        | Converter::Values(e) => expr(e, out),
        Converter::Concat(items, _) => items.iter().for_each(|e| expr(e, out)),
        Converter::Substring(a, b, c) => [a, b, c].into_iter().for_each(|e| expr(e, out)),
        Converter::Affix(a, b, _) | Converter::ContainsValue(a, b) | Converter::Index(a, b) => {
            expr(a, out);
            expr(b, out);
        }
    }
}
