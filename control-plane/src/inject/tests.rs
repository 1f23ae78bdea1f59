use super::*;

fn testdata(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/inject/testdata")
        .join(name)
}

fn read_json(name: &str) -> Value {
    let text =
        std::fs::read_to_string(testdata(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {name}: {e}"))
}

/// Compares with a golden file; `UPDATE_GOLDEN=1` rewrites it.
fn check_golden(name: &str, actual: &Value) {
    let path = testdata(name);
    let text = format!("{}\n", serde_json::to_string_pretty(actual).unwrap());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {name}: {e} (UPDATE_GOLDEN=1 writes it)"));
    assert!(
        expected == text,
        "{name} differs (UPDATE_GOLDEN=1 rewrites it):\n--- actual\n{text}"
    );
}

fn mk_pod(extra_meta: Value, spec: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "web-0", "namespace": "shop" },
        "spec": spec,
    });
    if let (Some(meta), Some(extra)) = (pod["metadata"].as_object_mut(), extra_meta.as_object()) {
        for (k, v) in extra {
            meta.insert(k.clone(), v.clone());
        }
    }
    pod
}

fn mk_spec() -> Value {
    json!({ "containers": [{ "name": "web", "image": "nginx" }] })
}

fn enabled() -> BTreeMap<String, String> {
    BTreeMap::from([(NAMESPACE_LABEL.to_owned(), "enabled".to_owned())])
}

fn injected(pod: &Value) -> Value {
    let patch = inject(pod, "shop", Some(&enabled()), &InjectConfig::default())
        .unwrap()
        .expect("injected");
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

#[test]
fn golden_pod_with_probes_and_annotations_gets_the_expected_patch() {
    let pod = read_json("pod.json");
    let patch = inject(&pod, "shop", Some(&enabled()), &InjectConfig::default())
        .unwrap()
        .expect("injected");
    check_golden("pod.patch.json", &json!(patch));
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    check_golden("pod.injected.json", &out);
}

#[test]
fn golden_bare_pod_gets_the_expected_patch() {
    let pod = read_json("bare-pod.json");
    let patch = inject(&pod, "default", None, &InjectConfig::default())
        .unwrap()
        .expect("injected");
    check_golden("bare-pod.patch.json", &json!(patch));
}

#[test]
fn injected_pod_is_not_injected_again() {
    let once = injected(&mk_pod(json!({}), mk_spec()));
    assert_eq!(
        skip_reason(&once, "shop", Some(&enabled()), &Revision::default()),
        Some(Skip::AlreadyInjected)
    );
    assert_eq!(
        inject(&once, "shop", Some(&enabled()), &InjectConfig::default()),
        Ok(None)
    );
    // A pod that brings its own istio-proxy is left alone too.
    let manual = mk_pod(
        json!({}),
        json!({ "containers": [{ "name": "web" }, { "name": "istio-proxy" }] }),
    );
    assert_eq!(
        skip_reason(&manual, "shop", None, &Revision::default()),
        Some(Skip::AlreadyInjected)
    );
}

#[test]
fn namespace_label_and_pod_opt_in_and_out_decide() {
    let plain = mk_pod(json!({}), mk_spec());
    let opt_out = mk_pod(json!({ "labels": { INJECT_KEY: "false" } }), mk_spec());
    let opt_out_annotation = mk_pod(json!({ "annotations": { INJECT_KEY: "false" } }), mk_spec());
    let opt_in = mk_pod(json!({ "labels": { INJECT_KEY: "true" } }), mk_spec());
    let none = BTreeMap::new();
    let disabled = BTreeMap::from([(NAMESPACE_LABEL.to_owned(), "disabled".to_owned())]);
    let revision = BTreeMap::from([(REVISION_LABEL.to_owned(), "canary".to_owned())]);

    assert_eq!(
        skip_reason(&plain, "shop", Some(&enabled()), &Revision::default()),
        None
    );
    assert_eq!(
        skip_reason(&opt_out, "shop", Some(&enabled()), &Revision::default()),
        Some(Skip::OptedOut)
    );
    assert_eq!(
        skip_reason(
            &opt_out_annotation,
            "shop",
            Some(&enabled()),
            &Revision::default()
        ),
        Some(Skip::OptedOut)
    );
    assert_eq!(
        skip_reason(&plain, "shop", Some(&none), &Revision::default()),
        Some(Skip::NamespaceNotEnabled)
    );
    assert_eq!(
        skip_reason(&opt_in, "shop", Some(&none), &Revision::default()),
        None
    );
    assert_eq!(
        skip_reason(&opt_in, "shop", Some(&disabled), &Revision::default()),
        Some(Skip::NamespaceNotEnabled)
    );
    // A namespace of another revision is that revision's; the named revision injects it.
    let canary = Revision::new(Some("canary"));
    assert_eq!(
        skip_reason(&plain, "shop", Some(&revision), &Revision::default()),
        Some(Skip::OtherRevision)
    );
    assert_eq!(skip_reason(&plain, "shop", Some(&revision), &canary), None);
    assert_eq!(
        skip_reason(&plain, "shop", Some(&enabled()), &canary),
        Some(Skip::OtherRevision)
    );
    // In a namespace meshd does not know, the pod's own revision label still counts.
    let canary_pod = mk_pod(json!({ "labels": { REVISION_LABEL: "canary" } }), mk_spec());
    assert_eq!(
        skip_reason(&canary_pod, "shop", None, &Revision::default()),
        Some(Skip::OtherRevision)
    );
    assert_eq!(skip_reason(&canary_pod, "shop", None, &canary), None);
    assert_eq!(skip_reason(&canary_pod, "shop", Some(&none), &canary), None);
    // Unknown namespace: the webhook configuration's selectors already chose.
    assert_eq!(
        skip_reason(&plain, "shop", None, &Revision::default()),
        None
    );
    assert_eq!(
        skip_reason(&opt_out, "shop", None, &Revision::default()),
        Some(Skip::OptedOut)
    );
    assert_eq!(
        skip_reason(
            &plain,
            "kube-system",
            Some(&enabled()),
            &Revision::default()
        ),
        Some(Skip::IgnoredNamespace)
    );
    let host = mk_pod(
        json!({}),
        json!({ "hostNetwork": true, "containers": [{ "name": "web" }] }),
    );
    assert_eq!(
        skip_reason(&host, "shop", Some(&enabled()), &Revision::default()),
        Some(Skip::HostNetwork)
    );
}

#[test]
fn traffic_annotations_become_iptables_flags() {
    let pod = mk_pod(
        json!({ "annotations": {
            INCLUDE_OUTBOUND_RANGES: "10.0.0.0/8, 172.16.0.0/12,fd00::/8",
            EXCLUDE_OUTBOUND_RANGES: "169.254.169.254/32",
            EXCLUDE_OUTBOUND_PORTS: "5432,6379",
            EXCLUDE_INBOUND_PORTS: "9090,15020",
        } }),
        mk_spec(),
    );
    let out = injected(&pod);
    let args: Vec<&str> = out["spec"]["initContainers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "iptables",
            "--proxy-uid",
            "1337",
            "--proxy-gid",
            "1337",
            "--inbound-port",
            "15006",
            "--outbound-port",
            "15001",
            "--exclude-inbound-ports",
            "15000,15020,15021,15090,9090",
            "--include-outbound-cidrs",
            "10.0.0.0/8,172.16.0.0/12",
            "--exclude-outbound-cidrs",
            "169.254.169.254/32",
            "--exclude-outbound-ports",
            "5432,6379",
        ]
    );
    let all = mk_pod(
        json!({ "annotations": { INCLUDE_OUTBOUND_RANGES: "*" } }),
        mk_spec(),
    );
    let args = injected(&all)["spec"]["initContainers"][0]["args"].clone();
    assert!(args.as_array().unwrap().contains(&json!("*")));
}

#[test]
fn bad_annotations_refuse_the_pod_naming_the_annotation() {
    for (annotation, value) in [
        (EXCLUDE_OUTBOUND_PORTS, "5432,x"),
        (EXCLUDE_INBOUND_PORTS, "70000"),
        (INCLUDE_OUTBOUND_RANGES, "10.0.0.0/40"),
        (EXCLUDE_OUTBOUND_RANGES, "not-a-cidr"),
        (PROXY_CPU, "lots"),
        (PROXY_MEMORY_LIMIT, "1.2.3Gi"),
    ] {
        let pod = mk_pod(json!({ "annotations": { annotation: value } }), mk_spec());
        let err =
            inject(&pod, "shop", Some(&enabled()), &InjectConfig::default()).expect_err(annotation);
        assert!(err.to_string().contains(annotation), "{annotation}: {err}");
    }
}

#[test]
fn proxy_resources_come_from_annotations_with_istio_defaults() {
    let out = injected(&mk_pod(json!({}), mk_spec()));
    let proxy = &out["spec"]["containers"][1];
    assert_eq!(proxy["name"], PROXY_CONTAINER);
    assert_eq!(
        proxy["resources"],
        json!({ "requests": { "cpu": "100m", "memory": "128Mi" } })
    );
    let out = injected(&mk_pod(
        json!({ "annotations": {
            PROXY_CPU: "250m", PROXY_MEMORY: "256Mi",
            PROXY_CPU_LIMIT: "1", PROXY_MEMORY_LIMIT: "1Gi",
        } }),
        mk_spec(),
    ));
    assert_eq!(
        out["spec"]["containers"][1]["resources"],
        json!({
            "requests": { "cpu": "250m", "memory": "256Mi" },
            "limits": { "cpu": "1", "memory": "1Gi" },
        })
    );
}

#[test]
fn quantities_follow_kubernetes_syntax() {
    for good in [
        "100m", "1", "0.5", "128Mi", "1Gi", "2G", "1e3", "1.5E-2", "+1",
    ] {
        assert!(is_quantity(good), "{good}");
    }
    for bad in ["", "m", "lots", "1.2.3", "1Qi", "1e", ".", "1 Gi"] {
        assert!(!is_quantity(bad), "{bad}");
    }
}

#[test]
fn http_probes_are_pointed_at_envoy_and_the_originals_handed_to_bootstrap() {
    let pod = mk_pod(
        json!({}),
        json!({ "containers": [
            {
                "name": "web",
                "ports": [{ "name": "http", "containerPort": 8080 }],
                "readinessProbe": { "httpGet": { "path": "/ready", "port": "http" }, "timeoutSeconds": 3 },
                "livenessProbe": { "httpGet": { "path": "/live", "port": 8081, "scheme": "HTTPS" } },
                "startupProbe": { "tcpSocket": { "port": 8080 } },
            },
            {
                "name": "side",
                "readinessProbe": { "httpGet": { "port": "missing" } },
            },
        ] }),
    );
    let out = injected(&pod);
    let web = &out["spec"]["containers"][0];
    assert_eq!(
        web["readinessProbe"],
        json!({ "httpGet": { "path": "/app-health/web/readyz", "port": 15020, "scheme": "HTTP" }, "timeoutSeconds": 3 })
    );
    assert_eq!(
        web["livenessProbe"]["httpGet"]["path"],
        "/app-health/web/livez"
    );
    assert_eq!(
        web["startupProbe"],
        json!({ "tcpSocket": { "port": 8080 } })
    );
    // A port name that resolves to nothing is left for the kubelet to report.
    assert_eq!(
        out["spec"]["containers"][1]["readinessProbe"],
        json!({ "httpGet": { "port": "missing" } })
    );
    let env = out["spec"]["initContainers"][1]["env"].as_array().unwrap();
    let probers = env
        .iter()
        .find(|e| e["name"] == APP_PROBERS_ENV)
        .expect("probers passed on");
    let probers: Value = serde_json::from_str(probers["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        probers,
        json!({
            "/app-health/web/readyz": { "httpGet": { "path": "/ready", "port": 8080, "scheme": "HTTP" }, "timeoutSeconds": 3 },
            "/app-health/web/livez": { "httpGet": { "path": "/live", "port": 8081, "scheme": "HTTPS" }, "timeoutSeconds": 1 },
        })
    );

    let opted_out = mk_pod(
        json!({ "annotations": { REWRITE_PROBES_ANNOTATION: "false" } }),
        pod["spec"].clone(),
    );
    let out = injected(&opted_out);
    assert_eq!(
        out["spec"]["containers"][0]["readinessProbe"],
        pod["spec"]["containers"][0]["readinessProbe"]
    );
    assert!(
        !out["spec"]["initContainers"][1]["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == APP_PROBERS_ENV)
    );
}

#[test]
fn init_containers_run_first_and_existing_maps_are_extended() {
    let pod = mk_pod(
        json!({
            "labels": { "app": "web" },
            "annotations": { DEFAULT_CONTAINER_ANNOTATION: "other", "a/b~c": "x" },
        }),
        json!({
            "initContainers": [{ "name": "migrate" }],
            "containers": [{ "name": "web" }, { "name": "other" }],
            "volumes": [{ "name": "data", "emptyDir": {} }],
        }),
    );
    let out = injected(&pod);
    let names = |field: &str| -> Vec<String> {
        out["spec"][field]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names("initContainers"),
        [INIT_CONTAINER, BOOTSTRAP_CONTAINER, "migrate"]
    );
    assert_eq!(names("containers"), ["web", "other", PROXY_CONTAINER]);
    assert_eq!(
        names("volumes"),
        ["data", "istio-envoy", "istio-token", "istiod-ca-cert"]
    );
    assert_eq!(out["metadata"]["labels"]["app"], "web");
    assert_eq!(out["metadata"]["labels"][TLS_MODE_LABEL], "istio");
    // A default container the user chose stays.
    assert_eq!(
        out["metadata"]["annotations"][DEFAULT_CONTAINER_ANNOTATION],
        "other"
    );
    assert_eq!(out["metadata"]["annotations"]["a/b~c"], "x");
    let labels_env = out["spec"]["initContainers"][1]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "MESHD_LABELS")
        .unwrap()["value"]
        .clone();
    assert_eq!(labels_env, "app=web,security.istio.io/tlsMode=istio");
}

#[test]
fn the_projected_token_is_passed_to_bootstrap_unless_turned_off() {
    let pod = mk_pod(json!({}), mk_spec());
    for token_file in [true, false] {
        let config = InjectConfig {
            token_file,
            ..InjectConfig::default()
        };
        let patch = inject(&pod, "shop", None, &config).unwrap().unwrap();
        let mut out = pod.clone();
        json_patch::patch(&mut out, &patch).unwrap();
        let args = out["spec"]["initContainers"][1]["args"].clone();
        let args: Vec<&str> = args
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            args.windows(2).any(|w| w == ["--token-file", TOKEN_FILE]),
            token_file,
            "{args:?}"
        );
    }
}

#[test]
fn something_without_containers_is_not_a_pod() {
    assert!(matches!(
        inject(
            &json!({ "kind": "Pod" }),
            "shop",
            None,
            &InjectConfig::default()
        ),
        Err(InvalidPod::NotAPod(_))
    ));
}

#[test]
fn the_status_annotation_names_the_injecting_revision() {
    let canary = InjectConfig {
        revision: Revision::new(Some("canary")),
        ..InjectConfig::default()
    };
    let namespace = BTreeMap::from([(REVISION_LABEL.to_owned(), "canary".to_owned())]);
    let pod = mk_pod(json!({}), mk_spec());
    let patch = inject(&pod, "shop", Some(&namespace), &canary)
        .unwrap()
        .expect("the canary revision injects its namespace");
    let mut injected = pod.clone();
    json_patch::patch(&mut injected, &patch).unwrap();
    let status: Value = serde_json::from_str(
        injected["metadata"]["annotations"][STATUS_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["revision"], "canary");
    assert_eq!(
        inject(&pod, "shop", Some(&namespace), &InjectConfig::default()),
        Ok(None)
    );
}

#[test]
fn pods_of_istios_gateway_chart_become_router_proxies() {
    let pod = read_json("gateway-pod.json");
    let unlabelled = BTreeMap::new();
    // Opted in by its own label, in a namespace without injection labels: the default revision's.
    assert_eq!(
        skip_reason(
            &pod,
            "istio-ingress",
            Some(&unlabelled),
            &Revision::default()
        ),
        None
    );
    let patch = inject(
        &pod,
        "istio-ingress",
        Some(&unlabelled),
        &InjectConfig::default(),
    )
    .unwrap()
    .expect("injected");
    check_golden("gateway-pod.patch.json", &json!(patch));
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).unwrap();

    let names = |field: &str| -> Vec<String> {
        containers(&out, field)
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // No capture: a gateway listens on its servers' ports itself.
    assert_eq!(names("initContainers"), [BOOTSTRAP_CONTAINER]);
    assert_eq!(names("containers"), [PROXY_CONTAINER]);
    let env = &out["spec"]["initContainers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({ "name": "MESHD_NODE_TYPE", "value": "router" })),
        "{env}"
    );
    let proxy = &out["spec"]["containers"][0];
    assert_eq!(proxy["image"], DEFAULT_PROXY_IMAGE);
    assert_eq!(proxy["command"], json!(["envoy"]));
    // The chart's own settings win: its resources, ports and security context.
    assert_eq!(proxy["resources"]["limits"]["memory"], "1024Mi");
    assert_eq!(proxy["ports"][0]["containerPort"], 15090);
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    assert!(out["metadata"]["labels"].get(TLS_MODE_LABEL).is_none());
    let status: Value = serde_json::from_str(
        out["metadata"]["annotations"][STATUS_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["templates"], json!(["gateway"]));
    // Injected once only.
    assert_eq!(
        skip_reason(
            &out,
            "istio-ingress",
            Some(&unlabelled),
            &Revision::default()
        ),
        Some(Skip::AlreadyInjected)
    );
    // Without the template annotation an istio-proxy container means "injected by hand".
    let mut manual = pod.clone();
    manual["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(TEMPLATES_ANNOTATION);
    assert_eq!(
        skip_reason(
            &manual,
            "istio-ingress",
            Some(&unlabelled),
            &Revision::default()
        ),
        Some(Skip::AlreadyInjected)
    );
}

fn names_of(pod: &Value, field: &str) -> Vec<String> {
    containers(pod, field)
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn with_probe() -> Value {
    json!({ "containers": [{
        "name": "web",
        "image": "nginx",
        "ports": [{ "name": "http", "containerPort": 8080 }],
        "readinessProbe": { "httpGet": { "path": "/ready", "port": "http" } },
    }] })
}

#[test]
fn the_proxy_drains_before_it_stops_and_runs_meshd_from_its_volume() {
    let out = injected(&mk_pod(json!({}), with_probe()));
    assert_eq!(names_of(&out, "containers"), ["web", PROXY_CONTAINER]);
    let proxy = &out["spec"]["containers"][1];
    assert_eq!(
        proxy["lifecycle"],
        json!({ "preStop": { "exec": { "command": ["/etc/istio/proxy/meshd", "drain", "--duration", "5s"] } } })
    );
    let bootstrap = &out["spec"]["initContainers"][1];
    let args: Vec<&str> = bootstrap["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--install-self", "/etc/istio/proxy"]),
        "{args:?}"
    );
}

#[test]
fn holding_the_application_puts_the_proxy_first_with_a_wait() {
    let hold = json!({ "annotations": {
        PROXY_CONFIG_ANNOTATION: "holdApplicationUntilProxyStarts: true\nterminationDrainDuration: 30s\n",
    } });
    let out = injected(&mk_pod(hold, with_probe()));
    assert_eq!(names_of(&out, "containers"), [PROXY_CONTAINER, "web"]);
    let proxy = &out["spec"]["containers"][0];
    assert_eq!(
        proxy["lifecycle"]["postStart"]["exec"]["command"],
        json!(["/etc/istio/proxy/meshd", "wait"])
    );
    assert_eq!(proxy["lifecycle"]["preStop"]["exec"]["command"][3], "30s");
    // The app's probe was rewritten on the app, not on the proxy that now comes first.
    assert_eq!(
        out["spec"]["containers"][1]["readinessProbe"]["httpGet"]["port"],
        APP_HEALTH_PORT
    );
    assert_eq!(out["spec"]["containers"][1]["name"], "web");
    // The mesh-wide default (MeshConfig `defaultConfig`) does the same.
    let mesh = meshd_model::MeshConfig::from_yaml(
        "defaultConfig: {holdApplicationUntilProxyStarts: true, terminationDrainDuration: 20s}",
    )
    .unwrap();
    let mesh_default = InjectConfig::default().with_mesh(&mesh);
    let patch = inject(
        &mk_pod(json!({}), with_probe()),
        "shop",
        Some(&enabled()),
        &mesh_default,
    )
    .unwrap()
    .unwrap();
    let mut out = mk_pod(json!({}), with_probe());
    json_patch::patch(&mut out, &patch).unwrap();
    assert_eq!(names_of(&out, "containers"), [PROXY_CONTAINER, "web"]);
    let proxy = &out["spec"]["containers"][0];
    assert_eq!(proxy["lifecycle"]["preStop"]["exec"]["command"][3], "20s");
    // A pod's annotation still overrides the mesh's default.
    let pod = mk_pod(
        json!({ "annotations": { PROXY_CONFIG_ANNOTATION: "holdApplicationUntilProxyStarts: false" } }),
        with_probe(),
    );
    let patch = inject(&pod, "shop", Some(&enabled()), &mesh_default)
        .unwrap()
        .unwrap();
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    assert_eq!(names_of(&out, "containers"), ["web", PROXY_CONTAINER]);
}

#[test]
fn where_the_cluster_runs_native_sidecars_the_proxy_is_one() {
    let native = InjectConfig {
        native_sidecars: true,
        ..InjectConfig::default()
    };
    let pod = mk_pod(json!({}), with_probe());
    let patch = inject(&pod, "shop", Some(&enabled()), &native)
        .unwrap()
        .unwrap();
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    assert_eq!(
        names_of(&out, "initContainers"),
        [INIT_CONTAINER, BOOTSTRAP_CONTAINER, PROXY_CONTAINER]
    );
    assert_eq!(names_of(&out, "containers"), ["web"]);
    let proxy = &out["spec"]["initContainers"][2];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["port"], 15021);
    assert!(proxy["lifecycle"]["preStop"].is_object());
    assert!(proxy["lifecycle"].get("postStart").is_none());
    let status: Value = serde_json::from_str(
        out["metadata"]["annotations"][STATUS_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["containers"], json!([]));
    // A pod can ask for the classic form, and the same pod in an older cluster gets it.
    let classic = mk_pod(
        json!({ "annotations": { NATIVE_SIDECAR_ANNOTATION: "false" } }),
        with_probe(),
    );
    let out = {
        let patch = inject(&classic, "shop", Some(&enabled()), &native)
            .unwrap()
            .unwrap();
        let mut out = classic.clone();
        json_patch::patch(&mut out, &patch).unwrap();
        out
    };
    assert_eq!(names_of(&out, "containers"), ["web", PROXY_CONTAINER]);
    assert_eq!(
        names_of(&injected(&pod), "initContainers"),
        [INIT_CONTAINER, BOOTSTRAP_CONTAINER]
    );
}

#[test]
fn unusable_lifecycle_annotations_refuse_the_pod() {
    for (annotation, value) in [
        (PROXY_CONFIG_ANNOTATION, "terminationDrainDuration: soon\n"),
        (
            PROXY_CONFIG_ANNOTATION,
            "holdApplicationUntilProxyStarts: [1]\n",
        ),
        (NATIVE_SIDECAR_ANNOTATION, "maybe"),
    ] {
        let pod = mk_pod(json!({ "annotations": { annotation: value } }), mk_spec());
        let err = inject(&pod, "shop", Some(&enabled()), &InjectConfig::default()).unwrap_err();
        assert!(err.to_string().contains(annotation), "{err}");
    }
}

#[test]
fn injected_pods_point_prometheus_at_the_proxy_unless_they_name_their_own_target() {
    let out = injected(&mk_pod(json!({}), mk_spec()));
    let annotations = &out["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "15090");
    assert_eq!(annotations["prometheus.io/path"], "/stats/prometheus");

    let own = json!({ "annotations": { "prometheus.io/port": "9102" } });
    let out = injected(&mk_pod(own, mk_spec()));
    let annotations = &out["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "9102");
    assert!(annotations.get("prometheus.io/scrape").is_none());
}
