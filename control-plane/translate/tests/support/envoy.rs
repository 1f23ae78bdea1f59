//! Where the tests find Envoy 1.40: `MESHD_ENVOY`, else `~/.cache/meshd/bin/envoy` (what
//! `make test-deps` installs).

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn envoy_binary() -> PathBuf {
    let candidates = [
        std::env::var_os("MESHD_ENVOY").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/meshd/bin/envoy")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("Envoy 1.40 not found (MESHD_ENVOY or ~/.cache/meshd/bin/envoy): run `make test-deps`"))
}

/// A directory of a test's own for Envoy's files, created exclusively under a name nobody can
/// predict; removed when dropped.
pub fn scratch_dir(label: &str) -> tempfile::TempDir {
    let label: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    tempfile::Builder::new()
        .prefix(&format!("meshd-{label}-"))
        .tempdir()
        .expect("creating a scratch directory")
}

/// Envoy's verdict on `bootstrap` in validate mode, run from `cwd` (so relative fixture paths
/// resolve): `Ok`, or Envoy's words. A refused bootstrap is kept on disk and named in them.
pub fn validate_bootstrap(
    bootstrap: &serde_json::Value,
    label: &str,
    cwd: Option<&Path>,
) -> Result<(), String> {
    let dir = scratch_dir(label);
    let file = dir.path().join("bootstrap.json");
    std::fs::write(&file, serde_json::to_vec_pretty(bootstrap).expect("JSON"))
        .expect("writing the bootstrap");
    let mut command = Command::new(envoy_binary());
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let out = command
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "error",
            "-c",
        ])
        .arg(&file)
        .output()
        .expect("running Envoy");
    if out.status.success() {
        return Ok(());
    }
    let kept = dir.keep();
    Err(format!(
        "{} ({}):\n{}{}",
        label,
        kept.join("bootstrap.json").display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}
