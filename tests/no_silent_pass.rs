//! Tamper evidence without an anchor (issue 13, "no silent pass"): each
//! row of the attack table is a store written by the real `otel-audit
//! serve` and the real .wasm, rewritten on disk by someone with write
//! access to the store but no signing key, and must get its exact non-zero
//! verdict. And the honest stores the same rules read (crash and restart,
//! requests larger than the checkpoint schedule, a key rotated on a store
//! of two chains) stay valid.

mod support;

use std::path::Path;

use hmac::{KeyInit as _, Mac as _};
use serde_json::Value;
use support::server::{Setup, keygen};
use support::tamper::*;

/// `every_records: 10`: the kit's setup. 30 records in batches of 5.
fn store() -> (tempfile::TempDir, Setup) {
    build(30, 5)
}

#[test]
fn deleting_the_checkpoints_is_uncovered_records() {
    let (_tmp, setup) = store();
    let chain = chain(&setup);
    std::fs::remove_file(chain.join("checkpoints.jsonl")).unwrap();
    let report = run(&chain, &options(&setup));
    expect(&report, &[("UNCOVERED_RECORDS", 1)], 1);
    let finding = &report.chains[0].findings[0];
    assert!(finding.detail.contains("30 record(s) and no valid checkpoint"), "{}", finding.detail);
}

#[test]
fn deleting_the_checkpoints_and_a_record_then_renumbering_and_relinking_is_uncovered_records() {
    let (_tmp, setup) = store();
    let chain = chain(&setup);
    std::fs::remove_file(chain.join("checkpoints.jsonl")).unwrap();
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[7];
    segs[s].1.remove(l);
    rechain(&mut segs, 7);
    write_segments(&segs);
    // The records alone are a consistent chain of 29: only the missing
    // genesis checkpoint gives it away.
    expect(&run(&chain, &options(&setup)), &[("UNCOVERED_RECORDS", 1)], 1);
}

#[test]
fn an_older_copy_of_the_checkpoints_and_an_edit_after_it_is_uncovered_records() {
    let (_tmp, setup) = store();
    let chain = chain(&setup);
    // checkpoints.jsonl is append-only: an older copy is a prefix, here up to @10.
    let lines = read_checkpoints(&chain);
    let upto = lines.iter().position(|c| c.size == 10).unwrap();
    write_checkpoints(&chain, &lines[..=upto]);
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[25];
    segs[s].1[l] = segs[s].1[l].replace("\"audit.action\":{\"s\":\"", "\"audit.action\":{\"s\":\"forged-");
    rechain(&mut segs, 25);
    write_segments(&segs);
    let report = run(&chain, &options(&setup));
    expect(&report, &[("UNCOVERED_RECORDS", 1)], 1);
    let detail = &report.chains[0].findings[0].detail;
    assert!(
        detail.contains("20 record(s), seq 10..29 after the newest valid checkpoint @10")
            && detail.contains("leaves at most 10 without a checkpoint"),
        "{detail}"
    );
    // Within the signed bound the same cut is only the unsealed tail.
    write_checkpoints(&chain, &lines[..lines.iter().position(|c| c.size == 20).unwrap() + 1]);
    let report = run(&chain, &options(&setup));
    expect(&report, &[("UNSEALED_TAIL", 1)], 0);
}

/// Sets `chain.key_id` of every record to `key_id`, relinks them and MACs
/// them with `key`: what the holder of an HMAC key (and no signing key) can do.
fn remac(segments: &mut [(std::path::PathBuf, Vec<String>)], key_id: &str, key: &[u8]) {
    for (_, lines) in segments.iter_mut() {
        for line in lines.iter_mut() {
            let mut record: Value = serde_json::from_str(line).unwrap();
            record["chain"]["key_id"] = key_id.into();
            *line = serde_json_canonicalizer::to_string(&record).unwrap();
        }
    }
    rechain(segments, 0);
    for (_, lines) in segments.iter_mut() {
        for line in lines.iter_mut() {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
            mac.update(&leaf(line));
            let mut record: Value = serde_json::from_str(line).unwrap();
            record.as_object_mut().unwrap().insert("mac".into(), hex::encode(mac.finalize().into_bytes()).into());
            *line = serde_json_canonicalizer::to_string(&record).unwrap();
        }
    }
}

#[test]
fn a_keyed_chain_re_maced_with_a_newer_key_without_its_checkpoints_is_uncovered_records() {
    let (_tmp, setup) = store();
    let chain = chain(&setup);
    std::fs::remove_file(chain.join("checkpoints.jsonl")).unwrap();
    let newer = b"a newer hmac key, k2, 0123456789".to_vec();
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[3];
    segs[s].1[l] = segs[s].1[l].replace("\"audit.action\":{\"s\":\"", "\"audit.action\":{\"s\":\"forged-");
    remac(&mut segs, "k2", &newer);
    write_segments(&segs);
    let mut keyed = options(&setup);
    keyed.hmac_keys = vec![("k2".into(), newer)];
    // Every MAC checks out under k2: only the missing checkpoints give it away.
    expect(&run(&chain, &keyed), &[("UNCOVERED_RECORDS", 1)], 1);
}

#[test]
fn a_chain_directory_added_with_invented_records_and_no_checkpoint_is_uncovered_records() {
    let (_tmp, setup) = store();
    let real = chain(&setup);
    let id = "test/traces/audit/7";
    let invented = setup.store.join("test_traces_audit_7");
    std::fs::create_dir(&invented).unwrap();
    let chain_file = format!(r#"{{"chain_id":"{id}","origin":"otel-audit/{id}/00000000deadbeef","format":2}}"#);
    std::fs::write(invented.join("chain.json"), chain_file).unwrap();
    let mut records: Vec<String> = read_segments(&real).into_iter().flat_map(|(_, lines)| lines).collect();
    records.extend(records.clone());
    records.truncate(50);
    for line in records.iter_mut() {
        let mut record: Value = serde_json::from_str(line).unwrap();
        record["chain"]["id"] = id.into();
        *line = serde_json_canonicalizer::to_string(&record).unwrap();
    }
    let mut segs = vec![(invented.join("seg-00000000000000000000.jsonl"), records)];
    rechain(&mut segs, 0);
    write_segments(&segs);
    let report = run(&setup.store, &options(&setup));
    assert_eq!(report.exit_code(), 1);
    let added = report.chains.iter().find(|c| c.chain == id).unwrap();
    assert_eq!(codes_of(added), [("UNCOVERED_RECORDS".to_owned(), 1)].into());
    assert!(report.chains.iter().filter(|c| c.chain != id).all(|c| c.errors() == 0), "the real chains stay valid");
}

fn codes_of(chain: &otel_audit::verify::ChainReport) -> std::collections::BTreeMap<String, u64> {
    chain.counts.iter().map(|(c, n)| (c.as_str().to_owned(), *n)).collect()
}

#[test]
fn a_chain_replaced_by_another_history_under_the_same_key_is_caught_by_an_anchor_of_the_first() {
    let (tmp, setup) = build(20, 5);
    let chain = chain(&setup);
    let anchor = tmp.path().join("anchor.jsonl");
    let newest = read_checkpoints(&chain).pop().unwrap();
    std::fs::write(&anchor, serde_json::to_string(&newest).unwrap()).unwrap();
    // The directory moved aside and the host started again: a second
    // history with the same chain id, signed by the same key.
    std::fs::rename(&chain, tmp.path().join("moved aside")).unwrap();
    let server = setup.start();
    send(&setup, (10..16).map(|i| (i, 5)));
    assert!(server.stop().success());
    // Alone, it is a valid chain: this is what an unanchored verification
    // cannot rule out, and its output says so.
    let (code, text) = verify_bin(&[chain.to_str().unwrap(), "--public-key", setup.public_key().to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("Without --anchor, verify cannot rule out")
            && text.contains("a chain replaced by another history signed by the same key"),
        "{text}"
    );
    // It is another log (another origin): the first one's anchor names a chain the store no longer has.
    let (code, text) = verify_bin(&[
        setup.store.to_str().unwrap(),
        "--public-key",
        setup.public_key().to_str().unwrap(),
        "--anchor",
        anchor.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("INVALID: TRUNCATED") && text.contains("the chain was replaced or begun again"), "{text}");
    assert!(!text.contains("Without --anchor"), "{text}");
}

// ------------------------------------------------------- honest stores

#[test]
fn records_after_a_clean_shutdown_without_a_start_checkpoint_are_an_error() {
    let (_tmp, setup) = store();
    let chain = chain(&setup);
    // Two records of the chain appended again at its end, relinked.
    let mut segs = read_segments(&chain);
    let copies: Vec<String> = segs[0].1[..2].to_vec();
    segs.last_mut().unwrap().1.extend(copies);
    rechain(&mut segs, 30);
    write_segments(&segs);
    let report = run(&chain, &options(&setup));
    expect(&report, &[("RECORDS_AFTER_SHUTDOWN", 1)], 1);
    assert!(report.chains[0].findings[0].detail.contains("2 record(s), seq 30..31 follow the shutdown checkpoint @30"));
}

#[test]
fn a_crash_a_restart_and_requests_larger_than_the_schedule_leave_a_valid_store() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = setup(&tmp);
    let server = setup.start();
    // Requests of 25 records with a checkpoint every 10: each is appended
    // in parts around the checkpoints, so no more than 10 are ever unsigned.
    send(&setup, (0..3).map(|i| (i, 25)));
    server.kill9();
    let chain = chain(&setup);
    let report = run(&chain, &options(&setup));
    assert_eq!(report.errors(), 0, "{}", report.to_text(false));
    assert!(report.chains[0].tail.records <= 10, "{}", report.to_text(false));
    let sizes = sizes(&chain);
    assert!(sizes.windows(2).all(|w| w[1] - w[0] <= 10), "{sizes:?}");
    // The restart signs a start checkpoint over what the crash left, then goes on.
    let server = setup.start();
    send(&setup, (3..5).map(|i| (i, 25)));
    assert!(server.stop().success());
    expect(&run(&chain, &options(&setup)), &[], 0);
    let bodies: Vec<String> = read_checkpoints(&chain).iter().map(body).collect();
    assert!(
        bodies[0].starts_with("otel-audit/test/traces/audit/0/") && bodies[0].contains("\n0\n"),
        "genesis: {}",
        bodies[0]
    );
    assert_eq!(bodies.iter().filter(|b| b.ends_with("\nstart\n")).count(), 2, "one per start");
    // Every forwarded frame of a split request is whole: the trail reads
    // back exactly what was sent.
    let stored = support::trail::read_store(&setup.store);
    let traces = stored.iter().find(|c| c.id == "test/traces/audit/0").unwrap();
    assert_eq!(traces.records.len(), 125);
}

#[test]
fn a_key_rotated_on_a_store_of_two_chains_verifies_with_a_window_per_chain() {
    let (tmp, mut setup) = build(20, 5);
    let traces = chain(&setup);
    let logs = setup.store.join("test_logs_audit_0");
    let handover = |chain: &Path| *sizes(chain).last().unwrap();
    let (traces_handover, logs_handover) = (handover(&traces), handover(&logs));
    assert_ne!(traces_handover, logs_handover, "each chain has its own handover size");
    let old = setup.public_key().display().to_string();
    let (new_signer, new_key) = keygen(tmp.path(), "test-signer-2");
    setup.key = new_signer;
    let server = setup.start();
    send(&setup, (4..6).map(|i| (i, 5)));
    assert!(server.stop().success());
    let new = new_key.display().to_string();
    let verify_with = |keys: &[String]| {
        let mut args = vec![setup.store.to_str().unwrap().to_owned()];
        for key in keys {
            args.extend(["--public-key".to_owned(), key.clone()]);
        }
        verify_bin(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // One window for the whole store fits the traces chain only.
    let (code, text) = verify_with(&[old.clone(), format!("{new}@{traces_handover}")]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("Checkpoint test/logs/audit/0@0 INVALID: UNKNOWN_KEY"), "{text}");
    // A window per chain: valid.
    let (code, text) = verify_with(&[
        old,
        format!("{new}@test/traces/audit/0:{traces_handover}"),
        format!("{new}@test/logs/audit/0:{logs_handover}"),
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Result: VALID;"), "{text}");
}
