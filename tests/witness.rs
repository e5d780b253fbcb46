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

/// `otel-audit keygen --witness --name <name> --out <dir>`; the public key file.
fn witness_keys(dir: &Path, name: &str) -> std::path::PathBuf {
    let out = Command::new(binary()).args(["keygen", "--witness", "--name", name, "--out"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir.join(format!("{}.pub", name.replace('/', "_")))
}

fn start_named_witness(dir: &Path, name: &str, setup: &Setup, port: u16) -> Process {
    let mut command = Command::new(binary());
    command
        .args(["witness", "--key"])
        .arg(dir.join(format!("{}.key", name.replace('/', "_"))))
        .arg("--log-key")
        .arg(setup.public_key())
        .arg("--state")
        .arg(dir.join(format!("state-{}", name.replace('/', "_"))))
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let log = dir.join(format!("{}.log", name.replace('/', "_")));
    let mut witness = Process::spawn("otel-audit witness", command, &log).unwrap();
    witness
        .wait_until(Duration::from_secs(20), "is not listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .unwrap();
    witness
}

#[test]
fn serve_submits_to_two_witnesses_in_the_background_and_verify_requires_their_quorum() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = setup(&tmp);
    let (w1, w2) = (witness_keys(tmp.path(), "w1.example/a"), witness_keys(tmp.path(), "w2.example/b"));
    let (p1, p2) = (free_port(), free_port());
    let witness1 = start_named_witness(tmp.path(), "w1.example/a", &setup, p1);
    // The second witness is down at first: ingestion goes on, its cosignatures come later.
    let key_line = format!("    signing_key: {}\n", setup.key.display());
    let config = setup.config().replace(
        &key_line,
        &format!(
            "{key_line}    witnesses:\n      - {{url: http://127.0.0.1:{p1}, public_key: {}}}\n      - {{url: http://127.0.0.1:{p2}, public_key: {}}}\n",
            w1.display(),
            w2.display()
        ),
    );
    assert!(config.contains("witnesses:"), "{config}");
    let config_path = tmp.path().join("witnessed.yaml");
    std::fs::write(&config_path, config).unwrap();
    let server = support::server::Server::start(&config_path, &tmp.path().join("server.log"), setup.ports[3], &[]);
    send(&setup, (0..4).map(|i| (i, 5)));
    let chain = chain(&setup);
    let cosignatures = |key: &Path| {
        let key = WitnessKey::parse(std::fs::read_to_string(key).unwrap().trim()).unwrap();
        otel_audit::witness::submit::cosignatures_file(&chain, &key)
    };
    let lines = |path: &Path| std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0);
    // Generous: a witness that was down is retried with a backoff of up to 30 s.
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        for _ in 0..1200 {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{what}");
    };
    wait_for("the first witness cosigns while the second is down", &|| lines(&cosignatures(&w1)) > 0);
    assert_eq!(lines(&cosignatures(&w2)), 0);
    let witness2 = start_named_witness(tmp.path(), "w2.example/b", &setup, p2);
    send(&setup, (4..6).map(|i| (i, 5)));
    wait_for("cosignatures resume once the second witness is up", &|| lines(&cosignatures(&w2)) > 0);
    assert!(server.stop().success());

    let public_key = setup.public_key();
    let verify = |extra: &[&str]| {
        let mut args = vec![chain.to_str().unwrap(), "--public-key", public_key.to_str().unwrap()];
        args.extend_from_slice(extra);
        verify_bin(&args)
    };
    let (w1s, w2s) = (w1.to_str().unwrap(), w2.to_str().unwrap());
    let (code, text) = verify(&["--witness", w1s, "--witness", w2s]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("witnessed    newest cosigned @30 by w1.example/a, w2.example/b"), "{text}");
    // A key that is not a given witness's does not count toward the quorum.
    let stranger = witness_keys(tmp.path(), "w3.example/c");
    let (code, text) = verify(&["--witness", w1s, "--witness", stranger.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("INVALID: UNWITNESSED"), "{text}");
    let (code, _) = verify(&["--witness", w1s, "--witness", stranger.to_str().unwrap(), "--quorum", "1"]);
    assert_eq!(code, 0);
    // A forged cosignature (one byte of a signature changed) is an error.
    let file = cosignatures(&w2);
    let text = std::fs::read_to_string(&file).unwrap();
    let mut first: otel_audit::witness::submit::CosignatureLine =
        serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let (head, data) = first.cosignature.rsplit_once(' ').unwrap();
    let mut blob = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data).unwrap();
    blob[20] ^= 1;
    first.cosignature = format!("{head} {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, blob));
    let rest: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, format!("{}\n{rest}", serde_json::to_string(&first).unwrap())).unwrap();
    let (code, text) = verify(&["--witness", w1s, "--witness", w2s]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("INVALID: BAD_COSIGNATURE"), "{text}");
    drop((witness1, witness2));
}

#[test]
fn a_witness_that_saw_another_history_refuses_the_hosts_checkpoints_and_the_host_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = setup(&tmp);
    let w1 = witness_keys(tmp.path(), "w1.example/a");
    let port = free_port();
    let witness = start_named_witness(tmp.path(), "w1.example/a", &setup, port);
    let key_line = format!("    signing_key: {}\n", setup.key.display());
    let witnessed =
        format!("{key_line}    witnesses:\n      - {{url: http://127.0.0.1:{port}, public_key: {}}}\n", w1.display());
    let config_path = tmp.path().join("witnessed.yaml");
    std::fs::write(&config_path, setup.config().replace(&key_line, &witnessed)).unwrap();
    let start = || support::server::Server::start(&config_path, &tmp.path().join("server.log"), setup.ports[3], &[]);
    let server = start();
    send(&setup, (0..4).map(|i| (i, 5)));
    assert!(server.stop().success());
    let chain = chain(&setup);
    let cosigned_before = std::fs::read_to_string(otel_audit::witness::submit::cosignatures_file(
        &chain,
        &WitnessKey::parse(std::fs::read_to_string(&w1).unwrap().trim()).unwrap(),
    ))
    .unwrap();
    assert!(cosigned_before.contains("\"size\":20"), "{cosigned_before}");

    // The holder of the host's key rewrites history under the same origin:
    // record 5 edited, everything relinked, every checkpoint re-signed, and
    // the mirror that would refuse it removed.
    let mut segs = read_segments(&chain);
    let (s, l) = flat(&segs)[5];
    segs[s].1[l] = segs[s].1[l].replace("\"audit.action\":{\"s\":\"", "\"audit.action\":{\"s\":\"forged-");
    rechain(&mut segs, 5);
    write_segments(&segs);
    resign_all(&chain, &signer(&setup), &leaves(&segs));
    std::fs::remove_dir_all(setup.key.with_extension("checkpoints")).unwrap();
    std::fs::remove_dir_all(chain.join("tiles")).unwrap();

    // The host serves on: every request is answered OK, while the witness refuses each submission.
    let server = start();
    send(&setup, (10..14).map(|i| (i, 5)));
    let refused = || {
        let text = support::admin::metrics(setup.ports[2]);
        support::admin::metric(&text, "otel_audit_witness_failures_total", &[("chain", "test/traces/audit/0")])
    };
    for _ in 0..600 {
        if refused() >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused() >= 1.0, "the witness refused the other history");
    assert!(server.stop().success());
    let log = std::fs::read_to_string(tmp.path().join("server.log")).unwrap();
    assert!(log.contains("witness submission failed"), "{log}");
    // Verify with the witness: the cosignatures are of the first history.
    let (code, text) = verify_bin(&[
        chain.to_str().unwrap(),
        "--public-key",
        setup.public_key().to_str().unwrap(),
        "--witness",
        w1.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("INVALID: BAD_COSIGNATURE") || text.contains("INVALID: UNWITNESSED"), "{text}");
    drop(witness);
}
