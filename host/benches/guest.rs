//! `make bench`: the audit processor's throughput on one core, as the
//! component (wasmtime, through `otel_audit::runtime`) and natively
//! (`audit_processor::Processor`), with the same policy and the same bytes,
//! and the fixed cost of one call.
//!
//! Each throughput row rotates over several pre-encoded batches and carries
//! the chain head from each output to the next call, as the host does.
//! Samples of the two engines alternate within one time budget, so load on
//! the machine hits both alike; a row reports the median sample.
//!
//! Then the filter's two forms at the 5 % mix, in one run: soc2-audit.yaml
//! (the legacy `include`), the same policy with the equivalent OTTL filter
//! of soc2-audit-ottl.yaml in its place, and soc2-audit-ottl.yaml whole
//! (OTTL filter and transform statements); the six engines' samples
//! alternate, and the OTTL filter's cost over the legacy one is printed.
//!
//! Knobs: `OTEL_AUDIT_WASM` (the component), `OTEL_AUDIT_CACHE_DIR` (module
//! cache), `BENCH_SECONDS` (measuring time per engine and row, default 2),
//! `BENCH_MIX` (`5` or `100`: only the rows of that audit mix, e.g. under
//! `perf record`; `ottl`: only the filter comparison). The "no copy" row
//! runs with `forward-copies` off, as a pipeline without exporters does.

mod common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use audit_processor::Processor;
use audit_processor::api::{ChainHead, Context, Output};
use common::figures::thousands;
use otel_audit::loadgen::{self, BatchSpec};
use otel_audit::runtime::{Instance, Limits, Module, Runtime};
use prost::Message;

/// Spans per batch.
const BATCH: usize = 512;
/// Distinct pre-generated batches each row rotates over.
const BATCHES: u64 = 8;
/// Attributes per span.
const ATTRIBUTES: usize = 10;
/// The shipped policy every row runs.
const POLICY: &str = "collector-config/policies/soc2-audit.yaml";
/// The same policy written with OTTL, whose filter the comparison rows
/// put in the legacy filter's place.
const OTTL_POLICY: &str = "collector-config/policies/soc2-audit-ottl.yaml";
/// The most the OTTL filter may cost over the legacy one, per span.
const OTTL_BUDGET: f64 = 0.15;
/// Warm-up per engine and row.
const WARMUP: Duration = Duration::from_millis(500);
/// Calls per sample of the empty-call rows.
const EMPTY_CALLS: u32 = 2_000;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf();
    let budget = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(2), Duration::from_secs_f64);
    let wasm = std::env::var_os("OTEL_AUDIT_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/wasm32-wasip2/wasm/audit_processor.wasm"));
    if !wasm.exists() {
        eprintln!("error: the component {} does not exist: run `make wasm` (or `make bench`)", wasm.display());
        std::process::exit(1);
    }
    let cache_dir =
        std::env::var_os("OTEL_AUDIT_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target/module-cache"));
    let read = |path: &str| {
        let path = root.join(path);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| fail(&format!("cannot read the policy {}: {e}", path.display())))
    };
    let policy = read(POLICY);
    let ottl_policy = read(OTTL_POLICY);

    let runtime = Runtime::new(Limits::default(), Some(cache_dir)).unwrap_or_else(|e| fail(&e.to_string()));
    let module = runtime.load(&wasm).unwrap_or_else(|e| fail(&e.to_string()));
    let mut engines = pair(&module, &policy);

    println!("otel-audit guest benchmark (single-threaded)");
    println!("  component: {} ({})", wasm.display(), module.digest());
    println!("  policy:    {POLICY}");
    println!(
        "  batches:   {BATCHES} x {BATCH} spans, {ATTRIBUTES} attributes, protobuf pre-encoded; \
         warm-up {:.1} s, then {:.1} s per engine and row, samples alternate, median reported",
        WARMUP.as_secs_f64(),
        budget.as_secs_f64()
    );
    println!();

    let only = std::env::var("BENCH_MIX").ok();
    if only.as_deref() == Some("ottl") {
        filter_forms(&module, &policy, &ottl_policy, budget);
        return;
    }
    let mut rows = Vec::new();
    // The rows: an audit mix, and whether the output carries the OTLP copy
    // of the kept records (a pipeline with exporters) or not (the store only).
    let mixes = [("5 % audit", 0.05, true), ("100 % audit", 1.0, true), ("100 %, no copy", 1.0, false)];
    for (label, audit_ratio, copies) in mixes {
        if only.as_deref().is_some_and(|mix| !label.starts_with(&format!("{mix} "))) {
            continue;
        }
        for engine in &mut engines {
            engine.forward_copies(copies);
        }
        let batches: Vec<Vec<u8>> = (1..=BATCHES)
            .map(|seed| {
                let spec = BatchSpec { records: BATCH, audit_ratio, attributes: ATTRIBUTES, varied: false, seed };
                loadgen::traces(&spec).encode_to_vec()
            })
            .collect();
        same_output(&mut engines, &batches[0], label);
        let [wasm, native]: [Measured; 2] =
            throughput(&mut engines, &batches, budget).try_into().unwrap_or_else(|_| unreachable!());
        rows.push((label, batches.iter().map(Vec::len).sum::<usize>() / batches.len(), wasm, native));
    }

    if only.is_some() {
        for (label, _, wasm, native) in &rows {
            let (w, n) = (wasm.spans_per_sec(), native.spans_per_sec());
            println!(
                "{label}: wasm {} spans/s, native {} spans/s, wasm/native {:.2}",
                thousands(w),
                thousands(n),
                w / n
            );
        }
        if only.as_deref() == Some("5") {
            println!();
            filter_forms(&module, &policy, &ottl_policy, budget);
        }
        return;
    }
    let [wasm_empty, native_empty] = empty_calls(&mut engines, budget);

    println!(
        "{:<15} {:>7} {:>6} | {:>13} {:>8} | {:>13} {:>8} | {:>10}",
        "batch", "in KiB", "kept", "wasm spans/s", "rec MB/s", "native spans/s", "rec MB/s", "wasm/native"
    );
    println!("{}", "-".repeat(101));
    for (label, bytes, wasm, native) in &rows {
        println!(
            "{:<15} {:>7.1} {:>5.1}% | {:>13} {:>8.1} | {:>13} {:>8.1} | {:>10.2}",
            label,
            *bytes as f64 / 1024.0,
            100.0 * wasm.kept_fraction(),
            thousands(wasm.spans_per_sec()),
            wasm.record_mb_per_sec(),
            thousands(native.spans_per_sec()),
            native.record_mb_per_sec(),
            wasm.spans_per_sec() / native.spans_per_sec()
        );
    }
    println!();
    println!("{:<40} {:>10} {:>10} {:>12}", "empty call (0-byte request)", "wasm us", "native us", "wasm/native");
    println!("{}", "-".repeat(75));
    println!(
        "{:<40} {:>10.3} {:>10.3} {:>12.1}",
        "per call, median of samples",
        wasm_empty * 1e6,
        native_empty * 1e6,
        wasm_empty / native_empty
    );
    println!();
    println!(
        "spans/s counts every span received (kept or dropped); rec MB/s is canonical record output \
         (RFC 8785 JSON, what is hashed and stored); kept = kept / received."
    );
    for (label, _, wasm, native) in &rows {
        println!(
            "  {label}: {} + {} samples, {:.2} s + {:.2} s measured; sample spread (min..max spans/s) wasm {}..{}, native {}..{}",
            wasm.rates.len(),
            native.rates.len(),
            wasm.elapsed.as_secs_f64(),
            native.elapsed.as_secs_f64(),
            thousands(wasm.min()),
            thousands(wasm.max()),
            thousands(native.min()),
            thousands(native.max()),
        );
    }
    println!();
    filter_forms(&module, &policy, &ottl_policy, budget);
}

/// The 5 % rows of the legacy filter, the equivalent OTTL filter and the
/// OTTL policy whole, their samples alternating in one time budget, with
/// the OTTL filter's cost over the legacy one. Fails when the OTTL and
/// legacy policies keep different records.
fn filter_forms(module: &Module, policy: &str, ottl_policy: &str, budget: Duration) {
    let ottl_filter = with_filter_of(policy, ottl_policy);
    let forms = [
        ("legacy filter", "soc2-audit.yaml", policy),
        ("OTTL filter", "soc2-audit.yaml, soc2-audit-ottl.yaml's filter", ottl_filter.as_str()),
        ("OTTL policy", "soc2-audit-ottl.yaml (filter and transform)", ottl_policy),
    ];
    let batches: Vec<Vec<u8>> = (1..=BATCHES)
        .map(|seed| {
            let spec = BatchSpec { records: BATCH, audit_ratio: 0.05, attributes: ATTRIBUTES, varied: false, seed };
            loadgen::traces(&spec).encode_to_vec()
        })
        .collect();
    let mut engines = Vec::new();
    let mut kept = Vec::new();
    for (label, _, text) in forms {
        let mut pair = pair(module, text);
        same_output(&mut pair, &batches[0], label);
        kept.push(pair[0].call_fresh(&batches[0]).records.len());
        engines.extend(pair);
    }
    if kept.iter().any(|k| *k != kept[0]) {
        fail(&format!("the filter forms keep different numbers of records ({kept:?}); not benchmarking"));
    }
    let measured = throughput(&mut engines, &batches, budget);

    println!("5 % audit, by filter form (samples of all six alternate)");
    println!("{:<14} {:>13} {:>14} {:>11}  policy", "filter", "wasm spans/s", "native spans/s", "wasm/native");
    println!("{}", "-".repeat(104));
    for ((label, source, _), m) in forms.iter().zip(measured.chunks(2)) {
        let (w, n) = (m[0].spans_per_sec(), m[1].spans_per_sec());
        println!("{label:<14} {:>13} {:>14} {:>11.2}  {source}", thousands(w), thousands(n), w / n);
    }
    let rate = |form: usize, engine: usize| measured[form * 2 + engine].spans_per_sec();
    for (form, what) in [(1, "OTTL filter / legacy filter"), (2, "OTTL policy / legacy policy")] {
        let (w, n) = (rate(form, 0) / rate(0, 0), rate(form, 1) / rate(0, 1));
        println!(
            "{what}: spans/s wasm {w:.3}, native {n:.3}; cost per span wasm {:+.1} %, native {:+.1} %",
            100.0 * (1.0 / w - 1.0),
            100.0 * (1.0 / n - 1.0)
        );
    }
    let cost = rate(0, 0) / rate(1, 0) - 1.0;
    println!(
        "OTTL filter cost in wasm: {:+.1} % (budget {:.0} %): {}",
        100.0 * cost,
        100.0 * OTTL_BUDGET,
        if cost <= OTTL_BUDGET { "within" } else { "OVER" }
    );
    for ((label, _, _), m) in forms.iter().zip(measured.chunks(2)) {
        println!(
            "  {label}: {} + {} samples; spread (min..max spans/s) wasm {}..{}, native {}..{}",
            m[0].rates.len(),
            m[1].rates.len(),
            thousands(m[0].min()),
            thousands(m[0].max()),
            thousands(m[1].min()),
            thousands(m[1].max()),
        );
    }
}

/// `policy` with its `filter:` section replaced by `from`'s.
fn with_filter_of(policy: &str, from: &str) -> String {
    use serde_yaml_ng::Value;
    let parse = |text: &str| -> serde_yaml_ng::Mapping {
        serde_yaml_ng::from_str(text).unwrap_or_else(|e| fail(&format!("a policy does not parse: {e}")))
    };
    let mut policy = parse(policy);
    let filter = parse(from).remove("filter").unwrap_or_else(|| fail("the OTTL policy has no filter section"));
    policy.insert(Value::from("filter"), filter);
    serde_yaml_ng::to_string(&policy).unwrap_or_else(|e| fail(&e.to_string()))
}

/// The component and the native processor, configured with `policy`.
fn pair(module: &Module, policy: &str) -> [Engine; 2] {
    let mut instance = module.instantiate().unwrap_or_else(|e| fail(&e.to_string()));
    instance.configure(policy, &[]).unwrap_or_else(|e| fail(&format!("wasm configure: {e}")));
    let mut native = Processor::new();
    native.configure(policy, &[]).unwrap_or_else(|e| fail(&format!("native configure: {e}")));
    [
        Engine { name: "wasm", kind: Kind::Wasm(instance), ctx: genesis("bench-wasm") },
        Engine { name: "native", kind: Kind::Native(Box::new(native)), ctx: genesis("bench-native") },
    ]
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

fn genesis(chain_id: &str) -> Context {
    Context { received_at_unix_nano: 1_795_000_000_000_000_000, head: ChainHead::genesis(chain_id), sender: None }
}

enum Kind {
    Wasm(Instance),
    Native(Box<Processor>),
}

/// One processor with its own chain.
struct Engine {
    name: &'static str,
    kind: Kind,
    ctx: Context,
}

impl Engine {
    /// Turns the kept records' OTLP copy on or off (`forward-copies`).
    fn forward_copies(&mut self, enabled: bool) {
        match &mut self.kind {
            Kind::Wasm(instance) => instance.forward_copies(enabled).unwrap_or_else(|e| fail(&e.to_string())),
            Kind::Native(processor) => processor.forward_copies(enabled),
        }
    }

    /// Processes one batch from a fresh chain, leaving this engine's chain
    /// as it was.
    fn call_fresh(&mut self, request: &[u8]) -> Output {
        let saved = std::mem::replace(&mut self.ctx, genesis("bench-check"));
        let out = self.call(request);
        self.ctx = saved;
        out
    }

    /// Processes one batch and advances the chain head and clock as a host does.
    fn call(&mut self, request: &[u8]) -> Output {
        let out = match &mut self.kind {
            Kind::Wasm(instance) => {
                support::as_native(instance.process_traces(request, &self.ctx).unwrap_or_else(|e| fail(&e.to_string())))
            }
            Kind::Native(processor) => {
                processor.process_traces(request, &self.ctx).unwrap_or_else(|e| fail(&e.to_string()))
            }
        };
        self.ctx.head = out.head.clone();
        self.ctx.received_at_unix_nano += 1_000_000;
        out
    }
}

/// Both engines give the same records from the same batch and head (the
/// bench measures the same work on both).
fn same_output(engines: &mut [Engine; 2], request: &[u8], label: &str) {
    let [wasm, native] = engines;
    if wasm.call_fresh(request) != native.call_fresh(request) {
        fail(&format!("{label}: the wasm and native outputs differ for the same batch; not benchmarking"));
    }
}

/// What one engine did in one row.
#[derive(Default)]
struct Measured {
    /// Spans per second of each sample.
    rates: Vec<f64>,
    received: u64,
    kept: u64,
    record_bytes: u64,
    elapsed: Duration,
}

impl Measured {
    fn spans_per_sec(&self) -> f64 {
        median(&self.rates)
    }

    fn min(&self) -> f64 {
        self.rates.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.rates.iter().copied().fold(0.0, f64::max)
    }

    fn kept_fraction(&self) -> f64 {
        self.kept as f64 / self.received.max(1) as f64
    }

    /// Record bytes per second at the median span rate.
    fn record_mb_per_sec(&self) -> f64 {
        let bytes_per_span = self.record_bytes as f64 / self.received.max(1) as f64;
        bytes_per_span * self.spans_per_sec() / 1e6
    }
}

/// Alternates one sample (one pass over every batch) per engine until each
/// has run for `budget`, after a warm-up.
fn throughput(engines: &mut [Engine], batches: &[Vec<u8>], budget: Duration) -> Vec<Measured> {
    let pass = |engine: &mut Engine, measured: Option<&mut Measured>| {
        let start = Instant::now();
        let (mut received, mut kept, mut record_bytes) = (0, 0, 0);
        for batch in batches {
            let out = engine.call(batch);
            received += out.stats.received;
            kept += out.stats.kept;
            record_bytes += out.records.iter().map(|r| r.len() as u64).sum::<u64>();
            black_box(out);
        }
        let elapsed = start.elapsed();
        if let Some(m) = measured {
            m.rates.push(received as f64 / elapsed.as_secs_f64());
            m.received += received;
            m.kept += kept;
            m.record_bytes += record_bytes;
            m.elapsed += elapsed;
        }
    };
    for engine in engines.iter_mut() {
        let start = Instant::now();
        while start.elapsed() < WARMUP {
            pass(engine, None);
        }
    }
    let mut measured: Vec<Measured> = engines.iter().map(|_| Measured::default()).collect();
    while measured.iter().any(|m| m.elapsed < budget) {
        for (engine, m) in engines.iter_mut().zip(measured.iter_mut()) {
            if m.elapsed < budget {
                pass(engine, Some(m));
            }
        }
    }
    measured
}

/// Seconds per call with an empty request, median of samples.
fn empty_calls(engines: &mut [Engine; 2], budget: Duration) -> [f64; 2] {
    let empty = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::default().encode_to_vec();
    assert!(empty.is_empty());
    let sample = |engine: &mut Engine| {
        let start = Instant::now();
        for _ in 0..EMPTY_CALLS {
            black_box(engine.call(black_box(&empty)));
        }
        start.elapsed()
    };
    for engine in engines.iter_mut() {
        let start = Instant::now();
        while start.elapsed() < WARMUP {
            sample(engine);
        }
    }
    let mut per_call = [Vec::new(), Vec::new()];
    let mut spent = [Duration::ZERO; 2];
    while spent.iter().any(|s| *s < budget) {
        for ((engine, times), spent) in engines.iter_mut().zip(per_call.iter_mut()).zip(spent.iter_mut()) {
            if *spent < budget {
                let elapsed = sample(engine);
                *spent += elapsed;
                times.push(elapsed.as_secs_f64() / f64::from(EMPTY_CALLS));
            }
        }
    }
    for (engine, times) in engines.iter().zip(&per_call) {
        assert!(!times.is_empty(), "{} took no samples", engine.name);
    }
    [median(&per_call[0]), median(&per_call[1])]
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
