//! meshd against a real kube-apiserver (v1.20.2 on etcd): the Kubernetes source feeding stock
//! Envoy sidecars, root-certificate distribution, service-account token identity, and leader
//! election between two replicas.
//!
//! meshd runs in a mesh's hub, reaching the API server through
//! [`ApiServerBridge`](crate::support::kube::ApiServerBridge); the leader-election replicas run on
//! the host's loopback.
//!
//! Needs `make test-deps` (kube-apiserver) and root (namespaces); without them every test fails
//! saying so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshd_tests::kube::KubeCluster;
use meshd_tests::{Mesh, Meshd, Pod, PodSpec, wait_for, wait_until, yaml};
use serde_json::{Value, json};

use crate::support::cli::{self, analyze, meshd_command, metric};
use crate::support::host_meshd::HostMeshd;
use crate::support::kube::{
    ApiServerBridge, apply, cluster, cluster_with_crds, kubectl, meshd_in_hub,
};
use crate::support::{HOT_RELOAD, write_readable};

/// For what waits on a reconnect backoff (Envoy's, or the watcher's after an outage).
const RECOVERED: Duration = Duration::from_secs(60);

fn config_dump(pod: &Pod) -> String {
    pod.envoy_admin("/config_dump?include_eds")
        .unwrap_or_default()
}

/// Waits for `check` on the pod's Envoy config; panics with what it saw after `timeout`.
fn wait_for_config(
    pod: &Pod,
    meshd: &Meshd,
    what: &str,
    timeout: Duration,
    check: impl Fn(&str) -> bool,
) {
    let started = Instant::now();
    let mut last = String::new();
    let ok = wait_until(timeout, || {
        last = config_dump(pod);
        check(&last)
    });
    assert!(
        ok,
        "{what}: not in the proxy's config after {timeout:?}\n--- meshd ---\n{}",
        meshd.log()
    );
    eprintln!("{what}: reflected after {:?}", started.elapsed());
}

/// Names of the clusters Envoy holds (routes may name clusters that do not exist).
fn clusters(dump: &str) -> Vec<String> {
    let dump: Value = serde_json::from_str(dump).unwrap_or_default();
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c["dynamic_active_clusters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c["cluster"]["name"].as_str().map(str::to_owned))
        .collect()
}

fn has_cluster(dump: &str, name: &str) -> bool {
    clusters(dump).iter().any(|c| c == name)
}

const WEB_CLUSTER: &str = "outbound|80||web.apps.svc.cluster.local";
const WEB_CLUSTER_81: &str = "outbound|81||web.apps.svc.cluster.local";

fn web_virtual_service(timeout: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: apps}}
spec:
  hosts: [web.apps.svc.cluster.local]
  http:
  - timeout: {timeout}
    route:
    - destination: {{host: web.apps.svc.cluster.local}}
"
    )
}

#[test]
fn cluster_changes_reach_a_connected_proxy_and_survive_api_server_and_etcd_restarts() {
    let mut cluster = cluster_with_crds();
    let mesh = Mesh::new().unwrap_or_else(|err| panic!("{err:#}"));
    let _bridge = ApiServerBridge::start(&cluster, &mesh);
    apply(&cluster, &yaml::namespace("apps", &[]));
    let meshd = meshd_in_hub(&mesh, &cluster);
    let client = mesh
        .add_pod(PodSpec::new("client", "apps").sidecar())
        .unwrap_or_else(|err| panic!("{err:#}"));

    // A Service and its Endpoints appear…
    apply(
        &cluster,
        &yaml::documents(&[
            yaml::service(
                "web",
                "apps",
                "10.96.0.20",
                &[("http", 80, 8080)],
                &[("app", "web")],
            ),
            yaml::endpoints("web", "apps", &[("10.77.9.9", "web-0")], &[("http", 8080)]),
        ]),
    );
    wait_for_config(
        &client,
        &meshd,
        "new Service and Endpoints",
        HOT_RELOAD,
        |d| has_cluster(d, WEB_CLUSTER) && d.contains("10.77.9.9"),
    );
    // …change…
    apply(
        &cluster,
        &yaml::documents(&[
            yaml::service(
                "web",
                "apps",
                "10.96.0.20",
                &[("http", 80, 8080), ("http-alt", 81, 8081)],
                &[("app", "web")],
            ),
            yaml::endpoints(
                "web",
                "apps",
                &[("10.77.9.10", "web-1")],
                &[("http", 8080), ("http-alt", 8081)],
            ),
        ]),
    );
    wait_for_config(
        &client,
        &meshd,
        "changed Service and Endpoints",
        HOT_RELOAD,
        |d| has_cluster(d, WEB_CLUSTER_81) && d.contains("10.77.9.10") && !d.contains("10.77.9.9"),
    );
    // …and a VirtualService comes, changes and goes.
    apply(&cluster, &web_virtual_service("7s"));
    wait_for_config(&client, &meshd, "new VirtualService", HOT_RELOAD, |d| {
        d.contains("\"timeout\": \"7s\"")
    });
    apply(&cluster, &web_virtual_service("9s"));
    wait_for_config(&client, &meshd, "changed VirtualService", HOT_RELOAD, |d| {
        d.contains("\"timeout\": \"9s\"") && !d.contains("\"timeout\": \"7s\"")
    });
    kubectl(&cluster, &["delete", "virtualservice", "web", "-n", "apps"]);
    wait_for_config(&client, &meshd, "deleted VirtualService", HOT_RELOAD, |d| {
        !d.contains("\"timeout\": \"9s\"")
    });

    // A malformed VirtualService (the CRD's schema lets any spec through) is skipped and
    // reported; everything else keeps flowing.
    let broken = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: apps}
spec:
  hosts: web.apps.svc.cluster.local
  http: 7
";
    let output = cluster
        .kubectl_with_input(&["apply", "--validate=false", "-f", "-"], Some(broken))
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    apply(&cluster, &web_virtual_service("5s"));
    wait_for_config(
        &client,
        &meshd,
        "VirtualService next to a broken one",
        HOT_RELOAD,
        |d| d.contains("\"timeout\": \"5s\""),
    );
    let configz = cli::debug_json(&mesh, "/debug/configz").unwrap();
    let errors = configz["errors"].to_string();
    assert!(
        errors.contains("kube:VirtualService/apps/broken"),
        "the broken VirtualService is not reported: {errors}"
    );
    assert!(meshd.log().contains("invalid object skipped"));
    // `meshd analyze --kubeconfig` finds it too, naming it.
    let analyze = analyze(&[
        "--kubeconfig".as_ref(),
        cluster.kubeconfig_path().as_os_str(),
    ])
    .unwrap();
    let printed = String::from_utf8_lossy(&analyze.stdout);
    assert_eq!(analyze.status.code(), Some(1), "{printed}");
    assert!(printed.contains("VirtualService apps/broken"), "{printed}");

    // Secrets: only those a Gateway references are read.
    apply(
        &cluster,
        "apiVersion: v1
kind: Secret
metadata: {name: web-cert, namespace: apps}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==, tls.key: a2V5}
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated, namespace: apps}
data: {password: aHVudGVyMg==}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: apps}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [web.example.com]
    tls: {mode: SIMPLE, credentialName: web-cert}
",
    );
    let secrets = || -> Vec<String> {
        let configz = cli::debug_json(&mesh, "/debug/configz").unwrap();
        configz["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["kind"] == "Secret")
            .map(|o| {
                format!(
                    "{}/{}",
                    o["namespace"].as_str().unwrap(),
                    o["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(10), || secrets() == ["apps/web-cert"]),
        "secrets read: {:?}",
        secrets()
    );

    // The API server goes away: meshd keeps serving what it had.
    cluster.stop_apiserver();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        mesh.hub_curl("http://10.77.0.1:15014/ready", &[]).status,
        200
    );
    let dump = config_dump(&client);
    assert!(has_cluster(&dump, WEB_CLUSTER) && dump.contains("\"timeout\": \"5s\""));
    cluster
        .restart_apiserver()
        .unwrap_or_else(|err| panic!("{err:#}"));
    apply(&cluster, &web_virtual_service("11s"));
    wait_for_config(
        &client,
        &meshd,
        "change after an API server restart",
        RECOVERED,
        |d| d.contains("\"timeout\": \"11s\"") && has_cluster(d, WEB_CLUSTER_81),
    );
    // etcd goes away and comes back: the same.
    cluster
        .restart_etcd()
        .unwrap_or_else(|err| panic!("{err:#}"));
    apply(&cluster, &web_virtual_service("13s"));
    wait_for_config(
        &client,
        &meshd,
        "change after an etcd restart",
        RECOVERED,
        |d| {
            d.contains("\"timeout\": \"13s\"")
                && has_cluster(d, WEB_CLUSTER_81)
                && d.contains("10.77.9.10")
        },
    );
    // And deletions still arrive.
    kubectl(&cluster, &["delete", "service", "web", "-n", "apps"]);
    wait_for_config(&client, &meshd, "deleted Service", HOT_RELOAD, |d| {
        !has_cluster(d, WEB_CLUSTER)
    });
}

const SLEEP_IP: &str = "10.77.1.10";
const IMPOSTOR_IP: &str = "10.77.1.11";

/// A ServiceAccount, a Pod running as it (its IP set as a kubelet would) and a Service selecting
/// it, so its sidecar gets an inbound mTLS listener and asks for its certificate.
fn workload(cluster: &KubeCluster, name: &str, service_account: &str, ip: &str, vip: &str) {
    apply(
        cluster,
        &yaml::documents(&[
            format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {service_account}, namespace: apps}}\n"
            ),
            yaml::pod(name, "apps", ip, &[("app", name)], service_account),
            yaml::service(name, "apps", vip, &[("http", 8080, 8080)], &[("app", name)]),
            yaml::endpoints(name, "apps", &[(ip, name)], &[("http", 8080)]),
        ]),
    );
    cluster
        .set_pod_ip("apps", name, ip)
        .unwrap_or_else(|err| panic!("{err:#}"));
}

/// A token for `service_account`, audience istio-ca, bound to pod `pod` (as kubelet projects it).
fn pod_bound_token(cluster: &KubeCluster, service_account: &str, pod: &str) -> String {
    let uid = cluster
        .get_raw(&format!("/api/v1/namespaces/apps/pods/{pod}"))
        .unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = cluster
        .post_raw(
            &format!("/api/v1/namespaces/apps/serviceaccounts/{service_account}/token"),
            &json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": ["istio-ca"],
                    "expirationSeconds": 3600,
                    "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid},
                },
            }),
        )
        .unwrap();
    answer["status"]["token"].as_str().unwrap().to_owned()
}

/// The bootstrap an injected pod gets: TLS to meshd, the root from `istio-ca-root-cert`, and the
/// service-account token file.
fn token_bootstrap(pod: &Pod, service_account: &str, root_cert: &Path, token: &Path) -> PathBuf {
    let path = pod.dir().join("envoy-bootstrap.json");
    let output = meshd_command()
        .arg("bootstrap")
        .args(["--pod", pod.name(), "--namespace", pod.namespace()])
        .args(["--ip", &pod.ip().to_string()])
        .args(["--labels", &format!("app={}", pod.name())])
        .args(["--service-account", service_account])
        .args(["--xds-addr", "10.77.0.1:15012"])
        .arg("--root-cert")
        .arg(root_cert)
        .arg("--token-file")
        .arg(token)
        .arg("-o")
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    write_readable(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    path
}

fn spiffe_ids(pod: &Pod) -> String {
    pod.envoy_admin("/certs").unwrap_or_default()
}

/// `IstioCertificateService/CreateCertificate` as an Istio agent calls it — gRPC over TLS with
/// `authorization: Bearer <token>` — sent with curl from the hub; the certificate chain it
/// answered with (PEM text stays readable in the protobuf), or `Err(grpc-status)`.
fn create_certificate(mesh: &Mesh, root_cert: &Path, token: &str) -> Result<String, String> {
    use prost::Message as _;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let request = meshd_proto::istio_ca::IstioCertificateRequest {
        csr,
        validity_duration: 3600,
        metadata: None,
    }
    .encode_to_vec();
    // gRPC framing: uncompressed, length, message.
    let mut framed = vec![0u8];
    framed.extend((request.len() as u32).to_be_bytes());
    framed.extend(request);
    let body = mesh.dir().join(format!("csr-{}.bin", token.len()));
    std::fs::write(&body, framed).unwrap();
    let result = mesh.hub_curl(
        "https://istiod.istio-system.svc:15012/istio.v1.auth.IstioCertificateService/CreateCertificate",
        &[
            "--http2",
            "--cacert",
            &root_cert.display().to_string(),
            "--resolve",
            "istiod.istio-system.svc:15012:10.77.0.1",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-H",
            &format!("authorization: Bearer {token}"),
            "--data-binary",
            &format!("@{}", body.display()),
        ],
    );
    if result.body.contains("BEGIN CERTIFICATE") {
        Ok(result.body)
    } else {
        Err(format!(
            "grpc-status {:?} ({:?}): {result:?}",
            result.header("grpc-status"),
            result.header("grpc-message")
        ))
    }
}

#[test]
fn sidecars_prove_identity_with_service_account_tokens_and_get_the_root_from_a_configmap() {
    let cluster = cluster_with_crds();
    let mesh = Mesh::new().unwrap_or_else(|err| panic!("{err:#}"));
    let _bridge = ApiServerBridge::start(&cluster, &mesh);
    apply(&cluster, &yaml::namespace("istio-system", &[]));
    let mut meshd = meshd_in_hub(&mesh, &cluster);

    // The root certificate reaches a namespace created after meshd started.
    apply(&cluster, &yaml::namespace("apps", &[]));
    let root = std::fs::read_to_string(mesh.ca_dir().join("root-cert.pem")).unwrap();
    let distributed = wait_for(Duration::from_secs(10), || {
        let out = cluster
            .kubectl_ok(&[
                "get",
                "configmap",
                "istio-ca-root-cert",
                "-n",
                "apps",
                "-o",
                "json",
            ])
            .ok()?;
        let cm: Value = serde_json::from_str(&out).ok()?;
        cm["data"]["root-cert.pem"].as_str().map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no istio-ca-root-cert in apps\n{}", meshd.log()));
    assert_eq!(distributed, root);
    let dumped = kubectl(
        &cluster,
        &[
            "get",
            "configmap",
            "istio-ca-root-cert",
            "-n",
            "istio-system",
        ],
    );
    assert!(dumped.contains("istio-ca-root-cert"));

    workload(&cluster, "sleep", "sleep", SLEEP_IP, "10.96.0.30");
    workload(&cluster, "impostor", "other", IMPOSTOR_IP, "10.96.0.31");

    // The sleep pod's sidecar, with a token kubelet would project for it.
    let sleep = mesh
        .add_pod(
            PodSpec::new("sleep", "apps")
                .ip(SLEEP_IP.parse().unwrap())
                .label("app", "sleep"),
        )
        .unwrap();
    sleep.install_iptables(&[]).unwrap();
    let root_file = sleep.dir().join("root-cert.pem");
    write_readable(&root_file, &distributed).unwrap();
    let token_file = sleep.dir().join("istio-token");
    write_readable(&token_file, &pod_bound_token(&cluster, "sleep", "sleep")).unwrap();
    let bootstrap = token_bootstrap(&sleep, "sleep", &root_file, &token_file);
    sleep
        .start_envoy(&bootstrap)
        .unwrap_or_else(|err| panic!("{err:#}\n{}", meshd.log()));
    assert!(
        wait_until(RECOVERED, || spiffe_ids(&sleep)
            .contains("spiffe://cluster.local/ns/apps/sa/sleep")),
        "no certificate for the proven identity\n--- envoy ---\n{}\n--- meshd ---\n{}",
        sleep.envoy_log(),
        meshd.log()
    );
    assert!(has_cluster(
        &config_dump(&sleep),
        "outbound|8080||impostor.apps.svc.cluster.local"
    ));

    // A pod running as another service account, presenting sleep's token, is refused.
    let impostor = mesh
        .add_pod(PodSpec::new("impostor", "apps").ip(IMPOSTOR_IP.parse().unwrap()))
        .unwrap();
    let stolen = impostor.dir().join("istio-token");
    write_readable(
        &stolen,
        &cluster
            .service_account_token("apps", "sleep", &["istio-ca"])
            .unwrap(),
    )
    .unwrap();
    let impostor_root = impostor.dir().join("root-cert.pem");
    write_readable(&impostor_root, &distributed).unwrap();
    let impostor_bootstrap = token_bootstrap(&impostor, "sleep", &impostor_root, &stolen);
    let rejections = metric(&mesh, "meshd_xds_identity_rejections");
    let envoy = meshd_tests::deps::tools()
        .unwrap()
        .envoy
        .display()
        .to_string();
    impostor
        .spawn(&[
            "setpriv",
            "--reuid",
            "1337",
            "--regid",
            "1337",
            "--clear-groups",
            "--",
            &envoy,
            "-c",
            &impostor_bootstrap.display().to_string(),
            "--disable-hot-restart",
            "--concurrency",
            "1",
        ])
        .unwrap();
    assert!(
        wait_until(RECOVERED, || {
            meshd.log().contains(
            "pod impostor.apps runs as service account other, the token is system:serviceaccount:apps:sleep's"
        )
        }),
        "the impostor was not refused\n{}",
        meshd.log()
    );
    assert!(metric(&mesh, "meshd_xds_identity_rejections") > rejections);
    assert!(
        !spiffe_ids(&impostor).contains("spiffe://"),
        "the impostor got a certificate"
    );

    // The CA authenticates callers the same way: a token gets a certificate for its own
    // service account, an unknown token gets nothing.
    let chain = create_certificate(
        &mesh,
        &root_file,
        &cluster
            .service_account_token("apps", "sleep", &["istio-ca"])
            .unwrap(),
    )
    .unwrap_or_else(|e| {
        panic!(
            "CreateCertificate refused a valid token: {e}\n{}",
            meshd.log()
        )
    });
    // The leaf (first in the chain) names the token's service account.
    let begin = chain.find("-----BEGIN CERTIFICATE-----").unwrap();
    let end = chain[begin..].find("-----END CERTIFICATE-----").unwrap() + begin + 25;
    let leaf = meshd_ca::describe_pem(&chain[begin..end]).unwrap();
    assert_eq!(
        leaf[0].uri_sans,
        vec!["spiffe://cluster.local/ns/apps/sa/sleep".to_string()]
    );
    let refused = create_certificate(&mesh, &root_file, "not-a-token").unwrap_err();
    assert!(refused.contains("Some(\"16\")"), "{refused}");
    // A token for another audience proves nothing here.
    let vault_token = cluster
        .service_account_token("apps", "sleep", &["vault"])
        .unwrap();
    assert!(create_certificate(&mesh, &root_file, &vault_token).is_err());

    // The token file is read again whenever Envoy reconnects: an unusable token is refused
    // after a reconnect, a fresh one is accepted.
    write_readable(&token_file, "not-a-token").unwrap();
    let before = meshd.log().len();
    meshd.restart().unwrap_or_else(|err| panic!("{err:#}"));
    let logged_since = |needles: &[&str]| {
        meshd.log()[before..]
            .lines()
            .any(|line| needles.iter().all(|n| line.contains(n)))
    };
    assert!(
        wait_until(RECOVERED, || logged_since(&[
            "sidecar~10.77.1.10~sleep.apps",
            "token rejected"
        ])),
        "the reconnecting proxy did not present the rewritten token\n{}",
        &meshd.log()[before..]
    );
    write_readable(&token_file, &pod_bound_token(&cluster, "sleep", "sleep")).unwrap();
    assert!(
        wait_until(RECOVERED, || logged_since(&[
            "proxy connected",
            "sidecar~10.77.1.10~sleep.apps",
            "spiffe://cluster.local/ns/apps/sa/sleep"
        ])),
        "the proxy did not come back with a fresh token\n{}",
        &meshd.log()[before..]
    );
}

fn lease_holder(cluster: &KubeCluster) -> String {
    let lease: Value = serde_json::from_str(&kubectl(
        cluster,
        &[
            "get",
            "lease",
            "meshd-leader",
            "-n",
            "istio-system",
            "-o",
            "json",
        ],
    ))
    .unwrap();
    lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Exactly one of the replicas says it leads, and it is the one the Lease names.
fn one_leader(replicas: &[&HostMeshd], cluster: &KubeCluster) -> Option<usize> {
    let states: Vec<Option<bool>> = replicas.iter().map(|m| m.is_leader()).collect();
    if states.iter().any(Option::is_none) {
        return None;
    }
    let leaders: Vec<usize> = (0..replicas.len())
        .filter(|i| states[*i] == Some(true))
        .collect();
    let [leader] = leaders[..] else { return None };
    let names = ["meshd-a", "meshd-b"];
    lease_holder(cluster)
        .starts_with(names[leader])
        .then_some(leader)
}

#[test]
fn exactly_one_of_two_replicas_leads_and_the_other_takes_over_when_it_stops() {
    let cluster = cluster();
    apply(&cluster, &yaml::namespace("istio-system", &[]));
    let mut a = HostMeshd::with_kubeconfig(&cluster, "meshd-a");
    let mut b = HostMeshd::with_kubeconfig(&cluster, "meshd-b");
    let first = wait_for(Duration::from_secs(20), || one_leader(&[&a, &b], &cluster))
        .unwrap_or_else(|| {
            panic!(
                "no single leader\n--- a ---\n{}\n--- b ---\n{}",
                a.log(),
                b.log()
            )
        });
    // It stays that way while both run.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(one_leader(&[&a, &b], &cluster), Some(first));

    // A graceful stop releases the lease: the other replica takes over within a renew period.
    let started = Instant::now();
    if first == 0 {
        a.terminate();
    } else {
        b.terminate();
    }
    let survivor = if first == 0 { &b } else { &a };
    assert!(
        wait_until(Duration::from_secs(10), || survivor.is_leader()
            == Some(true)),
        "the other replica did not take over\n{}",
        survivor.log()
    );
    eprintln!("takeover after a graceful stop: {:?}", started.elapsed());
    assert!(lease_holder(&cluster).starts_with(if first == 0 { "meshd-b" } else { "meshd-a" }));
    // Both replicas served xDS all along; the survivor still does.
    assert!(survivor.get("/ready").is_some());

    // The stopped replica comes back as a follower; then the leader dies without a word
    // (SIGKILL): its lease expires (15 s) and the follower takes over.
    let (name, survivor_index) = if first == 0 {
        ("meshd-a", 1)
    } else {
        ("meshd-b", 0)
    };
    let back = HostMeshd::with_kubeconfig(&cluster, name);
    let (a, b) = if first == 0 { (&back, &b) } else { (&a, &back) };
    assert_eq!(
        wait_for(Duration::from_secs(10), || one_leader(&[a, b], &cluster)),
        Some(survivor_index)
    );
    let started = Instant::now();
    let (dying, heir) = if survivor_index == 0 { (a, b) } else { (b, a) };
    dying.signal("KILL");
    assert!(
        wait_until(Duration::from_secs(30), || heir.is_leader() == Some(true)),
        "no takeover after the leader was killed\n{}",
        heir.log()
    );
    let waited = started.elapsed();
    eprintln!("takeover after SIGKILL: {waited:?}");
    assert!(
        waited >= Duration::from_secs(10),
        "took over a lease that had not expired: {waited:?}"
    );
}

/// The locality of `host`'s endpoints as meshd's registry holds them.
fn endpoint_localities(meshd: &HostMeshd, host: &str) -> Vec<String> {
    let registry: Value = meshd
        .get("/debug/registryz")
        .and_then(|body| serde_json::from_str(&body).ok())
        .unwrap_or_default();
    registry["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|svc| svc["hostname"] == host)
        .flat_map(|svc| svc["ports"].as_array().cloned().unwrap_or_default())
        .flat_map(|port| port["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| e["locality"].as_str().unwrap_or("none").to_owned())
        .collect()
}

#[test]
fn pods_are_placed_by_their_nodes_topology_labels_and_follow_a_relabelled_node() {
    let cluster = cluster();
    kubectl(&cluster, &["create", "namespace", "apps"]);
    kubectl(
        &cluster,
        &["create", "serviceaccount", "default", "-n", "apps"],
    );
    apply(
        &cluster,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: worker-1\n  labels:\n    topology.kubernetes.io/region: eu-west\n    topology.kubernetes.io/zone: eu-west-1a\n",
    );
    let pod = yaml::pod(
        "ratings-1",
        "apps",
        "10.30.0.5",
        &[("app", "ratings")],
        "default",
    )
    .replacen("\nspec:\n", "\nspec:\n  nodeName: worker-1\n", 1);
    apply(
        &cluster,
        &yaml::documents(&[
            pod,
            yaml::service(
                "ratings",
                "apps",
                "10.96.30.1",
                &[("http", 8080, 8080)],
                &[("app", "ratings")],
            ),
            yaml::endpoints(
                "ratings",
                "apps",
                &[("10.30.0.5", "ratings-1")],
                &[("http", 8080)],
            ),
        ]),
    );
    cluster
        .set_pod_ip("apps", "ratings-1", "10.30.0.5")
        .unwrap_or_else(|err| panic!("{err:#}"));
    let meshd = HostMeshd::with_kubeconfig(&cluster, "meshd-locality");
    let host = "ratings.apps.svc.cluster.local";
    let placed = wait_until(Duration::from_secs(10), || {
        endpoint_localities(&meshd, host) == ["eu-west/eu-west-1a/"]
    });
    assert!(
        placed,
        "{:?}\n{}",
        endpoint_localities(&meshd, host),
        meshd.log()
    );

    // The Node moves (relabelled): its pods' endpoints move with it.
    kubectl(
        &cluster,
        &[
            "label",
            "node",
            "worker-1",
            "--overwrite",
            "topology.kubernetes.io/zone=eu-west-1c",
        ],
    );
    let moved = wait_until(HOT_RELOAD * 5, || {
        endpoint_localities(&meshd, host) == ["eu-west/eu-west-1c/"]
    });
    assert!(
        moved,
        "{:?}\n{}",
        endpoint_localities(&meshd, host),
        meshd.log()
    );
}
