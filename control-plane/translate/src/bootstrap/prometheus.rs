//! Istio's metric names on the 15090 scrape listener.
//!
//! Envoy's Prometheus page prefixes every stat with `envoy_`, so the metrics meshd counts under
//! the stat namespace `istiocustom` (see `telemetry`) come out as
//! `envoy_istiocustom_istio_requests_total`. A Lua filter on this listener strips that prefix
//! from the page, and writes Istio's `unknown` for a label an access-log operator left empty
//! (no upstream host, no peer certificate) on Istio's series — Prometheus would otherwise drop
//! the label, and doing it per request in Envoy would repeat a rewrite rule in every tag of
//! every stat of every listener. The cost is two passes over the page per scrape, nothing per
//! request, and the admin page itself (`/stats/prometheus` on the admin port) keeps Envoy's
//! names and values.

use meshd_proto::pack;
use meshd_proto::pb::envoy::config::core::v3::{DataSource, data_source};
use meshd_proto::pb::envoy::config::listener::v3::{Listener, filter};
use meshd_proto::pb::envoy::extensions::filters::http::lua::v3::Lua;
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use meshd_proto::unpack;

use crate::hcm::http_filter;
use crate::telemetry::PROMETHEUS_PREFIX;
use crate::util::u32_value;

/// The most a scrape may buffer: the Lua filter holds the whole page (a large sidecar's is a few
/// MiB); above Envoy's default 1 MiB the scrape would fail.
pub(super) const SCRAPE_BUFFER_BYTES: u32 = 64 << 20;

/// Strips [`PROMETHEUS_PREFIX`] where a metric name starts (at a line's start and after
/// `# TYPE `), then, on Istio's series only, turns empty label values into `unknown` — except
/// `grpc_response_status`, which Istio leaves empty for plain HTTP.
fn rename_script() -> String {
    format!(
        r##"local function unknown(line)
  return (line:gsub('([%w_]+)=""', function(label)
    if label == "grpc_response_status" then
      return nil
    end
    return label .. '="unknown"'
  end))
end

function envoy_on_response(response)
  response:headers():remove("content-length")
  local body = response:body()
  if body == nil then
    return
  end
  local page = body:getBytes(0, body:length())
  page = page:gsub("^{p}", ""):gsub("\n{p}", "\n"):gsub("# TYPE {p}", "# TYPE ")
  page = page:gsub("^istio_[^\n]*", unknown):gsub("\nistio_[^\n]*", unknown)
  body:setBytes(page)
end
"##,
        p = PROMETHEUS_PREFIX
    )
}

/// Puts the renaming filter before the router of `listener`'s connection manager and lets it
/// buffer a whole page.
pub(super) fn rename(listener: &mut Listener) {
    listener.per_connection_buffer_limit_bytes = u32_value(SCRAPE_BUFFER_BYTES);
    for chain in &mut listener.filter_chains {
        for f in &mut chain.filters {
            let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
                continue;
            };
            let Some(mut hcm) = unpack::<HttpConnectionManager>(any) else {
                continue;
            };
            let lua = Lua {
                default_source_code: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(rename_script())),
                    ..Default::default()
                }),
                ..Default::default()
            };
            hcm.http_filters
                .insert(0, http_filter("envoy.filters.http.lua", pack(&lua)));
            // The text format only: a protobuf page (asked for with `Accept`) is not renamed.
            if let Some(http_connection_manager::RouteSpecifier::RouteConfig(routes)) =
                &mut hcm.route_specifier
            {
                routes.request_headers_to_remove.push("accept".to_string());
            }
            *any = pack(&hcm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_strips_the_prefix_of_istio_metrics_only() {
        let script = rename_script();
        assert!(script.contains("\"\\nenvoy_istiocustom_\", \"\\n\""));
        assert!(!script.contains("gsub(\"envoy_\""));
        // Empty values become `unknown` on Istio's lines only, gRPC's status excepted.
        assert!(script.contains(r#"gsub("\nistio_[^\n]*", unknown)"#));
        assert!(script.contains(r#"label == "grpc_response_status""#));
    }
}
