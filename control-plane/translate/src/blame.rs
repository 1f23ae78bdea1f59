//! Which objects a generated resource came from, so that when Envoy would reject it (or did), the
//! object can be named and left out rather than the whole resource type frozen.
//!
//! The first witness is Istio's own metadata: routes and filter chains built from a
//! VirtualService, and clusters shaped by a DestinationRule, carry the object's config path in
//! `metadata.filter_metadata.istio.config`. The one nearest to the field Envoy complained about is
//! the culprit. Without it, the resource's name says which service it is about
//! (`outbound|PORT|SUBSET|HOST`): the DestinationRules for that host, then the objects that
//! declare it.

use meshd_model::{Kind, ObjectKey, Snapshot};
use meshd_proto::pb::google::protobuf::Any;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, Value};

use crate::names::parse_outbound_cluster;

const ISTIO_METADATA: &str = "istio";
const CONFIG_FIELD: &str = "config";

/// The objects `resource` came from, most likely culprit first. `path` is where in the resource
/// the problem is (`virtual_hosts[1].routes[0].match`), when known.
pub fn culprits(snapshot: &Snapshot, resource: &Any, path: Option<&str>) -> Vec<ObjectKey> {
    let Some(message) = decode(resource) else {
        return Vec::new();
    };
    let mut found: Vec<ObjectKey> = match path {
        Some(path) => nearest_config(&message, path).into_iter().collect(),
        None => Vec::new(),
    };
    if found.is_empty() {
        // No path, or nothing annotated along it: every object the resource names.
        let mut all = Vec::new();
        every_config(&message, &mut all);
        found = all;
    }
    for key in by_name(snapshot, &message) {
        if !found.contains(&key) {
            found.push(key);
        }
    }
    found
}

/// Where in `resource` what Envoy's `message` quotes sits: the field whose string value shares
/// the longest run of characters (at least [`MIN_QUOTE`]) with the message — a regex, a header
/// name, a domain, even cut short as Envoy's messages cut them. Returns that length and the
/// field's path; the longer, the surer.
pub fn locate(resource: &Any, message: &str) -> Option<(usize, String)> {
    let decoded = decode(resource)?;
    let mut best: Option<(usize, String)> = None;
    quoted_field(&decoded, message, "", &mut best);
    best
}

/// Shortest shared run that counts as a quote: shorter ones are everywhere.
pub const MIN_QUOTE: usize = 3;

/// The path of the string field of `message` sharing the longest run with `quote`.
fn quoted_field(
    message: &DynamicMessage,
    quote: &str,
    prefix: &str,
    best: &mut Option<(usize, String)>,
) {
    for (field, value) in message.fields() {
        let path = if prefix.is_empty() {
            field.name().to_string()
        } else {
            format!("{prefix}.{}", field.name())
        };
        match value {
            Value::String(s) => consider(s, quote, path, best),
            Value::Message(inner) => quoted_field(inner, quote, &path, best),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{path}[{i}]");
                    match item {
                        Value::Message(inner) => quoted_field(inner, quote, &at, best),
                        Value::String(s) => consider(s, quote, at, best),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// Keeps `path` if `value` shares a longer run with `quote` than the best so far.
fn consider(value: &str, quote: &str, path: String, best: &mut Option<(usize, String)>) {
    let shared = longest_shared_run(value, quote);
    if shared >= MIN_QUOTE && best.as_ref().is_none_or(|(len, _)| shared > *len) {
        *best = Some((shared, path));
    }
}

/// Length of the longest common substring of `a` and `b`, in bytes (long values are cut: a
/// quote in an error message is short).
fn longest_shared_run(a: &str, b: &str) -> usize {
    let (a, b) = (
        &a.as_bytes()[..a.len().min(512)],
        &b.as_bytes()[..b.len().min(512)],
    );
    let mut previous = vec![0usize; b.len() + 1];
    let mut best = 0;
    for x in a {
        let mut current = vec![0usize; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            if x == y {
                current[j + 1] = previous[j] + 1;
                best = best.max(current[j + 1]);
            }
        }
        previous = current;
    }
    best
}

fn decode(resource: &Any) -> Option<DynamicMessage> {
    let name = resource.type_url.rsplit('/').next()?;
    let descriptor: MessageDescriptor = meshd_proto::json::pool().get_message_by_name(name)?;
    DynamicMessage::decode(descriptor, resource.value.as_slice()).ok()
}

/// The config path `metadata.filter_metadata.istio.config` of `message` names, as an object.
fn own_config(message: &DynamicMessage) -> Option<ObjectKey> {
    let metadata = message.descriptor().get_field_by_name("metadata")?;
    let Value::Message(metadata) = message.get_field(&metadata).into_owned() else {
        return None;
    };
    let filter = metadata.descriptor().get_field_by_name("filter_metadata")?;
    let Value::Map(by_filter) = metadata.get_field(&filter).into_owned() else {
        return None;
    };
    let istio = by_filter.iter().find_map(|(k, v)| {
        (k.as_str() == Some(ISTIO_METADATA)).then(|| v.as_message().cloned())?
    })?;
    let fields = istio.descriptor().get_field_by_name("fields")?;
    let Value::Map(fields) = istio.get_field(&fields).into_owned() else {
        return None;
    };
    let config = fields.iter().find_map(|(k, v)| {
        (k.as_str() == Some(CONFIG_FIELD)).then(|| v.as_message().cloned())?
    })?;
    let string_value = config.descriptor().get_field_by_name("string_value")?;
    let path = config.get_field(&string_value).as_str()?.to_string();
    object_of_config_path(&path)
}

/// `/apis/networking.istio.io/v1/namespaces/NS/virtualservices/NAME` → the object.
pub fn object_of_config_path(path: &str) -> Option<ObjectKey> {
    let (before, name) = path.rsplit_once('/')?;
    let (before, plural) = before.rsplit_once('/')?;
    let (before, namespace) = before.rsplit_once('/')?;
    let api = before.strip_suffix("/namespaces")?;
    // `/apis/<group>/<version>` or `/api/<version>`: two groups have `gateways`.
    let group = api
        .strip_prefix("/apis/")
        .and_then(|rest| rest.split_once('/'))
        .map_or("", |(group, _)| group);
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.plural() == plural && k.group() == group)?;
    Some(ObjectKey::new(kind, namespace, name))
}

/// The deepest annotated message along `path` (`a[1].b.c[0]`).
fn nearest_config(root: &DynamicMessage, path: &str) -> Option<ObjectKey> {
    let mut nearest = own_config(root);
    let mut current = root.clone();
    for segment in path.split('.') {
        let (field, index) = match segment.split_once('[') {
            Some((field, rest)) => (field, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let Some(descriptor) = current.descriptor().get_field_by_name(field) else {
            break;
        };
        let value = current.get_field(&descriptor).into_owned();
        let next = match (value, index) {
            (Value::List(items), Some(i)) => items.get(i).and_then(|v| v.as_message().cloned()),
            (Value::Message(m), None) => Some(m),
            _ => None,
        };
        let Some(next) = next else { break };
        if let Some(key) = own_config(&next) {
            nearest = Some(key);
        }
        current = next;
    }
    nearest
}

/// Every object any message inside `message` is annotated with, in order of appearance.
fn every_config(message: &DynamicMessage, out: &mut Vec<ObjectKey>) {
    if let Some(key) = own_config(message)
        && !out.contains(&key)
    {
        out.push(key);
    }
    for (_, value) in message.fields() {
        match value {
            Value::Message(inner) => every_config(inner, out),
            Value::List(items) => {
                for item in items {
                    if let Value::Message(inner) = item {
                        every_config(inner, out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// What the resource's name is about: for `outbound|PORT|SUBSET|HOST` clusters and their
/// endpoints, the DestinationRules for the host, then the objects declaring the host.
fn by_name(snapshot: &Snapshot, message: &DynamicMessage) -> Vec<ObjectKey> {
    let name_field = ["name", "cluster_name"]
        .into_iter()
        .find_map(|f| message.descriptor().get_field_by_name(f));
    let Some(name_field) = name_field else {
        return Vec::new();
    };
    let name = message
        .get_field(&name_field)
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some((_, _, host)) = parse_outbound_cluster(&name) else {
        return Vec::new();
    };
    let mut out: Vec<ObjectKey> = snapshot
        .traffic
        .destination_rules
        .for_host(host)
        .map(|rule| rule.key.clone())
        .collect();
    for svc in snapshot.registry.services.values() {
        if svc.hostname == host && !out.contains(&svc.source) {
            out.push(svc.source.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests;
