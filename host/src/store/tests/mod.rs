//! Store tests on real files in temporary directories, with real fsyncs.

mod outbox;

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use audit_format::hash::{GENESIS_PREV, Hash, leaf_hash, merkle_root, to_hex};
use audit_format::{ChainHead, Context};

use super::*;
use crate::otlp::{self, Encoding};

/// Makes chained records in the shape of real ones (seq as a string, as
/// docs/chain-format.md §1.2 says), with their leaves.
pub(super) struct Records {
    chain_id: String,
    seq: u64,
    prev: Hash,
    pub all: Vec<Hash>,
}

impl Records {
    pub fn new(chain_id: &str) -> Self {
        Records { chain_id: chain_id.to_owned(), seq: 0, prev: GENESIS_PREV, all: Vec::new() }
    }

    /// `n` more records, padded with `pad` bytes of name.
    pub fn next(&mut self, n: usize, pad: usize) -> (Vec<Vec<u8>>, Vec<Hash>) {
        let mut records = Vec::new();
        let mut leaves = Vec::new();
        for _ in 0..n {
            let record = format!(
                r#"{{"chain":{{"id":"{}","prev":"{}","seq":"{}"}},"resource":{{}},"scope":{{}},"span":{{"name":"op {}{}"}},"v":1}}"#,
                self.chain_id,
                to_hex(&self.prev),
                self.seq,
                self.seq,
                "x".repeat(pad)
            )
            .into_bytes();
            let leaf = leaf_hash(&record);
            self.prev = leaf;
            self.seq += 1;
            self.all.push(leaf);
            records.push(record);
            leaves.push(leaf);
        }
        (records, leaves)
    }
}

pub(super) fn open(dir: &Path, options: StoreOptions) -> (ChainStore, Recovery) {
    ChainStore::open(dir, "c", options).unwrap()
}

pub(super) fn plain() -> StoreOptions {
    StoreOptions { segment_size: 1 << 20, outbox: false, ..StoreOptions::default() }
}

/// Appends one request of `n` records without an outbox frame.
pub(super) fn append(store: &mut ChainStore, chain: &mut Records, n: usize) -> AppendStats {
    let (records, leaves) = chain.next(n, 0);
    store.append(&[Append { records: &records, leaves: &leaves, outbox: None, continues: 0 }]).unwrap()
}

pub(super) fn segments(dir: &Path) -> Vec<PathBuf> {
    segment::list(dir).unwrap().into_iter().map(|s| s.path).collect()
}

fn assert_state(store: &ChainStore, chain: &Records) {
    assert_eq!(store.head().seq, chain.all.len() as u64);
    assert_eq!(store.head().prev, chain.all.last().copied().unwrap_or(GENESIS_PREV));
    assert_eq!(store.frontier().size(), chain.all.len() as u64);
    assert_eq!(store.frontier().root(), merkle_root(&chain.all));
}

fn append_line(path: &Path, bytes: &[u8]) {
    OpenOptions::new().append(true).open(path).unwrap().write_all(bytes).unwrap();
}

#[test]
fn appends_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let (mut store, recovery) = open(dir.path(), plain());
    assert_eq!((recovery.next_seq, recovery.notes.len()), (0, 0));
    assert_eq!(store.head(), &ChainHead::genesis("c"));
    let stats = append(&mut store, &mut chain, 3);
    assert_eq!(stats.records, 3);
    let (a, la) = chain.next(2, 0);
    let (b, lb) = chain.next(4, 0);
    let stats = store
        .append(&[
            Append { records: &a, leaves: &la, outbox: None, continues: 0 },
            Append { records: &[], leaves: &[], outbox: None, continues: 0 },
            Append { records: &b, leaves: &lb, outbox: None, continues: 0 },
        ])
        .unwrap();
    assert_eq!((stats.records, stats.bytes), (6, a.iter().chain(&b).map(|r| r.len() as u64 + 1).sum()));
    assert_eq!(store.append(&[]).unwrap(), AppendStats::default());
    assert_state(&store, &chain);
    let chain_json = fs::read_to_string(dir.path().join("chain.json")).unwrap();
    let origin = store.origin().to_owned();
    assert_eq!(chain_json, format!(r#"{{"chain_id":"c","origin":"{origin}","format":2}}"#));
    let nonce = origin.strip_prefix("otel-audit/c/").unwrap();
    assert!(nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit()), "{origin}");
    drop(store);

    let (store, recovery) = open(dir.path(), plain());
    assert_eq!(store.origin(), origin, "an existing chain keeps its origin");
    assert_eq!((recovery.next_seq, recovery.torn_bytes, recovery.replayed_leaves), (9, 0, 9));
    assert!(recovery.notes.is_empty(), "{:?}", recovery.notes);
    assert_state(&store, &chain);
    let lines = fs::read_to_string(&segments(dir.path())[0]).unwrap();
    assert_eq!(lines.lines().count(), 9);
    assert!(lines.ends_with('\n'));
}

#[test]
fn rotates_by_size_without_splitting_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let (mut store, _) =
        open(dir.path(), StoreOptions { segment_size: 2000, outbox: false, ..StoreOptions::default() });
    for _ in 0..12 {
        append(&mut store, &mut chain, 3);
    }
    // One batch larger than a segment gets a segment of its own.
    let (big, leaves) = chain.next(2, 3000);
    store.append(&[Append { records: &big, leaves: &leaves, outbox: None, continues: 0 }]).unwrap();
    append(&mut store, &mut chain, 3);
    assert_state(&store, &chain);
    drop(store);

    let segs = segments(dir.path());
    assert!(segs.len() >= 4, "{segs:?}");
    let mut first = 0;
    for (i, path) in segs.iter().enumerate() {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(name, segment::name(first));
        let text = fs::read_to_string(path).unwrap();
        let lines = text.lines().count() as u64;
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        if i + 1 < segs.len() {
            assert_eq!(mode, 0o400, "{name} is sealed (read-only, owner only)");
            assert!(text.len() <= 2000 || lines == 2, "{name} holds {} bytes", text.len());
        } else {
            assert_eq!(mode & 0o200, 0o200, "{name} is active");
        }
        // Batches are 3 records, except the big one of 2.
        assert!(lines.is_multiple_of(3) || lines == 2, "{name} holds {lines} lines: a batch was split");
        first += lines;
    }
    assert_eq!(first, chain.all.len() as u64);

    let (mut store, recovery) =
        open(dir.path(), StoreOptions { segment_size: 2000, outbox: false, ..StoreOptions::default() });
    assert!(recovery.notes.is_empty(), "{:?}", recovery.notes);
    assert_state(&store, &chain);
    append(&mut store, &mut chain, 3);
    assert_state(&store, &chain);
}

#[test]
fn a_failed_rotation_is_finished_by_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let options = StoreOptions { segment_size: 1000, outbox: true, ..StoreOptions::default() };
    let (mut store, _) = open(dir.path(), options.clone());
    append(&mut store, &mut chain, 5);
    store.fault = Some(Fault::Rotate);
    let before = chain_at(&chain);
    let (records, leaves) = chain.next(5, 0);
    let error = store.append(&[Append { records: &records, leaves: &leaves, outbox: None, continues: 0 }]).unwrap_err();
    assert!(matches!(error, StoreError::Io { op: "create", .. }), "{error}");
    assert_state(&store, &before);
    // A batch small enough for the old segment still goes to a new one:
    // the old one may already be sealed.
    let mut chain = before;
    append(&mut store, &mut chain, 1);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2);
    assert_eq!(fs::read_to_string(&segs[1]).unwrap().lines().count(), 1);
    assert_eq!(fs::read_dir(dir.path().join("outbox")).unwrap().count(), 2, "the outbox rotated too");
    drop(store);
    let (store, recovery) = open(dir.path(), options);
    // (The records were appended without outbox frames.)
    assert!(recovery.notes.iter().all(|n| n.contains("no outbox frame")), "{:?}", recovery.notes);
    assert_state(&store, &chain);
}

#[test]
fn a_torn_last_line_is_dropped_and_appending_continues() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let (mut store, _) = open(dir.path(), plain());
    append(&mut store, &mut chain, 4);
    drop(store);
    let seg = &segments(dir.path())[0];
    let len = fs::metadata(seg).unwrap().len();
    // Half of the record seq 4 would have been.
    let (next, _) = chain_at(&chain).next(1, 0);
    append_line(seg, &next[0][..next[0].len() / 2]);

    let (mut store, recovery) = open(dir.path(), plain());
    assert_eq!((recovery.next_seq, recovery.torn_bytes), (4, next[0].len() as u64 / 2));
    assert!(recovery.notes.iter().any(|n| n.contains("torn write") && n.contains("seg-")), "{:?}", recovery.notes);
    assert_eq!(fs::metadata(seg).unwrap().len(), len);
    assert_state(&store, &chain);
    append(&mut store, &mut chain, 2);
    drop(store);
    let (store, recovery) = open(dir.path(), plain());
    assert_eq!((recovery.next_seq, recovery.torn_bytes), (6, 0));
    assert_state(&store, &chain);
    let seqs: Vec<String> = fs::read_to_string(seg)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["chain"]["seq"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seqs, ["0", "1", "2", "3", "4", "5"]);
}

/// A generator continuing where `chain` stands.
fn chain_at(chain: &Records) -> Records {
    Records { chain_id: chain.chain_id.clone(), seq: chain.seq, prev: chain.prev, all: chain.all.clone() }
}

/// Changes the first hex digit of a line's `prev`.
fn flip_prev(line: &str) -> String {
    let at = line.find("\"prev\":\"").unwrap() + 8;
    let digit = if &line[at..at + 1] == "0" { "1" } else { "0" };
    format!("{}{digit}{}", &line[..at], &line[at + 1..])
}

#[test]
fn a_corrupt_complete_line_fails_open_naming_file_and_line() {
    /// A name, an edit of the third line, and what the error must say.
    type Case = (&'static str, fn(&str) -> String, &'static str);
    let cases: [Case; 4] = [
        ("edited prev", flip_prev, "chain.prev"),
        ("edited seq", |l| l.replace("\"seq\":\"2\"", "\"seq\":\"7\""), "chain.seq is 7 where 2 belongs"),
        ("not JSON", |l| l.replace("\"v\":1}", "\"v\":1"), "not a JSON record"),
        ("other chain", |l| l.replace("\"id\":\"c\"", "\"id\":\"d\""), "chain.id is \"d\""),
    ];
    for (name, edit, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = Records::new("c");
        let (mut store, _) = open(dir.path(), plain());
        append(&mut store, &mut chain, 4);
        drop(store);
        let seg = &segments(dir.path())[0];
        let text = fs::read_to_string(seg).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[2] = edit(&lines[2]);
        assert_ne!(lines[2], text.lines().nth(2).unwrap(), "{name}: the edit changed nothing");
        fs::write(seg, lines.join("\n") + "\n").unwrap();
        let error = ChainStore::open(dir.path(), "c", plain()).err().expect(name);
        let message = error.to_string();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{name}: {message}");
        assert!(message.contains("seg-00000000000000000000.jsonl, line 3 (seq 2)"), "{name}: {message}");
        assert!(message.contains(expected), "{name}: {message}");
    }
}

#[test]
fn a_broken_seam_between_segments_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let options = StoreOptions { segment_size: 700, outbox: false, ..StoreOptions::default() };
    let (mut store, _) = open(dir.path(), options.clone());
    for _ in 0..6 {
        append(&mut store, &mut chain, 2);
    }
    let f = store.frontier().clone();
    let entry =
        CheckpointEntry { size: 12, root: f.root(), time_unix_nano: 1, frontier: f.nodes().to_vec(), note: "n".into() };
    store.append_checkpoint(&entry).unwrap();
    drop(store);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    // Drop the last record of the first (sealed) segment.
    let first = &segs[0];
    fs::set_permissions(first, fs::Permissions::from_mode(0o644)).unwrap();
    let text = fs::read_to_string(first).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    fs::write(first, kept[..kept.len() - 1].join("\n") + "\n").unwrap();
    // With a checkpoint past it, only the seams of the segment are read.
    let message = ChainStore::open(dir.path(), "c", options.clone()).err().expect("a gap").to_string();
    assert!(message.contains("seg-00000000000000000000.jsonl, offset"), "{message}");
    assert!(message.contains("chain.seq is 2 where 3 belongs"), "{message}");
    // Without one, it is read whole.
    fs::remove_file(dir.path().join("checkpoints.jsonl")).unwrap();
    let message = ChainStore::open(dir.path(), "c", options).err().expect("a gap").to_string();
    assert!(message.contains("seg-00000000000000000004.jsonl: starts at seq 4"), "{message}");
}

#[test]
fn another_chains_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), plain()));
    let error = ChainStore::open(dir.path(), "d", plain()).err().unwrap();
    assert!(
        matches!(&error, StoreError::WrongChain { expected, found, .. } if expected == "d" && found == "c"),
        "{error}"
    );
    assert!(error.to_string().contains("chain.json"), "{error}");
}

#[test]
fn recovery_from_a_checkpoint_equals_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let options = StoreOptions { segment_size: 1500, outbox: false, ..StoreOptions::default() };
    let (mut store, _) = open(dir.path(), options.clone());
    assert!(store.last_checkpoint().is_none());
    for _ in 0..7 {
        append(&mut store, &mut chain, 3);
    }
    let entry = CheckpointEntry {
        size: store.frontier().size(),
        root: store.frontier().root(),
        time_unix_nano: 1_795_000_000_000_000_001,
        frontier: store.frontier().nodes().to_vec(),
        note: "c\n21\nroot\n\n— key sig\n".into(),
    };
    store.append_checkpoint(&entry).unwrap();
    assert_eq!(store.last_checkpoint(), Some(&entry));
    // A checkpoint that does not fit the chain is refused.
    let bad = CheckpointEntry { root: [9; 32], ..entry.clone() };
    assert!(matches!(store.append_checkpoint(&bad), Err(StoreError::Invalid { what: "checkpoint", .. })));
    let ahead = CheckpointEntry { size: 22, ..entry.clone() };
    assert!(matches!(store.append_checkpoint(&ahead), Err(StoreError::Invalid { .. })));
    for _ in 0..4 {
        append(&mut store, &mut chain, 2);
    }
    drop(store);
    assert!(segments(dir.path()).len() > 2);

    let (store, recovery) = open(dir.path(), options.clone());
    assert_eq!(recovery.replayed_leaves, 8);
    assert_eq!(store.last_checkpoint(), Some(&entry));
    assert_state(&store, &chain);
    let from_checkpoint = store.frontier().clone();
    drop(store);

    // A torn checkpoint line is dropped like a torn record.
    let path = dir.path().join("checkpoints.jsonl");
    append_line(&path, br#"{"size":29,"root":"ab"#);
    let (store, recovery) = open(dir.path(), options.clone());
    assert!(recovery.notes.iter().any(|n| n.contains("torn checkpoint line")), "{:?}", recovery.notes);
    assert_eq!(store.last_checkpoint(), Some(&entry));
    drop(store);

    fs::remove_file(&path).unwrap();
    let (store, recovery) = open(dir.path(), options);
    assert_eq!(recovery.replayed_leaves, 29);
    assert_eq!(store.frontier(), &from_checkpoint);
}

#[test]
fn a_checkpoint_past_the_records_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let (mut store, _) = open(dir.path(), plain());
    append(&mut store, &mut chain, 5);
    let f = store.frontier().clone();
    let entry =
        CheckpointEntry { size: 5, root: f.root(), time_unix_nano: 1, frontier: f.nodes().to_vec(), note: "n".into() };
    store.append_checkpoint(&entry).unwrap();
    drop(store);
    // Lose the last record, as if it had never been written.
    let seg = &segments(dir.path())[0];
    let text = fs::read_to_string(seg).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    fs::write(seg, lines[..4].join("\n") + "\n").unwrap();
    let message = ChainStore::open(dir.path(), "c", plain()).err().unwrap().to_string();
    assert!(message.contains("checkpoints.jsonl") && message.contains("acknowledged records are missing"), "{message}");
}

#[test]
fn invalid_batches_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let (mut store, _) = open(dir.path(), plain());
    let (records, leaves) = chain.next(2, 0);
    let short = Append { records: &records, leaves: &leaves[..1], outbox: None, continues: 0 };
    assert!(store.append(&[short]).unwrap_err().to_string().contains("2 records but 1 leaves"));
    let newline = vec![b"{\"a\":\n1}".to_vec()];
    let append = Append { records: &newline, leaves: &leaves[..1], outbox: None, continues: 0 };
    assert!(store.append(&[append]).unwrap_err().to_string().contains("record 0 contains a newline"));
    assert_eq!(fs::metadata(&segments(dir.path())[0]).unwrap().len(), 0);
    assert_eq!(store.head().seq, 0);
}

#[test]
fn a_failed_write_leaves_nothing_and_the_store_usable() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let options = StoreOptions { segment_size: 1 << 20, outbox: true, ..StoreOptions::default() };
    let (mut store, _) = open(dir.path(), options.clone());
    append(&mut store, &mut chain, 2);
    let seg = segments(dir.path())[0].clone();
    let len = fs::metadata(&seg).unwrap().len();
    let before = chain_at(&chain);
    let (records, leaves) = chain.next(3, 0);
    store.fault = Some(Fault::Write);
    let batch = [Append {
        records: &records,
        leaves: &leaves,
        outbox: Some((Signal::Traces, b"req".as_slice())),
        continues: 0,
    }];
    let error = store.append(&batch).unwrap_err();
    assert!(matches!(&error, StoreError::Io { op: "write", .. }), "{error}");
    assert_eq!(fs::metadata(&seg).unwrap().len(), len, "the partial batch is cut away");
    assert_state(&store, &before);
    // The same records go in on retry.
    store.append(&batch).unwrap();
    assert_state(&store, &chain);
}

/// Records and their leaves.
type Batch = (Vec<Vec<u8>>, Vec<Hash>);

/// A store of two records in `dir`, and three more records not appended:
/// the store, the chain with them, the chain without them, and them.
fn two_stored_three_more(dir: &Path) -> (ChainStore, Records, Records, Batch) {
    let mut chain = Records::new("c");
    let (mut store, _) = open(dir, plain());
    append(&mut store, &mut chain, 2);
    let before = chain_at(&chain);
    let more = chain.next(3, 0);
    (store, chain, before, more)
}

#[test]
fn a_failed_fsync_poisons_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, chain, before, (records, leaves)) = two_stored_three_more(dir.path());
    let batch = [Append { records: &records, leaves: &leaves, outbox: None, continues: 0 }];
    store.fault = Some(Fault::Fsync);
    assert!(matches!(store.append(&batch), Err(StoreError::Io { op: "fsync", .. })));
    assert_state(&store, &before);
    assert!(matches!(store.append(&batch), Err(StoreError::Poisoned)));
    let entry =
        CheckpointEntry { size: 0, root: merkle_root(&[]), time_unix_nano: 1, frontier: vec![], note: String::new() };
    assert!(matches!(store.append_checkpoint(&entry), Err(StoreError::Poisoned)));
    drop(store);
    let (mut store, recovery) = open(dir.path(), plain());
    assert_eq!(recovery.next_seq, 2);
    store.append(&batch).unwrap();
    assert_state(&store, &chain);
}

#[test]
fn a_write_moves_the_head_only_once_its_fsync_completes_and_nothing_else_goes_in_between() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, chain, before, (records, leaves)) = two_stored_three_more(dir.path());
    let batch = [Append { records: &records, leaves: &leaves, outbox: None, continues: 0 }];
    let unsynced = store.write(&batch).unwrap().expect("records to sync");
    assert_state(&store, &before);
    // One write at a time, and no checkpoint over records not yet durable.
    let error = store.write(&batch).unwrap_err();
    assert!(error.to_string().contains("still waiting for its fsync"), "{error}");
    let entry = CheckpointEntry {
        size: 2,
        root: merkle_root(&before.all),
        time_unix_nano: 1,
        frontier: store.frontier().nodes().to_vec(),
        note: String::new(),
    };
    let error = store.append_checkpoint(&entry).unwrap_err();
    assert!(error.to_string().contains("still waiting for its fsync"), "{error}");
    // The fsync runs on another thread; the store takes its outcome.
    let synced = std::thread::spawn(move || unsynced.sync()).join().unwrap();
    let stats = store.complete(synced).unwrap();
    assert_eq!(stats.records, 3);
    assert_state(&store, &chain);
    assert!(store.complete(Ok(std::time::Duration::ZERO)).is_err(), "nothing left to complete");
    drop(store);
    let (_, recovery) = open(dir.path(), plain());
    assert_eq!(recovery.next_seq, 5);
}

#[test]
fn a_write_whose_fsync_failed_is_cut_back_and_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, before, (records, leaves)) = two_stored_three_more(dir.path());
    let seg = segments(dir.path())[0].clone();
    let len = fs::metadata(&seg).unwrap().len();
    let batch = [Append { records: &records, leaves: &leaves, outbox: None, continues: 0 }];
    store.fault = Some(Fault::Fsync);
    let unsynced = store.write(&batch).unwrap().expect("records to sync");
    assert!(fs::metadata(&seg).unwrap().len() > len, "written, not yet durable");
    let failed = unsynced.sync();
    assert!(matches!(store.complete(failed), Err(StoreError::Io { op: "fsync", .. })));
    assert_eq!(fs::metadata(&seg).unwrap().len(), len, "the batch is cut away");
    assert_state(&store, &before);
    assert!(matches!(store.write(&batch), Err(StoreError::Poisoned)));
}

#[test]
fn a_read_only_last_segment_is_reopened_for_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let (mut store, _) = open(dir.path(), plain());
    append(&mut store, &mut chain, 2);
    drop(store);
    // A crash between sealing a segment and starting the next.
    let seg = &segments(dir.path())[0];
    fs::set_permissions(seg, fs::Permissions::from_mode(0o444)).unwrap();
    let (mut store, recovery) = open(dir.path(), plain());
    assert!(recovery.notes.iter().any(|n| n.contains("made writable")), "{:?}", recovery.notes);
    append(&mut store, &mut chain, 1);
    assert_state(&store, &chain);
}

#[test]
fn dir_names_are_file_system_safe() {
    assert_eq!(ChainStore::chain_dir_name("traces/audit#0"), "traces_audit_0");
    assert_eq!(ChainStore::chain_dir_name("a.B-c_9"), "a.B-c_9");
    assert_eq!(ChainStore::chain_dir_name("é"), "_");
    assert_eq!(ChainStore::chain_dir_name(".."), "__");
    assert_eq!(ChainStore::chain_dir_name(""), "_");
    assert_eq!(ChainStore::chain_dir_name(&"x".repeat(300)).len(), 200);
}

fn workspace_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join(path)
}

/// Real keyed records from the processor: the store's leaf (the record
/// without its `mac`) is the processor's, and a store of them reopens to
/// the processor's head.
#[test]
fn keyed_records_from_the_processor_chain_and_reopen() {
    let policy = fs::read_to_string(workspace_file("collector-config/policies/soc2-audit.yaml")).unwrap();
    let policy = format!("{policy}  chain: {{key_id: k1}}\n");
    let mut processor = audit_processor::Processor::new();
    let info =
        processor.configure(&policy, &[("k1".to_owned(), b"test-hmac-key-k1-0123456789abcdef".to_vec())]).unwrap();
    assert_eq!(info.key_id.as_deref(), Some("k1"));
    let json = fs::read(workspace_file("tests/fixtures/mixed-traces.json")).unwrap();
    let request = otlp::to_protobuf(Signal::Traces, &json, Encoding::Auto).unwrap();
    let mut head = ChainHead::genesis("keyed");
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = ChainStore::open(dir.path(), "keyed", plain()).unwrap();
    let mut all = Vec::new();
    for i in 0..3 {
        let ctx = Context { received_at_unix_nano: 1_795_000_000_000_000_000 + i, head: head.clone(), sender: None };
        let out = processor.process_traces(&request, &ctx).unwrap();
        assert!(!out.records.is_empty());
        for (record, leaf) in out.records.iter().zip(&out.leaves) {
            assert!(record.windows(7).any(|w| w == b",\"mac\":"), "a keyed record");
            let info = segment::parse_record(record, "keyed", &mut Vec::new()).unwrap();
            assert_eq!(info.leaf, *leaf);
        }
        store.append(&[Append { records: &out.records, leaves: &out.leaves, outbox: None, continues: 0 }]).unwrap();
        all.extend_from_slice(&out.leaves);
        head = out.head;
    }
    drop(store);
    let (store, recovery) = ChainStore::open(dir.path(), "keyed", plain()).unwrap();
    assert_eq!(store.head(), &head);
    assert_eq!(recovery.next_seq, all.len() as u64);
    assert_eq!(store.frontier().root(), merkle_root(&all));
}

/// The known-answer log records, whose `mac` follows `log`, not `chain`.
#[test]
fn keyed_known_answer_leaves() {
    let text = fs::read_to_string(workspace_file("tests/fixtures/known-answers/soc2-logs-keyed.json")).unwrap();
    let vector: serde_json::Value = serde_json::from_str(&text).unwrap();
    let records = vector["expected"]["records"].as_array().unwrap();
    let leaves = vector["expected"]["leaves"].as_array().unwrap();
    assert!(!records.is_empty());
    for (record, leaf) in records.iter().zip(leaves) {
        let record = record.as_str().unwrap().as_bytes();
        let info = segment::parse_record(record, "kat-logs", &mut Vec::new()).unwrap();
        assert_eq!(to_hex(&info.leaf), leaf.as_str().unwrap());
    }
}

#[test]
fn tiles_lost_or_cut_short_are_rebuilt_from_the_segments_at_open() {
    use crate::store::tiles::TileReader;
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let options = StoreOptions { segment_size: 1500, ..StoreOptions::default() };
    let (mut store, _) = open(dir.path(), options.clone());
    for _ in 0..7 {
        append(&mut store, &mut chain, 3);
    }
    let entry = CheckpointEntry {
        size: store.frontier().size(),
        root: store.frontier().root(),
        time_unix_nano: 1,
        frontier: store.frontier().nodes().to_vec(),
        note: "c\n21\nroot\n\n— key sig\n".into(),
    };
    store.append_checkpoint(&entry).unwrap();
    append(&mut store, &mut chain, 4);
    let root = store.frontier().root();
    drop(store);
    for damage in ["removed", "cut short"] {
        match damage {
            "removed" => fs::remove_dir_all(dir.path().join(tiles::DIR)).unwrap(),
            _ => fs::write(tiles::level_path(dir.path(), 0), [0u8; 32 * 5]).unwrap(),
        }
        let (store, recovery) = open(dir.path(), options.clone());
        assert!(recovery.notes.iter().any(|n| n.contains("rebuilt the tiles of the first 21 records")), "{damage}");
        assert_eq!(store.frontier().size(), 25);
        drop(store);
        assert_eq!(TileReader::open(dir.path()).subtree_hash(0, 25).unwrap(), root, "{damage}");
    }
}
