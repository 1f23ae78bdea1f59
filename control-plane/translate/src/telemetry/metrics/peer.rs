//! The proxy's own names on shared listeners, and the `x-meshd-peer` exchange: the header a
//! client sets on every request (its workload and the service it addressed), moved into request
//! metadata by the server.

use meshd_proto::pack;
use meshd_proto::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use meshd_proto::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, SubstitutionFormatString, data_source,
    substitution_format_string,
};
use meshd_proto::pb::envoy::config::listener::v3::{Filter, filter};
use meshd_proto::pb::envoy::extensions::filters::common::set_filter_state::v3::{
    FilterStateValue, filter_state_value,
};
use meshd_proto::pb::envoy::extensions::filters::http::header_to_metadata::v3::Config as HeaderToMetadata;
use meshd_proto::pb::envoy::extensions::filters::http::header_to_metadata::v3::config::{
    KeyValuePair, Rule,
};
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use meshd_proto::pb::envoy::extensions::filters::network::set_filter_state::v3::Config as SetFilterState;
use meshd_proto::pb::envoy::r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher};

use super::{
    HEADER_TO_METADATA, NODE_METADATA, OWN, OWN_KEYS, PEER_FIELDS, PEER_HEADER, PEER_METADATA,
    SERVICE, SET_FILTER_STATE, UNKNOWN,
};
use crate::hcm::http_filter;

/// The network filter that reads the proxy's own names from its node metadata into connection
/// filter state ([`OWN`]), first on every filter chain of a listener that reads them.
pub(crate) fn own_filter() -> Filter {
    let values = OWN_KEYS
        .iter()
        .zip(NODE_METADATA)
        .map(|(key, format)| FilterStateValue {
            key: Some(filter_state_value::Key::ObjectKey(key.to_string())),
            factory_key: "envoy.string".to_string(),
            value: Some(filter_state_value::Value::FormatString(
                SubstitutionFormatString {
                    format: Some(substitution_format_string::Format::TextFormatSource(
                        DataSource {
                            specifier: Some(data_source::Specifier::InlineString(
                                format.to_string(),
                            )),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .collect();
    Filter {
        name: SET_FILTER_STATE.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(&SetFilterState {
            on_new_connection: values,
            ..Default::default()
        }))),
    }
}

/// The header every request a client sidecar or gateway sends carries its workload in; set on
/// its route configurations, replacing whatever the app sent.
pub(crate) fn peer_header() -> HeaderValueOption {
    let value = OWN
        .iter()
        .chain(SERVICE.iter())
        .copied()
        .collect::<Vec<_>>()
        .join(";");
    HeaderValueOption {
        header: Some(HeaderValue {
            key: PEER_HEADER.to_string(),
            value,
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// Moves [`PEER_HEADER`]'s fields into dynamic metadata and removes the header, so the app never
/// sees it; `unknown` for a client that sent none.
pub(super) fn peer_filter() -> HttpFilter {
    let last = PEER_FIELDS.len() - 1;
    let request_rules = PEER_FIELDS
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let pair = |value: &str| KeyValuePair {
                metadata_namespace: PEER_METADATA.to_string(),
                key: key.to_string(),
                value: value.to_string(),
                ..Default::default()
            };
            Rule {
                header: PEER_HEADER.to_string(),
                on_header_present: Some(KeyValuePair {
                    regex_value_rewrite: Some(RegexMatchAndSubstitute {
                        pattern: Some(RegexMatcher {
                            regex: format!("^(?:[^;]*;){{{i}}}([^;]*).*$"),
                            ..Default::default()
                        }),
                        substitution: "\\1".to_string(),
                    }),
                    ..pair("")
                }),
                on_header_missing: Some(pair(UNKNOWN)),
                // Each rule reads the header; the last one takes it away.
                remove: i == last,
                ..Default::default()
            }
        })
        .collect();
    http_filter(
        HEADER_TO_METADATA,
        pack(&HeaderToMetadata {
            request_rules,
            ..Default::default()
        }),
    )
}
