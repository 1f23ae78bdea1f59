use std::collections::BTreeMap;

use meshd_model::MeshConfig;

use super::*;

/// Namespace `shop`: Services `web` and `cart` (HTTP 80 → 8080) with Endpoints naming their Pods,
/// a second `cart` Pod not in the Endpoints yet, and a `client` Pod no Service selects.
const BASE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: web, namespace: shop}
subsets: [{addresses: [{ip: 10.1.0.1, targetRef: {kind: Pod, name: web-1}}], ports: [{name: http, port: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {clusterIP: 10.96.0.11, selector: {app: cart}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: cart, namespace: shop}
subsets: [{addresses: [{ip: 10.1.0.2, targetRef: {kind: Pod, name: cart-1}}], ports: [{name: http, port: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web, version: v1}}
spec: {serviceAccountName: web}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-1, namespace: shop, labels: {app: cart}}
spec: {serviceAccountName: cart}
status: {podIP: 10.1.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-2, namespace: shop, labels: {app: cart}}
spec: {serviceAccountName: cart}
status: {podIP: 10.1.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {serviceAccountName: client}
status: {podIP: 10.1.0.9}
";

const WEB: &str = "web.shop.svc.cluster.local";
const CART: &str = "cart.shop.svc.cluster.local";

fn snapshot(yaml: &str) -> Snapshot {
    let (objects, errors) = meshd_model::documents::parse(yaml, false);
    assert!(errors.is_empty(), "{errors:?}");
    let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
    Snapshot::assemble(
        1,
        Arc::new(objects),
        &MeshConfig::default(),
        &BTreeMap::new(),
    )
}

/// The base mesh with `from` replaced by `to` (which must be there), and `extra` documents.
fn edited(from: &str, to: &str, extra: &str) -> Snapshot {
    assert!(BASE.contains(from), "{from}");
    snapshot(&format!("{}{extra}", BASE.replacen(from, to, 1)))
}

fn diff_to(new: &Snapshot) -> SnapshotDiff {
    SnapshotDiff::between(&snapshot(BASE), new)
}

/// Every Pod of the base mesh has a proxy connected.
fn everyone(address: &str) -> bool {
    ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.9"].contains(&address)
}

fn nobody(_: &str) -> bool {
    false
}

fn short(types: &[&str]) -> Vec<&'static str> {
    types.iter().map(|t| type_url::short(t)).collect()
}

#[test]
fn an_unchanged_snapshot_changes_nothing() {
    let diff = diff_to(&snapshot(BASE));
    assert_eq!(diff, SnapshotDiff::default());
    assert!(diff.pushed_types(false, everyone).is_empty());
}

#[test]
fn an_endpoint_change_marks_only_eds_and_only_its_service() {
    // One more address, no Pod behind it (a VM, say).
    let diff = diff_to(&edited(
        "{ip: 10.1.0.1, targetRef: {kind: Pod, name: web-1}}",
        "{ip: 10.1.0.1, targetRef: {kind: Pod, name: web-1}}, {ip: 10.200.0.1}",
        "",
    ));
    assert_eq!(diff.eds_hosts, BTreeSet::from([WEB.to_string()]));
    assert!(!diff.cluster_endpoints, "no new identity behind the port");
    for ty in [type_url::CLUSTER, type_url::LISTENER, type_url::ROUTE] {
        assert!(!diff.outbound(ty), "{ty}");
    }
    assert_eq!(
        diff.served_ports,
        BTreeSet::from(["10.200.0.1".to_string()])
    );
    assert_eq!(short(&diff.pushed_types(true, everyone)), ["EDS"]);
}

#[test]
fn an_endpoint_at_a_connected_proxy_changes_its_inbound_config() {
    // cart-2 (same service account as cart-1) joins the Endpoints of cart.
    let diff = diff_to(&edited(
        "{ip: 10.1.0.2, targetRef: {kind: Pod, name: cart-1}}",
        "{ip: 10.1.0.2, targetRef: {kind: Pod, name: cart-1}}, {ip: 10.1.0.3, targetRef: {kind: Pod, name: cart-2}}",
        "",
    ));
    assert_eq!(diff.eds_hosts, BTreeSet::from([CART.to_string()]));
    assert_eq!(diff.served_ports, BTreeSet::from(["10.1.0.3".to_string()]));
    assert!(!diff.outbound(type_url::CLUSTER));
    assert_eq!(
        short(&diff.pushed_types(true, |a| a == "10.1.0.3")),
        ["CDS", "EDS", "LDS"]
    );
    // Without a proxy there, nobody holds the inbound config that changed.
    assert_eq!(short(&diff.pushed_types(true, nobody)), ["EDS"]);
}

#[test]
fn a_new_identity_behind_a_service_changes_outbound_clusters() {
    // The client Pod (service account `client`) behind cart: cart's clusters check its SAN too.
    let diff = diff_to(&edited(
        "{ip: 10.1.0.2, targetRef: {kind: Pod, name: cart-1}}",
        "{ip: 10.1.0.2, targetRef: {kind: Pod, name: cart-1}}, {ip: 10.1.0.9, targetRef: {kind: Pod, name: client}}",
        "",
    ));
    assert!(diff.cluster_endpoints);
    assert!(diff.outbound(type_url::CLUSTER));
    assert!(!diff.outbound(type_url::LISTENER) && !diff.outbound(type_url::ROUTE));
    assert_eq!(short(&diff.pushed_types(true, nobody)), ["CDS", "EDS"]);
}

#[test]
fn a_virtual_service_change_does_not_touch_endpoints_or_clusters() {
    let diff = diff_to(&snapshot(&format!(
        "{BASE}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{name: web, namespace: shop}}\n\
         spec: {{hosts: [web], http: [{{timeout: 3s, route: [{{destination: {{host: web}}}}]}}]}}\n"
    )));
    assert!(diff.virtual_services);
    assert!(diff.eds_hosts.is_empty());
    assert!(!diff.outbound(type_url::CLUSTER), "clusters are kept");
    assert!(diff.outbound(type_url::LISTENER) && diff.outbound(type_url::ROUTE));
    let types = short(&diff.pushed_types(false, everyone));
    // Clusters are announced (a proxy's scope may now be another) but not rebuilt.
    assert_eq!(types, ["CDS", "LDS", "RDS"]);
}

#[test]
fn a_destination_rule_touches_clusters_routes_and_only_its_hosts_endpoints() {
    let diff = diff_to(&snapshot(&format!(
        "{BASE}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {{name: web, namespace: shop}}\n\
         spec: {{host: web, subsets: [{{name: v1, labels: {{version: v1}}}}]}}\n"
    )));
    assert_eq!(diff.eds_hosts, BTreeSet::from([WEB.to_string()]));
    assert!(diff.outbound(type_url::CLUSTER) && diff.outbound(type_url::ROUTE));
    assert!(!diff.outbound(type_url::LISTENER), "listeners read no rule");
    assert_eq!(
        short(&diff.pushed_types(true, nobody)),
        ["CDS", "EDS", "LDS", "RDS"],
        "a rule's selector can move a proxy to another scope"
    );
}

#[test]
fn a_pod_label_change_matters_only_with_a_proxy_there() {
    let diff = diff_to(&edited(
        "labels: {app: client}",
        "labels: {app: client, tier: front}",
        "",
    ));
    assert_eq!(diff.pods, BTreeSet::from(["10.1.0.9".to_string()]));
    assert!(diff.eds_hosts.is_empty(), "no service routes to the client");
    assert!(diff.pushed_types(false, nobody).is_empty());
    // Its proxy's scope and inbound policies read its labels.
    assert_eq!(
        short(&diff.pushed_types(false, everyone)),
        ["CDS", "LDS", "RDS"]
    );
}

#[test]
fn a_peer_authentication_touches_every_endpoint_and_inbound_listeners_only() {
    let diff = diff_to(&snapshot(&format!(
        "{BASE}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: default, namespace: shop}}\nspec: {{mtls: {{mode: STRICT}}}}\n"
    )));
    assert!(diff.all_endpoints());
    for ty in [type_url::CLUSTER, type_url::LISTENER, type_url::ROUTE] {
        assert!(!diff.outbound(ty), "{ty}");
    }
    assert_eq!(short(&diff.pushed_types(true, everyone)), ["EDS", "LDS"]);
}

#[test]
fn a_secret_change_pushes_only_secrets() {
    let diff = diff_to(&snapshot(&format!(
        "{BASE}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: cert, namespace: shop}}\n\
         data: {{tls.crt: Zm9v}}\n"
    )));
    assert!(diff.secrets);
    assert_eq!(short(&diff.pushed_types(false, everyone)), ["SDS"]);
}

#[test]
fn a_new_service_touches_every_outbound_type_and_its_own_endpoints() {
    let diff = diff_to(&snapshot(&format!(
        "{BASE}---\napiVersion: v1\nkind: Service\nmetadata: {{name: new, namespace: shop}}\n\
         spec: {{clusterIP: 10.96.0.12, selector: {{app: web}}, ports: [{{name: http, port: 80}}]}}\n"
    )));
    assert!(diff.services);
    assert_eq!(
        diff.eds_hosts,
        BTreeSet::from(["new.shop.svc.cluster.local".to_string()])
    );
    for ty in [type_url::CLUSTER, type_url::LISTENER, type_url::ROUTE] {
        assert!(diff.outbound(ty), "{ty}");
    }
}

#[test]
fn a_telemetry_changes_listeners_and_scopes_not_clusters_or_endpoints() {
    let diff = diff_to(&edited(
        "",
        "",
        "---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: logs, namespace: shop}
spec: {accessLogging: [{providers: [{name: envoy}]}]}
",
    ));
    assert!(diff.telemetry);
    assert!(diff.outbound(type_url::LISTENER));
    assert!(!diff.outbound(type_url::CLUSTER));
    assert!(diff.eds_hosts.is_empty());
    // Scopes name the Telemetries that select a workload: every type a scope keys is asked again.
    assert_eq!(
        short(&diff.pushed_types(false, nobody)),
        ["CDS", "LDS", "RDS"]
    );
}

#[test]
fn a_metrics_only_telemetry_reaches_listeners_and_the_scopes_that_name_it() {
    let off = "---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: no-metrics, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  metrics: [{overrides: [{match: {metric: ALL_METRICS}, disabled: true}]}]
";
    let diff = diff_to(&edited("", "", off));
    assert!(diff.telemetry);
    assert!(diff.outbound(type_url::LISTENER));
    assert!(!diff.outbound(type_url::CLUSTER));
    assert!(diff.eds_hosts.is_empty());
    assert!(
        diff.pushed_types(false, everyone)
            .contains(&type_url::LISTENER)
    );
    // Turning them back on, and nothing else, is a change too.
    let on = off.replace("disabled: true", "disabled: false");
    let diff = SnapshotDiff::between(&edited("", "", off), &edited("", "", &on));
    assert!(diff.telemetry);
    assert!(
        diff.pushed_types(false, everyone)
            .contains(&type_url::LISTENER)
    );
}
