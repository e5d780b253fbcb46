//! `otel-audit verify`, the tamper suite: each case builds a real store
//! with the real `otel-audit serve` binary and the real .wasm, tampers with
//! it on disk as an attacker with file access would, and asserts the exact
//! finding codes and the exit status. Most verdicts are asked of the
//! library (`otel_audit::verify`, what the binary runs) so that thousands
//! of them stay fast; the binary itself is run on a few, with its exit
//! codes and output formats. The kit (building, asking, tampering) is
//! `support/tamper.rs`.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use otel_audit::checkpoint::{Checkpoint, SignerKey};
use otel_audit::loadgen::{self, BatchSpec};
use otel_audit::verify::{self, Anchor, Options, Report, TrustedKey};
use prost::Message;
use serde_json::Value;
use support::copy_dir;
use support::server::{Server, Setup, binary, keygen};
use support::tamper::*;
use tempfile::TempDir;

// ------------------------------------------------------------------ cases

#[test]
fn an_untouched_store_is_valid_through_the_library_and_the_binary() {
    let (_tmp, setup) = build(30, 5);
    let report = run(&setup.store, &options(&setup));
    expect(&report, &[], 0);
    let traces = report.chains.iter().find(|c| c.chain == "test/traces/audit/0").unwrap();
    assert_eq!((traces.records, traces.verified, traces.tail.records), (30, 30, 0));
    assert!(traces.segments > 3, "small segments: most are sealed");
    assert_eq!(report.chains.len(), 2, "the traces and the logs chain");

    let key = setup.public_key();
    let store = setup.store.to_str().unwrap();
    let (code, text) = verify_bin(&[store, "--public-key", key.to_str().unwrap(), "--verbose"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Checkpoint test/traces/audit/0@30 valid (signed by test-signer"), "{text}");
    assert!(text.contains("Chain test/traces/audit/0 ("), "{text}");
    assert!(text.contains("Result: VALID"), "{text}");
    let (code, json) = verify_bin(&[store, "--public-key", key.to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (json["valid"].as_bool(), json["exit_code"].as_u64(), json["records"].as_u64()),
        (Some(true), Some(0), Some(30))
    );

    // Usage errors are exit 2: no trust root, a missing store.
    assert_eq!(verify_bin(&[store]).0, 2);
    assert_eq!(verify_bin(&["/nonexistent/store", "--public-key", key.to_str().unwrap()]).0, 2);
    assert_eq!(verify_bin(&[store, "--public-key", "/nonexistent.pub"]).0, 2);

    // A requested range: only its records are checked, and the summary says so.
    let mut opts = options(&setup);
    opts.from = Some(verify::Bound::Seq(5));
    opts.to = Some(verify::Bound::Seq(9));
    let report = run(&chain(&setup), &opts);
    expect(&report, &[], 0);
    assert_eq!(report.chains[0].verified, 5);
    assert_eq!(report.chains[0].verified_seqs.map(|r| (r.first, r.last)), Some((5, 9)));
}

#[test]
fn one_flipped_bit_in_a_sealed_record_is_a_leaf_mismatch() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let mut segs = read_segments(&chain);
    // Seq 5 is in a sealed segment; flip a bit of a letter of its span name.
    let (s, l) = flat(&segs)[5];
    let line = &mut segs[s].1[l];
    let at = line.find("\"name\":\"").unwrap() + 9;
    let mut bytes = line.clone().into_bytes();
    bytes[at] ^= 0x01;
    *line = String::from_utf8(bytes).unwrap();
    write_segments(&segs);
    assert_eq!(std::fs::metadata(&segs[s].0).unwrap().permissions().mode() & 0o777, 0o400, "sealed");
    let covering = sizes(&chain).iter().filter(|s| **s > 5).count() as u64;
    let report = run(&chain, &options(&setup));
    expect(&report, &[("LEAF_MISMATCH", 1), ("ROOT_MISMATCH", covering)], 1);
    let finding = &report.chains[0].findings[0];
    assert_eq!(
        finding.position,
        verify::Position::Record {
            seq: Some(5),
            file: segs[s].0.file_name().unwrap().to_string_lossy().into(),
            line: l as u64 + 1
        }
    );
}

#[test]
fn every_single_bit_flip_across_a_small_sealed_store_is_caught() {
    let (_tmp, setup) = build(6, 2);
    let chain = chain(&setup);
    assert!(segments(&chain).len() >= 2, "at least one sealed segment");
    let opts = options(&setup);
    expect(&run(&chain, &opts), &[], 0);
    let mut files = segments(&chain);
    files.push(chain.join("checkpoints.jsonl"));
    files.push(chain.join("chain.json"));
    let mut flips = 0;
    for file in &files {
        let original = std::fs::read(file).unwrap();
        let mut bytes = original.clone();
        for bit in 0..original.len() * 8 {
            bytes[bit / 8] ^= 1 << (bit % 8);
            write(file, &bytes);
            let report = run(&chain, &opts);
            assert_eq!(
                report.exit_code(),
                1,
                "{} byte {} bit {} was not caught:\n{}",
                file.display(),
                bit / 8,
                bit % 8,
                report.to_text(false)
            );
            bytes[bit / 8] ^= 1 << (bit % 8);
            flips += 1;
        }
        write(file, &original);
    }
    assert!(flips > 20_000, "{flips} flips");
    expect(&run(&chain, &opts), &[], 0);

    // And through the binary, a few of them.
    let segment = &segments(&chain)[0];
    let original = std::fs::read(segment).unwrap();
    for at in [0, original.len() / 3, original.len() / 2, original.len() - 1] {
        let mut bytes = original.clone();
        bytes[at] ^= 0x04;
        write(segment, &bytes);
        let (code, text) = verify_bin(&[chain.to_str().unwrap(), "--public-key", setup.public_key().to_str().unwrap()]);
        assert_eq!(code, 1, "byte {at}: {text}");
        assert!(text.contains("INVALID"), "{text}");
    }
    write(segment, &original);
}

#[test]
fn an_edit_with_all_later_leaves_and_links_recomputed_breaks_the_signed_roots() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[12];
    segs[s].1[l] = segs[s].1[l].replace("\"audit.action\":{\"s\":\"", "\"audit.action\":{\"s\":\"forged-");
    rechain(&mut segs, 12);
    write_segments(&segs);
    let covering = sizes(&chain).iter().filter(|s| **s > 12).count() as u64;
    expect(&run(&chain, &options(&setup)), &[("ROOT_MISMATCH", covering)], 1);

    // The same, with every checkpoint re-signed over the forged records by
    // a key the verifier does not trust (even under the same name).
    let attacker = SignerKey::generate("test-signer").unwrap();
    resign_all(&chain, &attacker, &leaves(&segs));
    let lines = sizes(&chain).len() as u64;
    let report = run(&chain, &options(&setup));
    // No valid checkpoint at all: not a chain the host made.
    expect(&report, &[("UNCOVERED_RECORDS", 1), ("UNKNOWN_KEY", lines)], 1);
    assert_eq!(report.chains[0].tail.records, 30, "nothing is sealed by a trusted key");
}

#[test]
fn a_deleted_middle_record_is_a_seq_gap() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[9];
    segs[s].1.remove(l);
    write_segments(&segs);
    let covering = sizes(&chain).iter().filter(|s| **s > 9).count() as u64;
    let report = run(&chain, &options(&setup));
    expect(&report, &[("ROOT_MISMATCH", covering), ("SEQ_GAP", 1)], 1);
    assert!(report.chains[0].findings.iter().any(|f| f.detail.contains("seqs 9..9 are missing")));
}

#[test]
fn a_deleted_renumbered_and_recomputed_record_breaks_roots_and_truncates() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[9];
    segs[s].1.remove(l);
    rechain(&mut segs, 9);
    write_segments(&segs);
    let all = sizes(&chain);
    let mismatched = all.iter().filter(|s| **s > 9 && **s <= 29).count() as u64;
    let truncated = all.iter().filter(|s| **s == 30).count() as u64;
    expect(&run(&chain, &options(&setup)), &[("ROOT_MISMATCH", mismatched), ("TRUNCATED", truncated)], 1);
}

#[test]
fn swapped_payloads_are_two_leaf_mismatches() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let mut segs = read_segments(&chain);
    let places = flat(&segs);
    let (a, b) = (places[7], places[16]);
    let mut ra: Value = serde_json::from_str(&segs[a.0].1[a.1]).unwrap();
    let mut rb: Value = serde_json::from_str(&segs[b.0].1[b.1]).unwrap();
    std::mem::swap(&mut ra["span"], &mut rb["span"]);
    segs[a.0].1[a.1] = serde_json_canonicalizer::to_string(&ra).unwrap();
    segs[b.0].1[b.1] = serde_json_canonicalizer::to_string(&rb).unwrap();
    write_segments(&segs);
    let covering = sizes(&chain).iter().filter(|s| **s > 7).count() as u64;
    let report = run(&chain, &options(&setup));
    expect(&report, &[("LEAF_MISMATCH", 2), ("ROOT_MISMATCH", covering)], 1);
    let seqs: Vec<_> = report.chains[0]
        .findings
        .iter()
        .filter(|f| f.code == verify::Code::LeafMismatch)
        .map(|f| f.position.clone())
        .collect();
    assert!(
        matches!(
            seqs[..],
            [verify::Position::Record { seq: Some(7), .. }, verify::Position::Record { seq: Some(16), .. }]
        ),
        "{seqs:?}"
    );
}

#[test]
fn a_duplicated_record_is_a_seq_dup() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[14];
    let copy = segs[s].1[l].clone();
    segs[s].1.insert(l + 1, copy);
    write_segments(&segs);
    expect(&run(&chain, &options(&setup)), &[("SEQ_DUP", 1)], 1);
}

#[test]
fn deleting_the_newest_records_with_their_checkpoints_is_stale_or_with_an_anchor_truncated() {
    // Two runs of the server: the second's records and checkpoints are
    // what the attacker removes.
    let tmp = tempfile::tempdir().unwrap();
    let setup = setup(&tmp);
    let server = setup.start();
    send(&setup, (0..4).map(|i| (i, 5)));
    assert!(server.stop().success());
    let chain = chain(&setup);
    let first_run = read_checkpoints(&chain).len();
    let backup = tmp.path().join("backup");
    copy_dir(&setup.store, &backup);
    let server = setup.start();
    send(&setup, (4..8).map(|i| (i, 5)));
    assert!(server.stop().success());
    let checkpoints = read_checkpoints(&chain);
    let newest = checkpoints.last().unwrap().clone();
    // The copy of the newest checkpoint that went downstream.
    let anchor = tmp.path().join("anchor.note");
    std::fs::write(&anchor, &newest.note).unwrap();
    let t1: u64 = checkpoints[first_run - 1].time_unix_nano.parse().unwrap();
    let t2: u64 = newest.time_unix_nano.parse().unwrap();
    assert!(t2 > t1);
    // Verified just after the second run, with a heartbeat that the gap
    // between the runs exceeds twice over.
    let mut opts = options(&setup);
    opts.now_unix_nano = t2 + 1_000_000;
    opts.heartbeat = Some(Duration::from_nanos((t2 - t1) / 3));
    expect(&run(&chain, &opts), &[], 0);

    // Remove the records of the second run and its checkpoints.
    let mut segs = read_segments(&chain);
    let keep = 20;
    let places = flat(&segs);
    for (s, l) in places[keep..].iter().rev() {
        segs[*s].1.remove(*l);
    }
    for (path, lines) in segs.iter().filter(|(_, lines)| lines.is_empty()) {
        assert!(lines.is_empty());
        std::fs::remove_file(path).unwrap();
    }
    segs.retain(|(_, lines)| !lines.is_empty());
    write_segments(&segs);
    // ...and the first run's shutdown checkpoint: the newest left is an
    // old one without `shutdown`.
    assert!(body(&checkpoints[first_run - 1]).ends_with("\nshutdown\n"));
    write_checkpoints(&chain, &checkpoints[..first_run - 1]);
    expect(&run(&chain, &opts), &[("STALE", 1)], 0);
    let mut strict = opts.clone();
    strict.strict = true;
    assert_eq!(run(&chain, &strict).exit_code(), 1, "--strict fails on STALE");
    let mut anchored = opts.clone();
    anchored.anchors = vec![Anchor::load(&anchor, &opts.keys).unwrap()];
    expect(&run(&chain, &anchored), &[("STALE", 1), ("TRUNCATED", 1)], 1);

    // Cut exactly after the first run's shutdown checkpoint, the store is
    // one that stopped cleanly then: only an anchor tells (documented).
    write_checkpoints(&chain, &checkpoints[..first_run]);
    expect(&run(&chain, &opts), &[], 0);
    expect(&run(&chain, &anchored), &[("TRUNCATED", 1)], 1);

    // So is the whole store rolled back to the copy taken after the first run.
    std::fs::remove_dir_all(&setup.store).unwrap();
    copy_dir(&backup, &setup.store);
    expect(&run(&setup.store, &opts), &[], 0);
    expect(&run(&setup.store, &anchored), &[("TRUNCATED", 1)], 1);
    let (code, text) = verify_bin(&[
        setup.store.to_str().unwrap(),
        "--public-key",
        setup.public_key().to_str().unwrap(),
        "--anchor",
        anchor.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("Anchor test/traces/audit/0@40 INVALID: TRUNCATED"), "{text}");
}

#[test]
fn two_checkpoints_of_one_size_with_different_roots_are_inconsistent() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let segs = read_segments(&chain);
    let mut forged_leaves = leaves(&segs);
    forged_leaves[3] = leaf("a record that never was");
    let mut lines = read_checkpoints(&chain);
    let last = lines.last().unwrap().clone();
    let origin = Checkpoint::parse(&body(&last)).unwrap().origin;
    let time = last.time_unix_nano.parse::<u64>().unwrap() + 1;
    // Signed by the trusted key itself: a split view, not a forgery.
    lines.push(signed_line(&signer(&setup), &origin, 30, &forged_leaves, time, Some(&body(&last))));
    write_checkpoints(&chain, &lines);
    expect(&run(&chain, &options(&setup)), &[("INCONSISTENT_CHECKPOINTS", 1), ("ROOT_MISMATCH", 1)], 1);
}

#[test]
fn an_edited_checkpoint_size_or_root_no_longer_verifies() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let original = read_checkpoints(&chain);
    // A middle checkpoint (group commit decides the sizes: 10, 20, or 15, 25, ...).
    let index = middle_checkpoint(&original);
    let size = original[index].size;

    // The size line of the note (and the line's copy of it).
    let mut lines = original.clone();
    lines[index].note = lines[index].note.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size - 1), 1);
    lines[index].size = size - 1;
    write_checkpoints(&chain, &lines);
    // The frontier no longer has one node per set bit of the size: MALFORMED too.
    let malformed = u64::from((size - 1).count_ones() != size.count_ones());
    let mut want = vec![("BAD_SIGNATURE", 1), ("MALFORMED", malformed), ("MISSING_CHECKPOINT", 1)];
    want.retain(|(_, n)| *n > 0);
    expect(&run(&chain, &options(&setup)), &want, 1);

    // The root line: another tree's root (its line's root and frontier to match).
    let mut lines = original.clone();
    let other =
        signed_line(&SignerKey::generate("x").unwrap(), "o/x", size, &[[7u8; 32]; 64][..size as usize], 1, None);
    let old_root = Checkpoint::parse(&body(&lines[index])).unwrap().root;
    let new_root = hex::decode(&other.root).unwrap();
    lines[index].note = lines[index].note.replacen(&B64.encode(old_root), &B64.encode(new_root), 1);
    lines[index].root = other.root.clone();
    lines[index].frontier = other.frontier.clone();
    write_checkpoints(&chain, &lines);
    expect(&run(&chain, &options(&setup)), &[("BAD_SIGNATURE", 1), ("MISSING_CHECKPOINT", 1)], 1);
}

/// A checkpoint neither the first nor the last, of a size no other has.
fn middle_checkpoint(lines: &[CpLine]) -> usize {
    (1..lines.len() - 1)
        .find(|i| lines[*i].size > 0 && lines.iter().filter(|c| c.size == lines[*i].size).count() == 1)
        .expect("a middle checkpoint")
}

#[test]
fn a_deleted_middle_checkpoint_is_missing() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let mut lines = read_checkpoints(&chain);
    let index = middle_checkpoint(&lines);
    lines.remove(index);
    write_checkpoints(&chain, &lines);
    expect(&run(&chain, &options(&setup)), &[("MISSING_CHECKPOINT", 1)], 1);
}

/// A keyed chain (`chain: {key_id: k1}`) of 20 records, stopped
/// gracefully; and the path of the HMAC key file.
fn build_keyed(tmp: &TempDir) -> (Setup, PathBuf) {
    let mut setup = setup(tmp);
    let policy = tmp.path().join("keyed.yaml");
    std::fs::write(&policy, format!("{}  chain: {{key_id: k1}}\n", support::policy("soc2-audit.yaml"))).unwrap();
    setup.policy = policy;
    let key = tmp.path().join("k1.key");
    std::fs::write(&key, &support::test_secrets()[0].1).unwrap();
    let config = setup.config().replace(
        &format!("    policy: {}\n", setup.policy.display()),
        &format!("    policy: {}\n    secrets:\n      k1: {{file: {}}}\n", setup.policy.display(), key.display()),
    );
    let config_path = tmp.path().join("keyed.yaml.config");
    std::fs::write(&config_path, config).unwrap();
    let server = Server::start(&config_path, &tmp.path().join("server.log"), setup.ports[3], &[]);
    send(&setup, (0..4).map(|i| (i, 5)));
    assert!(server.stop().success());
    (setup, key)
}

#[test]
fn a_stripped_or_wrong_mac_is_caught_in_a_keyed_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let (setup, key) = build_keyed(&tmp);
    let chain = chain(&setup);
    let mut keyed = options(&setup);
    keyed.hmac_keys = support::test_secrets();
    expect(&run(&chain, &keyed), &[], 0);
    let without_key = run(&chain, &options(&setup));
    expect(&without_key, &[], 0);
    assert_eq!(without_key.chains[0].unchecked_mac_keys, vec!["k1"]);

    let original = read_segments(&chain);
    let mut segs = original.clone();
    let (s, l) = flat(&segs)[6];
    let record: Value = serde_json::from_str(&segs[s].1[l]).unwrap();
    let mac = record["mac"].as_str().unwrap().to_owned();
    segs[s].1[l] = segs[s].1[l].replace(&format!(",\"mac\":\"{mac}\""), "");
    write_segments(&segs);
    expect(&run(&chain, &keyed), &[("MISSING_MAC", 1)], 1);
    expect(&run(&chain, &options(&setup)), &[("MISSING_MAC", 1)], 1);

    let mut segs = original.clone();
    let wrong = format!("{}{}", if mac.starts_with('0') { "1" } else { "0" }, &mac[1..]);
    segs[s].1[l] = segs[s].1[l].replace(&mac, &wrong);
    write_segments(&segs);
    expect(&run(&chain, &keyed), &[("BAD_MAC", 1)], 1);
    let (code, text) = verify_bin(&[
        chain.to_str().unwrap(),
        "--public-key",
        setup.public_key().to_str().unwrap(),
        "--hmac-key",
        &format!("k1={}", key.display()),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("Record test/traces/audit/0#6 INVALID: BAD_MAC"), "{text}");
}

#[test]
fn truncation_then_a_fresh_validly_chained_continuation_breaks_the_signed_roots() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let mut segs = read_segments(&chain);
    let keep = 12;
    let places = flat(&segs);
    let last_leaf = leaf(&segs[places[keep - 1].0].1[places[keep - 1].1]);
    for (s, l) in places[keep..].iter().rev() {
        segs[*s].1.remove(*l);
    }
    // The continuation comes out of the real component, chained from the
    // head the attacker left: seq 12, prev = leaf of seq 11.
    let mut instance = support::module().instantiate().unwrap();
    instance.configure(&support::policy("soc2-audit.yaml"), &[]).unwrap();
    let request = loadgen::traces(&BatchSpec { records: 25, audit_ratio: 1.0, attributes: 4, varied: false, seed: 99 });
    let ctx = audit_processor::api::Context {
        received_at_unix_nano: otel_audit::clock::now_unix_nano(),
        head: audit_processor::api::ChainHead {
            chain_id: "test/traces/audit/0".into(),
            seq: keep as u64,
            prev: last_leaf,
        },
        sender: None,
    };
    let output = instance.process_traces(&request.encode_to_vec(), &ctx).unwrap();
    let last = segs.iter().rposition(|(_, lines)| !lines.is_empty()).unwrap();
    segs[last].1.extend(output.records.iter().map(|r| String::from_utf8(r.clone()).unwrap()));
    write_segments(&segs);
    let covering = sizes(&chain).iter().filter(|s| **s > keep as u64).count() as u64;
    // The continuation is appended after the shutdown checkpoint, with no start checkpoint.
    expect(&run(&chain, &options(&setup)), &[("RECORDS_AFTER_SHUTDOWN", 1), ("ROOT_MISMATCH", covering)], 1);

    // A continuation that starts the chain over (prev all zeros) references nothing.
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[keep];
    let mut record: Value = serde_json::from_str(&segs[s].1[l]).unwrap();
    record["chain"]["prev"] = "0".repeat(64).into();
    segs[s].1[l] = serde_json_canonicalizer::to_string(&record).unwrap();
    rechain(&mut segs, keep + 1);
    write_segments(&segs);
    expect(
        &run(&chain, &options(&setup)),
        &[("RECORDS_AFTER_SHUTDOWN", 1), ("ROOT_MISMATCH", covering), ("UNANCHORED_GENESIS", 1)],
        1,
    );
}

#[test]
fn records_deleted_from_the_unsealed_tail_are_the_documented_undetectable_window() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = setup(&tmp);
    let server = setup.start();
    // 23 records: checkpoints at 10 and 20; the last 3 are unsealed when
    // the host dies before its next checkpoint.
    send(&setup, [(0, 5), (1, 5), (2, 5), (3, 5), (4, 3)]);
    server.kill9();
    let chain = chain(&setup);
    let report = run(&chain, &options(&setup));
    expect(&report, &[("UNSEALED_TAIL", 1)], 0);
    assert_eq!(report.chains[0].tail.records, 3);
    let mut segs = read_segments(&chain);
    let places = flat(&segs);
    for (s, l) in places[21..].iter().rev() {
        segs[*s].1.remove(*l);
    }
    segs.retain(|(path, lines)| !lines.is_empty() || std::fs::remove_file(path).is_err());
    write_segments(&segs);
    // Verify passes: the window is the records after the last checkpoint.
    let report = run(&chain, &options(&setup));
    expect(&report, &[("UNSEALED_TAIL", 1)], 0);
    let tail = &report.chains[0].tail;
    assert_eq!((tail.records, tail.seqs.map(|r| (r.first, r.last))), (1, Some((20, 20))));
    let mut strict = options(&setup);
    strict.strict = true;
    assert_eq!(run(&chain, &strict).exit_code(), 1);
}

#[test]
fn key_rotation_done_correctly_passes_and_a_later_key_cannot_reseal_history() {
    let tmp = tempfile::tempdir().unwrap();
    let mut setup = setup(&tmp);
    let server = setup.start();
    send(&setup, (0..4).map(|i| (i, 5)));
    assert!(server.stop().success());
    let chain = chain(&setup);
    let handover = *sizes(&chain).last().unwrap();
    let old_key = setup.public_key();
    // Rotation: a new key pair, the host restarted with it.
    let (new_signer, new_key) = keygen(tmp.path(), "test-signer-2");
    setup.key = new_signer.clone();
    let server = setup.start();
    send(&setup, (4..8).map(|i| (i, 5)));
    assert!(server.stop().success());
    assert!(read_checkpoints(&chain).last().unwrap().note.contains("test-signer-2"));

    let trust = |args: &[String]| -> Options {
        let mut opts = options(&setup);
        opts.keys = args.iter().map(|a| TrustedKey::from_arg(a).unwrap()).collect();
        opts
    };
    let old = old_key.display().to_string();
    let new_from = format!("{}@{handover}", new_key.display());
    let both = trust(&[old.clone(), new_from.clone()]);
    expect(&run(&chain, &both), &[], 0);
    let (code, text) = verify_bin(&[chain.to_str().unwrap(), "--public-key", &old, "--public-key", &new_from]);
    assert_eq!(code, 0, "{text}");
    // Without the new key, its checkpoints are signed by an unknown key.
    let new_ones = read_checkpoints(&chain).iter().filter(|c| c.note.contains("test-signer-2")).count() as u64;
    // (and what only they cover follows the old key's shutdown checkpoint).
    expect(
        &run(&chain, &trust(std::slice::from_ref(&old))),
        &[("RECORDS_AFTER_SHUTDOWN", 1), ("UNKNOWN_KEY", new_ones)],
        1,
    );

    // The new key re-signing the old checkpoints (journald's re-sealing
    // hole) is refused: it is trusted only from the handover on.
    let new_signer = SignerKey::parse(std::fs::read_to_string(&new_signer).unwrap().trim()).unwrap();
    // Nor can it re-sign from the handover on: without a checkpoint the old
    // key signed at the handover, the new key vouches for nothing.
    resign_all(&chain, &new_signer, &leaves(&read_segments(&chain)));
    let lines = sizes(&chain).len() as u64;
    expect(&run(&chain, &both), &[("UNCOVERED_RECORDS", 1), ("UNKNOWN_KEY", lines)], 1);
}

#[test]
fn several_chains_verify_each_on_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let mut setup = setup(&tmp);
    setup.shards = 2;
    let server = setup.start();
    send(&setup, (0..6).map(|i| (i, 5)));
    assert!(server.stop().success());
    let report = run(&setup.store, &options(&setup));
    expect(&report, &[], 0);
    assert_eq!(report.chains.len(), 4, "two pipelines of two shards");
    let traces: Vec<_> = report.chains.iter().filter(|c| c.chain.starts_with("test/traces")).collect();
    assert_eq!(traces.iter().map(|c| c.records).sum::<u64>(), 30);
    assert!(traces.iter().all(|c| c.records > 0), "round robin fills both shards");

    // Tamper with shard 1 only: shard 0 stays valid.
    let shard1 = setup.store.join("test_traces_audit_1");
    let mut segs = read_segments(&shard1);
    let (s, l) = flat(&segs)[1];
    segs[s].1.remove(l);
    write_segments(&segs);
    let report = run(&setup.store, &options(&setup));
    assert_eq!(report.exit_code(), 1);
    for chain in &report.chains {
        let tampered = chain.chain == "test/traces/audit/1";
        assert_eq!(chain.errors() > 0, tampered, "{}\n{}", chain.chain, report.to_text(false));
    }
}

#[test]
fn a_chain_that_cannot_recover_continues_after_a_declared_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = setup(&tmp);
    let server = setup.start();
    send(&setup, [(0, 5), (1, 5), (2, 5), (3, 5), (4, 5)]);
    server.kill9();
    let chain = chain(&setup);
    assert_eq!(sizes(&chain).last(), Some(&20));
    // Damage a complete, unsealed line (seq 22) in the active segment.
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[22];
    segs[s].1[l] = segs[s].1[l].replacen("{\"chain\"", "{\"chaim\"", 1);
    write_segments(&segs);
    // serve refuses to start, naming the file and line.
    let config = tmp.path().join("otel-audit.yaml");
    std::fs::write(&config, setup.config()).unwrap();
    let out = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config)
        .env("OTEL_AUDIT_CACHE_DIR", support::cache_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrupt store file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A healthy chain has nothing to declare.
    let logs = setup.store.join("test_logs_audit_0");
    let out = Command::new(binary()).args(["declare-gap", "--reason", "x"]).arg(&logs).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));

    let out = Command::new(binary())
        .args(["declare-gap", "--reason", "disk corruption, ticket 42"])
        .arg(&chain)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("declared seqs 20..24 lost after checkpoint @20"), "{stdout}");

    // Serving resumes after the gap record (seq 25) and signs over it.
    let server = setup.start();
    send(&setup, [(10, 5), (11, 5)]);
    assert!(server.stop().success());
    let segs = read_segments(&chain);
    let gap: Value =
        serde_json::from_str(&segs.iter().find(|(p, _)| p.ends_with("seg-00000000000000000025.jsonl")).unwrap().1[0])
            .unwrap();
    assert_eq!(gap["gap"]["checkpoint_size"], "20");
    assert_eq!(gap["gap"]["reason"], "disk corruption, ticket 42");
    assert_eq!(sizes(&chain).last(), Some(&36));

    let report = run(&chain, &options(&setup));
    expect(&report, &[("DECLARED_GAP", 1)], 0);
    assert_eq!(report.chains[0].superseded_lines, 5, "seqs 20..24, damaged or not, are not verified");
    let mut strict = options(&setup);
    strict.strict = true;
    assert_eq!(run(&chain, &strict).exit_code(), 1);

    // A gap record moved to an earlier checkpoint references nothing verified.
    let mut segs = read_segments(&chain);
    let index = segs.iter().position(|(p, _)| p.ends_with("seg-00000000000000000025.jsonl")).unwrap();
    let mut record: Value = serde_json::from_str(&segs[index].1[0]).unwrap();
    record["gap"]["checkpoint_size"] = "10".into();
    segs[index].1[0] = serde_json_canonicalizer::to_string(&record).unwrap();
    write_segments(&segs);
    let report = run(&chain, &options(&setup));
    assert_eq!(report.exit_code(), 1);
    assert!(codes(&report).contains_key("UNANCHORED_GENESIS"), "{}", report.to_text(false));
}

/// The verifier's canonical-form check agrees with another RFC 8785
/// implementation (serde_json_canonicalizer: "is JCS(parse(line)) the
/// line?") on the known-answer records, which hold the format's number,
/// escape and sort-order corners, and on every one-byte deletion,
/// duplication and change of them.
#[test]
fn the_canonical_check_agrees_with_another_jcs_implementation() {
    let dir = support::root().join("tests/fixtures/known-answers");
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let doc: Value = serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        lines.extend(doc["expected"]["records"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()));
    }
    assert!(lines.iter().any(|l| l.contains("1e+21")), "the corners are there");
    let theirs = |bytes: &[u8]| -> bool {
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else { return false };
        value.is_object() && serde_json_canonicalizer::to_vec(&value).is_ok_and(|c| c == bytes)
    };
    let ours = |bytes: &[u8]| verify::jcs::check(bytes, &mut Default::default()).is_ok();
    let mut variants = 0;
    for line in &lines {
        let bytes = line.as_bytes();
        assert!(ours(bytes) && theirs(bytes), "{line}");
        for i in 0..bytes.len() {
            let mut candidates = vec![[&bytes[..i], &bytes[i + 1..]].concat(), [&bytes[..=i], &bytes[i..]].concat()];
            for replacement in
                [b' ', b'\\', b'"', b'/', b'0', b'1', b'e', b'E', b'.', b'-', b'u', b'A', b'a', 0x7f, 0x01]
            {
                let mut changed = bytes.to_vec();
                changed[i] = replacement;
                candidates.push(changed);
            }
            for candidate in candidates {
                // Big integers are where the two legitimately part: serde_json
                // keeps them exact, RFC 8785 reads every number as a double.
                let text = String::from_utf8_lossy(&candidate);
                if !serde_json::from_slice::<Value>(&candidate).is_ok_and(|v| has_big_integer(&v)) {
                    assert_eq!(ours(&candidate), theirs(&candidate), "{text}");
                    variants += 1;
                }
            }
        }
    }
    assert!(variants > 10_000, "{variants}");
}

fn has_big_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_f64().is_some_and(|f| f.abs() >= 1e15) && !n.is_f64(),
        Value::Array(items) => items.iter().any(has_big_integer),
        Value::Object(members) => members.values().any(has_big_integer),
        _ => false,
    }
}

// ------------------------------------------------ review: store shapes

/// Review finding: a `chain.json` at the store root made verify treat the
/// store as one (empty) chain and skip every real one.
#[test]
fn a_chain_json_at_the_store_root_hides_no_chain() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[12];
    segs[s].1[l] = segs[s].1[l].replace("\"audit.action\":{\"s\":\"", "\"audit.action\":{\"s\":\"forged-");
    rechain(&mut segs, 12);
    write_segments(&segs);
    let covering = sizes(&chain).iter().filter(|s| **s > 12).count() as u64;
    std::fs::write(setup.store.join("chain.json"), br#"{"chain_id":"x","origin":"o/x/0123456789abcdef","format":2}"#)
        .unwrap();
    let report = run(&setup.store, &options(&setup));
    // The root is verified as a chain (the odd shape is MALFORMED; without
    // records or checkpoints it is STALE), and so is every chain directory under it.
    expect(&report, &[("MALFORMED", 1), ("ROOT_MISMATCH", covering), ("STALE", 1)], 1);
    assert_eq!(report.chains.len(), 3, "the root, the traces and the logs chain");
    assert_eq!(report.chains[0].chain, "x");
    let (code, text) =
        verify_bin(&[setup.store.to_str().unwrap(), "--public-key", setup.public_key().to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("Checkpoint test/traces/audit/0@30 INVALID: ROOT_MISMATCH"), "{text}");
}

/// Review finding: one chain in two directories, and a chain directory
/// whose name is not the one its chain id gives.
#[test]
fn a_chain_in_two_directories_or_under_another_name_is_reported() {
    let (_tmp, setup) = build(30, 5);
    copy_dir(&chain(&setup), &setup.store.join("zz_copy"));
    let report = run(&setup.store, &options(&setup));
    expect(&report, &[("DUPLICATE_CHAIN", 2), ("MALFORMED", 1)], 1);
    let dup: Vec<_> = report.chains.iter().filter(|c| c.counts.contains_key(&verify::Code::DuplicateChain)).collect();
    assert_eq!(dup.len(), 2, "both directories");
    assert!(report.chains.iter().any(|c| {
        c.dir.ends_with("zz_copy")
            && c.findings
                .iter()
                .any(|f| f.code == verify::Code::Malformed && f.detail.contains("\"test_traces_audit_0\""))
    }));

    // Renamed only: MALFORMED.
    std::fs::remove_dir_all(setup.store.join("zz_copy")).unwrap();
    std::fs::rename(setup.store.join("test_logs_audit_0"), setup.store.join("renamed")).unwrap();
    expect(&run(&setup.store, &options(&setup)), &[("MALFORMED", 1)], 1);
}

/// Review finding: with every chain directory deleted, verify stopped at
/// "no chain" (exit 2) before looking at the anchors.
#[test]
fn an_emptied_store_is_truncated_against_an_anchor() {
    let (tmp, setup) = build(30, 5);
    let anchor = tmp.path().join("anchor.note");
    std::fs::write(&anchor, &read_checkpoints(&chain(&setup)).last().unwrap().note).unwrap();
    for entry in std::fs::read_dir(&setup.store).unwrap() {
        std::fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    let mut opts = options(&setup);
    assert!(verify::verify(&setup.store, &opts, &mut |_| {}).is_err(), "without an anchor: nothing to verify");
    opts.anchors = vec![Anchor::load(&anchor, &opts.keys).unwrap()];
    expect(&run(&setup.store, &opts), &[("TRUNCATED", 1)], 1);
    let store = setup.store.to_str().unwrap();
    let key = setup.public_key();
    let (code, text) =
        verify_bin(&[store, "--public-key", key.to_str().unwrap(), "--anchor", anchor.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("INVALID: TRUNCATED"), "{text}");
    assert_eq!(verify_bin(&[store, "--public-key", key.to_str().unwrap()]).0, 2);
}

// ------------------------------------------------ review: key rotation

/// Review finding (journald CVE-2023-31439 shape): with the new key
/// trusted from the handover, its holder edited record 2, kept only the
/// old key's checkpoint @0 and signed one @30 naming it in `prev`: that
/// passed. A key trusted from FROM > 0 now vouches only after a handover
/// checkpoint (size >= FROM, signed by a key trusted below FROM).
#[test]
fn a_new_key_cannot_reseal_history_without_a_handover_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut setup = setup(&tmp);
    let server = setup.start();
    send(&setup, (0..4).map(|i| (i, 5)));
    assert!(server.stop().success());
    let chain = chain(&setup);
    let handover = *sizes(&chain).last().unwrap();
    assert_eq!(handover, 20);
    let old_key = setup.public_key();
    let (new_signer, new_key) = keygen(tmp.path(), "test-signer-2");
    setup.key = new_signer.clone();
    let server = setup.start();
    send(&setup, (4..6).map(|i| (i, 5)));
    assert!(server.stop().success());
    let mut opts = options(&setup);
    opts.keys = vec![
        TrustedKey::from_arg(&format!("{}@..{}", old_key.display(), handover + 1)).unwrap(),
        TrustedKey::from_arg(&format!("{}@{handover}", new_key.display())).unwrap(),
    ];
    expect(&run(&chain, &opts), &[], 0);

    // The attack: edit record 2 (every later leaf and link recomputed),
    // keep only the old key's first checkpoint, sign @30 with the new key.
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[2];
    segs[s].1[l] = segs[s].1[l].replace("\"audit.action\":{\"s\":\"", "\"audit.action\":{\"s\":\"forged-");
    rechain(&mut segs, 2);
    write_segments(&segs);
    let first = read_checkpoints(&chain)[0].clone();
    assert!(!first.note.contains("test-signer-2") && first.size < handover);
    let origin = Checkpoint::parse(&body(&first)).unwrap().origin;
    let new_signer = SignerKey::parse(std::fs::read_to_string(&new_signer).unwrap().trim()).unwrap();
    let time = otel_audit::clock::now_unix_nano();
    let forged = signed_line(&new_signer, &origin, 30, &leaves(&segs), time, Some(&body(&first)));
    write_checkpoints(&chain, &[first, forged]);
    let report = run(&chain, &opts);
    expect(&report, &[("UNCOVERED_RECORDS", 1), ("UNKNOWN_KEY", 1)], 1);
    let finding = report.chains[0].findings.iter().find(|f| f.code == verify::Code::UnknownKey).unwrap();
    assert!(finding.detail.contains("only after a handover"), "{}", finding.detail);
    assert_eq!(finding.position, verify::Position::Checkpoint { size: Some(30), line: 2 });
}

// ------------------------------------------------ review: MAC downgrade

/// Review finding: in the unsealed tail of a keyed chain, records could be
/// replaced by unkeyed ones (no key_id, no mac) or ones keyed under a key
/// id the verifier was not given, and verify passed.
#[test]
fn a_mac_downgrade_or_an_unknown_mac_key_in_the_unsealed_tail_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (setup, _key) = build_keyed(&tmp);
    let chain = chain(&setup);
    // The newest checkpoints removed (undetectable without an anchor):
    // the records after the newest one left are the unsealed tail.
    let kept: Vec<CpLine> = read_checkpoints(&chain).into_iter().filter(|c| c.size < 20).collect();
    let tail = kept.iter().map(|c| c.size).max().unwrap() as usize;
    let n = 20 - tail as u64;
    assert!(tail > 0 && n > 0);
    write_checkpoints(&chain, &kept);
    let original = read_segments(&chain);
    let mut keyed = options(&setup);
    keyed.hmac_keys = support::test_secrets();
    expect(&run(&chain, &keyed), &[("UNSEALED_TAIL", 1)], 0);

    let tamper = |edit: &dyn Fn(&mut Value)| {
        let mut segs = original.clone();
        for (s, l) in flat(&segs)[tail..].to_vec() {
            let mut record: Value = serde_json::from_str(&segs[s].1[l]).unwrap();
            edit(&mut record);
            segs[s].1[l] = serde_json_canonicalizer::to_string(&record).unwrap();
        }
        rechain(&mut segs, tail);
        write_segments(&segs);
    };
    // Downgraded: no key_id, no mac. An error with or without the key.
    tamper(&|r| {
        r["chain"].as_object_mut().unwrap().remove("key_id");
        r.as_object_mut().unwrap().remove("mac");
    });
    expect(&run(&chain, &keyed), &[("MISSING_MAC", n), ("UNSEALED_TAIL", 1)], 1);
    expect(&run(&chain, &options(&setup)), &[("MISSING_MAC", n), ("UNSEALED_TAIL", 1)], 1);

    // Keyed under another key id: with --hmac-key given, its MACs cannot
    // be checked, an error; without any, both ids are reported unchecked.
    tamper(&|r| {
        r["chain"]["key_id"] = "k9".into();
        r["mac"] = "ab".repeat(32).into();
    });
    expect(&run(&chain, &keyed), &[("BAD_MAC", n), ("UNSEALED_TAIL", 1)], 1);
    let without = run(&chain, &options(&setup));
    expect(&without, &[("UNSEALED_TAIL", 1)], 0);
    assert_eq!(without.chains[0].unchecked_mac_keys, vec!["k1", "k9"]);
}

// ------------------------------------------------ review: --from / --to

/// Review finding: a SEQ_DUP at seq 14 verified with `--to 10` exited 0.
#[test]
fn findings_outside_the_requested_range_still_fail() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[14];
    let copy = segs[s].1[l].clone();
    segs[s].1.insert(l + 1, copy);
    write_segments(&segs);
    let mut opts = options(&setup);
    opts.to = Some(verify::Bound::Seq(10));
    let report = run(&chain, &opts);
    expect(&report, &[("SEQ_DUP", 1)], 1);
    assert_eq!(report.chains[0].outside_range, 1);
    assert!(report.chains[0].findings.is_empty(), "counted, not listed");
    let (code, json) = verify_bin(&[
        chain.to_str().unwrap(),
        "--public-key",
        setup.public_key().to_str().unwrap(),
        "--to",
        "10",
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{json}");
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!((json["valid"].as_bool(), json["counts"]["SEQ_DUP"].as_u64()), (Some(false), Some(1)));
}

// ------------------------------------------------ review: STALE

/// Review finding: an honestly stopped store turned STALE twice the
/// heartbeat after it stopped. The checkpoint of a clean shutdown carries
/// a `shutdown` line; removing it (and so the newest checkpoints) leaves
/// an older one without it: STALE.
#[test]
fn a_cleanly_stopped_store_is_not_stale_until_its_shutdown_checkpoint_is_removed() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let lines = read_checkpoints(&chain);
    let last = lines.last().unwrap();
    assert!(body(last).ends_with("\nshutdown\n"), "{}", last.note);
    let mut opts = options(&setup);
    opts.heartbeat = Some(Duration::from_secs(1));
    // Verified 3 s after the shutdown checkpoint.
    opts.now_unix_nano = last.time_unix_nano.parse::<u64>().unwrap() + 3_000_000_000;
    expect(&run(&setup.store, &opts), &[], 0);
    write_checkpoints(&chain, &lines[..lines.len() - 1]);
    assert!(!body(lines.iter().rev().nth(1).unwrap()).contains("shutdown"));
    let report = run(&chain, &opts);
    expect(&report, &[("STALE", 1)], 0);
}

// ------------------------------------------------ review: file types

/// Runs verify on another thread: a hang is a failure, not a stuck suite.
fn run_bounded(store: &Path, options: &Options) -> Report {
    let (tx, rx) = std::sync::mpsc::channel();
    let (store, options) = (store.to_owned(), options.clone());
    std::thread::spawn(move || {
        let _ = tx.send(run(&store, &options));
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("verify returns")
}

/// Review finding: a FIFO named like a segment hung verify, and a symlink
/// to /dev/zero ran it out of memory.
#[test]
fn a_fifo_or_a_symlink_to_a_device_in_a_chain_is_malformed_not_a_hang() {
    let (_tmp, setup) = build(30, 5);
    let chain = chain(&setup);
    let fifo = chain.join("seg-00000000000000000030.jsonl");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let report = run_bounded(&chain, &options(&setup));
    expect(&report, &[("MALFORMED", 1)], 1);
    assert!(report.chains[0].findings[0].detail.contains("a FIFO"), "{}", report.to_text(false));
    std::fs::remove_file(&fifo).unwrap();

    std::os::unix::fs::symlink("/dev/zero", &fifo).unwrap();
    expect(&run_bounded(&chain, &options(&setup)), &[("MALFORMED", 1)], 1);
    std::fs::remove_file(&fifo).unwrap();

    let checkpoints = chain.join("checkpoints.jsonl");
    std::fs::remove_file(&checkpoints).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &checkpoints).unwrap();
    // No checkpoint is read: nothing is sealed.
    expect(&run_bounded(&chain, &options(&setup)), &[("MALFORMED", 1), ("UNCOVERED_RECORDS", 1)], 1);
    std::fs::remove_file(&checkpoints).unwrap();
    assert!(Command::new("mkfifo").arg(&checkpoints).status().unwrap().success());
    expect(&run_bounded(&chain, &options(&setup)), &[("MALFORMED", 1), ("UNCOVERED_RECORDS", 1)], 1);

    let chain_file = chain.join("chain.json");
    std::fs::remove_file(&chain_file).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &chain_file).unwrap();
    let report = run_bounded(&setup.store, &options(&setup));
    assert_eq!(report.exit_code(), 1);
}

// ------------------------------------------------ review: output

/// Review finding: `--format json` panicked on a store path that is not
/// UTF-8, and a chain id holding a newline injected lines (a fake
/// "Result: VALID") into the text output.
#[test]
fn odd_names_neither_panic_nor_inject_lines() {
    use std::os::unix::ffi::OsStrExt as _;
    let (tmp, setup) = build(10, 5);
    let odd = tmp.path().join(std::ffi::OsStr::from_bytes(b"st\xffore"));
    copy_dir(&setup.store, &odd);
    let key = setup.public_key();
    let out = Command::new(binary())
        .arg("verify")
        .arg(&odd)
        .args(["--public-key", key.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["valid"].as_bool(), Some(true));

    let injected = setup.store.join("aaa");
    std::fs::create_dir(&injected).unwrap();
    let chain_file = br#"{"chain_id":"x\nResult: VALID; errors: none","origin":"o/x\nResult: VALID; errors: none/0123456789abcdef","format":2}"#;
    std::fs::write(injected.join("chain.json"), chain_file).unwrap();
    let (code, text) = verify_bin(&[setup.store.to_str().unwrap(), "--public-key", key.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("Result:")).count(), 1, "{text}");
    assert!(text.lines().find(|l| l.starts_with("Result:")).unwrap().starts_with("Result: INVALID"), "{text}");
    assert!(text.contains("  origin       o/x\\u{a}Result"), "{text}");
    assert!(text.contains("x\\u{a}Result"), "{text}");
}
