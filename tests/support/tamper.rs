//! The tamper kit of `tests/verify.rs`: builds a real store with the real
//! `otel-audit serve` and the real component, asks the verifier, and
//! rewrites segments and checkpoints on disk as an attacker with file
//! access would (relinking, renumbering, re-signing with a stolen key).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use otel_audit::checkpoint::{Checkpoint, SignedNote, SignerKey};
use otel_audit::exporter::client::{Client, ClientOptions, Destination};
use otel_audit::loadgen::{self, BatchSpec};
use otel_audit::merkle::Frontier;
use otel_audit::otlp::Signal;
use otel_audit::verify::{self, Options, Report, TrustedKey};
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::server::{Setup, binary};

/// The directory of chain `test/traces/audit/0`.
pub const TRACES: &str = "test_traces_audit_0";

pub type Hash = [u8; 32];

// ---------------------------------------------------------------- building

/// Sends `batches` (seed, spans) of audit spans over OTLP/gRPC, each
/// acknowledged before the next.
pub fn send(setup: &Setup, batches: impl IntoIterator<Item = (u64, usize)>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _entered = rt.enter();
    let options = ClientOptions { headers: vec![], gzip: false, timeout: Duration::from_secs(10) };
    let client = Client::new(&Destination::Grpc { endpoint: setup.grpc_uri() }, options).unwrap();
    for (seed, records) in batches {
        let request = loadgen::traces(&BatchSpec { records, audit_ratio: 1.0, attributes: 4, varied: false, seed });
        rt.block_on(client.send(Signal::Traces, Bytes::from(request.encode_to_vec()))).unwrap();
    }
}

/// A setup with small segments (four records or so each, so most are
/// sealed) and a checkpoint every 10 records.
pub fn setup(tmp: &TempDir) -> Setup {
    let mut setup = Setup::new(tmp.path());
    setup.checkpoint = "{every_records: 10, interval: 1h, heartbeat: 1h}".into();
    setup.segment_size = "4KiB".into();
    setup
}

/// A store of `records` audit spans sent in batches of `batch`, written by
/// the real server and stopped gracefully (its last checkpoint covers all).
pub fn build(records: usize, batch: usize) -> (TempDir, Setup) {
    let tmp = tempfile::tempdir().unwrap();
    let setup = setup(&tmp);
    let server = setup.start();
    send(&setup, (0..records.div_ceil(batch)).map(|i| (i as u64, batch.min(records - i * batch))));
    assert!(server.stop().success());
    (tmp, setup)
}

pub fn chain(setup: &Setup) -> PathBuf {
    setup.store.join(TRACES)
}

// ------------------------------------------------------------- verifying

pub fn options(setup: &Setup) -> Options {
    Options {
        keys: vec![TrustedKey::from_arg(setup.public_key().to_str().unwrap()).unwrap()],
        hmac_keys: Vec::new(),
        anchors: Vec::new(),
        from: None,
        to: None,
        heartbeat: Some(Duration::from_secs(3600)),
        strict: false,
        witnesses: Vec::new(),
        quorum: 0,
        now_unix_nano: otel_audit::clock::now_unix_nano(),
    }
}

pub fn run(store: &Path, options: &Options) -> Report {
    verify::verify(store, options, &mut |_| {}).unwrap()
}

pub fn codes(report: &Report) -> BTreeMap<String, u64> {
    report.counts().into_iter().map(|(c, n)| (c.as_str().to_owned(), n)).collect()
}

/// Asserts the exact codes (with counts) and the exit status.
#[track_caller]
pub fn expect(report: &Report, expected: &[(&str, u64)], exit: u8) {
    let want: BTreeMap<String, u64> = expected.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect();
    assert_eq!(codes(report), want, "\n{}", report.to_text(false));
    assert_eq!(report.exit_code(), exit, "\n{}", report.to_text(false));
}

/// Runs the binary: (exit code, stdout).
pub fn verify_bin(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary()).arg("verify").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

// ------------------------------------------------------------ tampering

pub fn segments(chain: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(chain)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    found.sort();
    found
}

/// Every segment's lines, in order.
pub fn read_segments(chain: &Path) -> Vec<(PathBuf, Vec<String>)> {
    segments(chain)
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let lines = text.lines().map(str::to_owned).collect();
            (p, lines)
        })
        .collect()
}

/// Writes a file whatever its mode (sealed segments are read-only), keeping the mode.
pub fn write(path: &Path, bytes: &[u8]) {
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode()).unwrap_or(0o644);
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn write_segments(segments: &[(PathBuf, Vec<String>)]) {
    for (path, lines) in segments {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        write(path, text.as_bytes());
    }
}

/// All records in seq order, and where each is: (segment, line index).
pub fn flat(segments: &[(PathBuf, Vec<String>)]) -> Vec<(usize, usize)> {
    segments.iter().enumerate().flat_map(|(s, (_, lines))| (0..lines.len()).map(move |l| (s, l))).collect()
}

/// The leaf of a stored line: of the record without its `mac` member.
pub fn leaf(line: &str) -> Hash {
    if let Ok(Value::Object(mut record)) = serde_json::from_str::<Value>(line)
        && record.remove("mac").is_some()
    {
        return leaf(&serde_json_canonicalizer::to_string(&record).unwrap());
    }
    Sha256::new().chain_update([0u8]).chain_update(line.as_bytes()).finalize().into()
}

/// Re-links records `from..` (and renumbers them from their position) as
/// an attacker who rewrites the chain would: JCS again, prev = new leaf.
pub fn rechain(segments: &mut [(PathBuf, Vec<String>)], from: usize) {
    let places = flat(segments);
    for (i, (s, l)) in places.iter().enumerate().skip(from) {
        let prev = if i == 0 {
            [0u8; 32]
        } else {
            let (ps, pl) = places[i - 1];
            leaf(&segments[ps].1[pl])
        };
        let mut record: Value = serde_json::from_str(&segments[*s].1[*l]).unwrap();
        record["chain"]["prev"] = hex::encode(prev).into();
        record["chain"]["seq"] = i.to_string().into();
        segments[*s].1[*l] = serde_json_canonicalizer::to_string(&record).unwrap();
    }
}

pub fn leaves(segments: &[(PathBuf, Vec<String>)]) -> Vec<Hash> {
    segments.iter().flat_map(|(_, lines)| lines.iter().map(|l| leaf(l))).collect()
}

/// A line of checkpoints.jsonl in the host's exact form.
#[derive(Serialize, Deserialize, Clone)]
pub struct CpLine {
    pub size: u64,
    pub root: String,
    pub time_unix_nano: String,
    pub frontier: Vec<String>,
    pub note: String,
}

pub fn read_checkpoints(chain: &Path) -> Vec<CpLine> {
    let text = std::fs::read_to_string(chain.join("checkpoints.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub fn write_checkpoints(chain: &Path, lines: &[CpLine]) {
    let text: String = lines.iter().map(|l| serde_json::to_string(l).unwrap() + "\n").collect();
    write(&chain.join("checkpoints.jsonl"), text.as_bytes());
}

pub fn signer(setup: &Setup) -> SignerKey {
    SignerKey::parse(std::fs::read_to_string(&setup.key).unwrap().trim()).unwrap()
}

/// The `schedule` line of the kit's [`setup`].
pub const KIT_SCHEDULE: &str = "schedule records=10 interval_ms=3600000 heartbeat_ms=3600000";

/// Signs a checkpoint line as the host does: over `leaves[..size]`, with
/// the `prev` of the body before and the kit's schedule.
pub fn signed_line(key: &SignerKey, origin: &str, size: u64, all: &[Hash], time: u64, before: Option<&str>) -> CpLine {
    signed_line_with(key, origin, size, all, time, before, &[KIT_SCHEDULE.to_owned()])
}

/// [`signed_line`] with the extension lines after `time` and `prev` given.
pub fn signed_line_with(
    key: &SignerKey,
    origin: &str,
    size: u64,
    all: &[Hash],
    time: u64,
    before: Option<&str>,
    rest: &[String],
) -> CpLine {
    let mut frontier = Frontier::new();
    all[..size as usize].iter().for_each(|l| frontier.push(*l));
    let mut extensions = vec![format!("time {}", audit_format::rfc3339_nanos(time))];
    if let Some(before) = before {
        extensions.push(format!("prev {}", B64.encode(Sha256::digest(before.as_bytes()))));
    }
    extensions.extend_from_slice(rest);
    let body = Checkpoint { origin: origin.into(), size, root: frontier.root(), extensions }.body();
    CpLine {
        size,
        root: hex::encode(frontier.root()),
        time_unix_nano: time.to_string(),
        frontier: frontier.nodes().iter().map(hex::encode).collect(),
        note: key.sign_note(&body).unwrap(),
    }
}

pub fn body(line: &CpLine) -> String {
    SignedNote::parse(&line.note).unwrap().text
}

/// Re-signs every checkpoint over `all` with `key`, keeping sizes, times
/// and the other extension lines (schedule, start, shutdown).
pub fn resign_all(chain: &Path, key: &SignerKey, all: &[Hash]) {
    let old = read_checkpoints(chain);
    let origin = Checkpoint::parse(&body(&old[0])).unwrap().origin;
    let mut new: Vec<CpLine> = Vec::new();
    for line in &old {
        let before = new.last().map(body);
        let rest: Vec<String> = Checkpoint::parse(&body(line))
            .unwrap()
            .extensions
            .into_iter()
            .filter(|l| !l.starts_with("time ") && !l.starts_with("prev "))
            .collect();
        let time = line.time_unix_nano.parse().unwrap();
        new.push(signed_line_with(key, &origin, line.size, all, time, before.as_deref(), &rest));
    }
    write_checkpoints(chain, &new);
}

/// Sizes of the checkpoints, in file order.
pub fn sizes(chain: &Path) -> Vec<u64> {
    read_checkpoints(chain).iter().map(|c| c.size).collect()
}
