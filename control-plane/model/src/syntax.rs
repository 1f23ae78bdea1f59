//! Istio's field syntax, shared by every validator: ports, DNS names and wildcards, label maps,
//! workload selectors, addresses, protocols, `exportTo` and durations. Each check returns the
//! message istiod would give (close to its wording), so findings read the same in both.

pub mod cel;
pub mod envoy_format;
pub mod header;
pub mod regex;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use crate::duration::parse as parse_duration;

/// `1..=65535`; 0 is refused wherever istiod validates a port.
pub fn port(number: u64) -> Result<(), String> {
    if (1..=65535).contains(&number) {
        Ok(())
    } else {
        Err(format!(
            "port number {number} must be in the range 1..65535"
        ))
    }
}

/// RFC 1123 label as Istio checks it: letters (either case), digits and `-`, not starting or
/// ending with `-`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A first label that may be a wildcard: `*`, or a label led by `*` or `*-` (`*foo`, `*-foo`).
fn is_wildcard_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    s.len() <= 63 && is_dns1123_label(rest)
}

fn dns_preconditions(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty domain name not allowed".to_string());
    }
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    Ok(())
}

/// Dot-separated labels after the first; a trailing dot is allowed, an all-numeric top-level
/// domain is not (it would read as an address).
fn dns_labels(whole: &str, labels: &str) -> Result<(), String> {
    let parts: Vec<&str> = labels.split('.').collect();
    let last = parts.len() - 1;
    if parts[last].parse::<u64>().is_ok() {
        return Err(format!(
            "domain name {whole:?} invalid (top level domain {:?} cannot be all-numeric)",
            parts[last]
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == last && label.is_empty() {
            break;
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {whole:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully qualified domain name (no wildcard).
pub fn fqdn(name: &str) -> Result<(), String> {
    dns_preconditions(name)?;
    dns_labels(name, name)
}

/// A domain whose first label may be a wildcard (`*.example.com`, `*`), as hosts are written.
pub fn wildcard_domain(name: &str) -> Result<(), String> {
    dns_preconditions(name)?;
    let (first, rest) = match name.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (name, None),
    };
    if !is_wildcard_label(first) {
        return Err(format!(
            "domain name {name:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(rest) => dns_labels(name, rest),
        None => Ok(()),
    }
}

/// Wildcards only as a whole first label (`*.example.com`), never `*example.com`.
pub fn no_partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host != "*" && !host.starts_with("*.") {
        Err(format!("partial wildcard {host:?} not allowed"))
    } else {
        Ok(())
    }
}

pub fn is_ip(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok()
}

/// An address, or a CIDR block (host bits may be set, as Go's `netip.ParsePrefix` allows).
pub fn ip_or_cidr(text: &str) -> Result<(), String> {
    match text.split_once('/') {
        Some((addr, len)) => {
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{text} is not a valid CIDR block"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match len.parse::<u32>() {
                Ok(l) if l <= max && !len.starts_with('+') => Ok(()),
                _ => Err(format!("{text} is not a valid CIDR block")),
            }
        }
        None if is_ip(text) => Ok(()),
        None => Err(format!("{text} is not a valid IP")),
    }
}

/// Port names are DNS labels (`http`, `grpc-api`).
pub fn port_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!("invalid port name: {name:?}"))
    }
}

/// Istio's protocol names, case-insensitive.
pub const PROTOCOLS: [&str; 12] = [
    "HTTP",
    "HTTPS",
    "HTTP2",
    "HTTP_PROXY",
    "GRPC",
    "GRPC-WEB",
    "TCP",
    "TLS",
    "UDP",
    "MONGO",
    "REDIS",
    "MYSQL",
];

pub fn protocol(name: &str) -> Result<(), String> {
    if PROTOCOLS.iter().any(|p| p.eq_ignore_ascii_case(name)) {
        Ok(())
    } else {
        Err(format!(
            "unsupported protocol {name:?} (HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, \
             REDIS, MYSQL)"
        ))
    }
}

/// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a name of
/// alphanumerics, `-`, `_` and `.` that starts and ends alphanumeric, at most 63 characters.
fn label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(is_dns1123_label));
    prefix_ok && name.len() <= 63 && label_value(name) && !name.is_empty()
}

/// A Kubernetes label value: empty, or alphanumerics, `-`, `_` and `.` that start and end
/// alphanumeric.
fn label_value(value: &str) -> bool {
    let b = value.as_bytes();
    value.is_empty()
        || (b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric))
}

/// Labels as subsets, source matches and endpoints carry them: Kubernetes label syntax.
pub fn labels(map: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in map {
        if !label_key(k) {
            return Err(format!("invalid tag key: {k:?}"));
        }
        if !label_value(v) {
            return Err(format!("invalid tag value: {v:?}"));
        }
    }
    Ok(())
}

/// A workload selector: no empty key, no wildcard in a key or value.
pub fn selector(map: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in map {
        if k.is_empty() {
            return Err(format!(
                "empty key is not supported in selector: \"{k}={v}\""
            ));
        }
        if k.contains('*') || v.contains('*') {
            return Err(format!(
                "wildcard is not supported in selector: \"{k}={v}\""
            ));
        }
    }
    Ok(())
}

/// A duration Istio takes for a timeout or interval: Go syntax, at least 1ms, whole milliseconds.
pub fn duration_ms(text: &str) -> Result<Duration, String> {
    let (seconds, nanos) = parse_duration(text)?;
    let d = Duration::new(
        u64::try_from(seconds).unwrap_or_default(),
        u32::try_from(nanos).unwrap_or_default(),
    );
    if d < Duration::from_millis(1) {
        return Err(format!("{text:?}: duration must be greater than 1ms"));
    }
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(format!(
            "{text:?}: only durations to ms precision are supported"
        ));
    }
    Ok(d)
}

/// Which kind an `exportTo` list belongs to: only ServiceEntries may say `~` (nowhere), and a
/// DestinationRule with a workload selector may only export to its own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    Plain,
    ServiceEntry,
    SelectorRule,
}

/// Istio's `exportTo` rules; each error with the index of the entry it is about, if one.
pub fn export_to(
    namespace: &str,
    list: &[String],
    kind: ExportKind,
) -> Vec<(Option<usize>, String)> {
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, e) in list.iter().enumerate() {
        let key = if e == "." { namespace } else { e.as_str() };
        if !seen.insert(key.to_string()) {
            errors.push((
                Some(i),
                format!("duplicate entries in exportTo for entry {e}"),
            ));
            continue;
        }
        let valid = match e.as_str() {
            "." | "*" => true,
            "~" => kind == ExportKind::ServiceEntry,
            other => is_dns1123_label(other),
        };
        if !valid {
            let message = if e == "~" {
                "exportTo ~ (none) is not allowed for Istio configuration objects".to_string()
            } else {
                format!("{e:?}: only ., *, or a valid DNS 1123 label is allowed as exportTo entry")
            };
            errors.push((Some(i), message));
        }
    }
    if kind == ExportKind::SelectorRule && !list.is_empty() {
        if !seen.contains(namespace) {
            errors.push((
                None,
                "destination rule with workload selector cannot have exportTo beyond current \
                 namespace"
                    .to_string(),
            ));
        } else if seen.len() > 1 {
            errors.push((
                None,
                "destination rule with workload selector cannot have multiple entries in exportTo"
                    .to_string(),
            ));
        }
    }
    if list.len() > 1 && seen.contains("*") {
        errors.push((
            None,
            "cannot have both public (*) and non-public exportTo values for a resource".to_string(),
        ));
    }
    if list.len() > 1 && seen.contains("~") {
        errors.push((None, "cannot export to no one (~) and someone".to_string()));
    }
    errors
}

/// `namespace/dnsName` as Sidecar egress and Gateway server hosts are written. Gateways also
/// take a bare `dnsName` and an IP address, and only `*`, `.` or a namespace before the slash;
/// Sidecars may prefix a namespace with `~` to exclude it.
pub fn namespace_slash_host(entry: &str, gateway: bool) -> Result<(), String> {
    let Some((ns, host)) = entry.split_once('/') else {
        if gateway {
            return host_part(entry, true);
        }
        return Err(format!("host {entry:?} must be of form namespace/dnsName"));
    };
    if ns.is_empty() || host.is_empty() {
        return Err(format!(
            "{entry:?}: config namespace and dnsName in host entry cannot be empty"
        ));
    }
    if gateway {
        if ns != "*" && ns != "." && !is_dns1123_label(ns) {
            return Err(format!("invalid namespace value {ns:?} in gateway"));
        }
    } else {
        let bare = ns.strip_prefix('~').unwrap_or(ns);
        if !bare.is_empty() && bare != "*" && bare != "." && !is_dns1123_label(bare) {
            return Err(format!("invalid namespace value {ns:?} in sidecar"));
        }
    }
    host_part(host, gateway)
}

fn host_part(host: &str, gateway: bool) -> Result<(), String> {
    if host != "*" && !host.contains('.') {
        return Err(format!("{host:?}: short names (non FQDN) are not allowed"));
    }
    if let Err(e) = wildcard_domain(host)
        && !(gateway && is_ip(host))
    {
        return Err(e);
    }
    no_partial_wildcard(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_whole_first_labels() {
        assert!(wildcard_domain("*.example.com").is_ok());
        assert!(wildcard_domain("*").is_ok());
        assert!(wildcard_domain("reviews").is_ok());
        assert!(wildcard_domain("Reviews.Default").is_ok());
        assert!(wildcard_domain("*-svc.example.com").is_ok());
        assert!(wildcard_domain("foo.*.example.com").is_err());
        assert!(wildcard_domain("example.123").is_err());
        assert!(wildcard_domain("example.com.").is_ok());
        assert!(wildcard_domain("").is_err());
        assert!(no_partial_wildcard("*example.com").is_err());
    }

    #[test]
    fn label_maps_follow_kubernetes_syntax() {
        let ok = BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "web".to_string()),
            ("version".to_string(), String::new()),
        ]);
        assert!(labels(&ok).is_ok());
        let bad = BTreeMap::from([("app".to_string(), "a b".to_string())]);
        assert!(labels(&bad).is_err());
        let bad_key = BTreeMap::from([("-app".to_string(), "web".to_string())]);
        assert!(labels(&bad_key).is_err());
    }

    #[test]
    fn durations_need_a_millisecond_and_millisecond_precision() {
        assert_eq!(duration_ms("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration_ms("0.5s"), Ok(Duration::from_millis(500)));
        assert!(
            duration_ms("0.5ms")
                .unwrap_err()
                .contains("greater than 1ms")
        );
        assert!(duration_ms("1.0005s").unwrap_err().contains("ms precision"));
        assert!(duration_ms("0s").is_err());
    }

    #[test]
    fn export_to_refuses_duplicates_and_mixed_public() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            export_to("ns", &list(&[".", "ns"]), ExportKind::Plain)[0]
                .1
                .contains("duplicate")
        );
        assert!(!export_to("ns", &list(&["*", "other"]), ExportKind::Plain).is_empty());
        assert!(!export_to("ns", &list(&["~"]), ExportKind::Plain).is_empty());
        assert!(export_to("ns", &list(&["~"]), ExportKind::ServiceEntry).is_empty());
        assert!(!export_to("ns", &list(&["other"]), ExportKind::SelectorRule).is_empty());
    }
}
