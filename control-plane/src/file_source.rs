//! The file source: every config file under a directory, re-read when anything there changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use meshd_model::SourceEvent;

use crate::documents::{config_files, load_file};
use crate::encode::content_version;

/// The name the source for `dir` reports `Synced` under.
pub fn source_name(dir: &Path) -> String {
    format!("file:{}", dir.display())
}

/// Reads `dir` once, reports it synced, then follows changes until the index goes away.
/// `rescans` counts the reads after the first: each is a wake-up of the watcher.
pub fn spawn(
    dir: PathBuf,
    tx: mpsc::UnboundedSender<SourceEvent>,
    rescans: Counter,
) -> anyhow::Result<()> {
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
            rescans.inc();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";

    /// The next event, or a failed test after a few seconds.
    async fn next(rx: &mut mpsc::UnboundedReceiver<SourceEvent>) -> SourceEvent {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("the source is running")
    }

    #[tokio::test]
    async fn reading_the_files_does_not_wake_the_watcher_but_a_change_does() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), NAMESPACE).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let rescans = Counter::default();
        spawn(dir.path().to_path_buf(), tx, rescans.clone()).unwrap();
        assert!(matches!(next(&mut rx).await, SourceEvent::Reset { .. }));
        assert!(matches!(next(&mut rx).await, SourceEvent::Synced { .. }));
        // The first read opened every file; notify reports that as access, which changes nothing.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            rescans.get(),
            0,
            "nothing changed, yet the directory was read again"
        );
        std::fs::write(dir.path().join("b.yaml"), NAMESPACE.replace("shop", "cart")).unwrap();
        match next(&mut rx).await {
            SourceEvent::Reset { origin, .. } => assert!(origin.ends_with("b.yaml"), "{origin}"),
            other => panic!("expected the new file, got {other:?}"),
        }
        assert!(rescans.get() >= 1);
    }
}
