//! What verify found: findings with their codes and places, per-chain and
//! overall summaries, and their text and JSON renderings.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

/// At most this many findings of one code are listed per chain; the
/// counts stay complete.
pub const MAX_LISTED: usize = 100;

/// A finding's code (docs/store-format.md lists what triggers each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    /// A line is JSON but not its own RFC 8785 form.
    NonCanonical,
    /// A line, file or checkpoint entry is not what the format says.
    Malformed,
    /// Two directories hold the same chain.
    DuplicateChain,
    /// A record's bytes no longer hash to the leaf the next record links to.
    LeafMismatch,
    /// Seqs are missing before a record.
    SeqGap,
    /// A seq repeats (or goes backwards).
    SeqDup,
    /// A record's `chain.prev` is not the leaf of the record before it.
    LinkBroken,
    /// A record's MAC is wrong for its key.
    BadMac,
    /// A record of a keyed chain has no MAC.
    MissingMac,
    /// A checkpoint signature by a trusted key does not verify.
    BadSignature,
    /// No key trusted at this size signed a checkpoint.
    UnknownKey,
    /// A checkpoint's root is not the root of the stored leaves at its size.
    RootMismatch,
    /// Two checkpoints cannot both be true of one append-only chain.
    InconsistentCheckpoints,
    /// A checkpoint is not the successor of the line before it.
    MissingCheckpoint,
    /// The store ends before a checkpoint or anchor says it should.
    Truncated,
    /// The anchor's root differs from the store's at its size.
    AnchorMismatch,
    /// A chain restarts (genesis or gap record) without a verified
    /// checkpointed head to continue from.
    UnanchoredGenesis,
    /// More records after the newest valid checkpoint than its signed
    /// schedule lets a running host leave uncovered, or records and no
    /// valid checkpoint at all.
    UncoveredRecords,
    /// Records after a `shutdown` checkpoint without a `start` checkpoint
    /// before them: the host did not append them.
    RecordsAfterShutdown,
    /// A cosignature by a given witness key that does not verify.
    BadCosignature,
    /// `--witness` given, and no checkpoint carries a quorum of valid cosignatures.
    Unwitnessed,
    /// The newest valid checkpoint is older than the heartbeat allows.
    Stale,
    /// Records after the last valid checkpoint.
    UnsealedTail,
    /// Records after the newest checkpoint with a quorum of cosignatures.
    UnwitnessedTail,
    /// A declared gap (docs/chain-format.md §1.8) that checks out.
    DeclaredGap,
}

impl Code {
    /// The code as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::NonCanonical => "NON_CANONICAL",
            Code::Malformed => "MALFORMED",
            Code::DuplicateChain => "DUPLICATE_CHAIN",
            Code::LeafMismatch => "LEAF_MISMATCH",
            Code::SeqGap => "SEQ_GAP",
            Code::SeqDup => "SEQ_DUP",
            Code::LinkBroken => "LINK_BROKEN",
            Code::BadMac => "BAD_MAC",
            Code::MissingMac => "MISSING_MAC",
            Code::BadSignature => "BAD_SIGNATURE",
            Code::UnknownKey => "UNKNOWN_KEY",
            Code::RootMismatch => "ROOT_MISMATCH",
            Code::InconsistentCheckpoints => "INCONSISTENT_CHECKPOINTS",
            Code::MissingCheckpoint => "MISSING_CHECKPOINT",
            Code::Truncated => "TRUNCATED",
            Code::AnchorMismatch => "ANCHOR_MISMATCH",
            Code::UnanchoredGenesis => "UNANCHORED_GENESIS",
            Code::UncoveredRecords => "UNCOVERED_RECORDS",
            Code::RecordsAfterShutdown => "RECORDS_AFTER_SHUTDOWN",
            Code::BadCosignature => "BAD_COSIGNATURE",
            Code::Unwitnessed => "UNWITNESSED",
            Code::UnwitnessedTail => "UNWITNESSED_TAIL",
            Code::Stale => "STALE",
            Code::UnsealedTail => "UNSEALED_TAIL",
            Code::DeclaredGap => "DECLARED_GAP",
        }
    }

    /// Errors are evidence of tampering (exit 1); warnings are what verify
    /// cannot vouch for (exit 0 unless `--strict`).
    pub fn severity(self) -> Severity {
        match self {
            Code::Stale | Code::UnsealedTail | Code::UnwitnessedTail | Code::DeclaredGap => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Not proven intact; tolerated unless `--strict`.
    Warning,
    /// Tampering (or damage) found.
    Error,
}

/// Where a finding is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Position {
    /// A segment line.
    Record {
        /// Its seq, when it could be read.
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// The segment file name.
        file: String,
        /// 1-based line.
        line: u64,
    },
    /// A line of `checkpoints.jsonl`.
    Checkpoint {
        /// The checkpoint's size, when it could be read.
        #[serde(skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        /// 1-based line.
        line: u64,
    },
    /// The anchor given with `--anchor`.
    Anchor {
        /// Its size.
        size: u64,
        /// The file it came from.
        file: String,
    },
    /// The chain as a whole.
    Chain,
}

/// One problem or caveat.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What.
    pub code: Code,
    /// How bad.
    pub severity: Severity,
    /// The chain id.
    pub chain: String,
    /// Where.
    pub position: Position,
    /// Details for a person.
    pub detail: String,
}

/// A range of seqs (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeqRange {
    /// First seq.
    pub first: u64,
    /// Last seq.
    pub last: u64,
}

/// The records after the last valid checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tail {
    /// How many.
    pub records: u64,
    /// Their seqs.
    pub seqs: Option<SeqRange>,
    /// `received_at` of the first and last.
    pub received: Option<(String, String)>,
    /// Bytes of a torn last line (a write a crash cut short).
    pub torn_bytes: u64,
}

/// What was verified of one chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// The chain id.
    pub chain: String,
    /// Its directory.
    #[serde(serialize_with = "lossy")]
    pub dir: PathBuf,
    /// Whether `chain.json` named the chain (else `chain` is the
    /// directory's name).
    #[serde(skip)]
    pub named: bool,
    /// The chain's origin (its identity, from `chain.json`).
    pub origin: Option<String>,
    /// With `--witness`: the newest checkpoint size with a quorum of valid
    /// cosignatures, and the witnesses that cosigned it.
    pub witnessed: Option<(u64, Vec<String>)>,
    /// Records read (every stored line that parsed as a record).
    pub records: u64,
    /// Records in the requested range whose checks ran.
    pub verified: u64,
    /// Seqs of the verified records.
    pub verified_seqs: Option<SeqRange>,
    /// Segment files.
    pub segments: u64,
    /// Bytes of segment files.
    pub bytes: u64,
    /// Checkpoint lines.
    pub checkpoints: u64,
    /// Of them, well-formed and signed by a trusted key.
    pub valid_checkpoints: u64,
    /// The newest valid checkpoint: size, time (RFC 3339), signers.
    pub last_checkpoint: Option<(u64, String, Vec<String>)>,
    /// Records after the last checkpoint whose root checked out.
    pub tail: Tail,
    /// Lines in declared gaps, not verified.
    pub superseded_lines: u64,
    /// Key ids of MACs that were present but not checked (no `--hmac-key`).
    pub unchecked_mac_keys: Vec<String>,
    /// Anchors checked against this chain: (size, covered).
    pub anchors: Vec<(u64, bool)>,
    /// Findings by code (complete counts).
    pub counts: BTreeMap<Code, u64>,
    /// Findings on records outside the requested range (counted, not listed).
    pub outside_range: u64,
    /// Findings listed, by code.
    #[serde(skip)]
    pub listed: BTreeMap<Code, u64>,
    /// The findings listed (at most [`MAX_LISTED`] per code).
    pub findings: Vec<Finding>,
    /// Checkpoints that verified, for `--verbose`: (size, line, signers).
    #[serde(skip)]
    pub valid: Vec<(u64, u64, Vec<String>)>,
}

impl ChainReport {
    /// An empty report for the chain in `dir`.
    pub fn new(chain: String, dir: PathBuf) -> Self {
        ChainReport {
            chain,
            dir,
            named: false,
            origin: None,
            witnessed: None,
            records: 0,
            verified: 0,
            verified_seqs: None,
            segments: 0,
            bytes: 0,
            checkpoints: 0,
            valid_checkpoints: 0,
            last_checkpoint: None,
            tail: Tail { records: 0, seqs: None, received: None, torn_bytes: 0 },
            superseded_lines: 0,
            unchecked_mac_keys: Vec::new(),
            anchors: Vec::new(),
            counts: BTreeMap::new(),
            outside_range: 0,
            listed: BTreeMap::new(),
            findings: Vec::new(),
            valid: Vec::new(),
        }
    }

    /// Adds a finding.
    pub fn add(&mut self, code: Code, position: Position, detail: impl Into<String>) {
        *self.counts.entry(code).or_default() += 1;
        let listed = self.listed.entry(code).or_default();
        if (*listed as usize) < MAX_LISTED {
            *listed += 1;
            let finding =
                Finding { code, severity: code.severity(), chain: self.chain.clone(), position, detail: detail.into() };
            self.findings.push(finding);
        }
    }

    /// Counts a finding without listing it (outside the requested range):
    /// it still counts in the verdict and the exit status.
    pub fn count(&mut self, code: Code) {
        *self.counts.entry(code).or_default() += 1;
    }

    /// Errors found.
    pub fn errors(&self) -> u64 {
        self.counts.iter().filter(|(c, _)| c.severity() == Severity::Error).map(|(_, n)| n).sum()
    }

    /// Warnings found.
    pub fn warnings(&self) -> u64 {
        self.counts.iter().filter(|(c, _)| c.severity() == Severity::Warning).map(|(_, n)| n).sum()
    }
}

/// What was asked for with `--from` / `--to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Requested {
    /// The lower bound as given (a seq or an RFC 3339 time).
    pub from: Option<String>,
    /// The upper bound as given.
    pub to: Option<String>,
}

/// The verdict on a whole store.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The store directory.
    pub store: PathBuf,
    /// The requested range.
    pub requested: Requested,
    /// Per chain, in directory order.
    pub chains: Vec<ChainReport>,
    /// Seconds the verification took.
    pub seconds: f64,
    /// Whether warnings fail (`--strict`).
    pub strict: bool,
    /// Whether anchors were given: without any, [`UNANCHORED_LIMITS`] applies.
    pub anchored: bool,
}

/// What a verification without an anchor cannot rule out (printed with
/// its result; docs/store-format.md §5).
pub const UNANCHORED_LIMITS: &str = "Without --anchor, verify cannot rule out: the newest records removed together with \
every checkpoint after an earlier clean shutdown (the store rolled back to it); a whole chain directory removed; a chain \
replaced by another history signed by the same key; up to `every_records` newest records removed from an unsealed tail. \
Keep the newest forwarded checkpoint of each chain (or the mirror's) and verify with --anchor.";

impl Report {
    /// Errors in all chains.
    pub fn errors(&self) -> u64 {
        self.chains.iter().map(ChainReport::errors).sum()
    }

    /// Warnings in all chains.
    pub fn warnings(&self) -> u64 {
        self.chains.iter().map(ChainReport::warnings).sum()
    }

    /// 0 valid, 1 tampering found (or, with `--strict`, a warning).
    pub fn exit_code(&self) -> u8 {
        u8::from(self.errors() > 0 || (self.strict && self.warnings() > 0))
    }

    /// Counts by code over all chains.
    pub fn counts(&self) -> BTreeMap<Code, u64> {
        let mut all = BTreeMap::new();
        for chain in &self.chains {
            for (code, n) in &chain.counts {
                *all.entry(*code).or_default() += n;
            }
        }
        all
    }

    /// The JSON rendering (`--format json`).
    pub fn to_json(&self) -> String {
        let counts: BTreeMap<&str, u64> = self.counts().into_iter().map(|(c, n)| (c.as_str(), n)).collect();
        let value = serde_json::json!({
            "store": self.store.to_string_lossy(),
            "requested": self.requested,
            "valid": self.exit_code() == 0,
            "exit_code": self.exit_code(),
            "strict": self.strict,
            "errors": self.errors(),
            "warnings": self.warnings(),
            "counts": counts,
            "records": self.chains.iter().map(|c| c.records).sum::<u64>(),
            "bytes": self.chains.iter().map(|c| c.bytes).sum::<u64>(),
            "seconds": self.seconds,
            "unanchored_limits": (!self.anchored).then_some(UNANCHORED_LIMITS),
            "chains": self.chains,
        });
        serde_json::to_string_pretty(&value).expect("a report serializes") + "\n"
    }

    /// The text rendering: one line per finding, then the summaries.
    pub fn to_text(&self, verbose: bool) -> String {
        let mut out = String::new();
        for chain in &self.chains {
            if verbose {
                for (size, line, signers) in &chain.valid {
                    let _ = writeln!(
                        out,
                        "Checkpoint {}@{size} valid (signed by {}; checkpoints.jsonl line {line})",
                        clean(&chain.chain),
                        clean(&signers.join(", "))
                    );
                }
                for (size, covered) in &chain.anchors {
                    if *covered {
                        let _ = writeln!(out, "Anchor {}@{size} valid (covered by the store)", clean(&chain.chain));
                    }
                }
            }
            for finding in &chain.findings {
                let _ = writeln!(out, "{}", finding_line(finding));
            }
            for (code, n) in &chain.counts {
                let listed = chain.listed.get(code).copied().unwrap_or(0);
                if *n > listed {
                    let _ = writeln!(
                        out,
                        "... {} more {} in chain {} (not listed: past {MAX_LISTED} or outside the requested range)",
                        n - listed,
                        code.as_str(),
                        clean(&chain.chain)
                    );
                }
            }
        }
        for chain in &self.chains {
            out.push_str(&chain_summary(chain, &self.requested));
        }
        let records: u64 = self.chains.iter().map(|c| c.records).sum();
        let bytes: u64 = self.chains.iter().map(|c| c.bytes).sum();
        let invalid = self.chains.iter().filter(|c| c.errors() > 0).count();
        let _ = writeln!(
            out,
            "Verified {} chain(s), {records} records, {} in {:.2} s: {} valid, {invalid} INVALID",
            self.chains.len(),
            human_bytes(bytes),
            self.seconds,
            self.chains.len() - invalid,
        );
        let list = |severity: Severity| {
            let parts: Vec<String> = self
                .counts()
                .into_iter()
                .filter(|(c, _)| c.severity() == severity)
                .map(|(c, n)| format!("{} {n}", c.as_str()))
                .collect();
            if parts.is_empty() { "none".to_owned() } else { parts.join(", ") }
        };
        let verdict = match (self.errors(), self.warnings(), self.exit_code()) {
            (0, 0, _) => "VALID".to_owned(),
            (0, _, 0) => "VALID with warnings".to_owned(),
            (0, _, _) => "INVALID (--strict: warnings fail)".to_owned(),
            _ => "INVALID".to_owned(),
        };
        let _ = writeln!(
            out,
            "Result: {verdict}; errors: {}; warnings: {}",
            list(Severity::Error),
            list(Severity::Warning)
        );
        if !self.anchored {
            let _ = writeln!(out, "{UNANCHORED_LIMITS}");
        }
        out
    }
}

/// `Record <chain>#<seq> INVALID: CODE: detail (file line n)`.
pub fn finding_line(finding: &Finding) -> String {
    let verdict = match finding.severity {
        Severity::Error => "INVALID",
        Severity::Warning => "WARNING",
    };
    let (what, place) = match &finding.position {
        Position::Record { seq: Some(seq), file, line } => {
            (format!("Record {}#{seq}", finding.chain), format!(" ({file} line {line})"))
        }
        Position::Record { seq: None, file, line } => {
            (format!("Record {} {file} line {line}", finding.chain), String::new())
        }
        Position::Checkpoint { size: Some(size), line } => {
            (format!("Checkpoint {}@{size}", finding.chain), format!(" (checkpoints.jsonl line {line})"))
        }
        Position::Checkpoint { size: None, line } => {
            (format!("Checkpoint {} checkpoints.jsonl line {line}", finding.chain), String::new())
        }
        Position::Anchor { size, file } => (format!("Anchor {}@{size}", finding.chain), format!(" ({file})")),
        Position::Chain => (format!("Chain {}", finding.chain), String::new()),
    };
    clean(&format!("{what} {verdict}: {}: {}{place}", finding.code.as_str(), finding.detail)).into_owned()
}

/// Text with its control characters (a newline in a chain id or a file
/// name) escaped, so that it stays on its line.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A path as (lossy) UTF-8, for JSON.
fn lossy<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

fn chain_summary(chain: &ChainReport, requested: &Requested) -> String {
    let mut out = String::new();
    let verdict = match (chain.errors(), chain.warnings()) {
        (0, 0) => "VALID".to_owned(),
        (0, w) => format!("VALID ({w} warning(s))"),
        (e, w) => format!("INVALID ({e} error(s), {w} warning(s))"),
    };
    let _ = writeln!(out, "Chain {} ({}): {verdict}", clean(&chain.chain), clean(&chain.dir.to_string_lossy()));
    if let Some(origin) = &chain.origin {
        let _ = writeln!(out, "  origin       {}", clean(origin));
    }
    let seqs = |r: &Option<SeqRange>| r.map_or("none".to_owned(), |r| format!("seq {}..{}", r.first, r.last));
    let _ = writeln!(
        out,
        "  records      {} in {} segment(s), {}",
        chain.records,
        chain.segments,
        human_bytes(chain.bytes)
    );
    let asked = match (&requested.from, &requested.to) {
        (None, None) => "all".to_owned(),
        (from, to) => format!("{}..{}", from.as_deref().unwrap_or("start"), to.as_deref().unwrap_or("end")),
    };
    let _ =
        writeln!(out, "  requested    {asked}; verified {} ({} records)", seqs(&chain.verified_seqs), chain.verified);
    let last = match &chain.last_checkpoint {
        Some((size, time, signers)) => format!(", newest @{size} at {} by {}", clean(time), clean(&signers.join(", "))),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "  checkpoints  {} ({} with a trusted signature){last}",
        chain.checkpoints, chain.valid_checkpoints
    );
    let tail = &chain.tail;
    let tail_text = match (&tail.seqs, &tail.received) {
        (Some(r), Some((a, b))) => {
            format!("{} record(s), seq {}..{}, received {a} .. {b}", tail.records, r.first, r.last)
        }
        _ => "none".to_owned(),
    };
    let _ = writeln!(out, "  unsealed     {tail_text}");
    if let Some((size, witnesses)) = &chain.witnessed {
        let _ = writeln!(out, "  witnessed    newest cosigned @{size} by {}", clean(&witnesses.join(", ")));
    }
    if chain.superseded_lines > 0 {
        let _ = writeln!(out, "  superseded   {} line(s) in declared gaps, not verified", chain.superseded_lines);
    }
    if !chain.unchecked_mac_keys.is_empty() {
        let _ = writeln!(
            out,
            "  macs         not checked for key(s) {} (no --hmac-key)",
            clean(&chain.unchecked_mac_keys.join(", "))
        );
    }
    for (size, covered) in &chain.anchors {
        let _ = writeln!(out, "  anchor       @{size} {}", if *covered { "covered" } else { "NOT covered" });
    }
    if chain.outside_range > 0 {
        let _ = writeln!(
            out,
            "  outside      {} finding(s) on records outside the requested range, not listed",
            chain.outside_range
        );
    }
    out
}

/// `12.3 MB`.
pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1 << 10 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} bytes"),
    }
}
