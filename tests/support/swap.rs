//! Hot swaps driven and checked the way an operator and an auditor would:
//! two policies that keep different records (the load tags every record
//! `keep=a|b|both|none`; policy A keeps a and both, B keeps b and both,
//! neither keeps none), the writes and triggers of each swap with their
//! times, and the check of the trail they leave against those times.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otel_audit::otlp::Signal;
use prost::Message;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::admin;
use super::load::{Load, Request, Sent};
use super::server::{Server, Setup, binary, free_port};
use super::trail::{self, Chain};

/// The processor of [`Setup`]'s config.
pub const PROCESSOR: &str = "wasm/audit";
/// The span name / log event name of an applied swap's record.
pub const POLICY_CHANGE: &str = "audit.policy_change";
/// The span name / log event name of a rejected candidate's record.
pub const POLICY_REJECTED: &str = "audit.policy_rejected";
/// The values of the `keep` attribute the load tags its records with.
pub const TAGS: [&str; 4] = ["a", "b", "both", "none"];

/// The watcher's quiet time. A signal or admin trigger follows its file
/// write within milliseconds, so with a second of debounce it always
/// reaches the server first, and the watcher, when it fires, finds what
/// it sees already serving (`unchanged`: no record, no new last reload).
/// [`Swapper::quiet_watcher`] covers the one way it could still lose: an
/// earlier write whose debounce is about to run out.
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// Each load client's pause between two requests.
pub const PAUSE: Duration = Duration::from_millis(10);
/// How long a reload may take (a first compile of a fixture on two busy
/// cores included) before the test fails.
pub const SERVED_WITHIN: Duration = Duration::from_secs(90);

// ------------------------------------------------------------ what is swapped

/// `sha256:<hex>`, as the server writes module and policy digests.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A policy keeping the records whose `keep` attribute is one of `keeps`.
pub struct Policy {
    pub text: String,
    pub digest: String,
    pub keeps: Vec<&'static str>,
}

impl Policy {
    pub fn keeping(keeps: &[&'static str]) -> Policy {
        let alternatives = keeps.join("|");
        let text = format!(
            "# Keeps the records tagged keep={alternatives}.\n\
             filter:\n  spans:\n    include:\n      match_type: regexp\n      attributes:\n\
             \x20       - {{key: keep, value: \"^({alternatives})$\"}}\n\
             \x20 logs:\n    include:\n      match_type: regexp\n      record_attributes:\n\
             \x20       - {{key: keep, value: \"^({alternatives})$\"}}\n\
             audit:\n  pipeline: hot-swap-test\n"
        );
        Policy { digest: sha256(text.as_bytes()), text, keeps: keeps.to_vec() }
    }
}

/// What serves the processor between two swaps, and which tags it keeps.
#[derive(Clone, Debug)]
pub struct Regime {
    pub module: String,
    pub policy: String,
    pub keeps: Vec<&'static str>,
}

impl Regime {
    pub fn new(module: &str, policy: &Policy) -> Regime {
        Regime { module: module.to_owned(), policy: policy.digest.clone(), keeps: policy.keeps.clone() }
    }
}

/// A test-only component (`make fixtures`) named by `var`, as the Makefile
/// exports it. Missing is a failure, never a skip.
pub fn fixture_component(var: &str, default: &str) -> Vec<u8> {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| super::root().join(default));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "the test-only component {} (${var}) cannot be read ({e}): build it with `make fixtures`",
            path.display()
        )
    })
}

/// Replaces `path` the way deploys and editors do: a temporary file beside
/// it, renamed over it. Returns the instant just before the rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Instant {
    let temporary = path.with_file_name(format!("{}.tmp", path.file_name().unwrap().to_string_lossy()));
    std::fs::write(&temporary, bytes).unwrap();
    let renamed = Instant::now();
    std::fs::rename(&temporary, path).unwrap();
    renamed
}

/// A server with two shards per pipeline (traces and logs: four chains,
/// all served by the one processor) and the admin endpoint, whose
/// processor runs a copy of the component with `policy`, both in
/// `dir/processor/` (watched, with [`DEBOUNCE`]); `extra` adds processor keys.
pub fn hot_swap_setup(dir: &Path, policy: &Policy, extra: &str) -> Setup {
    let mut setup = Setup::new(dir);
    let files = dir.join("processor");
    std::fs::create_dir_all(&files).unwrap();
    setup.module = files.join("audit.wasm");
    std::fs::copy(super::wasm_path(), &setup.module).unwrap();
    setup.policy = files.join("policy.yaml");
    std::fs::write(&setup.policy, &policy.text).unwrap();
    setup.shards = 2;
    setup.segment_size = "1MiB".into();
    setup.admin = Some(free_port());
    setup.processor_extra = format!("    reload: {{watch: true, debounce: {}ms}}\n{extra}", DEBOUNCE.as_millis());
    setup
}

// ------------------------------------------------------------ load

/// Request `n` of `client`: six records, one of each tag and two more,
/// every fourth request log records, the others spans; each record's span
/// id is unique and names it.
pub fn tagged_request(client: u64, n: u64) -> Request {
    let mut rng = rand::rngs::StdRng::seed_from_u64(client << 32 | n);
    let mut tags: Vec<&'static str> = TAGS.to_vec();
    tags.extend((0..2).map(|_| TAGS[rng.random_range(0..TAGS.len())]));
    let records: Vec<(u64, &'static str)> =
        tags.into_iter().enumerate().map(|(i, tag)| ((client + 1) << 56 | n << 8 | i as u64, tag)).collect();
    let text = |s: &str| Some(AnyValue { value: Some(any_value::Value::StringValue(s.into())) });
    let keep = |tag: &str| vec![KeyValue { key: "keep".into(), value: text(tag), ..Default::default() }];
    let resource = Some(Resource {
        attributes: vec![KeyValue { key: "service.name".into(), value: text("hot-swap-load"), ..Default::default() }],
        ..Default::default()
    });
    let scope = Some(InstrumentationScope { name: "hot-swap-load".into(), ..Default::default() });
    let trace_id = [(client + 1).to_be_bytes(), n.to_be_bytes()].concat();
    let (signal, payload) = if n % 4 == 3 {
        let log_records = records
            .iter()
            .map(|(id, tag)| LogRecord {
                time_unix_nano: 1_795_000_000_000_000_000 + n,
                severity_number: 9,
                body: text(&format!("record {tag}")),
                attributes: keep(tag),
                trace_id: trace_id.clone(),
                span_id: id.to_be_bytes().to_vec(),
                ..Default::default()
            })
            .collect();
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource,
                scope_logs: vec![ScopeLogs { scope, log_records, ..Default::default() }],
                ..Default::default()
            }],
        };
        (Signal::Logs, request.encode_to_vec())
    } else {
        let spans = records
            .iter()
            .map(|(id, tag)| Span {
                trace_id: trace_id.clone(),
                span_id: id.to_be_bytes().to_vec(),
                name: format!("op.{tag}"),
                attributes: keep(tag),
                ..Default::default()
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource,
                scope_spans: vec![ScopeSpans { scope, spans, ..Default::default() }],
                ..Default::default()
            }],
        };
        (Signal::Traces, request.encode_to_vec())
    };
    let records = records.into_iter().map(|(id, tag)| (hex::encode(id.to_be_bytes()), tag)).collect();
    Request { signal, payload: Bytes::from(payload), records }
}

/// Four clients sending [`tagged_request`]s, once they get answers.
pub fn start_load(setup: &Setup) -> Load {
    let load = Load::start(setup, 4, PAUSE, Arc::new(tagged_request));
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.answered() < 20 {
        assert!(Instant::now() < deadline, "the load clients got no answers in 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    load
}

// ------------------------------------------------------------ swapping

/// One applied swap, as the test made it.
pub struct Swap {
    pub trigger: &'static str,
    /// The file written.
    pub file: PathBuf,
    /// What serves afterwards.
    pub regime: Regime,
    /// Just before the file was written.
    pub triggered: Instant,
    /// Once the server said every chain serves it.
    pub applied: Instant,
    /// Each chain's seq of its `audit.policy_change` record, from the report.
    pub seqs: BTreeMap<String, u64>,
    /// Trigger to served, as the server measured it.
    pub elapsed_ms: f64,
}

/// Writes candidates and triggers their reloads, remembering each swap.
pub struct Swapper<'a> {
    pub server: &'a Server,
    pub admin: u16,
    pub metrics: u16,
    pub chains: Vec<String>,
    /// When the last file was written, and the file-triggered reloads
    /// counted right after.
    pub last_write: Option<(Instant, f64)>,
    pub swaps: Vec<Swap>,
}

impl<'a> Swapper<'a> {
    pub fn new(setup: &Setup, server: &'a Server) -> Self {
        let admin = setup.admin.unwrap();
        let mut chains: Vec<String> = admin::processor(admin, PROCESSOR)["chains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        chains.sort();
        Swapper { server, admin, metrics: setup.ports[2], chains, last_write: None, swaps: Vec::new() }
    }

    /// Reloads the watcher has run so far (any result).
    pub fn file_reloads(&self) -> f64 {
        admin::metric(&admin::metrics(self.metrics), "otel_audit_reloads_total", &[("trigger", "file")])
    }

    /// Writes `bytes` to `file` and has the server reload by `trigger`,
    /// expecting `to` to serve afterwards on every chain.
    pub fn swap(&mut self, file: &Path, bytes: &[u8], trigger: &'static str, to: Regime) {
        if trigger != "file" {
            self.quiet_watcher();
        }
        let triggered = Instant::now();
        write_atomically(file, bytes);
        self.last_write = Some((Instant::now(), self.file_reloads()));
        let report = match trigger {
            "admin" => {
                let (code, body) = admin::reload(self.admin, Some(PROCESSOR));
                assert_eq!(code, 200, "POST /admin/reload after writing {}: {body:#}", file.display());
                body["reloads"][0].clone()
            }
            "signal" | "file" => {
                if trigger == "signal" {
                    self.server.signal("HUP");
                }
                // The server updates what serves and the last reload one
                // after the other, so a status can show the new digests
                // with the previous reload's report for a moment: wait
                // for both.
                let status = admin::wait_for(self.admin, PROCESSOR, SERVED_WITHIN, "serving the candidate", |s| {
                    let (last, serving) = (&s["last_reload"], [&s["module"]["digest"], &s["policy"]["digest"]]);
                    let served = [&last["module_digest"], &last["policy_digest"]];
                    serving == [to.module.as_str(), to.policy.as_str()] && served == serving
                });
                assert_eq!(
                    status["trigger"],
                    trigger,
                    "swap {} was applied by another trigger than the one the test used: {status:#}",
                    self.swaps.len() + 1
                );
                status["last_reload"].clone()
            }
            other => panic!("no trigger {other}"),
        };
        let applied = Instant::now();
        let place = format!("swap {} ({trigger}, {})", self.swaps.len() + 1, file.display());
        assert_eq!(report["processor"], PROCESSOR, "{place}: {report:#}");
        assert_eq!(report["trigger"], trigger, "{place}: {report:#}");
        assert_eq!(report["result"], "applied", "{place}: {report:#}");
        assert_eq!(report["module_digest"], to.module.as_str(), "{place}: {report:#}");
        assert_eq!(report["policy_digest"], to.policy.as_str(), "{place}: {report:#}");
        assert!(report.get("reason").is_none(), "{place}: {report:#}");
        let seqs: BTreeMap<String, u64> = report["chains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                assert!(c.get("error").is_none(), "{place}: {report:#}");
                (c["chain"].as_str().unwrap().to_owned(), c["seq"].as_u64().expect("a seq per chain"))
            })
            .collect();
        assert_eq!(seqs.keys().cloned().collect::<Vec<_>>(), self.chains, "{place}: every chain records it");
        let elapsed_ms = report["elapsed_ms"].as_f64().unwrap();
        self.swaps.push(Swap { trigger, file: file.to_owned(), regime: to, triggered, applied, seqs, elapsed_ms });
    }

    /// Makes sure the watcher cannot fire for an earlier write between the
    /// next write and its signal or admin trigger. It fires `DEBOUNCE`
    /// after the last write it saw: if that write was less than half a
    /// debounce ago, the next write postpones it by a whole debounce;
    /// otherwise wait until it has fired and its reload is counted.
    pub fn quiet_watcher(&self) {
        if let Some((at, _)) = self.last_write
            && at.elapsed() >= DEBOUNCE / 2
        {
            self.watcher_caught_up();
        }
    }

    /// Waits until the watcher has reloaded after the last write.
    pub fn watcher_caught_up(&self) {
        let Some((at, counted)) = self.last_write else { return };
        std::thread::sleep((at + DEBOUNCE).saturating_duration_since(Instant::now()));
        let deadline = Instant::now() + SERVED_WITHIN;
        while self.file_reloads() <= counted {
            assert!(Instant::now() < deadline, "the watcher never reloaded after the last write");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ------------------------------------------------------------ checking the trail

/// A stored record of the load: where it is, and the run (of its chain,
/// counted in `audit.policy_change` records before it) it is in.
pub struct Stored {
    pub chain: usize,
    pub run: usize,
}

/// What a check of swaps under load covered, for the report.
#[derive(Debug, Default)]
pub struct Coverage {
    pub requests: usize,
    pub records: usize,
    /// Requests sent after a swap was applied and answered before the next.
    pub in_window: usize,
    /// Runs with at least one such request.
    pub windows_hit: usize,
    /// Per run: stored records by tag, over all chains.
    pub kept: Vec<BTreeMap<&'static str, usize>>,
}

/// The one run a request belongs to by time alone: sent once swap k was
/// applied and answered before swap k+1 was triggered.
pub fn window(request: &Sent, swaps: &[Swap]) -> Option<usize> {
    (0..=swaps.len()).find(|&k| {
        (k == 0 || request.sent >= swaps[k - 1].applied) && (k == swaps.len() || request.answered < swaps[k].triggered)
    })
}

/// A string attribute the record must have.
pub fn text<'v>(chain: &'v Chain, i: usize, key: &str) -> &'v str {
    chain.attr(i, key).unwrap_or_else(|| panic!("chain {} seq {i}: no string attribute {key}", chain.id))
}

/// Checks an `audit.policy_change` record (record `i` of `chain`) against
/// the swap the test made and what served before.
pub fn check_change(chain: &Chain, i: usize, swap: &Swap, before: &Regime) {
    let place = format!("chain {} seq {i}", chain.id);
    let record = &chain.records[i];
    assert_eq!(chain.name(i), Some(POLICY_CHANGE), "{place}");
    assert_eq!(record["resource"]["attributes"]["service.name"]["s"], "otel-audit", "{place}: {record}");
    assert_eq!(record["scope"]["name"], "otel-audit", "{place}: {record}");
    let key = |k: &str| format!("{POLICY_CHANGE}.{k}");
    assert_eq!(text(chain, i, &key("processor")), PROCESSOR, "{place}");
    assert_eq!(text(chain, i, &key("trigger")), swap.trigger, "{place}: the swaps' triggers, in order");
    assert_eq!(text(chain, i, &key("old_module_digest")), before.module, "{place}");
    assert_eq!(text(chain, i, &key("old_policy_digest")), before.policy, "{place}");
    assert_eq!(text(chain, i, &key("new_module_digest")), swap.regime.module, "{place}");
    assert_eq!(text(chain, i, &key("new_policy_digest")), swap.regime.policy, "{place}");
    assert_eq!(chain.attr_value(i, &key("secrets_changed")), Some(&json!({"b": false})), "{place}");
    let files = (swap.trigger == "file").then(|| json!({"a": [{"s": swap.file.display().to_string()}]}));
    assert_eq!(chain.attr_value(i, &key("files")).cloned(), files, "{place}");
    // Chained by the new instance: the first record with the new digest.
    assert_eq!(text(chain, i, "audit.policy.digest"), swap.regime.policy, "{place}");
    assert_eq!(Some(&(i as u64)), swap.seqs.get(&chain.id), "{place}: the seq the reload report gave");
}

/// Everything swaps under load must leave behind: no failed request; per
/// chain, one `audit.policy_change` per swap, in order, at the seq the
/// reload reported, and between two of them every record carries the
/// digest of the policy that change put in force and is one that policy
/// (and module) keeps; every acknowledged request was processed whole by
/// one of them, which kept exactly the records it keeps (so nothing
/// acknowledged is missing); and a request sent after swap k was applied
/// and answered before swap k+1 was triggered was processed by swap k's.
pub fn check_swaps(setup: &Setup, startup: &Regime, swaps: &[Swap], sent: &[Sent]) -> Coverage {
    assert_none_failed(sent);
    let regimes: Vec<&Regime> = std::iter::once(startup).chain(swaps.iter().map(|s| &s.regime)).collect();
    let chains = trail::read_store(&setup.store);
    assert_eq!(chains.len(), 2 * setup.shards as usize, "{:?}", chains.iter().map(|c| &c.id).collect::<Vec<_>>());
    let mut stored: HashMap<String, Stored> = HashMap::new();
    let mut coverage = Coverage { kept: vec![BTreeMap::new(); regimes.len()], ..Coverage::default() };
    for (index, chain) in chains.iter().enumerate() {
        let mut run = 0;
        for i in 0..chain.records.len() {
            let place = format!("chain {} seq {i}", chain.id);
            match chain.name(i) {
                Some(POLICY_CHANGE) => {
                    assert!(run < swaps.len(), "{place}: more policy changes than the {} swaps", swaps.len());
                    check_change(chain, i, &swaps[run], regimes[run]);
                    run += 1;
                }
                Some(POLICY_REJECTED) => {
                    panic!("{place}: a rejection, but every candidate was good: {}", chain.records[i])
                }
                _ => {
                    let regime = regimes[run];
                    let digest = text(chain, i, "audit.policy.digest");
                    assert_eq!(
                        digest,
                        regime.policy,
                        "{place}: the policy in force here is the one of the policy_change at seq {:?}",
                        swaps.get(run.wrapping_sub(1)).map(|s| s.seqs[&chain.id])
                    );
                    let tag = TAGS.iter().find(|t| **t == text(chain, i, "keep")).unwrap();
                    assert!(regime.keeps.contains(tag), "{place}: keep={tag} is stored, but {regime:?} drops it");
                    let id = chain.item(i).unwrap()["span_id"].as_str().unwrap().to_owned();
                    assert!(stored.insert(id, Stored { chain: index, run }).is_none(), "{place}: stored twice");
                    *coverage.kept[run].entry(tag).or_default() += 1;
                    coverage.records += 1;
                }
            }
        }
        assert_eq!(run, swaps.len(), "chain {}: one policy_change per swap", chain.id);
    }

    let mut windows = vec![0usize; regimes.len()];
    for request in sent {
        let ids: Vec<String> = request.records.iter().map(|(id, tag)| format!("{id}={tag}")).collect();
        let place =
            format!("a {} {:?} request of client {} ({ids:?})", request.protocol, request.signal, request.client);
        let mut runs: Vec<(usize, usize)> =
            request.records.iter().filter_map(|(id, _)| stored.get(id)).map(|s| (s.chain, s.run)).collect();
        runs.dedup();
        assert!(runs.len() <= 1, "{place} was processed in several places: {runs:?}");
        let Some(&(_, run)) = runs.first() else {
            panic!("{place} was acknowledged, but none of its records is stored (not even keep=both)")
        };
        for (id, tag) in &request.records {
            let keeps = regimes[run].keeps.contains(tag);
            assert_eq!(
                stored.contains_key(id),
                keeps,
                "{place}: record {id} (keep={tag}) processed by {:?}: {}",
                regimes[run],
                if keeps { "acknowledged but missing" } else { "stored though that policy drops it" }
            );
        }
        if let Some(k) = window(request, swaps) {
            assert_eq!(
                run, k,
                "{place} was sent after swap {k} served and answered before the next, but processed by run {run}"
            );
            windows[k] += 1;
            coverage.in_window += 1;
        }
    }
    coverage.requests = sent.len();
    coverage.windows_hit = windows.iter().filter(|n| **n > 0).count();
    coverage
}

/// Every request was answered OK.
pub fn assert_none_failed(sent: &[Sent]) {
    let failed: Vec<&String> = sent.iter().filter_map(|s| s.error.as_ref()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        sent.len(),
        &failed[..3.min(failed.len())]
    );
}

/// `otel-audit verify STORE --public-key KEY`: exit 0.
pub fn verify(setup: &Setup) {
    let (status, output) = verify_output(&setup.store, &setup.public_key());
    assert!(status.success(), "otel-audit verify: {status}\n{output}");
}

/// `otel-audit verify STORE --public-key KEY`: its exit status, and its
/// stdout followed by its stderr.
pub fn verify_output(store: &Path, public_key: &Path) -> (ExitStatus, String) {
    let out = Command::new(binary()).arg("verify").arg(store).arg("--public-key").arg(public_key).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status, text)
}

/// `otel_audit_reloads_total` of the processor for `trigger` and `result`.
pub fn reloads(metrics: &str, trigger: &str, result: &str) -> f64 {
    admin::metric(
        metrics,
        "otel_audit_reloads_total",
        &[("processor", PROCESSOR), ("trigger", trigger), ("result", result)],
    )
}
