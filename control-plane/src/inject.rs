//! Sidecar injection as a pure function: a Pod as the API server sends it in, the JSONPatch that
//! turns it into a meshed pod out.
//!
//! What Istio's injector does, for stock Envoy instead of pilot-agent:
//! - `istio-init` runs `meshd iptables` (NET_ADMIN, NET_RAW, root) to install the capture rules;
//! - `istio-bootstrap` runs `meshd bootstrap`, filling in the pod's name, namespace, IP and
//!   service account from the downward API, and writes the Envoy bootstrap into an in-memory
//!   `emptyDir`. A container of its own rather than a second command in `istio-init`: the meshd
//!   image needs no shell, and writing a file needs none of `istio-init`'s privileges;
//! - `istio-proxy` runs stock Envoy on that bootstrap as uid 1337, with the projected
//!   service-account token (audience `istio-ca`) and the root certificate ConfigMap mounted;
//! - app `httpGet` probes are pointed at Envoy's `:15020/app-health/<container>/<probe>`, which the
//!   bootstrap forwards to the app's original port on 127.0.0.1 (the originals travel to
//!   `meshd bootstrap` in `MESHD_APP_PROBERS`, Istio's `ISTIO_KUBE_APP_PROBERS` format). Without
//!   that, STRICT mTLS would refuse the kubelet's plaintext probes.
//!
//! A pod that already carries `sidecar.istio.io/status` (or an `istio-proxy` container) is left
//! alone, so injecting is idempotent — except a pod of Istio's `istio/gateway` chart, whose
//! `istio-proxy` with `image: auto` is the injector's to fill in, as a router ([`gateway`]).

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use meshd_model::Revision;
use meshd_model::revision::injecting_revision;
use serde_json::{Value, json};

use crate::iptables::rules;

pub const INIT_CONTAINER: &str = "istio-init";
pub const BOOTSTRAP_CONTAINER: &str = "istio-bootstrap";
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// Injection's receipt on the pod, as Istio writes it; its presence means "already injected".
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// Pod label (or annotation) that opts a pod in (`true`) or out (`false`).
pub const INJECT_KEY: &str = "sidecar.istio.io/inject";
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";
/// Namespace label that turns injection on (`enabled`) or off (`disabled`).
pub const NAMESPACE_LABEL: &str = meshd_model::revision::INJECTION_LABEL;
/// Namespace or pod label naming the control-plane revision that injects (`meshd serve --revision`).
pub const REVISION_LABEL: &str = meshd_model::revision::REVISION_LABEL;
/// Where the root certificate is distributed to every namespace.
pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
/// Env var carrying the original app probes to `meshd bootstrap`.
pub const APP_PROBERS_ENV: &str = "MESHD_APP_PROBERS";

const REWRITE_PROBES_ANNOTATION: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
const INCLUDE_OUTBOUND_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
const EXCLUDE_OUTBOUND_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";

const ENVOY_VOLUME: &str = "istio-envoy";
const TOKEN_VOLUME: &str = "istio-token";
const ROOT_CERT_VOLUME: &str = "istiod-ca-cert";
const BOOTSTRAP_DIR: &str = "/etc/istio/proxy";
const BOOTSTRAP_FILE: &str = "/etc/istio/proxy/envoy.json";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
pub const TOKEN_FILE: &str = "/var/run/secrets/tokens/istio-token";
const ROOT_CERT_DIR: &str = "/var/run/secrets/istio";
pub const ROOT_CERT_FILE: &str = "/var/run/secrets/istio/root-cert.pem";
const TOKEN_AUDIENCE: &str = "istio-ca";
const TOKEN_TTL_SECONDS: i64 = 43200;

const PROXY_UID: i64 = 1337;
const INBOUND_PORT: u16 = 15006;
const OUTBOUND_PORT: u16 = 15001;
const APP_HEALTH_PORT: u16 = 15020;
const HEALTH_PORT: u16 = 15021;
const PROMETHEUS_PORT: u16 = 15090;
/// Envoy admin, app health, readiness, Prometheus: never captured inbound (Istio's list, plus admin).
const ALWAYS_EXCLUDED_INBOUND: [u16; 4] = [15000, APP_HEALTH_PORT, HEALTH_PORT, PROMETHEUS_PORT];
/// Namespaces Istio never injects into, whatever their labels say.
const IGNORED_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];

/// What the injected containers run and where the proxy finds meshd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectConfig {
    /// Stock Envoy.
    pub proxy_image: String,
    /// meshd itself: runs `meshd iptables` and `meshd bootstrap` in the init containers.
    pub proxy_init_image: String,
    /// meshd's TLS xDS address as pods reach it (`meshd bootstrap --xds-addr`).
    pub xds_addr: String,
    /// Hand the proxy the projected token (`meshd bootstrap --token-file`), so it proves its
    /// identity to meshd with it.
    pub token_file: bool,
    /// The control-plane revision injecting: pods that belong to another are left alone.
    pub revision: Revision,
    /// The cluster runs native sidecars (init containers with `restartPolicy: Always`,
    /// Kubernetes 1.29 and later): the proxy becomes one unless the pod says otherwise.
    pub native_sidecars: bool,
    /// The mesh's `defaultConfig.holdApplicationUntilProxyStarts`.
    pub hold_application: bool,
    /// The mesh's `defaultConfig.terminationDrainDuration`.
    pub termination_drain: String,
}

impl InjectConfig {
    /// With the mesh's `defaultConfig` proxy lifecycle (`holdApplicationUntilProxyStarts`,
    /// `terminationDrainDuration`) in place of the built-in defaults.
    pub fn with_mesh(&self, mesh: &meshd_model::MeshConfig) -> InjectConfig {
        let proxy = &mesh.default_config;
        InjectConfig {
            hold_application: proxy
                .hold_application_until_proxy_starts
                .unwrap_or(self.hold_application),
            termination_drain: proxy
                .termination_drain_duration
                .clone()
                .unwrap_or_else(|| self.termination_drain.clone()),
            ..self.clone()
        }
    }
}

pub const DEFAULT_PROXY_IMAGE: &str = "envoyproxy/envoy:v1.40.0";
pub const DEFAULT_PROXY_INIT_IMAGE: &str =
    concat!("ghcr.io/meshd/meshd:", env!("CARGO_PKG_VERSION"));
pub const DEFAULT_XDS_ADDR: &str = "istiod.istio-system.svc:15012";

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            proxy_image: DEFAULT_PROXY_IMAGE.to_owned(),
            proxy_init_image: DEFAULT_PROXY_INIT_IMAGE.to_owned(),
            xds_addr: DEFAULT_XDS_ADDR.to_owned(),
            token_file: true,
            revision: Revision::default(),
            native_sidecars: false,
            hold_application: false,
            termination_drain: lifecycle::DEFAULT_DRAIN.to_owned(),
        }
    }
}

/// The RFC 6902 patch the API server applies to the pod.
pub type JsonPatch = Vec<PatchOperation>;

/// A JSON pointer from unescaped tokens (`~` and `/` inside a key are escaped here).
fn pointer<'t>(tokens: impl IntoIterator<Item = &'t str>) -> PointerBuf {
    PointerBuf::from_tokens(tokens)
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

/// Why a pod cannot be injected; the pod is refused with this message, as Istio refuses pods
/// whose injection annotations it cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPod {
    #[error("not a Pod: {0}")]
    NotAPod(String),
    #[error("annotation {annotation}={value:?}: {reason}")]
    Annotation {
        annotation: &'static str,
        value: String,
        reason: String,
    },
}

/// Why a pod is left as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    AlreadyInjected,
    OptedOut,
    NamespaceNotEnabled,
    HostNetwork,
    IgnoredNamespace,
    /// Another control-plane revision injects this pod.
    OtherRevision,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::AlreadyInjected => "already injected",
            Skip::OptedOut => "sidecar.istio.io/inject=false",
            Skip::NamespaceNotEnabled => "namespace not enabled and pod not opted in",
            Skip::HostNetwork => "host network",
            Skip::IgnoredNamespace => "system namespace",
            Skip::OtherRevision => "another revision injects it",
        }
    }
}

/// Istio's truthy and falsy spellings of `sidecar.istio.io/inject`; anything else says nothing.
fn opt(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "on" | "enabled" => Some(true),
        "n" | "no" | "false" | "off" | "disabled" => Some(false),
        _ => None,
    }
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the pod should be left alone by `revision`, and why. `namespace_labels` is `None` when
/// meshd does not know the namespace: then the webhook configuration's selectors have already
/// decided (the API server only calls for enabled namespaces or opted-in pods) and only the pod's
/// own opt-out and revision label count.
pub fn skip_reason(
    pod: &Value,
    namespace: &str,
    namespace_labels: Option<&BTreeMap<String, String>>,
    revision: &Revision,
) -> Option<Skip> {
    let labels = string_map(&pod["metadata"]["labels"]);
    let annotations = string_map(&pod["metadata"]["annotations"]);
    // A gateway-chart pod brings an `istio-proxy` for the injector to fill in: not injected yet.
    let already = annotations.contains_key(STATUS_ANNOTATION)
        || (gateway::gateway_proxy(pod).is_none()
            && containers(pod, "containers")
                .iter()
                .chain(containers(pod, "initContainers").iter())
                .any(|c| c["name"] == PROXY_CONTAINER || c["name"] == INIT_CONTAINER));
    if already {
        return Some(Skip::AlreadyInjected);
    }
    if IGNORED_NAMESPACES.contains(&namespace) {
        return Some(Skip::IgnoredNamespace);
    }
    if pod["spec"]["hostNetwork"] == true {
        return Some(Skip::HostNetwork);
    }
    // The label wins over the annotation, as in Istio.
    let pod_says = labels
        .get(INJECT_KEY)
        .and_then(|v| opt(v))
        .or_else(|| annotations.get(INJECT_KEY).and_then(|v| opt(v)));
    if pod_says == Some(false) {
        return Some(Skip::OptedOut);
    }
    let Some(ns) = namespace_labels else {
        // An unknown namespace: the webhook configuration's selectors chose, except that a pod
        // labelled for another revision is that revision's.
        let theirs = labels
            .get(REVISION_LABEL)
            .is_some_and(|rev| Revision::new(Some(rev)) != *revision);
        return theirs.then_some(Skip::OtherRevision);
    };
    match injecting_revision(ns, &labels, pod_says == Some(true)) {
        None => Some(Skip::NamespaceNotEnabled),
        Some(theirs) if theirs != *revision => Some(Skip::OtherRevision),
        Some(_) => None,
    }
}

fn containers<'a>(pod: &'a Value, field: &str) -> &'a [Value] {
    pod["spec"][field].as_array().map_or(&[], Vec::as_slice)
}

/// The patch that injects the pod, or `None` when it is to be left alone (see [`skip_reason`]).
pub fn inject(
    pod: &Value,
    namespace: &str,
    namespace_labels: Option<&BTreeMap<String, String>>,
    config: &InjectConfig,
) -> Result<Option<JsonPatch>, InvalidPod> {
    if !pod["spec"]["containers"].is_array() {
        return Err(InvalidPod::NotAPod("spec.containers is missing".to_owned()));
    }
    if skip_reason(pod, namespace, namespace_labels, &config.revision).is_some() {
        return Ok(None);
    }
    let meta = &pod["metadata"];
    let annotations = string_map(&meta["annotations"]);
    if let Some(index) = gateway::gateway_proxy(pod) {
        let resources = proxy_resources(&annotations)?;
        // A gateway's Envoy is the pod's main container: it drains, but is never a native
        // sidecar and holds nothing up.
        let life = lifecycle::Lifecycle {
            hold: false,
            native: false,
            ..lifecycle::lifecycle(&annotations, config)?
        };
        let (mut ops, mut status) = gateway::inject(pod, index, config, resources, &life);
        ops.extend(volume_ops(pod));
        status["volumes"] = json!([ENVOY_VOLUME, TOKEN_VOLUME, ROOT_CERT_VOLUME]);
        status["revision"] = json!(config.revision.name());
        let mut new_annotations = vec![(STATUS_ANNOTATION, status.to_string())];
        new_annotations.extend(scrape_annotations(&annotations));
        add_map_entries(&mut ops, meta, "annotations", &mut new_annotations);
        return Ok(Some(ops));
    }
    let mut labels = string_map(&meta["labels"]);
    labels.insert(TLS_MODE_LABEL.to_owned(), "istio".to_owned());

    let capture = capture_args(&annotations)?;
    let resources = proxy_resources(&annotations)?;
    let life = lifecycle::lifecycle(&annotations, config)?;
    let app = containers(pod, "containers");
    let (probe_ops, probers) = if annotations
        .get(REWRITE_PROBES_ANNOTATION)
        .and_then(|v| opt(v))
        == Some(false)
    {
        (Vec::new(), BTreeMap::new())
    } else {
        rewrite_probes(app)
    };

    let mut ops = Vec::new();
    let mut proxy = proxy_container(config, resources);
    lifecycle::apply(&mut proxy, &life);
    let mut init = vec![
        init_container(config, capture),
        bootstrap_container(config, &labels, &probers),
    ];
    if life.native {
        // After capture and bootstrap, before the pod's own init containers: they get a network.
        init.push(proxy.take());
    }
    if containers(pod, "initContainers").is_empty() {
        ops.push(add(pointer(["spec", "initContainers"]), json!(init)));
    } else {
        // First, as in Istio: capture is in place before any other container of the pod runs.
        for (i, c) in init.into_iter().enumerate() {
            ops.push(add(pointer(["spec", "initContainers", &i.to_string()]), c));
        }
    }
    ops.extend(probe_ops);
    if !life.native {
        // Holding the app: the proxy first, whose postStart the kubelet waits for.
        let at = if life.hold { "0" } else { "-" };
        ops.push(add(pointer(["spec", "containers", at]), proxy));
    }
    ops.extend(volume_ops(pod));

    let mut new_labels = vec![(TLS_MODE_LABEL, "istio".to_owned())];
    let mut new_annotations = vec![(STATUS_ANNOTATION, status(&config.revision, life.native))];
    if !annotations.contains_key(DEFAULT_CONTAINER_ANNOTATION)
        && let Some(first) = app.first().and_then(|c| c["name"].as_str())
    {
        new_annotations.push((DEFAULT_CONTAINER_ANNOTATION, first.to_owned()));
    }
    new_annotations.extend(scrape_annotations(&annotations));
    add_map_entries(&mut ops, meta, "labels", &mut new_labels);
    add_map_entries(&mut ops, meta, "annotations", &mut new_annotations);
    Ok(Some(ops))
}

/// `prometheus.io/scrape|port|path`, pointing Prometheus (Istio's addon job `kubernetes-pods`)
/// at the proxy's `:15090/stats/prometheus`, where Istio's standard metrics are. A pod that
/// already names its own scrape target keeps it: there is no agent to merge the two pages.
fn scrape_annotations(annotations: &BTreeMap<String, String>) -> Vec<(&'static str, String)> {
    if annotations.keys().any(|k| k.starts_with("prometheus.io/")) {
        return Vec::new();
    }
    vec![
        ("prometheus.io/scrape", "true".to_owned()),
        (
            "prometheus.io/port",
            meshd_translate::bootstrap::PROMETHEUS_PORT.to_string(),
        ),
        ("prometheus.io/path", "/stats/prometheus".to_owned()),
    ]
}

/// The volumes the injected containers mount, added to the pod's own.
fn volume_ops(pod: &Value) -> JsonPatch {
    let volumes = volumes();
    if pod["spec"]["volumes"].is_array() {
        volumes
            .into_iter()
            .map(|v| add(pointer(["spec", "volumes", "-"]), v))
            .collect()
    } else {
        vec![add(pointer(["spec", "volumes"]), json!(volumes))]
    }
}

/// Adds `entries` to `metadata.<field>`, creating the map when the pod has none.
fn add_map_entries(
    ops: &mut JsonPatch,
    meta: &Value,
    field: &str,
    entries: &mut Vec<(&str, String)>,
) {
    if meta[field].is_object() {
        for (k, v) in entries.drain(..) {
            ops.push(add(pointer(["metadata", field, k]), json!(v)));
        }
    } else {
        let map: serde_json::Map<String, Value> = entries
            .drain(..)
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
        ops.push(add(pointer(["metadata", field]), Value::Object(map)));
    }
}

/// `sidecar.istio.io/status`: Istio's fields, naming what injection added.
fn status(revision: &Revision, native: bool) -> String {
    let (init, containers): (&[&str], &[&str]) = if native {
        (&[INIT_CONTAINER, BOOTSTRAP_CONTAINER, PROXY_CONTAINER], &[])
    } else {
        (&[INIT_CONTAINER, BOOTSTRAP_CONTAINER], &[PROXY_CONTAINER])
    };
    json!({
        "initContainers": init,
        "containers": containers,
        "volumes": [ENVOY_VOLUME, TOKEN_VOLUME, ROOT_CERT_VOLUME],
        "imagePullSecrets": null,
        "revision": revision.name(),
    })
    .to_string()
}

fn invalid(annotation: &'static str, value: &str, reason: impl ToString) -> InvalidPod {
    InvalidPod::Annotation {
        annotation,
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

/// IPv6 ranges are valid in Istio's annotations, but `meshd iptables` captures IPv4 only, so there
/// is nothing for them to include or exclude.
fn ipv4_only(value: &str) -> String {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty() && !item.contains(':'))
        .collect::<Vec<_>>()
        .join(",")
}

/// `meshd iptables` flags from the traffic annotations, each checked with the parser
/// `meshd iptables` itself uses, so a bad value refuses the pod now instead of failing its init
/// container later.
fn capture_args(annotations: &BTreeMap<String, String>) -> Result<Vec<String>, InvalidPod> {
    let mut inbound: Vec<u16> = ALWAYS_EXCLUDED_INBOUND.to_vec();
    if let Some(v) = annotations.get(EXCLUDE_INBOUND_PORTS) {
        let ports = rules::parse_ports(v).map_err(|e| invalid(EXCLUDE_INBOUND_PORTS, v, e))?;
        for p in ports {
            if !inbound.contains(&p) {
                inbound.push(p);
            }
        }
    }
    let mut args: Vec<String> = [
        "iptables".to_owned(),
        "--proxy-uid".to_owned(),
        PROXY_UID.to_string(),
        "--proxy-gid".to_owned(),
        PROXY_UID.to_string(),
        "--inbound-port".to_owned(),
        INBOUND_PORT.to_string(),
        "--outbound-port".to_owned(),
        OUTBOUND_PORT.to_string(),
        "--exclude-inbound-ports".to_owned(),
        join(&inbound),
    ]
    .into();
    if let Some(v) = annotations.get(INCLUDE_OUTBOUND_RANGES) {
        let scope = if v.trim() == "*" {
            "*".to_owned()
        } else {
            ipv4_only(v)
        };
        rules::parse_scope(&scope).map_err(|e| invalid(INCLUDE_OUTBOUND_RANGES, v, e))?;
        args.extend(["--include-outbound-cidrs".to_owned(), scope]);
    }
    if let Some(v) = annotations.get(EXCLUDE_OUTBOUND_RANGES) {
        let ranges = ipv4_only(v);
        rules::parse_list::<rules::Ipv4Cidr>(&ranges)
            .map_err(|e| invalid(EXCLUDE_OUTBOUND_RANGES, v, e))?;
        args.extend(["--exclude-outbound-cidrs".to_owned(), ranges]);
    }
    if let Some(v) = annotations.get(EXCLUDE_OUTBOUND_PORTS) {
        let ports = rules::parse_ports(v).map_err(|e| invalid(EXCLUDE_OUTBOUND_PORTS, v, e))?;
        args.extend(["--exclude-outbound-ports".to_owned(), join(&ports)]);
    }
    Ok(args)
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A Kubernetes resource quantity (`100m`, `1.5`, `128Mi`, `1e3`, `2G`): checked here so a typo
/// in an annotation names the annotation, not a field of a container the user never wrote.
fn is_quantity(s: &str) -> bool {
    let digits_end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == '+' || *c == '-'))
        .map_or(s.len(), |(i, _)| i);
    let (number, suffix) = s.split_at(digits_end);
    let number = number.strip_prefix(['+', '-']).unwrap_or(number);
    let valid_number = !number.is_empty()
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number != ".";
    let valid_suffix = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(|exp| {
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit())
    });
    valid_number && valid_suffix
}

fn proxy_resources(annotations: &BTreeMap<String, String>) -> Result<Value, InvalidPod> {
    let get =
        |annotation: &'static str, default: Option<&str>| -> Result<Option<String>, InvalidPod> {
            match annotations.get(annotation) {
                Some(v) if is_quantity(v.trim()) => Ok(Some(v.trim().to_owned())),
                Some(v) => Err(invalid(annotation, v, "not a resource quantity")),
                None => Ok(default.map(str::to_owned)),
            }
        };
    let mut resources = json!({
        "requests": {
            "cpu": get(PROXY_CPU, Some("100m"))?,
            "memory": get(PROXY_MEMORY, Some("128Mi"))?,
        },
    });
    let mut limits = serde_json::Map::new();
    if let Some(cpu) = get(PROXY_CPU_LIMIT, None)? {
        limits.insert("cpu".to_owned(), json!(cpu));
    }
    if let Some(memory) = get(PROXY_MEMORY_LIMIT, None)? {
        limits.insert("memory".to_owned(), json!(memory));
    }
    if !limits.is_empty() {
        resources["limits"] = Value::Object(limits);
    }
    Ok(resources)
}

/// The app containers' `httpGet` probes pointed at Envoy's app-health listener, and what they were
/// (keyed by the new path). Probes on a port that cannot be resolved are left as written.
fn rewrite_probes(app: &[Value]) -> (JsonPatch, BTreeMap<String, Value>) {
    let mut ops = Vec::new();
    let mut probers = BTreeMap::new();
    for (i, container) in app.iter().enumerate() {
        let Some(name) = container["name"].as_str() else {
            continue;
        };
        for (field, suffix) in [
            ("readinessProbe", "readyz"),
            ("livenessProbe", "livez"),
            ("startupProbe", "startupz"),
        ] {
            let probe = &container[field];
            let http = &probe["httpGet"];
            if !http.is_object() {
                continue;
            }
            let Some(port) = resolve_port(container, &http["port"]) else {
                continue;
            };
            let path = format!("/app-health/{name}/{suffix}");
            let mut original = http.clone();
            original["port"] = json!(port);
            if original["path"].as_str().is_none_or(str::is_empty) {
                original["path"] = json!("/");
            }
            if original["scheme"].as_str().is_none_or(str::is_empty) {
                original["scheme"] = json!("HTTP");
            }
            probers.insert(
                path.clone(),
                json!({
                    "httpGet": original,
                    "timeoutSeconds": probe["timeoutSeconds"].as_i64().unwrap_or(1),
                }),
            );
            ops.push(PatchOperation::Replace(ReplaceOperation {
                path: pointer(["spec", "containers", &i.to_string(), field, "httpGet"]),
                value: json!({ "path": path, "port": APP_HEALTH_PORT, "scheme": "HTTP" }),
            }));
        }
    }
    (ops, probers)
}

/// A probe's port: a number, or the name of one of the container's ports.
fn resolve_port(container: &Value, port: &Value) -> Option<u16> {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).ok().filter(|p| *p != 0);
    }
    let name = port.as_str()?;
    if let Ok(n) = name.parse::<u16>() {
        return (n != 0).then_some(n);
    }
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
}

fn small_resources() -> Value {
    json!({
        "requests": { "cpu": "10m", "memory": "40Mi" },
        "limits": { "cpu": "100m", "memory": "128Mi" },
    })
}

fn init_container(config: &InjectConfig, args: Vec<String>) -> Value {
    json!({
        "name": INIT_CONTAINER,
        "image": config.proxy_init_image,
        "args": args,
        "resources": small_resources(),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "privileged": false,
            // iptables takes its lock under /run.
            "readOnlyRootFilesystem": false,
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] },
        },
    })
}

fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": path } } })
}

fn bootstrap_container(
    config: &InjectConfig,
    labels: &BTreeMap<String, String>,
    probers: &BTreeMap<String, Value>,
) -> Value {
    let mut args = vec![
        "bootstrap".to_owned(),
        "--xds-addr".to_owned(),
        config.xds_addr.clone(),
        "--root-cert".to_owned(),
        ROOT_CERT_FILE.to_owned(),
    ];
    if config.token_file {
        args.extend(["--token-file".to_owned(), TOKEN_FILE.to_owned()]);
    }
    args.extend(["-o".to_owned(), BOOTSTRAP_FILE.to_owned()]);
    // The proxy's lifecycle hooks run meshd from the Envoy volume (stock Envoy's image has none).
    args.extend(["--install-self".to_owned(), BOOTSTRAP_DIR.to_owned()]);
    // Labels are known now and fixed for the bootstrap's lifetime; values can hold neither `,`
    // nor `=`, so `k=v,k=v` is exact.
    let labels = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut env = vec![
        field_env("MESHD_POD", "metadata.name"),
        field_env("MESHD_NAMESPACE", "metadata.namespace"),
        field_env("MESHD_IP", "status.podIP"),
        field_env("MESHD_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        json!({ "name": "MESHD_LABELS", "value": labels }),
    ];
    if !probers.is_empty() {
        env.push(json!({ "name": APP_PROBERS_ENV, "value": json!(probers).to_string() }));
    }
    json!({
        "name": BOOTSTRAP_CONTAINER,
        "image": config.proxy_init_image,
        "args": args,
        "env": env,
        "resources": small_resources(),
        "securityContext": proxy_security_context(),
        "volumeMounts": [{ "name": ENVOY_VOLUME, "mountPath": BOOTSTRAP_DIR }],
    })
}

fn proxy_security_context() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "runAsUser": PROXY_UID,
        "runAsGroup": PROXY_UID,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
    })
}

fn proxy_container(config: &InjectConfig, resources: Value) -> Value {
    json!({
        "name": PROXY_CONTAINER,
        "image": config.proxy_image,
        "command": ["envoy"],
        "args": [
            "-c", BOOTSTRAP_FILE,
            "--concurrency", "2",
            "--disable-hot-restart",
            "--drain-time-s", "45",
            "--drain-strategy", "immediate",
            "--log-level", "warning",
        ],
        "ports": [{ "name": "http-envoy-prom", "containerPort": PROMETHEUS_PORT, "protocol": "TCP" }],
        "readinessProbe": {
            "httpGet": { "path": "/healthz/ready", "port": HEALTH_PORT, "scheme": "HTTP" },
            "initialDelaySeconds": 1,
            "periodSeconds": 2,
            "timeoutSeconds": 3,
            "failureThreshold": 30,
        },
        "resources": resources,
        "securityContext": proxy_security_context(),
        "volumeMounts": [
            { "name": ENVOY_VOLUME, "mountPath": BOOTSTRAP_DIR, "readOnly": true },
            { "name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true },
            { "name": ROOT_CERT_VOLUME, "mountPath": ROOT_CERT_DIR, "readOnly": true },
        ],
    })
}

fn volumes() -> [Value; 3] {
    [
        json!({ "name": ENVOY_VOLUME, "emptyDir": { "medium": "Memory" } }),
        json!({
            "name": TOKEN_VOLUME,
            "projected": {
                "sources": [{
                    "serviceAccountToken": {
                        "audience": TOKEN_AUDIENCE,
                        "expirationSeconds": TOKEN_TTL_SECONDS,
                        "path": "istio-token",
                    },
                }],
            },
        }),
        json!({ "name": ROOT_CERT_VOLUME, "configMap": { "name": ROOT_CERT_CONFIGMAP } }),
    ]
}

mod gateway;
mod lifecycle;
pub use gateway::TEMPLATES_ANNOTATION;
pub use lifecycle::{NATIVE_SIDECAR_ANNOTATION, PROXY_CONFIG_ANNOTATION};

#[cfg(test)]
mod tests;
