//! Two of the three reload triggers: a processor's files changing (watched,
//! debounced) and SIGHUP. The third, `POST /admin/reload`, is served by
//! [`crate::admin`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Reloader;
use crate::config;
use crate::policy_event::Trigger;

/// The files a processor's candidate is built from.
fn watched_files(processor: &config::Processor) -> Vec<PathBuf> {
    let mut files = vec![processor.module.clone(), processor.policy.clone()];
    files.extend(processor.tests.iter().cloned());
    files.extend(processor.secrets.iter().filter_map(|s| match &s.source {
        config::SecretSource::File(path) => Some(path.clone()),
        _ => None,
    }));
    files.into_iter().map(|f| std::path::absolute(&f).unwrap_or(f)).collect()
}

/// Whether an event on `path` concerns one of `files`: the file itself, or
/// a Kubernetes ConfigMap's `..data` switch in the same directory.
fn concerns(path: &Path, files: &[PathBuf]) -> bool {
    files.iter().any(|f| f == path)
        || (path.file_name().is_some_and(|n| n.as_encoded_bytes().starts_with(b".."))
            && files.iter().any(|f| f.parent() == path.parent()))
}

/// Watches every processor with `reload.watch` (the directories of its
/// files, so that editors' and deploys' rename-into-place is seen) and
/// reloads it once its files have been quiet for `reload.debounce`. A
/// watched directory that is itself replaced is watched again at its path.
/// Returns the watchers; dropping them stops watching.
pub fn watch_files(reloader: &Arc<Reloader>, stop: &CancellationToken) -> Result<Vec<SharedWatcher>, String> {
    let mut watchers = Vec::new();
    for processor in reloader.processors().filter(|p| p.reload.watch) {
        let files = watched_files(processor);
        let directories: BTreeSet<PathBuf> = files.iter().filter_map(|f| f.parent()).map(Path::to_owned).collect();
        let (changed, mut changes) = mpsc::unbounded_channel::<PathBuf>();
        let (matching, watched_dirs) = (files.clone(), directories.clone());
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            for path in event.paths.into_iter().filter(|p| concerns(p, &matching) || watched_dirs.contains(p)) {
                let _ = changed.send(path);
            }
        })
        .map_err(|e| format!("processors.{}: cannot watch its files: {e}", processor.id))?;
        let watcher = Arc::new(std::sync::Mutex::new(watcher));
        for directory in &directories {
            watch_directory(&watcher, directory)
                .map_err(|e| format!("processors.{}: cannot watch {}: {e}", processor.id, directory.display()))?;
        }
        tracing::info!(processor = %processor.id, files = files.len(), debounce = ?processor.reload.debounce, "watching the processor's files");
        watchers.push(watcher.clone());
        let (reloader, stop, id, debounce) =
            (reloader.clone(), stop.clone(), processor.id.clone(), processor.reload.debounce);
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    _ = stop.cancelled() => return,
                    path = changes.recv() => match path { Some(path) => path, None => return },
                };
                let mut paths = BTreeSet::from([first]);
                // Debounce: wait until the files have been quiet for a while.
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        next = tokio::time::timeout(debounce, changes.recv()) => match next {
                            Ok(Some(path)) => { paths.insert(path); }
                            Ok(None) => return,
                            Err(_) => break,
                        },
                    }
                }
                for directory in paths.iter().filter(|p| directories.contains(*p)) {
                    // Replaced or removed: watch whatever is at the path now.
                    let _ = lock(&watcher).unwatch(directory);
                    if let Err(error) = watch_directory(&watcher, directory) {
                        tracing::error!(processor = %id, directory = %directory.display(), %error, "cannot watch the directory again; reload with SIGHUP or `otel-audit reload`");
                    }
                }
                let trigger = Trigger::File(paths.into_iter().collect());
                if let Err(error) = reloader.reload(Some(&id), trigger).await {
                    tracing::error!(%error, "file-triggered reload");
                }
            }
        });
    }
    Ok(watchers)
}

/// A watcher shared by its processor's debounce task, which re-watches a
/// replaced directory.
pub type SharedWatcher = Arc<std::sync::Mutex<notify::RecommendedWatcher>>;

fn watch_directory(watcher: &SharedWatcher, directory: &Path) -> notify::Result<()> {
    lock(watcher).watch(directory, RecursiveMode::NonRecursive)
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reloads every processor on each SIGHUP of `hangup`.
pub async fn reload_on_sighup(
    reloader: Arc<Reloader>,
    mut hangup: tokio::signal::unix::Signal,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = hangup.recv() => {
                if received.is_none() {
                    return;
                }
                tracing::info!("SIGHUP: reloading every processor");
                let _ = reloader.reload(None, Trigger::Signal).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_concern_the_files_and_configmap_switches_beside_them() {
        let files = vec![PathBuf::from("/etc/audit/policy.yaml"), PathBuf::from("/opt/m/audit.wasm")];
        assert!(concerns(Path::new("/etc/audit/policy.yaml"), &files));
        assert!(concerns(Path::new("/etc/audit/..data"), &files));
        assert!(!concerns(Path::new("/etc/audit/.policy.yaml.swp"), &files));
        assert!(!concerns(Path::new("/etc/other/..data"), &files));
        assert!(!concerns(Path::new("/opt/m/other.wasm"), &files));
    }
}
