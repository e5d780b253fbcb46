//! What the end-to-end tests share, and the benches with them (through
//! `#[path]`): where the real component is, one runtime per test binary,
//! the shipped policies and fixtures, the servers they run.
#![allow(dead_code)]

pub mod admin;
pub mod load;
pub mod pki;
pub mod process;
pub mod server;
pub mod swap;
pub mod tamper;
pub mod trail;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use audit_processor::api::{ChainHead, Context};
use otel_audit::runtime::{self, Limits, Module, Runtime};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

/// The built component: `$OTEL_AUDIT_WASM` (set by the Makefile), else the
/// `make wasm` output. Missing is a failure, never a skip.
pub fn wasm_path() -> PathBuf {
    let path = std::env::var_os("OTEL_AUDIT_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/wasm32-wasip2/wasm/audit_processor.wasm"));
    assert!(
        path.exists(),
        "the component {} does not exist: build it with `make wasm` (make test and make bench do)",
        path.display()
    );
    path
}

/// The module cache the tests share (compiling the component once).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("OTEL_AUDIT_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target/module-cache"))
}

/// One runtime and the real component, loaded once per test binary.
pub fn module() -> &'static Module {
    static MODULE: OnceLock<(Runtime, Module)> = OnceLock::new();
    &MODULE
        .get_or_init(|| {
            let runtime = Runtime::new(Limits::default(), Some(cache_dir())).expect("wasm runtime");
            let module = runtime.load(&wasm_path()).expect("load the component");
            (runtime, module)
        })
        .1
}

/// A shipped policy's text, by file name under collector-config/policies/.
pub fn policy(name: &str) -> String {
    let path = root().join("collector-config/policies").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture's path under tests/fixtures/.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// A context at genesis of `chain_id`, received at a fixed time.
pub fn genesis(chain_id: &str) -> Context {
    Context { received_at_unix_nano: 1_795_000_000_123_456_789, head: ChainHead::genesis(chain_id), sender: None }
}

/// The secrets the keyed test policies name.
pub fn test_secrets() -> Vec<(String, Vec<u8>)> {
    vec![("k1".to_owned(), b"test-hmac-key-k1-0123456789abcdef".to_vec())]
}

/// The component's output in the native processor's types, so wasm and
/// native runs compare value for value.
pub fn as_native(out: runtime::Output) -> audit_processor::Output {
    let s = out.stats;
    audit_processor::Output {
        otlp: out.otlp,
        records: out.records,
        leaves: out.leaves,
        head: out.head,
        stats: audit_processor::Stats {
            received: s.received,
            kept: s.kept,
            dropped: s.dropped,
            redacted: s.redacted,
            violations: s.violations,
            rule_hits: s.rule_hits,
        },
    }
}

/// The component's refusal in the native processor's terms.
pub fn as_native_error(error: runtime::ProcessError) -> audit_processor::ProcessError {
    match error {
        runtime::ProcessError::Decode(m) => audit_processor::ProcessError::Decode(m),
        runtime::ProcessError::Policy(m) => audit_processor::ProcessError::Policy(m),
        runtime::ProcessError::InvalidContext(m) => audit_processor::ProcessError::InvalidContext(m),
    }
}

/// Copies a directory tree (`from` into `to`, created).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
