//! Reading YAML/JSON files of Kubernetes and Istio objects, one document at a time, so a bad document
//! costs only itself.

use std::path::{Path, PathBuf};

use meshd_model::Object;

/// One document that could not be used, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentError {
    pub file: PathBuf,
    /// 1-based index of the document in the file.
    pub document: usize,
    pub message: String,
}

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (document {}): {}",
            self.file.display(),
            self.document,
            self.message
        )
    }
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

/// Splits a YAML stream at `---` lines; each part is parsed on its own.
fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs
}

/// Parses every document of a file. Lists (`kind: List`, `items:`) are flattened.
pub fn parse_file(path: &Path, text: &str) -> (Vec<Object>, Vec<DocumentError>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    let is_json = path.extension().and_then(|e| e.to_str()) == Some("json");
    let docs = if is_json {
        vec![text]
    } else {
        split_documents(text)
    };
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.trim().is_empty()
            || doc
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        let err = |message: String| DocumentError {
            file: path.to_path_buf(),
            document: i + 1,
            message,
        };
        let value: serde_json::Value = match if is_json {
            serde_json::from_str(doc).map_err(|e| e.to_string())
        } else {
            serde_saphyr::from_str(doc).map_err(|e| e.to_string())
        } {
            Ok(v) => v,
            Err(e) => {
                errors.push(err(format!(
                    "not valid {}: {e}",
                    if is_json { "JSON" } else { "YAML" }
                )));
                continue;
            }
        };
        let items = match value.get("items").and_then(|i| i.as_array()) {
            Some(items)
                if value
                    .get("kind")
                    .and_then(|k| k.as_str())
                    .is_some_and(|k| k.ends_with("List")) =>
            {
                items.clone()
            }
            _ => vec![value],
        };
        for item in items {
            match Object::parse(item) {
                Ok(Some(obj)) => objects.push(obj),
                Ok(None) => {}
                Err(e) => errors.push(err(e.to_string())),
            }
        }
    }
    (objects, errors)
}

/// Reads and parses a file; an unreadable file is one error.
pub fn load_file(path: &Path) -> (Vec<Object>, Vec<DocumentError>) {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_file(path, &text),
        Err(e) => (
            Vec::new(),
            vec![DocumentError {
                file: path.to_path_buf(),
                document: 0,
                message: format!("cannot read: {e}"),
            }],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_document_costs_only_itself() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: nope}]}\n---\n: : bad yaml [\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n";
        let (objects, errors) = parse_file(Path::new("x.yaml"), text);
        assert_eq!(objects.len(), 2, "{errors:?}");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].document, 2);
        assert!(
            errors[0].message.contains("Service default/b"),
            "{}",
            errors[0]
        );
        assert!(
            errors[0].message.contains("spec.ports[0].port"),
            "{}",
            errors[0]
        );
        assert_eq!(errors[1].document, 3);
    }
}
