//! What the crate's unit tests share: the repository root and the real
//! component, loaded once per test binary (missing is a failure, never a
//! skip).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::runtime::{Limits, Module, Runtime};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The real component (`$OTEL_AUDIT_WASM`, else the `make wasm` output).
pub fn component() -> Arc<Module> {
    static MODULE: OnceLock<(Runtime, Arc<Module>)> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let path = std::env::var_os("OTEL_AUDIT_WASM")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo().join("target/wasm32-wasip2/wasm/audit_processor.wasm"));
            assert!(path.exists(), "the component {} does not exist: build it with `make wasm`", path.display());
            let runtime = Runtime::new(Limits::default(), Runtime::default_cache_dir()).expect("wasm runtime");
            let module = runtime.load(&path).expect("load the component");
            (runtime, Arc::new(module))
        })
        .1
        .clone()
}

/// Copies the regular files of `from` into `to` (created), as an operator
/// copying a chain directory would.
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
