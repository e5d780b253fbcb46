//! The chain worker on real stores in temporary directories, with the
//! real component (`$OTEL_AUDIT_WASM`, else the `make wasm` output).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use audit_format::{ChainHead, Context};
use prost::Message as _;
use tokio::sync::oneshot;

use super::checkpoint_mirror::{Found, MirrorError};
use super::checkpointer::sign_checkpoint;
use super::commit::{Discontinuity, check_output};
use super::*;
use crate::checkpoint::{Checkpoint, SignedNote, SignerKey};
use crate::loadgen::{self, BatchSpec};
use crate::policy_event::{EventKind, PolicyEvent, Trigger};
use crate::store::{CheckpointEntry, StoreOptions, last_policy_digest, read_serving};
use crate::testing::{component, copy_dir, repo};

const CHAIN: &str = "test/traces/audit/0";

/// The shipped SOC 2 policy, under another `audit.pipeline` name for `variant` > 0
/// (another policy digest), with a chain key when `key` names one.
fn policy(variant: u32, key: Option<(&str, &[u8])>) -> Arc<PolicySource> {
    let path = repo().join("collector-config/policies/soc2-audit.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if variant > 0 {
        text = text.replace("pipeline: soc2-audit-trail", &format!("pipeline: soc2-audit-trail-{variant}"));
    }
    let mut secrets = Vec::new();
    if let Some((id, bytes)) = key {
        text.push_str(&format!("  chain: {{key_id: {id}}}\n"));
        secrets.push((id.to_owned(), bytes.to_vec()));
    }
    Arc::new(PolicySource { text, secrets })
}

/// The digest the component gives `policy`.
fn digest(policy: &PolicySource) -> String {
    let mut instance = component().instantiate().unwrap();
    instance.configure(&policy.text, &policy.secrets).unwrap().digest
}

fn checkpoints(every_records: u64, mirror_dir: Option<PathBuf>) -> CheckpointPolicy {
    CheckpointPolicy {
        every_records,
        interval: Duration::from_secs(3600),
        heartbeat: Duration::from_secs(3600),
        signer: Arc::new(SignerKey::generate("test").unwrap()),
        mirror_dir,
    }
}

/// A chain in `dir/chain` with its mirror in `dir/mirror`; one signing key
/// per `dir`.
fn spec(dir: &Path, policy: Arc<PolicySource>) -> ChainSpec {
    std::fs::create_dir_all(dir.join("mirror")).unwrap();
    let key = dir.join("signer.key");
    if !key.exists() {
        std::fs::write(&key, SignerKey::generate("test").unwrap().encode()).unwrap();
    }
    let signer = Arc::new(SignerKey::parse(&std::fs::read_to_string(&key).unwrap()).unwrap());
    ChainSpec {
        chain_id: CHAIN.into(),
        pipeline_id: "traces/audit".into(),
        signal: Signal::Traces,
        dir: dir.join("chain"),
        store: StoreOptions { segment_size: 1 << 20, outbox: false, ..StoreOptions::default() },
        checkpoints: CheckpointPolicy { signer, ..checkpoints(5, Some(dir.join("mirror"))) },
        processor_id: "wasm/soc2".into(),
        module: component(),
        policy,
    }
}

fn open(spec: ChainSpec) -> (ChainWorker, Arc<Metrics>) {
    let metrics = Metrics::new();
    let (worker, _) = ChainWorker::open(spec, metrics.clone()).unwrap_or_else(|e| panic!("{e}"));
    (worker, metrics)
}

/// An export request of `n` audit spans (every one kept by the policy).
fn spans(n: usize, seed: u64) -> Bytes {
    let spec = BatchSpec { records: n, audit_ratio: 1.0, attributes: 4, varied: false, seed };
    loadgen::traces(&spec).encode_to_vec().into()
}

type Answer = oneshot::Receiver<Result<(), Rejection>>;

fn job(payload: Bytes) -> (Job, Answer) {
    let (reply, answer) = oneshot::channel();
    (Job { payload, received_at: 1_700_000_000_000_000_000, sender: None, reply }, answer)
}

fn group(payloads: Vec<Bytes>) -> (Vec<Job>, Vec<Answer>) {
    payloads.into_iter().map(job).unzip()
}

fn answer(mut answer: Answer) -> Result<(), Rejection> {
    answer.try_recv().expect("answered before the worker returned")
}

/// Commits one group of requests; their answers.
fn commit(worker: &mut ChainWorker, payloads: Vec<Bytes>) -> Vec<Result<(), Rejection>> {
    let (jobs, answers) = group(payloads);
    worker.commit_group(jobs);
    answers.into_iter().map(answer).collect()
}

/// A metric's value in the text exposition, by its exact series name.
fn metric(metrics: &Metrics, series: &str) -> f64 {
    let text = metrics.render();
    let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn chain_series(name: &str) -> String {
    format!("otel_audit_{name}{{chain=\"{CHAIN}\"}}")
}

/// Every stored record line, in chain order.
fn lines(chain_dir: &Path) -> Vec<String> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(chain_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    segments.sort();
    segments
        .iter()
        .flat_map(|p| std::fs::read_to_string(p).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// Every stored record, in chain order.
fn records(chain_dir: &Path) -> Vec<serde_json::Value> {
    lines(chain_dir).iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn seqs(records: &[serde_json::Value]) -> Vec<u64> {
    records.iter().map(|r| r["chain"]["seq"].as_str().unwrap().parse().unwrap()).collect()
}

fn span_attr<'a>(record: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    record["span"]["attributes"][key]["s"].as_str()
}

// ------------------------------------------------------------ group commit

#[test]
fn a_group_is_answered_only_after_one_append_of_all_its_records() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut worker, metrics) = open(spec(tmp.path(), policy(0, None)));
    let mut committed = worker.committed.subscribe();
    let answers =
        commit(&mut worker, vec![spans(3, 1), Bytes::from_static(b"\xff not protobuf"), spans(4, 2), spans(2, 3)]);
    assert_eq!(answers[0], Ok(()));
    match &answers[1] {
        Err(Rejection::Invalid(m)) => assert!(m.starts_with("invalid OTLP request: "), "{m}"),
        other => panic!("the undecodable request: {other:?}"),
    }
    assert_eq!(answers[2..], [Ok(()), Ok(())]);
    // One append for the three requests that went through, chained in order.
    assert_eq!(worker.head().unwrap().seq, 9);
    assert_eq!(metric(&metrics, &format!("otel_audit_group_commit_requests_count{{chain=\"{CHAIN}\"}}")), 1.0);
    assert_eq!(metric(&metrics, &format!("otel_audit_group_commit_requests_sum{{chain=\"{CHAIN}\"}}")), 3.0);
    assert_eq!(metric(&metrics, &chain_series("chain_seq")), 9.0);
    assert!(committed.has_changed().unwrap());
    assert_eq!(committed.borrow_and_update().next_seq, 9);
    assert_eq!(seqs(&records(&tmp.path().join("chain"))), (0..9).collect::<Vec<_>>());
}

#[test]
fn a_failed_append_answers_every_request_retryable_and_leaves_the_head() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut worker, metrics) = open(spec(tmp.path(), policy(0, None)));
    assert_eq!(commit(&mut worker, vec![spans(2, 1)]), [Ok(())]);
    let before = worker.head().unwrap().clone();

    worker.store.as_mut().unwrap().fail_next_fsync();
    for answer in commit(&mut worker, vec![spans(3, 2), spans(1, 3)]) {
        match answer {
            Err(Rejection::Unavailable(m)) => {
                assert!(m.starts_with("the audit store could not make the records durable: cannot fsync"), "{m}")
            }
            other => panic!("after a failed fsync: {other:?}"),
        }
    }
    assert_eq!(worker.committed.borrow().next_seq, before.seq, "nothing acknowledged");
    assert_eq!(metric(&metrics, &chain_series("store_failures_total")), 1.0);
    // A store whose fsync failed is not trusted: it is reopened, from what
    // is on disk, before the next group.
    assert!(worker.head().is_none());
    assert_eq!(commit(&mut worker, vec![spans(3, 2)]), [Ok(())]);
    let head = worker.head().unwrap().clone();
    assert_eq!(head.seq, before.seq + 3);
    drop(worker);
    let lines = lines(&tmp.path().join("chain"));
    let stored: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(seqs(&stored), [0, 1, 2, 3, 4], "the failed group left nothing behind");
    let leaf = audit_format::hash::to_hex(&audit_format::hash::leaf_hash(lines[1].as_bytes()));
    assert_eq!(stored[2]["chain"]["prev"], leaf.as_str(), "the next group chains from the old head");
    assert_eq!(head.prev, audit_format::hash::leaf_hash(lines[4].as_bytes()));
}

/// A chain whose next checkpoint is far off: groups go in flight.
fn pipelined(dir: &Path) -> (ChainWorker, Arc<Metrics>) {
    let mut spec = spec(dir, policy(0, None));
    spec.checkpoints.every_records = 1000;
    open(spec)
}

#[test]
fn the_next_group_runs_while_one_waits_for_its_fsync_and_each_is_answered_once_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut worker, metrics) = pipelined(tmp.path());
    let (first, mut first_answers) = group(vec![spans(3, 1), spans(1, 2)]);
    worker.start_group(first);
    assert!(worker.in_flight.is_some(), "the group waits for its fsync");
    assert!(first_answers.iter_mut().all(|a| a.try_recv().is_err()), "not answered before it is durable");
    assert_eq!(worker.head().unwrap().seq, 0, "the head moves once durable");
    assert_eq!(worker.committed.borrow().next_seq, 0);

    // The next group chains from the head the first leads to, and is
    // written once the first is answered.
    let (second, second_answers) = group(vec![spans(2, 3)]);
    worker.start_group(second);
    assert_eq!(first_answers.into_iter().map(answer).collect::<Vec<_>>(), [Ok(()), Ok(())]);
    assert_eq!(worker.committed.borrow().next_seq, 4);
    assert!(worker.in_flight.is_some());
    assert!(worker.settle());
    assert_eq!(second_answers.into_iter().map(answer).collect::<Vec<_>>(), [Ok(())]);
    assert_eq!(worker.head().unwrap().seq, 6);
    assert_eq!(worker.committed.borrow().next_seq, 6);
    assert_eq!(metric(&metrics, &format!("otel_audit_group_commit_requests_sum{{chain=\"{CHAIN}\"}}")), 3.0);
    let lines = lines(&tmp.path().join("chain"));
    let stored: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(seqs(&stored), (0..6).collect::<Vec<_>>());
    let leaf = audit_format::hash::to_hex(&audit_format::hash::leaf_hash(lines[3].as_bytes()));
    assert_eq!(stored[4]["chain"]["prev"], leaf.as_str(), "the second group follows the first");
}

#[test]
fn a_failed_fsync_in_flight_fails_the_group_that_ran_behind_it_too() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut worker, metrics) = pipelined(tmp.path());
    assert_eq!(commit(&mut worker, vec![spans(2, 1)]), [Ok(())]);
    worker.store.as_mut().unwrap().fail_next_fsync();
    let (first, first_answers) = group(vec![spans(3, 2)]);
    worker.start_group(first);
    let (second, second_answers) = group(vec![spans(1, 3), spans(2, 4)]);
    worker.start_group(second);
    match answer(first_answers.into_iter().next().unwrap()) {
        Err(Rejection::Unavailable(m)) => {
            assert!(m.starts_with("the audit store could not make the records durable: cannot fsync"), "{m}")
        }
        other => panic!("the group whose fsync failed: {other:?}"),
    }
    for answer in second_answers.into_iter().map(answer) {
        match answer {
            Err(Rejection::Unavailable(m)) => {
                assert!(m.contains("could not make the records before these durable"), "{m}")
            }
            other => panic!("the group that ran behind it: {other:?}"),
        }
    }
    assert!(worker.in_flight.is_none(), "nothing of either is written");
    assert_eq!(worker.committed.borrow().next_seq, 2, "nothing acknowledged");
    assert_eq!(metric(&metrics, &chain_series("store_failures_total")), 1.0);
    // The store is reopened from disk; the next group chains from seq 2.
    assert_eq!(commit(&mut worker, vec![spans(1, 5)]), [Ok(())]);
    assert_eq!(seqs(&records(&tmp.path().join("chain"))), [0, 1, 2]);
}

#[test]
fn output_that_does_not_continue_the_chain_is_named() {
    let mut instance = component().instantiate().unwrap();
    let source = policy(0, None);
    instance.configure(&source.text, &source.secrets).unwrap();
    let ctx = Context {
        received_at_unix_nano: 1,
        head: ChainHead { chain_id: CHAIN.into(), seq: 7, prev: audit_format::hash::GENESIS_PREV },
        sender: None,
    };
    let good = instance.process_traces(&spans(2, 9), &ctx).unwrap();
    assert_eq!(check_output(&good, &ctx), Ok(()));

    let mut bad = good.clone();
    bad.leaves.pop();
    assert_eq!(check_output(&bad, &ctx), Err(Discontinuity::Leaves { records: 2, leaves: 1 }));
    let mut bad = good.clone();
    bad.head.seq += 1;
    let error = check_output(&bad, &ctx).unwrap_err();
    assert_eq!(error.to_string(), format!("head {CHAIN}#10 does not follow {CHAIN}#7 plus 2 records"));
    let mut bad = good.clone();
    bad.head.prev = bad.leaves[0];
    assert_eq!(check_output(&bad, &ctx), Err(Discontinuity::PrevNotLastLeaf));

    // A request the policy drops entirely leaves the head where it was.
    let dropped = BatchSpec { records: 3, audit_ratio: 0.0, attributes: 4, varied: false, seed: 4 };
    let none = instance.process_traces(&loadgen::traces(&dropped).encode_to_vec(), &ctx).unwrap();
    assert!(none.records.is_empty());
    assert_eq!(check_output(&none, &ctx), Ok(()));
    let mut bad = none;
    bad.head.prev = good.head.prev;
    assert_eq!(check_output(&bad, &ctx), Err(Discontinuity::PrevChanged));
}

// ------------------------------------------------------------ checkpoints

#[test]
fn each_checkpoint_names_the_one_before_and_the_last_of_a_stop_says_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut worker, _) = open(spec(tmp.path(), policy(0, None)));
    commit(&mut worker, vec![spans(3, 1)]);
    let policy = worker.spec.checkpoints.clone();
    let store = worker.store.as_mut().unwrap();
    let genesis = store.last_checkpoint().unwrap().clone();
    let first = sign_checkpoint(store, &policy, Occasion::Schedule, 1_000_000_000).unwrap();
    let second = sign_checkpoint(store, &policy, Occasion::Shutdown, 2_000_000_000).unwrap();
    let verifier = policy.signer.verifier();
    let body = |entry: &CheckpointEntry| {
        let note = SignedNote::parse(&entry.note).unwrap();
        note.verify(std::slice::from_ref(&verifier)).unwrap();
        (Checkpoint::parse(&note.text).unwrap(), note.text)
    };
    let (genesis_body, genesis_text) = body(&genesis);
    let (first_body, first_text) = body(&first);
    let (second_body, _) = body(&second);
    // The chain began with a signed checkpoint at size 0, before any record.
    assert_eq!((genesis_body.size, genesis_body.root), (0, audit_format::hash::merkle_root(&[])));
    let schedule = "schedule records=5 interval_ms=3600000 heartbeat_ms=3600000";
    assert_eq!(&genesis_body.extensions[1..], [schedule, "start"]);
    assert_eq!((first_body.size, first_body.root), (3, store.frontier().root()));
    let origin = store.origin();
    assert!(
        origin.starts_with(&format!("otel-audit/{CHAIN}/")) && origin.len() == "otel-audit/".len() + CHAIN.len() + 17
    );
    assert_eq!((first_body.origin.as_str(), genesis_body.origin.as_str()), (origin, origin));
    use base64::Engine as _;
    use sha2::Digest as _;
    let prev = |text: &str| {
        format!("prev {}", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes())))
    };
    assert_eq!(
        first_body.extensions,
        ["time 1970-01-01T00:00:01.000000000Z".to_owned(), prev(&genesis_text), schedule.into()]
    );
    assert_eq!(
        second_body.extensions,
        ["time 1970-01-01T00:00:02.000000000Z".to_owned(), prev(&first_text), schedule.into(), "shutdown".to_owned()]
    );
    assert_eq!(store.last_checkpoint(), Some(&second));
}

#[test]
fn the_worker_signs_when_due_mirrors_it_and_signs_once_more_at_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut worker, metrics) = open(spec(tmp.path(), policy(0, None)));
    // A new chain's genesis checkpoint is signed when it opens.
    assert_eq!(worker.committed.borrow().checkpoints, 1);
    assert_eq!(worker.store.as_ref().unwrap().last_checkpoint().unwrap().size, 0);
    worker.checkpoint_if_due(false);
    assert_eq!(worker.committed.borrow().checkpoints, 1, "nothing new");
    commit(&mut worker, vec![spans(4, 1)]);
    worker.checkpoint_if_due(false);
    assert_eq!(worker.committed.borrow().checkpoints, 1, "4 of 5 records");
    // 6 records would leave more than 5 unsigned: the group goes in two
    // parts with a checkpoint between them.
    commit(&mut worker, vec![spans(2, 2)]);
    assert_eq!(worker.committed.borrow().checkpoints, 2);
    assert_eq!(worker.store.as_ref().unwrap().last_checkpoint().unwrap().size, 5);
    worker.checkpoint_if_due(false);
    assert_eq!(worker.committed.borrow().checkpoints, 2, "1 of 5 records");
    let mirror = worker.mirror.clone().unwrap();
    let mirrored: serde_json::Value = serde_json::from_slice(&std::fs::read(&mirror).unwrap()).unwrap();
    assert_eq!(mirrored["size"], 5);
    worker.checkpoint_if_due(true);
    assert_eq!(worker.committed.borrow().checkpoints, 3, "the stop signs even without new records");
    assert_eq!(metric(&metrics, &chain_series("checkpoints_total")), 3.0);
    assert!(worker.store.as_ref().unwrap().last_checkpoint().unwrap().note.contains("\nshutdown\n"));
}

// ------------------------------------------------------------ the mirror

#[test]
fn a_chain_whose_checkpoints_were_cut_back_does_not_open_until_its_mirror_file_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut worker, _) = open(spec(tmp.path(), policy(0, None)));
    let chain = tmp.path().join("chain");
    let early = tmp.path().join("early copy");
    copy_dir(&chain, &early);
    commit(&mut worker, vec![spans(5, 1)]);
    worker.checkpoint_if_due(false);
    let mirror = worker.mirror.clone().unwrap();
    drop(worker);
    // The store put back to its copy from before the checkpoint @5, here
    // or served from another directory: the mirror knows the chain by its
    // origin and key, not by its path.
    std::fs::remove_dir_all(&chain).unwrap();
    copy_dir(&early, &chain);
    let elsewhere = tmp.path().join("elsewhere");
    copy_dir(&early, &elsewhere.join("chain"));
    for dir in [tmp.path(), elsewhere.as_path()] {
        let spec =
            ChainSpec { checkpoints: spec(tmp.path(), policy(0, None)).checkpoints, ..spec(dir, policy(0, None)) };
        match ChainWorker::open(spec, Metrics::new()) {
            Err(ChainError::Checkpoint {
                chain,
                source: MirrorError::CutBack { found: Found::Smaller(0), signed: 5, .. },
            }) => {
                assert_eq!(chain, CHAIN)
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a store cut back to @0 was opened from {}", dir.display()),
        }
    }
    // A chain begun again (its directory moved aside) is another log, with
    // another origin and mirror file.
    std::fs::rename(&chain, tmp.path().join("moved aside")).unwrap();
    let (worker, _) = open(spec(tmp.path(), policy(0, None)));
    assert_eq!(worker.head().unwrap().seq, 0, "a new trail");
    assert_ne!(worker.mirror.as_ref(), Some(&mirror));
}

// ------------------------------------------------------------ reload orders

fn change(processor: &str) -> PolicyEvent {
    PolicyEvent {
        processor: processor.into(),
        trigger: Trigger::Admin,
        // The chain puts what it runs here.
        old_module_digest: "sha256:reloader".into(),
        old_policy_digest: "sha256:reloader".into(),
        kind: EventKind::Change {
            module_digest: component().digest().into(),
            policy_digest: String::new(),
            secrets_changed: false,
        },
    }
}

type Done = std::sync::mpsc::Receiver<Result<u64, ApplyError>>;

fn order(worker: &mut ChainWorker, to: Option<Arc<PolicySource>>) -> Done {
    let (done, outcome) = std::sync::mpsc::channel();
    let swap = to.map(|policy| (component(), policy));
    worker.pending.push_back(Control { event: change("wasm/soc2"), swap, done });
    outcome
}

/// Makes the worker's store fail and keeps it from reopening: the test
/// holds the chain's lock.
fn break_store(worker: &mut ChainWorker, dir: &Path) -> crate::store::ChainStore {
    worker.store.as_mut().unwrap().fail_next_fsync();
    commit(worker, vec![spans(1, 99)]);
    assert!(worker.store.is_none());
    let (store, _) = crate::store::ChainStore::open(&dir.join("chain"), CHAIN, worker.spec.store.clone()).unwrap();
    store
}

#[test]
fn a_swap_is_the_first_record_of_the_new_policy_and_serves_the_next_group() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (policy(0, None), policy(1, None));
    let (old_digest, new_digest) = (digest(&old), digest(&new));
    assert_ne!(old_digest, new_digest);
    let (mut worker, _) = open(spec(tmp.path(), old));
    commit(&mut worker, vec![spans(2, 1)]);
    let done = order(&mut worker, Some(new));
    worker.apply_controls().unwrap();
    assert_eq!(done.try_recv().unwrap().unwrap(), 2, "the event's seq");
    commit(&mut worker, vec![spans(1, 2)]);
    drop(worker);

    let chain_dir = tmp.path().join("chain");
    let stored = records(&chain_dir);
    let digests: Vec<_> = stored.iter().map(|r| span_attr(r, "audit.policy.digest").unwrap()).collect();
    assert_eq!(digests, [&old_digest, &old_digest, &new_digest, &new_digest]);
    let event = &stored[2];
    assert_eq!(event["span"]["name"], "audit.policy_change");
    assert_eq!(span_attr(event, "audit.policy_change.old_policy_digest"), Some(old_digest.as_str()));
    assert_eq!(span_attr(event, "audit.policy_change.trigger"), Some("admin"));
    assert_eq!(read_serving(&chain_dir).unwrap().unwrap().policy_digest, new_digest, "noted for a restart");
}

#[test]
fn an_order_that_cannot_be_applied_stays_pending_and_a_newer_swap_supersedes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let new = policy(1, None);
    let (mut worker, _) = open(spec(tmp.path(), policy(0, None)));
    let lock = break_store(&mut worker, tmp.path());
    let (first, second) = (order(&mut worker, Some(policy(2, None))), order(&mut worker, Some(new.clone())));

    let pending = worker.apply_controls().unwrap_err().to_string();
    assert!(
        pending.starts_with("a policy reload is pending on this chain: the audit store is unavailable: "),
        "{pending}"
    );
    assert!(pending.contains("is locked"), "{pending}");
    // The older swap never served here and a newer one is ordered: dropped.
    let superseded = first.try_recv().unwrap().unwrap_err();
    assert!(matches!(superseded, ApplyError::Superseded(_)), "{superseded}");
    assert!(superseded.to_string().ends_with("; superseded by a newer reload"), "{superseded}");
    assert!(matches!(second.try_recv().unwrap(), Err(ApplyError::Unavailable(Unavailable::Reopen(_)))));
    assert_eq!(worker.pending.len(), 1);

    drop(lock);
    worker.apply_controls().unwrap();
    assert_eq!(second.try_recv().unwrap().unwrap(), 0, "the first record: the failed group left none");
    assert!(worker.pending.is_empty());
    assert_eq!(worker.policy_digest, digest(&new));
}

#[test]
fn a_rejection_is_recorded_and_the_old_policy_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let old = policy(0, None);
    let (mut worker, _) = open(spec(tmp.path(), old.clone()));
    let (done, outcome) = std::sync::mpsc::channel();
    let event = PolicyEvent {
        kind: EventKind::Rejected { module_digest: None, policy_digest: None, reason: "bad yaml".into() },
        ..change("wasm/soc2")
    };
    worker.pending.push_back(Control { event, swap: None, done });
    worker.apply_controls().unwrap();
    assert_eq!(outcome.try_recv().unwrap().unwrap(), 0);
    commit(&mut worker, vec![spans(1, 2)]);
    drop(worker);
    let stored = records(&tmp.path().join("chain"));
    assert_eq!(stored[0]["span"]["name"], "audit.policy_rejected");
    assert_eq!(span_attr(&stored[0], "audit.policy_rejected.reason"), Some("bad yaml"));
    assert_eq!(span_attr(&stored[1], "audit.policy.digest"), Some(digest(&old).as_str()));
}

#[test]
fn a_policy_changed_while_stopped_is_recorded_at_start_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (policy(0, None), policy(1, None));
    let (mut worker, _) = open(spec(tmp.path(), old.clone()));
    commit(&mut worker, vec![spans(2, 1)]);
    drop(worker);
    let chain_dir = tmp.path().join("chain");

    let (worker, _) = open(spec(tmp.path(), new.clone()));
    assert_eq!(worker.head().unwrap().seq, 3);
    drop(worker);
    let stored = records(&chain_dir);
    assert_eq!(stored[2]["span"]["name"], "audit.policy_change");
    assert_eq!(span_attr(&stored[2], "audit.policy_change.trigger"), Some("startup"));
    assert_eq!(span_attr(&stored[2], "audit.policy_change.old_policy_digest"), Some(digest(&old).as_str()));
    assert_eq!(last_policy_digest(&chain_dir).unwrap(), Some(digest(&new)));

    let (worker, _) = open(spec(tmp.path(), new));
    assert_eq!(worker.head().unwrap().seq, 3, "nothing changed since");
}

#[test]
fn a_restart_may_not_drop_the_chain_key_or_give_its_id_other_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let keyed = policy(0, Some(("k1", &[1; 32])));
    let (worker, _) = open(spec(tmp.path(), keyed.clone()));
    assert_eq!(worker.key_history().keys().collect::<Vec<_>>(), ["k1"]);
    drop(worker);
    let refused = |policy: Arc<PolicySource>| match ChainWorker::open(spec(tmp.path(), policy), Metrics::new()) {
        Err(ChainError::Changed { source, .. }) => source,
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("opened"),
    };
    let downgrade = refused(policy(0, None));
    assert!(matches!(&downgrade, ChangedError::MacDowngrade(id) if id == "k1"), "{downgrade}");
    assert!(downgrade.to_string().contains("verify would report a MAC downgrade"), "{downgrade}");
    let reused = refused(policy(0, Some(("k1", &[2; 32]))));
    assert!(matches!(reused, ChangedError::KeyReused(_)), "{reused}");
    // A new id is fine, and the history keeps both.
    let (worker, _) = open(spec(tmp.path(), policy(0, Some(("k2", &[2; 32])))));
    assert_eq!(worker.key_history().keys().collect::<Vec<_>>(), ["k1", "k2"]);
}

// ------------------------------------------------------------ the loop

#[test]
fn requests_are_refused_while_an_order_is_pending_and_served_once_it_is_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let new = policy(1, None);
    let (mut worker, _) = open(spec(tmp.path(), policy(0, None)));
    let lock = break_store(&mut worker, tmp.path());
    let (queue, jobs) = std::sync::mpsc::sync_channel(16);
    let (controls, orders) = std::sync::mpsc::channel();
    let (done, outcome) = std::sync::mpsc::channel();
    controls.send(Control { event: change("wasm/soc2"), swap: Some((component(), new.clone())), done }).unwrap();
    let (refused, first) = job(spans(1, 1));
    queue.send(Work::Job(refused)).unwrap();
    let closing = Arc::new(AtomicBool::new(false));
    let runner = {
        let closing = closing.clone();
        std::thread::spawn(move || worker.run(jobs, orders, &closing))
    };
    match first.blocking_recv().unwrap() {
        Err(Rejection::Unavailable(m)) => {
            assert!(m.starts_with("a policy reload is pending on this chain: the audit store is unavailable: "), "{m}")
        }
        other => panic!("a request while the order is pending: {other:?}"),
    }
    assert!(matches!(outcome.recv().unwrap(), Err(ApplyError::Unavailable(Unavailable::Reopen(_)))));
    drop(lock);
    let (served, second) = job(spans(2, 2));
    queue.send(Work::Job(served)).unwrap();
    assert_eq!(second.blocking_recv().unwrap(), Ok(()));
    let seq = loop {
        // The loop may have tried again (and failed) before the lock went.
        if let Ok(seq) = outcome.recv().unwrap() {
            break seq;
        }
    };
    assert_eq!(seq, 0);
    closing.store(true, std::sync::atomic::Ordering::Relaxed);
    runner.join().unwrap().expect("the final checkpoint is signed");
    let stored = records(&tmp.path().join("chain"));
    assert_eq!(stored[0]["span"]["name"], "audit.policy_change");
    let new_digest = digest(&new);
    assert!(stored.iter().all(|r| span_attr(r, "audit.policy.digest") == Some(new_digest.as_str())));
    assert_eq!(seqs(&stored), [0, 1, 2]);
}

#[test]
fn the_loop_serves_until_closed_and_signs_a_final_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (worker, _) = open(spec(tmp.path(), policy(0, None)));
    let mut committed = worker.committed.subscribe();
    let (queue, jobs) = std::sync::mpsc::sync_channel(16);
    let (_controls, orders) = std::sync::mpsc::channel();
    let (work, answers) = group(vec![spans(2, 1), spans(3, 2)]);
    for job in work {
        queue.send(Work::Job(job)).unwrap();
    }
    drop(queue);
    let closing = AtomicBool::new(false);
    worker.run(jobs, orders, &closing).expect("the final checkpoint is signed");
    assert_eq!(answers.into_iter().map(answer).collect::<Vec<_>>(), [Ok(()), Ok(())]);
    let state = *committed.borrow_and_update();
    assert_eq!(state.next_seq, 5);
    // The genesis checkpoint at the start, one after 5 records, one at the stop.
    assert_eq!(state.checkpoints, 3, "{state:?}");
    let chain_dir = tmp.path().join("chain");
    let (store, _) = crate::store::ChainStore::open(
        &chain_dir,
        CHAIN,
        StoreOptions { segment_size: 1 << 20, outbox: false, ..StoreOptions::default() },
    )
    .unwrap();
    let last = store.last_checkpoint().unwrap();
    assert_eq!(last.size, 5);
    assert!(last.note.contains("\nshutdown\n"), "{}", last.note);
}
