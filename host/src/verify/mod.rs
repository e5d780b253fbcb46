//! `otel-audit verify`: proves a store unaltered, or names what was
//! changed, removed, added or reordered, and where.
//!
//! Every chain directory is walked once from genesis ([`chain`]): each line
//! must be its own RFC 8785 form ([`jcs`], written from the RFC, sharing no
//! code with the writer) and a record of the chain format ([`record`]);
//! seqs run contiguously; each `prev` is the leaf before; MACs verify
//! under the keys given; the leaves build the verifier's own Merkle tree
//! ([`tree`]), whose roots must be the signed ones of every checkpoint
//! ([`checkpoints`]: form, signatures under trusted keys, the `prev` chain
//! of checkpoints, agreement among them) and of the anchors; with
//! `--witness`, the witnesses' cosignatures too. What cannot be proven
//! (records after the last checkpoint within its signed schedule, an old
//! newest checkpoint, a declared gap, records no witness saw yet) is a
//! warning; everything else is an error. The codes and their triggers are
//! listed in docs/store-format.md.
//!
//! Not here: repairing anything. Verify only reads.

mod chain;
pub mod checkpoints;
mod files;
pub mod jcs;
pub mod record;
pub mod report;
pub mod tree;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::checkpoint::{Checkpoint, SignedNote, VerifierKey};
pub use report::{ChainReport, Code, Finding, Position, Report, Requested, Severity};

/// Why verify could not run (exit 2): usage, configuration, or I/O.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A bad argument or input file.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

fn usage(message: impl Into<String>) -> VerifyError {
    VerifyError::Usage(message.into())
}

/// Which chain a checkpoint belongs to: its id, and its origin when
/// `chain.json` names one.
#[derive(Debug, Clone, Copy)]
pub struct ChainName<'a> {
    /// The chain id (empty for an anchor, known only by its origin).
    pub id: &'a str,
    /// The chain's origin line.
    pub origin: Option<&'a str>,
}

/// A checkpoint verifier key, the chain it is trusted for (all by
/// default) and the checkpoint sizes.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// The key.
    pub key: VerifierKey,
    /// Trusted only for this chain (a chain id or an origin), if set.
    pub chain: Option<String>,
    /// Trusted for checkpoints of at least this size.
    pub from_size: u64,
    /// ...and below this size, if set.
    pub until_size: Option<u64>,
}

impl TrustedKey {
    /// Reads `FILE`, `FILE@RANGE` or `FILE@CHAIN:RANGE`, RANGE being `FROM`,
    /// `FROM..UNTIL`, `..UNTIL` or `..`: a `keygen` `.pub` file, trusted
    /// for checkpoint sizes in `FROM..UNTIL` (`UNTIL` exclusive; by default
    /// all sizes) of every chain, or of the chain whose id or origin is
    /// CHAIN only (each chain has its own handover size).
    pub fn from_arg(arg: &str) -> Result<Self, VerifyError> {
        let is_range = |r: &str| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        let (path, chain, range) = match arg.rsplit_once('@') {
            Some((path, spec)) if !Path::new(arg).exists() => match spec.rsplit_once(':') {
                Some((chain, range)) if !chain.is_empty() && is_range(range) => (path, Some(chain), Some(range)),
                None if is_range(spec) => (path, None, Some(spec)),
                _ => (arg, None, None),
            },
            _ => (arg, None, None),
        };
        let bad_range = || {
            usage(format!(
                "--public-key {arg}: the size range must be FROM, FROM..UNTIL, ..UNTIL or ..; a chain is CHAIN:RANGE"
            ))
        };
        let number =
            |t: &str| if t.is_empty() { Ok(None) } else { t.parse::<u64>().map(Some).map_err(|_| bad_range()) };
        let (from_size, until_size) = match range {
            None => (0, None),
            Some(range) => match range.split_once("..") {
                Some((from, until)) => (number(from)?.unwrap_or(0), number(until)?),
                None => (number(range)?.ok_or_else(bad_range)?, None),
            },
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| usage(format!("--public-key: cannot read {path}: {e}")))?;
        let key = VerifierKey::parse(text.trim()).map_err(|e| usage(format!("--public-key {path}: {e}")))?;
        Ok(TrustedKey { key, chain: chain.map(str::to_owned), from_size, until_size })
    }

    /// Whether the key is trusted for `chain` at all.
    pub fn applies_to(&self, chain: &ChainName<'_>) -> bool {
        match &self.chain {
            None => true,
            Some(only) => {
                only == chain.id
                    || chain.origin == Some(only.as_str())
                    || (chain.id.is_empty() && chain.origin.is_some_and(|o| o.contains(&format!("/{only}/"))))
            }
        }
    }

    /// Whether the key is trusted for a checkpoint of `size` of `chain`.
    pub fn covers(&self, chain: &ChainName<'_>, size: u64) -> bool {
        self.applies_to(chain) && size >= self.from_size && self.until_size.is_none_or(|until| size < until)
    }

    /// `sizes 100..` (`of chain C, sizes 100..`) for messages.
    pub fn validity(&self) -> String {
        let sizes = match self.until_size {
            Some(until) => format!("sizes {}..{until}", self.from_size),
            None => format!("sizes {}..", self.from_size),
        };
        match &self.chain {
            Some(chain) => format!("chain {chain}, {sizes}"),
            None => sizes,
        }
    }
}

/// A checkpoint kept outside the store (`--anchor`): the signed note, for
/// example the body of the `audit.checkpoint` log record sent downstream.
#[derive(Debug, Clone)]
pub struct Anchor {
    /// Where it came from.
    pub file: String,
    /// Its body.
    pub checkpoint: Checkpoint,
}

impl Anchor {
    /// Reads an anchor file: a signed note's text, or a line of a
    /// `checkpoints.jsonl` (its `note` member). Its signature must verify
    /// under a trusted key.
    pub fn load(path: &Path, keys: &[TrustedKey]) -> Result<Self, VerifyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| usage(format!("--anchor: cannot read {file}: {e}")))?;
        let note_text = if text.trim_start().starts_with('{') {
            let value: serde_json::Value =
                serde_json::from_str(text.trim()).map_err(|e| usage(format!("--anchor {file}: {e}")))?;
            value["note"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| usage(format!("--anchor {file}: no \"note\" member")))?
        } else {
            text
        };
        let note = SignedNote::parse(&note_text).map_err(|e| usage(format!("--anchor {file}: {e}")))?;
        let checkpoint = Checkpoint::parse(&note.text).map_err(|e| usage(format!("--anchor {file}: {e}")))?;
        let trusted = note.signatures.iter().any(|sig| {
            let chain = ChainName { id: "", origin: Some(&checkpoint.origin) };
            keys.iter().any(|k| k.covers(&chain, checkpoint.size) && k.key.check(&note.text, sig) == Some(true))
        });
        if !trusted {
            return Err(usage(format!(
                "--anchor {file}: no key trusted at size {} signed it validly (give the key that signed it with --public-key)",
                checkpoint.size
            )));
        }
        Ok(Anchor { file, checkpoint })
    }
}

/// A `--from` / `--to` bound: a seq, or a received-at time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// A seq (inclusive).
    Seq(u64),
    /// An RFC 3339 time as the records write it (nine fraction digits, Z).
    Time(String),
}

impl Bound {
    /// Parses a seq or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<Self, VerifyError> {
        if let Ok(seq) = text.parse::<u64>() {
            return Ok(Bound::Seq(seq));
        }
        let nanos = crate::clock::parse_rfc3339(text).map_err(|e| usage(format!("{e}; or give a seq")))?;
        Ok(Bound::Time(audit_format::rfc3339_nanos(nanos)))
    }
}

/// What to verify against.
#[derive(Debug, Clone)]
pub struct Options {
    /// Trusted checkpoint keys (at least one).
    pub keys: Vec<TrustedKey>,
    /// HMAC keys by key id, for record MACs.
    pub hmac_keys: Vec<(String, Vec<u8>)>,
    /// Checkpoints kept elsewhere.
    pub anchors: Vec<Anchor>,
    /// Records before this are read but not checked.
    pub from: Option<Bound>,
    /// Records after this are read but not checked.
    pub to: Option<Bound>,
    /// The newest checkpoint may be at most twice this old; by default the
    /// heartbeat its signed schedule names.
    pub heartbeat: Option<Duration>,
    /// Witness keys whose cosignatures count (`--witness`).
    pub witnesses: Vec<crate::cosignature::WitnessKey>,
    /// How many of them must have cosigned a checkpoint.
    pub quorum: usize,
    /// Warnings fail.
    pub strict: bool,
    /// "Now", Unix nanoseconds.
    pub now_unix_nano: u64,
}

/// The chain directories of a store: `store` itself if it holds a
/// `chain.json`, and every subdirectory (a real one, not a symlink)
/// holding a `chain.json` or segments. Neither shape hides the other.
pub fn chain_dirs(store: &Path) -> Result<Vec<PathBuf>, VerifyError> {
    Ok(scan(store)?.dirs)
}

/// What a store directory holds.
struct Scan {
    /// `store` first if it is a chain directory, then its chain subdirectories.
    dirs: Vec<PathBuf>,
    /// Entries of `store` that are symlinks to a directory (not followed).
    symlinks: Vec<PathBuf>,
}

/// Whether `dir` holds a `chain.json` (of any file type: one that is not a
/// regular file is reported) or segments.
fn looks_like_chain(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join("chain.json")).is_ok()
        || std::fs::read_dir(dir)
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("seg-")))
            .unwrap_or(false)
}

fn scan(store: &Path) -> Result<Scan, VerifyError> {
    let io = |source| VerifyError::Io { path: store.to_path_buf(), source };
    if !store.is_dir() {
        return Err(usage(format!("{} is not a directory", store.display())));
    }
    let root_is_chain = std::fs::symlink_metadata(store.join("chain.json")).is_ok();
    let mut dirs = Vec::new();
    let mut symlinks = Vec::new();
    for entry in std::fs::read_dir(store).map_err(io)? {
        let entry = entry.map_err(io)?;
        let file_type = entry.file_type().map_err(io)?;
        let path = entry.path();
        if file_type.is_symlink() {
            if path.is_dir() {
                symlinks.push(path);
            }
            continue;
        }
        if file_type.is_dir() && looks_like_chain(&path) {
            dirs.push(path);
        }
    }
    dirs.sort();
    symlinks.sort();
    if root_is_chain {
        dirs.insert(0, store.to_path_buf());
    }
    Ok(Scan { dirs, symlinks })
}

/// Bytes of segment files under the chain directories (for progress).
pub fn segment_bytes(dirs: &[PathBuf]) -> u64 {
    dirs.iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|d| d.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Verifies every chain of the store; `progress` gets the bytes of
/// segments read as they are.
pub fn verify(store: &Path, options: &Options, progress: &mut dyn FnMut(u64)) -> Result<Report, VerifyError> {
    if options.keys.is_empty() {
        return Err(usage(
            "verify needs at least one --public-key (the checkpoint verifier key, NAME.pub): without a trust root nothing an attacker could not recompute would be checked",
        ));
    }
    let started = Instant::now();
    let Scan { dirs, symlinks } = scan(store)?;
    // An empty store is checked against the anchors: its chains were removed.
    if dirs.is_empty() && symlinks.is_empty() && options.anchors.is_empty() {
        return Err(usage(format!(
            "{} holds no chain (no directory with a chain.json); give --anchor to check it against the chains it should hold",
            store.display()
        )));
    }
    let mut chains = Vec::new();
    let mut matched = vec![false; options.anchors.len()];
    for dir in &dirs {
        let origin = origin_hint(dir);
        let anchors: Vec<&Anchor> = options
            .anchors
            .iter()
            .enumerate()
            .filter(|(_, a)| origin.as_ref().is_some_and(|origin| a.checkpoint.origin == *origin))
            .map(|(i, a)| {
                matched[i] = true;
                a
            })
            .collect();
        let mut report = chain::verify(dir, options, &anchors, progress)?;
        let is_root = dir.as_path() == store;
        if is_root && dirs.len() > 1 {
            report.add(
                Code::Malformed,
                Position::Chain,
                "the store directory is a chain directory (it holds a chain.json) and also holds chain directories: the host never writes this shape; each is verified",
            );
        }
        if report.named && !is_root {
            let expected = crate::store::ChainStore::chain_dir_name(&report.chain);
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name != expected {
                report.add(
                    Code::Malformed,
                    Position::Chain,
                    format!(
                        "the directory is named {name:?}, but chain {:?} is kept in {expected:?}: it was renamed or copied",
                        report.chain
                    ),
                );
            }
        }
        chains.push(report);
    }
    for link in symlinks {
        let name = link.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut report = ChainReport::new(name.clone(), link.clone());
        report.add(
            Code::Malformed,
            Position::Chain,
            format!("{name:?} in the store is a symbolic link to a directory, not a chain directory: not followed"),
        );
        chains.push(report);
    }
    // One chain in two directories: which holds the chain is ambiguous.
    let mut by_id: std::collections::BTreeMap<String, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, report) in chains.iter().enumerate().filter(|(_, r)| r.named) {
        by_id.entry(report.chain.clone()).or_default().push(i);
    }
    for indices in by_id.values().filter(|v| v.len() > 1) {
        for &i in indices {
            let others: Vec<String> =
                indices.iter().filter(|j| **j != i).map(|j| chains[*j].dir.to_string_lossy().into_owned()).collect();
            let detail = format!(
                "chain {:?} is also kept in {}: a chain has one directory (a copy, or a substitute)",
                chains[i].chain,
                others.join(", ")
            );
            chains[i].add(Code::DuplicateChain, Position::Chain, detail);
        }
    }
    // An anchor for a chain the store no longer has: the whole chain is gone.
    for (anchor, _) in options.anchors.iter().zip(&matched).filter(|(_, m)| !**m) {
        let origin = &anchor.checkpoint.origin;
        let mut report = ChainReport::new(origin.clone(), store.join("?"));
        // The same chain id begun again (or replaced) has another origin.
        let base = origin.rsplit_once('/').map_or(origin.as_str(), |(base, _)| base);
        let successor =
            dirs.iter().filter_map(|d| origin_hint(d)).find(|o| o.rsplit_once('/').is_some_and(|(b, _)| b == base));
        let detail = match successor {
            Some(other) => format!(
                "the anchor is a checkpoint of {origin:?}, but the store's chain of that id is another log, {other:?}: the chain was replaced or begun again"
            ),
            None => {
                format!("the anchor is a checkpoint of {origin:?}, but the store has no such chain: it was removed")
            }
        };
        report.add(
            Code::Truncated,
            Position::Anchor { size: anchor.checkpoint.size, file: anchor.file.clone() },
            detail,
        );
        report.anchors.push((anchor.checkpoint.size, false));
        chains.push(report);
    }
    let requested = Requested { from: options.from.as_ref().map(bound_text), to: options.to.as_ref().map(bound_text) };
    Ok(Report {
        store: store.to_path_buf(),
        requested,
        chains,
        seconds: started.elapsed().as_secs_f64(),
        strict: options.strict,
        anchored: !options.anchors.is_empty(),
    })
}

fn bound_text(bound: &Bound) -> String {
    match bound {
        Bound::Seq(n) => format!("seq {n}"),
        Bound::Time(t) => t.clone(),
    }
}

/// The origin `chain.json` names, if it can be read: anchors are matched
/// to chains by it.
fn origin_hint(dir: &Path) -> Option<String> {
    let bytes = files::read_small(&dir.join("chain.json"), chain::MAX_CHAIN_FILE).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value["origin"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_key_argument_names_sizes_and_optionally_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.pub");
        std::fs::write(&file, crate::checkpoint::SignerKey::generate("k").unwrap().verifier().encode()).unwrap();
        let path = file.display();
        let parse = |spec: &str| TrustedKey::from_arg(&format!("{path}{spec}")).unwrap();
        let all = parse("");
        assert_eq!((all.chain.as_deref(), all.from_size, all.until_size), (None, 0, None));
        let window = parse("@10..20");
        assert_eq!((window.chain.as_deref(), window.from_size, window.until_size), (None, 10, Some(20)));
        let chain = parse("@a/logs/audit/0:200");
        assert_eq!((chain.chain.as_deref(), chain.from_size, chain.until_size), (Some("a/logs/audit/0"), 200, None));
        let everything = parse("@a/logs/audit/0:..");
        assert_eq!((everything.from_size, everything.until_size), (0, None));

        let logs = ChainName { id: "a/logs/audit/0", origin: Some("o/a/logs/audit/0/0123456789abcdef") };
        let traces = ChainName { id: "a/traces/audit/0", origin: Some("o/a/traces/audit/0/0123456789abcdef") };
        let anchor = ChainName { id: "", origin: logs.origin };
        assert!(chain.covers(&logs, 200) && !chain.covers(&logs, 199) && !chain.covers(&traces, 500));
        assert!(chain.covers(&anchor, 300), "an anchor is matched by its origin");
        let by_origin = parse("@o/a/logs/audit/0/0123456789abcdef:0");
        assert!(by_origin.covers(&logs, 0) && !by_origin.covers(&traces, 0));
        assert!(window.covers(&traces, 10) && !window.covers(&traces, 20));
        assert_eq!(chain.validity(), "chain a/logs/audit/0, sizes 200..");

        for bad in ["@1..x", "@chain:1..x"] {
            let error = TrustedKey::from_arg(&format!("{path}{bad}")).unwrap_err().to_string();
            assert!(error.contains("cannot read") || error.contains("size range"), "{bad}: {error}");
        }
    }
}
