//! Signed checkpoints: a C2SP tlog-checkpoint body (origin, tree size,
//! base64 RFC 6962 Merkle root) in a C2SP signed note, signed with Ed25519.
//!
//! Keys use the note ecosystem's text encodings, so Go's `sumdb/note`,
//! witnesses and other tlog tools read them: a verifier key is
//! `<name>+<hex key id>+<base64(0x01 || public key)>`, a signer key
//! `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`, and the key id
//! is the first four bytes of `SHA-256(name || "\n" || 0x01 || public key)`.
//! The signing key lives in the host, never in the processor.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use audit_format::Hash;

/// The signature algorithm byte of Ed25519 note keys.
const ED25519: u8 = 0x01;

/// A key, note or checkpoint that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// A key's text is not a valid note key.
    #[error("invalid {kind} key: {reason}")]
    Key {
        /// `signer` or `verifier`.
        kind: &'static str,
        /// Why.
        reason: String,
    },
    /// A signed note is malformed.
    #[error("malformed signed note: {0}")]
    Note(String),
    /// A checkpoint body is malformed.
    #[error("malformed checkpoint: {0}")]
    Checkpoint(String),
    /// The randomness for a new key could not be had.
    #[error("cannot generate a key: {0}")]
    Random(String),
}

fn key_error(kind: &'static str, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Key { kind, reason: reason.into() }
}

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    key_id_of(ED25519, name, public)
}

/// The note key id of a key of signature type `alg`:
/// `SHA-256(name || "\n" || alg || public key)[:4]`.
pub(crate) fn key_id_of(alg: u8, name: &str, public: &[u8; 32]) -> [u8; 4] {
    let digest = Sha256::new().chain_update(name.as_bytes()).chain_update([b'\n', alg]).chain_update(public).finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn check_name(kind: &'static str, name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(key_error(kind, format!("key name {name:?} must be non-empty, without '+' or spaces")));
    }
    Ok(())
}

/// Splits `name+hexid+base64` and checks the id against the key.
fn parse_key(kind: &'static str, text: &str) -> Result<(String, [u8; 32]), CheckpointError> {
    parse_key_of(ED25519, kind, text)
}

/// [`parse_key`] for keys of signature type `alg`.
pub(crate) fn parse_key_of(
    expected_alg: u8,
    kind: &'static str,
    text: &str,
) -> Result<(String, [u8; 32]), CheckpointError> {
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(key_error(kind, "expected NAME+KEYID+BASE64"));
    };
    check_name(kind, name)?;
    // The id itself is checked by the caller, which re-encodes the key.
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(key_error(kind, format!("key id {id:?} is not 8 hex digits")));
    }
    let bytes = B64.decode(data).map_err(|e| key_error(kind, format!("key data is not base64: {e}")))?;
    let (&alg, key) = bytes.split_first().ok_or_else(|| key_error(kind, "key data is empty"))?;
    if alg != expected_alg {
        return Err(key_error(kind, format!("signature type {alg:#04x} is not {expected_alg:#04x}")));
    }
    let key = key.try_into().map_err(|_| key_error(kind, format!("an Ed25519 key is 32 bytes, got {}", key.len())))?;
    Ok((name.to_owned(), key))
}

/// A checkpoint signing key.
pub struct SignerKey {
    name: String,
    key: SigningKey,
}

impl SignerKey {
    /// A new random key named `name` (the checkpoint origin's signer).
    pub fn generate(name: &str) -> Result<Self, CheckpointError> {
        check_name("signer", name)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| CheckpointError::Random(e.to_string()))?;
        Ok(SignerKey { name: name.to_owned(), key: SigningKey::from_bytes(&seed) })
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64>`; the id must match.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let rest =
            text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(|| key_error("signer", "expected PRIVATE+KEY+..."))?;
        let (name, seed) = parse_key("signer", rest)?;
        let key = SigningKey::from_bytes(&seed);
        let signer = SignerKey { name, key };
        if signer.encode() != text.trim() {
            return Err(key_error("signer", "the key id does not match the key"));
        }
        Ok(signer)
    }

    /// The signer key text.
    pub fn encode(&self) -> String {
        let public = self.key.verifying_key().to_bytes();
        let data = [&[ED25519][..], self.key.as_bytes()].concat();
        format!("PRIVATE+KEY+{}+{}+{}", self.name, hex::encode(key_id(&self.name, &public)), B64.encode(data))
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey { name: self.name.clone(), key: self.key.verifying_key() }
    }

    /// Signs `text` (which must end with a newline) as a signed note.
    pub fn sign_note(&self, text: &str) -> Result<String, CheckpointError> {
        if !text.ends_with('\n') || text.is_empty() {
            return Err(CheckpointError::Note("the text must be non-empty and end with a newline".into()));
        }
        let signature = self.key.sign(text.as_bytes()).to_bytes();
        let public = self.key.verifying_key().to_bytes();
        let blob = [&key_id(&self.name, &public)[..], &signature[..]].concat();
        Ok(format!("{text}\n\u{2014} {} {}\n", self.name, B64.encode(blob)))
    }
}

/// A trusted checkpoint verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key: VerifyingKey,
}

impl VerifierKey {
    /// Parses `<name>+<id>+<base64>`; the id must match.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let (name, public) = parse_key("verifier", text)?;
        let key = VerifyingKey::from_bytes(&public).map_err(|e| key_error("verifier", e.to_string()))?;
        let verifier = VerifierKey { name, key };
        if verifier.encode() != text.trim() {
            return Err(key_error("verifier", "the key id does not match the key"));
        }
        Ok(verifier)
    }

    /// The verifier key text.
    pub fn encode(&self) -> String {
        let public = self.key.to_bytes();
        let data = [&[ED25519][..], &public[..]].concat();
        format!("{}+{}+{}", self.name, hex::encode(key_id(&self.name, &public)), B64.encode(data))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id: the first four bytes of `SHA-256(name || "\n" || 0x01 || key)`.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, &self.key.to_bytes())
    }

    /// Checks one signature line of a note whose signed text is `text`:
    /// `None` when the line is not by this key (another name or key id),
    /// else whether the signature verifies.
    pub fn check(&self, text: &str, signature: &NoteSignature) -> Option<bool> {
        if signature.name != self.name || signature.key_id != self.key_id() {
            return None;
        }
        let valid = ed25519_dalek::Signature::from_slice(&signature.signature)
            .is_ok_and(|s| self.key.verify_strict(text.as_bytes(), &s).is_ok());
        Some(valid)
    }
}

/// One signature line of a signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The signer's key name.
    pub name: String,
    /// The signer's key id.
    pub key_id: [u8; 4],
    /// The signature bytes.
    pub signature: Vec<u8>,
}

/// A signed note split into its text and signature lines (not verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The signed text, ending with a newline.
    pub text: String,
    /// The signatures, in order.
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Splits a signed note: text, a blank line, then `— name base64` lines.
    pub fn parse(note: &str) -> Result<Self, CheckpointError> {
        let bad = |m: &str| CheckpointError::Note(m.to_owned());
        let split = note.rfind("\n\n").ok_or_else(|| bad("no blank line before the signatures"))?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        if !sigs.ends_with('\n') {
            return Err(bad("the last signature line does not end with a newline"));
        }
        if note.contains('\r') {
            return Err(bad("carriage returns are not allowed in a signed note"));
        }
        let mut signatures = Vec::new();
        for line in sigs.lines() {
            let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| bad("a signature line must start with '— '"))?;
            let (name, data) = rest.split_once(' ').ok_or_else(|| bad("a signature line is '— NAME BASE64'"))?;
            let blob = B64
                .decode(data)
                .map_err(|e| CheckpointError::Note(format!("signature of {name} is not base64: {e}")))?;
            if blob.len() < 5 {
                return Err(CheckpointError::Note(format!("signature of {name} is too short")));
            }
            let key_id = [blob[0], blob[1], blob[2], blob[3]];
            signatures.push(NoteSignature { name: name.to_owned(), key_id, signature: blob[4..].to_vec() });
        }
        if signatures.is_empty() {
            return Err(bad("no signatures"));
        }
        Ok(SignedNote { text: text.to_owned(), signatures })
    }

    /// Verifies the note against trusted keys: the names of the trusted
    /// keys whose signatures verify (each once). A signature by a trusted
    /// key that does not verify is an error, and so is a note that no
    /// trusted key signed: an unverified note is never "verified by nobody".
    pub fn verify(&self, trusted: &[VerifierKey]) -> Result<Vec<String>, CheckpointError> {
        let mut verified: Vec<String> = Vec::new();
        for sig in &self.signatures {
            let Some(key) =
                trusted.iter().find(|k| k.name == sig.name && key_id(&k.name, &k.key.to_bytes()) == sig.key_id)
            else {
                continue;
            };
            let signature = ed25519_dalek::Signature::from_slice(&sig.signature)
                .map_err(|_| CheckpointError::Note(format!("signature of {} is not an Ed25519 signature", sig.name)))?;
            key.key
                .verify_strict(self.text.as_bytes(), &signature)
                .map_err(|_| CheckpointError::Note(format!("signature of {} does not verify", sig.name)))?;
            if !verified.contains(&sig.name) {
                verified.push(sig.name.clone());
            }
        }
        if verified.is_empty() {
            let names: Vec<&str> = self.signatures.iter().map(|s| s.name.as_str()).collect();
            return Err(CheckpointError::Note(format!(
                "no trusted key signed this note (signed by: {})",
                names.join(", ")
            )));
        }
        Ok(verified)
    }
}

/// A C2SP tlog-checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (unique per chain).
    pub origin: String,
    /// Number of records the root covers.
    pub size: u64,
    /// RFC 6962 Merkle root of records `0..size`.
    pub root: Hash,
    /// Extension lines, verbatim.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The body text: origin, size, base64 root, extensions, each a line.
    pub fn body(&self) -> String {
        let mut body = format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root));
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    /// Parses a body.
    pub fn parse(body: &str) -> Result<Self, CheckpointError> {
        let bad = |m: String| CheckpointError::Checkpoint(m);
        let lines: Vec<&str> =
            body.strip_suffix('\n').ok_or_else(|| bad("must end with a newline".into()))?.split('\n').collect();
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(bad("needs origin, size and root lines".into()));
        };
        if origin.is_empty() {
            return Err(bad("the origin line is empty".into()));
        }
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(bad(format!("size {size:?} is not a decimal number without sign or leading zero")));
        }
        let size = size.parse().map_err(|_| bad(format!("size {size:?} is not a decimal number")))?;
        let root = B64.decode(root).map_err(|e| bad(format!("root is not base64: {e}")))?;
        let root = root.try_into().map_err(|r: Vec<u8>| bad(format!("root is {} bytes, not 32", r.len())))?;
        if extensions.iter().any(|l| l.is_empty()) {
            return Err(bad("empty extension line".into()));
        }
        Ok(Checkpoint {
            origin: (*origin).to_owned(),
            size,
            root,
            extensions: extensions.iter().map(|l| (*l).to_owned()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The reference vector of Go's golang.org/x/mod/sumdb/note.
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str =
        "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const SIGNED: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn reproduces_the_go_note_vector() {
        let signer = SignerKey::parse(SKEY).unwrap();
        assert_eq!(signer.encode(), SKEY);
        assert_eq!(signer.verifier().encode(), VKEY);
        assert_eq!(signer.sign_note(TEXT).unwrap(), SIGNED);
        let verifier = VerifierKey::parse(VKEY).unwrap();
        let note = SignedNote::parse(SIGNED).unwrap();
        assert_eq!(note.text, TEXT);
        assert_eq!(note.verify(&[verifier]).unwrap(), vec!["PeterNeumann"]);
    }

    #[test]
    fn tampering_and_wrong_keys_are_caught() {
        let verifier = VerifierKey::parse(VKEY).unwrap();
        let tampered = SIGNED.replace("cryptography", "cryptograph");
        let err = SignedNote::parse(&tampered).unwrap().verify(std::slice::from_ref(&verifier)).unwrap_err();
        assert_eq!(err, CheckpointError::Note("signature of PeterNeumann does not verify".into()));
        let other = SignerKey::generate("PeterNeumann").unwrap();
        // Same name, different key: not a signature by a trusted key.
        let forged = other.sign_note(TEXT).unwrap();
        let err = SignedNote::parse(&forged).unwrap().verify(std::slice::from_ref(&verifier)).unwrap_err();
        assert!(err.to_string().contains("no trusted key signed this note"), "{err}");
        // A repeated signature line counts once.
        let twice = format!("{SIGNED}{}", SIGNED.rsplit_once("\n\n").unwrap().1);
        assert_eq!(
            SignedNote::parse(&twice).unwrap().verify(std::slice::from_ref(&verifier)).unwrap(),
            vec!["PeterNeumann"]
        );
        assert!(SignedNote::parse(&SIGNED.replace('\n', "\r\n")).is_err());
        assert!(VerifierKey::parse(&VKEY.replace("c74f20a3", "c74f20a4")).is_err(), "id must match");
        assert!(SignerKey::parse(VKEY).is_err());
    }

    #[test]
    fn checkpoint_body_round_trips() {
        let cp = Checkpoint { origin: "otel-audit/demo".into(), size: 42, root: [7; 32], extensions: vec![] };
        let body = cp.body();
        assert_eq!(body, format!("otel-audit/demo\n42\n{}\n", B64.encode([7u8; 32])));
        assert_eq!(Checkpoint::parse(&body).unwrap(), cp);
        for bad in [
            "x\n42\n",
            "x\n042\nAAAA\n",
            "\n1\nAAAA\n",
            "x\n1\nAAAA\n",
            "x\n+5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
        let signer = SignerKey::generate("otel-audit-dev").unwrap();
        let note = SignedNote::parse(&signer.sign_note(&body).unwrap()).unwrap();
        assert_eq!(note.verify(&[signer.verifier()]).unwrap(), vec!["otel-audit-dev"]);
        assert_eq!(Checkpoint::parse(&note.text).unwrap(), cp);
    }
}
