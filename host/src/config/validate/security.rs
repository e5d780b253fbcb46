//! `tls`, `auth` and the limits of listeners and exporters, and the
//! `bearertokenauth` extensions they name: the Collector's configtls,
//! configauth and bearertokenauth keys with their meaning. Authenticators
//! are resolved after every section is read (an extension may be defined
//! after the receiver naming it) by [`Checker::resolve_auth`].

use super::*;

/// `tls.min_version` / `max_version`.
fn tls_version(text: &str) -> Result<TlsVersion, String> {
    match text {
        "1.2" => Ok(TlsVersion::V1_2),
        "1.3" => Ok(TlsVersion::V1_3),
        "1.0" | "1.1" => Err(format!("TLS {text} is not supported (it is deprecated, RFC 8996): use 1.2 or 1.3")),
        _ => Err(format!("`{text}` is not a TLS version: 1.2 or 1.3")),
    }
}

impl Checker<'_> {
    /// `tls:` of a listener: a certificate and key are required; the
    /// client-side keys are refused with what to write instead.
    pub(super) fn server_tls(&mut self, file: Option<TlsFile>, path: &str) -> Option<Option<ServerTls>> {
        let Some(file) = file else { return Some(None) };
        let before = self.errors;
        let at = |key: &str| format!("{path}.tls.{key}");
        if self.or(at("insecure"), file.insecure, false, values::boolean) == Some(true) {
            self.problem(at("insecure"), "a client key; to serve plaintext, remove tls");
        }
        for (key, text, instead) in [
            ("ca_file", &file.ca_file, "client_ca_file checks client certificates"),
            ("insecure_skip_verify", &file.insecure_skip_verify, "it is a client key"),
            ("server_name_override", &file.server_name_override, "it is a client key"),
            ("include_system_ca_certs_pool", &file.include_system_ca_certs_pool, "client_ca_file lists the CAs"),
        ] {
            if text.is_some() {
                self.problem(at(key), format!("not a listener key: {instead}"));
            }
        }
        let cert_file = self.required(at("cert_file"), file.cert_file, file_path);
        let key_file = self.required(at("key_file"), file.key_file, file_path);
        let client_ca_file = file.client_ca_file.map(|t| self.required(at("client_ca_file"), Some(t), file_path));
        let min = self.or(at("min_version"), file.min_version, TlsVersion::V1_2, tls_version);
        let max = self.or(at("max_version"), file.max_version, TlsVersion::V1_3, tls_version);
        let reload = self.or(at("reload_interval"), file.reload_interval, Duration::from_secs(10), positive);
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            self.problem(at("max_version"), "is older than min_version");
        }
        if self.errors != before {
            return None;
        }
        Some(Some(ServerTls {
            cert_file: cert_file?,
            key_file: key_file?,
            client_ca_file: client_ca_file.flatten(),
            min_version: min?,
            max_version: max?,
            reload_interval: reload?,
        }))
    }

    /// `tls:` of an exporter; `https` says the endpoint's scheme asks for
    /// TLS. Plaintext (`None`) for `http://` endpoints and `insecure: true`.
    pub(super) fn client_tls(&mut self, file: Option<TlsFile>, https: bool, path: &str) -> Option<Option<ClientTls>> {
        let file = match file {
            Some(file) => file,
            None if https => return Some(Some(ClientTls { include_system_ca_certs_pool: true, ..Default::default() })),
            None => return Some(None),
        };
        let before = self.errors;
        let at = |key: &str| format!("{path}.tls.{key}");
        let insecure = self.or(at("insecure"), file.insecure, false, values::boolean);
        for (key, text) in [("client_ca_file", &file.client_ca_file), ("reload_interval", &file.reload_interval)] {
            if text.is_some() {
                self.problem(at(key), "a listener key: an exporter checks the downstream with ca_file");
            }
        }
        let optional_path =
            |c: &mut Self, key: &str, text: Option<Text>| text.and_then(|t| c.required(at(key), Some(t), file_path));
        let ca_file = optional_path(self, "ca_file", file.ca_file);
        let cert_file = optional_path(self, "cert_file", file.cert_file);
        let key_file = optional_path(self, "key_file", file.key_file);
        if cert_file.is_some() != key_file.is_some() {
            self.problem(at(if cert_file.is_some() { "key_file" } else { "cert_file" }), "required with the other");
        }
        let skip = self.or(at("insecure_skip_verify"), file.insecure_skip_verify, false, values::boolean);
        let system =
            self.or(at("include_system_ca_certs_pool"), file.include_system_ca_certs_pool, false, values::boolean);
        let name = file.server_name_override.and_then(|t| {
            self.required(at("server_name_override"), Some(t), |t| {
                rustls::pki_types::ServerName::try_from(t.to_owned())
                    .map(|_| t.to_owned())
                    .map_err(|_| format!("`{t}` is not a DNS name or IP address"))
            })
        });
        let min = file.min_version.and_then(|t| self.required(at("min_version"), Some(t), tls_version));
        let max = file.max_version.and_then(|t| self.required(at("max_version"), Some(t), tls_version));
        if self.errors != before {
            return None;
        }
        if insecure? {
            if https {
                self.problem(at("insecure"), "the endpoint is https://: write http:// for plaintext");
                return None;
            }
            return Some(None);
        }
        Some(Some(ClientTls {
            insecure: false,
            include_system_ca_certs_pool: system? || ca_file.is_none(),
            ca_file,
            cert_file,
            key_file,
            insecure_skip_verify: skip?,
            server_name_override: name,
            min_version: min,
            max_version: max,
        }))
    }

    /// `auth: {authenticator: ID}`: an unresolved authenticator naming ID,
    /// filled in by [`Checker::resolve_auth`].
    pub(super) fn auth_ref(&mut self, file: Option<AuthFile>, path: &str) -> Option<Option<Authenticator>> {
        let Some(file) = file else { return Some(None) };
        let id = self.required(format!("{path}.authenticator"), file.authenticator, |t| Ok(t.to_owned()))?;
        Some(Some(Authenticator { id, header: String::new(), scheme: String::new(), tokens: Vec::new() }))
    }

    /// Replaces an unresolved authenticator (from [`Checker::auth_ref`])
    /// by the `bearertokenauth` extension it names, which must be listed in
    /// `service.extensions`, as in the Collector.
    pub(super) fn resolve_auth(&mut self, auth: &mut Option<Authenticator>, path: &str, listed: &[String]) {
        let Some(unresolved) = auth.as_mut() else { return };
        let at = format!("{path}.auth.authenticator");
        let id = unresolved.id.clone();
        match self.authenticators.iter().find(|(k, _)| *k == id) {
            Some((_, Some(found))) if listed.contains(&id) => *unresolved = found.clone(),
            Some((_, Some(_))) => self.problem(at, format!("`{id}` is not listed in service.extensions")),
            Some((_, None)) => {}
            None => {
                let known: Vec<&str> = self.authenticators.iter().map(|(k, _)| k.as_str()).collect();
                let known = if known.is_empty() {
                    "none is defined".to_owned()
                } else {
                    format!("defined: {}", known.join(", "))
                };
                self.problem(at, format!("no bearertokenauth extension `{id}` ({known})"));
            }
        }
    }

    /// `extensions.bearertokenauth[/<name>]`: one of `token`, `tokens`,
    /// `filename`. Token values must come from the environment, never the
    /// file, like processor secrets.
    pub(super) fn bearer_token(&mut self, id: &str, file: BearerTokenFile, path: &str) -> Option<Authenticator> {
        let before = self.errors;
        let header = self.or(format!("{path}.header"), file.header, "Authorization".to_owned(), |t| {
            http::HeaderName::try_from(t).map(|_| t.to_owned()).map_err(|_| format!("`{t}` is not a header name"))
        });
        let scheme = self.or(format!("{path}.scheme"), file.scheme, "Bearer".to_owned(), |t| {
            if t.chars().all(|c| c.is_ascii_alphanumeric() || "-._~+/".contains(c)) {
                Ok(t.to_owned())
            } else {
                Err(format!("`{t}` is not an auth scheme"))
            }
        });
        let mut tokens = Vec::new();
        let written = [file.token.is_some(), file.tokens.is_some(), file.filename.is_some()];
        if written.iter().filter(|w| **w).count() != 1 {
            self.problem(path, "write exactly one of token (${env:VAR}), tokens (a list of ${env:VAR}) or filename");
            return None;
        }
        if let Some(text) = file.token {
            tokens.extend(self.env_token(text, &format!("{path}.token")));
        }
        for (i, text) in file.tokens.into_iter().flatten().enumerate() {
            tokens.extend(self.env_token(text, &format!("{path}.tokens[{i}]")));
        }
        if let Some(text) = file.filename {
            tokens.extend(self.required(format!("{path}.filename"), Some(text), file_path).map(TokenSource::File));
        }
        if self.errors != before {
            return None;
        }
        Some(Authenticator { id: id.to_owned(), header: header?, scheme: scheme?, tokens })
    }

    /// A token written as exactly one `${env:VAR}` reference.
    fn env_token(&mut self, Text(value): Text, at: &str) -> Option<TokenSource> {
        match self.sub.whole.get(at) {
            _ if self.sub.failed.contains(at) => None,
            Some(r) if r.has_default => {
                let message = format!("a default would put the token in the file: write `${{env:{}}}`", r.var);
                self.problem(at, message);
                None
            }
            Some(r) if value.trim().is_empty() => {
                self.problem(at, format!("environment variable {} is empty", r.var));
                None
            }
            Some(r) if value.chars().any(|c| c.is_control() || c == ' ') => {
                self.problem(at, format!("environment variable {} holds spaces or control characters", r.var));
                None
            }
            Some(r) => Some(TokenSource::Env { var: r.var.clone(), value }),
            None => {
                self.problem(at, "inline tokens are refused: write `${env:VAR}` or use filename");
                None
            }
        }
    }

    /// A listener's limits, with `in_flight` requests by default.
    pub(super) fn limits(&mut self, path: &str, in_flight: usize, keys: LimitKeys) -> Option<ServerLimits> {
        let LimitKeys {
            max_connections,
            max_in_flight_requests,
            max_in_flight_requests_per_client,
            max_concurrent_streams,
            read_header_timeout,
            read_timeout,
            keepalive,
        } = keys;
        let d = ServerLimits::with_in_flight(in_flight);
        let count = |t: &str| at_least(values::integer(t)?, 1, t).and_then(|n| at_most(n, 1 << 20, t, ""));
        let connections = self.or(format!("{path}.max_connections"), max_connections, d.max_connections as u64, count);
        let requests =
            self.or(format!("{path}.max_in_flight_requests"), max_in_flight_requests, in_flight as u64, count);
        let per_client = requests.and_then(|requests| {
            let default = transport::per_client_default(requests as usize) as u64;
            let at = format!("{path}.max_in_flight_requests_per_client");
            self.or(at, max_in_flight_requests_per_client, default, |t| {
                at_least(values::integer(t)?, 1, t).and_then(|n| at_most(n, requests, t, "(max_in_flight_requests)"))
            })
        });
        let streams = self.or(
            format!("{path}.max_concurrent_streams"),
            max_concurrent_streams,
            d.max_concurrent_streams as u64,
            count,
        );
        let header =
            self.or(format!("{path}.read_header_timeout"), read_header_timeout, d.read_header_timeout, positive);
        let read = self.or(format!("{path}.read_timeout"), read_timeout, d.read_timeout, positive);
        let server = keepalive.and_then(|k| k.server_parameters).unwrap_or_default();
        let at = format!("{path}.keepalive.server_parameters");
        let time = self.or(format!("{at}.time"), server.time, d.keepalive_time, positive);
        let timeout = self.or(format!("{at}.timeout"), server.timeout, d.keepalive_timeout, positive);
        Some(ServerLimits {
            max_connections: connections? as usize,
            max_in_flight_requests: requests? as usize,
            max_in_flight_requests_per_client: per_client? as usize,
            max_concurrent_streams: streams? as u32,
            read_header_timeout: header?,
            read_timeout: read?,
            keepalive_time: time?,
            keepalive_timeout: timeout?,
        })
    }
}

/// The limit keys of a listener as written (`None`: the default, or a key
/// the listener does not have).
#[derive(Default)]
pub(super) struct LimitKeys {
    pub max_connections: Option<Text>,
    pub max_in_flight_requests: Option<Text>,
    pub max_in_flight_requests_per_client: Option<Text>,
    pub max_concurrent_streams: Option<Text>,
    pub read_header_timeout: Option<Text>,
    pub read_timeout: Option<Text>,
    pub keepalive: Option<KeepaliveFile>,
}
