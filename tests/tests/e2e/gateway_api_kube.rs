//! The Kubernetes Gateway API against a real kube-apiserver (v1.20.2 on etcd, no controller
//! manager): meshd's CRDs serve the Gateway API kinds, the leader creates GatewayClass `istio`,
//! deploys each Gateway of that class (ServiceAccount, Deployment and Service, owned by the
//! Gateway) and removes them when the Gateway goes — there is no garbage collector here — and
//! writes each object's status only when it changes, leaving other controllers' route parents be.
//!
//! meshd runs on the host's loopback ([`HostMeshd`]); no pods run (nothing schedules them).
//!
//! Needs `make test-deps` (kube-apiserver); without it every test fails saying so.

use std::time::Duration;

use meshd_tests::kube::KubeCluster;
use meshd_tests::{wait_for, wait_until, yaml};
use serde_json::{Value, json};

use crate::support::host_meshd::HostMeshd;
use crate::support::kube::{apply, cluster_with_crds, get_json, kubectl};

/// For what a leader does after a snapshot (a lease, a debounce, a few API calls).
const SETTLED: Duration = Duration::from_secs(60);

const MANAGED: &str = "gateway.istio.io/managed=istio.io-gateway-controller";
const GATEWAYS: &str = "gateways.gateway.networking.k8s.io";

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
  namespace: shop
  annotations: {networking.istio.io/service-type: ClusterIP}
spec:
  gatewayClassName: istio
  infrastructure:
    labels: {team: shop}
    annotations: {shop.example.com/owner: web}
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: http-alt, port: 80, protocol: HTTP, hostname: alt.example.com}
  - {name: tls, port: 8443, protocol: TLS, tls: {mode: Passthrough}}
";

const ROUTES: &str = "httproutes.gateway.networking.k8s.io";
const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: web}]
  rules: [{backendRefs: [{name: unrelated, port: 80}]}]
";
const FOREIGN_CONTROLLER: &str = "example.com/other-controller";

/// Adds another controller's entry to the route's `parents`, through the status subresource
/// (kubectl 1.20 cannot patch one: a replace of the whole object, retried on conflicts with
/// meshd's own writes).
fn put_foreign_route_parent(cluster: &KubeCluster) {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    let path = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/web/status";
    let done = wait_until(SETTLED, || {
        let Some(mut route) = try_get(cluster, ROUTES, "web") else {
            return false;
        };
        let mut parents = route["status"]["parents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        parents.insert(
            0,
            json!({"parentRef": {"name": "edge"}, "controllerName": FOREIGN_CONTROLLER,
                   "conditions": []}),
        );
        route["status"]["parents"] = json!(parents);
        std::fs::write(file.path(), route.to_string()).expect("writing the route");
        let file = file.path().display().to_string();
        cluster
            .kubectl(&["replace", "--raw", path, "-f", &file])
            .is_ok_and(|o| o.status.success())
    });
    assert!(done, "could not write the route's status");
}

/// `kubectl get KIND NAME -n shop -o json`, if it exists.
fn try_get(cluster: &KubeCluster, kind: &str, name: &str) -> Option<Value> {
    let output = cluster
        .kubectl(&["get", kind, name, "-n", "shop", "-o", "json"])
        .ok()?;
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

/// The objects meshd manages in `shop`, as `kind/name`.
fn managed_objects(cluster: &KubeCluster) -> Vec<String> {
    let names = kubectl(
        cluster,
        &[
            "get",
            "deployments.apps,services,serviceaccounts",
            "-n",
            "shop",
            "-l",
            MANAGED,
            "-o",
            "name",
        ],
    );
    names.split_whitespace().map(str::to_owned).collect()
}

fn started(cluster: &KubeCluster, name: &str) -> HostMeshd {
    apply(cluster, &yaml::namespace("istio-system", &[]));
    apply(cluster, &yaml::namespace("shop", &[]));
    let meshd = HostMeshd::with_kubeconfig(cluster, name);
    assert!(
        wait_until(SETTLED, || meshd.is_leader() == Some(true)),
        "meshd did not become leader\n{}",
        meshd.log()
    );
    meshd
}

#[test]
fn a_gateway_of_class_istio_is_deployed_owned_and_removed_with_it() {
    let cluster = cluster_with_crds();
    let meshd = started(&cluster, "meshd-gateway-api");

    // istiod's default class appears, served by istiod's controller name.
    let class = wait_for(SETTLED, || {
        cluster
            .kubectl(&[
                "get",
                "gatewayclasses.gateway.networking.k8s.io",
                "istio",
                "-o",
                "json",
            ])
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
    })
    .unwrap_or_else(|| panic!("GatewayClass istio was not created\n{}", meshd.log()));
    assert_eq!(
        class["spec"]["controllerName"],
        "istio.io/gateway-controller"
    );

    apply(&cluster, GATEWAY);
    let gateway = get_json(&cluster, &["get", GATEWAYS, "web", "-n", "shop"]);
    let uid = gateway["metadata"]["uid"]
        .as_str()
        .expect("a uid")
        .to_owned();
    let owner = json!([{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                        "name": "web", "uid": uid, "controller": true}]);

    let deployment = wait_for(SETTLED, || {
        try_get(&cluster, "deployments.apps", "web-istio")
    })
    .unwrap_or_else(|| panic!("no Deployment web-istio\n{}", meshd.log()));
    let service = wait_for(SETTLED, || try_get(&cluster, "services", "web-istio"))
        .unwrap_or_else(|| panic!("no Service web-istio\n{}", meshd.log()));
    let account = wait_for(SETTLED, || {
        try_get(&cluster, "serviceaccounts", "web-istio")
    })
    .unwrap_or_else(|| panic!("no ServiceAccount web-istio\n{}", meshd.log()));
    for object in [&deployment, &service, &account] {
        let meta = &object["metadata"];
        assert_eq!(meta["ownerReferences"], owner, "{}", object["kind"]);
        assert_eq!(
            meta["labels"]["gateway.istio.io/managed"], "istio.io-gateway-controller",
            "{}",
            object["kind"]
        );
        assert_eq!(
            meta["labels"]["gateway.networking.k8s.io/gateway-name"],
            "web"
        );
        let managers: Vec<&str> = meta["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["manager"].as_str())
            .collect();
        assert!(managers.contains(&"meshd"), "{managers:?}");
    }

    let template = &deployment["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    assert_eq!(labels["sidecar.istio.io/inject"], "true");
    assert_eq!(labels["gateway.networking.k8s.io/gateway-name"], "web");
    assert_eq!(labels["istio.io/gateway-name"], "web");
    assert_eq!(labels["team"], "shop");
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["inject.istio.io/templates"], "gateway");
    assert_eq!(annotations["shop.example.com/owner"], "web");
    assert_eq!(template["spec"]["serviceAccountName"], "web-istio");
    let proxy = &template["spec"]["containers"][0];
    assert_eq!(proxy["name"], "istio-proxy");
    assert_eq!(proxy["image"], "auto");
    let ports: Vec<i64> = proxy["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    assert_eq!(ports, [15090, 80, 8443]);
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);

    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(
        service["spec"]["selector"],
        json!({"gateway.networking.k8s.io/gateway-name": "web"})
    );
    let service_ports: Vec<(String, i64)> = service["spec"]["ports"]
        .as_array()
        .expect("service ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["port"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        service_ports,
        [
            ("status-port".to_owned(), 15021),
            ("http-80".to_owned(), 80),
            ("tls-8443".to_owned(), 8443)
        ]
    );

    // A listener added is a port added; the other objects are not written again.
    let account_version = account["metadata"]["resourceVersion"].clone();
    apply(
        &cluster,
        &format!("{GATEWAY}  - {{name: tcp, port: 9000, protocol: TCP}}\n"),
    );
    assert!(
        wait_until(SETTLED, || try_get(&cluster, "services", "web-istio")
            .is_some_and(|s| s["spec"]["ports"]
                .as_array()
                .is_some_and(|p| p.len() == 4))),
        "the new listener's port is not on the Service\n{}",
        meshd.log()
    );
    let account = try_get(&cluster, "serviceaccounts", "web-istio").expect("still there");
    assert_eq!(account["metadata"]["resourceVersion"], account_version);

    // The Gateway goes, and with it what meshd deployed for it.
    kubectl(&cluster, &["delete", GATEWAYS, "web", "-n", "shop"]);
    assert!(
        wait_until(SETTLED, || managed_objects(&cluster).is_empty()),
        "left behind: {:?}\n{}",
        managed_objects(&cluster),
        meshd.log()
    );
}

#[test]
fn gateway_api_status_is_written_once_and_not_again_for_an_unrelated_change() {
    // What status the model gives each object (`Snapshot.gateway_api.statuses`) is the model's
    // business; what is proven here holds whatever it says.
    let cluster = cluster_with_crds();
    let meshd = started(&cluster, "meshd-gateway-status");
    apply(&cluster, GATEWAY);
    assert!(
        wait_until(SETTLED, || try_get(&cluster, "services", "web-istio")
            .is_some()),
        "the Gateway was not deployed\n{}",
        meshd.log()
    );

    // Whatever status the model gives the Gateway is written within a few seconds; after that
    // its resourceVersion settles.
    let version = |cluster: &KubeCluster| {
        try_get(cluster, GATEWAYS, "web").map(|g| g["metadata"]["resourceVersion"].clone())
    };
    let mut last = version(&cluster);
    let settled = wait_until(SETTLED, || {
        std::thread::sleep(Duration::from_secs(5));
        let now = version(&cluster);
        let same = now == last;
        last = now;
        same
    });
    assert!(settled, "the Gateway keeps being written\n{}", meshd.log());
    // A route that another controller reports on as well: its entry is not meshd's to touch.
    apply(&cluster, ROUTE);
    put_foreign_route_parent(&cluster);
    let before = try_get(&cluster, GATEWAYS, "web").expect("the Gateway");
    // Conditions meshd wrote carry a transition time, as the API requires.
    for condition in before["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert!(condition["lastTransitionTime"].is_string(), "{condition}");
    }

    // An unrelated change makes a new snapshot, with the same status for the Gateway.
    apply(
        &cluster,
        &yaml::service(
            "unrelated",
            "shop",
            "10.96.0.77",
            &[("http", 80, 8080)],
            &[("app", "unrelated")],
        ),
    );
    assert!(
        wait_until(SETTLED, || meshd
            .get("/debug/registryz")
            .is_some_and(|r| r.contains("unrelated.shop.svc.cluster.local"))),
        "meshd did not take the change in\n{}",
        meshd.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    let route = try_get(&cluster, ROUTES, "web").expect("the HTTPRoute");
    let parents = route["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        parents
            .iter()
            .any(|p| p["controllerName"] == FOREIGN_CONTROLLER),
        "another controller's route parent was dropped: {parents:?}"
    );
    let after = try_get(&cluster, GATEWAYS, "web").expect("the Gateway");
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"],
        "the Gateway's status was written again: {}\n{}",
        after["status"],
        meshd.log()
    );
}

/// A Gateway taking HTTP routes for `*.example.com` from its own namespace only, and routes that
/// are accepted, refused or unresolved, each for its own reason.
const STATUS_OBJECTS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: shop
  annotations: {networking.istio.io/service-type: ClusterIP}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: \"*.example.com\"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: good, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  hostnames: [www.example.com]
  rules: [{backendRefs: [{name: store, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: foreign, namespace: other}
spec:
  parentRefs: [{name: edge, namespace: shop}]
  hostnames: [foreign.example.com]
  rules: [{backendRefs: [{name: remote, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wrong-host, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  hostnames: [www.example.org]
  rules: [{backendRefs: [{name: store, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: no-grant, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  hostnames: [remote.example.com]
  rules: [{backendRefs: [{name: remote, namespace: other, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: missing, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  hostnames: [missing.example.com]
  rules: [{backendRefs: [{name: nowhere, port: 80}]}]
";

const GRANT: &str = "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: shop-routes, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]
  to: [{group: \"\", kind: Service}]
";

/// `(status, reason)` of condition `kind` among `conditions`.
fn condition(conditions: &Value, kind: &str) -> Option<(String, String)> {
    let found = conditions.as_array()?.iter().find(|c| c["type"] == kind)?;
    Some((
        found["status"].as_str()?.to_owned(),
        found["reason"].as_str()?.to_owned(),
    ))
}

/// The route's parent entry meshd wrote for Gateway `edge`: its conditions.
fn route_conditions(cluster: &KubeCluster, namespace: &str, name: &str) -> Option<Value> {
    let output = cluster
        .kubectl(&["get", ROUTES, name, "-n", namespace, "-o", "json"])
        .ok()?;
    let route: Value = serde_json::from_slice(&output.stdout).ok()?;
    let parents = route["status"]["parents"].as_array()?;
    let ours = parents.iter().find(|p| {
        p["controllerName"] == "istio.io/gateway-controller" && p["parentRef"]["name"] == "edge"
    })?;
    Some(ours["conditions"].clone())
}

/// Waits until route `namespace/name` reports `(status, reason)` for `Accepted` and for
/// `ResolvedRefs` (`None`: that condition is not checked).
fn assert_route(
    cluster: &KubeCluster,
    meshd: &HostMeshd,
    (namespace, name): (&str, &str),
    accepted: (&str, &str),
    resolved: Option<(&str, &str)>,
) {
    let want =
        |c: Option<(String, String)>, w: (&str, &str)| c.is_some_and(|(s, r)| s == w.0 && r == w.1);
    let mut last = Value::Null;
    let reported = wait_until(SETTLED, || {
        let Some(conditions) = route_conditions(cluster, namespace, name) else {
            return false;
        };
        last = conditions.clone();
        want(condition(&conditions, "Accepted"), accepted)
            && resolved.is_none_or(|r| want(condition(&conditions, "ResolvedRefs"), r))
    });
    assert!(
        reported,
        "HTTPRoute {namespace}/{name}: expected Accepted {accepted:?}, ResolvedRefs {resolved:?}; \
         last conditions {last}\n{}",
        meshd.log()
    );
}

#[test]
fn route_parent_statuses_say_why_a_route_is_accepted_refused_or_unresolved() {
    let cluster = cluster_with_crds();
    apply(&cluster, &yaml::namespace("other", &[]));
    let meshd = started(&cluster, "meshd-gateway-route-status");
    for (name, namespace, vip) in [
        ("store", "shop", "10.96.0.81"),
        ("remote", "other", "10.96.0.82"),
    ] {
        apply(
            &cluster,
            &yaml::service(
                name,
                namespace,
                vip,
                &[("http", 80, 8080)],
                &[("app", name)],
            ),
        );
    }
    apply(&cluster, STATUS_OBJECTS);

    assert_route(
        &cluster,
        &meshd,
        ("shop", "good"),
        ("True", "Accepted"),
        Some(("True", "ResolvedRefs")),
    );
    assert_route(
        &cluster,
        &meshd,
        ("other", "foreign"),
        ("False", "NotAllowedByListeners"),
        None,
    );
    assert_route(
        &cluster,
        &meshd,
        ("shop", "wrong-host"),
        ("False", "NoMatchingListenerHostname"),
        None,
    );
    assert_route(
        &cluster,
        &meshd,
        ("shop", "no-grant"),
        ("True", "Accepted"),
        Some(("False", "RefNotPermitted")),
    );
    assert_route(
        &cluster,
        &meshd,
        ("shop", "missing"),
        ("True", "Accepted"),
        Some(("False", "BackendNotFound")),
    );

    // The Gateway: accepted, programmed with its Service's address, its listener counting the
    // routes attached to it (accepted ones, resolved or not).
    let mut last = Value::Null;
    let programmed = wait_until(SETTLED, || {
        let Some(gateway) = try_get(&cluster, GATEWAYS, "edge") else {
            return false;
        };
        last = gateway["status"].clone();
        let Some(service) = try_get(&cluster, "services", "edge-istio") else {
            return false;
        };
        let address = service["spec"]["clusterIP"].clone();
        let status = &gateway["status"];
        let listener = &status["listeners"][0];
        condition(&status["conditions"], "Accepted") == Some(("True".into(), "Accepted".into()))
            && condition(&status["conditions"], "Programmed")
                == Some(("True".into(), "Programmed".into()))
            && status["addresses"] == json!([{"type": "IPAddress", "value": address}])
            && listener["name"] == "http"
            && listener["attachedRoutes"] == 3
            && condition(&listener["conditions"], "Accepted")
                == Some(("True".into(), "Accepted".into()))
            && condition(&listener["conditions"], "ResolvedRefs")
                == Some(("True".into(), "ResolvedRefs".into()))
    });
    assert!(programmed, "the Gateway's status: {last}\n{}", meshd.log());

    // A ReferenceGrant in the backend's namespace resolves the cross-namespace reference.
    apply(&cluster, GRANT);
    assert_route(
        &cluster,
        &meshd,
        ("shop", "no-grant"),
        ("True", "Accepted"),
        Some(("True", "ResolvedRefs")),
    );
    // A listener that takes routes from every namespace accepts the foreign one.
    apply(
        &cluster,
        &STATUS_OBJECTS
            .split("---\n")
            .next()
            .expect("the Gateway")
            .replace(
                "hostname: \"*.example.com\"}",
                "hostname: \"*.example.com\", allowedRoutes: {namespaces: {from: All}}}",
            ),
    );
    assert_route(
        &cluster,
        &meshd,
        ("other", "foreign"),
        ("True", "Accepted"),
        Some(("True", "ResolvedRefs")),
    );
}
