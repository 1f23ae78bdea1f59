//! Small constructors for recurring Envoy shapes.

use meshd_proto::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, Metadata, SocketAddress, address,
    config_source, socket_address,
};
use meshd_proto::pb::google::protobuf::{BoolValue, Duration, Struct, UInt32Value, Value, value};

pub fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

pub fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

pub fn duration(seconds: i64, nanos: i32) -> Duration {
    Duration { seconds, nanos }
}

pub fn bool_value(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

pub fn u32_value(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

/// `filter_metadata.istio.config = <path>`. One key only: protobuf maps are encoded in hash order,
/// and a second key would make equal resources encode (and hash) differently.
pub fn istio_config_metadata(path: &str) -> Option<Metadata> {
    let mut fields = std::collections::HashMap::new();
    fields.insert(
        "config".to_string(),
        Value {
            kind: Some(value::Kind::StringValue(path.to_string())),
        },
    );
    let mut filter_metadata = std::collections::HashMap::new();
    filter_metadata.insert("istio".to_string(), Struct { fields });
    Some(Metadata {
        filter_metadata,
        ..Default::default()
    })
}

/// A `Struct` of string `fields`, every one built for the same key list laid out alike.
///
/// Protobuf maps are encoded in hash-map order, and each `HashMap` draws its own hash seed, so
/// two equal structs of several keys would encode (and hash) differently. A clone keeps its
/// original's seed and layout, so every struct here is cloned from one template per key list
/// (made once per process) and only its values are replaced: equal structs, equal bytes.
pub fn ordered_struct(fields: &[(&'static str, String)]) -> Struct {
    use std::collections::HashMap;
    use std::sync::LazyLock;
    static TEMPLATES: LazyLock<parking_lot::Mutex<HashMap<Vec<&'static str>, Struct>>> =
        LazyLock::new(Default::default);
    let keys: Vec<&'static str> = fields.iter().map(|(k, _)| *k).collect();
    let mut out = {
        let mut templates = TEMPLATES.lock();
        templates
            .entry(keys)
            .or_insert_with(|| Struct {
                fields: fields
                    .iter()
                    .map(|(k, _)| (k.to_string(), string_value("")))
                    .collect(),
            })
            .clone()
    };
    for (k, v) in fields {
        if let Some(slot) = out.fields.get_mut(*k) {
            *slot = string_value(v);
        }
    }
    out
}

/// `filter_metadata` of the given namespaces, laid out alike for the same names (see
/// [`ordered_struct`]).
pub fn ordered_metadata(namespaces: Vec<(&'static str, Struct)>) -> Metadata {
    use std::collections::HashMap;
    use std::sync::LazyLock;
    static TEMPLATES: LazyLock<parking_lot::Mutex<HashMap<Vec<&'static str>, Metadata>>> =
        LazyLock::new(Default::default);
    let keys: Vec<&'static str> = namespaces.iter().map(|(k, _)| *k).collect();
    let mut out = {
        let mut templates = TEMPLATES.lock();
        templates
            .entry(keys)
            .or_insert_with(|| Metadata {
                filter_metadata: namespaces
                    .iter()
                    .map(|(k, _)| (k.to_string(), Struct::default()))
                    .collect(),
                ..Default::default()
            })
            .clone()
    };
    for (k, v) in namespaces {
        if let Some(slot) = out.filter_metadata.get_mut(k) {
            *slot = v;
        }
    }
    out
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_string())),
    }
}
