//! The checks a parsed config passes before anything serves, shared by
//! `otel-audit validate` (which prints every problem) and `otel-audit
//! serve` (which refuses to start on any): the files it names are there and
//! usable ([`config::validate_files`]), each processor's module compiles as
//! an audit processor component and accepts its policy and secrets, and
//! each exporter's headers are ones its protocol (gRPC metadata or HTTP) can
//! carry, and no store or checkpoint mirror is writable by others.
//!
//! What only a running server can know (a store's chains, a MAC key that
//! changed under its chains) is checked when the chains open.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::config::{self, Config, Problem};
use crate::exporter::client;
use crate::runtime::{Module, PolicyInfo, Runtime};

/// What the checks found.
pub struct Preflight {
    /// Every processor whose module accepted its policy, in config order.
    pub processors: Vec<ReadyProcessor>,
    /// Every problem, with its key path (`processors.wasm/soc2.policy`).
    pub problems: Vec<Problem>,
}

/// A processor whose module accepted its policy.
pub struct ReadyProcessor {
    /// Processor id, e.g. `wasm/soc2`.
    pub id: String,
    /// The policy file.
    pub policy: PathBuf,
    /// What the policy configured (digest, rules, key id).
    pub info: PolicyInfo,
    /// The compiled module, ready to instantiate.
    pub module: Module,
}

/// Runs every check on `config`, compiling modules with `runtime`; all
/// problems are reported, not only the first.
pub fn check(config: &Config, runtime: &Runtime) -> Preflight {
    let mut problems = config::validate_files(config);
    let mut processors = Vec::new();
    let mut seen = BTreeSet::new();
    for processor in config.pipelines.iter().map(|p| &p.processor) {
        // A processor whose files are missing was reported already.
        let prefix = format!("processors.{}.", processor.id);
        if !seen.insert(&processor.id) || problems.iter().any(|p| p.path.starts_with(&prefix)) {
            continue;
        }
        let problem = |key: &str, message: String| Problem { path: format!("{prefix}{key}"), message };
        let module = match runtime.load(&processor.module) {
            Ok(module) => module.with_limits(processor.limits.runtime()),
            Err(e) => {
                problems.push(problem("module", e.to_string()));
                continue;
            }
        };
        let (Ok(policy), Ok(secrets)) = (std::fs::read_to_string(&processor.policy), processor.read_secrets()) else {
            continue;
        };
        match module.instantiate().and_then(|mut instance| instance.configure(&policy, &secrets)) {
            Ok(info) => processors.push(ReadyProcessor {
                id: processor.id.clone(),
                policy: processor.policy.clone(),
                info,
                module,
            }),
            Err(e) => problems.push(problem("policy", format!("{}: {e}", processor.policy.display()))),
        }
    }
    let mut exporters = BTreeSet::new();
    for exporter in config.pipelines.iter().flat_map(|p| &p.exporters) {
        if !exporters.insert(&exporter.id) {
            continue;
        }
        let checked = match exporter.protocol {
            config::ExportProtocol::Grpc => client::grpc_metadata(&exporter.headers).map(drop),
            config::ExportProtocol::Http => client::check_http_headers(&exporter.headers),
        };
        if let Err(error) = checked {
            problems.push(Problem { path: format!("exporters.{}.headers", exporter.id), message: error.to_string() });
        }
    }
    let mut stores = BTreeSet::new();
    for store in config.pipelines.iter().map(|p| &p.store) {
        if !stores.insert(&store.id) {
            continue;
        }
        let mirror = store.mirror.clone().unwrap_or_else(|| store.signing_key.with_extension("checkpoints"));
        for (key, dir) in [("directory", &store.directory), ("checkpoint.mirror", &mirror)] {
            if let Err(error) = crate::store::check_not_writable_by_others(dir) {
                problems.push(Problem { path: format!("exporters.{}.{key}", store.id), message: error.to_string() });
            }
        }
    }
    Preflight { processors, problems }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Limits;

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A core module: it reads, but is not a component.
        std::fs::write(d.join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::fs::write(d.join("p.yaml"), "filter: {}\n").unwrap();
        std::fs::write(d.join("k.key"), crate::checkpoint::SignerKey::generate("t").unwrap().encode()).unwrap();
        let text = format!(
            r#"receivers:
  otlp: {{protocols: {{grpc: {{endpoint: 127.0.0.1:0}}}}}}
processors:
  wasm/core: {{module: {core}, policy: {policy}}}
  wasm/gone: {{module: {gone}, policy: {policy}}}
exporters:
  auditstore: {{directory: {store}, signing_key: {key}}}
  otlp/down: {{endpoint: 127.0.0.1:14317, headers: {{X-Trace-Bin: x}}}}
service:
  pipelines:
    traces/a: {{receivers: [otlp], processors: [wasm/core], exporters: [auditstore, otlp/down]}}
    logs/a: {{receivers: [otlp], processors: [wasm/gone], exporters: [auditstore, otlp/down]}}
"#,
            core = d.join("core.wasm").display(),
            gone = d.join("gone.wasm").display(),
            policy = d.join("p.yaml").display(),
            store = d.join("store").display(),
            key = d.join("k.key").display(),
        );
        let config = config::parse(&text, "preflight.yaml").unwrap_or_else(|e| panic!("{e}"));
        let runtime = Runtime::new(Limits::default(), None).unwrap();
        let found = check(&config, &runtime);
        assert!(found.processors.is_empty());
        let paths: Vec<&str> = found.problems.iter().map(|p| p.path.as_str()).collect();
        // The missing module once (from the file check, not again from
        // loading it), the core module, the header once for both pipelines.
        assert_eq!(
            paths,
            ["processors.wasm/gone.module", "processors.wasm/core.module", "exporters.otlp/down.headers"]
        );
        assert!(found.problems[1].message.contains("not a component"), "{}", found.problems[1]);
        assert!(found.problems[2].message.contains("\"X-Trace-Bin\""), "{}", found.problems[2]);
    }
}
