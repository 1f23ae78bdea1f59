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
