//! The proxy's place in the pod's life, without pilot-agent: Envoy ready before the app starts
//! (`holdApplicationUntilProxyStarts`, or a native sidecar), and a graceful drain before it stops
//! (`terminationDrainDuration`). The hooks run the meshd binary `istio-bootstrap` copied into the
//! Envoy volume (`meshd wait`, `meshd drain`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{BOOTSTRAP_DIR, HEALTH_PORT, InjectConfig, InvalidPod, invalid, opt};

/// Pod annotation carrying a ProxyConfig (YAML or JSON) that overrides the mesh's defaults.
pub const PROXY_CONFIG_ANNOTATION: &str = "proxy.istio.io/config";
/// Pod annotation choosing the native-sidecar form (`true`) or the classic one (`false`).
pub const NATIVE_SIDECAR_ANNOTATION: &str = "sidecar.istio.io/nativeSidecar";
/// Istio's default `terminationDrainDuration`.
pub const DEFAULT_DRAIN: &str = "5s";

/// The ProxyConfig fields injection reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProxyConfigOverrides {
    hold_application_until_proxy_starts: Option<bool>,
    termination_drain_duration: Option<String>,
}

/// How this pod's proxy starts and stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lifecycle {
    /// The app waits for Envoy: the proxy goes first, with a `postStart` that blocks until ready.
    pub hold: bool,
    /// The proxy is an init container with `restartPolicy: Always` (Kubernetes ≥ 1.29).
    pub native: bool,
    /// How long `preStop` lets in-flight requests finish.
    pub drain: String,
}

pub(super) fn lifecycle(
    annotations: &BTreeMap<String, String>,
    config: &InjectConfig,
) -> Result<Lifecycle, InvalidPod> {
    let overrides = match annotations.get(PROXY_CONFIG_ANNOTATION) {
        None => ProxyConfigOverrides::default(),
        Some(text) => serde_saphyr::from_str::<ProxyConfigOverrides>(text)
            .map_err(|e| invalid(PROXY_CONFIG_ANNOTATION, text, e))?,
    };
    let drain = overrides
        .termination_drain_duration
        .unwrap_or_else(|| config.termination_drain.clone());
    meshd_model::duration::parse_std(&drain).map_err(|e| {
        invalid(
            PROXY_CONFIG_ANNOTATION,
            &drain,
            format!("terminationDrainDuration: {e}"),
        )
    })?;
    let native = match annotations.get(NATIVE_SIDECAR_ANNOTATION) {
        None => config.native_sidecars,
        Some(v) => opt(v).ok_or_else(|| invalid(NATIVE_SIDECAR_ANNOTATION, v, "not a boolean"))?,
    };
    Ok(Lifecycle {
        hold: overrides
            .hold_application_until_proxy_starts
            .unwrap_or(config.hold_application),
        native,
        drain,
    })
}

fn meshd_in_volume() -> String {
    format!("{BOOTSTRAP_DIR}/meshd")
}

/// Adds the hooks (and, for a native sidecar, what makes it one) to the proxy container.
pub(super) fn apply(proxy: &mut Value, lifecycle: &Lifecycle) {
    let mut hooks = json!({
        "preStop": { "exec": { "command": [meshd_in_volume(), "drain", "--duration", lifecycle.drain] } },
    });
    if lifecycle.native {
        // The kubelet starts the app containers once this probe passes.
        proxy["restartPolicy"] = json!("Always");
        proxy["startupProbe"] = json!({
            "httpGet": { "path": "/healthz/ready", "port": HEALTH_PORT, "scheme": "HTTP" },
            "periodSeconds": 1,
            "timeoutSeconds": 3,
            "failureThreshold": 600,
        });
    } else if lifecycle.hold {
        // The kubelet starts the next container only when this hook returns.
        hooks["postStart"] = json!({ "exec": { "command": [meshd_in_volume(), "wait"] } });
    }
    proxy["lifecycle"] = hooks;
}
