//! Envoy 1.40 as the judge: in validate mode on a static bootstrap holding the resources (the
//! way the golden tests load their output), or, for the rules across one response, serving
//! them from files through its file-based xDS subscriptions, where a refused update is logged
//! as rejected.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::support_envoy::envoy_binary;

/// The runtime meshd's bootstrap sets: RE2 programs up to the checker's limit.
fn runtime() -> Value {
    json!({"layers": [{"name": "static", "static_layer": {
        "re2.max_program_size.error_level": meshd_translate::names::RE2_MAX_PROGRAM_SIZE
    }}]})
}

/// Clusters `c` and `d`, which routes and TCP proxies in the cases name.
pub fn named_clusters() -> Vec<Value> {
    ["c", "d"]
        .iter()
        .map(|n| json!({"name": n, "type": "STATIC", "connect_timeout": "1s"}))
        .collect()
}

pub fn router() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
}

/// `Ok` if Envoy validates `bootstrap`, else its words.
pub fn validate(mut bootstrap: Value, label: &str) -> Result<(), String> {
    bootstrap["node"] = json!({"id": "validate~127.0.0.1~check.default~default.svc.cluster.local", "cluster": "check"});
    bootstrap["layered_runtime"] = runtime();
    super::support_envoy::validate_bootstrap(&bootstrap, label, None)
}

/// Runs Envoy on `bootstrap` until its workers start (its file subscriptions have been read
/// by then), then stops it: `Err` with the rejection if an update was refused. `files` are
/// written next to the bootstrap first; `{dir}` in the bootstrap stands for their folder.
pub fn serve(bootstrap: Value, files: &[(&str, Value)], label: &str) -> Result<(), String> {
    let scratch = super::support_envoy::scratch_dir(label);
    let dir = scratch.path();
    for (name, content) in files {
        std::fs::write(dir.join(name), serde_json::to_vec_pretty(content).unwrap()).unwrap();
    }
    let mut bootstrap = bootstrap;
    bootstrap["node"] = json!({"id": "check", "cluster": "check"});
    bootstrap["layered_runtime"] = runtime();
    let text = serde_json::to_string(&bootstrap)
        .unwrap()
        .replace("{dir}", &dir.display().to_string());
    let file = dir.join("bootstrap.json");
    std::fs::write(&file, text).unwrap();
    let mut child = Command::new(envoy_binary())
        .args(["--disable-hot-restart", "-l", "info", "-c"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = Vec::new();
    let mut ready = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                ready = line.contains("starting workers");
                log.push(line);
                if ready {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    // Our own child, stopped by its handle.
    let _ = child.kill();
    let _ = child.wait();
    let rejected: Vec<&String> = log.iter().filter(|l| l.contains("rejected")).collect();
    assert!(
        ready || !rejected.is_empty(),
        "{label}: Envoy did not start:\n{}",
        log.join("\n")
    );
    if rejected.is_empty() {
        Ok(())
    } else {
        Err(rejected
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n"))
    }
}
