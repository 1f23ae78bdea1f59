//! meshd's admission webhooks called by a real kube-apiserver (v1.20.2 on etcd, loopback): sidecar
//! injection on pod creation and validation of Istio objects.
//!
//! meshd runs on loopback ([`HostMeshd`]) with its file source (an empty directory) and a CA
//! directory of its own; the webhook configurations here are test-only ones that reach it at
//! `https://127.0.0.1:PORT` (Endpoints cannot hold loopback addresses, so the Service-based ones of
//! `manifests/` cannot), trusting meshd's root as their `caBundle`. The injector speaks
//! AdmissionReview v1beta1 and the validator v1, so both versions go through the real API server.
//!
//! Needs `make test-deps` (kube-apiserver) and a built meshd (`cargo build -p meshd`, or MESHD_BIN).

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use meshd_tests::kube::KubeCluster;
use meshd_tests::{wait_for, wait_until};
use serde_json::{Value, json};

use crate::support::cli::meshd_command;
use crate::support::host_meshd::HostMeshd;
use crate::support::kube::{apply, apply_repo_files, cluster, get_json, install_crds};

/// How long the API server may take to notice a new webhook configuration.
const CONFIG_PROPAGATION: Duration = Duration::from_secs(30);

/// `kubectl create -f -` (optionally server-side dry-run): the object as stored, or kubectl's error.
fn create(cluster: &KubeCluster, object: &Value, dry_run: bool) -> Result<Value, String> {
    let mut args = vec!["create", "-f", "-", "-o", "json"];
    if dry_run {
        args.push("--dry-run=server");
    }
    let output = cluster
        .kubectl_with_input(&args, Some(&object.to_string()))
        .expect("kubectl runs");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|err| format!("kubectl printed non-JSON: {err}"))
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| item["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn mk_namespace(name: &str, labels: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name, "labels": labels } })
}

/// No controller manager runs, so nobody creates the `default` service account pods need.
fn mk_service_account(namespace: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": { "name": "default", "namespace": namespace },
    })
}

fn mk_pod(namespace: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace, "labels": labels },
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.test/app:1",
                "ports": [{ "name": "http", "containerPort": 8080 }],
                "readinessProbe": { "httpGet": { "path": "/ready", "port": "http" } },
            }],
        },
    })
}

fn mk_injector(meshd: &HostMeshd, ca_bundle: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": "meshd-test-injector" },
        "webhooks": [{
            "name": "namespace.sidecar-injector.meshd.test",
            "clientConfig": { "url": meshd.webhook_url("/inject"), "caBundle": ca_bundle },
            "rules": [{
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
            }],
            "namespaceSelector": { "matchLabels": { "istio-injection": "enabled" } },
            "objectSelector": { "matchExpressions": [{
                "key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"],
            }] },
            "sideEffects": "None",
            "admissionReviewVersions": ["v1beta1"],
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
        }],
    })
}

fn mk_validator(meshd: &HostMeshd, ca_bundle: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": { "name": "meshd-test-validator" },
        "webhooks": [{
            "name": "validation.meshd.test",
            "clientConfig": { "url": meshd.webhook_url("/validate"), "caBundle": ca_bundle },
            "rules": [{
                "operations": ["CREATE", "UPDATE"],
                "apiGroups": ["networking.istio.io", "security.istio.io"],
                "apiVersions": ["*"],
                "resources": ["*"],
            }],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            // Fail, so a webhook that cannot be reached fails the test instead of waving through.
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
        }],
    })
}

fn mk_virtual_service(namespace: &str, name: &str, regex: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "hosts": ["reviews"],
            "http": [{
                "match": [{ "uri": { "regex": regex } }],
                "route": [{ "destination": { "host": "reviews" } }],
            }],
        },
    })
}

/// The cluster with meshd's test-only webhook configurations registered, once the API server
/// calls them (it picks configurations up asynchronously).
fn cluster_with_webhooks(meshd: &HostMeshd) -> KubeCluster {
    let cluster = cluster();
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(meshd.root_pem());
    for object in [
        mk_namespace("meshed", json!({ "istio-injection": "enabled" })),
        mk_namespace("plain", json!({})),
        mk_service_account("meshed"),
        mk_service_account("plain"),
        mk_injector(meshd, &ca_bundle),
        mk_validator(meshd, &ca_bundle),
    ] {
        apply(&cluster, &object.to_string());
    }
    let probe = mk_pod("meshed", "probe", json!({}));
    let injecting = wait_until(CONFIG_PROPAGATION, || {
        create(&cluster, &probe, true)
            .is_ok_and(|pod| names(&pod["spec"]["containers"]).contains(&"istio-proxy".to_owned()))
    });
    assert!(
        injecting,
        "the API server never injected a dry-run pod: {:?}\n{}",
        create(&cluster, &probe, true),
        meshd.log()
    );
    cluster
}

#[test]
fn pods_in_enabled_namespaces_get_the_sidecar_once_and_others_are_untouched() {
    let meshd = HostMeshd::with_config_dir();
    let cluster = cluster_with_webhooks(&meshd);

    let pod = create(
        &cluster,
        &mk_pod("meshed", "web", json!({ "app": "web" })),
        false,
    )
    .unwrap_or_else(|err| panic!("creating the pod: {err}\n{}", meshd.log()));
    assert_eq!(
        names(&pod["spec"]["initContainers"]),
        ["istio-init", "istio-bootstrap"]
    );
    assert_eq!(names(&pod["spec"]["containers"]), ["app", "istio-proxy"]);
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(init["image"], "registry.test/meshd:test");
    assert_eq!(init["args"][0], "iptables");
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(init["securityContext"]["runAsUser"], 0);
    let bootstrap = &pod["spec"]["initContainers"][1];
    assert_eq!(bootstrap["args"][0], "bootstrap");
    let env: Vec<String> = bootstrap["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    for var in [
        "MESHD_POD",
        "MESHD_NAMESPACE",
        "MESHD_IP",
        "MESHD_SERVICE_ACCOUNT",
        "MESHD_LABELS",
        "MESHD_APP_PROBERS",
    ] {
        assert!(env.contains(&var.to_owned()), "{var} in {env:?}");
    }
    let proxy = &pod["spec"]["containers"][1];
    assert_eq!(proxy["image"], "registry.test/envoy:v1.40.0");
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    assert_eq!(proxy["securityContext"]["runAsGroup"], 1337);
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/healthz/ready");
    assert_eq!(proxy["resources"]["requests"]["cpu"], "100m");
    assert_eq!(proxy["resources"]["requests"]["memory"], "128Mi");
    let mounts: Vec<String> = proxy["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap_or_default().to_owned())
        .collect();
    for path in [
        "/etc/istio/proxy",
        "/var/run/secrets/tokens",
        "/var/run/secrets/istio",
    ] {
        assert!(mounts.contains(&path.to_owned()), "{path} in {mounts:?}");
    }
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    let token = volumes
        .iter()
        .find(|v| v["name"] == "istio-token")
        .expect("the token volume");
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "istio-ca"
    );
    assert!(
        volumes
            .iter()
            .any(|v| v["configMap"]["name"] == "istio-ca-root-cert")
    );
    // The app's probe now goes through Envoy.
    assert_eq!(
        pod["spec"]["containers"][0]["readinessProbe"]["httpGet"],
        json!({ "path": "/app-health/app/readyz", "port": 15020, "scheme": "HTTP" })
    );
    assert_eq!(
        pod["metadata"]["labels"]["security.istio.io/tlsMode"],
        "istio"
    );
    assert_eq!(pod["metadata"]["labels"]["app"], "web");
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(
        annotations["kubectl.kubernetes.io/default-container"],
        "app"
    );
    let status: Value = serde_json::from_str(
        annotations["sidecar.istio.io/status"]
            .as_str()
            .expect("status annotation"),
    )
    .expect("status is JSON");
    assert_eq!(status["containers"], json!(["istio-proxy"]));

    // The injected bootstrap container, run as the kubelet would run it, writes a bootstrap
    // stock Envoy accepts, with the app-health listener for the rewritten probe.
    let envoy_config = run_bootstrap_container(&pod, &meshd);
    assert!(
        envoy_config["static_resources"]["listeners"]
            .as_array()
            .expect("listeners")
            .iter()
            .any(|l| l["address"]["socket_address"]["port_value"] == 15020)
    );
    assert_eq!(
        envoy_config["node"]["id"],
        "sidecar~10.44.0.7~web.meshed~meshed.svc.cluster.local"
    );
    assert_eq!(
        envoy_config["node"]["metadata"]["LABELS"]["security.istio.io/tlsMode"],
        "istio"
    );

    // An unlabelled namespace: the API server does not even ask.
    let plain = create(&cluster, &mk_pod("plain", "web", json!({})), false)
        .unwrap_or_else(|err| panic!("creating the plain pod: {err}"));
    assert_eq!(names(&plain["spec"]["containers"]), ["app"]);
    assert!(plain["spec"]["initContainers"].is_null());
    assert!(plain["metadata"]["annotations"]["sidecar.istio.io/status"].is_null());

    // A pod that opts out in an enabled namespace.
    let opted_out = create(
        &cluster,
        &mk_pod(
            "meshed",
            "legacy",
            json!({ "sidecar.istio.io/inject": "false" }),
        ),
        false,
    )
    .unwrap_or_else(|err| panic!("creating the opted-out pod: {err}"));
    assert_eq!(names(&opted_out["spec"]["containers"]), ["app"]);

    // Applying the same pod twice: the second apply is an update, and nothing is added twice.
    // (Without a probe: re-applying would revert the rewritten probe, and pod specs are
    // immutable — with Istio's injector just the same.)
    let mut applied = mk_pod("meshed", "applied", json!({ "app": "applied" }));
    if let Some(app) = applied["spec"]["containers"][0].as_object_mut() {
        app.remove("readinessProbe");
    }
    apply(&cluster, &applied.to_string());
    apply(&cluster, &applied.to_string());
    let live = get_json(&cluster, &["get", "pod", "applied", "-n", "meshed"]);
    assert_eq!(names(&live["spec"]["containers"]), ["app", "istio-proxy"]);
    assert_eq!(
        names(&live["spec"]["initContainers"]),
        ["istio-init", "istio-bootstrap"]
    );

    // An already-injected pod, created again under another name, is not injected a second time.
    let mut again = pod.clone();
    again["metadata"] = json!({
        "name": "web-again",
        "namespace": "meshed",
        "labels": pod["metadata"]["labels"],
        "annotations": pod["metadata"]["annotations"],
    });
    if let Some(spec) = again["spec"].as_object_mut() {
        spec.remove("nodeName");
    }
    again.as_object_mut().expect("object").remove("status");
    let again = create(&cluster, &again, false)
        .unwrap_or_else(|err| panic!("creating the injected pod again: {err}"));
    assert_eq!(names(&again["spec"]["containers"]), ["app", "istio-proxy"]);
    assert_eq!(
        names(&again["spec"]["initContainers"]),
        ["istio-init", "istio-bootstrap"]
    );
    let volume_names = names(&again["spec"]["volumes"]);
    assert_eq!(
        volume_names.iter().filter(|n| *n == "istio-envoy").count(),
        1,
        "{volume_names:?}"
    );
}

#[test]
fn istio_objects_meshd_analyze_rejects_are_refused_with_its_message() {
    let meshd = HostMeshd::with_config_dir();
    let cluster = cluster_with_webhooks(&meshd);
    install_crds(&cluster);

    // The CRDs may take a moment to serve; the valid object then goes through the webhook.
    let valid = mk_virtual_service("meshed", "reviews", "^/api/v[0-9]+/.*");
    let accepted = wait_for(CONFIG_PROPAGATION, || create(&cluster, &valid, false).ok());
    assert!(
        accepted.is_some(),
        "a valid VirtualService was refused: {:?}\n{}",
        create(&cluster, &valid, false),
        meshd.log()
    );

    let invalid = mk_virtual_service("meshed", "bad-regex", "(unclosed");
    let refused = create(&cluster, &invalid, false).expect_err("an invalid regex is refused");
    assert!(
        refused.contains("admission webhook \"validation.meshd.test\" denied the request"),
        "{refused}"
    );
    // The line `meshd analyze` prints for the same object.
    assert!(
        refused.contains(
            "Error [IST0106] (VirtualService meshed/bad-regex) spec.http[0].match[0].uri.regex: invalid regex \"(unclosed\""
        ),
        "{refused}"
    );
    let stored = cluster
        .kubectl(&["get", "virtualservice", "bad-regex", "-n", "meshed"])
        .expect("kubectl runs");
    assert!(!stored.status.success(), "the refused object was stored");

    // Updates are judged too: breaking the valid one is refused, and it stays as it was.
    let mut broken = valid.clone();
    broken["spec"]["http"][0]["match"][0]["uri"]["regex"] = json!("[z-a]");
    let output = cluster
        .kubectl_with_input(&["apply", "-f", "-"], Some(&broken.to_string()))
        .expect("kubectl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the broken update was applied");
    assert!(
        stderr.contains("Error [IST0106] (VirtualService meshed/reviews)"),
        "{stderr}"
    );
    let stored = get_json(
        &cluster,
        &["get", "virtualservice", "reviews", "-n", "meshed"],
    );
    assert_eq!(
        stored["spec"]["http"][0]["match"][0]["uri"]["regex"],
        "^/api/v[0-9]+/.*"
    );
}

/// With the Kubernetes source, the leader fills meshd's trust bundle into the `caBundle` of every
/// webhook of the configurations `manifests/install.yaml` installs (which leave it out).
#[test]
fn the_leader_patches_its_ca_bundle_into_the_installed_webhook_configurations() {
    let cluster = cluster();
    apply_repo_files(&cluster, &["manifests/crds.yaml", "manifests/install.yaml"]);
    let meshd = HostMeshd::with_kubeconfig(&cluster, "meshd");
    let expected = base64::engine::general_purpose::STANDARD.encode(meshd.root_pem());
    let bundles = |kind: &str, name: &str| -> Vec<String> {
        let config: Value = cluster
            .kubectl_ok(&["get", kind, name, "-o", "json"])
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null);
        config["webhooks"]
            .as_array()
            .map(|hooks| {
                hooks
                    .iter()
                    .map(|h| {
                        h["clientConfig"]["caBundle"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let patched = wait_until(CONFIG_PROPAGATION, || {
        let injector = bundles("mutatingwebhookconfiguration", "meshd-sidecar-injector");
        let validator = bundles("validatingwebhookconfiguration", "meshd-validator");
        injector.len() == 2
            && validator.len() == 1
            && injector.iter().chain(&validator).all(|b| *b == expected)
    });
    assert!(
        patched,
        "caBundles not patched: injector {:?}, validator {:?}\n{}",
        bundles("mutatingwebhookconfiguration", "meshd-sidecar-injector"),
        bundles("validatingwebhookconfiguration", "meshd-validator"),
        meshd.log()
    );
    // The rest of each webhook is as installed.
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
        injector["webhooks"][1]["objectSelector"]["matchLabels"]["sidecar.istio.io/inject"],
        "true"
    );
}

/// Runs the pod's `istio-bootstrap` init container with the meshd binary: its args, and its env
/// with the downward-API fields filled in as the kubelet would. The pod's mount points are moved
/// under a scratch directory (holding meshd's root and a token); the bootstrap it writes is
/// checked by `envoy --mode validate` and returned.
fn run_bootstrap_container(pod: &Value, meshd: &HostMeshd) -> Value {
    let container = pod["spec"]["initContainers"]
        .as_array()
        .expect("init containers")
        .iter()
        .find(|c| c["name"] == "istio-bootstrap")
        .expect("the bootstrap container");
    let root = meshd.dir().join("pod-fs");
    let moved = |path: &str| -> String {
        match path.strip_prefix('/') {
            Some(rest) if path.starts_with("/etc/istio/") || path.starts_with("/var/run/") => {
                root.join(rest).display().to_string()
            }
            _ => path.to_owned(),
        }
    };
    for dir in [
        "etc/istio/proxy",
        "var/run/secrets/istio",
        "var/run/secrets/tokens",
    ] {
        std::fs::create_dir_all(root.join(dir)).expect("creating the pod's mount points");
    }
    std::fs::write(
        root.join("var/run/secrets/istio/root-cert.pem"),
        meshd.root_pem(),
    )
    .expect("writing the root");
    std::fs::write(root.join("var/run/secrets/tokens/istio-token"), "token")
        .expect("writing the token");

    let mut command = meshd_command();
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| moved(a.as_str().expect("string args")))
        .collect();
    command.args(&args);
    for var in container["env"].as_array().expect("env") {
        let name = var["name"].as_str().expect("named");
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => pod["metadata"]["name"].as_str().expect("name").to_owned(),
            Some("metadata.namespace") => pod["metadata"]["namespace"]
                .as_str()
                .expect("namespace")
                .to_owned(),
            Some("status.podIP") => "10.44.0.7".to_owned(),
            Some("spec.serviceAccountName") => pod["spec"]["serviceAccountName"]
                .as_str()
                .expect("service account")
                .to_owned(),
            Some(other) => panic!("unexpected downward API field {other}"),
            None => var["value"].as_str().expect("a value").to_owned(),
        };
        command.env(name, value);
    }
    let out = command.output().expect("running meshd bootstrap");
    assert!(
        out.status.success(),
        "meshd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = root.join("etc/istio/proxy/envoy.json");
    let envoy = meshd_tests::deps::envoy_binary().unwrap_or_else(|err| panic!("{err:#}"));
    let validated = Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warning",
            "-c",
        ])
        .arg(&file)
        .output()
        .expect("running envoy");
    assert!(
        validated.status.success(),
        "envoy --mode validate refused the injected bootstrap: {}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
    serde_json::from_slice(&std::fs::read(&file).expect("the bootstrap was written"))
        .expect("the bootstrap is JSON")
}

/// An injector webhook for one revision that calls it for every pod of the test's namespaces: the
/// revision logic under test is meshd's own, not the selectors' (`manifests/` carries Istio's).
fn mk_revision_injector(meshd: &HostMeshd, revision: &str, ca_bundle: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": format!("meshd-test-injector-{revision}") },
        "webhooks": [{
            "name": format!("{revision}.sidecar-injector.meshd.test"),
            "clientConfig": { "url": meshd.webhook_url("/inject"), "caBundle": ca_bundle },
            "rules": [{
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
            }],
            "namespaceSelector": { "matchLabels": { "meshd-test": "revisions" } },
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
        }],
    })
}

/// The revision in a created pod's `sidecar.istio.io/status`, or `None` when it was not injected.
fn injected_by(pod: &Value) -> Option<String> {
    let status = pod["metadata"]["annotations"]["sidecar.istio.io/status"].as_str()?;
    let status: Value = serde_json::from_str(status).ok()?;
    Some(status["revision"].as_str()?.to_owned())
}

/// Names of the objects of `kind` in a meshd's `/debug/configz`.
fn configz_names(meshd: &HostMeshd, kind: &str) -> Vec<String> {
    let Some(configz) = meshd
        .get("/debug/configz")
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
    else {
        return Vec::new();
    };
    configz["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["kind"] == kind)
        .map(|o| {
            format!(
                "{}/{}",
                o["namespace"].as_str().unwrap_or_default(),
                o["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn two_revisions_side_by_side_each_inject_and_read_only_their_own() {
    let cluster = cluster();
    install_crds(&cluster);
    let stable = HostMeshd::with_kubeconfig_and(&cluster, "meshd-stable", &[]);
    let canary =
        HostMeshd::with_kubeconfig_and(&cluster, "meshd-canary", &["--revision", "canary"]);
    let test = json!({ "meshd-test": "revisions" });
    let with = |extra: Value| {
        let mut labels = test.clone();
        labels
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        labels
    };
    for object in [
        mk_namespace("istio-system", json!({})),
        mk_namespace("stable", with(json!({ "istio-injection": "enabled" }))),
        mk_namespace("trial", with(json!({ "istio.io/rev": "canary" }))),
        // istio-injection wins over a revision label, as in Istio.
        mk_namespace(
            "both",
            with(json!({ "istio-injection": "enabled", "istio.io/rev": "canary" })),
        ),
        mk_namespace("loose", test.clone()),
        mk_service_account("stable"),
        mk_service_account("trial"),
        mk_service_account("both"),
        mk_service_account("loose"),
    ] {
        apply(&cluster, &object.to_string());
    }
    // Each revision's mesh config in its own ConfigMap; config labelled for one revision.
    for (name, domain) in [
        ("istio", "stable.example"),
        ("istio-canary", "canary.example"),
    ] {
        let configmap = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": name, "namespace": "istio-system" },
            "data": { "mesh": format!("trustDomain: {domain}\n") },
        });
        apply(&cluster, &configmap.to_string());
    }
    let mut for_canary = mk_virtual_service("trial", "canary-only", "/v2/.*");
    for_canary["metadata"]["labels"] = json!({ "istio.io/rev": "canary" });
    apply(&cluster, &for_canary.to_string());
    apply(
        &cluster,
        &mk_virtual_service("trial", "everyones", "/v1/.*").to_string(),
    );

    // Both have seen the namespaces, their mesh configs and the VirtualServices.
    let mesh_domain = |meshd: &HostMeshd| -> Option<String> {
        let configz: Value = serde_json::from_str(&meshd.get("/debug/configz")?).ok()?;
        Some(configz["mesh"]["trustDomain"].as_str()?.to_owned())
    };
    let synced = wait_until(Duration::from_secs(30), || {
        mesh_domain(&stable).as_deref() == Some("stable.example")
            && mesh_domain(&canary).as_deref() == Some("canary.example")
            && configz_names(&stable, "Namespace").len() >= 5
            && configz_names(&canary, "Namespace").len() >= 5
            && configz_names(&stable, "VirtualService").contains(&"trial/everyones".to_owned())
            && configz_names(&canary, "VirtualService").contains(&"trial/everyones".to_owned())
    });
    assert!(
        synced,
        "meshd never saw the cluster\n{}\n{}",
        stable.log(),
        canary.log()
    );
    assert_eq!(
        configz_names(&stable, "VirtualService"),
        ["trial/everyones"]
    );
    let mut canary_vs = configz_names(&canary, "VirtualService");
    canary_vs.sort();
    assert_eq!(canary_vs, ["trial/canary-only", "trial/everyones"]);

    let ca_bundle =
        base64::engine::general_purpose::STANDARD.encode(stable.root_pem() + &canary.root_pem());
    for (meshd, revision) in [(&stable, "default"), (&canary, "canary")] {
        apply(
            &cluster,
            &mk_revision_injector(meshd, revision, &ca_bundle).to_string(),
        );
    }
    let probe = mk_pod("stable", "probe", json!({}));
    let injecting = wait_until(CONFIG_PROPAGATION, || {
        create(&cluster, &probe, true).is_ok_and(|pod| injected_by(&pod).is_some())
    });
    assert!(
        injecting,
        "the API server never called the injectors\n{}",
        stable.log()
    );

    let cases = [
        ("stable", "a", json!({}), Some("default")),
        ("trial", "b", json!({}), Some("canary")),
        ("both", "c", json!({}), Some("default")),
        (
            "loose",
            "d",
            json!({ "istio.io/rev": "canary" }),
            Some("canary"),
        ),
        (
            "loose",
            "e",
            json!({ "sidecar.istio.io/inject": "true" }),
            Some("default"),
        ),
        ("loose", "f", json!({}), None),
        (
            "trial",
            "g",
            json!({ "sidecar.istio.io/inject": "false" }),
            None,
        ),
    ];
    for (namespace, name, labels, want) in cases {
        let pod = create(&cluster, &mk_pod(namespace, name, labels.clone()), false)
            .unwrap_or_else(|err| panic!("creating {namespace}/{name}: {err}"));
        assert_eq!(
            injected_by(&pod).as_deref(),
            want,
            "{namespace}/{name} with labels {labels}\n--- stable\n{}\n--- canary\n{}",
            stable.log(),
            canary.log()
        );
        let proxies = names(&pod["spec"]["containers"])
            .iter()
            .filter(|c| *c == "istio-proxy")
            .count();
        assert_eq!(proxies, usize::from(want.is_some()), "{namespace}/{name}");
    }
}

#[test]
fn a_pod_of_istios_gateway_chart_is_injected_as_a_router_proxy() {
    let meshd = HostMeshd::with_config_dir();
    let cluster = cluster_with_webhooks(&meshd);
    // The pod template of Istio's `istio/gateway` chart, as its Deployment's ReplicaSet creates it.
    let gateway = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "istio-ingressgateway-0",
            "namespace": "meshed",
            "labels": {
                "app": "istio-ingressgateway",
                "istio": "ingressgateway",
                "sidecar.istio.io/inject": "true",
            },
            "annotations": { "inject.istio.io/templates": "gateway" },
        },
        "spec": {
            "securityContext": {
                "sysctls": [{ "name": "net.ipv4.ip_unprivileged_port_start", "value": "0" }],
            },
            "containers": [{
                "name": "istio-proxy",
                "image": "auto",
                "ports": [{ "name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP" }],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": { "drop": ["ALL"] },
                    "runAsUser": 1337,
                    "runAsGroup": 1337,
                    "runAsNonRoot": true,
                },
            }],
        },
    });
    let pod = create(&cluster, &gateway, false)
        .unwrap_or_else(|err| panic!("creating the gateway pod: {err}\n{}", meshd.log()));
    assert_eq!(names(&pod["spec"]["initContainers"]), ["istio-bootstrap"]);
    assert_eq!(names(&pod["spec"]["containers"]), ["istio-proxy"]);
    let bootstrap = &pod["spec"]["initContainers"][0];
    assert!(
        bootstrap["env"]
            .as_array()
            .expect("env")
            .contains(&json!({ "name": "MESHD_NODE_TYPE", "value": "router" })),
        "{bootstrap}"
    );
    let proxy = &pod["spec"]["containers"][0];
    assert_eq!(proxy["image"], "registry.test/envoy:v1.40.0");
    assert_eq!(proxy["ports"][0]["containerPort"], 15090);
    assert!(
        pod["metadata"]["annotations"]["sidecar.istio.io/status"]
            .as_str()
            .is_some_and(|s| s.contains("gateway")),
        "{}",
        pod["metadata"]
    );
}
