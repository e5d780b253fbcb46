//! Trigger-to-serving times of swaps of one kind, and their row.

use std::time::Duration;

use crate::common::figures::{millis, percentile};

/// One swap: the trigger-to-serving time the bench saw and the server's.
pub struct Swap {
    pub wall: Duration,
    pub server: Duration,
}

/// The swaps of one kind.
#[derive(Default)]
pub struct Swaps {
    wall: Vec<Duration>,
    server: Vec<Duration>,
    pub failed: usize,
    pub first_error: Option<String>,
}

impl Swaps {
    pub fn record(&mut self, swap: Result<Swap, String>) {
        match swap {
            Ok(swap) => {
                self.wall.push(swap.wall);
                self.server.push(swap.server);
            }
            Err(error) => {
                self.failed += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }

    pub fn done(&self) -> usize {
        self.wall.len()
    }

    /// Done, and failed if any.
    pub fn count(&self) -> String {
        match self.failed {
            0 => self.done().to_string(),
            failed => format!("{}+{failed} failed", self.done()),
        }
    }

    /// Prints a row of the trigger table.
    pub fn row(&self, name: &str) {
        let mut wall = self.wall.clone();
        let mut server = self.server.clone();
        wall.sort_unstable();
        server.sort_unstable();
        println!(
            "{:<42} | {:>5} | {:>7.1} {:>7.1} {:>7.1} | {:>13.1}",
            name,
            self.count(),
            millis(percentile(&wall, 0.50)),
            millis(percentile(&wall, 0.99)),
            millis(wall.last().copied()),
            millis(percentile(&server, 0.50)),
        );
    }
}
