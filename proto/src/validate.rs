//! protoc-gen-validate's rules (`(validate.rules)`, `(validate.required)` on oneofs,
//! `(validate.disabled)` on messages), checked over the embedded descriptor pool the way Envoy's
//! generated `Validate()` checks them when it loads config.
//!
//! Unlike Envoy, every violation is reported, not just the first, each with the path of the value
//! inside the checked message (`virtual_hosts[2].routes[0].match.safe_regex.regex`). `Any` fields
//! are opened: the packed message is decoded by its type URL and checked too, as Envoy does when it
//! instantiates the extension a `typed_config` names. A type the pool does not know is a violation,
//! since nothing here can vouch for it.

mod number;
mod rules;
mod text;
mod walk;

use prost_reflect::DynamicMessage;

use crate::pb::google::protobuf::Any;

/// One rule a value breaks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Violation {
    /// Where the value is, in proto field names from the checked message: `routes[0].match.prefix`,
    /// map entries as `typed_per_filter_config["envoy.filters.http.cors"]`. Empty for the message
    /// itself.
    pub path: String,
    pub message: String,
}

impl Violation {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Violation {
        Violation {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Checks the message packed in `any`; its type must be in the pool.
pub fn validate_any(any: &Any) -> Vec<Violation> {
    let mut walker = walk::Walker::new();
    walker.any(&any.type_url, &any.value);
    walker.finish()
}

/// Checks a typed message; its type must be in the pool (every Envoy type meshd builds is).
pub fn validate<M: prost::Name + prost::Message>(message: &M) -> Vec<Violation> {
    validate_any(&crate::pack(message))
}

/// Checks a message already decoded against the pool.
pub fn validate_dynamic(message: &DynamicMessage) -> Vec<Violation> {
    let mut walker = walk::Walker::new();
    walker.message(message);
    walker.finish()
}
