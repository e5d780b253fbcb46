//! What the bench reads at the edges of the measured window: the server's
//! counters (Prometheus), CPU by thread and the chain workers' scheduler
//! times (`/proc`), and the CPU of everything else.

use std::collections::BTreeMap;

use crate::Env;
use crate::common::cpu::{CpuTimes, stat_cpu};
use crate::support::admin;

/// The server and the machine at one instant.
pub struct Sample {
    pub counters: Option<Counters>,
    pub cpu: CpuTimes,
    /// CPU by thread name: (threads with that name, seconds).
    pub threads: BTreeMap<String, (usize, f64)>,
    /// The chain worker threads' scheduler times, by thread id.
    pub chain_sched: BTreeMap<String, Sched>,
}

impl Sample {
    pub fn take(pid: u32, metrics_port: Option<u16>, env: &Env) -> Sample {
        Sample {
            counters: metrics_port.map(Counters::scrape),
            cpu: CpuTimes::take(pid, env.clock_ticks),
            threads: thread_cpu(pid, env.clock_ticks),
            chain_sched: sched(pid, "chain-"),
        }
    }
}

/// The server's counters (summed over chains and pipelines).
#[derive(Clone, Copy)]
pub struct Counters {
    pub received: f64,
    pub kept: f64,
    pub stored_records: f64,
    pub stored_bytes: f64,
    pub commits: f64,
    pub fsync_seconds: f64,
    pub committed_requests: f64,
    pub checkpoints: f64,
}

impl Counters {
    /// Reads `/metrics` on `port`, each series summed over its labels.
    pub fn scrape(port: u16) -> Counters {
        let text = admin::metrics(port);
        let get = |name: &str| admin::metric(&text, name, &[]);
        Counters {
            received: get("otel_audit_received_records_total"),
            kept: get("otel_audit_kept_records_total"),
            stored_records: get("otel_audit_stored_records_total"),
            stored_bytes: get("otel_audit_stored_bytes_total"),
            commits: get("otel_audit_fsync_seconds_count"),
            fsync_seconds: get("otel_audit_fsync_seconds_sum"),
            committed_requests: get("otel_audit_group_commit_requests_sum"),
            checkpoints: get("otel_audit_checkpoints_total"),
        }
    }

    pub fn minus(&self, earlier: &Counters) -> Counters {
        Counters {
            received: self.received - earlier.received,
            kept: self.kept - earlier.kept,
            stored_records: self.stored_records - earlier.stored_records,
            stored_bytes: self.stored_bytes - earlier.stored_bytes,
            commits: self.commits - earlier.commits,
            fsync_seconds: self.fsync_seconds - earlier.fsync_seconds,
            committed_requests: self.committed_requests - earlier.committed_requests,
            checkpoints: self.checkpoints - earlier.checkpoints,
        }
    }
}

/// Seconds on a CPU and seconds runnable but waiting for one.
#[derive(Clone, Copy, Default)]
pub struct Sched {
    pub running: f64,
    pub waiting: f64,
}

/// Scheduler times of each thread whose name starts with `prefix`, by
/// thread id (`/proc/<pid>/task/<tid>/schedstat`: run ns, run-queue wait ns).
fn sched(pid: u32, prefix: &str) -> BTreeMap<String, Sched> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return threads };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let mut fields = text.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0) as f64 / 1e9);
        let sched = Sched { running: fields.next().unwrap_or(0.0), waiting: fields.next().unwrap_or(0.0) };
        threads.insert(task.file_name().to_string_lossy().into_owned(), sched);
    }
    threads
}

/// CPU seconds by thread name: (threads with that name, seconds).
fn thread_cpu(pid: u32, clock_ticks: f64) -> BTreeMap<String, (usize, f64)> {
    let mut by_name: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by_name };
    for task in tasks.flatten() {
        if let Some((comm, seconds)) = stat_cpu(&task.path().join("stat"), clock_ticks) {
            let entry = by_name.entry(comm).or_default();
            entry.0 += 1;
            entry.1 += seconds;
        }
    }
    by_name
}

/// Peak resident set (VmHWM) in bytes, 0 if unreadable.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}
