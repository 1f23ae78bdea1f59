//! MeshConfig: the mesh-wide settings Istio keeps under the `mesh` key of ConfigMap `istio`.

use serde::{Deserialize, Serialize};

use crate::revision::Revision;
pub mod observability;

pub use observability::{
    AccessLogEncoding, DefaultProviders, ExtensionProvider, ProviderKind, ProxyConfig, ProxyTracing,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundPolicy {
    #[default]
    AllowAny,
    RegistryOnly,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundPolicy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    pub root_namespace: String,
    pub trust_domain: String,
    /// Other trust domains this mesh's identities may carry (a migration from an old trust
    /// domain): principals in AuthorizationPolicies and SAN checks accept them as well.
    pub trust_domain_aliases: Vec<String>,
    pub enable_auto_mtls: bool,
    /// Istio's `connectTimeout` for clusters, e.g. `10s`.
    pub connect_timeout: String,
    /// The control-plane revision this mesh config is for (`meshd serve --revision`), never read
    /// from YAML: it names the ConfigMap the mesh config comes from (`istio-<revision>`).
    #[serde(skip)]
    pub revision: Revision,
    /// Where every proxy writes its access log; empty means no mesh-wide access log.
    pub access_log_file: String,
    pub access_log_encoding: AccessLogEncoding,
    /// Envoy's format string (TEXT) or a JSON object of Envoy commands (JSON); Istio's own
    /// format when empty.
    pub access_log_format: String,
    /// Whether proxies trace requests when no Telemetry or default provider names a tracer
    /// (istiod's default: yes, through `defaultConfig.tracing`).
    pub enable_tracing: bool,
    /// The proxy settings every proxy gets; meshd reads `tracing`.
    pub default_config: ProxyConfig,
    /// Named access loggers and tracers, for Telemetry and `defaultProviders` to refer to; istiod's
    /// built-in ones (`envoy`, `prometheus`, `stackdriver`) are always there.
    pub extension_providers: Vec<ExtensionProvider>,
    pub default_providers: DefaultProviders,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            root_namespace: "istio-system".to_string(),
            trust_domain: "cluster.local".to_string(),
            trust_domain_aliases: Vec::new(),
            enable_auto_mtls: true,
            connect_timeout: "10s".to_string(),
            revision: Revision::default(),
            access_log_file: String::new(),
            access_log_encoding: AccessLogEncoding::Text,
            access_log_format: String::new(),
            enable_tracing: true,
            default_config: ProxyConfig::default(),
            extension_providers: observability::builtin_providers(),
            default_providers: DefaultProviders::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("mesh config: {0}")]
pub struct InvalidMeshConfig(pub String);

impl MeshConfig {
    /// Parses MeshConfig from a JSON value (YAML decoded by the caller). Unknown fields are ignored,
    /// since MeshConfig carries many settings meshd has no use for.
    pub fn from_value(value: serde_json::Value) -> Result<MeshConfig, InvalidMeshConfig> {
        if value.is_null() {
            return Ok(MeshConfig::default());
        }
        let mut config: MeshConfig = serde_path_to_error::deserialize(value)
            .map_err(|e| InvalidMeshConfig(format!("field `{}`: {}", e.path(), e.inner())))?;
        config.duration_secs().map_err(InvalidMeshConfig)?;
        config.extension_providers =
            observability::merge_providers(std::mem::take(&mut config.extension_providers));
        observability::validate(&config).map_err(InvalidMeshConfig)?;
        Ok(config)
    }

    /// Parses MeshConfig YAML: a bare MeshConfig, or Istio's ConfigMap-style `mesh:` wrapper.
    pub fn from_yaml(text: &str) -> Result<MeshConfig, InvalidMeshConfig> {
        let value: serde_json::Value = serde_saphyr::from_str(text)
            .map_err(|e| InvalidMeshConfig(format!("not YAML: {e}")))?;
        let value = match value.get("mesh") {
            Some(inner) => inner.clone(),
            None => value,
        };
        MeshConfig::from_value(value)
    }

    /// The extension provider called `name` (istiod compares names case-insensitively).
    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// `connectTimeout` as seconds and nanos. As istiod validates it: at least 1ms, in whole
    /// milliseconds (Envoy refuses a cluster whose connect timeout is zero).
    pub fn duration_secs(&self) -> Result<(i64, i32), String> {
        let d = crate::syntax::duration_ms(&self.connect_timeout)
            .map_err(|e| format!("field `connectTimeout`: {e}"))?;
        let seconds = i64::try_from(d.as_secs()).map_err(|_| {
            format!(
                "field `connectTimeout`: {:?} is too long",
                self.connect_timeout
            )
        })?;
        Ok((seconds, d.subsec_nanos() as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domain_aliases_are_read() {
        let mesh = MeshConfig::from_value(serde_json::json!({
            "trustDomain": "new.example",
            "trustDomainAliases": ["old.example", "cluster.local"]
        }))
        .unwrap();
        assert_eq!(mesh.trust_domain, "new.example");
        assert_eq!(mesh.trust_domain_aliases, ["old.example", "cluster.local"]);
        assert!(MeshConfig::default().trust_domain_aliases.is_empty());
    }

    #[test]
    fn the_proxy_lifecycle_defaults_are_read_and_a_bad_drain_duration_refused() {
        let mesh = MeshConfig::from_yaml(
            "defaultConfig: {holdApplicationUntilProxyStarts: true, terminationDrainDuration: 45s}",
        )
        .unwrap();
        assert_eq!(
            mesh.default_config.hold_application_until_proxy_starts,
            Some(true)
        );
        assert_eq!(
            mesh.default_config.termination_drain_duration.as_deref(),
            Some("45s")
        );
        let bad = MeshConfig::from_yaml("defaultConfig: {terminationDrainDuration: soon}");
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("terminationDrainDuration")
        );
    }

    #[test]
    fn a_connect_timeout_under_a_millisecond_is_refused() {
        for bad in ["0", "0s", "500us", "-1s", "1.0005s"] {
            let mesh = MeshConfig::from_value(serde_json::json!({"connectTimeout": bad}));
            assert!(mesh.is_err(), "{bad}");
        }
        let mesh = MeshConfig::from_value(serde_json::json!({"connectTimeout": "1m30s"})).unwrap();
        assert_eq!(mesh.duration_secs().unwrap(), (90, 0));
    }

    #[test]
    fn access_log_and_tracing_settings_are_read_with_istiods_defaults() {
        let mesh = MeshConfig::default();
        assert!(mesh.access_log_file.is_empty());
        assert!(mesh.enable_tracing);
        assert!(mesh.provider("envoy").is_some());
        let mesh = MeshConfig::from_yaml(
            "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\nenableTracing: false\ndefaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n  tracing:\n    sampling: 100\n    zipkin:\n      address: zipkin.istio-system:9411\n",
        );
        let mesh = mesh.unwrap();
        assert_eq!(mesh.access_log_file, "/dev/stdout");
        assert_eq!(mesh.access_log_encoding, AccessLogEncoding::Json);
        assert!(!mesh.enable_tracing);
        let tracing = mesh.default_config.tracing.unwrap();
        assert_eq!(tracing.sampling, Some(100.0));
        assert_eq!(tracing.zipkin.unwrap().address, "zipkin.istio-system:9411");
    }
}
