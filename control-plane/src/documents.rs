//! Reading YAML/JSON files of Kubernetes and Istio objects, one document at a time, so a bad document
//! costs only itself.

use std::path::{Path, PathBuf};

use meshd_model::{InvalidObject, Object, ObjectOrigin};

/// An invalid object as the debug API and `meshd analyze -o json` print it: where it came from
/// (`file` and `document`, or the Kubernetes `object`), and why.
pub fn invalid_object_json(e: &InvalidObject) -> serde_json::Value {
    let mut out = serde_json::json!({"origin": e.origin.to_string(), "message": e.message});
    match &e.origin {
        ObjectOrigin::File { path, document } => {
            out["file"] = serde_json::json!(path);
            out["document"] = serde_json::json!(document);
        }
        ObjectOrigin::Kube(key) => out["object"] = serde_json::json!(key),
    }
    out
}

/// Files the file source reads below a directory: `*.yaml`, `*.yml`, `*.json`, sorted.
pub fn config_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                // Kubernetes ConfigMap mounts keep their data behind `..data` symlinked dirs.
                if !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".."))
                {
                    stack.push(path);
                }
            } else if is_config_file(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

pub fn is_config_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    ) && !path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Parses every document of a file. Lists (`kind: List`, `items:`) are flattened.
pub fn parse_file(path: &Path, text: &str) -> (Vec<Object>, Vec<InvalidObject>) {
    let json = path.extension().and_then(|e| e.to_str()) == Some("json");
    let (objects, invalid) = meshd_model::documents::parse(text, json);
    let errors = invalid
        .into_iter()
        .map(|e| InvalidObject::file(path, e.document, e.message))
        .collect();
    (objects, errors)
}

/// Reads and parses a file; an unreadable file is one error.
pub fn load_file(path: &Path) -> (Vec<Object>, Vec<InvalidObject>) {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_file(path, &text),
        Err(e) => (
            Vec::new(),
            vec![InvalidObject::file(path, 0, format!("cannot read: {e}"))],
        ),
    }
}
