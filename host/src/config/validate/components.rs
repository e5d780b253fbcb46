//! The component sections: each receiver, processor, exporter and
//! extension read with its own serde struct and turned into its runtime
//! form, with the Collector's defaults.

use super::security::LimitKeys;
use super::*;

impl Checker<'_> {
    pub(super) fn receiver(&mut self, id: String, path: String, body: Value) {
        let receiver = self.component_id(&id, &path).and_then(|(ty, _)| {
            if ty != "otlp" {
                self.problem(&path, format!("unknown receiver type `{ty}`: otel-audit receives OTLP; use `otlp`"));
                return None;
            }
            if let Some((first, _)) = self.receivers.first() {
                let message =
                    format!("otel-audit runs one OTLP receiver and `{first}` is defined; enable both protocols in it");
                self.problem(&path, message);
                return None;
            }
            let file: OtlpReceiverFile = self.de(body_of(body), &path)?;
            self.otlp_receiver(file, &path)
        });
        self.receivers.push((id, receiver));
    }

    fn otlp_receiver(&mut self, file: OtlpReceiverFile, path: &str) -> Option<Receiver> {
        let protocols = file.protocols.unwrap_or_default();
        if protocols.grpc.is_none() && protocols.http.is_none() {
            self.problem(join_path(path, "protocols"), "enable at least one protocol: grpc or http");
            return None;
        }
        let before = self.errors;
        let mut receiver = Receiver::default();
        if let Some(grpc) = protocols.grpc {
            let at = format!("{path}.protocols.grpc");
            let endpoint = self.listen(format!("{at}.endpoint"), grpc.endpoint, "localhost:4317");
            let mib = self.or(format!("{at}.max_recv_msg_size_mib"), grpc.max_recv_msg_size_mib, 4, |t| {
                at_least(values::integer(t)?, 1, t).and_then(|n| at_most(n, 2047, t, "MiB (protobuf's 2 GiB limit)"))
            });
            let tls = self.server_tls(grpc.tls, &at);
            let auth = self.auth_ref(grpc.auth, &at);
            let limits = self.limits(
                &at,
                64,
                LimitKeys {
                    max_connections: grpc.max_connections,
                    max_in_flight_requests: grpc.max_in_flight_requests,
                    max_in_flight_requests_per_client: grpc.max_in_flight_requests_per_client,
                    max_concurrent_streams: grpc.max_concurrent_streams,
                    read_header_timeout: grpc.read_header_timeout,
                    read_timeout: grpc.read_timeout,
                    keepalive: grpc.keepalive,
                },
            );
            if let (Some(listen), Some(mib), Some(tls), Some(auth), Some(limits)) = (endpoint, mib, tls, auth, limits) {
                let grpc = GrpcReceiver {
                    endpoint: listen.to_string(),
                    max_recv_msg_size: mib as usize * (1 << 20),
                    security: Security { tls, auth },
                    limits,
                };
                receiver.grpc = Some((grpc, listen));
            }
        }
        if let Some(http) = protocols.http {
            let at = format!("{path}.protocols.http");
            let endpoint = self.listen(format!("{at}.endpoint"), http.endpoint, "localhost:4318");
            let size = self.or(format!("{at}.max_request_body_size"), http.max_request_body_size, 20 << 20, |t| {
                at_least(values::size(t)?, 1, t).and_then(|n| at_most(n, 2 << 30, t, "bytes (2 GiB)"))
            });
            let tls = self.server_tls(http.tls, &at);
            let auth = self.auth_ref(http.auth, &at);
            let limits = self.limits(
                &at,
                16,
                LimitKeys {
                    max_connections: http.max_connections,
                    max_in_flight_requests: http.max_in_flight_requests,
                    max_in_flight_requests_per_client: http.max_in_flight_requests_per_client,
                    read_header_timeout: http.read_header_timeout,
                    read_timeout: http.read_timeout,
                    ..LimitKeys::default()
                },
            );
            if let (Some(listen), Some(size), Some(tls), Some(auth), Some(limits)) = (endpoint, size, tls, auth, limits)
            {
                let http = HttpReceiver {
                    endpoint: listen.to_string(),
                    max_request_body_size: size as usize,
                    security: Security { tls, auth },
                    limits,
                };
                receiver.http = Some((http, listen));
            }
        }
        (self.errors == before).then_some(receiver)
    }

    fn listen(&mut self, path: String, text: Option<Text>, default: &str) -> Option<HostPort> {
        let text = text.unwrap_or_else(|| Text(default.to_owned()));
        self.required(path, Some(text), values::listen)
    }

    pub(super) fn processor(&mut self, id: String, path: String, body: Value) {
        let processor = self.component_id(&id, &path).and_then(|(ty, _)| {
            if ty != "wasm" {
                let message = format!(
                    "unknown processor type `{ty}`: otel-audit runs a `wasm` processor; its policy holds \
                     the Collector's filter, attributes and redaction configs"
                );
                self.problem(&path, message);
                return None;
            }
            let file: WasmFile = self.de(body_of(body), &path)?;
            self.wasm(&id, file, &path)
        });
        self.processors.push((id, processor));
    }

    fn wasm(&mut self, id: &str, file: WasmFile, path: &str) -> Option<Processor> {
        let before = self.errors;
        let module = self.required(format!("{path}.module"), file.module, file_path);
        let policy = self.required(format!("{path}.policy"), file.policy, file_path);
        let mut tests = Vec::new();
        for (i, test) in file.tests.unwrap_or_default().into_iter().enumerate() {
            tests.extend(self.required(format!("{path}.tests[{i}]"), Some(test), file_path));
        }
        let reload = file.reload.unwrap_or_default();
        let watch = self.or(format!("{path}.reload.watch"), reload.watch, true, values::boolean);
        let debounce =
            self.or(format!("{path}.reload.debounce"), reload.debounce, Duration::from_millis(500), values::duration);
        let mut secrets = Vec::new();
        let at = format!("{path}.secrets");
        for (key, value) in self.mapping(file.secrets, &at, "a mapping of key ids to secrets").unwrap_or_default() {
            let secret_id = key_text(&key);
            if let Some(source) = self.secret(&secret_id, value, &join_path(&at, &secret_id)) {
                secrets.push(Secret { id: secret_id, source });
            }
        }
        let limits = file.limits.unwrap_or_default();
        let defaults = GuestLimits::default();
        let memory = self.or(format!("{path}.limits.memory"), limits.memory, defaults.memory as u64, |t| {
            at_least(values::size(t)?, 16 << 20, t).and_then(|n| at_most(n, 4 << 30, t, "bytes (4 GiB, wasm32)"))
        });
        let timeout = self.or(format!("{path}.limits.timeout"), limits.timeout, defaults.timeout, positive);
        let (module, policy, watch, debounce) = (module?, policy?, watch?, debounce?);
        let reload = Reload { watch, debounce };
        let limits = GuestLimits { memory: memory? as usize, timeout: timeout? };
        (self.errors == before).then(|| Processor { id: id.to_owned(), module, policy, secrets, tests, reload, limits })
    }

    fn secret(&mut self, id: &str, value: Value, path: &str) -> Option<SecretSource> {
        let how = "write `{file: PATH}` (the key is the file's bytes) or `{value: ${env:VAR}}`";
        if id.is_empty() || id.chars().any(char::is_whitespace) {
            self.problem(path, "a secret id must be non-empty, without spaces");
            return None;
        }
        if !value.is_mapping() {
            // Never echo it: it may be the secret itself.
            self.problem(path, format!("{how}; inline secret values are refused"));
            return None;
        }
        let file: SecretFile = self.de(value, path)?;
        match (file.file, file.value) {
            (Some(file), None) => self.required(format!("{path}.file"), Some(file), file_path).map(SecretSource::File),
            (None, Some(Text(value))) => {
                let at = format!("{path}.value");
                match self.sub.whole.get(&at) {
                    _ if self.sub.failed.contains(&at) => None,
                    Some(r) if r.has_default => {
                        let message = format!(
                            "a default would put the secret in the file: write `${{env:{}}}` without `:-`",
                            r.var
                        );
                        self.problem(at, message);
                        None
                    }
                    Some(r) if value.is_empty() => {
                        self.problem(at, format!("environment variable {} is empty", r.var));
                        None
                    }
                    Some(r) => Some(SecretSource::Env { var: r.var.clone(), value: value.into_bytes() }),
                    None => {
                        self.problem(at, format!("inline secret values are refused: {how}"));
                        None
                    }
                }
            }
            _ => {
                self.problem(path, how);
                None
            }
        }
    }

    pub(super) fn exporter(&mut self, id: String, path: String, body: Value) {
        let exporter = self.component_id(&id, &path).and_then(|(ty, _)| match ty.as_str() {
            "auditstore" => {
                let file: AuditStoreFile = self.de(body_of(body), &path)?;
                self.store(&id, file, &path).map(ExporterDef::Store)
            }
            "otlp" | "otlphttp" => {
                let file: ExporterFile = self.de(body_of(body), &path)?;
                self.forward(&id, &ty, file, &path)
            }
            _ => {
                self.problem(&path, format!("unknown exporter type `{ty}`: use auditstore, otlp or otlphttp"));
                None
            }
        });
        self.exporters.push((id, exporter));
    }

    fn store(&mut self, id: &str, file: AuditStoreFile, path: &str) -> Option<Store> {
        let directory = self.required(format!("{path}.directory"), file.directory, file_path);
        let instance_id = match file.instance_id {
            Some(text) => self.required(format!("{path}.instance_id"), Some(text), |t| {
                chain_part(t, "an instance id", INSTANCE_ID_MAX)
            }),
            None => {
                let host = gethostname::gethostname().to_string_lossy().into_owned();
                chain_part(&host, "an instance id", INSTANCE_ID_MAX)
                    .map_err(|e| {
                        self.problem(format!("{path}.instance_id"), format!("from the host name: {e}; set instance_id"))
                    })
                    .ok()
            }
        };
        let segment_size = self
            .or(format!("{path}.segment_size"), file.segment_size, 64 << 20, |t| at_least(values::size(t)?, 4096, t));
        let checkpoint = file.checkpoint.unwrap_or_default();
        let at = format!("{path}.checkpoint");
        let every_records = self.or(format!("{at}.every_records"), checkpoint.every_records, 10_000, |t| {
            at_least(values::integer(t)?, 1, t)
        });
        let interval = self.or(format!("{at}.interval"), checkpoint.interval, Duration::from_secs(10), positive);
        let heartbeat = self.or(format!("{at}.heartbeat"), checkpoint.heartbeat, Duration::from_secs(60), positive);
        let mirror = match checkpoint.mirror {
            Some(text) => self.required(format!("{at}.mirror"), Some(text), file_path).map(Some),
            None => Some(None),
        };
        let signing_key = self.required(format!("{path}.signing_key"), file.signing_key, file_path);
        let origin = self.or(format!("{path}.origin"), file.origin, "otel-audit".to_owned(), |t| {
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic() && b != b'+') {
                Ok(t.to_owned())
            } else {
                Err(format!("`{t}` cannot start a checkpoint origin: printable ASCII without spaces or `+`"))
            }
        });
        let access = self.or(format!("{path}.file_mode"), file.file_mode, FileAccess::Private, |t| match t {
            "private" => Ok(FileAccess::Private),
            "group-read" => Ok(FileAccess::GroupRead),
            _ => Err(format!(
                "`{t}` is not a file mode: use private (directories 0700, files 0600) or group-read (0750, 0640)"
            )),
        });
        let mut witnesses = Some(Vec::new());
        for (i, witness) in file.witnesses.unwrap_or_default().into_iter().enumerate() {
            let at = format!("{path}.witnesses[{i}]");
            let url = self.required(format!("{at}.url"), witness.url, |t| {
                if (t.starts_with("http://") || t.starts_with("https://")) && !t.contains(char::is_whitespace) {
                    Ok(t.trim_end_matches('/').to_owned())
                } else {
                    Err(format!("`{t}` is not an http:// or https:// URL"))
                }
            });
            let public_key = self.required(format!("{at}.public_key"), witness.public_key, file_path);
            match (url, public_key, witnesses.as_mut()) {
                (Some(url), Some(public_key), Some(list)) => list.push(super::super::WitnessDef { url, public_key }),
                _ => witnesses = None,
            }
        }
        Some(Store {
            id: id.to_owned(),
            directory: directory?,
            instance_id: instance_id?,
            segment_size: segment_size?,
            every_records: every_records?,
            interval: interval?,
            heartbeat: heartbeat?,
            mirror: mirror?,
            signing_key: signing_key?,
            origin: origin?,
            witnesses: witnesses?,
            access: access?,
        })
    }

    fn forward(&mut self, id: &str, ty: &str, file: ExporterFile, path: &str) -> Option<ExporterDef> {
        let before = self.errors;
        let grpc = ty == "otlp";
        let mut dials = Vec::new();
        let mut https = false;
        let (endpoint, traces_url, logs_url) = if grpc {
            for (key, text) in [("traces_endpoint", &file.traces_endpoint), ("logs_endpoint", &file.logs_endpoint)] {
                if text.is_some() {
                    self.problem(format!("{path}.{key}"), "an otlphttp key; an otlp (gRPC) exporter has one endpoint");
                }
            }
            let at = format!("{path}.endpoint");
            let parsed = self.required(at.clone(), file.endpoint, values::grpc_target);
            https = parsed.as_ref().is_some_and(|p| p.2);
            let (target, dial) = parsed.map(|(target, dial, _)| (target, dial)).unzip();
            dials.extend(dial.map(|dial| (at, dial)));
            (target, None, None)
        } else {
            if file.endpoint.is_none() && file.traces_endpoint.is_none() && file.logs_endpoint.is_none() {
                self.problem(format!("{path}.endpoint"), "required (or traces_endpoint and logs_endpoint)");
            }
            // The Collector's composition: a signal's own URL, else the base
            // URL and the signal's path.
            let mut url = |key: &str, text: Option<Text>| {
                let at = format!("{path}.{key}");
                let (url, dial, tls) = self.required(at.clone(), Some(text?), values::http_url)?;
                https |= tls;
                dials.push((at, dial));
                Some(url)
            };
            let base = url("endpoint", file.endpoint);
            let traces =
                url("traces_endpoint", file.traces_endpoint).or_else(|| Some(format!("{}/v1/traces", base.as_ref()?)));
            let logs = url("logs_endpoint", file.logs_endpoint).or_else(|| Some(format!("{}/v1/logs", base.as_ref()?)));
            (Some(String::new()), traces, logs)
        };
        let at = format!("{path}.headers");
        let map = self.mapping(file.headers, &at, "a mapping of header names to values");
        let headers = self.headers(map.unwrap_or_default(), &at);
        let compression = self.or(format!("{path}.compression"), file.compression, Compression::Gzip, |t| match t {
            "gzip" => Ok(Compression::Gzip),
            "none" | "" => Ok(Compression::None),
            _ => Err(format!("`{t}` is not supported: use gzip or none")),
        });
        let default_timeout = Duration::from_secs(if grpc { 5 } else { 30 });
        let timeout = self.or(format!("{path}.timeout"), file.timeout, default_timeout, positive);
        let retry = self.retry(file.retry_on_failure.unwrap_or_default(), &format!("{path}.retry_on_failure"));
        let queue = file.sending_queue.unwrap_or_default();
        let at = format!("{path}.sending_queue");
        if let Some(false) = self.or(format!("{at}.enabled"), queue.enabled, true, values::boolean) {
            let message = "the store is the queue and cannot be turned off; set queue_size to bound the backlog";
            self.problem(format!("{at}.enabled"), message);
        }
        let backlog =
            self.or(format!("{at}.queue_size"), queue.queue_size, 1_000_000, |t| at_least(values::integer(t)?, 1, t));
        let tls = self.client_tls(file.tls, https, path);
        let auth = self.auth_ref(file.auth, path);
        // A gRPC channel speaks TLS when configured, whatever the scheme.
        let endpoint = match (&tls, endpoint) {
            (Some(Some(_)), Some(e)) if grpc => Some(e.replacen("http://", "https://", 1)),
            (_, e) => e,
        };
        let exporter = Exporter {
            id: id.to_owned(),
            protocol: if grpc { ExportProtocol::Grpc } else { ExportProtocol::Http },
            endpoint: endpoint?,
            traces_url: traces_url.unwrap_or_default(),
            logs_url: logs_url.unwrap_or_default(),
            headers,
            compression: compression?,
            timeout: timeout?,
            retry: retry?,
            tls: tls?,
            auth: auth?,
            max_backlog_records: backlog?,
        };
        (self.errors == before).then_some(ExporterDef::Forward { exporter, dials })
    }

    /// Header names and values, in order; a value is never shown, as
    /// headers often carry tokens.
    fn headers(&mut self, map: Mapping, path: &str) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = Vec::new();
        for (key, value) in map {
            let name = key_text(&key);
            let at = join_path(path, &name);
            let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(tchar) {
                self.problem(at, "not a header name: letters, digits and !#$%&'*+-.^_`|~");
            } else if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                self.problem(at, "repeated (header names ignore case)");
            } else if let Some(Text(value)) = self.de::<Text>(value, &at) {
                if value.chars().any(|c| c.is_control() && c != '\t') {
                    self.problem(at, "the value contains control characters (such as a newline)");
                } else {
                    headers.push((name, value));
                }
            }
        }
        headers
    }

    fn retry(&mut self, file: RetryFile, path: &str) -> Option<Retry> {
        if let Some(false) = self.or(format!("{path}.enabled"), file.enabled, true, values::boolean) {
            let message = "otel-audit never skips a record the store holds: failed exports are always retried; remove this or set true";
            self.problem(format!("{path}.enabled"), message);
        }
        let initial =
            self.or(format!("{path}.initial_interval"), file.initial_interval, Duration::from_secs(5), positive);
        let max = self.or(format!("{path}.max_interval"), file.max_interval, Duration::from_secs(30), positive);
        let multiplier = self.or(format!("{path}.multiplier"), file.multiplier, 1.5, |t| {
            values::number(t).and_then(|n| if n >= 1.0 { Ok(n) } else { Err(format!("`{t}` must be at least 1")) })
        });
        let jitter = self.or(format!("{path}.randomization_factor"), file.randomization_factor, 0.5, |t| {
            let n = values::number(t)?;
            if (0.0..=1.0).contains(&n) { Ok(n) } else { Err(format!("`{t}` must be from 0 to 1")) }
        });
        let elapsed =
            self.or(format!("{path}.max_elapsed_time"), file.max_elapsed_time, Duration::ZERO, values::duration);
        if elapsed.is_some_and(|e| !e.is_zero()) {
            self.problem(
                format!("{path}.max_elapsed_time"),
                "otel-audit never gives up on a record the store holds: remove this or set 0",
            );
            return None;
        }
        let (initial, max) = (initial?, max?);
        if max < initial {
            self.problem(format!("{path}.max_interval"), "must be at least initial_interval");
            return None;
        }
        Some(Retry {
            initial_interval: initial,
            max_interval: max,
            multiplier: multiplier?,
            randomization_factor: jitter?,
        })
    }

    pub(super) fn extension(&mut self, id: String, path: String, body: Value) {
        let extension = self.component_id(&id, &path).and_then(|(ty, _)| {
            let (kind, default) = match ty.as_str() {
                "health_check" => (ExtensionType::HealthCheck, "localhost:13133"),
                "admin" => (ExtensionType::Admin, "localhost:13134"),
                "read_api" => (ExtensionType::ReadApi, "localhost:13135"),
                "bearertokenauth" => {
                    let file: BearerTokenFile = self.de(body_of(body), &path)?;
                    let authenticator = self.bearer_token(&id, file, &path);
                    let defined = authenticator.is_some();
                    self.authenticators.push((id.clone(), authenticator));
                    return defined.then_some(Extension::Auth);
                }
                _ => {
                    self.problem(
                        &path,
                        format!(
                            "unknown extension type `{ty}`: otel-audit has `health_check`, `admin`, `read_api` \
                             and `bearertokenauth`"
                        ),
                    );
                    return None;
                }
            };
            let file: ListenerFile = self.de(body_of(body), &path)?;
            let before = self.errors;
            let listen = self.listen(format!("{path}.endpoint"), file.endpoint, default);
            if kind != ExtensionType::Admin && file.read_auth.is_some() {
                self.problem(format!("{path}.read_auth"), "an admin key: use auth");
            }
            let tls = self.server_tls(file.tls, &path);
            let auth = self.auth_ref(file.auth, &path);
            let read_auth = self.auth_ref(file.read_auth, &format!("{path}.read_auth"));
            if self.errors != before {
                return None;
            }
            let listen = listen?;
            let listener = Listener {
                endpoint: listen.to_string(),
                security: Security { tls: tls?, auth: auth? },
                read_auth: read_auth?,
            };
            Some(Extension::Listener(kind, listen, listener))
        });
        self.extensions.push((id, extension));
    }
}
