//! Swaps of the .wasm itself: between the component and the keep-all
//! build (each from the module cache once compiled), and to copies of the
//! component never seen before (compiled during the reload).

use std::path::{Path, PathBuf};

use crate::common::cpu::cores;
use crate::server::Server;
use crate::support::swap::sha256;
use crate::swaps::Swaps;
use crate::{COMPILED_SWAPS, Env, IDLE_GAP, MODULE_SWAPS};

/// Module swaps by where the module came from, and what was swapped.
pub struct ModuleSwaps {
    pub cached: Swaps,
    pub compiled: Swaps,
    pub notes: Vec<String>,
}

impl ModuleSwaps {
    /// Swaps to `bytes`, counted by whether the cache held them.
    fn one(&mut self, server: &mut Server, cache_dir: &Path, bytes: &[u8]) {
        let was_cached = in_cache(cache_dir, &sha256(bytes));
        let swap = server.swap_module(bytes);
        if was_cached { self.cached.record(swap) } else { self.compiled.record(swap) }
    }
}

/// The cached swaps, then the compiled ones, each time back to the component.
pub fn module_swaps(env: &Env, server: &mut Server) -> Result<ModuleSwaps, String> {
    let component = read(&env.wasm)?;
    let mut swaps = ModuleSwaps { cached: Swaps::default(), compiled: Swaps::default(), notes: Vec::new() };
    match &env.keep_all {
        Some(path) => cached_swaps(env, server, &component, path, &mut swaps)?,
        None => swaps.notes.push(
            "module swaps from the cache skipped: no keep-all component (run `make fixtures`, or set \
             OTEL_AUDIT_WASM_KEEP_ALL)"
                .to_owned(),
        ),
    }
    // Copies of the component with a custom section of their own: a new
    // digest each, so not in the cache.
    let mut fresh = Vec::new();
    for i in 0..COMPILED_SWAPS {
        let copy = with_custom_section(&component, "otel-audit-bench", format!("{}-{i}", unique()).as_bytes());
        fresh.push(sha256(&copy));
        swaps.one(server, &env.cache_dir, &copy);
        swaps.one(server, &env.cache_dir, &component);
    }
    swaps.notes.push(format!(
        "compiled: {COMPILED_SWAPS} swaps to copies of the component with a unique custom section (a new digest, so \
         compiled by the reload on {} cores); their cache entries are removed afterwards",
        cores()
    ));
    for digest in fresh {
        remove_from_cache(&env.cache_dir, &digest);
    }
    Ok(swaps)
}

/// [`MODULE_SWAPS`] swaps between the component and the keep-all build
/// at `path`, ending on the component.
fn cached_swaps(
    env: &Env,
    server: &mut Server,
    component: &[u8],
    path: &Path,
    swaps: &mut ModuleSwaps,
) -> Result<(), String> {
    let keep_all = read(path)?;
    swaps.notes.push(format!(
        "module swaps: the component ({} KiB) <-> {} ({} KiB), {MODULE_SWAPS} swaps, then each compiled \
         one and back; a module not yet in the cache (e.g. a freshly built keep-all) counts as compiled",
        component.len() / 1024,
        path.display(),
        keep_all.len() / 1024
    ));
    for i in 0..MODULE_SWAPS {
        let bytes = if i % 2 == 0 { &keep_all[..] } else { component };
        swaps.one(server, &env.cache_dir, bytes);
        std::thread::sleep(IDLE_GAP);
    }
    if MODULE_SWAPS % 2 == 1 {
        swaps.one(server, &env.cache_dir, component);
    }
    Ok(())
}

pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether the module cache holds a precompiled module of this digest.
fn in_cache(cache_dir: &Path, digest: &str) -> bool {
    cache_entries(cache_dir, digest).next().is_some()
}

fn remove_from_cache(cache_dir: &Path, digest: &str) {
    for entry in cache_entries(cache_dir, digest) {
        let _ = std::fs::remove_file(entry);
    }
}

/// The cache's files for a digest (`<hex>-<engine hash>.cwasm`).
fn cache_entries(cache_dir: &Path, digest: &str) -> impl Iterator<Item = PathBuf> {
    let prefix = format!("{}-", digest.trim_start_matches("sha256:"));
    std::fs::read_dir(cache_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(move |e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
}

/// The component with a custom section appended (valid anywhere in a
/// component): the same code under another digest.
fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb128(mut value: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut content = Vec::new();
    leb128(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0);
    leb128(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// Unique for this run: the pid and the time.
fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}
