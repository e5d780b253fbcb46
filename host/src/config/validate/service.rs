//! `service`: telemetry, extensions, and the pipelines that wire the
//! components, with the checks that span several components (addresses
//! that clash, an exporter that loops back, stores and chains that collide).

use super::*;

impl Checker<'_> {
    pub(super) fn service(&mut self, service: Option<Value>) -> Option<Config> {
        let Some(service) = service else {
            self.problem("service", "required: service.pipelines says what runs");
            return None;
        };
        let (mut extensions, mut pipelines, mut telemetry) = (None, None, None);
        for (key, path, value) in self.entries("service", service) {
            match key.as_str() {
                "extensions" => extensions = self.de::<Option<Vec<Text>>>(value, &path).flatten(),
                "pipelines" => pipelines = Some((path, value)),
                "telemetry" => telemetry = self.de::<Option<TelemetryFile>>(value, &path).flatten(),
                _ => self.problem(path, "unknown key; expected one of extensions, pipelines, telemetry"),
            }
        }

        let (mut health, mut admin, mut read_api) = (None, None, None);
        let listed = self.references(Kind::Extension, extensions.unwrap_or_default(), "service.extensions");
        let listed: Vec<String> = listed.into_iter().map(Option::unwrap_or_default).collect();
        for (i, id) in listed.iter().enumerate() {
            let Some(Some(Extension::Listener(kind, listen, mut listener))) = find(&self.extensions, id).cloned()
            else {
                continue;
            };
            let path = format!("extensions.{id}");
            self.resolve_auth(&mut listener.security.auth, &path, &listed);
            self.resolve_auth(&mut listener.read_auth, &format!("{path}.read_auth"), &listed);
            let (slot, name) = match kind {
                ExtensionType::HealthCheck => (&mut health, "health_check"),
                ExtensionType::Admin => (&mut admin, "admin"),
                ExtensionType::ReadApi => (&mut read_api, "read_api"),
            };
            if slot.replace((id.clone(), listen, listener)).is_some() {
                self.problem(format!("service.extensions[{i}]"), format!("a second {name}: list one"));
            }
        }
        self.resolve_components(&listed);

        let telemetry = telemetry.unwrap_or_default();
        let level = telemetry.logs.unwrap_or_default().level;
        let log_level = self.or("service.telemetry.logs.level".into(), level, "info".to_owned(), |t| {
            let level = t.to_ascii_lowercase();
            match level.as_str() {
                "trace" | "debug" | "info" | "warn" | "error" => Ok(level),
                _ => Err(format!("`{t}` is not a level: trace, debug, info, warn or error")),
            }
        });
        let metrics = match telemetry.metrics {
            Some(MetricsFile { address: Some(address), tls, auth }) => {
                let at = "service.telemetry.metrics";
                let listen = self.required(format!("{at}.address"), Some(address), values::listen);
                let tls = self.server_tls(tls, at);
                let mut auth = self.auth_ref(auth, at);
                if let Some(auth) = auth.as_mut() {
                    self.resolve_auth(auth, at, &listed);
                }
                match (listen, tls, auth) {
                    (Some(listen), Some(tls), Some(auth)) => Some(Some((
                        listen.clone(),
                        Listener { endpoint: listen.to_string(), security: Security { tls, auth }, read_auth: None },
                    ))),
                    _ => None,
                }
            }
            Some(MetricsFile { address: None, tls, auth }) => {
                if tls.is_some() || auth.is_some() {
                    self.problem("service.telemetry.metrics.address", "required with tls or auth");
                }
                Some(None)
            }
            None => Some(None),
        };

        let mut built = Vec::new();
        match pipelines {
            Some((path, value)) => {
                let entries = self.entries(&path, value);
                if entries.is_empty() {
                    self.problem(path, "at least one pipeline is required");
                }
                for (id, path, body) in entries {
                    built.push(self.pipeline(id, &path, body));
                }
            }
            None => self.problem("service.pipelines", "required: at least one pipeline"),
        }
        let Some((_, Some(receiver))) = self.receivers.first() else { return None };
        let (grpc, http) = (receiver.grpc.clone(), receiver.http.clone());
        let pipelines: Vec<Pipeline> = built.into_iter().collect::<Option<_>>()?;
        let (metrics, log_level) = (metrics?, log_level?);

        let mut listens = Vec::new();
        if let Some((_, listen)) = &grpc {
            listens.push(("receivers.otlp.protocols.grpc.endpoint".to_owned(), listen.clone()));
        }
        if let Some((_, listen)) = &http {
            listens.push(("receivers.otlp.protocols.http.endpoint".to_owned(), listen.clone()));
        }
        let receivers = listens.clone();
        if let Some((listen, _)) = &metrics {
            listens.push(("service.telemetry.metrics.address".to_owned(), listen.clone()));
        }
        for (id, listen, _) in health.iter().chain(&admin).chain(&read_api) {
            listens.push((format!("extensions.{id}.endpoint"), listen.clone()));
        }
        self.clashes(&listens);
        self.loops(&pipelines, &receivers);
        self.collisions(&pipelines);
        let config = Config {
            grpc: grpc.map(|(grpc, _)| grpc),
            http: http.map(|(http, _)| http),
            pipelines,
            metrics: metrics.map(|(_, m)| m),
            health: health.map(|(_, _, h)| h),
            admin: admin.map(|(_, _, a)| a),
            read_api: read_api.map(|(_, _, r)| r),
            log_level,
        };
        self.separate_writers(&config);
        Some(config)
    }

    /// Resolves the authenticators the receiver protocols and forwarding
    /// exporters name (before pipelines copy the exporters).
    fn resolve_components(&mut self, listed: &[String]) {
        let mut receivers = std::mem::take(&mut self.receivers);
        for (id, receiver) in receivers.iter_mut() {
            let Some(receiver) = receiver else { continue };
            if let Some((grpc, _)) = receiver.grpc.as_mut() {
                self.resolve_auth(&mut grpc.security.auth, &format!("receivers.{id}.protocols.grpc"), listed);
            }
            if let Some((http, _)) = receiver.http.as_mut() {
                self.resolve_auth(&mut http.security.auth, &format!("receivers.{id}.protocols.http"), listed);
            }
        }
        self.receivers = receivers;
        let mut exporters = std::mem::take(&mut self.exporters);
        for (id, exporter) in exporters.iter_mut() {
            if let Some(ExporterDef::Forward { exporter, .. }) = exporter {
                self.resolve_auth(&mut exporter.auth, &format!("exporters.{id}"), listed);
            }
        }
        self.exporters = exporters;
    }

    /// The admin endpoint and the read API take their own tokens, never a
    /// writer's, and the read API's are not the admin endpoint's: one
    /// authenticator may not serve two of them, nor may they share a token.
    fn separate_writers(&mut self, config: &Config) {
        let writers: Vec<&Authenticator> =
            [&config.grpc.as_ref().map(|g| &g.security), &config.http.as_ref().map(|h| &h.security)]
                .into_iter()
                .flatten()
                .filter_map(|s| s.auth.as_ref())
                .collect();
        let admins: Vec<&Authenticator> =
            config.admin.iter().flat_map(|a| [a.security.auth.as_ref(), a.read_auth.as_ref()]).flatten().collect();
        // (where, the endpoint's authenticator, the ones it may not share with)
        type Whose<'a> = Vec<(&'static str, &'a Authenticator)>;
        let mut own: Vec<(String, &Authenticator, Whose)> = Vec::new();
        if let Some(admin) = &config.admin {
            for (key, auth) in [("auth", &admin.security.auth), ("read_auth", &admin.read_auth)] {
                if let Some(auth) = auth {
                    let others = writers.iter().map(|w| ("writers", *w)).collect();
                    own.push((format!("extensions.admin.{key}.authenticator"), auth, others));
                }
            }
        }
        if let Some(auth) = config.read_api.as_ref().and_then(|r| r.security.auth.as_ref()) {
            let others = writers
                .iter()
                .map(|w| ("writers", *w))
                .chain(admins.iter().map(|a| ("the admin endpoint", *a)))
                .collect();
            own.push(("extensions.read_api.auth.authenticator".to_owned(), auth, others));
        }
        for (at, auth, others) in own {
            let shares = |o: &Authenticator| {
                o.tokens.iter().any(|t| matches!(t, TokenSource::Env { .. }) && auth.tokens.contains(t))
            };
            if let Some((whose, _)) = others.iter().find(|(_, o)| o.id == auth.id) {
                self.problem(at, format!("`{}` authenticates {whose}: give this endpoint its own tokens", auth.id));
            } else if let Some((whose, o)) = others.iter().find(|(_, o)| shares(o)) {
                self.problem(at, format!("`{}` shares a token with `{}` of {whose}", auth.id, o.id));
            }
        }
    }

    fn pipeline(&mut self, id: String, path: &str, body: Value) -> Option<Pipeline> {
        let before = self.errors;
        let (ty, name) = self.component_id(&id, path)?;
        let signal = match ty.as_str() {
            "traces" => Signal::Traces,
            "logs" => Signal::Logs,
            "metrics" => {
                self.problem(path, "metrics pipelines are not supported: metrics are not audit records");
                return None;
            }
            _ => {
                self.problem(path, format!("unknown signal `{ty}`: a pipeline is traces[/name] or logs[/name]"));
                return None;
            }
        };
        if let Some(name) = &name
            && let Err(e) = chain_part(name, "a pipeline name", PIPELINE_NAME_MAX)
        {
            self.problem(path, e);
        }
        let file: PipelineFile = self.de(body_of(body), path)?;

        let at = format!("{path}.receivers");
        match file.receivers.filter(|r| !r.is_empty()) {
            Some(items) => {
                self.references(Kind::Receiver, items, &at);
            }
            None => self.problem(at, "required: list the otlp receiver"),
        }

        let at = format!("{path}.processors");
        let processors = self.references(Kind::Processor, file.processors.unwrap_or_default(), &at);
        if processors.len() != 1 {
            self.problem(&at, format!("a pipeline runs exactly one wasm processor; {} listed", processors.len()));
        }
        let processor = match processors.as_slice() {
            [Some(id)] => find(&self.processors, id).cloned().flatten(),
            _ => None,
        };

        let at = format!("{path}.exporters");
        let listed = self.references(Kind::Exporter, file.exporters.unwrap_or_default(), &at);
        let mut stores = Vec::new();
        let mut forward = Vec::new();
        for (i, id) in listed.iter().enumerate() {
            let Some(id) = id else { continue };
            match find(&self.exporters, id) {
                Some(Some(ExporterDef::Store(store))) => stores.push(store.clone()),
                Some(Some(ExporterDef::Forward { exporter, .. })) => {
                    let url = match (exporter.protocol, signal) {
                        (ExportProtocol::Grpc, _) => &exporter.endpoint,
                        (ExportProtocol::Http, Signal::Traces) => &exporter.traces_url,
                        (ExportProtocol::Http, Signal::Logs) => &exporter.logs_url,
                    };
                    if url.is_empty() {
                        let key = if signal == Signal::Traces { "traces_endpoint" } else { "logs_endpoint" };
                        let message = format!("`{id}` has no URL for this signal: set its endpoint or {key}");
                        self.problem(format!("{at}[{i}]"), message);
                    } else {
                        forward.push(Exporter { endpoint: url.clone(), ..exporter.clone() });
                    }
                }
                // An unknown type or a bad config: reported where it is defined.
                Some(None) | None => {}
            }
        }
        // Counted by id, so that a store whose own config is bad still counts.
        let named: Vec<&str> = listed
            .iter()
            .flatten()
            .filter(|id| id.split('/').next() == Some("auditstore"))
            .map(String::as_str)
            .collect();
        if named.len() != 1 {
            let listed = if named.is_empty() { "none".to_owned() } else { named.join(", ") };
            self.problem(&at, format!("a pipeline writes to exactly one auditstore exporter; {listed} listed"));
        }

        let shards = self.or(format!("{path}.shards"), file.shards, super::super::auto_shards(), |t| {
            if t == "auto" {
                return Ok(super::super::auto_shards());
            }
            let n = values::integer(t)?;
            if (1..=64).contains(&n) { Ok(n as u32) } else { Err(format!("`{t}` is not `auto` or from 1 to 64")) }
        });
        if self.errors != before {
            return None;
        }
        let store = stores.into_iter().next()?;
        Some(Pipeline { id, signal, shards: shards?, processor: processor?, store, exporters: forward })
    }

    /// Resolves a list of references: each item's id, or `None` when it is
    /// unresolved or repeated (reported).
    fn references(&mut self, kind: Kind, items: Vec<Text>, path: &str) -> Vec<Option<String>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (i, Text(id)) in items.into_iter().enumerate() {
            let at = format!("{path}[{i}]");
            if let Some(message) = self.unresolved(kind, &id) {
                self.problem(at, message);
                out.push(None);
            } else if !seen.insert(id.clone()) {
                self.problem(at, format!("`{id}` is listed twice"));
                out.push(None);
            } else {
                out.push(Some(id));
            }
        }
        out
    }

    /// Why `id` cannot be used as a `kind`, if it cannot.
    fn unresolved(&self, kind: Kind, id: &str) -> Option<String> {
        let defined = |k: Kind| -> Vec<&str> {
            match k {
                Kind::Receiver => self.receivers.iter().map(|(id, _)| id.as_str()).collect(),
                Kind::Processor => self.processors.iter().map(|(id, _)| id.as_str()).collect(),
                Kind::Exporter => self.exporters.iter().map(|(id, _)| id.as_str()).collect(),
                Kind::Extension => self.extensions.iter().map(|(id, _)| id.as_str()).collect(),
            }
        };
        let own = defined(kind);
        if own.contains(&id) {
            return None;
        }
        if let Some(other) = Kind::ALL.into_iter().find(|&k| k != kind && defined(k).contains(&id)) {
            let (a, b) = (other.noun(), kind.noun());
            return Some(format!("`{id}` is {} {a}, not {} {b}", article(a), article(b)));
        }
        let known = if own.is_empty() { "none is defined".to_owned() } else { format!("defined: {}", own.join(", ")) };
        Some(format!("no {} `{id}` is defined ({known})", kind.noun()))
    }

    /// Two listeners on one address would fail to start; say so now.
    fn clashes(&mut self, listens: &[(String, HostPort)]) {
        for (i, (path, listen)) in listens.iter().enumerate() {
            let clash = listens[..i]
                .iter()
                .find(|(_, other)| listen.port != 0 && (listen.reaches(other) || other.reaches(listen)));
            if let Some((other_path, _)) = clash {
                self.problem(path.clone(), format!("`{listen}` is also {other_path}"));
            }
        }
    }

    /// An exporter that dials this otel-audit's own receiver would feed the
    /// records back in, forever.
    fn loops(&mut self, pipelines: &[Pipeline], receivers: &[(String, HostPort)]) {
        let mut checked = HashSet::new();
        for id in pipelines.iter().flat_map(|p| &p.exporters).map(|e| &e.id) {
            if !checked.insert(id) {
                continue;
            }
            let Some(Some(ExporterDef::Forward { dials, .. })) = find(&self.exporters, id) else { continue };
            let mut found = Vec::new();
            for (path, dial) in dials {
                if let Some((receiver, listen)) = receivers.iter().find(|(_, listen)| dial.reaches(listen)) {
                    let message = format!(
                        "`{dial}` is this otel-audit's own receiver ({receiver}: {listen}): records would loop"
                    );
                    found.push((path.clone(), message));
                }
            }
            for (path, message) in found {
                self.problem(path, message);
            }
        }
    }

    /// Chains are told apart by pipeline id within a store; stores by
    /// directory.
    fn collisions(&mut self, pipelines: &[Pipeline]) {
        let mut stores: Vec<&Store> = Vec::new();
        for store in pipelines.iter().map(|p| &p.store) {
            if stores.iter().any(|s| s.id == store.id) {
                continue;
            }
            if let Some(other) = stores.iter().find(|s| same_directory(&s.directory, &store.directory)) {
                let message = format!("also the directory of `{}`: give each auditstore its own directory", other.id);
                self.problem(format!("exporters.{}.directory", store.id), message);
            }
            stores.push(store);
        }
        for (i, p) in pipelines.iter().enumerate() {
            let twin = pipelines[..i].iter().find(|q| q.store.id == p.store.id && q.id.eq_ignore_ascii_case(&p.id));
            if let Some(twin) = twin {
                let message = format!(
                    "writes the same chains in `{}` as `{}`: pipeline ids differing only in case collide on \
                     case-insensitive file systems",
                    p.store.id, twin.id
                );
                self.problem(format!("service.pipelines.{}", p.id), message);
            }
        }
    }
}
