//! The tables: throughput, latency and memory of every run beside rotel's
//! with the same load; then where the time went.

use crate::common::cpu::cores;
use crate::common::figures::{millis, percentile, thousands};
use crate::common::load::SPANS;
use crate::measure::RunResult;
use crate::servers::Target;

/// One run and what it measured.
pub struct Row {
    pub mix: &'static str,
    pub clients: usize,
    pub target: Target,
    pub result: RunResult,
}

impl Row {
    /// `rotel 5 % audit 8 clients`.
    fn name(&self) -> String {
        format!("{} {} audit {} clients", self.target.name(), self.mix, self.clients)
    }
}

pub fn print(rows: &[Row], shards: u32) {
    throughput(rows);
    println!();
    where_the_time_goes(rows, shards);
}

fn throughput(rows: &[Row]) {
    println!(
        "{:<6} {:>7} {:<10} | {:>9} {:>9} {:>7} | {:>7} {:>7} {:>7} | {:>6} | {:>8} {:>6} | {:>8}",
        "audit",
        "clients",
        "server",
        "spans/s",
        "stored/s",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "errors",
        "peak RSS",
        "B/rec",
        "vs rotel"
    );
    println!("{}", "-".repeat(122));
    for row in rows {
        let r = &row.result;
        let seconds = r.window.as_secs_f64();
        let spans = r.ok as f64 * SPANS as f64 / seconds;
        let stored = r.counters.map_or("-".to_owned(), |c| thousands(c.stored_records / seconds));
        println!(
            "{:<6} {:>7} {:<10} | {:>9} {:>9} {:>7} | {:>7.2} {:>7.2} {:>7.2} | {:>6} | {:>4} MiB {:>6} | {:>8}",
            row.mix,
            row.clients,
            row.target.name(),
            thousands(spans),
            stored,
            thousands(r.ok as f64 / seconds),
            millis(percentile(&r.latencies, 0.50)),
            millis(percentile(&r.latencies, 0.99)),
            millis(percentile(&r.latencies, 0.999)),
            r.errors,
            r.peak_rss >> 20,
            r.store_bytes_per_record.map_or("-".to_owned(), |b| format!("{b:.0}")),
            vs_rotel(rows, row),
        );
    }
    println!();
    println!(
        "spans/s: spans in requests answered OK (received, kept or dropped); stored/s: records the store appended \
         (server metrics); req/s: OK requests; latency: send to OK at the client; errors: requests not answered OK; \
         peak RSS: the server's VmHWM; B/rec: store directory bytes per record (segments, checkpoints); \
         vs rotel: OK requests/s over rotel's with the same load. rotel acknowledges before it exports and keeps \
         nothing; otel-audit acknowledges after processing and fsync; +witnesses: otel-audit submitting every \
         checkpoint to two `otel-audit witness` processes (in the background); +tls: otel-audit with TLS 1.3 on its \
         receivers (clients verify its certificate; compare with the otel-audit row above it)."
    );
    for row in rows.iter().filter(|r| r.result.first_error.is_some()) {
        println!("  first error, {}: {}", row.name(), row.result.first_error.as_deref().unwrap_or_default());
    }
}

/// OK requests/s of `row` over rotel's with the same load.
fn vs_rotel(rows: &[Row], row: &Row) -> String {
    let r = &row.result;
    match row.target {
        Target::Rotel => "1".to_owned(),
        Target::OtelAudit | Target::Witnessed | Target::Tls => rows
            .iter()
            .find(|b| b.target == Target::Rotel && b.mix == row.mix && b.clients == row.clients)
            .map(|b| b.result.ok as f64 / b.result.window.as_secs_f64())
            .filter(|base| *base > 0.0)
            .map_or("-".to_owned(), |base| format!("{:.2}", r.ok as f64 / r.window.as_secs_f64() / base)),
    }
}

fn where_the_time_goes(rows: &[Row], shards: u32) {
    println!(
        "Where the time goes, as % of one core over the measured window ({} cores: the machine has {} %)",
        cores(),
        100 * cores()
    );
    println!(
        "{:<6} {:>7} {:<10} | {:>6} {:>7} {:>6} | {:>9} {:>8} {:>8} {:>6} | {:>5} {:>5} {:>5} {:>5} | server threads",
        "audit",
        "clients",
        "server",
        "server",
        "loadgen",
        "other",
        "commits/s",
        "req/comm",
        "fsync ms",
        "ckpt/s",
        "run",
        "queue",
        "off",
        "fsync",
    );
    println!("{}", "-".repeat(140));
    for row in rows {
        let r = &row.result;
        let percent = percent_of(r);
        let (store, chain) = store_columns(r, shards);
        println!(
            "{:<6} {:>7} {:<10} | {:>6} {:>7} {:>6} | {store} | {chain} | {}",
            row.mix,
            row.clients,
            row.target.name(),
            percent(r.cpu.server),
            percent(r.cpu.loadgen),
            percent(r.cpu.other()),
            busiest_threads(r)
        );
    }
    println!();
    println!(
        "server / loadgen: CPU of the server and of this bench process; other: every other process on the machine \
         (noise: a busy machine lowers every figure above). commits/s: group commits with records, one fsync each; \
         req/comm: requests per group commit; fsync ms: mean group-commit fsync; ckpt/s: signed checkpoints (each \
         also fsyncs). run / queue / off: the busiest chain worker thread (it processes and commits serially) on a CPU, \
         runnable but waiting for one, and off CPU (in fsync, or idle waiting for requests); fsync: its wall time \
         in group-commit fsync (overlapping the others). off near fsync: the worker never waits for work, it is the \
         bottleneck."
    );
    disturbed(rows);
    kept(rows);
}

/// CPU seconds as % of one core over the run's window.
fn percent_of(r: &RunResult) -> impl Fn(f64) -> String {
    let seconds = r.window.as_secs_f64();
    move |cpu: f64| format!("{:.0}%", 100.0 * cpu / seconds)
}

/// The store's columns (commits/s, req/comm, fsync ms, ckpt/s) and the
/// chain worker's (run, queue, off, fsync); dashes without commits.
fn store_columns(r: &RunResult, shards: u32) -> (String, String) {
    let seconds = r.window.as_secs_f64();
    let percent = percent_of(r);
    match r.counters {
        Some(c) if c.commits > 0.0 => {
            let sched = r.chain_sched;
            let off = (seconds - sched.running - sched.waiting).max(0.0);
            (
                format!(
                    "{:>9.0} {:>8.1} {:>8.2} {:>6.0}",
                    c.commits / seconds,
                    c.committed_requests / c.commits,
                    1e3 * c.fsync_seconds / c.commits,
                    c.checkpoints / seconds
                ),
                format!(
                    "{:>5} {:>5} {:>5} {:>5}",
                    percent(sched.running),
                    percent(sched.waiting),
                    percent(off),
                    percent(c.fsync_seconds / f64::from(shards))
                ),
            )
        }
        _ => (
            format!("{:>9} {:>8} {:>8} {:>6}", "-", "-", "-", "-"),
            format!("{:>5} {:>5} {:>5} {:>5}", "-", "-", "-", "-"),
        ),
    }
}

/// The server's three busiest threads (by name) above 0.5 % of a core.
fn busiest_threads(r: &RunResult) -> String {
    let percent = percent_of(r);
    let mut threads: Vec<&(String, usize, f64)> =
        r.threads.iter().filter(|t| t.2 > 0.005 * r.window.as_secs_f64()).collect();
    threads.sort_by(|a, b| b.2.total_cmp(&a.2));
    let threads: Vec<String> = threads
        .iter()
        .take(3)
        .map(|(name, count, cpu)| {
            if *count > 1 {
                format!("{name} x{count}: {}", percent(*cpu))
            } else {
                format!("{name}: {}", percent(*cpu))
            }
        })
        .collect();
    threads.join(", ")
}

/// A warning naming the runs in which other processes took over 20 % of a core.
fn disturbed(rows: &[Row]) {
    let disturbed: Vec<String> =
        rows.iter().filter(|r| r.result.cpu.other() > 0.2 * r.result.window.as_secs_f64()).map(Row::name).collect();
    if !disturbed.is_empty() {
        println!(
            "  WARNING: other processes used over 20 % of a core during: {}; those figures are low, rerun on an idle machine",
            disturbed.join("; ")
        );
    }
}

/// What the policy kept and what a stored record weighs, per otel-audit run.
fn kept(rows: &[Row]) {
    for row in rows {
        if let Some(c) = row.result.counters {
            println!(
                "  {} audit, {} clients: kept {:.1} % of {} spans received in the window; {:.0} bytes per record appended",
                row.mix,
                row.clients,
                100.0 * c.kept / c.received.max(1.0),
                thousands(c.received),
                c.stored_bytes / c.stored_records.max(1.0)
            );
        }
    }
}
