//! One run: a fresh server, the closed-loop load for a warm-up and the
//! measured window, samples at the window's edges, then the server stopped
//! and its store weighed.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Runtime;

use crate::Env;
use crate::common::cpu::CpuTimes;
use crate::common::load::{ClientStats, Clients, WARMUP};
use crate::sample::{Counters, Sample, Sched, peak_rss};
use crate::servers::Target;

/// What one run measured.
pub struct RunResult {
    pub window: Duration,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Latencies of the OK requests, sorted.
    pub latencies: Vec<Duration>,
    /// Server counters over the window (otel-audit only).
    pub counters: Option<Counters>,
    /// Disk bytes of the store per stored record, after the server stopped.
    pub store_bytes_per_record: Option<f64>,
    /// VmHWM, bytes.
    pub peak_rss: u64,
    /// CPU seconds over the window of the server, the bench process and
    /// the whole machine; of the server's threads by name (name, count,
    /// seconds).
    pub cpu: CpuTimes,
    pub threads: Vec<(String, usize, f64)>,
    /// The busiest chain worker thread's scheduler times (schedstat).
    pub chain_sched: Sched,
}

/// Starts `target` in `dir`, loads it with `clients` clients sending
/// `pool`, and measures.
pub fn one_run(
    env: &Env,
    runtime: &Runtime,
    target: Target,
    dir: &Path,
    clients: usize,
    pool: &Arc<Vec<Bytes>>,
) -> Result<RunResult, String> {
    let server = target.start(env, dir)?;
    let pid = server.process.pid();

    let window_start = Instant::now() + WARMUP;
    let end = window_start + env.measure;
    let load = Clients::start_tls(runtime, &server.endpoint, server.tls.as_ref(), pool, clients, window_start, end);
    std::thread::sleep(window_start.saturating_duration_since(Instant::now()));
    let before = Sample::take(pid, server.metrics, env);
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let after = Sample::take(pid, server.metrics, env);

    let stats = load.finish(runtime)?;
    let last = server.metrics.map(Counters::scrape);
    let peak_rss = peak_rss(pid);
    server.process.stop()?;

    let store_bytes_per_record = match (&server.store, &last) {
        (Some(store), Some(last)) if last.stored_records > 0.0 => {
            let bytes = dir_bytes(store);
            // The stores of earlier runs would only fill the disk.
            let _ = std::fs::remove_dir_all(store);
            Some(bytes as f64 / last.stored_records)
        }
        _ => None,
    };
    let mut result = RunResult::over(env.measure, &before, &after, store_bytes_per_record, peak_rss);
    result.add(stats);
    Ok(result)
}

impl RunResult {
    /// What the samples at the window's edges say, with no requests yet.
    fn over(
        window: Duration,
        before: &Sample,
        after: &Sample,
        store_bytes_per_record: Option<f64>,
        peak_rss: u64,
    ) -> RunResult {
        let counters = match (before.counters, after.counters) {
            (Some(b), Some(a)) => Some(a.minus(&b)),
            _ => None,
        };
        let threads = after
            .threads
            .iter()
            .map(|(name, (count, seconds))| {
                let before = before.threads.get(name).map_or(0.0, |(_, s)| *s);
                (name.clone(), *count, seconds - before)
            })
            .collect();
        let chain_sched = after
            .chain_sched
            .iter()
            .map(|(tid, a)| {
                let b = before.chain_sched.get(tid).copied().unwrap_or_default();
                Sched { running: a.running - b.running, waiting: a.waiting - b.waiting }
            })
            .max_by(|x, y| x.running.total_cmp(&y.running))
            .unwrap_or_default();
        RunResult {
            window,
            ok: 0,
            errors: 0,
            first_error: None,
            latencies: Vec::new(),
            counters,
            store_bytes_per_record,
            peak_rss,
            cpu: after.cpu.since(&before.cpu),
            threads,
            chain_sched,
        }
    }

    /// Adds what the clients did.
    fn add(&mut self, clients: Vec<ClientStats>) {
        for stats in clients {
            self.ok += stats.ok;
            self.errors += stats.errors;
            self.first_error = self.first_error.take().or(stats.first_error);
            self.latencies.extend(stats.latencies);
        }
        self.latencies.sort_unstable();
    }
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
