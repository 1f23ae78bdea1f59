//! Envoy's file access logger as istiod configures it (`pilot/pkg/model/telemetry_logging.go`):
//! Istio's default text line or JSON object, the mesh config's format, or a provider's own.

use meshd_model::MeshConfig;
use meshd_model::mesh_config::AccessLogEncoding;
use meshd_model::mesh_config::observability::{ENVOY_PROVIDER, FileAccessLogProvider};
use meshd_proto::pack;
use meshd_proto::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, AndFilter, ExtensionFilter, ResponseFlagFilter, access_log,
    access_log_filter, extension_filter,
};
use meshd_proto::pb::envoy::config::core::v3::{
    DataSource, SubstitutionFormatString, data_source, substitution_format_string,
};
use meshd_proto::pb::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log,
};
use meshd_proto::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use meshd_proto::pb::google::protobuf::{ListValue, Struct, Value, value};

/// Istio's default text format (1.9 onwards), one line per request or connection.
pub const ISTIO_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% \
%PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \
\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \
\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% \
%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% \
%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Istio's default JSON fields: the same commands as the text format, under snake_case keys.
pub const ISTIO_JSON_FIELDS: [(&str, &str); 24] = [
    ("authority", "%REQ(:AUTHORITY)%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("duration", "%DURATION%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("route_name", "%ROUTE_NAME%"),
    ("start_time", "%START_TIME%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
];

const FILE_LOGGER: &str = "envoy.access_loggers.file";
const CEL_FILTER: &str = "envoy.access_loggers.extension_filters.cel";

/// The mesh-wide access log (`accessLogFile`), formatted as `accessLogEncoding` and
/// `accessLogFormat` say; also the built-in `envoy` provider's, to its own path.
pub fn from_mesh_config(path: &str, mesh: &MeshConfig) -> AccessLog {
    let format = match mesh.access_log_encoding {
        AccessLogEncoding::Text => text(&mesh.access_log_format),
        AccessLogEncoding::Json => {
            // Validated with the mesh config: an object of formats, or Istio's own fields.
            let parsed = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
                &mesh.access_log_format,
            )
            .ok()
            .filter(|m| !m.is_empty());
            json(parsed.as_ref())
        }
    };
    file_logger(path, format, false)
}

/// An `envoyFileAccessLog` provider's logger: its own format if it has one; the built-in `envoy`
/// provider without one follows the mesh config, as in istiod.
pub fn from_provider(name: &str, provider: &FileAccessLogProvider, mesh: &MeshConfig) -> AccessLog {
    let path = if provider.path.is_empty() {
        "/dev/stdout"
    } else {
        provider.path.as_str()
    };
    if name == ENVOY_PROVIDER && provider.log_format.is_none() && !provider.omit_empty_values {
        return from_mesh_config(path, mesh);
    }
    let format = match provider.log_format.as_ref() {
        Some(f) if f.labels.is_some() => json(f.labels.as_ref().filter(|l| !l.is_empty())),
        Some(f) => text(f.text.as_deref().unwrap_or_default()),
        None => text(""),
    };
    file_logger(path, format, provider.omit_empty_values)
}

/// A text format: `format` (a newline added if it has none) or Istio's.
fn text(format: &str) -> substitution_format_string::Format {
    let line = if format.is_empty() {
        ISTIO_TEXT_FORMAT.to_string()
    } else if format.ends_with('\n') {
        format.to_string()
    } else {
        format!("{format}\n")
    };
    substitution_format_string::Format::TextFormatSource(DataSource {
        specifier: Some(data_source::Specifier::InlineString(line)),
        ..Default::default()
    })
}

/// A JSON format: `labels` or Istio's fields.
fn json(
    labels: Option<&serde_json::Map<String, serde_json::Value>>,
) -> substitution_format_string::Format {
    let fields = match labels {
        Some(labels) => labels
            .iter()
            .map(|(k, v)| (k.clone(), to_value(v)))
            .collect(),
        None => ISTIO_JSON_FIELDS
            .iter()
            .map(|(k, v)| (k.to_string(), string(v)))
            .collect(),
    };
    substitution_format_string::Format::JsonFormat(Struct { fields })
}

fn file_logger(
    path: &str,
    format: substitution_format_string::Format,
    omit_empty_values: bool,
) -> AccessLog {
    let config = FileAccessLog {
        path: path.to_string(),
        access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(
            SubstitutionFormatString {
                format: Some(format),
                omit_empty_values,
                ..Default::default()
            },
        )),
    };
    AccessLog {
        name: FILE_LOGGER.to_string(),
        config_type: Some(access_log::ConfigType::TypedConfig(pack(&config))),
        ..Default::default()
    }
}

/// Only connections that matched no filter chain (`NR`): what istiod logs on whole listeners.
pub fn no_route_filter() -> AccessLogFilter {
    AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(
            ResponseFlagFilter {
                flags: vec!["NR".to_string()],
            },
        )),
    }
}

/// Only what the CEL `expression` holds for.
pub fn cel_filter(expression: &str) -> AccessLogFilter {
    let config = ExpressionFilter {
        expression: expression.to_string(),
        ..Default::default()
    };
    AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::ExtensionFilter(
            ExtensionFilter {
                name: CEL_FILTER.to_string(),
                config_type: Some(extension_filter::ConfigType::TypedConfig(pack(&config))),
            },
        )),
    }
}

/// `log` with `filters` (all must hold), as istiod combines them.
pub fn with_filters(mut log: AccessLog, mut filters: Vec<AccessLogFilter>) -> AccessLog {
    log.filter = match filters.len() {
        0 => None,
        1 => filters.pop(),
        _ => Some(AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::AndFilter(AndFilter {
                filters,
            })),
        }),
    };
    log
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_string())),
    }
}

/// A JSON value as a protobuf `Value`.
fn to_value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => value::Kind::NullValue(0),
        serde_json::Value::Bool(b) => value::Kind::BoolValue(*b),
        serde_json::Value::Number(n) => value::Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => value::Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => value::Kind::ListValue(ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(o) => value::Kind::StructValue(Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istios_formats_use_only_commands_envoy_knows() {
        assert_eq!(
            meshd_model::syntax::envoy_format::problem(ISTIO_TEXT_FORMAT),
            None
        );
        for (_, v) in ISTIO_JSON_FIELDS {
            assert_eq!(meshd_model::syntax::envoy_format::problem(v), None, "{v}");
        }
    }

    #[test]
    fn the_builtin_provider_follows_the_mesh_config_format() {
        let mesh = MeshConfig::from_yaml("accessLogEncoding: JSON\n").unwrap();
        let provider = FileAccessLogProvider {
            path: "/dev/stdout".to_string(),
            ..Default::default()
        };
        let log = from_provider(ENVOY_PROVIDER, &provider, &mesh);
        let json = meshd_proto::json::to_json(&log).unwrap();
        assert_eq!(json["typed_config"]["path"], "/dev/stdout");
        assert_eq!(
            json["typed_config"]["log_format"]["json_format"]["upstream_cluster"],
            "%UPSTREAM_CLUSTER_RAW%"
        );
        let own = from_provider("mine", &provider, &mesh);
        let json = meshd_proto::json::to_json(&own).unwrap();
        assert!(
            json["typed_config"]["log_format"]["text_format_source"]["inline_string"]
                .as_str()
                .unwrap()
                .starts_with("[%START_TIME%]")
        );
    }
}
