//! The component runs unchanged under a second component host: jco, on
//! Node. The same cases (the shipped fixtures, 120 generated batches of
//! every value kind under three policies, keyed and unkeyed, an OTTL policy
//! over the fixtures and 40 more, the host's own events through
//! `chain-events`, and the error paths) go through wasmtime
//! and through `node tests/jco/run.mjs`, and
//! every byte must agree: the OTLP output, each canonical record, the
//! leaves, the head, the stats, the policy info, and the error variants
//! with their messages.
//!
//! Needs Node.js and the transpiled component (`make jco`); a missing or
//! stale one is a failure, never a skip.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use audit_format::{ChainHead, Context};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use otel_audit::loadgen::{self, BatchSpec};
use otel_audit::otlp::{self, Encoding, Signal};
use otel_audit::runtime::{self, Instance, ProcessError, RuntimeError};
use prost::Message;
use serde_json::{Value, json};

/// Generated batches (on top of the fixtures and the error cases).
const GENERATED: u64 = 120;

/// Generated batches under the OTTL policy.
const OTTL_GENERATED: u64 = 40;

/// What a case is meant to show, besides both hosts agreeing on it.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Processed, keeping at least this many records.
    Kept(u64),
    /// Processed, keeping at least this many records, which between them
    /// contain each of these strings (what an OTTL policy wrote).
    KeptWith(u64, &'static [&'static str]),
    /// Refused with this error tag (`configure` for a rejected policy).
    Err(&'static str),
    /// Only the agreement matters.
    Either,
}

struct Case {
    name: String,
    policy: String,
    secrets: Vec<(String, Vec<u8>)>,
    signal: Signal,
    /// Through `chain-events` (the host's own events) rather than
    /// `process-traces`/`process-logs`.
    events: bool,
    request: Vec<u8>,
    received_at_unix_nano: u64,
    chain_id: String,
    seq: u64,
    /// Raw bytes: not always 32, to exercise `invalid-context`.
    prev: Vec<u8>,
    /// Who sent the batch (recorded as each record's `sender`).
    sender: Option<audit_format::Sender>,
    expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    chain_id: String,
    seq: u64,
    prev: Vec<u8>,
}

impl Head {
    /// The head as the next case's context takes it.
    fn chain_head(&self) -> ChainHead {
        ChainHead {
            chain_id: self.chain_id.clone(),
            seq: self.seq,
            prev: self.prev.as_slice().try_into().expect("a 32-byte head"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Processed {
    info: runtime::PolicyInfo,
    otlp: Vec<u8>,
    records: Vec<Vec<u8>>,
    leaves: Vec<u8>,
    head: Head,
    stats: runtime::Stats,
}

/// One host's result for one case, in a host-neutral form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok(Box<Processed>),
    /// `tag` is the WIT error case, or `configure` for a rejected policy.
    Err {
        tag: String,
        val: String,
    },
}

impl Outcome {
    fn tag(&self) -> &str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Err { tag, .. } => tag,
        }
    }
}

#[test]
fn jco_and_wasmtime_agree_byte_for_byte() {
    let started = std::time::Instant::now();
    let (node, script) = jco_ready();

    let mut wasmtime = Wasmtime::default();
    let cases = build_cases(&mut wasmtime);
    let expected: Vec<Outcome> = cases.iter().map(|case| wasmtime.run(case)).collect();
    let actual = run_jco(&node, &script, &cases);
    assert_eq!(actual.len(), cases.len(), "jco returned {} results for {} cases", actual.len(), cases.len());

    let mut failures = Vec::new();
    for (i, ((case, w), j)) in cases.iter().zip(&expected).zip(&actual).enumerate() {
        let label = format!("case {i} ({})", case.name);
        if let Err(e) = check_expectation(case, w) {
            failures.push(format!("{label}: wasmtime: {e}"));
        }
        if let Err(e) = compare(w, j) {
            failures.push(format!("{label}: jco differs from wasmtime: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n\n")
    );

    // The corpus is worth comparing, and the comparison can see a difference.
    let processed: Vec<&Processed> = expected
        .iter()
        .filter_map(|o| match o {
            Outcome::Ok(p) => Some(&**p),
            Outcome::Err { .. } => None,
        })
        .collect();
    let records: usize = processed.iter().map(|p| p.records.len()).sum();
    assert!(processed.len() as u64 > GENERATED, "only {} cases were processed", processed.len());
    assert!(records > 1_000, "the corpus chained only {records} records");
    let with_sender =
        processed.iter().flat_map(|p| &p.records).filter(|r| r.windows(10).any(|w| w == b"\"sender\":{")).count();
    assert!(with_sender > 100, "only {with_sender} records name their sender");
    for tag in ["decode", "invalid-context", "configure", "policy"] {
        assert!(expected.iter().any(|o| o.tag() == tag), "no case produced a {tag} error");
    }
    let richest = expected.iter().position(|o| matches!(o, Outcome::Ok(p) if p.records.len() > 1)).unwrap();
    assert_comparison_catches_differences(&expected[richest]);

    eprintln!(
        "jco and wasmtime agree on {} cases ({} processed, {records} records) in {:.1?}",
        cases.len(),
        processed.len(),
        started.elapsed()
    );
}

/// Node and the transpiled component, or a failure that says what to do.
fn jco_ready() -> (String, PathBuf) {
    let dir = support::root().join("tests/jco");
    let script = dir.join("run.mjs");
    assert!(script.exists(), "{} is missing", script.display());
    let transpiled = dir.join("transpiled");
    let js = transpiled.join("audit_processor.js");
    let core = transpiled.join("audit_processor.core.wasm");
    assert!(
        js.exists() && core.exists() && dir.join("node_modules/@bytecodealliance/preview2-shim").is_dir(),
        "{} (or tests/jco/node_modules) is missing: run `make jco` (needs Node.js 20+ and npm)",
        transpiled.display()
    );
    // The transpiled core module must be the one inside the component
    // under test; otherwise this would compare two different builds.
    let wasm = support::wasm_path();
    let component = std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    let core = std::fs::read(&core).unwrap_or_else(|e| panic!("{}: {e}", core.display()));
    assert!(
        !core.is_empty() && component.windows(core.len()).any(|w| w == core.as_slice()),
        "{} is stale: it was transpiled from another build than {}; run `make jco`",
        transpiled.display(),
        wasm.display()
    );

    let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
    match Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("`{node} --version` failed ({}): run `make jco` with Node.js 20+ on PATH", out.status),
        Err(e) => panic!("cannot run `{node}` ({e}): install Node.js 20+ (or set $NODE) and run `make jco`"),
    }
    (node, script)
}

/// Three policies: the shipped one, the same with a keyed chain, and one
/// that redacts, hashes with HMAC and converts.
fn policies() -> Vec<(&'static str, String)> {
    let soc2 = support::policy("soc2-audit.yaml");
    // The same policy with a keyed chain (records get an HMAC).
    let keyed = soc2.replacen("\naudit:\n", "\naudit:\n  chain: {key_id: k1}\n", 1);
    assert_ne!(keyed, soc2, "soc2-audit.yaml has no top-level `audit:` section to key");
    let redacting = "\
filter:
  spans:
    exclude:
      match_type: regexp
      span_names: ['^GET /metrics']
  logs:
    exclude:
      match_type: strict
      severity_texts: ['']
attributes:
  actions:
    - {key: app.attr1, action: hash}
    - {key: app.attr2, converted_type: string, action: convert}
    - {key: copied, from_attribute: app.attr3, action: upsert}
redaction:
  allow_all_keys: true
  blocked_values: ['[0-9]{12,}']
  blocked_key_patterns: ['^enduser\\.ip$']
  summary: debug
  hash_function: hmac-sha256
  hash_key_id: k1
audit:
  pipeline: p
  chain: {key_id: k1}
  require: [enduser.id]
"
    .to_owned();
    vec![("soc2", soc2), ("soc2-keyed", keyed), ("redacting-keyed", redacting)]
}

fn fixture(name: &str, signal: Signal) -> Vec<u8> {
    let path = support::fixture(name);
    let json = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    otlp::to_protobuf(signal, &json, Encoding::Json).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const RECEIVED_AT: u64 = 1_795_000_000_123_456_789;

/// A sender for generated batch `i`: plaintext or TLS, with or without a
/// principal and a client certificate (non-ASCII subject, several SANs).
fn sender(i: u64) -> audit_format::Sender {
    let mtls = i % 4 == 3;
    audit_format::Sender {
        protocol: if i.is_multiple_of(3) { "grpc" } else { "http" }.into(),
        address: format!("[2001:db8::{i:x}]:{}", 40_000 + i),
        tls: if i.is_multiple_of(5) { String::new() } else { "TLSv1.3".into() },
        principal: if i.is_multiple_of(7) { String::new() } else { format!("bearertokenauth/writers[{}]", i % 3) },
        certificate_subject: if mtls { format!("CN=app-{i},O=Müller \\\"GmbH\\\",C=DE") } else { String::new() },
        certificate_sans: if mtls { vec![format!("DNS:app-{i}.example"), "URI:spiffe://x/y".into()] } else { vec![] },
    }
}

fn build_cases(wasmtime: &mut Wasmtime) -> Vec<Case> {
    let policies = policies();
    let secrets = support::test_secrets();
    let traces = fixture("mixed-traces.json", Signal::Traces);
    let logs = fixture("mixed-logs.json", Signal::Logs);
    let case = |name: String, policy: &str, signal: Signal, request: Vec<u8>, head: &ChainHead, expect: Expect| Case {
        name,
        policy: policy.to_owned(),
        secrets: secrets.clone(),
        signal,
        events: false,
        request,
        received_at_unix_nano: RECEIVED_AT,
        chain_id: head.chain_id.clone(),
        seq: head.seq,
        prev: head.prev.to_vec(),
        sender: None,
        expect,
    };
    let mut cases = Vec::new();

    // The fixtures, under every policy; the shipped policy keeps their two
    // audit records of each signal.
    for (p, (pname, policy)) in policies.iter().enumerate() {
        let min = if p == 0 { 2 } else { 1 };
        let head = ChainHead::genesis(format!("fixture-{pname}"));
        cases.push(case(
            format!("mixed-traces.json, {pname}"),
            policy,
            Signal::Traces,
            traces.clone(),
            &head,
            Expect::Kept(min),
        ));
        cases.push(case(
            format!("mixed-logs.json, {pname}"),
            policy,
            Signal::Logs,
            logs.clone(),
            &head,
            Expect::Kept(min),
        ));
    }

    // Generated batches: one continuous chain per policy (each batch extends
    // the head wasmtime returned for the previous one), starting at genesis,
    // past 2^53 and close to the 2^63 limit of sequence numbers.
    let starts = [0, (1 << 53) - 7, (1u64 << 63) - 100_000];
    let mut heads: Vec<ChainHead> = policies
        .iter()
        .zip(starts)
        .map(|((pname, _), seq)| ChainHead { seq, ..ChainHead::genesis(format!("jco-{pname}")) })
        .collect();
    for i in 0..GENERATED {
        let p = (i % 3) as usize;
        let (pname, policy) = &policies[p];
        let spec = BatchSpec {
            records: 1 + (i as usize * 37) % 60,
            audit_ratio: [0.05, 0.3, 0.7, 1.0][(i / 3 % 4) as usize],
            attributes: 4 + (i as usize % 9),
            varied: true,
            seed: 0x6a63_6f00 + i,
        };
        let signal = if (i / 3) % 2 == 0 { Signal::Traces } else { Signal::Logs };
        let request = match signal {
            Signal::Traces => loadgen::traces(&spec).encode_to_vec(),
            Signal::Logs => loadgen::logs(&spec).encode_to_vec(),
        };
        let name = format!("generated {signal:?} #{i}, seed {:#x}, {} records, {pname}", spec.seed, spec.records);
        let expect = if p == 2 { Expect::Kept(1) } else { Expect::Either };
        let mut c = case(name, policy, signal, request, &heads[p], expect);
        c.received_at_unix_nano = RECEIVED_AT + i * 1_000_003;
        c.sender = (i % 2 == 1).then(|| sender(i));
        if let Outcome::Ok(out) = wasmtime.run(&c) {
            heads[p] = out.head.chain_head();
        }
        cases.push(c);
    }

    // The host's own events through chain-events: the fixtures kept whole
    // under every policy, then generated batches continuing each policy's
    // chain above.
    for (p, (pname, policy)) in policies.iter().enumerate() {
        let head = ChainHead::genesis(format!("events-{pname}"));
        for (name, signal, request, all) in
            [("mixed-traces.json", Signal::Traces, &traces, 4), ("mixed-logs.json", Signal::Logs, &logs, 3)]
        {
            let mut c = case(
                format!("chain-events {name}, {pname}"),
                policy,
                signal,
                request.clone(),
                &head,
                Expect::Kept(all),
            );
            c.events = true;
            cases.push(c);
        }
        for i in 0..4u64 {
            let spec = BatchSpec {
                records: 5 + (i as usize * 13) % 40,
                audit_ratio: 0.1,
                attributes: 6 + i as usize,
                varied: true,
                seed: 0x6576_0000 + (p as u64) * 16 + i,
            };
            let signal = if i % 2 == 0 { Signal::Traces } else { Signal::Logs };
            let request = match signal {
                Signal::Traces => loadgen::traces(&spec).encode_to_vec(),
                Signal::Logs => loadgen::logs(&spec).encode_to_vec(),
            };
            let name = format!("chain-events generated {signal:?}, seed {:#x}, {pname}", spec.seed);
            let mut c = case(name, policy, signal, request, &heads[p], Expect::Kept(spec.records as u64));
            c.events = true;
            if let Outcome::Ok(out) = wasmtime.run(&c) {
                heads[p] = out.head.chain_head();
            }
            cases.push(c);
        }
    }

    // Edges of the context: the extreme timestamps, and a sequence number
    // that would wrap (refused: a chain's seq never wraps).
    let (_, soc2) = &policies[0];
    let genesis = ChainHead::genesis("edges");
    for (name, at) in [("received at 0", 0), ("received at u64::MAX", u64::MAX)] {
        let mut c = case(name.into(), soc2, Signal::Traces, traces.clone(), &genesis, Expect::Kept(2));
        c.received_at_unix_nano = at;
        cases.push(c);
    }
    let wrapping = ChainHead { seq: u64::MAX, prev: [0xab; 32], ..genesis.clone() };
    cases.push(case(
        "seq u64::MAX".into(),
        soc2,
        Signal::Logs,
        logs.clone(),
        &wrapping,
        Expect::Err("invalid-context"),
    ));
    cases.push(case("empty request".into(), soc2, Signal::Traces, Vec::new(), &genesis, Expect::Kept(0)));
    cases.push(case("logs request as traces".into(), soc2, Signal::Traces, logs.clone(), &genesis, Expect::Either));

    // Refused batches: the error variant and its message must agree too.
    let mut garbage = vec![0xff; 64];
    garbage[0] = 0x0a;
    let decode = [
        ("truncated traces", Signal::Traces, traces[..traces.len() / 2].to_vec()),
        ("truncated logs", Signal::Logs, logs[..logs.len() - 3].to_vec()),
        ("garbage traces", Signal::Traces, garbage.clone()),
        ("garbage logs", Signal::Logs, garbage),
    ];
    for (name, signal, request) in decode {
        cases.push(case(name.into(), soc2, signal, request, &genesis, Expect::Err("decode")));
    }
    for len in [31, 33, 0] {
        let mut c = case(
            format!("prev of {len} bytes"),
            soc2,
            Signal::Traces,
            traces.clone(),
            &genesis,
            Expect::Err("invalid-context"),
        );
        c.prev = vec![0x11; len];
        cases.push(c);
    }
    let mut c = case(
        "chain-events truncated logs".into(),
        soc2,
        Signal::Logs,
        logs[..logs.len() - 3].to_vec(),
        &genesis,
        Expect::Err("decode"),
    );
    c.events = true;
    cases.push(c);
    let mut c = case(
        "chain-events prev of 31 bytes".into(),
        soc2,
        Signal::Traces,
        traces.clone(),
        &genesis,
        Expect::Err("invalid-context"),
    );
    (c.events, c.prev) = (true, vec![0x11; 31]);
    cases.push(c);
    let no_chain = ChainHead::genesis("");
    cases.push(case(
        "empty chain id".into(),
        soc2,
        Signal::Logs,
        logs.clone(),
        &no_chain,
        Expect::Err("invalid-context"),
    ));

    // OTTL (tests/fixtures/ottl-differential.yaml: filter conditions, a
    // transform in every context): the fixtures, with what the policy
    // writes, then generated batches of every value kind, on one chain; and
    // a statement failing under error_mode propagate, whose refusal must
    // agree too.
    let ottl = std::fs::read_to_string(support::fixture("ottl-differential.yaml")).expect("ottl-differential.yaml");
    let mut ottl_head = ChainHead::genesis("jco-ottl");
    let ottl_fixtures: [(&str, Signal, &Vec<u8>, &'static [&'static str]); 2] = [
        (
            "mixed-traces.json",
            Signal::Traces,
            &traces,
            &["\"IDENTITY-API\"", "\"user.role.update | Server | 1\"", "\"flat.z.1\"", "\"identity.audit@1.4.0\""],
        ),
        (
            "mixed-logs.json",
            Signal::Logs,
            &logs,
            &["\"retention changed from 90 days to 365 days\"", "\"config-service/logs\"", "\"body.reason\""],
        ),
    ];
    for (name, signal, request, needles) in ottl_fixtures {
        let c = case(format!("ottl {name}"), &ottl, signal, request.clone(), &ottl_head, Expect::KeptWith(2, needles));
        if let Outcome::Ok(out) = wasmtime.run(&c) {
            ottl_head = out.head.chain_head();
        }
        cases.push(c);
    }
    for i in 0..OTTL_GENERATED {
        let spec = BatchSpec {
            records: 1 + (i as usize * 29) % 50,
            audit_ratio: [0.2, 0.6, 1.0][(i % 3) as usize],
            attributes: 5 + (i as usize % 8),
            varied: true,
            seed: 0x006f_7474_6c00 + i,
        };
        let signal = if i % 2 == 0 { Signal::Traces } else { Signal::Logs };
        let request = match signal {
            Signal::Traces => loadgen::traces(&spec).encode_to_vec(),
            Signal::Logs => loadgen::logs(&spec).encode_to_vec(),
        };
        let name = format!("ottl generated {signal:?} #{i}, seed {:#x}, {} records", spec.seed, spec.records);
        let mut c = case(name, &ottl, signal, request, &ottl_head, Expect::Either);
        c.sender = (i % 3 == 1).then(|| sender(i));
        if let Outcome::Ok(out) = wasmtime.run(&c) {
            ottl_head = out.head.chain_head();
        }
        cases.push(c);
    }
    let failing = "transform:\n  error_mode: propagate\n  trace_statements:\n    - context: span\n      statements:\n        \
                   - set(attributes[\"head\"], Substring(name, 0, 15))\n";
    cases.push(case(
        "ottl: Substring past the end, error_mode propagate".into(),
        failing,
        Signal::Traces,
        traces.clone(),
        &genesis,
        Expect::Err("policy"),
    ));

    // Rejected policies.
    let keyed = &policies[1].1;
    let rejected = [
        ("policy: unterminated YAML", "filter: [\n".to_owned(), secrets.clone()),
        ("policy: unknown section", "nonsense: 1\n".to_owned(), secrets.clone()),
        (
            "policy: invalid regexp",
            "filter:\n  spans:\n    include:\n      match_type: regexp\n      span_names: ['(']\n".to_owned(),
            secrets.clone(),
        ),
        ("policy: key id without a secret", keyed.clone(), Vec::new()),
    ];
    for (name, policy, secrets) in rejected {
        let mut c = case(name.into(), &policy, Signal::Traces, traces.clone(), &genesis, Expect::Err("configure"));
        c.secrets = secrets;
        cases.push(c);
    }
    cases
}

/// wasmtime through otel-audit's runtime, plus a bare wasmtime host for the
/// contexts `audit_format::Context` cannot express (a `prev` that is not 32 bytes).
#[derive(Default)]
struct Wasmtime {
    instance: Option<Instance>,
}

impl Wasmtime {
    fn run(&mut self, case: &Case) -> Outcome {
        let Ok(prev) = <[u8; 32]>::try_from(case.prev.as_slice()) else {
            return bare::run(case);
        };
        if self.instance.as_ref().is_none_or(Instance::is_poisoned) {
            self.instance = Some(support::module().instantiate().expect("instantiate the component"));
        }
        let instance = self.instance.as_mut().expect("an instance");
        let info = match instance.configure(&case.policy, &case.secrets) {
            Ok(info) => info,
            Err(RuntimeError::Policy(m)) => return Outcome::Err { tag: "configure".into(), val: m },
            Err(e) => panic!("{}: wasmtime configure failed: {e}", case.name),
        };
        let ctx = Context {
            received_at_unix_nano: case.received_at_unix_nano,
            head: ChainHead { chain_id: case.chain_id.clone(), seq: case.seq, prev },
            sender: case.sender.clone(),
        };
        let result = match (case.events, case.signal) {
            (true, Signal::Traces) => instance.chain_events(Signal::Traces, &case.request, &ctx),
            (true, Signal::Logs) => instance.chain_events(Signal::Logs, &case.request, &ctx),
            (false, Signal::Traces) => instance.process_traces(&case.request, &ctx),
            (false, Signal::Logs) => instance.process_logs(&case.request, &ctx),
        };
        match result {
            Ok(out) => Outcome::Ok(Box::new(Processed {
                info,
                otlp: out.otlp,
                records: out.records,
                leaves: out.leaves.concat(),
                head: Head { chain_id: out.head.chain_id, seq: out.head.seq, prev: out.head.prev.to_vec() },
                stats: out.stats,
            })),
            Err(RuntimeError::Process(e)) => {
                let (tag, val) = match e {
                    ProcessError::Decode(m) => ("decode", m),
                    ProcessError::Policy(m) => ("policy", m),
                    ProcessError::InvalidContext(m) => ("invalid-context", m),
                };
                Outcome::Err { tag: tag.into(), val }
            }
            Err(e) => panic!("{}: wasmtime failed: {e}", case.name),
        }
    }
}

mod bare {
    //! The component on wasmtime with nothing of otel-audit in between.

    use std::sync::OnceLock;

    use wasmtime::component::{Component, Linker, ResourceTable};
    use wasmtime::{Engine, Store};
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

    use super::{Case, Head, Outcome, Processed, Signal, runtime, support};

    wasmtime::component::bindgen!({ path: "../wit", world: "audit-processor" });

    use self::otel_audit::processor::types as wit;

    struct State {
        wasi: WasiCtx,
        table: ResourceTable,
    }

    impl WasiView for State {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
        }
    }

    /// The `hashing` import, written here from RFC 6962 with `sha2` alone.
    impl otel_audit::processor::hashing::Host for State {
        fn leaf_hash(&mut self, record: Vec<u8>) -> Vec<u8> {
            use sha2::Digest;
            sha2::Sha256::new().chain_update([0u8]).chain_update(&record).finalize().to_vec()
        }
    }

    fn loaded() -> &'static (Engine, Linker<State>, Component) {
        static LOADED: OnceLock<(Engine, Linker<State>, Component)> = OnceLock::new();
        LOADED.get_or_init(|| {
            let engine = Engine::default();
            let component = Component::from_file(&engine, support::wasm_path()).expect("compile the component");
            let mut linker = Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("link WASI");
            otel_audit::processor::hashing::add_to_linker::<State, wasmtime::component::HasSelf<State>>(
                &mut linker,
                |state| state,
            )
            .expect("link the hashing import");
            (engine, linker, component)
        })
    }

    pub(super) fn run(case: &Case) -> Outcome {
        let (engine, linker, component) = loaded();
        let state = State { wasi: WasiCtx::builder().build(), table: ResourceTable::new() };
        let mut store = Store::new(engine, state);
        let bindings = AuditProcessor::instantiate(&mut store, component, linker).expect("instantiate");
        let processor = bindings.otel_audit_processor_processor();
        let configured = processor.call_configure(&mut store, &case.policy, &case.secrets);
        let info = match configured.unwrap_or_else(|e| panic!("{}: bare wasmtime trapped: {e:#}", case.name)) {
            Ok(info) => info,
            Err(m) => return Outcome::Err { tag: "configure".into(), val: m },
        };
        let ctx = wit::Context {
            received_at_unix_nano: case.received_at_unix_nano,
            head: wit::ChainHead { chain_id: case.chain_id.clone(), seq: case.seq, prev: case.prev.clone() },
            sender: case.sender.clone().map(|s| wit::Sender {
                protocol: s.protocol,
                address: s.address,
                tls: s.tls,
                principal: s.principal,
                certificate_subject: s.certificate_subject,
                certificate_sans: s.certificate_sans,
            }),
        };
        let result = match (case.events, case.signal) {
            (true, Signal::Traces) => processor.call_chain_events(&mut store, wit::Signal::Traces, &case.request, &ctx),
            (true, Signal::Logs) => processor.call_chain_events(&mut store, wit::Signal::Logs, &case.request, &ctx),
            (false, Signal::Traces) => processor.call_process_traces(&mut store, &case.request, &ctx),
            (false, Signal::Logs) => processor.call_process_logs(&mut store, &case.request, &ctx),
        };
        match result.unwrap_or_else(|e| panic!("{}: bare wasmtime trapped: {e:#}", case.name)) {
            Ok(out) => Outcome::Ok(Box::new(Processed {
                info: runtime::PolicyInfo {
                    digest: info.digest,
                    pipeline: info.pipeline,
                    key_id: info.key_id,
                    rules: info
                        .rules
                        .into_iter()
                        .map(|r| runtime::Rule { id: r.id, description: r.description })
                        .collect(),
                },
                otlp: out.otlp,
                records: out.records,
                leaves: out.leaves,
                head: Head { chain_id: out.head.chain_id, seq: out.head.seq, prev: out.head.prev },
                stats: runtime::Stats {
                    received: out.stats.received,
                    kept: out.stats.kept,
                    dropped: out.stats.dropped,
                    redacted: out.stats.redacted,
                    violations: out.stats.violations,
                    rule_hits: out.stats.rule_hits,
                },
            })),
            Err(wit::Error::Decode(m)) => Outcome::Err { tag: "decode".into(), val: m },
            Err(wit::Error::Policy(m)) => Outcome::Err { tag: "policy".into(), val: m },
            Err(wit::Error::InvalidContext(m)) => Outcome::Err { tag: "invalid-context".into(), val: m },
        }
    }
}

/// Runs every case through one `node tests/jco/run.mjs` process.
fn run_jco(node: &str, script: &Path, cases: &[Case]) -> Vec<Outcome> {
    let job = json!({
        "cases": cases.iter().map(|c| json!({
            "name": c.name,
            "policy": c.policy,
            "secrets": c.secrets.iter().map(|(id, key)| json!([id, hex::encode(key)])).collect::<Vec<_>>(),
            "signal": match c.signal { Signal::Traces => "traces", Signal::Logs => "logs" },
            "chain_events": c.events,
            "request_b64": B64.encode(&c.request),
            "received_at_unix_nano": c.received_at_unix_nano.to_string(),
            "chain_id": c.chain_id,
            "seq": c.seq.to_string(),
            "prev_hex": hex::encode(&c.prev),
            "sender": c.sender.as_ref().map(|s| json!({
                "protocol": s.protocol,
                "address": s.address,
                "tls": s.tls,
                "principal": s.principal,
                "certificate_subject": s.certificate_subject,
                "certificate_sans": s.certificate_sans,
            })),
        })).collect::<Vec<_>>(),
    });
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (job_path, results_path) = (dir.path().join("job.json"), dir.path().join("results.jsonl"));
    std::fs::write(&job_path, serde_json::to_vec(&job).expect("the job serializes")).expect("write the job");
    let out = Command::new(node).arg(script).arg(&job_path).arg(&results_path).output().unwrap_or_else(|e| {
        panic!("cannot run `{node} {}` ({e}): install Node.js 20+ and run `make jco`", script.display())
    });
    assert!(
        out.status.success(),
        "`node {}` failed ({}); if a module is missing, run `make jco`:\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&results_path).expect("run.mjs wrote its results");
    text.lines()
        .zip(cases)
        .enumerate()
        .map(|(i, (line, case))| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("case {i} ({}): jco result is not JSON ({e}): {line}", case.name));
            parse_jco(&value).unwrap_or_else(|e| panic!("case {i} ({}): jco result {e}: {line:.2000}", case.name))
        })
        .collect()
}

fn parse_jco(value: &Value) -> Result<Outcome, String> {
    if let Some(trap) = value.get("trap") {
        return Err(format!("is a trap under jco: {}", trap.as_str().unwrap_or_default()));
    }
    if let Some(err) = value.get("err") {
        return Ok(Outcome::Err { tag: string(err, "tag")?, val: string(err, "val")? });
    }
    let ok = value.get("ok").ok_or("has neither ok, err nor trap")?;
    let info = field(ok, "info")?;
    let key_id = match field(info, "key_id")? {
        Value::Null => None,
        v => Some(v.as_str().ok_or("info.key_id is not a string")?.to_owned()),
    };
    let rules = array(info, "rules")?
        .iter()
        .map(|r| match r.as_array().map(Vec::as_slice) {
            Some([Value::String(id), Value::String(description)]) => {
                Ok(runtime::Rule { id: id.clone(), description: description.clone() })
            }
            _ => Err(format!("has a malformed rule {r}")),
        })
        .collect::<Result<_, _>>()?;
    let head = field(ok, "head")?;
    let stats = field(ok, "stats")?;
    Ok(Outcome::Ok(Box::new(Processed {
        info: runtime::PolicyInfo {
            digest: string(info, "digest")?,
            pipeline: string(info, "pipeline")?,
            key_id,
            rules,
        },
        otlp: b64(&string(ok, "otlp_b64")?)?,
        records: array(ok, "records_b64")?
            .iter()
            .map(|r| b64(r.as_str().ok_or("records_b64 holds a non-string")?))
            .collect::<Result<_, _>>()?,
        leaves: unhex(&string(ok, "leaves_hex")?)?,
        head: Head {
            chain_id: string(head, "chain_id")?,
            seq: u64_of(field(head, "seq")?)?,
            prev: unhex(&string(head, "prev_hex")?)?,
        },
        stats: runtime::Stats {
            received: u64_of(field(stats, "received")?)?,
            kept: u64_of(field(stats, "kept")?)?,
            dropped: u64_of(field(stats, "dropped")?)?,
            redacted: u64_of(field(stats, "redacted")?)?,
            violations: u64_of(field(stats, "violations")?)?,
            rule_hits: array(stats, "rule_hits")?.iter().map(u64_of).collect::<Result<_, _>>()?,
        },
    })))
}

fn field<'v>(v: &'v Value, key: &str) -> Result<&'v Value, String> {
    v.get(key).ok_or_else(|| format!("lacks {key}"))
}

fn string(v: &Value, key: &str) -> Result<String, String> {
    field(v, key)?.as_str().map(str::to_owned).ok_or_else(|| format!("has a non-string {key}"))
}

fn array<'v>(v: &'v Value, key: &str) -> Result<&'v Vec<Value>, String> {
    field(v, key)?.as_array().ok_or_else(|| format!("has a non-array {key}"))
}

/// u64s cross as decimal strings (a JSON number would lose bits past 2^53).
fn u64_of(v: &Value) -> Result<u64, String> {
    v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| format!("has {v} where a u64 string belongs"))
}

fn b64(s: &str) -> Result<Vec<u8>, String> {
    B64.decode(s).map_err(|e| format!("has bad base64 ({e})"))
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    hex::decode(s).map_err(|e| format!("has bad hex ({e})"))
}

/// Whether wasmtime's outcome is what the case was built to show.
fn check_expectation(case: &Case, outcome: &Outcome) -> Result<(), String> {
    match (case.expect, outcome) {
        (Expect::Either, _) => Ok(()),
        (Expect::Kept(min), Outcome::Ok(p)) if p.stats.kept >= min => Ok(()),
        (Expect::Kept(min) | Expect::KeptWith(min, _), Outcome::Ok(p)) if p.stats.kept < min => {
            Err(format!("kept {} records, expected at least {min}", p.stats.kept))
        }
        (Expect::KeptWith(_, needles), Outcome::Ok(p)) => {
            let records: Vec<String> = p.records.iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect();
            match needles.iter().find(|n| !records.iter().any(|r| r.contains(*n))) {
                None => Ok(()),
                Some(n) => Err(format!("no record contains {n:?}")),
            }
        }
        (Expect::Err(tag), Outcome::Err { tag: got, val }) if got == tag => {
            if val.is_empty() {
                Err(format!("{tag} error with an empty message"))
            } else {
                Ok(())
            }
        }
        (expect, got) => Err(format!("expected {expect:?}, got {}", describe(got))),
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok(p) => format!("ok ({} kept of {})", p.stats.kept, p.stats.received),
        Outcome::Err { tag, val } => format!("{tag}({val:?})"),
    }
}

/// Compares two outcomes field by field; the error names the first thing
/// that differs.
fn compare(wasmtime: &Outcome, jco: &Outcome) -> Result<(), String> {
    let (w, j) = match (wasmtime, jco) {
        (Outcome::Ok(w), Outcome::Ok(j)) => (w, j),
        (w, j) if w == j => return Ok(()),
        (w, j) => return Err(format!("wasmtime gave {}, jco gave {}", describe(w), describe(j))),
    };
    if w.info != j.info {
        return Err(format!("policy info differs:\nwasmtime {:?}\njco      {:?}", w.info, j.info));
    }
    if w.records.len() != j.records.len() {
        return Err(format!("wasmtime made {} records, jco {}", w.records.len(), j.records.len()));
    }
    for (n, (a, b)) in w.records.iter().zip(&j.records).enumerate() {
        if a != b {
            return Err(format!(
                "record {n} differs:\nwasmtime {}\njco      {}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            ));
        }
    }
    if w.otlp != j.otlp {
        let at = w.otlp.iter().zip(&j.otlp).position(|(a, b)| a != b).unwrap_or(w.otlp.len().min(j.otlp.len()));
        return Err(format!(
            "OTLP output differs at byte {at} (wasmtime {} bytes, jco {} bytes)",
            w.otlp.len(),
            j.otlp.len()
        ));
    }
    if w.leaves != j.leaves {
        return Err(format!(
            "leaves differ:\nwasmtime {}\njco      {}",
            hex::encode(&w.leaves),
            hex::encode(&j.leaves)
        ));
    }
    if w.head != j.head {
        return Err(format!("head differs: wasmtime {:?}, jco {:?}", w.head, j.head));
    }
    if w.stats != j.stats {
        return Err(format!("stats differ: wasmtime {:?}, jco {:?}", w.stats, j.stats));
    }
    // Every field is covered above; this catches one added later.
    if w != j { Err("outputs differ".into()) } else { Ok(()) }
}

/// The comparison must see a one-byte or one-count difference anywhere.
fn assert_comparison_catches_differences(outcome: &Outcome) {
    let Outcome::Ok(base) = outcome else { unreachable!("an ok outcome") };
    type Mutation = fn(&mut Processed);
    let mutations: [(&str, Mutation); 7] = [
        ("a record byte", |p| p.records[1][5] ^= 1),
        ("a dropped record", |p| drop(p.records.pop())),
        ("an OTLP byte", |p| *p.otlp.last_mut().unwrap() ^= 1),
        ("a leaf byte", |p| p.leaves[40] ^= 1),
        ("the head seq", |p| p.head.seq = p.head.seq.wrapping_add(1)),
        ("a rule hit", |p| p.stats.rule_hits[0] += 1),
        ("the policy digest", |p| p.info.digest.push('0')),
    ];
    assert!(compare(outcome, outcome).is_ok());
    for (what, mutate) in mutations {
        let mut changed = base.clone();
        mutate(&mut changed);
        let changed = Outcome::Ok(changed);
        assert!(compare(outcome, &changed).is_err(), "the comparison missed {what}");
    }
    let refused = Outcome::Err { tag: "decode".into(), val: "x".into() };
    assert!(compare(&refused, &Outcome::Err { tag: "decode".into(), val: "y".into() }).is_err());
    assert!(compare(&refused, &Outcome::Err { tag: "policy".into(), val: "x".into() }).is_err());
}
