//! A client of a running server's admin endpoint, for `otel-audit status`
//! and `otel-audit reload`: it reads the bodies into the types the server
//! writes them from.

use serde::de::DeserializeOwned;

use super::{ReloadAnswer, Verdict};
use crate::reload::{ReloadReport, Status};

/// Why the admin endpoint gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection, or no complete answer.
    #[error("cannot reach the admin endpoint {url}: {error} (is `admin` listed in service.extensions?)")]
    Unreachable {
        /// The request's URL.
        url: String,
        /// What failed.
        error: reqwest::Error,
    },
    /// The endpoint refused the request (401 no or wrong token, 403 a
    /// read-only token or a browser, 421 a foreign Host).
    #[error("{url} refused the request ({status}): {message}")]
    Refused {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The endpoint's reason.
        message: String,
    },
    /// The client could not be set up (token or CA file).
    #[error("{0}")]
    Setup(String),
    /// An answer that is not the JSON the endpoint sends.
    #[error("{url} answered {status} with a body that is not {expected}: {error}")]
    Body {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What the body should have been.
        expected: &'static str,
        /// Why it is not.
        error: serde_json::Error,
    },
}

/// What `POST /admin/reload` answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloaded {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub answer: ReloadAnswer,
}

impl Reloaded {
    /// What the status says, if it is one the endpoint sends.
    pub fn verdict(&self) -> Option<Verdict> {
        Verdict::from_status(self.status)
    }
}

/// How to reach a secured admin endpoint.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// A file holding the bearer token (its first line).
    pub token_file: Option<std::path::PathBuf>,
    /// The CA (PEM) the endpoint's certificate chains to: speaks https.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The admin endpoint at `host:port` (`extensions.admin.endpoint`).
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// A client of the endpoint at `address` (`host:port`, or a URL).
    pub fn new(address: &str, credentials: &Credentials) -> Result<Self, ClientError> {
        let token = match &credentials.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ClientError::Setup(format!("cannot read the token file {}: {e}", path.display())))?;
                Some(text.lines().next().unwrap_or("").trim().to_owned())
            }
            None => None,
        };
        let mut builder = reqwest::Client::builder();
        let https = credentials.ca_file.is_some() || address.starts_with("https://");
        if https {
            let tls = crate::config::ClientTls {
                ca_file: credentials.ca_file.clone(),
                include_system_ca_certs_pool: credentials.ca_file.is_none(),
                ..Default::default()
            };
            let config =
                crate::tls::client_config(&tls, &[b"http/1.1"]).map_err(|e| ClientError::Setup(e.to_string()))?;
            builder = builder.use_preconfigured_tls(config);
        }
        let http = builder.build().map_err(|e| ClientError::Setup(format!("cannot set up the HTTP client: {e}")))?;
        let authority = address.split_once("://").map_or(address, |(_, rest)| rest).trim_end_matches('/');
        let base = format!("{}://{authority}", if https { "https" } else { "http" });
        Ok(Client { base, http, token })
    }

    /// `GET /admin/status`: what serves each processor.
    pub async fn status(&self) -> Result<Status, ClientError> {
        let url = self.url("/admin/status");
        let (status, body) = self.send(self.http.get(&url), &url).await?;
        parse(&url, status, &body, "an admin status")
    }

    /// `POST /admin/reload`, of `processor` or (`None`) of all; answers once
    /// every chain serves the result.
    pub async fn reload(&self, processor: Option<&str>) -> Result<Reloaded, ClientError> {
        let url = self.url("/admin/reload");
        let mut request = self.http.post(&url);
        if let Some(id) = processor {
            request = request.query(&[("processor", id)]);
        }
        let (status, body) = self.send(request, &url).await?;
        Ok(Reloaded { status, answer: parse(&url, status, &body, "a reload answer")? })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, mut request: reqwest::RequestBuilder, url: &str) -> Result<(u16, bytes::Bytes), ClientError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let unreachable = |error| ClientError::Unreachable { url: url.to_owned(), error };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(unreachable)?;
        if matches!(status, 401 | 403 | 421) {
            let text = String::from_utf8_lossy(&body);
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.trim().to_owned());
            return Err(ClientError::Refused { url: url.to_owned(), status, message });
        }
        Ok((status, body))
    }
}

fn parse<T: DeserializeOwned>(url: &str, status: u16, body: &[u8], expected: &'static str) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|error| ClientError::Body { url: url.to_owned(), status, expected, error })
}

/// For people: one line per report, `<processor>  <ReloadReport::line>`.
pub fn reloads_text(reports: &[ReloadReport]) -> String {
    reports.iter().map(|r| format!("{}  {}\n", r.processor, r.line())).collect()
}
