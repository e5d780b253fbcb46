//! The files `otel-audit serve` leaves behind, with the real binary: modes
//! set explicitly whatever the umask (0700/0600 by default, 0750/0640 with
//! `file_mode: group-read`), a store others may write refused at start-up,
//! and a final checkpoint that cannot be written ending `serve` with an
//! error naming the chain.

mod support;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use otel_audit::exporter::client::{Client, ClientOptions, Destination};
use otel_audit::loadgen::{self, BatchSpec};
use otel_audit::otlp::Signal;
use prost::Message;
use support::server::{Server, Setup, binary, http_get};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn grpc_client(setup: &Setup) -> Client {
    let options = ClientOptions { headers: vec![], gzip: false, timeout: Duration::from_secs(10) };
    Client::new(&Destination::Grpc { endpoint: setup.grpc_uri() }, options).unwrap()
}

fn traces(seed: u64) -> Bytes {
    let request = loadgen::traces(&BatchSpec { records: 5, audit_ratio: 1.0, attributes: 4, varied: true, seed });
    Bytes::from(request.encode_to_vec())
}

fn logs(seed: u64) -> Bytes {
    let request = loadgen::logs(&BatchSpec { records: 5, audit_ratio: 1.0, attributes: 4, varied: true, seed });
    Bytes::from(request.encode_to_vec())
}

/// Starts `setup`'s server with this umask in the shell that execs it.
fn start_with_umask(setup: &Setup, umask: &str) -> Server {
    let config = setup.dir.join("otel-audit.yaml");
    std::fs::write(&config, setup.config()).unwrap();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("umask {umask} && exec {} serve --config {}", binary(), config.display()))
        .env("OTEL_AUDIT_CACHE_DIR", support::cache_dir())
        .env("OTEL_AUDIT_LOG", "info");
    Server::start_command(command, &setup.dir.join("server.log"), setup.ports[3])
}

/// Every directory and file under `root` (itself included), with its mode.
fn modes(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let meta = std::fs::symlink_metadata(root).unwrap();
    let mut out = vec![(root.to_owned(), meta.permissions().mode() & 0o7777, meta.is_dir())];
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for entry in entries {
            out.extend(modes(&entry));
        }
    }
    out
}

/// Runs a store with a forwarding exporter (to a second server, its
/// downstream, under the same umask) and checks the modes of everything
/// both left in their stores and checkpoint mirrors.
fn store_modes(umask: &str, group_read: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_mode, file_mode) = if group_read { (0o750, 0o640) } else { (0o700, 0o600) };
    let extra = if group_read { "    file_mode: group-read\n" } else { "" };
    let mut down = Setup::keep_all(&tmp.path().join("down"));
    down.store_extra = extra.into();
    std::fs::create_dir_all(tmp.path().join("up")).unwrap();
    let mut up = Setup::new(&tmp.path().join("up"));
    up.store_extra = extra.into();
    up.segment_size = "4KiB".into();
    up.exporters.push(("otlp/down".into(), format!("    endpoint: 127.0.0.1:{}", down.ports[0])));
    let down_server = start_with_umask(&down, umask);
    let server = start_with_umask(&up, umask);
    let rt = runtime();
    let _entered = rt.enter();
    let grpc = grpc_client(&up);
    for seed in 0..6 {
        rt.block_on(grpc.send(Signal::Traces, traces(seed))).unwrap();
        rt.block_on(grpc.send(Signal::Logs, logs(seed))).unwrap();
    }
    assert!(server.stop().success());
    assert!(down_server.stop().success());

    let mut found = Vec::new();
    for setup in [&up, &down] {
        found.extend(modes(&setup.store));
        found.extend(modes(&setup.key.with_extension("checkpoints")));
    }
    let name = |path: &Path| path.file_name().unwrap().to_string_lossy().into_owned();
    let mut wrong = Vec::new();
    let mut sealed = 0;
    for (path, mode, is_dir) in &found {
        let expected = if *is_dir {
            dir_mode
        } else if name(path).starts_with("seg-") && mode & 0o200 == 0 {
            sealed += 1;
            file_mode & 0o444
        } else {
            file_mode
        };
        if *mode != expected {
            wrong.push(format!("{} is {mode:04o}, expected {expected:04o}", path.display()));
        }
    }
    assert!(wrong.is_empty(), "umask {umask}, group_read {group_read}:\n{}", wrong.join("\n"));
    assert!(sealed > 0, "no sealed segment: {found:#?}");
    // Every kind of file the store writes was looked at.
    let names: Vec<String> = found.iter().map(|(p, _, _)| name(p)).collect();
    for kind in ["chain.json", "checkpoints.jsonl", "lock", "tiles", "outbox", "cursor-", ".frames", "level-0"] {
        assert!(names.iter().any(|n| n.contains(kind)), "no {kind} among {names:?}");
    }
    assert!(found.iter().filter(|(p, _, _)| p.starts_with(up.key.with_extension("checkpoints"))).count() > 1);
}

#[test]
fn store_files_are_private_whatever_the_umask() {
    store_modes("000", false);
    store_modes("022", false);
}

#[test]
fn group_read_gives_auditors_read_access_whatever_the_umask() {
    store_modes("077", true);
    store_modes("000", true);
}

#[test]
fn a_store_or_mirror_others_may_write_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(tmp.path());
    std::fs::create_dir_all(&setup.store).unwrap();
    std::fs::set_permissions(&setup.store, std::fs::Permissions::from_mode(0o777)).unwrap();
    let error = setup.serve().err().expect("serve refuses a world-writable store");
    let store = setup.store.display().to_string();
    assert!(
        error.contains(&format!("{store} is writable by others (mode 0777)"))
            && error.contains(&format!("chmod o-w {store}")),
        "{error}"
    );
    assert!(error.contains("exporters.auditstore.directory"), "{error}");
    assert!(std::fs::read_dir(&setup.store).unwrap().next().is_none(), "nothing was written to it");
    // validate says the same.
    let out = Command::new(binary())
        .args(["validate", "--config"])
        .arg(setup.dir.join("otel-audit.yaml"))
        .env("OTEL_AUDIT_CACHE_DIR", support::cache_dir())
        .output()
        .unwrap();
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && output.contains("is writable by others (mode 0777)"), "{output}");

    // A mirror file others may write is refused too.
    std::fs::set_permissions(&setup.store, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mirror = setup.key.with_extension("checkpoints");
    std::fs::create_dir_all(&mirror).unwrap();
    let file = mirror.join("someone.json");
    std::fs::write(&file, "{}").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let error = setup.serve().err().expect("serve refuses a world-writable mirror file");
    assert!(error.contains(&format!("{} is writable by others (mode 0666)", file.display())), "{error}");
    assert!(error.contains("exporters.auditstore.checkpoint.mirror"), "{error}");
}

#[test]
fn a_final_checkpoint_that_cannot_be_written_makes_the_exit_status_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(tmp.path());
    setup.signals = vec!["traces"];
    setup.checkpoint = "{every_records: 1000, interval: 1h, heartbeat: 1h}".into();
    let config = tmp.path().join("otel-audit.yaml");
    std::fs::write(&config, setup.config()).unwrap();
    // The log through a pipe: the file size limit below must not stop it.
    let mut child = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config)
        .env("OTEL_AUDIT_CACHE_DIR", support::cache_dir())
        .env("OTEL_AUDIT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (log, mut stderr) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                log.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while http_get(setup.ports[3], "/").is_none_or(|(code, _)| code != 200) {
        assert!(child.try_wait().unwrap().is_none(), "serve exited:\n{}", log.lock().unwrap());
        assert!(Instant::now() < deadline, "serve not healthy:\n{}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = runtime();
    let _entered = rt.enter();
    rt.block_on(grpc_client(&setup).send(Signal::Traces, traces(1))).unwrap();
    // From now on no file of the process may grow past the checkpoint log's
    // size (RLIMIT_FSIZE, a real EFBIG from the kernel, as a full disk): the
    // final checkpoint cannot be appended.
    let chain_dir = std::fs::read_dir(&setup.store).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_dir()).unwrap();
    let size = std::fs::metadata(chain_dir.join("checkpoints.jsonl")).unwrap().len();
    let limit = format!("--fsize={size}:{size}");
    let status = Command::new("prlimit").args(["--pid", &child.id().to_string(), &limit]).status().unwrap();
    assert!(status.success(), "prlimit: {status}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve ignored SIGTERM:\n{}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(2), "{log}");
    assert_eq!(std::fs::metadata(chain_dir.join("checkpoints.jsonl")).unwrap().len(), size, "nothing half-written");
    assert!(
        log.contains("chain test/traces/audit/0: the final checkpoint could not be written"),
        "the error names the chain:\n{log}"
    );
    assert!(log.contains("chain stopped without its final checkpoint"), "{log}");
}

#[test]
fn a_final_checkpoint_the_mirror_cannot_take_makes_the_exit_status_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(tmp.path());
    setup.signals = vec!["traces"];
    let server = setup.start();
    let rt = runtime();
    let _entered = rt.enter();
    rt.block_on(grpc_client(&setup).send(Signal::Traces, traces(1))).unwrap();
    // The mirror file is written through `<name>.tmp`: a directory there
    // makes every later mirror write fail (as a full or read-only mirror
    // volume would), while the store takes the final checkpoint.
    let mirror = setup.key.with_extension("checkpoints");
    let files: Vec<PathBuf> = std::fs::read_dir(&mirror).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::create_dir(files[0].with_extension("tmp")).unwrap();
    let log_file = setup.dir.join("server.log");
    let status = server.stop();
    let log = std::fs::read_to_string(log_file).unwrap();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains(
            "chain test/traces/audit/0: the final checkpoint is stored, but the checkpoint mirror could not be updated"
        ),
        "the error names the chain and the mirror:\n{log}"
    );
    // The store itself is complete and signed to its end.
    setup.assert_verifies();
}
