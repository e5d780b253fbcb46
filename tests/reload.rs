//! Hot swap (issue 6) end to end, with the real binary, the real .wasm and
//! two test-only rebuilds of it, real sockets and real signals: a hundred
//! swaps under load lose nothing and every record names the policy that
//! kept it; broken candidates are refused (and recorded) while the old one
//! keeps serving; the .wasm itself swaps the same way; `otel-audit status`
//! and `otel-audit reload` drive it from the command line.
//!
//! The load clients tag every record `keep=a|b|both|none`. Policy A keeps
//! a and both, policy B keeps b and both, neither keeps none: so the store
//! shows, record by record, which policy processed each request
//! (tests/support/swap.rs drives the swaps and checks the trail).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::admin;
use support::server::{binary, free_port};
use support::swap::*;
use support::trail;

/// Load between two swaps, so that most policies serve some request whole.
const DWELL: Duration = Duration::from_millis(100);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(((values.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN)
}

// ------------------------------------------------------------ the tests

#[test]
fn a_hundred_swaps_under_load_mixing_triggers_lose_nothing_and_each_record_names_its_policy() {
    const SWAPS: usize = 102;
    const TRIGGERS: [&str; 3] = ["file", "signal", "admin"];
    let began = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (Policy::keeping(&["a", "both"]), Policy::keeping(&["b", "both"]));
    let setup = hot_swap_setup(tmp.path(), &a, "");
    let module = sha256(&std::fs::read(&setup.module).unwrap());
    let server = setup.start();
    let admin_port = setup.admin.unwrap();
    let status = admin::processor(admin_port, PROCESSOR);
    assert_eq!(status["module"], json!({"path": setup.module.display().to_string(), "digest": module}));
    assert_eq!(status["policy"], json!({"path": setup.policy.display().to_string(), "digest": a.digest}));
    assert_eq!((&status["trigger"], &status["last_reload"]), (&json!("startup"), &Value::Null));
    assert_eq!(status["chains"].as_array().unwrap().len(), 4, "{status:#}");
    let startup = Regime::new(&module, &a);
    let mut swapper = Swapper::new(&setup, &server);

    let load = start_load(&setup);
    for k in 0..SWAPS {
        let policy = if k % 2 == 0 { &b } else { &a };
        std::thread::sleep(DWELL);
        swapper.swap(&setup.policy, policy.text.as_bytes(), TRIGGERS[k % 3], Regime::new(&module, policy));
    }
    std::thread::sleep(DWELL);
    let sent = load.finish();

    // The watcher sees the last write too and finds it serving: no news,
    // so the last reload shown stays the admin one.
    swapper.watcher_caught_up();
    let status = admin::processor(admin_port, PROCESSOR);
    let last = if SWAPS.is_multiple_of(2) { &a } else { &b };
    assert_eq!(status["policy"]["digest"], last.digest.as_str(), "{status:#}");
    assert_eq!(
        (&status["trigger"], &status["last_reload"]["trigger"]),
        (&json!("admin"), &json!("admin")),
        "{status:#}"
    );
    let metrics = admin::metrics(setup.ports[2]);
    for trigger in TRIGGERS {
        assert_eq!(reloads(&metrics, trigger, "applied"), (SWAPS / 3) as f64, "{trigger}\n{metrics}");
        assert_eq!(reloads(&metrics, trigger, "rejected"), 0.0, "{trigger}\n{metrics}");
    }
    let served = admin::metric(&metrics, "otel_audit_reload_seconds_count", &[("processor", PROCESSOR)]);
    assert_eq!(served, SWAPS as f64, "{metrics}");
    let swaps = swapper.swaps;
    let log = server.log().to_owned();
    assert!(server.stop().success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());

    let coverage = check_swaps(&setup, &startup, &swaps, &sent);
    // Each policy served some requests whole, and those were checked against it.
    assert!(coverage.windows_hit > SWAPS / 2, "{coverage:?}");
    verify(&setup);
    let elapsed: Vec<f64> = swaps.iter().map(|s| s.elapsed_ms).collect();
    eprintln!(
        "{SWAPS} swaps under load in {:.1} s: trigger to served p50 {:.1} ms, max {:.1} ms; {} requests ({} in a window, in {} of {} windows), {} records stored",
        began.elapsed().as_secs_f64(),
        percentile(elapsed.clone(), 0.5),
        percentile(elapsed, 1.0),
        coverage.requests,
        coverage.in_window,
        coverage.windows_hit,
        SWAPS + 1,
        coverage.records,
    );
}

/// One broken candidate of the rejection test.
struct Broken {
    what: &'static str,
    /// Which file it replaces: the module or the policy.
    module: bool,
    bytes: Vec<u8>,
    trigger: &'static str,
    /// What the reason must say.
    reason: String,
    /// Whether the chains record it: the watcher seeing the same refused
    /// files again (nothing else seen in between) is not news.
    recorded: bool,
    /// Whether the good file is put back afterwards.
    restore: bool,
}

#[test]
fn broken_candidates_are_rejected_and_recorded_while_the_old_one_serves_every_request() {
    let began = Instant::now();
    let trap = fixture_component("OTEL_AUDIT_WASM_TRAP_CONFIGURE", "target/wasm-fixtures/trap-in-configure.wasm");
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (Policy::keeping(&["a", "both"]), Policy::keeping(&["b", "both"]));
    let tests = tmp.path().join("processor/policy.test.yaml");
    std::fs::create_dir_all(tests.parent().unwrap()).unwrap();
    std::fs::write(
        &tests,
        "# What the trail must keep, whatever policy file is swapped in.\n\
         policy: policy.yaml\n\
         tests:\n\
         \x20 - name: a and both are kept, b and none are dropped\n\
         \x20   input:\n\
         \x20     spans:\n\
         \x20       - {name: op.a, attributes: {keep: a}}\n\
         \x20       - {name: op.both, attributes: {keep: both}}\n\
         \x20       - {name: op.b, attributes: {keep: b}}\n\
         \x20       - {name: op.none, attributes: {keep: none}}\n\
         \x20   expect:\n\
         \x20     kept: [op.a, op.both]\n\
         \x20     dropped: [op.b, op.none]\n",
    )
    .unwrap();
    let setup = hot_swap_setup(tmp.path(), &a, &format!("    tests: [{}]\n", tests.display()));
    let good_module = std::fs::read(&setup.module).unwrap();
    let module = sha256(&good_module);
    let server = setup.start();
    let (admin_port, metrics_port) = (setup.admin.unwrap(), setup.ports[2]);
    let startup = admin::processor(admin_port, PROCESSOR);
    let file_reloads =
        || admin::metric(&admin::metrics(metrics_port), "otel_audit_reloads_total", &[("trigger", "file")]);
    let mut garbage = vec![0u8; 4096];
    rand::rngs::StdRng::seed_from_u64(6).fill(&mut garbage[..]);
    let steps = [
        Broken {
            what: "invalid YAML",
            module: false,
            bytes: b"filter:\n\tspans: {}\n".to_vec(),
            trigger: "admin",
            reason: format!("policy {}: filter:", setup.policy.display()),
            recorded: true,
            restore: true,
        },
        Broken {
            what: "a valid policy that fails the policy tests",
            module: false,
            bytes: b.text.clone().into_bytes(),
            trigger: "file",
            reason: "policy tests failed (1 of 1)".into(),
            recorded: true,
            restore: false,
        },
        Broken {
            what: "the same failing policy written over it again",
            module: false,
            bytes: b.text.clone().into_bytes(),
            trigger: "file",
            reason: "policy tests failed (1 of 1)".into(),
            recorded: false,
            restore: true,
        },
        Broken {
            what: "a core wasm module",
            module: true,
            bytes: b"\0asm\x01\0\0\0".to_vec(),
            trigger: "signal",
            reason: "this is a core wasm module, not a component".into(),
            recorded: true,
            restore: true,
        },
        Broken {
            what: "random bytes",
            module: true,
            bytes: garbage,
            trigger: "admin",
            reason: "is not a usable audit processor component".into(),
            recorded: true,
            restore: true,
        },
        Broken {
            what: "a component that traps in configure",
            module: true,
            bytes: trap,
            trigger: "file",
            reason: "trapped in configure".into(),
            recorded: true,
            restore: true,
        },
        Broken {
            what: "invalid YAML",
            module: false,
            bytes: b"audit:\n  pipeline: \"unterminated\n".to_vec(),
            trigger: "signal",
            reason: format!("policy {}: audit.pipeline:", setup.policy.display()),
            recorded: true,
            restore: true,
        },
    ];

    let load = start_load(&setup);
    let mut recorded: Vec<(&Broken, BTreeMap<String, u64>)> = Vec::new();
    for step in &steps {
        std::thread::sleep(Duration::from_millis(300));
        let place = format!("{} ({})", step.what, step.trigger);
        let (file, good) = if step.module {
            (&setup.module, good_module.clone())
        } else {
            (&setup.policy, a.text.clone().into_bytes())
        };
        let before = admin::processor(admin_port, PROCESSOR)["last_reload"].clone();
        let file_rejections = reloads(&admin::metrics(metrics_port), "file", "rejected");
        write_atomically(file, &step.bytes);
        let report = match step.trigger {
            "admin" => {
                let (code, body) = admin::reload(admin_port, Some(PROCESSOR));
                assert_eq!(code, 422, "{place}: {body:#}");
                body["reloads"][0].clone()
            }
            trigger => {
                if trigger == "signal" {
                    server.signal("HUP");
                } else {
                    // The watcher counts a rejection even when it does not record it again.
                    let deadline = Instant::now() + SERVED_WITHIN;
                    while reloads(&admin::metrics(metrics_port), "file", "rejected") == file_rejections {
                        assert!(Instant::now() < deadline, "{place}: the watcher did not reload");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                let status = admin::wait_for(admin_port, PROCESSOR, SERVED_WITHIN, "showing the rejection", |s| {
                    s["last_reload"] != before
                });
                status["last_reload"].clone()
            }
        };
        assert_eq!(report["trigger"], step.trigger, "{place}: {report:#}");
        assert_eq!(report["result"], "rejected", "{place}: {report:#}");
        let reason = report["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(&step.reason), "{place}: the reason should say {:?}: {report:#}", step.reason);
        eprintln!("rejected {place}: {reason}");
        assert_eq!((&report["module_digest"], &report["policy_digest"]), (&json!(module), &json!(a.digest)), "{place}");
        let seqs: BTreeMap<String, u64> = report["chains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["chain"].as_str().unwrap().to_owned(), c["seq"].as_u64().expect("a seq per chain")))
            .collect();
        assert_eq!(seqs.len(), if step.recorded { 4 } else { 0 }, "{place}: chains that recorded it: {report:#}");
        if step.recorded {
            recorded.push((step, seqs));
        }
        // The old module and policy still serve, since start-up.
        let status = admin::processor(admin_port, PROCESSOR);
        for key in ["module", "policy", "since", "trigger"] {
            assert_eq!(status[key], startup[key], "{place}: {status:#}");
        }
        if !step.restore {
            continue;
        }
        // Put the good file back: the watcher finds it serving (unchanged).
        write_atomically(file, &good);
        let counted = file_reloads();
        let deadline = Instant::now() + SERVED_WITHIN;
        while file_reloads() <= counted {
            assert!(Instant::now() < deadline, "{place}: the watcher did not see the good file come back");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(DWELL);
    let sent = load.finish();
    let metrics = admin::metrics(metrics_port);
    for trigger in ["file", "signal", "admin"] {
        let expected = steps.iter().filter(|s| s.trigger == trigger).count();
        assert_eq!(reloads(&metrics, trigger, "rejected"), expected as f64, "{trigger}\n{metrics}");
        assert_eq!(reloads(&metrics, trigger, "applied"), 0.0, "{trigger}\n{metrics}");
    }
    let status = admin::processor(admin_port, PROCESSOR);
    assert_eq!(status["policy"], startup["policy"], "{status:#}");
    let log = server.log().to_owned();
    assert!(server.stop().success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());

    // Every chain recorded each rejection (chained by the old instance),
    // and otherwise kept exactly what policy A keeps.
    assert_none_failed(&sent);
    let chains = trail::read_store(&setup.store);
    assert_eq!(chains.len(), 4);
    let mut stored = HashMap::new();
    for chain in &chains {
        let mut rejections = recorded.iter();
        for i in 0..chain.records.len() {
            let place = format!("chain {} seq {i}", chain.id);
            assert_eq!(text(chain, i, "audit.policy.digest"), a.digest, "{place}: only policy A ever served");
            match chain.name(i) {
                Some(POLICY_REJECTED) => {
                    let (step, seqs) = rejections.next().unwrap_or_else(|| panic!("{place}: a rejection too many"));
                    let place = format!("{place} ({}, {})", step.what, step.trigger);
                    assert_eq!(seqs.get(&chain.id), Some(&(i as u64)), "{place}: the seq the report gave");
                    let key = |k: &str| format!("{POLICY_REJECTED}.{k}");
                    assert_eq!(text(chain, i, &key("processor")), PROCESSOR, "{place}");
                    assert_eq!(text(chain, i, &key("trigger")), step.trigger, "{place}");
                    assert!(text(chain, i, &key("reason")).contains(&step.reason), "{place}: {}", chain.records[i]);
                    assert_eq!(text(chain, i, &key("old_module_digest")), module, "{place}");
                    assert_eq!(text(chain, i, &key("old_policy_digest")), a.digest, "{place}");
                    let (candidate_module, candidate_policy) = if step.module {
                        (sha256(&step.bytes), a.digest.clone())
                    } else {
                        (module.clone(), sha256(&step.bytes))
                    };
                    assert_eq!(text(chain, i, &key("candidate_module_digest")), candidate_module, "{place}");
                    assert_eq!(text(chain, i, &key("candidate_policy_digest")), candidate_policy, "{place}");
                    let file = if step.module { &setup.module } else { &setup.policy };
                    let files = (step.trigger == "file").then(|| json!({"a": [{"s": file.display().to_string()}]}));
                    assert_eq!(chain.attr_value(i, &key("files")).cloned(), files, "{place}");
                    let record = &chain.records[i];
                    assert_eq!(record["resource"]["attributes"]["service.name"]["s"], "otel-audit", "{place}");
                }
                Some(POLICY_CHANGE) => panic!("{place}: a broken candidate was applied: {}", chain.records[i]),
                _ => {
                    let tag = text(chain, i, "keep").to_owned();
                    assert!(a.keeps.contains(&tag.as_str()), "{place}: policy A drops keep={tag}");
                    stored.insert(chain.item(i).unwrap()["span_id"].as_str().unwrap().to_owned(), tag);
                }
            }
        }
        assert!(rejections.next().is_none(), "chain {}: a recorded rejection is missing", chain.id);
    }
    for request in &sent {
        for (id, tag) in &request.records {
            let kept = a.keeps.contains(tag);
            assert_eq!(
                stored.contains_key(id),
                kept,
                "acknowledged {id} keep={tag}: {}",
                if kept { "missing" } else { "stored" }
            );
        }
    }
    verify(&setup);
    eprintln!(
        "{} broken candidates rejected under load in {:.1} s; {} requests, {} records stored",
        steps.len(),
        began.elapsed().as_secs_f64(),
        sent.len(),
        stored.len()
    );
}

#[test]
fn swapping_the_wasm_itself_changes_what_is_kept_and_is_recorded_like_a_policy_change() {
    let began = Instant::now();
    let keep_all = fixture_component("OTEL_AUDIT_WASM_KEEP_ALL", "target/wasm-fixtures/keep-all.wasm");
    let tmp = tempfile::tempdir().unwrap();
    let a = Policy::keeping(&["a", "both"]);
    let setup = hot_swap_setup(tmp.path(), &a, "");
    let original = std::fs::read(&setup.module).unwrap();
    assert_ne!(sha256(&original), sha256(&keep_all), "the keep-all fixture is a different component");
    let startup = Regime::new(&sha256(&original), &a);
    let keeping_all = Regime { module: sha256(&keep_all), keeps: TAGS.to_vec(), ..startup.clone() };
    let server = setup.start();
    let mut swapper = Swapper::new(&setup, &server);
    let load = start_load(&setup);
    let swaps = [
        (&keep_all, "file", &keeping_all),
        (&original, "admin", &startup),
        (&keep_all, "signal", &keeping_all),
        (&original, "file", &startup),
    ];
    for (bytes, trigger, regime) in swaps {
        std::thread::sleep(Duration::from_millis(500));
        swapper.swap(&setup.module, bytes, trigger, regime.clone());
    }
    std::thread::sleep(Duration::from_millis(500));
    let sent = load.finish();
    let metrics = admin::metrics(setup.ports[2]);
    for trigger in ["file", "signal", "admin"] {
        let expected = swaps.iter().filter(|s| s.1 == trigger).count();
        assert_eq!(reloads(&metrics, trigger, "applied"), expected as f64, "{trigger}\n{metrics}");
    }
    let swaps = swapper.swaps;
    let log = server.log().to_owned();
    assert!(server.stop().success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());

    let coverage = check_swaps(&setup, &startup, &swaps, &sent);
    // While the keep-all component served, what the policy drops was stored;
    // before and after, it was not (check_swaps checked each record).
    for run in [1, 3] {
        for tag in ["b", "none"] {
            assert!(
                coverage.kept[run].get(tag).is_some_and(|n| *n > 0),
                "run {run}: no keep={tag} stored: {coverage:?}"
            );
        }
    }
    assert_eq!(coverage.windows_hit, swaps.len() + 1, "{coverage:?}");
    verify(&setup);
    eprintln!(
        "module swapped {} times under load in {:.1} s: {} requests ({} in a window), stored by run {:?}",
        swaps.len(),
        began.elapsed().as_secs_f64(),
        coverage.requests,
        coverage.in_window,
        coverage.kept
    );
}

#[test]
fn the_status_and_reload_commands_show_and_swap_what_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (Policy::keeping(&["a", "both"]), Policy::keeping(&["b", "both"]));
    let mut setup = hot_swap_setup(tmp.path(), &a, "");
    let secret = tmp.path().join("processor/k1.key");
    std::fs::write(&secret, b"hot-swap-test-hmac-key-k1-0123456").unwrap();
    // Only the commands reload here: a change to the files alone is not picked up.
    setup.processor_extra =
        format!("    secrets:\n      k1: {{file: {}}}\n    reload: {{watch: false}}\n", secret.display());
    let module = sha256(&std::fs::read(&setup.module).unwrap());
    let server = setup.start();
    let address = format!("127.0.0.1:{}", setup.admin.unwrap());
    let cli = |args: &[&str]| Command::new(binary()).args(args).args(["--admin", &address]).output().unwrap();

    let out = cli(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        PROCESSOR.to_owned(),
        format!("module  {module}  {}", setup.module.display()),
        format!("policy  {}  {}", a.digest, setup.policy.display()),
        "(startup)".to_owned(),
        "test/traces/audit/0, test/traces/audit/1, test/logs/audit/0, test/logs/audit/1".to_owned(),
        "last reload  none".to_owned(),
    ] {
        assert!(text.contains(&needle), "status should show {needle:?}:\n{text}");
    }
    let out = cli(&["status", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json, admin::status(setup.admin.unwrap()), "--format json prints GET /admin/status");

    // Nothing changed: exit 0.
    let out = cli(&["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{PROCESSOR}  ")) && stdout(&out).contains("admin: unchanged"),
        "{}",
        stdout(&out)
    );

    // Watching is off: writing policy B changes nothing until a reload.
    write_atomically(&setup.policy, b.text.as_bytes());
    std::thread::sleep(DEBOUNCE + Duration::from_millis(500));
    assert_eq!(admin::processor(setup.admin.unwrap(), PROCESSOR)["policy"]["digest"], a.digest.as_str());
    let out = cli(&["reload", "--processor", PROCESSOR]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("admin: applied"), "{}", stdout(&out));
    let text = stdout(&cli(&["status"]));
    for needle in
        [format!("policy  {}  ", b.digest), "(admin)".into(), "last reload  ".into(), "admin: applied in ".into()]
    {
        assert!(text.contains(&needle), "status should show {needle:?}:\n{text}");
    }

    // A broken policy: exit 1, the reason shown; B still serves.
    write_atomically(&setup.policy, b"filter:\n\tspans: {}\n");
    let out = cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("admin: rejected in "), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("policy {}:", setup.policy.display())), "{}", stdout(&out));
    assert!(stderr(&out).contains("rejected"), "{}", stderr(&out));
    let text = stdout(&cli(&["status"]));
    assert!(text.contains(&format!("policy  {}  ", b.digest)), "{text}");
    assert!(
        text.contains("admin: rejected in ") && text.contains(&format!("policy {}:", setup.policy.display())),
        "{text}"
    );
    let out = cli(&["reload", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["reloads"][0]["result"], "rejected", "{json:#}");

    // An unknown processor, and no server at all: exit 2.
    let out = cli(&["reload", "--processor", "wasm/nope"]);
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("no processor `wasm/nope`"), "{}", stderr(&out));
    let nobody = format!("127.0.0.1:{}", free_port());
    let out = Command::new(binary()).args(["status", "--admin", &nobody]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach the admin endpoint"), "{}", stderr(&out));

    let (code, body) = admin::reload(setup.admin.unwrap(), Some("wasm/nope"));
    assert_eq!(code, 404, "{body:#}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains(PROCESSOR)), "names the processors there are: {body:#}");

    // Policy B back, and a new key under the same id: a change of the
    // secrets alone is a change too, with the same digests.
    write_atomically(&setup.policy, b.text.as_bytes());
    write_atomically(&secret, b"hot-swap-test-hmac-key-k1-rotated");
    let out = cli(&["reload", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let report = &json["reloads"][0];
    assert_eq!((&report["result"], &report["policy_digest"]), (&json!("applied"), &json!(b.digest)), "{json:#}");

    let metrics = admin::metrics(setup.ports[2]);
    assert_eq!(reloads(&metrics, "admin", "applied"), 2.0, "{metrics}");
    assert_eq!(reloads(&metrics, "admin", "rejected"), 2.0, "{metrics}");
    assert_eq!(reloads(&metrics, "admin", "unchanged"), 1.0, "{metrics}");
    assert_eq!(reloads(&metrics, "file", "unchanged") + reloads(&metrics, "file", "applied"), 0.0, "{metrics}");
    assert!(server.stop().success());

    // What the commands did is in every chain: B applied, two rejections, the new key.
    let chains = trail::read_store(&setup.store);
    assert_eq!(chains.len(), 4);
    for chain in &chains {
        let names: Vec<&str> = (0..chain.records.len()).map(|i| chain.name(i).unwrap()).collect();
        assert_eq!(names, [POLICY_CHANGE, POLICY_REJECTED, POLICY_REJECTED, POLICY_CHANGE], "chain {}", chain.id);
        let attr = |i: usize, key: &str| chain.attr_value(i, key).cloned().unwrap_or(Value::Null);
        let change = |key: &str| format!("{POLICY_CHANGE}.{key}");
        assert_eq!(attr(0, &change("new_policy_digest")), json!({"s": b.digest}), "chain {}", chain.id);
        assert_eq!(attr(0, &change("secrets_changed")), json!({"b": false}), "chain {}", chain.id);
        assert_eq!(attr(1, &format!("{POLICY_REJECTED}.trigger")), json!({"s": "admin"}), "chain {}", chain.id);
        for key in ["old_policy_digest", "new_policy_digest"] {
            assert_eq!(attr(3, &change(key)), json!({"s": b.digest}), "chain {}: {key}", chain.id);
        }
        for key in ["old_module_digest", "new_module_digest"] {
            assert_eq!(attr(3, &change(key)), json!({"s": module}), "chain {}: {key}", chain.id);
        }
        assert_eq!(attr(3, &change("secrets_changed")), json!({"b": true}), "chain {}", chain.id);
    }
    verify(&setup);
}

#[test]
fn changes_that_would_break_verify_are_refused_and_a_restart_records_what_changed_while_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("processor");
    let keyed = |policy: &Policy, key: &str| {
        let text = format!("{}  chain: {{key_id: {key}}}\n", policy.text);
        Policy { digest: sha256(text.as_bytes()), text, keeps: policy.keeps.clone() }
    };
    let (a, b) = (Policy::keeping(&["a", "both"]), Policy::keeping(&["b", "both"]));
    let (a_k1, a_k2) = (keyed(&a, "k1"), keyed(&a, "k2"));
    let mut setup = hot_swap_setup(tmp.path(), &a_k1, "");
    let (k1, k2) = (keys.join("k1.key"), keys.join("k2.key"));
    std::fs::write(&k1, b"hot-swap-test-hmac-key-k1-0123456").unwrap();
    std::fs::write(&k2, b"hot-swap-test-hmac-key-k2-0123456").unwrap();
    setup.processor_extra = format!(
        "    secrets:\n      k1: {{file: {}}}\n      k2: {{file: {}}}\n    reload: {{watch: false}}\n",
        k1.display(),
        k2.display()
    );
    let server = setup.start();
    let port = setup.admin.unwrap();
    let load = start_load(&setup);
    let refused = |what: &str, needle: &str, serving: &Policy| {
        let (code, body) = admin::reload(port, None);
        assert_eq!(code, 422, "{what}: {body:#}");
        let reason = body["reloads"][0]["reason"].as_str().unwrap_or_default().to_owned();
        assert!(reason.contains(needle), "{what}: the reason should say {needle:?}: {reason}");
        assert_eq!(admin::processor(port, PROCESSOR)["policy"]["digest"], serving.digest.as_str(), "{what}");
    };

    // The chain key's bytes changed under its id: records MACed before and
    // after could not both be verified.
    std::fs::write(&k1, b"hot-swap-test-hmac-key-k1-rotated").unwrap();
    refused("new bytes for k1", "has other bytes than", &a_k1);
    std::fs::write(&k1, b"hot-swap-test-hmac-key-k1-0123456").unwrap();
    // A keyed chain losing its key: verify would report a MAC downgrade.
    write_atomically(&setup.policy, a.text.as_bytes());
    refused("no key_id", "downgrade", &a_k1);
    // A component that cannot chain the swap's own record: every chain
    // would refuse requests until it could, so it never passes the gate.
    let component = std::fs::read(&setup.module).unwrap();
    write_atomically(
        &setup.module,
        &fixture_component("OTEL_AUDIT_WASM_NO_CHAIN_EVENTS", "target/wasm-fixtures/no-chain-events.wasm"),
    );
    write_atomically(&setup.policy, a_k1.text.as_bytes());
    refused("no chain-events", "cannot record the swap (chain-events)", &a_k1);
    write_atomically(&setup.module, &component);
    // Rotating to a new key id is the way.
    write_atomically(&setup.policy, a_k2.text.as_bytes());
    let (code, body) = admin::reload(port, None);
    assert_eq!((code, &body["reloads"][0]["result"]), (200, &json!("applied")), "{body:#}");
    // ...and k1 may not come back with other bytes: records under either
    // could not be verified.
    std::fs::write(&k1, b"hot-swap-test-hmac-key-k1-rotated").unwrap();
    write_atomically(&setup.policy, a_k1.text.as_bytes());
    refused("k1 back with new bytes", "has other bytes than", &a_k2);
    std::fs::write(&k1, b"hot-swap-test-hmac-key-k1-0123456").unwrap();
    write_atomically(&setup.policy, a_k2.text.as_bytes());
    assert_none_failed(&load.finish());
    assert!(server.stop().success());

    // While it is stopped, the policy changes: to an unkeyed one, which the
    // chains cannot take (a MAC downgrade); then to a keyed one.
    write_atomically(&setup.policy, b.text.as_bytes());
    let out = Command::new(binary())
        .args(["serve", "--config"])
        .arg(tmp.path().join("otel-audit.yaml"))
        .env("OTEL_AUDIT_CACHE_DIR", support::cache_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("MAC downgrade"), "{}", stderr(&out));
    let b = keyed(&b, "k2");
    write_atomically(&setup.policy, b.text.as_bytes());
    let server = setup.start();
    assert_eq!(admin::processor(port, PROCESSOR)["trigger"], "startup");
    let load = start_load(&setup);
    assert_none_failed(&load.finish());
    assert!(server.stop().success());

    let chains = trail::read_store(&setup.store);
    assert_eq!(chains.len(), 4);
    for chain in &chains {
        let changes: Vec<usize> = (0..chain.records.len()).filter(|i| chain.name(*i) == Some(POLICY_CHANGE)).collect();
        let [rotation, restart] = changes[..] else {
            panic!("chain {}: two policy changes, got {changes:?}", chain.id)
        };
        let attr = |i: usize, key: &str| chain.attr_value(i, &format!("{POLICY_CHANGE}.{key}")).cloned();
        assert_eq!(attr(rotation, "new_policy_digest"), Some(json!({"s": a_k2.digest})), "chain {}", chain.id);
        assert_eq!(attr(restart, "trigger"), Some(json!({"s": "startup"})), "chain {}", chain.id);
        assert_eq!(attr(restart, "old_policy_digest"), Some(json!({"s": a_k2.digest})), "chain {}", chain.id);
        assert_eq!(attr(restart, "new_policy_digest"), Some(json!({"s": b.digest})), "chain {}", chain.id);
        // Each record names the policy in force: A with k1, A with k2
        // from the rotation on, B from the restart on.
        for i in 0..chain.records.len() {
            let expected = if i < rotation {
                &a_k1.digest
            } else if i < restart {
                &a_k2.digest
            } else {
                &b.digest
            };
            assert_eq!(text(chain, i, "audit.policy.digest"), expected, "chain {} record {i}", chain.id);
        }
        assert!(chain.records.len() > restart + 1, "chain {}: records after the restart", chain.id);
    }

    // A store without serving.json (written by an older version, or the
    // file lost): the newest record says which policy processed it, so a
    // change is still recorded (the old module is unknown).
    for chain in &chains {
        std::fs::remove_file(chain.dir.join("serving.json")).unwrap();
    }
    write_atomically(&setup.policy, a_k2.text.as_bytes());
    let server = setup.start();
    assert!(server.stop().success());
    for chain in trail::read_store(&setup.store) {
        let last = chain.records.len() - 1;
        let attr = |key: &str| chain.attr_value(last, &format!("{POLICY_CHANGE}.{key}")).cloned();
        assert_eq!(chain.name(last), Some(POLICY_CHANGE), "chain {}", chain.id);
        assert_eq!(attr("trigger"), Some(json!({"s": "startup"})), "chain {}", chain.id);
        assert_eq!(attr("old_policy_digest"), Some(json!({"s": b.digest})), "chain {}", chain.id);
        assert_eq!(attr("new_policy_digest"), Some(json!({"s": a_k2.digest})), "chain {}", chain.id);
        assert_eq!(attr("old_module_digest"), Some(json!({"s": ""})), "chain {}", chain.id);
    }
    // Both keys verify the whole trail.
    let out = Command::new(binary())
        .arg("verify")
        .arg(&setup.store)
        .arg("--public-key")
        .arg(setup.public_key())
        .arg("--hmac-key")
        .arg(format!("k1={}", k1.display()))
        .arg("--hmac-key")
        .arg(format!("k2={}", k2.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "verify: {}{}", stdout(&out), stderr(&out));
}
