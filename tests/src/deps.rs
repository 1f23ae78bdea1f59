//! What mesh-in-a-box needs from the machine, found once per test process.
//!
//! A missing tool fails the test with a message naming it: a skipped end-to-end test looks
//! exactly like a passing one in CI, so there is no skipping.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context as _;

/// Programs the harness runs (besides the ones it finds on `PATH` by name).
#[derive(Debug, Clone)]
pub struct Tools {
    pub envoy: PathBuf,
    pub meshd: PathBuf,
    pub echo: PathBuf,
}

const SYSTEM_COMMANDS: [&str; 5] = ["ip", "iptables", "iptables-restore", "curl", "setpriv"];

/// Checks root, the system commands, Envoy and the project's binaries; the error names every
/// missing piece.
pub fn tools() -> anyhow::Result<Tools> {
    static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
    TOOLS
        .get_or_init(find_tools)
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_tools() -> Result<Tools, String> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push(
            "root (network namespaces and iptables need it; run the tests as root)".to_owned(),
        );
    }
    for command in SYSTEM_COMMANDS {
        if find_on_path(command).is_none() {
            missing.push(format!("`{command}` on PATH"));
        }
    }
    let envoy = envoy_binary();
    if let Err(err) = &envoy {
        missing.push(err.to_string());
    }
    let meshd = meshd_binary();
    if !is_executable(&meshd) {
        missing.push(format!(
            "the meshd binary at {} (build it with `cargo build -p meshd`, or set MESHD_BIN)",
            meshd.display()
        ));
    }
    let echo = sibling_binary("MESHD_ECHO_BIN", "meshd-echo");
    if !is_executable(&echo) {
        missing.push(format!(
            "the meshd-echo binary at {} (build it with `cargo build -p meshd-tests`, or set MESHD_ECHO_BIN)",
            echo.display()
        ));
    }
    match envoy {
        Ok(envoy) if missing.is_empty() => Ok(Tools { envoy, meshd, echo }),
        _ => Err(format!(
            "mesh-in-a-box cannot run, missing: {}; run `make test-deps`",
            missing.join("; ")
        )),
    }
}

fn is_root() -> bool {
    // The effective uid is the second field of `Uid:` in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

pub(crate) fn find_on_path(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Where `make test-deps` keeps what it installs: `$MESHD_CACHE`, else `~/.cache/meshd`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MESHD_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/meshd")))
        .unwrap_or_else(|| PathBuf::from(".cache/meshd"))
}

/// Where `make test-deps` puts Envoy 1.40: a link in `bin/`, and the binary inside the Python
/// package it comes in (whatever the Python version).
fn envoy_candidates() -> Vec<PathBuf> {
    let cache = cache_dir();
    let mut candidates = vec![cache.join("bin/envoy")];
    if let Ok(entries) = std::fs::read_dir(cache.join("envoy-1.40.0/lib")) {
        let mut pythons: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        pythons.sort();
        candidates.extend(
            pythons
                .into_iter()
                .map(|python| python.join("site-packages/envoy/_bin/envoy")),
        );
    }
    candidates
}

/// Envoy 1.40: `$MESHD_ENVOY`, else where `make test-deps` installs it. The error says where it
/// looked.
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    if let Some(given) = std::env::var_os("MESHD_ENVOY") {
        let path = PathBuf::from(given);
        anyhow::ensure!(
            is_executable(&path),
            "Envoy at MESHD_ENVOY={} (not an executable file)",
            path.display()
        );
        return Ok(path);
    }
    let candidates = envoy_candidates();
    candidates
        .iter()
        .find(|path| is_executable(path))
        .cloned()
        .with_context(|| {
            format!(
                "Envoy (set MESHD_ENVOY, or install it at {})",
                candidates
                    .iter()
                    .map(|path| path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        })
}

/// Prometheus (Debian's package, which `make test-deps` installs): `$MESHD_PROMETHEUS`, else
/// `prometheus` on `PATH`. Missing, it is an error naming how to get it: a metrics test never
/// skips, in CI or anywhere else.
pub fn prometheus_binary() -> anyhow::Result<PathBuf> {
    if let Some(given) = std::env::var_os("MESHD_PROMETHEUS") {
        let path = PathBuf::from(given);
        anyhow::ensure!(
            is_executable(&path),
            "Prometheus at MESHD_PROMETHEUS={} (not an executable file)",
            path.display()
        );
        return Ok(path);
    }
    find_on_path("prometheus").context(
        "Prometheus (`prometheus` on PATH, or set MESHD_PROMETHEUS); run `make test-deps`, \
         which installs Debian's package",
    )
}

/// The `meshd` binary: `$MESHD_BIN`, else the one cargo built next to the test executable.
/// Whether it exists is for the caller to find out.
pub fn meshd_binary() -> PathBuf {
    sibling_binary("MESHD_BIN", "meshd")
}

/// `$VAR`, else the binary next to the test executable's directory: tests run from
/// `target/<profile>/deps/`, binaries live in `target/<profile>/`.
fn sibling_binary(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let dir = exe.parent()?;
            let dir = if dir.ends_with("deps") {
                dir.parent()?
            } else {
                dir
            };
            Some(dir.join(name))
        })
        .unwrap_or_else(|| PathBuf::from(name))
}
