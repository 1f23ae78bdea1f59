//! Strings Envoy formats (added header values, access-log formats, span tags): `%COMMAND%` and
//! `%COMMAND(args)%` must name a command Envoy 1.40 knows (`Formatter::SubstitutionFormatParser`, the stream-info and HTTP built-in command
//! parsers, the CEL and METADATA formatters it links), and commands that read something need
//! their argument. Envoy refuses the whole route table or listener otherwise ("Not supported field in
//! StreamInfo: X", "X requires parameters"). Calibrated against Envoy 1.40 in validate mode.

/// Commands that take no argument or an optional one.
const COMMANDS: [&str; 109] = [
    "ACCESS_LOG_TYPE",
    "BYTES_RECEIVED",
    "BYTES_RETRANSMITTED",
    "BYTES_SENT",
    "CONNECTION_ID",
    "CONNECTION_TERMINATION_DETAILS",
    "CUSTOM_FLAGS",
    "DOWNSTREAM_DETECTED_CLOSE_TYPE",
    "DOWNSTREAM_DIRECT_LOCAL_ADDRESS",
    "DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_DIRECT_LOCAL_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_PORT",
    "DOWNSTREAM_HANDSHAKE_DURATION",
    "DOWNSTREAM_HEADER_BYTES_RECEIVED",
    "DOWNSTREAM_HEADER_BYTES_SENT",
    "DOWNSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_DNS_SAN",
    "DOWNSTREAM_LOCAL_IP_SAN",
    "DOWNSTREAM_LOCAL_PORT",
    "DOWNSTREAM_LOCAL_SUBJECT",
    "DOWNSTREAM_LOCAL_URI_SAN",
    "DOWNSTREAM_PEER_CERT",
    "DOWNSTREAM_PEER_CERT_V_END",
    "DOWNSTREAM_PEER_CERT_V_START",
    "DOWNSTREAM_PEER_DNS_SAN",
    "DOWNSTREAM_PEER_FINGERPRINT_1",
    "DOWNSTREAM_PEER_FINGERPRINT_256",
    "DOWNSTREAM_PEER_IP_SAN",
    "DOWNSTREAM_PEER_ISSUER",
    "DOWNSTREAM_PEER_SERIAL",
    "DOWNSTREAM_PEER_SUBJECT",
    "DOWNSTREAM_PEER_URI_SAN",
    "DOWNSTREAM_REMOTE_ADDRESS",
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_REMOTE_PORT",
    "DOWNSTREAM_TLS_CIPHER",
    "DOWNSTREAM_TLS_SESSION_ID",
    "DOWNSTREAM_TLS_VERSION",
    "DOWNSTREAM_TRANSPORT_FAILURE_REASON",
    "DOWNSTREAM_WIRE_BYTES_RECEIVED",
    "DOWNSTREAM_WIRE_BYTES_SENT",
    "DURATION",
    "EMIT_TIME",
    "EMIT_TIME_LOCAL",
    "HOSTNAME",
    "LOCAL_REPLY_BODY",
    "PACKETS_RETRANSMITTED",
    "PATH",
    "PROTOCOL",
    "REQUESTED_SERVER_NAME",
    "REQUEST_DURATION",
    "REQUEST_HEADERS_BYTES",
    "REQUEST_TX_DURATION",
    "RESPONSE_CODE",
    "RESPONSE_CODE_DETAILS",
    "RESPONSE_DURATION",
    "RESPONSE_FLAGS",
    "RESPONSE_FLAGS_LONG",
    "RESPONSE_HEADERS_BYTES",
    "RESPONSE_TRAILERS_BYTES",
    "RESPONSE_TX_DURATION",
    "ROUNDTRIP_DURATION",
    "ROUTE_NAME",
    "START_TIME",
    "START_TIME_LOCAL",
    "STREAM_ID",
    "TLS_JA3_FINGERPRINT",
    "TLS_JA4_FINGERPRINT",
    "TRACE_ID",
    "UNIQUE_ID",
    "UPSTREAM_CLUSTER",
    "UPSTREAM_CLUSTER_RAW",
    "UPSTREAM_CONNECTION_ID",
    "UPSTREAM_CONNECTION_POOL_READY_DURATION",
    "UPSTREAM_DETECTED_CLOSE_TYPE",
    "UPSTREAM_HEADER_BYTES_RECEIVED",
    "UPSTREAM_HEADER_BYTES_SENT",
    "UPSTREAM_HOST",
    "UPSTREAM_HOST_NAME",
    "UPSTREAM_HOST_NAME_WITHOUT_PORT",
    "UPSTREAM_LOCAL_ADDRESS",
    "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_LOCAL_DNS_SAN",
    "UPSTREAM_LOCAL_IP_SAN",
    "UPSTREAM_LOCAL_PORT",
    "UPSTREAM_LOCAL_URI_SAN",
    "UPSTREAM_PEER_CERT",
    "UPSTREAM_PEER_CERT_V_END",
    "UPSTREAM_PEER_CERT_V_START",
    "UPSTREAM_PEER_DNS_SAN",
    "UPSTREAM_PEER_IP_SAN",
    "UPSTREAM_PEER_ISSUER",
    "UPSTREAM_PEER_SUBJECT",
    "UPSTREAM_PEER_URI_SAN",
    "UPSTREAM_PROTOCOL",
    "UPSTREAM_REMOTE_ADDRESS",
    "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_REMOTE_PORT",
    "UPSTREAM_REQUEST_ATTEMPT_COUNT",
    "UPSTREAM_TLS_CIPHER",
    "UPSTREAM_TLS_SESSION_ID",
    "UPSTREAM_TLS_VERSION",
    "UPSTREAM_TRANSPORT_FAILURE_REASON",
    "UPSTREAM_WIRE_BYTES_RECEIVED",
    "UPSTREAM_WIRE_BYTES_SENT",
    "VIRTUAL_CLUSTER_NAME",
];

/// Commands that need their argument: `%REQ(x-user)%`.
const COMMANDS_WITH_ARGUMENT: [&str; 13] = [
    "CEL",
    "CLUSTER_METADATA",
    "COMMON_DURATION",
    "DYNAMIC_METADATA",
    "ENVIRONMENT",
    "FILTER_STATE",
    "METADATA",
    "QUERY_PARAM",
    "REQ",
    "RESP",
    "TRAILER",
    "UPSTREAM_FILTER_STATE",
    "UPSTREAM_METADATA",
];

/// Why Envoy would refuse `value` as a formatted string, if it would. `%%` is a literal
/// `%`; a `%` that opens nothing Envoy can parse is refused as well.
pub fn problem(value: &str) -> Option<String> {
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            rest = tail;
            continue;
        }
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let (name, tail) = after.split_at(name_len);
        let (has_argument, tail) = match tail.strip_prefix('(') {
            Some(args) => match closing_paren(args) {
                Some(end) => (true, &args[end + 1..]),
                None => return Some(format!("{value:?}: %{name}( is not closed")),
            },
            None => (false, tail),
        };
        // An optional `:N` length limit before the closing `%`.
        let tail = match tail.strip_prefix(':') {
            Some(limit) => limit.trim_start_matches(|c: char| c.is_ascii_digit()),
            None => tail,
        };
        let Some(tail) = tail.strip_prefix('%') else {
            return Some(format!(
                "{value:?}: a % must be doubled or open a %COMMAND%"
            ));
        };
        if COMMANDS_WITH_ARGUMENT.contains(&name) {
            if !has_argument {
                return Some(format!("{value:?}: {name} requires parameters"));
            }
        } else if !COMMANDS.contains(&name) {
            return Some(format!(
                "{value:?}: Not supported field in StreamInfo: {name}"
            ));
        }
        rest = tail;
    }
    None
}

/// Where the argument list that `args` starts (just after `(`) ends.
fn closing_paren(args: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in args.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ')' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_envoy_formats_pass_and_unknown_commands_do_not() {
        for ok in [
            "plain",
            "100%%",
            "%DOWNSTREAM_REMOTE_ADDRESS%",
            "%REQ(x-user)%",
            "%REQ(x-user):10%",
            "%START_TIME(%s)%",
            "%START_TIME%",
            "a %HOSTNAME% b %UPSTREAM_CLUSTER%",
        ] {
            assert_eq!(problem(ok), None, "{ok}");
        }
        for bad in [
            "%UNKNOWN_COMMAND%",
            "%REQ%",
            "%BAD",
            "%DOWNSTREAM_REMOTE_ADDRESS%%",
            "%REQ(x",
            "%DOWNSTREAM_CONNECTION_ID%",
        ] {
            assert!(problem(bad).is_some(), "{bad}");
        }
    }
}
