//! CPU times from `/proc`: of the server, of the bench process (the load
//! generator) and of the whole machine, so a figure says what else ran.

use std::path::Path;
use std::process::Command;

/// CPU seconds at one instant, or over a window.
#[derive(Clone, Copy, Default)]
pub struct CpuTimes {
    /// The server process (every thread).
    pub server: f64,
    /// This bench process: the load generator.
    pub loadgen: f64,
    /// The whole machine (every core, every process).
    pub system: f64,
}

impl CpuTimes {
    /// Now, for the server process `pid`.
    pub fn take(pid: u32, clock_ticks: f64) -> CpuTimes {
        CpuTimes {
            server: process_cpu(pid, clock_ticks),
            loadgen: stat_cpu(Path::new("/proc/self/stat"), clock_ticks).map_or(0.0, |(_, s)| s),
            system: system_cpu(clock_ticks),
        }
    }

    /// What was spent since `earlier`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            server: self.server - earlier.server,
            loadgen: self.loadgen - earlier.loadgen,
            system: self.system - earlier.system,
        }
    }

    /// Every other process on the machine (of a window).
    pub fn other(&self) -> f64 {
        (self.system - self.server - self.loadgen).max(0.0)
    }
}

/// (comm, user + system CPU seconds) from a `/proc/.../stat` file.
pub fn stat_cpu(path: &Path, clock_ticks: f64) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    // Fields after the comm start at field 3 (state); utime and stime are 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((comm, ticks as f64 / clock_ticks))
}

/// CPU seconds of a whole process (every thread, live or exited).
pub fn process_cpu(pid: u32, clock_ticks: f64) -> f64 {
    stat_cpu(Path::new(&format!("/proc/{pid}/stat")), clock_ticks).map_or(0.0, |(_, s)| s)
}

/// Busy CPU seconds of the whole machine (every core, every process).
pub fn system_cpu(clock_ticks: f64) -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    ticks as f64 / clock_ticks
}

/// Clock ticks per second of `/proc` CPU times.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}
