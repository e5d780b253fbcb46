//! `otel-audit witness` as its own process over real HTTP (C2SP
//! tlog-witness): it cosigns the checkpoints of a store written by the real
//! `otel-audit serve`, each with the consistency proof from the size it
//! cosigned last (made from the store's tiles), refuses a second history of
//! the same chain signed by the same key (422) and a stale old size (409,
//! with its size as `text/x.tlog.size`), and keeps its state across a
//! restart.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use otel_audit::checkpoint::SignedNote;
use otel_audit::cosignature::WitnessKey;
use otel_audit::proof::make::consistency_path;
use otel_audit::store::tiles::TileReader;
use otel_audit::witness::request_body;
use support::process::Process;
use support::server::{Setup, binary, free_port};
use support::tamper::*;

fn start_witness(dir: &Path, setup: &Setup, port: u16) -> Process {
    let mut command = Command::new(binary());
    command
        .args(["witness", "--key"])
        .arg(dir.join("w.example_1.key"))
        .arg("--log-key")
        .arg(setup.public_key())
        .args(["--origin-prefix", "otel-audit/", "--state"])
        .arg(dir.join("state"))
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let mut witness = Process::spawn("otel-audit witness", command, &dir.join("witness.log")).unwrap();
    witness
        .wait_until(Duration::from_secs(20), "is not listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .unwrap();
    witness
}

/// POSTs an add-checkpoint body; the status, content type and body.
fn add(port: u16, body: String) -> (u16, String, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/add-checkpoint"))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let kind = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        (status, kind, response.text().await.unwrap())
    })
}

#[test]
fn a_witness_process_cosigns_a_real_chain_and_refuses_a_second_history() {
    let (tmp, setup) = build(60, 5);
    let out = Command::new(binary())
        .args(["keygen", "--witness", "--name", "w.example/1", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let witness_key =
        WitnessKey::parse(std::fs::read_to_string(tmp.path().join("w.example_1.pub")).unwrap().trim()).unwrap();
    let port = free_port();
    let witness = start_witness(tmp.path(), &setup, port);
    let chain = chain(&setup);
    let tiles = TileReader::open(&chain);
    let mut cosigned = 0;
    for line in read_checkpoints(&chain) {
        let proof = consistency_path(&tiles, cosigned, line.size).unwrap();
        let (status, _, body) = add(port, request_body(cosigned, &proof, &line.note));
        assert_eq!(status, 200, "@{}: {body}", line.size);
        let note = SignedNote::parse(&format!("{}{body}", line.note)).unwrap();
        let checks: Vec<_> = note.signatures.iter().filter_map(|s| witness_key.check(&note.text, s)).collect();
        assert!(matches!(checks.as_slice(), [Ok(_)]), "@{}: {checks:?}", line.size);
        cosigned = line.size;
    }
    assert_eq!(cosigned, 60);
    // A stale old size: 409 and the witness's size.
    let newest = read_checkpoints(&chain).pop().unwrap();
    let (status, kind, text) = add(port, request_body(0, &[], &newest.note));
    assert_eq!((status, kind.as_str(), text.as_str()), (409, "text/x.tlog.size", "60\n"));

    // Restarted, the witness remembers; a second history of the same chain
    // (records 30.. rewritten, re-signed with the host's key) is refused.
    assert!(witness.stop().unwrap().success(), "a clean stop on SIGTERM");
    let witness = start_witness(tmp.path(), &setup, port);
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[40];
    segs[s].1[l] = segs[s].1[l].replace("\"audit.action\":{\"s\":\"", "\"audit.action\":{\"s\":\"forged-");
    rechain(&mut segs, 40);
    let forged: Vec<[u8; 32]> = [leaves(&segs), vec![[9; 32]; 10]].concat();
    let origin = otel_audit::checkpoint::Checkpoint::parse(&body(&newest)).unwrap().origin;
    let now = otel_audit::clock::now_unix_nano();
    // The same size with another root: 409, two histories.
    let same_size = signed_line(&signer(&setup), &origin, 60, &forged, now, None);
    let (status, _, body) = add(port, request_body(60, &[], &same_size.note));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("another root: two histories"), "{body}");
    // A larger tree of the other history, with its own (correct) proof from 60: 422.
    let forged_tiles = tmp.path().join("forged");
    let mut writer = otel_audit::store::tiles::TileWriter::open(&forged_tiles, 0).unwrap();
    forged.iter().for_each(|l| writer.push(*l));
    writer.sync().unwrap();
    let proof = consistency_path(&TileReader::open(&forged_tiles), 60, 70).unwrap();
    let larger = signed_line(&signer(&setup), &origin, 70, &forged, now, None);
    let (status, _, body) = add(port, request_body(60, &proof, &larger.note));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("not an extension of what the witness cosigned"), "{body}");
    // The honest chain goes on being cosigned.
    let (status, _, body) = add(port, request_body(60, &[], &newest.note));
    assert_eq!(status, 200, "{body}");
    drop(witness);
}
