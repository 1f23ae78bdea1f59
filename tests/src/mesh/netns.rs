//! Network namespaces through `ip netns`, and the clean-up of ones left behind by crashed runs.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::Context as _;

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Every namespace this harness creates is called `mx<pid>-<n>-…`.
pub const PREFIX: &str = "mx";
/// Log directories of meshes are `<temp dir>/meshd-mx<pid>-<n>-<random>`.
pub const LOG_DIR_PREFIX: &str = "meshd-";

/// Runs `ip ARGS`, failing with ip's complaint.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip`")?;
    check(&output, || format!("ip {}", args.join(" ")))
}

pub fn check(output: &Output, what: impl FnOnce() -> String) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    anyhow::bail!(
        "`{}` failed ({}): {}{}",
        what(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim(),
        String::from_utf8_lossy(&output.stdout).trim()
    )
}

/// A command that runs `program` inside namespace `ns`.
pub fn exec(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns]).arg(program);
    command
}

pub fn exists(ns: &str) -> bool {
    Path::new(NETNS_DIR).join(ns).exists()
}

pub fn add(ns: &str) -> anyhow::Result<()> {
    ip(&["netns", "add", ns])
}

/// Kills whatever still runs inside `ns` (a namespace lives as long as its last process) and
/// deletes it. Best effort: used on the way out, where nothing better can be done with an error.
pub fn delete(ns: &str) {
    if !exists(ns) {
        return;
    }
    if let Ok(output) = Command::new("ip").args(["netns", "pids", ns]).output() {
        let pids: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
            .collect();
        if !pids.is_empty() {
            // The shell's kill builtin: no procps needed.
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("kill -9 {} 2>/dev/null", pids.join(" ")))
                .status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "delete", ns])
        .stderr(Stdio::null())
        .status();
}

/// The pid in a harness namespace name (`mx<pid>-…`), if it is one.
pub fn owner_pid(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Deletes the namespaces (and log directories under `logs`) of harness runs whose process is
/// gone. A live process's namespaces are never touched, so concurrent runs are safe.
pub fn remove_stale(logs: &Path) {
    let own = std::process::id();
    let stale = |name: &str| {
        owner_pid(name)
            .is_some_and(|pid| pid != own && !Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if stale(&name) {
                delete(&name);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(logs) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.strip_prefix(LOG_DIR_PREFIX).is_some_and(stale) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_harness_names_have_an_owner_pid() {
        assert_eq!(owner_pid("mx4242-0-hub"), Some(4242));
        assert_eq!(owner_pid("mx17-3-productpage.default"), Some(17));
        assert_eq!(owner_pid("mx-3-hub"), None);
        assert_eq!(owner_pid("mxabc-3-hub"), None);
        assert_eq!(owner_pid("cni-1234-5678"), None);
        assert_eq!(owner_pid("mx42"), None);
    }
}
