//! A client of a running server's admin endpoint (`GET /admin/status`,
//! `POST /admin/reload`) and of its `/metrics`, as an operator's script
//! would use them: plain HTTP, JSON and Prometheus text.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::server::{http_get, http_post};

/// `GET /admin/status`, parsed.
pub fn status(port: u16) -> Value {
    let (code, body) = http_get(port, "/admin/status").expect("the admin endpoint answers");
    assert_eq!(code, 200, "GET /admin/status: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET /admin/status is not JSON ({e}): {body}"))
}

/// The status of processor `id`.
pub fn processor(port: u16, id: &str) -> Value {
    let status = status(port);
    status["processors"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("no processor {id} in {status}"))
}

/// `POST /admin/reload[?processor=ID]`: (HTTP status, parsed body).
pub fn reload(port: u16, processor: Option<&str>) -> (u16, Value) {
    let path = match processor {
        Some(id) => format!("/admin/reload?processor={}", id.replace('/', "%2F")),
        None => "/admin/reload".to_owned(),
    };
    let (code, _, body) = http_post(port, &path, &[], b"");
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!("POST {path} answered {code} with no JSON ({e}): {}", String::from_utf8_lossy(&body))
    });
    (code, json)
}

/// Polls processor `id`'s status every 10 ms until `done` holds; panics
/// after `timeout`, showing the last status. Returns that status.
pub fn wait_for(port: u16, id: &str, timeout: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let status = processor(port, id);
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "after {timeout:?}, still not {what}; status: {status:#}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The server's `/metrics` text.
pub fn metrics(port: u16) -> String {
    let (code, body) = http_get(port, "/metrics").expect("the metrics endpoint answers");
    assert_eq!(code, 200, "{body}");
    body
}

/// The sum of the samples of `name` (e.g. `otel_audit_reloads_total`)
/// whose labels include every `key="value"` of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
