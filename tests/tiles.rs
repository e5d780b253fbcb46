//! Each chain as a C2SP tlog-tiles log (c2sp.org/tlog-tiles): a store
//! written by the real `otel-audit serve`, exported by `otel-audit tiles
//! export` (a separate process), then read by a minimal tlog-tiles client
//! written here from the specs with sha2, base64 and ed25519-dalek only (no
//! otel-audit code): it checks the checkpoint's signature, rebuilds its root
//! from the tiles alone, checks every entry against its leaf and the level-1
//! tiles against level 0, and gets every record back byte for byte. An
//! edited tile, bundle or checkpoint is caught.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use support::server::binary;
use support::tamper::{build, chain, read_segments, send};

// ------------------------------------------------ the independent client

/// `<N>` of a tile path, as the spec spells it.
fn index(n: u64) -> String {
    let digits = format!("{n:03}");
    let groups: Vec<String> = {
        let padded = format!("{:0>width$}", digits, width = digits.len().div_ceil(3) * 3);
        padded.as_bytes().chunks(3).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect()
    };
    let last = groups.len() - 1;
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| if i < last { format!("x{g}") } else { g.clone() })
        .collect::<Vec<_>>()
        .join("/")
}

/// Where a log's resources come from: `get("checkpoint")`,
/// `get("tile/0/000")`, ...
type Get<'a> = &'a dyn Fn(&str) -> Result<Vec<u8>, String>;

fn fetch(get: Get, level: &str, n: u64, width: u64) -> Result<Vec<u8>, String> {
    let partial = if width < 256 { format!(".p/{width}") } else { String::new() };
    get(&format!("tile/{level}/{}{partial}", index(n)))
}

/// A log in a directory.
fn files(log: &Path) -> impl Fn(&str) -> Result<Vec<u8>, String> + '_ {
    move |path| std::fs::read(log.join(path)).map_err(|e| format!("cannot fetch {path}: {e}"))
}

/// A log over HTTP: `GET http://127.0.0.1:<port><prefix>/<path>` (HTTP/1.0).
fn http(port: u16, prefix: &str) -> impl Fn(&str) -> Result<Vec<u8>, String> + '_ {
    move |path| match http_get_bytes(port, &format!("{prefix}/{path}")) {
        (200, body) => Ok(body),
        (status, body) => Err(format!("GET {path}: {status} {}", String::from_utf8_lossy(&body))),
    }
}

fn http_get_bytes(port: u16, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a header");
    let status = String::from_utf8_lossy(&answer[9..12]).parse().unwrap();
    (status, answer[end + 4..].to_vec())
}

fn leaf(entry: &[u8]) -> [u8; 32] {
    Sha256::new().chain_update([0u8]).chain_update(entry).finalize().into()
}

fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    Sha256::new().chain_update([1u8]).chain_update(left).chain_update(right).finalize().into()
}

/// RFC 6962 §2.1 MTH.
fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// The hashes of level `level` in a tree of `size` entries, from its tiles.
fn level_hashes(get: Get, level: u32, size: u64) -> Result<Vec<[u8; 32]>, String> {
    let count = size / 256u64.pow(level);
    let mut hashes = Vec::new();
    for n in 0..count.div_ceil(256) {
        let width = (count - n * 256).min(256);
        let tile = fetch(get, &level.to_string(), n, width)?;
        if tile.len() as u64 != width * 32 {
            return Err(format!("tile {level}/{n} is {} bytes, not {}", tile.len(), width * 32));
        }
        hashes.extend(tile.chunks(32).map(|c| <[u8; 32]>::try_from(c).unwrap()));
    }
    Ok(hashes)
}

/// Checks the log `get` reads against the signed-note verifier key `vkey`
/// (`name+hash+base64(0x01 || key)`); returns its entries.
fn read_log(get: Get, vkey: &str) -> Result<Vec<Vec<u8>>, String> {
    let note = String::from_utf8(get("checkpoint")?).map_err(|e| e.to_string())?;
    let (body, signatures) = note.split_once("\n\n").ok_or("the checkpoint is not a signed note")?;
    let lines: Vec<&str> = body.lines().collect();
    let size: u64 = lines.get(1).and_then(|l| l.parse().ok()).ok_or("no tree size")?;
    let root: [u8; 32] =
        lines.get(2).and_then(|l| B64.decode(l).ok()).and_then(|r| r.try_into().ok()).ok_or("no root hash")?;
    // c2sp.org/signed-note: the key hash is SHA-256(name || "\n" || 0x01 || key)[:4].
    let mut parts = vkey.trim().splitn(3, '+');
    let (name, _, key) = (parts.next().unwrap(), parts.next().unwrap(), B64.decode(parts.next().unwrap()).unwrap());
    let key_hash = &Sha256::new().chain_update(name).chain_update("\n").chain_update(&key).finalize()[..4];
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key[1..].try_into().unwrap()).unwrap();
    let signed = signatures.lines().filter_map(|l| l.strip_prefix("\u{2014} ")).any(|l| {
        let Some((signer, sig)) = l.split_once(' ') else { return false };
        let Ok(sig) = B64.decode(sig) else { return false };
        signer == name
            && sig.len() == 68
            && sig[..4] == *key_hash
            && key
                .verify_strict(
                    format!("{body}\n").as_bytes(),
                    &ed25519_dalek::Signature::from_slice(&sig[4..]).unwrap(),
                )
                .is_ok()
    });
    if !signed {
        return Err("the checkpoint has no valid signature by the log's key".into());
    }
    let leaves = level_hashes(get, 0, size)?;
    if mth(&leaves) != root {
        return Err("the level-0 tiles do not hash to the checkpoint's root".into());
    }
    let level1 = level_hashes(get, 1, size)?;
    for (n, hash) in level1.iter().enumerate() {
        if *hash != mth(&leaves[n * 256..(n + 1) * 256]) {
            return Err(format!("tile 1/{n} does not match level 0"));
        }
    }
    let mut entries = Vec::new();
    for n in 0..size.div_ceil(256) {
        let width = (size - n * 256).min(256);
        let bundle = fetch(get, "entries", n, width)?;
        let mut at = 0;
        while at < bundle.len() {
            let len =
                u16::from_be_bytes(bundle.get(at..at + 2).ok_or("a truncated bundle")?.try_into().unwrap()) as usize;
            entries.push(bundle.get(at + 2..at + 2 + len).ok_or("a truncated entry")?.to_vec());
            at += 2 + len;
        }
        if entries.len() as u64 != n * 256 + width {
            return Err(format!("bundle {n} holds {} entries, not {width}", entries.len() as u64 - n * 256));
        }
    }
    for (i, entry) in entries.iter().enumerate() {
        if leaf(entry) != leaves[i] {
            return Err(format!("entry {i} does not hash to its leaf"));
        }
    }
    Ok(entries)
}

// ------------------------------------------------------------- the test

fn export(store: &Path, out: &Path, chain: Option<&str>) -> std::process::Output {
    let mut command = Command::new(binary());
    command.args(["tiles", "export"]).arg(store).arg(out);
    if let Some(chain) = chain {
        command.args(["--chain", chain]);
    }
    command.output().unwrap()
}

/// The public URL prefix the tests' exported logs are served at.
const PUBLIC_PREFIX: &str = "audit.example.test/logs";

/// The one directory under `out` that holds a `checkpoint`.
fn find_log(out: &Path) -> PathBuf {
    let mut found = Vec::new();
    let mut todo = vec![out.to_path_buf()];
    while let Some(dir) = todo.pop() {
        if dir.join("checkpoint").is_file() {
            found.push(dir.clone());
        }
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() && entry.file_name() != "tile" {
                todo.push(entry.path());
            }
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

fn flip(path: PathBuf, at: usize) {
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at] ^= 1;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn an_exported_chain_is_a_tlog_tiles_log_a_client_checks_and_reads() {
    // 700 records (two full tiles and a partial one) with a checkpoint every
    // 10 records, so many partial tiles are needed.
    // The store's origin prefix is the public URL prefix the export is
    // served at.
    let tmp = tempfile::tempdir().unwrap();
    let mut setup = support::tamper::setup(&tmp);
    setup.store_extra = format!("    origin: {PUBLIC_PREFIX}\n");
    let server = setup.start();
    send(&setup, (0..700u64 / 60 + 1).map(|i| (i, 60.min(700 - i as usize * 60))));
    assert!(server.stop().success());
    let out = tmp.path().join("tiles");
    let exported = export(&setup.store, &out, Some("test/traces/audit/0"));
    let stdout = String::from_utf8_lossy(&exported.stdout);
    assert!(exported.status.success(), "{stdout}{}", String::from_utf8_lossy(&exported.stderr));
    assert!(stdout.contains("chain test/traces/audit/0: 700 entries"), "{stdout}");
    let vkey = std::fs::read_to_string(setup.public_key()).unwrap();

    // tlog-tiles: the log at `https://<origin>/` (c2sp.org/tlog-tiles: the
    // origin is the log's schema-less URL prefix). Served from `out` at
    // `https://{PUBLIC_PREFIX}/`, the log's directory is its origin's path.
    let log = find_log(&out);
    let url = format!("{PUBLIC_PREFIX}/{}", log.strip_prefix(&out).unwrap().display());
    let note = std::fs::read_to_string(log.join("checkpoint")).unwrap();
    assert_eq!(note.lines().next().unwrap(), url, "the origin is the log's URL prefix");

    let entries = read_log(&files(&log), &vkey).unwrap();
    let stored: Vec<Vec<u8>> =
        read_segments(&chain(&setup)).into_iter().flat_map(|(_, lines)| lines).map(String::into_bytes).collect();
    assert_eq!(entries, stored, "every record back byte for byte");
    // The spec's paths: full tiles, the partial ones of the checkpointed
    // sizes still partial (700 = 2·256 + 188; a checkpoint at 690 too).
    for path in
        ["tile/0/000", "tile/0/001", "tile/0/002.p/188", "tile/0/002.p/178", "tile/1/000.p/2", "tile/entries/001"]
    {
        assert!(log.join(path).is_file(), "{path}");
    }
    assert!(!log.join("tile/0/001.p/44").exists(), "a partial tile whose full tile exists is not written");

    // Tampering is caught.
    let tampered = tmp.path().join("tampered");
    let copy = |what: &str, edit: &dyn Fn(&Path)| {
        let _ = std::fs::remove_dir_all(&tampered);
        assert!(Command::new("cp").arg("-r").arg(&log).arg(&tampered).status().unwrap().success());
        edit(&tampered);
        let error = read_log(&files(&tampered), &vkey).expect_err(what);
        eprintln!("{what}: {error}");
        error
    };
    let error = copy("an edited entry", &|l| flip(l.join("tile/entries/000"), 100));
    assert!(error.contains("entry") && error.contains("does not hash to its leaf"), "{error}");
    let error = copy("an edited leaf tile", &|l| flip(l.join("tile/0/001"), 5));
    assert!(error.contains("do not hash to the checkpoint's root"), "{error}");
    let error = copy("an edited partial tile", &|l| flip(l.join("tile/0/002.p/188"), 31));
    assert!(error.contains("do not hash to the checkpoint's root"), "{error}");
    let error = copy("a cut bundle", &|l| {
        let path = l.join("tile/entries/002.p/188");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    });
    assert!(error.contains("truncated") || error.contains("holds"), "{error}");
    let error = copy("a checkpoint with another size", &|l| {
        let note = std::fs::read_to_string(l.join("checkpoint")).unwrap();
        std::fs::write(l.join("checkpoint"), note.replacen("\n700\n", "\n690\n", 1)).unwrap();
    });
    assert!(error.contains("no valid signature"), "{error}");
}

#[test]
fn export_refuses_a_store_whose_records_do_not_match_their_leaves() {
    let (tmp, setup) = build(40, 20);
    let segment = read_segments(&chain(&setup)).remove(0).0;
    let text = std::fs::read_to_string(&segment).unwrap();
    let mut permissions = std::fs::metadata(&segment).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&segment, permissions).unwrap();
    std::fs::write(&segment, text.replacen("\"seq\":\"1\"", "\"seq\":\"9\"", 1)).unwrap();
    let exported = export(&setup.store, &tmp.path().join("tiles"), None);
    let stderr = String::from_utf8_lossy(&exported.stderr);
    assert_eq!(exported.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("test/traces/audit/0: the record at seq 1 does not hash to its leaf"), "{stderr}");
}

#[test]
fn a_running_serve_serves_each_chain_as_a_tlog_tiles_log() {
    let tmp = tempfile::tempdir().unwrap();
    let mut setup = support::tamper::setup(&tmp);
    let admin = support::server::free_port();
    setup.admin = Some(admin);
    let server = setup.start();
    support::tamper::send(&setup, (0..10).map(|i| (i, 60)));
    let vkey = std::fs::read_to_string(setup.public_key()).unwrap();
    let live = http(admin, "/tiles/test_traces_audit_0");

    // A client reads the live log: signed, complete up to its checkpoint.
    let entries = read_log(&live, &vkey).unwrap();
    assert!(entries.len() >= 590, "{} entries", entries.len());
    let stored: Vec<Vec<u8>> =
        read_segments(&chain(&setup)).into_iter().flat_map(|(_, lines)| lines).map(String::into_bytes).collect();
    assert_eq!(entries, stored[..entries.len()], "every record back byte for byte");
    // Nothing past the newest checkpoint, no other spelling of a path, no other chain.
    for path in ["tile/0/003", "tile/0/002.p/255", "tile/0/0", "tile/00/000", "tile/0/000.p/0", "tile/0/x000/000", "x"]
    {
        assert_eq!(http_get_bytes(admin, &format!("/tiles/test_traces_audit_0/{path}")).0, 404, "{path}");
    }
    assert_eq!(http_get_bytes(admin, "/tiles/elsewhere/checkpoint").0, 404);
    assert!(server.stop().success());
}
