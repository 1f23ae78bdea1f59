//! What the generator keeps across snapshots: lists a change does not touch are the same shared
//! values, and whatever it keeps or rebuilds, proxies get what a generator fresh from the same
//! snapshot would give them.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use meshd_model::MeshConfig;
use meshd_xds::Generator as _;
use tokio::sync::mpsc;

use super::*;

/// Namespace `shop`: Services `web` and `cart` with Endpoints naming their Pods, and a `client`
/// Pod no Service selects.
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
metadata: {name: web-1, namespace: shop, labels: {app: web, version: v1, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: web}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-1, namespace: shop, labels: {app: cart, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: cart}
status: {podIP: 10.1.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {serviceAccountName: client}
status: {podIP: 10.1.0.9}
";

const VIRTUAL_SERVICE: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
    metadata: {name: web, namespace: shop}\n\
    spec: {hosts: [web], http: [{timeout: 3s, route: [{destination: {host: cart}}]}]}\n";
const SUBSET_RULE: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
    metadata: {name: web, namespace: shop}\n\
    spec: {host: web, subsets: [{name: v1, labels: {version: v1}}]}\n";
const STRICT_MTLS: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
    metadata: {name: default, namespace: shop}\nspec: {mtls: {mode: STRICT}}\n";
const NEW_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: new, namespace: shop}\n\
    spec: {clusterIP: 10.96.0.12, selector: {app: client}, ports: [{name: grpc, port: 90}]}\n";

const WEB: &str = "web.shop.svc.cluster.local";
const CART: &str = "cart.shop.svc.cluster.local";
const TYPES: [&str; 4] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];

/// The base mesh and one more document.
fn with(document: &str) -> String {
    format!("{BASE}---\n{document}")
}

/// `yaml` with one more address behind `pod`'s Endpoints (`target`: the Pod behind it, if any).
fn more_endpoints(yaml: &str, pod: &str, ip: &str, target: Option<&str>) -> String {
    let entry =
        |ip: &str, pod: &str| format!("{{ip: {ip}, targetRef: {{kind: Pod, name: {pod}}}}}");
    let added = match target {
        Some(name) => entry(ip, name),
        None => format!("{{ip: {ip}}}"),
    };
    let existing = entry(
        if pod == "web-1" {
            "10.1.0.1"
        } else {
            "10.1.0.2"
        },
        pod,
    );
    assert!(yaml.contains(&existing), "{existing}");
    yaml.replacen(&existing, &format!("{existing}, {added}"), 1)
}

fn snapshot(version: u64, yaml: &str) -> Arc<Snapshot> {
    let (objects, errors) = meshd_model::documents::parse(yaml, false);
    assert!(errors.is_empty(), "{errors:?}");
    let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
    let mesh = MeshConfig::default();
    Arc::new(Snapshot::assemble(
        version,
        Arc::new(objects),
        &mesh,
        &BTreeMap::new(),
    ))
}

/// A generator serving `snapshot`, and what it needs kept alive.
struct Harness {
    generator: MeshGenerator,
    _ca: super::super::ca::LoadedCa,
    _quarantine: mpsc::UnboundedReceiver<meshd_model::SourceEvent>,
}

fn harness(snapshot: Arc<Snapshot>) -> Harness {
    let ca = super::super::ca::load(None, "cluster.local", Duration::from_secs(3600)).unwrap();
    let (tx, quarantine) = mpsc::unbounded_channel();
    let generator = MeshGenerator::new(
        snapshot,
        Arc::new(Secrets::new(ca.ca.clone(), None)),
        Counter::default(),
        identity::IdentityProof::Address,
        Guard::new(tx, Counter::default(), None),
    );
    Harness {
        generator,
        _ca: ca,
        _quarantine: quarantine,
    }
}

/// Sidecars of every Pod (with mesh certificates), and one at an address no Pod has.
fn proxies_of(generator: &MeshGenerator) -> Vec<ConnectedProxy> {
    let ids = [
        "10.1.0.1~web-1",
        "10.1.0.2~cart-1",
        "10.1.0.9~client",
        "10.200.0.1~vm",
    ];
    ids.iter()
        .map(|id| {
            let node = format!("sidecar~{id}.shop~shop.svc.cluster.local");
            let mut proxy = Proxy::from_node_id(&node).unwrap();
            proxy.mtls = true;
            generator.admit(proxy, None)
        })
        .collect()
}

/// What a proxy gets of a type: names and versions.
fn held(generator: &MeshGenerator, proxy: &ConnectedProxy, ty: &str) -> Vec<(String, u64)> {
    let generated = generator.generate(proxy, ty, None);
    let mut out: Vec<_> = generated
        .iter()
        .flat_map(|set| set.iter())
        .map(|r| (r.name().to_owned(), r.version()))
        .collect();
    out.sort();
    out
}

#[test]
fn an_endpoint_change_keeps_every_outbound_list_and_the_other_services_endpoints() {
    let h = harness(snapshot(1, BASE));
    let proxies = proxies_of(&h.generator);
    for (proxy, ty) in proxies.iter().flat_map(|p| TYPES.map(|ty| (p, ty))) {
        held(&h.generator, proxy, ty);
    }
    let before = h.generator.built();
    let scope = Scope::for_proxy(&before.snapshot, &proxies[2].proxy);
    let changed = more_endpoints(BASE, "web-1", "10.200.0.2", None);
    assert_eq!(
        h.generator.set_snapshot(snapshot(2, &changed)),
        [type_url::ENDPOINT]
    );
    let after = h.generator.built();
    for ty in [type_url::CLUSTER, type_url::LISTENER, type_url::ROUTE] {
        let (old, new) = (before.cached(ty, &scope), after.cached(ty, &scope));
        assert!(Arc::ptr_eq(&old.unwrap(), &new.unwrap()), "{ty} rebuilt");
    }
    let cart = (
        before.service_endpoints(CART),
        after.service_endpoints(CART),
    );
    let (old, new) = (cart.0.unwrap(), cart.1.unwrap());
    assert!(old.iter().zip(&new).all(|(a, b)| Arc::ptr_eq(a, b)));
    let web = (before.service_endpoints(WEB), after.service_endpoints(WEB));
    assert_ne!(web.0.unwrap()[0].version(), web.1.unwrap()[0].version());
    // A change nothing reads: not even the list of every assignment is new.
    let all = after.endpoints();
    let namespace = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
    let types = h
        .generator
        .set_snapshot(snapshot(3, &format!("{changed}{namespace}")));
    assert!(types.is_empty(), "{types:?}");
    assert!(Arc::ptr_eq(&all, &h.generator.built().endpoints()));
}

#[test]
fn a_list_no_proxy_asked_for_since_its_type_was_pushed_is_let_go() {
    let h = harness(snapshot(1, BASE));
    let proxies = proxies_of(&h.generator);
    // Two scopes: with a mesh certificate (every proxy above) and without one (this proxy).
    let mut plain = proxies[2].proxy.clone();
    plain.mtls = false;
    let plain = h.generator.admit(plain, None);
    let snap = h.generator.snapshot();
    let scopes = [&proxies[2], &plain].map(|p| Scope::for_proxy(&snap, &p.proxy));
    held(&h.generator, &proxies[2], type_url::CLUSTER);
    held(&h.generator, &plain, type_url::CLUSTER);
    // A VirtualService: clusters are pushed (scopes may move) but kept.
    let types = h
        .generator
        .set_snapshot(snapshot(2, &with(VIRTUAL_SERVICE)));
    assert!(types.contains(&type_url::CLUSTER));
    let kept = |scope| {
        h.generator
            .built()
            .cached(type_url::CLUSTER, scope)
            .is_some()
    };
    assert!(kept(&scopes[0]) && kept(&scopes[1]));
    // Only one of them is asked for after that push (the other proxy went away, say).
    held(&h.generator, &proxies[2], type_url::CLUSTER);
    for (version, vm) in [(3, "10.200.0.3"), (4, "10.200.0.4")] {
        let yaml = more_endpoints(&with(VIRTUAL_SERVICE), "web-1", vm, None);
        let types = h.generator.set_snapshot(snapshot(version, &yaml));
        assert_eq!(types, [type_url::ENDPOINT]);
    }
    assert!(kept(&scopes[0]), "asked for since the push");
    assert!(!kept(&scopes[1]), "nobody's");
}

#[test]
fn incremental_generation_serves_what_a_fresh_generator_would() {
    let edits: Vec<String> = vec![
        // Endpoints: a VM, then a Pod that has a proxy (its inbound config changes).
        more_endpoints(BASE, "web-1", "10.200.0.1", None),
        more_endpoints(BASE, "cart-1", "10.1.0.9", Some("client")),
        // A Pod label (the subset below selects on it), and the subset's rule.
        BASE.replace("version: v1", "version: v2"),
        with(SUBSET_RULE),
        with(VIRTUAL_SERVICE),
        with(STRICT_MTLS),
        with(NEW_SERVICE),
        BASE.to_string(),
    ];
    let h = harness(snapshot(1, BASE));
    let proxies = proxies_of(&h.generator);
    let mut holding: Vec<Vec<_>> = proxies
        .iter()
        .map(|p| TYPES.map(|ty| held(&h.generator, p, ty)).to_vec())
        .collect();
    for (i, yaml) in edits.iter().enumerate() {
        let next = snapshot(i as u64 + 2, yaml);
        let pushed = h.generator.set_snapshot(next.clone());
        let fresh = harness(next);
        let fresh_proxies = proxies_of(&fresh.generator);
        for (p, (proxy, fresh_proxy)) in proxies.iter().zip(&fresh_proxies).enumerate() {
            for (t, ty) in TYPES.iter().enumerate() {
                let now = held(&h.generator, proxy, ty);
                let (id, short) = (&proxy.proxy.id, type_url::short(ty));
                assert_eq!(
                    now,
                    held(&fresh.generator, fresh_proxy, ty),
                    "edit {i}: {short} of {id}"
                );
                if !pushed.contains(ty) {
                    assert_eq!(
                        holding[p][t], now,
                        "edit {i}: {short} of {id} changed, not pushed"
                    );
                }
                holding[p][t] = now;
            }
        }
    }
}

#[test]
fn scopes_that_see_the_same_services_share_one_set() {
    let h = harness(snapshot(1, BASE));
    let built = h.generator.built();
    let scope = |ns: &str| {
        let node = format!("sidecar~10.9.0.1~a.{ns}~{ns}.svc.cluster.local");
        Scope::for_proxy(&built.snapshot, &Proxy::from_node_id(&node).unwrap())
    };
    let guard = Guard::new(mpsc::unbounded_channel().0, Counter::default(), None);
    let (shop, other) = (scope("shop"), scope("other"));
    assert_ne!(shop, other);
    // Routes differ: a namespace's own services are also reached by their short names.
    for ty in [type_url::CLUSTER, type_url::LISTENER] {
        let lists = [&shop, &other].map(|s| built.outbound(&guard, ty, s));
        assert!(Arc::ptr_eq(&lists[0], &lists[1]), "{ty}: one copy");
    }
}
