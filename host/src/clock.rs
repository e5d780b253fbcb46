//! Time, which the host owns (the processor has no clock): now, and RFC 3339
//! text given on command lines and in test files.

/// Nanoseconds since the Unix epoch, now.
pub fn now_unix_nano() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
}

/// Parses an RFC 3339 time (`2026-11-23T10:00:00.5Z`) into Unix nanoseconds.
pub fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("'{text}' is not an RFC 3339 time: {e}"))?;
    u64::try_from(at.unix_timestamp_nanos()).map_err(|_| format!("'{text}' is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Ok(1_500_000_000));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Ok(0));
        assert!(parse_rfc3339("1969-12-31T23:59:59Z").unwrap_err().contains("before 1970"));
        assert!(parse_rfc3339("yesterday").unwrap_err().contains("not an RFC 3339"));
    }
}
