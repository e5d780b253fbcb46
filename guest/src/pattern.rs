//! A policy's regular expression, with the answers its shape gives without
//! a search.
//!
//! Every string value meets the redaction's `blocked_values`, every key the
//! `attributes` patterns, and `.*` is the usual way to say "any value" in a
//! filter; each `is_match` was a call into the regex engine (a cache taken
//! from its pool and put back), a tenth of a kept record's time in wasm.
//! From the parsed pattern we know the fewest bytes any match needs (a
//! shorter text cannot match: card-number patterns need 13 or more, most
//! values have fewer) and whether it matches the empty string without any
//! assertion (then it matches at the start of every text).

use std::ops::Deref;

use regex::Regex;

/// A compiled regular expression; derefs to the [`Regex`] for everything
/// but [`Pattern::is_match`].
#[derive(Debug, Clone)]
pub struct Pattern {
    regex: Regex,
    /// The fewest bytes any match spans.
    min_len: usize,
    /// Whether every text has a match (the empty one, at its start).
    matches_all: bool,
}

impl Pattern {
    /// Compiles `pattern` (the `regex` crate's syntax).
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        let regex = Regex::new(pattern)?;
        // The same syntax and defaults as `Regex::new`; should the parse
        // still fail, every text is searched.
        let (min_len, matches_all) = match regex_syntax::Parser::new().parse(pattern) {
            Ok(hir) => {
                let props = hir.properties();
                let min_len = props.minimum_len().unwrap_or(0);
                (min_len, props.minimum_len() == Some(0) && props.look_set().is_empty())
            }
            Err(_) => (0, false),
        };
        Ok(Pattern { regex, min_len, matches_all })
    }

    /// Whether `text` has a match anywhere, as [`Regex::is_match`].
    #[inline]
    pub fn is_match(&self, text: &str) -> bool {
        if text.len() < self.min_len {
            return false;
        }
        self.matches_all || self.regex.is_match(text)
    }
}

impl Deref for Pattern {
    type Target = Regex;
    fn deref(&self) -> &Regex {
        &self.regex
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortcuts_answer_as_the_search_does() {
        let patterns = [
            ".*",
            "^.*$",
            "",
            "a*",
            "(?:)|x",
            "^",
            "$",
            r"\b",
            "^$",
            "x?$",
            r"\b4[0-9]{12}(?:[0-9]{3})?\b",
            r"^http\.request\.header\.(cookie|x-api-key)$",
            "é{2}",
            "[^a]",
            r"(?m)^\s*$",
            "[a&&b]",
            "(?i)K",
        ];
        let texts = [
            "",
            "a",
            "x",
            "\n",
            "é",
            "ééé",
            "K",
            "\u{212a}",
            "4111111111111111",
            "card 4111111111111111 inside",
            "http.request.header.cookie",
            "http.request.header.cookies",
            "line\n \nbreak",
        ];
        for p in patterns {
            let (pattern, regex) = (Pattern::new(p).unwrap(), Regex::new(p).unwrap());
            for t in texts {
                assert_eq!(pattern.is_match(t), regex.is_match(t), "{p:?} on {t:?}");
            }
        }
        let bounds = |p: &str| {
            let p = Pattern::new(p).unwrap();
            (p.min_len, p.matches_all)
        };
        assert_eq!(bounds(".*"), (0, true));
        assert_eq!(bounds("^.*$"), (0, false));
        assert_eq!(bounds(r"\b4[0-9]{12}(?:[0-9]{3})?\b"), (13, false));
        assert_eq!(bounds("é{2}"), (4, false));
        assert!(Pattern::new("(").is_err());
    }
}
