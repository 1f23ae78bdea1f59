//! Every `meshd bootstrap` variant is loaded by the real Envoy (`--mode validate`): a bootstrap
//! that stock Envoy rejects would leave every sidecar dead on arrival, so this must never pass
//! without Envoy actually having looked at the output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A self-signed root, only ever parsed: Envoy's validate mode loads the trusted CA from disk,
/// so the TLS variants need a real certificate there, and a fixed one keeps the test hermetic.
const TEST_ROOT_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBvjCCAWOgAwIBAgIUY+wh/qSPHIN0ft0CxRx9B+ewfKcwCgYIKoZIzj0EAwIw
NDEOMAwGA1UECgwFbWVzaGQxIjAgBgNVBAMMGW1lc2hkIGJvb3RzdHJhcCB0ZXN0
IHJvb3QwHhcNMjYxMTIzMTc0NTAwWhcNNDYxMTE4MTc0NTAwWjA0MQ4wDAYDVQQK
DAVtZXNoZDEiMCAGA1UEAwwZbWVzaGQgYm9vdHN0cmFwIHRlc3Qgcm9vdDBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABE8pDAva7yQiXFD84hbbjnU3t+mimAD/++ap
dgJtSrwiqj3Wf0D7CQJLAj/+bW39ovb1R8qnaFeThZi48166zzajUzBRMB0GA1Ud
DgQWBBQZm+Jd+lKPTeJdrA4Gywt6qdlWATAfBgNVHSMEGDAWgBQZm+Jd+lKPTeJd
rA4Gywt6qdlWATAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQDy
C80kvCmEfeKSNWqGxQiwCRQkVnW0apEm+gl16754yQIhAMEvC3uyBqTCkKOjVGT6
fDvkNybA5stnti4CTsCD/tfK
-----END CERTIFICATE-----
";

const ENVOY_VERSION: &str = "1.40.";

/// MESHD_ENVOY (the Makefile exports it), else what `make test-deps` installs. Missing Envoy is a
/// failure, not a skip: a skipped validation would let a broken bootstrap through CI.
fn envoy() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cache = home.join(".cache/meshd");
    let mut candidates: Vec<PathBuf> = std::env::var_os("MESHD_ENVOY")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.push(cache.join("bin/envoy"));
    // The venv's site-packages path carries the Python version, which differs between machines.
    if let Ok(entries) = std::fs::read_dir(cache.join("envoy-1.40.0/lib")) {
        candidates.extend(
            entries
                .flatten()
                .map(|e| e.path().join("site-packages/envoy/_bin/envoy")),
        );
    }
    let Some(envoy) = candidates.iter().find(|p| p.is_file()) else {
        panic!(
            "Envoy {ENVOY_VERSION}x not found (looked at {candidates:?}); run `make test-deps` \
             or point MESHD_ENVOY at an Envoy 1.40 binary"
        );
    };
    let version = Command::new(envoy)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {} --version: {e}", envoy.display()));
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.status.success() && text.contains(&format!("/{ENVOY_VERSION}")),
        "{} is not Envoy {ENVOY_VERSION}x ({text:?}); run `make test-deps`",
        envoy.display()
    );
    envoy.clone()
}

/// A directory of our own under the system temp dir (created exclusively, under a name nobody
/// can predict), removed when the test ends.
struct ScratchDir(tempfile::TempDir);

impl ScratchDir {
    fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("meshd-{name}-"))
            .tempdir()
            .expect("creating scratch dir");
        ScratchDir(dir)
    }
}

#[derive(Debug, Clone, Copy)]
enum Sink {
    Stdout,
    File,
}

#[derive(Debug)]
struct Variant {
    node_type: &'static str,
    delta: bool,
    tls: bool,
    xds_addr: &'static str,
    output: Sink,
}

impl Variant {
    fn name(&self) -> String {
        format!(
            "{}-{}-{}-{}",
            self.node_type,
            if self.delta { "delta" } else { "sotw" },
            if self.tls { "tls" } else { "plain" },
            self.xds_addr.replace([':', '[', ']'], "_"),
        )
    }
}

/// The binary under test, blind to any `MESHD_*` settings of whoever runs the tests, so a
/// flag a variant leaves out really takes its default.
fn meshd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshd"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MESHD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn check_ran(what: &str, out: &Output) -> Result<(), String> {
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} exited {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    ))
}

/// Renders one variant through the real binary and returns the file Envoy should load.
fn render(dir: &Path, v: &Variant) -> Result<PathBuf, String> {
    let file = dir.join(format!("{}.json", v.name()));
    let mut cmd = meshd();
    cmd.current_dir(dir).args([
        "bootstrap",
        "--node-type",
        v.node_type,
        "--pod",
        "reviews-v1-5d4b8c7f9-x2k4p",
        "--namespace",
        "bookinfo",
        "--ip",
        "10.1.2.3",
        "--labels",
        "app=reviews,version=v1",
        "--service-account",
        "bookinfo-reviews",
        "--xds-addr",
        v.xds_addr,
    ]);
    if v.delta {
        cmd.arg("--delta");
    }
    if v.tls {
        // Relative on purpose: meshd must hand Envoy a path that does not depend on Envoy's cwd.
        cmd.args(["--root-cert", "root-cert.pem"]);
    }
    if let Sink::File = v.output {
        cmd.arg("-o").arg(&file);
    }
    let out = cmd.output().map_err(|e| format!("running meshd: {e}"))?;
    check_ran("meshd bootstrap", &out)?;
    if let Sink::Stdout = v.output {
        std::fs::write(&file, &out.stdout).map_err(|e| format!("writing {file:?}: {e}"))?;
    }

    let text = std::fs::read_to_string(&file).map_err(|e| format!("reading {file:?}: {e}"))?;
    let bootstrap: Value =
        serde_json::from_str(&text).map_err(|e| format!("output is not JSON: {e}"))?;
    let want_id = format!(
        "{}~10.1.2.3~reviews-v1-5d4b8c7f9-x2k4p.bookinfo~bookinfo.svc.cluster.local",
        v.node_type
    );
    if bootstrap["node"]["id"] != want_id.as_str() {
        return Err(format!("node id {} != {want_id}", bootstrap["node"]["id"]));
    }
    let api_type = if v.delta { "DELTA_GRPC" } else { "GRPC" };
    if bootstrap["dynamic_resources"]["ads_config"]["api_type"] != api_type {
        return Err(format!("ads_config.api_type is not {api_type}"));
    }
    Ok(file)
}

fn validate(envoy: &Path, file: &Path) -> Result<(), String> {
    let out = Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warning",
            "-c",
        ])
        .arg(file)
        .output()
        .map_err(|e| format!("running {}: {e}", envoy.display()))?;
    check_ran("envoy --mode validate", &out)
}

#[test]
fn every_bootstrap_variant_is_accepted_by_envoy() {
    let envoy = envoy();
    let dir = ScratchDir::new("bootstrap-validates");
    std::fs::write(dir.0.path().join("root-cert.pem"), TEST_ROOT_CERT).expect("writing root cert");

    let mut variants = Vec::new();
    for node_type in ["sidecar", "router"] {
        for delta in [false, true] {
            for tls in [false, true] {
                for (i, xds_addr) in ["127.0.0.1:15010", "istiod.istio-system.svc:15012"]
                    .into_iter()
                    .enumerate()
                {
                    // Both ways out of the binary get exercised.
                    let output = if i % 2 == 0 { Sink::File } else { Sink::Stdout };
                    variants.push(Variant {
                        node_type,
                        delta,
                        tls,
                        xds_addr,
                        output,
                    });
                }
            }
        }
    }
    variants.push(Variant {
        node_type: "sidecar",
        delta: true,
        tls: true,
        xds_addr: "[::1]:15012",
        output: Sink::File,
    });
    // One endpoint per replica.
    variants.push(Variant {
        node_type: "sidecar",
        delta: false,
        tls: true,
        xds_addr: "10.77.0.1:15012,10.77.0.2:15012",
        output: Sink::Stdout,
    });

    let failures: Vec<String> = variants
        .iter()
        .filter_map(|v| {
            render(dir.0.path(), v)
                .and_then(|file| validate(&envoy, &file))
                .err()
                .map(|e| format!("{}: {e}", v.name()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} variants failed:\n{}",
        failures.len(),
        variants.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_flag_can_come_from_the_environment() {
    let envoy = envoy();
    let dir = ScratchDir::new("bootstrap-env");
    std::fs::write(dir.0.path().join("root-cert.pem"), TEST_ROOT_CERT).expect("writing root cert");
    let file = dir.0.path().join("bootstrap.json");

    let out = meshd()
        .arg("bootstrap")
        .current_dir(dir.0.path())
        .envs([
            ("MESHD_NODE_TYPE", "router"),
            ("MESHD_POD", "ingress-7c9d8-abcde"),
            ("MESHD_NAMESPACE", "istio-system"),
            ("MESHD_IP", "10.9.8.7"),
            ("MESHD_LABELS", "istio=ingressgateway"),
            ("MESHD_SERVICE_ACCOUNT", "ingress"),
            ("MESHD_XDS_ADDR", "meshd.istio-system.svc:15012"),
            ("MESHD_ROOT_CERT", "root-cert.pem"),
            ("MESHD_DELTA", "true"),
            ("MESHD_ADMIN_PORT", "15001"),
            ("MESHD_CLUSTER_ID", "east"),
        ])
        .env("MESHD_BOOTSTRAP_OUTPUT", &file)
        .output()
        .expect("running meshd");
    check_ran("meshd bootstrap", &out).unwrap_or_else(|e| panic!("{e}"));

    let bootstrap: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("reading output")).expect("JSON");
    assert_eq!(
        bootstrap["node"]["id"],
        "router~10.9.8.7~ingress-7c9d8-abcde.istio-system~istio-system.svc.cluster.local"
    );
    let md = &bootstrap["node"]["metadata"];
    assert_eq!(md["LABELS"]["istio"], "ingressgateway");
    assert_eq!(md["SERVICE_ACCOUNT"], "ingress");
    assert_eq!(md["CLUSTER_ID"], "east");
    assert_eq!(
        bootstrap["dynamic_resources"]["ads_config"]["api_type"],
        "DELTA_GRPC"
    );
    assert_eq!(
        bootstrap["admin"]["address"]["socket_address"]["port_value"],
        15001
    );
    let xds = &bootstrap["static_resources"]["clusters"][0];
    assert_eq!(xds["name"], "xds-grpc");
    assert_eq!(xds["type"], "STRICT_DNS");
    assert!(xds["transport_socket"].is_object());

    validate(&envoy, &file).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_flags_are_refused_before_anything_is_written() {
    let dir = ScratchDir::new("bootstrap-bad-flags");
    let file = dir.0.path().join("bootstrap.json");
    for bad in [
        &["--ip", "not-an-ip"][..],
        &["--ip", "10.0.0.1", "--xds-addr", "no-port"],
        &["--ip", "10.0.0.1", "--labels", "novalue"],
        &["--ip", "10.0.0.1", "--admin-port", "15021"],
    ] {
        let out = meshd()
            .args(["bootstrap", "--pod", "p", "-o"])
            .arg(&file)
            .args(bad)
            .output()
            .expect("running meshd");
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(!file.exists(), "{bad:?} still wrote a bootstrap");
    }
}

/// Injection's rewritten kubelet probes, as `meshd bootstrap` receives them.
const APP_PROBERS: &str = r#"{
    "/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 2},
    "/app-health/web/livez": {"httpGet": {"path": "/sick", "port": 8080, "httpHeaders": [{"name": "x-probe", "value": "live"}]}},
    "/app-health/admin/startupz": {"httpGet": {"path": "/", "port": 8443, "scheme": "HTTPS", "host": "admin.local"}}
}"#;

fn render_with_probers(dir: &Path) -> (PathBuf, Value) {
    let file = dir.join("probers.json");
    let out = meshd()
        .current_dir(dir)
        .args([
            "bootstrap",
            "--pod",
            "web-0",
            "--namespace",
            "shop",
            "--ip",
            "10.1.2.3",
            "--xds-addr",
            "istiod.istio-system.svc:15012",
            "--root-cert",
            "root-cert.pem",
        ])
        .env("MESHD_APP_PROBERS", APP_PROBERS)
        .arg("-o")
        .arg(&file)
        .output()
        .expect("running meshd");
    check_ran("meshd bootstrap", &out).unwrap_or_else(|e| panic!("{e}"));
    let bootstrap: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("reading output")).expect("JSON");
    (file, bootstrap)
}

#[test]
fn app_health_listener_is_accepted_by_envoy() {
    let envoy = envoy();
    let dir = ScratchDir::new("bootstrap-app-health");
    std::fs::write(dir.0.path().join("root-cert.pem"), TEST_ROOT_CERT).expect("writing root cert");
    let (file, bootstrap) = render_with_probers(dir.0.path());
    let listeners = bootstrap["static_resources"]["listeners"]
        .as_array()
        .expect("listeners");
    assert!(
        listeners
            .iter()
            .any(|l| l["address"]["socket_address"]["port_value"] == 15020),
        "an app-health listener on 15020"
    );
    validate(&envoy, &file).unwrap_or_else(|e| panic!("{e}"));
}

/// The real Envoy, in a network namespace of its own (the app-health port is fixed), forwards a
/// probe on 15020 to the app's original path and port and answers with the app's status. The
/// "app" is a listener of the same Envoy on 127.0.0.1:8080; the bootstrap is meshd's as written,
/// its control plane out of reach in the empty namespace: Envoy opens its listeners once the
/// initial fetch times out, and readiness on 15021 stays 503 without meshd.
#[test]
fn app_health_listener_forwards_probes_to_the_app() {
    let envoy = envoy();
    let dir = ScratchDir::new("bootstrap-app-health-live");
    std::fs::write(dir.0.path().join("root-cert.pem"), TEST_ROOT_CERT).expect("writing root cert");
    let (file, mut bootstrap) = render_with_probers(dir.0.path());
    let statics = &mut bootstrap["static_resources"];
    let app = serde_json::json!({
        "name": "fake_app",
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": 8080 } },
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "fake_app",
                "route_config": { "virtual_hosts": [{ "name": "app", "domains": ["*"], "routes": [
                    { "match": { "path": "/ready" }, "direct_response": { "status": 200, "body": { "inline_string": "app ready" } } },
                    { "match": { "path": "/sick" }, "direct_response": { "status": 503, "body": { "inline_string": "app sick" } } },
                ] }] },
                "http_filters": [{ "name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }],
            },
        }] }],
    });
    statics["listeners"]
        .as_array_mut()
        .expect("listeners")
        .push(app);
    std::fs::write(&file, bootstrap.to_string()).expect("writing bootstrap");

    let script = r#"
        set -e
        ip link set lo up
        "$ENVOY" -c "$BOOTSTRAP" --disable-hot-restart -l warning >"$LOG" 2>&1 &
        pid=$!
        trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
        for i in $(seq 300); do
            curl -s -o /dev/null http://127.0.0.1:15020/ && break
            sleep 0.1
        done
        curl -s -w ' %{http_code}\n' http://127.0.0.1:15020/app-health/web/readyz
        curl -s -w ' %{http_code}\n' http://127.0.0.1:15020/app-health/web/livez
        curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:15020/app-health/other/readyz
        curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:15021/healthz/ready
    "#;
    let log = dir.0.path().join("envoy.log");
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", script])
        .env("ENVOY", &envoy)
        .env("BOOTSTRAP", &file)
        .env("LOG", &log)
        .output()
        .expect("running unshare (root, util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let envoy_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "{}\n--- stderr\n{}\n--- envoy\n{envoy_log}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["app ready 200", "app sick 503", "404", "503"],
        "envoy log:\n{envoy_log}"
    );
}
