//! `manifests/addons/prometheus.yaml`'s scrape job, run by Debian's Prometheus: the pods a real
//! kube-apiserver lists are kept by their `prometheus.io/*` annotations (scrape, port, path) and
//! running phase, labelled with their namespace, name and labels, and what they serve is scraped
//! under its own names — here meshd's `/metrics`, as the annotations on meshd's own pods point
//! at, and as Istio's control-plane dashboard queries it.
//!
//! Debian builds Prometheus without Kubernetes discovery, so the job's `kubernetes_sd_configs`
//! becomes a `file_sd_configs` listing each pod the API server returns with the
//! `__meta_kubernetes_pod_*` labels Kubernetes discovery gives a pod without container ports
//! (its address is the pod IP). The job's relabelling — the add-on's part — runs as shipped.

use std::time::Duration;

use anyhow::Context as _;
use meshd_tests::kube::KubeCluster;
use meshd_tests::{wait_for, yaml};
use serde_json::{Value, json};

use crate::support::host_meshd::HostMeshd;
use crate::support::kube::{apply, cluster_with_crds};
use crate::support::repo_file;

/// The add-on's `prometheus.yml`, from its ConfigMap.
fn addon_config() -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(repo_file("manifests/addons/prometheus.yaml"))?;
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|err| anyhow::anyhow!("parsing the add-on: {err}"))?;
    let config_map = documents
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "prometheus")
        .context("the add-on has ConfigMap prometheus")?;
    let config = config_map["data"]["prometheus.yml"]
        .as_str()
        .context("ConfigMap prometheus has prometheus.yml")?;
    serde_saphyr::from_str(config).map_err(|err| anyhow::anyhow!("parsing prometheus.yml: {err}"))
}

/// A pod in `istio-system` reported running at 127.0.0.1, with `annotations`.
fn host_pod(cluster: &KubeCluster, name: &str, annotations: &[(&str, &str)], running: bool) {
    let mut pod: Value = serde_saphyr::from_str(&yaml::pod(
        name,
        "istio-system",
        "127.0.0.1",
        &[("app", "istiod")],
        "istiod",
    ))
    .expect("a pod");
    if let Some(status) = pod.as_object_mut() {
        status.remove("status");
    }
    pod["metadata"]["annotations"] = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    apply(cluster, &pod.to_string());
    if running {
        cluster
            .set_pod_ip("istio-system", name, "127.0.0.1")
            .unwrap_or_else(|err| panic!("{err:#}"));
    }
}

/// Every pod the API server lists, as Prometheus's Kubernetes discovery (`role: pod`) gives a
/// pod without container ports: a target at its IP with its name, namespace, phase, node, labels
/// and annotations as `__meta_kubernetes_*` labels (names with every character that is not a
/// letter, digit or `_` made `_`).
fn discovered_pods(cluster: &KubeCluster) -> anyhow::Result<Value> {
    let output = cluster.kubectl(&["get", "pods", "--all-namespaces", "-o", "json"])?;
    let list: Value = serde_json::from_slice(&output.stdout).context("kubectl get pods")?;
    let sanitize = |name: &str| -> String {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut groups = Vec::new();
    for pod in list["items"].as_array().context("a pod list")? {
        let meta = &pod["metadata"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let mut labels = serde_json::Map::new();
        labels.insert(
            "__meta_kubernetes_namespace".into(),
            json!(text(&meta["namespace"])),
        );
        labels.insert(
            "__meta_kubernetes_pod_name".into(),
            json!(text(&meta["name"])),
        );
        labels.insert(
            "__meta_kubernetes_pod_phase".into(),
            json!(text(&pod["status"]["phase"])),
        );
        labels.insert(
            "__meta_kubernetes_pod_ip".into(),
            json!(text(&pod["status"]["podIP"])),
        );
        labels.insert(
            "__meta_kubernetes_pod_node_name".into(),
            json!(text(&pod["spec"]["nodeName"])),
        );
        for (source, prefix) in [("labels", "label"), ("annotations", "annotation")] {
            for (name, value) in meta[source].as_object().into_iter().flatten() {
                labels.insert(
                    format!("__meta_kubernetes_pod_{prefix}_{}", sanitize(name)),
                    json!(text(value)),
                );
            }
        }
        // A pod not running yet has no IP: discovery still lists it (by name), and the job must
        // drop it by its phase.
        let address = match text(&pod["status"]["podIP"]) {
            ip if ip.is_empty() => text(&meta["name"]),
            ip => ip,
        };
        groups.push(json!({"targets": [address], "labels": labels}));
    }
    Ok(Value::Array(groups))
}

/// `GET http://ADDR/api/v1/query?query=PROMQL`: the result vector.
fn query(addr: &str, promql: &str) -> Option<Vec<Value>> {
    let output = std::process::Command::new("curl")
        .args(["-sf", "-G", "--data-urlencode"])
        .arg(format!("query={promql}"))
        .arg(format!("http://{addr}/api/v1/query"))
        .output()
        .ok()?;
    let body: Value = serde_json::from_slice(&output.stdout).ok()?;
    body["data"]["result"].as_array().cloned()
}

#[test]
fn the_addon_prometheus_job_scrapes_the_annotated_running_pods_the_api_server_lists()
-> anyhow::Result<()> {
    let cluster = cluster_with_crds();
    apply(&cluster, &yaml::namespace("istio-system", &[]));
    apply(
        &cluster,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: istiod, namespace: istio-system}\n",
    );
    let meshd = HostMeshd::with_kubeconfig(&cluster, "meshd-addon-prometheus");
    let port = meshd
        .debug_addr()
        .rsplit_once(':')
        .map(|(_, port)| port.to_owned())
        .context("a debug port")?;
    // meshd, annotated as its Deployment's pods are; the same pod without annotations; and one
    // annotated but not running yet.
    let scrape = [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", port.as_str()),
        ("prometheus.io/path", "/metrics"),
    ];
    host_pod(&cluster, "istiod-scraped", &scrape, true);
    host_pod(&cluster, "istiod-quiet", &[], true);
    host_pod(&cluster, "istiod-pending", &scrape, false);

    let mut config = addon_config()?;
    config["global"]["scrape_interval"] = json!("1s");
    config["global"]["scrape_timeout"] = json!("1s");
    config["global"]["evaluation_interval"] = json!("1s");
    let dir = tempfile::tempdir()?;
    let targets = dir.path().join("pods.json");
    std::fs::write(&targets, discovered_pods(&cluster)?.to_string())?;
    let job = config["scrape_configs"]
        .as_array_mut()
        .and_then(|jobs| jobs.iter_mut().find(|j| j["job_name"] == "kubernetes-pods"))
        .context("the add-on's kubernetes-pods job")?;
    let job = job.as_object_mut().context("a job is a map")?;
    let discovery = job
        .remove("kubernetes_sd_configs")
        .context("the job discovers pods through Kubernetes")?;
    assert_eq!(discovery, json!([{"role": "pod"}]));
    job.insert(
        "file_sd_configs".to_string(),
        json!([{"files": [targets.display().to_string()]}]),
    );

    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config.to_string())?;
    let [web_port] = meshd_tests::ports::free_loopback_ports()?;
    let web = format!("127.0.0.1:{web_port}");
    let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
    let _prometheus = Killed(
        std::process::Command::new(meshd_tests::deps::prometheus_binary()?)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let prometheus_log =
        || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();

    // Exactly the annotated running pod is a target, up, with its labels.
    let mut last = Vec::new();
    let found = wait_for(Duration::from_secs(60), || {
        last = query(&web, "up{job=\"kubernetes-pods\"}")?;
        (last.len() == 1 && last[0]["value"][1] == "1").then_some(())
    });
    let answer = format!("{last:?}\n--- Prometheus ---\n{}", prometheus_log());
    anyhow::ensure!(found.is_some(), "the annotated pod never came up: {answer}");
    let labels = &last[0]["metric"];
    assert_eq!(labels["pod"], "istiod-scraped", "{answer}");
    assert_eq!(labels["namespace"], "istio-system", "{answer}");
    assert_eq!(labels["app"], "istiod", "{answer}");
    assert_eq!(
        labels["instance"],
        format!("127.0.0.1:{port}").as_str(),
        "{answer}"
    );

    // What it scraped is meshd's, under istiod's names, as the control-plane dashboard asks.
    for promql in [
        "istio_build{component=\"pilot\",pod=\"istiod-scraped\"}",
        "sum(pilot_services{namespace=\"istio-system\"})",
    ] {
        let series = query(&web, promql).unwrap_or_default();
        assert_eq!(
            series.len(),
            1,
            "{promql}: {series:?}\n{}",
            prometheus_log()
        );
    }
    Ok(())
}

/// A child process killed (and reaped) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
