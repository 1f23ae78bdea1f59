//! The Kubernetes test harness against the real thing: kube-apiserver v1.20.2 on etcd, on loopback.
//! Also what `manifests/` must do there: the generated CRDs are accepted and Istio YAML applies in
//! every served version, the install manifests are accepted and grant meshd only what it needs, and
//! the Helm chart installs the same objects.
//!
//! Needs `make test-deps` (builds kube-apiserver once); without it every test here fails saying so.

use std::collections::BTreeMap;
use std::time::Duration;

use meshd_tests::kube::KubeCluster;
use meshd_tests::wait_until;
use serde_json::{Value, json};

use crate::support::cli::meshd_command;
use crate::support::kube::{apply, apply_repo_files, cluster, get_json, install_crds, kubectl};
use crate::support::repo_file;

fn read_repo_file(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|err| panic!("reading {path}: {err}"))
}

/// Every document of a multi-document YAML text, empty ones left out.
fn yaml_documents(text: &str) -> Vec<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).unwrap_or_else(|err| panic!("parsing YAML: {err}"));
    docs.into_iter().filter(|doc| !doc.is_null()).collect()
}

const CORE_OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio-injection: enabled
---
apiVersion: v1
kind: Service
metadata:
  name: muffin-currency
  namespace: shop
  labels:
    app: muffin-currency
spec:
  selector:
    app: muffin-currency
  ports:
  - name: http
    port: 8083
    targetPort: 8083
---
apiVersion: v1
kind: Endpoints
metadata:
  name: muffin-currency
  namespace: shop
subsets:
- addresses:
  - ip: 10.10.0.7
    targetRef:
      kind: Pod
      name: muffin-currency-0
      namespace: shop
  ports:
  - name: http
    port: 8083
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: muffin-currency
  namespace: shop
"#;

#[test]
fn core_objects_apply_and_a_pod_gets_its_ip_through_the_status_subresource() {
    let cluster = cluster();
    apply(&cluster, CORE_OBJECTS);

    let service = get_json(
        &cluster,
        &["get", "service", "muffin-currency", "-n", "shop"],
    );
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap_or_default();
    assert!(
        cluster_ip.starts_with("10.96."),
        "cluster IP {cluster_ip} from --service-cluster-ip-range"
    );
    let endpoints = get_json(
        &cluster,
        &["get", "endpoints", "muffin-currency", "-n", "shop"],
    );
    assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "10.10.0.7");

    // No kubelet, no controller manager: a pod is stored as created, and the test plays kubelet.
    apply(
        &cluster,
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: muffin-currency-0
  namespace: shop
  labels:
    app: muffin-currency
spec:
  serviceAccountName: muffin-currency
  containers:
  - name: app
    image: muffin-currency:1
"#,
    );
    cluster
        .set_pod_ip("shop", "muffin-currency-0", "10.10.0.7")
        .unwrap_or_else(|err| panic!("{err:#}"));
    let pod = get_json(&cluster, &["get", "pod", "muffin-currency-0", "-n", "shop"]);
    assert_eq!(pod["status"]["podIP"], "10.10.0.7");
    assert_eq!(pod["spec"]["serviceAccountName"], "muffin-currency");
    // The ServiceAccount admission plugin mounted a projected (bound) token, as in a real cluster.
    let volumes = pod["spec"]["volumes"].to_string();
    assert!(volumes.contains("serviceAccountToken"), "{volumes}");
}

#[test]
fn service_account_tokens_are_minted_and_reviewed_for_their_audience() {
    let cluster = cluster();
    apply(&cluster, CORE_OBJECTS);

    let token = cluster
        .service_account_token("shop", "muffin-currency", &["istio-ca"])
        .unwrap_or_else(|err| panic!("{err:#}"));

    let review = cluster
        .token_review(&token, &["istio-ca"])
        .unwrap_or_else(|err| panic!("{err:#}"));
    assert_eq!(review["authenticated"], true, "{review}");
    assert_eq!(
        review["user"]["username"],
        "system:serviceaccount:shop:muffin-currency"
    );
    assert_eq!(review["audiences"], json!(["istio-ca"]));

    // The same token is no good for another audience, and a made-up one for none.
    let review = cluster
        .token_review(&token, &[meshd_tests::kube::SERVICE_ACCOUNT_ISSUER])
        .unwrap_or_else(|err| panic!("{err:#}"));
    assert_ne!(review["authenticated"], true, "{review}");
    let review = cluster
        .token_review("not-a-token", &["istio-ca"])
        .unwrap_or_else(|err| panic!("{err:#}"));
    assert_ne!(review["authenticated"], true, "{review}");

    // A token for the API server's own audience authenticates to the API server: a kubeconfig made
    // of it acts as the service account, which may not list secrets.
    let api_token = cluster
        .service_account_token("shop", "muffin-currency", &[])
        .unwrap_or_else(|err| panic!("{err:#}"));
    let kubeconfig = cluster
        .write_token_kubeconfig("muffin-currency", &api_token)
        .unwrap_or_else(|err| panic!("{err:#}"));
    let kubeconfig = kubeconfig.display().to_string();
    let can_i = cluster
        .kubectl(&[
            "--kubeconfig",
            &kubeconfig,
            "auth",
            "can-i",
            "list",
            "secrets",
            "-n",
            "shop",
        ])
        .expect("kubectl runs");
    assert_eq!(String::from_utf8_lossy(&can_i.stdout).trim(), "no");
}

#[test]
fn state_survives_restarts_of_the_api_server_and_of_etcd() {
    let mut cluster = cluster();
    apply(&cluster, CORE_OBJECTS);
    let uid = |cluster: &KubeCluster| {
        get_json(
            cluster,
            &["get", "service", "muffin-currency", "-n", "shop"],
        )["metadata"]["uid"]
            .as_str()
            .map(str::to_owned)
            .expect("a stored object has a uid")
    };
    let before = uid(&cluster);

    cluster
        .restart_apiserver()
        .unwrap_or_else(|err| panic!("{err:#}"));
    assert_eq!(uid(&cluster), before, "after restarting kube-apiserver");

    cluster
        .restart_etcd()
        .unwrap_or_else(|err| panic!("{err:#}"));
    assert_eq!(uid(&cluster), before, "after restarting etcd");

    // And the restarted pair keeps taking writes.
    apply(
        &cluster,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after-restarts\n  namespace: shop\ndata:\n  a: b\n",
    );
    cluster.stop_etcd();
    assert!(
        wait_until(Duration::from_secs(60), || {
            cluster
                .kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"])
                .map(|out| !out.status.success())
                .unwrap_or(true)
        }),
        "/readyz reports etcd gone"
    );
    cluster
        .restart_etcd()
        .unwrap_or_else(|err| panic!("{err:#}"));
    let configmap = get_json(
        &cluster,
        &["get", "configmap", "after-restarts", "-n", "shop"],
    );
    assert_eq!(configmap["data"]["a"], "b");
}

/// Istio objects as the tutorials write them (a muffin shop and bookinfo-style examples), one or
/// more of every kind meshd reads.
const ISTIO_OBJECTS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: muffin-wallet-gateway
  namespace: shop
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "wallet.example.com"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: muffin-wallet-vs
  namespace: shop
spec:
  hosts:
  - "wallet.example.com"
  gateways:
  - muffin-wallet-gateway
  http:
  - match:
    - uri:
        prefix: /
    route:
    - destination:
        port:
          number: 80
        host: muffin-wallet
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: muffin-currency-vs
  namespace: shop
spec:
  hosts:
  - muffin-currency
  http:
  - timeout: 5s
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: "5xx,reset,connect-failure,retriable-4xx"
    route:
    - destination:
        host: muffin-currency
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: customers-route
  namespace: shop
spec:
  hosts:
  - customers.shop.svc.cluster.local
  http:
  - match:
    - headers:
        user-agent:
          regex: ".*Firefox.*"
    route:
    - destination:
        host: customers.shop.svc.cluster.local
        subset: v1
  - route:
    - destination:
        host: customers.shop.svc.cluster.local
        subset: v1
      weight: 70
    - destination:
        host: customers.shop.svc.cluster.local
        subset: v2
      weight: 30
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: muffin-currency-dr
  namespace: shop
spec:
  host: muffin-currency
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
      http:
        http1MaxPendingRequests: 100
        http2MaxRequests: 1000
        maxRetries: 3
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: nginx-dr
  namespace: shop
  labels:
    app: nginx-dr
spec:
  host: nginx-service
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: "x-user"
  subsets:
  - name: all
    labels:
      app: nginx
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: postgres-external
  namespace: shop
spec:
  hosts:
  - postgres.shop.svc.cluster.local
  location: MESH_INTERNAL
  resolution: DNS
  ports:
  - number: 5432
    name: tcp-postgres
    protocol: TCP
  endpoints:
  - address: db.example.com
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: legacy-vm
  namespace: shop
spec:
  address: 10.20.0.9
  labels:
    app: legacy
  serviceAccount: legacy
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: shop
spec:
  egress:
  - hosts:
    - "./*"
    - "istio-system/*"
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: shop
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: muffin-currency-policy
  namespace: shop
spec:
  selector:
    matchLabels:
      app: muffin-currency
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/muffin-wallet"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/rate*"]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: wallet-jwt
  namespace: shop
spec:
  selector:
    matchLabels:
      app: muffin-wallet
  jwtRules:
  - issuer: "https://auth.example.com"
    jwksUri: "https://auth.example.com/.well-known/jwks.json"
"#;

fn served_versions(crd: &Value) -> Vec<String> {
    crd["spec"]["versions"]
        .as_array()
        .expect("a CRD lists versions")
        .iter()
        .filter(|version| version["served"] == true)
        .map(|version| version["name"].as_str().expect("named").to_owned())
        .collect()
}

#[test]
fn generated_crds_apply_and_istio_yaml_applies_in_every_served_version() {
    let printed = meshd_command().arg("crds").output().unwrap_or_else(|err| {
        panic!(
            "running {} crds: {err} (build it with `cargo build -p meshd`, or set MESHD_BIN)",
            meshd_tests::deps::meshd_binary().display()
        )
    });
    assert!(printed.status.success(), "meshd crds failed: {printed:?}");
    let checked_in = read_repo_file("manifests/crds.yaml");
    assert!(
        String::from_utf8_lossy(&printed.stdout) == checked_in,
        "manifests/crds.yaml differs from `meshd crds`; regenerate it with \
         `cargo run -p meshd -- crds -o manifests/crds.yaml`"
    );
    assert_eq!(
        read_repo_file("manifests/helm/meshd/crds/crds.yaml"),
        checked_in,
        "the Helm chart carries a copy of manifests/crds.yaml: `cp manifests/crds.yaml manifests/helm/meshd/crds/`"
    );

    let cluster = cluster();
    // The file just proven equal to what `meshd crds` prints.
    install_crds(&cluster);
    apply(&cluster, CORE_OBJECTS);

    // Istio's kinds by name (the Gateway API has a `Gateway` too).
    let crds: BTreeMap<String, Value> = yaml_documents(&checked_in)
        .into_iter()
        .filter(|crd| {
            crd["spec"]["group"]
                .as_str()
                .is_some_and(|group| group.ends_with(".istio.io"))
        })
        .map(|crd| {
            (
                crd["spec"]["names"]["kind"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                crd,
            )
        })
        .collect();
    let objects = yaml_documents(ISTIO_OBJECTS);
    let mut applied = 0;
    for object in &objects {
        let kind = object["kind"].as_str().expect("every object has a kind");
        let crd = crds
            .get(kind)
            .unwrap_or_else(|| panic!("no CRD for {kind}"));
        let group = crd["spec"]["group"].as_str().expect("group");
        let plural = crd["spec"]["names"]["plural"].as_str().expect("plural");
        for version in served_versions(crd) {
            // The same object in each version, under a name of its own, read back in that version.
            let mut object = object.clone();
            let name = format!(
                "{}-{version}",
                object["metadata"]["name"].as_str().expect("name")
            );
            object["apiVersion"] = json!(format!("{group}/{version}"));
            object["metadata"]["name"] = json!(name);
            apply(&cluster, &object.to_string());
            let read = get_json(
                &cluster,
                &[
                    "get",
                    &format!("{plural}.{version}.{group}"),
                    &name,
                    "-n",
                    "shop",
                ],
            );
            assert_eq!(read["apiVersion"], format!("{group}/{version}"));
            assert_eq!(
                read["spec"], object["spec"],
                "{kind} {name}: every field kept"
            );
            applied += 1;
        }
    }
    // 9 networking objects x 3 versions + 3 security objects x 2 versions.
    assert_eq!(applied, 9 * 3 + 3 * 2);

    // The tutorials also apply the objects exactly as written; and `kubectl get` shows Istio's columns.
    apply(&cluster, ISTIO_OBJECTS);
    let vs = kubectl(&cluster, &["get", "vs", "-n", "shop", "muffin-wallet-vs"]);
    assert!(vs.contains("GATEWAYS") && vs.contains("HOSTS"), "{vs}");
    assert!(vs.contains("[\"muffin-wallet-gateway\"]"), "{vs}");
    let pa = kubectl(
        &cluster,
        &["get", "peerauthentication", "-n", "shop", "default"],
    );
    assert!(pa.contains("MODE") && pa.contains("STRICT"), "{pa}");
    let ap = kubectl(
        &cluster,
        &["get", "ap", "-n", "shop", "muffin-currency-policy"],
    );
    assert!(ap.contains("ACTION") && ap.contains("ALLOW"), "{ap}");
    let se = kubectl(&cluster, &["get", "se", "-n", "shop", "postgres-external"]);
    assert!(se.contains("MESH_INTERNAL") && se.contains("DNS"), "{se}");
    let dr = kubectl(&cluster, &["get", "dr", "-n", "shop", "muffin-currency-dr"]);
    assert!(
        dr.contains("HOST") && dr.contains("muffin-currency"),
        "{dr}"
    );
}

/// `kubectl auth can-i VERB RESOURCE` as meshd's service account.
fn meshd_can(cluster: &KubeCluster, args: &[&str]) -> bool {
    let mut all = vec![
        "auth",
        "can-i",
        "--as=system:serviceaccount:istio-system:meshd",
    ];
    all.extend(args);
    let output = cluster.kubectl(&all).expect("kubectl runs");
    match String::from_utf8_lossy(&output.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {args:?}: {other} {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

#[test]
fn install_manifests_apply_and_grant_meshd_only_what_it_needs() {
    let cluster = cluster();
    apply_repo_files(&cluster, &["manifests/crds.yaml", "manifests/install.yaml"]);
    // Applying again changes nothing and fails nothing.
    apply_repo_files(&cluster, &["manifests/install.yaml"]);

    let deployment = get_json(
        &cluster,
        &["get", "deployment", "meshd", "-n", "istio-system"],
    );
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0], "serve");
    // What istioctl and Kiali look for to find istiod: its label on the Deployment, its pods and
    // the Service, the revision, and the cluster name in the environment.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        (&labels["app"], &labels["istio.io/rev"]),
        (&json!("istiod"), &json!("default"))
    );
    let found = kubectl(
        &cluster,
        &[
            "get",
            "deployments,services",
            "-l",
            "app=istiod",
            "-n",
            "istio-system",
            "-o",
            "name",
        ],
    );
    assert_eq!(
        found.split_whitespace().collect::<Vec<_>>(),
        ["deployment.apps/meshd", "service/istiod"]
    );
    let injector = get_json(
        &cluster,
        &[
            "get",
            "configmap",
            "istio-sidecar-injector",
            "-n",
            "istio-system",
        ],
    );
    let values: Value = serde_json::from_str(injector["data"]["values"].as_str().expect("values"))
        .expect("the injector's values are JSON, as Kiali parses them");
    assert_eq!(values["global"]["network"], "");
    let env = container["env"].as_array().expect("env");
    assert!(
        env.iter()
            .any(|e| e["name"] == "CLUSTER_ID" && e["value"] == "Kubernetes"),
        "{env:?}"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], 15014);

    let service = get_json(
        &cluster,
        &["get", "service", "istiod", "-n", "istio-system"],
    );
    let ports: BTreeMap<i64, i64> = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|port| {
            (
                port["port"].as_i64().expect("port"),
                port["targetPort"].as_i64().expect("numeric targetPort"),
            )
        })
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([
            (443, 15017),
            (15010, 15010),
            (15012, 15012),
            (15014, 15014),
            (15017, 15017)
        ])
    );

    let injector = get_json(
        &cluster,
        &[
            "get",
            "mutatingwebhookconfiguration",
            "meshd-sidecar-injector",
        ],
    );
    assert_eq!(
        injector["webhooks"][0]["clientConfig"]["service"]["path"],
        "/inject"
    );
    assert_eq!(
        injector["webhooks"][0]["namespaceSelector"]["matchLabels"]["istio-injection"],
        "enabled"
    );
    let validator = get_json(
        &cluster,
        &["get", "validatingwebhookconfiguration", "meshd-validator"],
    );
    assert_eq!(
        validator["webhooks"][0]["clientConfig"]["service"]["path"],
        "/validate"
    );
    let mesh = get_json(
        &cluster,
        &["get", "configmap", "istio", "-n", "istio-system"],
    );
    assert!(
        mesh["data"]["mesh"]
            .as_str()
            .unwrap_or_default()
            .contains("trustDomain: cluster.local")
    );

    // What meshd reads, reviews and writes...
    for args in [
        &["list", "services", "--all-namespaces"][..],
        &["watch", "endpoints", "--all-namespaces"],
        &[
            "watch",
            "endpointslices.discovery.k8s.io",
            "--all-namespaces",
        ],
        &["watch", "pods", "--all-namespaces"],
        &["watch", "namespaces"],
        &["watch", "nodes"],
        &["get", "secrets", "-n", "shop"],
        &[
            "watch",
            "virtualservices.networking.istio.io",
            "--all-namespaces",
        ],
        &["watch", "sidecars.networking.istio.io", "--all-namespaces"],
        &[
            "list",
            "requestauthentications.security.istio.io",
            "--all-namespaces",
        ],
        &[
            "update",
            "virtualservices.networking.istio.io",
            "--subresource=status",
            "-n",
            "shop",
        ],
        &["create", "tokenreviews.authentication.k8s.io"],
        &["create", "configmaps", "-n", "shop"],
        &["update", "configmaps/istio-ca-root-cert", "-n", "shop"],
        &[
            "patch",
            "mutatingwebhookconfigurations/meshd-sidecar-injector",
        ],
        &["patch", "validatingwebhookconfigurations/meshd-validator"],
        &["update", "leases.coordination.k8s.io", "-n", "istio-system"],
        &[
            "watch",
            "httproutes.gateway.networking.k8s.io",
            "--all-namespaces",
        ],
        &["list", "gatewayclasses.gateway.networking.k8s.io"],
        &[
            "patch",
            "gateways.gateway.networking.k8s.io",
            "--subresource=status",
            "-n",
            "shop",
        ],
        &["create", "gatewayclasses.gateway.networking.k8s.io"],
        &["patch", "deployments.apps", "-n", "shop"],
        &["create", "serviceaccounts", "-n", "shop"],
        &["delete", "services", "-n", "shop"],
    ] {
        assert!(meshd_can(&cluster, args), "meshd may {args:?}");
    }
    // ...and nothing more.
    for args in [
        &["create", "pods", "-n", "shop"][..],
        &["delete", "pods", "-n", "shop"],
        &[
            "update",
            "httproutes.gateway.networking.k8s.io",
            "-n",
            "shop",
        ],
        &["delete", "gatewayclasses.gateway.networking.k8s.io"],
        &["create", "daemonsets.apps", "-n", "shop"],
        &[
            "update",
            "virtualservices.networking.istio.io",
            "-n",
            "shop",
        ],
        &["update", "configmaps/app-config", "-n", "shop"],
        &["delete", "configmaps/istio-ca-root-cert", "-n", "shop"],
        &["create", "secrets", "-n", "shop"],
        &["patch", "mutatingwebhookconfigurations/someone-elses"],
        &["update", "leases.coordination.k8s.io", "-n", "kube-system"],
        // (`serviceaccounts/token` would name a ServiceAccount `token`, which meshd may create.)
        &[
            "create",
            "serviceaccounts",
            "--subresource=token",
            "-n",
            "shop",
        ],
        &["patch", "nodes"],
    ] {
        assert!(!meshd_can(&cluster, args), "meshd may not {args:?}");
    }
}

/// An object's identity in a comparison: kind, namespace, name.
fn object_key(object: &Value) -> String {
    format!(
        "{}/{}/{}",
        object["kind"].as_str().unwrap_or(""),
        object["metadata"]["namespace"].as_str().unwrap_or(""),
        object["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// Objects keyed by identity, with the mesh config (YAML inside a string) parsed so formatting does
/// not matter.
fn comparable(objects: Vec<Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .map(|mut object| {
            if let Some(mesh) = object["data"]["mesh"].as_str() {
                let parsed: Value = serde_saphyr::from_str(mesh).expect("mesh config is YAML");
                object["data"]["mesh"] = parsed;
            }
            (object_key(&object), object)
        })
        .collect()
}

#[test]
fn helm_chart_installs_the_objects_of_install_yaml() {
    let cluster = cluster();
    let chart = repo_file("manifests/helm/meshd").display().to_string();

    let lint = cluster.helm(&["lint", &chart]).expect("helm runs");
    assert!(lint.status.success(), "helm lint: {lint:?}");
    let lint: Value = serde_json::from_slice(&lint.stdout).expect("lint prints JSON");
    assert!(lint["Errors"].is_null(), "helm lint found errors: {lint}");

    let install = cluster
        .helm(&[
            "install",
            "meshd",
            &chart,
            "-n",
            "istio-system",
            "--create-namespace",
        ])
        .expect("helm runs");
    assert!(
        install.status.success(),
        "helm install: {}{}",
        String::from_utf8_lossy(&install.stderr),
        String::from_utf8_lossy(&install.stdout)
    );
    let release: Value = serde_json::from_slice(&install.stdout).expect("install prints JSON");
    let manifest = release["manifest"]
        .as_str()
        .unwrap_or_else(|| panic!("the release carries its manifest: {release}"));

    let rendered = comparable(yaml_documents(manifest));
    let expected = comparable(
        yaml_documents(&read_repo_file("manifests/install.yaml"))
            .into_iter()
            .filter(|object| object["kind"] != "Namespace")
            .collect(),
    );
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (key, object) in &expected {
        assert_eq!(&rendered[key], object, "{key} as the chart renders it");
    }

    // Helm put the CRDs (crds/) and the objects into the API server.
    kubectl(
        &cluster,
        &["get", "crd", "virtualservices.networking.istio.io"],
    );
    let deployment = get_json(
        &cluster,
        &["get", "deployment", "meshd", "-n", "istio-system"],
    );
    assert_eq!(deployment["spec"]["replicas"], 2);
    kubectl(
        &cluster,
        &["get", "validatingwebhookconfiguration", "meshd-validator"],
    );

    // Values reach the objects: replicas, image, resources, mesh config.
    let upgrade = cluster
        .helm(&[
            "upgrade",
            "meshd",
            &chart,
            "-n",
            "istio-system",
            "--set",
            "replicas=3",
            "--set",
            "image.repository=registry.example.com/meshd",
            "--set",
            "image.tag=0.2.0",
            "--set",
            "resources.limits.memory=2Gi",
            "--set",
            "meshConfig.trustDomain=example.org",
            "--set",
            "gateways.ingress.enabled=true",
            "--set",
            "gateways.egress.enabled=true",
        ])
        .expect("helm runs");
    assert!(
        upgrade.status.success(),
        "helm upgrade: {}",
        String::from_utf8_lossy(&upgrade.stderr)
    );
    let deployment = get_json(
        &cluster,
        &["get", "deployment", "meshd", "-n", "istio-system"],
    );
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example.com/meshd:0.2.0");
    assert_eq!(container["resources"]["limits"]["memory"], "2Gi");
    let mesh = get_json(
        &cluster,
        &["get", "configmap", "istio", "-n", "istio-system"],
    );
    let mesh: Value =
        serde_saphyr::from_str(mesh["data"]["mesh"].as_str().unwrap_or_default()).expect("YAML");
    assert_eq!(mesh["trustDomain"], "example.org");
    assert_eq!(mesh["rootNamespace"], "istio-system");

    // Istio's demo-profile gateways: pods shaped as Istio's gateway chart makes them, for the
    // injector to fill in (the webhook tests inject such a pod), and their Services.
    for (name, istio, service_type) in [
        ("istio-ingressgateway", "ingressgateway", "LoadBalancer"),
        ("istio-egressgateway", "egressgateway", "ClusterIP"),
    ] {
        let deployment = get_json(&cluster, &["get", "deployment", name, "-n", "istio-system"]);
        let template = &deployment["spec"]["template"];
        assert_eq!(template["metadata"]["labels"]["istio"], istio);
        assert_eq!(
            template["metadata"]["labels"]["sidecar.istio.io/inject"],
            "true"
        );
        assert_eq!(
            template["metadata"]["annotations"]["inject.istio.io/templates"],
            "gateway"
        );
        let proxy = &template["spec"]["containers"][0];
        assert_eq!(
            (&proxy["name"], &proxy["image"]),
            (&json!("istio-proxy"), &json!("auto"))
        );
        let service = get_json(&cluster, &["get", "service", name, "-n", "istio-system"]);
        assert_eq!(service["spec"]["type"], service_type);
        assert_eq!(service["spec"]["selector"]["istio"], istio);
        let ports: Vec<i64> = service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        assert!(
            ports.contains(&80) && ports.contains(&443) && ports.contains(&15021),
            "{ports:?}"
        );
        get_json(
            &cluster,
            &["get", "serviceaccount", name, "-n", "istio-system"],
        );
    }

    // A canary revision installs beside it: nothing shared, nothing selecting the other's pods.
    let canary = cluster
        .helm(&[
            "install",
            "meshd-canary",
            &chart,
            "-n",
            "istio-system",
            "--set",
            "revision=canary",
        ])
        .expect("helm runs");
    assert!(
        canary.status.success(),
        "helm install of a revision beside the default one: {}{}",
        String::from_utf8_lossy(&canary.stderr),
        String::from_utf8_lossy(&canary.stdout)
    );
    let deployment = get_json(
        &cluster,
        &["get", "deployment", "meshd-canary", "-n", "istio-system"],
    );
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(selector["istio.io/rev"], "canary");
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .contains(&json!("--revision=canary")),
        "{args}"
    );
    let service = get_json(
        &cluster,
        &["get", "service", "istiod-canary", "-n", "istio-system"],
    );
    assert_eq!(service["spec"]["selector"]["istio.io/rev"], "canary");
    let default_service = get_json(
        &cluster,
        &["get", "service", "istiod", "-n", "istio-system"],
    );
    assert_eq!(
        default_service["spec"]["selector"]["istio.io/rev"],
        "default"
    );
    get_json(
        &cluster,
        &["get", "configmap", "istio-canary", "-n", "istio-system"],
    );
    let injector = get_json(
        &cluster,
        &[
            "get",
            "mutatingwebhookconfiguration",
            "meshd-sidecar-injector-canary",
        ],
    );
    let webhooks = injector["webhooks"].as_array().expect("webhooks");
    assert_eq!(
        webhooks[0]["namespaceSelector"]["matchExpressions"],
        json!([
            { "key": "istio.io/rev", "operator": "In", "values": ["canary"] },
            { "key": "istio-injection", "operator": "DoesNotExist" },
        ])
    );
    assert_eq!(
        webhooks[0]["clientConfig"]["service"]["name"],
        "istiod-canary"
    );
    assert_eq!(
        webhooks[1]["objectSelector"]["matchExpressions"][1],
        json!({ "key": "istio.io/rev", "operator": "In", "values": ["canary"] })
    );
}
