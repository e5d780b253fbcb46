//! The tables (request latency without and with swaps; trigger to
//! serving), the verdicts of `otel-audit verify`, and the failures that
//! make the bench exit 1.

use crate::common::cpu::cores;
use crate::common::figures::{millis, percentile, thousands};
use crate::common::load::SPANS;
use crate::scenario::Outcome;
use crate::slices::LoadResult;
use crate::swaps::Swaps;
use crate::{AUDIT_RATIO, CLIENTS, DEBOUNCE, POLL, SLICE};

pub fn print(outcome: &Outcome) {
    println!();
    latency(outcome);
    println!();
    triggers(outcome);
    println!();
    for (name, verdict) in &outcome.verified {
        match verdict {
            Ok(summary) => println!("verify {name}: OK ({summary})"),
            Err(error) => println!("verify {name}: FAILED: {error}"),
        }
    }
}

/// What went wrong: failed requests, failed swaps, stores that do not verify.
pub fn failures(outcome: &Outcome) -> Vec<String> {
    let load = &outcome.load;
    let mut failures = Vec::new();
    for (phase, r) in [("without swaps", &load.quiet), ("with swaps", &load.swapping)] {
        if r.errors > 0 {
            failures.push(format!("{phase}: {} failed requests", r.errors));
        }
    }
    if load.outside.errors > 0 {
        failures
            .push(format!("{} failed requests outside the measured slices (warm-up, the end)", load.outside.errors));
    }
    if let Some(error) = &load.outside.first_error {
        failures.push(format!("first failed request: {error}"));
    }
    for (name, swaps) in trigger_rows(outcome) {
        if swaps.failed > 0 {
            failures.push(format!(
                "{name}: {} swaps failed; first: {}",
                swaps.failed,
                swaps.first_error.as_deref().unwrap_or_default()
            ));
        }
    }
    if load.swaps.done() == 0 {
        failures.push("no swap was done under load".to_owned());
    }
    for (name, verdict) in &outcome.verified {
        if let Err(error) = verdict {
            failures.push(format!("verify {name}: {error}"));
        }
    }
    failures
}

fn latency(outcome: &Outcome) {
    let (quiet, swapping) = (&outcome.load.quiet, &outcome.load.swapping);
    println!(
        "Request latency, same server and load, without and with continuous policy swaps ({:.0} s slices, interleaved)",
        SLICE.as_secs_f64()
    );
    println!(
        "{:<24} | {:>7} {:>9} | {:>7} {:>7} {:>7} | {:>6} {:>7} | {:>6} | {:>6} {:>7} {:>6}",
        "slices",
        "req/s",
        "spans/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "failed",
        "kept %",
        "swaps",
        "server",
        "loadgen",
        "other"
    );
    println!("{}", "-".repeat(116));
    latency_row("no swaps", quiet, None);
    latency_row("swap every 100 ms", swapping, Some(&outcome.load.swaps));
    let ratio = |q: f64| millis(percentile(&swapping.latencies, q)) / millis(percentile(&quiet.latencies, q));
    println!();
    println!("p99 with swaps / p99 without: {:.2}   (p50: {:.2})", ratio(0.99), ratio(0.50));
    println!(
        "req/s, spans/s: requests answered OK in the window, and their spans; latency: send to OK at the client; \
         failed: requests not answered OK; kept %: spans the policy kept (server metrics; A and B each keep about \
         half of the {:.0} % audit records); swaps: reloads applied in the window, each on every chain (and any that failed); server / loadgen / other: \
         CPU of the server, of this bench, and of every other process, as % of one core ({} cores: {} %).",
        AUDIT_RATIO * 100.0,
        cores(),
        100 * cores()
    );
    for (name, r) in [("without swaps", quiet), ("with swaps", swapping)] {
        if r.other_cpu > 0.2 * r.window.as_secs_f64() {
            println!(
                "  WARNING: other processes used {:.0} % of a core {name}: the figures are disturbed, rerun on an idle \
                 machine",
                100.0 * r.other_cpu / r.window.as_secs_f64()
            );
        }
    }
}

fn latency_row(name: &str, r: &LoadResult, swaps: Option<&Swaps>) {
    let seconds = r.window.as_secs_f64();
    println!(
        "{:<24} | {:>7} {:>9} | {:>7.2} {:>7.2} {:>7.2} | {:>6} {:>7.2} | {:>6} | {:>5.0}% {:>6.0}% {:>5.0}%",
        name,
        thousands(r.ok as f64 / seconds),
        thousands(r.ok as f64 * SPANS as f64 / seconds),
        millis(percentile(&r.latencies, 0.50)),
        millis(percentile(&r.latencies, 0.99)),
        millis(r.latencies.last().copied()),
        r.errors,
        100.0 * r.kept / r.received.max(1.0),
        swaps.map_or("-".to_owned(), Swaps::count),
        100.0 * r.server_cpu / seconds,
        100.0 * r.loadgen_cpu / seconds,
        100.0 * r.other_cpu / seconds,
    );
}

/// The rows of the trigger table: each kind of swap, named.
fn trigger_rows(outcome: &Outcome) -> [(String, &Swaps); 5] {
    [
        (format!("admin, under load ({CLIENTS} clients)"), &outcome.load.swaps),
        ("admin, idle".to_owned(), &outcome.idle),
        (format!("file rename, idle (debounce {} ms)", DEBOUNCE.as_millis()), &outcome.files),
        ("module swap, admin, from the module cache".to_owned(), &outcome.modules.cached),
        ("module swap, admin, compiled (new module)".to_owned(), &outcome.modules.compiled),
    ]
}

fn triggers(outcome: &Outcome) {
    println!("Trigger -> new policy (or module) serving on every chain");
    println!(
        "{:<42} | {:>5} | {:>7} {:>7} {:>7} | {:>13}",
        "trigger", "swaps", "p50 ms", "p99 ms", "max ms", "server p50 ms"
    );
    println!("{}", "-".repeat(91));
    for (name, swaps) in trigger_rows(outcome) {
        swaps.row(&name);
    }
    println!();
    println!(
        "admin: the client's time for POST /admin/reload, which answers once every chain has appended its \
         policy_change record and serves the new policy (the candidate is read, configured and checked first). \
         file: from the rename of the policy file into place until GET /admin/status (polled every {} ms) shows \
         the new policy digest; it includes the {} ms debounce. server: the reload's own elapsed_ms (from the \
         trigger, i.e. after the debounce, to every chain serving). p99 of fewer than 100 swaps is their maximum.",
        POLL.as_millis(),
        DEBOUNCE.as_millis()
    );
    for note in &outcome.modules.notes {
        println!("  {note}");
    }
}
