//! The walk over a decoded message: which rules apply to which value, the path of each value, and
//! the way into `Any`. Envoy's generated code skips rules of a oneof member or proto3 `optional`
//! field that is not set and of an embedded message that is absent (only `required` speaks then);
//! it applies scalar rules to proto3 defaults, so an empty `name` breaks `min_len: 1`.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, ReflectMessage, Value};

use crate::pb::validate::FieldRules;
use crate::pb::validate::field_rules::Type;

use super::Violation;
use super::number::{self, Nanos, Number};
use super::rules::Rules;
use super::text;

pub(super) struct Walker {
    rules: &'static Rules,
    path: String,
    out: Vec<Violation>,
}

impl Walker {
    pub(super) fn new() -> Walker {
        Walker {
            rules: Rules::get(),
            path: String::new(),
            out: Vec::new(),
        }
    }

    pub(super) fn finish(self) -> Vec<Violation> {
        self.out
    }

    fn report(&mut self, message: impl Into<String>) {
        self.out.push(Violation::new(self.path.clone(), message));
    }

    /// Runs `f` with `segment` appended to the path (`.name`, `[3]`, `["key"]`).
    fn at(&mut self, segment: &str, f: impl FnOnce(&mut Walker)) {
        let len = self.path.len();
        if !self.path.is_empty() && !segment.starts_with('[') {
            self.path.push('.');
        }
        self.path.push_str(segment);
        f(self);
        self.path.truncate(len);
    }

    /// The message packed in an `Any`, decoded from the pool by its type URL. Its fields continue
    /// the path of the `Any` itself (`typed_config.route_config.name`).
    pub(super) fn any(&mut self, type_url: &str, value: &[u8]) {
        let Some((_, name)) = type_url.rsplit_once('/') else {
            self.report(format!("type URL {type_url:?} has no type name"));
            return;
        };
        let Some(descriptor) = crate::json::pool().get_message_by_name(name) else {
            self.report(format!(
                "type {name} is unknown: its rules cannot be checked"
            ));
            return;
        };
        match DynamicMessage::decode(descriptor, value) {
            Ok(message) => self.message(&message),
            Err(e) => self.report(format!("value is not a valid {name}: {e}")),
        }
    }

    pub(super) fn message(&mut self, message: &DynamicMessage) {
        let descriptor = message.descriptor();
        if descriptor.full_name() == "google.protobuf.Any" {
            let type_url = message.get_field_by_number(1);
            let value = message.get_field_by_number(2);
            let type_url = type_url.as_deref().and_then(Value::as_str).unwrap_or("");
            let value = value.as_deref().and_then(Value::as_bytes);
            self.any(type_url, value.map_or(&[][..], |b| &b[..]));
            return;
        }
        if self.rules.unchecked(&descriptor) {
            return;
        }
        for field in descriptor.fields() {
            let set = message.has_field(&field);
            // Unset members of a oneof (proto3 `optional` fields included) are not checked.
            if !set && field.containing_oneof().is_some() {
                continue;
            }
            let rules = self.rules.field(&field);
            if rules.is_none() && !set {
                continue;
            }
            let value = message.get_field(&field);
            self.at(field.name(), |w| w.field(&field, rules, &value, set));
        }
        for oneof in descriptor.oneofs() {
            if oneof.is_synthetic() || !self.rules.oneof_required(oneof.full_name()) {
                continue;
            }
            if !oneof.fields().any(|f| message.has_field(&f)) {
                let names: Vec<String> = oneof.fields().map(|f| f.name().to_string()).collect();
                self.at(oneof.name(), |w| {
                    w.report(format!("exactly one of {} must be set", names.join(", ")))
                });
            }
        }
    }

    fn field(
        &mut self,
        field: &FieldDescriptor,
        rules: Option<&FieldRules>,
        value: &Value,
        set: bool,
    ) {
        if field.is_map() {
            self.map(field, rules, value);
        } else if field.is_list() {
            self.list(field, rules, value);
        } else {
            self.value(&field.kind(), rules, value, set);
        }
    }

    fn list(&mut self, field: &FieldDescriptor, rules: Option<&FieldRules>, value: &Value) {
        let items: &[Value] = value.as_list().unwrap_or(&[]);
        let repeated = match rules.and_then(|r| r.r#type.as_ref()) {
            Some(Type::Repeated(r)) => Some(r.as_ref()),
            _ => None,
        };
        if let Some(r) = repeated {
            if r.ignore_empty() && items.is_empty() {
                return;
            }
            let n = items.len() as u64;
            if let Some(min) = r.min_items
                && n < min
            {
                self.report(format!("value must contain at least {min} item(s)"));
            }
            if let Some(max) = r.max_items
                && n > max
            {
                self.report(format!("value must contain no more than {max} item(s)"));
            }
            if r.unique() {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        self.at(&format!("[{i}]"), |w| {
                            w.report("repeated value must contain unique items")
                        });
                    }
                }
            }
        }
        let item_rules = repeated.and_then(|r| r.items.as_deref());
        let kind = field.kind();
        for (i, item) in items.iter().enumerate() {
            self.at(&format!("[{i}]"), |w| {
                w.value(&kind, item_rules, item, true)
            });
        }
    }

    fn map(&mut self, field: &FieldDescriptor, rules: Option<&FieldRules>, value: &Value) {
        let Kind::Message(entry) = field.kind() else {
            return;
        };
        let empty = Default::default();
        let map = value.as_map().unwrap_or(&empty);
        let map_rules = match rules.and_then(|r| r.r#type.as_ref()) {
            Some(Type::Map(r)) => Some(r.as_ref()),
            _ => None,
        };
        if let Some(r) = map_rules {
            if r.ignore_empty() && map.is_empty() {
                return;
            }
            let n = map.len() as u64;
            if let Some(min) = r.min_pairs
                && n < min
            {
                self.report(format!("value must contain at least {min} pair(s)"));
            }
            if let Some(max) = r.max_pairs
                && n > max
            {
                self.report(format!("value must contain no more than {max} pair(s)"));
            }
        }
        let key_kind = entry.map_entry_key_field().kind();
        let value_kind = entry.map_entry_value_field().kind();
        // Hash order would make reports differ run to run.
        let mut entries: Vec<(&MapKey, &Value)> = map.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for (key, item) in entries {
            let segment = match key {
                MapKey::String(s) => format!("[{s:?}]"),
                MapKey::Bool(b) => format!("[{b}]"),
                MapKey::I32(v) => format!("[{v}]"),
                MapKey::I64(v) => format!("[{v}]"),
                MapKey::U32(v) => format!("[{v}]"),
                MapKey::U64(v) => format!("[{v}]"),
            };
            let key_value = Value::from(key.clone());
            self.at(&segment, |w| {
                if let Some(keys) = map_rules.and_then(|r| r.keys.as_deref()) {
                    w.value(&key_kind, Some(keys), &key_value, true);
                }
                let values = map_rules.and_then(|r| r.values.as_deref());
                w.value(&value_kind, values, item, true);
            });
        }
    }

    /// One value: a singular field's, a list item or a map value. `set` is false only for an
    /// unset singular field (a proto3 scalar then holds its default).
    fn value(&mut self, kind: &Kind, rules: Option<&FieldRules>, value: &Value, set: bool) {
        let rule = rules.and_then(|r| r.r#type.as_ref());
        let mut problems = Vec::new();
        match (kind, value) {
            (Kind::Message(_), Value::Message(inner)) => {
                self.embedded(inner, rules, set);
                return;
            }
            (Kind::Enum(descriptor), Value::EnumNumber(n)) => {
                if let Some(Type::Enum(r)) = rule {
                    number::enumeration(r, *n, descriptor, &mut problems);
                }
            }
            (_, Value::String(s)) => {
                if let Some(Type::String(r)) = rule {
                    text::string(r, s, self.rules, &mut problems);
                }
            }
            (_, Value::Bytes(b)) => {
                if let Some(Type::Bytes(r)) = rule {
                    text::bytes(r, b, self.rules, &mut problems);
                }
            }
            (_, scalar) => {
                if let (Some(r), Some(n)) = (rule, widen(scalar)) {
                    number::number(r, n, &mut problems);
                }
            }
        }
        for p in problems {
            self.report(p);
        }
    }

    /// An embedded message: presence, the rules of well-known types (wrappers carry their
    /// scalar's rules), then the message's own rules.
    fn embedded(&mut self, inner: &DynamicMessage, rules: Option<&FieldRules>, set: bool) {
        let required = rules.is_some_and(|r| {
            r.message.as_ref().is_some_and(|m| m.required())
                || match &r.r#type {
                    Some(Type::Duration(d)) => d.required(),
                    Some(Type::Timestamp(t)) => t.required(),
                    Some(Type::Any(a)) => a.required(),
                    _ => false,
                }
        });
        if !set {
            if required {
                self.report("value is required");
            }
            return;
        }
        let skip = rules.is_some_and(|r| r.message.as_ref().is_some_and(|m| m.skip()));
        let mut problems = Vec::new();
        let name = inner.descriptor().full_name().to_string();
        match (name.as_str(), rules.and_then(|r| r.r#type.as_ref())) {
            ("google.protobuf.Duration", Some(Type::Duration(r))) => {
                number::duration(r, Nanos(seconds_and_nanos(inner)), &mut problems);
            }
            ("google.protobuf.Timestamp", Some(Type::Timestamp(r))) => {
                number::timestamp(r, Nanos(seconds_and_nanos(inner)), &mut problems);
            }
            ("google.protobuf.Any", Some(Type::Any(r))) => {
                let url = inner.get_field_by_number(1);
                let url = url.as_deref().and_then(Value::as_str).unwrap_or("");
                if !r.r#in.is_empty() && !r.r#in.iter().any(|u| u == url) {
                    problems.push(format!("type URL must be in list {:?}", r.r#in));
                }
                if r.not_in.iter().any(|u| u == url) {
                    problems.push(format!("type URL must not be in list {:?}", r.not_in));
                }
            }
            (wrapper, Some(rule)) if wrapper.starts_with("google.protobuf.") => {
                let inner_value = inner.get_field_by_number(1);
                if let Some(v) = inner_value.as_deref() {
                    let kind = inner
                        .descriptor()
                        .get_field(1)
                        .map(|f| f.kind())
                        .unwrap_or(Kind::Bool);
                    let scalar_rules = FieldRules {
                        message: None,
                        r#type: Some(rule.clone()),
                    };
                    self.value(&kind, Some(&scalar_rules), v, true);
                }
            }
            _ => {}
        }
        for p in problems {
            self.report(p);
        }
        if !skip {
            self.message(inner);
        }
    }
}

fn seconds_and_nanos(message: &DynamicMessage) -> i128 {
    let get = |n: u32| -> i128 {
        match message.get_field_by_number(n).as_deref() {
            Some(Value::I64(v)) => i128::from(*v),
            Some(Value::I32(v)) => i128::from(*v),
            _ => 0,
        }
    };
    get(1) * 1_000_000_000 + get(2)
}

fn widen(value: &Value) -> Option<Number> {
    Some(match value {
        Value::Bool(b) => Number::Int(i128::from(*b)),
        Value::I32(v) => Number::Int(i128::from(*v)),
        Value::I64(v) => Number::Int(i128::from(*v)),
        Value::U32(v) => Number::Int(i128::from(*v)),
        Value::U64(v) => Number::Int(i128::from(*v)),
        Value::F32(v) => Number::Float(f64::from(*v)),
        Value::F64(v) => Number::Float(*v),
        _ => return None,
    })
}
