//! The admin endpoint of a running server (the `admin` extension) and the
//! client `otel-audit status` and `otel-audit reload` use ([`client`]).
//! Both speak the same typed bodies: [`Status`] for `GET /admin/status`,
//! [`ReloadAnswer`] for `POST /admin/reload[?processor=ID]`, whose HTTP
//! status is a [`Verdict`].

pub mod client;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::policy_event::Trigger;
use crate::reload::{ReloadReport, ReloadResult, Reloader, Status};

/// The body of `POST /admin/reload`: the reports, or why there are none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReloadAnswer {
    /// `{"reloads": [...]}`: one report per processor reloaded.
    Reloads {
        /// In config order.
        reloads: Vec<ReloadReport>,
    },
    /// `{"error": "..."}`: nothing was reloaded (an unknown processor).
    Error {
        /// What was wrong, naming the processors there are.
        error: String,
    },
}

/// What a reload came to, as its HTTP status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 200: every processor serves the result (applied or unchanged).
    Served,
    /// 422: a candidate was rejected; the old module and policy keep serving.
    Rejected,
    /// 503: some chain has not applied it yet (it does before its next batch).
    Pending,
    /// 404: the config has no such processor.
    UnknownProcessor,
}

impl Verdict {
    /// The verdict on these reports.
    pub fn of(reports: &[ReloadReport]) -> Verdict {
        if reports.iter().any(|r| r.chains.iter().any(|c| c.error.is_some())) {
            Verdict::Pending
        } else if reports.iter().any(|r| r.result == ReloadResult::Rejected) {
            Verdict::Rejected
        } else {
            Verdict::Served
        }
    }

    /// Its HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Verdict::Served => StatusCode::OK,
            Verdict::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
            Verdict::Pending => StatusCode::SERVICE_UNAVAILABLE,
            Verdict::UnknownProcessor => StatusCode::NOT_FOUND,
        }
    }

    /// The verdict an HTTP status stands for, if any.
    pub fn from_status(status: u16) -> Option<Verdict> {
        [Verdict::Served, Verdict::Rejected, Verdict::Pending, Verdict::UnknownProcessor]
            .into_iter()
            .find(|v| v.status().as_u16() == status)
    }
}

/// `?processor=wasm/soc2` on `POST /admin/reload`.
#[derive(Deserialize)]
struct ReloadQuery {
    processor: Option<String>,
}

/// The admin endpoint: `POST /admin/reload[?processor=ID]` reloads and
/// answers once every chain serves the result (see [`Verdict`] for the
/// status); `GET /admin/status` shows what serves.
///
/// Requests from browsers are refused unless they come from this endpoint's
/// own origin (a cross-origin `text/plain` POST needs no preflight), and a
/// `Host` must be an IP address, `localhost` or one of `hosts` (so a DNS
/// name rebound to this machine reaches nothing). When the listener checks
/// tokens, reloading needs a token of `auth`, not only of `read_auth`.
///
/// `GET /tiles/<chain dir>/<path>` serves each chain as a C2SP tlog-tiles
/// log ([`crate::tlog::resource`]): `checkpoint`, `tile/<L>/<N>[.p/<W>]`
/// and `tile/entries/<N>[.p/<W>]`, read-only principals included.
/// `chain_dirs` are the chains this server writes.
pub fn router(reloader: Arc<Reloader>, hosts: Vec<String>, chain_dirs: Vec<std::path::PathBuf>) -> axum::Router {
    async fn reload(State(reloader): State<Arc<Reloader>>, Query(query): Query<ReloadQuery>) -> Response {
        let (verdict, answer) = match reloader.reload(query.processor.as_deref(), Trigger::Admin).await {
            Ok(reloads) => (Verdict::of(&reloads), ReloadAnswer::Reloads { reloads }),
            Err(unknown) => (Verdict::UnknownProcessor, ReloadAnswer::Error { error: unknown.to_string() }),
        };
        (verdict.status(), axum::Json(answer)).into_response()
    }
    async fn status(State(reloader): State<Arc<Reloader>>) -> axum::Json<Status> {
        axum::Json(reloader.status())
    }
    axum::Router::new()
        .route("/admin/reload", axum::routing::post(reload))
        .route("/admin/status", axum::routing::get(status))
        .with_state(reloader)
        .merge(tiles_router(chain_dirs))
        .layer(axum::middleware::from_fn_with_state(Arc::new(hosts), same_origin))
}

/// `GET /tiles/<chain dir>/<path>`: each of the chains in `chain_dirs` as
/// a C2SP tlog-tiles log (the admin endpoint and the read API serve it).
pub fn tiles_router(chain_dirs: Vec<std::path::PathBuf>) -> axum::Router {
    axum::Router::new().route("/tiles/{chain}/{*path}", axum::routing::get(tile)).with_state(Arc::new(chain_dirs))
}

/// One resource of a chain's tlog-tiles log, read from the store on a
/// blocking thread. The checkpoint changes; tiles and bundles never do.
async fn tile(
    State(chain_dirs): State<Arc<Vec<std::path::PathBuf>>>,
    axum::extract::Path((chain, path)): axum::extract::Path<(String, String)>,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, format!("no {path} in the log of {chain}\n")).into_response();
    let Some(dir) = chain_dirs.iter().find(|d| d.file_name().is_some_and(|n| n == chain.as_str())).cloned() else {
        return not_found();
    };
    let wanted = path.clone();
    let found = tokio::task::spawn_blocking(move || crate::tlog::resource(&dir, &wanted)).await;
    let (content_type, cache) = if path == "checkpoint" {
        ("text/plain; charset=utf-8", "no-store")
    } else {
        ("application/octet-stream", "public, max-age=31536000, immutable")
    };
    match found {
        Ok(Ok(Some(bytes))) => {
            ([(http::header::CONTENT_TYPE, content_type), (http::header::CACHE_CONTROL, cache)], bytes).into_response()
        }
        Ok(Ok(None)) => not_found(),
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

/// Refuses foreign `Host`s, cross-origin browser requests and reloads by
/// read-only principals, before any handler runs.
async fn same_origin(
    State(hosts): State<Arc<Vec<String>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let refuse = |status: StatusCode, message: String| (status, axum::Json(serde_json::json!({ "error": message })));
    let headers = request.headers();
    // HTTP/2 carries the host in the `:authority` pseudo-header (the URI).
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    if !allowed_host(host, &hosts) {
        let message = format!("Host `{host}` is not this admin endpoint's (an IP address, localhost or {hosts:?})");
        return refuse(StatusCode::MISDIRECTED_REQUEST, message).into_response();
    }
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let origin = headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok());
    let same =
        |origin: &str| origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
    if site.is_some_and(|s| s != "same-origin" && s != "none") || origin.is_some_and(|o| !same(o)) {
        let message = "cross-origin requests are refused: call the admin endpoint with otel-audit or curl".to_owned();
        return refuse(StatusCode::FORBIDDEN, message).into_response();
    }
    let principal = request.extensions().get::<crate::listener::Peer>().and_then(|p| p.principal.clone());
    if request.method() != http::Method::GET && principal.is_some_and(|p| p.access < crate::auth::Access::Full) {
        let message = "this token may read the status but not reload: use a token of extensions.admin.auth".to_owned();
        return refuse(StatusCode::FORBIDDEN, message).into_response();
    }
    next.run(request).await
}

/// Whether `host` (a `Host` header, with or without port) names this
/// endpoint: an IP address, `localhost`, or one of `hosts`.
fn allowed_host(host: &str, hosts: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => return rest.split_once(']').is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    !name.is_empty()
        && (name.parse::<std::net::Ipv4Addr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || hosts.iter().any(|h| h.eq_ignore_ascii_case(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy_event::TriggerKind;
    use crate::reload::ChainReport;

    fn report(result: ReloadResult, chain_error: Option<&str>) -> ReloadReport {
        ReloadReport {
            processor: "wasm/a".into(),
            trigger: TriggerKind::Admin,
            at: "2026-11-25T10:00:00Z".into(),
            result,
            reason: None,
            module_digest: "sha256:aa".into(),
            policy_digest: "sha256:bb".into(),
            chains: vec![ChainReport { chain: "c".into(), seq: None, error: chain_error.map(str::to_owned) }],
            elapsed_ms: 1.0,
        }
    }

    #[test]
    fn a_chain_not_yet_switched_outweighs_a_rejection() {
        use ReloadResult::*;
        assert_eq!(Verdict::of(&[report(Applied, None), report(Unchanged, None)]), Verdict::Served);
        assert_eq!(Verdict::of(&[report(Applied, None), report(Rejected, None)]), Verdict::Rejected);
        assert_eq!(Verdict::of(&[report(Rejected, None), report(Pending, Some("busy"))]), Verdict::Pending);
        for verdict in [Verdict::Served, Verdict::Rejected, Verdict::Pending, Verdict::UnknownProcessor] {
            assert_eq!(Verdict::from_status(verdict.status().as_u16()), Some(verdict));
        }
        assert_eq!(Verdict::from_status(500), None);
    }

    #[test]
    fn only_this_machine_s_names_are_hosts() {
        let hosts = vec!["audit-1".to_owned()];
        for host in ["127.0.0.1:13134", "localhost:13134", "LOCALHOST", "[::1]:13134", "10.0.0.7", "audit-1:13134"] {
            assert!(allowed_host(host, &hosts), "{host}");
        }
        for host in ["", "evil.example:13134", "audit-1.evil.example", "[evil]:1", "localhost.evil:13134"] {
            assert!(!allowed_host(host, &hosts), "{host}");
        }
    }

    #[tokio::test]
    async fn an_http2_request_is_checked_by_its_authority() {
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route("/x", axum::routing::post(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(Arc::new(Vec::<String>::new()), same_origin));
        let status = |uri: &str| {
            let request = axum::extract::Request::post(uri).body(axum::body::Body::empty()).unwrap();
            let app = app.clone();
            async move { app.oneshot(request).await.unwrap().status() }
        };
        assert_eq!(status("https://localhost:13134/x").await, StatusCode::OK);
        assert_eq!(status("https://rebound.evil.example:13134/x").await, StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(status("/x").await, StatusCode::MISDIRECTED_REQUEST, "no Host and no authority");
    }

    #[test]
    fn answers_keep_their_json_shape() {
        let error = ReloadAnswer::Error { error: "no processor `x`".into() };
        assert_eq!(serde_json::to_value(&error).unwrap(), serde_json::json!({"error": "no processor `x`"}));
        let reloads = ReloadAnswer::Reloads { reloads: vec![report(ReloadResult::Applied, None)] };
        let json = serde_json::to_value(&reloads).unwrap();
        assert_eq!(json["reloads"][0]["result"], "applied");
        for answer in [error, reloads] {
            let text = serde_json::to_string(&answer).unwrap();
            assert_eq!(serde_json::from_str::<ReloadAnswer>(&text).unwrap(), answer);
        }
    }
}
