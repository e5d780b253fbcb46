//! The otel-audit chain format, as code: what the processor (the wasm
//! component), the host and the verifier must agree on byte for byte.
//!
//! Format, not logic. This crate holds the constants and pure functions
//! docs/chain-format.md fixes: the hash functions ([`hash`]), the reserved
//! attribute and event names ([`keys`]), the one [`Signal`] type, a chain's
//! head and a batch's context, the received-at time format, and how policy
//! YAML values read ([`values`]: one reading for policies and their tests). How records
//! are built (the processor) and how stores are checked (the verifier) live
//! elsewhere, each written against the document, not against the other.
#![deny(missing_docs)]

pub mod hash;
pub mod keys;
mod signal;
pub mod validity;
pub mod values;

pub use hash::{GENESIS_PREV, Hash};
pub use signal::{Signal, UnknownSignal};

/// The record format version: the `v` member of a canonical record
/// without a `sender` (the host's own events, records of version-1 stores).
pub const FORMAT_VERSION: u32 = 1;

/// The `v` of a record that carries a `sender` member (docs/chain-format.md §1.10).
pub const FORMAT_VERSION_SENDER: u32 = 2;

/// Where a chain stands before a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// The chain's identifier (`audit.sequence.stream_id`).
    pub chain_id: String,
    /// Sequence number the next record gets.
    pub seq: u64,
    /// Leaf hash of record `seq - 1`; all zeros at genesis.
    pub prev: Hash,
}

impl ChainHead {
    /// The head of an empty chain.
    pub fn genesis(chain_id: impl Into<String>) -> Self {
        ChainHead { chain_id: chain_id.into(), seq: 0, prev: GENESIS_PREV }
    }
}

/// What the host tells the processor about one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// When the host received the batch, nanoseconds since the Unix epoch.
    pub received_at_unix_nano: u64,
    /// The chain head the batch's records extend.
    pub head: ChainHead,
    /// Who sent the batch, as the receiver knows it; `None` for the host's
    /// own events (and for callers that have no transport).
    pub sender: Option<Sender>,
}

/// Who sent a batch: recorded in each of its records as the `sender`
/// member. Empty strings and lists mean unknown and are not recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sender {
    /// `grpc` or `http`: the OTLP transport.
    pub protocol: String,
    /// The client's address, `ip:port`.
    pub address: String,
    /// The TLS version (`TLSv1.3`), empty for plaintext.
    pub tls: String,
    /// The authenticated principal: the bearertokenauth authenticator that
    /// accepted the token (`bearertokenauth/writers[1]`), empty when none.
    pub principal: String,
    /// Under mutual TLS, the client certificate's subject (RFC 4514).
    pub certificate_subject: String,
    /// Under mutual TLS, its subject alternative names (`DNS:...`, `URI:...`).
    pub certificate_sans: Vec<String>,
}

/// Formats Unix nanoseconds as RFC 3339 UTC with exactly nine fractional
/// digits (`2026-11-23T09:30:00.000000001Z`), so the text sorts as time
/// does. Every `u64` is a representable instant (the last is in 2554).
pub fn rfc3339_nanos(unix_nano: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    // Neither can fail: `time` covers the years -9999..=9999 and a complete
    // UTC date-time formats into a String without I/O.
    let at =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_nano)).expect("u64 nanoseconds end in 2554");
    at.format(&format).expect("a complete UTC date-time formats")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_nine_fraction_digits() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339_nanos(1_795_000_000_123_456_789), "2026-11-18T11:06:40.123456789Z");
        assert_eq!(rfc3339_nanos(u64::MAX), "2554-07-21T23:34:33.709551615Z");
    }

    #[test]
    fn genesis_head_starts_at_zero() {
        let head = ChainHead::genesis("c");
        assert_eq!((head.chain_id.as_str(), head.seq, head.prev), ("c", 0, GENESIS_PREV));
    }
}
