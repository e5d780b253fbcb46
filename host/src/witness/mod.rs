//! `otel-audit witness`: a transparency log witness (C2SP tlog-witness,
//! cosignatures per C2SP tlog-cosignature v1). It keeps, per log origin,
//! the size and root of the latest checkpoint it cosigned, durably; it
//! cosigns a checkpoint signed by a log key it trusts only when a
//! consistency proof shows it extends that one, and refuses (saying why)
//! any other. A witness run by another party than the host is what stops
//! the host's own key holder from rewriting history or showing two
//! histories of one chain.
//!
//! - this file: the checks of `add-checkpoint` and the state they update;
//! - [`http`]: the HTTP interface (`POST /add-checkpoint`).

pub mod http;
pub mod submit;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use audit_format::Hash;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::checkpoint::{Checkpoint, SignedNote, VerifierKey};
use crate::cosignature::WitnessSigner;
use crate::proof::check::consistent;

/// At most this many consistency proof lines (C2SP tlog-witness).
const MAX_PROOF_LINES: usize = 63;

/// Why a checkpoint was not cosigned, with the HTTP status the protocol
/// gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request is not an add-checkpoint body, or the old size is above
    /// the checkpoint's (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The origin is not one this witness follows (404).
    #[error("unknown log origin {0:?}")]
    UnknownOrigin(String),
    /// No trusted log key signed the checkpoint (403).
    #[error("the checkpoint of {0:?} is not signed by a trusted log key")]
    Unsigned(String),
    /// The old size is not the size this witness last cosigned (409; the
    /// body is that size), or the same size with another root.
    #[error("the witness last cosigned size {size} of this log{}", if *.other_root { " with another root: two histories" } else { "" })]
    Conflict {
        /// The size the witness last cosigned.
        size: u64,
        /// The sizes matched but the roots differ.
        other_root: bool,
    },
    /// The consistency proof does not verify (422).
    #[error(
        "the consistency proof from size {old} to {new} does not verify: not an extension of what the witness cosigned"
    )]
    Inconsistent {
        /// The old size.
        old: u64,
        /// The checkpoint's size.
        new: u64,
    },
    /// The state could not be read or written (500).
    #[error("witness state: {0}")]
    State(String),
}

impl Refusal {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::UnknownOrigin(_) => 404,
            Refusal::Unsigned(_) => 403,
            Refusal::Conflict { .. } => 409,
            Refusal::Inconsistent { .. } => 422,
            Refusal::State(_) => 500,
        }
    }
}

/// What the witness recorded of one log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Latest {
    origin: String,
    size: u64,
    root: String,
}

/// A witness: its key, the logs it follows, and its state directory.
pub struct Witness {
    signer: WitnessSigner,
    log_keys: Vec<VerifierKey>,
    origin_prefixes: Vec<String>,
    state_dir: PathBuf,
    /// Held from reading a log's state to persisting the new one.
    lock: Mutex<()>,
}

impl Witness {
    /// A witness cosigning with `signer` the checkpoints signed by any of
    /// `log_keys` whose origin starts with one of `origin_prefixes` (any
    /// origin when empty), keeping its state in `state_dir`.
    pub fn new(
        signer: WitnessSigner,
        log_keys: Vec<VerifierKey>,
        origin_prefixes: Vec<String>,
        state_dir: &Path,
    ) -> std::io::Result<Self> {
        crate::store::FileAccess::Private.create_dir(state_dir)?;
        Ok(Witness { signer, log_keys, origin_prefixes, state_dir: state_dir.to_owned(), lock: Mutex::new(()) })
    }

    /// The witness's public key text.
    pub fn public_key(&self) -> String {
        self.signer.verifier().encode()
    }

    fn state_path(&self, origin: &str) -> PathBuf {
        self.state_dir.join(format!("{}.json", hex::encode(&Sha256::digest(origin.as_bytes())[..16])))
    }

    fn latest(&self, origin: &str) -> Result<Option<Latest>, Refusal> {
        let path = self.state_path(origin);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map(Some).map_err(|e| Refusal::State(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Refusal::State(format!("{}: {e}", path.display()))),
        }
    }

    fn record(&self, latest: &Latest) -> Result<(), Refusal> {
        let path = self.state_path(&latest.origin);
        let bytes = serde_json::to_vec(latest).expect("state serializes");
        crate::outfile::write_durably(&path, &bytes).map_err(|e| Refusal::State(e.to_string()))
    }

    /// Handles an add-checkpoint request body at `now` (Unix seconds):
    /// the cosignature line, or why not.
    pub fn add_checkpoint(&self, body: &str, now: u64) -> Result<String, Refusal> {
        let request = parse_request(body)?;
        let note = SignedNote::parse(&request.note).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let checkpoint = Checkpoint::parse(&note.text).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let origin = checkpoint.origin.clone();
        if !self.origin_prefixes.is_empty() && !self.origin_prefixes.iter().any(|p| origin.starts_with(p.as_str())) {
            return Err(Refusal::UnknownOrigin(origin));
        }
        let signed = note.signatures.iter().any(|s| self.log_keys.iter().any(|k| k.check(&note.text, s) == Some(true)));
        if !signed {
            return Err(Refusal::Unsigned(origin));
        }
        if request.old > checkpoint.size {
            return Err(Refusal::BadRequest(format!(
                "old size {} is above the checkpoint's size {}",
                request.old, checkpoint.size
            )));
        }
        let _held = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let latest = self.latest(&origin)?;
        let (size, root) = match &latest {
            Some(l) => (l.size, l.root.clone()),
            None => (0, String::new()),
        };
        if request.old != size {
            return Err(Refusal::Conflict { size, other_root: false });
        }
        let new_root = hex::encode(checkpoint.root);
        if size == checkpoint.size && size > 0 && root != new_root {
            return Err(Refusal::Conflict { size, other_root: true });
        }
        let holds = match (size, latest.as_ref().and_then(|l| parse_root(&l.root))) {
            (0, _) => request.proof.is_empty(),
            (old, _) if old == checkpoint.size => request.proof.is_empty(),
            (old, Some(old_root)) => consistent(old, checkpoint.size, old_root, checkpoint.root, &request.proof),
            (_, None) => return Err(Refusal::State(format!("the recorded root of {origin:?} is unreadable"))),
        };
        if !holds {
            tracing::warn!(%origin, old = size, new = checkpoint.size, "refused an inconsistent checkpoint");
            return Err(Refusal::Inconsistent { old: size, new: checkpoint.size });
        }
        self.record(&Latest { origin, size: checkpoint.size, root: new_root })?;
        Ok(self.signer.cosign(&note.text, now))
    }
}

fn parse_root(hex_text: &str) -> Option<Hash> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

/// An add-checkpoint request body.
struct Request {
    old: u64,
    proof: Vec<Hash>,
    note: String,
}

fn parse_request(body: &str) -> Result<Request, Refusal> {
    let bad = |m: &str| Refusal::BadRequest(m.to_owned());
    let (head, note) = body.split_once("\n\n").ok_or_else(|| bad("no empty line before the checkpoint"))?;
    let mut lines = head.split('\n');
    let old =
        lines.next().and_then(|l| l.strip_prefix("old ")).ok_or_else(|| bad("the first line must be `old <size>`"))?;
    if old.is_empty() || !old.bytes().all(|b| b.is_ascii_digit()) || (old.len() > 1 && old.starts_with('0')) {
        return Err(bad("the old size is not a decimal number without leading zeros"));
    }
    let old = old.parse().map_err(|_| bad("the old size is out of range"))?;
    let proof = lines
        .map(|line| {
            let bytes = B64.decode(line).map_err(|_| bad("a consistency proof line is not base64"))?;
            Hash::try_from(bytes.as_slice()).map_err(|_| bad("a consistency proof line is not 32 bytes"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if proof.len() > MAX_PROOF_LINES {
        return Err(bad("more than 63 consistency proof lines"));
    }
    if old == 0 && !proof.is_empty() {
        return Err(bad("the proof must be empty from size 0"));
    }
    Ok(Request { old, proof, note: note.to_owned() })
}

/// The add-checkpoint body for `note` with a proof from `old` (for clients).
pub fn request_body(old: u64, proof: &[Hash], note: &str) -> String {
    let mut body = format!("old {old}\n");
    for hash in proof {
        body.push_str(&B64.encode(hash));
        body.push('\n');
    }
    body.push('\n');
    body.push_str(note);
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::SignerKey;
    use audit_format::hash::{leaf_hash, merkle_root};

    /// A log of `n` leaves; its tiles; its signed checkpoint at `size`.
    struct Log {
        dir: tempfile::TempDir,
        key: SignerKey,
        leaves: Vec<Hash>,
    }

    impl Log {
        fn new(seed: u8, n: u64) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&[seed, i as u8, (i >> 8) as u8])).collect();
            let mut tiles = crate::store::tiles::TileWriter::open(dir.path(), 0).unwrap();
            leaves.iter().for_each(|l| tiles.push(*l));
            tiles.sync().unwrap();
            Log { dir, key: SignerKey::generate("log").unwrap(), leaves }
        }
        fn note(&self, size: u64) -> String {
            let root = merkle_root(&self.leaves[..size as usize]);
            self.key
                .sign_note(&Checkpoint { origin: "otel-audit/c/0/ab".into(), size, root, extensions: vec![] }.body())
                .unwrap()
        }
        fn proof(&self, old: u64, new: u64) -> Vec<Hash> {
            let tiles = crate::store::tiles::TileReader::open(self.dir.path());
            crate::proof::make::consistency_path(&tiles, old, new).unwrap()
        }
    }

    fn witness(log: &Log, state: &Path) -> Witness {
        let signer = WitnessSigner::parse(&WitnessSigner::generate("w.example/1").unwrap().encode()).unwrap();
        Witness::new(signer, vec![log.key.verifier()], vec!["otel-audit/".into()], state).unwrap()
    }

    #[test]
    fn cosigns_consistent_checkpoints_and_refuses_everything_else_with_its_status() {
        let log = Log::new(1, 300);
        let state = tempfile::tempdir().unwrap();
        let w = witness(&log, state.path());
        let key = w.signer.verifier();
        let line = w.add_checkpoint(&request_body(0, &[], &log.note(100)), 1_800_000_000).unwrap();
        let cosigned = SignedNote::parse(&format!("{}{line}", log.note(100))).unwrap();
        let checks: Vec<_> = cosigned.signatures.iter().filter_map(|s| key.check(&cosigned.text, s)).collect();
        assert_eq!(checks, vec![Ok(1_800_000_000)]);
        // Old size not the recorded one: 409 with the size.
        let refusal = w.add_checkpoint(&request_body(0, &[], &log.note(200)), 1).unwrap_err();
        assert_eq!((refusal.status(), refusal.clone()), (409, Refusal::Conflict { size: 100, other_root: false }));
        // A consistent extension: cosigned, recorded.
        w.add_checkpoint(&request_body(100, &log.proof(100, 200), &log.note(200)), 2).unwrap();
        // Another history of the same origin, signed by the same key: 422.
        let fork = Log { key: SignerKey::parse(&log.key.encode()).unwrap(), ..Log::new(2, 300) };
        let refusal = w.add_checkpoint(&request_body(200, &fork.proof(200, 300), &fork.note(300)), 3).unwrap_err();
        assert_eq!(refusal.status(), 422, "{refusal}");
        let refusal = w.add_checkpoint(&request_body(200, &[], &fork.note(200)), 3).unwrap_err();
        assert_eq!(refusal, Refusal::Conflict { size: 200, other_root: true });
        // Not signed by the log key: 403; another origin: 404; garbage: 400.
        let stranger = SignerKey::generate("log").unwrap();
        let note = stranger.sign_note(&SignedNote::parse(&log.note(300)).unwrap().text).unwrap();
        assert_eq!(w.add_checkpoint(&request_body(200, &log.proof(200, 300), &note), 4).unwrap_err().status(), 403);
        let elsewhere = log
            .key
            .sign_note(&Checkpoint { origin: "other/log".into(), size: 1, root: [0; 32], extensions: vec![] }.body())
            .unwrap();
        assert_eq!(w.add_checkpoint(&request_body(0, &[], &elsewhere), 4).unwrap_err().status(), 404);
        assert_eq!(w.add_checkpoint("old 01\n\nx", 4).unwrap_err().status(), 400);
        assert_eq!(w.add_checkpoint(&request_body(250, &[], &log.note(200)), 4).unwrap_err().status(), 400);
        // The state survives a restart: the next witness process refuses a rollback.
        let again = Witness::new(
            WitnessSigner::parse(&w.signer.encode()).unwrap(),
            vec![log.key.verifier()],
            vec![],
            state.path(),
        )
        .unwrap();
        assert_eq!(
            again.add_checkpoint(&request_body(100, &[], &log.note(100)), 5).unwrap_err(),
            Refusal::Conflict { size: 200, other_root: false }
        );
        again.add_checkpoint(&request_body(200, &log.proof(200, 300), &log.note(300)), 6).unwrap();
    }
}
