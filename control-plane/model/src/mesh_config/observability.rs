//! The MeshConfig settings of access logging and tracing: `accessLog*`, `defaultConfig.tracing`,
//! `extensionProviders` and `defaultProviders`, with istiod's defaults and validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::syntax;

/// How the mesh-wide access log (`accessLogFile`) is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    #[default]
    Text,
    Json,
}

/// `defaultConfig`: the proxy settings istiod hands every proxy. meshd reads `tracing`, and at
/// injection `holdApplicationUntilProxyStarts` and `terminationDrainDuration` (a pod's
/// `proxy.istio.io/config` annotation overrides both).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<ProxyTracing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_application_until_proxy_starts: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination_drain_duration: Option<String>,
}

/// `defaultConfig.tracing`: the tracer a proxy reports to when no Telemetry or default provider
/// names one, and the sampling and tags of every tracer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyTracing {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinAddress>,
    /// Percentage of requests traced (0.0 to 100.0); unset or 0 means istiod's default, 1%.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, Option<CustomTag>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_path_tag_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZipkinAddress {
    /// `host:port` of a Zipkin collector.
    #[serde(default)]
    pub address: String,
}

/// `defaultProviders`: the providers used where no Telemetry names any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DefaultProviders {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<String>,
    /// `[prometheus]` unless the mesh config names others (or none: `metrics: []`), as Istio's
    /// installer writes it. Istio's chart leaves it empty when the user sets any of
    /// `defaultProviders`; meshd defaults the field alone, so a default tracer does not turn
    /// metrics off.
    pub metrics: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<String>,
}

impl Default for DefaultProviders {
    fn default() -> Self {
        DefaultProviders {
            tracing: Vec::new(),
            metrics: vec![PROMETHEUS_PROVIDER.to_string()],
            access_logging: Vec::new(),
        }
    }
}

/// One `extensionProviders` entry. Exactly one provider field is set; the kinds meshd does not
/// implement (ext_authz, gRPC access-log services, Datadog, …) are kept by name only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<OpenTelemetryProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_file_access_log: Option<FileAccessLogProvider>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Which provider an [`ExtensionProvider`] is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProviderKind<'a> {
    Zipkin(&'a ZipkinProvider),
    OpenTelemetry(&'a OpenTelemetryProvider),
    FileAccessLog(&'a FileAccessLogProvider),
    /// A provider meshd does not configure (named by its field, e.g. `envoyExtAuthzHttp`).
    Other(&'a str),
}

impl ExtensionProvider {
    /// A `prometheus` provider: Istio's standard metrics on the proxy's stats page.
    pub fn is_prometheus(&self) -> bool {
        self.other.contains_key("prometheus")
    }

    pub fn kind(&self) -> Option<ProviderKind<'_>> {
        if let Some(z) = &self.zipkin {
            return Some(ProviderKind::Zipkin(z));
        }
        if let Some(o) = &self.opentelemetry {
            return Some(ProviderKind::OpenTelemetry(o));
        }
        if let Some(f) = &self.envoy_file_access_log {
            return Some(ProviderKind::FileAccessLog(f));
        }
        self.other
            .keys()
            .find(|k| OTHER_PROVIDERS.contains(&k.as_str()))
            .map(|k| ProviderKind::Other(k))
    }
}

/// Provider kinds of Istio's API that meshd parses but does not configure.
const OTHER_PROVIDERS: [&str; 11] = [
    "envoyExtAuthzHttp",
    "envoyExtAuthzGrpc",
    "lightstep",
    "datadog",
    "stackdriver",
    "opencensus",
    "skywalking",
    "prometheus",
    "envoyHttpAls",
    "envoyTcpAls",
    "envoyOtelAls",
];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ZipkinProvider {
    /// `hostname` or `namespace/hostname` of the collector's Service.
    pub service: String,
    pub port: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    #[serde(rename = "enable64bitTraceId")]
    pub enable_64bit_trace_id: bool,
    /// Defaults to `/api/v2/spans`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// `USE_B3` (the default) or `USE_B3_WITH_W3C_PROPAGATION`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trace_context_option: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OpenTelemetryProvider {
    pub service: String,
    pub port: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    /// OTLP over HTTP; gRPC when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<OtlpHttp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<OtlpGrpc>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OtlpHttp {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OtlpGrpc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FileAccessLogProvider {
    /// Defaults to `/dev/stdout`.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    pub omit_empty_values: bool,
}

/// A provider's own format: a text line, or JSON with these keys (each value an Envoy command).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogFormat {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A tag added to every span: one of a fixed value, an environment variable of the proxy, a
/// request header, or an access-log formatter. MeshConfig's `defaultConfig.tracing.customTags`
/// has the same shape, less `formatter`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomTag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<NamedTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<NamedTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatter: Option<LiteralTag>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiteralTag {
    #[serde(default)]
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedTag {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

/// Istio's built-in metrics provider: the proxy's Prometheus stats.
pub const PROMETHEUS_PROVIDER: &str = "prometheus";

/// Istio's built-in access-log provider: Envoy's file logger on standard output, formatted as the
/// mesh config's `accessLogEncoding`/`accessLogFormat` say.
pub const ENVOY_PROVIDER: &str = "envoy";

/// The providers istiod defines before reading the mesh config; an entry of the same name there
/// replaces one of these.
pub fn builtin_providers() -> Vec<ExtensionProvider> {
    let other = |key: &str| ExtensionProvider {
        name: key.to_string(),
        other: BTreeMap::from([(key.to_string(), serde_json::json!({}))]),
        ..Default::default()
    };
    vec![
        other(PROMETHEUS_PROVIDER),
        other("stackdriver"),
        ExtensionProvider {
            name: ENVOY_PROVIDER.to_string(),
            envoy_file_access_log: Some(FileAccessLogProvider {
                path: "/dev/stdout".to_string(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
}

/// `configured` over the built-in providers, as istiod merges them: same name replaces, new names
/// are appended.
pub fn merge_providers(configured: Vec<ExtensionProvider>) -> Vec<ExtensionProvider> {
    let mut merged = builtin_providers();
    for p in configured {
        match merged.iter_mut().find(|m| m.name == p.name) {
            Some(existing) => *existing = p,
            None => merged.push(p),
        }
    }
    merged
}

/// istiod's checks of `extensionProviders` (`validateExtensionProvider`) and of
/// `defaultConfig.tracing`, the first problem found as istiod words it; and, beyond istiod, access
/// log formats Envoy would refuse (istiod sends them, and every listener is rejected).
pub fn validate(mesh: &super::MeshConfig) -> Result<(), String> {
    if !mesh.access_log_format.is_empty() {
        match mesh.access_log_encoding {
            AccessLogEncoding::Text => text_format(&mesh.access_log_format),
            AccessLogEncoding::Json => json_format(&mesh.access_log_format),
        }
        .map_err(|e| format!("accessLogFormat: {e}"))?;
    }
    if let Some(drain) = &mesh.default_config.termination_drain_duration {
        crate::duration::parse_std(drain)
            .map_err(|e| format!("defaultConfig.terminationDrainDuration: {e}"))?;
    }
    providers(&mesh.extension_providers, &mesh.default_config)
}

/// An Envoy text format.
fn text_format(format: &str) -> Result<(), String> {
    match syntax::envoy_format::problem(format) {
        Some(p) => Err(p),
        None => Ok(()),
    }
}

/// A JSON object of Envoy formats, as `accessLogFormat` holds it with `accessLogEncoding: JSON`.
fn json_format(format: &str) -> Result<(), String> {
    let labels: serde_json::Map<String, serde_json::Value> = serde_json::from_str(format)
        .map_err(|e| format!("not a JSON object of log fields: {e}"))?;
    labels_format(&labels)
}

/// JSON log fields: every string in them is an Envoy format.
fn labels_format(labels: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Object(m) => m.values().for_each(|v| strings(v, out)),
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    labels.values().for_each(|v| strings(v, &mut all));
    all.iter().try_for_each(|s| text_format(s))
}

fn providers(providers: &[ExtensionProvider], proxy: &ProxyConfig) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for p in providers {
        let fail = |e: String| format!("invalid extension provider {}: {e}", p.name);
        if p.name.is_empty() {
            return Err(fail("empty extension provider name".to_string()));
        }
        if !names.insert(p.name.as_str()) {
            return Err(fail(format!(
                "duplicate extension provider name {}",
                p.name
            )));
        }
        match p.kind() {
            Some(ProviderKind::Zipkin(z)) => {
                provider_service(&z.service).map_err(fail)?;
                syntax::port(u64::from(z.port))
                    .map_err(|e| fail(format!("invalid service port: {e}")))?;
            }
            Some(ProviderKind::OpenTelemetry(o)) => {
                syntax::port(u64::from(o.port)).map_err(fail)?;
                provider_service(&o.service).map_err(fail)?;
                if o.http.is_some() && o.grpc.is_some() {
                    return Err(fail(
                        "OpenTelemetryTracingProvider cannot specify both grpc and http"
                            .to_string(),
                    ));
                }
            }
            Some(ProviderKind::FileAccessLog(f)) => {
                if let Some(format) = &f.log_format {
                    if let Some(text) = &format.text {
                        text_format(text).map_err(fail)?;
                    }
                    if let Some(labels) = &format.labels {
                        labels_format(labels).map_err(fail)?;
                    }
                }
            }
            Some(ProviderKind::Other(_)) => {}
            None => return Err(fail("unsupported provider: <nil>".to_string())),
        }
    }
    if let Some(tracing) = &proxy.tracing {
        if let Some(zipkin) = &tracing.zipkin {
            proxy_address(&zipkin.address.replacen("$(HOST_IP)", "127.0.0.1", 1))
                .map_err(|e| format!("defaultConfig.tracing.zipkin.address: {e}"))?;
        }
        for (name, tag) in &tracing.custom_tags {
            if tag.is_none() {
                return Err(format!(
                    "defaultConfig.tracing: encountered nil value for custom tag: {name}"
                ));
            }
        }
    }
    Ok(())
}

/// A provider's `service`: an FQDN or IP, or `namespace/hostname`.
fn provider_service(service: &str) -> Result<(), String> {
    if service.is_empty() {
        return Err("service must not be empty".to_string());
    }
    match service.split_once('/') {
        None => {
            if syntax::fqdn(service).is_err() && !syntax::is_ip(service) {
                return Err(format!("invalid service fmt {service}"));
            }
            Ok(())
        }
        Some(_) => syntax::namespace_slash_host(service, false),
    }
}

/// `host:port` as istiod's `ValidateProxyAddress` takes it.
fn proxy_address(address: &str) -> Result<(), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("unable to split {address:?}: missing port in address"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u64 = port
        .parse()
        .map_err(|_| format!("port ({port}) is not a number"))?;
    syntax::port(port)?;
    if syntax::fqdn(host).is_err() && !syntax::is_ip(host) {
        return Err(format!("{host:?} is not a valid hostname or an IP address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(v: serde_json::Value) -> ExtensionProvider {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn configured_providers_replace_builtins_of_their_name_and_add_the_rest() {
        let merged = merge_providers(vec![
            provider(
                serde_json::json!({"name": "envoy", "envoyFileAccessLog": {"path": "/var/log/mesh/a.log"}}),
            ),
            provider(
                serde_json::json!({"name": "zipkin", "zipkin": {"service": "zipkin.istio-system.svc.cluster.local", "port": 9411}}),
            ),
        ]);
        let names: Vec<&str> = merged.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["prometheus", "stackdriver", "envoy", "zipkin"]);
        let Some(ProviderKind::FileAccessLog(f)) = merged[2].kind() else {
            panic!("{:?}", merged[2]);
        };
        assert_eq!(f.path, "/var/log/mesh/a.log");
        assert!(providers(&merged, &ProxyConfig::default()).is_ok());
    }

    #[test]
    fn providers_are_checked_as_istiod_checks_them() {
        let bad = [
            (
                serde_json::json!({"name": "", "zipkin": {"service": "z.ns.svc", "port": 9411}}),
                "empty extension provider name",
            ),
            (
                serde_json::json!({"name": "z", "zipkin": {"service": "", "port": 9411}}),
                "service must not be empty",
            ),
            (
                serde_json::json!({"name": "z", "zipkin": {"service": "z.ns.svc", "port": 0}}),
                "invalid service port",
            ),
            (
                serde_json::json!({"name": "o", "opentelemetry": {"service": "o.ns.svc", "port": 4317, "http": {}, "grpc": {}}}),
                "cannot specify both grpc and http",
            ),
            (serde_json::json!({"name": "n"}), "unsupported provider"),
            (
                serde_json::json!({"name": "f", "envoyFileAccessLog": {"logFormat": {"text": "%NOPE%"}}}),
                "Not supported field",
            ),
            (
                serde_json::json!({"name": "f", "envoyFileAccessLog": {"logFormat": {"labels": {"a": "%REQ%"}}}}),
                "requires parameters",
            ),
        ];
        for (p, message) in bad {
            let err = providers(&[provider(p.clone())], &ProxyConfig::default()).unwrap_err();
            assert!(err.contains(message), "{p}: {err}");
        }
        let twice = [
            provider(serde_json::json!({"name": "a", "prometheus": {}})),
            provider(serde_json::json!({"name": "a", "prometheus": {}})),
        ];
        assert!(
            providers(&twice, &ProxyConfig::default())
                .unwrap_err()
                .contains("duplicate")
        );
    }

    #[test]
    fn a_zipkin_address_needs_a_host_and_a_port() {
        for (address, ok) in [
            ("zipkin.istio-system:9411", true),
            ("10.0.0.1:9411", true),
            ("$(HOST_IP):9411", true),
            ("zipkin.istio-system", false),
            ("zipkin:http", false),
            ("zipkin:0", false),
        ] {
            let proxy = ProxyConfig {
                tracing: Some(ProxyTracing {
                    zipkin: Some(ZipkinAddress {
                        address: address.to_string(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            assert_eq!(providers(&[], &proxy).is_ok(), ok, "{address}");
        }
    }

    #[test]
    fn access_log_formats_envoy_would_refuse_are_refused() {
        let mesh = |yaml: &str| super::super::MeshConfig::from_yaml(yaml);
        assert!(
            mesh("accessLogFile: /dev/stdout\naccessLogFormat: '[%START_TIME%] %REQ(:METHOD)%'\n")
                .is_ok()
        );
        assert!(mesh("accessLogEncoding: JSON\naccessLogFormat: '{\"t\": \"%START_TIME%\", \"c\": \"%RESPONSE_CODE%\"}'\n").is_ok());
        let text = mesh("accessLogFormat: '%NOT_A_COMMAND%'\n").unwrap_err();
        assert!(text.to_string().contains("accessLogFormat"), "{text}");
        let json = mesh("accessLogEncoding: JSON\naccessLogFormat: 'not json'\n").unwrap_err();
        assert!(json.to_string().contains("not a JSON object"), "{json}");
    }
}
