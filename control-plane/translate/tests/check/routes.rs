//! Route table cases (`source/common/router/config_impl.cc`, `header_parser.cc`,
//! `source/common/common/regex.cc`, `source/common/protobuf/utility.cc`, and
//! protoc-gen-validate through a typed per-filter config).

use meshd_proto::type_url::ROUTE;
use serde_json::{Value, json};

use super::case::Case;

fn table(vhosts: Value) -> Value {
    json!({"name": "80", "virtual_hosts": vhosts})
}

fn vhost(name: &str, domains: Value) -> Value {
    json!({"name": name, "domains": domains, "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]})
}

/// A table with one host and one route whose action is `action` (and more route fields).
fn with_route(route: Value) -> Value {
    let mut r = json!({"match": {"prefix": "/"}});
    if let (Value::Object(base), Value::Object(extra)) = (&mut r, route) {
        base.extend(extra);
    }
    table(json!([{"name": "a", "domains": ["a.example"], "routes": [r]}]))
}

fn weighted(clusters: Value) -> Value {
    with_route(json!({"route": {"weighted_clusters": {"clusters": clusters}}}))
}

fn header(key: &str) -> Value {
    json!([{"header": {"key": key, "value": "v"}}])
}

fn regex_route(regex: &str) -> Value {
    with_route(json!({"match": {"safe_regex": {"regex": regex}}, "route": {"cluster": "c"}}))
}

/// `x{1000}` n times: a chain of literals, whose program size RE2 and the estimate agree on
/// (n * 1000 + 4).
fn literal_chain(n: usize) -> String {
    "x{1000}".repeat(n)
}

pub fn cases() -> Vec<Case> {
    vec![
        Case::one(
            "domains are unique across a table, case-insensitively",
            ROUTE,
            table(json!([
                vhost("a", json!(["a.example"])),
                vhost("b", json!(["A.EXAMPLE"]))
            ])),
            table(json!([
                vhost("a", json!(["a.example"])),
                vhost("a", json!(["b.example"]))
            ])),
            "Duplicate entry of domain a.example",
        ),
        Case::one(
            "one virtual host at most is the * default",
            ROUTE,
            table(json!([vhost("a", json!(["*"])), vhost("b", json!(["*"]))])),
            table(json!([
                vhost("a", json!(["*"])),
                vhost("b", json!(["*.example", "*a.*"]))
            ])),
            "Only a single wildcard domain",
        ),
        Case::one(
            "weighted clusters weigh more than nothing",
            ROUTE,
            weighted(json!([{"name": "c", "weight": 0}, {"name": "d", "weight": 0}])),
            weighted(json!([{"name": "c", "weight": 0}, {"name": "d", "weight": 3}])),
            "must be greater than 0",
        ),
        Case::one(
            "weighted cluster weights sum within 32 bits",
            ROUTE,
            weighted(json!([{"name": "c", "weight": 4294967295u32}, {"name": "d", "weight": 1}])),
            weighted(json!([{"name": "c", "weight": 4294967294u32}, {"name": "d", "weight": 1}])),
            "exceeds 4294967295",
        ),
        Case::one(
            "every weighted cluster has a weight",
            ROUTE,
            weighted(json!([{"name": "c"}, {"name": "d", "weight": 1}])),
            weighted(json!([{"name": "c", "weight": 0}, {"name": "d", "weight": 1}])),
            "'weight' is missing",
        ),
        Case::one(
            "routes add no pseudo-headers",
            ROUTE,
            with_route(
                json!({"route": {"cluster": "c"}, "request_headers_to_add": header(":path")}),
            ),
            with_route(
                json!({"route": {"cluster": "c"}, "request_headers_to_add": header("x-path")}),
            ),
            "may not be modified",
        ),
        Case::one(
            "added header values name only commands Envoy formats",
            ROUTE,
            with_route(json!({"route": {"cluster": "c"}, "request_headers_to_add":
                [{"header": {"key": "x-peer", "value": "%UNKNOWN_COMMAND%"}}]})),
            with_route(json!({"route": {"cluster": "c"}, "request_headers_to_add":
                [{"header": {"key": "x-peer", "value": "%DOWNSTREAM_REMOTE_ADDRESS% 100%%"}}]})),
            "Not supported field in StreamInfo",
        ),
        Case::one(
            "commands that read a header name it",
            ROUTE,
            with_route(json!({"route": {"cluster": "c"}, "response_headers_to_add":
                [{"header": {"key": "x-copy", "value": "%REQ%"}}]})),
            with_route(json!({"route": {"cluster": "c"}, "response_headers_to_add":
                [{"header": {"key": "x-copy", "value": "%REQ(x-user):10%"}}]})),
            "requires parameters",
        ),
        Case::one(
            "virtual hosts do not set the host header, whatever its case",
            ROUTE,
            table(
                json!([{"name": "a", "domains": ["a"], "request_headers_to_add": header("Host"),
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]),
            ),
            table(
                json!([{"name": "a", "domains": ["a"], "request_headers_to_add": header("x-host"),
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]),
            ),
            "may not be modified",
        ),
        Case::one(
            "tables remove no pseudo-headers from responses",
            ROUTE,
            json!({"name": "80", "virtual_hosts": [vhost("a", json!(["a"]))], "response_headers_to_remove": [":status"]}),
            json!({"name": "80", "virtual_hosts": [vhost("a", json!(["a"]))], "response_headers_to_remove": ["x-status"]}),
            "may not be removed",
        ),
        Case::one(
            "weighted clusters do not set the host header",
            ROUTE,
            weighted(json!([{"name": "c", "weight": 1, "request_headers_to_add": header("host")}])),
            weighted(
                json!([{"name": "c", "weight": 1, "request_headers_to_add": header("x-host")}]),
            ),
            "may not be modified",
        ),
        Case::one(
            "a route rewrites its path one way",
            ROUTE,
            with_route(json!({"route": {"cluster": "c", "prefix_rewrite": "/x",
                "regex_rewrite": {"pattern": {"regex": "^/a"}, "substitution": "/b"}}})),
            with_route(json!({"route": {"cluster": "c",
                "regex_rewrite": {"pattern": {"regex": "^/a"}, "substitution": "/b"}}})),
            "Specify only one of prefix_rewrite, regex_rewrite",
        ),
        Case::one(
            "direct response bodies fit the table's limit",
            ROUTE,
            with_route(
                json!({"direct_response": {"status": 200, "body": {"inline_string": "x".repeat(4097)}}}),
            ),
            with_route(
                json!({"direct_response": {"status": 200, "body": {"inline_string": "x".repeat(4096)}}}),
            ),
            "maximum is 4096",
        ),
        Case::one(
            "regexes are RE2: no lookaround",
            ROUTE,
            regex_route("/api/(?=v1)"),
            regex_route("/api/(?:v1)"),
            "is not valid RE2",
        ),
        Case::one(
            "regexes are RE2: counts stop at 1000",
            ROUTE,
            regex_route("/a{1001}"),
            regex_route("/a{1000}"),
            "is not valid RE2",
        ),
        Case::one(
            "regexes compile within the program size meshd's bootstrap allows",
            ROUTE,
            regex_route(&literal_chain(33)),
            regex_route(&literal_chain(32)),
            "over the limit of 32768",
        ),
        Case::one(
            "regexes inside typed per-filter configs are checked too",
            ROUTE,
            with_route(
                json!({"route": {"cluster": "c"}, "typed_per_filter_config": {"envoy.filters.http.cors": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
                "allow_origin_string_match": [{"safe_regex": {"regex": "https://(\\w+)\\.example\\1"}}]}}}),
            ),
            with_route(
                json!({"route": {"cluster": "c"}, "typed_per_filter_config": {"envoy.filters.http.cors": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
                "allow_origin_string_match": [{"safe_regex": {"regex": "https://(\\w+)\\.example"}}]}}}),
            ),
            "is not valid RE2",
        ),
        Case::one(
            "retry back-off waits at most its maximum, which is no shorter than its base",
            ROUTE,
            with_route(
                json!({"route": {"cluster": "c", "retry_policy": {"retry_on": "5xx",
                "retry_back_off": {"base_interval": "2s", "max_interval": "1s"}}}}),
            ),
            with_route(
                json!({"route": {"cluster": "c", "retry_policy": {"retry_on": "5xx",
                "retry_back_off": {"base_interval": "2s", "max_interval": "2s"}}}}),
            ),
            "max_interval must greater than or equal to the base_interval",
        ),
        Case::one(
            "durations are not negative",
            ROUTE,
            with_route(json!({"route": {"cluster": "c", "timeout": "-1s"}})),
            with_route(json!({"route": {"cluster": "c", "timeout": "0s"}})),
            "Expected positive duration",
        ),
        Case::one(
            "virtual hosts are named",
            ROUTE,
            table(json!([vhost("", json!(["a"]))])),
            table(json!([vhost("a", json!(["a"]))])),
            "value length must be at least 1 characters",
        ),
        Case::one(
            "typed per-filter configs follow their own type's rules",
            ROUTE,
            with_route(
                json!({"route": {"cluster": "c"}, "typed_per_filter_config": {"envoy.filters.http.fault": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "abort": {"http_status": 99, "percentage": {"numerator": 1}}}}}),
            ),
            with_route(
                json!({"route": {"cluster": "c"}, "typed_per_filter_config": {"envoy.filters.http.fault": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "abort": {"http_status": 503, "percentage": {"numerator": 1}}}}}),
            ),
            "greater than or equal to 200",
        ),
    ]
}
