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

        let (mut health, mut admin) = (None, None);
        let listed = self.references(Kind::Extension, extensions.unwrap_or_default(), "service.extensions");
        for (i, id) in listed.into_iter().enumerate() {
            let Some(id) = id else { continue };
            let Some(Some((kind, listen))) = find(&self.extensions, &id).cloned() else { continue };
            let (slot, name) = match kind {
                ExtensionType::HealthCheck => (&mut health, "health_check"),
                ExtensionType::Admin => (&mut admin, "admin"),
            };
            if slot.replace((id, listen)).is_some() {
                self.problem(format!("service.extensions[{i}]"), format!("a second {name}: list one"));
            }
        }

        let telemetry = telemetry.unwrap_or_default();
        let level = telemetry.logs.unwrap_or_default().level;
        let log_level = self.or("service.telemetry.logs.level".into(), level, "info".to_owned(), |t| {
            let level = t.to_ascii_lowercase();
            match level.as_str() {
                "trace" | "debug" | "info" | "warn" | "error" => Ok(level),
                _ => Err(format!("`{t}` is not a level: trace, debug, info, warn or error")),
            }
        });
        let metrics = match telemetry.metrics.and_then(|m| m.address) {
            Some(address) => {
                self.required("service.telemetry.metrics.address".into(), Some(address), values::listen).map(Some)
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
        if let Some(listen) = &metrics {
            listens.push(("service.telemetry.metrics.address".to_owned(), listen.clone()));
        }
        for (id, listen) in health.iter().chain(&admin) {
            listens.push((format!("extensions.{id}.endpoint"), listen.clone()));
        }
        self.clashes(&listens);
        self.loops(&pipelines, &receivers);
        self.collisions(&pipelines);

        Some(Config {
            grpc: grpc.map(|(grpc, _)| grpc),
            http: http.map(|(http, _)| http),
            pipelines,
            metrics_address: metrics.map(|m| m.to_string()),
            health_endpoint: health.map(|(_, h)| h.to_string()),
            admin_endpoint: admin.map(|(_, a)| a.to_string()),
            log_level,
        })
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

        let shards = self.or(format!("{path}.shards"), file.shards, 1, |t| {
            let n = values::integer(t)?;
            if (1..=64).contains(&n) { Ok(n as u32) } else { Err(format!("`{t}` is not from 1 to 64")) }
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
