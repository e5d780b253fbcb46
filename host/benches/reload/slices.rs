//! The load in slices: a warm-up, then slices of [`SLICE`] alternately
//! without swaps and with a policy swap every [`SWAP_EVERY`]; a request
//! counts in the slice it was answered in, the server's counters and the
//! CPU times are read at every slice's edges.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Runtime;

use crate::common::cpu::{CpuTimes, clock_ticks};
use crate::common::load::{ClientStats, Clients, WARMUP};
use crate::server::Server;
use crate::support::admin;
use crate::swaps::Swaps;
use crate::{CLIENTS, Env, SLICE, SWAP_EVERY};

/// What the load measured without and with swaps, the swaps, and the
/// failures outside the slices.
pub struct Interleaved {
    pub quiet: LoadResult,
    pub swapping: LoadResult,
    pub swaps: Swaps,
    pub outside: Outside,
}

/// What the load measured in the slices of one kind.
pub struct LoadResult {
    pub window: Duration,
    pub ok: u64,
    pub errors: u64,
    /// Latencies of the OK requests, sorted.
    pub latencies: Vec<Duration>,
    /// Spans received and kept (server metrics).
    pub received: f64,
    pub kept: f64,
    /// CPU seconds of the server, of the bench process and of every other
    /// process.
    pub server_cpu: f64,
    pub loadgen_cpu: f64,
    pub other_cpu: f64,
}

/// Requests that failed outside the measured slices, and the first
/// failure of all.
#[derive(Default)]
pub struct Outside {
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Runs [`CLIENTS`] clients sending `pool` to `server` for a warm-up,
/// then `2 * env.slices` slices alternately without and with swaps.
pub fn interleaved(
    runtime: &Runtime,
    pool: &Arc<Vec<Bytes>>,
    server: &mut Server,
    env: &Env,
) -> Result<Interleaved, String> {
    let (endpoint, metrics, pid) = server.load_target();
    let ticks = clock_ticks();
    let slices = env.slices;
    let window_start = Instant::now() + WARMUP;
    let end = window_start + SLICE * (2 * slices);
    let clients = Clients::start(runtime, &endpoint, pool, CLIENTS, window_start, end);
    std::thread::sleep(window_start.saturating_duration_since(Instant::now()));
    let mut results = [LoadResult::new(SLICE * slices), LoadResult::new(SLICE * slices)];
    let mut swaps = Swaps::default();
    let mut last = Sample::take(metrics, pid, ticks);
    for slice in 0..2 * slices {
        let slice_end = window_start + SLICE * (slice + 1);
        if slice % 2 == 1 {
            swap_until(server, env, slice_end, &mut swaps);
        }
        std::thread::sleep(slice_end.saturating_duration_since(Instant::now()));
        let sample = Sample::take(metrics, pid, ticks);
        results[(slice % 2) as usize].add(&last, &sample);
        last = sample;
    }
    let outside = count_requests(&mut results, clients.finish(runtime)?, window_start, slices);
    let [mut quiet, mut swapping] = results;
    quiet.latencies.sort_unstable();
    swapping.latencies.sort_unstable();
    Ok(Interleaved { quiet, swapping, swaps, outside })
}

/// Swaps the policy every [`SWAP_EVERY`], none in the last half interval
/// before `slice_end`, so that none runs into the next slice.
fn swap_until(server: &mut Server, env: &Env, slice_end: Instant, swaps: &mut Swaps) {
    let mut next = Instant::now();
    while next + SWAP_EVERY / 2 <= slice_end {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        swaps.record(server.swap_policy(env));
        next = (next + SWAP_EVERY).max(Instant::now());
    }
}

/// Counts each client's requests in the slice kind they were answered in
/// (even slices: no swaps); returns the failures outside the slices.
fn count_requests(
    results: &mut [LoadResult; 2],
    clients: Vec<ClientStats>,
    window_start: Instant,
    slices: u32,
) -> Outside {
    let kind = |at: Instant| {
        let slice = (at.saturating_duration_since(window_start).as_nanos() / SLICE.as_nanos()) as u32;
        (slice.min(2 * slices - 1) % 2) as usize
    };
    let mut outside = Outside::default();
    for stats in clients {
        for (latency, at) in stats.latencies.into_iter().zip(stats.answered) {
            results[kind(at)].ok += 1;
            results[kind(at)].latencies.push(latency);
        }
        for at in stats.failed_at {
            results[kind(at)].errors += 1;
        }
        outside.errors += stats.errors_outside;
        outside.first_error = outside.first_error.or(stats.first_error).or(stats.first_error_outside);
    }
    outside
}

impl LoadResult {
    fn new(window: Duration) -> Self {
        LoadResult {
            window,
            ok: 0,
            errors: 0,
            latencies: Vec::new(),
            received: 0.0,
            kept: 0.0,
            server_cpu: 0.0,
            loadgen_cpu: 0.0,
            other_cpu: 0.0,
        }
    }

    /// Adds what happened between two samples.
    fn add(&mut self, before: &Sample, after: &Sample) {
        self.received += after.received - before.received;
        self.kept += after.kept - before.kept;
        let cpu = after.cpu.since(&before.cpu);
        self.server_cpu += cpu.server;
        self.loadgen_cpu += cpu.loadgen;
        self.other_cpu += cpu.other();
    }
}

/// Counters and CPU times at one instant.
struct Sample {
    received: f64,
    kept: f64,
    cpu: CpuTimes,
}

impl Sample {
    fn take(metrics_port: u16, pid: u32, ticks: f64) -> Sample {
        let metrics = admin::metrics(metrics_port);
        Sample {
            received: admin::metric(&metrics, "otel_audit_received_records_total", &[]),
            kept: admin::metric(&metrics, "otel_audit_kept_records_total", &[]),
            cpu: CpuTimes::take(pid, ticks),
        }
    }
}
