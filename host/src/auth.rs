//! Bearer tokens, the way the Collector's `bearertokenauth` extension
//! checks them: a listener accepts a request whose header (by default
//! `Authorization: Bearer <token>`) carries one of its authenticator's
//! tokens, and knows it by a principal name; an exporter sends its
//! authenticator's token. Tokens are held as SHA-256 digests and compared
//! as such; a `filename` token is re-read when the file changes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use crate::config::{Authenticator, TokenSource};

/// How often a token file is looked at for changes.
const FILE_CHECK: Duration = Duration::from_secs(1);

/// Why an authenticator cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Its token file cannot be read.
    #[error("{id}: cannot read the token file {}: {source}", path.display())]
    Read {
        /// The authenticator.
        id: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Its token file holds no token.
    #[error("{id}: the token file {} is empty", path.display())]
    Empty {
        /// The authenticator.
        id: String,
        /// The file.
        path: PathBuf,
    },
}

/// What a request proved about its sender, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The authenticator id (`bearertokenauth/writers`), with `[i]` for the
    /// i-th of several `tokens`.
    pub name: String,
    /// What it may do (admin: read or reload).
    pub access: Access,
}

/// What a principal may do on the admin endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// `GET /admin/status`.
    Read,
    /// Everything, `POST /admin/reload` included.
    Full,
}

/// One authenticator's tokens, ready to check requests.
pub struct Tokens {
    id: String,
    header: HeaderName,
    scheme: String,
    access: Access,
    state: Mutex<State>,
    sources: Vec<TokenSource>,
}

struct State {
    /// Principal name and token digest.
    known: Vec<(String, [u8; 32])>,
    /// Token file stamps when last read.
    stamps: Vec<Option<(SystemTime, u64)>>,
    checked: Instant,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Tokens {
    /// Reads the authenticator's tokens now (a token file must be readable).
    pub fn new(authenticator: &Authenticator, access: Access) -> Result<Self, AuthError> {
        let header = HeaderName::try_from(authenticator.header.as_str()).unwrap_or(http::header::AUTHORIZATION);
        let tokens = Tokens {
            id: authenticator.id.clone(),
            header,
            scheme: authenticator.scheme.clone(),
            access,
            sources: authenticator.tokens.clone(),
            state: Mutex::new(State { known: Vec::new(), stamps: Vec::new(), checked: Instant::now() }),
        };
        let known = tokens.read()?;
        let stamps = tokens.stamps();
        *tokens.state.lock().unwrap_or_else(|p| p.into_inner()) = State { known, stamps, checked: Instant::now() };
        Ok(tokens)
    }

    /// The authenticator id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.sources
            .iter()
            .map(|s| match s {
                TokenSource::File(path) => stamp(path),
                TokenSource::Env { .. } => None,
            })
            .collect()
    }

    fn read(&self) -> Result<Vec<(String, [u8; 32])>, AuthError> {
        let several = self.sources.len() > 1;
        let mut known = Vec::new();
        for (i, source) in self.sources.iter().enumerate() {
            let name = if several { format!("{}[{i}]", self.id) } else { self.id.clone() };
            let token = match source {
                TokenSource::Env { value, .. } => value.clone(),
                TokenSource::File(path) => read_token_file(&self.id, path)?,
            };
            known.push((name, digest(&token)));
        }
        Ok(known)
    }

    /// The principal the request's token belongs to; `None` when the
    /// header is missing, malformed, or names no token of this
    /// authenticator.
    pub fn check(&self, headers: &HeaderMap) -> Option<Principal> {
        let value = headers.get(&self.header)?.to_str().ok()?.trim();
        let token = if self.scheme.is_empty() {
            value
        } else {
            let (scheme, token) = value.split_once(' ')?;
            if !scheme.eq_ignore_ascii_case(&self.scheme) {
                return None;
            }
            token.trim()
        };
        let presented = digest(token);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= FILE_CHECK {
            state.checked = Instant::now();
            let stamps = self.stamps();
            if stamps != state.stamps {
                match self.read() {
                    Ok(known) => {
                        state.known = known;
                        state.stamps = stamps;
                        tracing::info!(authenticator = %self.id, "token file reloaded");
                    }
                    Err(error) => tracing::warn!(%error, "token file changed but cannot be read; the old token holds"),
                }
            }
        }
        let name = state.known.iter().find(|(_, d)| *d == presented).map(|(name, _)| name.clone())?;
        Some(Principal { name, access: self.access })
    }

    /// Whether this authenticator and `other` share a token.
    pub fn shares_token_with(&self, other: &Tokens) -> bool {
        let mine = self.state.lock().unwrap_or_else(|p| p.into_inner()).known.clone();
        let theirs = other.state.lock().unwrap_or_else(|p| p.into_inner());
        mine.iter().any(|(_, d)| theirs.known.iter().any(|(_, o)| o == d))
    }
}

fn read_token_file(id: &str, path: &Path) -> Result<String, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        id: id.to_owned(),
        path: path.into(),
        source,
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(AuthError::Empty { id: id.to_owned(), path: path.into() });
    }
    Ok(token)
}

/// The header an exporter sends for its authenticator: its first token,
/// read now (a token file is read at start-up).
pub fn client_header(authenticator: &Authenticator) -> Result<(String, String), AuthError> {
    let token = match authenticator.tokens.first() {
        Some(TokenSource::Env { value, .. }) => value.clone(),
        Some(TokenSource::File(path)) => read_token_file(&authenticator.id, path)?,
        None => String::new(),
    };
    let value = if authenticator.scheme.is_empty() { token } else { format!("{} {token}", authenticator.scheme) };
    Ok((authenticator.header.to_ascii_lowercase(), value))
}

/// The tokens a listener accepts: the first that matches decides the
/// principal. Empty: anyone is accepted (no `auth` configured).
#[derive(Default)]
pub struct Guard {
    authenticators: Vec<Tokens>,
}

impl Guard {
    /// A guard accepting these authenticators' tokens.
    pub fn new(authenticators: Vec<Tokens>) -> Self {
        Guard { authenticators }
    }

    /// Whether requests need a token.
    pub fn required(&self) -> bool {
        !self.authenticators.is_empty()
    }

    /// The authenticators.
    pub fn authenticators(&self) -> &[Tokens] {
        &self.authenticators
    }

    /// `Ok(None)` when no token is required; `Ok(principal)` for a valid
    /// token; `Err(())` for a missing or wrong one.
    #[allow(clippy::result_unit_err)]
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<Principal>, ()> {
        if self.authenticators.is_empty() {
            return Ok(None);
        }
        self.authenticators.iter().find_map(|t| t.check(headers)).map(Some).ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(tokens: &[&str]) -> Authenticator {
        Authenticator {
            id: "bearertokenauth/w".into(),
            header: "Authorization".into(),
            scheme: "Bearer".into(),
            tokens: tokens.iter().map(|t| TokenSource::Env { var: "T".into(), value: (*t).into() }).collect(),
        }
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn a_token_names_its_principal_and_a_wrong_one_nothing() {
        let tokens = Tokens::new(&authenticator(&["alpha", "beta"]), Access::Full).unwrap();
        assert_eq!(tokens.check(&headers("Bearer beta")).unwrap().name, "bearertokenauth/w[1]");
        assert_eq!(tokens.check(&headers("bearer alpha")).unwrap().name, "bearertokenauth/w[0]");
        assert!(tokens.check(&headers("Bearer gamma")).is_none());
        assert!(tokens.check(&headers("Basic alpha")).is_none());
        assert!(tokens.check(&headers("alpha")).is_none());
        assert!(tokens.check(&HeaderMap::new()).is_none());
        let guard = Guard::new(vec![tokens]);
        assert_eq!(guard.check(&headers("Bearer x")), Err(()));
        assert!(Guard::default().check(&HeaderMap::new()).unwrap().is_none());
    }

    #[test]
    fn a_token_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let mut a = authenticator(&[]);
        a.tokens = vec![TokenSource::File(path.clone())];
        let tokens = Tokens::new(&a, Access::Read).unwrap();
        assert_eq!(tokens.check(&headers("Bearer first")).unwrap().access, Access::Read);
        std::fs::write(&path, "second-and-longer\n").unwrap();
        std::thread::sleep(FILE_CHECK + Duration::from_millis(50));
        assert!(tokens.check(&headers("Bearer second-and-longer")).is_some());
        assert!(tokens.check(&headers("Bearer first")).is_none());
        std::fs::write(&path, "").unwrap();
        assert!(matches!(Tokens::new(&a, Access::Read), Err(AuthError::Empty { .. })));
    }
}
