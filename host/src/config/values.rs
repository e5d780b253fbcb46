//! Scalars in the Collector's notation: Go durations, sizes, numbers,
//! booleans, and the endpoints receivers listen on and exporters dial.
//! Each parser returns the message a user needs, without the key path
//! (the caller knows it).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// A Go duration as the Collector reads it: `500ms`, `5s`, `1m30s`,
/// `1.5h`; units ns, us (µs), ms, s, m, h. A bare `0` is zero. A bare
/// number is refused: the Collector would read it as nanoseconds, which is
/// never what was meant.
pub fn duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("`{text}` is not a duration: write a number and a unit (ns, us, ms, s, m, h), e.g. 500ms, 5s, 1m30s")
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.starts_with('-') {
        return Err(format!("`{text}`: a duration must not be negative"));
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` has no unit: write e.g. {rest}s or {rest}ms"));
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let (whole, after) = rest.split_at(digits(rest));
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => after.split_at(digits(after)),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad());
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let too_large = || format!("`{text}` is too large a duration");
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| too_large())? };
        // Digits past the 18th are below a nanosecond at any unit.
        let fraction = &fraction[..fraction.len().min(18)];
        let fraction_nanos = if fraction.is_empty() {
            0
        } else {
            fraction.parse::<u128>().map_err(|_| bad())? * scale / 10u128.pow(fraction.len() as u32)
        };
        nanos = whole
            .checked_mul(scale)
            .and_then(|n| n.checked_add(fraction_nanos))
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(too_large)?;
        rest = after;
    }
    u64::try_from(nanos).map(Duration::from_nanos).map_err(|_| format!("`{text}` is too large a duration"))
}

/// A size: whole bytes, or a whole number with a unit: B, KiB, MiB, GiB,
/// TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000); units are
/// case-insensitive and may follow a space.
pub(super) fn size(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a size: write bytes, or a whole number with a unit, e.g. 64MiB, 512KiB, 1GB");
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(bad());
    }
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("`{text}` is too large a size"))
}

/// A whole number.
pub(super) fn integer(text: &str) -> Result<u64, String> {
    text.trim().parse().map_err(|_| format!("`{text}` is not a whole number"))
}

/// A finite number.
pub(super) fn number(text: &str) -> Result<f64, String> {
    text.trim().parse::<f64>().ok().filter(|n| n.is_finite()).ok_or_else(|| format!("`{text}` is not a number"))
}

/// `true` or `false` (any case, as YAML 1.2 spells them).
pub(super) fn boolean(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("`{text}` is not true or false")),
    }
}

/// A host and port, as written (an IPv6 host keeps its brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl HostPort {
    /// Whether a dialer of `self` would reach a listener on `listen`:
    /// the same port, and the same host, or both this machine.
    pub fn reaches(&self, listen: &HostPort) -> bool {
        let local = |h: &str| matches!(h, "localhost" | "[::1]") || h.starts_with("127.");
        self.port == listen.port
            && (self.host.eq_ignore_ascii_case(&listen.host)
                || (local(&self.host) && (local(&listen.host) || matches!(listen.host.as_str(), "0.0.0.0" | "[::]"))))
    }
}

/// Parses `host:port`. `listen`: the host may be empty (all interfaces, as
/// Go reads `:4317`) and the port 0 (any free port).
fn host_port(text: &str, listen: bool) -> Result<HostPort, String> {
    let example = if listen { "127.0.0.1:4317" } else { "collector.example:4317" };
    let bad = |why: &str| format!("`{text}` is not host:port ({why}), e.g. {example}");
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (inner, after) = bracketed.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
        inner.parse::<Ipv6Addr>().map_err(|_| bad("not an IPv6 address in the brackets"))?;
        let port = after.strip_prefix(':').ok_or_else(|| bad("no port"))?;
        (&text[..inner.len() + 2], port)
    } else {
        let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        if host.contains(':') {
            return Err(bad("write an IPv6 address in brackets, e.g. [::1]:4317"));
        }
        let name_ok = host.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        let any_interface = host.is_empty() && listen;
        if !(any_interface || name_ok || host.parse::<Ipv4Addr>().is_ok()) {
            return Err(bad("not a host name or IP address"));
        }
        (host, port)
    };
    let port: u16 = port.parse().map_err(|_| bad("the port must be a number from 1 to 65535"))?;
    if port == 0 && !listen {
        return Err(bad("port 0"));
    }
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok(HostPort { host: host.to_owned(), port })
}

/// A listen address (`127.0.0.1:4317`, `localhost:4317`, `[::1]:4317`,
/// `:4317`), normalised to `host:port` that a socket can bind: an empty
/// host becomes `0.0.0.0`.
pub(super) fn listen(text: &str) -> Result<HostPort, String> {
    host_port(text, true)
}

/// A gRPC exporter endpoint as the Collector takes it (`host:port`,
/// `http://host:port` or `https://host:port`), normalised to
/// `http[s]://host:port`; true when the scheme is `https`.
pub(super) fn grpc_target(text: &str) -> Result<(String, HostPort, bool), String> {
    let (authority, https) = match scheme(text)? {
        Some((rest, https)) => {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            if rest.contains('/') {
                return Err(format!("`{text}`: a gRPC endpoint has no path; write http://host:port"));
            }
            (rest, https)
        }
        None => (text, false),
    };
    let target = host_port(authority, false)?;
    let scheme = if https { "https" } else { "http" };
    Ok((format!("{scheme}://{target}"), target, https))
}

/// An OTLP/HTTP URL (`http[s]://host[:port][/path]`), returned as written
/// but for a trailing slash, with the host and port it dials and whether
/// it is `https`.
pub(super) fn http_url(text: &str) -> Result<(String, HostPort, bool), String> {
    let (rest, https) =
        scheme(text)?.ok_or_else(|| format!("`{text}` is not a URL: write e.g. http://collector.example:4318"))?;
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    if path.contains(['?', '#']) {
        return Err(format!("`{text}`: a query or fragment is not allowed in an endpoint"));
    }
    let default_port = if https { 443 } else { 80 };
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:{default_port}")
    } else {
        authority.to_owned()
    };
    let target = host_port(&with_port, false)?;
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://{authority}{}", path.strip_suffix('/').unwrap_or(path));
    Ok((url, target, https))
}

/// Strips `http://` or `https://` (true); refuses other schemes.
fn scheme(text: &str) -> Result<Option<(&str, bool)>, String> {
    match text.split_once("://") {
        None => Ok(None),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => Ok(Some((rest, false))),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => Ok(Some((rest, true))),
        Some((scheme, _)) => Err(format!("`{text}`: unsupported scheme `{scheme}`; use http:// or https://")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(duration("500ms"), Ok(ms(500)));
        assert_eq!(duration("5s"), Ok(ms(5_000)));
        assert_eq!(duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(duration("1.5h"), Ok(ms(5_400_000)));
        assert_eq!(duration(".5s"), Ok(ms(500)));
        assert_eq!(duration("2us"), Ok(Duration::from_micros(2)));
        assert_eq!(duration("2µs"), Ok(Duration::from_micros(2)));
        assert_eq!(duration("10ns"), Ok(Duration::from_nanos(10)));
        assert_eq!(duration("1h2m3s4ms"), Ok(ms(3_723_004)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert!(duration("10").unwrap_err().contains("has no unit: write e.g. 10s"));
        for bad in ["", "s", "5 s", "5sec", "5S", "1d", "1.s.", "m5"] {
            assert!(duration(bad).unwrap_err().contains("is not a duration"), "{bad}");
        }
        assert!(duration("-5s").unwrap_err().contains("negative"));
        assert!(duration("99999999999999999999h").unwrap_err().contains("too large"));
    }

    #[test]
    fn sizes() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size("64 mib"), Ok(64 << 20));
        assert_eq!(size("512KiB"), Ok(512 << 10));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert_eq!(size("1GB"), Ok(1_000_000_000));
        assert_eq!(size("20MB"), Ok(20_000_000));
        assert_eq!(size("7B"), Ok(7));
        for bad in ["", "MiB", "1.5MiB", "-1", "64M", "64 megabytes"] {
            assert!(size(bad).unwrap_err().contains("is not a size"), "{bad}");
        }
        assert!(size("99999999999TiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn endpoints() {
        let hp = |h: &str, p| HostPort { host: h.into(), port: p };
        assert_eq!(listen("127.0.0.1:4317"), Ok(hp("127.0.0.1", 4317)));
        assert_eq!(listen("localhost:0"), Ok(hp("localhost", 0)));
        assert_eq!(listen(":4317"), Ok(hp("0.0.0.0", 4317)));
        assert_eq!(listen("[::1]:4317"), Ok(hp("[::1]", 4317)));
        for bad in ["4317", "127.0.0.1", "::1:4317", "host:port", "a b:1", "h:70000", "[::1]4317", "[zz]:1"] {
            assert!(listen(bad).unwrap_err().contains("is not host:port"), "{bad}");
        }
        assert_eq!(grpc_target("collector:4317"), Ok(("http://collector:4317".into(), hp("collector", 4317), false)));
        assert_eq!(grpc_target("http://collector:4317/").map(|t| t.0), Ok("http://collector:4317".into()));
        assert!(grpc_target("collector:0").is_err());
        assert!(grpc_target(":4317").is_err());
        assert_eq!(
            grpc_target("https://collector:4317").map(|t| (t.0, t.2)),
            Ok(("https://collector:4317".into(), true))
        );
        assert!(grpc_target("http://collector:4317/v1").unwrap_err().contains("no path"));
        assert_eq!(http_url("http://archive:4318"), Ok(("http://archive:4318".into(), hp("archive", 4318), false)));
        assert_eq!(http_url("https://archive/").map(|u| (u.1, u.2)), Ok((hp("archive", 443), true)));
        assert_eq!(http_url("http://archive:4318/otlp/").map(|u| u.0), Ok("http://archive:4318/otlp".into()));
        assert_eq!(http_url("http://archive/").map(|u| u.1), Ok(hp("archive", 80)));
        assert_eq!(http_url("http://[::1]:4318").map(|u| u.1), Ok(hp("[::1]", 4318)));
        assert!(http_url("archive:4318").unwrap_err().contains("not a URL"));
        assert!(http_url("ftp://archive").unwrap_err().contains("unsupported scheme"));
        assert!(http_url("http://archive:4318/x?y").unwrap_err().contains("query"));
    }

    #[test]
    fn reaching() {
        let hp = |h: &str, p| HostPort { host: h.into(), port: p };
        assert!(hp("127.0.0.1", 4317).reaches(&hp("localhost", 4317)));
        assert!(hp("localhost", 4317).reaches(&hp("0.0.0.0", 4317)));
        assert!(hp("Collector", 4317).reaches(&hp("collector", 4317)));
        assert!(!hp("127.0.0.1", 4317).reaches(&hp("127.0.0.1", 4318)));
        assert!(!hp("archive", 4317).reaches(&hp("127.0.0.1", 4317)));
    }
}
