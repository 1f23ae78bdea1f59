//! Processes a mesh started: owned by the mesh, killed when it is dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;
use parking_lot::Mutex;

/// Identifies one process in a [`ProcessTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessId(u64);

struct Entry {
    id: ProcessId,
    name: String,
    child: Child,
}

#[derive(Default)]
pub struct ProcessTable {
    entries: Mutex<Vec<Entry>>,
    next_id: Mutex<u64>,
}

impl ProcessTable {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(
        &self,
        name: &str,
        mut command: Command,
        log: &Path,
    ) -> anyhow::Result<(ProcessId, u32)> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let pid = child.id();
        let id = {
            let mut next = self.next_id.lock();
            *next += 1;
            ProcessId(*next)
        };
        self.entries.lock().push(Entry {
            id,
            name: name.to_owned(),
            child,
        });
        Ok((id, pid))
    }

    /// `None` while running, the exit description once it has ended (or was never ours).
    pub fn exited(&self, id: ProcessId) -> Option<String> {
        let mut entries = self.entries.lock();
        let Some(entry) = entries.iter_mut().find(|entry| entry.id == id) else {
            return Some("not running (stopped by the test)".to_owned());
        };
        match entry.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(format!("{} exited: {status}", entry.name)),
            Err(err) => Some(format!("{} cannot be waited for: {err}", entry.name)),
        }
    }

    /// SIGKILLs and reaps one process; false if it was not in the table.
    pub fn kill(&self, id: ProcessId) -> bool {
        let entry = {
            let mut entries = self.entries.lock();
            let Some(index) = entries.iter().position(|entry| entry.id == id) else {
                return false;
            };
            entries.remove(index)
        };
        reap(entry);
        true
    }

    pub fn kill_all(&self) {
        let entries = std::mem::take(&mut *self.entries.lock());
        for entry in entries {
            reap(entry);
        }
    }
}

fn reap(mut entry: Entry) {
    // Already-exited children make kill fail; waiting is what matters.
    let _ = entry.child.kill();
    let _ = entry.child.wait();
}

/// The last `lines` lines of a log, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            format!(
                "--- last {} lines of {} ---\n{}",
                all.len() - start,
                path.display(),
                all[start..].join("\n")
            )
        }
        Err(err) => format!("(no log at {}: {err})", path.display()),
    }
}

/// A process started in a pod, e.g. an app.
#[derive(Debug, Clone)]
pub struct App {
    pub(crate) id: ProcessId,
    pub pid: u32,
    pub log: PathBuf,
}

impl App {
    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
