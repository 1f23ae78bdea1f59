//! What config sources (files, Kubernetes watches, JWKS fetches) tell the index, and the one error
//! type for an object a source could not use, whatever its origin.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::object::{Object, ObjectKey};

/// Where an unusable object came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ObjectOrigin {
    /// A document of a file; `document` is 1-based (0: the file itself could not be read).
    File { path: PathBuf, document: usize },
    /// An object the Kubernetes API server holds.
    Kube(ObjectKey),
}

impl fmt::Display for ObjectOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectOrigin::File { path, document } => {
                write!(f, "{} (document {document})", path.display())
            }
            ObjectOrigin::Kube(key) if key.namespace.is_empty() => {
                write!(f, "kube:{}/{}", key.kind, key.name)
            }
            ObjectOrigin::Kube(key) => {
                write!(f, "kube:{}/{}/{}", key.kind, key.namespace, key.name)
            }
        }
    }
}

/// An object (or document) a source read and could not use: reported, skipped, never fatal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InvalidObject {
    pub origin: ObjectOrigin,
    pub message: String,
}

impl InvalidObject {
    pub fn file(path: impl Into<PathBuf>, document: usize, message: String) -> Self {
        InvalidObject {
            origin: ObjectOrigin::File {
                path: path.into(),
                document,
            },
            message,
        }
    }

    pub fn kube(key: ObjectKey, message: String) -> Self {
        InvalidObject {
            origin: ObjectOrigin::Kube(key),
            message,
        }
    }
}

impl fmt::Display for InvalidObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// What meshd holds for one `jwksUri`: the last keys fetched, and why the last fetch failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JwksState {
    /// The last JWKS document fetched; kept when a later fetch fails.
    pub keys: Option<String>,
    /// Why the last fetch failed, if it did.
    pub error: Option<String>,
}

/// An event from a source to the index.
#[derive(Debug)]
pub enum SourceEvent {
    /// Replace everything `origin` contributed (a file read again, a watch listed again).
    Reset {
        origin: String,
        objects: Vec<Object>,
        errors: Vec<InvalidObject>,
    },
    /// Add or replace `apply` and remove `delete` among `origin`'s objects (a watch event);
    /// `errors`, when given, replaces `origin`'s invalid objects.
    Update {
        origin: String,
        apply: Vec<Object>,
        delete: Vec<ObjectKey>,
        errors: Option<Vec<InvalidObject>>,
    },
    /// A source has been read completely once.
    Synced { source: String },
    /// What is now known of a `jwksUri`; `None` forgets it (no policy uses it any more).
    Jwks {
        uri: String,
        state: Option<JwksState>,
    },
    /// Leave `key` out of snapshots until it changes: what it produces Envoy would reject (or
    /// did), for `reason`.
    Quarantine { key: ObjectKey, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Kind;

    #[test]
    fn invalid_objects_name_their_origin() {
        let file = InvalidObject::file("mesh/vs.yaml", 2, "bad".to_string());
        assert_eq!(file.to_string(), "mesh/vs.yaml (document 2): bad");
        let key = ObjectKey::new(Kind::VirtualService, "bookinfo", "broken");
        let kube = InvalidObject::kube(key, "bad".to_string());
        assert_eq!(kube.to_string(), "kube:VirtualService/bookinfo/broken: bad");
        let ns = InvalidObject::kube(ObjectKey::new(Kind::Namespace, "", "x"), "bad".into());
        assert_eq!(ns.to_string(), "kube:Namespace/x: bad");
    }
}
