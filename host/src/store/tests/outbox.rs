//! Outbox tests: frames written with the records, read back by exporters,
//! repaired at open, pruned once delivered.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Records, open, segments};
use crate::otlp::Signal;
use crate::store::outbox::{self as ob, DIR, HEADER_LEN};
use crate::store::{Append, ChainStore, Frame, OutboxReader, StoreError, StoreOptions, prune_outbox};

fn options(segment_size: u64) -> StoreOptions {
    StoreOptions { segment_size, outbox: true, ..StoreOptions::default() }
}

fn payload(first_seq: u64) -> Vec<u8> {
    format!("request from {first_seq}").into_bytes()
}

/// Appends one group of requests of the given sizes, each with a frame
/// whose payload names its first seq.
fn append_group(store: &mut ChainStore, chain: &mut Records, sizes: &[usize]) {
    let mut seq = store.head().seq;
    let batches: Vec<_> = sizes.iter().map(|&n| chain.next(n, 20)).collect();
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&n| {
            let p = payload(seq);
            seq += n as u64;
            p
        })
        .collect();
    let appends: Vec<Append<'_>> = batches
        .iter()
        .zip(&payloads)
        .map(|((records, leaves), p)| Append {
            records,
            leaves,
            outbox: Some((Signal::Logs, p.as_slice())),
            continues: 0,
        })
        .collect();
    store.append(&appends).unwrap();
}

fn outbox_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(DIR)).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// Reads every committed frame from `from`, one call at a time.
fn read_all(reader: &mut OutboxReader, from: u64, committed: u64) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut next = from;
    loop {
        let batch = reader.read(next, committed, 64).unwrap();
        let Some(last) = batch.last() else { break };
        next = last.end();
        frames.extend(batch);
    }
    frames
}

fn check_frames(frames: &[Frame]) {
    for pair in frames.windows(2) {
        assert!(pair[0].end() <= pair[1].first_seq, "{} then {}", pair[0].first_seq, pair[1].first_seq);
    }
    for frame in frames {
        assert_eq!(frame.payload, payload(frame.first_seq));
        assert_eq!(frame.signal, Signal::Logs);
    }
}

#[test]
fn frames_read_back_in_order_across_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let (mut store, _) = open(dir.path(), options(1500));
    for _ in 0..8 {
        append_group(&mut store, &mut chain, &[2, 0, 3]);
    }
    let committed = store.head().seq;
    assert_eq!(committed, 40);
    let files = outbox_files(dir.path());
    assert!(files.len() > 2, "{files:?}");
    assert_eq!(files.len(), segments(dir.path()).len(), "the outbox rotates with the segments");

    let mut reader = OutboxReader::open(dir.path()).unwrap();
    let frames = reader.read(0, committed, usize::MAX).unwrap();
    assert_eq!(frames.len(), 16, "one frame per request with records");
    assert_eq!(frames.iter().map(|f| f.count).sum::<u32>(), 40);
    assert_eq!(frames[0].first_seq, 0);
    assert_eq!(frames.last().unwrap().end(), 40);
    check_frames(&frames);
    assert!(frames.windows(2).all(|p| p[0].end() == p[1].first_seq));

    // `max_bytes` bounds a read (at least one frame), `committed` hides what
    // is not acknowledged yet, and reading on continues where it stopped.
    let one = reader.read(0, committed, 1).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(reader.read(0, 4, usize::MAX).unwrap().len(), 1, "the frame of 2..5 ends after 4");
    assert_eq!(reader.read(2, 5, usize::MAX).unwrap().len(), 1);
    assert_eq!(read_all(&mut reader, 0, 23).last().unwrap().end(), 22);
    assert_eq!(read_all(&mut reader, 0, committed), frames);
    assert!(reader.read(committed, committed, usize::MAX).unwrap().is_empty());

    let inside = reader.read(1, committed, usize::MAX).unwrap_err();
    assert!(matches!(inside, StoreError::InsideFrame { seq: 1, first_seq: 0, end: 2, .. }), "{inside}");

    // A new reader, and the store reopened, see the same frames.
    drop(store);
    let (_store, recovery) = open(dir.path(), options(1500));
    assert_eq!(recovery.dropped_outbox_frames, 0);
    assert!(recovery.notes.is_empty(), "{:?}", recovery.notes);
    assert_eq!(read_all(&mut OutboxReader::open(dir.path()).unwrap(), 0, committed), frames);
}

#[test]
fn records_without_a_frame_are_a_gap_the_reader_skips() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let (mut store, _) = open(dir.path(), options(1 << 20));
    append_group(&mut store, &mut chain, &[2]);
    super::append(&mut store, &mut chain, 3);
    append_group(&mut store, &mut chain, &[1]);
    let mut reader = OutboxReader::open(dir.path()).unwrap();
    let frames = reader.read(2, store.head().seq, usize::MAX).unwrap();
    assert_eq!(frames.iter().map(|f| (f.first_seq, f.count)).collect::<Vec<_>>(), [(5, 1)]);
    assert_eq!(OutboxReader::open(dir.path()).unwrap().read(3, 6, usize::MAX).unwrap()[0].first_seq, 5);
    assert!(reader.read(2, 5, usize::MAX).unwrap().is_empty());
}

#[test]
fn a_torn_frame_is_truncated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let (mut store, _) = open(dir.path(), options(1 << 20));
    append_group(&mut store, &mut chain, &[2, 2]);
    drop(store);
    let file = outbox_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&file).unwrap().len();
    let mut torn = Vec::new();
    ob::encode(&mut torn, Signal::Logs, 4, 2, &payload(4));
    let mut bytes = fs::read(&file).unwrap();
    bytes.extend_from_slice(&torn[..HEADER_LEN + 3]);
    fs::write(&file, &bytes).unwrap();

    let (mut store, recovery) = open(dir.path(), options(1 << 20));
    assert_eq!((recovery.next_seq, recovery.dropped_outbox_frames), (4, 1));
    assert!(recovery.notes.iter().any(|n| n.contains("torn frame")), "{:?}", recovery.notes);
    assert_eq!(fs::metadata(&file).unwrap().len(), len);
    append_group(&mut store, &mut chain, &[2]);
    let frames = read_all(&mut OutboxReader::open(dir.path()).unwrap(), 0, store.head().seq);
    assert_eq!(frames.len(), 3);
    check_frames(&frames);

    // A frame whose CRC fails is torn too.
    drop(store);
    let mut bytes = fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&file, &bytes).unwrap();
    let (store, recovery) = open(dir.path(), options(1 << 20));
    assert_eq!(recovery.dropped_outbox_frames, 1);
    assert!(recovery.notes.iter().any(|n| n.contains("bad CRC")), "{:?}", recovery.notes);
    assert!(recovery.notes.iter().any(|n| n.contains("records 4..6 have no outbox frame")), "{:?}", recovery.notes);
    assert_eq!(read_all(&mut OutboxReader::open(dir.path()).unwrap(), 0, store.head().seq).len(), 2);
}

#[test]
fn frames_past_the_records_are_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let (mut store, _) = open(dir.path(), options(1 << 20));
    append_group(&mut store, &mut chain, &[2]);
    append_group(&mut store, &mut chain, &[3, 1]);
    drop(store);
    // Power loss kept the outbox write of the last group but not its records.
    let seg = &segments(dir.path())[0];
    let text = fs::read_to_string(seg).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    fs::write(seg, lines[..2].join("\n") + "\n").unwrap();

    let (store, recovery) = open(dir.path(), options(1 << 20));
    assert_eq!((recovery.next_seq, recovery.dropped_outbox_frames), (2, 2));
    assert!(recovery.notes.iter().any(|n| n.contains("not written")), "{:?}", recovery.notes);
    let frames = read_all(&mut OutboxReader::open(dir.path()).unwrap(), 0, 6);
    assert_eq!(frames.iter().map(|f| f.end()).collect::<Vec<_>>(), [2]);
    drop(store);
}

#[test]
fn prune_removes_only_delivered_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let (mut store, _) = open(dir.path(), options(1000));
    for _ in 0..10 {
        append_group(&mut store, &mut chain, &[2]);
    }
    let committed = store.head().seq;
    let files = outbox_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    let second: u64 = files[1].file_stem().unwrap().to_str().unwrap().parse().unwrap();
    assert_eq!(prune_outbox(dir.path(), second - 1).unwrap(), 0);
    assert_eq!(prune_outbox(dir.path(), second).unwrap(), 1);
    assert_eq!(outbox_files(dir.path()), files[1..]);
    assert_eq!(prune_outbox(dir.path(), committed).unwrap(), files.len() as u64 - 2);
    assert_eq!(outbox_files(dir.path()), files[files.len() - 1..], "never the newest");

    let newest: u64 = files.last().unwrap().file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let frames = read_all(&mut OutboxReader::open(dir.path()).unwrap(), newest, committed);
    assert_eq!(frames.last().unwrap().end(), committed);
    // Records whose frames were pruned read as a gap.
    assert_eq!(OutboxReader::open(dir.path()).unwrap().read(0, committed, 1).unwrap()[0].first_seq, newest);
}

#[test]
fn a_reader_keeps_up_with_concurrent_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    let (mut store, _) = open(dir.path(), options(4000));
    let committed = Arc::new(AtomicU64::new(0));
    let total = 600;
    let reader = {
        let committed = Arc::clone(&committed);
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let mut reader = OutboxReader::open(&dir).unwrap();
            let mut frames = Vec::new();
            let mut next = 0;
            while next < total {
                let batch = reader.read(next, committed.load(Ordering::Acquire), 200).unwrap();
                if let Some(last) = batch.last() {
                    next = last.end();
                }
                frames.extend(batch);
                std::thread::yield_now();
            }
            frames
        })
    };
    while store.head().seq < total {
        append_group(&mut store, &mut chain, &[1, 2, 3]);
        committed.store(store.head().seq, Ordering::Release);
    }
    let frames = reader.join().unwrap();
    check_frames(&frames);
    assert_eq!(frames.iter().map(|f| u64::from(f.count)).sum::<u64>(), total);
}

#[test]
fn a_request_appended_in_parts_gets_one_frame_over_all_its_records_and_no_rotation_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Records::new("c");
    // Segments of ~3 records: the second part would rotate, were it not a continuation.
    let (mut store, _) = open(dir.path(), options(200));
    append_group(&mut store, &mut chain, &[1]);
    let (first, first_leaves) = chain.next(2, 40);
    let (rest, rest_leaves) = chain.next(3, 40);
    let request = payload(1);
    store.append(&[Append { records: &first, leaves: &first_leaves, outbox: None, continues: 0 }]).unwrap();
    let files_before = outbox_files(dir.path()).len();
    let last = Append { records: &rest, leaves: &rest_leaves, outbox: Some((Signal::Logs, &request)), continues: 2 };
    store.append(&[last]).unwrap();
    assert_eq!(outbox_files(dir.path()).len(), files_before, "no rotation inside a request");
    let frames = read_all(&mut OutboxReader::open(dir.path()).unwrap(), 0, store.head().seq);
    check_frames(&frames);
    let spans: Vec<(u64, u32)> = frames.iter().map(|f| (f.first_seq, f.count)).collect();
    assert_eq!(spans, [(0, 1), (1, 5)], "the frame covers both parts");
    // A continuation must open its call.
    let (more, more_leaves) = chain.next(1, 40);
    let error = store
        .append(&[
            Append { records: &more, leaves: &more_leaves, outbox: None, continues: 0 },
            Append { records: &more, leaves: &more_leaves, outbox: None, continues: 1 },
        ])
        .unwrap_err();
    assert!(error.to_string().contains("continues a request but is not the first"), "{error}");
}
