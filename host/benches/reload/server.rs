//! The server the swaps run on: `otel-audit serve` (one traces pipeline,
//! [`SHARDS`] chains, the admin endpoint) whose module and policy files
//! are the bench's copies, and the swaps themselves: a file replaced by
//! rename, then `POST /admin/reload` or the watch.

use std::time::{Duration, Instant};

use crate::support::process::Process;
use crate::support::server::{Setup, free_port, http, http_get};
use crate::support::swap::{sha256, write_atomically};
use crate::swaps::Swap;
use crate::{DEBOUNCE, Env, POLL, SHARDS};

/// The longest a reload may take before the bench gives up on it (the
/// server waits 30 s for its chains).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server, and what serves now.
pub struct Server {
    process: Process,
    setup: Setup,
    /// Index into `Env::policies` of the policy serving.
    policy: usize,
}

impl Server {
    /// Starts a server on a fresh store in `scratch/name`, serving policy A
    /// and the component, both from copies in their own directories.
    pub fn start(env: &Env, name: &str, watch: bool) -> Result<Server, String> {
        let dir = env.scratch.path().join(name);
        for sub in ["policy", "module"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut setup = Setup::new(&dir);
        setup.policy = dir.join("policy/policy.yaml");
        setup.module = dir.join("module/audit.wasm");
        write_atomically(&setup.policy, env.policies[0].text.as_bytes());
        write_atomically(&setup.module, &crate::modules::read(&env.wasm)?);
        setup.processor_extra = format!("    reload: {{watch: {watch}, debounce: {}ms}}\n", DEBOUNCE.as_millis());
        setup.shipped_store();
        setup.instance_id = "bench".into();
        setup.admin = Some(free_port());
        setup.signals = vec!["traces"];
        setup.shards = SHARDS;
        let process = setup.serve()?;
        Ok(Server { process, setup, policy: 0 })
    }

    /// The OTLP/gRPC endpoint, the metrics port and the process id.
    pub fn load_target(&self) -> (String, u16, u32) {
        (self.setup.grpc_uri(), self.setup.ports[2], self.process.pid())
    }

    /// Fails with the log's tail if the server has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        self.process.check_running()
    }

    fn admin_port(&self) -> u16 {
        self.setup.admin.expect("the bench's server has the admin endpoint")
    }

    /// Replaces the policy file by the other policy and reloads by admin.
    pub fn swap_policy(&mut self, env: &Env) -> Result<Swap, String> {
        let next = 1 - self.policy;
        write_atomically(&self.setup.policy, env.policies[next].text.as_bytes());
        let swap = self.admin_reload(&env.policies[next].digest, None)?;
        self.policy = next;
        Ok(swap)
    }

    /// Replaces the module file by `bytes` and reloads by admin.
    pub fn swap_module(&mut self, bytes: &[u8]) -> Result<Swap, String> {
        write_atomically(&self.setup.module, bytes);
        let policy = sha256(&std::fs::read(&self.setup.policy).unwrap_or_default());
        self.admin_reload(&policy, Some(&sha256(bytes)))
    }

    /// `POST /admin/reload`: it must answer 200 with the reload applied on
    /// every chain, serving `policy` (and `module`).
    fn admin_reload(&mut self, policy: &str, module: Option<&str>) -> Result<Swap, String> {
        let sent = Instant::now();
        let answer = http(self.admin_port(), "POST", "/admin/reload", ADMIN_TIMEOUT);
        let wall = sent.elapsed();
        let Some((code, body)) = answer else {
            self.process.check_running()?;
            return Err(format!("POST /admin/reload: no answer within {ADMIN_TIMEOUT:?}"));
        };
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("POST /admin/reload: HTTP {code}, {e}: {body}"))?;
        let report = &json["reloads"][0];
        if code != 200 || report["result"] != "applied" {
            return Err(format!("POST /admin/reload: HTTP {code}: {body}"));
        }
        let chains = report["chains"].as_array().map_or(0, |c| c.iter().filter(|c| c["seq"].is_u64()).count());
        if report["policy_digest"] != policy
            || module.is_some_and(|m| report["module_digest"] != m)
            || chains != SHARDS as usize
        {
            return Err(format!("POST /admin/reload applied something else (or not on {SHARDS} chains): {body}"));
        }
        Ok(Swap { wall, server: server_elapsed(report)? })
    }

    /// Replaces the policy file by the other policy and waits until the
    /// status shows it serving (the watch reloads it).
    pub fn swap_by_file(&mut self, env: &Env) -> Result<Swap, String> {
        let next = 1 - self.policy;
        let expected = &env.policies[next].digest;
        let renamed = write_atomically(&self.setup.policy, env.policies[next].text.as_bytes());
        let deadline = renamed + Duration::from_secs(10);
        loop {
            if let Some((200, body)) = http_get(self.admin_port(), "/admin/status") {
                let now = Instant::now();
                if let Some(last) = file_reload_serving(&body, expected)? {
                    self.policy = next;
                    return Ok(Swap { wall: now - renamed, server: server_elapsed(&last)? });
                }
            }
            if Instant::now() > deadline {
                self.process.check_running()?;
                return Err(format!("the renamed policy did not serve within 10 s:\n{}", self.process.log_tail(20)));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stops the server; returns what it ran with (its store, its key).
    pub fn stop(self) -> Result<Setup, String> {
        self.process.stop()?;
        Ok(self.setup)
    }
}

/// From a `GET /admin/status` body: the last reload's report if the
/// processor serves the policy of digest `expected`, which must have come
/// by a file reload.
fn file_reload_serving(body: &str, expected: &str) -> Result<Option<serde_json::Value>, String> {
    let status: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("GET /admin/status: {e}: {body}"))?;
    let processor = &status["processors"][0];
    if processor["policy"]["digest"] != expected {
        return Ok(None);
    }
    let last = &processor["last_reload"];
    if last["trigger"] != "file" || last["result"] != "applied" {
        return Err(format!("the new policy serves, but not by a file reload: {body}"));
    }
    Ok(Some(last.clone()))
}

/// The reload's own elapsed time, from its report.
pub fn server_elapsed(report: &serde_json::Value) -> Result<Duration, String> {
    report["elapsed_ms"]
        .as_f64()
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .ok_or_else(|| format!("a reload report without elapsed_ms: {report}"))
}
