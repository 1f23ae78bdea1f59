//! meshd as its users run it: the `meshd` command on this machine, the CLI against a running
//! meshd's debug API, and what the debug API itself answers.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::Context as _;
use meshd_tests::Mesh;
use serde_json::Value;

/// `meshd` on this machine, blind to whatever `MESHD_*` settings the runner has (meshd reads its
/// flags from them too).
pub fn meshd_command() -> Command {
    let mut command = Command::new(meshd_tests::deps::meshd_binary());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MESHD_") {
            command.env_remove(key);
        }
    }
    command
}

/// `meshd analyze ARGS` (it needs no server).
pub fn analyze(args: &[&OsStr]) -> anyhow::Result<Output> {
    meshd_command()
        .arg("analyze")
        .args(args)
        .output()
        .with_context(|| {
            format!(
                "running {} analyze",
                meshd_tests::deps::meshd_binary().display()
            )
        })
}

/// `meshd analyze --config-dir DIR`.
pub fn analyze_dir(dir: &Path) -> anyhow::Result<Output> {
    analyze(&["--config-dir".as_ref(), dir.as_os_str()])
}

/// `meshd ARGS --debug-addr 10.77.0.1:15014` in the mesh's hub, where its meshd's debug API is
/// reachable (`proxy-status`, `proxy-config`).
pub fn in_hub(mesh: &Mesh, args: &[&str]) -> anyhow::Result<Output> {
    let meshd = meshd_tests::deps::meshd_binary().display().to_string();
    let debug_addr = mesh.debug_addr().to_string();
    let mut argv = vec![meshd.as_str()];
    argv.extend(args);
    argv.extend(["--debug-addr", debug_addr.as_str()]);
    mesh.hub_exec(&argv)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Exit status, stdout and stderr, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The rows of a table `meshd` printed, by column header. Columns start where the header's
/// words do (cells are padded to the column's width), so cells may contain single spaces
/// (`NOT SENT`).
pub fn parse_table(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let mut starts = Vec::new();
    let bytes = header.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let after_gap = i == 0 || (i >= 2 && bytes[i - 1] == b' ' && bytes[i - 2] == b' ');
        if *b != b' ' && after_gap {
            starts.push(i);
        }
    }
    let cell = |line: &str, column: usize| -> String {
        let start = starts[column];
        let end = starts.get(column + 1).copied().unwrap_or(usize::MAX);
        line.get(start..end.min(line.len()))
            .or_else(|| line.get(start..))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let names: Vec<String> = (0..starts.len()).map(|i| cell(header, i)).collect();
    lines
        .map(|line| {
            names
                .iter()
                .enumerate()
                .map(|(i, name)| (name.clone(), cell(line, i)))
                .collect()
        })
        .collect()
}

/// GET `path` from the mesh's meshd debug API, as JSON (`/debug/configz`, `/debug/syncz`).
pub fn debug_json(mesh: &Mesh, path: &str) -> anyhow::Result<Value> {
    let text = mesh.meshd_debug(path)?;
    serde_json::from_str(&text).with_context(|| format!("{path} is not JSON: {text}"))
}

/// The sum of every series of meshd metric `name` (0 when meshd cannot be asked).
pub fn metric(mesh: &Mesh, name: &str) -> u64 {
    let text = mesh.meshd_debug("/metrics").unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}
