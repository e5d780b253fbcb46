//! Policies A and B: the shipped policy with its spans filter narrowed to
//! half of the `audit.action` values the load generator uses each, so both
//! keep as many records, different ones.

use std::path::Path;

use crate::support::swap::sha256;

/// The shipped policy A and B are made from.
pub const POLICY: &str = "collector-config/policies/soc2-audit.yaml";
/// The `audit.action` values A and B keep.
pub const ACTIONS: [&str; 2] = ["^(login|role_update|config_change)$", "^(password_reset|export_data|api_key_create)$"];

/// A policy's text and digest (`sha256:<hex>` of the file's bytes).
pub struct Policy {
    pub text: String,
    pub digest: String,
}

impl Policy {
    fn new(text: String) -> Policy {
        Policy { digest: sha256(text.as_bytes()), text }
    }
}

/// Policies A and B, from the shipped policy under `root`.
pub fn a_and_b(root: &Path) -> Result<[Policy; 2], String> {
    let shipped = std::fs::read_to_string(root.join(POLICY)).map_err(|e| format!("{POLICY}: {e}"))?;
    Ok([Policy::new(narrowed(&shipped, ACTIONS[0])?), Policy::new(narrowed(&shipped, ACTIONS[1])?)])
}

/// The shipped policy with its spans filter narrowed to `actions`.
fn narrowed(shipped: &str, actions: &str) -> Result<String, String> {
    const ANY: &str = "value: \".*\"";
    let Some(at) = shipped.find("spans:").and_then(|spans| shipped[spans..].find(ANY).map(|i| spans + i)) else {
        return Err(format!("{POLICY} has no spans filter with {ANY}: update the bench's policies"));
    };
    Ok(format!("{}value: \"{actions}\"{}", &shipped[..at], &shipped[at + ANY.len()..]))
}

/// `(sha256:0123456789ab...)`: a digest, shortened.
pub fn short(digest: &str) -> String {
    format!("({}...)", &digest[..digest.len().min(19)])
}
