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

/// The admin endpoint at `host:port` (`extensions.admin.endpoint`).
pub struct Client {
    address: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the endpoint at `address` (`host:port`).
    pub fn new(address: &str) -> Self {
        Client { address: address.to_owned(), http: reqwest::Client::new() }
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
        format!("http://{}{path}", self.address)
    }

    async fn send(&self, request: reqwest::RequestBuilder, url: &str) -> Result<(u16, bytes::Bytes), ClientError> {
        let unreachable = |error| ClientError::Unreachable { url: url.to_owned(), error };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await.map_err(unreachable)?))
    }
}

fn parse<T: DeserializeOwned>(url: &str, status: u16, body: &[u8], expected: &'static str) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|error| ClientError::Body { url: url.to_owned(), status, expected, error })
}

/// For people: one line per report, `<processor>  <ReloadReport::line>`.
pub fn reloads_text(reports: &[ReloadReport]) -> String {
    reports.iter().map(|r| format!("{}  {}\n", r.processor, r.line())).collect()
}
