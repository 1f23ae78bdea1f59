//! What mesh-in-a-box needs from the machine, found once per test process.
//!
//! A missing tool fails the test with a message naming it: a skipped end-to-end test looks
//! exactly like a passing one in CI, so there is no skipping.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
    let envoy = envoy_path();
    if let (None, Some(given)) = (&envoy, std::env::var_os("MESHD_ENVOY")) {
        missing.push(format!(
            "Envoy at MESHD_ENVOY={} (not an executable file)",
            PathBuf::from(given).display()
        ));
    } else if envoy.is_none() {
        missing.push(format!(
            "Envoy (set MESHD_ENVOY, or install it at {})",
            envoy_candidates()
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    let meshd = sibling_binary("MESHD_BIN", "meshd");
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
        Some(envoy) if missing.is_empty() => Ok(Tools { envoy, meshd, echo }),
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

fn find_on_path(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn envoy_candidates() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME").map(PathBuf::from) else {
        return Vec::new();
    };
    let cache = home.join(".cache/meshd");
    vec![
        cache.join("bin/envoy"),
        cache.join("envoy-1.40.0/lib/python3.11/site-packages/envoy/_bin/envoy"),
    ]
}

fn envoy_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MESHD_ENVOY") {
        let path = PathBuf::from(path);
        return is_executable(&path).then_some(path);
    }
    envoy_candidates()
        .into_iter()
        .find(|path| is_executable(path))
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
