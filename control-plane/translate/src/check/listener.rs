//! Listener rules beyond protoc-gen-validate, from
//! `source/common/listener_manager/listener_impl.cc`: an IP address, at least one filter chain,
//! chains that never match the same connection, network filters ending with a terminal one,
//! listener filters with a config, access logs that parse, and the HTTP connection managers
//! inside.

use meshd_proto::pb::envoy::config::listener::v3::{
    FilterChain, Listener, filter, listener_filter,
};
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use meshd_proto::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;

use super::address::check_ip;
use super::filter_chain_order::{Chain, Filter, order};
use super::{Violation, access_log, filter_chain, http, join};

pub(super) fn check(listener: &Listener) -> Vec<Violation> {
    let mut out = Vec::new();
    check_ip(listener.address.as_ref(), "address", &mut out);
    for (i, extra) in listener.additional_addresses.iter().enumerate() {
        check_ip(
            extra.address.as_ref(),
            &format!("additional_addresses[{i}].address"),
            &mut out,
        );
    }
    if listener.filter_chains.is_empty() && listener.default_filter_chain.is_none() {
        out.push(Violation::new(
            "filter_chains",
            "no filter chains specified",
        ));
    }
    access_log::check(&listener.access_log, "access_log", &mut out);
    filter_chain::check(&listener.filter_chains, &mut out);
    for (i, chain) in listener.filter_chains.iter().enumerate() {
        filters(chain, &format!("filter_chains[{i}]"), &mut out);
    }
    if let Some(chain) = &listener.default_filter_chain {
        filters(chain, "default_filter_chain", &mut out);
    }
    for (i, f) in listener.listener_filters.iter().enumerate() {
        let configured = matches!(
            f.config_type,
            Some(listener_filter::ConfigType::TypedConfig(_))
                | Some(listener_filter::ConfigType::ConfigDiscovery(_))
        );
        if !configured {
            out.push(Violation::new(
                format!("listener_filters[{i}]"),
                format!(
                    "filter {} has no typed_config: no implementation can be found for it",
                    f.name
                ),
            ));
        }
    }
    out
}

fn filters(chain: &FilterChain, path: &str, out: &mut Vec<Violation>) {
    let list: Vec<Filter> = chain
        .filters
        .iter()
        .map(|f| Filter {
            name: &f.name,
            type_url: match &f.config_type {
                Some(filter::ConfigType::TypedConfig(any)) => Some(any.type_url.as_str()),
                _ => None,
            },
            discovered: matches!(f.config_type, Some(filter::ConfigType::ConfigDiscovery(_))),
        })
        .collect();
    let path = join(path, "filters");
    order(Chain::Network, &list, &path, out);
    for (i, f) in chain.filters.iter().enumerate() {
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            continue;
        };
        let at = join(&path, &format!("[{i}].typed_config"));
        if let Some(hcm) = meshd_proto::unpack::<HttpConnectionManager>(any) {
            http::check(&hcm, &at, out);
        } else if let Some(tcp) = meshd_proto::unpack::<TcpProxy>(any) {
            access_log::check(&tcp.access_log, &join(&at, "access_log"), out);
        }
    }
}
