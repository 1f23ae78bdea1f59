//! The rules, read once from the descriptor pool's options: `(validate.rules)` per field as the
//! typed `FieldRules` (generated from the same `validate.proto`), the oneofs that must be set, the
//! messages whose validation is switched off, and every `pattern` compiled up front.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, ExtensionDescriptor, FieldDescriptor, MessageDescriptor};

use crate::pb::validate::FieldRules;
use crate::pb::validate::field_rules::Type;

pub(super) struct Rules {
    /// By the field's full name (`envoy.config.route.v3.VirtualHost.name`).
    fields: HashMap<String, FieldRules>,
    /// Oneofs marked `(validate.required)`, by full name.
    required_oneofs: HashSet<String>,
    /// Messages marked `(validate.disabled)` or `(validate.ignored)`: Envoy's generated code
    /// checks nothing in them, nested messages included.
    unchecked: HashSet<String>,
    /// Each `pattern` of the rules. `None` for one the `regex` crate cannot compile (RE2 and it
    /// differ at the edges): that pattern is then not checked rather than guessed at.
    patterns: HashMap<String, Option<regex::Regex>>,
    byte_patterns: HashMap<String, Option<regex::bytes::Regex>>,
}

impl Rules {
    /// The rules of Envoy's API as embedded in this crate, read on first use.
    pub(super) fn get() -> &'static Rules {
        static RULES: OnceLock<Rules> = OnceLock::new();
        RULES.get_or_init(|| Rules::load(crate::json::pool()))
    }

    pub(super) fn field(&self, field: &FieldDescriptor) -> Option<&FieldRules> {
        self.fields.get(field.full_name())
    }

    pub(super) fn oneof_required(&self, full_name: &str) -> bool {
        self.required_oneofs.contains(full_name)
    }

    pub(super) fn unchecked(&self, message: &MessageDescriptor) -> bool {
        self.unchecked.contains(message.full_name())
    }

    pub(super) fn pattern(&self, pattern: &str) -> Option<&regex::Regex> {
        self.patterns.get(pattern).and_then(Option::as_ref)
    }

    pub(super) fn byte_pattern(&self, pattern: &str) -> Option<&regex::bytes::Regex> {
        self.byte_patterns.get(pattern).and_then(Option::as_ref)
    }

    fn load(pool: &DescriptorPool) -> Rules {
        let mut rules = Rules {
            fields: HashMap::new(),
            required_oneofs: HashSet::new(),
            unchecked: HashSet::new(),
            patterns: HashMap::new(),
            byte_patterns: HashMap::new(),
        };
        // A pool without validate.proto has no rules to read; everything then passes.
        let extension = |name: &str| pool.get_extension_by_name(name);
        let field_rules = extension("validate.rules");
        let oneof_required = extension("validate.required");
        let switched_off: Vec<ExtensionDescriptor> = ["validate.disabled", "validate.ignored"]
            .into_iter()
            .filter_map(extension)
            .collect();
        for message in pool.all_messages() {
            let options = message.options();
            if switched_off
                .iter()
                .any(|ext| options.get_extension(ext).as_bool() == Some(true))
            {
                rules.unchecked.insert(message.full_name().to_string());
            }
            if let Some(ext) = &oneof_required {
                for oneof in message.oneofs() {
                    if oneof.options().get_extension(ext).as_bool() == Some(true) {
                        rules.required_oneofs.insert(oneof.full_name().to_string());
                    }
                }
            }
            let Some(ext) = &field_rules else { continue };
            for field in message.fields() {
                let options = field.options();
                if !options.has_extension(ext) {
                    continue;
                }
                let typed = options
                    .get_extension(ext)
                    .as_message()
                    .and_then(|m| m.transcode_to::<FieldRules>().ok());
                if let Some(typed) = typed {
                    rules.compile_patterns(&typed);
                    rules.fields.insert(field.full_name().to_string(), typed);
                }
            }
        }
        rules
    }

    fn compile_patterns(&mut self, field: &FieldRules) {
        match &field.r#type {
            Some(Type::String(s)) => {
                if let Some(p) = &s.pattern {
                    self.patterns
                        .entry(p.clone())
                        .or_insert_with(|| regex::Regex::new(p).ok());
                }
            }
            Some(Type::Bytes(b)) => {
                if let Some(p) = &b.pattern {
                    self.byte_patterns
                        .entry(p.clone())
                        .or_insert_with(|| regex::bytes::Regex::new(p).ok());
                }
            }
            Some(Type::Repeated(r)) => {
                if let Some(items) = &r.items {
                    self.compile_patterns(items);
                }
            }
            Some(Type::Map(m)) => {
                for inner in [&m.keys, &m.values].into_iter().flatten() {
                    self.compile_patterns(inner);
                }
            }
            _ => {}
        }
    }
}
