//! What the benches that drive the real `otel-audit serve` share (`e2e`,
//! `reload`) beside tests/support (which starts the servers): the
//! closed-loop load, CPU times, where the store goes, and the figures'
//! formatting. Each bench is its own binary and uses a part of it.
#![allow(dead_code)]

pub mod cpu;
pub mod figures;
pub mod load;
pub mod scratch;
pub mod store;

use std::time::Duration;

/// The positive number of seconds in the environment variable `name`, if
/// it holds one (a bench's time knob).
pub fn seconds(name: &str) -> Option<Duration> {
    std::env::var(name).ok().and_then(|s| s.parse::<f64>().ok()).filter(|s| *s > 0.0).map(Duration::from_secs_f64)
}
