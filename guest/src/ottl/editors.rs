//! OTTL editors (lower-case functions that change the record) an audit
//! trail needs, with the Collector's `ottlfuncs` semantics.

use std::borrow::Cow;

use crate::pattern::Pattern;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

use super::args::{Args, HashFn};
use super::expr::{Compiler, Expr, Path};
use super::grammar;
use super::record::Subject;
use super::value::Value;
use super::{CompileError, EvalError};

/// The editors this build knows, for messages.
pub const NAMES: &[&str] = &[
    "delete_key",
    "delete_matching_keys",
    "flatten",
    "keep_keys",
    "keep_matching_keys",
    "limit",
    "merge_maps",
    "replace_all_matches",
    "replace_all_patterns",
    "replace_match",
    "replace_pattern",
    "set",
    "truncate_all",
];

/// What a `replace_*` editor replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// `replace_pattern`: every regex match in one string.
    Pattern,
    /// `replace_all_patterns` with mode `value`: in every string value of a map.
    AllPatternsValues,
    /// `replace_all_patterns` with mode `key`: in every key of a map.
    AllPatternsKeys,
    /// `replace_match`: one string that matches a glob, whole.
    Match,
    /// `replace_all_matches`: every string value of a map matching a glob, whole.
    AllMatches,
}

/// How `merge_maps` treats keys the target already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only keys the target lacks.
    Insert,
    /// Only keys the target has.
    Update,
    /// Every key.
    Upsert,
}

/// A compiled editor call.
#[derive(Debug)]
pub enum Editor {
    /// `set(target, value)`
    Set(Path, Expr),
    /// `delete_key(target, key)`
    DeleteKey(Path, String),
    /// `delete_matching_keys(target, pattern)`
    DeleteMatchingKeys(Path, Pattern),
    /// `keep_keys(target, keys)`
    KeepKeys(Path, Vec<String>),
    /// `keep_matching_keys(target, pattern)`
    KeepMatchingKeys(Path, Pattern),
    /// The `replace_*` editors.
    Replace {
        /// Which one.
        kind: Replace,
        /// The string or map changed.
        target: Path,
        /// The regex (globs are compiled to anchored regexes).
        pattern: Pattern,
        /// The replacement (`$1` expands groups for the pattern editors).
        replacement: Expr,
        /// A function applied to the replacement.
        function: Option<HashFn>,
        /// A format with one `%s` the (hashed) replacement goes into.
        format: Option<Expr>,
    },
    /// `truncate_all(target, limit, Optional[utf8_safe], Optional[truncation_marker])`:
    /// the limit and the marker appended to truncated values.
    TruncateAll(Path, usize, String),
    /// `limit(target, limit, priority_keys)`
    Limit(Path, usize, Vec<String>),
    /// `merge_maps(target, source, strategy)`
    MergeMaps(Path, Expr, Strategy),
    /// `flatten(target, Optional[prefix], Optional[depth], Optional[resolveConflicts])`
    Flatten {
        /// The map flattened.
        target: Path,
        /// A prefix for every key.
        prefix: Option<String>,
        /// How many levels are flattened (unlimited when absent).
        depth: Option<usize>,
        /// Whether a key that already exists gets a `.N` suffix instead of overwriting.
        resolve_conflicts: bool,
    },
}

const REPLACE_PARAMS: [&str; 5] = ["target", "regex", "replacement", "function", "replacementFormat"];
const REPLACE_MATCH_PARAMS: [&str; 5] = ["target", "pattern", "replacement", "function", "replacementFormat"];
const REPLACE_ALL_PARAMS: [&str; 6] = ["target", "mode", "regex", "replacement", "function", "replacementFormat"];

impl Editor {
    /// Compiles an editor call.
    pub fn compile(c: &Compiler, call: &grammar::Call) -> Result<Editor, CompileError> {
        let name = call.name.as_str();
        let target = |a: &Args| c.target(&a.get(0).expect("bound").value, a.get(0).expect("bound").column);
        let map_target = |a: &Args| -> Result<Path, CompileError> {
            let path = target(a)?;
            if path.keys.is_empty()
                && !path.field.is_map()
                && path.field != super::context::Field::Log(super::context::LogField::Body)
            {
                return Err(a.error(0, format!("{} is not a map", path.text)));
            }
            Ok(path)
        };
        let regex = |a: &Args, i: usize| -> Result<Pattern, CompileError> {
            let pattern = a.string_literal(i)?;
            Pattern::new(&pattern).map_err(|e| a.error(i, format!("invalid regular expression {pattern:?}: {e}")))
        };
        Ok(match name {
            "set" => {
                let a = Args::bind(call, &["target", "value"], 2)?;
                Editor::Set(target(&a)?, a.expr(c, 1)?)
            }
            "delete_key" => {
                let a = Args::bind(call, &["target", "key"], 2)?;
                Editor::DeleteKey(map_target(&a)?, a.string_literal(1)?)
            }
            "delete_matching_keys" => {
                let a = Args::bind(call, &["target", "pattern"], 2)?;
                Editor::DeleteMatchingKeys(map_target(&a)?, regex(&a, 1)?)
            }
            "keep_keys" => {
                let a = Args::bind(call, &["target", "keys"], 2)?;
                Editor::KeepKeys(map_target(&a)?, a.string_list_literal(1)?)
            }
            "keep_matching_keys" => {
                let a = Args::bind(call, &["target", "pattern"], 2)?;
                Editor::KeepMatchingKeys(map_target(&a)?, regex(&a, 1)?)
            }
            "replace_pattern" | "replace_match" => {
                let params = if name == "replace_pattern" { &REPLACE_PARAMS } else { &REPLACE_MATCH_PARAMS };
                let a = Args::bind(call, params, 3)?;
                let (kind, pattern) = if name == "replace_pattern" {
                    (Replace::Pattern, regex(&a, 1)?)
                } else {
                    (Replace::Match, glob(&a, 1)?)
                };
                Editor::Replace {
                    kind,
                    target: target(&a)?,
                    pattern,
                    replacement: a.expr(c, 2)?,
                    function: a.function(3)?,
                    format: a.opt_expr(c, 4)?,
                }
            }
            "replace_all_patterns" => {
                let a = Args::bind(call, &REPLACE_ALL_PARAMS, 4)?;
                let kind = match a.string_literal(1)?.as_str() {
                    "key" => Replace::AllPatternsKeys,
                    "value" => Replace::AllPatternsValues,
                    other => return Err(a.error(1, format!("invalid mode {other:?}, must be \"key\" or \"value\""))),
                };
                Editor::Replace {
                    kind,
                    target: map_target(&a)?,
                    pattern: regex(&a, 2)?,
                    replacement: a.expr(c, 3)?,
                    function: a.function(4)?,
                    format: a.opt_expr(c, 5)?,
                }
            }
            "replace_all_matches" => {
                let a = Args::bind(call, &REPLACE_MATCH_PARAMS, 3)?;
                Editor::Replace {
                    kind: Replace::AllMatches,
                    target: map_target(&a)?,
                    pattern: glob(&a, 1)?,
                    replacement: a.expr(c, 2)?,
                    function: a.function(3)?,
                    format: a.opt_expr(c, 4)?,
                }
            }
            "truncate_all" => {
                let a = Args::bind(call, &["target", "limit", "utf8_safe", "truncation_marker"], 2)?;
                let limit = a.int_literal(1)?;
                let limit =
                    size(limit).map_err(|_| a.error(1, format!("invalid limit for truncate_all function: {limit}")))?;
                // Values are always cut at a character boundary: OTLP
                // strings are UTF-8 and records are JSON, so `utf8_safe:
                // false` (a cut mid-character) cannot be honoured.
                if a.get(2).is_some() {
                    a.bool_literal(2)?;
                }
                let marker = if a.get(3).is_some() { a.string_literal(3)? } else { String::new() };
                if marker.len() > limit {
                    return Err(
                        a.error(3, format!("the marker ({} bytes) is longer than the limit {limit}", marker.len()))
                    );
                }
                Editor::TruncateAll(map_target(&a)?, limit, marker)
            }
            "limit" => {
                let a = Args::bind(call, &["target", "limit", "priority_keys"], 3)?;
                let limit = a.int_literal(1)?;
                let limit =
                    size(limit).map_err(|_| a.error(1, format!("invalid limit for limit function: {limit}")))?;
                let keys = a.string_list_literal(2)?;
                if keys.len() > limit {
                    return Err(a.error(
                        2,
                        format!("number of priority keys ({}) can't be greater than the limit ({limit})", keys.len()),
                    ));
                }
                Editor::Limit(map_target(&a)?, limit, keys)
            }
            "merge_maps" => {
                let a = Args::bind(call, &["target", "source", "strategy"], 3)?;
                let strategy = match a.string_literal(2)?.as_str() {
                    "insert" => Strategy::Insert,
                    "update" => Strategy::Update,
                    "upsert" => Strategy::Upsert,
                    other => {
                        return Err(a.error(2, format!("invalid strategy {other:?}, must be insert, update or upsert")));
                    }
                };
                Editor::MergeMaps(map_target(&a)?, a.expr(c, 1)?, strategy)
            }
            "flatten" => {
                let a = Args::bind(call, &["target", "prefix", "depth", "resolveConflicts"], 1)?;
                let prefix = a.get(1).is_some().then(|| a.string_literal(1)).transpose()?;
                let depth = match a.get(2) {
                    None => None,
                    Some(_) => {
                        let d = a.int_literal(2)?;
                        Some(size(d).map_err(|_| a.error(2, format!("invalid depth {d} for flatten")))?)
                    }
                };
                let resolve_conflicts = a.get(3).is_some() && a.bool_literal(3)?;
                Editor::Flatten { target: map_target(&a)?, prefix, depth, resolve_conflicts }
            }
            _ if name.starts_with(|c: char| c.is_ascii_uppercase()) => {
                return Err(CompileError::at(
                    call.column,
                    format!("{name} is a converter; a statement starts with an editor such as set(...)"),
                ));
            }
            _ => {
                return Err(CompileError::at(
                    call.column,
                    format!("undefined function {name:?}; known editors: {}", NAMES.join(", ")),
                ));
            }
        })
    }

    /// Runs the editor on one record.
    pub fn run(&self, s: &mut Subject) -> Result<(), EvalError> {
        match self {
            Editor::Set(target, value) => {
                let value = owned_value(value, s)?;
                if value != Value::Nil {
                    target.set(s, value)?;
                }
            }
            Editor::DeleteKey(target, key) => target.map_mut(s)?.retain(|kv| kv.key != *key),
            Editor::DeleteMatchingKeys(target, re) => target.map_mut(s)?.retain(|kv| !re.is_match(&kv.key)),
            Editor::KeepKeys(target, keys) => target.map_mut(s)?.retain(|kv| keys.contains(&kv.key)),
            Editor::KeepMatchingKeys(target, re) => target.map_mut(s)?.retain(|kv| re.is_match(&kv.key)),
            Editor::Replace { kind, target, pattern, replacement, function, format } => {
                let replacement = match owned_value(replacement, s)? {
                    Value::Str(r) => r.into_owned(),
                    other => {
                        return Err(EvalError(format!("replacement: expected a string but got {}", other.type_name())));
                    }
                };
                let format = match format {
                    None => None,
                    Some(f) => match owned_value(f, s)? {
                        Value::Str(f) => Some(f.into_owned()),
                        other => {
                            return Err(EvalError(format!(
                                "replacementFormat: expected a string, got {}",
                                other.type_name()
                            )));
                        }
                    },
                };
                let r = Replacer {
                    kind: *kind,
                    pattern,
                    replacement: &replacement,
                    function: *function,
                    format: format.as_deref(),
                };
                match kind {
                    Replace::Pattern | Replace::Match => {
                        let current = target.get(&s.view())?;
                        if let Value::Str(text) = current
                            && let Some(new) = r.replace(&text)
                        {
                            target.set(s, Value::Str(Cow::Owned(new)))?;
                        }
                    }
                    Replace::AllPatternsValues | Replace::AllMatches => {
                        for kv in target.map_mut(s)?.iter_mut() {
                            if let Some(AnyValue { value: Some(any_value::Value::StringValue(text)) }) = &mut kv.value
                                && let Some(new) = r.replace(text)
                            {
                                *text = new;
                            }
                        }
                    }
                    Replace::AllPatternsKeys => {
                        let map = target.map_mut(s)?;
                        for kv in map.iter_mut() {
                            if let Some(new) = r.replace(&kv.key) {
                                kv.key = new;
                            }
                        }
                        dedupe_keeping_last(map);
                    }
                }
            }
            Editor::TruncateAll(target, limit, marker) => {
                for kv in target.map_mut(s)?.iter_mut() {
                    if let Some(AnyValue { value: Some(any_value::Value::StringValue(text)) }) = &mut kv.value
                        && text.len() > *limit
                    {
                        let mut end = limit - marker.len();
                        while !text.is_char_boundary(end) {
                            end -= 1;
                        }
                        text.truncate(end);
                        text.push_str(marker);
                    }
                }
            }
            Editor::Limit(target, limit, priority) => {
                let map = target.map_mut(s)?;
                if map.len() > *limit {
                    let mut room = limit - map.iter().filter(|kv| priority.contains(&kv.key)).count().min(*limit);
                    map.retain(|kv| {
                        if priority.contains(&kv.key) {
                            return true;
                        }
                        if room > 0 {
                            room -= 1;
                            return true;
                        }
                        false
                    });
                }
            }
            Editor::MergeMaps(target, source, strategy) => {
                let Value::Map(source) = owned_value(source, s)? else { return Ok(()) };
                let map = target.map_mut(s)?;
                for kv in source.into_owned() {
                    match map.iter_mut().find(|t| t.key == kv.key) {
                        Some(existing) if *strategy != Strategy::Insert => existing.value = kv.value,
                        Some(_) => {}
                        None if *strategy != Strategy::Update => map.push(kv),
                        None => {}
                    }
                }
            }
            Editor::Flatten { target, prefix, depth, resolve_conflicts } => {
                let map = target.map_mut(s)?;
                let mut out: Vec<KeyValue> = Vec::with_capacity(map.len());
                let nested = std::mem::take(map);
                flatten_into(&mut out, prefix.as_deref(), nested, 0, *depth, *resolve_conflicts);
                *map = out;
            }
        }
        Ok(())
    }
}

/// A count from a policy: not negative, and at most 2^32 - 1 so the
/// component (32-bit) and native builds accept the same policies.
fn size(n: i64) -> Result<usize, ()> {
    u32::try_from(n).map(|n| n as usize).map_err(|_| ())
}

/// Evaluates an argument before the record is changed.
fn owned_value(e: &Expr, s: &Subject) -> Result<Value<'static>, EvalError> {
    Ok(super::expr::owned(e.eval(&s.view())?.into_any()))
}

struct Replacer<'r> {
    kind: Replace,
    pattern: &'r Pattern,
    replacement: &'r str,
    function: Option<HashFn>,
    format: Option<&'r str>,
}

impl Replacer<'_> {
    /// The new text, or `None` when nothing matched.
    fn replace(&self, text: &str) -> Option<String> {
        if !self.pattern.is_match(text) {
            return None;
        }
        let finish = |expanded: String| -> String {
            let value = match self.function {
                Some(f) => f.digest(&expanded),
                None => expanded,
            };
            match self.format {
                Some(fmt) => fmt.replacen("%s", &value, 1),
                None => value,
            }
        };
        match self.kind {
            // A glob matches the whole value, which is replaced whole.
            Replace::Match | Replace::AllMatches => Some(finish(self.replacement.to_owned())),
            _ if self.function.is_none() && self.format.is_none() => {
                Some(self.pattern.replace_all(text, self.replacement).into_owned())
            }
            _ => Some(
                self.pattern
                    .replace_all(text, |caps: &regex::Captures| {
                        let mut expanded = String::new();
                        caps.expand(self.replacement, &mut expanded);
                        finish(expanded)
                    })
                    .into_owned(),
            ),
        }
    }
}

/// Compiles a glob (the Collector uses gobwas/glob): `*` any text, `?` one
/// character, `[abc]` / `[!abc]` / `[a-z]` a class, `{a,b}` alternatives,
/// `\` escapes; it matches the whole value.
fn glob(a: &Args, i: usize) -> Result<Pattern, CompileError> {
    let pattern = a.string_literal(i)?;
    let mut re = String::from("^(?s:");
    let mut chars = pattern.chars().peekable();
    let mut braces = 0;
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '\\' => match chars.next() {
                Some(e) => re.push_str(&regex::escape(&e.to_string())),
                None => return Err(a.error(i, format!("glob {pattern:?} ends with an unfinished escape"))),
            },
            '[' => {
                re.push('[');
                if chars.peek() == Some(&'!') {
                    chars.next();
                    re.push('^');
                }
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    if matches!(c, '\\' | '[' | '^' | '&' | '~') {
                        re.push('\\');
                    }
                    re.push(c);
                }
                if !closed {
                    return Err(a.error(i, format!("glob {pattern:?} has an unclosed '['")));
                }
                re.push(']');
            }
            '{' => {
                braces += 1;
                re.push_str("(?:");
            }
            '}' if braces > 0 => {
                braces -= 1;
                re.push(')');
            }
            ',' if braces > 0 => re.push('|'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    if braces > 0 {
        return Err(a.error(i, format!("glob {pattern:?} has an unclosed '{{'")));
    }
    re.push_str(")$");
    Pattern::new(&re).map_err(|e| a.error(i, format!("invalid glob {pattern:?}: {e}")))
}

fn dedupe_keeping_last(map: &mut Vec<KeyValue>) {
    let mut seen = std::collections::HashSet::new();
    let mut keep: Vec<bool> = map.iter().rev().map(|kv| seen.insert(kv.key.clone())).collect();
    keep.reverse();
    let mut i = 0;
    map.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

fn flatten_into(
    out: &mut Vec<KeyValue>,
    prefix: Option<&str>,
    map: Vec<KeyValue>,
    level: usize,
    depth: Option<usize>,
    resolve_conflicts: bool,
) {
    for kv in map {
        let key = match prefix {
            Some(p) if !p.is_empty() => format!("{p}.{}", kv.key),
            _ => kv.key,
        };
        let deeper = depth.is_none_or(|d| level < d);
        match kv.value {
            Some(AnyValue { value: Some(any_value::Value::KvlistValue(m)) }) if deeper => {
                flatten_into(out, Some(&key), m.values, level + 1, depth, resolve_conflicts);
            }
            // With conflict resolution a list's items all go under the
            // list's key: the first takes it, the others get suffixes.
            Some(AnyValue { value: Some(any_value::Value::ArrayValue(a)) }) if deeper && resolve_conflicts => {
                for item in a.values {
                    match item.value {
                        Some(any_value::Value::KvlistValue(m)) => {
                            flatten_into(out, Some(&key), m.values, level + 1, depth, resolve_conflicts);
                        }
                        value => put(out, key.clone(), Some(AnyValue { value }), resolve_conflicts),
                    }
                }
            }
            Some(AnyValue { value: Some(any_value::Value::ArrayValue(a)) }) if deeper => {
                let as_map = a
                    .values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| KeyValue { key: i.to_string(), value: Some(v), key_strindex: 0 })
                    .collect();
                flatten_into(out, Some(&key), as_map, level + 1, depth, resolve_conflicts);
            }
            value => put(out, key, value, resolve_conflicts),
        }
    }
}

fn put(out: &mut Vec<KeyValue>, key: String, value: Option<AnyValue>, resolve_conflicts: bool) {
    match out.iter().position(|kv| kv.key == key) {
        Some(at) if !resolve_conflicts => out[at].value = value,
        Some(_) => {
            let key =
                (0..).map(|n| format!("{key}.{n}")).find(|k| out.iter().all(|kv| kv.key != *k)).expect("a free key");
            out.push(KeyValue { key, value, key_strindex: 0 });
        }
        None => out.push(KeyValue { key, value, key_strindex: 0 }),
    }
}
