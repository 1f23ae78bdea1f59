//! Kubernetes and Istio objects as users write them, for meshd's file source.
//!
//! Strings go through [`quote`] (JSON strings are YAML), so `"true"`, `"*"` or `"8080"` stay
//! strings.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// A YAML (JSON-style) double-quoted scalar.
pub fn quote(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

/// A flow mapping of labels: `{"app": "reviews", "version": "v1"}`.
pub fn map(entries: &[(&str, &str)]) -> String {
    let inner: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{}: {}", quote(k), quote(v)))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

fn list(items: &[&str]) -> String {
    let inner: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", inner.join(", "))
}

pub fn namespace(name: &str, labels: &[(&str, &str)]) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: {}
  labels: {}
",
        quote(name),
        map(labels)
    )
}

/// A ClusterIP Service; `ports` are `(name, port, target_port)`. `cluster_ip` `"None"` makes it
/// headless.
pub fn service(
    name: &str,
    namespace: &str,
    cluster_ip: &str,
    ports: &[(&str, u16, u16)],
    selector: &[(&str, &str)],
) -> String {
    let mut out = format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {}
  namespace: {}
spec:
  clusterIP: {}
  selector: {}
  ports:
",
        quote(name),
        quote(namespace),
        quote(cluster_ip),
        map(selector)
    );
    for (port_name, port, target_port) in ports {
        out.push_str(&format!(
            "  - name: {}
    port: {port}
    targetPort: {target_port}
    protocol: TCP
",
            quote(port_name)
        ));
    }
    out
}

/// v1 Endpoints; `addresses` are `(ip, pod_name)` (pod in the same namespace), `ports`
/// `(name, port)` with the pods' port numbers.
pub fn endpoints(
    name: &str,
    namespace: &str,
    addresses: &[(&str, &str)],
    ports: &[(&str, u16)],
) -> String {
    let mut out = format!(
        "apiVersion: v1
kind: Endpoints
metadata:
  name: {}
  namespace: {}
subsets:
- addresses:
",
        quote(name),
        quote(namespace)
    );
    for (ip, pod) in addresses {
        out.push_str(&format!(
            "  - ip: {}
    targetRef: {{kind: Pod, name: {}, namespace: {}}}
",
            quote(ip),
            quote(pod),
            quote(namespace)
        ));
    }
    out.push_str("  ports:\n");
    for (port_name, port) in ports {
        out.push_str(&format!(
            "  - name: {}
    port: {port}
    protocol: TCP
",
            quote(port_name)
        ));
    }
    out
}

/// A discovery.k8s.io/v1 EndpointSlice of `service`; `addresses` are `(ip, pod_name)`, all
/// ready, `ports` `(name, port)`.
pub fn endpoint_slice(
    name: &str,
    namespace: &str,
    service: &str,
    addresses: &[(&str, &str)],
    ports: &[(&str, u16)],
) -> String {
    let mut out = format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {}
  namespace: {}
  labels:
    kubernetes.io/service-name: {}
addressType: IPv4
endpoints:
",
        quote(name),
        quote(namespace),
        quote(service)
    );
    for (ip, pod) in addresses {
        out.push_str(&format!(
            "- addresses: [{}]
  conditions: {{ready: true}}
  targetRef: {{kind: Pod, name: {}, namespace: {}}}
",
            quote(ip),
            quote(pod),
            quote(namespace)
        ));
    }
    out.push_str("ports:\n");
    for (port_name, port) in ports {
        out.push_str(&format!(
            "- name: {}
  port: {port}
  protocol: TCP
",
            quote(port_name)
        ));
    }
    out
}

/// A running Pod with `status.podIP`.
pub fn pod(
    name: &str,
    namespace: &str,
    ip: &str,
    labels: &[(&str, &str)],
    service_account: &str,
) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {}
  namespace: {}
  labels: {}
spec:
  serviceAccountName: {}
  containers:
  - name: app
    image: meshd-echo
status:
  phase: Running
  podIP: {}
  podIPs:
  - ip: {}
",
        quote(name),
        quote(namespace),
        map(labels),
        quote(service_account),
        quote(ip),
        quote(ip)
    )
}

/// An Istio ServiceEntry (networking.istio.io/v1).
#[derive(Debug, Clone, Default)]
pub struct ServiceEntry<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub hosts: &'a [&'a str],
    pub addresses: &'a [&'a str],
    /// `(name, number, protocol)`, e.g. `("http", 80, "HTTP")`.
    pub ports: &'a [(&'a str, u16, &'a str)],
    /// `MESH_EXTERNAL` (default when empty) or `MESH_INTERNAL`.
    pub location: &'a str,
    /// `NONE`, `STATIC`, `DNS` (default when empty), `DNS_ROUND_ROBIN`.
    pub resolution: &'a str,
    /// Endpoint addresses (IPs for STATIC, hostnames for DNS).
    pub endpoints: &'a [&'a str],
}

pub fn service_entry(entry: &ServiceEntry<'_>) -> String {
    let or = |value: &'static str, given: &str| {
        if given.is_empty() {
            value.to_owned()
        } else {
            given.to_owned()
        }
    };
    let mut out = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {}
  namespace: {}
spec:
  hosts: {}
  location: {}
  resolution: {}
",
        quote(entry.name),
        quote(entry.namespace),
        list(entry.hosts),
        or("MESH_EXTERNAL", entry.location),
        or("DNS", entry.resolution),
    );
    if !entry.addresses.is_empty() {
        out.push_str(&format!("  addresses: {}\n", list(entry.addresses)));
    }
    out.push_str("  ports:\n");
    for (name, number, protocol) in entry.ports {
        out.push_str(&format!(
            "  - name: {}
    number: {number}
    protocol: {}
",
            quote(name),
            quote(protocol)
        ));
    }
    if !entry.endpoints.is_empty() {
        out.push_str("  endpoints:\n");
        for address in entry.endpoints {
            out.push_str(&format!("  - address: {}\n", quote(address)));
        }
    }
    out
}

/// A namespace-wide (or, in the root namespace, mesh-wide) PeerAuthentication with `mode`
/// (`STRICT`, `PERMISSIVE`, `DISABLE`).
pub fn peer_authentication(name: &str, namespace: &str, mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: {}
  namespace: {}
spec:
  mtls:
    mode: {mode}
",
        quote(name),
        quote(namespace)
    )
}

/// A VirtualService `name` in namespace `default` for `host`, with `http` as its `http:` list
/// (YAML lines indented by two, `  - …`).
pub fn virtual_service(name: &str, host: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  http:
{http}"
    )
}

/// Joins documents into one multi-document YAML file.
pub fn documents(docs: &[String]) -> String {
    docs.iter()
        .map(|doc| doc.trim_end())
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n"
}

/// Writes `docs` to `dir/file_name` through a rename, so a watcher never reads half a file.
pub fn write(dir: &Path, file_name: &str, docs: &[String]) -> anyhow::Result<PathBuf> {
    let path = dir.join(file_name);
    // A dot file without a YAML extension: meshd's file source ignores it.
    let tmp = dir.join(format!(".{file_name}.tmp"));
    std::fs::write(&tmp, documents(docs)).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_yaml_quotes_every_string() {
        let yaml = service(
            "reviews",
            "default",
            "10.96.0.20",
            &[("http", 9080, 8080)],
            &[("app", "reviews")],
        );
        assert_eq!(
            yaml,
            r#"apiVersion: v1
kind: Service
metadata:
  name: "reviews"
  namespace: "default"
spec:
  clusterIP: "10.96.0.20"
  selector: {"app": "reviews"}
  ports:
  - name: "http"
    port: 9080
    targetPort: 8080
    protocol: TCP
"#
        );
    }

    #[test]
    fn documents_are_separated_by_three_dashes() {
        let joined = documents(&[
            namespace("a", &[]),
            namespace("b", &[("istio-injection", "enabled")]),
        ]);
        assert_eq!(joined.matches("\n---\n").count(), 1);
        assert!(joined.contains(r#"labels: {"istio-injection": "enabled"}"#));
        assert!(joined.ends_with("}\n"));
    }

    #[test]
    fn service_entry_defaults_to_external_dns() {
        let yaml = service_entry(&ServiceEntry {
            name: "httpbin-ext",
            namespace: "default",
            hosts: &["httpbin.example.com"],
            ports: &[("http", 80, "HTTP")],
            ..ServiceEntry::default()
        });
        assert!(
            yaml.contains("  location: MESH_EXTERNAL\n  resolution: DNS\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains(r#"  hosts: ["httpbin.example.com"]"#),
            "{yaml}"
        );
        assert!(!yaml.contains("endpoints"), "{yaml}");
    }
}
