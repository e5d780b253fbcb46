//! The two OTLP signals a chain can carry.

use std::fmt;
use std::str::FromStr;

/// Which OTLP signal an export request carries. A chain holds one signal:
/// its records are all spans or all log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Signal {
    /// An `ExportTraceServiceRequest`: spans.
    Traces,
    /// An `ExportLogsServiceRequest`: log records.
    Logs,
}

impl Signal {
    /// Both signals, traces first.
    pub const ALL: [Signal; 2] = [Signal::Traces, Signal::Logs];

    /// The name used in pipeline ids, chain ids and the CLI: `traces`, `logs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signal name other than `traces` or `logs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSignal(pub String);

impl fmt::Display for UnknownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown signal {:?} (expected traces or logs)", self.0)
    }
}

impl std::error::Error for UnknownSignal {}

impl FromStr for Signal {
    type Err = UnknownSignal;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Signal::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| UnknownSignal(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for signal in Signal::ALL {
            assert_eq!(signal.as_str().parse::<Signal>(), Ok(signal));
            assert_eq!(signal.to_string(), signal.as_str());
        }
        let err = "metrics".parse::<Signal>().unwrap_err();
        assert_eq!(err.to_string(), r#"unknown signal "metrics" (expected traces or logs)"#);
    }
}
