//! The steps of the bench, in order: on a server with the watch off, the
//! load with and without swaps, idle policy swaps and module swaps; on a
//! server with the watch on, file-triggered swaps; then both stores
//! verified.

use tokio::runtime::Runtime;

use crate::common::load;
use crate::modules::{ModuleSwaps, module_swaps};
use crate::server::Server;
use crate::slices::{Interleaved, interleaved};
use crate::support::server::Setup;
use crate::support::swap::verify_output;
use crate::swaps::Swaps;
use crate::{AUDIT_RATIO, CLIENTS, DEBOUNCE, Env, FILE_QUIET, FILE_SWAPS, IDLE_GAP, IDLE_SWAPS, SWAP_EVERY};

/// What every step measured.
pub struct Outcome {
    /// The load without and with swaps, and the swaps under it.
    pub load: Interleaved,
    pub idle: Swaps,
    pub modules: ModuleSwaps,
    pub files: Swaps,
    /// Each store (named) and what `otel-audit verify` said of it.
    pub verified: Vec<(String, Result<String, String>)>,
}

pub fn run(env: &Env, runtime: &Runtime) -> Result<Outcome, String> {
    let pool = load::pool(AUDIT_RATIO);
    eprintln!("  [1/5] starting the server (reload.watch: false)");
    let mut server = Server::start(env, "admin", false)?;
    eprintln!(
        "  [2/5] {CLIENTS} clients: {slices} s without swaps and {slices} s with a policy swap every {} ms, interleaved",
        SWAP_EVERY.as_millis(),
        slices = env.slices
    );
    let load = interleaved(runtime, &pool, &mut server, env)?;
    server.check_running()?;
    eprintln!("  [3/5] {IDLE_SWAPS} policy swaps, idle");
    let mut idle = Swaps::default();
    for _ in 0..IDLE_SWAPS {
        idle.record(server.swap_policy(env));
        std::thread::sleep(IDLE_GAP);
    }
    eprintln!("  [4/5] module swaps, idle");
    let modules = module_swaps(env, &mut server)?;
    let admin = server.stop()?;

    eprintln!("  [5/5] {FILE_SWAPS} file-triggered policy swaps, idle (reload.watch: true, debounce {DEBOUNCE:?})");
    let mut watching = Server::start(env, "watch", true)?;
    let mut files = Swaps::default();
    for _ in 0..FILE_SWAPS {
        files.record(watching.swap_by_file(env));
        std::thread::sleep(FILE_QUIET);
    }
    let watch = watching.stop()?;

    let verified = [("admin server", &admin), ("watch server", &watch)]
        .into_iter()
        .map(|(name, setup)| (format!("{name} {}", setup.store.display()), verify(setup)))
        .collect();
    Ok(Outcome { load, idle, modules, files, verified })
}

/// `otel-audit verify` of a stopped server's store with its public key:
/// the summary line, or why it failed.
fn verify(setup: &Setup) -> Result<String, String> {
    let (status, text) = verify_output(&setup.store, &setup.public_key());
    let last = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_owned();
    if status.success() { Ok(last) } else { Err(format!("exit {status}: {text}")) }
}
