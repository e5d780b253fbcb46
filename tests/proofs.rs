//! Inclusion and consistency proofs (RFC 9162 §2.1.3–2.1.4) on a store
//! written by the real `otel-audit serve` and the real .wasm: every
//! record's inclusion proof and every pair of checkpoints' consistency
//! proof verify; each corruption of a proof is rejected; the CLI makes and
//! checks them as separate processes, without the store.

mod support;

use std::path::{Path, PathBuf};

use otel_audit::proof::check::{self, Proven, consistent, root_from_inclusion_path};
use otel_audit::proof::{Proof, make};
use otel_audit::verify::TrustedKey;
use support::server::{Setup, binary};
use support::tamper::*;

const CHAIN: &str = "test/traces/audit/0";

/// 3,000 audit spans in requests of 100 and 60 (so records and checkpoints
/// do not line up), a checkpoint every 100 records; killed once midway and
/// started again, then stopped cleanly.
fn store() -> (tempfile::TempDir, Setup, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let mut setup = setup(&tmp);
    setup.checkpoint = "{every_records: 100, interval: 1h, heartbeat: 1h}".into();
    setup.segment_size = "256KiB".into();
    let server = setup.start();
    send(&setup, (0..15).map(|i| (i, 100)));
    server.kill9();
    let server = setup.start();
    send(&setup, (15..40).map(|i| (i, 60)));
    assert!(server.stop().success());
    let chain = chain(&setup);
    (tmp, setup, chain)
}

fn keys(setup: &Setup) -> Vec<TrustedKey> {
    vec![TrustedKey::from_arg(setup.public_key().to_str().unwrap()).unwrap()]
}

fn inclusion(proof: &Proof) -> &otel_audit::proof::Inclusion {
    match proof {
        Proof::Inclusion(p) => p,
        Proof::Consistency(_) => panic!("not an inclusion proof"),
    }
}

fn hash(hex_text: &str) -> [u8; 32] {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

#[test]
fn every_record_and_every_pair_of_checkpoints_is_proven_and_every_corruption_is_rejected() {
    let (_tmp, setup, chain) = store();
    let keys = keys(&setup);
    expect(&run(&chain, &options(&setup)), &[], 0);
    let leaves = leaves(&read_segments(&chain));
    assert_eq!(leaves.len(), 3000);

    // Every record, against the newest checkpoint.
    for seq in 0..3000 {
        let proof = make::inclusion(&chain, seq, None).unwrap();
        match check::verify(&proof, &keys) {
            Ok(Proven::Inclusion { seq: proven, tree_size: 3000, .. }) => assert_eq!(proven, seq),
            other => panic!("seq {seq}: {other:?}"),
        }
    }
    // Every pair of checkpoints (sizes as signed, genesis and restarts included).
    let mut sizes = sizes(&chain);
    sizes.dedup();
    assert!(sizes.len() > 30 && sizes[0] == 0, "{sizes:?}");
    for (i, &old) in sizes.iter().enumerate() {
        for &new in &sizes[i..] {
            let proof = make::consistency(&chain, CHAIN, old, Some(new)).unwrap();
            match check::verify(&proof, &keys) {
                Ok(Proven::Consistency { old_size, new_size, .. }) => assert_eq!((old_size, new_size), (old, new)),
                other => panic!("{old}..{new}: {other:?}"),
            }
        }
    }
    // An older checkpoint too: seq 150 in the tree of 200.
    let at_200 = make::inclusion(&chain, 150, Some(200)).unwrap();
    assert!(check::verify(&at_200, &keys).is_ok());
    // The path is the independent Merkle tree's (tests/support/trail.rs).
    let p = inclusion(&at_200);
    let root =
        root_from_inclusion_path(150, 200, leaves[150], &p.audit_path.iter().map(|h| hash(h)).collect::<Vec<_>>());
    assert_eq!(root, Some(support::trail::merkle_root(&leaves[..200])));

    rejections_of_inclusion(&chain, &keys, &leaves);
    rejections_of_consistency(&chain, &keys);
}

fn rejected(proof: &Proof, keys: &[TrustedKey], what: &str) {
    assert!(check::verify(proof, keys).is_err(), "{what} was accepted");
}

fn rejections_of_inclusion(chain: &Path, keys: &[TrustedKey], leaves: &[[u8; 32]]) {
    let good = make::inclusion(chain, 1234, None).unwrap();
    let p = inclusion(&good).clone();
    assert!(p.audit_path.len() >= 11);
    let with = |change: &dyn Fn(&mut otel_audit::proof::Inclusion)| {
        let mut changed = p.clone();
        change(&mut changed);
        Proof::Inclusion(changed)
    };
    // Every single-bit flip of every hash of the path.
    for i in 0..p.audit_path.len() {
        for bit in 0..256 {
            let mut bytes = hash(&p.audit_path[i]);
            bytes[bit / 8] ^= 1 << (bit % 8);
            rejected(&with(&|c| c.audit_path[i] = hex::encode(bytes)), keys, &format!("path[{i}] bit {bit}"));
        }
    }
    // Wrong index: the document's, and the algorithm's with the right record.
    rejected(&with(&|c| c.leaf_index = 1235), keys, "another index");
    let path: Vec<[u8; 32]> = p.audit_path.iter().map(|h| hash(h)).collect();
    let root = support::trail::merkle_root(leaves);
    assert_eq!(root_from_inclusion_path(1234, 3000, leaves[1234], &path), Some(root));
    for index in [1233, 1235, 0, 2999, 3000] {
        assert_ne!(root_from_inclusion_path(index, 3000, leaves[1234], &path), Some(root), "index {index}");
    }
    // Wrong size: the document's is bound to the signed checkpoint; the
    // algorithm alone tells sizes apart where the tree's shape differs.
    rejected(&with(&|c| c.tree_size = 2999), keys, "another size");
    for size in [1235, 1300, 2048, 1 << 40] {
        assert_ne!(root_from_inclusion_path(1234, size, leaves[1234], &path), Some(root), "size {size}");
    }
    // Truncated and extended paths.
    rejected(&with(&|c| drop(c.audit_path.pop())), keys, "a truncated path");
    rejected(&with(&|c| c.audit_path.push(c.audit_path[0].clone())), keys, "an extended path");
    rejected(&with(&|c| c.audit_path.clear()), keys, "no path");
    // Another record, the right one edited.
    let other = make::inclusion(chain, 1235, None).unwrap();
    rejected(&with(&|c| c.record = inclusion(&other).record.clone()), keys, "another record");
    rejected(&with(&|c| c.record = c.record.replacen("\"s\":\"", "\"s\":\"x", 1)), keys, "an edited record");
    // Against another chain's checkpoint (same key), and a forged one.
    let logs = chain.parent().unwrap().join("test_logs_audit_0");
    let logs_checkpoint = read_checkpoints(&logs).pop().unwrap().note;
    rejected(&with(&|c| c.checkpoint = logs_checkpoint.clone()), keys, "another chain's checkpoint");
    let forged =
        otel_audit::checkpoint::SignerKey::generate("test-signer").unwrap().sign_note(&body_of(&p.checkpoint)).unwrap();
    rejected(&with(&|c| c.checkpoint = forged.clone()), keys, "a checkpoint signed by another key");
    // An older checkpoint of the same chain with the newer proof.
    let older = read_checkpoints(chain).into_iter().find(|c| c.size == 2000).unwrap().note;
    rejected(&with(&|c| c.checkpoint = older.clone()), keys, "another checkpoint of the chain");
}

fn body_of(note: &str) -> String {
    otel_audit::checkpoint::SignedNote::parse(note).unwrap().text
}

fn rejections_of_consistency(chain: &Path, keys: &[TrustedKey]) {
    let good = make::consistency(chain, CHAIN, 1300, Some(2700)).unwrap();
    let Proof::Consistency(p) = good.clone() else { panic!("not a consistency proof") };
    assert!(check::verify(&good, keys).is_ok());
    let with = |change: &dyn Fn(&mut otel_audit::proof::Consistency)| {
        let mut changed = p.clone();
        change(&mut changed);
        Proof::Consistency(changed)
    };
    for i in 0..p.consistency_path.len() {
        for bit in 0..256 {
            let mut bytes = hash(&p.consistency_path[i]);
            bytes[bit / 8] ^= 1 << (bit % 8);
            rejected(&with(&|c| c.consistency_path[i] = hex::encode(bytes)), keys, &format!("path[{i}] bit {bit}"));
        }
    }
    rejected(&with(&|c| drop(c.consistency_path.pop())), keys, "a truncated path");
    rejected(&with(&|c| c.consistency_path.push(c.consistency_path[0].clone())), keys, "an extended path");
    rejected(&with(&|c| c.old_size = 1200), keys, "another old size");
    rejected(&with(&|c| std::mem::swap(&mut c.old_checkpoint, &mut c.new_checkpoint)), keys, "swapped checkpoints");
    let logs = chain.parent().unwrap().join("test_logs_audit_0");
    let logs_checkpoint = read_checkpoints(&logs).pop().unwrap().note;
    rejected(&with(&|c| c.new_checkpoint = logs_checkpoint.clone()), keys, "another chain's checkpoint");
    // The algorithm alone, with sizes that do not fit the path.
    let path: Vec<[u8; 32]> = p.consistency_path.iter().map(|h| hash(h)).collect();
    let roots =
        |size: u64| read_checkpoints(chain).into_iter().find(|c| c.size == size).map(|c| hash(&c.root)).unwrap();
    assert!(consistent(1300, 2700, roots(1300), roots(2700), &path));
    assert!(!consistent(1300, 2600, roots(1300), roots(2600), &path));
    assert!(!consistent(1200, 2700, roots(1200), roots(2700), &path));
}

#[test]
fn the_cli_proves_and_verify_proof_checks_offline_without_the_store() {
    let (tmp, setup, chain) = store();
    let out = tmp.path().join("proofs");
    std::fs::create_dir(&out).unwrap();
    let inclusion = out.join("inclusion.json");
    let consistency = out.join("consistency.json");
    let prove = |args: &[&str]| {
        let status = std::process::Command::new(binary()).arg("prove").args(args).output().unwrap();
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    };
    let store = setup.store.to_str().unwrap();
    prove(&["inclusion", store, "--chain", CHAIN, "--seq", "42", "--out", inclusion.to_str().unwrap()]);
    prove(&["consistency", store, "--chain", CHAIN, "--from", "1000", "--out", consistency.to_str().unwrap()]);
    // The store is gone: the proofs stand alone.
    std::fs::rename(&setup.store, tmp.path().join("elsewhere")).unwrap();
    let check = |proof: &Path| {
        let out = std::process::Command::new(binary())
            .args(["verify-proof", proof.to_str().unwrap(), "--public-key", setup.public_key().to_str().unwrap()])
            .output()
            .unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = check(&inclusion);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with(&format!(
            "Proof VALID: record {CHAIN}#42 is in the tree of 3000 records of otel-audit/{CHAIN}/"
        )),
        "{text}"
    );
    let (code, text) = check(&consistency);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("the tree of 1000 records") && text.contains("prefix of its tree of 3000"), "{text}");
    // One character of the record changed: exit 1, and why.
    let document = std::fs::read_to_string(&inclusion).unwrap();
    std::fs::write(&inclusion, document.replacen("\\\"s\\\":\\\"", "\\\"s\\\":\\\"x", 1)).unwrap();
    let (code, text) = check(&inclusion);
    assert_eq!(code, 1, "{text}");
    assert!(text.starts_with("Proof INVALID: the audit path does not lead to the checkpoint's root"), "{text}");
    drop(chain);
}
