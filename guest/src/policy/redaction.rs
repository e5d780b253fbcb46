//! The `redaction:` section (the Collector's redaction processor): allowed
//! keys, blocked values and keys, hashing, the summary.

use super::config::*;
use super::*;

impl Compiler<'_> {
    pub(super) fn redaction(&mut self, r: RedactionConfig) -> Result<Redaction, PolicyError> {
        let masking = match r.hash_function.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("") => Masking::Mask,
            Some("md5") => Masking::Md5,
            Some("sha1") => Masking::Sha1,
            Some("sha3") => Masking::Sha3,
            Some("hmac-sha256") => {
                let Some(id) = &r.hash_key_id else {
                    return Err(PolicyError::at(
                        "redaction.hash_key_id",
                        "hash_function hmac-sha256 needs hash_key_id naming a host secret",
                    ));
                };
                Masking::HmacSha256(self.secret(id, "redaction.hash_key_id")?)
            }
            Some(other) => {
                return Err(PolicyError::at(
                    "redaction.hash_function",
                    format!("unknown hash function '{other}', allowed: md5, sha1, sha3, hmac-sha256"),
                ));
            }
        };
        if r.hash_key_id.is_some() && !matches!(masking, Masking::HmacSha256(_)) {
            return Err(PolicyError::at("redaction.hash_key_id", "only used with hash_function: hmac-sha256"));
        }
        let summary = match r.summary.as_deref() {
            None | Some("") | Some("silent") => Summary::Silent,
            Some("info") => Summary::Info,
            Some("debug") => Summary::Debug,
            Some(other) => {
                return Err(PolicyError::at(
                    "redaction.summary",
                    format!("'{other}' is not one of silent, info, debug"),
                ));
            }
        };
        // With allow_all_keys nothing is ever removed: no rule to cover.
        let allowed_keys = (!r.allow_all_keys).then(|| {
            let rule = self.rule("redaction.allowed_keys", "remove keys not listed in allowed_keys");
            (r.allowed_keys, rule)
        });
        let mut blocked_key_patterns = Vec::new();
        for (i, p) in r.blocked_key_patterns.iter().enumerate() {
            let path = format!("redaction.blocked_key_patterns[{i}]");
            let re = compile_regex(&path, p)?;
            blocked_key_patterns.push((re, self.rule(path, format!("mask values of keys matching /{p}/"))));
        }
        let mut blocked_values = Vec::new();
        for (i, p) in r.blocked_values.iter().enumerate() {
            let path = format!("redaction.blocked_values[{i}]");
            let re = compile_regex(&path, p)?;
            blocked_values.push((re, self.rule(path, format!("mask values matching /{p}/"))));
        }
        let any_blocked = (blocked_values.len() > 1).then(|| union(&r.blocked_values)).flatten();
        let allowed_values = r
            .allowed_values
            .iter()
            .enumerate()
            .map(|(i, p)| compile_regex(&format!("redaction.allowed_values[{i}]"), p))
            .collect::<Result<_, _>>()?;
        Ok(Redaction {
            active: true,
            allowed_keys,
            ignored_keys: r.ignored_keys,
            blocked_key_patterns,
            blocked_values,
            any_blocked,
            allowed_values,
            masking,
            summary,
        })
    }
}

/// One regex matching where any of `patterns` (each valid alone) matches;
/// `None` should the union exceed the regex size limit.
fn union(patterns: &[String]) -> Option<Pattern> {
    let alternatives: Vec<String> = patterns.iter().map(|p| format!("(?:{p})")).collect();
    Pattern::new(&alternatives.join("|")).ok()
}
