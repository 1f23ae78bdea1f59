//! Listener cases (`source/common/listener_manager/listener_impl.cc`,
//! `filter_chain_manager_impl.cc`, `source/common/config/utility.h`, the HTTP connection
//! manager's `config.cc`, and protoc-gen-validate inside typed configs).

use meshd_proto::type_url::LISTENER;
use serde_json::{Value, json};

use super::case::Case;
use super::envoy::router;

fn tcp_proxy() -> Value {
    json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "t", "cluster": "c"}})
}

fn network_rbac() -> Value {
    json!({"name": "envoy.filters.network.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC", "stat_prefix": "r"}})
}

fn http_rbac() -> Value {
    json!({"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}})
}

fn listener(address: &str, chains: Value) -> Value {
    json!({"name": "l", "address": {"socket_address": {"address": address, "port_value": 8080}}, "filter_chains": chains})
}

/// Two chains proxying TCP, told apart by `a` and `b` (their filter chain matches).
fn two_chains(a: Value, b: Value) -> Value {
    listener(
        "0.0.0.0",
        json!([
            {"filter_chain_match": a, "filters": [tcp_proxy()]},
            {"filter_chain_match": b, "filters": [tcp_proxy()]}
        ]),
    )
}

fn one_chain(filters: Value) -> Value {
    listener("0.0.0.0", json!([{"filters": filters}]))
}

/// A listener with one HTTP connection manager: `more` fields, and an inline table with
/// `vhosts`.
fn http(more: Value, vhosts: Value) -> Value {
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "h",
        "route_config": {"name": "inline", "virtual_hosts": vhosts},
        "http_filters": [router()]
    });
    if let (Value::Object(base), Value::Object(extra)) = (&mut hcm, more) {
        base.extend(extra);
    }
    one_chain(
        json!([{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]),
    )
}

/// A file access logger writing `format` (text), with a CEL `filter` if given.
fn access_log(format: &str, filter: Option<&str>) -> Value {
    let mut log = json!({"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": "/dev/null",
        "log_format": {"text_format_source": {"inline_string": format}}}});
    if let Some(expression) = filter {
        log["filter"] = json!({"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": expression}}});
    }
    log
}

fn any_host() -> Value {
    json!([{"name": "a", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}])
}

fn range(address: &str, len: u32) -> Value {
    json!([{"address_prefix": address, "prefix_len": len}])
}

fn jwt(rules: Value) -> Value {
    http(
        json!({"http_filters": [{"name": "envoy.filters.http.jwt_authn", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"idp": {"issuer": "https://idp.example", "remote_jwks": {
                "http_uri": {"uri": "https://idp.example/jwks", "cluster": "c", "timeout": "1s"}}}},
            "requirement_map": {"user": {"provider_name": "idp"}},
            "rules": rules}}, router()]}),
        any_host(),
    )
}

/// A chain proxying TCP behind a server TLS context with `common`.
fn tls_chain(common: Value) -> Value {
    listener(
        "0.0.0.0",
        json!([{"filters": [tcp_proxy()], "transport_socket": {
        "name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": common}}}]),
    )
}

pub fn cases() -> Vec<Case> {
    vec![
        Case::one(
            "listeners listen on an IP address",
            LISTENER,
            one_chain(json!([tcp_proxy()])).tap(|l| l["address"]["socket_address"]["address"] = json!("localhost")),
            one_chain(json!([tcp_proxy()])).tap(|l| l["address"]["socket_address"]["address"] = json!("::")),
            "malformed IP address: localhost",
        ),
        Case::one(
            "listeners have a filter chain",
            LISTENER,
            listener("0.0.0.0", json!([])),
            listener("0.0.0.0", json!([])).tap(|l| l["default_filter_chain"] = json!({"filters": [tcp_proxy()]})),
            "no filter chains specified",
        ),
        Case::one(
            "two chains never match alike",
            LISTENER,
            two_chains(json!({"destination_port": 80}), json!({"destination_port": 80})),
            two_chains(json!({"destination_port": 80}), json!({})),
            "overlapping matching rules",
        ),
        Case::one(
            "server names overlap case-insensitively",
            LISTENER,
            two_chains(json!({"server_names": ["a.example", "b.example"]}), json!({"server_names": ["B.example"]})),
            two_chains(json!({"server_names": ["a.example"]}), json!({"server_names": ["b.example", "*.a.example"]})),
            "overlapping matching rules",
        ),
        Case::one(
            "application protocols overlap",
            LISTENER,
            two_chains(json!({"application_protocols": ["h2", "http/1.1"]}), json!({"application_protocols": ["h2"]})),
            two_chains(json!({"application_protocols": ["http/1.1"]}), json!({"application_protocols": ["h2"]})),
            "overlapping matching rules",
        ),
        Case::one(
            "ranges are compared after masking",
            LISTENER,
            two_chains(json!({"prefix_ranges": range("10.1.0.0", 8)}), json!({"prefix_ranges": range("10.0.0.0", 8)})),
            two_chains(json!({"prefix_ranges": range("10.1.0.0", 16)}), json!({"prefix_ranges": range("10.0.0.0", 8)})),
            "overlapping matching rules",
        ),
        Case::one(
            "server names are wildcarded only as *.suffix",
            LISTENER,
            two_chains(json!({"server_names": ["*shop.example"]}), json!({})),
            two_chains(json!({"server_names": ["*.shop.example"]}), json!({})),
            "partial wildcards are not supported",
        ),
        Case::one(
            "ranges are IP addresses",
            LISTENER,
            two_chains(json!({"source_prefix_ranges": range("10.0.0", 8)}), json!({})),
            two_chains(json!({"source_prefix_ranges": range("10.0.0.0", 8)}), json!({})),
            "malformed IP address: 10.0.0",
        ),
        Case::one(
            "a terminal network filter comes last",
            LISTENER,
            one_chain(json!([tcp_proxy(), network_rbac()])),
            one_chain(json!([network_rbac(), tcp_proxy()])),
            "must be the last filter in a network filter chain",
        ),
        Case::one(
            "a network filter chain ends with a terminal filter",
            LISTENER,
            one_chain(json!([network_rbac()])),
            one_chain(json!([network_rbac(), tcp_proxy()])),
            "is the last filter in a network filter chain",
        ),
        Case::one(
            "the router is the last HTTP filter",
            LISTENER,
            http(json!({"http_filters": [router(), http_rbac()]}), any_host()),
            http(json!({"http_filters": [http_rbac(), router()]}), any_host()),
            "must be the last filter in a http filter chain",
        ),
        Case::one(
            "an HTTP filter chain ends with the router",
            LISTENER,
            http(json!({"http_filters": [http_rbac()]}), any_host()),
            http(json!({"http_filters": []}), any_host()),
            "is the last filter in a http filter chain",
        ),
        Case::one(
            "upgrade types are unique, case-insensitively",
            LISTENER,
            http(json!({"upgrade_configs": [{"upgrade_type": "websocket"}, {"upgrade_type": "WebSocket"}]}), any_host()),
            http(json!({"upgrade_configs": [{"upgrade_type": "websocket"}, {"upgrade_type": "CONNECT"}]}), any_host()),
            "multiple upgrade configs with the same name",
        ),
        Case::one(
            "listener filters carry a typed config",
            LISTENER,
            one_chain(json!([tcp_proxy()])).tap(|l| l["listener_filters"] = json!([{"name": "envoy.filters.listener.tls_inspector"}])),
            one_chain(json!([tcp_proxy()])).tap(|l| l["listener_filters"] = json!([{"name": "envoy.filters.listener.tls_inspector",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}])),
            "has no typed_config",
        ),
        Case::one(
            "inline route tables follow the route table rules",
            LISTENER,
            http(json!({}), json!([
                {"name": "a", "domains": ["a.example"], "routes": []},
                {"name": "b", "domains": ["a.example"], "routes": []}])),
            http(json!({}), json!([
                {"name": "a", "domains": ["a.example"], "routes": []},
                {"name": "b", "domains": ["b.example"], "routes": []}])),
            "Duplicate entry of domain",
        ),
        Case::one(
            "JWT requirements name configured providers, however deep",
            LISTENER,
            jwt(json!([{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "idp"}, {"allow_missing": {}}, {"provider_name": "other"}]}}}])),
            jwt(json!([{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "idp"}, {"allow_missing": {}}]}}}])),
            "Required provider ['other'] is not configured",
        ),
        Case::one(
            "JWT rules name requirements in the map",
            LISTENER,
            jwt(json!([{"match": {"prefix": "/"}, "requirement_name": "admin"}])),
            jwt(json!([{"match": {"prefix": "/"}, "requirement_name": "user"}])),
            "Wrong requirement_name: admin",
        ),
        Case::one(
            "server TLS contexts have a certificate",
            LISTENER,
            tls_chain(json!({"validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": {"ads": {}}}})),
            tls_chain(json!({"tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": {"ads": {}}}]})),
            "No TLS certificates found for server context",
        ),
        Case::one(
            "access log formats name commands Envoy knows",
            LISTENER,
            http(json!({"access_log": [access_log("%NOT_A_COMMAND%\n", None)]}), any_host()),
            http(json!({"access_log": [access_log("[%START_TIME%] %REQ(:METHOD)%\n", None)]}), any_host()),
            "Not supported field in StreamInfo",
        ),
        Case::one(
            "access log filters are CEL expressions Envoy can build",
            LISTENER,
            http(
                json!({"access_log": [access_log("%RESPONSE_CODE%\n", Some("request.path.lowerAscii() == '/'"))]}),
                any_host(),
            ),
            http(
                json!({"access_log": [access_log("%RESPONSE_CODE%\n", Some("response.code >= 500"))]}),
                any_host(),
            ),
            "failed to create an expression",
        ),
        Case::one(
            "TCP proxies' access logs parse too",
            LISTENER,
            one_chain(json!([tcp_proxy().tap(|t| t["typed_config"]["access_log"] = json!([access_log("%REQ%\n", None)]))])),
            one_chain(json!([tcp_proxy().tap(|t| t["typed_config"]["access_log"] = json!([access_log("%BYTES_SENT%\n", None)]))])),
            "requires parameters",
        ),
        Case::one(
            "typed configs of network filters follow their own type's rules",
            LISTENER,
            http(json!({"stat_prefix": ""}), any_host()),
            http(json!({"stat_prefix": "x"}), any_host()),
            "value length must be at least 1 characters",
        ),
    ]
}

/// Changes a value in place and hands it back, for variations of one builder's output.
trait Tap {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}

impl Tap for Value {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
