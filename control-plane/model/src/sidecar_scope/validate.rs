//! Sidecar validation as istiod does it: the workload selector, egress listeners (ports, binds,
//! `namespace/dnsName` hosts) and ingress listeners (checked, not applied).

use std::collections::BTreeSet;

use crate::finding::{Checks, Finding};
use crate::input::networking::{Sidecar, SidecarPort};
use crate::object::{Kind, ObjectKey};
use crate::syntax;

use super::{EgressRule, SidecarModel};

/// The Sidecar validator's helpers.
#[derive(Debug)]
struct SidecarRules;

type Check<'a> = Checks<'a, SidecarRules>;

const UNIX_PREFIX: &str = "unix://";

impl Check<'_> {
    fn result(&mut self, field: &str, result: Result<(), String>) {
        if let Err(e) = result {
            self.error(field, e);
        }
    }

    fn port(&mut self, p: &SidecarPort, bind: Option<&str>, at: &str, egress: bool) {
        if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
            self.result(&format!("{at}.port.name"), syntax::port_name(name));
        }
        if let Some(proto) = p.protocol.as_deref().filter(|p| !p.is_empty()) {
            self.result(&format!("{at}.port.protocol"), syntax::protocol(proto));
        }
        let unix = bind.and_then(|b| b.strip_prefix(UNIX_PREFIX));
        if egress && p.number == 0 {
            if unix.is_none() {
                self.error(
                    &format!("{at}.port.number"),
                    "sidecar: ports with 0 value must have a unix domain socket bind address"
                        .to_string(),
                );
            }
        } else {
            self.result(
                &format!("{at}.port.number"),
                syntax::port(u64::from(p.number)),
            );
            if let Some(b) = bind.filter(|b| !b.is_empty())
                && !syntax::is_ip(b)
            {
                self.error(&format!("{at}.bind"), format!("{b} is not a valid IP"));
            }
        }
    }

    fn default_endpoint(&mut self, endpoint: &str, at: &str) {
        if endpoint.starts_with(UNIX_PREFIX) {
            return;
        }
        let Some((host, port)) = endpoint.rsplit_once(':') else {
            self.error(at, format!("{endpoint:?}: missing port in address"));
            return;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
            self.error(
                at,
                "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,\
                 [::1]:port,[::]:port,unix://filepath or unset"
                    .to_string(),
            );
        }
        match port.parse::<u64>() {
            Ok(n) => self.result(at, syntax::port(n)),
            Err(_) => self.error(
                at,
                format!("sidecar: defaultEndpoint port ({port}) is not a number"),
            ),
        }
    }
}

pub(super) fn validate(sidecar: &Sidecar, findings: &mut Vec<Finding>) -> Option<SidecarModel> {
    let key = ObjectKey::new(
        Kind::Sidecar,
        sidecar.metadata.namespace.clone().unwrap_or_default(),
        sidecar.metadata.name.clone(),
    );
    let mut check = Check::new(&key);
    let spec = &sidecar.spec;
    if let Some(sel) = &spec.workload_selector {
        check.result(
            "spec.workloadSelector.labels",
            syntax::selector(&sel.labels),
        );
        if sel.labels.is_empty() {
            check.warning(
                "spec.workloadSelector",
                "workload selector specified without labels; it applies to every workload in \
                 the namespace"
                    .to_string(),
            );
        }
    }
    if spec.egress.is_empty()
        && spec.ingress.is_empty()
        && spec.outbound_traffic_policy.is_none()
        && spec.inbound_connection_pool.is_none()
    {
        check.error("spec", "sidecar: empty configuration provided".to_string());
    }
    let mut ports = BTreeSet::new();
    for (i, listener) in spec.ingress.iter().enumerate() {
        let at = format!("spec.ingress[{i}]");
        let Some(p) = &listener.port else {
            check.error(
                &format!("{at}.port"),
                "sidecar: port is required for ingress listeners".to_string(),
            );
            continue;
        };
        check.port(p, listener.bind.as_deref(), &at, false);
        if !ports.insert(p.number) {
            check.error(
                &format!("{at}.port.number"),
                "sidecar: ports on IP bound listeners must be unique".to_string(),
            );
        }
        if let Some(e) = listener
            .default_endpoint
            .as_deref()
            .filter(|e| !e.is_empty())
        {
            check.default_endpoint(e, &format!("{at}.defaultEndpoint"));
        }
    }
    if !spec.ingress.is_empty() {
        check.warning(
            "spec.ingress",
            "ingress listeners are not applied by meshd: inbound listeners follow the \
             workload's ports"
                .to_string(),
        );
    }
    let mut ports = BTreeSet::new();
    let mut catch_all = false;
    let mut egress = Vec::new();
    let last = spec.egress.len().saturating_sub(1);
    for (i, listener) in spec.egress.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        match &listener.port {
            None if catch_all => check.error(
                &at,
                "sidecar: egress can have only one listener with empty port".to_string(),
            ),
            None if i != last => check.error(
                &at,
                "sidecar: the egress listener with empty port should be the last listener in \
                 the list"
                    .to_string(),
            ),
            None => catch_all = true,
            Some(p) => {
                check.port(p, listener.bind.as_deref(), &at, true);
                if p.number != 0 && !ports.insert(p.number) {
                    check.error(
                        &format!("{at}.port.number"),
                        "sidecar: ports on IP bound listeners must be unique".to_string(),
                    );
                }
            }
        }
        if listener.hosts.is_empty() {
            check.error(
                &format!("{at}.hosts"),
                "sidecar: egress listener must contain at least one host".to_string(),
            );
        }
        let mut hosts = Vec::new();
        for (j, h) in listener.hosts.iter().enumerate() {
            if let Err(e) = syntax::namespace_slash_host(h, false) {
                check.error(&format!("{at}.hosts[{j}]"), e);
                continue;
            }
            match h.split_once('/') {
                Some(("~", _)) | None => {}
                Some((".", host)) => hosts.push((key.namespace.clone(), host.to_string())),
                Some((ns, host)) => hosts.push((ns.to_string(), host.to_string())),
            }
        }
        egress.push(EgressRule {
            port: listener.port.as_ref().map(|p| p.number),
            hosts,
        });
    }
    if !check.finish(findings) {
        return None;
    }
    Some(SidecarModel {
        selector: spec
            .workload_selector
            .as_ref()
            .map(|s| s.labels.clone())
            .filter(|l| !l.is_empty()),
        egress,
        outbound_policy: spec.outbound_traffic_policy.as_ref().map(|p| p.mode),
        key,
    })
}
