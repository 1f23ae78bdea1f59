//! The file source: every config file under a directory, re-read when anything there changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;

use meshd_model::SourceEvent;

use super::encode::content_version;
use crate::documents::{config_files, load_file};

/// The name the source for `dir` reports `Synced` under.
pub fn source_name(dir: &Path) -> String {
    format!("file:{}", dir.display())
}

/// Reads `dir` once, reports it synced, then follows changes until the index goes away.
pub fn spawn(dir: PathBuf, tx: mpsc::UnboundedSender<SourceEvent>) -> anyhow::Result<()> {
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads (ours included: a rescan opens every file) change nothing; waking on them would
        // make each rescan trigger the next.
        if event.is_ok_and(|e| matches!(e.kind, notify::EventKind::Access(_))) {
            return;
        }
        let _ = wake_tx.send(());
    })?;
    // Watch before the first read so no change between the two is missed.
    watcher.watch(&dir, notify::RecursiveMode::Recursive)?;
    let source = source_name(&dir);
    tokio::spawn(async move {
        let _watcher = watcher;
        let mut seen: BTreeMap<PathBuf, String> = BTreeMap::new();
        rescan(&dir, &mut seen, &tx);
        if tx.send(SourceEvent::Synced { source }).is_err() {
            return;
        }
        while wake_rx.recv().await.is_some() {
            // Editors write in several steps; let them finish.
            tokio::time::sleep(Duration::from_millis(50)).await;
            while wake_rx.try_recv().is_ok() {}
            if !rescan(&dir, &mut seen, &tx) {
                return;
            }
        }
    });
    Ok(())
}

/// Re-reads files whose content changed and drops files that are gone. False once nobody listens.
fn rescan(
    dir: &Path,
    seen: &mut BTreeMap<PathBuf, String>,
    tx: &mpsc::UnboundedSender<SourceEvent>,
) -> bool {
    let files = config_files(dir);
    let mut alive = true;
    for file in &files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let version = content_version(&bytes);
        if seen.get(file) == Some(&version) {
            continue;
        }
        seen.insert(file.clone(), version);
        let (objects, errors) = load_file(file);
        alive &= tx
            .send(SourceEvent::Reset {
                origin: file.display().to_string(),
                objects,
                errors,
            })
            .is_ok();
    }
    let gone: Vec<PathBuf> = seen
        .keys()
        .filter(|p| !files.contains(p))
        .cloned()
        .collect();
    for file in gone {
        seen.remove(&file);
        alive &= tx
            .send(SourceEvent::Reset {
                origin: file.display().to_string(),
                objects: Vec::new(),
                errors: Vec::new(),
            })
            .is_ok();
    }
    alive
}
