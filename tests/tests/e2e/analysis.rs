//! `meshd analyze` judges config exactly as `meshd serve` does: for the same objects — from files
//! or from a real API server, ConfigMap `istio` included — both report the same findings and the
//! same unusable objects.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use meshd_tests::wait_for;
use serde_json::Value;

use crate::support::cli::{analyze, analyze_dir, describe, stdout};
use crate::support::host_meshd::HostMeshd;
use crate::support::kube::{cluster_with_crds, kubectl};
use crate::support::write_readable;

/// How long serve may take to report what it read.
const REPORTED: Duration = Duration::from_secs(15);

/// Objects with something to say about each: a mesh config that cannot be read, a schema error,
/// a dangling reference, an unknown load balancer, a Telemetry sampling more than every request,
/// a mesh HTTPRoute to a missing Service and one with a bad timeout, and a document that does not
/// parse.
const OBJECTS: &str = "apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    connectTimeout: soon
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.7.7
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad-timeout, namespace: shop}
spec:
  hosts: [web.shop.svc.cluster.local]
  http:
  - timeout: 1m30x
    route: [{destination: {host: web.shop.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: dangling, namespace: shop}
spec:
  hosts: [web.shop.svc.cluster.local]
  http:
  - timeout: 1m30s
    route: [{destination: {host: nowhere.shop.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bad-lb, namespace: shop}
spec:
  host: web.shop.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: SOMETIMES}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: too-many, namespace: shop}
spec:
  tracing: [{randomSamplingPercentage: 101}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-nowhere, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]
  rules: [{backendRefs: [{name: nowhere, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad-timeout, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]
  rules: [{timeouts: {request: 1m30x}, backendRefs: [{name: web, port: 80}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: shop}
spec:
  hosts: web.shop.svc.cluster.local
  http: 7
";

/// A finding or an unusable object, as one comparable line: findings by severity, code, object,
/// field and message; unusable objects by message (their origin is a file or the API server).
fn report_line(item: &Value) -> String {
    if item.get("field").is_some() {
        let object = &item["object"];
        format!(
            "{} [{}] {} {}/{} {}: {}",
            item["severity"].as_str().unwrap_or_default(),
            item["code"].as_str().unwrap_or_default(),
            object["kind"].as_str().unwrap_or_default(),
            object["namespace"].as_str().unwrap_or_default(),
            object["name"].as_str().unwrap_or_default(),
            item["field"].as_str().unwrap_or_default(),
            item["message"].as_str().unwrap_or_default(),
        )
    } else {
        format!("invalid: {}", item["message"].as_str().unwrap_or_default())
    }
}

/// What `meshd analyze -o json` printed, as lines.
fn analyzed(output: &std::process::Output) -> anyhow::Result<BTreeSet<String>> {
    let list: Vec<Value> = serde_json::from_str(&stdout(output))
        .with_context(|| format!("analyze did not print JSON: {}", describe(output)))?;
    Ok(list.iter().map(report_line).collect())
}

/// What serve's `/debug/configz` reports, as lines.
fn served(meshd: &HostMeshd) -> Option<BTreeSet<String>> {
    let configz: Value = serde_json::from_str(&meshd.get("/debug/configz")?).ok()?;
    let findings = configz["findings"].as_array()?.iter();
    let errors = configz["errors"].as_array()?.iter();
    Some(findings.chain(errors).map(report_line).collect())
}

/// What both must report, in some form, for [`OBJECTS`].
fn assert_expected(lines: &BTreeSet<String>) {
    let all = lines.iter().cloned().collect::<Vec<_>>().join("\n");
    for expected in [
        "Error [IST0106] ConfigMap istio-system/istio data.mesh",
        "Error [IST0106] VirtualService shop/bad-timeout spec.http[0].timeout",
        "Warning [IST0101] VirtualService shop/dangling",
        "Error [IST0106] DestinationRule shop/bad-lb",
        "Error [IST0106] Telemetry shop/too-many spec.tracing[0].randomSamplingPercentage",
        "Error [IST0106] HTTPRoute shop/bad-timeout spec.rules[0].timeouts.request",
        "Warning [MESHD0002] HTTPRoute shop/bad-timeout spec.parentRefs[0]: not accepted",
        "Warning [IST0101] HTTPRoute shop/to-nowhere spec.rules: ResolvedRefs BackendNotFound",
        "invalid: VirtualService shop/broken",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "{expected:?} is missing from:\n{all}"
        );
    }
}

/// Polls serve until it reports what analyze does; fails showing both.
fn assert_serve_agrees(meshd: &HostMeshd, expected: &BTreeSet<String>) {
    let mut last = BTreeSet::new();
    let agreed = wait_for(REPORTED, || {
        last = served(meshd).unwrap_or_default();
        (last == *expected).then_some(())
    });
    assert!(
        agreed.is_some(),
        "serve and analyze disagree\n--- analyze ---\n{}\n--- serve ---\n{}\n{}",
        expected.iter().cloned().collect::<Vec<_>>().join("\n"),
        last.iter().cloned().collect::<Vec<_>>().join("\n"),
        meshd.log()
    );
}

#[test]
fn analyze_and_serve_report_the_same_findings_for_files() -> anyhow::Result<()> {
    let meshd = HostMeshd::with_config_dir();
    let config = meshd.dir().join("config");
    write_readable(&config.join("mesh.yaml"), OBJECTS)?;
    let output = analyze(&[
        "-o".as_ref(),
        "json".as_ref(),
        "--config-dir".as_ref(),
        config.as_os_str(),
    ])?;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let expected = analyzed(&output)?;
    assert_expected(&expected);
    assert_serve_agrees(&meshd, &expected);
    // The text form says the same, one line each.
    let text = stdout(&analyze_dir(&config)?);
    assert_eq!(text.lines().count(), expected.len(), "{text}");
    Ok(())
}

#[test]
fn analyze_and_serve_report_the_same_findings_for_a_cluster() -> anyhow::Result<()> {
    let cluster = cluster_with_crds();
    let (valid, broken) = OBJECTS
        .rsplit_once("---\n")
        .context("the last document is the broken one")?;
    kubectl(&cluster, &["create", "namespace", "istio-system"]);
    let valid = valid.replacen(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n---\n",
        "",
        1,
    );
    let applied = cluster.kubectl_with_input(&["apply", "-f", "-"], Some(&valid))?;
    assert!(applied.status.success(), "{applied:?}");
    // The CRDs' schema takes any spec; `--validate=false` keeps kubectl from judging it first.
    let applied =
        cluster.kubectl_with_input(&["apply", "--validate=false", "-f", "-"], Some(broken))?;
    assert!(applied.status.success(), "{applied:?}");

    let meshd = HostMeshd::with_kubeconfig(&cluster, "meshd-analysis");
    let output = analyze(&[
        "-o".as_ref(),
        "json".as_ref(),
        "--kubeconfig".as_ref(),
        cluster.kubeconfig_path().as_os_str(),
    ])?;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let expected = analyzed(&output)?;
    assert_expected(&expected);
    assert_serve_agrees(&meshd, &expected);
    Ok(())
}
