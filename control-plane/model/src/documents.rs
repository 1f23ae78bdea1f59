//! Decoding YAML/JSON text into objects, one document at a time, so a bad document costs only
//! itself. Pure: callers read the files.

use crate::Object;

/// A document that could not be used: its 1-based position in the text, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidDocument {
    pub document: usize,
    pub message: String,
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
pub fn parse(text: &str, json: bool) -> (Vec<Object>, Vec<InvalidDocument>) {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    let is_json = json;
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
        let err = |message: String| InvalidDocument {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_document_costs_only_itself() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: nope}]}\n---\n: : bad yaml [\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n";
        let (objects, errors) = parse(text, false);
        assert_eq!(objects.len(), 2, "{errors:?}");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].document, 2);
        assert!(
            errors[0].message.contains("Service default/b"),
            "{}",
            errors[0].message
        );
        assert!(
            errors[0].message.contains("spec.ports[0].port"),
            "{}",
            errors[0].message
        );
        assert_eq!(errors[1].document, 3);
    }
}
