//! Istio's names for generated resources; dashboards and people read them.

pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
pub const OUTBOUND_PORT: u32 = 15001;
pub const INBOUND_PORT: u32 = 15006;
/// Source address of inbound connections to the app, so capture rules can tell them apart.
pub const INBOUND_PASSTHROUGH_BIND: &str = "127.0.0.6";
/// The largest RE2 program Envoy compiles (runtime `re2.max_program_size.error_level`), as
/// istiod's bootstrap sets it (`pkg/bootstrap/config.go`); Envoy's own default, 100, refuses
/// regexes as plain as `[a-z0-9-]{1,63}\.example\.com`. The checker holds every regex to it.
pub const RE2_MAX_PROGRAM_SIZE: u32 = 32768;
/// The runtime layer that carries istiod's runtime defaults, named as istiod names it.
pub const RUNTIME_DEFAULTS_LAYER: &str = "global config";

/// `outbound|<port>|<subset>|<fqdn>`
pub fn outbound_cluster(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// `inbound|<port>||`
pub fn inbound_cluster(port: u32) -> String {
    format!("inbound|{port}||")
}

/// Parses `outbound|<port>|<subset>|<fqdn>`.
pub fn parse_outbound_cluster(name: &str) -> Option<(u32, &str, &str)> {
    let mut parts = name.split('|');
    if parts.next()? != "outbound" {
        return None;
    }
    let port = parts.next()?.parse().ok()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    Some((port, subset, host))
}
