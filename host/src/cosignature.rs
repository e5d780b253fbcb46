//! Witness cosignatures of checkpoints, C2SP tlog-cosignature v1 (Ed25519):
//! a witness that checked a checkpoint consistent with everything it saw of
//! that log adds a note signature line
//! `— <witness name> base64(key id || u64 BE timestamp || Ed25519 signature)`
//! whose signature covers `cosignature/v1\ntime <timestamp>\n` followed by
//! the checkpoint's whole note text. The key id is
//! `SHA-256(name || "\n" || 0x04 || public key)[:4]`; keys use the note
//! encodings with signature type 0x04 (`name+id+base64(0x04 || key)`, and
//! `PRIVATE+KEY+name+id+base64(0x04 || seed)` for the witness's own).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::checkpoint::{CheckpointError, NoteSignature, key_id_of, parse_key_of};

/// The signature type byte of Ed25519 cosignature v1 keys.
pub const COSIGNATURE_V1: u8 = 0x04;

/// The signed message: header, time line, then the checkpoint's note text.
pub fn message(note_text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{note_text}").into_bytes()
}

/// A witness's cosigning key.
pub struct WitnessSigner {
    name: String,
    key: SigningKey,
}

impl WitnessSigner {
    /// A new random key named `name` (a schema-less URL, by convention).
    pub fn generate(name: &str) -> Result<Self, CheckpointError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| CheckpointError::Random(e.to_string()))?;
        let signer = WitnessSigner { name: name.to_owned(), key: SigningKey::from_bytes(&seed) };
        // The name rules are those of every note key.
        WitnessKey::parse(&signer.verifier().encode())?;
        Ok(signer)
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+base64(0x04 || seed)`; the id must match.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let bad = |reason: &str| CheckpointError::Key { kind: "witness signer", reason: reason.to_owned() };
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(|| bad("expected PRIVATE+KEY+..."))?;
        let (name, seed) = parse_key_of(COSIGNATURE_V1, "witness signer", rest)?;
        let signer = WitnessSigner { name, key: SigningKey::from_bytes(&seed) };
        if signer.encode() != text.trim() {
            return Err(bad("the key id does not match the key"));
        }
        Ok(signer)
    }

    /// The key's text.
    pub fn encode(&self) -> String {
        let id = key_id_of(COSIGNATURE_V1, &self.name, &self.key.verifying_key().to_bytes());
        let data = [&[COSIGNATURE_V1][..], self.key.as_bytes()].concat();
        format!("PRIVATE+KEY+{}+{}+{}", self.name, hex::encode(id), B64.encode(data))
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> WitnessKey {
        WitnessKey { name: self.name.clone(), key: self.key.verifying_key() }
    }

    /// The cosignature line (with its newline) of a checkpoint whose note
    /// text is `note_text`, made at `timestamp` (Unix seconds).
    pub fn cosign(&self, note_text: &str, timestamp: u64) -> String {
        let signature = self.key.sign(&message(note_text, timestamp)).to_bytes();
        let id = key_id_of(COSIGNATURE_V1, &self.name, &self.key.verifying_key().to_bytes());
        let blob = [&id[..], &timestamp.to_be_bytes()[..], &signature[..]].concat();
        format!("\u{2014} {} {}\n", self.name, B64.encode(blob))
    }
}

/// A witness's public key, trusted for cosignatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessKey {
    name: String,
    key: VerifyingKey,
}

impl WitnessKey {
    /// Parses `<name>+<id>+base64(0x04 || key)`; the id must match.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let (name, public) = parse_key_of(COSIGNATURE_V1, "witness", text)?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|e| CheckpointError::Key { kind: "witness", reason: e.to_string() })?;
        let parsed = WitnessKey { name, key };
        if parsed.encode() != text.trim() {
            return Err(CheckpointError::Key { kind: "witness", reason: "the key id does not match the key".into() });
        }
        Ok(parsed)
    }

    /// The key's text.
    pub fn encode(&self) -> String {
        let public = self.key.to_bytes();
        let data = [&[COSIGNATURE_V1][..], &public[..]].concat();
        format!("{}+{}+{}", self.name, hex::encode(self.key_id()), B64.encode(data))
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> [u8; 4] {
        key_id_of(COSIGNATURE_V1, &self.name, &self.key.to_bytes())
    }

    /// Checks one signature line of a checkpoint note whose text is
    /// `note_text`: `None` when the line is not by this witness (another
    /// name or key id), else the cosignature's timestamp if it verifies, or
    /// an error saying why not.
    pub fn check(&self, note_text: &str, signature: &NoteSignature) -> Option<Result<u64, String>> {
        if signature.name != self.name || signature.key_id != self.key_id() {
            return None;
        }
        let Some((time, sig)) = signature.signature.split_first_chunk::<8>() else {
            return Some(Err(format!("the cosignature of {} is too short", self.name)));
        };
        let timestamp = u64::from_be_bytes(*time);
        let valid = ed25519_dalek::Signature::from_slice(sig)
            .is_ok_and(|s| self.key.verify_strict(&message(note_text, timestamp), &s).is_ok());
        Some(if valid && timestamp < 1 << 63 {
            Ok(timestamp)
        } else {
            Err(format!("the cosignature of {} does not verify", self.name))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::SignedNote;

    /// A checkpoint of the Certificate Transparency log
    /// arche2025h1.staging.ct.transparency.dev, as served with the
    /// cosignatures of production witnesses none of which runs this code;
    /// among them remora.n621.de (Florian Larysch's witness), whose
    /// verifier key is the one published in transparency-dev/formats,
    /// note/note_cosigv1_test.go ("native algEd25519CosignatureV1 verifier").
    const CHECKPOINT: &str = "arche2025h1.staging.ct.transparency.dev
1432088532
U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=

\u{2014} arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=
\u{2014} arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=
\u{2014} transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==
\u{2014} witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==
\u{2014} remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==
\u{2014} witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==
";
    const REMORA: &str = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2";
    /// Published with the witness network's list of witnesses.
    const STAGEMOLE: &str = "witness.stagemole.eu+67f7aea0+BEqSG3yu9YrmcM3BHvQYTxwFj3uSWakQepafafpUqklv";

    fn cosignatures(note: &SignedNote, key: &WitnessKey) -> Vec<Result<u64, String>> {
        note.signatures.iter().filter_map(|s| key.check(&note.text, s)).collect()
    }

    #[test]
    fn verifies_the_cosignatures_of_production_witnesses_on_a_real_checkpoint() {
        let note = SignedNote::parse(CHECKPOINT).unwrap();
        for vkey in [REMORA, STAGEMOLE] {
            let key = WitnessKey::parse(vkey).unwrap();
            assert_eq!(key.encode(), vkey, "the key id is SHA-256(name || \\n || 0x04 || key)[:4]");
            let found = cosignatures(&note, &key);
            // Both cosigned at 0x6a122120 (2026-05-23T21:50:24Z).
            assert_eq!(found, vec![Ok(0x6a12_2120)], "{vkey}");
        }
        // The same cosignatures over another size do not verify.
        let clobbered = SignedNote::parse(&CHECKPOINT.replace("1432088532", "1432088533")).unwrap();
        let key = WitnessKey::parse(REMORA).unwrap();
        assert!(matches!(cosignatures(&clobbered, &key).as_slice(), [Err(_)]));
        // A log key (type 0x01) is not a witness key.
        assert!(WitnessKey::parse("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW").is_err());
    }

    #[test]
    fn a_witness_signer_round_trips_and_its_cosignature_covers_the_whole_note_text() {
        let signer = WitnessSigner::generate("witness.example/w1").unwrap();
        assert_eq!(WitnessSigner::parse(&signer.encode()).unwrap().encode(), signer.encode());
        let text = "o/x\n10\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nschedule records=1\n";
        let line = signer.cosign(text, 1_700_000_000);
        let note = SignedNote::parse(&format!("{text}\n{line}")).unwrap();
        let key = signer.verifier();
        assert_eq!(cosignatures(&note, &key), vec![Ok(1_700_000_000)]);
        let extension_changed =
            SignedNote::parse(&format!("{}\n{line}", text.replace("records=1", "records=2"))).unwrap();
        assert!(matches!(cosignatures(&extension_changed, &key).as_slice(), [Err(_)]));
        let other = WitnessSigner::generate("witness.example/w1").unwrap().verifier();
        assert!(cosignatures(&note, &other).is_empty(), "another key's id: not its line");
    }
}
