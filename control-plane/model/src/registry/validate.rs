//! ServiceEntry and WorkloadEntry validation as istiod does it (its validation and CRD schema):
//! hosts, addresses, ports, resolution and the workloads behind them.

use std::collections::BTreeSet;

use crate::finding::{Checks, Finding};
use crate::input::istio::{ServiceEntry, WorkloadEntry, WorkloadEntrySpec};
use crate::object::ObjectKey;
use crate::syntax;

/// The registry validator's helpers.
#[derive(Debug)]
struct RegistryRules;

type Check<'a> = Checks<'a, RegistryRules>;

const UNIX_PREFIX: &str = "unix://";

fn is_http_or_tls(protocol: Option<&str>) -> bool {
    [
        "HTTP",
        "HTTP2",
        "HTTP_PROXY",
        "GRPC",
        "GRPC-WEB",
        "HTTPS",
        "TLS",
    ]
    .iter()
    .any(|p| protocol.is_some_and(|q| p.eq_ignore_ascii_case(q)))
}

impl Check<'_> {
    fn result(&mut self, field: &str, result: Result<(), String>) {
        if let Err(e) = result {
            self.error(field, e);
        }
    }

    /// A workload: inline in a ServiceEntry (`service_ports`: the entry's port names) or a
    /// WorkloadEntry. `fqdn`: whether the address may be a host name (not with STATIC).
    fn workload(
        &mut self,
        w: &WorkloadEntrySpec,
        at: &str,
        service_ports: Option<&BTreeSet<&str>>,
        fqdn: bool,
    ) {
        let addr = w.address.as_str();
        let prefix = if at.is_empty() { "" } else { "." };
        let field = |name: &str| format!("{at}{prefix}{name}");
        if addr.is_empty() {
            if w.network.as_deref().unwrap_or_default().is_empty() {
                self.error(&field("address"), "address is required".to_string());
                return;
            }
            self.warning(
                &field("address"),
                format!("address is unset with network {:?}", w.network),
            );
        }
        let unix = addr.strip_prefix(UNIX_PREFIX);
        if let Some(path) = unix {
            let absolute = path.starts_with('@') || (path.starts_with('/') && !path.ends_with('/'));
            if !absolute {
                self.error(
                    &field("address"),
                    format!("{path:?} is not an absolute path to a file"),
                );
            }
            if !w.ports.is_empty() {
                self.error(
                    &field("ports"),
                    format!("unix endpoint {addr} must not include ports"),
                );
            }
            if service_ports.is_some_and(|p| p.len() != 1) {
                self.error(
                    &field("address"),
                    "exactly 1 service port required for unix endpoints".to_string(),
                );
            }
        } else if !addr.is_empty() && !syntax::is_ip(addr) {
            if !fqdn {
                self.error(
                    &field("address"),
                    format!("endpoint address {addr:?} is not a valid IP address"),
                );
            } else if syntax::fqdn(addr).is_err() {
                self.error(
                    &field("address"),
                    format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
                );
            }
        }
        for (name, port) in &w.ports {
            let at = field(&format!("ports.{name}"));
            if service_ports.is_some_and(|p| !p.contains(name.as_str())) {
                self.error(
                    &at,
                    format!("endpoint port {port} is not defined by the service entry"),
                );
            }
            self.result(&at, syntax::port_name(name));
            self.result(&at, syntax::port(u64::from(*port)));
        }
        self.result(&field("labels"), syntax::labels(&w.labels));
    }
}

/// True when the WorkloadEntry is valid; its findings go to `findings` either way.
pub(super) fn workload_entry(
    key: &ObjectKey,
    we: &WorkloadEntry,
    findings: &mut Vec<Finding>,
) -> bool {
    let mut check = Check::new(key);
    check.workload(&we.spec, "spec", None, true);
    check.finish(findings)
}

/// True when the ServiceEntry is valid; its findings go to `findings` either way.
pub(super) fn service_entry(
    key: &ObjectKey,
    se: &ServiceEntry,
    findings: &mut Vec<Finding>,
) -> bool {
    let mut check = Check::new(key);
    let spec = &se.spec;
    let resolution = spec.resolution.as_deref().unwrap_or("NONE");
    if let Some(sel) = &spec.workload_selector {
        check.result(
            "spec.workloadSelector.labels",
            syntax::selector(&sel.labels),
        );
        if !spec.endpoints.is_empty() {
            check.error(
                "spec",
                "only one of WorkloadSelector or Endpoints is allowed in Service Entry".to_string(),
            );
        }
    }
    if spec.hosts.is_empty() {
        check.error(
            "spec.hosts",
            "service entry must have at least one host".to_string(),
        );
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        let at = format!("spec.hosts[{i}]");
        if h == "*" {
            check.error(&at, "invalid host *".to_string());
            continue;
        }
        check.result(&at, syntax::wildcard_domain(h));
        if let Err(e) = syntax::no_partial_wildcard(h) {
            check.warning(&at, e);
        }
    }
    let mut cidr = false;
    for (i, a) in spec.addresses.iter().enumerate() {
        cidr |= a.contains('/');
        check.result(&format!("spec.addresses[{i}]"), syntax::ip_or_cidr(a));
    }
    if cidr && !matches!(resolution, "NONE" | "STATIC") {
        check.error(
            "spec.addresses",
            "CIDR addresses are allowed only for NONE/STATIC resolution types".to_string(),
        );
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        if !names.insert(p.name.as_str()) {
            check.error(
                &format!("{at}.name"),
                format!("service entry port name {:?} already defined", p.name),
            );
        }
        if !numbers.insert(p.number) {
            check.error(
                &format!("{at}.number"),
                format!("service entry port {} already defined", p.number),
            );
        }
        check.result(&format!("{at}.name"), syntax::port_name(&p.name));
        if let Some(proto) = p.protocol.as_deref().filter(|p| !p.is_empty()) {
            check.result(&format!("{at}.protocol"), syntax::protocol(proto));
        }
        check.result(&format!("{at}.number"), syntax::port(u64::from(p.number)));
        if let Some(t) = p.target_port {
            check.result(&format!("{at}.targetPort"), syntax::port(u64::from(t)));
        }
    }
    if let Some(location) = &spec.location
        && !matches!(location.as_str(), "MESH_EXTERNAL" | "MESH_INTERNAL")
    {
        check.error(
            "spec.location",
            format!("unknown location {location:?} (MESH_EXTERNAL, MESH_INTERNAL)"),
        );
    }
    match resolution {
        "NONE" => {
            if !spec.endpoints.is_empty() {
                check.error(
                    "spec.endpoints",
                    "no endpoints should be provided for resolution type none".to_string(),
                );
            }
            if spec.workload_selector.is_some() {
                check.warning(
                    "spec.workloadSelector",
                    "workloadSelector should not be set when resolution mode is NONE".to_string(),
                );
            }
        }
        "STATIC" => {
            for (i, e) in spec.endpoints.iter().enumerate() {
                check.workload(e, &format!("spec.endpoints[{i}]"), Some(&names), false);
            }
        }
        "DNS" | "DNS_ROUND_ROBIN" => {
            if spec.endpoints.is_empty()
                && let Some((i, e)) = spec
                    .hosts
                    .iter()
                    .enumerate()
                    .find_map(|(i, h)| syntax::fqdn(h).err().map(|e| (i, e)))
            {
                check.error(
                    &format!("spec.hosts[{i}]"),
                    format!(
                        "hosts must be FQDN or contain only prefix wildcards if no endpoints are \
                         provided for resolution mode {resolution}: {e}"
                    ),
                );
            }
            if resolution == "DNS_ROUND_ROBIN" && spec.endpoints.len() > 1 {
                check.error(
                    "spec.endpoints",
                    format!("there must only be 0 or 1 endpoint for resolution mode {resolution}"),
                );
            }
            for (i, e) in spec.endpoints.iter().enumerate() {
                check.workload(e, &format!("spec.endpoints[{i}]"), Some(&names), true);
            }
        }
        other => check.error(
            "spec.resolution",
            format!("unsupported resolution type {other:?} (NONE, STATIC, DNS, DNS_ROUND_ROBIN)"),
        ),
    }
    // Plain TCP cannot tell the hosts apart; only NONE, which ignores them, may mix them.
    if resolution != "NONE"
        && spec.hosts.len() > 1
        && spec
            .ports
            .iter()
            .any(|p| !is_http_or_tls(p.protocol.as_deref()))
    {
        check.error(
            "spec.ports",
            "multiple hosts provided with non-HTTP, non-TLS ports".to_string(),
        );
    }
    for (i, message) in syntax::export_to(
        &key.namespace,
        &spec.export_to,
        syntax::ExportKind::ServiceEntry,
    ) {
        let field = i.map_or("spec.exportTo".to_string(), |i| {
            format!("spec.exportTo[{i}]")
        });
        check.error(&field, message);
    }
    check.finish(findings)
}
