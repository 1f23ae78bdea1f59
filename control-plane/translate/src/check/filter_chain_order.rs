//! Which filters end a chain (`source/common/config/utility.h`, `validateTerminalFilters`, with
//! each factory's `isTerminalFilterByProto`): a terminal filter must be the last one, and the
//! last one must be terminal. Filters are known by their config's type; one of a type not listed
//! here is not judged. A filter with neither a typed config nor config discovery has no factory
//! (`getAndCheckFactory`: lookup by name is off in 1.40).

use super::{Violation, join};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chain {
    Network,
    Http,
}

impl Chain {
    fn word(self) -> &'static str {
        match self {
            Chain::Network => "network",
            Chain::Http => "http",
        }
    }
}

pub(super) struct Filter<'a> {
    pub(super) name: &'a str,
    pub(super) type_url: Option<&'a str>,
    /// Configured through discovery or optional: Envoy decides later, or skips it.
    pub(super) discovered: bool,
}

const NETWORK_TERMINAL: &[&str] = &[
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    "envoy.extensions.filters.network.direct_response.v3.Config",
    "envoy.extensions.filters.network.echo.v3.Echo",
    "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
    "envoy.extensions.filters.network.thrift_proxy.v3.ThriftProxy",
    "envoy.extensions.filters.network.dubbo_proxy.v3.DubboProxy",
];

const NETWORK_NON_TERMINAL: &[&str] = &[
    "envoy.extensions.filters.network.rbac.v3.RBAC",
    "envoy.extensions.filters.network.sni_cluster.v3.SniCluster",
    "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
    "envoy.extensions.filters.network.ratelimit.v3.RateLimit",
    "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz",
    "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
];

const HTTP_TERMINAL: &[&str] = &["envoy.extensions.filters.http.router.v3.Router"];

const HTTP_NON_TERMINAL: &[&str] = &[
    "envoy.extensions.filters.http.rbac.v3.RBAC",
    "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
    "envoy.extensions.filters.http.fault.v3.HTTPFault",
    "envoy.extensions.filters.http.cors.v3.Cors",
    "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    "envoy.extensions.filters.http.lua.v3.Lua",
    "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb",
    "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
    "envoy.extensions.filters.http.compressor.v3.Compressor",
];

pub(super) fn order(chain: Chain, filters: &[Filter], path: &str, out: &mut Vec<Violation>) {
    let (terminal, non_terminal) = match chain {
        Chain::Network => (NETWORK_TERMINAL, NETWORK_NON_TERMINAL),
        Chain::Http => (HTTP_TERMINAL, HTTP_NON_TERMINAL),
    };
    let word = chain.word();
    for (i, filter) in filters.iter().enumerate() {
        let at = join(path, &format!("[{i}]"));
        let Some(url) = filter.type_url else {
            if !filter.discovered {
                out.push(Violation::new(
                    at,
                    format!(
                        "filter {} has no typed_config: no implementation can be found for it",
                        filter.name
                    ),
                ));
            }
            continue;
        };
        let type_name = url.rsplit('/').next().unwrap_or(url);
        let last = i + 1 == filters.len();
        if !last && terminal.contains(&type_name) {
            out.push(Violation::new(
                at,
                format!(
                    "terminal filter named {} of type {type_name} must be the last filter in a \
                     {word} filter chain",
                    filter.name
                ),
            ));
        } else if last && non_terminal.contains(&type_name) {
            out.push(Violation::new(
                at,
                format!(
                    "non-terminal filter named {} of type {type_name} is the last filter in a \
                     {word} filter chain",
                    filter.name
                ),
            ));
        }
    }
}
