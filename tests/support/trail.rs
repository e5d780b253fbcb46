//! Reads an audit store the way an auditor's script would, independently of
//! the host's store code: every chain directory, every segment line in
//! order, and asserts that each chain walks cleanly from genesis (contiguous
//! seq, `prev` = the previous leaf, one chain id), then checks the signed
//! checkpoints against the Merkle roots of the stored leaves.

use std::path::{Path, PathBuf};

use otel_audit::checkpoint::{Checkpoint, SignedNote, VerifierKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One chain as stored.
pub struct Chain {
    /// Chain id (from chain.json and every record).
    pub id: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Parsed records, in seq order.
    pub records: Vec<Value>,
    /// Leaf hashes, recomputed from the stored bytes.
    pub leaves: Vec<[u8; 32]>,
    /// Parsed checkpoints.jsonl entries.
    pub checkpoints: Vec<Value>,
}

impl Chain {
    /// The span (or log) object of each record.
    pub fn items(&self) -> impl Iterator<Item = &Value> {
        self.records.iter().map(|r| if r.get("span").is_some() { &r["span"] } else { &r["log"] })
    }

    /// The span ids of its records, in order.
    pub fn span_ids(&self) -> Vec<String> {
        self.records.iter().filter_map(|r| r["span"]["span_id"].as_str().map(str::to_owned)).collect()
    }

    /// A string attribute of record `i`'s span or log.
    pub fn attr<'a>(&'a self, i: usize, key: &str) -> Option<&'a str> {
        self.attr_value(i, key)?["s"].as_str()
    }

    /// The typed value (`{"s": ..}`, `{"b": ..}`, `{"a": [..]}`, ...) of an
    /// attribute of record `i`'s span or log.
    pub fn attr_value<'a>(&'a self, i: usize, key: &str) -> Option<&'a Value> {
        self.item(i)?["attributes"].get(key)
    }

    /// Record `i`'s span or log (None for a gap record).
    pub fn item(&self, i: usize) -> Option<&Value> {
        let r = &self.records[i];
        r.get("span").or_else(|| r.get("log"))
    }

    /// Record `i`'s name: the span name, or the log record's event name.
    pub fn name(&self, i: usize) -> Option<&str> {
        let item = self.item(i)?;
        item["name"].as_str().or_else(|| item["event_name"].as_str())
    }
}

/// Reads and walks every chain under `store`. Panics (the test fails) on
/// any break in a chain, naming the file and line.
pub fn read_store(store: &Path) -> Vec<Chain> {
    let mut chains = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(store)
        .unwrap_or_else(|e| panic!("{}: {e}", store.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("chain.json").exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        chains.push(read_chain(&dir));
    }
    chains
}

fn read_chain(dir: &Path) -> Chain {
    let meta: Value = serde_json::from_slice(&std::fs::read(dir.join("chain.json")).unwrap()).unwrap();
    let id = meta["chain_id"].as_str().expect("chain.json has chain_id").to_owned();
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    segments.sort();
    let (mut records, mut leaves) = (Vec::new(), Vec::<[u8; 32]>::new());
    for segment in &segments {
        let bytes = std::fs::read(segment).unwrap();
        assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "{}: last line is torn", segment.display());
        let first: u64 = segment.file_name().unwrap().to_string_lossy()[4..24].parse().unwrap();
        assert_eq!(first, records.len() as u64, "{}: segment name vs position", segment.display());
        for (n, line) in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            let place = format!("{} line {}", segment.display(), n + 1);
            let record: Value = serde_json::from_slice(line).unwrap_or_else(|e| panic!("{place}: {e}"));
            let seq: u64 = record["chain"]["seq"].as_str().unwrap().parse().unwrap();
            assert_eq!(seq, records.len() as u64, "{place}: seq is not contiguous");
            assert_eq!(record["chain"]["id"], id.as_str(), "{place}: chain id");
            let prev = leaves.last().map_or_else(|| "0".repeat(64), hex::encode);
            assert_eq!(record["chain"]["prev"], prev.as_str(), "{place}: prev does not link to the previous leaf");
            leaves.push(leaf(line, &record));
            records.push(record);
        }
    }
    let checkpoints = match std::fs::read_to_string(dir.join("checkpoints.jsonl")) {
        Ok(text) => text.lines().map(|l| serde_json::from_str(l).expect("checkpoint line parses")).collect(),
        Err(_) => Vec::new(),
    };
    Chain { id, dir: dir.to_owned(), records, leaves, checkpoints }
}

/// RFC 6962 leaf of a stored line: the record without its top-level mac.
fn leaf(line: &[u8], record: &Value) -> [u8; 32] {
    let text = std::str::from_utf8(line).unwrap();
    let hashed = match record["mac"].as_str() {
        Some(mac) => text.replacen(&format!(",\"mac\":\"{mac}\""), "", 1),
        None => text.to_owned(),
    };
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(hashed.as_bytes());
    h.finalize().into()
}

/// RFC 6962 Merkle tree hash, written out plainly.
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            // The largest power of two smaller than n.
            let k = n.next_power_of_two() / 2;
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(merkle_root(&leaves[..k]));
            h.update(merkle_root(&leaves[k..]));
            h.finalize().into()
        }
    }
}

/// Verifies every checkpoint of `chain`: signature under `key`, origin
/// naming the chain, size within the chain, root = the Merkle root of the
/// stored leaves at that size. Returns the largest size checkpointed.
pub fn verify_checkpoints(chain: &Chain, key: &VerifierKey) -> u64 {
    assert!(!chain.checkpoints.is_empty(), "chain {} has no checkpoint", chain.id);
    let mut largest = 0;
    for entry in &chain.checkpoints {
        let note = SignedNote::parse(entry["note"].as_str().unwrap()).expect("note parses");
        note.verify(std::slice::from_ref(key)).expect("checkpoint signature verifies");
        let checkpoint = Checkpoint::parse(&note.text).expect("checkpoint body parses");
        assert!(
            checkpoint.origin.contains(&format!("/{}/", chain.id)),
            "origin {} names chain {}",
            checkpoint.origin,
            chain.id
        );
        let size = checkpoint.size as usize;
        assert!(size <= chain.leaves.len(), "checkpoint size {size} > {} records", chain.leaves.len());
        assert_eq!(checkpoint.root, merkle_root(&chain.leaves[..size]), "root at size {size}");
        largest = largest.max(checkpoint.size);
    }
    largest
}
